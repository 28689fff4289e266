//! The books that guarantee a client always gets its buffer back: per surface, the buffer the
//! compositor holds and what it owes for it (a release point to signal, a `wl_buffer.release`
//! to send), discharged exactly once whatever happens — a new commit, the surface's death, the
//! client's disconnection. A release point never signalled stalls the client forever
//! (linux-drm-syncobj-v1 has no timeout); one signalled twice, or too early, lets it overwrite
//! what is being shown.
//!
//! Deferral is carried by the actions, not by the books: an obligation is discharged when the
//! buffer leaves the surface, as an action that says which read fences to wait for first
//! (`after`): every read of the buffer reported while it was current and not known to be done
//! (two outputs on two GPUs, a capture on another queue: each pass's fence counts, whatever
//! order they finish in). The smithay layer executes it when all of them have signalled, or at
//! once when there are none. So nothing lingers here after the buffer is replaced. A release
//! point's place on its timeline is another matter, settled by
//! [`super::release_order::ReleaseOrder`].
//!
//! What the tracker needs from the smithay layer:
//! - [`ReleaseEvent::Committed`] when a commit *applies* (after the plan's acquire wait), with
//!   the plan's [`Release`];
//! - [`ReleaseEvent::Read`] after every render pass (frame, output, capture) that read the
//!   surface's buffer, with the fence that pass ends with, before the next commit is fed;
//! - [`ReleaseTracker::read_done`] when a read fence it keeps has signalled (so that the set
//!   of fences a buffer waits for stays as small as the reads still running);
//! - no reads of a buffer after it is replaced (close animations read a copy);
//! - [`ReleaseEvent::SurfaceDestroyed`] / [`ReleaseEvent::ClientDisconnected`].
//!
//! # How to use
//! ```no_run
//! use fencebridge::bridge::plan::Release;
//! use fencebridge::bridge::release::{ReleaseAction, ReleaseEvent, ReleaseTracker};
//! use fencebridge::bridge::{Attach, BufferId, FenceId};
//! # fn execute(_: ReleaseAction) {}
//! let mut tracker = ReleaseTracker::new(); // per surface
//! let a = BufferId(1);
//! let release = Release::WhenReadsDone;
//! let attach = Attach::DmaBuf { buffer: a, unique_planes: 1 };
//! let commit = ReleaseEvent::Committed { attach, release };
//! tracker.handle(commit).into_iter().for_each(execute);
//! // Two passes read it (two outputs); the first to report finishes last.
//! let output_1 = ReleaseEvent::Read { buffer: a, fence: Some(FenceId(9)) };
//! tracker.handle(output_1).into_iter().for_each(execute);
//! let output_2 = ReleaseEvent::Read { buffer: a, fence: Some(FenceId(10)) };
//! tracker.handle(output_2).into_iter().for_each(execute);
//! let actions = tracker.handle(ReleaseEvent::Committed {
//!     attach: Attach::Null,
//!     release: Release::Nothing,
//! });
//! let after = vec![FenceId(9), FenceId(10)]; // both
//! assert_eq!(actions, [ReleaseAction::SendBufferRelease { buffer: a, after }]);
//! ```

use super::plan::Release;
use super::{Attach, BufferId, FenceId, TimelinePoint};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseEvent {
    /// A commit applied, with the plan's release decision.
    Committed {
        /// What it attached.
        attach: Attach<BufferId>,
        /// How to give the buffer back ([`super::plan::CommitPlan::release`]).
        release: Release,
    },
    /// A render pass read `buffer`; its reads are done when `fence` signals (`None`: done
    /// already, as after a CPU copy).
    Read {
        /// The buffer read.
        buffer: BufferId,
        /// The pass's read fence.
        fence: Option<FenceId>,
    },
    /// The `wl_surface` was destroyed.
    SurfaceDestroyed,
    /// The client is gone, with all its objects.
    ClientDisconnected,
}

