//! The reference nested compositor: smithay 0.7 with fencebridge embedded, rendering a headless
//! output on the CPU. It shows how a compositor embeds the bridge (`state.rs`, the lines marked
//! `fencebridge:`) and proves the bridge end to end in the VM.
//!
//! ```text
//! cargo run --example nested --features smithay -- [--no-bridge] [--png out.png] -- CLIENT ARGS
//! ```
//! It serves a Wayland socket (printed), runs CLIENT against it if given, and when the client
//! exits (or after `--seconds`) writes the output as a PNG and prints, per client, which sync
//! path its commits took, how long they waited and whether its producer fences.
#![deny(clippy::undocumented_unsafe_blocks)]

mod headless;
// The renderer offers more than this first headless slice uses (screencopy writes, BT.709).
#[allow(dead_code)]
mod render;
mod state;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use clap::Parser;
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{EventLoop, Interest, LoopSignal, Mode, PostAction};
use smithay::reexports::wayland_server::Display;
use smithay::wayland::socket::ListeningSocketSource;

use render::Canvas;
use state::Nested;

#[derive(Parser)]
#[command(about = "fencebridge's reference nested compositor (headless, CPU-rendered)")]
struct Args {
    /// Run without fencebridge: commits apply at once, whatever their fences (the compositor a
    /// stale-frame test must catch).
    #[arg(long)]
    no_bridge: bool,
    /// Output size.
    #[arg(long, default_value = "640x480", value_parser = parse_size)]
    size: (u32, u32),
    /// Where to write the last frame as a PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Stop after this long even if the client still runs.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Frames per second of the output.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// The client to run, and its arguments.
    #[arg(last = true)]
    client: Vec<String>,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WxH, e.g. 640x480")?;
    let parse = |v: &str| v.parse::<u32>().map_err(|e| format!("{v}: {e}"));
    Ok((parse(w)?, parse(h)?))
}

/// What the loop carries besides the compositor.
struct Run {
    canvas: Canvas,
    client: Option<Child>,
    started: Instant,
    deadline: Instant,
    frames: u64,
    signal: LoopSignal,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("nested-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
    let mut event_loop: EventLoop<'static, Nested> = EventLoop::try_new()?;
    let display = Display::<Nested>::new()?;
    let mut dh = display.handle();
    let mut flush = display.handle();
    let mut state = Nested::new(&dh, event_loop.handle(), !args.no_bridge);
    eprintln!(
        "nested: fencebridge {}; {}",
        if state.bridge_on { "on" } else { "OFF" },
        state.bridge.capabilities().paths().join("; ")
    );

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

    let client = match args.client.split_first() {
        Some((program, rest)) => Some(
            Command::new(program)
                .args(rest)
                .env("WAYLAND_DISPLAY", &socket_name)
                .spawn()
                .map_err(|e| format!("cannot run {program}: {e}"))?,
        ),
        None => None,
    };
    let started = Instant::now();
    let run = Run {
        canvas: Canvas::new(args.size.0, args.size.1),
        client,
        started,
        deadline: started + Duration::from_secs_f64(args.seconds),
        frames: 0,
        signal: event_loop.get_signal(),
    };

    let frame = Duration::from_secs(1) / args.fps.max(1);
    let run_slot = std::rc::Rc::new(std::cell::RefCell::new(run));
    let timer_run = run_slot.clone();
    event_loop
        .handle()
        .insert_source(Timer::from_duration(frame), move |_, _, state| {
            let run = &mut *timer_run.borrow_mut();
            headless::render_frame(state, &mut run.canvas, run.started.elapsed());
            run.frames += 1;
            let client_done = match &mut run.client {
                Some(child) => child.try_wait().ok().flatten().is_some(),
                None => false,
            };
            if client_done || Instant::now() >= run.deadline {
                run.signal.stop();
                return TimeoutAction::Drop;
            }
            TimeoutAction::ToDuration(frame)
        })?;

    // Replies go out after every dispatch.
    event_loop.run(None, &mut state, |_| {
        let _ = flush.flush_clients();
    })?;
    let run = &mut *run_slot.borrow_mut();
    if let Some(child) = &mut run.client {
        let _ = child.kill();
        let status = child.wait()?;
        eprintln!("nested: client exited: {status}");
    }
    if let Some(path) = &args.png {
        render::write_png(&run.canvas, path)?;
        println!("screenshot: {}", path.display());
    }
    println!("frames rendered: {}", run.frames);
    report(&state);
    Ok(())
}

/// Per client: sync paths, waits, producer class, deferred releases.
fn report(state: &Nested) {
    for (_, r) in state.bridge.client_reports() {
        let pid = r.pid.map_or("?".to_owned(), |p| p.to_string());
        println!("client pid {pid}: producer {:?}", r.producer);
        for (path, n) in &r.commits {
            println!("  {n:>6} commits: {path}");
        }
        if let (Some(median), max) = (r.waits.median(), r.waits.max) {
            println!("  waits: median {median:.1?}, max {max:.1?}");
        }
        println!(
            "  releases deferred: {}, release points signalled: {}, overdue waits: {}",
            r.releases_deferred, r.release_points_signalled, r.overdue_waits
        );
        for error in &r.protocol_errors {
            println!("  protocol: {error}");
        }
    }
}
