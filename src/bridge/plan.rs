//! The per-commit decision table: given what a commit attached, how the client synchronises,
//! what the fence snapshot found, what kind of producer the client is and what the machine
//! can do, decide what to wait for ([`Acquire`]), which explicit fence to hand on
//! ([`Handoff`]), what to put on the dma-buf ([`Publish`]) and how to give the buffer back
//! ([`Release`]).
//!
//! Deciding takes two steps because the snapshot and the acquire point's state are kernel
//! calls: ask [`needs_snapshot`] and [`needs_acquire_state`] first, take the snapshot
//! (`fence::dmabuf::export`) or find the point's [`AcquireState`] only then, and pass them to
//! [`plan_commit`].
//!
//! # How to use
//! ```no_run
//! use fencebridge::bridge::plan::{self, Acquire, BridgeCaps, CommitInput, SyncMode};
//! use fencebridge::bridge::Attach;
//! use fencebridge::bridge::producer_class::ProducerClass;
//! use fencebridge::fence::FenceState;
//! let caps = BridgeCaps { dmabuf_export: true, dmabuf_import: true, timelines: true };
//! let buffer = Attach::dmabuf(2);
//! let sync = SyncMode::Implicit;
//! if plan::needs_snapshot(buffer, &sync, caps) {
//!     let state = FenceState::Pending; // from fence::dmabuf::export(..).state
//!     let producer = ProducerClass::Unknown;
//!     let input = CommitInput { buffer, sync, snapshot: Some(state), acquire: None, producer, caps };
//!     let plan = plan::plan_commit(&input);
//!     assert_eq!(plan.acquire, Acquire::WaitSnapshot); // hold the commit until it signals
//! }
//! ```

use super::producer_class::ProducerClass;
use super::{Attach, TimelinePoint};
use crate::caps::Capabilities;
use crate::fence::FenceState;

/// How the client synchronises this commit. [`protocol::resolve_commit`] derives it; the two
/// half-explicit modes exist only when a lenient compositor tolerated a missing point.
///
/// [`protocol::resolve_commit`]: super::protocol::resolve_commit
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// No linux-drm-syncobj points: the fences live on the dma-buf.
    Implicit,
    /// linux-drm-syncobj-v1: wait for `acquire`, signal `release` when done with the buffer.
    Explicit {
        /// Signalled by the client when the buffer is ready.
        acquire: TimelinePoint,
        /// Signalled by the compositor when it no longer reads the buffer.
        release: TimelinePoint,
    },
    /// Only an acquire point (tolerated no_release_point): acquire explicitly, release as an
    /// implicit client is released.
    AcquireOnly(TimelinePoint),
    /// Only a release point (tolerated no_acquire_point): acquire as an implicit client is
    /// acquired, still signal the release point (the client waits for it).
    ReleaseOnly(TimelinePoint),
}

impl SyncMode {
    /// The mode of a commit that set `acquire` and `release` (each, or neither): the one place a
    /// `SyncMode` is built from points.
    pub fn from_points(acquire: Option<TimelinePoint>, release: Option<TimelinePoint>) -> Self {
        match (acquire, release) {
            (Some(acquire), Some(release)) => SyncMode::Explicit { acquire, release },
            (Some(acquire), None) => SyncMode::AcquireOnly(acquire),
            (None, Some(release)) => SyncMode::ReleaseOnly(release),
            (None, None) => SyncMode::Implicit,
        }
    }

    /// The mode with every point 0 dropped: the commit is then planned as if the client had
    /// not set that point.
    ///
    /// Point 0 is not a point on a timeline ([`TimelinePoint::names_a_point`] says which are,
    /// and why to the kernel 0 is none). In a Vulkan timeline semaphore (where WSI takes its
    /// points from) 0 is the initial value, reached before anything is submitted, so a client
    /// that sets it asks for no synchronisation at all. So:
    /// - an acquire point 0 is not waited for: the buffer is acquired like an implicit
    ///   client's, from a snapshot of its dma-buf's fences (a driver that fences implicitly is
    ///   still waited for; otherwise the client gets what it asked for);
    /// - a release point 0 is never signalled (the client's wait for 0 returns at once): the
    ///   buffer is given back like an implicit client's, by `wl_buffer.release`.
    ///
    /// Neither is a protocol error (linux-drm-syncobj-v1 has no error for it, and the point
    /// is a plain u64); the bridge counts it per client and logs it once.
    pub fn without_point_zero(self) -> SyncMode {
        let nonzero = |p: TimelinePoint| p.names_a_point().then_some(p);
        SyncMode::from_points(
            self.acquire_point().and_then(nonzero),
            self.release_point().and_then(nonzero),
        )
    }

