//! `fbclient`: Wayland test clients that judge a compositor by its pixels. Each opens an
//! xdg_toplevel of `--size`, draws frames into vgem dma-bufs (linux-dmabuf, XRGB8888) the way a
//! GPU client does — committing while the "GPU" is still writing — or, in `shm` mode, into
//! wl_shm buffers as a CPU client does; reads the output back with wlr-screencopy after each
//! frame callback, and ends with one result line on stdout.
//!
//! ```text
//! fbclient implicit [--frames N=20] [--delay-ms D=100] [--pipelined] [--tag T=0]
//!     [--size WxH=128x128]
//!     Each frame: attach a vgem write fence, commit, sleep D ms (the GPU is busy), write the
//!     frame's colour, signal the fence, wait for the frame callback, capture the output.
//!     A frame is stale if fewer than width×height output pixels have its colour.
//!     --pipelined: two buffers, each written as soon as it is released (after waiting for the
//!     readers' fences on it, as a GPU driver does), while the frame reading it may still be
//!     drawing; every other frame is judged, so frames=N/2 (rounded up).
//!     -> fbclient implicit: frames=N stale=S max_frame_ms=M
//! fbclient explicit [--frames N=20] [--delay-ms D=50] [--tag T=0] [--size WxH=128x128]
//!     linux-drm-syncobj-v1, a timeline per buffer: acquire point a and release point a+1;
//!     commit, sleep D, write, signal a from the CPU. Also checks the release points: not
//!     signalled before the commit's frame callback nor while its buffer is current
//!     (release_early), signalled within 2 s of the next commit's frame callback
//!     (release_late).
//!     -> fbclient explicit: frames=N stale=S release_early=E release_late=L max_frame_ms=M
//! fbclient shm [--frames N=20] [--interval-ms I=0] [--paced] [--tag T=0] [--size WxH=128x128]
//!     A CPU client (wl_shm, no kernel device needed): each frame a picture of four colours in
//!     its quadrants, written into a released buffer (two buffers), committed, captured after
//!     its frame callback and found on the output: right, upside down, or not shown (stale).
//!     replaced_busy: commits after which the buffer they replaced, which the compositor had
//!     drawn (copied), was still not released once it answered a roundtrip; a two-buffer
//!     client that draws on its frame callback (weston-simple-shm) can then find both busy.
//!     --paced: as weston-simple-shm, each frame is written and committed as soon as the last
//!     one's frame callback comes; only the last is captured and judged, so frames=1.
//!     -> fbclient shm: frames=N stale=S upside_down=U presented=P replaced_busy=B
//!        max_frame_ms=M
//! fbclient capture [--frames N=20] [--tag T=0] [--size WxH=128x128]
//!     A screencast consumer: each frame (a colour) is committed, and after its frame
//!     callback the output is captured into a vgem dma-buf (wlr-screencopy v3's linux_dmabuf
//!     offer); after `ready` it waits for the buffer's fences (EXPORT_SYNC_FILE, read) and
//!     reads the pixels. A capture is stale if fewer than width×height pixels have the
//!     frame's colour. pending_at_ready: captures whose buffer still had a fence pending at
//!     `ready` (the compositor's copy was under way); max_wait_ms: the longest wait for it.
//!     -> fbclient capture: frames=N stale=S pending_at_ready=P max_wait_ms=W max_frame_ms=M
//! fbclient video-over-ui [--frames N=60] [--interval-ms I=33] [--ui-every E=10]
//!         [--delay-ms D=200] [--tag T=0] [--size WxH=128x128]
//!     A player's window: the toplevel drawn by the "GPU" (a vgem write fence pending for D ms
//!     after each commit, a window frame every E video frames once the last is shown), a
//!     desynchronised subsurface in its middle half showing "video" (CPU-filled udmabuf or
//!     dma-heap buffers, never fenced, 48x32 scaled by wp_viewporter) every I ms. After each
//!     video frame callback the output is captured: stale if the frame's four quadrants do
//!     not fill exactly the viewport's rectangle at the subsurface's place; ui_stale if a
//!     window frame's colour does not fill the window around it.
//!     -> fbclient video-over-ui: frames=N stale=S max_frame_ms=M ui_frames=U ui_stale=V
//!        max_ui_frame_ms=X video_memory=udmabuf|dma-heap
//! fbclient single-pixel [--frames N=10] [--tag T=0] [--size WxH=128x128]
//!     wp_single_pixel_buffer_manager_v1: each frame a one-pixel buffer of its colour that
//!     wp_viewporter stretches over the window; stale unless exactly width×height output
//!     pixels have the colour.
//!     -> fbclient single-pixel: frames=N stale=S max_frame_ms=M
//! fbclient stuck [--explicit] [--seconds S=5] [--tag T=0] [--size WxH=128x128]
//!     One good frame, then one whose acquire never signals (a vgem write fence, or an
//!     acquire point with --explicit); stays connected S seconds. shown: frame callbacks
//!     received; stale: captures (after the good frame, and at the end) not showing the good
//!     frame.
//!     -> fbclient stuck: frames=2 stale=S shown=N
//! ```
//!
//! Exit status 0 with the result line (whatever it says); 2 with `fbclient <mode>: error (<kind>):
//! ...`
//! on stderr when the test could not run: no compositor, a missing global (the compositor
//! must offer wl_compositor, xdg_wm_base, zwp_linux_dmabuf_v1 v3, wl_shm, wl_output and
//! zwlr_screencopy_manager_v1; `explicit` also wp_linux_drm_syncobj_manager_v1), no vgem
//! device, no DRM device with syncobj timelines.
//!
//! Against the reference compositor, in the VM:
//! `nested -- fbclient implicit` must report `stale=0`; `nested --no-bridge -- fbclient
//! implicit` shows frames before their fence signalled, so `stale` > 0 there.
#![deny(clippy::undocumented_unsafe_blocks)]

