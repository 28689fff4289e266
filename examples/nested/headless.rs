//! The headless backend: an offscreen output drawn by the software GPU (`gpu.rs`). A frame
//! hands every shown buffer to the GPU's worker thread with a real read fence (vgem), puts that
//! fence on the dma-bufs it reads, as a GPU driver does (unless `--gpu-private-reads`: then it
//! keeps it to itself, as a Vulkan renderer does, and only fencebridge puts it there), and is
//! shown when the worker is done.
//!
//! Why not pixman: it has no NV12, and no choice of YUV matrix or range; `render.rs` converts
//! the formats video decoders and cameras produce as a GPU sampler would.

use std::os::fd::BorrowedFd;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::{Buffer as _, Format, Fourcc, Modifier};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_shm;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::dmabuf::get_dmabuf;
use smithay::wayland::shm::with_buffer_contents;
use smithay::wayland::single_pixel_buffer::get_single_pixel_buffer;

use fencebridge::fence::{Access, SyncFile};

use crate::gpu::{Contents, Finished, Layer, SoftGpu};
use crate::label;
use crate::render::{Canvas, PixelFormat};
use crate::screen::{self, Placed, BACKGROUND};
use crate::state::Nested;

/// The formats the CPU renderer shows: what GPUs, video decoders and cameras produce.
const FORMATS: [Fourcc; 4] = [
    Fourcc::Xrgb8888,
    Fourcc::Argb8888,
    Fourcc::Yuyv,
    Fourcc::Nv12,
];

/// The software GPU and the frame it is drawing.
pub struct Headless {
    gpu: SoftGpu,
    /// Whether a frame puts its read fence on the dma-bufs it reads (as GPU drivers do).
    publishes_reads: bool,
    /// The frame being drawn: its surfaces without a read fence (their reads end with it).
    in_flight: Option<Vec<WlSurface>>,
    /// The canvas the next frame is drawn on: the one shown before the last frame (two
    /// canvases take turns, so no frame allocates or copies one).
    spare: Option<Canvas>,
    /// Where the frame being drawn puts each window (for `--labels`).
    placed: Vec<label::Placed>,
}

impl Headless {
    pub fn new(gpu: SoftGpu, publishes_reads: bool) -> Self {
        Headless {
            gpu,
            publishes_reads,
            in_flight: None,
            spare: None,
            placed: Vec::new(),
        }
    }

    /// Whether a frame is being drawn (the next one waits for it, and so do captures).
    pub fn frame_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Submits a frame of `surfaces` (back to front), drawn on `canvas`; returns its read
    /// fence, if the kernel has vgem.
    pub fn draw(
        &mut self,
        surfaces: &[Placed],
        windows: Vec<label::Placed>,
        (width, height): (u32, u32),
    ) -> Option<SyncFile> {
        self.placed = windows;
        let canvas = self
            .spare
            .take()
            .filter(|c| (c.width(), c.height()) == (width, height))
            .unwrap_or_else(|| Canvas::new(width, height));
        let mut layers = Vec::new();
        for placed in surfaces {
            match contents(&placed.buffer) {
                Ok(contents) => layers.push(Layer {
                    contents,
                    placement: placed.placement,
                }),
                Err(e) => tracing::warn!("nested: cannot draw {}: {e}", placed.surface.id()),
            }
        }
        let (job, read_fence) = self.gpu.job(BACKGROUND, layers);
        if let Some(fence) = read_fence.as_ref().filter(|_| self.publishes_reads) {
            // As a GPU driver does: the frame's read fence goes onto every dma-buf it reads, so
            // implicitly synchronised writers (the clients' next GPU job, a video decoder's vb2
            // queue, fencebridge v4l2 --show's check) wait for the read to end.
            for layer in &job.layers {
                if let Contents::Dmabuf(buffer) = &layer.contents {
                    let planes: Vec<BorrowedFd<'_>> = buffer.handles().collect();
                    if let Err(e) = fencebridge::fence::dmabuf::import(&planes, fence, Access::Read)
                    {
                        tracing::warn!("nested: cannot put the read fence on a dma-buf: {e}");
                    }
                }
            }
        }
        self.gpu.submit(job, canvas);
        self.in_flight = Some(Vec::new());
        read_fence
    }

