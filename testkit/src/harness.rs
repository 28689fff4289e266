//! A smithay 0.7 compositor built from `fencebridge::wayland`, and real wayland-client clients
//! talking to it over socketpairs — all in the test thread, pumped by hand, so that a test can
//! act between a commit and its dispatch (signal a fence, add one) deterministically.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fencebridge::bridge::producer_class::BecameNonFencing;
use fencebridge::fence::SyncFile;
use fencebridge::producer::{Vgem, VgemBuffer};
use fencebridge::wayland::{self, Config, FenceBridgeHandler, FenceBridgeState, OverdueWait};
use smithay::backend::allocator::{Format, Fourcc, Modifier};
use smithay::backend::renderer::utils::on_commit_buffer_handler;
use smithay::reexports::calloop::{EventLoop, Interest, LoopHandle};
use smithay::reexports::wayland_server::backend::{
    ClientData, ClientId, DisconnectReason, ObjectId,
};
use smithay::reexports::wayland_server::protocol::{wl_buffer, wl_surface::WlSurface};
use smithay::reexports::wayland_server::{Client, Display, DisplayHandle, Resource};
use smithay::wayland::buffer::BufferHandler;
use smithay::wayland::compositor::{
    self, BufferAssignment, CompositorClientState, CompositorHandler, CompositorState,
    SurfaceAttributes,
};
use smithay::wayland::dmabuf::{
    get_dmabuf, DmabufGlobal, DmabufHandler, DmabufState, ImportNotifier,
};
use smithay::wayland::shm::{ShmHandler, ShmState};

use wayland_client::protocol::{
    wl_buffer::WlBuffer as CBuffer, wl_callback, wl_compositor::WlCompositor, wl_registry, wl_shm,
    wl_shm_pool, wl_subcompositor::WlSubcompositor, wl_subsurface::WlSubsurface,
    wl_surface::WlSurface as CSurface,
};
use wayland_client::{delegate_noop, Connection, Dispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1::{self, ZwpLinuxBufferParamsV1},
    zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1,
};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

// ---------------------------------------------------------------- the compositor

/// The compositor's state: smithay's compositor, shm and linux-dmabuf, and the bridge.
pub struct Server {
    compositor: CompositorState,
    shm: ShmState,
    dmabuf: DmabufState,
    _dmabuf_global: DmabufGlobal,
    pub bridge: FenceBridgeState,
    loop_handle: LoopHandle<'static, Server>,
    /// Commits applied, per surface.
    pub applied: HashMap<(ClientId, u32), u32>,
    /// The server side of each surface.
    pub surfaces: HashMap<(ClientId, u32), WlSurface>,
    /// Non-fencing producers reported: the client, its surface, the evidence. The surface by
    /// its id: a handle would keep the surface's data (its buffers' dma-bufs, fences) alive
    /// after the client destroyed it, as it would in a compositor.
    pub non_fencing: Vec<(ClientId, ObjectId, BecameNonFencing)>,
    pub overdue: Vec<OverdueWait>,
    /// Every applied commit, in order (drained by the tests that read it).
    pub log: Vec<Applied>,
    /// Read fences the commit handler reports (`surface_read`), one per applied commit while
    /// there are any: a compositor that renders from its commit handler.
    pub reads_in_commit: Vec<SyncFile>,
    /// Who holds commits of dma-bufs until they are ready.
    blocking: Blocking,
    dh: DisplayHandle,
}

/// One applied commit: its surface, the buffer it attached (`None`: none or a null attach) and
/// when `CompositorHandler::commit` ran.
#[derive(Debug, Clone)]
pub struct Applied {
    pub key: (ClientId, u32),
    pub buffer: Option<u32>,
    pub at: Instant,
}

/// Who holds a commit until its buffer is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// fencebridge (every surface tracked).
    Bridge,
    /// smithay 0.7's own dma-buf blocker, wired as anvil does (a poll on the live dma-buf), for
    /// comparison in the benchmarks; the bridge does not see the surfaces.
    Smithay,
}

#[derive(Default)]
struct ClientState {
    compositor: CompositorClientState,
}

impl ClientData for ClientState {
    fn disconnected(&self, _: ClientId, _: DisconnectReason) {}
}

