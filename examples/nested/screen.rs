//! The output, whichever backend draws it: the headless one (`headless.rs`, a software GPU) or
//! a window (`window.rs`, winit and smithay's GLES renderer). What every frame does with
//! fencebridge is here, once: the toplevels it shows (tiled left to right), the reads it
//! reports with their fence, the frame callbacks it answers, and the screen captures that wait
//! for it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::Format;
use smithay::backend::renderer::utils::{
    with_renderer_surface_state, RendererSurfaceStateUserData,
};
use smithay::output::Output;
use smithay::reexports::wayland_protocols::wp::presentation_time::server::wp_presentation_feedback;
use smithay::reexports::wayland_server::backend::{ClientId, ObjectId};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_callback::WlCallback;
use smithay::reexports::wayland_server::protocol::wl_shm;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::utils::{Clock, Logical, Monotonic, Point};
use smithay::wayland::compositor::{
    get_role, with_states, with_surface_tree_upward, SurfaceAttributes, SurfaceData,
    TraversalAction,
};
use smithay::wayland::presentation::{
    PresentationFeedbackCachedState, PresentationFeedbackCallback, Refresh,
};
use wayland_protocols_wlr::screencopy::v1::server::zwlr_screencopy_frame_v1::ZwlrScreencopyFrameV1;

use fencebridge::fence::SyncFile;