    /// Whether the client set a point 0 (see [`SyncMode::without_point_zero`]).
    pub fn has_point_zero(&self) -> bool {
        [self.acquire_point(), self.release_point()]
            .iter()
            .flatten()
            .any(|p| !p.names_a_point())
    }

    /// The client's acquire point, if it gave one.
    pub fn acquire_point(&self) -> Option<TimelinePoint> {
        match *self {
            SyncMode::Explicit { acquire, .. } | SyncMode::AcquireOnly(acquire) => Some(acquire),
            SyncMode::Implicit | SyncMode::ReleaseOnly(_) => None,
        }
    }

    /// The client's release point, if it gave one.
    pub fn release_point(&self) -> Option<TimelinePoint> {
        match *self {
            SyncMode::Explicit { release, .. } | SyncMode::ReleaseOnly(release) => Some(release),
            SyncMode::Implicit | SyncMode::AcquireOnly(_) => None,
        }
    }
}

/// What the machine can do, as far as the plan cares. Fill it from the probe with
/// `BridgeCaps::from(&Capabilities::probe())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BridgeCaps {
    /// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` works: implicit fences can be snapshotted.
    pub dmabuf_export: bool,
    /// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` works: explicit fences can be published on a dma-buf.
    pub dmabuf_import: bool,
    /// A syncobj timeline device: the compositor can wait on points and keep its own timeline.
    pub timelines: bool,
}

impl From<&Capabilities> for BridgeCaps {
    fn from(caps: &Capabilities) -> Self {
        BridgeCaps {
            dmabuf_export: caps.dmabuf_export.is_yes(),
            dmabuf_import: caps.dmabuf_import.is_yes(),
            timelines: caps.syncobj_global(),
        }
    }
}

/// Everything one commit's plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInput {
    /// What the commit attached.
    pub buffer: Attach,
    /// How the client synchronises it.
    pub sync: SyncMode,
    /// What the dma-buf fence snapshot found; `None` when none was taken (not needed, or the
    /// export failed).
    pub snapshot: Option<FenceState>,
    /// What the client's acquire point was found to be; `None` when it was not asked
    /// ([`needs_acquire_state`]), which plans a point like one not submitted yet.
    pub acquire: Option<AcquireState>,
    /// The client's producer, as classified so far.
    pub producer: ProducerClass,
    /// What the machine can do.
    pub caps: BridgeCaps,
}

/// What the client's acquire point was found to be when it committed: one query whether it
/// has signalled, and while it has not, one export of its fence as a sync_file (the kernel's
/// answer says whether the client has submitted the work yet). See [`needs_acquire_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcquireState {
    /// Signalled already: nothing to wait for or publish, and no fence to hand on.
    Signalled,
    /// It has a fence, still running, now exported as a sync_file: the commit waits on that
    /// file, and implicit readers get it on the dma-buf.
    Submitted,
    /// No fence yet: the client committed before submitting its work. The commit waits on the
    /// timeline (`SYNCOBJ_EVENTFD`, or the waiter thread), which wakes it only once the point
    /// has signalled, when a fence put on the dma-buf would have nothing left to guard.
    NotSubmitted,
}

/// What to wait for before the commit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acquire {
    /// Nothing: apply now.
    Nothing,
    /// Hold the commit until the snapshot's merged fence signals.
    WaitSnapshot,
    /// Hold the commit until the client's acquire point signals, waiting on its timeline (the
    /// point has no fence yet).
    WaitAcquirePoint(TimelinePoint),
    /// Hold the commit until the client's acquire point signals, polling the sync_file its
    /// fence was exported as ([`AcquireState::Submitted`]).
    WaitAcquireFence(TimelinePoint),
    /// A dma-buf that may still be being written, and no way to wait for it: the kernel lacks
    /// `EXPORT_SYNC_FILE`, or the snapshot failed. Apply now and say so; only a renderer that
    /// syncs implicitly in the kernel (GL drivers do) still waits for the writer.
    CannotWait,
}

