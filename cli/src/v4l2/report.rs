//! Judging what a check measured: findings with a severity and advice, a verdict, and the
//! readable report. Pure: everything here works on [`Observations`], so every rule is tested
//! on the host.

use std::fmt;

use super::check::{BridgeView, ImportOutcome, Observations, Report, StubCalibration};
use super::format::Format;
use super::show::ShowOutcome;
use crate::sys::v4l2 as sys;
use fencebridge::bridge::plan::{Acquire, Release};
use fencebridge::bridge::producer_class::{ProducerClass, DEFAULT_NON_FENCING_AFTER};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// As it should be.
    Ok,
    /// Worth knowing; nothing goes wrong because of it.
    Info,
    /// Could not be checked, or degrades something.
    Warning,
    /// Causes visible corruption (torn or mixed frames) under a compositor without the
    /// bridge's deferred release.
    Corruption,
}

impl Severity {
    /// A short tag (`ok`, `info`, `warning`, `corruption`).
    pub const fn tag(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Corruption => "corruption",
        }
    }
}

/// One finding: what was seen, what it means, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A stable name for tools (`queued-buffers-unfenced`, `imported-fence-ignored`...).
    pub id: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What was seen, in one line.
    pub summary: String,
    /// What it means for a compositor.
    pub detail: String,
    /// What to do about it.
    pub advice: String,
}

/// The overall answer (in JSON, a kebab-case word: `non-fencing-ignores-fences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Puts fences on its buffers and waits for the compositor's: safe everywhere.
    Fencing,
    /// Attaches no fences and ignores the compositor's: shown correctly only where buffers are
    /// released after the compositor's reads are done (fencebridge does that).
    NonFencingIgnoresFences,
    /// Attaches no fences but waits for imported ones.
    NonFencingHonoursFences,
    /// Attaches no fences; whether it waits for imported ones was not established.
    NonFencingUnverified,
}

impl Report {
    /// The overall verdict.
    pub fn verdict(&self) -> Verdict {
        let obs = &self.observations;
        let fencing = obs.dequeued.pending > 0 || obs.queued.pending > 0;
        match (&obs.import, fencing) {
            (ImportOutcome::Ignored { .. }, _) => Verdict::NonFencingIgnoresFences,
            (_, true) => Verdict::Fencing,
            (ImportOutcome::Honoured { .. }, false) => Verdict::NonFencingHonoursFences,
            _ => Verdict::NonFencingUnverified,
        }
    }

    /// Whether a finding would cause visible corruption under a compositor without the bridge
    /// (the CLI's exit status).
    pub fn would_corrupt_without_bridge(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Corruption)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Fencing => {
                "FENCING PRODUCER: it fences its buffers and waits for the compositor's fences; \
                 any implicit-sync compositor shows it correctly"
            }
            Verdict::NonFencingIgnoresFences => {
                "NON-FENCING PRODUCER THAT IGNORES FENCES: shown correctly only by a compositor \
                 that gives buffers back after its reads are done (fencebridge does); under one \
                 that releases a buffer as soon as it is replaced, frames tear"
            }
            Verdict::NonFencingHonoursFences => {
                "NON-FENCING PRODUCER THAT HONOURS FENCES: it publishes no fences, but waits for \
                 the compositor's read fences; safe where the compositor leaves them on the buffer"
            }
            Verdict::NonFencingUnverified => {
                "NON-FENCING PRODUCER (fence honouring not verified): treat it as one that \
                 ignores fences and release its buffers only after the compositor's reads"
            }
        })
    }
}

