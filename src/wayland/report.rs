//! What the bridge did, per client: the sync path of each commit, how long commits waited,
//! which of its surfaces have a non-fencing producer, releases deferred, waits overdue, protocol
//! errors. The reference compositor and the tools print these.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;

use crate::bridge::producer_class::{BecameNonFencing, ProducerClass};

/// The way one commit was synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommitPath {
    /// Nothing attached, or a null attach.
    NoBuffer,
    /// A buffer the compositor copies on the CPU (`wl_shm`).
    Shm,
    /// An implicit dma-buf with nothing pending at commit: applied at once, no source.
    ImplicitReady,
    /// An implicit dma-buf held until the snapshot of its write fences signalled.
    ImplicitWaited,
    /// An implicit dma-buf that could not be waited for (no `EXPORT_SYNC_FILE`, or it failed).
    ImplicitUnwaited,
    /// linux-drm-syncobj-v1 with its acquire point already signalled: applied at once.
    ExplicitReady,
    /// linux-drm-syncobj-v1, held until its acquire point signalled.
    ExplicitWaited,
}

impl fmt::Display for CommitPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommitPath::NoBuffer => "no buffer",
            CommitPath::Shm => "shm",
            CommitPath::ImplicitReady => "implicit, ready",
            CommitPath::ImplicitWaited => "implicit, waited for the snapshot",
            CommitPath::ImplicitUnwaited => "implicit, could not wait",
            CommitPath::ExplicitReady => "explicit, ready",
            CommitPath::ExplicitWaited => "explicit, waited for the acquire point",
        })
    }
}

/// How long held commits waited, from the commit request to their fence signalling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Waits finished.
    pub count: u64,
    /// The longest.
    pub max: Duration,
    /// The latest waits (at most [`WaitStats::KEPT`]), for the median.
    pub recent: VecDeque<Duration>,
}

impl WaitStats {
    /// How many recent waits are kept for the median.
    pub const KEPT: usize = 4096;

    pub(crate) fn record(&mut self, waited: Duration) {
        self.count += 1;
        self.max = self.max.max(waited);
        if self.recent.len() == Self::KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(waited);
    }

    /// The median of the recent waits.
    pub fn median(&self) -> Option<Duration> {
        let mut sorted: Vec<_> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied()
    }
}

/// What the bridge did for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReport {
    /// The client's process, if the socket told.
    pub pid: Option<i32>,
    /// Its producers summed up (each surface is classified on its own): `NonFencing` once any
    /// of its surfaces is (they are named in [`ClientReport::non_fencing_surfaces`]), else
    /// `Fencing` once any surface fences, else `Unknown`.
    pub producer: ProducerClass,
    /// The surfaces found to have a non-fencing producer, in the order found (the first
    /// [`ClientReport::KEPT_SURFACES`]).
    pub non_fencing_surfaces: Vec<NonFencingSurface>,
    /// Non-fencing surfaces beyond those kept.
    pub more_non_fencing_surfaces: u64,
    /// Commits per sync path.
    pub commits: BTreeMap<CommitPath, u64>,
    /// How long its held commits waited.
    pub waits: WaitStats,
    /// `wl_buffer.release`s held back until the compositor's reads were done.
    pub releases_deferred: u64,
    /// Release points signalled (by a read fence or at once).
    pub release_points_signalled: u64,
    /// Read fences the bridge put on its dma-bufs (reads reported with a fence, unless
    /// [`Config::renderer_publishes_reads`](super::Config::renderer_publishes_reads)).
    pub read_fences_published: u64,
    /// Waits that passed the deadline.
    pub overdue_waits: u64,
    /// Commits that set a timeline point 0 (not waited for, never signalled: see
    /// [`SyncMode::without_point_zero`](crate::bridge::plan::SyncMode::without_point_zero)).
    pub zero_points: u64,
    /// Protocol errors raised on it (it was disconnected) and tolerated (lenient mode): the
    /// first [`ClientReport::KEPT_ERRORS`].
    pub protocol_errors: Vec<String>,
    /// Protocol errors beyond those kept (a lenient compositor's client that repeats one
    /// every frame must not grow the report forever).
    pub more_protocol_errors: u64,
}

