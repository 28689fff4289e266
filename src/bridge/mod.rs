//! The policy core: for each `wl_surface.commit`, what to wait for before it applies
//! (acquire), which explicit fence to hand the renderer, KMS or capture (handoff), what to put
//! on the client's dma-buf for implicit consumers (publish), and when and how to give the
//! buffer back (release).
//!
//! Everything here is pure: no smithay types, no ioctls, no fds. It decides; the smithay layer
//! executes with [`crate::fence`], [`crate::timeline`] and [`crate::source`]. Keeping the
//! decisions apart makes every rule testable on the host, over every combination of inputs.
//!
//! - [`plan`]: the per-commit decision table ([`plan::plan_commit`]).
//! - [`protocol`]: linux-drm-syncobj-v1 validation, every protocol error with its code, and a
//!   [`protocol::Leniency`] that tolerates the errors that are safe to tolerate.
//! - [`producer_class`]: tells fencing producers from non-fencing ones (V4L2 decoders,
//!   CPU-filled buffers) from what each commit's fence snapshot found.
//! - [`release`]: the bookkeeping that guarantees every release obligation (a release point or
//!   a `wl_buffer.release`) is discharged exactly once, whatever happens to the surface, and
//!   only after every read of the buffer.
//! - [`release_order`]: the order a timeline's release points may signal in, whichever surface
//!   they belong to: never a point while a lower one on the same timeline is still owed.
//!
//! Objects the smithay layer owns (timelines, buffers, fences) appear here as plain ids it
//! assigns: [`TimelineId`], [`BufferId`], [`FenceId`].
//!
//! # How to use
//! One commit of a linux-drm-syncobj-v1 client, from validation to release:
//! ```no_run
//! use fencebridge::bridge::plan::{self, BridgeCaps, CommitInput};
//! use fencebridge::bridge::producer_class::ProducerClassifier;
//! use fencebridge::bridge::protocol::{self, Leniency, PendingState};
//! use fencebridge::bridge::release::{ReleaseAction, ReleaseEvent, ReleaseTracker};
//! use fencebridge::bridge::{Attach, BufferId, FenceId, TimelineId, TimelinePoint};
//! # fn f() -> Result<(), protocol::ProtocolError> {
//! let caps = BridgeCaps::from(&fencebridge::caps::Capabilities::probe());
//! let classifier = ProducerClassifier::new(); // one per surface, kept across commits
//! let mut tracker = ReleaseTracker::new(); // one per surface
//!
//! // Requests: set_acquire_point(timeline 1, 0, 7), set_release_point(timeline 1, 0, 8),
//! // wl_surface.attach(a dma-buf), then commit.
//! let mut pending = PendingState::default();
//! pending.set_acquire_point(TimelineId(1), 0, 7);
//! pending.set_release_point(TimelineId(1), 0, 8);
//! pending.attached = Attach::dmabuf(1);
//! let release_point = TimelinePoint { timeline: TimelineId(1), value: 8 };
//! let sync = protocol::resolve_commit(&pending, Leniency::Strict)?; // Err: post it, stop here
//! for tolerated in &sync.tolerated {
//!     tracing::warn!("client bug tolerated: {tolerated}");
//! }
//!
//! let buffer = pending.attached;
//! // Explicit clients are never snapshotted; implicit ones are, and then the snapshot's
//! // state goes into `snapshot` and `classifier.observe(..)`.
//! assert!(!plan::needs_snapshot(buffer, &sync.mode, caps));
//! let plan = plan::plan_commit(&CommitInput {
//!     buffer,
//!     sync: sync.mode,
//!     snapshot: None,
//!     acquire: None,
//!     producer: classifier.class(),
//!     caps,
//! });
//! // ... execute plan.acquire / plan.handoff / plan.publish; once the commit applies:
//! let attach = pending.attached.map(|()| BufferId(42));
//! let applied = ReleaseEvent::Committed { attach, release: plan.release };
//! tracker.handle(applied).into_iter().for_each(execute); // (nothing due yet)
//! // Each frame that reads the buffer reports its read fence:
//! let frame = ReleaseEvent::Read { buffer: BufferId(42), fence: Some(FenceId(3)) };
//! tracker.handle(frame).into_iter().for_each(execute);
//! // The next commit (or the surface's death) discharges the release point:
//! let due = tracker.handle(ReleaseEvent::SurfaceDestroyed);
//! let after = vec![FenceId(3)];
//! let signal = ReleaseAction::SignalReleasePoint { point: release_point, after };
//! assert_eq!(due, [signal]);
//! // Signal point 8 once fence 3 has signalled — in timeline order: see `release_order`.
//! due.into_iter().for_each(execute);
//! # Ok(()) }
//! # fn execute(_: ReleaseAction) {}
//! ```

