//! The DRM ioctls the crate issues: the syncobj calls, the driver's version and capabilities,
//! dumb buffers. All but one go through the `drm` crate; it is reached only from here, through
//! a private wrapper of the node's fd, so each call is counted in [`super::ioctl_count`] by the
//! function that makes it (with as many ioctls as the `drm` crate issues for it).
//!
//! The one call that is ours, [`syncobj_import_sync_file`]: drm 0.14.1 sends handle 0 with
//! `IMPORT_SYNC_FILE`, and the kernel then says ENOENT.
//!
//! # How to use
//! ```no_run
//! use std::os::fd::AsFd;
//! # fn f(node: std::fs::File) -> rustix::io::Result<()> {
//! let timeline = fencebridge::sys::drm::syncobj_create(node.as_fd(), false)?;
//! fencebridge::sys::drm::syncobj_timeline_signal(node.as_fd(), &[timeline], &[1])?;
//! let mut points = [0];
//! fencebridge::sys::drm::syncobj_timeline_query(node.as_fd(), &[timeline], &mut points)?;
//! assert_eq!(points, [1]);
//! fencebridge::sys::drm::syncobj_destroy(node.as_fd(), timeline)?;
//! # Ok(()) }
//! ```

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use ::drm::control::Device as _;
use ::drm::Device as _;
use rustix::io::{Errno, Result};
use rustix::ioctl::{opcode, Opcode, Updater};

pub use ::drm::buffer::DrmFourcc;
pub use ::drm::control::dumbbuffer::DumbBuffer;
pub use ::drm::control::syncobj::Handle as SyncobjHandle;
pub use ::drm::DriverCapability;

use super::{call, count};

/// A DRM fd, as the `drm` crate's traits take it. Private: nothing outside this module can call
/// the `drm` crate on a node, so no DRM ioctl escapes the count.
struct Card<'a>(BorrowedFd<'a>);

impl AsFd for Card<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0
    }
}

impl ::drm::Device for Card<'_> {}
impl ::drm::control::Device for Card<'_> {}

