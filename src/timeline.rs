//! DRM syncobj timelines: the explicit side. A [`SyncobjDevice`] is a DRM node whose driver
//! supports timeline syncobjs; a [`Timeline`] is one syncobj on it, created here or imported
//! from a client's fd (linux-drm-syncobj-v1 `import_timeline`). Points move between timelines
//! and sync_files ([`Timeline::import_sync_file`], [`Timeline::export_sync_file`]).
//!
//! Every syncobj call is one counted call into [`crate::sys::drm`]. Points move through a
//! per-device binary staging syncobj: a sync_file is imported into it and transferred to the
//! point, a point is transferred into it and exported (two ioctls each way, no temporary handle
//! to leak; the staging handle lives as long as the device).
//!
//! # How to use
//! ```no_run
//! use fencebridge::timeline::SyncobjDevice;
//! # fn f(fence: fencebridge::fence::SyncFile) -> fencebridge::Result<()> {
//! let device = SyncobjDevice::find()?;
//! let timeline = device.create_timeline()?;
//! timeline.import_sync_file(1, &fence)?; // point 1 signals with `fence`
//! let again = timeline.export_sync_file(1)?; // and back as a sync_file
//! timeline.signal(2)?; // a CPU signal
//! assert!(timeline.is_signalled(2)?);
//! # Ok(()) }
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;

use crate::device::DrmNode;
use crate::fence::SyncFile;
use crate::sys::drm::{self as sys_drm, DriverCapability, SyncobjHandle};
use crate::sys::{file_kind, FileKind};
use crate::{Error, Result};

mod waiter;

use waiter::Waiter;
pub(crate) use waiter::{Notify, PointWatch};

/// What to wait for at a timeline point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WaitFor {
    /// The point's fence has signalled (what a CPU reader needs).
    #[default]
    Signalled,
    /// The point has a fence (it may still be running; a GPU consumer can wait on it itself).
    Available,
}

/// A DRM node with syncobj timelines. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct SyncobjDevice(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    node: DrmNode,
    eventfd: bool,
    /// The binary syncobj every sync_file import and export passes through.
    staging: Mutex<SyncobjHandle>,
    /// Syncobj handles this device holds right now (timelines, staging, the waiters' wake
    /// timelines).
    live_handles: AtomicUsize,
    /// The shared waiter threads (for [`WaitFor::Signalled`], [`WaitFor::Available`]), started
    /// on first use where the kernel lacks `SYNCOBJ_EVENTFD` or the fallback is asked for.
    waiters: Mutex<[Option<Arc<Waiter>>; 2]>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let staging = *self.staging.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = sys_drm::syncobj_destroy(self.node.as_fd(), staging);
        let waiters = self.waiters.get_mut().unwrap_or_else(|p| p.into_inner());
        for waiter in waiters.iter().flatten() {
            waiter.stop();
        }
    }
}

impl SyncobjDevice {
    /// The first DRM node whose driver supports syncobj timelines: render nodes first, then
    /// card nodes ([`DrmNode::list`]'s order). `Capabilities::probe_and_open` picks the same
    /// one while it probes every node.
    pub fn find() -> Result<SyncobjDevice> {
        let opened = DrmNode::list().into_iter().filter_map(|n| n.open().ok());
        Self::first_of(opened).ok_or(Error::NoDevice(
            "DRM device with syncobj timelines (looked in /dev/dri)",
        ))
    }

    /// The first of `nodes` that is a syncobj device: the one rule for which node the bridge
    /// uses.
    pub(crate) fn first_of(nodes: impl IntoIterator<Item = DrmNode>) -> Option<SyncobjDevice> {
        nodes
            .into_iter()
            .find_map(|node| Self::from_node(node).ok())
    }

    /// Opens a given node; fails unless its driver supports syncobj timelines.
    pub fn open(path: &Path) -> Result<SyncobjDevice> {
        Self::from_node(DrmNode::open(path)?)
    }

    /// Takes an open node; fails unless its driver supports syncobj timelines.
    pub fn from_node(node: DrmNode) -> Result<SyncobjDevice> {
        if !node.has_capability(DriverCapability::TimelineSyncObj) {
            return Err(Error::Unsupported {
                what: "syncobj timelines",
                errno: Errno::OPNOTSUPP,
            });
        }
        let eventfd = node.has_syncobj_eventfd();
        let staging = sys_drm::syncobj_create(node.as_fd(), false)
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_CREATE"))?;
        Ok(SyncobjDevice(Arc::new(Inner {
            node,
            eventfd,
            staging: Mutex::new(staging),
            live_handles: AtomicUsize::new(1),
            waiters: Mutex::default(),
        })))
    }

