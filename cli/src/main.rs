//! `fencebridge`: the command-line tool. `fencebridge probe` tells what this machine supports
//! and which path the bridge would take; `fencebridge v4l2` checks a V4L2 capture device the
//! way a compositor sees its frames, and with `--show` presents them on a Wayland compositor
//! (`show.rs`, over the client plumbing in `wlclient.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod show;
// Shared with the test clients (examples/clients), which use parts this tool does not.
#[allow(dead_code)]
mod wlclient;

use clap::{Parser, Subcommand};
use fencebridge::caps::{Capabilities, PointWaitPath, Support};
use fencebridge::v4l2::{self, CheckOptions, FourCc, ImportOutcome, Progress, Report};
use serde_json::json;
use show::ShowOptions;

#[derive(Parser)]
#[command(
    version,
    about = "Implicit <-> explicit GPU sync bridge for Wayland compositors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this machine's dma-buf / syncobj capabilities and the paths the bridge would take.
    Probe {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check a V4L2 capture device: whether its buffers carry fences while it fills them and
    /// after DQBUF, whether it waits for a fence imported onto a queued buffer, its plane
    /// layout, and what fencebridge does for such a producer; with --show, also present its
    /// frames on the Wayland compositor and check that it never gives back a buffer it is still
    /// reading. Exit status: 0 fine, 1 a finding would cause visible corruption (under a
    /// compositor without the bridge, or under this compositor with --show), 2 the check could
    /// not run.
    V4l2 {
        /// The capture device [default: the first capture-capable /dev/video*].
        device: Option<PathBuf>,
        /// The pixel format, as a fourcc (YUYV, NV12, NM12, XR24...) [default: the current one].
        #[arg(long, value_name = "FOURCC")]
        format: Option<FourCc>,
        /// The frame size [default: the current one].
        #[arg(long, value_name = "WxH", value_parser = parse_size)]
        size: Option<(u32, u32)>,
        /// How many frames to stream and watch.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
        frames: u32,
        /// How many MMAP buffers to allocate.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=32))]
        buffers: u32,
        /// Machine-readable output (errors too, as {"error": {...}}).
        #[arg(long)]
        json: bool,
        /// Then present --frames frames on the Wayland compositor at $WAYLAND_DISPLAY like a
        /// video player (linux-dmabuf, and linux-drm-syncobj-v1 where offered), re-queueing
        /// each buffer when the compositor gives it back, and report any buffer given back
        /// with a fence (a read) still pending on it.
        #[arg(long)]
        show: bool,
        /// With --show: implicit sync only, even where linux-drm-syncobj-v1 is offered.
        #[arg(long, requires = "show")]
        no_syncobj: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe { json } => {
            probe(json);
            ExitCode::SUCCESS
        }
        Command::V4l2 {
            device,
            format,
            size,
            frames,
            buffers,
            json,
            show,
            no_syncobj,
        } => {
            let options = CheckOptions {
                format,
                size,
                frames,
                buffers,
                ..CheckOptions::default()
            };
            let show = show.then_some(ShowOptions {
                frames,
                buffers,
                syncobj: !no_syncobj,
                frame_timeout: options.frame_timeout,
            });
            check_v4l2(device, &options, json, show)
        }
    }
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a size: give WIDTHxHEIGHT, such as 640x480");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(bad()),
    }
}

/// Exit status when the check could not run (bad input, a device error).
const EXIT_ERROR: u8 = 2;

