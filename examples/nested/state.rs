//! The compositor's state and its smithay handlers: wl_compositor (with subsurfaces),
//! xdg_shell, wl_shm, linux-dmabuf, wp_viewporter, wp_presentation,
//! wp_single_pixel_buffer_manager_v1, wl_output (with xdg-output), wlr-screencopy and
//! fencebridge. Everything
//! fencebridge needs is marked `// fencebridge:`.

use std::sync::Arc;
use std::time::Duration;

use fencebridge::wayland::{self, Config, FenceBridgeHandler, FenceBridgeState, OverdueWait};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::renderer::utils::on_commit_buffer_handler;
use smithay::input::{Seat, SeatHandler, SeatState};
use smithay::output::{Mode, Output, PhysicalProperties, Scale, Subpixel};
use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use smithay::reexports::wayland_server::protocol::{wl_buffer, wl_seat, wl_surface::WlSurface};
use smithay::reexports::wayland_server::{Client, DisplayHandle};
use smithay::utils::{Clock, Monotonic, Serial, Transform};
use smithay::wayland::buffer::BufferHandler;
use smithay::wayland::compositor::{
    with_states, BufferAssignment, CompositorClientState, CompositorHandler, CompositorState,
    SurfaceAttributes,
};
use smithay::wayland::dmabuf::{
    DmabufFeedbackBuilder, DmabufGlobal, DmabufHandler, DmabufState, ImportNotifier,
};
use smithay::wayland::output::{OutputHandler, OutputManagerState};
use smithay::wayland::presentation::PresentationState;
use smithay::wayland::shell::xdg::{
    PopupSurface, PositionerState, ToplevelSurface, XdgShellHandler, XdgShellState,
};
use smithay::wayland::shm::{ShmHandler, ShmState};
use smithay::wayland::single_pixel_buffer::SinglePixelBufferState;
use smithay::wayland::viewporter::ViewporterState;
use smithay::{
    delegate_compositor, delegate_dmabuf, delegate_output, delegate_presentation, delegate_seat,
    delegate_shm, delegate_single_pixel_buffer, delegate_viewporter, delegate_xdg_shell,
};

use crate::screen::{Backend, Screen};
use crate::screencopy;

/// The reference compositor.
pub struct Nested {
    pub display: DisplayHandle,
    pub loop_handle: LoopHandle<'static, Nested>,
    compositor: CompositorState,
    xdg_shell: XdgShellState,
    shm: ShmState,
    dmabuf: DmabufState,
    _dmabuf_global: DmabufGlobal,
    _outputs: OutputManagerState,
    // What video players use: a viewport to scale the video, presentation feedback to pace it,
    // single-pixel buffers for borders and black bars.
    _viewporter: ViewporterState,
    _presentation: PresentationState,
    _single_pixel: SinglePixelBufferState,
    /// The output, its backend and what it showed.
    pub screen: Screen,
    /// fencebridge: the bridge's state.
    pub bridge: FenceBridgeState,
    /// Whether surfaces go through the bridge (off: the compositor a stale-frame test must
    /// catch).
    pub bridge_on: bool,
    /// Toplevels, in mapping order (the output tiles them left to right).
    pub toplevels: Vec<ToplevelSurface>,
    seat_state: SeatState<Nested>,
    _seat: Seat<Nested>,
}

impl Nested {
    /// The compositor, with fencebridge configured by `bridge` (`None`: surfaces do not go
    /// through it).
    pub fn new(
        dh: &DisplayHandle,
        loop_handle: LoopHandle<'static, Nested>,
        bridge: Option<Config>,
        mut backend: Backend,
        ((width, height), frame_interval): ((u32, u32), Duration),
    ) -> Self {
        let mut dmabuf = DmabufState::new();
        let formats = backend.dmabuf_formats();
        // linux-dmabuf v4 needs a main device for its feedback: the GPU's render node if there
        // is one (in the VM, virtio_gpu's); without one, v3 (formats and modifiers only).
        let dmabuf_global = match backend.main_device().and_then(|dev| {
            DmabufFeedbackBuilder::new(dev, formats.iter().copied())
                .build()
                .map_err(|e| tracing::warn!("no dma-buf feedback: {e}"))
                .ok()
        }) {
            Some(feedback) => dmabuf.create_global_with_default_feedback::<Nested>(dh, &feedback),
            None => dmabuf.create_global::<Nested>(dh, formats),
        };
        let bridge_on = bridge.is_some();
        let config = bridge.unwrap_or(Config {
            explicit_sync: false,
            ..Config::default()
        });
        let mut seat_state = SeatState::new();
        let seat = seat_state.new_wl_seat(dh, "seat0");
        let outputs = OutputManagerState::new_with_xdg_output::<Nested>(dh);
        let output = output(dh, width, height);
        screencopy::create_global(dh);
        Nested {
            display: dh.clone(),
            seat_state,
            _seat: seat,
            loop_handle,
            compositor: CompositorState::new::<Nested>(dh),
            xdg_shell: XdgShellState::new::<Nested>(dh),
            shm: ShmState::new::<Nested>(dh, backend.shm_formats()),
            dmabuf,
            _dmabuf_global: dmabuf_global,
            _outputs: outputs,
            screen: Screen::new(backend, output, frame_interval),
            _viewporter: ViewporterState::new::<Nested>(dh),
            _presentation: PresentationState::new::<Nested>(
                dh,
                Clock::<Monotonic>::new().id() as u32,
            ),
            _single_pixel: SinglePixelBufferState::new::<Nested>(dh),
            bridge: FenceBridgeState::new::<Nested>(dh, config),
            bridge_on,
            toplevels: Vec::new(),
        }
    }
}

