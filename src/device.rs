//! DRM device nodes: finding them, opening them, asking what their driver supports (each
//! question one counted call into [`crate::sys::drm`]).
//!
//! # How to use
//! ```no_run
//! for node in fencebridge::device::DrmNode::list() {
//!     let node = node.open().unwrap();
//!     println!("{}: {}", node.path().display(), node.driver_name());
//! }
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::sys::drm::{self as sys_drm, DriverCapability};
use crate::{Error, Result};

/// Where DRM nodes live.
pub const DRI_DIR: &str = "/dev/dri";

/// A DRM node path, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePath(PathBuf);

impl NodePath {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Whether this is a render node (renderD*), which needs no DRM master for syncobjs.
    pub fn is_render_node(&self) -> bool {
        self.0
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
    }

    /// Opens the node read-write, close-on-exec.
    pub fn open(&self) -> Result<DrmNode> {
        DrmNode::open(&self.0)
    }
}

/// An open DRM node.
#[derive(Debug)]
pub struct DrmNode {
    fd: OwnedFd,
    path: PathBuf,
    driver: String,
}

impl AsFd for DrmNode {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DrmNode {
    /// The DRM nodes of this machine: render nodes first, then card nodes, each sorted.
    pub fn list() -> Vec<NodePath> {
        let Ok(dir) = std::fs::read_dir(DRI_DIR) else {
            return Vec::new();
        };
        let mut nodes: Vec<NodePath> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.starts_with("renderD") || name.starts_with("card")
            })
            .map(NodePath)
            .collect();
        nodes.sort_by_key(|n| (!n.is_render_node(), n.0.clone()));
        nodes
    }

    /// Opens a DRM node.
    pub fn open(path: &Path) -> Result<DrmNode> {
        let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(Error::io("open(DRM node)"))?;
        Self::from_fd(fd, path.to_owned())
    }

    /// Wraps an open DRM fd.
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<DrmNode> {
        let driver = sys_drm::driver_name(fd.as_fd()).map_err(Error::io("DRM_IOCTL_VERSION"))?;
        Ok(DrmNode { fd, path, driver })
    }

    /// A second handle on the same open node (the fd duplicated): the same DRM file, so the
    /// same syncobj handles. No ioctl.
    pub fn try_clone(&self) -> Result<DrmNode> {
        Ok(DrmNode {
            fd: rustix::io::fcntl_dupfd_cloexec(&self.fd, 0).map_err(Error::io("dup(DRM node)"))?,
            path: self.path.clone(),
            driver: self.driver.clone(),
        })
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel driver's name (`virtio_gpu`, `vgem`, `amdgpu`, …).
    pub fn driver_name(&self) -> &str {
        &self.driver
    }

    /// Whether the driver answers yes to a DRM capability (an error counts as no).
    pub fn has_capability(&self, cap: DriverCapability) -> bool {
        sys_drm::capability(self.as_fd(), cap).is_ok_and(|v| v != 0)
    }

    /// Whether the kernel has `DRM_IOCTL_SYNCOBJ_EVENTFD` (6.6+): asked for a handle that does
    /// not exist (`u32::MAX`), a kernel that knows the ioctl answers ENOENT (one that does not,
    /// EINVAL).
    pub fn has_syncobj_eventfd(&self) -> bool {
        let Ok(efd) = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC) else {
            return false;
        };
        // The drm crate cannot spell handle 0; u32::MAX is just as surely absent.
        let handle = sys_drm::SyncobjHandle::from(std::num::NonZeroU32::MAX);
        matches!(
            sys_drm::syncobj_eventfd(self.as_fd(), handle, 1, efd.as_fd(), false),
            Err(rustix::io::Errno::NOENT) | Ok(())
        )
    }
}
