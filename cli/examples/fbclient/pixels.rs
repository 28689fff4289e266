//! The pixels: vgem buffers mapped for CPU writes (the "GPU" of these clients), the colour of
//! each frame, and the check of a captured output against it.

use std::os::fd::BorrowedFd;

use fencebridge::producer::{Vgem, VgemBuffer, VgemFence};
use wayland_client::protocol::wl_buffer::WlBuffer;

use crate::wlclient::{Client, WlError};
use fencebridge_cli::mapping::Mapping;

/// DRM_FORMAT_XRGB8888.
pub const XRGB8888: u32 = u32::from_le_bytes(*b"XR24");

/// The colour of frame `frame` of the client tagged `tag` (0..=127): opaque XRGB, different for
/// every (tag, frame) with frame < 65536, and never the compositor's background (its red byte
/// is below 0x80) nor black.
pub fn colour(tag: u8, frame: u32) -> u32 {
    0xff00_0000 | (0x80 | u32::from(tag & 0x7f)) << 16 | ((frame + 1) & 0xffff)
}

/// A vgem dma-buf, its wl_buffer and a writable mapping of it.
pub struct Buffer {
    /// The vgem buffer (fences are attached through it).
    pub vgem: VgemBuffer,
    /// The linux-dmabuf wl_buffer.
    pub wl: WlBuffer,
    map: Mapping,
    width: u32,
    height: u32,
}

impl Buffer {
    /// A `width`×`height` XRGB8888 vgem buffer shared with the compositor as wl_buffer `index`.
    /// Starts a "GPU job" writing the buffer, as an implicitly synchronised driver does: it
    /// waits (at most `timeout`) for the fences of the buffer's readers — the compositor may
    /// have put its read fence there — then attaches the job's write fence.
    pub fn start_write(&self, timeout: std::time::Duration) -> Result<VgemFence, WlError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let deadline = std::time::Instant::now() + timeout;
        let dmabuf = self.vgem.dmabuf();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut fds = [PollFd::new(&dmabuf, PollFlags::OUT)];
            let wait = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match poll(&mut fds, Some(&wait)) {
                Ok(n) if n > 0 => break,
                Ok(_) => {
                    return Err(WlError::new(
                        "timeout",
                        "the compositor's read of a released buffer never ended".to_owned(),
                    ))
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(WlError::new("io", format!("poll(dma-buf): {e}"))),
            }
        }
        self.vgem
            .attach_fence(true)
            .map_err(|e| WlError::new("io", format!("vgem write fence: {e}")))
    }

    pub fn new<X>(
        client: &Client<X>,
        vgem: &Vgem,
        (width, height): (u32, u32),
        index: usize,
    ) -> Result<Buffer, WlError> {
        let buffer = vgem
            .create_buffer(width, height)
            .map_err(|e| WlError::new("io", format!("vgem buffer: {e}")))?;
        let map = map_whole(buffer.dmabuf())?;
        let wl = client.dmabuf_buffer(
            &[(buffer.dmabuf(), 0, buffer.pitch())],
            (width, height),
            XRGB8888,
            index,
        );
        Ok(Buffer {
            vgem: buffer,
            wl,
            map,
            width,
            height,
        })
    }

    /// Writes `colour` over every pixel, as the GPU job that renders the frame. No
    /// `DMA_BUF_IOCTL_SYNC` bracket: its START would wait for the write fence this very job is
    /// supposed to signal.
    pub fn fill(&mut self, colour: u32) {
        let pitch = self.vgem.pitch() as usize;
        let row = self.width as usize * 4;
        let bytes = self.map.bytes_mut();
        for y in 0..self.height as usize {
            for px in bytes[y * pitch..y * pitch + row].chunks_exact_mut(4) {
                px.copy_from_slice(&colour.to_le_bytes());
            }
        }
    }
}

impl Buffer {
    /// Its width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The buffer's pixels, row after row (`width * height`, 0xXXRRGGBB), read through the
    /// mapping as they are now. No `DMA_BUF_IOCTL_SYNC` bracket: its START would wait for the
    /// buffer's fences implicitly, and the capture consumer waits for them itself.
    pub fn read_pixels(&self) -> Vec<u32> {
        let pitch = self.vgem.pitch() as usize;
        let row = self.width as usize * 4;
        let mut bytes = vec![0u8; row];
        let mut pixels = Vec::with_capacity(self.width as usize * self.height as usize);
        for y in 0..self.height as usize {
            self.map.read_at(y * pitch, &mut bytes);
            pixels.extend(
                bytes
                    .chunks_exact(4)
                    .map(|px| u32::from_le_bytes([px[0], px[1], px[2], px[3]])),
            );
        }
        pixels
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.wl.destroy();
    }
}

/// A shared read-write mapping of a whole dma-buf.
pub fn map_whole(fd: BorrowedFd<'_>) -> Result<Mapping, WlError> {
    let len = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
        .map_err(|e| WlError::new("io", format!("dma-buf size: {e}")))? as usize;
    Mapping::new(fd, len, 0).map_err(|e| WlError::new("io", format!("mmap of a vgem dma-buf: {e}")))
}

/// How many pixels of a captured XRGB image have `colour` (the X byte ignored).
pub fn count_colour(pixels: &[u32], colour: u32) -> usize {
    pixels
        .iter()
        .filter(|&&p| p & 0x00ff_ffff == colour & 0x00ff_ffff)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_differ_per_tag_and_frame_and_from_the_background() {
        let mut seen = std::collections::HashSet::new();
        for tag in [0, 1, 2, 127] {
            for frame in 0..2000 {
                let c = colour(tag, frame);
                assert_eq!(c >> 24, 0xff, "opaque");
                assert!(seen.insert(c), "tag {tag} frame {frame} repeats a colour");
                assert_ne!(c & 0xff_ffff, 0x20_2428, "the nested background");
                assert_ne!(c & 0xff_ffff, 0, "black (an unwritten buffer)");
            }
        }
    }

    #[test]
    fn counting_ignores_the_x_byte() {
        let c = colour(3, 7);
        let pixels = [c, c & 0x00ff_ffff, 0xff00_0000, c ^ 1];
        assert_eq!(count_colour(&pixels, c), 2);
    }
}
