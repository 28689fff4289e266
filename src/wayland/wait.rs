//! Holding a commit until its fence signals: a smithay blocker, the fence's event source in the
//! compositor's loop, and a deadline timer. When the fence signals, the blocker is released and
//! smithay applies the commit; past the deadline the wait is diagnosed and kept or given up.
//! Nothing here blocks: every wait is an event source.

use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{LoopHandle, RegistrationToken};
use smithay::reexports::wayland_server::backend::protocol::ProtocolError;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, Resource};
use smithay::wayland::compositor::{self, Barrier};

use super::report::OverdueWait;
use super::surface::SurfaceBooks;
use super::{FenceBridgeHandler, OverduePolicy};
use crate::fence::SyncFile;
use crate::source::{SyncFileSource, TimelinePointSource};

/// What a held commit waits for.
pub(crate) enum WaitOn {
    /// The snapshot of an implicit dma-buf's write fences.
    Snapshot(Arc<SyncFile>),
    /// A client's acquire point, already exported as a sync_file: polled like a snapshot.
    AcquireFence { fence: Arc<SyncFile>, point: u64 },
    /// A client's acquire point that had no fence yet, waited for on its timeline.
    AcquirePoint {
        source: TimelinePointSource,
        point: u64,
    },
}

/// The fence a wait is for, named in diagnostics only when one is due (naming a sync_file's
/// fences costs an ioctl).
#[derive(Debug)]
enum Awaited {
    Snapshot(Arc<SyncFile>),
    AcquirePoint(u64),
}

impl Awaited {
    fn describe(&self) -> String {
        match self {
            Awaited::AcquirePoint(point) => format!("acquire point {point} of a client timeline"),
            Awaited::Snapshot(fence) => match fence.info() {
                Ok(info) => {
                    let names: Vec<_> = info.fences.iter().map(ToString::to_string).collect();
                    format!("the dma-buf's write fences ({})", names.join(", "))
                }
                Err(_) => "the dma-buf's write fences".to_owned(),
            },
        }
    }
}

/// A commit waiting for its fence.
#[derive(Debug)]
pub(crate) struct WaitEntry {
    id: u64,
    barrier: Barrier,
    started: Instant,
    fence_source: RegistrationToken,
    deadline: Option<RegistrationToken>,
    awaited: Awaited,
    overdue_reported: bool,
    _counted: CountedWait,
}

/// How many commits of one client wait for their fence now: each [`WaitEntry`] holds one count
/// and gives it back when dropped, however its wait ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingWaits(Arc<AtomicUsize>);

#[derive(Debug)]
struct CountedWait(Arc<AtomicUsize>);

impl PendingWaits {
    pub fn now(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn count(&self) -> CountedWait {
        self.0.fetch_add(1, Ordering::Relaxed);
        CountedWait(self.0.clone())
    }
}

impl Drop for CountedWait {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`hold`] did with a commit.
pub(crate) enum Held {
    /// Held until its fence signals by this blocker.
    Waiting(Barrier),
    /// The wait could not be set up: the commit applies at once.
    Failed,
    /// The client is past [`super::Config::max_pending_waits_per_client`]: it is disconnected
    /// and the commit is never shown.
    Refused,
}

/// Holds the commit being processed (call it from a pre-commit hook, outside `with_states`)
/// until `on` signals.
pub(crate) fn hold<D: FenceBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    started: Instant,
    on: WaitOn,
) -> Held {
    let Some(client) = surface.client() else {
        return Held::Failed;
    };
    let limit = state
        .fencebridge_state()
        .config
        .max_pending_waits_per_client;
    let pending = state
        .fencebridge_state()
        .client_books(&client)
        .pending_waits
        .clone();
    if pending.now() >= limit {
        refuse(state, dh, surface, &client, limit);
        return Held::Refused;
    }
    let handle = state.loop_handle();
    let id = state.fencebridge_state().next_id();
    let barrier = Barrier::new(false);
    // What the fence's callback needs to apply the commit, taken now so that the wake path
    // looks nothing up before it does.
    let wake = Wake {
        id,
        surface: surface.clone(),
        client: client.clone(),
        barrier: barrier.clone(),
        dh: dh.clone(),
    };
    let (awaited, inserted) = match on {
        WaitOn::Snapshot(fence) => {
            let what = Awaited::Snapshot(fence.clone());
            (what, wait_for_fence(&handle, fence, wake))
        }
        WaitOn::AcquireFence { fence, point } => (
            Awaited::AcquirePoint(point),
            wait_for_fence(&handle, fence, wake),
        ),
        WaitOn::AcquirePoint { source, point } => {
            let what = Awaited::AcquirePoint(point);
            let inserted = handle.insert_source(source, move |result, _, st| {
                if let Err(e) = result {
                    tracing::warn!("fencebridge: waiting for acquire point {point} failed: {e}");
                }
                wake.finish(st)
            });
            (what, inserted.map_err(|e| e.error.to_string()))
        }
    };
    let fence_source = match inserted {
        Ok(token) => token,
        Err(e) => {
            tracing::error!("fencebridge: could not insert a fence wait into the loop: {e}");
            return Held::Failed;
        }
    };
    let deadline = state.fencebridge_state().config.wait_deadline;
    let deadline = {
        // A weak handle: a timer left to run out after its wait ended must not keep the
        // surface (and its buffers) alive.
        let (surface, dh) = (surface.downgrade(), dh.clone());
        handle
            .insert_source(
                Timer::from_duration(deadline),
                move |_, _, st| match surface.upgrade() {
                    Ok(surface) => overdue(st, &dh, &surface, id),
                    Err(_) => TimeoutAction::Drop,
                },
            )
            .inspect_err(|e| tracing::warn!("fencebridge: no deadline timer: {}", e.error))
            .ok()
    };
    compositor::add_blocker(surface, barrier.clone());
    SurfaceBooks::with(surface, |books| {
        books.waits.push(WaitEntry {
            id,
            barrier: barrier.clone(),
            started,
            fence_source,
            deadline,
            awaited,
            overdue_reported: false,
            _counted: pending.count(),
        })
    });
    Held::Waiting(barrier)
}

