//! linux-drm-syncobj-v1 validation as pure logic: the per-surface pending state, every protocol
//! error with its code (staging/linux-drm-syncobj/linux-drm-syncobj-v1.xml) and a message that
//! names the values, and a [`Leniency`] for compositors that would rather log a client's bug
//! than kill the client.
//!
//! Strict is the protocol. Lenient tolerates exactly the errors whose tolerance cannot hurt
//! anyone but the client's own frame (see [`ProtocolError::is_safe_to_tolerate`]); the others
//! are raised in both modes, because tolerating them would leave a release point nobody can
//! signal correctly, and the client would stall forever instead of dying with a message.
//!
//! # How to use
//! ```no_run
//! use fencebridge::bridge::protocol::{
//!     self, Leniency, PendingState, PointRequest, Verdict,
//! };
//! use fencebridge::bridge::{Attach, TimelineId, TimelinePoint};
//! let leniency = Leniency::Lenient;
//! let mut pending = PendingState::default();
//! // set_acquire_point(timeline, hi, lo), on a surface whose wl_surface is alive:
//! let (timeline, hi, lo) = (TimelineId(1), 0, 7);
//! let point = TimelinePoint { timeline, value: protocol::point_from_hi_lo(hi, lo) };
//! match protocol::check_surface_alive(true, PointRequest::SetAcquirePoint, point) {
//!     Ok(()) => pending.set_acquire_point(timeline, hi, lo),
//!     Err(e) => match leniency.judge(e) {
//!         Verdict::Raise(e) => eprintln!("post error {} on {}: {e}", e.code(), e.interface()),
//!         Verdict::Tolerate(e) => tracing::warn!("ignored: {e}"),
//!     },
//! }
//! pending.attached = Attach::dmabuf(1);
//! // At commit: no release point was set.
//! match protocol::resolve_commit(&pending, leniency) {
//!     Ok(sync) => println!("plan with {:?}; tolerated {:?}", sync.mode, sync.tolerated),
//!     Err(e) => eprintln!("post error {} on {}: {e}", e.code(), e.interface()),
//! }
//! ```

use std::fmt;

use super::plan::SyncMode;
use super::{Attach, TimelineId, TimelinePoint};

/// A point value from the two halves a request carries: `hi << 32 | lo`.
pub const fn point_from_hi_lo(hi: u32, lo: u32) -> u64 {
    ((hi as u64) << 32) | lo as u64
}

/// A surface's double-buffered linux-drm-syncobj-v1 state, as it stands when the client
/// commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PendingState {
    /// From `set_acquire_point`.
    pub acquire: Option<TimelinePoint>,
    /// From `set_release_point`.
    pub release: Option<TimelinePoint>,
    /// From `wl_surface.attach`.
    pub attached: Attach,
}

impl PendingState {
    /// `set_acquire_point`: replaces any earlier one of this commit cycle.
    pub fn set_acquire_point(&mut self, timeline: TimelineId, hi: u32, lo: u32) {
        self.acquire = Some(TimelinePoint {
            timeline,
            value: point_from_hi_lo(hi, lo),
        });
    }

    /// `set_release_point`: replaces any earlier one of this commit cycle.
    pub fn set_release_point(&mut self, timeline: TimelineId, hi: u32, lo: u32) {
        self.release = Some(TimelinePoint {
            timeline,
            value: point_from_hi_lo(hi, lo),
        });
    }
}

/// The surface requests that can meet a destroyed `wl_surface`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointRequest {
    /// `set_acquire_point`.
    SetAcquirePoint,
    /// `set_release_point`.
    SetReleasePoint,
}

impl fmt::Display for PointRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointRequest::SetAcquirePoint => "set_acquire_point",
            PointRequest::SetReleasePoint => "set_release_point",
        })
    }
}

