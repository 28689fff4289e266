//! Giving buffers back: the renderer reports its reads ([`FenceBridgeState::surface_read`]),
//! the bridge puts each read fence on the client's dma-bufs, the release books say what is due,
//! and this module does it — a release point signalled by the read fences themselves (merged
//! and imported into the point: no CPU wait), a `wl_buffer.release` held back until every read
//! fence has signalled (by keeping smithay's renderer hold on the buffer until then) — and
//! keeps each client timeline's release points in order ([`TimelineReleases`]).
//!
//! A read is queued where it is reported and booked from the loop: reporting it takes no lock
//! on smithay's surface state (so a render walk inside `with_states` or
//! `with_surface_tree_*` may report it) and needs nothing but the bridge's own state (so a
//! render loop that holds borrows of the compositor's other fields may report it). The queue
//! is booked before anything else could change what it is about: when the loop next turns (a
//! calloop ping), and first thing in every commit and destruction hook, so a read is always
//! booked against the buffer it read, before the commit that replaces that buffer.

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use smithay::backend::renderer::utils::{Buffer as RendererBuffer, RendererSurfaceStateUserData};
use smithay::reexports::calloop::ping::{make_ping, Ping, PingSource};
use smithay::reexports::calloop::{self, LoopHandle};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, Resource};
use smithay::wayland::compositor;
use smithay::wayland::dmabuf::get_dmabuf;

use super::surface::{Due, SurfaceBooks};
use super::{wait, FenceBridgeHandler, FenceBridgeState};
use crate::bridge::release::ReleaseEvent;
use crate::bridge::release_order::{OwedPoint, ReleaseOrder};
use crate::bridge::TimelinePoint;
use crate::bridge::{plan, Attach};
use crate::fence::{dmabuf, Access, SyncFile};
use crate::source::SyncFileSource;
use crate::timeline::Timeline;

/// A reported read, until the loop books it.
#[derive(Debug)]
pub(crate) struct QueuedRead {
    surface: WlSurface,
    fence: Option<SyncFile>,
}

impl FenceBridgeState {
    /// The renderer is done sampling `surface`'s current buffer once `read` signals (`None`:
    /// done already, as after a CPU copy). Call it after every frame, output or capture that
    /// read the surface, with the fence that pass ends with (smithay's `SyncPoint::export()`),
    /// whatever queue or GPU it ran on: the bridge keeps every read fence reported while the
    /// buffer is current (dropping those it sees signalled) and gives the buffer back only after
    /// all of them, in whatever order they finish.
    ///
    /// Where it goes in a render loop: right where the frame's fence is known, for each surface
    /// the frame drew — inside the render walk if that is where it is
    /// (`with_surface_tree_downward`, `with_states`: it takes no lock on the surface), with only
    /// the bridge's state borrowed (`self.fencebridge.surface_read(..)` while `self.backend` is
    /// borrowed for the frame). It must come before the loop dispatches the clients again, that
    /// is, anywhere in the frame's own event callback.
    ///
    /// What it drives, once the loop books it (at its next turn, or first thing in the next
    /// commit): the read fence is put on every distinct dma-buf of the buffer as a read fence
    /// (unless [`Config::renderer_publishes_reads`](super::Config::renderer_publishes_reads)),
    /// so a fencing producer's next GPU write waits for it; the surface's release point is
    /// signalled from the buffer's read fences once it is replaced; a non-fencing producer's
    /// `wl_buffer.release` waits for them. The deferral works with smithay's renderer utilities
    /// (`on_commit_buffer_handler`), whose hold on the buffer the bridge keeps until the fences
    /// signal. A wl_shm buffer, which the renderer copies as it draws, waits for no fence: it
    /// goes back with the commit that replaces it.
    pub fn surface_read(&mut self, surface: &WlSurface, read: Option<SyncFile>) {
        if self.reads.is_empty() {
            if let Some(wake) = &self.read_wake {
                wake.ping.ping();
            }
        }
        self.reads.push(QueuedRead {
            surface: surface.clone(),
            fence: read,
        });
    }
}

/// [`FenceBridgeState::surface_read`], for a caller that has the whole compositor state at hand.
pub fn surface_read<D: FenceBridgeHandler>(
    state: &mut D,
    surface: &WlSurface,
    read: Option<SyncFile>,
) {
    state.fencebridge_state().surface_read(surface, read);
}

/// Makes the loop book reported reads whenever [`FenceBridgeState::surface_read`] pings (from
/// the first hook on, where the loop is at hand; reads reported before wait for it).
pub(crate) fn wake_for_reads<D: FenceBridgeHandler>(state: &mut D) {
    let handle = state.loop_handle();
    let Some(wake) = state.fencebridge_state().read_wake.as_mut() else {
        return;
    };
    if let Err(e) = wake.listen(&handle, book_reads) {
        tracing::error!(
            "fencebridge: cannot wake the loop for reads ({e}): they wait for a commit"
        );
    }
}