/// Which explicit fence to hand the renderer, KMS and capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handoff {
    /// None needed: the contents are ready when the commit applies.
    Nothing,
    /// A sync_file: the snapshot's merged fence, or the acquire point exported as one.
    SyncFile,
    /// The sync_file, and the same fence as a point on the compositor's own timeline (for
    /// consumers that take timeline points, such as PipeWire's explicit sync).
    SyncFileAndTimelinePoint,
}

/// What to put on the client's dma-buf for implicit consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Publish {
    /// Nothing.
    Nothing,
    /// Import the acquire point's fence as a write fence on every distinct dma-buf of the
    /// buffer, so that implicit readers (KMS without an in-fence, capture, encoders) wait for
    /// the explicit client's rendering too.
    ImportAcquireAsWriteFence,
}

/// How and when the buffer goes back to the client ([`super::release`] keeps the books).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Release {
    /// Nothing to give back: the commit attached no buffer and set no release point.
    Nothing,
    /// `wl_buffer.release` as soon as the compositor has its copy, even while the surface still
    /// shows it (shm: the renderer uploads a copy).
    AfterCopy,
    /// `wl_buffer.release` when the buffer is replaced, without waiting for the compositor's
    /// reads: a fencing producer's next write waits for the compositor's read fence on the
    /// dma-buf by itself (implicit sync).
    WhenReplaced,
    /// `wl_buffer.release` when the buffer is replaced and the compositor's read fence has
    /// signalled: the producer would not wait for it.
    WhenReadsDone,
    /// Signal this release point when the buffer is replaced, from the compositor's read fence
    /// (right away when nothing of the compositor's reads the buffer).
    SignalReleasePointFromReadFence(TimelinePoint),
}

/// One commit's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitPlan {
    /// What to wait for before the commit applies.
    pub acquire: Acquire,
    /// Which explicit fence to hand on.
    pub handoff: Handoff,
    /// What to put on the dma-buf.
    pub publish: Publish,
    /// How the buffer goes back.
    pub release: Release,
}

/// Whether to snapshot the dma-buf's fences for this commit: only an implicitly synchronised
/// dma-buf needs it (an acquire point says all there is to wait for), and only where the
/// kernel can export.
pub fn needs_snapshot(buffer: Attach, sync: &SyncMode, caps: BridgeCaps) -> bool {
    matches!(buffer, Attach::DmaBuf { unique_planes, .. } if unique_planes > 0)
        && sync.acquire_point().is_none()
        && caps.dmabuf_export
}

/// Whether to find the acquire point's [`AcquireState`] for this commit: only where the plan
/// would wait for the point (a dma-buf, or no buffer with a release point after it).
pub fn needs_acquire_state(buffer: Attach, sync: &SyncMode) -> bool {
    sync.acquire_point().is_some()
        && match buffer {
            Attach::DmaBuf { .. } => true,
            Attach::Keep | Attach::Null => sync.release_point().is_some(),
            Attach::Shm(()) => false,
        }
}

/// How to wait for `point` in the state it was found in.
fn wait_for_acquire(point: TimelinePoint, state: Option<AcquireState>) -> Acquire {
    match state {
        Some(AcquireState::Signalled) => Acquire::Nothing,
        Some(AcquireState::Submitted) => Acquire::WaitAcquireFence(point),
        Some(AcquireState::NotSubmitted) | None => Acquire::WaitAcquirePoint(point),
    }
}

/// Whether a read fence the compositor reports for a buffer goes onto its dma-bufs, as a read
/// fence (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`): a fencing producer's next GPU write then waits for
/// the read, which [`Release::WhenReplaced`] relies on. Only dma-bufs carry fences (shm is
/// copied), only where the kernel can import, and not when the renderer already puts its read
/// fences there itself (`renderer_publishes`, as GL drivers with implicit sync do).
pub fn publish_read_fence(buffer: Attach, caps: BridgeCaps, renderer_publishes: bool) -> bool {
    matches!(buffer, Attach::DmaBuf { unique_planes, .. } if unique_planes > 0)
        && caps.dmabuf_import
        && !renderer_publishes
}