/// Inserts the source that ends a wait when `fence` signals.
fn wait_for_fence<D: FenceBridgeHandler>(
    handle: &LoopHandle<'static, D>,
    fence: Arc<SyncFile>,
    wake: Wake,
) -> Result<RegistrationToken, String> {
    handle
        .insert_source(SyncFileSource::new(fence), move |_, _, st| wake.finish(st))
        .map_err(|e| e.error.to_string())
}

/// Disconnects a client past its limit of pending waits, and blocks the commit for good (the
/// client's surfaces die with it). The error is `wl_display.error` `no_memory`: no protocol
/// has an error for "too many commits waiting" (linux-drm-syncobj-v1's are about points and
/// buffers, wl_surface's about scale, transform, size and offset), an implicit client has no
/// syncobj object to raise one on, and `no_memory` is the core protocol's answer to a client
/// the server will not hold more for (libwayland's `wl_client_post_no_memory`). The message
/// names the limit.
fn refuse<D: FenceBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    client: &Client,
    limit: usize,
) {
    let message = format!(
        "{} committed while {limit} of the client's commits were waiting for their fences, the \
         compositor's limit (fencebridge max_pending_waits_per_client)",
        surface.id()
    );
    tracing::warn!("fencebridge: {message}; disconnecting the client");
    let report = &mut state.fencebridge_state().client_books(client).report;
    report.note_protocol_error(format!("no_memory: {message}"));
    compositor::add_blocker(surface, Barrier::new(false));
    const WL_DISPLAY_ERROR_NO_MEMORY: u32 = 2;
    let backend = dh.backend_handle();
    let display = backend.object_for_protocol_id(
        client.id(),
        &smithay::reexports::wayland_server::protocol::__interfaces::WL_DISPLAY_INTERFACE,
        1,
    );
    match (display, CString::new(message.clone())) {
        (Ok(display), Ok(text)) => backend.post_error(display, WL_DISPLAY_ERROR_NO_MEMORY, text),
        _ => client.kill(
            dh,
            ProtocolError {
                code: WL_DISPLAY_ERROR_NO_MEMORY,
                object_id: 1,
                object_interface: "wl_display".to_owned(),
                message,
            },
        ),
    }
}

/// Lets go of the waits of `surface`'s commits that smithay merged away (a synchronised
/// subsurface committed again before its parent did): their commit dropped its record and with
/// it released their blocker, so only the fence source is left to remove. The deadline timer
/// runs out by itself (see [`Wake::finish`]).
pub(crate) fn drop_merged<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface) {
    let Some(merged) = SurfaceBooks::with(surface, |books| {
        let (merged, waiting): (Vec<WaitEntry>, Vec<WaitEntry>) = std::mem::take(&mut books.waits)
            .into_iter()
            .partition(|w| w.barrier.is_signaled());
        books.waits = waiting;
        merged
    }) else {
        return;
    };
    let handle = state.loop_handle();
    for wait in merged {
        handle.remove(wait.fence_source);
    }
}

