//! [`Mapping`]: a buffer mapped into this process — a V4L2 plane (`Device::map`: an m2m
//! device's input, a coded frame to read) or a whole dma-buf (the test clients' "GPU" writes) —
//! read and written by copies, never through references into memory a device or another
//! process may write at the same time.
//!
//! # How to use
//! ```no_run
//! use fencebridge_cli::mapping::Mapping;
//! # fn f(dmabuf: std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<()> {
//! let mut map = Mapping::new(dmabuf, 4096, 0)?;
//! map.write(b"frame");
//! assert_eq!(map.read(5), b"frame");
//! # Ok(()) }
//! ```

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// A shared read-write mapping; unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset` (a V4L2 plane's mmap cookie, or 0 for a
    /// dma-buf), shared and read-write.
    pub fn new(fd: BorrowedFd<'_>, len: usize, offset: u64) -> rustix::io::Result<Mapping> {
        if len == 0 {
            return Err(Errno::INVAL);
        }
        // SAFETY: a fresh shared mapping of `len` bytes at an address the kernel picks (null
        // hint), so no memory of this process is replaced; the kernel checks `offset` and `len`
        // against what `fd` can map.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                offset,
            )?
        };
        let ptr = NonNull::new(ptr.cast()).ok_or(Errno::INVAL)?;
        Ok(Mapping { ptr, len })
    }

    /// How many bytes are mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped (never: [`Mapping::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `data` to the start; returns how many bytes fit.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.len);
        // SAFETY: `ptr` maps `len` writable bytes until Drop and `n <= len`; `data` is a Rust
        // slice elsewhere, so the ranges do not overlap; raw copies make no reference into
        // memory the device may write.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr(), n) };
        n
    }

    /// Copies `out.len()` bytes from `offset` (clamped to the mapping) into `out`.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        let n = out.len().min(self.len.saturating_sub(offset));
        if n == 0 {
            return;
        }
        // SAFETY: `offset + n <= len` bytes are mapped until Drop, and `out` is a separate
        // slice of at least `n` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), n)
        };
    }

    /// The first `n` bytes (at most all of them).
    pub fn read(&self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n.min(self.len)];
        self.read_at(0, &mut out);
        out
    }

    /// The whole mapping as a slice, to write in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` writable bytes until Drop, and the `&mut self` borrow makes
        // this the only slice of it in this process. Another process may read the pages at the
        // same time (a compositor sampling a frame); plain bytes have no invalid values.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned, unmapped once; no slice of it outlives
        // `self` (`bytes_mut` borrows `self`, the other accessors copy).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
