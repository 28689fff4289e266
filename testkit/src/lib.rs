//! What fencebridge's tests, bench and examples share (a dev-only package, never published):
//! - [`support`]: what every kernel test needs — the kernel it runs on and what that kernel is
//!   known to offer, a skip that says why, fd counting, bounded dispatching (the library's and
//!   the CLI's kernel tests);
//! - [`harness`]: a smithay compositor built from `fencebridge::wayland` and real Wayland
//!   clients in one thread, pumped by hand (the kernel tests in `tests/kernel/wayland` and
//!   `benches/commit_path.rs`);
//! - [`nested`]: running the reference compositor as a user would and reading its report (the
//!   end-to-end kernel tests and `tests/window.rs`);
//! - [`vivid`]: finding vivid's V4L2 nodes (the CLI's kernel tests and the end-to-end ones);
//! - [`m2m`]: whether the run has the m2m test drivers (vicodec, vim2m), and their nodes;
//! - [`gst`]: GStreamer with only the plugins a test's pipelines use.

pub mod gst;
pub mod harness;
pub mod m2m;
pub mod nested;
pub mod support;
pub mod vivid;