/// Every linux-drm-syncobj-v1 protocol error. [`ProtocolError::code`] and
/// [`ProtocolError::interface`] say what to post on which object; the message is for the
/// client's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `get_surface` on a `wl_surface` that already has a syncobj surface.
    #[error(
        "surface_exists: get_surface on a wl_surface that already has a \
         wp_linux_drm_syncobj_surface_v1 (one per surface: is EGL or Vulkan already using it?)"
    )]
    SurfaceExists,
    /// `import_timeline` with an fd that is not a usable DRM syncobj.
    #[error("invalid_timeline: import_timeline could not import the fd: {reason}")]
    InvalidTimeline {
        /// Why the import failed.
        reason: String,
    },
    /// A point request after the `wl_surface` was destroyed.
    #[error("no_surface: {request}({point}) after its wl_surface was destroyed")]
    NoSurface {
        /// The request.
        request: PointRequest,
        /// The point it tried to set.
        point: TimelinePoint,
    },
    /// A committed buffer that is not a dma-buf.
    #[error(
        "unsupported_buffer: commit with a non-dma-buf buffer (wl_shm or similar) on a surface \
         with explicit sync; only linux-dmabuf buffers support it"
    )]
    UnsupportedBuffer,
    /// Points set, but no buffer (or a null one) attached in the same commit.
    #[error(
        "no_buffer: commit with {} set but {} buffer attached",
        Points(*acquire, *release),
        if *null_attach { "a null" } else { "no" }
    )]
    NoBuffer {
        /// The acquire point, if set.
        acquire: Option<TimelinePoint>,
        /// The release point, if set.
        release: Option<TimelinePoint>,
        /// Whether the commit attached a null buffer (rather than nothing).
        null_attach: bool,
    },
    /// A buffer attached without an acquire point.
    #[error(
        "no_acquire_point: commit with a buffer attached but no acquire point{}",
        only("release", *release)
    )]
    NoAcquirePoint {
        /// The release point, if that one was set.
        release: Option<TimelinePoint>,
    },
    /// A buffer attached without a release point.
    #[error(
        "no_release_point: commit with a buffer attached but no release point{}",
        only("acquire", *acquire)
    )]
    NoReleasePoint {
        /// The acquire point, if that one was set.
        acquire: Option<TimelinePoint>,
    },
    /// Both points on one timeline, the acquire point not before the release point.
    #[error(
        "conflicting_points: acquire point {acquire} >= release point {release} on the same \
         timeline {} (the release point must come after the acquire point)",
        timeline.0
    )]
    ConflictingPoints {
        /// The timeline.
        timeline: TimelineId,
        /// The acquire point's value.
        acquire: u64,
        /// The release point's value.
        release: u64,
    },
}

/// "acquire point 7 on timeline 1 and release point 8 on timeline 1", for messages.
struct Points(Option<TimelinePoint>, Option<TimelinePoint>);

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(a), Some(r)) => write!(f, "acquire {a} and release {r}"),
            (Some(a), None) => write!(f, "acquire {a}"),
            (None, Some(r)) => write!(f, "release {r}"),
            (None, None) => write!(f, "no points"),
        }
    }
}

/// " (only the release point 8 on timeline 1)" or " (and no release point either)", for
/// messages.
fn only(which: &str, point: Option<TimelinePoint>) -> String {
    match point {
        Some(point) => format!(" (only the {which} {point})"),
        None => format!(" (and no {which} point either)"),
    }
}

/// The interface of the manager object, which manager errors are posted on.
pub const MANAGER_INTERFACE: &str = "wp_linux_drm_syncobj_manager_v1";
/// The interface of the syncobj surface object, which surface errors are posted on.
pub const SURFACE_INTERFACE: &str = "wp_linux_drm_syncobj_surface_v1";

impl ProtocolError {
    /// The error's value in its interface's `error` enum, as in the XML.
    pub fn code(&self) -> u32 {
        match self {
            ProtocolError::SurfaceExists => 0,
            ProtocolError::InvalidTimeline { .. } => 1,
            ProtocolError::NoSurface { .. } => 1,
            ProtocolError::UnsupportedBuffer => 2,
            ProtocolError::NoBuffer { .. } => 3,
            ProtocolError::NoAcquirePoint { .. } => 4,
            ProtocolError::NoReleasePoint { .. } => 5,
            ProtocolError::ConflictingPoints { .. } => 6,
        }
    }

