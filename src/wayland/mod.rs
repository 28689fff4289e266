//! The smithay integration (feature `smithay`): the bridge wired into a smithay 0.7 compositor
//! through commit hooks and blockers, and linux-drm-syncobj-v1 implemented with every protocol
//! error.
//!
//! What a compositor gets, per `wl_surface.commit`:
//! - **Implicit clients** (a dma-buf, no syncobj points): the planes' write fences are
//!   snapshotted at commit time (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`), and the commit is held by a
//!   blocker until that snapshot signals. A fence added after the commit (the client's next
//!   frame) does not delay it; nothing pending means no blocker and no event source at all.
//! - **Explicit clients** (linux-drm-syncobj-v1): the commit is held until its acquire point
//!   signals (a submitted point's exported sync_file is polled; a point with no fence yet is
//!   waited for by `SYNCOBJ_EVENTFD`, or the device's one waiter thread where the kernel lacks
//!   it), and a running acquire fence is put on the dma-buf as a write fence, so implicit
//!   readers (capture, a second GPU, KMS without `IN_FENCE_FD`, V4L2 encoders) wait for it too.
//! - **Bounded**: at most [`Config::max_pending_waits_per_client`] commits of a client wait at
//!   once (past it the client is disconnected with a message naming the limit); commits of a
//!   synchronised subsurface that a later one supersedes leave the books at once.
//! - **An explicit fence for every applied commit that waited** ([`acquire_fence`],
//!   [`acquire_timeline_point`]) for a KMS plane, a capture path or a Vulkan renderer.
//! - **The renderer's read fences on the client's dma-bufs** ([`FenceBridgeState::surface_read`]):
//!   imported onto every distinct dma-buf of the buffer read, as a read fence, so a fencing
//!   producer's next GPU write waits for the read whatever the renderer (a Vulkan or
//!   explicit-sync renderer puts none there); [`Config::renderer_publishes_reads`] leaves it to
//!   a renderer that does.
//! - **Release from the renderer's read fences**: a release point is signalled by the fences of
//!   every pass that read the buffer (merged and imported into the point, no CPU wait), and
//!   always once the buffer is replaced, the surface destroyed or the client gone — never
//!   before a lower point on the same timeline that is still owed (a timeline's points signal
//!   in order, and one timeline may serve several buffers and surfaces). Buffers of producers
//!   that do not honour fences (V4L2 decoders, CPU fills, still unclassified surfaces) get
//!   their `wl_buffer.release` only once all the compositor's reads are done.
//!
//! - **Non-fencing producers** classified and reported per surface
//!   ([`FenceBridgeHandler::non_fencing_producer`], [`ClientReport::non_fencing_surfaces`]): a
//!   video player's GPU interface and its decoder's frames on a subsurface each get the release
//!   their producer needs. A surface keeps its verdict for its life (see
//!   [`crate::bridge::producer_class`] for why). **Waits past a deadline** are diagnosed by
//!   client, surface and fence
//!   ([`FenceBridgeHandler::wait_overdue`]), then kept or given up as [`Config::overdue`] says.
//!   One stuck fence never delays another surface or client, and nothing waits on the loop
//!   thread.
//!
//! Nothing here locks smithay's surface state on the caller's behalf except [`track_surface`]
//! (called from `new_surface`): [`FenceBridgeState::surface_read`] only queues the read, and
//! [`acquire_fence`] and [`acquire_timeline_point`] take the `SurfaceData` the caller holds.
//! So all of them may be called inside `with_states` and `with_surface_tree_*`, where render
//! walks call them (smithay's surface lock is not re-entrant: a function that locked the
//! surface itself would deadlock there).
//!
//! The decisions come from [`crate::bridge`]; this module gathers the inputs from smithay and
//! executes them.
//!
//! # How to use
//! The glue a smithay compositor needs (its loop data is its state, as in anvil and niri):
//! ```no_run
//! use fencebridge::wayland::{self, Config, FenceBridgeHandler, FenceBridgeState};
//! use smithay::reexports::calloop::LoopHandle;
//! use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
//! use smithay::reexports::wayland_server::{Client, DisplayHandle};
//! use smithay::wayland::compositor::{CompositorClientState, CompositorHandler, CompositorState};
//! # struct ClientState { compositor: CompositorClientState }
//! # impl smithay::reexports::wayland_server::backend::ClientData for ClientState {}
//! struct State {
//!     loop_handle: LoopHandle<'static, State>,
//!     bridge: FenceBridgeState,
//!     compositor: CompositorState,
//!     // ... the compositor's own state
//! }
//!
//! impl FenceBridgeHandler for State {
//!     fn fencebridge_state(&mut self) -> &mut FenceBridgeState {
//!         &mut self.bridge
//!     }
//!     fn loop_handle(&self) -> LoopHandle<'static, Self> {
//!         self.loop_handle.clone()
//!     }
//! }
//! fencebridge::delegate_fencebridge!(State);
//!
//! impl CompositorHandler for State {
//!     fn new_surface(&mut self, surface: &WlSurface) {
//!         wayland::track_surface::<Self>(surface); // every surface goes through the bridge
//!     }
//!     // The rest as usual; smithay's on_commit_buffer_handler works unchanged.
//! #   fn compositor_state(&mut self) -> &mut CompositorState { &mut self.compositor }
//! #   fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
//! #       &client.get_data::<ClientState>().unwrap().compositor
//! #   }
//! #   fn commit(&mut self, _: &WlSurface) {}
//! }
//!
//! fn bridge(dh: &DisplayHandle) -> FenceBridgeState {
//!     FenceBridgeState::new::<State>(dh, Config::default())
//! }
//!
//! // After each frame that sampled `surface`: the renderer's read fence as a sync_file
//! // (smithay's `SyncPoint::export()`), or `None` when its reads are done (a CPU copy). Only
//! // the bridge's own state is needed, so it fits inside a render function that holds
//! // borrows of the compositor's other fields, and inside a render walk.
//! fn frame_done(bridge: &mut FenceBridgeState, surface: &WlSurface, read: Option<fencebridge::fence::SyncFile>) {
//!     bridge.surface_read(surface, read);
//! }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::backend::{ClientId, GlobalId};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, GlobalDispatch};
use smithay::wayland::compositor::CompositorHandler;
use wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;

