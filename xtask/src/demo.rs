//! `cargo xtask demo`: fencebridge at work with no GPU. It boots the newest kernel of the matrix
//! under qemu and runs the reference compositor (`examples/nested`, headless) there with four
//! clients side by side:
//!
//! - `fbclient implicit`: vgem dma-bufs committed while their write fence is pending — the
//!   stale-frame scenario;
//! - `fbclient explicit`: linux-drm-syncobj-v1 on a virtio_gpu timeline;
//! - `fbclient stuck --explicit`: an acquire point that never signals;
//! - `weston-simple-dmabuf-v4l`: Debian's V4L2 → linux-dmabuf client, on vivid.
//!
//! and `grim` takes a screenshot halfway. Then it prints a report per client (sync path, frames
//! shown, waits, stale frames, deferred releases) and where the screenshots are.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::kernels::{self, Fetcher};
use crate::vm::{self, VmEnd, VmRun};
use crate::{apt, cmd};

/// How long the compositor runs.
const SECONDS: u32 = 20;

/// The clients, with what each demonstrates.
const CLIENTS: [(&str, &str); 4] = [
    (
        "fbclient implicit --frames 30 --delay-ms 60 --tag 1",
        "implicit sync: vgem fences",
    ),
    (
        "fbclient explicit --frames 30 --delay-ms 40 --tag 2",
        "explicit sync: syncobj timeline",
    ),
    (
        "fbclient stuck --explicit --seconds 300 --tag 3",
        "an acquire point that never signals",
    ),
    (
        "weston-simple-dmabuf-v4l -v /dev/video0",
        "V4L2 video (vivid), no fences",
    ),
];

