//! The window backend: the output is a winit window on the desktop's own
//! display server, drawn with smithay's GLES renderer and `OutputDamageTracker`, as anvil and
//! niri draw their winit outputs.
//!
//! What fencebridge is told: each frame's render fence, exported as a sync_file where the GL
//! driver can (`EGL_ANDROID_native_fence_sync`), is the read fence of every surface it shows;
//! fencebridge then signals release points and sends deferred `wl_buffer.release`s from it,
//! with no CPU wait. A driver without native fences (Mesa's llvmpipe under Xvfb) gives an EGL
//! fence instead: a waiter thread waits for it and the reads end when it has signalled, so the
//! loop never blocks on the GPU.

use std::sync::mpsc;
use std::thread;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::{Format, Fourcc};
use smithay::backend::egl::EGLDevice;
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::element::memory::{
    MemoryRenderBuffer, MemoryRenderBufferRenderElement,
};
use smithay::backend::renderer::element::surface::{
    render_elements_from_surface_tree, WaylandSurfaceRenderElement,
};
use smithay::backend::renderer::element::{render_elements, Kind};
use smithay::backend::renderer::gles::GlesRenderer;
use smithay::backend::renderer::sync::SyncPoint;
use smithay::backend::renderer::{ExportMem, ImportDma, Renderer, TextureMapping};
use smithay::backend::winit::{self, WinitEvent, WinitEventLoop, WinitGraphicsBackend};
use smithay::reexports::calloop::channel::{self, Channel};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::winit::dpi::PhysicalSize;
use smithay::reexports::winit::window::Window as WinitWindow;
use smithay::utils::{Logical, Physical, Point, Rectangle, Size, Transform};

use fencebridge::fence::SyncFile;

use crate::render::Canvas;
use crate::screen::{self, BACKGROUND};
use crate::state::Nested;

render_elements! {
    /// What a window frame draws: the clients' surfaces, and the compositor's labels over them.
    Element<=GlesRenderer>;
    Surface=WaylandSurfaceRenderElement<GlesRenderer>,
    Labels=MemoryRenderBufferRenderElement<GlesRenderer>,
}

/// The window, its renderer and the thread that waits for GL fences no fd can carry.
pub struct Window {
    backend: WinitGraphicsBackend<GlesRenderer>,
    damage: OutputDamageTracker,
    /// The last frame's render fence.
    sync: SyncPoint,
    /// Whether the way reads end (fence kind) was said.
    told: bool,
    waiter: mpsc::Sender<(SyncPoint, Vec<WlSurface>)>,
}

/// Why the window backend could not start.
pub type Error = Box<dyn std::error::Error>;

impl Window {
    /// Opens a `width`×`height` window. Returns its events, to insert into the loop with
    /// [`handle_event`], and the surfaces whose reads the waiter thread saw end, to hand to
    /// [`screen::reads_done`].
    pub fn open(
        width: u32,
        height: u32,
    ) -> Result<(Window, WinitEventLoop, Channel<Vec<WlSurface>>), Error> {
        let attributes = WinitWindow::default_attributes()
            .with_title("fencebridge nested")
            .with_inner_size(PhysicalSize::new(width, height))
            .with_visible(true);
        let (backend, events) = winit::init_from_attributes::<GlesRenderer>(attributes)
            .map_err(|e| with_sources(&e))?;
        let (waiter, fences) = mpsc::channel::<(SyncPoint, Vec<WlSurface>)>();
        let (done, reads_done) = channel::channel();
        thread::Builder::new()
            .name("gl-fence-waiter".to_owned())
            .spawn(move || {
                for (sync, surfaces) in fences {
                    // `Interrupted` says nothing about the fence: ask again, a few times (a
                    // lost context fails every wait, and its frame is gone anyway).
                    let _ = (0..8).find(|_| sync.wait().is_ok());
                    if done.send(surfaces).is_err() {
                        break;
                    }
                }
            })?;
        let damage = damage_tracker(backend.window_size());
        let window = Window {
            backend,
            damage,
            sync: SyncPoint::signaled(),
            told: false,
            waiter,
        };
        Ok((window, events, reads_done))
    }