use crate::bridge::plan::BridgeCaps;
use crate::bridge::producer_class::BecameNonFencing;
use crate::bridge::protocol::Leniency;
use crate::caps::Capabilities;
use crate::fence::StubSignature;
use crate::source::WaitMethod;
use crate::timeline::{SyncobjDevice, Timeline};

mod commit;
mod handoff;
mod release;
mod report;
mod surface;
mod syncobj;
mod wait;

pub use handoff::{acquire_fence, acquire_timeline_point, publish_compositor_write, HandoffPoint};
pub use release::surface_read;
pub use report::{ClientReport, CommitPath, NonFencingSurface, OverdueWait, WaitStats};
pub use surface::{surface_holdings, track_surface, SurfaceHoldings};
pub use syncobj::{SyncobjGlobalData, SyncobjSurfaceData, TimelineData};

/// The crates [`delegate_fencebridge!`](crate::delegate_fencebridge) names, as smithay sees
/// them (so the types are the very ones smithay uses).
pub mod reexports {
    pub use smithay::reexports::wayland_protocols;
    pub use smithay::reexports::wayland_server;
}

/// What to do with a commit whose fence is still pending at the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverduePolicy {
    /// Keep holding the commit (the surface shows its previous frame); the diagnostic is
    /// reported once. What every other compositor does, minus the silence.
    #[default]
    KeepWaiting,
    /// Apply the commit anyway: the frame may show unfinished rendering, but the surface moves
    /// on (the choice for kiosks and video walls, where a frozen surface is worse).
    ShowAnyway,
}

/// [`Config::max_pending_waits_per_client`] by default.
pub const DEFAULT_MAX_PENDING_WAITS_PER_CLIENT: usize = 256;

