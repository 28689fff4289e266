//! The commit path. The pre-commit hook (synchronous, in the `wl_surface.commit` request)
//! checks the client's points, snapshots an implicit dma-buf's fences, plans the commit with
//! [`crate::bridge::plan`], publishes an explicit acquire fence onto the dma-buf and holds the
//! commit if there is something to wait for. The plan travels with the commit through smithay's
//! cached state ([`CommitSlot`]); the post-commit hook, once the commit applies, hands its
//! release decision to the surface's release books.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Instant;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{DisplayHandle, Resource};
use smithay::wayland::compositor::{self, Barrier, BufferAssignment, Cacheable, SurfaceAttributes};
use smithay::wayland::dmabuf::get_dmabuf;

use super::report::CommitPath;
use super::surface::{ClientPoint, QueuedCommit, ReleaseSlot, SurfaceBooks};
use super::wait::{self, Held, WaitOn};
use super::FenceBridgeHandler;
use crate::bridge::plan::{self, Acquire, AcquireState, CommitInput, CommitPlan, Publish};
use crate::bridge::producer_class::{ProducerClass, ProducerClassifier};
use crate::bridge::protocol::{self, CommitSync, PendingState};
use crate::bridge::release::ReleaseEvent;
use crate::bridge::Attach;
use crate::fence::{dmabuf, Access, FenceState, SyncFile};
use crate::source::TimelinePointSource;
use crate::timeline::WaitFor;

/// The dma-buf of what a commit attached, if it attached one.
fn attached_dmabuf(attachment: &Attach<WlBuffer>) -> Option<&Dmabuf> {
    match attachment {
        Attach::DmaBuf { buffer, .. } => get_dmabuf(buffer).ok(),
        Attach::Keep | Attach::Null | Attach::Shm(_) => None,
    }
}

/// One commit's synchronisation, carried through smithay's cached state so that it applies
/// (or is merged away) together with the buffer it is about.
#[derive(Debug)]
pub(crate) struct CommitRecord {
    attachment: Attach<WlBuffer>,
    pub plan: CommitPlan,
    /// The fence the contents are ready at: the snapshot, or the exported acquire point
    /// (exported lazily if it had no fence at commit time).
    pub acquire_fence: Option<Arc<SyncFile>>,
    pub acquire_point: Option<ClientPoint>,
    /// The same fence on the compositor's own timeline, once asked for.
    pub handoff_point: Option<super::HandoffPoint>,
    release: ReleaseSlot,
    /// The blocker holding the commit until its fence signals, if it waits.
    blocker: Option<Barrier>,
    /// Applied by smithay, its booking deferred to the end of the wake ([`post_commit`]).
    shown: bool,
    /// Booked: its release decision is in the surface's books.
    applied: bool,
}

impl CommitRecord {
    /// Attaches nothing (the buffer stays).
    fn keeps_buffer(&self) -> bool {
        matches!(self.attachment, Attach::Keep)
    }
}

impl Drop for CommitRecord {
    fn drop(&mut self) {
        // Replaced while still queued (merged away), or dropped with a dead surface: nothing
        // will read it, so its release point is due and its fence need not be waited for (the
        // blocker would otherwise hold the commit it was merged into).
        if !self.applied {
            self.release.discharge_unapplied();
            if let Some(blocker) = &self.blocker {
                blocker.signal();
            }
        }
    }
}

/// smithay's cached-state slot for the [`CommitRecord`] of each commit. A commit without one
/// (nothing attached, no points) leaves the current record in place, as the buffer stays.
/// The second field keeps the record the current one replaced until the commit is booked
/// ([`post_commit`]): dropping a booked one closes its fence, a syscall the wake path from a
/// fence to the compositor's commit handler should not wait for; and one applied in a wake but
/// not booked yet is still booked from there when a later commit of the same wake replaced it.
/// One never applied (merged away) is dropped at once: its drop discharges it.
#[derive(Debug, Default)]
pub(crate) struct CommitSlot(pub Option<CommitRecord>, Option<CommitRecord>);

impl Cacheable for CommitSlot {
    fn commit(&mut self, _dh: &DisplayHandle) -> Self {
        CommitSlot(self.0.take(), None)
    }