/// What to do to discharge an obligation. `after`: wait for every one of these read fences
/// first (in the order they were reported); none: now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReleaseAction {
    /// Signal the client's release point.
    SignalReleasePoint {
        /// The point.
        point: TimelinePoint,
        /// The read fences to wait for first.
        after: Vec<FenceId>,
    },
    /// Send `wl_buffer.release`.
    SendBufferRelease {
        /// The buffer.
        buffer: BufferId,
        /// The read fences to wait for first.
        after: Vec<FenceId>,
    },
    /// The client is gone, so there is no `wl_buffer.release` to send: drop whatever is kept
    /// for this buffer.
    ForgetBuffer {
        /// The buffer.
        buffer: BufferId,
    },
}

/// The ways a `wl_buffer.release` can be owed, the least patient first: a buffer committed
/// again while still held keeps the most patient of its ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BufferRelease {
    AfterCopy,
    WhenReplaced,
    WhenReadsDone,
}

/// The buffer the surface holds and what is owed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    buffer: BufferId,
    /// A `wl_buffer.release`: one per stretch of time the buffer is held, however many commits
    /// attached it, as the release means "no longer used".
    release: Option<BufferRelease>,
    /// The release point of the latest commit that attached it.
    point: Option<TimelinePoint>,
    /// Every read fence reported for it and not known to be done, oldest first.
    reads: Vec<FenceId>,
}

impl Held {
    fn new(buffer: BufferId, release: Option<BufferRelease>, point: Option<TimelinePoint>) -> Self {
        Held {
            buffer,
            release,
            point,
            reads: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Surface,
    Client,
}

/// The release books of one surface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseTracker {
    current: Option<Held>,
    gone: Option<Gone>,
}

impl ReleaseTracker {
    /// Empty books for a new surface.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many obligations are outstanding (0 after the surface or client is gone).
    pub fn outstanding(&self) -> usize {
        self.current.as_ref().map_or(0, |held| {
            usize::from(held.release.is_some()) + usize::from(held.point.is_some())
        })
    }

    /// A read fence of the current buffer has signalled: nothing needs to wait for it any more.
    /// (Fences the books no longer keep are ignored.)
    pub fn read_done(&mut self, fence: FenceId) {
        if let Some(held) = &mut self.current {
            held.reads.retain(|read| *read != fence);
        }
    }

    /// Books one event; returns what to do now (or after the given fences).
    #[must_use = "the actions discharge obligations: dropping a release point stalls the client"]
    pub fn handle(&mut self, event: ReleaseEvent) -> Vec<ReleaseAction> {
        let mut actions = Vec::new();
        match event {
            ReleaseEvent::Committed { attach, release } => {
                self.committed(attach, release, &mut actions)
            }
            ReleaseEvent::Read { buffer, fence } => self.read(buffer, fence, &mut actions),
            ReleaseEvent::SurfaceDestroyed => {
                self.gone.get_or_insert(Gone::Surface);
                self.retire(&mut actions);
            }
            ReleaseEvent::ClientDisconnected => {
                self.gone = Some(Gone::Client);
                self.retire(&mut actions);
            }
        }
        actions
    }

    fn committed(
        &mut self,
        attach: Attach<BufferId>,
        release: Release,
        actions: &mut Vec<ReleaseAction>,
    ) {
        let (buffer_release, point) = match release {
            Release::Nothing => (None, None),
            Release::AfterCopy => (Some(BufferRelease::AfterCopy), None),
            Release::WhenReplaced => (Some(BufferRelease::WhenReplaced), None),
            Release::WhenReadsDone => (Some(BufferRelease::WhenReadsDone), None),
            Release::SignalReleasePointFromReadFence(point) => (None, Some(point)),
        };
        match attach.buffer() {
            // The surface is gone: nothing will read what it commits, so pay at once.
            Some(&buffer) if self.gone.is_some() => {
                self.discharge(Held::new(buffer, buffer_release, point), actions)
            }
            Some(&buffer) => self.attach(buffer, buffer_release, point, actions),
            // No buffer for the points of this commit (a tolerated no_buffer): nothing of ours
            // reads for them. A wl_buffer.release with no buffer names nothing to owe.
            None => {
                if attach == Attach::Null {
                    self.retire(actions);
                }
                if let Some(point) = point {
                    actions.push(ReleaseAction::SignalReleasePoint {
                        point,
                        after: Vec::new(),
                    });
                }
            }
        }
    }