/// The output, advertised as a wl_output at (0, 0).
fn output(dh: &DisplayHandle, width: u32, height: u32) -> Output {
    let output = Output::new(
        "NESTED-1".to_owned(),
        PhysicalProperties {
            size: (0, 0).into(),
            subpixel: Subpixel::Unknown,
            make: "fencebridge".to_owned(),
            model: "nested".to_owned(),
        },
    );
    let mode = Mode {
        size: (width as i32, height as i32).into(),
        refresh: 60_000,
    };
    output.change_current_state(
        Some(mode),
        Some(Transform::Normal),
        Some(Scale::Integer(1)),
        Some((0, 0).into()),
    );
    output.set_preferred(mode);
    let _global = output.create_global::<Nested>(dh);
    output
}

/// Per-client data.
#[derive(Default)]
pub struct ClientState {
    compositor: CompositorClientState,
}

impl ClientData for ClientState {
    fn disconnected(&self, _: ClientId, reason: DisconnectReason) {
        tracing::info!("client gone: {reason:?}");
    }
}

impl CompositorHandler for Nested {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.compositor
    }

    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        &client
            .get_data::<ClientState>()
            .expect("clients are inserted with a ClientState")
            .compositor
    }

    fn new_surface(&mut self, surface: &WlSurface) {
        if self.bridge_on {
            wayland::track_surface::<Self>(surface); // fencebridge: every surface
        }
    }

    fn commit(&mut self, surface: &WlSurface) {
        let new_buffer = with_states(surface, |states| {
            matches!(
                states
                    .cached_state
                    .get::<SurfaceAttributes>()
                    .current()
                    .buffer,
                Some(BufferAssignment::NewBuffer(_))
            )
        });
        self.screen.committed(surface, new_buffer);
        on_commit_buffer_handler::<Self>(surface);
        if let Some(toplevel) = self.toplevels.iter().find(|t| t.wl_surface() == surface) {
            if !toplevel.is_initial_configure_sent() {
                toplevel.send_configure();
            }
        }
    }
}

impl FenceBridgeHandler for Nested {
    fn fencebridge_state(&mut self) -> &mut FenceBridgeState {
        &mut self.bridge
    }

    fn loop_handle(&self) -> LoopHandle<'static, Self> {
        self.loop_handle.clone()
    }

    fn wait_overdue(&mut self, wait: &OverdueWait) {
        eprintln!("nested: overdue fence: {wait}");
    }
}

fencebridge::delegate_fencebridge!(Nested);

impl XdgShellHandler for Nested {
    fn xdg_shell_state(&mut self) -> &mut XdgShellState {
        &mut self.xdg_shell
    }

    fn new_toplevel(&mut self, surface: ToplevelSurface) {
        self.toplevels.push(surface);
    }

    fn toplevel_destroyed(&mut self, surface: ToplevelSurface) {
        self.toplevels.retain(|t| t != &surface);
        self.screen.dirty = true;
    }

    fn new_popup(&mut self, _: PopupSurface, _: PositionerState) {}

    fn grab(&mut self, _: PopupSurface, _: wl_seat::WlSeat, _: Serial) {}

    fn reposition_request(&mut self, _: PopupSurface, _: PositionerState, _: u32) {}
}

impl BufferHandler for Nested {
    fn buffer_destroyed(&mut self, _: &wl_buffer::WlBuffer) {}
}

impl ShmHandler for Nested {
    fn shm_state(&self) -> &ShmState {
        &self.shm
    }
}

impl DmabufHandler for Nested {
    fn dmabuf_state(&mut self) -> &mut DmabufState {
        &mut self.dmabuf
    }

    fn dmabuf_imported(&mut self, _: &DmabufGlobal, dmabuf: Dmabuf, notifier: ImportNotifier) {
        // The headless backend maps any linear dma-buf of the advertised formats whose planes
        // lie inside their dma-bufs, the window imports it into GLES: what they cannot show
        // fails here.
        match self.screen.backend.import_dmabuf(&dmabuf) {
            Ok(()) => {
                let _ = notifier.successful::<Nested>();
            }
            Err(reason) => {
                tracing::warn!("nested: refused a dma-buf: {reason}");
                notifier.failed();
            }
        }
    }
}

impl SeatHandler for Nested {
    type KeyboardFocus = WlSurface;
    type PointerFocus = WlSurface;
    type TouchFocus = WlSurface;

    fn seat_state(&mut self) -> &mut SeatState<Nested> {
        &mut self.seat_state
    }
}

impl OutputHandler for Nested {}

delegate_output!(Nested);
delegate_seat!(Nested);
delegate_compositor!(Nested);
delegate_xdg_shell!(Nested);
delegate_shm!(Nested);
delegate_dmabuf!(Nested);
delegate_viewporter!(Nested);
delegate_presentation!(Nested);
delegate_single_pixel_buffer!(Nested);

/// Inserts a client connection.
pub fn insert_client(dh: &mut DisplayHandle, stream: std::os::unix::net::UnixStream) {
    if let Err(e) = dh.insert_client(stream, Arc::new(ClientState::default())) {
        tracing::warn!("could not insert a client: {e}");
    }
}