    fn merge_into(self, into: &mut Self, _dh: &DisplayHandle) {
        let Some(record) = self.0 else { return };
        // A commit that attaches nothing does not supersede one still queued: smithay keeps
        // that one's buffer in the merged state, so its record (wait, release point) stays.
        if record.keeps_buffer() && into.0.as_ref().is_some_and(|r| !r.applied) {
            return;
        }
        match into.0.replace(record) {
            Some(replaced) if replaced.applied || replaced.shown => into.1 = Some(replaced),
            merged_away => drop(merged_away),
        }
    }
}

/// The pre-commit hook.
pub(crate) fn pre_commit<D: FenceBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
) {
    let Some(client) = surface.client() else {
        return;
    };
    let started = Instant::now();
    super::release::wake_for_reads(state);
    // What earlier commits merged away left behind leaves the books now.
    wait::drop_merged(state, surface);
    // From now on, the commits of synchronised subsurfaces below go into a new transaction.
    handed_over_descendants(surface);
    let sync_subsurface = compositor::is_sync_subsurface(surface);
    let gathered = compositor::with_states(surface, |states| {
        let attachment = match states
            .cached_state
            .get::<SurfaceAttributes>()
            .pending()
            .buffer
            .as_ref()
        {
            None => Attach::Keep,
            Some(BufferAssignment::Removed) => Attach::Null,
            Some(BufferAssignment::NewBuffer(buffer)) => match get_dmabuf(buffer) {
                Ok(dmabuf) => Attach::DmaBuf {
                    buffer: buffer.clone(),
                    unique_planes: dmabuf.num_planes(),
                },
                Err(_) => Attach::Shm(buffer.clone()),
            },
        };
        let mut books = SurfaceBooks::of(states)?;
        Some((
            attachment,
            books.syncobj.clone(),
            books.pending_acquire.take(),
            books.pending_release.take(),
            books.classifier.clone(),
        ))
    });
    let Some((attachment, syncobj, acquire, release, mut classifier)) = gathered else {
        return; // not tracked: the compositor did not call track_surface
    };

    // linux-drm-syncobj-v1's rules, for surfaces that have a syncobj object.
    let sync = match &syncobj {
        None => CommitSync {
            mode: plan::SyncMode::Implicit,
            tolerated: Vec::new(),
        },
        Some(object) => {
            let pending = PendingState {
                acquire: acquire.as_ref().map(|p| p.point),
                release: release.as_ref().map(|p| p.point),
                attached: attachment.kind(),
            };
            let leniency = state.fencebridge_state().config.leniency;
            match protocol::resolve_commit(&pending, leniency) {
                Ok(sync) => sync,
                Err(error) => {
                    tracing::warn!("fencebridge: protocol error: {error}");
                    state
                        .fencebridge_state()
                        .client_books(&client)
                        .report
                        .note_protocol_error(error.to_string());
                    object.post_error(error.code(), error.to_string());
                    // The client is gone; its release point must still come.
                    if let Some(point) = release {
                        point.signal_unread();
                    }
                    return;
                }
            }
        }
    };
    // Point 0 is planned as no point at all (see `SyncMode::without_point_zero`).
    let sync = if sync.mode.has_point_zero() {
        let books = state.fencebridge_state().client_books(&client);
        if books.report.zero_points == 0 {
            tracing::warn!(
                "fencebridge: client pid {:?} set a timeline point 0: not waited for, never \
                 signalled (acquired and released like an implicit client's buffer)",
                books.report.pid.unwrap_or(-1)
            );
        }
        books.report.zero_points += 1;
        CommitSync {
            mode: sync.mode.without_point_zero(),
            tolerated: sync.tolerated,
        }
    } else {
        sync
    };
    let acquire = acquire.filter(|p| p.point.names_a_point());
    let release = release.filter(|p| p.point.names_a_point());
    for tolerated in &sync.tolerated {
        tracing::warn!("fencebridge: tolerated a client bug: {tolerated}");
        let report = &mut state.fencebridge_state().client_books(&client).report;
        report.note_protocol_error(format!("tolerated: {tolerated}"));
    }

    // The acquire point's state, where the plan depends on it.
    let (acquire_state, acquire_fence) = match &acquire {
        Some(point) if plan::needs_acquire_state(attachment.kind(), &sync.mode) => {
            find_acquire_state(point)
        }
        _ => (None, None),
    };
    let (plan, snapshot) = plan(
        state,
        surface,
        &mut classifier,
        &attachment,
        sync.mode,
        acquire_state,
    );
    let mut record = CommitRecord {
        attachment,
        plan,
        acquire_fence,
        acquire_point: acquire,
        handoff_point: None,
        release: ReleaseSlot::new(release),
        blocker: None,
        shown: false,
        applied: false,
    };

    // Explicit -> implicit: the running acquire fence onto the dma-buf.
    if let (Publish::ImportAcquireAsWriteFence, Some(dmabuf), Some(fence)) = (
        plan.publish,
        attached_dmabuf(&record.attachment),
        &record.acquire_fence,
    ) {
        let planes: Vec<BorrowedFd<'_>> = dmabuf.handles().collect();
        if let Err(e) = dmabuf::import(&planes, fence, Access::Write) {
            tracing::warn!("fencebridge: could not publish the acquire fence: {e}");
        }
    }

    let path = match plan.acquire {
        Acquire::Nothing => match record.attachment {
            Attach::Keep | Attach::Null => CommitPath::NoBuffer,
            Attach::Shm(_) => CommitPath::Shm,
            Attach::DmaBuf { .. } if record.acquire_point.is_some() => CommitPath::ExplicitReady,
            Attach::DmaBuf { .. } => CommitPath::ImplicitReady,
        },
        Acquire::CannotWait => CommitPath::ImplicitUnwaited,
        Acquire::WaitSnapshot => match snapshot {
            Some(fence) => {
                let fence = Arc::new(fence);
                record.acquire_fence = Some(fence.clone());
                // The export just polled it pending; if it signalled since, the source fires
                // at once (no second poll here).
                match wait::hold(state, dh, surface, started, WaitOn::Snapshot(fence)) {
                    Held::Waiting(blocker) => {
                        record.blocker = Some(blocker);
                        CommitPath::ImplicitWaited
                    }
                    Held::Failed => CommitPath::ImplicitUnwaited,
                    Held::Refused => return,
                }
            }
            None => CommitPath::ImplicitUnwaited,
        },
        Acquire::WaitAcquireFence(_) | Acquire::WaitAcquirePoint(_) => {
            let on = match (plan.acquire, &record.acquire_fence, &record.acquire_point) {
                (Acquire::WaitAcquireFence(point), Some(fence), _) => Some(WaitOn::AcquireFence {
                    fence: fence.clone(),
                    point: point.value,
                }),
                (_, _, Some(point)) => wait_on_timeline(state, point),
                _ => None,
            };
            match on.map(|on| wait::hold(state, dh, surface, started, on)) {
                Some(Held::Waiting(blocker)) => {
                    record.blocker = Some(blocker);
                    CommitPath::ExplicitWaited
                }
                Some(Held::Refused) => return,
                Some(Held::Failed) | None => CommitPath::ExplicitReady,
            }
        }
    };
    tracing::debug!(
        "fencebridge: {} commit: {path} (release: {:?})",
        surface.id(),
        record.plan.release
    );
    state
        .fencebridge_state()
        .client_books(&client)
        .report
        .count(path);

    let unapplied = record.release.clone();
    let queued = sync_subsurface.then(|| QueuedCommit {
        epoch: 0,
        release: record.release.clone(),
        blocker: record.blocker.clone(),
    });
    let supersedes = !record.keeps_buffer();
    let superseded = compositor::with_states(surface, |states| {
        states.cached_state.get::<CommitSlot>().pending().0 = Some(record);
        let mut books = SurfaceBooks::of(states)?;
        let epoch = books.epoch;
        let last = std::mem::replace(
            &mut books.queued,
            queued.map(|q| QueuedCommit { epoch, ..q }),
        );
        // Slots whose commit was merged away (and so discharged) leave; one with no release
        // point never enters.
        books.unapplied.retain(ReleaseSlot::is_owed);
        books.classifier = classifier;
        if unapplied.is_owed() {
            books.unapplied.push(unapplied);
        }
        last.filter(|last| sync_subsurface && supersedes && last.epoch == epoch)
    });
    if let Some(merged_away) = superseded {
        // Its buffer will never be shown: what it owes is due now, and its fence need not hold
        // the transaction.
        merged_away.release.discharge_unapplied();
        if let Some(blocker) = merged_away.blocker {
            blocker.signal();
        }
        wait::drop_merged(state, surface);
    }
}