    /// Queues a screen capture's copy of `image` into `target` on the software GPU; its write
    /// fence (see [`SoftGpu::copy`]).
    pub fn copy(&self, image: Canvas, target: Dmabuf) -> Result<Option<SyncFile>, String> {
        self.gpu.copy(image, target)
    }

    /// The reads of `surfaces`, which no fence tracks, end when the frame is done.
    pub fn reads_end_with_frame(&mut self, surfaces: Vec<WlSurface>) {
        self.in_flight = Some(surfaces);
    }
}

/// The software GPU finished a frame: show it, end its reads, serve the captures waiting for it.
pub fn frame_done(state: &mut Nested, finished: Finished) {
    for error in &finished.errors {
        tracing::warn!("nested: {error}");
    }
    let mut canvas = finished.canvas;
    if let screen::Backend::Headless(headless) = &mut state.screen.backend {
        let placed = std::mem::take(&mut headless.placed);
        label::draw(state, &mut canvas, &placed);
        if let Some(labels) = &mut state.screen.labels {
            labels.frame_shown(&canvas);
        }
    }
    let shown = std::mem::replace(&mut state.screen.canvas, canvas);
    let unfenced = match &mut state.screen.backend {
        screen::Backend::Headless(headless) => {
            headless.spare = Some(shown);
            headless.in_flight.take().unwrap_or_default()
        }
        _ => Vec::new(),
    };
    screen::reads_done(state, &unfenced);
    screen::frame_shown(state);
    if state.screen.owed {
        screen::start_frame(state);
    }
}

/// What the software GPU reads to draw `buffer`.
fn contents(buffer: &WlBuffer) -> Result<Contents, String> {
    if let Ok(dmabuf) = get_dmabuf(buffer) {
        return Ok(Contents::Dmabuf(dmabuf.clone()));
    }
    if let Ok(pixel) = get_single_pixel_buffer(buffer) {
        // 32-bit channels, premultiplied: their top bytes are ARGB8888's.
        let [a, r, g, b] = [pixel.a, pixel.r, pixel.g, pixel.b].map(|c| c >> 24);
        return Ok(Contents::Solid(a << 24 | r << 16 | g << 8 | b));
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
        Ok(Contents::Pixels {
            format,
            width,
            height,
            stride,
            bytes,
        })
    })
    .map_err(|e| e.to_string())?
}

/// The wl_shm formats the CPU renderer shows besides the two every compositor offers: YUYV,
/// what V4L2 decoders and cameras give. A player that offers it (GStreamer's waylandsink
/// negotiates a format it can show from memory, and a decoder's dma-bufs in it then go
/// through linux-dmabuf) needs no colour conversion on the CPU.
pub fn shm_formats() -> Vec<wl_shm::Format> {
    vec![wl_shm::Format::Yuyv]
}

/// The formats the CPU renderer converts, linear only.
pub fn dmabuf_formats() -> Vec<Format> {
    FORMATS
        .iter()
        .map(|&code| Format {
            code,
            modifier: Modifier::Linear,
        })
        .collect()
}

/// The device number of the GPU's render node, if there is one (vgem, a software fence
/// device, is no GPU a client would allocate for).
pub fn main_device() -> Option<u64> {
    fencebridge::device::DrmNode::list()
        .into_iter()
        .filter(|node| node.is_render_node())
        .filter(|node| node.open().is_ok_and(|n| n.driver_name() != "vgem"))
        .find_map(|node| rustix::fs::stat(node.path()).ok())
        .map(|stat| stat.st_rdev)
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