/// Judges the measurements.
pub fn findings(format: &Format, obs: &Observations, bridge: &BridgeView) -> Vec<Finding> {
    let mut out = Vec::new();
    let q = &obs.queued;
    if q.pending > 0 {
        out.push(Finding {
            id: "queued-buffers-fenced",
            severity: Severity::Ok,
            summary: format!(
                "{} of {} exports of QUEUED buffers held a pending write fence",
                q.pending,
                q.total()
            ),
            detail: "the device publishes when it is writing: implicit readers wait for it".into(),
            advice: "nothing to do".into(),
        });
    } else {
        out.push(Finding {
            id: "queued-buffers-unfenced",
            severity: Severity::Info,
            summary: format!(
                "all {} exports of QUEUED buffers (being filled by the device) were the \
                 kernel's stub; {} of {} such buffers polled readable at once",
                q.total(),
                obs.queued_poll_ready,
                q.total()
            ),
            detail: "the device writes without a fence on the dma-buf: nothing on the buffer \
                     tells a reader that the frame is incomplete (a poll() on the dma-buf, as \
                     smithay 0.7 waits, returns at once)"
                .into(),
            advice: "applications must commit a buffer only after VIDIOC_DQBUF returned it; a \
                     compositor cannot wait for this device's frames, only trust the commit"
                .into(),
        });
    }

    let d = &obs.dequeued;
    if d.pending == 0 && d.total() > 0 {
        out.push(Finding {
            id: "dequeued-buffers-unfenced",
            severity: Severity::Info,
            summary: format!(
                "{} of {} dequeued frames exported the stub, {} a signalled fence",
                d.no_fence,
                d.total(),
                d.signalled
            ),
            detail: "at commit time there is nothing to wait for: the bridge applies such \
                     commits at once (no snapshot fence to hand on)"
                .into(),
            advice: "nothing to do".into(),
        });
    }

    match &obs.import {
        ImportOutcome::Ignored {
            buffer,
            after,
            fence_was_visible,
        } => out.push(Finding {
            id: "imported-fence-ignored",
            severity: Severity::Corruption,
            summary: format!(
                "a pending read fence imported onto buffer {buffer} (a compositor still reading \
                 it) was ignored: the device filled the buffer {} ms after it was queued, while \
                 the fence was still pending{}",
                after.as_millis(),
                if *fence_was_visible {
                    " (and visible on the dma-buf)"
                } else {
                    ""
                }
            ),
            detail: "a compositor that sends wl_buffer.release as soon as a buffer is replaced \
                     relies on its read fence to hold the producer off (GPU drivers wait for \
                     it); this device does not, so the player re-queues the buffer and the \
                     device overwrites the frame the GPU is still sampling: torn or mixed \
                     frames"
                .into(),
            advice: "compositors: release such buffers only after the reads are done \
                     (fencebridge classifies the client as non-fencing and plans \
                     Release::WhenReadsDone); players: keep enough buffers in flight that a \
                     released one is not needed back at once"
                .into(),
        }),
        ImportOutcome::Honoured { buffer, waited } => out.push(Finding {
            id: "imported-fence-honoured",
            severity: Severity::Ok,
            summary: format!(
                "buffer {buffer}, queued with a pending read fence on it, stayed with the device \
                 for {} ms and was filled only after the fence signalled",
                waited.as_millis()
            ),
            detail: "the device waits for the compositor's read fences".into(),
            advice: "nothing to do".into(),
        }),
        ImportOutcome::NotRun(why) | ImportOutcome::Inconclusive(why) => out.push(Finding {
            id: "imported-fence-unchecked",
            severity: Severity::Warning,
            summary: format!("whether the device honours imported fences is unknown: {why}"),
            detail: "V4L2/vb2 drivers are not known to wait for fences on their buffers".into(),
            advice: "load vgem (modprobe vgem) and run again; meanwhile release this \
                     device's buffers only after the compositor's reads are done"
                .into(),
        }),
    }

    out.push(bridge_finding(obs, bridge));
    out.push(layout_finding(format, obs));

    if obs.error_frames > 0 {
        out.push(Finding {
            id: "error-frames",
            severity: Severity::Warning,
            summary: format!(
                "{} of {} frames came back with V4L2_BUF_FLAG_ERROR",
                obs.error_frames, obs.frames
            ),
            detail: "the driver says their contents may be corrupt".into(),
            advice: "players should drop such frames instead of committing them".into(),
        });
    }
    if obs.dropped > 0 {
        out.push(Finding {
            id: "dropped-frames",
            severity: Severity::Info,
            summary: format!(
                "{} frames were dropped (gaps in the sequence numbers)",
                obs.dropped
            ),
            detail: "the device had no queued buffer to fill at times".into(),
            advice: "more buffers, or re-queue them sooner".into(),
        });
    }
    out
}

