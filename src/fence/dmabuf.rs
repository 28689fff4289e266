//! Fence operations over the planes of one buffer. Planes that share one dma-buf (same inode)
//! are handled once: their fences live on that one dma-buf's reservation object.

use std::os::fd::BorrowedFd;

use super::{Access, FenceState, StubSignature, SyncFile};
use crate::sys::{file_kind, FileKind};
use crate::{sys, Error, Result};

/// What a snapshot of a buffer's fences found.
#[derive(Debug)]
pub struct Snapshot {
    /// Pending if any plane's fences are, else NoFence if every plane exported the stub.
    pub state: FenceState,
    /// The still-pending fences of all planes merged into one; `None` when nothing is pending
    /// (the fast path: no fd is kept and nothing needs to wait).
    pub fence: Option<SyncFile>,
    /// How many distinct dma-bufs the planes are.
    pub unique_dmabufs: usize,
}

/// The distinct dma-bufs among `planes`, in order of first appearance (by device and inode).
pub fn unique_dmabufs<'a>(planes: &[BorrowedFd<'a>]) -> Result<Vec<BorrowedFd<'a>>> {
    let mut seen: Vec<(u64, u64)> = Vec::with_capacity(planes.len());
    let mut unique = Vec::with_capacity(planes.len());
    for &fd in planes {
        let st = rustix::fs::fstat(fd).map_err(Error::io("fstat(dma-buf)"))?;
        let key = (st.st_dev, st.st_ino);
        if !seen.contains(&key) {
            seen.push(key);
            unique.push(fd);
        }
    }
    Ok(unique)
}

/// Snapshots, right now, the fences an `access` to the buffer must wait for: per distinct
/// dma-buf, a poll, and an export only when something is pending; the pending fences merged.
/// Fences added later are not in it.
///
/// A dma-buf that polls ready is taken as fenceless without an export: the kernel's export
/// would skip its signalled fences and hand back the stub anyway, so the ready path costs no
/// ioctl and creates no fd.
pub fn export(planes: &[BorrowedFd<'_>], access: Access, stub: &StubSignature) -> Result<Snapshot> {
    let unique = unique_dmabufs(planes)?;
    let mut pending = Vec::new();
    let mut all_stub = true;
    for &dmabuf in &unique {
        if is_ready(dmabuf, access)? {
            continue;
        }
        let fence = export_one(dmabuf, access)?;
        // A pending fence needs no FILE_INFO (poll says so without an ioctl); only a signalled
        // one must be told apart from the stub.
        let state = if fence.is_signalled()? {
            stub.classify(&fence.info()?)
        } else {
            FenceState::Pending
        };
        match state {
            FenceState::Pending => {
                all_stub = false;
                pending.push(fence);
            }
            FenceState::Signalled => all_stub = false,
            FenceState::NoFence => {}
        }
    }
    let state = match (pending.is_empty(), all_stub) {
        (false, _) => FenceState::Pending,
        (true, true) => FenceState::NoFence,
        (true, false) => FenceState::Signalled,
    };
    Ok(Snapshot {
        state,
        fence: SyncFile::merge_all(pending)?,
        unique_dmabufs: unique.len(),
    })
}

/// Whether `access` to the dma-buf would wait for nothing now: POLLIN waits for the writers
/// (what a reader waits for), POLLOUT for everyone (what a writer waits for).
fn is_ready(dmabuf: BorrowedFd<'_>, access: Access) -> Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let flags = match access {
        Access::Read => PollFlags::IN,
        Access::Write => PollFlags::OUT,
    };
    let mut fds = [PollFd::new(&dmabuf, flags)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let ready = poll(&mut fds, Some(&now)).map_err(Error::io("poll(dma-buf)"))?;
    let revents = fds[0].revents();
    if revents.contains(PollFlags::NVAL) {
        return Err(Error::BadFd);
    }
    // A file that is not a dma-buf polls ready too; the export below tells it apart.
    Ok(ready > 0 && revents.intersects(flags) && file_kind(dmabuf) == FileKind::DmaBuf)
}

/// The raw export of one dma-buf, unclassified: the fences an `access` must wait for right now,
/// or the kernel's stub when there are none.
pub fn export_one(dmabuf: BorrowedFd<'_>, access: Access) -> Result<SyncFile> {
    sys::dma_buf_export_sync_file(dmabuf, access.flags())
        .map(SyncFile::from_kernel)
        .map_err(|e| dmabuf_error(dmabuf, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE", e))
}

/// Adds `fence` to every distinct dma-buf of the buffer, as a read or a write fence: implicit
/// consumers then wait for it (a write fence blocks readers and writers, a read fence writers).
pub fn import(planes: &[BorrowedFd<'_>], fence: &SyncFile, access: Access) -> Result<()> {
    use std::os::fd::AsFd;
    for dmabuf in unique_dmabufs(planes)? {
        sys::dma_buf_import_sync_file(dmabuf, fence.as_fd(), access.flags())
            .map_err(|e| dmabuf_error(dmabuf, "DMA_BUF_IOCTL_IMPORT_SYNC_FILE", e))?;
    }
    Ok(())
}

/// ENOTTY from a dma-buf ioctl means either "not a dma-buf" or "this kernel lacks the ioctl";
/// the file system the fd lives on tells which.
pub(crate) fn dmabuf_error(
    fd: BorrowedFd<'_>,
    op: &'static str,
    errno: rustix::io::Errno,
) -> Error {
    match file_kind(fd) {
        FileKind::Closed => Error::BadFd,
        FileKind::DmaBuf if errno == rustix::io::Errno::NOTTY => Error::Unsupported {
            what: "dma-buf sync_file export/import",
            errno,
        },
        FileKind::DmaBuf => Error::io(op)(errno),
        _ => Error::NotADmaBuf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn planes_of_one_file_count_once() {
        let a = rustix::fs::memfd_create("a", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let b = rustix::fs::memfd_create("b", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let a2 = a.try_clone().unwrap();
        let unique = unique_dmabufs(&[a.as_fd(), a2.as_fd(), b.as_fd(), a.as_fd()]).unwrap();
        assert_eq!(unique.len(), 2);
    }

    #[test]
    fn non_dmabufs_are_refused_by_name() {
        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let stub = StubSignature::names_only();
        assert!(matches!(
            export(&[memfd.as_fd()], Access::Read, &stub),
            Err(Error::NotADmaBuf)
        ));
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            export(&[null.as_fd()], Access::Write, &stub),
            Err(Error::NotADmaBuf)
        ));
    }
}
