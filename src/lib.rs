//! # fencebridge
//!
//! Bridges implicit (dma-buf reservation) and explicit (DRM syncobj / sync_file) GPU
//! synchronisation for Wayland compositors built on smithay, from the calloop event loop and
//! without ever blocking it.
//!
//! The layers, lowest first (a lower one never uses a higher one):
//! - [`sys`]: the raw uAPI, the only place that issues ioctls and counts each (`sys::drm`:
//!   every DRM call, the `drm` crate's included);
//! - [`device`]: DRM nodes;
//! - [`producer`]: dma-buf producers (dma-heap, udmabuf, vgem), for the stub's calibration,
//!   the capability probe, tools and tests;
//! - [`fence`]: sync_files, fence classification (pending / signalled / the kernel's stub,
//!   calibrated on a fresh producer dma-buf), dma-buf export/import over a buffer's planes;
//! - [`timeline`]: syncobj devices and timelines (and which values are points at all);
//! - [`caps`]: what this machine supports, with reasons; the probe picks the syncobj device
//!   and calibrates the stub fence, once;
//! - [`source`]: calloop event sources for fences and timeline points;
//! - [`bridge`]: the policy, pure and host-tested: what each commit waits for, hands on,
//!   publishes and how it is released;
//! - `wayland` (feature `smithay`): the smithay integration, executing `bridge`'s plans.
//!
//! The command-line tool and its V4L2 checker are the `fencebridge-cli` package (`cli/`), on
//! top of this crate's public API. docs/architecture.md says which module decides what.
//!
//! # How to use
//! ```no_run
//! use std::os::fd::AsFd;
//! use fencebridge::fence::{dmabuf, Access, StubSignature};
//! use fencebridge::source::SyncFileSource;
//! # fn f(plane: std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
//! let mut event_loop = calloop::EventLoop::<bool>::try_new()?;
//! let stub = StubSignature::calibrate();
//! let snapshot = dmabuf::export(&[plane.as_fd()], Access::Read, &stub)?;
//! if let Some(fence) = snapshot.fence {
//!     event_loop.handle().insert_source(SyncFileSource::new(fence), |_, _, ready| *ready = true)?;
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bridge;
pub mod caps;
pub mod device;
mod error;
pub mod fence;
pub mod producer;
pub mod source;
pub mod sys;
pub mod timeline;
#[cfg(feature = "smithay")]
pub mod wayland;

pub use error::{Error, Result};