fn check_v4l2(
    device: Option<PathBuf>,
    options: &CheckOptions,
    as_json: bool,
    show: Option<ShowOptions>,
) -> ExitCode {
    // A missing compositor is said before the device is streamed.
    let client = match show.as_ref().map(|_| show::connect()).transpose() {
        Ok(client) => client,
        Err(e) => return fail(as_json, e.kind(), &e.to_string()),
    };
    let path = match device.map_or_else(v4l2::Device::find_capture, Ok) {
        Ok(path) => path,
        Err(e) => return fail(as_json, e.kind(), &e.to_string()),
    };
    let mut last = Instant::now();
    let progress = |p: Progress| match p {
        Progress::Streaming { total } => {
            eprintln!(
                "fencebridge v4l2: {}: streaming {total} frames",
                path.display()
            );
            last = Instant::now();
        }
        Progress::Frame { done, total } => {
            if done == total || last.elapsed() >= Duration::from_secs(1) {
                eprintln!("fencebridge v4l2: {done}/{total} frames");
                last = Instant::now();
            }
        }
        Progress::ImportCheck => {
            eprintln!("fencebridge v4l2: checking whether an imported fence is honoured");
        }
    };
    let mut report = match v4l2::check(&path, options, progress) {
        Ok(report) => report,
        Err(e) => return fail(as_json, e.kind(), &e.to_string()),
    };
    if let (Some(client), Some(show)) = (client, &show) {
        eprintln!(
            "fencebridge v4l2: {}: presenting {} frames on the compositor",
            path.display(),
            show.frames
        );
        let mut last = Instant::now();
        let progress = |done: u32, total: u32| {
            if done == total || last.elapsed() >= Duration::from_secs(1) {
                eprintln!("fencebridge v4l2: {done}/{total} frames presented");
                last = Instant::now();
            }
        };
        match show::show(client, &path, &report.format, show, progress) {
            Ok(outcome) => report.add_show(outcome),
            Err(e) => return fail(as_json, e.kind(), &e.to_string()),
        }
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report))
                .expect("a JSON value always serialises")
        );
    } else {
        print!("{report}");
    }
    if report.would_corrupt_without_bridge() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
fn fail(as_json: bool, kind: &str, message: &str) -> ExitCode {
    if as_json {
        let error = json!({ "error": { "kind": kind, "message": message } });
        println!(
            "{}",
            serde_json::to_string_pretty(&error).expect("a JSON value always serialises")
        );
    }
    eprintln!("fencebridge v4l2: error: {message}");
    ExitCode::from(EXIT_ERROR)
}