mod capture;
mod explicit;
mod implicit;
mod pixels;
mod presentation;
mod screencast;
mod session;
mod shm;
mod single_pixel;
mod stuck;
mod tree;
mod video;
// The Wayland client plumbing `fencebridge v4l2 --show` uses too.
use fencebridge_cli::wlclient;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fbclient",
    about = "Wayland test clients for fencebridge: stale frames, release points, stuck fences, \
             judged by the output's pixels"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Implicit sync: each frame committed while its vgem write fence is pending.
    Implicit {
        #[command(flatten)]
        common: Common,
        /// Frames to commit.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=65535))]
        frames: u32,
        /// How long the "GPU" writes after each commit, in ms.
        #[arg(long, default_value_t = 100)]
        delay_ms: u64,
        /// Two buffers, each written as soon as it is released, while the frame that reads it
        /// may still be drawing: only the compositor's read fence on the buffer (waited for
        /// before each write, as a GPU driver does) keeps the write out of that frame. Every
        /// other frame is judged.
        #[arg(long)]
        pipelined: bool,
    },
    /// linux-drm-syncobj-v1: acquire points signalled after the commit; release points checked.
    Explicit {
        #[command(flatten)]
        common: Common,
        /// Frames to commit.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=65535))]
        frames: u32,
        /// How long the "GPU" writes after each commit, in ms.
        #[arg(long, default_value_t = 50)]
        delay_ms: u64,
    },
    /// A CPU client (wl_shm): four-colour pictures, checked pixel for pixel and for
    /// orientation.
    Shm {
        #[command(flatten)]
        common: Common,
        /// Frames to commit.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=65535))]
        frames: u32,
        /// The pause after each frame, in ms.
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        /// As weston-simple-shm: each frame committed as soon as the last one's frame callback
        /// comes, nothing in between; only the last frame is captured and judged.
        #[arg(long)]
        paced: bool,
    },
    /// A screencast consumer: captures into dma-bufs, waits for their fences, reads.
    Capture {
        #[command(flatten)]
        common: Common,
        /// Frames to show and capture.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=65535))]
        frames: u32,
    },
    /// A player's window: a GPU-drawn toplevel with a desynchronised video subsurface
    /// (CPU-filled dma-bufs that never fence) scaled by wp_viewporter.
    VideoOverUi {
        #[command(flatten)]
        common: Common,
        /// Video frames to commit.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=i64::from(video::MAX_FRAMES)))]
        frames: u32,
        /// The video's frame interval, in ms.
        #[arg(long, default_value_t = 33)]
        interval_ms: u64,
        /// A window frame every this many video frames (once the last one is shown).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        ui_every: u32,
        /// How long the "GPU" draws each window frame after its commit, in ms.
        #[arg(long, default_value_t = 200)]
        delay_ms: u64,
    },
    /// wp_single_pixel_buffer_manager_v1: a window of one colour per frame, stretched by
    /// wp_viewporter.
    SinglePixel {
        #[command(flatten)]
        common: Common,
        /// Frames (colours) to show.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=256))]
        frames: u32,
    },
    /// A good frame, then one whose acquire never signals; stays connected.
    Stuck {
        #[command(flatten)]
        common: Common,
        /// Use an acquire point (linux-drm-syncobj-v1) instead of a vgem write fence.
        #[arg(long)]
        explicit: bool,
        /// How long to stay connected after the stuck commit (vgem fences self-signal after
        /// about 10 s).
        #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
        seconds: f64,
    },
}