/// How the bridge behaves. `Config::default()` is what a desktop compositor wants.
#[derive(Debug, Clone)]
pub struct Config {
    /// How strictly linux-drm-syncobj-v1 clients are held to the protocol.
    pub leniency: Leniency,
    /// How long a commit may wait for its fence before the wait is reported overdue.
    pub wait_deadline: Duration,
    /// What happens to an overdue commit.
    pub overdue: OverduePolicy,
    /// Consecutive commits of a surface carrying no fence after which its producer counts as
    /// non-fencing.
    pub non_fencing_after: u32,
    /// Timelines one client may hold at once; more are refused with `invalid_timeline`, so a
    /// client cannot exhaust the compositor's file descriptors.
    pub max_timelines_per_client: usize,
    /// Commits one client may have waiting for their fences at once (over all its surfaces).
    /// The commit past it is never shown and the client is disconnected with a
    /// `wl_display.error` `no_memory` naming this limit: a client whose fences never signal
    /// cannot grow the compositor's fds, memory and wait sources without bound. A real client
    /// has two or three frames in flight per surface; the default, 256, leaves room for about
    /// a hundred busy surfaces.
    pub max_pending_waits_per_client: usize,
    /// Offer linux-drm-syncobj-v1 (where the kernel's timelines can be waited on).
    pub explicit_sync: bool,
    /// How acquire points are waited for (`Auto`: `SYNCOBJ_EVENTFD` where the kernel has it).
    pub point_wait: WaitMethod,
    /// The DRM node client timelines are imported into: the render node the compositor
    /// already renders with (`SyncobjDevice::open`, or `SyncobjDevice::from_node` on its own
    /// fd). `None`: the first node in `/dev/dri` with syncobj timelines. A compositor that
    /// hands one in keeps the bridge from opening every DRM node, which would wake GPUs it
    /// does not use.
    pub syncobj_device: Option<SyncobjDevice>,
    /// Whether the renderer already puts its read fence on the client dma-bufs it samples, as
    /// GL drivers with implicit sync do. `false` (the default): the bridge does it, for every
    /// read reported with a fence ([`FenceBridgeState::surface_read`]), as wlroots' Vulkan
    /// renderer does: a Vulkan or explicit-sync renderer, or one that reads on another device,
    /// leaves no fence there, and a fencing producer given its buffer back when it is replaced
    /// would write it while the compositor still reads it. Set it only when every renderer
    /// that reports reads publishes them: a second import costs one ioctl per dma-buf and read,
    /// a missing one shows as torn frames.
    pub renderer_publishes_reads: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            leniency: Leniency::Strict,
            wait_deadline: Duration::from_secs(1),
            overdue: OverduePolicy::KeepWaiting,
            non_fencing_after: crate::bridge::producer_class::DEFAULT_NON_FENCING_AFTER,
            max_timelines_per_client: 128,
            max_pending_waits_per_client: DEFAULT_MAX_PENDING_WAITS_PER_CLIENT,
            explicit_sync: true,
            point_wait: WaitMethod::Auto,
            syncobj_device: None,
            renderer_publishes_reads: false,
        }
    }
}

/// What a compositor implements to embed the bridge. Its loop data must be the compositor
/// state itself (the bridge inserts its wait sources into that loop).
pub trait FenceBridgeHandler: CompositorHandler + Sized + 'static {
    /// The bridge's state.
    fn fencebridge_state(&mut self) -> &mut FenceBridgeState;

    /// The compositor's event loop, where fence waits are inserted.
    fn loop_handle(&self) -> LoopHandle<'static, Self>;

    /// The producer of one of `client`'s surfaces turned out non-fencing (reported once per
    /// surface, also logged and named in the client's [`ClientReport`]). That surface's buffers
    /// are from now on released only after the compositor's reads are done; the client's other
    /// surfaces keep their own verdicts.
    fn non_fencing_producer(
        &mut self,
        client: &Client,
        surface: &WlSurface,
        found: &BecameNonFencing,
    ) {
        let _ = (client, surface, found);
    }

    /// A commit has waited past [`Config::wait_deadline`] for its fence (reported once per
    /// wait, also logged).
    fn wait_overdue(&mut self, wait: &OverdueWait) {
        let _ = wait;
    }
}