/// `surface` commits: the pending transactions of the synchronised subsurfaces below it are
/// handed to its own, so their later commits can no longer supersede the earlier ones.
fn handed_over_descendants(surface: &WlSurface) {
    compositor::with_surface_tree_downward(
        surface,
        (),
        |_, _, _| compositor::TraversalAction::DoChildren(()),
        |below, states, _| {
            if below != surface {
                if let Some(mut books) = SurfaceBooks::of(states) {
                    books.epoch += 1;
                }
            }
        },
        |_, _, _| true,
    );
}

/// Snapshots an implicit dma-buf if the plan needs it, classifies the surface's producer (in
/// `classifier`, the surface's own), and plans.
fn plan<D: FenceBridgeHandler>(
    state: &mut D,
    surface: &WlSurface,
    classifier: &mut Option<ProducerClassifier>,
    attachment: &Attach<WlBuffer>,
    sync: plan::SyncMode,
    acquire: Option<AcquireState>,
) -> (CommitPlan, Option<SyncFile>) {
    let bridge = state.fencebridge_state();
    let caps = bridge.bridge_caps;
    let mut buffer = attachment.kind();
    let mut snapshot = None;
    if let (Some(dmabuf), true) = (
        attached_dmabuf(attachment),
        plan::needs_snapshot(buffer, &sync, caps),
    ) {
        let planes: Vec<BorrowedFd<'_>> = dmabuf.handles().collect();
        match dmabuf::export(&planes, Access::Read, &bridge.stub) {
            Ok(taken) => {
                buffer = Attach::dmabuf(taken.unique_dmabufs);
                snapshot = Some(taken);
            }
            Err(e) => tracing::warn!("fencebridge: could not snapshot a dma-buf's fences: {e}"),
        }
    }
    let threshold = bridge.config.non_fencing_after;
    let became = snapshot.as_ref().and_then(|s| {
        classifier
            .get_or_insert_with(|| ProducerClassifier::with_threshold(threshold))
            .observe(s.state)
    });
    let producer = classifier
        .as_ref()
        .map_or(ProducerClass::Unknown, |c| c.class());
    let plan = plan::plan_commit(&CommitInput {
        buffer,
        sync,
        snapshot: snapshot.as_ref().map(|s| s.state),
        acquire,
        producer,
        caps,
    });
    if let Some(client) = surface.client() {
        let report = &mut bridge.client_books(&client).report;
        report.surface_classified(surface, producer, became.as_ref());
        if let Some(found) = became {
            tracing::info!(
                "fencebridge: client pid {:?}, {}: {found}",
                report.pid.unwrap_or(-1),
                super::report::surface_name(surface)
            );
            state.non_fencing_producer(&client, surface, &found);
        }
    }
    let fence = snapshot.and_then(|s| match s.state {
        FenceState::Pending => s.fence,
        FenceState::Signalled | FenceState::NoFence => None,
    });
    (plan, fence)
}