    fn attach(
        &mut self,
        buffer: BufferId,
        release: Option<BufferRelease>,
        point: Option<TimelinePoint>,
        actions: &mut Vec<ReleaseAction>,
    ) {
        match &mut self.current {
            // Attached again while held: still in use, so the wl_buffer.release stays owed (the
            // most patient way wins); the replaced commit's release point is due now, after the
            // reads so far.
            Some(held) if held.buffer == buffer => {
                if let Some(old) = held.point.take() {
                    actions.push(ReleaseAction::SignalReleasePoint {
                        point: old,
                        after: held.reads.clone(),
                    });
                }
                held.release = held.release.max(release);
                held.point = point;
            }
            _ => {
                self.retire(actions);
                self.current = Some(Held::new(buffer, release, point));
            }
        }
    }

    fn read(&mut self, buffer: BufferId, fence: Option<FenceId>, actions: &mut Vec<ReleaseAction>) {
        // Reads of anything but the current buffer come too late to change what was paid.
        let Some(held) = self.current.as_mut().filter(|held| held.buffer == buffer) else {
            return;
        };
        // Every pass counts, whatever order they finish in. A pass with no fence adds nothing
        // to wait for; it does not make earlier reads done.
        if let Some(fence) = fence.filter(|f| !held.reads.contains(f)) {
            held.reads.push(fence);
        }
        // The compositor has its copy: the client may have the buffer back while it is shown.
        // The renderer copied it as it drew (GLES uploads wl_shm, pixman reads it on the CPU),
        // so the pass's fence is the GPU's work on the copy, and nothing waits for it.
        if held.release == Some(BufferRelease::AfterCopy) {
            held.release = None;
            actions.push(ReleaseAction::SendBufferRelease {
                buffer,
                after: Vec::new(),
            });
        }
    }

    /// The current buffer leaves the surface: pay what is owed for it.
    fn retire(&mut self, actions: &mut Vec<ReleaseAction>) {
        if let Some(held) = self.current.take() {
            self.discharge(held, actions);
        }
    }