/// How a held commit is let go of: wait `id`'s blocker on `surface`, and the client whose
/// transaction queue smithay re-checks.
struct Wake {
    id: u64,
    surface: WlSurface,
    client: Client,
    barrier: Barrier,
    dh: DisplayHandle,
}

impl Wake {
    /// The wait ended: release the blocker and let smithay apply what is ready, and only then
    /// keep the books, so that nothing but the release stands between the fence and the
    /// compositor's commit handler. (Its fence source removes itself; its deadline timer is
    /// left to run out, finds no wait and drops itself: removing a calloop timer scans every
    /// pending timer, `TimerWheel::cancel` being a `retain` over the heap, which would make
    /// each wake cost O(waits pending), while letting it expire costs a heap pop.)
    fn finish<D: FenceBridgeHandler>(&self, state: &mut D) {
        let ended = Instant::now();
        self.barrier.signal();
        state.fencebridge_state().waking = true;
        state
            .client_compositor_state(&self.client)
            .blocker_cleared(state, &self.dh);
        state.fencebridge_state().waking = false;
        super::commit::book_deferred(state);
        let Some(Some(entry)) = SurfaceBooks::with(&self.surface, |books| {
            let i = books.waits.iter().position(|w| w.id == self.id)?;
            Some(books.waits.swap_remove(i))
        }) else {
            return; // given up on already, or the surface is gone
        };
        let waited = ended - entry.started;
        state
            .fencebridge_state()
            .client_books(&self.client)
            .report
            .waits
            .record(waited);
        tracing::debug!(
            "fencebridge: {} waited {waited:.1?} for {}",
            self.surface.id(),
            entry.awaited.describe()
        );
    }
}

/// The deadline of wait `id` passed.
fn overdue<D: FenceBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    id: u64,
) -> TimeoutAction {
    let policy = state.fencebridge_state().config.overdue;
    let Some(Some((started, fence))) = SurfaceBooks::with(surface, |books| {
        let entry = books.waits.iter_mut().find(|w| w.id == id)?;
        let first = !std::mem::replace(&mut entry.overdue_reported, true);
        first.then(|| (entry.started, entry.awaited.describe()))
    }) else {
        return TimeoutAction::Drop;
    };
    let client = surface.client();
    let wait = OverdueWait {
        pid: client
            .as_ref()
            .and_then(|c| c.get_credentials(dh).ok())
            .map(|c| c.pid),
        surface: super::report::surface_name(surface),
        fence,
        waited: started.elapsed(),
        shown_anyway: policy == OverduePolicy::ShowAnyway,
    };
    tracing::warn!("fencebridge: overdue fence: {wait}");
    if let Some(client) = &client {
        state
            .fencebridge_state()
            .client_books(client)
            .report
            .overdue_waits += 1;
    }
    state.wait_overdue(&wait);
    if policy == OverduePolicy::ShowAnyway {
        give_up(state, dh, surface, id);
    }
    TimeoutAction::Drop
}

/// Applies the commit of wait `id` without its fence: the fence source is removed (the timer
/// drops itself) and the blocker released.
fn give_up<D: FenceBridgeHandler>(state: &mut D, dh: &DisplayHandle, surface: &WlSurface, id: u64) {
    let Some(client) = surface.client() else {
        return;
    };
    let Some(Some((fence_source, barrier))) = SurfaceBooks::with(surface, |books| {
        let entry = books.waits.iter().find(|w| w.id == id)?;
        Some((entry.fence_source, entry.barrier.clone()))
    }) else {
        return;
    };
    state.loop_handle().remove(fence_source);
    Wake {
        id,
        surface: surface.clone(),
        client,
        barrier,
        dh: dh.clone(),
    }
    .finish(state);
}

/// The surface died: drop its waits (their sources close their fds; a waiter thread is
/// cancelled) and release their blockers so nothing is left pending.
pub(crate) fn drop_waits<D: FenceBridgeHandler>(state: &mut D, waits: Vec<WaitEntry>) {
    let handle = state.loop_handle();
    for wait in waits {
        handle.remove(wait.fence_source);
        if let Some(timer) = wait.deadline {
            handle.remove(timer);
        }
        wait.barrier.signal();
    }
}
