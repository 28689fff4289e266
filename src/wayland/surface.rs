//! Per-surface books: the syncobj object and its pending points, the release books
//! ([`ReleaseTracker`]) with the objects its actions name (release points, read fences, the
//! renderer's hold on the buffer), and the commits still waiting. A release point's place on
//! its timeline is kept by the timeline, not here ([`super::release::TimelineReleases`]): other
//! surfaces may set points on the same timeline.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use smithay::backend::renderer::utils::Buffer as RendererBuffer;
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::wayland::compositor::{self, SurfaceData};
use wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;

use super::release::{has_signalled, ReleasePoint};
use super::wait::WaitEntry;
use super::{commit, release, FenceBridgeHandler};
use crate::bridge::producer_class::ProducerClassifier;
use crate::bridge::release::{ReleaseAction, ReleaseTracker};
use crate::bridge::{Attach, BufferId, FenceId, TimelinePoint};
use crate::fence::SyncFile;
use crate::timeline::Timeline;

/// Hooks `surface` into the bridge: call it from `CompositorHandler::new_surface` for every
/// surface. (Idempotent; `get_surface` of linux-drm-syncobj-v1 calls it too.)
pub fn track_surface<D: FenceBridgeHandler>(surface: &WlSurface) {
    let added = compositor::with_states(surface, |states| {
        states
            .data_map
            .insert_if_missing_threadsafe(|| Mutex::new(SurfaceBooks::default()))
    });
    if added {
        compositor::add_pre_commit_hook::<D, _>(surface, commit::pre_commit::<D>);
        compositor::add_post_commit_hook::<D, _>(surface, commit::post_commit::<D>);
        compositor::add_destruction_hook::<D, _>(surface, release::surface_destroyed::<D>);
    }
}

/// What the bridge holds for one surface now (see [`surface_holdings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SurfaceHoldings {
    /// Commits waiting for their fence.
    pub waits: usize,
    /// Commits not applied yet that still owe a release point.
    pub unapplied_release_points: usize,
    /// Release points of applied commits, not signalled yet.
    pub owed_release_points: usize,
}

/// What the bridge holds for `surface` (`None` if it is not tracked): for diagnostics and leak
/// checks. Each count is bounded by the surface's commits in flight, however long it lives and
/// however often it commits (a synchronised subsurface's commits that smithay merges away
/// leave at once). Do not call it inside `with_states`.
pub fn surface_holdings(surface: &WlSurface) -> Option<SurfaceHoldings> {
    SurfaceBooks::with(surface, |books| SurfaceHoldings {
        waits: books.waits.len(),
        unapplied_release_points: books.unapplied.len(),
        owed_release_points: books.release_points.len(),
    })
}

/// An acquire point on a client timeline, with the timeline itself.
#[derive(Debug, Clone)]
pub(crate) struct ClientPoint {
    pub timeline: Timeline,
    pub point: TimelinePoint,
}

/// A commit's release point until someone discharges it: the release books once the commit
/// applies, or a signal without reads if it never does (replaced while queued, surface
/// destroyed). Shared between the commit and the surface's books so that exactly one of them
/// takes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReleaseSlot(Arc<Mutex<Option<ReleasePoint>>>);

impl ReleaseSlot {
    pub fn new(point: Option<ReleasePoint>) -> Self {
        ReleaseSlot(Arc::new(Mutex::new(point)))
    }

