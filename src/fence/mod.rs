//! Fences as the kernel hands them out: [`SyncFile`] (an owned sync_file fd), what it says
//! about itself ([`SyncFileInfo`]), what it means for a compositor ([`FenceState`]: pending,
//! signalled, or the kernel's stub — no fence ever), and the dma-buf operations over the planes
//! of a buffer ([`dmabuf`]).
//!
//! # How to use
//! ```no_run
//! use std::os::fd::AsFd;
//! use fencebridge::fence::{dmabuf, Access, FenceState, StubSignature};
//! # fn f(plane0: std::fs::File, plane1: std::fs::File) -> fencebridge::Result<()> {
//! let stub = StubSignature::calibrate();
//! // At commit time: what must a reader of this buffer wait for, right now?
//! let snapshot = dmabuf::export(&[plane0.as_fd(), plane1.as_fd()], Access::Read, &stub)?;
//! match snapshot.state {
//!     FenceState::Pending => println!("wait for {:?}", snapshot.fence),
//!     FenceState::Signalled => println!("ready"),
//!     FenceState::NoFence => println!("ready, and the producer attached no fence at all"),
//! }
//! # Ok(()) }
//! ```

pub mod dmabuf;
mod stub;
mod sync_file;

pub use stub::StubSignature;
pub use sync_file::{FenceInfo, FenceStatus, SyncFile, SyncFileInfo};

/// What an access to a dma-buf is: it decides which fences it must wait for and which kind of
/// fence it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A reader waits for the writers (the implicit write fences).
    Read,
    /// A writer waits for everyone (readers and writers).
    Write,
}

impl Access {
    pub(crate) fn flags(self) -> u32 {
        match self {
            Access::Read => crate::sys::DMA_BUF_SYNC_READ,
            Access::Write => crate::sys::DMA_BUF_SYNC_WRITE,
        }
    }
}

/// What an exported fence means for whoever waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceState {
    /// Some fence has not signalled yet: wait.
    Pending,
    /// Every fence has signalled, and they are real fences (a sync_file kept from earlier, an
    /// explicit fence, or a dma-buf fence that signalled between export and inspection).
    Signalled,
    /// The kernel's stub: the dma-buf held no unsignalled fence when exported. The kernel skips
    /// signalled fences, so "never fenced" and "fenced, already done" both read like this
    /// (docs/kernel-facts.md). Commit after commit, it is the mark of a producer that does not fence
    /// (V4L2/vb2, CPU-filled buffers, some drivers) — or one that never needs waiting for.
    NoFence,
}