fn bridge_finding(obs: &Observations, bridge: &BridgeView) -> Finding {
    let class = match bridge.class {
        ProducerClass::NonFencing => "non-fencing",
        ProducerClass::Fencing => "fencing",
        ProducerClass::Unknown => "not yet classified",
    };
    let when = match &bridge.became_non_fencing {
        Some((commit, event)) => format!(" from commit {commit} on ({event})"),
        None if bridge.class == ProducerClass::Unknown => format!(
            " (it takes {DEFAULT_NON_FENCING_AFTER} consecutive stub commits; until then it is \
             planned like a non-fencing one)"
        ),
        None => String::new(),
    };
    let plan = bridge.last_plan.map_or_else(
        || "no commit was planned".to_owned(),
        |p| {
            format!(
                "acquire {}, release {}",
                acquire_name(p.acquire),
                release_name(p.release)
            )
        },
    );
    Finding {
        id: "bridge-plan",
        severity: Severity::Info,
        summary: format!(
            "committed as an implicit client, the {} frames are classified {class}{when}; the \
             last commit's plan: {plan}; {} of {} commits release after the compositor's reads",
            obs.frames, bridge.release_when_reads_done, obs.frames
        ),
        detail: if bridge.release_when_replaced > 0 {
            format!(
                "{} commits would be released as soon as replaced: the producer was seen \
                 fencing, so it is trusted to wait for the compositor's read fence",
                bridge.release_when_replaced
            )
        } else {
            "fencebridge keeps each buffer until the frames that read it have finished, then \
             sends wl_buffer.release: the device cannot overwrite a frame still being shown"
                .into()
        },
        advice: "compositors: use fencebridge's plan for implicit clients, or defer \
                 wl_buffer.release of non-fencing clients' buffers the same way"
            .into(),
    }
}

fn layout_finding(format: &Format, obs: &Observations) -> Finding {
    let per_buffer = obs.layout.first().map_or(0, |b| b.distinct_dmabufs);
    let memory_planes = format.planes.len();
    let how = if memory_planes == 1 {
        "one dma-buf per buffer".to_owned()
    } else if per_buffer == memory_planes {
        format!("{memory_planes} memory planes, each its own dma-buf")
    } else {
        format!("{memory_planes} memory planes in {per_buffer} dma-buf(s)")
    };
    let planes = match (format.colour_planes(), format.drm_fourcc()) {
        (Some(planes), Some(drm)) => {
            let list: Vec<String> = planes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    format!(
                        "plane {i}: dma-buf of memory plane {}, offset {}, stride {}",
                        p.memory_plane, p.offset, p.stride
                    )
                })
                .collect();
            format!("linux-dmabuf: DRM format {drm}, {}", list.join("; "))
        }
        _ => format!(
            "{} is not a format this checker can lay out for linux-dmabuf",
            format.fourcc
        ),
    };
    let strides: Vec<String> = format
        .planes
        .iter()
        .map(|p| {
            format!(
                "{} ({}-byte aligned)",
                p.bytesperline,
                alignment(p.bytesperline)
            )
        })
        .collect();
    Finding {
        id: "plane-layout",
        severity: Severity::Info,
        summary: format!("{how}; {planes}"),
        detail: format!(
            "bytes per line: {}; GPUs commonly need 64- or 256-byte aligned strides to import \
             a dma-buf without a copy",
            strides.join(", ")
        ),
        advice: if obs.buffer_caps & sys::V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS != 0 {
            "nothing to do (buffers may outlive VIDIOC_REQBUFS(0) while a compositor still \
             holds their dma-bufs)"
                .into()
        } else {
            "keep the device's buffers allocated while a compositor holds their dma-bufs".into()
        },
    }
}

/// `head` followed by `words`, wrapped before `width` columns with `indent` on later lines.
fn wrap(head: &str, words: &[String], indent: &str, width: usize) -> String {
    let mut out = head.to_owned();
    let mut line = head.chars().count();
    for word in words {
        if line + 1 + word.len() > width {
            out.push('\n');
            out.push_str(indent);
            out.push_str(word);
            line = indent.len() + word.len();
        } else {
            out.push(' ');
            out.push_str(word);
            line += 1 + word.len();
        }
    }
    out
}

