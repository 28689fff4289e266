//! The raw kernel uAPI: `rustix::ioctl` opcodes and `#[repr(C)]` structs.
//!
//! This is the only module that issues ioctls. Each wrapper is a thin, safe function over one
//! ioctl; it owns the `unsafe` and proves there why the call is sound. Everything above works
//! with owned fds and typed errors. Every ioctl goes through [`call`], which also counts it
//! (see [`ioctl_count`]) so benchmarks and tests can check the syscall budget of each path.
//!
//! The DRM ioctls are in [`drm`]: most of them made through the `drm` crate, which only that
//! module can reach, and counted there too.
//!
//! Tools built on this crate issue their own ioctls through [`call`] too, so that one counter
//! covers the process (the CLI's V4L2 layer does).
//!
//! # How to use
//! ```no_run
//! use std::os::fd::AsFd;
//! # fn f(dmabuf: std::fs::File) -> rustix::io::Result<()> {
//! let fd = fencebridge::sys::dma_buf_export_sync_file(dmabuf.as_fd(), fencebridge::sys::DMA_BUF_SYNC_READ)?;
//! let mut info = fencebridge::sys::SyncFileInfo::default();
//! fencebridge::sys::sync_file_info(fd.as_fd(), &mut info, &mut [])?;
//! println!("{} fences", info.num_fences);
//! # Ok(()) }
//! ```

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::{Errno, Result};
use rustix::ioctl::{self, opcode, Ioctl, Opcode, Setter, Updater};

static IOCTLS: AtomicU64 = AtomicU64::new(0);

/// How many ioctls this process has issued through this module (all threads).
pub fn ioctl_count() -> u64 {
    IOCTLS.load(Ordering::Relaxed)
}

pub mod drm;

/// Counts `ioctls` issued: by [`call`], or by the `drm` crate for [`drm`].
fn count(ioctls: u64) {
    IOCTLS.fetch_add(ioctls, Ordering::Relaxed);
    #[cfg(test)]
    tests::THREAD_IOCTLS.with(|n| n.set(n.get() + ioctls));
}

/// Issues one ioctl and counts it: every ioctl of this crate goes through here, and tools built
/// on it (the CLI's V4L2 uAPI) use it for theirs, so that [`ioctl_count`] covers them all.
///
/// # Safety
/// `req` must be built with an opcode whose argument type is exactly the type the kernel
/// expects for that request (the caller proves it at each call site).
pub unsafe fn call<I: Ioctl>(fd: BorrowedFd<'_>, req: I) -> Result<I::Output> {
    count(1);
    // SAFETY: forwarded from this function's contract.
    unsafe { ioctl::ioctl(fd, req) }
}

/// Takes ownership of an fd the kernel just returned through an ioctl argument.
///
/// # Safety
/// `raw` must be a freshly created fd, owned by nobody else.
unsafe fn own(raw: RawFd) -> OwnedFd {
    // SAFETY: forwarded from this function's contract.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// A fixed-size, NUL-padded name the kernel filled (driver, timeline, card names), as text.
pub fn c_name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// dma-buf (include/uapi/linux/dma-buf.h)

/// `DMA_BUF_SYNC_READ`: the access is a read.
pub const DMA_BUF_SYNC_READ: u32 = 1 << 0;
/// `DMA_BUF_SYNC_WRITE`: the access is a write.
pub const DMA_BUF_SYNC_WRITE: u32 = 1 << 1;
/// `DMA_BUF_SYNC_START`: a CPU access starts.
pub const DMA_BUF_SYNC_START: u64 = 0;
/// `DMA_BUF_SYNC_END`: a CPU access ends.
pub const DMA_BUF_SYNC_END: u64 = 1 << 2;

/// `struct dma_buf_sync`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaBufSync {
    /// `DMA_BUF_SYNC_{START,END}` | `DMA_BUF_SYNC_{READ,WRITE}`.
    pub flags: u64,
}