impl CompositorHandler for Server {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.compositor
    }

    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        &client
            .get_data::<ClientState>()
            .expect("every client is inserted with a ClientState")
            .compositor
    }

    fn new_surface(&mut self, surface: &WlSurface) {
        match self.blocking {
            Blocking::Bridge => wayland::track_surface::<Self>(surface),
            Blocking::Smithay => {
                compositor::add_pre_commit_hook::<Self, _>(surface, smithay_blocker);
            }
        }
    }

    fn destroyed(&mut self, surface: &WlSurface) {
        // A compositor lets go of its handles on a dead surface (they keep its state, and the
        // buffers in it, alive).
        self.surfaces.retain(|_, s| s != surface);
    }

    fn commit(&mut self, surface: &WlSurface) {
        let at = Instant::now();
        let buffer = compositor::with_states(surface, |states| {
            match &states
                .cached_state
                .get::<SurfaceAttributes>()
                .current()
                .buffer
            {
                Some(BufferAssignment::NewBuffer(b)) => Some(b.id().protocol_id()),
                _ => None,
            }
        });
        on_commit_buffer_handler::<Self>(surface);
        if let Some(client) = surface.client() {
            let key = (client.id(), surface.id().protocol_id());
            *self.applied.entry(key.clone()).or_default() += 1;
            self.surfaces.insert(key.clone(), surface.clone());
            self.log.push(Applied { key, buffer, at });
        }
        if let Some(read) = self.reads_in_commit.pop() {
            wayland::surface_read(self, surface, Some(read));
        }
    }
}

/// smithay 0.7's implicit-sync wait, as anvil (v0.7.0, src/shell/mod.rs) wires it: a blocker
/// released when every plane of the live dma-buf polls readable.
fn smithay_blocker(state: &mut Server, _: &DisplayHandle, surface: &WlSurface) {
    let dmabuf = compositor::with_states(surface, |states| {
        match states
            .cached_state
            .get::<SurfaceAttributes>()
            .pending()
            .buffer
            .as_ref()
        {
            Some(BufferAssignment::NewBuffer(buffer)) => get_dmabuf(buffer).cloned().ok(),
            _ => None,
        }
    });
    let (Some(dmabuf), Some(client)) = (dmabuf, surface.client()) else {
        return;
    };
    if let Ok((blocker, source)) = dmabuf.generate_blocker(Interest::READ) {
        let inserted = state.loop_handle.insert_source(source, move |_, _, st| {
            let dh = st.dh.clone();
            st.client_compositor_state(&client).blocker_cleared(st, &dh);
            Ok(())
        });
        if inserted.is_ok() {
            compositor::add_blocker(surface, blocker);
        }
    }
}

impl FenceBridgeHandler for Server {
    fn fencebridge_state(&mut self) -> &mut FenceBridgeState {
        &mut self.bridge
    }

    fn loop_handle(&self) -> LoopHandle<'static, Self> {
        self.loop_handle.clone()
    }

    fn non_fencing_producer(
        &mut self,
        client: &Client,
        surface: &WlSurface,
        found: &BecameNonFencing,
    ) {
        self.non_fencing.push((client.id(), surface.id(), *found));
    }

    fn wait_overdue(&mut self, wait: &OverdueWait) {
        self.overdue.push(wait.clone());
    }
}

fencebridge::delegate_fencebridge!(Server);

impl BufferHandler for Server {
    fn buffer_destroyed(&mut self, _: &wl_buffer::WlBuffer) {}
}

impl ShmHandler for Server {
    fn shm_state(&self) -> &ShmState {
        &self.shm
    }
}

impl DmabufHandler for Server {
    fn dmabuf_state(&mut self) -> &mut DmabufState {
        &mut self.dmabuf
    }

    fn dmabuf_imported(
        &mut self,
        _: &DmabufGlobal,
        _: smithay::backend::allocator::dmabuf::Dmabuf,
        notifier: ImportNotifier,
    ) {
        let _ = notifier.successful::<Server>();
    }
}