/// Books the reads reported so far, in order, and does what they make due. Called outside
/// `with_states` only (from the loop and the hooks).
pub(crate) fn book_reads<D: FenceBridgeHandler>(state: &mut D) {
    // A read is of the buffer applied before it: a wake's commits are booked first.
    super::commit::book_deferred(state);
    let bridge = state.fencebridge_state();
    if bridge.reads.is_empty() {
        return;
    }
    let reads = std::mem::take(&mut bridge.reads);
    let renderer_publishes = bridge.config.renderer_publishes_reads;
    let caps = bridge.bridge_caps;
    for QueuedRead { surface, fence } in reads {
        if !surface.is_alive() {
            continue;
        }
        let booked = compositor::with_states(&surface, |states| {
            let hold = states
                .data_map
                .get::<RendererSurfaceStateUserData>()
                .and_then(|r| r.lock().ok()?.buffer().cloned());
            let mut books = SurfaceBooks::of(states)?;
            let published = match (&fence, books.current_buffer().map(get_dmabuf)) {
                (Some(fence), Some(Ok(buffer))) => {
                    let kind = Attach::dmabuf(buffer.num_planes());
                    plan::publish_read_fence(kind, caps, renderer_publishes) && {
                        let planes: Vec<BorrowedFd<'_>> = buffer.handles().collect();
                        dmabuf::import(&planes, fence, Access::Read)
                            .inspect_err(|e| {
                                tracing::warn!("fencebridge: could not publish a read fence: {e}")
                            })
                            .is_ok()
                    }
                }
                _ => false,
            };
            let (buffer, fence) = books.read(fence, hold)?;
            Some((published, books.book(ReleaseEvent::Read { buffer, fence })))
        });
        if let Some((published, due)) = booked {
            if let (true, Some(client)) = (published, surface.client()) {
                let report = &mut state.fencebridge_state().client_books(&client).report;
                report.read_fences_published += 1;
            }
            execute(state, &surface, due);
        }
    }
}

/// The destruction hook: whatever the surface still owes becomes due.
pub(crate) fn surface_destroyed<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface) {
    book_reads(state);
    let Some((due, waits)) = SurfaceBooks::with(surface, |books| {
        (books.destroyed(), std::mem::take(&mut books.waits))
    }) else {
        return;
    };
    wait::drop_waits(state, waits);
    execute(state, surface, due);
}

/// Does what is due (outside `with_states`: it may send events and insert sources).
pub(crate) fn execute<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface, due: Vec<Due>) {
    let client = surface.client();
    for due in due {
        match due {
            Due::SignalPoint { point, after } => {
                point.signal_after(after);
                if let Some(client) = &client {
                    let report = &mut state.fencebridge_state().client_books(client).report;
                    report.release_points_signalled += 1;
                }
            }
            Due::ReleaseBuffer { hold, after } => {
                release_after(state, client.as_ref(), hold, after)
            }
        }
    }
}

/// Lets go of the renderer's hold on a buffer once every fence in `after` has signalled;
/// smithay sends `wl_buffer.release` when the last hold goes.
fn release_after<D: FenceBridgeHandler>(
    state: &mut D,
    client: Option<&Client>,
    hold: RendererBuffer,
    mut after: Vec<Arc<SyncFile>>,
) {
    after.retain(|fence| !has_signalled(fence));
    if after.is_empty() {
        return drop(hold);
    }
    if let Some(client) = client {
        state
            .fencebridge_state()
            .client_books(client)
            .report
            .releases_deferred += 1;
    }
    after_all(state, after, move |_| drop(hold));
}

/// Runs `then` on the loop once every fence in `fences` has signalled: one source at a time,
/// no merge (nothing to fail), no fd created.
fn after_all<D: FenceBridgeHandler>(
    state: &mut D,
    mut fences: Vec<Arc<SyncFile>>,
    then: impl FnOnce(&mut D) + 'static,
) {
    fences.retain(|fence| !has_signalled(fence));
    let Some(next) = fences.pop() else {
        return then(state);
    };
    let rest = Rc::new(Cell::new(Some((fences, then))));
    let on_signal = rest.clone();
    let inserted =
        state
            .loop_handle()
            .insert_source(SyncFileSource::new(next), move |_, _, state| {
                if let Some((fences, then)) = on_signal.take() {
                    after_all(state, fences, then);
                }
            });
    if let Err(e) = inserted {
        // Never left owed: done now, early rather than never.
        tracing::error!("fencebridge: cannot wait for a read fence: {}", e.error);
        if let Some((_, then)) = rest.take() {
            then(state);
        }
    }
}

