//! Checks a V4L2 capture device the way a compositor sees its frames: whether its buffers carry
//! fences while it fills them and once they are dequeued, whether it waits for a fence put on a
//! buffer it is about to fill, how its planes are laid out — and what fencebridge does for such
//! a producer (`fencebridge v4l2` prints it).
//!
//! V4L2/vb2 producers (cameras, capture cards, hardware decoders) attach no fences to their
//! dma-bufs and ignore the ones imported onto them (docs/kernel-facts.md, and what [`check`] measures
//! on any device). A compositor that gives such a buffer back (`wl_buffer.release`) as soon as
//! it is replaced, trusting its own read fence to hold the producer off, lets the device
//! overwrite a frame the GPU is still sampling. The bridge classifies such clients as
//! non-fencing and releases their buffers only after its reads are done.
//!
//! - [`Device`]: an open capture node — formats, MMAP buffers, `VIDIOC_EXPBUF`, streaming —
//!   with every failure a typed [`Error`] that says what to do.
//! - [`check()`]: streams N frames and watches the fences ([`Report`], [`Observations`]).
//! - [`report`]: turns the measurements into [`Finding`]s, a [`Verdict`] and the readable
//!   report.
//! - [`show`]: judges what presenting the frames on a Wayland compositor showed
//!   ([`ShowOutcome`], from `fencebridge v4l2 --show`): did it give back a buffer it was still
//!   reading?
//!
//! The kernel side is in [`crate::sys::v4l2`] (the only place ioctls are issued); fences go
//! through [`fencebridge::fence`], the compositor's view through [`fencebridge::bridge`].
//!
//! # How to use
//! ```no_run
//! use fencebridge_cli::v4l2::{self, CheckOptions, Device};
//! # fn f() -> Result<(), v4l2::Error> {
//! let path = Device::find_capture()?; // or "/dev/video0"
//! let options = CheckOptions {
//!     format: Some("NV12".parse().expect("a fourcc")),
//!     frames: 60,
//!     ..CheckOptions::default()
//! };
//! let report = v4l2::check(&path, &options, |progress| eprintln!("{progress:?}"))?;
//! print!("{report}");
//! if report.would_corrupt_without_bridge() {
//!     // e.g. imported fences are ignored: release its buffers only after your reads are done
//! }
//! # Ok(()) }
//! ```

mod check;
mod device;
mod error;
mod format;
pub mod fwht;
pub mod m2m;
pub mod report;
pub mod request;
pub mod show;

pub use check::{
    check, check_source, BridgeView, BufferLayout, CheckOptions, FenceTally, ImportOutcome,
    Observations, PlaneLayout, Progress, Report, StubCalibration,
};
pub use device::{BufferState, Device, DeviceInfo, PlaneState, Streaming};
pub use error::Error;
pub use format::{
    BadFourCc, ColourPlane, Format, FormatDesc, FourCc, FrameInterval, FrameSize,
    MemoryPlaneFormat, Queue, QueueKind,
};
pub use m2m::{Drain, M2mInfo, M2mReport, M2mRole, Source};
pub use report::{Finding, Severity, Verdict};
pub use show::ShowOutcome;