// smithay 0.7 has a delegate macro per protocol; its development branch one for them all
// (`--cfg smithay_git`: `cargo xtask test` builds these tests against that branch too).
#[cfg(not(smithay_git))]
smithay::delegate_compositor!(Server);
#[cfg(not(smithay_git))]
smithay::delegate_shm!(Server);
#[cfg(not(smithay_git))]
smithay::delegate_dmabuf!(Server);
#[cfg(smithay_git)]
smithay::delegate_dispatch2!(Server);

// ---------------------------------------------------------------- the clients

/// What one client has received.
#[derive(Default)]
pub struct ClientSide {
    /// The globals advertised: (name, interface, version).
    globals: Vec<(u32, String, u32)>,
    /// Buffers released, in order.
    pub released: Vec<wayland_client::backend::ObjectId>,
    syncs_done: u32,
}

impl Dispatch<wl_registry::WlRegistry, ()> for ClientSide {
    fn event(
        state: &mut Self,
        _: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            state.globals.push((name, interface, version));
        }
    }
}

impl Dispatch<CBuffer, ()> for ClientSide {
    fn event(
        state: &mut Self,
        buffer: &CBuffer,
        event: wayland_client::protocol::wl_buffer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wayland_client::protocol::wl_buffer::Event::Release = event {
            state.released.push(wayland_client::Proxy::id(buffer));
        }
    }
}

impl Dispatch<wl_callback::WlCallback, ()> for ClientSide {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        _: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        state.syncs_done += 1;
    }
}

delegate_noop!(ClientSide: ignore WlCompositor);
delegate_noop!(ClientSide: ignore CSurface);
delegate_noop!(ClientSide: ignore WlSubcompositor);
delegate_noop!(ClientSide: ignore WlSubsurface);
delegate_noop!(ClientSide: ignore ZwpLinuxDmabufV1);
delegate_noop!(ClientSide: ignore ZwpLinuxBufferParamsV1);
delegate_noop!(ClientSide: ignore wl_shm::WlShm);
delegate_noop!(ClientSide: ignore wl_shm_pool::WlShmPool);
delegate_noop!(ClientSide: ignore WpLinuxDrmSyncobjManagerV1);
delegate_noop!(ClientSide: ignore WpLinuxDrmSyncobjSurfaceV1);
delegate_noop!(ClientSide: ignore WpLinuxDrmSyncobjTimelineV1);

/// A connected client.
pub struct TestClient {
    pub conn: Connection,
    queue: EventQueue<ClientSide>,
    pub qh: QueueHandle<ClientSide>,
    pub side: ClientSide,
    /// Its id in the compositor.
    pub id: ClientId,
    registry: wl_registry::WlRegistry,
    pub compositor: Option<WlCompositor>,
    pub subcompositor: Option<WlSubcompositor>,
    pub dmabuf: Option<ZwpLinuxDmabufV1>,
    pub shm: Option<wl_shm::WlShm>,
    /// The linux-drm-syncobj-v1 manager, if the compositor offers it.
    pub syncobj: Option<WpLinuxDrmSyncobjManagerV1>,
    /// The protocol error, kept once read: wayland-client replaces it with the I/O error of
    /// the next write to the dead connection.
    error: Option<(String, u32)>,
}

/// The fourcc of XRGB8888.
pub const XRGB: u32 = u32::from_le_bytes(*b"XR24");

impl TestClient {
    /// A new surface; `(surface, its protocol id)`.
    pub fn surface(&self) -> CSurface {
        self.compositor
            .as_ref()
            .unwrap()
            .create_surface(&self.qh, ())
    }

    /// A desynchronised subsurface of `parent` on `surface` (its commits apply on their own,
    /// as a video player's video surface does).
    pub fn desync_subsurface(&self, surface: &CSurface, parent: &CSurface) -> WlSubsurface {
        let subsurface = self
            .subcompositor
            .as_ref()
            .expect("smithay's CompositorState offers wl_subcompositor")
            .get_subsurface(surface, parent, &self.qh, ());
        subsurface.set_desync();
        subsurface
    }