fn report_json(report: &Report) -> serde_json::Value {
    let o = &report.observations;
    let d = &report.device;
    let f = &report.format;
    let tally = |t: &v4l2::FenceTally| json!({ "exports": t.total(), "stub": t.no_fence, "signalled": t.signalled, "pending": t.pending });
    let import = match &o.import {
        ImportOutcome::Ignored {
            buffer,
            after,
            fence_was_visible,
        } => json!({
            "outcome": "ignored", "buffer": buffer, "after_ms": after.as_millis() as u64,
            "fence_was_visible": fence_was_visible,
        }),
        ImportOutcome::Honoured { buffer, waited } => json!({
            "outcome": "honoured", "buffer": buffer, "waited_ms": waited.as_millis() as u64,
        }),
        ImportOutcome::NotRun(why) => json!({ "outcome": "not-run", "why": why }),
        ImportOutcome::Inconclusive(why) => json!({ "outcome": "inconclusive", "why": why }),
    };
    let colour_planes: Option<Vec<_>> = f.colour_planes().map(|planes| {
        planes
            .iter()
            .map(|p| json!({ "memory_plane": p.memory_plane, "offset": p.offset, "stride": p.stride }))
            .collect()
    });
    let verdict = match report.verdict() {
        v4l2::Verdict::Fencing => "fencing",
        v4l2::Verdict::NonFencingIgnoresFences => "non-fencing-ignores-fences",
        v4l2::Verdict::NonFencingHonoursFences => "non-fencing-honours-fences",
        v4l2::Verdict::NonFencingUnverified => "non-fencing-unverified",
    };
    let class = match report.bridge.class {
        fencebridge::bridge::producer_class::ProducerClass::Unknown => "unknown",
        fencebridge::bridge::producer_class::ProducerClass::Fencing => "fencing",
        fencebridge::bridge::producer_class::ProducerClass::NonFencing => "non-fencing",
    };
    json!({
        "device": {
            "path": d.path, "driver": d.driver, "card": d.card, "bus_info": d.bus_info,
            "caps": d.caps,
            "queues": d.queues.iter().map(|q| q.name()).collect::<Vec<_>>(),
        },
        "offered": report.offered.iter().map(|(q, formats)| json!({
            "queue": q.name(),
            "formats": formats.iter().map(|f| f.fourcc.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "format": {
            "fourcc": f.fourcc.to_string(), "width": f.width, "height": f.height,
            "queue": f.queue.name(),
            "memory_planes": f.planes.iter().map(|p| json!({
                "bytesperline": p.bytesperline, "sizeimage": p.sizeimage,
            })).collect::<Vec<_>>(),
            "drm_fourcc": f.drm_fourcc().map(|c| c.to_string()),
            "colour_planes": colour_planes,
        },
        "buffers": o.layout.iter().map(|b| json!({
            "index": b.index,
            "distinct_dmabufs": b.distinct_dmabufs,
            "planes": b.planes.iter().map(|p| json!({
                "length": p.length, "mem_offset": p.mem_offset, "inode": p.inode,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "buffer_caps": o.buffer_caps,
        "frames": o.frames,
        "error_frames": o.error_frames,
        "dropped": o.dropped,
        "elapsed_ms": o.elapsed.as_millis() as u64,
        "fences": {
            "fresh": tally(&o.fresh),
            "queued": tally(&o.queued),
            "queued_poll_ready": o.queued_poll_ready,
            "dequeued": tally(&o.dequeued),
            "imported": import,
        },
        "bridge": {
            "class": class,
            "became_non_fencing_at_commit": report.bridge.became_non_fencing.as_ref().map(|(n, _)| n),
            "release_when_reads_done": report.bridge.release_when_reads_done,
            "release_when_replaced": report.bridge.release_when_replaced,
            "acquire_wait": report.bridge.acquire_wait,
            "last_plan": report.bridge.last_plan.map(|p| format!("{p:?}")),
        },
        "findings": report.findings.iter().map(|f| json!({
            "id": f.id, "severity": f.severity.tag(), "summary": f.summary,
            "detail": f.detail, "advice": f.advice,
        })).collect::<Vec<_>>(),
        "verdict": verdict,
        "would_corrupt_without_bridge": report.would_corrupt_without_bridge(),
        "show": report.show.as_ref().map(|s| json!({
            "compositor": s.compositor,
            "syncobj": s.syncobj,
            "syncobj_note": s.syncobj_note,
            "presented": s.presented,
            "shown": s.shown,
            "releases": s.releases,
            "early_releases": s.early_releases,
            "reads_seen": s.reads_seen,
            "first_early": s.first_early.map(|(buffer, frame)| json!({ "buffer": buffer, "frame": frame })),
            "release_events_before_point": s.release_events_before_point,
            "held_at_end": s.held_at_end,
            "elapsed_ms": s.elapsed.as_millis() as u64,
            "verdict": v4l2::show::verdict(s),
            "tears": s.tears(),
        })),
    })
}

fn probe(as_json: bool) {
    let caps = Capabilities::probe();
    if !as_json {
        print!("{caps}");
        return;
    }
    let support = |s: &Support| json!({ "supported": s.is_yes(), "reason": s.reason() });
    let nodes: Vec<_> = caps
        .nodes
        .iter()
        .map(|n| {
            json!({
                "path": n.path,
                "driver": n.driver.as_ref().ok(),
                "error": n.driver.as_ref().err(),
                "syncobj": n.syncobj,
                "timeline": n.timeline,
                "eventfd": n.eventfd,
            })
        })
        .collect();
    let point_wait = match caps.point_wait {
        PointWaitPath::Eventfd => "eventfd",
        PointWaitPath::WaiterThread => "waiter-thread",
        PointWaitPath::Unavailable => "unavailable",
    };
    let report = json!({
        "dmabuf_export": support(&caps.dmabuf_export),
        "dmabuf_import": support(&caps.dmabuf_import),
        "stub_detection": support(&caps.stub_detection),
        "drm_nodes": nodes,
        "syncobj_device": caps.syncobj_device,
        "point_wait": point_wait,
        "syncobj_global": caps.syncobj_global(),
        "paths": caps.paths(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("a JSON value always serialises")
    );
}