/// The decision table.
pub fn plan_commit(input: &CommitInput) -> CommitPlan {
    let CommitInput {
        buffer,
        sync,
        snapshot,
        acquire: acquire_state,
        producer,
        caps,
    } = *input;
    let release_point = sync.release_point();
    let acquire_point = sync.acquire_point();
    // A fence to hand on, where consumers must wait for one: a timeline point only where the
    // compositor has a timeline to put it on.
    let handoff = if caps.timelines {
        Handoff::SyncFileAndTimelinePoint
    } else {
        Handoff::SyncFile
    };

    match buffer {
        // No buffer: nothing to read, so nothing to wait for or publish. A release point set
        // anyway (a tolerated no_buffer) is still signalled, or the client could wait forever;
        // after the acquire point, so that the client's timeline never runs ahead of its own
        // rendering.
        Attach::Keep | Attach::Null => CommitPlan {
            acquire: match (acquire_point, release_point) {
                (Some(acquire), Some(_)) => wait_for_acquire(acquire, acquire_state),
                _ => Acquire::Nothing,
            },
            handoff: Handoff::Nothing,
            publish: Publish::Nothing,
            release: release_point
                .map_or(Release::Nothing, Release::SignalReleasePointFromReadFence),
        },
        // shm needs no fences: the client wrote it with the CPU before committing, and the
        // renderer reads a copy. An acquire point on it (a tolerated unsupported_buffer) guards
        // nothing; a release point is still signalled.
        Attach::Shm(()) => CommitPlan {
            acquire: Acquire::Nothing,
            handoff: Handoff::Nothing,
            publish: Publish::Nothing,
            release: release_point
                .map_or(Release::AfterCopy, Release::SignalReleasePointFromReadFence),
        },
        Attach::DmaBuf { unique_planes, .. } => {
            let (acquire, handoff) = match acquire_point {
                // Explicit: the acquire point says when the buffer is ready; the dma-buf's own
                // fences are not consulted (no snapshot). Signalled already: nothing to wait
                // for or hand on.
                Some(point) => match wait_for_acquire(point, acquire_state) {
                    Acquire::Nothing => (Acquire::Nothing, Handoff::Nothing),
                    wait => (wait, handoff),
                },
                // Nothing on it can be fenced.
                None if unique_planes == 0 => (Acquire::Nothing, Handoff::Nothing),
                // No EXPORT_SYNC_FILE: no snapshot, so nothing to wait on.
                None if !caps.dmabuf_export => (Acquire::CannotWait, Handoff::Nothing),
                None => match snapshot {
                    // The snapshot is the right wait: fences added after the commit (the
                    // client's next frame) do not delay this one.
                    Some(FenceState::Pending) => (Acquire::WaitSnapshot, handoff),
                    // Fast path: nothing pending, nothing to wait for or hand on.
                    Some(FenceState::Signalled | FenceState::NoFence) => {
                        (Acquire::Nothing, Handoff::Nothing)
                    }
                    None => (Acquire::CannotWait, Handoff::Nothing),
                },
            };
            // An explicit client's rendering may leave no fence on the dma-buf (NVIDIA, Vulkan):
            // implicit consumers would read too early unless the acquire fence is put there —
            // while it runs: a signalled point, or one the bridge learns has a fence only once
            // it has signalled (not submitted at commit), leaves nothing to guard.
            let running = acquire_point.is_some() && acquire_state == Some(AcquireState::Submitted);
            let publish = if running && caps.dmabuf_import && unique_planes > 0 {
                Publish::ImportAcquireAsWriteFence
            } else {
                Publish::Nothing
            };
            let release = match (release_point, producer) {
                // The client waits for its release point, so it cannot reuse the buffer before
                // the compositor's reads finish, whoever wrote it.
                (Some(point), _) => Release::SignalReleasePointFromReadFence(point),
                // A fencing producer honours the read fence left on the dma-buf; an explicit
                // client without a release point (AcquireOnly) may not, so it never gets here.
                (None, ProducerClass::Fencing) if acquire_point.is_none() => Release::WhenReplaced,
                // Non-fencing producers (V4L2, CPU fills) ignore implicit fences, and an
                // unclassified one may be one of them: give the buffer back only when the
                // compositor's reads are done, or it is overwritten while being read.
                (None, _) => Release::WhenReadsDone,
            };
            CommitPlan {
                acquire,
                handoff,
                publish,
                release,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_zero_is_planned_as_no_point() {
        let (a, r, zero) = (point(1, 7), point(2, 1), point(1, 0));
        let cases = [
            (
                SyncMode::Explicit {
                    acquire: a,
                    release: r,
                },
                SyncMode::Explicit {
                    acquire: a,
                    release: r,
                },
            ),
            (
                SyncMode::Explicit {
                    acquire: zero,
                    release: r,
                },
                SyncMode::ReleaseOnly(r),
            ),
            (
                SyncMode::Explicit {
                    acquire: a,
                    release: zero,
                },
                SyncMode::AcquireOnly(a),
            ),
            (
                SyncMode::Explicit {
                    acquire: zero,
                    release: zero,
                },
                SyncMode::Implicit,
            ),
            (SyncMode::AcquireOnly(zero), SyncMode::Implicit),
            (SyncMode::ReleaseOnly(zero), SyncMode::Implicit),
            (SyncMode::Implicit, SyncMode::Implicit),
        ];
        for (given, planned) in cases {
            assert_eq!(given.without_point_zero(), planned, "{given:?}");
            assert_eq!(given.has_point_zero(), given != planned, "{given:?}");
        }
        // An acquire point 0 on a dma-buf: snapshotted and waited for like an implicit one;
        // a release point 0 is never signalled.
        let caps = BridgeCaps {
            dmabuf_export: true,
            dmabuf_import: true,
            timelines: true,
        };
        let buffer = Attach::dmabuf(1);
        let sync = SyncMode::Explicit {
            acquire: zero,
            release: point(1, 5),
        }
        .without_point_zero();
        assert!(needs_snapshot(buffer, &sync, caps));
        let plan = plan_commit(&CommitInput {
            buffer,
            sync,
            snapshot: Some(FenceState::Pending),
            acquire: None,
            producer: ProducerClass::Unknown,
            caps,
        });
        assert_eq!(plan.acquire, Acquire::WaitSnapshot);
        assert_eq!(plan.publish, Publish::Nothing);
        assert_eq!(
            plan.release,
            Release::SignalReleasePointFromReadFence(point(1, 5))
        );
        let sync = SyncMode::Explicit {
            acquire: point(1, 3),
            release: zero,
        }
        .without_point_zero();
        let plan = plan_commit(&CommitInput {
            buffer,
            sync,
            snapshot: None,
            acquire: None,
            producer: ProducerClass::Fencing,
            caps,
        });
        assert_eq!(plan.acquire, Acquire::WaitAcquirePoint(point(1, 3)));
        assert_eq!(plan.release, Release::WhenReadsDone, "nothing to signal");
    }

    const fn point(timeline: u64, value: u64) -> TimelinePoint {
        TimelinePoint::new(timeline, value)
    }

    const BUFFERS: [Attach; 6] = [
        Attach::Keep,
        Attach::Null,
        Attach::Shm(()),
        Attach::dmabuf(0),
        Attach::dmabuf(1),
        Attach::dmabuf(3),
    ];
    const SYNCS: [SyncMode; 5] = [
        SyncMode::Implicit,
        SyncMode::Explicit {
            acquire: point(1, 7),
            release: point(1, 8),
        },
        SyncMode::Explicit {
            acquire: point(1, 7),
            release: point(2, 1),
        },
        SyncMode::AcquireOnly(point(1, 7)),
        SyncMode::ReleaseOnly(point(2, 1)),
    ];
    const SNAPSHOTS: [Option<FenceState>; 4] = [
        None,
        Some(FenceState::Pending),
        Some(FenceState::Signalled),
        Some(FenceState::NoFence),
    ];
    const ACQUIRES: [Option<AcquireState>; 4] = [
        None,
        Some(AcquireState::Signalled),
        Some(AcquireState::Submitted),
        Some(AcquireState::NotSubmitted),
    ];
    const PRODUCERS: [ProducerClass; 3] = [
        ProducerClass::Unknown,
        ProducerClass::Fencing,
        ProducerClass::NonFencing,
    ];

    fn all_caps() -> impl Iterator<Item = BridgeCaps> {
        (0..8).map(|bits| BridgeCaps {
            dmabuf_export: bits & 1 != 0,
            dmabuf_import: bits & 2 != 0,
            timelines: bits & 4 != 0,
        })
    }

    fn all_inputs() -> impl Iterator<Item = CommitInput> {
        BUFFERS.into_iter().flat_map(|buffer| {
            SYNCS.into_iter().flat_map(move |sync| {
                SNAPSHOTS.into_iter().flat_map(move |snapshot| {
                    ACQUIRES.into_iter().flat_map(move |acquire| {
                        PRODUCERS.into_iter().flat_map(move |producer| {
                            all_caps().map(move |caps| CommitInput {
                                buffer,
                                sync,
                                snapshot,
                                acquire,
                                producer,
                                caps,
                            })
                        })
                    })
                })
            })
        })
    }

    #[test]
    fn invariants_hold_for_every_combination() {
        let mut count = 0;
        for input in all_inputs() {
            count += 1;
            let plan = plan_commit(&input);
            let why = format!("{input:?} -> {plan:?}");
            let is_dmabuf = matches!(input.buffer, Attach::DmaBuf { .. });
            let snapshots = needs_snapshot(input.buffer, &input.sync, input.caps);

            // Never wait on shm.
            if input.buffer == Attach::Shm(()) {
                assert_eq!(plan.acquire, Acquire::Nothing, "{why}");
            }
            // Never publish without import support, or onto anything but a dma-buf, or
            // anything but a running acquire fence.
            if plan.publish == Publish::ImportAcquireAsWriteFence {
                assert!(input.caps.dmabuf_import, "{why}");
                assert!(is_dmabuf, "{why}");
                assert!(input.sync.acquire_point().is_some(), "{why}");
                assert_eq!(input.acquire, Some(AcquireState::Submitted), "{why}");
            }
            // The acquire point's state is asked for exactly where the plan waits for it.
            let waits_for_point = matches!(
                plan.acquire,
                Acquire::WaitAcquirePoint(_) | Acquire::WaitAcquireFence(_)
            );
            let asks = needs_acquire_state(input.buffer, &input.sync);
            if input.acquire != Some(AcquireState::Signalled) {
                assert_eq!(asks, waits_for_point, "{why}");
            }
            // Explicit never snapshots, and waits for exactly its acquire point when there is
            // a buffer: on its fence once submitted, on the timeline before; not at all once
            // signalled.
            if let Some(acquire) = input.sync.acquire_point() {
                assert!(!snapshots, "{why}");
                assert_ne!(plan.acquire, Acquire::WaitSnapshot, "{why}");
                assert_ne!(plan.acquire, Acquire::CannotWait, "{why}");
                if is_dmabuf {
                    let expected = match input.acquire {
                        Some(AcquireState::Signalled) => Acquire::Nothing,
                        Some(AcquireState::Submitted) => Acquire::WaitAcquireFence(acquire),
                        Some(AcquireState::NotSubmitted) | None => {
                            Acquire::WaitAcquirePoint(acquire)
                        }
                    };
                    assert_eq!(plan.acquire, expected, "{why}");
                }
            } else {
                assert!(!waits_for_point, "{why}");
            }
            // A snapshot is waited for only when taken, needed and pending.
            if plan.acquire == Acquire::WaitSnapshot {
                assert!(snapshots, "{why}");
                assert_eq!(input.snapshot, Some(FenceState::Pending), "{why}");
            }
            // Snapshots need EXPORT_SYNC_FILE; without one a dma-buf cannot be waited for.
            if snapshots {
                assert!(input.caps.dmabuf_export && is_dmabuf, "{why}");
            }
            if plan.acquire == Acquire::CannotWait {
                assert!(is_dmabuf && input.sync.acquire_point().is_none(), "{why}");
                assert!(
                    !input.caps.dmabuf_export || input.snapshot.is_none(),
                    "{why}"
                );
            }
            // No timeline handoff without timelines; a handoff only with something to wait on.
            if plan.handoff == Handoff::SyncFileAndTimelinePoint {
                assert!(input.caps.timelines, "{why}");
            }
            if plan.handoff != Handoff::Nothing {
                assert!(
                    matches!(
                        plan.acquire,
                        Acquire::WaitSnapshot
                            | Acquire::WaitAcquirePoint(_)
                            | Acquire::WaitAcquireFence(_)
                    ),
                    "{why}"
                );
            }
            // Release is always defined: a release point is never dropped, and only a commit
            // without a buffer or release point has nothing to give back.
            match input.sync.release_point() {
                Some(point) => assert_eq!(
                    plan.release,
                    Release::SignalReleasePointFromReadFence(point),
                    "{why}"
                ),
                None => assert_eq!(
                    plan.release == Release::Nothing,
                    matches!(input.buffer, Attach::Keep | Attach::Null),
                    "{why}"
                ),
            }
            // Only a proven fencing producer gets its buffer back before the reads are done.
            if plan.release == Release::WhenReplaced {
                assert_eq!(input.producer, ProducerClass::Fencing, "{why}");
                assert_eq!(input.sync, SyncMode::Implicit, "{why}");
            }
            if input.producer == ProducerClass::NonFencing && is_dmabuf {
                assert!(
                    matches!(
                        plan.release,
                        Release::WhenReadsDone | Release::SignalReleasePointFromReadFence(_)
                    ),
                    "{why}"
                );
            }
        }
        assert_eq!(
            count,
            BUFFERS.len() * SYNCS.len() * SNAPSHOTS.len() * ACQUIRES.len() * PRODUCERS.len() * 8
        );
    }

    fn input(buffer: Attach, sync: SyncMode, snapshot: Option<FenceState>) -> CommitInput {
        CommitInput {
            buffer,
            sync,
            snapshot,
            acquire: None,
            producer: ProducerClass::Unknown,
            caps: BridgeCaps {
                dmabuf_export: true,
                dmabuf_import: true,
                timelines: true,
            },
        }
    }

    const DMABUF: Attach = Attach::dmabuf(2);

    #[test]
    fn shm_needs_no_fences() {
        let plan = plan_commit(&input(Attach::Shm(()), SyncMode::Implicit, None));
        assert_eq!(
            plan,
            CommitPlan {
                acquire: Acquire::Nothing,
                handoff: Handoff::Nothing,
                publish: Publish::Nothing,
                release: Release::AfterCopy,
            }
        );
    }

    #[test]
    fn implicit_dmabuf_waits_only_for_a_pending_snapshot() {
        assert!(needs_snapshot(
            DMABUF,
            &SyncMode::Implicit,
            input(DMABUF, SyncMode::Implicit, None).caps
        ));
        let pending = plan_commit(&input(
            DMABUF,
            SyncMode::Implicit,
            Some(FenceState::Pending),
        ));
        assert_eq!(pending.acquire, Acquire::WaitSnapshot);
        assert_eq!(pending.handoff, Handoff::SyncFileAndTimelinePoint);
        assert_eq!(pending.publish, Publish::Nothing);
        for state in [FenceState::Signalled, FenceState::NoFence] {
            let ready = plan_commit(&input(DMABUF, SyncMode::Implicit, Some(state)));
            assert_eq!(ready.acquire, Acquire::Nothing);
            assert_eq!(ready.handoff, Handoff::Nothing);
        }
    }

    #[test]
    fn without_export_an_implicit_dmabuf_cannot_be_waited_for() {
        let mut commit = input(DMABUF, SyncMode::Implicit, None);
        commit.caps.dmabuf_export = false;
        assert!(!needs_snapshot(commit.buffer, &commit.sync, commit.caps));
        assert_eq!(plan_commit(&commit).acquire, Acquire::CannotWait);
    }

    #[test]
    fn explicit_waits_publishes_and_signals_from_the_read_fence() {
        let (acquire, release) = (point(1, 7), point(1, 8));
        let mut commit = input(DMABUF, SyncMode::Explicit { acquire, release }, None);
        assert!(needs_acquire_state(commit.buffer, &commit.sync));
        commit.acquire = Some(AcquireState::Submitted);
        assert_eq!(
            plan_commit(&commit),
            CommitPlan {
                acquire: Acquire::WaitAcquireFence(acquire),
                handoff: Handoff::SyncFileAndTimelinePoint,
                publish: Publish::ImportAcquireAsWriteFence,
                release: Release::SignalReleasePointFromReadFence(release),
            }
        );
        commit.caps.dmabuf_import = false;
        commit.caps.timelines = false;
        let plan = plan_commit(&commit);
        assert_eq!(plan.publish, Publish::Nothing);
        assert_eq!(plan.handoff, Handoff::SyncFile);
    }

    #[test]
    fn an_acquire_point_is_planned_by_what_it_was_found_to_be() {
        let (acquire, release) = (point(1, 7), point(1, 8));
        let mut commit = input(DMABUF, SyncMode::Explicit { acquire, release }, None);
        // Signalled at commit: applied at once, nothing published, no fence to hand on.
        commit.acquire = Some(AcquireState::Signalled);
        let plan = plan_commit(&commit);
        assert_eq!(
            (plan.acquire, plan.publish, plan.handoff),
            (Acquire::Nothing, Publish::Nothing, Handoff::Nothing)
        );
        // Not submitted yet: the wait on the timeline fires only once the point has
        // signalled, so there is never a running fence to publish.
        commit.acquire = Some(AcquireState::NotSubmitted);
        let plan = plan_commit(&commit);
        assert_eq!(plan.acquire, Acquire::WaitAcquirePoint(acquire));
        assert_eq!(plan.publish, Publish::Nothing);
        assert_eq!(plan.handoff, Handoff::SyncFileAndTimelinePoint);
        // shm: an acquire point guards nothing, so it is not even asked about.
        assert!(!needs_acquire_state(
            Attach::Shm(()),
            &SyncMode::Explicit { acquire, release }
        ));
    }

    #[test]
    fn release_depends_on_the_producer() {
        let mut commit = input(DMABUF, SyncMode::Implicit, Some(FenceState::NoFence));
        for (producer, release) in [
            (ProducerClass::Fencing, Release::WhenReplaced),
            (ProducerClass::Unknown, Release::WhenReadsDone),
            (ProducerClass::NonFencing, Release::WhenReadsDone),
        ] {
            commit.producer = producer;
            assert_eq!(plan_commit(&commit).release, release, "{producer:?}");
        }
    }

    #[test]
    fn tolerated_half_explicit_modes() {
        let mut commit = input(DMABUF, SyncMode::AcquireOnly(point(1, 7)), None);
        commit.producer = ProducerClass::Fencing;
        let plan = plan_commit(&commit);
        assert_eq!(plan.acquire, Acquire::WaitAcquirePoint(point(1, 7)));
        assert_eq!(plan.release, Release::WhenReadsDone);

        let commit = input(
            DMABUF,
            SyncMode::ReleaseOnly(point(2, 3)),
            Some(FenceState::Pending),
        );
        assert!(needs_snapshot(commit.buffer, &commit.sync, commit.caps));
        let plan = plan_commit(&commit);
        assert_eq!(plan.acquire, Acquire::WaitSnapshot);
        assert_eq!(
            plan.release,
            Release::SignalReleasePointFromReadFence(point(2, 3))
        );
    }

    #[test]
    fn points_without_a_buffer_still_release() {
        let (acquire, release) = (point(1, 7), point(1, 8));
        let plan = plan_commit(&input(
            Attach::Keep,
            SyncMode::Explicit { acquire, release },
            None,
        ));
        assert_eq!(plan.acquire, Acquire::WaitAcquirePoint(acquire));
        assert_eq!(
            plan.release,
            Release::SignalReleasePointFromReadFence(release)
        );
        let plan = plan_commit(&input(Attach::Keep, SyncMode::Implicit, None));
        assert_eq!(plan.release, Release::Nothing);
    }

    #[test]
    fn read_fences_go_on_dma_bufs_unless_the_renderer_puts_them_there() {
        let all = BridgeCaps {
            dmabuf_export: true,
            dmabuf_import: true,
            timelines: true,
        };
        let no_import = BridgeCaps {
            dmabuf_import: false,
            ..all
        };
        let cases = [
            (Attach::dmabuf(2), all, false, true),
            (Attach::dmabuf(2), all, true, false),
            (Attach::dmabuf(1), no_import, false, false),
            (Attach::dmabuf(0), all, false, false),
            (Attach::Shm(()), all, false, false),
            (Attach::Keep, all, false, false),
        ];
        for (buffer, caps, renderer_publishes, publish) in cases {
            assert_eq!(
                publish_read_fence(buffer, caps, renderer_publishes),
                publish,
                "{buffer:?} {caps:?} renderer publishes: {renderer_publishes}"
            );
        }
    }
}