/// The largest power of two (up to 4096) that divides `n`.
fn alignment(n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    (1u32 << n.trailing_zeros()).min(4096)
}

fn acquire_name(a: Acquire) -> &'static str {
    match a {
        Acquire::Nothing => "nothing to wait for",
        Acquire::WaitSnapshot => "wait for the snapshot fence",
        Acquire::WaitAcquirePoint(_) => "wait for the acquire point",
        Acquire::WaitAcquireFence(_) => "wait for the acquire point's fence",
        Acquire::CannotWait => "cannot wait (no EXPORT_SYNC_FILE)",
    }
}

fn release_name(r: Release) -> &'static str {
    match r {
        Release::Nothing => "nothing",
        Release::AfterCopy => "after the copy",
        Release::WhenReplaced => "when replaced",
        Release::WhenReadsDone => "when the compositor's reads are done",
        Release::SignalReleasePointFromReadFence(_) => "signal the release point",
    }
}

fn stub_name(s: StubCalibration) -> &'static str {
    match s {
        StubCalibration::FromThisDevice => {
            "recognised by its timestamp, calibrated on a buffer of this device before it was \
             first queued"
        }
        StubCalibration::FromFreshDmabuf => {
            "recognised by its timestamp, calibrated on a fresh dma-buf"
        }
        StubCalibration::NamesOnly => "recognised by its name only",
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.device;
        let o = &self.observations;
        let fmt_ = &self.format;
        writeln!(
            f,
            "device:   {} — {} (driver {} {}.{}.{}, {})",
            d.path.display(),
            d.card,
            d.driver,
            d.version.0,
            d.version.1,
            d.version.2,
            d.bus_info
        )?;
        if let Some(m) = &self.m2m {
            writeln!(
                f,
                "m2m:      a {}; its OUTPUT queue ({}) was fed {}",
                m.role.name(),
                m.output_format,
                m.input
            )?;
            if let Some(after) = m.source_change_after {
                writeln!(
                    f,
                    "          source-change event after {} ms; capture queue set up from \
                     VIDIOC_G_FMT then",
                    after.as_millis()
                )?;
            }
            if let Some(media) = &m.media {
                writeln!(
                    f,
                    "          {} requests on {} (MEDIA_IOC_REQUEST_ALLOC), one per frame: its \
                     payload in an OUTPUT buffer, its header as V4L2_CID_STATELESS_FWHT_PARAMS \
                     (VIDIOC_S_EXT_CTRLS in the request); P-frames reference the CAPTURE \
                     buffer of the frame before by timestamp",
                    m.requests,
                    media.display()
                )?;
            }
            match m.drain {
                Some(d) => writeln!(
                    f,
                    "          drained (V4L2_DEC_CMD_STOP): {} more frame(s), {}; {} bytes fed \
                     in all",
                    d.frames,
                    if d.last_seen {
                        "the last flagged V4L2_BUF_FLAG_LAST"
                    } else {
                        "no buffer flagged V4L2_BUF_FLAG_LAST in time"
                    },
                    m.fed_bytes
                )?,
                None => writeln!(f, "          {} bytes fed in all", m.fed_bytes)?,
            }
        }
        for (queue, formats) in &self.offered {
            let list: Vec<String> = formats.iter().map(|f| f.fourcc.to_string()).collect();
            let head = format!("queue:    {queue} capture, formats");
            writeln!(f, "{}", wrap(&head, &list, "          ", 96))?;
        }
        let planes: Vec<String> = fmt_
            .planes
            .iter()
            .map(|p| format!("{} bytes/line, {} bytes", p.bytesperline, p.sizeimage))
            .collect();
        writeln!(
            f,
            "format:   {} {}x{} on the {} queue; memory planes: {}",
            fmt_.fourcc,
            fmt_.width,
            fmt_.height,
            fmt_.queue,
            planes.join(" | ")
        )?;
        if let Some(interval) = self.interval {
            writeln!(
                f,
                "rate:     one frame every {interval}, as set for the check"
            )?;
        }
        writeln!(
            f,
            "buffers:  {} MMAP buffers, every plane exported with VIDIOC_EXPBUF",
            o.buffers
        )?;
        for b in &o.layout {
            let planes: Vec<String> = b
                .planes
                .iter()
                .enumerate()
                .map(|(i, p)| format!("plane {i}: {} bytes, dma-buf inode {}", p.length, p.inode))
                .collect();
            writeln!(
                f,
                "          buffer {}: {} ({} distinct dma-buf{})",
                b.index,
                planes.join(", "),
                b.distinct_dmabufs,
                if b.distinct_dmabufs == 1 { "" } else { "s" }
            )?;
        }
        let secs = o.elapsed.as_secs_f64();
        writeln!(
            f,
            "streamed: {} frames in {:.2} s ({:.1} fps), {} with errors, {} dropped",
            o.frames,
            secs,
            if secs > 0.0 {
                f64::from(o.frames) / secs
            } else {
                0.0
            },
            o.error_frames,
            o.dropped
        )?;
        writeln!(f, "stub:     {}", stub_name(o.stub))?;
        writeln!(f)?;
        writeln!(
            f,
            "fences (DMA_BUF_IOCTL_EXPORT_SYNC_FILE, read access: what a reader must wait for)"
        )?;
        for (name, t) in [
            ("never queued", &o.fresh),
            ("while QUEUED", &o.queued),
            ("after DQBUF", &o.dequeued),
        ] {
            writeln!(
                f,
                "  {name:<13} {:>4} exports: {} the stub, {} signalled, {} pending",
                t.total(),
                t.no_fence,
                t.signalled,
                t.pending
            )?;
        }
        let import = match &o.import {
            ImportOutcome::Ignored { buffer, after, .. } => format!(
                "IGNORED: buffer {buffer} was filled {} ms after QBUF, the fence still pending",
                after.as_millis()
            ),
            ImportOutcome::Honoured { buffer, waited } => format!(
                "honoured: buffer {buffer} was held {} ms, until the fence signalled",
                waited.as_millis()
            ),
            ImportOutcome::NotRun(why) => format!("not checked: {why}"),
            ImportOutcome::Inconclusive(why) => format!("inconclusive: {why}"),
        };
        let import: Vec<String> = import.split_whitespace().map(String::from).collect();
        let head = "  imported pending read fence on a queued buffer:";
        writeln!(f, "{}", wrap(head, &import, "    ", 96))?;
        if let Some(show) = &self.show {
            writeln!(f)?;
            write_show(f, show)?;
        }
        writeln!(f)?;
        writeln!(f, "findings")?;
        let words = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        for finding in &self.findings {
            let head = format!("  [{}] {}:", finding.severity.tag(), finding.id);
            writeln!(f, "{}", wrap(&head, &words(&finding.summary), "      ", 96))?;
            let why = words(&finding.detail);
            writeln!(f, "{}", wrap("      why:   ", &why, "              ", 96))?;
            let advice = words(&finding.advice);
            writeln!(
                f,
                "{}",
                wrap("      advice:", &advice, "              ", 96)
            )?;
        }
        writeln!(f)?;
        let verdict = words(&self.verdict().to_string());
        writeln!(f, "{}", wrap("verdict:", &verdict, "         ", 96))?;
        if let Some(show) = &self.show {
            let verdict = words(super::show::verdict(show));
            writeln!(f, "{}", wrap("show:   ", &verdict, "         ", 96))?;
        }
        if self.show.as_ref().is_some_and(ShowOutcome::tears) {
            writeln!(
                f,
                "exit status 1: the compositor gave back buffers it was still reading (frames \
                 tear)"
            )?;
        } else if self.would_corrupt_without_bridge() {
            writeln!(
                f,
                "exit status 1: a finding above causes visible corruption under a compositor \
                 without\n               fencebridge's deferred release"
            )?;
        }
        Ok(())
    }
}

