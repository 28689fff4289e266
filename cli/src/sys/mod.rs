//! The V4L2 uAPI ([`v4l2`]) and the media controller's ([`media`], the Request API a stateless
//! decoder needs): `rustix::ioctl` opcodes and `#[repr(C)]` structs, the only place this package
//! issues ioctls.
//!
//! Every one goes through the library's [`fencebridge::sys::call`], so it is counted with the
//! library's own in [`fencebridge::sys::ioctl_count`]: one counter for the whole process, and
//! the V4L2 layer stays out of the library a compositor embeds.
//!
//! # How to use
//! ```no_run
//! use std::os::fd::AsFd;
//! # fn f(video: std::fs::File) -> rustix::io::Result<()> {
//! let before = fencebridge::sys::ioctl_count();
//! let cap = fencebridge_cli::sys::v4l2::vidioc_querycap(video.as_fd())?;
//! assert_eq!(fencebridge::sys::ioctl_count(), before + 1);
//! println!("{}", cap.driver());
//! # Ok(()) }
//! ```

pub mod media;
pub mod v4l2;