    /// The DRM node.
    pub fn node(&self) -> &DrmNode {
        &self.0.node
    }

    /// Whether the kernel can signal an eventfd from a point (`SYNCOBJ_EVENTFD`, 6.6+).
    pub fn supports_eventfd(&self) -> bool {
        self.0.eventfd
    }

    /// How many syncobj handles this device holds now (the staging one included): a leak check.
    pub fn live_handles(&self) -> usize {
        self.0.live_handles.load(Ordering::Relaxed)
    }

    /// A new timeline, every point unsignalled.
    pub fn create_timeline(&self) -> Result<Timeline> {
        Ok(Timeline(Arc::new(OwnedSyncobj::new(self, false)?)))
    }

    /// Imports a timeline from a syncobj fd (as linux-drm-syncobj-v1's `import_timeline` hands
    /// it over). The fd may be closed afterwards.
    pub fn import_timeline(&self, fd: BorrowedFd<'_>) -> Result<Timeline> {
        let handle = sys_drm::syncobj_fd_to_handle(self.0.node.as_fd(), fd).map_err(|errno| {
            match errno {
                // The kernel says EINVAL for a closed fd too.
                _ if file_kind(fd) == FileKind::Closed => Error::BadFd,
                Errno::INVAL | Errno::NOENT => Error::NotASyncobj,
                errno => Error::Io {
                    op: "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE",
                    errno,
                },
            }
        })?;
        self.0.live_handles.fetch_add(1, Ordering::Relaxed);
        Ok(Timeline(Arc::new(OwnedSyncobj {
            device: self.clone(),
            handle,
        })))
    }

    fn create_syncobj(&self, signalled: bool) -> Result<SyncobjHandle> {
        let handle = sys_drm::syncobj_create(self.0.node.as_fd(), signalled)
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_CREATE"))?;
        self.0.live_handles.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    fn destroy_syncobj(&self, handle: SyncobjHandle) {
        if let Err(e) = sys_drm::syncobj_destroy(self.0.node.as_fd(), handle) {
            tracing::warn!("DRM_IOCTL_SYNCOBJ_DESTROY failed: {e}");
        }
        self.0.live_handles.fetch_sub(1, Ordering::Relaxed);
    }

    /// The device's shared waiter for `wait_for`, started on first use.
    fn waiter(&self, wait_for: WaitFor) -> Result<Arc<Waiter>> {
        let mut waiters = self.0.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut waiters[usize::from(wait_for == WaitFor::Available)];
        if let Some(waiter) = slot {
            return Ok(waiter.clone());
        }
        let waiter = Waiter::spawn(self, wait_for)?;
        *slot = Some(waiter.clone());
        Ok(waiter)
    }
}

/// One timeline syncobj. Clones share it; the handle is closed when the last one drops (a
/// waiter thread keeps its own clone, so a handle number is never reused under it).
#[derive(Debug, Clone)]
pub struct Timeline(Arc<OwnedSyncobj>);

/// A syncobj handle, destroyed on drop.
#[derive(Debug)]
pub(crate) struct OwnedSyncobj {
    device: SyncobjDevice,
    handle: SyncobjHandle,
}

impl OwnedSyncobj {
    pub(crate) fn new(device: &SyncobjDevice, signalled: bool) -> Result<OwnedSyncobj> {
        Ok(OwnedSyncobj {
            device: device.clone(),
            handle: device.create_syncobj(signalled)?,
        })
    }

    pub(crate) fn handle(&self) -> SyncobjHandle {
        self.handle
    }
}

impl Drop for OwnedSyncobj {
    fn drop(&mut self) {
        self.device.destroy_syncobj(self.handle);
    }
}

/// Whether `value` names a point on a timeline: the one place that says 0 does not. To the
/// kernel, point 0 of a timeline syncobj is the whole syncobj: waiting for it waits for the
/// fence the timeline has last (forever on a fresh one), signalling it replaces the timeline's
/// fence and so breaks every other point. Every call here refuses it
/// ([`Error::InvalidPoint`]); the bridge plans a client's point 0 as no point
/// (`bridge::plan::SyncMode::without_point_zero`).
pub const fn names_a_point(value: u64) -> bool {
    value != 0
}

/// Refuses what [`names_a_point`] says is no point.
fn check_point(point: u64) -> Result<()> {
    if !names_a_point(point) {
        return Err(Error::InvalidPoint {
            point,
            reason: "0 is not a timeline point",
        });
    }
    Ok(())
}

impl Timeline {
    /// The device it lives on.
    pub fn device(&self) -> &SyncobjDevice {
        &self.0.device
    }