/// Options every mode takes.
#[derive(Args)]
pub struct Common {
    /// The window (and buffer) size.
    #[arg(long, default_value = "128x128", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Tells this client's colours from other clients' (0..=127).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=127))]
    pub tag: u8,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a size: give WIDTHxHEIGHT, such as 128x128");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    match (w.parse::<u32>(), h.parse::<u32>()) {
        (Ok(w), Ok(h)) if (1..=8192).contains(&w) && (1..=8192).contains(&h) => Ok((w, h)),
        _ => Err(bad()),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds (0 to 3600)")),
    }
}

/// Stale frames and frame times of a run.
#[derive(Default)]
pub struct FrameStats {
    frames: u32,
    stale: u32,
    max_frame: Duration,
}

impl FrameStats {
    /// One frame: from commit to frame callback, and whether the output showed it.
    pub fn frame(&mut self, time: Duration, shown_right: bool) {
        self.frames += 1;
        self.stale += u32::from(!shown_right);
        self.max_frame = self.max_frame.max(time);
    }

    /// A frame's time from commit to frame callback, for a frame not judged.
    pub fn time(&mut self, time: Duration) {
        self.max_frame = self.max_frame.max(time);
    }

    /// `frames=N stale=S`.
    pub fn counts(&self) -> String {
        format!("frames={} stale={}", self.frames, self.stale)
    }

    /// The longest commit-to-frame-callback time, in whole ms.
    pub fn max_frame_ms(&self) -> u128 {
        self.max_frame.as_millis()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match &cli.mode {
        Mode::Implicit {
            common,
            frames,
            delay_ms,
            pipelined,
        } => {
            let run = if *pipelined {
                implicit::run_pipelined
            } else {
                implicit::run
            };
            (
                "implicit",
                run(common, *frames, Duration::from_millis(*delay_ms)),
            )
        }
        Mode::Explicit {
            common,
            frames,
            delay_ms,
        } => (
            "explicit",
            explicit::run(common, *frames, Duration::from_millis(*delay_ms)),
        ),
        Mode::Shm {
            common,
            frames,
            interval_ms,
            paced,
        } => (
            "shm",
            shm::run(common, *frames, Duration::from_millis(*interval_ms), *paced),
        ),
        Mode::Capture { common, frames } => ("capture", screencast::run(common, *frames)),
        Mode::VideoOverUi {
            common,
            frames,
            interval_ms,
            ui_every,
            delay_ms,
        } => (
            "video-over-ui",
            video::run(
                common,
                *frames,
                Duration::from_millis(*interval_ms),
                *ui_every,
                Duration::from_millis(*delay_ms),
            ),
        ),
        Mode::SinglePixel { common, frames } => {
            ("single-pixel", single_pixel::run(common, *frames))
        }
        Mode::Stuck {
            common,
            explicit,
            seconds,
        } => (
            "stuck",
            stuck::run(common, *explicit, Duration::from_secs_f64(*seconds)),
        ),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fbclient {name}: error ({}): {e}", e.kind);
            ExitCode::from(2)
        }
    }
}
