//! What presenting a device's frames on a Wayland compositor showed (`fencebridge v4l2
//! --show`), and how to judge it. The presenting itself (a wayland-client player) lives in the
//! CLI; this is the pure part, so every rule is tested on the host.
//!
//! The player re-queues a buffer as soon as the compositor gives it back (`wl_buffer.release`,
//! or the linux-drm-syncobj-v1 release point signalling). At that moment it exports the
//! dma-buf's fences for a *write* (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` with WRITE returns every
//! fence, readers included): a pending fence means the compositor handed the buffer back while
//! its read was still in flight, and a V4L2 device, which does not wait for fences, would
//! overwrite the frame being read. The check sees only reads the compositor publishes as fences
//! on the dma-buf, so the player also watches the buffers the compositor holds: if no read
//! ever shows there, the answer is "unverified", not "fine".

use std::time::Duration;

use super::report::{Finding, Severity};

/// The outcome of presenting the frames.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShowOutcome {
    /// The compositor (its `WAYLAND_DISPLAY`).
    pub compositor: String,
    /// Whether the frames went through linux-drm-syncobj-v1 (acquire points signalled from the
    /// CPU at DQBUF, a release point per commit).
    pub syncobj: bool,
    /// Why not, when linux-drm-syncobj-v1 was not used.
    pub syncobj_note: Option<String>,
    /// Frames committed.
    pub presented: u32,
    /// Frame callbacks received: frames the compositor says it showed.
    pub shown: u32,
    /// Buffers given back and re-queued.
    pub releases: u32,
    /// Of those, how many still had a pending fence on a dma-buf when given back.
    pub early_releases: u32,
    /// How many times a buffer the compositor held had a pending fence on it: its reads, made
    /// visible to implicit sync (as GPU drivers do for shared buffers). Never seen, the check
    /// is blind: a CPU renderer, or a GPU renderer that publishes no read fence, leaves
    /// nothing for an early release to be recognised by.
    pub reads_seen: u32,
    /// The first early release: (V4L2 buffer, frame number it carried).
    pub first_early: Option<(u32, u32)>,
    /// With linux-drm-syncobj-v1: `wl_buffer.release` events that came while the buffer's
    /// release point had not signalled yet (a player trusting them would re-queue too early).
    pub release_events_before_point: u32,
    /// Buffers the compositor still held at the end, after the surface let go of its buffer.
    pub held_at_end: u32,
    /// How long the frames took.
    pub elapsed: Duration,
}

impl ShowOutcome {
    /// Whether the compositor gave back a buffer it was still reading: the device would
    /// overwrite a frame being shown.
    pub fn tears(&self) -> bool {
        self.early_releases > 0
    }
}

/// Judges the outcome.
pub fn findings(show: &ShowOutcome) -> Vec<Finding> {
    let mut out = Vec::new();
    let how = if show.syncobj {
        "linux-drm-syncobj-v1 release points"
    } else {
        "wl_buffer.release"
    };
    if show.early_releases > 0 {
        let first = show
            .first_early
            .map_or_else(String::new, |(buffer, frame)| {
                format!(" (first: buffer {buffer}, which carried frame {frame})")
            });
        out.push(Finding {
            id: "show-early-release",
            severity: Severity::Corruption,
            summary: format!(
                "{} of {} buffers given back by {} still had a pending fence on their dma-buf{first}",
                show.early_releases, show.releases, how
            ),
            detail: "the compositor handed buffers back while its reads were in flight; the \
                     player re-queues them and the device, which waits for no fence, overwrites \
                     frames still being sampled: torn or mixed frames"
                .into(),
            advice: "compositors: give a non-fencing client's buffer back only once the reads \
                     are done (fencebridge's deferred release); players: before VIDIOC_QBUF, \
                     wait until the dma-buf polls writable (POLLOUT)"
                .into(),
        });
    } else if show.releases > 0 && show.reads_seen == 0 {
        out.push(Finding {
            id: "show-reads-invisible",
            severity: Severity::Warning,
            summary: format!(
                "{} buffers given back by {how}, none with a fence pending; but the compositor's \
                 reads never showed as a fence on a buffer it held",
                show.releases
            ),
            detail: "a CPU renderer, or a GPU renderer that publishes no read fence on the \
                     dma-buf, leaves nothing to tell a read in flight by: an early release \
                     would go unseen here"
                .into(),
            advice: "to check such a compositor, use one whose GPU publishes its read fences \
                     (GL drivers do for shared buffers), or make its renderer import its read \
                     fence onto client dma-bufs (DMA_BUF_IOCTL_IMPORT_SYNC_FILE, read)"
                .into(),
        });
    } else if show.releases > 0 {
        out.push(Finding {
            id: "show-releases-after-reads",
            severity: Severity::Ok,
            summary: format!(
                "{} buffers given back by {how}, none with a fence still pending on its \
                 dma-buf; the compositor's reads showed as fences {} times while it held them",
                show.releases, show.reads_seen
            ),
            detail: "the compositor returns a buffer only when it no longer reads it: the \
                     device never overwrites a frame being shown"
                .into(),
            advice: "nothing to do".into(),
        });
    } else if show.presented > 1 {
        out.push(Finding {
            id: "show-no-release",
            severity: Severity::Warning,
            summary: format!(
                "the compositor gave back none of the buffers of {} frames",
                show.presented
            ),
            detail: "a player runs out of buffers and the video stalls".into(),
            advice: "check that the compositor sends wl_buffer.release (or signals release \
                     points) when a buffer is replaced"
                .into(),
        });
    }
    if show.release_events_before_point > 0 {
        out.push(Finding {
            id: "show-release-event-before-point",
            severity: Severity::Info,
            summary: format!(
                "{} wl_buffer.release events came while the buffer's release point was still \
                 pending",
                show.release_events_before_point
            ),
            detail: "with linux-drm-syncobj-v1 the delivery of wl_buffer.release is undefined; \
                     only the release point says the compositor is done"
                .into(),
            advice: "players using explicit sync: re-queue on the release point, never on \
                     wl_buffer.release"
                .into(),
        });
    }
    if show.presented > 0 && show.shown == 0 {
        out.push(Finding {
            id: "show-nothing-shown",
            severity: Severity::Warning,
            summary: format!(
                "no frame callback for any of the {} frames presented",
                show.presented
            ),
            detail: "the compositor did not show the surface (or sends no frame callbacks)".into(),
            advice: "check that the compositor maps xdg_toplevels and renders their buffers".into(),
        });
    }
    if show.held_at_end > 0 {
        out.push(Finding {
            id: "show-held-at-end",
            severity: Severity::Warning,
            summary: format!(
                "{} buffers were still held by the compositor after the surface let go of its \
                 buffer",
                show.held_at_end
            ),
            detail: "the compositor kept buffers it no longer shows".into(),
            advice: "compositors: release a buffer when it is replaced and the reads are done"
                .into(),
        });
    }
    out
}