    /// The interface whose object the error is posted on.
    pub fn interface(&self) -> &'static str {
        match self {
            ProtocolError::SurfaceExists | ProtocolError::InvalidTimeline { .. } => {
                MANAGER_INTERFACE
            }
            _ => SURFACE_INTERFACE,
        }
    }

    /// Whether a lenient compositor may log this error instead of raising it. The test is: can
    /// the commit still be carried out so that every release point is signalled after the
    /// compositor's reads, and nothing but the offending client's own frames can suffer?
    pub fn is_safe_to_tolerate(&self) -> bool {
        match self {
            // The point request is ignored: a point that never reaches a commit is no
            // obligation, and no commit can follow on a dead surface. This is the toolkit that
            // destroys the wl_surface before the WSI's syncobj object: a teardown race, not a
            // reason to kill the client.
            ProtocolError::NoSurface { .. } => true,
            // shm needs no fences (the renderer copies it); the acquire point is ignored and
            // the release point is still signalled once the copy is replaced.
            ProtocolError::UnsupportedBuffer => true,
            // No buffer to read: the release point is signalled once the acquire point has
            // (keeping the client's timeline in order); nothing is shown from it.
            ProtocolError::NoBuffer { .. } => true,
            // The buffer is acquired like an implicit client's (a snapshot of its dma-buf
            // fences); the release point is still signalled from the read fence. The worst
            // case is one early-sampled frame of that client, never a stall.
            ProtocolError::NoAcquirePoint { .. } => true,
            // The acquire point is waited for; the buffer is given back by a deferred
            // wl_buffer.release, as for an implicit client whose producer does not fence.
            ProtocolError::NoReleasePoint { .. } => true,
            // Two syncobj objects on one surface: whose points apply is undefined, and the
            // other one's release points would go unsignalled. No sane carrying on.
            ProtocolError::SurfaceExists => false,
            // No timeline: its points can neither be waited for nor signalled, so the client
            // would stall on its first release point.
            ProtocolError::InvalidTimeline { .. } => false,
            // The release point is at or before the acquire point: signalling it after our
            // reads is signalling it before the client's rendering is done (or never), so the
            // client overwrites a buffer in use or deadlocks itself.
            ProtocolError::ConflictingPoints { .. } => false,
        }
    }
}

/// How strictly to hold clients to the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Leniency {
    /// Raise every error, as the protocol says (and as KWin and Mutter do).
    #[default]
    Strict,
    /// Log the errors that are safe to tolerate ([`ProtocolError::is_safe_to_tolerate`]) and
    /// carry on; raise the rest.
    Lenient,
}

/// What to do about one protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Post it on the object: the client is disconnected.
    Raise(ProtocolError),
    /// Log it and carry on.
    Tolerate(ProtocolError),
}

impl Leniency {
    /// Raise `error`, or tolerate it if this mode allows.
    pub fn judge(self, error: ProtocolError) -> Verdict {
        match self {
            Leniency::Lenient if error.is_safe_to_tolerate() => Verdict::Tolerate(error),
            _ => Verdict::Raise(error),
        }
    }
}

/// `get_surface`: only one syncobj surface per `wl_surface`.
pub fn check_get_surface(surface_already_has_one: bool) -> Result<(), ProtocolError> {
    if surface_already_has_one {
        return Err(ProtocolError::SurfaceExists);
    }
    Ok(())
}

/// `set_acquire_point` / `set_release_point`: the `wl_surface` must still exist.
pub fn check_surface_alive(
    surface_alive: bool,
    request: PointRequest,
    point: TimelinePoint,
) -> Result<(), ProtocolError> {
    if !surface_alive {
        return Err(ProtocolError::NoSurface { request, point });
    }
    Ok(())
}

/// A commit the protocol accepts (or a lenient compositor tolerates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSync {
    /// How to synchronise it: the input to the plan. Every point the client set is kept.
    pub mode: SyncMode,
    /// The errors tolerated (lenient mode only), to be logged.
    pub tolerated: Vec<ProtocolError>,
}

/// Checks a commit of a surface with a syncobj object, as the protocol says: the first error
/// in the order Mutter checks them (unsupported_buffer, no_acquire_point, no_release_point,
/// conflicting_points; no_buffer when nothing is attached).
pub fn validate_commit(pending: &PendingState) -> Result<(), ProtocolError> {
    resolve_commit(pending, Leniency::Strict).map(|_| ())
}

