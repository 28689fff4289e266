//! `fencebridge`: the command-line tool. `fencebridge probe` tells what this machine supports
//! and which path the bridge would take; `fencebridge v4l2` checks a V4L2 capture device, or a
//! decoder or converter it feeds, the way a compositor sees its frames, and with `--show`
//! presents them on a Wayland compositor (`show.rs`, over the client plumbing in
//! `fencebridge_cli::wlclient`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod json;
mod show;

use clap::{Parser, Subcommand};
use fencebridge::caps::Capabilities;
use fencebridge_cli::v4l2::{self, CheckOptions, FourCc, Progress};
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
    /// reading. A stateful decoder is fed a bitstream (made by its encoder from generated
    /// frames, or --input) and its decoded frames are checked the same way; a converter is fed
    /// generated frames. Exit status: 0 fine, 1 a finding would cause visible corruption (under
    /// a compositor without the bridge, or under this compositor with --show), 2 the check
    /// could not run.
    V4l2 {
        /// The capture device or decoder [default: the first capture-capable /dev/video*].
        device: Option<PathBuf>,
        /// The pixel format, as a fourcc (YUYV, NV12, NM12, XR24...) [default: the current one];
        /// for a decoder, the coded format of its input (FWHT, H264...) [default: its first].
        #[arg(long, value_name = "FOURCC")]
        format: Option<FourCc>,
        /// For a decoder: an elementary stream in the coded --format to decode [default: one
        /// its encoder makes from generated frames, where the machine has one].
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// The frame size [default: the current one].
        #[arg(long, value_name = "WxH", value_parser = parse_size)]
        size: Option<(u32, u32)>,
        /// How many frames to stream and watch.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
        frames: u32,
        /// The frame rate to ask a capture device for (it picks its nearest; a device keeps
        /// the rate its last client left, which may outrun the compositor).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1000))]
        fps: u32,
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
            input,
            size,
            frames,
            fps,
            buffers,
            json,
            show,
            no_syncobj,
        } => {
            let options = CheckOptions {
                format,
                input,
                size,
                frames,
                fps,
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
        // The frames again, from the start: a decoder is fed its input anew.
        let source = match v4l2::Source::open(&path, options) {
            Ok(source) => source,
            Err(e) => return fail(as_json, e.kind(), &e.to_string()),
        };
        match show::show(client, &source, show, progress) {
            Ok(outcome) => report.add_show(outcome),
            Err(e) => return fail(as_json, e.kind(), &e.to_string()),
        }
    }
    if as_json {
        json::print(&json::ReportJson::from(&report));
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
        json::print(&json::ErrorJson::new(kind, message));
    }
    eprintln!("fencebridge v4l2: error: {message}");
    ExitCode::from(EXIT_ERROR)
}

fn probe(as_json: bool) {
    let caps = Capabilities::probe();
    if !as_json {
        print!("{caps}");
        return;
    }
    json::print(&json::ProbeJson::from(&caps));
}
