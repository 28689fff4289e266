//! `cargo xtask bench`: the commit path's costs, measured in the VM (benches/commit_path.rs):
//! syscalls per commit for each sync path (cross-checked with `strace -c -f` in the guest),
//! wake latency against a bare calloop source and smithay 0.7's own blocker, and scale to
//! 10,000 pending surfaces. Counts and ratios come from one run; absolute times under
//! emulation are not claims. Results go to target/bench/ (results.json, results.md, and the
//! strace summaries); the markdown table is printed at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::kernels::{self, Fetcher};
use crate::vm::{self, VmEnd, VmRun};
use crate::{apt, cmd};

/// What `cargo xtask bench` was asked for.
pub struct Options {
    /// The kernel to measure on (default: the newest of the matrix).
    pub kernel: Option<String>,
    /// Fewer samples, no 10,000-surface step (a quick look, not the published table).
    pub quick: bool,
}

/// Builds the benchmark, runs it in the VM and prints its table; false if it failed.
pub fn run(workspace: &Path, options: &Options) -> Result<bool> {
    let selectors: Vec<String> = options.kernel.iter().cloned().collect();
    let suite = *kernels::select(&selectors)?
        .last()
        .context("the kernel matrix is empty")?;
    apt::ensure(apt::HOST_TOOLS)?;
    let kernel = Fetcher::new()?.fetch(suite)?;

    println!("==> building the benchmark");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The dev profile (opt-level 1), as the kernel tests: counts and ratios do not need a
    // release build of smithay, which costs many minutes.
    let messages = cmd::output(
        std::process::Command::new(cargo)
            .current_dir(workspace)
            .args([
                "build",
                "--bench",
                "commit_path",
                "--features",
                "smithay",
                "--message-format=json-render-diagnostics",
            ]),
    )?;
    let exe = executable(&messages, "commit_path")?;

    let out = workspace.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let _ = std::fs::remove_file(out.join("results.md"));
    println!("==> measuring on {}", kernel.release);
    let mut run = VmRun::new(&exe)?;
    run.args = vec!["--out".to_owned(), out.display().to_string()];
    if options.quick {
        run.args.push("--quick".to_owned());
    }
    run.cwd = workspace.to_owned();
    run.env.insert("FENCEBRIDGE_VM".to_owned(), "1".to_owned());
    run.share = Some(out.clone());
    run.timeout = Duration::from_secs(1200);
    run.log = Some(out.join("vm.log"));
    let outcome = vm::run(&kernel, &run)?;
    match outcome.end {
        VmEnd::Exited(0) => {}
        VmEnd::Exited(status) => {
            bail!("the benchmark exited with {status} (log: target/bench/vm.log)")
        }
        VmEnd::TimedOut => bail!("the benchmark timed out (log: target/bench/vm.log)"),
        VmEnd::NoMarker => bail!("the VM stopped before the benchmark ended"),
    }
    let table = std::fs::read_to_string(out.join("results.md"))
        .context("the benchmark wrote no target/bench/results.md")?;
    println!("\n{table}");
    if let Some(why) = &outcome.rebooted {
        println!("the VM was booted twice: {why}");
    }
    println!("results: {}", out.join("results.json").display());
    Ok(!table.contains("MISSED"))
}

/// The executable of the target `name` in cargo's JSON messages.
fn executable(messages: &str, name: &str) -> Result<PathBuf> {
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == name {
            if let Some(exe) = message["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo built no executable for `{name}`")
}
