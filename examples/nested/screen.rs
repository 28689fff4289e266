//! The output, whichever backend draws it: the headless one (`headless.rs`, a software GPU) or
//! a window (`window.rs`, winit and smithay's GLES renderer). What every frame does with
//! fencebridge is here, once: the toplevels it shows (tiled left to right), the reads it
//! reports with their fence, the frame callbacks it answers, and the screen captures that wait
//! for it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::Format;
use smithay::backend::renderer::utils::with_renderer_surface_state;
use smithay::output::Output;
use smithay::reexports::wayland_server::backend::{ClientId, ObjectId};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_callback::WlCallback;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor::{with_states, SurfaceAttributes};
use wayland_protocols_wlr::screencopy::v1::server::zwlr_screencopy_frame_v1::ZwlrScreencopyFrameV1;

use fencebridge::fence::SyncFile;

use crate::headless::Headless;
use crate::render::Canvas;
use crate::screencopy;
use crate::state::Nested;
use crate::window::Window;

/// The background, so that an empty output is not black like an unrendered buffer.
pub const BACKGROUND: u32 = 0xff20_2428;

/// What draws the frames.
pub enum Backend {
    /// An offscreen output, drawn on the CPU by a software GPU with real read fences.
    Headless(Headless),
    /// A winit window, drawn with smithay's GLES renderer.
    Window(Box<Window>),
}

impl Backend {
    /// `--backend`'s name for it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Headless(_) => "headless",
            Backend::Window(_) => "winit",
        }
    }

    /// The output's size where the backend decides it (a window's).
    pub fn size(&self) -> Option<(u32, u32)> {
        match self {
            Backend::Headless(_) => None,
            Backend::Window(window) => Some(window.size()),
        }
    }

    /// The dma-buf formats clients may use.
    pub fn dmabuf_formats(&mut self) -> Vec<Format> {
        match self {
            Backend::Headless(_) => crate::headless::dmabuf_formats(),
            Backend::Window(window) => window.dmabuf_formats(),
        }
    }

    /// The device number of the GPU clients should allocate on (linux-dmabuf v4's main
    /// device), if there is one.
    pub fn main_device(&mut self) -> Option<u64> {
        match self {
            Backend::Headless(_) => crate::headless::main_device(),
            Backend::Window(window) => window.main_device(),
        }
    }

    /// Whether the backend can show `dmabuf` (linux-dmabuf's import check).
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), String> {
        match self {
            Backend::Headless(_) => crate::headless::check_dmabuf(dmabuf),
            Backend::Window(window) => window.import_dmabuf(dmabuf),
        }
    }
}

/// A screen capture's copy request.
pub type Capture = (ZwlrScreencopyFrameV1, WlBuffer);

/// The output and what was shown on it.
pub struct Screen {
    /// The output as clients see it (wl_output, xdg-output, screencopy).
    pub output: Output,
    /// The last frame as screen captures and `--png` see it: every frame on the headless
    /// backend; read back from the GPU when one of them asks, in a window.
    pub canvas: Canvas,
    /// Keep `canvas` current even when no capture asks (`--png`).
    pub keep_canvas: bool,
    /// Something changed since the last frame was started.
    pub dirty: bool,
    /// Frames shown.
    pub frames: u64,
    /// Screen captures waiting for the next frame.
    pub captures: Vec<Capture>,
    /// Per client, its pid and how many of its committed buffers were shown.
    pub shown: HashMap<ClientId, (Option<i32>, u64)>,
    /// Surfaces with a buffer committed since the last frame.
    fresh: HashSet<ObjectId>,
    pub backend: Backend,
}

impl Screen {
    pub fn new(backend: Backend, output: Output) -> Self {
        let (width, height) = output_size(&output);
        let mut canvas = Canvas::new(width, height);
        canvas.clear(BACKGROUND);
        Screen {
            output,
            canvas,
            keep_canvas: false,
            dirty: true,
            frames: 0,
            captures: Vec::new(),
            shown: HashMap::new(),
            fresh: HashSet::new(),
            backend,
        }
    }

    /// The output's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        output_size(&self.output)
    }

    /// The output took a new size (a window was resized).
    pub fn resized(&mut self, width: u32, height: u32) {
        let mode = smithay::output::Mode {
            size: (width as i32, height as i32).into(),
            refresh: 60_000,
        };
        let old = self.output.current_mode();
        self.output
            .change_current_state(Some(mode), None, None, None);
        // The window's old size is no mode it can take again: a resize drag would otherwise
        // pile up modes that every wl_output bind lists.
        if let Some(old) = old.filter(|old| *old != mode) {
            self.output.delete_mode(old);
        }
        self.output.set_preferred(mode);
        self.canvas = Canvas::new(width, height);
        self.canvas.clear(BACKGROUND);
        self.dirty = true;
    }

    /// A commit applied on `surface`; `new_buffer` if it attached one.
    pub fn committed(&mut self, surface: &WlSurface, new_buffer: bool) {
        self.dirty = true;
        if new_buffer {
            self.fresh.insert(surface.id());
        }
    }
}

fn output_size(output: &Output) -> (u32, u32) {
    let size = output.current_mode().map(|m| m.size).unwrap_or_default();
    (size.w.max(1) as u32, size.h.max(1) as u32)
}