    /// A linux-dmabuf buffer of one plane (`create_immed`).
    pub fn dmabuf_buffer(
        &self,
        fd: BorrowedFd<'_>,
        width: u32,
        height: u32,
        stride: u32,
    ) -> CBuffer {
        let params = self.dmabuf.as_ref().unwrap().create_params(&self.qh, ());
        params.add(fd, 0, 0, stride, 0, 0);
        let buffer = params.create_immed(
            width as i32,
            height as i32,
            XRGB,
            zwp_linux_buffer_params_v1::Flags::empty(),
            &self.qh,
            (),
        );
        params.destroy();
        buffer
    }

    /// A 16×16 vgem buffer (fences attached by hand) and its linux-dmabuf wl_buffer.
    pub fn vgem_buffer(&self, vgem: &Vgem) -> (VgemBuffer, CBuffer) {
        let buf = vgem.create_buffer(16, 16).unwrap();
        let wl = self.dmabuf_buffer(buf.dmabuf(), 16, 16, buf.pitch());
        (buf, wl)
    }

    /// A wl_shm buffer of 4×4 XRGB.
    pub fn shm_buffer(&self) -> CBuffer {
        let memfd = rustix::fs::memfd_create("shm", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&memfd, 64).unwrap();
        let pool = self
            .shm
            .as_ref()
            .unwrap()
            .create_pool(memfd.as_fd(), 64, &self.qh, ());
        let buffer = pool.create_buffer(0, 4, 4, 16, wl_shm::Format::Xrgb8888, &self.qh, ());
        pool.destroy();
        buffer
    }

    /// The linux-drm-syncobj-v1 manager (the compositor must offer it).
    pub fn syncobj(&self) -> &WpLinuxDrmSyncobjManagerV1 {
        self.syncobj
            .as_ref()
            .expect("the compositor offers linux-drm-syncobj-v1")
    }

    /// Attaches `buffer` (or nothing with `None`: a commit without attach) and commits.
    pub fn commit(&self, surface: &CSurface, buffer: Option<&CBuffer>) {
        if let Some(buffer) = buffer {
            surface.attach(Some(buffer), 0, 0);
            surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        }
        surface.commit();
    }

    /// The protocol error the compositor killed this client with: (interface, code).
    pub fn protocol_error(&self) -> Option<(String, u32)> {
        self.error.clone().or_else(|| {
            self.conn
                .protocol_error()
                .map(|e| (e.object_interface, e.code))
        })
    }

    /// Binds the global `interface` at `version`, if advertised.
    pub fn bind<I>(&self, version: u32) -> Option<I>
    where
        I: wayland_client::Proxy + 'static,
        ClientSide: Dispatch<I, ()>,
    {
        let (name, _, _) = self
            .side
            .globals
            .iter()
            .find(|(_, interface, _)| interface == I::interface().name)?;
        Some(self.registry.bind::<I, _, _>(*name, version, &self.qh, ()))
    }

    /// Sends what is queued and reads what the compositor sent.
    pub fn pump(&mut self) {
        let _ = self.queue.flush();
        if let Some(guard) = self.queue.prepare_read() {
            let _ = guard.read();
        }
        self.error = self.protocol_error();
        let _ = self.queue.dispatch_pending(&mut self.side);
    }
}

/// Sets a timeline point: `(hi, lo)` of a u64.
pub fn hi_lo(point: u64) -> (u32, u32) {
    ((point >> 32) as u32, point as u32)
}

// ---------------------------------------------------------------- the harness

/// The compositor, its loop and its clients, in one thread.
pub struct Harness {
    display: Display<Server>,
    pub event_loop: EventLoop<'static, Server>,
    pub server: Server,
}

impl Harness {
    /// A compositor with the bridge configured by `config`.
    pub fn new(config: Config) -> Harness {
        Harness::with_blocking(config, Blocking::Bridge)
    }