/// The bridge's per-compositor state: what the machine can do, the linux-drm-syncobj-v1
/// global, and per-client books (report, timelines).
#[derive(Debug)]
pub struct FenceBridgeState {
    pub(crate) dh: DisplayHandle,
    pub(crate) config: Config,
    caps: Capabilities,
    pub(crate) bridge_caps: BridgeCaps,
    pub(crate) stub: StubSignature,
    pub(crate) syncobj: Option<SyncobjDevice>,
    global: Option<GlobalId>,
    pub(crate) own_timeline: Option<(Timeline, u64)>,
    pub(crate) clients: HashMap<ClientId, ClientBooks>,
    next_id: u64,
    /// Where release points whose fences could not go into their timeline are handed to the
    /// loop.
    pub(crate) late_signals: Option<release::LateSignals>,
    /// Reads reported and not booked yet (see [`FenceBridgeState::surface_read`]).
    pub(crate) reads: Vec<release::QueuedRead>,
    /// Wakes the loop to book them.
    pub(crate) read_wake: Option<release::LoopWake>,
    /// Whether a fence's wake is applying commits: their booking waits until the compositor
    /// has them ([`commit::post_commit`]).
    pub(crate) waking: bool,
    /// Surfaces whose applied commits are still to be booked ([`commit::book_deferred`]).
    pub(crate) unbooked: Vec<WlSurface>,
}

/// How many disconnected clients' reports the bridge keeps, at least.
pub const KEPT_GONE_CLIENTS: usize = 64;

/// What the bridge keeps per client.
#[derive(Debug)]
pub(crate) struct ClientBooks {
    pub report: ClientReport,
    pub timelines: usize,
    /// Commits of this client waiting for their fence now (each wait holds one count).
    pub pending_waits: wait::PendingWaits,
}

impl FenceBridgeState {
    /// Probes the machine and creates the state; advertises linux-drm-syncobj-v1 where a
    /// syncobj timeline device can be waited on (eventfd or the waiter thread) and
    /// [`Config::explicit_sync`] asks for it. With [`Config::syncobj_device`], that device is
    /// the one, and no other DRM node is opened.
    pub fn new<D>(dh: &DisplayHandle, config: Config) -> Self
    where
        D: GlobalDispatch<WpLinuxDrmSyncobjManagerV1, SyncobjGlobalData> + 'static,
    {
        // One probe: it calibrates the stub fence and picks (and keeps open) the device.
        let (caps, device) = match &config.syncobj_device {
            Some(device) => (Capabilities::probe_device(device), Some(device.clone())),
            None => Capabilities::probe_and_open(),
        };
        let syncobj = device.filter(|_| config.explicit_sync);
        let global = syncobj
            .as_ref()
            .map(|_| dh.create_global::<D, WpLinuxDrmSyncobjManagerV1, _>(1, SyncobjGlobalData));
        let mut bridge_caps = BridgeCaps::from(&caps);
        bridge_caps.timelines = syncobj.is_some();
        tracing::info!(
            "fencebridge: {}; linux-drm-syncobj-v1 {}",
            caps.paths().join("; "),
            if global.is_some() {
                "offered"
            } else {
                "not offered"
            }
        );
        FenceBridgeState {
            dh: dh.clone(),
            config,
            bridge_caps,
            stub: caps.stub,
            syncobj,
            global,
            own_timeline: None,
            clients: HashMap::new(),
            next_id: 0,
            late_signals: release::LateSignals::new(),
            reads: Vec::new(),
            read_wake: release::LoopWake::new("reported reads (they wait for a commit)"),
            waking: false,
            unbooked: Vec::new(),
            caps,
        }
    }

    /// What the probe found on this machine.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The linux-drm-syncobj-v1 global, if offered.
    pub fn syncobj_global(&self) -> Option<&GlobalId> {
        self.global.as_ref()
    }

    /// The syncobj device client timelines are imported into, if any.
    pub fn syncobj_device(&self) -> Option<&SyncobjDevice> {
        self.syncobj.as_ref()
    }

    /// Keeps the books of at most [`KEPT_GONE_CLIENTS`] disconnected clients: a compositor
    /// that runs for weeks sees many thousands of clients come and go.
    fn forget_gone_clients(&mut self) {
        let handle = self.dh.backend_handle();
        let gone: Vec<ClientId> = self
            .clients
            .keys()
            .filter(|id| handle.get_client_data((*id).clone()).is_err())
            .cloned()
            .collect();
        for id in gone.into_iter().skip(KEPT_GONE_CLIENTS) {
            self.clients.remove(&id);
        }
    }

    /// What the bridge did for one client (kept after it disconnects, for reports; once more
    /// than `2 × KEPT_GONE_CLIENTS` clients are booked, only [`KEPT_GONE_CLIENTS`] of those
    /// that are gone are kept).
    pub fn client_report(&self, client: &ClientId) -> Option<&ClientReport> {
        self.clients.get(client).map(|c| &c.report)
    }