/// Whether `fence` is known to have signalled (a poll; an error counts as not yet).
pub(crate) fn has_signalled(fence: &SyncFile) -> bool {
    matches!(fence.is_signalled(), Ok(true))
}

/// A release point a client set, owed on its timeline from the moment it is set until it is
/// signalled ([`TimelineReleases`]). Dropping it signals it as if nothing had read for it: a
/// release point is never left unsignalled, and never left holding back its timeline.
#[derive(Debug)]
pub(crate) struct ReleasePoint {
    pub point: TimelinePoint,
    releases: TimelineReleases,
    /// Its place in the timeline's order; `None` for point 0, which names no point and is never
    /// signalled (`SyncMode::without_point_zero`): the client's wait for it returns at once.
    owed: Option<OwedPoint>,
}

impl ReleasePoint {
    /// `point` on the timeline `releases` keeps, owed from now on.
    pub fn new(releases: &TimelineReleases, point: TimelinePoint) -> Self {
        let owed = point
            .names_a_point()
            .then(|| releases.order().owe(point.value));
        ReleasePoint {
            point,
            releases: releases.clone(),
            owed,
        }
    }

    /// Signals the point once every fence in `after` has signalled (the fences go into the
    /// point: no CPU wait) — and not before the owed points below it on its timeline have
    /// their fences.
    pub fn signal_after(mut self, after: Vec<Arc<SyncFile>>) {
        if let Some(owed) = self.owed.take() {
            self.releases.due(owed, after);
        }
    }

    /// Signals the point, as nothing of the compositor's reads for it (in timeline order).
    pub fn signal_unread(self) {
        self.signal_after(Vec::new());
    }
}

impl Drop for ReleasePoint {
    fn drop(&mut self) {
        if let Some(owed) = self.owed.take() {
            self.releases.due(owed, Vec::new());
        }
    }
}

/// One client timeline's release points, kept in the order the kernel needs
/// ([`ReleaseOrder`]): signalling a point answers every lower point that has no fence yet, so
/// no point is signalled (or given its fences) while a lower one is still owed. Shared by every
/// surface and commit with a point on the timeline (it lives with the timeline object), so a
/// point discharged anywhere — a commit dropped inside smithay, a surface's destruction, a
/// client's death — goes out only after the owed points below it.
///
/// A point's read fences go into the timeline as soon as its turn comes (merged into one,
/// imported into the point: the kernel signals it, no CPU wait). If that fails, the point is
/// signalled from the loop once they have signalled, and stays owed until then: the points
/// above it wait for that signal too.
#[derive(Debug, Clone)]
pub(crate) struct TimelineReleases(Arc<Releases>);

#[derive(Debug)]
struct Releases {
    timeline: Timeline,
    order: Mutex<ReleaseOrder<Vec<Arc<SyncFile>>>>,
    /// The loop, for points whose fences could not go into the timeline.
    late: Option<LateQueue>,
}

impl TimelineReleases {
    /// The books of a timeline just imported; `late` reaches the loop ([`late_signals`]).
    pub fn new(timeline: Timeline, late: Option<LateQueue>) -> Self {
        TimelineReleases(Arc::new(Releases {
            timeline,
            order: Mutex::new(ReleaseOrder::new()),
            late,
        }))
    }

    fn order(&self) -> MutexGuard<'_, ReleaseOrder<Vec<Arc<SyncFile>>>> {
        self.0.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `point` may signal after `after`: it does now, or once the owed points below it have.
    fn due(&self, point: OwedPoint, mut after: Vec<Arc<SyncFile>>) {
        after.retain(|fence| !has_signalled(fence));
        {
            let mut order = self.order();
            // Points held back keep only what still runs: no pile of signalled fds.
            for fences in order.due_mut() {
                fences.retain(|fence| !has_signalled(fence));
            }
            order.due(point, after);
        }
        self.send_out();
    }

    /// Signals (or gives their fences to) every point that may go now, lowest first.
    fn send_out(&self) {
        loop {
            let Some((point, after)) = self.order().next_due() else {
                return;
            };
            if self.put(point, after) {
                self.order().settled(point);
            }
        }
    }

    /// Puts `after` into `point` (or signals it when there is nothing to wait for); false if
    /// that failed and the loop signals it later, once `after` has signalled.
    fn put(&self, point: OwedPoint, after: Vec<Arc<SyncFile>>) -> bool {
        let imported = match merged(&after) {
            Ok(None) => {
                self.signal(point);
                return true;
            }
            Ok(Some(fence)) => self.0.timeline.import_sync_file(point.value, &fence),
            Err(e) => Err(e),
        };
        let Err(e) = imported else {
            return true;
        };
        let Some(late) = &self.0.late else {
            tracing::error!(
                "fencebridge: could not put the read fences into release point {}: {e}; no \
                 loop to wait on, signalling it now",
                point.value
            );
            self.signal(point);
            return true;
        };
        tracing::warn!(
            "fencebridge: could not put the read fences into release point {}: {e}; \
             signalling it once they have",
            point.value
        );
        late.send(LateSignal {
            releases: self.clone(),
            point,
            after,
        });
        false
    }