impl ClientReport {
    pub(crate) fn new(pid: Option<i32>) -> Self {
        ClientReport {
            pid,
            producer: ProducerClass::Unknown,
            non_fencing_surfaces: Vec::new(),
            more_non_fencing_surfaces: 0,
            commits: BTreeMap::new(),
            waits: WaitStats::default(),
            releases_deferred: 0,
            release_points_signalled: 0,
            read_fences_published: 0,
            overdue_waits: 0,
            zero_points: 0,
            protocol_errors: Vec::new(),
            more_protocol_errors: 0,
        }
    }

    /// How many protocol error messages a report keeps.
    pub const KEPT_ERRORS: usize = 32;

    /// How many non-fencing surfaces a report names.
    pub const KEPT_SURFACES: usize = 32;

    /// One of its surfaces' producer is `class` after a commit; `became` when that commit made
    /// it non-fencing.
    pub(crate) fn surface_classified(
        &mut self,
        surface: &WlSurface,
        class: ProducerClass,
        became: Option<&BecameNonFencing>,
    ) {
        if class == ProducerClass::Fencing && self.producer == ProducerClass::Unknown {
            self.producer = ProducerClass::Fencing;
        }
        if let Some(found) = became {
            self.producer = ProducerClass::NonFencing;
            if self.non_fencing_surfaces.len() < Self::KEPT_SURFACES {
                self.non_fencing_surfaces.push(NonFencingSurface {
                    surface: surface_name(surface),
                    found: *found,
                });
            } else {
                self.more_non_fencing_surfaces += 1;
            }
        }
    }

    pub(crate) fn note_protocol_error(&mut self, message: String) {
        if self.protocol_errors.len() < Self::KEPT_ERRORS {
            self.protocol_errors.push(message);
        } else {
            self.more_protocol_errors += 1;
        }
    }

    /// Commits that took `path`.
    pub fn commits_by(&self, path: CommitPath) -> u64 {
        self.commits.get(&path).copied().unwrap_or(0)
    }

    pub(crate) fn count(&mut self, path: CommitPath) {
        *self.commits.entry(path).or_default() += 1;
    }
}

/// How reports name a surface: `wl_surface@N`, N its protocol id (what `WAYLAND_DEBUG` shows).
pub(crate) fn surface_name(surface: &WlSurface) -> String {
    format!("wl_surface@{}", surface.id().protocol_id())
}

/// A surface whose producer turned out non-fencing: its buffers are released only after the
/// compositor's reads are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFencingSurface {
    /// The surface, as `wl_surface@N`.
    pub surface: String,
    /// The evidence.
    pub found: BecameNonFencing,
}

impl fmt::Display for NonFencingSurface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.surface, self.found)
    }
}

/// A commit still waiting for its fence at the deadline: who, what, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueWait {
    /// The client's process, if known.
    pub pid: Option<i32>,
    /// The surface, as `wl_surface@N`.
    pub surface: String,
    /// The fence waited for: a sync_file's fences, or a client timeline point.
    pub fence: String,
    /// How long it has waited.
    pub waited: Duration,
    /// Whether the commit is applied anyway ([`super::OverduePolicy::ShowAnyway`]).
    pub shown_anyway: bool,
}

impl fmt::Display for OverdueWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = self.pid.map_or("?".to_owned(), |p| p.to_string());
        write!(
            f,
            "client pid {pid}: {} has waited {:.1?} for {}; {}",
            self.surface,
            self.waited,
            self.fence,
            if self.shown_anyway {
                "showing the frame anyway"
            } else {
                "still holding the commit (its previous frame stays on screen)"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_of_the_recent_waits() {
        let mut stats = WaitStats::default();
        assert_eq!(stats.median(), None);
        for ms in [5, 1, 9] {
            stats.record(Duration::from_millis(ms));
        }
        assert_eq!(stats.median(), Some(Duration::from_millis(5)));
        assert_eq!((stats.count, stats.max), (3, Duration::from_millis(9)));
        for _ in 0..WaitStats::KEPT {
            stats.record(Duration::from_millis(2));
        }
        assert_eq!(stats.recent.len(), WaitStats::KEPT);
        assert_eq!(stats.median(), Some(Duration::from_millis(2)));
        assert_eq!(stats.max, Duration::from_millis(9));
    }
}