/// The `--show` section: how the frames were presented and given back.
fn write_show(f: &mut fmt::Formatter<'_>, show: &ShowOutcome) -> fmt::Result {
    let words = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let path = if show.syncobj {
        "linux-dmabuf + linux-drm-syncobj-v1 (acquire points signalled from the CPU at DQBUF, a \
         release point per commit)"
            .to_owned()
    } else {
        match &show.syncobj_note {
            Some(why) => format!("linux-dmabuf, implicit sync (no linux-drm-syncobj-v1: {why})"),
            None => "linux-dmabuf, implicit sync".to_owned(),
        }
    };
    writeln!(f, "shown on the Wayland compositor {}", show.compositor)?;
    let presented = format!(
        "{} frames in {:.2} s through {path}; {} shown (frame callbacks)",
        show.presented,
        show.elapsed.as_secs_f64(),
        show.shown
    );
    writeln!(
        f,
        "{}",
        wrap("  presented:", &words(&presented), "    ", 96)
    )?;
    let given_back = if show.syncobj {
        "release points signalled"
    } else {
        "wl_buffer.release"
    };
    let releases = format!(
        "{} buffers given back ({given_back}) and re-queued; {} early (a fence still pending on \
         a dma-buf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE for a write); {} still held at the end; the \
         compositor's reads showed as fences {} times while it held buffers",
        show.releases, show.early_releases, show.held_at_end, show.reads_seen
    );
    writeln!(f, "{}", wrap("  releases: ", &words(&releases), "    ", 96))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::v4l2::check::{BufferLayout, FenceTally, PlaneLayout};
    use crate::v4l2::device::DeviceInfo;
    use crate::v4l2::format::{MemoryPlaneFormat, QueueKind};
    use fencebridge::bridge::plan::{BridgeCaps, CommitPlan, Handoff, Publish};

    fn vivid_like(import: ImportOutcome, dequeued_pending: u32) -> Report {
        let format = Format {
            queue: QueueKind::SinglePlanar,
            fourcc: "YUYV".parse().unwrap(),
            width: 640,
            height: 360,
            field: 1,
            planes: vec![MemoryPlaneFormat {
                bytesperline: 1280,
                sizeimage: 460_800,
            }],
        };
        let observations = Observations {
            buffers: 4,
            buffer_caps: 0x17,
            layout: (0..4)
                .map(|index| BufferLayout {
                    index,
                    planes: vec![PlaneLayout {
                        length: 460_800,
                        mem_offset: index * 460_800,
                        inode: 100 + u64::from(index),
                    }],
                    distinct_dmabufs: 1,
                })
                .collect(),
            stub: StubCalibration::FromThisDevice,
            fresh: FenceTally {
                no_fence: 4,
                ..Default::default()
            },
            queued: FenceTally {
                no_fence: 34,
                ..Default::default()
            },
            queued_poll_ready: 34,
            dequeued: FenceTally {
                no_fence: 30 - dequeued_pending,
                pending: dequeued_pending,
                signalled: 0,
            },
            frames: 30,
            error_frames: 0,
            dropped: 0,
            elapsed: Duration::from_secs(1),
            import,
        };
        let bridge = BridgeView {
            caps: BridgeCaps {
                dmabuf_export: true,
                dmabuf_import: true,
                timelines: false,
            },
            class: ProducerClass::NonFencing,
            became_non_fencing: None,
            last_plan: Some(CommitPlan {
                acquire: Acquire::Nothing,
                handoff: Handoff::Nothing,
                publish: Publish::Nothing,
                release: Release::WhenReadsDone,
            }),
            release_when_reads_done: 30,
            release_when_replaced: 0,
            acquire_wait: 0,
        };
        let findings = findings(&format, &observations, &bridge);
        Report {
            device: DeviceInfo {
                path: PathBuf::from("/dev/video0"),
                driver: "vivid".into(),
                card: "vivid".into(),
                bus_info: "platform:vivid-000".into(),
                version: (6, 12, 95),
                caps: sys::V4L2_CAP_VIDEO_CAPTURE,
                queues: vec![QueueKind::SinglePlanar],
                m2m: false,
            },
            offered: vec![],
            format,
            interval: None,
            observations,
            bridge,
            findings,
            show: None,
            m2m: None,
        }
    }

    fn ids(report: &Report) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.id).collect()
    }

    /// The report's words, one space apart (it wraps its lines).
    fn words(report: &Report) -> String {
        report
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_device_that_ignores_imported_fences_corrupts_without_the_bridge() {
        let ignored = ImportOutcome::Ignored {
            buffer: 2,
            after: Duration::from_millis(120),
            fence_was_visible: true,
        };
        let report = vivid_like(ignored, 0);
        assert!(report.would_corrupt_without_bridge());
        assert_eq!(report.verdict(), Verdict::NonFencingIgnoresFences);
        assert_eq!(
            ids(&report),
            [
                "queued-buffers-unfenced",
                "dequeued-buffers-unfenced",
                "imported-fence-ignored",
                "bridge-plan",
                "plane-layout"
            ]
        );
        let text = words(&report);
        assert!(
            text.contains("[corruption] imported-fence-ignored"),
            "{text}"
        );
        assert!(text.contains("exit status 1"), "{text}");
        assert!(
            text.contains(
                "DRM format YUYV, plane 0: dma-buf of memory plane 0, offset 0, stride 1280"
            ),
            "{text}"
        );
    }

    #[test]
    fn honoured_or_unchecked_fences_are_no_corruption() {
        let honoured = ImportOutcome::Honoured {
            buffer: 1,
            waited: Duration::from_secs(2),
        };
        let report = vivid_like(honoured, 0);
        assert!(!report.would_corrupt_without_bridge());
        assert_eq!(report.verdict(), Verdict::NonFencingHonoursFences);

        let report = vivid_like(ImportOutcome::NotRun("no vgem".into()), 0);
        assert!(!report.would_corrupt_without_bridge());
        assert_eq!(report.verdict(), Verdict::NonFencingUnverified);
        let unchecked = &report.findings[2];
        assert_eq!(unchecked.severity, Severity::Warning);
        assert!(unchecked.summary.contains("no vgem"));
    }

    #[test]
    fn a_pending_fence_makes_it_fencing() {
        let honoured = ImportOutcome::Honoured {
            buffer: 1,
            waited: Duration::from_secs(2),
        };
        let report = vivid_like(honoured, 3);
        assert_eq!(report.verdict(), Verdict::Fencing);
        assert!(!ids(&report).contains(&"dequeued-buffers-unfenced"));
    }

    #[test]
    fn the_show_outcome_has_its_section_findings_and_exit_status() {
        let honoured = ImportOutcome::Honoured {
            buffer: 1,
            waited: Duration::from_secs(2),
        };
        let mut report = vivid_like(honoured.clone(), 0);
        report.add_show(ShowOutcome {
            compositor: "wayland-1".into(),
            presented: 30,
            shown: 29,
            releases: 30,
            reads_seen: 5,
            ..ShowOutcome::default()
        });
        assert!(!report.would_corrupt_without_bridge());
        assert_eq!(ids(&report).last(), Some(&"show-releases-after-reads"));
        let text = words(&report);
        assert!(
            text.contains("shown on the Wayland compositor wayland-1 presented: 30 frames"),
            "{text}"
        );
        assert!(text.contains("show: NO EARLY RELEASE"), "{text}");
        assert!(!text.contains("exit status 1"), "{text}");

        let mut report = vivid_like(honoured, 0);
        report.add_show(ShowOutcome {
            compositor: "wayland-1".into(),
            presented: 30,
            releases: 30,
            early_releases: 4,
            first_early: Some((0, 3)),
            ..ShowOutcome::default()
        });
        assert!(report.would_corrupt_without_bridge());
        let text = report.to_string();
        assert!(text.contains("[corruption] show-early-release"), "{text}");
        assert!(
            text.contains("exit status 1: the compositor gave back buffers it was still reading"),
            "{text}"
        );
    }

    #[test]
    fn long_lists_wrap() {
        let words: Vec<String> = ["YUYV", "NV12", "NM12"].map(String::from).to_vec();
        assert_eq!(wrap("f:", &words, "  ", 12), "f: YUYV NV12\n  NM12");
        assert_eq!(wrap("f:", &words, "  ", 80), "f: YUYV NV12 NM12");
    }

    #[test]
    fn strides_report_their_alignment() {
        assert_eq!(alignment(1280), 256);
        assert_eq!(alignment(640), 128);
        assert_eq!(alignment(1920 * 4), 512);
        assert_eq!(alignment(0), 0);
        assert_eq!(alignment(3), 1);
    }
}