    /// Every client's report.
    pub fn client_reports(&self) -> impl Iterator<Item = (&ClientId, &ClientReport)> {
        self.clients.iter().map(|(id, c)| (id, &c.report))
    }

    /// A fresh id for a protocol object the bridge numbers (timelines).
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn client_books(&mut self, client: &Client) -> &mut ClientBooks {
        if self.clients.len() >= 2 * KEPT_GONE_CLIENTS && !self.clients.contains_key(&client.id()) {
            self.forget_gone_clients();
        }
        let dh = &self.dh;
        self.clients
            .entry(client.id())
            .or_insert_with(|| ClientBooks {
                report: ClientReport::new(client.get_credentials(dh).ok().map(|c| c.pid)),
                timelines: 0,
                pending_waits: wait::PendingWaits::default(),
            })
    }
}

/// Implements the linux-drm-syncobj-v1 dispatching for a compositor state type that
/// implements [`FenceBridgeHandler`](crate::wayland::FenceBridgeHandler).
///
/// Takes a plain type, or a generic one in the form smithay's and wayland-server's delegate
/// macros take (`@<Generics> Type<Generics>`). It expands to wayland-server's own delegate
/// macros, so it works with smithay 0.7 and with smithay's development branch, where
/// `delegate_dispatch2!` replaced smithay's per-protocol macros.
///
/// # How to use
/// ```no_run
/// # use fencebridge::wayland::{FenceBridgeHandler, FenceBridgeState};
/// # use smithay::reexports::calloop::LoopHandle;
/// # use smithay::reexports::wayland_server::{protocol::wl_surface::WlSurface, Client};
/// # use smithay::wayland::compositor::{CompositorClientState, CompositorHandler, CompositorState};
/// # struct ClientState { compositor: CompositorClientState }
/// # impl smithay::reexports::wayland_server::backend::ClientData for ClientState {}
/// /// A compositor state generic over its backend, as anvil's `AnvilState<BackendData>`.
/// struct State<B> {
///     backend: B,
///     bridge: FenceBridgeState,
///     loop_handle: LoopHandle<'static, State<B>>,
/// #   compositor: CompositorState,
/// }
/// trait Backend {}
///
/// impl<B: Backend + 'static> FenceBridgeHandler for State<B> {
///     fn fencebridge_state(&mut self) -> &mut FenceBridgeState {
///         &mut self.bridge
///     }
///     fn loop_handle(&self) -> LoopHandle<'static, Self> {
///         self.loop_handle.clone()
///     }
/// }
/// fencebridge::delegate_fencebridge!(@<B: Backend + 'static> State<B>);
/// # impl<B: Backend + 'static> CompositorHandler for State<B> {
/// #   fn compositor_state(&mut self) -> &mut CompositorState { &mut self.compositor }
/// #   fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
/// #       &client.get_data::<ClientState>().unwrap().compositor
/// #   }
/// #   fn commit(&mut self, _: &WlSurface) {}
/// # }
///
/// // The bridge's global dispatches to every `State<B>`:
/// fn bridge<B: Backend + 'static>(
///     dh: &smithay::reexports::wayland_server::DisplayHandle,
/// ) -> FenceBridgeState {
///     FenceBridgeState::new::<State<B>>(dh, Default::default())
/// }
/// ```
#[macro_export]
macro_rules! delegate_fencebridge {
    ($(@< $( $lt:tt $( : $clt:tt $(+ $dlt:tt )* )? ),+ >)? $ty: ty) => {
        $crate::wayland::reexports::wayland_server::delegate_global_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::wayland::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1:
                $crate::wayland::SyncobjGlobalData
        ] => $crate::wayland::FenceBridgeState);
        $crate::wayland::reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::wayland::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1: ()
        ] => $crate::wayland::FenceBridgeState);
        $crate::wayland::reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::wayland::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1:
                $crate::wayland::SyncobjSurfaceData
        ] => $crate::wayland::FenceBridgeState);
        $crate::wayland::reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::wayland::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1:
                $crate::wayland::TimelineData
        ] => $crate::wayland::FenceBridgeState);
    };
}
