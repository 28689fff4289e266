//! The headless output. A frame is started when something changed (a commit applied, a window
//! came or went) and no frame is in flight: every toplevel's buffer is handed to the software
//! GPU (`gpu.rs`), tiled left to right, and fencebridge is told the frame's read fence. When the
//! frame is done it becomes what the output shows (and what screen captures copy), and the
//! frame callbacks go out.
//!
//! Why not pixman: it has no NV12, and no choice of YUV matrix or range; `render.rs` converts
//! the formats video decoders and cameras produce as a GPU sampler would.

use std::collections::{HashMap, HashSet};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::Buffer as _;
use smithay::backend::renderer::utils::with_renderer_surface_state;
use smithay::output::Output;
use smithay::reexports::wayland_server::backend::{ClientId, ObjectId};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_callback::WlCallback;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor::{with_states, SurfaceAttributes};
use smithay::wayland::dmabuf::get_dmabuf;
use smithay::wayland::shm::with_buffer_contents;

use fencebridge::fence::Access;

use crate::gpu::{Finished, Layer, SoftGpu};
use crate::render::{Canvas, PixelFormat};
use crate::screencopy;
use crate::state::Nested;
use wayland_protocols_wlr::screencopy::v1::server::zwlr_screencopy_frame_v1::ZwlrScreencopyFrameV1;

/// The background, so that an empty output is not black like an unrendered buffer.
const BACKGROUND: u32 = 0xff20_2428;

/// The offscreen output and what was shown on it.
pub struct Screen {
    /// The output as clients see it (wl_output, xdg-output, screencopy).
    pub output: Output,
    /// The frame shown now.
    pub canvas: Canvas,
    /// Something changed since the last frame was started.
    pub dirty: bool,
    /// Frames shown.
    pub frames: u64,
    gpu: SoftGpu,
    /// The frame being drawn: its surfaces without a read fence (their reads end with it).
    in_flight: Option<InFlight>,
    /// Screen captures waiting for the frame being drawn.
    pub captures: Vec<Capture>,
    /// Per client, its pid and how many of its committed buffers were shown.
    pub shown: HashMap<ClientId, (Option<i32>, u64)>,
    /// Surfaces with a buffer committed since the last frame.
    fresh: HashSet<ObjectId>,
}

struct InFlight {
    unfenced_reads: Vec<WlSurface>,
}

/// A screen capture's copy request.
pub type Capture = (ZwlrScreencopyFrameV1, WlBuffer);

