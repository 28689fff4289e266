//! Producers of real dma-bufs, for calibration, probes, tests, tools and the test clients:
//! the system dma-heap, udmabuf (memfd pages), and vgem — whose fences a test can attach and
//! signal by hand, like a GPU job that has not finished yet.
//!
//! # How to use
//! ```no_run
//! use fencebridge::producer::Vgem;
//! # fn f() -> fencebridge::Result<()> {
//! let vgem = Vgem::open()?;
//! let buffer = vgem.create_buffer(64, 64)?;
//! let fence = buffer.attach_fence(true)?; // a "GPU write" in flight
//! // ... hand buffer.dmabuf() to a compositor ...
//! fence.signal()?; // the write is done
//! # Ok(()) }
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use crate::device::DrmNode;
use crate::sys::drm::{self as sys_drm, DrmFourcc, DumbBuffer};
use crate::{sys, Error, Result};

/// The system dma-heap (`/dev/dma_heap/system`, 5.6+ where built).
pub const DMA_HEAP_SYSTEM: &str = "/dev/dma_heap/system";
/// The udmabuf device (`/dev/udmabuf`).
pub const UDMABUF: &str = "/dev/udmabuf";

/// Allocates a small dma-buf that never held a fence: from the system dma-heap, udmabuf, or a
/// dumb buffer of the first DRM node that has them, whichever works first.
pub fn fresh_dmabuf() -> Result<OwnedFd> {
    let page = 4096;
    dma_heap_alloc(page)
        .or_else(|_| udmabuf_alloc(page))
        .or_else(|_| {
            let node = card_nodes().next().ok_or(Error::NoDevice(
                "DRM card node (dumb buffers need one; render nodes refuse them)",
            ))?;
            dumb_dmabuf(&node, 16, 16).map(|(_, fd)| fd)
        })
}

/// A dma-buf of `len` bytes from the system dma-heap.
pub fn dma_heap_alloc(len: u64) -> Result<OwnedFd> {
    let heap = rustix::fs::open(
        DMA_HEAP_SYSTEM,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::io("open(/dev/dma_heap/system)"))?;
    sys::dma_heap_alloc(heap.as_fd(), len).map_err(Error::io("DMA_HEAP_IOCTL_ALLOC"))
}

/// A dma-buf over `len` bytes (rounded up to pages) of a new sealed memfd, through udmabuf.
pub fn udmabuf_alloc(len: u64) -> Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let len = len.div_ceil(4096).max(1) * 4096;
    let dev = rustix::fs::open(UDMABUF, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(Error::io("open(/dev/udmabuf)"))?;
    let memfd = rustix::fs::memfd_create(
        "fencebridge-udmabuf",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(Error::io("memfd_create"))?;
    rustix::fs::ftruncate(&memfd, len).map_err(Error::io("ftruncate(memfd)"))?;
    rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK).map_err(Error::io("F_ADD_SEALS"))?;
    sys::udmabuf_create(dev.as_fd(), memfd.as_fd(), len).map_err(Error::io("UDMABUF_CREATE"))
}

/// The card (primary) nodes that open.
fn card_nodes() -> impl Iterator<Item = DrmNode> {
    DrmNode::list()
        .into_iter()
        .filter(|n| !n.is_render_node())
        .filter_map(|n| n.open().ok())
}

/// A dumb buffer (XRGB8888) exported as a dma-buf; the GEM handle stays open.
fn dumb_dmabuf(node: &DrmNode, width: u32, height: u32) -> Result<(DumbBuffer, OwnedFd)> {
    let dumb = sys_drm::dumb_create(node.as_fd(), (width, height), DrmFourcc::Xrgb8888, 32)
        .map_err(Error::io("DRM_IOCTL_MODE_CREATE_DUMB"))?;
    match sys_drm::dumb_to_dmabuf(node.as_fd(), &dumb) {
        Ok(fd) => Ok((dumb, fd)),
        Err(e) => {
            let _ = sys_drm::dumb_destroy(node.as_fd(), dumb);
            Err(Error::io("DRM_IOCTL_PRIME_HANDLE_TO_FD")(e))
        }
    }
}

/// The vgem device: dumb buffers whose fences the caller attaches and signals.
#[derive(Debug, Clone)]
pub struct Vgem {
    node: Arc<DrmNode>,
}

impl Vgem {
    /// Opens vgem's card node (dumb buffers cannot be made through a render node).
    pub fn open() -> Result<Vgem> {
        card_nodes()
            .find(|n| n.driver_name() == "vgem")
            .map(|node| Vgem {
                node: Arc::new(node),
            })
            .ok_or(Error::NoDevice("vgem device (modprobe vgem)"))
    }

    /// A new `width`×`height` XRGB8888 buffer, exported as a dma-buf.
    pub fn create_buffer(&self, width: u32, height: u32) -> Result<VgemBuffer> {
        let (dumb, dmabuf) = dumb_dmabuf(&self.node, width, height)?;
        Ok(VgemBuffer {
            vgem: self.clone(),
            dumb: Some(dumb),
            dmabuf,
        })
    }
}

/// A vgem buffer: its dma-buf, and the GEM handle fences are attached through.
#[derive(Debug)]
pub struct VgemBuffer {
    vgem: Vgem,
    dumb: Option<DumbBuffer>,
    dmabuf: OwnedFd,
}

impl VgemBuffer {
    /// The buffer's dma-buf.
    pub fn dmabuf(&self) -> BorrowedFd<'_> {
        self.dmabuf.as_fd()
    }

    /// The row pitch in bytes.
    pub fn pitch(&self) -> u32 {
        self.dumb.as_ref().map_or(0, drm::buffer::Buffer::pitch)
    }

    /// Attaches a new pending fence, as a write (exclusive) or read fence. It signals when
    /// [`VgemFence::signal`] is called — or by itself after vgem's 10 s timeout.
    pub fn attach_fence(&self, write: bool) -> Result<VgemFence> {
        let handle: u32 = self
            .dumb
            .as_ref()
            .map(|d| drm::buffer::Buffer::handle(d).into())
            .unwrap_or(0);
        let flags = if write { sys::VGEM_FENCE_WRITE } else { 0 };
        let id = sys::vgem_fence_attach(self.vgem.node.as_fd(), handle, flags)
            .map_err(Error::io("DRM_IOCTL_VGEM_FENCE_ATTACH"))?;
        Ok(VgemFence {
            vgem: self.vgem.clone(),
            id,
        })
    }
}

impl Drop for VgemBuffer {
    fn drop(&mut self) {
        if let Some(dumb) = self.dumb.take() {
            // The dma-buf keeps the memory alive for anyone still holding it.
            let _ = sys_drm::dumb_destroy(self.vgem.node.as_fd(), dumb);
        }
    }
}

/// A pending vgem fence.
#[derive(Debug)]
pub struct VgemFence {
    vgem: Vgem,
    id: u32,
}

impl VgemFence {
    /// Signals it, like a GPU job completing.
    pub fn signal(self) -> Result<()> {
        sys::vgem_fence_signal(self.vgem.node.as_fd(), self.id)
            .map_err(Error::io("DRM_IOCTL_VGEM_FENCE_SIGNAL"))
    }
}
