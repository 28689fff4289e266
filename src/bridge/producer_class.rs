//! Tells fencing dma-buf producers from non-fencing ones, from what each commit's fence
//! snapshot found ([`FenceState`]).
//!
//! A GPU driver puts a write fence on the dma-buf for every frame and makes its next write wait
//! for the compositor's read fence. A V4L2 decoder, a CPU-filled udmabuf or some drivers do
//! neither (docs/kernel-facts.md: vivid exports the kernel's stub even while the buffer is being
//! filled, and ignores fences imported into it). Such a producer must not get its buffer back
//! before the compositor's reads are done, or it overwrites what is being shown.
//!
//! The evidence is one-sided: the kernel skips signalled fences on export, so a fencing
//! producer whose frame finished before the commit exports the same stub as a producer that
//! never fences. Only a pending fence proves fencing; only a long run of stubs suggests the
//! opposite. So:
//! - [`ProducerClass::Fencing`] as soon as one snapshot is pending;
//! - [`ProducerClass::NonFencing`] after N consecutive stub exports ([`FenceState::NoFence`]),
//!   reported once with [`BecameNonFencing`];
//! - [`ProducerClass::Unknown`] otherwise, which the plan treats like non-fencing (the safe
//!   side: a deferred release only costs a fencing producer a little latency).
//!
//! A real fence that had already signalled ([`FenceState::Signalled`]) breaks a run of stubs
//! but proves nothing: on kernels where the stub cannot be recognised (7.x without a
//! calibrated [`crate::fence::StubSignature`]) every stub reads like that, and counting it as
//! fencing would hand a V4L2 buffer back too early.
//!
//! One classifier per surface: a client often has two producers, a GPU interface (fencing)
//! and a V4L2 decoder's or a camera's frames on a subsurface (non-fencing), and classifying the
//! client by whichever surface commits first would hand the video's buffers back while they are
//! still being read (or hold the interface's back for nothing).
//!
//! A surface's first verdict sticks for its life, both ways:
//! - Fencing never becomes NonFencing: after a pending fence has been seen, runs of stubs are
//!   what a fast GPU client produces on every idle spell; they carry no evidence, and flipping
//!   would flap between classes and re-report.
//! - NonFencing never becomes Fencing: a pending fence after a long run of stubs on the same
//!   surface most likely comes from a second producer feeding it (a GL overlay drawn into the
//!   video's surface now and then), and the non-fencing one still needs the deferred release.
//!
//! So a surface is not re-learnt when its buffers change. The snapshots could only ever show
//! a switch towards fencing (a pending fence), and that is the switch where re-learning buys
//! nothing but a little latency; a switch towards a non-fencing device shows as stubs, which a
//! fencing producer shows too whenever it is idle. The one unsafe case left is a surface proven
//! fencing that later shows frames of a device that ignores fences, on the same surface; video
//! players give video its own surface (a subsurface), which is classified afresh.
//!
//! # How to use
//! ```no_run
//! use fencebridge::bridge::producer_class::ProducerClassifier;
//! use fencebridge::fence::FenceState;
//! let mut classifier = ProducerClassifier::new(); // per surface
//! // After each implicit dma-buf commit's snapshot:
//! if let Some(event) = classifier.observe(FenceState::NoFence) {
//!     tracing::info!("wl_surface@7: {event}");
//! }
//! let class = classifier.class(); // into plan::CommitInput::producer
//! ```

use std::fmt;

use crate::fence::FenceState;

/// How many consecutive stub exports make a producer non-fencing, unless configured otherwise.
pub const DEFAULT_NON_FENCING_AFTER: u32 = 8;

/// What a producer is, as far as the commits seen so far tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProducerClass {
    /// Not enough evidence yet; planned like [`ProducerClass::NonFencing`].
    #[default]
    Unknown,
    /// Puts write fences on its dma-bufs (seen pending at least once) and honours read fences.
    Fencing,
    /// Exported the kernel's stub commit after commit: attaches no fences, and so must not be
    /// handed a buffer back before the compositor's reads are done.
    NonFencing,
}

/// Reported once, when a classifier decides its producer is non-fencing. Log it and expose it:
/// it is the answer to "why is this video flashing" on boards with V4L2 decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BecameNonFencing {
    /// How many consecutive commits exported the stub.
    pub consecutive_stub_commits: u32,
    /// How many dma-buf commits had been observed in all.
    pub commits_observed: u64,
}

impl fmt::Display for BecameNonFencing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "non-fencing dma-buf producer: {} consecutive commits (of {}) carried no fence; \
             its buffers are released only after the compositor's reads are done",
            self.consecutive_stub_commits, self.commits_observed
        )
    }
}

/// Classifies one producer (a client, or a surface) from its snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerClassifier {
    non_fencing_after: u32,
    class: ProducerClass,
    consecutive_stubs: u32,
    commits_observed: u64,
}

impl Default for ProducerClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ProducerClassifier {
    /// A classifier that calls a producer non-fencing after
    /// [`DEFAULT_NON_FENCING_AFTER`] consecutive stub exports.
    pub fn new() -> Self {
        Self::with_threshold(DEFAULT_NON_FENCING_AFTER)
    }

    /// A classifier that calls a producer non-fencing after `commits` consecutive stub
    /// exports (at least 1).
    pub fn with_threshold(commits: u32) -> Self {
        ProducerClassifier {
            non_fencing_after: commits.max(1),
            class: ProducerClass::Unknown,
            consecutive_stubs: 0,
            commits_observed: 0,
        }
    }