/// `struct dma_buf_export_sync_file`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaBufExportSyncFile {
    /// `DMA_BUF_SYNC_READ` and/or `DMA_BUF_SYNC_WRITE`.
    pub flags: u32,
    /// Out: the new sync_file fd.
    pub fd: i32,
}

/// `struct dma_buf_import_sync_file`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaBufImportSyncFile {
    /// `DMA_BUF_SYNC_READ` and/or `DMA_BUF_SYNC_WRITE`.
    pub flags: u32,
    /// The sync_file fd to import.
    pub fd: i32,
}

/// `DMA_BUF_IOCTL_SYNC`.
pub const DMA_BUF_IOCTL_SYNC: Opcode = opcode::write::<DmaBufSync>(b'b', 0);
/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`.
pub const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: Opcode =
    opcode::read_write::<DmaBufExportSyncFile>(b'b', 2);
/// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`.
pub const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: Opcode = opcode::write::<DmaBufImportSyncFile>(b'b', 3);

/// Snapshots the fences a `flags` access must wait for (READ: the writers; WRITE: everyone) as a
/// new sync_file.
pub fn dma_buf_export_sync_file(dmabuf: BorrowedFd<'_>, flags: u32) -> Result<OwnedFd> {
    let mut arg = DmaBufExportSyncFile { flags, fd: -1 };
    // SAFETY: the opcode is _IOWR('b', 2, struct dma_buf_export_sync_file) and `arg` has that
    // exact layout; the kernel writes only inside it.
    unsafe {
        call(
            dmabuf,
            Updater::<{ DMA_BUF_IOCTL_EXPORT_SYNC_FILE }, _>::new(&mut arg),
        )?
    };
    // SAFETY: on success the kernel installed a new fd in `arg.fd` that nobody else owns.
    Ok(unsafe { own(arg.fd) })
}

/// Adds the fence of `sync_file` to the dma-buf as a `flags` (read or write) fence.
pub fn dma_buf_import_sync_file(
    dmabuf: BorrowedFd<'_>,
    sync_file: BorrowedFd<'_>,
    flags: u32,
) -> Result<()> {
    let arg = DmaBufImportSyncFile {
        flags,
        fd: sync_file.as_raw_fd(),
    };
    // SAFETY: the opcode is _IOW('b', 3, struct dma_buf_import_sync_file) and `arg` has that
    // exact layout; the kernel only reads it, and the fd it names is borrowed for the call.
    unsafe {
        call(
            dmabuf,
            Setter::<{ DMA_BUF_IOCTL_IMPORT_SYNC_FILE }, _>::new(arg),
        )
    }
}

/// Brackets a CPU access to a mapped dma-buf (`DMA_BUF_SYNC_START`/`END` | READ/WRITE); START
/// waits for the fences that access conflicts with.
pub fn dma_buf_sync(dmabuf: BorrowedFd<'_>, flags: u64) -> Result<()> {
    // SAFETY: the opcode is _IOW('b', 0, struct dma_buf_sync) and the argument has its layout.
    unsafe {
        call(
            dmabuf,
            Setter::<{ DMA_BUF_IOCTL_SYNC }, _>::new(DmaBufSync { flags }),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// sync_file (include/uapi/linux/sync_file.h)

/// `struct sync_merge_data`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncMergeData {
    /// Name of the new fence.
    pub name: [u8; 32],
    /// The second sync_file.
    pub fd2: i32,
    /// Out: the merged sync_file.
    pub fence: i32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub pad: u32,
}

/// `struct sync_fence_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncFenceInfo {
    /// The fence's timeline name.
    pub obj_name: [u8; 32],
    /// The fence's driver name.
    pub driver_name: [u8; 32],
    /// 1 signalled, 0 active, < 0 error.
    pub status: i32,
    /// Fence flags (`SYNC_FENCE_INFO_*`, none defined yet).
    pub flags: u32,
    /// When the fence signalled (CLOCK_MONOTONIC ns), 0 if it has not.
    pub timestamp_ns: u64,
}

/// `struct sync_file_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncFileInfo {
    /// The sync_file's name.
    pub name: [u8; 32],
    /// 1 signalled, 0 active, < 0 error.
    pub status: i32,
    /// Must be 0 on input.
    pub flags: u32,
    /// In: room in the array (0 = only count); out: how many fences.
    pub num_fences: u32,
    /// Must be 0.
    pub pad: u32,
    /// User pointer to `num_fences` × [`SyncFenceInfo`].
    pub sync_fence_info: u64,
}

