//! Holding a commit until its fence signals: a smithay blocker, the fence's event source in the
//! compositor's loop, and a deadline timer. When the fence signals, the blocker is released and
//! smithay applies the commit; past the deadline the wait is diagnosed and kept or given up.
//! Nothing here blocks: every wait is an event source.

use std::sync::Arc;
use std::time::Instant;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::RegistrationToken;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{DisplayHandle, Resource};
use smithay::wayland::compositor::{self, Barrier};

use super::report::OverdueWait;
use super::surface::SurfaceBooks;
use super::{FenceBridgeHandler, OverduePolicy};
use crate::fence::{dmabuf, Access, SyncFile};
use crate::source::{SyncFileSource, TimelinePointSource};
use crate::timeline::Timeline;

/// What a held commit waits for.
pub(crate) enum WaitOn {
    /// The snapshot of an implicit dma-buf's write fences.
    Snapshot(Arc<SyncFile>),
    /// A client's acquire point; `publish` names the dma-buf planes to put its fence on once it
    /// has one, when it had none yet at commit time.
    AcquirePoint {
        source: TimelinePointSource,
        timeline: Timeline,
        point: u64,
        publish: Option<Dmabuf>,
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
}

/// Holds the commit being processed (call it from a pre-commit hook, outside `with_states`)
/// until `on` signals. Returns false if the wait could not be set up (the commit then applies
/// at once).
pub(crate) fn hold<D: FenceBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    started: Instant,
    on: WaitOn,
) -> bool {
    let handle = state.loop_handle();
    let id = state.fencebridge_state().next_id();
    let barrier = Barrier::new(false);
    let (awaited, inserted) = match on {
        WaitOn::Snapshot(fence) => {
            let what = Awaited::Snapshot(fence.clone());
            let (surface, dh) = (surface.clone(), dh.clone());
            let inserted = handle.insert_source(SyncFileSource::new(fence), move |_, _, st| {
                finish(st, &dh, &surface, id, Finish::Signalled)
            });
            (what, inserted.map_err(|e| e.error.to_string()))
        }
        WaitOn::AcquirePoint {
            source,
            timeline,
            point,
            publish,
        } => {
            let what = Awaited::AcquirePoint(point);
            let (surface, dh) = (surface.clone(), dh.clone());
            let inserted = handle.insert_source(source, move |result, _, st| {
                if let Err(e) = result {
                    tracing::warn!("fencebridge: waiting for acquire point {point} failed: {e}");
                }
                if let Some(dmabuf) = &publish {
                    publish_acquire(&timeline, point, dmabuf);
                }
                finish(st, &dh, &surface, id, Finish::Signalled)
            });
            (what, inserted.map_err(|e| e.error.to_string()))
        }
    };
    let fence_source = match inserted {
        Ok(token) => token,
        Err(e) => {
            tracing::error!("fencebridge: could not insert a fence wait into the loop: {e}");
            return false;
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
            barrier,
            started,
            fence_source,
            deadline,
            awaited,
            overdue_reported: false,
        })
    });
    true
}

/// Puts an acquire point's fence on the dma-buf as a write fence, so implicit readers wait for
/// the explicit client's rendering. Returns false if the point has no fence yet.
pub(crate) fn publish_acquire(timeline: &Timeline, point: u64, dmabuf: &Dmabuf) -> bool {
    let fence = match timeline.export_sync_file(point) {
        Ok(fence) => fence,
        Err(crate::Error::PointNotSubmitted { .. }) => return false,
        Err(e) => {
            tracing::warn!("fencebridge: could not export acquire point {point}: {e}");
            return true;
        }
    };
    let planes: Vec<_> = dmabuf.handles().collect();
    if let Err(e) = dmabuf::import(&planes, &fence, Access::Write) {
        tracing::warn!("fencebridge: could not put the acquire fence on the dma-buf: {e}");
    }
    true
}

enum Finish {
    Signalled,
    GaveUp,
}

/// The wait `id` ended: release its blocker and let smithay apply what is ready.
fn finish<D: FenceBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    id: u64,
    how: Finish,
) {
    if !surface.is_alive() {
        return;
    }
    let Some(Some(entry)) = SurfaceBooks::with(surface, |books| {
        let i = books.waits.iter().position(|w| w.id == id)?;
        Some(books.waits.swap_remove(i))
    }) else {
        return;
    };
    let handle = state.loop_handle();
    match how {
        // The fence source removes itself. The deadline timer is left to run out (its callback
        // finds no wait and drops itself): removing a calloop timer scans every pending timer
        // (`TimerWheel::cancel` is a `retain` over the heap), which would make each wake cost
        // O(waits pending), while letting it expire costs a heap pop.
        Finish::Signalled => {}
        // The timer drops itself; the fence source is ours to remove.
        Finish::GaveUp => handle.remove(entry.fence_source),
    }
    entry.barrier.signal();
    let waited = entry.started.elapsed();
    let Some(client) = surface.client() else {
        return;
    };
    state
        .fencebridge_state()
        .client_books(&client)
        .report
        .waits
        .record(waited);
    tracing::debug!(
        "fencebridge: {} waited {waited:.1?} for {}",
        surface.id(),
        entry.awaited.describe()
    );
    state
        .client_compositor_state(&client)
        .blocker_cleared(state, dh);
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
        finish(state, dh, surface, id, Finish::GaveUp);
    }
    TimeoutAction::Drop
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