use std::fmt;

pub mod plan;
pub mod producer_class;
pub mod protocol;
pub mod release;
pub mod release_order;

/// A client timeline (a `wp_linux_drm_syncobj_timeline_v1`), as the smithay layer numbers
/// them. Two ids are the same timeline exactly when they name the same protocol object, which
/// is what linux-drm-syncobj-v1's conflicting_points rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimelineId(pub u64);

/// What a commit attached: the one description of it that every decision reads (the protocol's
/// checks, the plan, the release books). `B` names the buffer where the buffer matters: a
/// [`BufferId`] in the release books, the `wl_buffer` in the smithay layer, nothing (`()`)
/// where only its kind counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Attach<B = ()> {
    /// No attach since the last commit: the current buffer stays.
    #[default]
    Keep,
    /// `wl_surface.attach(NULL)`: the surface has no buffer any more.
    Null,
    /// A buffer the compositor copies on the CPU: `wl_shm`, single-pixel buffers.
    Shm(B),
    /// A linux-dmabuf buffer.
    DmaBuf {
        /// The buffer.
        buffer: B,
        /// How many distinct dma-bufs its planes are (a snapshot exports once per distinct
        /// dma-buf). linux-dmabuf never makes one with 0; if it comes, no fence can live on
        /// it, so it is planned like a buffer with nothing to wait for.
        unique_planes: usize,
    },
}

impl Attach {
    /// A dma-buf of `unique_planes` distinct dma-bufs, where only the kind counts.
    pub const fn dmabuf(unique_planes: usize) -> Self {
        Attach::DmaBuf {
            buffer: (),
            unique_planes,
        }
    }
}

impl<B> Attach<B> {
    /// The buffer attached, if any.
    pub fn buffer(&self) -> Option<&B> {
        match self {
            Attach::Keep | Attach::Null => None,
            Attach::Shm(buffer) | Attach::DmaBuf { buffer, .. } => Some(buffer),
        }
    }

    /// The same attach, its buffer named by `name`.
    pub fn map<C>(self, name: impl FnOnce(B) -> C) -> Attach<C> {
        match self {
            Attach::Keep => Attach::Keep,
            Attach::Null => Attach::Null,
            Attach::Shm(buffer) => Attach::Shm(name(buffer)),
            Attach::DmaBuf {
                buffer,
                unique_planes,
            } => Attach::DmaBuf {
                buffer: name(buffer),
                unique_planes,
            },
        }
    }

    /// Only its kind: what the protocol's checks and the plan read.
    pub fn kind(&self) -> Attach {
        match self {
            Attach::Keep => Attach::Keep,
            Attach::Null => Attach::Null,
            Attach::Shm(_) => Attach::Shm(()),
            Attach::DmaBuf { unique_planes, .. } => Attach::dmabuf(*unique_planes),
        }
    }
}

/// A point on a client timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimelinePoint {
    /// The timeline.
    pub timeline: TimelineId,
    /// The point's value (see [`protocol::point_from_hi_lo`]).
    pub value: u64,
}

impl TimelinePoint {
    /// Point `value` on timeline `timeline`.
    pub const fn new(timeline: u64, value: u64) -> Self {
        TimelinePoint {
            timeline: TimelineId(timeline),
            value,
        }
    }

    /// Whether it is a point at all (0 is not: [`crate::timeline::names_a_point`]).
    pub const fn names_a_point(&self) -> bool {
        crate::timeline::names_a_point(self.value)
    }
}

impl fmt::Display for TimelinePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "point {} on timeline {}", self.value, self.timeline.0)
    }
}

/// A client buffer (a `wl_buffer`), as the smithay layer numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u64);

/// A compositor read fence (the sync point a frame that read a buffer ends with), as the
/// smithay layer numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FenceId(pub u64);