impl Screen {
    pub fn new(gpu: SoftGpu, output: Output, width: u32, height: u32) -> Self {
        let mut canvas = Canvas::new(width, height);
        canvas.clear(BACKGROUND);
        Screen {
            output,
            canvas,
            dirty: true,
            frames: 0,
            gpu,
            in_flight: None,
            captures: Vec::new(),
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

/// Starts a frame if something changed and the last one is done; returns whether it did.
///
/// The frame callbacks go out as soon as the frame is submitted, as a GPU compositor sends
/// them once the frame is queued: a client may then commit its next buffer while this frame
/// still reads the last one, and fencebridge holds that buffer's release until the read fence
/// signals.
pub fn start_frame(state: &mut Nested, elapsed: Duration) -> bool {
    if !state.screen.dirty || state.screen.in_flight.is_some() {
        return false;
    }
    state.screen.dirty = false;
    let surfaces: Vec<WlSurface> = state
        .toplevels
        .iter()
        .map(|t| t.wl_surface().clone())
        .collect();
    let mut layers = Vec::new();
    let mut drawn = Vec::new();
    let mut x = 0u32;
    for surface in surfaces {
        let Some(Some(buffer)) = with_renderer_surface_state(&surface, |s| s.buffer().cloned())
        else {
            continue;
        };
        match layer(&buffer, x) {
            Ok((layer, width)) => {
                layers.push(layer);
                x += width;
            }
            Err(e) => tracing::warn!("nested: cannot draw {}: {e}", surface.id()),
        }
        if state.screen.fresh.remove(&surface.id()) {
            if let Some(client) = surface.client() {
                let pid = client.get_credentials(&state.display).ok().map(|c| c.pid);
                state.screen.shown.entry(client.id()).or_insert((pid, 0)).1 += 1;
            }
        }
        drawn.push(surface);
    }
    state.screen.fresh.clear();

    let (job, read_fence) = state.screen.gpu.job(BACKGROUND, layers);
    if let Some(fence) = &read_fence {
        // As a GPU driver does: the frame's read fence goes onto every dma-buf it reads, so
        // implicitly synchronised writers (the clients' next GPU job, a video decoder's vb2
        // queue, fencebridge v4l2 --show's check) wait for the read to end.
        for layer in &job.layers {
            if let Layer::Dmabuf { buffer, .. } = layer {
                let planes: Vec<BorrowedFd<'_>> = buffer.handles().collect();
                if let Err(e) = fencebridge::fence::dmabuf::import(&planes, fence, Access::Read) {
                    tracing::warn!("nested: cannot put the read fence on a dma-buf: {e}");
                }
            }
        }
    }
    let mut unfenced_reads = Vec::new();
    for surface in &drawn {
        // fencebridge: the frame reads the surface's buffer until `read_fence` signals.
        match &read_fence {
            Some(fence) if state.bridge_on => match fence.try_clone() {
                Ok(fence) => fencebridge::wayland::surface_read(state, surface, Some(fence)),
                Err(_) => unfenced_reads.push(surface.clone()),
            },
            _ => unfenced_reads.push(surface.clone()),
        }
    }
    let canvas = state.screen.canvas.clone();
    state.screen.gpu.submit(job, canvas);
    state.screen.in_flight = Some(InFlight { unfenced_reads });
    for callback in drawn.iter().flat_map(take_frame_callbacks) {
        callback.done(elapsed.as_millis() as u32);
    }
    true
}

/// Whether a frame is being drawn (a capture then waits for it).
pub fn frame_in_flight(state: &Nested) -> bool {
    state.screen.in_flight.is_some()
}

/// The software GPU finished a frame: show it, end its reads, serve the captures waiting for it.
pub fn frame_done(state: &mut Nested, finished: Finished) {
    for error in &finished.errors {
        tracing::warn!("nested: {error}");
    }
    state.screen.canvas = finished.canvas;
    state.screen.frames += 1;
    let Some(frame) = state.screen.in_flight.take() else {
        return;
    };
    if state.bridge_on {
        for surface in &frame.unfenced_reads {
            // fencebridge: no fence told the bridge when the reads end; they end now.
            fencebridge::wayland::surface_read(state, surface, None);
        }
    }
    for (frame, buffer) in std::mem::take(&mut state.screen.captures) {
        screencopy::copy_now(state, &frame, &buffer);
    }
}

/// What the software GPU needs to draw `buffer` at (`x`, 0), and its width.
fn layer(buffer: &WlBuffer, x: u32) -> Result<(Layer, u32), String> {
    if let Ok(dmabuf) = get_dmabuf(buffer) {
        let width = dmabuf.size().w as u32;
        return Ok((
            Layer::Dmabuf {
                buffer: dmabuf.clone(),
                x,
            },
            width,
        ));
    }
    with_buffer_contents(buffer, |ptr, len, data| {
        let format = PixelFormat::from_wl_shm(data.format as u32)
            .ok_or_else(|| format!("shm format {:?} not shown", data.format))?;
        let (width, height) = (data.width as u32, data.height as u32);
        let stride = data.stride as usize;
        let start = data.offset as usize;
        let end = stride
            .checked_mul(height as usize)
            .and_then(|size| size.checked_add(start))
            .filter(|&end| end <= len)
            .ok_or("the shm buffer does not fit in its pool")?;
        let mut bytes = vec![0; end - start];
        // SAFETY: smithay maps the pool, `len` bytes readable during this closure, and
        // `start..end` lies inside it (checked above). The copy goes through raw pointers, so no
        // Rust reference to memory the client may write concurrently exists.
        unsafe { std::ptr::copy_nonoverlapping(ptr.add(start), bytes.as_mut_ptr(), bytes.len()) };
        let layer = Layer::Pixels {
            format,
            width,
            height,
            stride,
            bytes,
            x,
        };
        Ok((layer, width))
    })
    .map_err(|e| e.to_string())?
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

/// The surface's pending wl_surface.frame callbacks: answered when the frame is shown.
fn take_frame_callbacks(surface: &WlSurface) -> Vec<WlCallback> {
    with_states(surface, |states| {
        std::mem::take(
            &mut states
                .cached_state
                .get::<SurfaceAttributes>()
                .current()
                .frame_callbacks,
        )
    })
}