/// What `point` is now ([`AcquireState`]): one query, and while it has not signalled, its
/// fence exported (the kernel's answer says whether it was submitted), which the commit then
/// waits on and publishes.
fn find_acquire_state(point: &ClientPoint) -> (Option<AcquireState>, Option<Arc<SyncFile>>) {
    let value = point.point.value;
    match point.timeline.is_signalled(value) {
        Ok(true) => return (Some(AcquireState::Signalled), None),
        Ok(false) => {}
        Err(e) => tracing::warn!("fencebridge: could not query {}: {e}", point.point),
    }
    match point.timeline.export_sync_file(value) {
        Ok(fence) => (Some(AcquireState::Submitted), Some(Arc::new(fence))),
        Err(crate::Error::PointNotSubmitted { .. }) => (Some(AcquireState::NotSubmitted), None),
        Err(e) => {
            tracing::warn!("fencebridge: could not export {}: {e}", point.point);
            (Some(AcquireState::NotSubmitted), None)
        }
    }
}

/// The wait for an acquire point that has no fence yet, on its timeline: `SYNCOBJ_EVENTFD`,
/// or the device's waiter thread (where the kernel lacks it, or the configuration asks).
/// `None` (logged) if it cannot be set up: the commit applies at once.
fn wait_on_timeline<D: FenceBridgeHandler>(state: &mut D, point: &ClientPoint) -> Option<WaitOn> {
    let method = state.fencebridge_state().config.point_wait;
    let value = point.point.value;
    match TimelinePointSource::new(&point.timeline, value, WaitFor::Signalled, method) {
        Ok(source) => Some(WaitOn::AcquirePoint {
            source,
            point: value,
        }),
        Err(e) => {
            tracing::warn!(
                "fencebridge: cannot wait for {}: {e}; applying at once",
                point.point
            );
            None
        }
    }
}

