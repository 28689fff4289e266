//! The headless output: a CPU-rendered offscreen canvas. A frame is rendered when something
//! changed (a commit applied, a window came or went): it maps every toplevel's buffer (shm, or
//! a dma-buf by mmap) and draws it, tiled left to right; then tells fencebridge the reads are
//! done and sends the frame callbacks. Screen captures copy the last rendered frame.
//!
//! This renderer never waits on implicit fences, like a Vulkan renderer: that is the
//! compositor's job (fencebridge's), so with the bridge off it shows whatever the buffer holds
//! at that moment. It brackets a dma-buf read with `DMA_BUF_IOCTL_SYNC` only when the buffer has
//! no pending writer, since `SYNC_START` would otherwise block the loop until the writer is done.
//!
//! Why not pixman: it has no NV12, and no choice of YUV matrix or range; `render.rs` converts
//! the formats video decoders and cameras produce as a GPU sampler would.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use fencebridge::sys;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::Buffer as _;
use smithay::backend::renderer::utils::with_renderer_surface_state;
use smithay::output::Output;
use smithay::reexports::wayland_server::backend::{ClientId, ObjectId};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor::{with_states, SurfaceAttributes};
use smithay::wayland::dmabuf::get_dmabuf;
use smithay::wayland::shm::with_buffer_contents;

use crate::render::{Canvas, PixelFormat, Plane, SourceImage};
use crate::state::Nested;

/// The background, so that an empty output is not black like an unrendered buffer.
const BACKGROUND: u32 = 0xff20_2428;

/// The offscreen output and what was shown on it.
pub struct Screen {
    /// The output as clients see it (wl_output, xdg-output, screencopy).
    pub output: Output,
    /// The last rendered frame.
    pub canvas: Canvas,
    /// Something changed since the last frame.
    pub dirty: bool,
    /// Frames rendered.
    pub frames: u64,
    /// Per client, its pid and how many of its committed buffers were shown.
    pub shown: HashMap<ClientId, (Option<i32>, u64)>,
    /// Surfaces with a buffer committed since the last frame.
    fresh: HashSet<ObjectId>,
}

impl Screen {
    pub fn new(output: Output, width: u32, height: u32) -> Self {
        let mut canvas = Canvas::new(width, height);
        canvas.clear(BACKGROUND);
        Screen {
            output,
            canvas,
            dirty: true,
            frames: 0,
            shown: HashMap::new(),
            fresh: HashSet::new(),
        }
    }

    /// A commit applied on `surface`; `new_buffer` if it attached one.
    pub fn committed(&mut self, surface: &WlSurface, new_buffer: bool) {
        self.dirty = true;
        if new_buffer {
            self.fresh.insert(surface.id());
        }
    }
}

/// Renders a frame if something changed since the last one; returns whether it did.
pub fn render_if_dirty(state: &mut Nested, elapsed: Duration) -> bool {
    if !state.screen.dirty {
        return false;
    }
    state.screen.dirty = false;
    state.screen.frames += 1;
    let canvas = &mut state.screen.canvas;
    canvas.clear(BACKGROUND);
    let mut x = 0u32;
    let surfaces: Vec<WlSurface> = state
        .toplevels
        .iter()
        .map(|t| t.wl_surface().clone())
        .collect();
    for surface in &surfaces {
        let Some(Some(buffer)) = with_renderer_surface_state(surface, |s| s.buffer().cloned())
        else {
            continue;
        };
        match draw(&mut state.screen.canvas, &buffer, x) {
            Ok(width) => x += width,
            Err(e) => tracing::warn!("nested: cannot draw {}: {e}", surface.id()),
        }
        if state.screen.fresh.remove(&surface.id()) {
            if let Some(client) = surface.client() {
                let pid = client.get_credentials(&state.display).ok().map(|c| c.pid);
                state.screen.shown.entry(client.id()).or_insert((pid, 0)).1 += 1;
            }
        }
        // fencebridge: the CPU copy is done, so the reads are done (no fence to wait for).
        if state.bridge_on {
            fencebridge::wayland::surface_read(state, surface, None);
        }
        send_frame_callbacks(surface, elapsed);
    }
    state.screen.fresh.clear();
    true
}

