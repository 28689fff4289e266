//! The reference nested compositor: smithay 0.7 with fencebridge embedded. It shows how a
//! compositor embeds the bridge (`state.rs` and `screen.rs`, the lines marked `fencebridge:`)
//! and proves the bridge end to end in the VM.
//!
//! ```text
//! cargo run --example nested --features winit -- [--backend auto|headless|winit] \
//!     [--no-bridge] [--no-publish] [--png out.png] [--labels CAPTION [--png-stale out.png]] [--client "PROGRAM ARGS"]... [-- PROGRAM ARGS]
//! ```
//! Backends (`screen.rs`): a winit window drawn with GLES (`window.rs`) when a display is
//! there, else a headless output drawn on the CPU by a software GPU with real
//! read fences (`headless.rs`, `gpu.rs`).
//!
//! It serves a Wayland socket (printed) with wl_compositor, xdg_shell, wl_shm, linux-dmabuf,
//! linux-drm-syncobj-v1 (fencebridge), a wl_output with xdg-output and wlr-screencopy (so
//! `grim` can take a screenshot, and screencast tools capture into dma-bufs, with the copy's
//! write fence on them). It runs the clients against it, and when they have all exited
//! (or after `--seconds`, or when its window is closed) writes the output as a PNG and prints,
//! per client, which sync path its commits took, how long they waited, how many of its frames
//! were shown, and whether its producer fences.
#![deny(clippy::undocumented_unsafe_blocks)]

mod gpu;
mod headless;
mod label;
// The renderer offers more than the compositor uses (BT.709, pixel probes for its tests).
#[allow(dead_code)]
mod render;
mod report;
mod screen;
mod screencopy;
mod state;
mod window;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use fencebridge::wayland::Config;
use smithay::reexports::calloop::channel;
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{EventLoop, Interest, LoopSignal, Mode, PostAction};
use smithay::reexports::wayland_server::Display;
use smithay::wayland::socket::ListeningSocketSource;

use headless::Headless;
use screen::Backend;
use state::Nested;

#[derive(Parser)]
#[command(about = "fencebridge's reference nested compositor (a window, or headless)")]
struct Args {
    /// What draws the output: a winit window with GLES, the headless CPU output, or `auto`:
    /// the window when a display is there (WAYLAND_DISPLAY or DISPLAY), else headless.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Run without fencebridge: commits apply at once, whatever their fences (the compositor a
    /// stale-frame test must catch).
    #[arg(long)]
    no_bridge: bool,
    /// Do not put the write fence of a screen capture's copy on its dma-buf: `ready` still
    /// goes out before the copy is written (the compositor a capture test must catch).
    #[arg(long)]
    no_publish: bool,
    /// Output size (the window's, at first).
    #[arg(long, default_value = "640x480", value_parser = parse_size)]
    size: (u32, u32),
    /// Where to write the last frame as a PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Label each window with its client and sync path, mark windows drawn while their client
    /// was still writing them, and write this caption at the bottom (headless).
    #[arg(long, value_name = "CAPTION")]
    labels: Option<String>,
    /// With --labels: where to write the first frame that showed a window mid-write, as a PNG.
    #[arg(long, requires = "labels")]
    png_stale: Option<PathBuf>,
    /// Where to write the per-client report as JSON too.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Stop after this long even if the clients still run [default: 30 headless; a window
    /// stays until it is closed].
    #[arg(long)]
    seconds: Option<f64>,
    /// Frames per second of the output (at most: a frame is rendered only when something
    /// changed). 60, as a desktop display: at 30 a 30 fps player's frame callbacks come as
    /// late as its next frame whenever the two clocks' phases meet, and it drops half its
    /// frames (measured: 62 of 120 shown, against 119 in the runs whose phases did not meet).
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// The least time the software GPU takes per frame, in milliseconds: a loaded GPU, whose
    /// reads of a buffer outlast the client's next commit.
    #[arg(long, default_value_t = 0)]
    gpu_ms: u64,
    /// The software GPU keeps its read fence to itself instead of putting it on the dma-bufs
    /// it reads, as a Vulkan or explicit-sync renderer does (headless).
    #[arg(long)]
    gpu_private_reads: bool,
    /// Tell fencebridge that the renderer puts its read fences on the dma-bufs itself
    /// (`Config::renderer_publishes_reads`), so the bridge does not. With
    /// `--gpu-private-reads` too, nobody does: the compositor a read-fence test must catch.
    #[arg(long)]
    renderer_publishes_reads: bool,
    /// A client to run, as one string of its program and arguments (split at spaces);
    /// repeatable, the clients run side by side.
    #[arg(long = "client", value_name = "COMMAND")]
    clients: Vec<String>,
    /// One more client, given as separate arguments.
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    client: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Auto,
    Headless,
    Winit,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WxH, e.g. 640x480")?;
    let parse = |v: &str| v.parse::<u32>().map_err(|e| format!("{v}: {e}"));
    Ok((parse(w)?, parse(h)?))
}