    fn discharge(&self, held: Held, actions: &mut Vec<ReleaseAction>) {
        if let Some(release) = held.release {
            actions.push(if self.gone == Some(Gone::Client) {
                ReleaseAction::ForgetBuffer {
                    buffer: held.buffer,
                }
            } else {
                ReleaseAction::SendBufferRelease {
                    buffer: held.buffer,
                    // A fencing producer waits for the read fences on the dma-buf by itself;
                    // a copied buffer is not read after its copy.
                    after: match release {
                        BufferRelease::WhenReplaced | BufferRelease::AfterCopy => Vec::new(),
                        BufferRelease::WhenReadsDone => held.reads.clone(),
                    },
                }
            });
        }
        if let Some(point) = held.point {
            // Signalled even for a client that is gone: another process may share the timeline.
            actions.push(ReleaseAction::SignalReleasePoint {
                point,
                after: held.reads,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const A: BufferId = BufferId(1);
    const B: BufferId = BufferId(2);

    fn point(value: u64) -> TimelinePoint {
        TimelinePoint::new(value, value)
    }

    fn commit(attach: Attach<BufferId>, release: Release) -> ReleaseEvent {
        ReleaseEvent::Committed { attach, release }
    }

    /// A dma-buf commit of `buffer` (the books do not tell kinds apart).
    fn buffer(buffer: BufferId) -> Attach<BufferId> {
        Attach::DmaBuf {
            buffer,
            unique_planes: 1,
        }
    }

    fn nothing_due(tracker: &mut ReleaseTracker, event: ReleaseEvent) {
        assert_eq!(tracker.handle(event), []);
    }

    fn read(buffer: BufferId, fence: u64) -> ReleaseEvent {
        ReleaseEvent::Read {
            buffer,
            fence: Some(FenceId(fence)),
        }
    }

    #[test]
    fn shm_is_released_after_the_copy_while_still_shown() {
        let mut t = ReleaseTracker::new();
        assert_eq!(t.handle(commit(buffer(A), Release::AfterCopy)), []);
        let copied = t.handle(ReleaseEvent::Read {
            buffer: A,
            fence: None,
        });
        assert_eq!(
            copied,
            [ReleaseAction::SendBufferRelease {
                buffer: A,
                after: vec![]
            }]
        );
        assert_eq!(t.outstanding(), 0);
        // Replacing it later owes nothing more.
        assert_eq!(t.handle(commit(buffer(B), Release::AfterCopy)), []);
        // Never copied: released when replaced.
        assert_eq!(
            t.handle(commit(Attach::Null, Release::Nothing)),
            [ReleaseAction::SendBufferRelease {
                buffer: B,
                after: vec![]
            }]
        );
    }

    #[test]
    fn a_copied_shm_buffer_waits_for_no_read_fence() {
        // The renderer copies wl_shm as it draws (GLES uploads it, pixman reads it on the
        // CPU): the pass's fence is the GPU's work on the copy, not a read of the client's
        // memory. Waiting for it gave a two-buffer client its buffer back after its next frame
        // callback (weston-simple-shm: "Both buffers busy at redraw()").
        let mut t = ReleaseTracker::new();
        nothing_due(&mut t, commit(buffer(A), Release::AfterCopy));
        assert_eq!(
            t.handle(read(A, 7)),
            [ReleaseAction::SendBufferRelease {
                buffer: A,
                after: vec![]
            }]
        );
        nothing_due(&mut t, read(A, 8));
        assert_eq!(t.handle(commit(buffer(B), Release::AfterCopy)), []);
    }

    #[test]
    fn fencing_producers_get_the_buffer_back_without_waiting() {
        let mut t = ReleaseTracker::new();
        nothing_due(&mut t, commit(buffer(A), Release::WhenReplaced));
        nothing_due(&mut t, read(A, 5));
        assert_eq!(
            t.handle(commit(buffer(B), Release::WhenReplaced)),
            [ReleaseAction::SendBufferRelease {
                buffer: A,
                after: vec![]
            }]
        );
    }

    #[test]
    fn deferred_release_and_release_points_wait_for_every_read() {
        let mut t = ReleaseTracker::new();
        nothing_due(&mut t, commit(buffer(A), Release::WhenReadsDone));
        nothing_due(&mut t, read(A, 5));
        nothing_due(&mut t, read(A, 6));
        nothing_due(
            &mut t,
            ReleaseEvent::Read {
                buffer: A,
                fence: None,
            },
        );
        nothing_due(&mut t, read(B, 7)); // not the surface's buffer: ignored
        let actions = t.handle(commit(
            buffer(B),
            Release::SignalReleasePointFromReadFence(point(8)),
        ));
        assert_eq!(
            actions,
            [ReleaseAction::SendBufferRelease {
                buffer: A,
                after: vec![FenceId(5), FenceId(6)]
            }]
        );
        assert_eq!(
            t.handle(ReleaseEvent::SurfaceDestroyed),
            [ReleaseAction::SignalReleasePoint {
                point: point(8),
                after: vec![]
            }]
        );
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn a_release_waits_for_every_read_still_running() {
        // Two outputs and a capture read the buffer; the capture's read is seen done.
        let mut t = ReleaseTracker::new();
        let release = Release::SignalReleasePointFromReadFence(point(9));
        nothing_due(&mut t, commit(buffer(A), release));
        nothing_due(&mut t, read(A, 1));
        nothing_due(&mut t, read(A, 2));
        nothing_due(&mut t, read(A, 3));
        nothing_due(&mut t, read(A, 1)); // reported twice: kept once
        t.read_done(FenceId(3));
        t.read_done(FenceId(7)); // never kept: nothing changes
        assert_eq!(
            t.handle(commit(Attach::Null, Release::Nothing)),
            [ReleaseAction::SignalReleasePoint {
                point: point(9),
                after: vec![FenceId(1), FenceId(2)]
            }]
        );
    }

    #[test]
    fn attached_again_one_release_but_every_point() {
        let mut t = ReleaseTracker::new();
        nothing_due(&mut t, commit(buffer(A), Release::WhenReplaced));
        nothing_due(&mut t, read(A, 1));
        assert_eq!(t.handle(commit(buffer(A), Release::WhenReadsDone)), []);
        assert_eq!(t.outstanding(), 1);
        nothing_due(
            &mut t,
            commit(
                buffer(A),
                Release::SignalReleasePointFromReadFence(point(3)),
            ),
        );
        // The replaced commit's point is due at once; the buffer, still shown, is not.
        assert_eq!(
            t.handle(commit(
                buffer(A),
                Release::SignalReleasePointFromReadFence(point(4)),
            )),
            [ReleaseAction::SignalReleasePoint {
                point: point(3),
                after: vec![FenceId(1)]
            }]
        );
        // The most patient way won.
        assert_eq!(
            t.handle(commit(Attach::Null, Release::Nothing)),
            [
                ReleaseAction::SendBufferRelease {
                    buffer: A,
                    after: vec![FenceId(1)]
                },
                ReleaseAction::SignalReleasePoint {
                    point: point(4),
                    after: vec![FenceId(1)]
                }
            ]
        );
    }

    #[test]
    fn points_without_a_buffer_are_signalled_at_once() {
        let mut t = ReleaseTracker::new();
        nothing_due(&mut t, commit(buffer(A), Release::WhenReadsDone));
        let actions = t.handle(commit(
            Attach::Keep,
            Release::SignalReleasePointFromReadFence(point(2)),
        ));
        assert_eq!(
            actions,
            [ReleaseAction::SignalReleasePoint {
                point: point(2),
                after: vec![]
            }]
        );
        assert_eq!(t.outstanding(), 1); // A is still shown
    }

    #[test]
    fn a_gone_client_gets_no_buffer_release_but_its_points() {
        let mut t = ReleaseTracker::new();
        nothing_due(
            &mut t,
            commit(
                buffer(A),
                Release::SignalReleasePointFromReadFence(point(1)),
            ),
        );
        nothing_due(&mut t, read(A, 4));
        assert_eq!(
            t.handle(ReleaseEvent::ClientDisconnected),
            [ReleaseAction::SignalReleasePoint {
                point: point(1),
                after: vec![FenceId(4)]
            }]
        );
        assert_eq!(
            t.handle(commit(buffer(B), Release::WhenReadsDone)),
            [ReleaseAction::ForgetBuffer { buffer: B }]
        );
        assert_eq!(t.handle(ReleaseEvent::SurfaceDestroyed), []);
        assert_eq!(t.outstanding(), 0);
    }

    /// xorshift64*: enough randomness for event sequences, no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// The alphabet of events, by number; points and fences are fresh each time, so that
    /// every one can be traced. The last symbol is no event: the oldest read of the current
    /// buffer is done ([`ReleaseTracker::read_done`]).
    const SYMBOLS: usize = 4 * 5 + 3 * 2 + 2 + 1;
    const READ_DONE: usize = SYMBOLS - 1;

    struct Fresh(u64);

    fn event(symbol: usize, fresh: &mut Fresh) -> ReleaseEvent {
        fresh.0 += 1;
        let buffers = [A, B, BufferId(3)];
        if symbol < 20 {
            let attach = [Attach::Keep, Attach::Null, buffer(A), buffer(B)][symbol / 5];
            let release = [
                Release::Nothing,
                Release::AfterCopy,
                Release::WhenReplaced,
                Release::WhenReadsDone,
                Release::SignalReleasePointFromReadFence(point(fresh.0)),
            ][symbol % 5];
            commit(attach, release)
        } else if symbol < 26 {
            let i = symbol - 20;
            ReleaseEvent::Read {
                buffer: buffers[i / 2],
                fence: (i % 2 == 1).then_some(FenceId(fresh.0)),
            }
        } else if symbol == 26 {
            ReleaseEvent::SurfaceDestroyed
        } else {
            ReleaseEvent::ClientDisconnected
        }
    }

    /// What is owed, stated independently of the tracker, and checked after every event.
    #[derive(Default)]
    struct Model {
        tracker: ReleaseTracker,
        current: Option<BufferId>,
        client_gone: bool,
        surface_gone: bool,
        /// wl_buffer.release owed, and whether it may skip the read fence.
        owed_releases: HashMap<BufferId, Release>,
        /// Release points owed, with the buffer they were committed with.
        owed_points: HashMap<TimelinePoint, Option<BufferId>>,
        /// The read fences of the current buffer not known to be done, oldest first.
        reads: HashMap<BufferId, Vec<FenceId>>,
    }

    fn patience(release: Release) -> u8 {
        match release {
            Release::AfterCopy => 0,
            Release::WhenReplaced => 1,
            _ => 2,
        }
    }

    impl Model {
        fn step(&mut self, event: ReleaseEvent, trace: &[String]) {
            let gone = self.client_gone || self.surface_gone;
            // Reads of the current buffer count before the event's actions are judged.
            if let ReleaseEvent::Read {
                buffer,
                fence: Some(fence),
            } = event
            {
                if !gone && self.current == Some(buffer) {
                    self.reads.entry(buffer).or_default().push(fence);
                }
            }
            // What becomes owed and current.
            let mut new_current = self.current;
            match event {
                ReleaseEvent::Committed { attach, release } => {
                    let buffer = attach.buffer().copied();
                    match release {
                        Release::SignalReleasePointFromReadFence(p) => {
                            assert!(self.owed_points.insert(p, buffer).is_none());
                        }
                        Release::Nothing => {}
                        kind => {
                            if let Some(b) = buffer {
                                let owed = self.owed_releases.entry(b).or_insert(kind);
                                if patience(kind) > patience(*owed) {
                                    *owed = kind;
                                }
                            }
                        }
                    }
                    match attach {
                        _ if gone => new_current = None,
                        Attach::Keep => {}
                        Attach::Null => new_current = None,
                        Attach::Shm(b) | Attach::DmaBuf { buffer: b, .. } => new_current = Some(b),
                    }
                }
                ReleaseEvent::Read { .. } => {}
                ReleaseEvent::SurfaceDestroyed | ReleaseEvent::ClientDisconnected => {
                    new_current = None
                }
            }
            let client_gone = self.client_gone || event == ReleaseEvent::ClientDisconnected;

            for action in self.tracker.handle(event) {
                match &action {
                    ReleaseAction::SignalReleasePoint { point, after } => {
                        // Exactly once, and after every read of its buffer still running.
                        let buffer = self.owed_points.remove(point).unwrap_or_else(|| {
                            panic!("{action:?} twice or never owed, after {trace:?}")
                        });
                        let expected = buffer.map(|b| self.reads_of(b)).unwrap_or_default();
                        assert_eq!(*after, expected, "{action:?} after {trace:?}");
                    }
                    ReleaseAction::SendBufferRelease { buffer, after } => {
                        let buffer = *buffer;
                        assert!(!client_gone, "{action:?} after {trace:?}");
                        let kind = self.owed_releases.remove(&buffer).unwrap_or_else(|| {
                            panic!("{action:?} twice or never owed, after {trace:?}")
                        });
                        // Never handed back while shown, except the copied shm.
                        if new_current == Some(buffer) {
                            assert_eq!(kind, Release::AfterCopy, "{action:?} after {trace:?}");
                            assert!(
                                matches!(event, ReleaseEvent::Read { .. }),
                                "{action:?} after {trace:?}"
                            );
                        }
                        // A fencing producer waits by itself; a copy is not read again.
                        let expected = match kind {
                            Release::WhenReplaced | Release::AfterCopy => Vec::new(),
                            _ => self.reads_of(buffer),
                        };
                        assert_eq!(*after, expected, "{action:?} after {trace:?}");
                    }
                    ReleaseAction::ForgetBuffer { buffer } => {
                        assert!(client_gone, "{action:?} after {trace:?}");
                        assert!(
                            self.owed_releases.remove(buffer).is_some(),
                            "{action:?} after {trace:?}"
                        );
                    }
                }
            }

            if new_current != self.current {
                if let Some(old) = self.current {
                    self.reads.remove(&old);
                }
            }
            self.current = new_current;
            self.client_gone = client_gone;
            self.surface_gone |= event == ReleaseEvent::SurfaceDestroyed;
            // Nothing is owed for a buffer the surface no longer holds.
            for b in self.owed_releases.keys() {
                assert_eq!(Some(*b), self.current, "after {trace:?}");
            }
            for b in self.owed_points.values() {
                assert!(b.is_some() && *b == self.current, "after {trace:?}");
            }
            assert_eq!(
                self.tracker.outstanding(),
                self.owed_releases.len() + self.owed_points.len(),
                "after {trace:?}"
            );
        }

        fn reads_of(&self, buffer: BufferId) -> Vec<FenceId> {
            self.reads.get(&buffer).cloned().unwrap_or_default()
        }

        /// The oldest read of the current buffer is done (or, with none, a fence the books
        /// never kept: nothing changes).
        fn read_done(&mut self, trace: &mut Vec<String>) {
            let reads = self.current.and_then(|b| self.reads.get_mut(&b));
            let fence = reads
                .filter(|reads| !reads.is_empty())
                .map_or(FenceId(0), |reads| reads.remove(0));
            trace.push(format!("read_done({fence:?})"));
            self.tracker.read_done(fence);
            assert_eq!(
                self.tracker.outstanding(),
                self.owed_releases.len() + self.owed_points.len(),
                "after {trace:?}"
            );
        }

        fn run(symbols: impl IntoIterator<Item = usize>, end: ReleaseEvent) {
            let mut model = Model::default();
            let mut fresh = Fresh(0);
            let mut trace = Vec::new();
            for symbol in symbols {
                if symbol == READ_DONE {
                    model.read_done(&mut trace);
                    continue;
                }
                let event = event(symbol, &mut fresh);
                trace.push(format!("{event:?}"));
                model.step(event, &trace);
            }
            trace.push(format!("{end:?}"));
            model.step(end, &trace);
            assert!(model.owed_releases.is_empty() && model.owed_points.is_empty());
            assert_eq!(model.tracker.outstanding(), 0);
        }
    }

    const ENDS: [ReleaseEvent; 2] = [
        ReleaseEvent::SurfaceDestroyed,
        ReleaseEvent::ClientDisconnected,
    ];

    #[test]
    fn every_sequence_of_three_events() {
        for code in 0..SYMBOLS.pow(3) {
            let symbols = [
                code % SYMBOLS,
                code / SYMBOLS % SYMBOLS,
                code / SYMBOLS / SYMBOLS,
            ];
            for end in ENDS {
                Model::run(symbols, end);
            }
        }
    }

    #[test]
    fn random_sequences() {
        let mut rng = Rng(0x5eed_f00d_cafe_b0ba);
        for _ in 0..20_000 {
            let len = rng.below(60);
            // Surface and client deaths are rare, so that long lives get tested too.
            let symbols: Vec<usize> = (0..len)
                .map(|_| {
                    if rng.below(30) == 0 {
                        26 + rng.below(2)
                    } else if rng.below(8) == 0 {
                        READ_DONE
                    } else {
                        rng.below(26)
                    }
                })
                .collect();
            Model::run(symbols, ENDS[rng.below(2)]);
        }
    }
}
