//! [`SyncFile`]: an owned sync_file fd and what it says about itself.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::sys::{file_kind, FileKind};
use crate::{sys, Error, Result};

/// An owned sync_file: a snapshot of one or more fences, readable (POLLIN) once all signalled.
#[derive(Debug)]
pub struct SyncFile(OwnedFd);

/// Whether a fence (or a whole sync_file) has signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceStatus {
    /// Not yet.
    Pending,
    /// Signalled without error.
    Signalled,
    /// Signalled with an error (the kernel's negative errno).
    Error(i32),
}

impl FenceStatus {
    fn from_kernel(status: i32) -> Self {
        match status {
            0 => FenceStatus::Pending,
            s if s > 0 => FenceStatus::Signalled,
            e => FenceStatus::Error(e),
        }
    }

    /// Whether waiting on it would return at once.
    pub fn is_done(self) -> bool {
        self != FenceStatus::Pending
    }
}

/// One fence inside a sync_file, as `SYNC_IOC_FILE_INFO` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceInfo {
    /// The driver that created it (`"stub"` for the kernel's stub fence up to 6.12).
    pub driver: String,
    /// Its timeline.
    pub timeline: String,
    /// Its status.
    pub status: FenceStatus,
    /// When it signalled (CLOCK_MONOTONIC, ns); 0 while pending.
    pub timestamp_ns: u64,
}

/// What a sync_file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// The status of the whole sync_file.
    pub status: FenceStatus,
    /// The fences it holds.
    pub fences: Vec<FenceInfo>,
}

impl fmt::Display for FenceInfo {
    /// `driver on timeline`, e.g. `vgem on 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.driver, self.timeline)
    }
}

/// Room for this many fence records in the first `SYNC_IOC_FILE_INFO` call, so one ioctl is
/// enough for the usual sync_file (the kernel answers EINVAL when there are more).
const INLINE_FENCES: usize = 8;

impl SyncFile {
    /// Wraps an fd the kernel just handed out as a sync_file (no check).
    pub(crate) fn from_kernel(fd: OwnedFd) -> Self {
        SyncFile(fd)
    }

    /// Whether every fence has signalled; never blocks (poll with a zero timeout).
    pub fn is_signalled(&self) -> Result<bool> {
        self.wait_for(Some(Duration::ZERO))
    }

    /// Blocks up to `timeout` (forever with `None`) until the fence signals; true if it did.
    /// For tools, tests and helper threads — never call it on an event-loop thread.
    pub fn wait_for(&self, timeout: Option<Duration>) -> Result<bool> {
        let timeout = timeout.map(|t| {
            Timespec::try_from(t).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        loop {
            match poll(&mut fds, timeout.as_ref()) {
                Ok(n) => return Ok(n > 0 && fds[0].revents().contains(PollFlags::IN)),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::io("poll(sync_file)")(e)),
            }
        }
    }

    /// Reads the status and the fences (`SYNC_IOC_FILE_INFO`): one ioctl for up to eight fences.
    pub fn info(&self) -> Result<SyncFileInfo> {
        let mut raw = sys::SyncFileInfo::default();
        let mut fences = vec![sys::SyncFenceInfo::default(); INLINE_FENCES];
        match sys::sync_file_info(self.0.as_fd(), &mut raw, &mut fences) {
            Ok(()) => {}
            Err(Errno::INVAL) => {
                // More fences than the inline room: ask for the count, then read them all.
                sys::sync_file_info(self.0.as_fd(), &mut raw, &mut [])
                    .map_err(|e| self.error("SYNC_IOC_FILE_INFO", e))?;
                fences = vec![sys::SyncFenceInfo::default(); raw.num_fences as usize];
                sys::sync_file_info(self.0.as_fd(), &mut raw, &mut fences)
                    .map_err(|e| self.error("SYNC_IOC_FILE_INFO", e))?;
            }
            Err(e) => return Err(self.error("SYNC_IOC_FILE_INFO", e)),
        }
        fences.truncate(raw.num_fences as usize);
        Ok(SyncFileInfo {
            status: FenceStatus::from_kernel(raw.status),
            fences: fences
                .iter()
                .map(|f| FenceInfo {
                    driver: sys::c_name(&f.driver_name),
                    timeline: sys::c_name(&f.obj_name),
                    status: FenceStatus::from_kernel(f.status),
                    timestamp_ns: f.timestamp_ns,
                })
                .collect(),
        })
    }

    /// A new sync_file that signals when both `self` and `other` have.
    pub fn merge(&self, other: &SyncFile) -> Result<SyncFile> {
        sys::sync_file_merge(self.0.as_fd(), other.0.as_fd())
            .map(SyncFile)
            .map_err(|e| self.error("SYNC_IOC_MERGE", e))
    }

    /// Merges any number of sync_files into one (`None` for none). One is returned as it is.
    pub fn merge_all(fences: impl IntoIterator<Item = SyncFile>) -> Result<Option<SyncFile>> {
        let mut merged: Option<SyncFile> = None;
        for fence in fences {
            merged = Some(match merged {
                None => fence,
                Some(acc) => acc.merge(&fence)?,
            });
        }
        Ok(merged)
    }

    /// A second owner of the same sync_file (`dup`).
    pub fn try_clone(&self) -> Result<SyncFile> {
        self.0.try_clone().map(SyncFile).map_err(|e| Error::Io {
            op: "dup(sync_file)",
            errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })
    }

    /// Turns a kernel error on this fd into a clear one.
    fn error(&self, op: &'static str, errno: Errno) -> Error {
        sync_file_error(self.0.as_fd(), op, errno)
    }
}

fn sync_file_error(fd: BorrowedFd<'_>, op: &'static str, errno: Errno) -> Error {
    match (errno, file_kind(fd)) {
        (_, FileKind::Closed) => Error::BadFd,
        (Errno::NOTTY | Errno::INVAL, kind) if kind != FileKind::SyncFile => Error::NotASyncFile,
        (errno, _) => Error::io(op)(errno),
    }
}

/// Checks that the fd really is a sync_file (one `SYNC_IOC_FILE_INFO`): for fds from clients.
impl TryFrom<OwnedFd> for SyncFile {
    type Error = Error;

    fn try_from(fd: OwnedFd) -> Result<Self> {
        let mut raw = sys::SyncFileInfo::default();
        sys::sync_file_info(fd.as_fd(), &mut raw, &mut [])
            .map_err(|e| sync_file_error(fd.as_fd(), "SYNC_IOC_FILE_INFO", e))?;
        Ok(SyncFile(fd))
    }
}

impl AsFd for SyncFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<SyncFile> for OwnedFd {
    fn from(fence: SyncFile) -> OwnedFd {
        fence.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_kernel_convention() {
        assert_eq!(FenceStatus::from_kernel(0), FenceStatus::Pending);
        assert_eq!(FenceStatus::from_kernel(1), FenceStatus::Signalled);
        assert_eq!(FenceStatus::from_kernel(-5), FenceStatus::Error(-5));
        assert!(!FenceStatus::Pending.is_done());
        assert!(FenceStatus::Error(-5).is_done());
    }

    #[test]
    fn wrong_fds_are_typed_errors() {
        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            SyncFile::try_from(memfd),
            Err(Error::NotASyncFile)
        ));
        let null = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert!(matches!(SyncFile::try_from(null), Err(Error::NotASyncFile)));
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        assert!(matches!(SyncFile::try_from(efd), Err(Error::NotASyncFile)));
    }
}