    /// Signals `point` from the CPU.
    fn signal(&self, point: OwedPoint) {
        if let Err(e) = self.0.timeline.signal(point.value) {
            tracing::error!(
                "fencebridge: could not signal release point {}: {e}",
                point.value
            );
        }
    }
}

/// A point to signal from the loop once its fences have signalled.
#[derive(Debug)]
struct LateSignal {
    releases: TimelineReleases,
    point: OwedPoint,
    after: Vec<Arc<SyncFile>>,
}

impl LateSignal {
    /// On the loop: signal the point once its fences have, then let the points above it go.
    fn wait<D: FenceBridgeHandler>(self, state: &mut D) {
        let LateSignal {
            releases,
            point,
            after,
        } = self;
        after_all(state, after, move |_| {
            releases.signal(point);
            releases.order().settled(point);
            releases.send_out();
        });
    }
}

/// Where release points whose fences could not go into their timeline wait for the loop
/// ([`LateSignal`]): a queue and a ping that wakes the loop, shared by every timeline.
#[derive(Debug, Clone)]
pub(crate) struct LateQueue(Arc<(Mutex<Vec<LateSignal>>, Ping)>);

impl LateQueue {
    fn send(&self, late: LateSignal) {
        let (queue, ping) = &*self.0;
        queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(late);
        ping.ping();
    }

    fn take(&self) -> Vec<LateSignal> {
        std::mem::take(&mut *self.0 .0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A wake-up for the loop, made with the compositor's state so that its one eventfd lives as
/// long as the state (not one per event, and none appearing later); the loop listens from the
/// first hook that has it at hand ([`LoopWake::listen`]). A ping before that is kept.
#[derive(Debug)]
pub(crate) struct LoopWake {
    pub ping: Ping,
    /// Until the loop listens.
    source: Option<PingSource>,
}

impl LoopWake {
    /// `None` (logged) if there is no eventfd to be had; `what` is woken for.
    pub fn new(what: &str) -> Option<LoopWake> {
        match make_ping() {
            Ok((ping, source)) => Some(LoopWake {
                ping,
                source: Some(source),
            }),
            Err(e) => {
                tracing::error!("fencebridge: no wake-up for {what}: {e}");
                None
            }
        }
    }

    /// Runs `woken` on the loop at every ping from now on (the first call; later ones do
    /// nothing).
    fn listen<D: FenceBridgeHandler>(
        &mut self,
        handle: &LoopHandle<'static, D>,
        mut woken: impl FnMut(&mut D) + 'static,
    ) -> std::result::Result<(), calloop::Error> {
        let Some(source) = self.source.take() else {
            return Ok(());
        };
        handle
            .insert_source(source, move |(), &mut (), state| woken(state))
            .map(drop)
            .map_err(|e| e.error)
    }
}

/// The compositor's [`LateQueue`] and its wake-up; the loop starts listening when the first
/// timeline is imported.
#[derive(Debug)]
pub(crate) struct LateSignals {
    queue: LateQueue,
    wake: LoopWake,
}

impl LateSignals {
    pub fn new() -> Option<LateSignals> {
        let wake = LoopWake::new(
            "late release points (a release point whose read fences cannot be imported is \
             signalled at once)",
        )?;
        Some(LateSignals {
            queue: LateQueue(Arc::new((Mutex::new(Vec::new()), wake.ping.clone()))),
            wake,
        })
    }
}

/// The queue late release points go to, with the loop listening to it (from the first call).
pub(crate) fn late_signals<D: FenceBridgeHandler>(state: &mut D) -> Option<LateQueue> {
    let handle = state.loop_handle();
    let late = state.fencebridge_state().late_signals.as_mut()?;
    let queue = late.queue.clone();
    let signals = queue.clone();
    let listening = late.wake.listen(&handle, move |state| {
        for late in signals.take() {
            late.wait(state);
        }
    });
    if let Err(e) = listening {
        tracing::error!("fencebridge: cannot wait for late release points: {e}");
        state.fencebridge_state().late_signals = None;
        return None;
    }
    Some(queue)
}

/// One fence for all of `fences` (`SYNC_IOC_MERGE`); `None` for none.
fn merged(fences: &[Arc<SyncFile>]) -> crate::Result<Option<Arc<SyncFile>>> {
    let Some((first, rest)) = fences.split_first() else {
        return Ok(None);
    };
    let mut merged = first.clone();
    for fence in rest {
        merged = Arc::new(merged.merge(fence)?);
    }
    Ok(Some(merged))
}
