//! Explicit fences for whoever reads a client buffer after its commit applied — a KMS plane
//! (`IN_FENCE_FD`), a capture path, a Vulkan renderer — whichever way the client synchronises,
//! and the reverse for buffers the compositor writes (screencopy, PipeWire): its write fence
//! put on the dma-buf so that implicit consumers wait for its rendering.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::wayland::compositor::SurfaceData;

use super::commit::CommitSlot;
use super::FenceBridgeState;
use crate::bridge::plan::Handoff;
use crate::fence::{dmabuf, Access, SyncFile};
use crate::timeline::Timeline;
use crate::Result;

/// A point on the compositor's own timeline that signals with a commit's acquire fence.
#[derive(Debug, Clone)]
pub struct HandoffPoint {
    /// The compositor's timeline (export it once with [`Timeline::export_fd`]).
    pub timeline: Timeline,
    /// The point.
    pub point: u64,
}

/// The fence the contents of a surface's current buffer were ready at: the snapshot of an
/// implicit client's write fences, or an explicit client's acquire point as a sync_file.
/// `None` when the commit's plan hands no fence on ([`Handoff::Nothing`]: the buffer is not a
/// dma-buf, or its fences or acquire point had signalled already at commit), or the export
/// failed (logged); an acquire point that had no fence yet at commit is exported now. The
/// bridge applied the commit only after this fence signalled, so a consumer that waits on it
/// (a KMS plane's `IN_FENCE_FD`, a capture) never waits long; it is what such consumers need
/// when they take a fence rather than trusting the order.
///
/// It takes the surface's states, as a render walk has them (`with_surface_tree_downward`'s
/// processor, or `with_states`), and locks nothing of smithay's: call it
/// `with_states(surface, acquire_fence)` outside a walk. (A function that locked the surface
/// itself would deadlock inside a walk: smithay's surface lock is not re-entrant.)
pub fn acquire_fence(states: &SurfaceData) -> Option<Arc<SyncFile>> {
    let mut slot = states.cached_state.get::<CommitSlot>();
    let record = slot.current().0.as_mut()?;
    if record.plan.handoff == Handoff::Nothing {
        return None;
    }
    if record.acquire_fence.is_none() {
        // An acquire point that had no fence at commit time has one now.
        let point = record.acquire_point.as_ref()?;
        match point.timeline.export_sync_file(point.point.value) {
            Ok(fence) => record.acquire_fence = Some(Arc::new(fence)),
            Err(e) => tracing::warn!("fencebridge: could not export {}: {e}", point.point),
        }
    }
    record.acquire_fence.clone()
}

/// [`acquire_fence`] as a point on the compositor's own timeline (created on first use), for
/// consumers that take timeline points (Vulkan, PipeWire's explicit sync). The same point is
/// returned for the same commit. `Ok(None)`: no acquire fence (as [`acquire_fence`]), or a
/// plan without a timeline handoff ([`Handoff::SyncFileAndTimelinePoint`]: no syncobj
/// device). Like [`acquire_fence`], it takes the surface's states and locks nothing of
/// smithay's.
pub fn acquire_timeline_point(
    state: &mut FenceBridgeState,
    states: &SurfaceData,
) -> Result<Option<HandoffPoint>> {
    let Some(fence) = acquire_fence(states) else {
        return Ok(None);
    };
    let Some(device) = state.syncobj.clone() else {
        return Ok(None);
    };
    let mut slot = states.cached_state.get::<CommitSlot>();
    let Some(record) = slot.current().0.as_mut() else {
        return Ok(None);
    };
    if record.plan.handoff != Handoff::SyncFileAndTimelinePoint {
        return Ok(None);
    }
    if let Some(handoff) = &record.handoff_point {
        return Ok(Some(handoff.clone()));
    }
    let (timeline, last) = match &mut state.own_timeline {
        Some(own) => own,
        own @ None => own.insert((device.create_timeline()?, 0)),
    };
    timeline.import_sync_file(*last + 1, &fence)?;
    *last += 1;
    let handoff = HandoffPoint {
        timeline: timeline.clone(),
        point: *last,
    };
    record.handoff_point = Some(handoff.clone());
    Ok(Some(handoff))
}

/// Puts the compositor's write fence on a dma-buf it renders into (screencopy, PipeWire), so
/// that an implicit consumer of that buffer waits for the compositor's rendering.
pub fn publish_compositor_write(buffer: &Dmabuf, fence: &SyncFile) -> Result<()> {
    let planes: Vec<BorrowedFd<'_>> = buffer.handles().collect();
    dmabuf::import(&planes, fence, Access::Write)
}
