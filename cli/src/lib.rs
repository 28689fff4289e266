//! # fencebridge-cli
//!
//! The `fencebridge` command-line tool's library, on top of the `fencebridge` crate's public
//! API (which a compositor embeds without any of this):
//! - [`v4l2`]: the checker behind `fencebridge v4l2` — how a V4L2 capture device's buffers and
//!   fences look to a compositor, and what presenting them on one showed (`--show`);
//! - [`sys`]: the V4L2 uAPI, counted with the library's ioctls;
//! - [`mapping`]: buffers mapped into this process (V4L2 planes, dma-bufs);
//! - [`wlclient`]: the Wayland client plumbing of `fencebridge v4l2 --show`, which the test
//!   clients (`examples/fbclient`) share.
//!
//! # How to use
//! ```no_run
//! use fencebridge_cli::v4l2::{self, CheckOptions, Device};
//! # fn f() -> Result<(), v4l2::Error> {
//! let report = v4l2::check(&Device::find_capture()?, &CheckOptions::default(), |_| {})?;
//! print!("{report}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod mapping;
pub mod sys;
pub mod v4l2;
pub mod wlclient;
