//! What `--json` prints: serde views of the probe and the V4L2 report, in the shape scripts
//! read (times in milliseconds, enums as kebab-case words, fourccs as text).

use std::path::Path;

use fencebridge::bridge::producer_class::ProducerClass;
use fencebridge::caps::{Capabilities, NodeReport, PointWaitPath, Support};
use fencebridge_cli::v4l2::{
    self, BufferLayout, ColourPlane, FenceTally, Finding, ImportOutcome, MemoryPlaneFormat, Report,
    ShowOutcome, Verdict,
};
use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn print(value: &impl Serialize) {
    let text = serde_json::to_string_pretty(value).expect("the views hold only plain data");
    println!("{text}");
}

/// `{"error": {"kind": ..., "message": ...}}`.
#[derive(Serialize)]
pub struct ErrorJson<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    message: &'a str,
}

impl<'a> ErrorJson<'a> {
    pub fn new(kind: &'a str, message: &'a str) -> Self {
        Self {
            error: ErrorBody { kind, message },
        }
    }
}

// ------------------------------------------------------------------ fencebridge probe

/// `fencebridge probe --json`.
#[derive(Serialize)]
pub struct ProbeJson<'a> {
    dmabuf_export: SupportJson<'a>,
    dmabuf_import: SupportJson<'a>,
    stub_detection: SupportJson<'a>,
    drm_nodes: Vec<NodeJson<'a>>,
    syncobj_device: Option<&'a Path>,
    point_wait: &'static str,
    syncobj_global: bool,
    paths: Vec<String>,
}

#[derive(Serialize)]
struct SupportJson<'a> {
    supported: bool,
    reason: &'a str,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    path: &'a Path,
    driver: Option<&'a str>,
    error: Option<&'a str>,
    syncobj: bool,
    timeline: bool,
    eventfd: bool,
}

impl<'a> From<&'a Support> for SupportJson<'a> {
    fn from(s: &'a Support) -> Self {
        Self {
            supported: s.is_yes(),
            reason: s.reason(),
        }
    }
}

impl<'a> From<&'a NodeReport> for NodeJson<'a> {
    fn from(n: &'a NodeReport) -> Self {
        Self {
            path: &n.path,
            driver: n.driver.as_deref().ok(),
            error: n.driver.as_ref().err().map(String::as_str),
            syncobj: n.syncobj,
            timeline: n.timeline,
            eventfd: n.eventfd,
        }
    }
}

impl<'a> From<&'a Capabilities> for ProbeJson<'a> {
    fn from(caps: &'a Capabilities) -> Self {
        Self {
            dmabuf_export: (&caps.dmabuf_export).into(),
            dmabuf_import: (&caps.dmabuf_import).into(),
            stub_detection: (&caps.stub_detection).into(),
            drm_nodes: caps.nodes.iter().map(NodeJson::from).collect(),
            syncobj_device: caps.syncobj_device.as_deref(),
            point_wait: match caps.point_wait {
                PointWaitPath::Eventfd => "eventfd",
                PointWaitPath::WaiterThread => "waiter-thread",
                PointWaitPath::Unavailable => "unavailable",
            },
            syncobj_global: caps.syncobj_global(),
            paths: caps.paths(),
        }
    }
}

// ------------------------------------------------------------------ fencebridge v4l2

/// `fencebridge v4l2 --json`.
#[derive(Serialize)]
pub struct ReportJson<'a> {
    device: DeviceJson<'a>,
    offered: Vec<OfferedJson>,
    format: FormatJson<'a>,
    /// The frame interval set for the check, as `[numerator, denominator]` seconds.
    frame_interval: Option<[u32; 2]>,
    buffers: &'a [BufferLayout],
    buffer_caps: u32,
    frames: u32,
    error_frames: u32,
    dropped: u32,
    elapsed_ms: u128,
    fences: FencesJson,
    bridge: BridgeJson,
    findings: Vec<FindingJson<'a>>,
    verdict: Verdict,
    would_corrupt_without_bridge: bool,
    show: Option<ShowJson<'a>>,
    m2m: Option<M2mJson<'a>>,
}