/// The one-line answer for the report.
pub fn verdict(show: &ShowOutcome) -> &'static str {
    if show.tears() {
        "EARLY RELEASES: this compositor gives buffers back while still reading them; with a \
         device that ignores fences, frames tear"
    } else if show.releases > 0 && show.reads_seen == 0 {
        "NO EARLY RELEASE SEEN (unverified): no buffer came back with a fence pending, but this \
         compositor's reads never showed as fences, so an early release could not be seen"
    } else if show.releases > 0 {
        "NO EARLY RELEASE: this compositor gave every buffer back only after its reads were done"
    } else {
        "INCONCLUSIVE: no buffer was given back while the frames were presented"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> ShowOutcome {
        ShowOutcome {
            compositor: "wayland-1".into(),
            presented: 30,
            shown: 28,
            releases: 29,
            reads_seen: 12,
            ..ShowOutcome::default()
        }
    }

    fn ids(show: &ShowOutcome) -> Vec<&'static str> {
        findings(show).iter().map(|f| f.id).collect()
    }

    #[test]
    fn releases_after_the_reads_are_fine() {
        let show = outcome();
        assert!(!show.tears());
        assert_eq!(ids(&show), ["show-releases-after-reads"]);
        assert!(verdict(&show).starts_with("NO EARLY RELEASE"));
    }

    #[test]
    fn reads_never_seen_make_it_unverified() {
        let show = ShowOutcome {
            reads_seen: 0,
            ..outcome()
        };
        assert_eq!(ids(&show), ["show-reads-invisible"]);
        assert_eq!(findings(&show)[0].severity, Severity::Warning);
        assert!(verdict(&show).contains("unverified"));
        assert!(!show.tears());
    }

    #[test]
    fn a_release_with_a_pending_fence_is_corruption() {
        let show = ShowOutcome {
            early_releases: 3,
            first_early: Some((2, 7)),
            ..outcome()
        };
        assert!(show.tears());
        let found = findings(&show);
        assert_eq!(found[0].id, "show-early-release");
        assert_eq!(found[0].severity, Severity::Corruption);
        assert!(found[0].summary.contains("3 of 29"), "{}", found[0].summary);
        assert!(
            found[0].summary.contains("buffer 2"),
            "{}",
            found[0].summary
        );
        assert!(verdict(&show).starts_with("EARLY RELEASES"));
    }

    #[test]
    fn no_release_no_frame_callback_and_held_buffers_are_warned_about() {
        let show = ShowOutcome {
            shown: 0,
            releases: 0,
            held_at_end: 4,
            ..outcome()
        };
        assert_eq!(
            ids(&show),
            ["show-no-release", "show-nothing-shown", "show-held-at-end"]
        );
        assert!(verdict(&show).starts_with("INCONCLUSIVE"));
    }

    #[test]
    fn release_events_before_the_point_are_noted() {
        let show = ShowOutcome {
            syncobj: true,
            release_events_before_point: 2,
            ..outcome()
        };
        assert_eq!(
            ids(&show),
            [
                "show-releases-after-reads",
                "show-release-event-before-point"
            ]
        );
        assert!(findings(&show)[0].summary.contains("release points"));
    }
}
