//! The CLI's kernel tests: `fencebridge probe` and `fencebridge v4l2` (against vivid, and
//! against the m2m test drivers vicodec and vim2m where the run has them), inside qemu on every
//! kernel of the matrix. `cargo xtask test` builds this target and runs it in the
//! VM, in the same boot as the library's kernel tests; it is not built by a plain `cargo test`
//! (it needs the VM's devices).
#![deny(clippy::undocumented_unsafe_blocks)]

use fencebridge_testkit::support;

mod m2m;
mod probe;
mod show;
mod v4l2;