    /// A compositor whose dma-buf commits are held by `blocking`.
    pub fn with_blocking(config: Config, blocking: Blocking) -> Harness {
        let display = Display::<Server>::new().unwrap();
        let dh = display.handle();
        let event_loop = EventLoop::try_new().unwrap();
        let mut dmabuf = DmabufState::new();
        let formats = [Fourcc::Xrgb8888, Fourcc::Argb8888].map(|code| Format {
            code,
            modifier: Modifier::Linear,
        });
        let dmabuf_global = dmabuf.create_global::<Server>(&dh, formats);
        let server = Server {
            compositor: CompositorState::new::<Server>(&dh),
            shm: ShmState::new::<Server>(&dh, vec![]),
            dmabuf,
            _dmabuf_global: dmabuf_global,
            bridge: FenceBridgeState::new::<Server>(&dh, config),
            loop_handle: event_loop.handle(),
            applied: HashMap::new(),
            surfaces: HashMap::new(),
            non_fencing: Vec::new(),
            overdue: Vec::new(),
            log: Vec::new(),
            reads_in_commit: Vec::new(),
            blocking,
            dh: dh.clone(),
        };
        Harness {
            display,
            event_loop,
            server,
        }
    }

    /// A compositor with the default configuration.
    pub fn default_config() -> Harness {
        Harness::new(Config::default())
    }

    /// Connects a new client and binds the globals.
    pub fn connect(&mut self) -> TestClient {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let client = self
            .display
            .handle()
            .insert_client(server_end, Arc::new(ClientState::default()))
            .unwrap();
        let conn = Connection::from_socket(client_end).unwrap();
        let queue = conn.new_event_queue::<ClientSide>();
        let qh = queue.handle();
        let registry = conn.display().get_registry(&qh, ());
        let mut client = TestClient {
            conn,
            queue,
            qh,
            side: ClientSide::default(),
            id: client.id(),
            registry,
            compositor: None,
            subcompositor: None,
            dmabuf: None,
            shm: None,
            syncobj: None,
            error: None,
        };
        self.roundtrip(&mut client);
        client.compositor = client.bind(5);
        client.subcompositor = client.bind(1);
        client.dmabuf = client.bind(3);
        client.shm = client.bind(1);
        client.syncobj = client.bind(1);
        self.roundtrip(&mut client);
        client
    }

    /// One turn of the compositor: client requests, then the loop for up to `timeout`.
    pub fn turn(&mut self, timeout: Duration) {
        self.display.dispatch_clients(&mut self.server).unwrap();
        self.display.flush_clients().unwrap();
        self.event_loop
            .dispatch(Some(timeout), &mut self.server)
            .unwrap();
        self.display.dispatch_clients(&mut self.server).unwrap();
        self.display.flush_clients().unwrap();
    }

    /// Until the compositor has handled everything `client` sent and the client has read the
    /// answers (or the client is dead).
    pub fn roundtrip(&mut self, client: &mut TestClient) {
        let target = client.side.syncs_done + 1;
        client.conn.display().sync(&client.qh, ());
        let end = Instant::now() + Duration::from_secs(5);
        while client.side.syncs_done < target && client.protocol_error().is_none() {
            assert!(Instant::now() < end, "roundtrip timed out");
            client.pump();
            self.turn(Duration::ZERO);
            client.pump();
        }
    }

    /// Runs the compositor (and pumps `clients`) until `done` or `limit`; whether it got done.
    pub fn run_until(
        &mut self,
        clients: &mut [&mut TestClient],
        limit: Duration,
        done: impl Fn(&Server, &[&mut TestClient]) -> bool,
    ) -> bool {
        let end = Instant::now() + limit;
        loop {
            for c in clients.iter_mut() {
                c.pump();
            }
            if done(&self.server, clients) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.turn(left.min(Duration::from_millis(20)));
        }
    }

    /// Commits applied so far on `client`'s `surface`.
    pub fn applied(&self, client: &TestClient, surface: &CSurface) -> u32 {
        let key = (
            client.id.clone(),
            wayland_client::Proxy::id(surface).protocol_id(),
        );
        self.server.applied.get(&key).copied().unwrap_or(0)
    }

    /// The compositor's side of `client`'s `surface` (once a commit of it applied).
    pub fn server_surface(&self, client: &TestClient, surface: &CSurface) -> WlSurface {
        let key = (
            client.id.clone(),
            wayland_client::Proxy::id(surface).protocol_id(),
        );
        self.server.surfaces[&key].clone()
    }

    /// The bridge's report on `client`.
    pub fn report(&self, client: &TestClient) -> fencebridge::wayland::ClientReport {
        self.server
            .bridge
            .client_report(&client.id)
            .cloned()
            .expect("the bridge saw this client")
    }
}