/// `SYNC_IOC_MERGE`.
pub const SYNC_IOC_MERGE: Opcode = opcode::read_write::<SyncMergeData>(b'>', 3);
/// `SYNC_IOC_FILE_INFO`.
pub const SYNC_IOC_FILE_INFO: Opcode = opcode::read_write::<SyncFileInfo>(b'>', 4);

/// Merges two sync_files into a new one that signals when both have.
pub fn sync_file_merge(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut arg = SyncMergeData {
        fd2: b.as_raw_fd(),
        fence: -1,
        ..Default::default()
    };
    const NAME: &[u8] = b"fencebridge";
    arg.name[..NAME.len()].copy_from_slice(NAME);
    // SAFETY: the opcode is _IOWR('>', 3, struct sync_merge_data) and `arg` has that layout.
    unsafe { call(a, Updater::<{ SYNC_IOC_MERGE }, _>::new(&mut arg))? };
    // SAFETY: on success the kernel installed a new fd in `arg.fence` that nobody else owns.
    Ok(unsafe { own(arg.fence) })
}

/// Reads a sync_file's status and, when `fences` is not empty, up to `fences.len()` fence
/// records. With an empty slice only `info.num_fences` (the count) is filled. The kernel
/// refuses (EINVAL) a non-empty slice shorter than the fence count.
pub fn sync_file_info(
    sync_file: BorrowedFd<'_>,
    info: &mut SyncFileInfo,
    fences: &mut [SyncFenceInfo],
) -> Result<()> {
    *info = SyncFileInfo {
        num_fences: u32::try_from(fences.len()).unwrap_or(u32::MAX),
        sync_fence_info: fences.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the opcode is _IOWR('>', 4, struct sync_file_info) and `info` has that layout. The
    // kernel writes at most `num_fences` records through `sync_fence_info`, which points at
    // `fences` (exactly that many `struct sync_fence_info`, borrowed mutably for the call).
    unsafe { call(sync_file, Updater::<{ SYNC_IOC_FILE_INFO }, _>::new(info)) }
}

// ---------------------------------------------------------------------------------------------
// What an fd is, where an ioctl's refusal does not say.

/// What kind of file an fd is: asked to turn ENOTTY/EINVAL into a clear error, and to confirm
/// that a file which polls ready is a dma-buf (any file polls ready; one `fstatfs`, no ioctl).
/// A dma-buf lives on the dma-buf pseudo filesystem, a sync_file is an anon inode.
pub(crate) fn file_kind(fd: BorrowedFd<'_>) -> FileKind {
    const DMA_BUF_MAGIC: i64 = 0x444d_4142;
    // `f_type` is an i64 here but a narrower integer on other architectures.
    #[allow(clippy::useless_conversion)]
    match rustix::fs::fstatfs(fd) {
        Err(Errno::BADF) => return FileKind::Closed,
        Ok(fs) if i64::from(fs.f_type) == DMA_BUF_MAGIC => return FileKind::DmaBuf,
        _ => {}
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::read_link(path) {
        Ok(target) if target.as_os_str() == "anon_inode:sync_file" => FileKind::SyncFile,
        Ok(target) if target.as_os_str() == "anon_inode:syncobj_file" => FileKind::Syncobj,
        _ => FileKind::Other,
    }
}

/// What [`file_kind`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    DmaBuf,
    SyncFile,
    Syncobj,
    Closed,
    Other,
}

// ---------------------------------------------------------------------------------------------
// Producers used by tests, examples and tools: vgem (include/uapi/drm/vgem_drm.h), udmabuf
// (include/uapi/linux/udmabuf.h), dma-heap (include/uapi/linux/dma-heap.h).

/// `VGEM_FENCE_WRITE`: attach the fence as an exclusive (write) fence.
pub const VGEM_FENCE_WRITE: u32 = 0x1;

/// `struct drm_vgem_fence_attach`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VgemFenceAttach {
    /// GEM handle of the buffer.
    pub handle: u32,
    /// `VGEM_FENCE_WRITE` or 0 (read).
    pub flags: u32,
    /// Out: the fence id for [`vgem_fence_signal`].
    pub out_fence: u32,
    /// Must be 0.
    pub pad: u32,
}