    /// The window's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let size = self.backend.window_size();
        (size.w.max(1) as u32, size.h.max(1) as u32)
    }

    /// The formats the GL driver imports.
    pub fn dmabuf_formats(&mut self) -> Vec<Format> {
        self.backend
            .renderer()
            .dmabuf_formats()
            .into_iter()
            .collect()
    }

    /// The device number of the GPU the GL driver renders on, if it has a render node.
    pub fn main_device(&mut self) -> Option<u64> {
        let display = self.backend.renderer().egl_context().display();
        let path = EGLDevice::device_for_display(display)
            .and_then(|device| device.render_device_path())
            .ok()?;
        rustix::fs::stat(&path).ok().map(|stat| stat.st_rdev)
    }

    /// Imports `dmabuf` into GLES: what the driver cannot sample fails linux-dmabuf's import.
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), String> {
        self.backend
            .renderer()
            .import_dmabuf(dmabuf, None)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Draws the `toplevels`' surface trees at their positions, and `overlay` (the labels) over
    /// them, and swaps; reads the frame back into `canvas` if one is given. Returns the frame's
    /// render fence as a sync_file, if the driver exports one.
    pub fn draw(
        &mut self,
        toplevels: &[(WlSurface, Point<i32, Logical>)],
        overlay: Option<&Canvas>,
        canvas: Option<&mut Canvas>,
    ) -> Result<Option<SyncFile>, Error> {
        // A read-back needs every pixel of this frame drawn, not just the damage since the
        // back buffer was last shown.
        let age = match canvas {
            Some(_) => 0,
            None => self.backend.buffer_age().unwrap_or(0),
        };
        let (renderer, mut framebuffer) = self.backend.bind()?;
        let mut elements: Vec<Element> = Vec::new();
        // Front to back, as the damage tracker takes them: the labels, then the last toplevel
        // mapped on top.
        if let Some(overlay) = overlay {
            let size = (overlay.width() as i32, overlay.height() as i32);
            let buffer = MemoryRenderBuffer::from_slice(
                &overlay.argb8888_bytes(),
                Fourcc::Argb8888,
                size,
                1,
                Transform::Normal,
                None,
            );
            elements.push(Element::Labels(
                MemoryRenderBufferRenderElement::from_buffer(
                    renderer,
                    (0.0, 0.0),
                    &buffer,
                    None,
                    None,
                    None,
                    Kind::Unspecified,
                )?,
            ));
        }
        for (surface, at) in toplevels.iter().rev() {
            elements.extend(
                render_elements_from_surface_tree::<_, WaylandSurfaceRenderElement<_>>(
                    renderer,
                    surface,
                    at.to_physical(1),
                    1.0,
                    1.0,
                    Kind::Unspecified,
                )
                .into_iter()
                .map(Element::Surface),
            );
        }
        let result = self.damage.render_output(
            renderer,
            &mut framebuffer,
            age,
            &elements,
            rgba(BACKGROUND),
        )?;
        let damage = result.damage.cloned();
        self.sync = result.sync;
        // GL copies the frame now; it is mapped after the swap, since mapping makes the
        // context current without the window's surface, which the swap needs.
        let copy = match &canvas {
            Some(canvas) => {
                let region =
                    Rectangle::from_size((canvas.width() as i32, canvas.height() as i32).into());
                Some(renderer.copy_framebuffer(&framebuffer, region, Fourcc::Abgr8888)?)
            }
            None => None,
        };
        drop(framebuffer);
        self.backend.submit(damage.as_deref())?;
        if let (Some(canvas), Some(copy)) = (canvas, copy) {
            let bytes = self.backend.renderer().map_texture(&copy)?;
            let (width, height) = (canvas.width(), canvas.height());
            *canvas = Canvas::from_rgba(width, height, bytes)?;
            // GL's rows run bottom to top.
            if copy.flipped() {
                canvas.flip_vertically(0, 0, width, height);
            }
        }
        // Textures of buffers gone since the last frame.
        let _ = self.backend.renderer().cleanup_texture_cache();
        let fence = self.sync.export().and_then(|fd| {
            SyncFile::try_from(fd)
                .map_err(|e| tracing::warn!("nested: the GL fence is no sync_file: {e}"))
                .ok()
        });
        if !self.told {
            self.told = true;
            let how = match (&fence, self.sync.contains_fence()) {
                (Some(_), _) => "the GL fence as a sync_file",
                (None, true) => "an EGL fence without fd, waited for on a thread",
                (None, false) => "none (the driver finished the frame before the swap returned)",
            };
            eprintln!("nested: the window's frames end their reads with {how}");
        }
        Ok(fence)
    }

    /// The reads of `surfaces`, which no sync_file tracks, end with the last frame's GL fence:
    /// returns them if it has signalled, else hands them to the waiter thread.
    pub fn reads_end_with_fence(&mut self, surfaces: Vec<WlSurface>) -> Vec<WlSurface> {
        if surfaces.is_empty() || self.sync.is_reached() {
            return surfaces;
        }
        match self.waiter.send((self.sync.clone(), surfaces)) {
            Ok(()) => Vec::new(),
            // The thread is gone: the loop thread cannot wait, so the reads end now.
            Err(mpsc::SendError((_, surfaces))) => surfaces,
        }
    }
}

/// Damage tracking for a window of `size`. GL's framebuffer rows run bottom to top, so the
/// frame is drawn flipped, as smithay's own winit compositor (anvil) draws it.
fn damage_tracker(size: Size<i32, Physical>) -> OutputDamageTracker {
    OutputDamageTracker::new(size, 1.0, Transform::Flipped180)
}

/// An error with its causes (winit's own message says little: "Failed to initialize an event
/// loop"; its cause says which display could not be opened).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// `0xAARRGGBB` as GL's colour.
fn rgba(argb: u32) -> [f32; 4] {
    let channel = |shift: u32| ((argb >> shift) & 0xff) as f32 / 255.0;
    [channel(16), channel(8), channel(0), channel(24)]
}

/// The window's events: a resize changes the output. Returns false when the window was
/// closed (the compositor ends).
pub fn handle_event(state: &mut Nested, event: WinitEvent) -> bool {
    match event {
        WinitEvent::Resized { size, .. } => {
            state
                .screen
                .resized(size.w.max(1) as u32, size.h.max(1) as u32);
            if let screen::Backend::Window(window) = &mut state.screen.backend {
                window.damage = damage_tracker(size);
            }
        }
        WinitEvent::Redraw => state.screen.dirty = true,
        WinitEvent::CloseRequested => return false,
        // Input is not what this compositor shows.
        WinitEvent::Focus(_) | WinitEvent::Input(_) => {}
    }
    true
}