/// What the loop carries besides the compositor.
struct Run {
    clients: Vec<report::Spawned>,
    deadline: Option<Instant>,
    signal: LoopSignal,
}

impl Run {
    /// Whether every client has exited (never, if there were none: then the deadline ends it).
    fn clients_done(&mut self) -> bool {
        !self.clients.is_empty()
            && self
                .clients
                .iter_mut()
                .all(|client| client.child.try_wait().ok().flatten().is_some())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("nested-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
    let mut event_loop: EventLoop<'static, Nested> = EventLoop::try_new()?;
    let display = Display::<Nested>::new()?;
    let mut dh = display.handle();
    let mut flush = display.handle();
    let backend = start_backend(&args, &event_loop)?;
    let windowed = matches!(backend, Backend::Window(_));
    let size = backend.size().unwrap_or(args.size);
    let frame_interval = Duration::from_secs(1) / args.fps.max(1);
    let config = Config {
        explicit_sync: !args.no_bridge,
        renderer_publishes_reads: args.renderer_publishes_reads,
        ..Config::default()
    };
    let bridge = (!args.no_bridge).then_some(config);
    let mut state = Nested::new(
        &dh,
        event_loop.handle(),
        bridge,
        backend,
        (size, frame_interval),
    );
    state.screen.keep_canvas = args.png.is_some() || args.png_stale.is_some();
    state.screen.publish_capture_writes = !args.no_publish;
    state.screen.labels = args
        .labels
        .clone()
        .map(|caption| label::Labels::new(caption, args.png_stale.clone()));
    let (width, height) = state.screen.size();
    let backend = state.screen.backend.name();
    eprintln!("nested: {width}x{height} output, backend {backend}");
    if state.bridge_on {
        let paths = state.bridge.capabilities().paths().join("; ");
        eprintln!("nested: fencebridge on; {paths}");
    } else {
        eprintln!("nested: fencebridge OFF: commits apply at once, whatever their fences");
    }

    let socket = ListeningSocketSource::new_auto()?;
    let socket_name = socket.socket_name().to_owned();
    eprintln!("nested: WAYLAND_DISPLAY={}", socket_name.to_string_lossy());
    event_loop
        .handle()
        .insert_source(socket, move |stream, _, _| {
            state::insert_client(&mut dh, stream)
        })?;
    event_loop.handle().insert_source(
        Generic::new(display, Interest::READ, Mode::Level),
        |_, display, state| {
            // SAFETY: the display is not dropped while the loop runs (calloop owns it here).
            unsafe { display.get_mut().dispatch_clients(state)? };
            Ok(PostAction::Continue)
        },
    )?;

    let commands = args
        .clients
        .iter()
        .map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .chain((!args.client.is_empty()).then(|| args.client.clone()));
    let mut clients = Vec::new();
    for command in commands {
        let Some((program, rest)) = command.split_first() else {
            return Err("an empty --client".into());
        };
        let child = Command::new(program)
            .args(rest)
            .env("WAYLAND_DISPLAY", &socket_name)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let command = command.join(" ");
        println!("nested: client pid {}: {command}", child.id());
        clients.push(report::Spawned {
            command,
            child,
            exit: None,
        });
    }
    let started = Instant::now();
    // A window stays until it is closed, unless told otherwise.
    let seconds = args.seconds.or((!windowed).then_some(30.0));
    let run = Rc::new(RefCell::new(Run {
        clients,
        deadline: seconds.map(|s| started + Duration::from_secs_f64(s)),
        signal: event_loop.get_signal(),
    }));

    let frame = Duration::from_secs(1) / args.fps.max(1);
    let timer_run = run.clone();
    event_loop
        .handle()
        .insert_source(Timer::from_duration(frame), move |deadline, _, state| {
            let run = &mut *timer_run.borrow_mut();
            screen::start_frame(state);
            let late = run
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline);
            if run.clients_done() || late {
                run.signal.stop();
                return TimeoutAction::Drop;
            }
            TimeoutAction::ToInstant(screen::next_tick(deadline, Instant::now(), frame))
        })?;

    // Replies go out after every dispatch.
    event_loop.run(None, &mut state, |_| {
        let _ = flush.flush_clients();
    })?;
    let mut clients = std::mem::take(&mut run.borrow_mut().clients);
    for client in &mut clients {
        let _ = client.child.kill();
        client.exit = Some(client.child.wait()?);
    }
    if let Some(path) = &args.png {
        render::write_png(&state.screen.canvas, path)?;
        println!("screenshot: {}", path.display());
    }
    let report = report::Report::new(&state, &clients);
    print!("{report}");
    if let Some(path) = &args.report_json {
        std::fs::write(path, report.to_json().to_string())?;
    }
    Ok(())
}

/// Starts the backend `args` ask for and inserts its event sources into the loop.
fn start_backend(
    args: &Args,
    event_loop: &EventLoop<'static, Nested>,
) -> Result<Backend, Box<dyn std::error::Error>> {
    let display_there = ["WAYLAND_DISPLAY", "DISPLAY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    let want_window = match args.backend {
        BackendChoice::Headless => false,
        BackendChoice::Winit => true,
        BackendChoice::Auto => display_there,
    };
    if want_window {
        match open_window(args, event_loop) {
            Ok(backend) => return Ok(backend),
            Err(e) if args.backend == BackendChoice::Winit => {
                return Err(format!("no window: {e}").into())
            }
            Err(e) => eprintln!("nested: no window ({e}): headless instead"),
        }
    }
    let (gpu, frames_done) = gpu::SoftGpu::start(Duration::from_millis(args.gpu_ms))?;
    event_loop
        .handle()
        .insert_source(frames_done, |event, _, state| {
            if let channel::Event::Msg(finished) = event {
                headless::frame_done(state, finished);
            }
        })?;
    Ok(Backend::Headless(Headless::new(
        gpu,
        !args.gpu_private_reads,
    )))
}

/// Opens the window and inserts its events and its GL fence waiter into the loop.
fn open_window(
    args: &Args,
    event_loop: &EventLoop<'static, Nested>,
) -> Result<Backend, Box<dyn std::error::Error>> {
    let (width, height) = args.size;
    let (window, events, reads_done) = window::Window::open(width, height)?;
    let signal = event_loop.get_signal();
    event_loop
        .handle()
        .insert_source(events, move |event, _, state| {
            if !window::handle_event(state, event) {
                signal.stop();
            }
        })?;
    event_loop
        .handle()
        .insert_source(reads_done, |event, _, state| {
            if let channel::Event::Msg(surfaces) = event {
                screen::reads_done(state, &surfaces);
            }
        })?;
    Ok(Backend::Window(Box::new(window)))
}