/// `struct drm_vgem_fence_signal`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VgemFenceSignal {
    /// The fence id from [`vgem_fence_attach`].
    pub fence: u32,
    /// Must be 0.
    pub flags: u32,
}

/// `DRM_IOCTL_VGEM_FENCE_ATTACH` (`DRM_COMMAND_BASE` + 1).
pub const DRM_IOCTL_VGEM_FENCE_ATTACH: Opcode = opcode::read_write::<VgemFenceAttach>(b'd', 0x41);
/// `DRM_IOCTL_VGEM_FENCE_SIGNAL` (`DRM_COMMAND_BASE` + 2).
pub const DRM_IOCTL_VGEM_FENCE_SIGNAL: Opcode = opcode::write::<VgemFenceSignal>(b'd', 0x42);

/// Attaches a new unsignalled vgem fence to a GEM buffer; returns its id.
pub fn vgem_fence_attach(vgem: BorrowedFd<'_>, handle: u32, flags: u32) -> Result<u32> {
    let mut arg = VgemFenceAttach {
        handle,
        flags,
        ..Default::default()
    };
    // SAFETY: the opcode is DRM_IOWR(0x41, struct drm_vgem_fence_attach) and `arg` has it layout.
    unsafe {
        call(
            vgem,
            Updater::<{ DRM_IOCTL_VGEM_FENCE_ATTACH }, _>::new(&mut arg),
        )?
    };
    Ok(arg.out_fence)
}

/// Signals a vgem fence.
pub fn vgem_fence_signal(vgem: BorrowedFd<'_>, fence: u32) -> Result<()> {
    let arg = VgemFenceSignal { fence, flags: 0 };
    // SAFETY: the opcode is DRM_IOW(0x42, struct drm_vgem_fence_signal) and `arg` has its layout.
    unsafe { call(vgem, Setter::<{ DRM_IOCTL_VGEM_FENCE_SIGNAL }, _>::new(arg)) }
}

/// `UDMABUF_FLAGS_CLOEXEC`.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// `struct udmabuf_create`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UdmabufCreate {
    /// A sealed (F_SEAL_SHRINK) memfd.
    pub memfd: u32,
    /// `UDMABUF_FLAGS_*`.
    pub flags: u32,
    /// Page-aligned offset into the memfd.
    pub offset: u64,
    /// Page-aligned size.
    pub size: u64,
}

/// `UDMABUF_CREATE`.
pub const UDMABUF_CREATE: Opcode = opcode::write::<UdmabufCreate>(b'u', 0x42);

/// Wraps pages of a sealed memfd in a new dma-buf.
pub fn udmabuf_create(
    udmabuf: BorrowedFd<'_>,
    memfd: BorrowedFd<'_>,
    size: u64,
) -> Result<OwnedFd> {
    let memfd = u32::try_from(memfd.as_raw_fd()).map_err(|_| Errno::BADF)?;
    let arg = UdmabufCreate {
        memfd,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size,
    };
    // SAFETY: the opcode is _IOW('u', 0x42, struct udmabuf_create) and `arg` has that layout;
    // the kernel only reads it and returns the new dma-buf fd as the ioctl's result.
    let raw = unsafe { call(udmabuf, SetterReturningFd::<{ UDMABUF_CREATE }, _>(arg))? };
    // SAFETY: a non-negative result of UDMABUF_CREATE is a new fd that nobody else owns.
    Ok(unsafe { own(raw) })
}

/// Like rustix's `Setter`, for the ioctls that return a new fd as their result.
struct SetterReturningFd<const OPCODE: Opcode, Input>(Input);