use crate::headless::Headless;
use crate::render::{Canvas, Placement};
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

    /// The wl_shm formats clients may use besides ARGB8888 and XRGB8888 (which every
    /// compositor offers).
    pub fn shm_formats(&self) -> Vec<wl_shm::Format> {
        match self {
            Backend::Headless(_) => crate::headless::shm_formats(),
            Backend::Window(_) => Vec::new(),
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
    /// Put the write fence of a capture's copy on its dma-buf (off: `--no-publish`, the
    /// compositor a capture consumer's stale-frame test must catch).
    pub publish_capture_writes: bool,
    /// Labels on the output (`--labels`).
    pub labels: Option<crate::label::Labels>,
    /// Something changed since the last frame was started.
    pub dirty: bool,
    /// A frame was due while the GPU was busy: start it when the GPU is done.
    pub owed: bool,
    /// Frames shown.
    pub frames: u64,
    /// Screen captures waiting for the next frame.
    pub captures: Vec<Capture>,
    /// Per client, its pid and how many of its committed buffers were shown.
    pub shown: HashMap<ClientId, (Option<i32>, u64)>,
    /// Per surface that ever had a buffer: its buffers committed and shown (a player's video
    /// subsurface and its window are told apart in the report).
    pub surfaces: HashMap<ObjectId, SurfaceCounts>,
    /// Surfaces with a buffer committed since the last frame.
    fresh: HashSet<ObjectId>,
    /// Presentation feedback of the frame being drawn, sent when it is shown.
    presentation: Vec<PresentationFeedbackCallback>,
    /// wp_presentation's clock (CLOCK_MONOTONIC) and the output's refresh period.
    pub clock: Clock<Monotonic>,
    pub frame_interval: Duration,
    pub backend: Backend,
}

impl Screen {
    pub fn new(backend: Backend, output: Output, frame_interval: Duration) -> Self {
        let (width, height) = output_size(&output);
        let mut canvas = Canvas::new(width, height);
        canvas.clear(BACKGROUND);
        Screen {
            output,
            canvas,
            keep_canvas: false,
            publish_capture_writes: true,
            labels: None,
            dirty: true,
            owed: false,
            frames: 0,
            captures: Vec::new(),
            shown: HashMap::new(),
            surfaces: HashMap::new(),
            fresh: HashSet::new(),
            presentation: Vec::new(),
            clock: Clock::new(),
            frame_interval,
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
            if let Some(client) = surface.client() {
                let counts = self
                    .surfaces
                    .entry(surface.id())
                    .or_insert_with(|| SurfaceCounts {
                        client: client.id(),
                        protocol_id: surface.id().protocol_id(),
                        role: get_role(surface).unwrap_or("none"),
                        committed: 0,
                        shown: 0,
                    });
                counts.committed += 1;
            }
        }
    }
}

/// One surface's buffers, committed and shown.
pub struct SurfaceCounts {
    pub client: ClientId,
    /// Its `wl_surface@N` number.
    pub protocol_id: u32,
    /// Its role when it first had a buffer (`xdg_toplevel`, `subsurface`...).
    pub role: &'static str,
    /// Commits applied that attached a new buffer.
    pub committed: u64,
    /// Of those, the buffers a frame drew (a buffer replaced before the next frame is not).
    pub shown: u64,
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
pub fn start_frame(state: &mut Nested) {
    let screen = &mut state.screen;
    let ready = match &screen.backend {
        Backend::Headless(headless) => !headless.frame_in_flight(),
        Backend::Window(_) => true,
    };
    let wanted = screen.dirty || !screen.captures.is_empty();
    // A frame due while the GPU is still busy starts as soon as it is done, as a compositor
    // catches the next vblank, rather than a whole frame period later.
    screen.owed = wanted && !ready;
    if !ready || !wanted {
        return;
    }
    let elapsed = screen.clock.now();
    let started = std::time::Instant::now();
    state.screen.dirty = false;
    let scene = frame_scene(state);
    crate::label::frame_reads(state, &scene.surfaces);
    // The window backend composes the labels over its frame on the GPU; the headless one draws
    // them on its finished frame.
    let overlay = match &state.screen.backend {
        Backend::Window(_) if state.screen.labels.is_some() => {
            let canvas = &state.screen.canvas;
            let mut overlay = Canvas::overlay(canvas.width(), canvas.height());
            crate::label::draw(state, &mut overlay, &scene.windows());
            Some(overlay)
        }
        _ => None,
    };
    let screen = &mut state.screen;
    // A window frame that failed still answers its clients (nothing reads their buffers);
    // captures wait for the next one.
    let mut failed = false;
    let read_fence = match &mut screen.backend {
        Backend::Headless(headless) => {
            let size = (screen.canvas.width(), screen.canvas.height());
            headless.draw(&scene.surfaces, scene.windows(), size)
        }
        Backend::Window(window) => {
            let read_back = screen.keep_canvas || !screen.captures.is_empty();
            let fence = window
                .draw(
                    &scene.toplevels,
                    overlay.as_ref(),
                    read_back.then_some(&mut screen.canvas),
                )
                .unwrap_or_else(|e| {
                    tracing::warn!("nested: the window's frame failed: {e}");
                    failed = true;
                    None
                });
            // The frame as read back is the one the labels were drawn for.
            if read_back && !failed {
                if let Some(labels) = &mut screen.labels {
                    labels.frame_shown(&screen.canvas);
                }
            }
            fence
        }
    };
    let drawn: Vec<WlSurface> = scene.surfaces.into_iter().map(|p| p.surface).collect();
    let unfenced = reads_started(state, &drawn, read_fence.as_ref());
    for callback in drawn.iter().flat_map(take_frame_callbacks) {
        callback.done(Duration::from(elapsed).as_millis() as u32);
    }
    tracing::debug!("nested: frame submitted in {:?}", started.elapsed());
    // Presentation feedback goes out when the frame is shown.
    let feedback = drawn.iter().flat_map(take_presentation_feedback);
    state.screen.presentation.extend(feedback);
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

/// What a frame shows.
pub struct Scene {
    /// Each mapped toplevel's root surface and its position on the output, tiled left to
    /// right in mapping order (a backend that draws surface trees itself takes these).
    pub toplevels: Vec<(WlSurface, Point<i32, Logical>)>,
    /// Every surface of those trees that has a buffer, back to front: subsurfaces at their
    /// positions and in their stacking order, with their viewport, scale and transform.
    pub surfaces: Vec<Placed>,
}

impl Scene {
    /// Where each toplevel's own surface lands (what `--labels` writes under).
    fn windows(&self) -> Vec<crate::label::Placed> {
        let clamp = |v: i64| v.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
        self.surfaces
            .iter()
            .filter(|placed| {
                self.toplevels
                    .iter()
                    .any(|(root, _)| *root == placed.surface)
            })
            .map(|placed| crate::label::Placed {
                surface: placed.surface.clone(),
                x: clamp(placed.placement.x),
                y: clamp(placed.placement.y),
                width: placed.placement.width,
                height: placed.placement.height,
            })
            .collect()
    }
}

/// A surface a frame draws.
pub struct Placed {
    pub surface: WlSurface,
    pub buffer: WlBuffer,
    pub placement: Placement,
}

/// The scene of the next frame. Each surface whose buffer is new since the last frame counts
/// as shown for its client.
fn frame_scene(state: &mut Nested) -> Scene {
    let mut scene = Scene {
        toplevels: Vec::new(),
        surfaces: Vec::new(),
    };
    let mut x: i32 = 0;
    for toplevel in &state.toplevels {
        let root = toplevel.wl_surface();
        let Some(width) =
            with_renderer_surface_state(root, |s| s.view().map(|v| v.dst.w)).flatten()
        else {
            continue; // not mapped
        };
        scene.toplevels.push((root.clone(), (x, 0).into()));
        place_tree(root, (i64::from(x), 0), &mut scene.surfaces);
        // Sizes come from clients: a sum past i32 is past any output, so nothing after it
        // would be seen anyway.
        let Some(next) = x.checked_add(width.max(0)) else {
            break;
        };
        x = next;
    }
    for placed in &scene.surfaces {
        if state.screen.fresh.remove(&placed.surface.id()) {
            if let Some(counts) = state.screen.surfaces.get_mut(&placed.surface.id()) {
                counts.shown += 1;
            }
            if let Some(client) = placed.surface.client() {
                let pid = client.get_credentials(&state.display).ok().map(|c| c.pid);
                state.screen.shown.entry(client.id()).or_insert((pid, 0)).1 += 1;
            }
        }
    }
    state.screen.fresh.clear();
    scene
}

/// Places every surface of `root`'s tree that has a buffer, back to front, `root` at `origin`
/// (as smithay's `render_elements_from_surface_tree` places them, in i64: offsets come from
/// clients).
fn place_tree(root: &WlSurface, origin: (i64, i64), placed: &mut Vec<Placed>) {
    let offset = |states: &SurfaceData, (x, y): (i64, i64)| {
        let view = states
            .data_map
            .get::<RendererSurfaceStateUserData>()?
            .lock()
            .ok()?
            .view()?;
        Some((
            x.saturating_add(view.offset.x.into()),
            y.saturating_add(view.offset.y.into()),
        ))
    };
    with_surface_tree_upward(
        root,
        origin,
        |_, states, &at| match offset(states, at) {
            Some(at) => TraversalAction::DoChildren(at),
            None => TraversalAction::SkipChildren,
        },
        |surface, states, &at| {
            let Some(data) = states.data_map.get::<RendererSurfaceStateUserData>() else {
                return;
            };
            let Ok(data) = data.lock() else {
                return;
            };
            let (Some(view), Some(buffer)) = (data.view(), data.buffer()) else {
                return;
            };
            let (x, y) = (
                at.0.saturating_add(view.offset.x.into()),
                at.1.saturating_add(view.offset.y.into()),
            );
            placed.push(Placed {
                surface: surface.clone(),
                buffer: WlBuffer::clone(buffer),
                placement: Placement {
                    x,
                    y,
                    width: u32::try_from(view.dst.w).unwrap_or(0),
                    height: u32::try_from(view.dst.h).unwrap_or(0),
                    src: view.src,
                    buffer_scale: data.buffer_scale(),
                    transform: data.buffer_transform(),
                    y_inverted: false,
                },
            });
        },
        |_, _, _| true,
    );
}

/// Tells fencebridge that a frame reads `surfaces` until `fence` signals (a wl_shm buffer,
/// which the frame copied, fencebridge gives back without waiting for it). Returns the
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
    let screen = &mut state.screen;
    let now = screen.clock.now();
    let refresh = Refresh::fixed(screen.frame_interval);
    for feedback in screen.presentation.drain(..) {
        feedback.presented(
            &screen.output,
            now,
            refresh,
            screen.frames,
            wp_presentation_feedback::Kind::empty(),
        );
    }
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

/// The surface's wp_presentation feedback requests: answered when the frame is shown.
fn take_presentation_feedback(surface: &WlSurface) -> Vec<PresentationFeedbackCallback> {
    with_states(surface, |states| {
        std::mem::take(
            &mut states
                .cached_state
                .get::<PresentationFeedbackCachedState>()
                .current()
                .callbacks,
        )
    })
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

/// The output's next frame tick after the one due at `deadline`, on a fixed schedule, as an
/// output's vblanks come: re-arming a whole period after each tick's work would stretch every
/// period by that work, and a 30 fps player on the 30 Hz output would then find its frame
/// callback late and drop a frame whenever the periods' excess added up to one (measured under
/// emulation: 80 and 98 of 120 frames shown, against 112 and 107 on this schedule). Ticks
/// missed while busy are skipped, not made up in a burst.
pub fn next_tick(deadline: Instant, now: Instant, period: Duration) -> Instant {
    let mut next = deadline + period;
    while next <= now {
        next += period;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_their_schedule_and_skip_what_was_missed() {
        let period = Duration::from_millis(33);
        let t0 = Instant::now();
        // The tick's work took 5 ms: the next one is still a period after the last deadline.
        assert_eq!(
            next_tick(t0, t0 + Duration::from_millis(5), period),
            t0 + period
        );
        // Busy for 100 ms: the ticks at 33, 66 and 99 ms are gone; the next is at 132 ms.
        assert_eq!(
            next_tick(t0, t0 + Duration::from_millis(100), period),
            t0 + period * 4
        );
        // Exactly on a tick: that one has passed.
        assert_eq!(next_tick(t0, t0 + period, period), t0 + period * 2);
    }
}
