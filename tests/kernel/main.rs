//! Kernel tests: the core against the real uAPI, inside qemu on every kernel of the matrix
//! (vgem, virtio_gpu, udmabuf, dma-heap). `cargo xtask test` builds this target and runs it in
//! the VM; it is not built by a plain `cargo test` (it needs the VM's devices).
#![deny(clippy::undocumented_unsafe_blocks)]

use fencebridge_testkit::support;

mod bad_input;
mod dmabuf_fences;
mod e2e;
mod leaks;
mod m2m;
mod producers;
mod sources;
mod stub;
mod timeline;
mod wayland;