// SAFETY: `as_ptr` points at the input for the duration of the call and the ioctl is read-only
// (IS_MUTATING = false); the output is the ioctl's integer result, which rustix has already
// checked for errors before `output_from_ptr` runs.
unsafe impl<const OPCODE: Opcode, Input> Ioctl for SetterReturningFd<OPCODE, Input> {
    type Output = RawFd;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::addr_of_mut!(self.0).cast()
    }

    unsafe fn output_from_ptr(out: ioctl::IoctlOutput, _: *mut std::ffi::c_void) -> Result<RawFd> {
        Ok(out)
    }
}

/// `struct dma_heap_allocation_data`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaHeapAllocationData {
    /// Size in bytes.
    pub len: u64,
    /// Out: the new dma-buf fd.
    pub fd: u32,
    /// `O_RDWR | O_CLOEXEC` for the new fd.
    pub fd_flags: u32,
    /// Heap flags (none defined).
    pub heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC`.
pub const DMA_HEAP_IOCTL_ALLOC: Opcode = opcode::read_write::<DmaHeapAllocationData>(b'H', 0x0);

/// Allocates a dma-buf of `len` bytes from a heap (`/dev/dma_heap/system`).
pub fn dma_heap_alloc(heap: BorrowedFd<'_>, len: u64) -> Result<OwnedFd> {
    let fd_flags = (rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC).bits();
    let mut arg = DmaHeapAllocationData {
        len,
        fd_flags,
        ..Default::default()
    };
    // SAFETY: the opcode is _IOWR('H', 0, struct dma_heap_allocation_data) and `arg` has it.
    unsafe { call(heap, Updater::<{ DMA_HEAP_IOCTL_ALLOC }, _>::new(&mut arg))? };
    // SAFETY: on success the kernel installed a new fd in `arg.fd` that nobody else owns.
    Ok(unsafe { own(arg.fd as RawFd) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// The ioctls this thread counted: exact, where the process-wide count moves with the
        /// tests running beside it.
        pub(super) static THREAD_IOCTLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// What `f` returns, and how many ioctls it counted.
    pub(crate) fn ioctls_of<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = THREAD_IOCTLS.with(|n| n.get());
        let r = f();
        (r, THREAD_IOCTLS.with(|n| n.get()) - before)
    }

    /// Every opcode against the number the kernel headers give (x86_64, computed by hand from
    /// `_IOC(dir, type, nr, size)` and cross-checked with the C headers).
    #[test]
    fn opcodes_match_the_kernel_headers() {
        assert_eq!(DMA_BUF_IOCTL_SYNC, 0x4008_6200);
        assert_eq!(DMA_BUF_IOCTL_EXPORT_SYNC_FILE, 0xc008_6202);
        assert_eq!(DMA_BUF_IOCTL_IMPORT_SYNC_FILE, 0x4008_6203);
        assert_eq!(SYNC_IOC_MERGE, 0xc030_3e03);
        assert_eq!(SYNC_IOC_FILE_INFO, 0xc038_3e04);
        assert_eq!(DRM_IOCTL_VGEM_FENCE_ATTACH, 0xc010_6441);
        assert_eq!(DRM_IOCTL_VGEM_FENCE_SIGNAL, 0x4008_6442);
        assert_eq!(UDMABUF_CREATE, 0x4018_7542);
        assert_eq!(DMA_HEAP_IOCTL_ALLOC, 0xc018_4800);
    }

    #[test]
    fn names_stop_at_the_first_nul() {
        let mut raw = [0u8; 32];
        raw[..4].copy_from_slice(b"stub");
        assert_eq!(c_name(&raw), "stub");
        assert_eq!(c_name(&[b'x'; 32]), "x".repeat(32));
    }

    #[test]
    fn struct_sizes_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<SyncFenceInfo>(), 80);
        assert_eq!(std::mem::size_of::<SyncFileInfo>(), 56);
        assert_eq!(std::mem::size_of::<SyncMergeData>(), 48);
    }
}