/// Starts a frame if something changed (or a capture waits) and the backend can take one.
///
/// The frame callbacks go out as soon as the frame is submitted, as a GPU compositor sends
/// them once the frame is queued: a client may then commit its next buffer while this frame
/// still reads the last one, and fencebridge holds that buffer's release until the frame's
/// read fence signals.
pub fn start_frame(state: &mut Nested, elapsed: Duration) {
    let screen = &state.screen;
    let ready = match &screen.backend {
        Backend::Headless(headless) => !headless.frame_in_flight(),
        Backend::Window(_) => true,
    };
    let wanted = screen.dirty || !screen.captures.is_empty();
    if !ready || !wanted {
        return;
    }
    state.screen.dirty = false;
    let surfaces = frame_surfaces(state);
    let screen = &mut state.screen;
    // A window frame that failed still answers its clients (nothing reads their buffers);
    // captures wait for the next one.
    let mut failed = false;
    let read_fence = match &mut screen.backend {
        Backend::Headless(headless) => headless.draw(&surfaces, screen.canvas.clone()),
        Backend::Window(window) => {
            let read_back = screen.keep_canvas || !screen.captures.is_empty();
            window
                .draw(&surfaces, read_back.then_some(&mut screen.canvas))
                .unwrap_or_else(|e| {
                    tracing::warn!("nested: the window's frame failed: {e}");
                    failed = true;
                    None
                })
        }
    };
    let drawn: Vec<WlSurface> = surfaces.into_iter().map(|(surface, _)| surface).collect();
    let unfenced = reads_started(state, &drawn, read_fence.as_ref());
    for callback in drawn.iter().flat_map(take_frame_callbacks) {
        callback.done(elapsed.as_millis() as u32);
    }
    match &mut state.screen.backend {
        // Its frame is shown (and its unfenced reads end) when the software GPU is done.
        Backend::Headless(headless) => headless.reads_end_with_frame(unfenced),
        Backend::Window(window) => {
            // The swap is done: the frame is shown; its reads end with the GL fence.
            let now = window.reads_end_with_fence(unfenced);
            reads_done(state, &now);
            if !failed {
                frame_shown(state);
            }
        }
    }
}

/// The toplevels with a buffer, in mapping order, with their buffers. Each one whose buffer
/// is new since the last frame counts as shown for its client.
fn frame_surfaces(state: &mut Nested) -> Vec<(WlSurface, WlBuffer)> {
    let mut surfaces = Vec::new();
    for toplevel in &state.toplevels {
        let surface = toplevel.wl_surface();
        let Some(Some(buffer)) =
            with_renderer_surface_state(surface, |s| s.buffer().map(|b| WlBuffer::clone(b)))
        else {
            continue;
        };
        if state.screen.fresh.remove(&surface.id()) {
            if let Some(client) = surface.client() {
                let pid = client.get_credentials(&state.display).ok().map(|c| c.pid);
                state.screen.shown.entry(client.id()).or_insert((pid, 0)).1 += 1;
            }
        }
        surfaces.push((surface.clone(), buffer));
    }
    state.screen.fresh.clear();
    surfaces
}

/// Tells fencebridge that a frame reads `surfaces` until `fence` signals. Returns the
/// surfaces whose reads no fence tracks: the backend ends them with [`reads_done`].
fn reads_started(
    state: &mut Nested,
    surfaces: &[WlSurface],
    fence: Option<&SyncFile>,
) -> Vec<WlSurface> {
    if !state.bridge_on {
        return Vec::new();
    }
    let mut unfenced = Vec::new();
    for surface in surfaces {
        // fencebridge: the frame reads the surface's buffer until `fence` signals.
        match fence.map(SyncFile::try_clone) {
            Some(Ok(fence)) => state.bridge.surface_read(surface, Some(fence)),
            _ => unfenced.push(surface.clone()),
        }
    }
    unfenced
}

/// The frame that read `surfaces` is done, and no fence told fencebridge so.
pub fn reads_done(state: &mut Nested, surfaces: &[WlSurface]) {
    for surface in surfaces {
        // fencebridge: the reads end now.
        state.bridge.surface_read(surface, None);
    }
}

/// A frame is on screen (and in `canvas`): count it, serve the captures waiting for it.
pub fn frame_shown(state: &mut Nested) {
    state.screen.frames += 1;
    for (frame, buffer) in std::mem::take(&mut state.screen.captures) {
        screencopy::copy_now(state, &frame, &buffer);
    }
}

/// A capture's copy request: served from the next frame when one is being drawn (headless)
/// or when the window must draw one to read it back; else from the frame shown now.
pub fn capture(state: &mut Nested, frame: &ZwlrScreencopyFrameV1, buffer: WlBuffer) {
    let now = match &state.screen.backend {
        Backend::Headless(headless) => !headless.frame_in_flight(),
        Backend::Window(_) => false,
    };
    if now {
        screencopy::copy_now(state, frame, &buffer);
    } else {
        state.screen.captures.push((frame.clone(), buffer));
    }
}

/// The surface's pending wl_surface.frame callbacks: answered when the frame is submitted.
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