/// What a memory-to-memory device was fed.
#[derive(Serialize)]
struct M2mJson<'a> {
    role: v4l2::M2mRole,
    output_format: String,
    input: &'a str,
    source_change_ms: Option<u128>,
    fed_bytes: u64,
    drain: Option<DrainJson>,
    media: Option<&'a Path>,
    requests: u64,
}

#[derive(Serialize)]
struct DrainJson {
    frames: u32,
    last_seen: bool,
}

impl<'a> From<&'a v4l2::M2mReport> for M2mJson<'a> {
    fn from(m: &'a v4l2::M2mReport) -> Self {
        M2mJson {
            role: m.role,
            output_format: m.output_format.to_string(),
            input: &m.input,
            source_change_ms: m.source_change_after.map(|d| d.as_millis()),
            fed_bytes: m.fed_bytes,
            drain: m.drain.map(|d| DrainJson {
                frames: d.frames,
                last_seen: d.last_seen,
            }),
            media: m.media.as_deref(),
            requests: m.requests,
        }
    }
}

#[derive(Serialize)]
struct DeviceJson<'a> {
    path: &'a Path,
    driver: &'a str,
    card: &'a str,
    bus_info: &'a str,
    caps: u32,
    queues: Vec<&'static str>,
}

#[derive(Serialize)]
struct OfferedJson {
    queue: &'static str,
    formats: Vec<String>,
}

#[derive(Serialize)]
struct FormatJson<'a> {
    fourcc: String,
    width: u32,
    height: u32,
    queue: &'static str,
    memory_planes: &'a [MemoryPlaneFormat],
    drm_fourcc: Option<String>,
    colour_planes: Option<Vec<ColourPlane>>,
}

#[derive(Serialize)]
struct FencesJson {
    fresh: TallyJson,
    queued: TallyJson,
    queued_poll_ready: u32,
    dequeued: TallyJson,
    imported: ImportJson,
}

#[derive(Serialize)]
struct TallyJson {
    exports: u32,
    stub: u32,
    signalled: u32,
    pending: u32,
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
enum ImportJson {
    Ignored {
        buffer: u32,
        after_ms: u128,
        fence_was_visible: bool,
    },
    Honoured {
        buffer: u32,
        waited_ms: u128,
    },
    NotRun {
        why: String,
    },
    Inconclusive {
        why: String,
    },
}

#[derive(Serialize)]
struct BridgeJson {
    class: &'static str,
    became_non_fencing_at_commit: Option<u32>,
    release_when_reads_done: u32,
    release_when_replaced: u32,
    acquire_wait: u32,
    last_plan: Option<String>,
}

#[derive(Serialize)]
struct FindingJson<'a> {
    id: &'static str,
    severity: &'static str,
    summary: &'a str,
    detail: &'a str,
    advice: &'a str,
}

#[derive(Serialize)]
struct ShowJson<'a> {
    compositor: &'a str,
    syncobj: bool,
    syncobj_note: Option<&'a str>,
    presented: u32,
    shown: u32,
    releases: u32,
    early_releases: u32,
    reads_seen: u32,
    first_early: Option<EarlyJson>,
    release_events_before_point: u32,
    held_at_end: u32,
    elapsed_ms: u128,
    verdict: &'static str,
    tears: bool,
}

#[derive(Serialize)]
struct EarlyJson {
    buffer: u32,
    frame: u32,
}

impl From<&FenceTally> for TallyJson {
    fn from(t: &FenceTally) -> Self {
        Self {
            exports: t.total(),
            stub: t.no_fence,
            signalled: t.signalled,
            pending: t.pending,
        }
    }
}