    pub fn take(&self) -> Option<ReleasePoint> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether it still holds a point nobody took.
    pub fn is_owed(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    pub fn same(&self, other: &ReleaseSlot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Signals the point if nobody took it: its commit never applied, so nothing read for it.
    pub fn discharge_unapplied(&self) {
        if let Some(point) = self.take() {
            point.signal_unread();
        }
    }
}

/// One thing due, with the objects it needs.
pub(crate) enum Due {
    /// Signal a client's release point once every fence in `after` has signalled (and the
    /// owed points below it on its timeline have theirs).
    SignalPoint {
        point: ReleasePoint,
        after: Vec<Arc<SyncFile>>,
    },
    /// Let go of the renderer's hold on a buffer once every fence in `after` has signalled:
    /// smithay sends `wl_buffer.release` when the last hold goes.
    ReleaseBuffer {
        hold: RendererBuffer,
        after: Vec<Arc<SyncFile>>,
    },
}

/// The bridge's books for one surface.
#[derive(Debug, Default)]
pub(crate) struct SurfaceBooks {
    /// Its `wp_linux_drm_syncobj_surface_v1`, if it has one.
    pub syncobj: Option<WpLinuxDrmSyncobjSurfaceV1>,
    pub pending_acquire: Option<ClientPoint>,
    pub pending_release: Option<ReleasePoint>,
    /// Release points of commits not applied yet (see [`ReleaseSlot`]).
    pub unapplied: Vec<ReleaseSlot>,
    tracker: ReleaseTracker,
    /// The buffer the surface shows, and its id in the release books.
    current: Option<(WlBuffer, BufferId)>,
    next_buffer: u64,
    /// Release points the books may name.
    release_points: Vec<ReleasePoint>,
    /// The read fences of the current buffer the books may name: every read reported while
    /// it is current, until it is seen signalled.
    reads: Vec<(BufferId, FenceId, Arc<SyncFile>)>,
    next_fence: u64,
    /// The renderer's hold on the current buffer, taken when a read is reported: dropping it
    /// lets smithay send `wl_buffer.release`, so keeping it defers the release.
    hold: Option<(BufferId, RendererBuffer)>,
    /// Commits waiting for their fence.
    pub waits: Vec<WaitEntry>,
    /// What produces the surface's dma-bufs, learnt from its own commits (`None` until its
    /// first snapshot). Per surface, because one client often has two producers: a GPU
    /// interface and a video decoder's frames on a subsurface.
    pub classifier: Option<ProducerClassifier>,
    /// Bumped when an ancestor commits: from then on this surface's commits go into a new
    /// transaction (see [`QueuedCommit`]).
    pub epoch: u64,
    /// The last commit, if it was made as a synchronised subsurface's.
    pub queued: Option<QueuedCommit>,
}

/// A synchronised subsurface's commit, still in its pending transaction. smithay applies such
/// commits together when the parent commits, each merged into the next: one superseded by a
/// later buffer in the same transaction (no ancestor commit in between) is never shown.
#[derive(Debug)]
pub(crate) struct QueuedCommit {
    pub epoch: u64,
    pub release: ReleaseSlot,
    pub blocker: Option<smithay::wayland::compositor::Barrier>,
}

impl SurfaceBooks {
    /// Runs `f` on the surface's books (`None` if the surface is not tracked). Never call it
    /// inside `with_states` of the same surface.
    pub fn with<T>(surface: &WlSurface, f: impl FnOnce(&mut SurfaceBooks) -> T) -> Option<T> {
        compositor::with_states(surface, |states| Self::of(states).map(|mut b| f(&mut b)))
    }

    /// The books inside a `with_states`.
    pub fn of(states: &SurfaceData) -> Option<MutexGuard<'_, SurfaceBooks>> {
        states
            .data_map
            .get::<Mutex<SurfaceBooks>>()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The release books' name for what a commit attached (the same id when the current
    /// buffer is attached again).
    pub fn attach(&mut self, attach: &Attach<WlBuffer>) -> Attach<BufferId> {
        if matches!(attach, Attach::Null) {
            self.current = None;
        }
        attach.clone().map(|buffer| match &self.current {
            Some((current, id)) if *current == buffer => *id,
            _ => {
                self.next_buffer += 1;
                let id = BufferId(self.next_buffer);
                self.current = Some((buffer, id));
                id
            }
        })
    }

    /// The buffer the surface shows, as the books know it.
    pub fn current_buffer(&self) -> Option<&WlBuffer> {
        self.current.as_ref().map(|(buffer, _)| buffer)
    }

    /// Books an applied commit's release point (the tracker will name it).
    pub fn owe_release_point(&mut self, point: ReleasePoint) {
        self.release_points.push(point);
    }

    /// Books a read of the current buffer; `hold` is the renderer's hold on it, if it keeps
    /// one. Returns the read's id in the books, `None` for the buffer it read.
    pub fn read(
        &mut self,
        fence: Option<SyncFile>,
        hold: Option<RendererBuffer>,
    ) -> Option<(BufferId, Option<FenceId>)> {
        let (buffer, id) = self.current.clone()?;
        if let Some(hold) = hold.filter(|h| *h == buffer) {
            self.hold = Some((id, hold));
        }
        // Reads seen done drop out, so the set stays as small as the reads still running
        // (a poll each, no ioctl).
        let tracker = &mut self.tracker;
        self.reads.retain(|(_, fid, fence)| {
            let done = has_signalled(fence);
            if done {
                tracker.read_done(*fid);
            }
            !done
        });
        let fence = fence.map(|fence| {
            self.next_fence += 1;
            let fid = FenceId(self.next_fence);
            self.reads.push((id, fid, Arc::new(fence)));
            fid
        });
        Some((id, fence))
    }

    /// Feeds the release books and turns what they say is due into [`Due`]s.
    pub fn book(&mut self, event: crate::bridge::release::ReleaseEvent) -> Vec<Due> {
        let actions = self.tracker.handle(event);
        let fences = |after: Vec<FenceId>, books: &SurfaceBooks| {
            let fences: Vec<Arc<SyncFile>> = books
                .reads
                .iter()
                .filter(|(_, id, _)| after.contains(id))
                .map(|(_, _, f)| f.clone())
                .collect();
            if fences.len() != after.len() {
                tracing::error!("fencebridge: a read fence the release books name is gone");
            }
            fences
        };
        let mut due = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                ReleaseAction::SignalReleasePoint { point, after } => {
                    let Some(i) = self.release_points.iter().position(|p| p.point == point) else {
                        tracing::error!("fencebridge: release {point} is not in the books");
                        continue;
                    };
                    let point = self.release_points.swap_remove(i);
                    due.push(Due::SignalPoint {
                        point,
                        after: fences(after, self),
                    });
                }
                ReleaseAction::SendBufferRelease { buffer, after } => {
                    if let Some((_, hold)) = self.hold.take_if(|(id, _)| *id == buffer) {
                        due.push(Due::ReleaseBuffer {
                            hold,
                            after: fences(after, self),
                        });
                    }
                }
                ReleaseAction::ForgetBuffer { buffer } => {
                    self.hold.take_if(|(id, _)| *id == buffer);
                }
            }
        }
        // Whatever is not about the current buffer any more is let go of.
        let current = self.current.as_ref().map(|(_, id)| *id);
        self.reads.retain(|(id, _, _)| Some(*id) == current);
        self.hold.take_if(|(id, _)| Some(*id) != current);
        due
    }

    /// The surface is gone: everything still owed becomes due.
    pub fn destroyed(&mut self) -> Vec<Due> {
        self.syncobj = None;
        self.pending_acquire = None;
        if let Some(point) = self.pending_release.take() {
            point.signal_unread();
        }
        for slot in self.unapplied.drain(..) {
            slot.discharge_unapplied();
        }
        let due = self.book(crate::bridge::release::ReleaseEvent::SurfaceDestroyed);
        self.current = None;
        self.reads.clear();
        self.hold = None;
        due
    }
}