pub fn run(workspace: &Path) -> Result<ExitCode> {
    if desktop() {
        println!(
            "A display is here: to see fencebridge in a window on this machine's GPU, run\n  \
             cargo run --example nested --features winit -- --client weston-simple-dmabuf-egl\n\
             (a window drawn with GLES; its frames' GL fences end the clients' reads). The demo \
             below runs in a VM and needs neither.\n"
        );
    }
    step("host packages");
    let mut packages = apt::BUILD_DEPS.to_vec();
    packages.extend(apt::HOST_TOOLS);
    packages.extend(apt::WAYLAND_CLIENTS);
    apt::ensure(&packages)?;

    let suite = *kernels::select(&[])?
        .last()
        .context("the kernel matrix is empty")?;
    step(&format!(
        "kernel: Debian's {} (downloaded once)",
        suite.name
    ));
    let kernel = Fetcher::new()?.fetch(suite)?;

    step("building the compositor and the clients");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(Command::new(cargo).current_dir(workspace).args([
        "build",
        "--workspace",
        "--examples",
        "--bins",
        "--all-features",
    ]))?;

    let out = workspace.join("target/demo");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let examples = workspace.join("target/debug/examples");
    let grim = out.join("grim.sh");
    fs::write(&grim, format!("sleep {}; grim grim.png\n", SECONDS / 2))?;

    let mut run = VmRun::new(examples.join("nested"))?;
    run.cwd = out.clone();
    run.share = Some(out.clone());
    run.echo = false;
    run.log = Some(out.join("console.log"));
    run.timeout = Duration::from_secs(u64::from(SECONDS) + 120);
    run.args = [
        "--backend",
        "headless",
        "--seconds",
        &SECONDS.to_string(),
        "--size",
        "800x400",
        // A GPU that takes a while per frame: the video client's next buffer arrives while the
        // last one is still being read, and the bridge holds its release.
        "--gpu-ms",
        "150",
        "--png",
        "output.png",
        "--report-json",
        "report.json",
    ]
    .map(str::to_owned)
    .to_vec();
    for (client, _) in CLIENTS {
        let client = match client.strip_prefix("fbclient") {
            Some(args) => format!("{}{args}", examples.join("fbclient").display()),
            None => client.to_owned(),
        };
        run.args.extend(["--client".to_owned(), client]);
    }
    run.args
        .extend(["--client".to_owned(), format!("/bin/sh {}", grim.display())]);

    step(&format!(
        "booting {} under qemu and running the compositor for {SECONDS} s",
        kernel.release
    ));
    let outcome = vm::run(&kernel, &run)?;
    if outcome.end != VmEnd::Exited(0) {
        bail!(
            "the compositor did not finish ({:?}); its console is in {}",
            outcome.end,
            out.join("console.log").display()
        );
    }
    let report: Value = serde_json::from_slice(
        &fs::read(out.join("report.json")).context("the compositor wrote no report")?,
    )?;
    let stale = print_report(&kernel.release, &report, &outcome.log);
    if let Some(why) = &outcome.rebooted {
        println!("the VM was booted twice: {why}");
    }
    let files = [
        ("screenshot by grim, halfway (all clients)", "grim.png"),
        ("the compositor's last frame", "output.png"),
        ("the VM's console", "console.log"),
    ];
    for (what, file) in files {
        println!("{what:<42} {}", out.join(file).display());
    }
    Ok(if stale == Some(0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the per-client table; returns the stale frames of the test clients that judge them
/// (implicit and explicit; None if one of them gave no result).
fn print_report(release: &str, report: &Value, log: &str) -> Option<u64> {
    println!();
    println!("fencebridge demo: reference compositor on Linux {release} (qemu, no GPU)");
    println!(
        "{:<38} {:<11} {:>6} {:>6} {:>9} {:>18}",
        "client", "producer", "shown", "stale", "deferred", "wait median / max"
    );
    let clients = report["clients"].as_array().cloned().unwrap_or_default();
    let mut total_stale = Some(0);
    for (command, what) in CLIENTS {
        let mut words = command.split_whitespace();
        let program = words.next().unwrap_or_default();
        let mode = words.next().filter(|_| program == "fbclient");
        let Some(c) = clients.iter().find(|c| {
            c["command"].as_str().is_some_and(|cmd| {
                let mut words = cmd.split_whitespace();
                words.next().is_some_and(|p| p.ends_with(program))
                    && (mode.is_none() || words.next() == mode)
            })
        }) else {
            println!("{what:<38} (never connected)");
            total_stale = None;
            continue;
        };
        // The stuck client is not judged by its pixels here (it runs until the end).
        let stale = match mode.filter(|m| *m != "stuck") {
            Some(mode) => {
                let n = fbclient_result(log, mode, "stale");
                total_stale = total_stale.zip(n).map(|(t, n)| t + n);
                n.map_or("?".to_owned(), |n| n.to_string())
            }
            None => "-".to_owned(),
        };
        let producer = match c["producer"].as_str() {
            Some("Unknown") | None => "-",
            Some(p) => p,
        };
        let waits = match (c["wait_median_ms"].as_f64(), c["wait_max_ms"].as_f64()) {
            (Some(median), Some(max)) => format!("{median:.0} / {max:.0} ms"),
            _ => "-".to_owned(),
        };
        let number = |key: &str| c[key].as_u64().unwrap_or(0);
        println!(
            "{what:<38} {producer:<11} {:>6} {stale:>6} {:>9} {waits:>18}",
            number("frames_shown"),
            number("releases_deferred")
        );
        if let Some(commits) = c["commits"].as_object() {
            for (path, n) in commits.iter().filter(|(path, _)| *path != "no buffer") {
                println!("    {:>4} commits: {path}", n.as_u64().unwrap_or(0));
            }
        }
        if c["overdue_waits"].as_u64().unwrap_or(0) > 0 {
            println!(
                "    {} wait(s) overdue: diagnosed; its last good frame stays on screen and \
                 nobody else waits",
                c["overdue_waits"]
            );
        }
    }
    println!();
    println!(
        "stale frames: {} (the test clients compare every frame they commit with a \
         wlr-screencopy capture of the output)",
        total_stale.map_or("unknown: a test client gave no result".to_owned(), |n| n
            .to_string())
    );
    total_stale
}

/// A number from a test client's result line (`fbclient MODE: key=value ...`) in the log.
fn fbclient_result(log: &str, mode: &str, key: &str) -> Option<u64> {
    let prefix = format!("fbclient {mode}:");
    let line = log.lines().find_map(|l| l.trim().strip_prefix(&prefix))?;
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// A desktop session with a GPU: a display to open a window on, and a DRM device.
fn desktop() -> bool {
    let display =
        std::env::var_os("WAYLAND_DISPLAY").is_some() || std::env::var_os("DISPLAY").is_some();
    display && Path::new("/dev/dri").exists()
}

fn step(what: &str) {
    println!("==> {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_found_by_mode_and_key() {
        let log = "noise\nfbclient implicit: frames=30 stale=0 max_frame_ms=80\n\
                   fbclient explicit: frames=30 stale=2 release_early=0\n";
        assert_eq!(fbclient_result(log, "implicit", "stale"), Some(0));
        assert_eq!(fbclient_result(log, "explicit", "stale"), Some(2));
        assert_eq!(fbclient_result(log, "explicit", "frames"), Some(30));
        assert_eq!(fbclient_result(log, "stuck", "stale"), None);
        assert_eq!(fbclient_result(log, "implicit", "shown"), None);
    }
}