impl From<&ImportOutcome> for ImportJson {
    fn from(import: &ImportOutcome) -> Self {
        match import {
            ImportOutcome::Ignored {
                buffer,
                after,
                fence_was_visible,
            } => Self::Ignored {
                buffer: *buffer,
                after_ms: after.as_millis(),
                fence_was_visible: *fence_was_visible,
            },
            ImportOutcome::Honoured { buffer, waited } => Self::Honoured {
                buffer: *buffer,
                waited_ms: waited.as_millis(),
            },
            ImportOutcome::NotRun(why) => Self::NotRun { why: why.clone() },
            ImportOutcome::Inconclusive(why) => Self::Inconclusive { why: why.clone() },
        }
    }
}

impl<'a> From<&'a Finding> for FindingJson<'a> {
    fn from(f: &'a Finding) -> Self {
        Self {
            id: f.id,
            severity: f.severity.tag(),
            summary: &f.summary,
            detail: &f.detail,
            advice: &f.advice,
        }
    }
}

impl<'a> From<&'a ShowOutcome> for ShowJson<'a> {
    fn from(s: &'a ShowOutcome) -> Self {
        Self {
            compositor: &s.compositor,
            syncobj: s.syncobj,
            syncobj_note: s.syncobj_note.as_deref(),
            presented: s.presented,
            shown: s.shown,
            releases: s.releases,
            early_releases: s.early_releases,
            reads_seen: s.reads_seen,
            first_early: s
                .first_early
                .map(|(buffer, frame)| EarlyJson { buffer, frame }),
            release_events_before_point: s.release_events_before_point,
            held_at_end: s.held_at_end,
            elapsed_ms: s.elapsed.as_millis(),
            verdict: v4l2::show::verdict(s),
            tears: s.tears(),
        }
    }
}

impl<'a> From<&'a Report> for ReportJson<'a> {
    fn from(report: &'a Report) -> Self {
        let o = &report.observations;
        let d = &report.device;
        let f = &report.format;
        let b = &report.bridge;
        Self {
            device: DeviceJson {
                path: &d.path,
                driver: &d.driver,
                card: &d.card,
                bus_info: &d.bus_info,
                caps: d.caps,
                queues: d.queues.iter().map(|q| q.name()).collect(),
            },
            offered: report
                .offered
                .iter()
                .map(|(queue, formats)| OfferedJson {
                    queue: queue.name(),
                    formats: formats.iter().map(|f| f.fourcc.to_string()).collect(),
                })
                .collect(),
            format: FormatJson {
                fourcc: f.fourcc.to_string(),
                width: f.width,
                height: f.height,
                queue: f.queue.name(),
                memory_planes: &f.planes,
                drm_fourcc: f.drm_fourcc().map(|c| c.to_string()),
                colour_planes: f.colour_planes(),
            },
            frame_interval: report.interval.map(|i| [i.seconds, i.per]),
            buffers: &o.layout,
            buffer_caps: o.buffer_caps,
            frames: o.frames,
            error_frames: o.error_frames,
            dropped: o.dropped,
            elapsed_ms: o.elapsed.as_millis(),
            fences: FencesJson {
                fresh: (&o.fresh).into(),
                queued: (&o.queued).into(),
                queued_poll_ready: o.queued_poll_ready,
                dequeued: (&o.dequeued).into(),
                imported: (&o.import).into(),
            },
            bridge: BridgeJson {
                class: match b.class {
                    ProducerClass::Unknown => "unknown",
                    ProducerClass::Fencing => "fencing",
                    ProducerClass::NonFencing => "non-fencing",
                },
                became_non_fencing_at_commit: b.became_non_fencing.as_ref().map(|(n, _)| *n),
                release_when_reads_done: b.release_when_reads_done,
                release_when_replaced: b.release_when_replaced,
                acquire_wait: b.acquire_wait,
                last_plan: b.last_plan.map(|p| format!("{p:?}")),
            },
            findings: report.findings.iter().map(FindingJson::from).collect(),
            verdict: report.verdict(),
            would_corrupt_without_bridge: report.would_corrupt_without_bridge(),
            show: report.show.as_ref().map(ShowJson::from),
            m2m: report.m2m.as_ref().map(M2mJson::from),
        }
    }
}