    /// The class so far.
    pub fn class(&self) -> ProducerClass {
        self.class
    }

    /// Records one commit's snapshot (taken whenever [`needs_snapshot`] said so: implicit
    /// dma-buf commits; an explicit client's dma-buf is not snapshotted). Returns the event,
    /// once, when the producer turns out non-fencing.
    ///
    /// [`needs_snapshot`]: super::plan::needs_snapshot
    pub fn observe(&mut self, snapshot: FenceState) -> Option<BecameNonFencing> {
        self.commits_observed = self.commits_observed.saturating_add(1);
        self.consecutive_stubs = match snapshot {
            FenceState::NoFence => self.consecutive_stubs.saturating_add(1),
            FenceState::Pending | FenceState::Signalled => 0,
        };
        if self.class != ProducerClass::Unknown {
            return None;
        }
        if snapshot == FenceState::Pending {
            self.class = ProducerClass::Fencing;
            None
        } else if self.consecutive_stubs >= self.non_fencing_after {
            self.class = ProducerClass::NonFencing;
            Some(BecameNonFencing {
                consecutive_stub_commits: self.consecutive_stubs,
                commits_observed: self.commits_observed,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [FenceState; 3] = [
        FenceState::Pending,
        FenceState::Signalled,
        FenceState::NoFence,
    ];

    /// The definition, written the other way round: the class after `seq` is decided by
    /// whichever comes first, a pending snapshot or the end of a run of `n` stubs.
    fn expected(seq: &[FenceState], n: usize) -> ProducerClass {
        let mut run = 0;
        for &state in seq {
            match state {
                FenceState::Pending => return ProducerClass::Fencing,
                FenceState::Signalled => run = 0,
                FenceState::NoFence => {
                    run += 1;
                    if run == n {
                        return ProducerClass::NonFencing;
                    }
                }
            }
        }
        ProducerClass::Unknown
    }

    #[test]
    fn every_sequence_up_to_nine_commits() {
        let n = 3;
        let mut sequences = 0;
        for len in 0..=9u32 {
            for code in 0..3usize.pow(len) {
                let seq: Vec<FenceState> =
                    (0..len).map(|i| STATES[code / 3usize.pow(i) % 3]).collect();
                let mut classifier = ProducerClassifier::with_threshold(n as u32);
                let mut events = 0;
                for (i, &state) in seq.iter().enumerate() {
                    let before = classifier.class();
                    let event = classifier.observe(state);
                    assert_eq!(classifier.class(), expected(&seq[..=i], n), "{seq:?}");
                    // Reported exactly when the class turns non-fencing.
                    let turned = before != ProducerClass::NonFencing
                        && classifier.class() == ProducerClass::NonFencing;
                    assert_eq!(event.is_some(), turned, "{seq:?}");
                    if let Some(event) = event {
                        assert_eq!(event.consecutive_stub_commits, n as u32);
                        assert_eq!(event.commits_observed, i as u64 + 1);
                    }
                    events += usize::from(event.is_some());
                    // A verdict never changes.
                    if before != ProducerClass::Unknown {
                        assert_eq!(classifier.class(), before, "{seq:?}");
                    }
                }
                assert!(events <= 1, "{seq:?}");
                sequences += 1;
            }
        }
        assert_eq!(sequences, (0..=9).map(|l| 3usize.pow(l)).sum::<usize>());
    }

    #[test]
    fn unknown_until_the_default_threshold() {
        let mut classifier = ProducerClassifier::default();
        for _ in 1..DEFAULT_NON_FENCING_AFTER {
            assert_eq!(classifier.observe(FenceState::NoFence), None);
            assert_eq!(classifier.class(), ProducerClass::Unknown);
        }
        let event = classifier.observe(FenceState::NoFence).expect("reported");
        assert_eq!(event.consecutive_stub_commits, DEFAULT_NON_FENCING_AFTER);
        assert!(event.to_string().contains("8 consecutive commits"));
        assert_eq!(classifier.class(), ProducerClass::NonFencing);
        // Reported once, and sticky even when a fence shows up later.
        for state in STATES.into_iter().cycle().take(100) {
            assert_eq!(classifier.observe(state), None);
        }
        assert_eq!(classifier.class(), ProducerClass::NonFencing);
    }

    #[test]
    fn fencing_at_the_first_pending_and_for_good() {
        let mut classifier = ProducerClassifier::with_threshold(2);
        assert_eq!(classifier.observe(FenceState::Pending), None);
        assert_eq!(classifier.class(), ProducerClass::Fencing);
        for _ in 0..1000 {
            assert_eq!(classifier.observe(FenceState::NoFence), None);
        }
        assert_eq!(classifier.class(), ProducerClass::Fencing);
    }

    #[test]
    fn signalled_breaks_a_run_but_proves_nothing() {
        let mut classifier = ProducerClassifier::with_threshold(2);
        for _ in 0..100 {
            classifier.observe(FenceState::NoFence);
            classifier.observe(FenceState::Signalled);
        }
        assert_eq!(classifier.class(), ProducerClass::Unknown);
    }

    #[test]
    fn threshold_zero_means_one() {
        let mut classifier = ProducerClassifier::with_threshold(0);
        assert!(classifier.observe(FenceState::NoFence).is_some());
    }
}