/// Counts `ioctls` and makes the `drm` crate call that issues them.
fn drm_crate<T>(
    fd: BorrowedFd<'_>,
    ioctls: u64,
    f: impl FnOnce(&Card<'_>) -> std::io::Result<T>,
) -> Result<T> {
    count(ioctls);
    f(&Card(fd)).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
}

/// The driver's name (`DRM_IOCTL_VERSION`, asked twice: once for the lengths, once for the
/// strings).
pub fn driver_name(drm: BorrowedFd<'_>) -> Result<String> {
    let driver = drm_crate(drm, 2, |card| card.get_driver())?;
    Ok(driver.name().to_string_lossy().into_owned())
}

/// The driver's value for a capability (`DRM_IOCTL_GET_CAP`).
pub fn capability(drm: BorrowedFd<'_>, cap: DriverCapability) -> Result<u64> {
    drm_crate(drm, 1, |card| card.get_driver_capability(cap))
}

/// A new syncobj (`DRM_IOCTL_SYNCOBJ_CREATE`), signalled or not.
pub fn syncobj_create(drm: BorrowedFd<'_>, signalled: bool) -> Result<SyncobjHandle> {
    drm_crate(drm, 1, |card| card.create_syncobj(signalled))
}

/// Destroys a syncobj handle (`DRM_IOCTL_SYNCOBJ_DESTROY`).
pub fn syncobj_destroy(drm: BorrowedFd<'_>, handle: SyncobjHandle) -> Result<()> {
    drm_crate(drm, 1, |card| card.destroy_syncobj(handle))
}

/// A handle for a syncobj fd (`DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`).
pub fn syncobj_fd_to_handle(drm: BorrowedFd<'_>, syncobj: BorrowedFd<'_>) -> Result<SyncobjHandle> {
    drm_crate(drm, 1, |card| card.fd_to_syncobj(syncobj, false))
}

/// An fd for a syncobj handle (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`): a syncobj fd, or with
/// `export_sync_file` a sync_file of the binary syncobj's fence.
pub fn syncobj_handle_to_fd(
    drm: BorrowedFd<'_>,
    handle: SyncobjHandle,
    export_sync_file: bool,
) -> Result<OwnedFd> {
    drm_crate(drm, 1, |card| card.syncobj_to_fd(handle, export_sync_file))
}

/// Moves the fence of `src` at `src_point` to `dst` at `dst_point` (`DRM_IOCTL_SYNCOBJ_TRANSFER`;
/// point 0 names a binary syncobj's one fence).
pub fn syncobj_transfer(
    drm: BorrowedFd<'_>,
    src: SyncobjHandle,
    dst: SyncobjHandle,
    src_point: u64,
    dst_point: u64,
) -> Result<()> {
    drm_crate(drm, 1, |card| {
        card.syncobj_timeline_transfer(src, dst, src_point, dst_point)
    })
}

/// Signals each handle's point from the CPU (`DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`).
pub fn syncobj_timeline_signal(
    drm: BorrowedFd<'_>,
    handles: &[SyncobjHandle],
    points: &[u64],
) -> Result<()> {
    drm_crate(drm, 1, |card| card.syncobj_timeline_signal(handles, points))
}

/// Each handle's highest signalled point, into `points` (`DRM_IOCTL_SYNCOBJ_QUERY`).
pub fn syncobj_timeline_query(
    drm: BorrowedFd<'_>,
    handles: &[SyncobjHandle],
    points: &mut [u64],
) -> Result<()> {
    drm_crate(drm, 1, |card| {
        card.syncobj_timeline_query(handles, points, false)
    })
}

/// Blocks until any (handle, point) is ready, or `deadline_ns` (absolute CLOCK_MONOTONIC)
/// passes (ETIME); the index of the first ready one (`DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT`, with
/// `WAIT_FOR_SUBMIT`, and `WAIT_AVAILABLE` if `available`).
pub fn syncobj_timeline_wait_any(
    drm: BorrowedFd<'_>,
    handles: &[SyncobjHandle],
    points: &[u64],
    deadline_ns: i64,
    available: bool,
) -> Result<u32> {
    drm_crate(drm, 1, |card| {
        card.syncobj_timeline_wait(handles, points, deadline_ns, false, true, available)
    })
}

/// Has the kernel signal `eventfd` once `point` is signalled, or only has a fence with
/// `available` (`DRM_IOCTL_SYNCOBJ_EVENTFD`, 6.6+).
pub fn syncobj_eventfd(
    drm: BorrowedFd<'_>,
    handle: SyncobjHandle,
    point: u64,
    eventfd: BorrowedFd<'_>,
    available: bool,
) -> Result<()> {
    drm_crate(drm, 1, |card| {
        card.syncobj_eventfd(handle, point, eventfd, available)
    })
}

/// A new dumb buffer (`DRM_IOCTL_MODE_CREATE_DUMB`; card nodes only).
pub fn dumb_create(
    drm: BorrowedFd<'_>,
    (width, height): (u32, u32),
    format: DrmFourcc,
    bpp: u32,
) -> Result<DumbBuffer> {
    drm_crate(drm, 1, |card| {
        card.create_dumb_buffer((width, height), format, bpp)
    })
}

/// A dumb buffer's GEM handle as a dma-buf, mappable for writing
/// (`DRM_IOCTL_PRIME_HANDLE_TO_FD` with `DRM_CLOEXEC | DRM_RDWR`).
pub fn dumb_to_dmabuf(drm: BorrowedFd<'_>, dumb: &DumbBuffer) -> Result<OwnedFd> {
    const DRM_CLOEXEC_RDWR: u32 = 0x80000 | 0x2;
    let handle = ::drm::buffer::Buffer::handle(dumb);
    drm_crate(drm, 1, |card| {
        card.buffer_to_prime_fd(handle, DRM_CLOEXEC_RDWR)
    })
}

/// Destroys a dumb buffer's GEM handle (`DRM_IOCTL_MODE_DESTROY_DUMB`); a dma-buf exported from
/// it keeps the memory.
pub fn dumb_destroy(drm: BorrowedFd<'_>, dumb: DumbBuffer) -> Result<()> {
    drm_crate(drm, 1, |card| card.destroy_dumb_buffer(dumb))
}

/// `DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE`.
pub const DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE: u32 = 1 << 0;

/// `struct drm_syncobj_handle` (with the `point` field of current headers).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmSyncobjHandle {
    /// The syncobj handle (in for IMPORT_SYNC_FILE, out otherwise).
    pub handle: u32,
    /// `DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_*`.
    pub flags: u32,
    /// The fd to import.
    pub fd: i32,
    /// Must be 0.
    pub pad: u32,
    /// Timeline point (only with the TIMELINE flag, 6.x+; unused here).
    pub point: u64,
}