    pub(crate) fn syncobj(&self) -> &OwnedSyncobj {
        &self.0
    }

    /// A syncobj fd for this timeline, to hand to a client or another process.
    pub fn export_fd(&self) -> Result<OwnedFd> {
        sys_drm::syncobj_handle_to_fd(self.0.device.0.node.as_fd(), self.0.handle, false)
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD"))
    }

    /// Makes `point` signal when `fence` does (no CPU wait: the fence itself becomes the point).
    pub fn import_sync_file(&self, point: u64, fence: &SyncFile) -> Result<()> {
        check_point(point)?;
        let node = &self.0.device.0.node;
        let staging = self
            .0
            .device
            .0
            .staging
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sys_drm::syncobj_import_sync_file(node.as_fd(), *staging, fence.as_fd()).map_err(|e| {
            match e {
                Errno::INVAL | Errno::BADF if file_kind(fence.as_fd()) != FileKind::SyncFile => {
                    Error::NotASyncFile
                }
                e => Error::io("DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE(IMPORT_SYNC_FILE)")(e),
            }
        })?;
        sys_drm::syncobj_transfer(node.as_fd(), *staging, self.0.handle, 0, point)
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_TRANSFER"))
    }

    /// The fence of `point` as a sync_file. Fails with [`Error::PointNotSubmitted`] while the
    /// point has no fence yet (wait for it with [`WaitFor::Available`] first).
    pub fn export_sync_file(&self, point: u64) -> Result<SyncFile> {
        check_point(point)?;
        let node = &self.0.device.0.node;
        let staging = self
            .0
            .device
            .0
            .staging
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sys_drm::syncobj_transfer(node.as_fd(), self.0.handle, *staging, point, 0).map_err(
            |errno| match errno {
                Errno::INVAL => Error::PointNotSubmitted { point },
                errno => Error::Io {
                    op: "DRM_IOCTL_SYNCOBJ_TRANSFER",
                    errno,
                },
            },
        )?;
        sys_drm::syncobj_handle_to_fd(node.as_fd(), *staging, true)
            .map(SyncFile::from_kernel)
            .map_err(Error::io(
                "DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD(EXPORT_SYNC_FILE)",
            ))
    }

    /// Signals `point` from the CPU.
    pub fn signal(&self, point: u64) -> Result<()> {
        check_point(point)?;
        sys_drm::syncobj_timeline_signal(self.0.device.0.node.as_fd(), &[self.0.handle], &[point])
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL"))
    }

    /// The highest point signalled so far (0 for none).
    pub fn signalled_point(&self) -> Result<u64> {
        let mut value = [0u64];
        sys_drm::syncobj_timeline_query(self.0.device.0.node.as_fd(), &[self.0.handle], &mut value)
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_QUERY"))?;
        Ok(value[0])
    }

    /// Whether `point` has signalled; never blocks.
    pub fn is_signalled(&self, point: u64) -> Result<bool> {
        check_point(point)?;
        Ok(self.signalled_point()? >= point)
    }

    /// Has the device's shared waiter thread call `notify` once `point` is ready (the fallback
    /// for kernels without `SYNCOBJ_EVENTFD`); dropping the watch cancels it. A point that is
    /// ready already is notified at once.
    pub(crate) fn watch(
        &self,
        point: u64,
        wait_for: WaitFor,
        notify: Notify,
    ) -> Result<PointWatch> {
        check_point(point)?;
        Ok(self.device().waiter(wait_for)?.watch(self, point, notify))
    }

    /// Asks the kernel to signal `eventfd` once `point` is ready (`SYNCOBJ_EVENTFD`).
    pub fn register_eventfd(
        &self,
        point: u64,
        eventfd: BorrowedFd<'_>,
        wait_for: WaitFor,
    ) -> Result<()> {
        check_point(point)?;
        if !self.0.device.supports_eventfd() {
            return Err(Error::Unsupported {
                what: "DRM_IOCTL_SYNCOBJ_EVENTFD",
                errno: Errno::INVAL,
            });
        }
        let available = wait_for == WaitFor::Available;
        let node = self.0.device.0.node.as_fd();
        sys_drm::syncobj_eventfd(node, self.0.handle, point, eventfd, available)
            .map_err(Error::io("DRM_IOCTL_SYNCOBJ_EVENTFD"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_zero_is_refused() {
        assert!(matches!(
            check_point(0),
            Err(Error::InvalidPoint { point: 0, .. })
        ));
        assert!(check_point(1).is_ok());
        assert!(check_point(u64::MAX).is_ok());
    }
}