/// Whether the CPU renderer can show `dmabuf`: a linear format it converts, and planes that
/// lie inside their dma-bufs (checked at import, so a bad buffer is refused there, not drawn).
pub fn check_dmabuf(dmabuf: &Dmabuf) -> Result<(), String> {
    let format = PixelFormat::from_fourcc(dmabuf.format().code as u32)
        .ok_or_else(|| format!("format {:?} not shown", dmabuf.format().code))?;
    let size = dmabuf.size();
    let planes = dmabuf.num_planes();
    if planes != format.plane_count() {
        return Err(format!(
            "{:?} has {} planes, not {planes}",
            dmabuf.format().code,
            format.plane_count()
        ));
    }
    let fds: Vec<BorrowedFd<'_>> = dmabuf.handles().collect();
    for (plane, ((fd, offset), stride)) in fds
        .iter()
        .zip(dmabuf.offsets())
        .zip(dmabuf.strides())
        .enumerate()
    {
        // NV12's CbCr plane has half the rows.
        let rows = if plane == 0 { size.h } else { (size.h + 1) / 2 } as u64;
        let end = u64::from(offset) + u64::from(stride) * rows;
        let len = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| format!("plane {plane}: dma-buf size: {e}"))?;
        if end > len {
            return Err(format!(
                "plane {plane}: offset {offset} + stride {stride} × {rows} rows = {end} bytes, \
                 but the dma-buf has {len}"
            ));
        }
    }
    Ok(())
}

/// Draws `buffer` at (`x`, 0); returns its width.
fn draw(canvas: &mut Canvas, buffer: &WlBuffer, x: u32) -> Result<u32, String> {
    if let Ok(dmabuf) = get_dmabuf(buffer) {
        let size = dmabuf.size();
        let format = PixelFormat::from_fourcc(dmabuf.format().code as u32)
            .ok_or_else(|| format!("format {:?} not shown", dmabuf.format().code))?;
        let fds: Vec<BorrowedFd<'_>> = dmabuf.handles().collect();
        let maps = fds
            .iter()
            .map(|fd| Mapping::new(*fd))
            .collect::<Result<Vec<_>, _>>()?;
        let planes: Vec<Plane<'_>> = maps
            .iter()
            .zip(dmabuf.offsets().zip(dmabuf.strides()))
            .map(|(map, (offset, stride))| {
                Plane::new(map.bytes(), offset as usize, stride as usize)
            })
            .collect();
        let image = SourceImage::new(format, size.w as u32, size.h as u32, &planes)
            .map_err(|e| e.to_string())?;
        canvas.blit(&image, x as i32, 0);
        if dmabuf.y_inverted() {
            canvas.flip_vertically(x, 0, image.width(), image.height());
        }
        return Ok(image.width());
    }
    with_buffer_contents(buffer, |ptr, len, data| {
        // SAFETY: smithay hands out the shm pool's mapping, `len` bytes long, valid for the
        // duration of this closure; we only read it (the client may write concurrently, which
        // can tear the picture but not break memory safety for plain bytes).
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        let format = PixelFormat::from_wl_shm(data.format as u32)
            .ok_or_else(|| format!("shm format {:?} not shown", data.format))?;
        let plane = Plane::new(bytes, data.offset as usize, data.stride as usize);
        let image = SourceImage::new(format, data.width as u32, data.height as u32, &[plane])
            .map_err(|e| e.to_string())?;
        canvas.blit(&image, x as i32, 0);
        Ok(image.width())
    })
    .map_err(|e| e.to_string())?
}

/// A read-only mapping of a whole dma-buf, with a CPU access bracket around it.
struct Mapping<'a> {
    fd: BorrowedFd<'a>,
    ptr: *mut std::ffi::c_void,
    len: usize,
    synced: bool,
}

impl<'a> Mapping<'a> {
    fn new(fd: BorrowedFd<'a>) -> Result<Self, String> {
        let len = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| format!("dma-buf size: {e}"))? as usize;
        // SAFETY: a fresh shared read-only mapping of `len` bytes of a dma-buf; nothing else in
        // this process maps it at that address, and it is unmapped exactly once in Drop.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| format!("mmap of a dma-buf: {e}"))?;
        // Only when no writer is pending: SYNC_START would block the loop until it is done.
        let idle = rustix::event::poll(
            &mut [rustix::event::PollFd::new(
                &fd.as_fd(),
                rustix::event::PollFlags::IN,
            )],
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )
        .is_ok_and(|n| n > 0);
        let read = u64::from(sys::DMA_BUF_SYNC_READ);
        let synced = idle && sys::dma_buf_sync(fd, sys::DMA_BUF_SYNC_START | read).is_ok();
        Ok(Mapping {
            fd,
            ptr,
            len,
            synced,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until Drop; the returned borrow ends before.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        if self.synced {
            let read = u64::from(sys::DMA_BUF_SYNC_READ);
            let _ = sys::dma_buf_sync(self.fd, sys::DMA_BUF_SYNC_END | read);
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once, and no slice of
        // it outlives `self` (bytes() borrows self).
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// wl_surface.frame callbacks: the frame was shown.
fn send_frame_callbacks(surface: &WlSurface, elapsed: Duration) {
    let callbacks: Vec<_> = with_states(surface, |states| {
        std::mem::take(
            &mut states
                .cached_state
                .get::<SurfaceAttributes>()
                .current()
                .frame_callbacks,
        )
    });
    for callback in callbacks {
        callback.done(elapsed.as_millis() as u32);
    }
}