/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`.
pub const DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: Opcode =
    opcode::read_write::<DrmSyncobjHandle>(b'd', 0xC2);

/// Replaces the fence of the binary syncobj `handle` with the fence of `sync_file`.
pub fn syncobj_import_sync_file(
    drm: BorrowedFd<'_>,
    handle: SyncobjHandle,
    sync_file: BorrowedFd<'_>,
) -> Result<()> {
    let mut arg = DrmSyncobjHandle {
        handle: handle.into(),
        flags: DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
        fd: sync_file.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: the opcode is DRM_IOWR(0xC2, struct drm_syncobj_handle) and `arg` has that layout;
    // the kernel reads the borrowed sync_file fd and writes only inside `arg`.
    unsafe {
        call(
            drm,
            Updater::<{ DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE }, _>::new(&mut arg),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::tests::ioctls_of;

    #[test]
    fn opcode_and_layout_match_the_kernel_headers() {
        assert_eq!(DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, 0xc018_64c2);
        assert_eq!(std::mem::size_of::<DrmSyncobjHandle>(), 24);
    }

    /// Every call, made on a file that is no DRM node (the kernel refuses each with ENOTTY, after
    /// the ioctl was issued), is counted: a call that skipped the count fails here. (The two
    /// that need a dumb buffer the kernel made are counted in the kernel tests' ioctl tables.)
    #[test]
    fn every_call_is_counted() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = file.as_fd();
        let handle = SyncobjHandle::from(std::num::NonZeroU32::MIN);
        // `driver_name` counts its two ioctls even though the first fails: the count is what a
        // success costs.
        let table: [(&str, u64, &dyn Fn() -> bool); 13] = [
            ("driver_name", 2, &|| driver_name(fd).is_err()),
            ("capability", 1, &|| {
                capability(fd, DriverCapability::TimelineSyncObj).is_err()
            }),
            ("syncobj_create", 1, &|| syncobj_create(fd, false).is_err()),
            ("syncobj_destroy", 1, &|| {
                syncobj_destroy(fd, handle).is_err()
            }),
            ("syncobj_fd_to_handle", 1, &|| {
                syncobj_fd_to_handle(fd, fd).is_err()
            }),
            ("syncobj_handle_to_fd", 1, &|| {
                syncobj_handle_to_fd(fd, handle, true).is_err()
            }),
            ("syncobj_transfer", 1, &|| {
                syncobj_transfer(fd, handle, handle, 1, 0).is_err()
            }),
            ("syncobj_timeline_signal", 1, &|| {
                syncobj_timeline_signal(fd, &[handle], &[1]).is_err()
            }),
            ("syncobj_timeline_query", 1, &|| {
                syncobj_timeline_query(fd, &[handle], &mut [0]).is_err()
            }),
            ("syncobj_timeline_wait_any", 1, &|| {
                syncobj_timeline_wait_any(fd, &[handle], &[1], 0, false).is_err()
            }),
            ("syncobj_eventfd", 1, &|| {
                syncobj_eventfd(fd, handle, 1, fd, false).is_err()
            }),
            ("syncobj_import_sync_file", 1, &|| {
                syncobj_import_sync_file(fd, handle, fd).is_err()
            }),
            ("dumb_create", 1, &|| {
                dumb_create(fd, (1, 1), DrmFourcc::Xrgb8888, 32).is_err()
            }),
        ];
        for (name, ioctls, call) in table {
            let (refused, counted) = ioctls_of(call);
            assert!(refused, "{name}: /dev/null is no DRM node");
            assert_eq!(counted, ioctls, "{name}");
        }
    }

    /// The structure behind the count: no file of the crate but this one names the `drm`
    /// crate's device traits, so none can issue a DRM ioctl this module does not count.
    #[test]
    fn only_this_module_calls_the_drm_crate() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut dirs = vec![src.clone()];
        let mut offenders = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path != src.join("sys/drm.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let names_a_trait = ["drm::Device", "drm::control::Device"]
                        .iter()
                        .any(|t| text.contains(t));
                    if names_a_trait {
                        offenders.push(path);
                    }
                }
            }
        }
        assert_eq!(offenders, Vec::<std::path::PathBuf>::new());
    }
}