/// Checks a commit of a surface with a syncobj object and says how to synchronise it. Strict:
/// the first error is returned. Lenient: every error safe to tolerate is collected instead,
/// and the first one that is not is returned. (A surface without a syncobj object is
/// [`SyncMode::Implicit`], with nothing to check.)
pub fn resolve_commit(
    pending: &PendingState,
    leniency: Leniency,
) -> Result<CommitSync, ProtocolError> {
    let PendingState {
        acquire,
        release,
        attached,
    } = *pending;
    let mut tolerated = Vec::new();
    let mut check = |error: ProtocolError| match leniency.judge(error) {
        Verdict::Raise(error) => Err(error),
        Verdict::Tolerate(error) => {
            tolerated.push(error);
            Ok(())
        }
    };
    match attached {
        Attach::Keep | Attach::Null => {
            if acquire.is_some() || release.is_some() {
                check(ProtocolError::NoBuffer {
                    acquire,
                    release,
                    null_attach: attached == Attach::Null,
                })?;
            }
        }
        Attach::Shm(()) | Attach::DmaBuf { .. } => {
            if attached == Attach::Shm(()) {
                check(ProtocolError::UnsupportedBuffer)?;
            }
            if acquire.is_none() {
                check(ProtocolError::NoAcquirePoint { release })?;
            }
            if release.is_none() {
                check(ProtocolError::NoReleasePoint { acquire })?;
            }
        }
    }
    // Checked whenever both are set, even after a tolerated no_buffer: the plan still waits
    // for the one and signals the other.
    if let (Some(a), Some(r)) = (acquire, release) {
        if a.timeline == r.timeline && a.value >= r.value {
            check(ProtocolError::ConflictingPoints {
                timeline: a.timeline,
                acquire: a.value,
                release: r.value,
            })?;
        }
    }
    Ok(CommitSync {
        mode: SyncMode::from_points(acquire, release),
        tolerated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn point(timeline: u64, value: u64) -> TimelinePoint {
        TimelinePoint::new(timeline, value)
    }

    fn pending(
        acquire: Option<TimelinePoint>,
        release: Option<TimelinePoint>,
        attached: Attach,
    ) -> PendingState {
        PendingState {
            acquire,
            release,
            attached,
        }
    }

    #[test]
    fn point_halves() {
        assert_eq!(point_from_hi_lo(0, 7), 7);
        assert_eq!(point_from_hi_lo(1, 2), (1 << 32) | 2);
        assert_eq!(point_from_hi_lo(u32::MAX, u32::MAX), u64::MAX);
        let mut state = PendingState::default();
        state.set_acquire_point(TimelineId(3), 1, 0);
        state.set_acquire_point(TimelineId(4), 0, 9); // replaces
        state.set_release_point(TimelineId(4), 2, 5);
        assert_eq!(state.acquire, Some(point(4, 9)));
        assert_eq!(state.release, Some(point(4, (2 << 32) | 5)));
    }

    #[test]
    fn codes_and_objects_match_the_xml() {
        let p = point(1, 1);
        let cases = [
            (ProtocolError::SurfaceExists, 0, MANAGER_INTERFACE),
            (
                ProtocolError::InvalidTimeline { reason: "x".into() },
                1,
                MANAGER_INTERFACE,
            ),
            (
                ProtocolError::NoSurface {
                    request: PointRequest::SetAcquirePoint,
                    point: p,
                },
                1,
                SURFACE_INTERFACE,
            ),
            (ProtocolError::UnsupportedBuffer, 2, SURFACE_INTERFACE),
            (
                ProtocolError::NoBuffer {
                    acquire: Some(p),
                    release: None,
                    null_attach: false,
                },
                3,
                SURFACE_INTERFACE,
            ),
            (
                ProtocolError::NoAcquirePoint { release: None },
                4,
                SURFACE_INTERFACE,
            ),
            (
                ProtocolError::NoReleasePoint { acquire: None },
                5,
                SURFACE_INTERFACE,
            ),
            (
                ProtocolError::ConflictingPoints {
                    timeline: TimelineId(1),
                    acquire: 2,
                    release: 1,
                },
                6,
                SURFACE_INTERFACE,
            ),
        ];
        for (error, code, interface) in cases {
            assert_eq!(error.code(), code, "{error}");
            assert_eq!(error.interface(), interface, "{error}");
        }
    }

    #[cfg(feature = "smithay")]
    #[test]
    fn codes_match_wayland_protocols() {
        use wayland_protocols::wp::linux_drm_syncobj::v1::server::{
            wp_linux_drm_syncobj_manager_v1::Error as M,
            wp_linux_drm_syncobj_surface_v1::Error as S,
        };
        let p = point(1, 1);
        assert_eq!(ProtocolError::SurfaceExists.code(), M::SurfaceExists as u32);
        assert_eq!(
            ProtocolError::InvalidTimeline {
                reason: String::new()
            }
            .code(),
            M::InvalidTimeline as u32
        );
        let no_surface = ProtocolError::NoSurface {
            request: PointRequest::SetReleasePoint,
            point: p,
        };
        assert_eq!(no_surface.code(), S::NoSurface as u32);
        assert_eq!(
            ProtocolError::UnsupportedBuffer.code(),
            S::UnsupportedBuffer as u32
        );
        let no_buffer = ProtocolError::NoBuffer {
            acquire: None,
            release: Some(p),
            null_attach: true,
        };
        assert_eq!(no_buffer.code(), S::NoBuffer as u32);
        assert_eq!(
            ProtocolError::NoAcquirePoint { release: None }.code(),
            S::NoAcquirePoint as u32
        );
        assert_eq!(
            ProtocolError::NoReleasePoint { acquire: None }.code(),
            S::NoReleasePoint as u32
        );
        let conflicting = ProtocolError::ConflictingPoints {
            timeline: TimelineId(1),
            acquire: 1,
            release: 1,
        };
        assert_eq!(conflicting.code(), S::ConflictingPoints as u32);
    }

    #[test]
    fn request_checks() {
        assert_eq!(check_get_surface(false), Ok(()));
        assert_eq!(check_get_surface(true), Err(ProtocolError::SurfaceExists));
        let p = point(2, 3);
        assert_eq!(
            check_surface_alive(true, PointRequest::SetReleasePoint, p),
            Ok(())
        );
        let error = check_surface_alive(false, PointRequest::SetReleasePoint, p).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no_surface: set_release_point(point 3 on timeline 2) after its wl_surface was destroyed"
        );
        let error = ProtocolError::InvalidTimeline {
            reason: "the fd is not a DRM syncobj of this device".into(),
        };
        assert!(error.to_string().contains("not a DRM syncobj"));
    }

    #[test]
    fn every_commit_error_with_its_message() {
        let (a, r) = (point(1, 7), point(1, 8));
        let cases: [(PendingState, ProtocolError, &str); 7] = [
            (
                pending(Some(a), Some(r), Attach::Shm(())),
                ProtocolError::UnsupportedBuffer,
                "non-dma-buf buffer",
            ),
            (
                pending(None, None, Attach::Shm(())),
                ProtocolError::UnsupportedBuffer,
                "non-dma-buf buffer",
            ),
            (
                pending(Some(a), None, Attach::Keep),
                ProtocolError::NoBuffer {
                    acquire: Some(a),
                    release: None,
                    null_attach: false,
                },
                "commit with acquire point 7 on timeline 1 set but no buffer attached",
            ),
            (
                pending(Some(a), Some(r), Attach::Null),
                ProtocolError::NoBuffer {
                    acquire: Some(a),
                    release: Some(r),
                    null_attach: true,
                },
                "acquire point 7 on timeline 1 and release point 8 on timeline 1 set but a null buffer attached",
            ),
            (
                pending(None, Some(r), Attach::dmabuf(1)),
                ProtocolError::NoAcquirePoint { release: Some(r) },
                "no acquire point (only the release point 8 on timeline 1)",
            ),
            (
                pending(Some(a), None, Attach::dmabuf(1)),
                ProtocolError::NoReleasePoint { acquire: Some(a) },
                "no release point (only the acquire point 7 on timeline 1)",
            ),
            (
                pending(Some(point(3, 7)), Some(point(3, 5)), Attach::dmabuf(1)),
                ProtocolError::ConflictingPoints {
                    timeline: TimelineId(3),
                    acquire: 7,
                    release: 5,
                },
                "acquire point 7 >= release point 5 on the same timeline 3",
            ),
        ];
        for (state, error, message) in cases {
            assert_eq!(validate_commit(&state), Err(error.clone()), "{state:?}");
            assert!(
                error.to_string().contains(message),
                "{error} does not say {message:?}"
            );
        }
        // Equal points conflict too; different timelines never do.
        let equal = pending(Some(point(1, 5)), Some(point(1, 5)), Attach::dmabuf(1));
        assert!(matches!(
            validate_commit(&equal),
            Err(ProtocolError::ConflictingPoints { .. })
        ));
        let apart = pending(Some(point(1, 9)), Some(point(2, 5)), Attach::dmabuf(1));
        assert_eq!(validate_commit(&apart), Ok(()));
        assert_eq!(validate_commit(&PendingState::default()), Ok(()));
        let null = pending(None, None, Attach::Null);
        assert_eq!(validate_commit(&null), Ok(()));
    }

    #[test]
    fn lenient_mode() {
        // Tolerated: no_buffer, unsupported_buffer, no_acquire_point, no_release_point,
        // no_surface, and every point is kept for the plan.
        let (a, r) = (point(1, 7), point(2, 1));
        let sync =
            resolve_commit(&pending(None, None, Attach::Shm(())), Leniency::Lenient).unwrap();
        assert_eq!(sync.mode, SyncMode::Implicit);
        assert_eq!(sync.tolerated.len(), 3);
        assert_eq!(
            sync.tolerated[1].to_string(),
            "no_acquire_point: commit with a buffer attached but no acquire point \
             (and no release point either)"
        );
        let sync = resolve_commit(
            &pending(Some(a), None, Attach::dmabuf(1)),
            Leniency::Lenient,
        )
        .unwrap();
        assert_eq!(sync.mode, SyncMode::AcquireOnly(a));
        assert_eq!(
            sync.tolerated,
            [ProtocolError::NoReleasePoint { acquire: Some(a) }]
        );
        let sync = resolve_commit(
            &pending(None, Some(r), Attach::dmabuf(1)),
            Leniency::Lenient,
        )
        .unwrap();
        assert_eq!(sync.mode, SyncMode::ReleaseOnly(r));
        let sync =
            resolve_commit(&pending(Some(a), Some(r), Attach::Null), Leniency::Lenient).unwrap();
        assert_eq!(
            sync.mode,
            SyncMode::Explicit {
                acquire: a,
                release: r
            }
        );
        let no_surface = check_surface_alive(false, PointRequest::SetAcquirePoint, a).unwrap_err();
        assert!(matches!(
            Leniency::Lenient.judge(no_surface.clone()),
            Verdict::Tolerate(_)
        ));
        assert!(matches!(
            Leniency::Strict.judge(no_surface),
            Verdict::Raise(_)
        ));
        // Never tolerated.
        for error in [
            ProtocolError::SurfaceExists,
            ProtocolError::InvalidTimeline {
                reason: "EINVAL".into(),
            },
            ProtocolError::ConflictingPoints {
                timeline: TimelineId(1),
                acquire: 3,
                release: 3,
            },
        ] {
            assert_eq!(
                Leniency::Lenient.judge(error.clone()),
                Verdict::Raise(error)
            );
        }
        let conflicting = pending(Some(point(1, 9)), Some(point(1, 2)), Attach::Keep);
        assert!(matches!(
            resolve_commit(&conflicting, Leniency::Lenient),
            Err(ProtocolError::ConflictingPoints {
                acquire: 9,
                release: 2,
                ..
            })
        ));
    }

    #[test]
    fn every_pending_state_in_both_modes() {
        let points = [
            None,
            Some(point(1, 5)),
            Some(point(1, 7)),
            Some(point(1, 9)),
            Some(point(2, 7)),
        ];
        let attachments = [
            Attach::Keep,
            Attach::Null,
            Attach::Shm(()),
            Attach::dmabuf(1),
        ];
        let mut count = 0;
        for acquire in points {
            for release in points {
                for attached in attachments {
                    count += 1;
                    let state = pending(acquire, release, attached);
                    let conflicting = matches!((acquire, release),
                        (Some(a), Some(r)) if a.timeline == r.timeline && a.value >= r.value);
                    let has_buffer = matches!(attached, Attach::Shm(()) | Attach::DmaBuf { .. });
                    let valid = if has_buffer {
                        attached == Attach::dmabuf(1)
                            && acquire.is_some()
                            && release.is_some()
                            && !conflicting
                    } else {
                        acquire.is_none() && release.is_none()
                    };
                    let strict = resolve_commit(&state, Leniency::Strict);
                    assert_eq!(strict.is_ok(), valid, "{state:?}: {strict:?}");
                    if let Ok(sync) = &strict {
                        assert!(sync.tolerated.is_empty());
                    }
                    let lenient = resolve_commit(&state, Leniency::Lenient);
                    match lenient {
                        Err(error) => {
                            assert!(conflicting, "{state:?}: {error}");
                            assert!(!error.is_safe_to_tolerate());
                        }
                        Ok(sync) => {
                            assert!(!conflicting, "{state:?}");
                            assert_eq!(sync.tolerated.is_empty(), valid, "{state:?}");
                            assert!(sync
                                .tolerated
                                .iter()
                                .all(ProtocolError::is_safe_to_tolerate));
                            // The first tolerated error is the one strict mode raises.
                            if let (Err(raised), Some(first)) = (&strict, sync.tolerated.first()) {
                                assert_eq!(raised, first, "{state:?}");
                            }
                            // Never drops a point.
                            assert_eq!(sync.mode.acquire_point(), acquire, "{state:?}");
                            assert_eq!(sync.mode.release_point(), release, "{state:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(count, 5 * 5 * 4);
    }
}
