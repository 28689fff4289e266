//! The crate's one error type: what went wrong, in the words a compositor author needs.
//!
//! # How to use
//! ```no_run
//! use fencebridge::{fence::SyncFile, Error};
//! # fn f(fd: std::os::fd::OwnedFd) {
//! match SyncFile::try_from(fd) {
//!     Ok(fence) => println!("signalled: {:?}", fence.is_signalled()),
//!     Err(Error::NotASyncFile) => eprintln!("the client sent something else"),
//!     Err(e) => eprintln!("{e}"),
//! }
//! # }
//! ```

use rustix::io::Errno;

/// Everything that can fail in fencebridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fd is not a dma-buf.
    #[error("the fd is not a dma-buf")]
    NotADmaBuf,
    /// The fd is not a sync_file.
    #[error("the fd is not a sync_file")]
    NotASyncFile,
    /// The fd is not a DRM syncobj (or belongs to another device).
    #[error("the fd is not a DRM syncobj of this device")]
    NotASyncobj,
    /// The fd is closed or invalid.
    #[error("bad file descriptor")]
    BadFd,
    /// This kernel or driver lacks the feature.
    #[error("{what} is not supported by this kernel or driver ({errno})")]
    Unsupported {
        /// The missing feature.
        what: &'static str,
        /// What the kernel answered.
        errno: Errno,
    },
    /// A timeline point the operation cannot take.
    #[error("invalid timeline point {point}: {reason}")]
    InvalidPoint {
        /// The point.
        point: u64,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The timeline point has no fence yet (nothing was submitted for it).
    #[error("timeline point {point} has no fence yet")]
    PointNotSubmitted {
        /// The point.
        point: u64,
    },
    /// No device of the needed kind exists on this machine.
    #[error("no {0} on this machine")]
    NoDevice(&'static str),
    /// A kernel call failed.
    #[error("{op} failed: {errno}")]
    Io {
        /// The operation, as the kernel names it.
        op: &'static str,
        /// What the kernel answered.
        errno: Errno,
    },
}

/// Shorthand for `Result<T, fencebridge::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Unsupported { errno, .. } | Error::Io { errno, .. } => Some(*errno),
            Error::BadFd => Some(Errno::BADF),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(Errno) -> Error {
        move |errno| match errno {
            Errno::BADF => Error::BadFd,
            errno => Error::Io { op, errno },
        }
    }
}