/// The post-commit hook: the commit applied (its fence has signalled); book its release.
/// While a fence's wake applies it, the booking waits until the compositor's commit handler has
/// run ([`book_deferred`]), so that nothing of ours stands between the fence and the handler —
/// unless reads were reported meanwhile or the surface already applied a commit in this wake:
/// then what came before is booked first, in order.
pub(crate) fn post_commit<D: FenceBridgeHandler>(
    state: &mut D,
    _dh: &DisplayHandle,
    surface: &WlSurface,
) {
    let bridge = state.fencebridge_state();
    if bridge.waking && bridge.reads.is_empty() && !bridge.unbooked.contains(surface) {
        bridge.unbooked.push(surface.clone());
        compositor::with_states(surface, |states| {
            let mut slot = states.cached_state.get::<CommitSlot>();
            if let Some(record) = slot.current().0.as_mut() {
                record.shown = true;
            }
        });
        return;
    }
    // Commits applied earlier in this wake, then the reads reported before this commit (of
    // the buffer it replaces), then this commit.
    super::release::book_reads(state);
    book_applied(state, surface);
}

/// Books the commits applied so far in a wake (see [`post_commit`]): the wake calls it once
/// they have reached the compositor, and whatever reads the books first calls it before.
pub(crate) fn book_deferred<D: FenceBridgeHandler>(state: &mut D) {
    let mut unbooked = std::mem::take(&mut state.fencebridge_state().unbooked);
    for surface in unbooked.drain(..) {
        book_applied(state, &surface);
    }
    // The list's allocation is kept for the next wake.
    state.fencebridge_state().unbooked = unbooked;
}

/// Hands the oldest applied, unbooked commit of `surface` to its release books: the one the
/// current commit replaced if that one was never booked (both applied in one wake), else the
/// current one. Lets go of a replaced record that was booked.
fn book_applied<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface) {
    let (due, replaced) = compositor::with_states(surface, |states| {
        let mut slot = states.cached_state.get::<CommitSlot>();
        let current = slot.current();
        let mut replaced = current.1.take();
        let record = match replaced.as_mut().filter(|r| r.shown && !r.applied) {
            Some(unbooked) => unbooked,
            None => current.0.as_mut().filter(|r| !r.applied)?,
        };
        record.applied = true;
        let mut books = SurfaceBooks::of(states)?;
        books
            .unapplied
            .retain(|s| s.is_owed() && !s.same(&record.release));
        if let Some(point) = record.release.take() {
            books.owe_release_point(point);
        }
        let attach = books.attach(&record.attachment);
        let due = books.book(ReleaseEvent::Committed {
            attach,
            release: record.plan.release,
        });
        Some((Some(due), replaced))
    })
    .unwrap_or((None, None));
    drop(replaced);
    if let Some(due) = due {
        super::release::execute(state, surface, due);
    }
}
