//! `cargo xtask`: fencebridge's test harness and developer tools.
//!
//! What fencebridge does happens in the kernel (dma-buf fences, DRM syncobjs), and the uAPI
//! differs from one kernel release to the next, so its kernel tests must run on real kernels.
//! This harness boots stock Debian kernels under qemu, with the host's root file system shared
//! read-only, and runs the host's own test binaries there. CI runs `cargo xtask test`.

mod apt;
mod archive;
mod bench;
mod cmd;
mod demo;
mod initramfs;
mod kernels;
mod m2m;
mod smithay_git;
mod suite;
mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::kernels::Fetcher;
use crate::vm::{VmEnd, VmRun};

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "fencebridge's test harness and developer tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run every check CI runs: lints, host tests, and the kernel tests in a VM on each kernel
    /// of the matrix (6.1, 6.12, 7.x). The last line is the total.
    Test(TestArgs),
    /// Boot one kernel and run a host program in it as root, with the host's / read-only;
    /// exits with the program's status (124: timed out, 125: the guest never reported one).
    Vm(VmArgs),
    /// Boot the VM and run the reference compositor in it with test clients, a V4L2 video
    /// client and a screenshot tool; print what fencebridge did per client (no GPU needed).
    Demo,
    /// Measure the commit path in the VM: syscalls per commit per sync path (checked with
    /// strace), wake latency against a bare calloop source and smithay's blocker, and scale to
    /// 10,000 pending surfaces. Writes target/bench/results.{json,md} and prints the table.
    Bench(BenchArgs),
    /// Build the library, its wayland doc examples, the kernel tests and smithay's anvil with
    /// fencebridge embedded against smithay's development branch (../shared/smithay-git), as
    /// `cargo xtask test` does.
    SmithayGit,
}

#[derive(Args)]
struct BenchArgs {
    /// The kernel to measure on (a series such as 6.12 or 7) [default: the newest]
    #[arg(long)]
    kernel: Option<String>,
    /// Fewer samples and no 10,000-surface step: a quick look, not the published table.
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Test on this kernel only (a series such as 6.12 or 7, or a Debian suite); repeatable.
    #[arg(long = "kernel", value_name = "KERNEL")]
    kernels: Vec<String>,
    /// Skip rustfmt and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Skip the VM: lints and host tests only.
    #[arg(long, conflicts_with = "vm_only")]
    host_only: bool,
    /// Only the kernel tests in the VM.
    #[arg(long)]
    vm_only: bool,
}

#[derive(Args)]
struct VmArgs {
    /// The kernel to boot (a series such as 6.12 or 7, or a Debian suite) [default: the newest]
    #[arg(long)]
    kernel: Option<String>,
    /// A module to load (with its dependencies); repeatable. Replaces the default list:
    /// vgem virtio_gpu udmabuf vivid vicodec vim2m (the last two built out of tree, for the
    /// kernels whose compiler the host has).
    #[arg(long = "module", value_name = "MODULE")]
    modules: Vec<String>,
    /// Module parameters, as MODULE=PARAMS (`vivid=multiplanar=2`); repeatable. They replace
    /// that module's defaults (vivid: five instances, see xtask/src/vm.rs).
    #[arg(long = "param", value_name = "MODULE=PARAMS", value_parser = split_assignment)]
    params: Vec<(String, String)>,
    /// An environment variable for the program, as NAME=VALUE; repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = split_assignment)]
    env: Vec<(String, String)>,
    /// A host directory the guest may write to, mounted at the same path.
    #[arg(long)]
    share: Option<PathBuf>,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    /// Keep the console output in this file too.
    #[arg(long)]
    log: Option<PathBuf>,
    /// The program and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

fn split_assignment(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Test(args) => test(args),
        Task::Vm(args) => run_vm(args),
        Task::Demo => demo::run(workspace()),
        Task::SmithayGit => {
            let outcome = smithay_git::check(workspace());
            println!("smithay development branch: {outcome}");
            Ok(ExitCode::from(u8::from(outcome.failed())))
        }
        Task::Bench(args) => bench::run(
            workspace(),
            &bench::Options {
                kernel: args.kernel,
                quick: args.quick,
            },
        )
        .map(|met| {
            // The table says which target was missed, by how much and why.
            ExitCode::from(u8::from(!met))
        }),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}

/// The workspace root (xtask lives one level below it).
///
/// Asked of `cargo run` (which sets `CARGO_MANIFEST_DIR` for the program it runs) rather than
/// fixed at build time: an xtask binary that cargo reuses from a target directory built in
/// another checkout would otherwise test that checkout.
fn workspace() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        manifest_dir
            .parent()
            .expect("xtask is inside the workspace")
            .to_owned()
    })
}

fn test(args: TestArgs) -> Result<ExitCode> {
    let options = suite::Options {
        kernels: args.kernels,
        lint: !args.no_lint && !args.vm_only,
        host: !args.vm_only,
        vm: !args.host_only,
    };
    Ok(if suite::run(workspace(), &options)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_vm(args: VmArgs) -> Result<ExitCode> {
    let selectors: Vec<String> = args.kernel.into_iter().collect();
    let suite = *kernels::select(&selectors)?
        .last()
        .context("the kernel matrix is empty")?;
    apt::ensure(apt::HOST_TOOLS)?;
    let kernel = Fetcher::new()?.fetch(suite)?;

    let (program, program_args) = args.command.split_first().context("no program")?;
    let mut run = VmRun::new(program)?;
    run.args = program_args.to_vec();
    if !args.modules.is_empty() {
        run.modules = args.modules;
    }
    let mut modparams: BTreeMap<String, String> = BTreeMap::new();
    for (module, params) in args.params {
        let all = modparams.entry(module).or_default();
        if !all.is_empty() {
            all.push(' ');
        }
        all.push_str(&params);
    }
    // A module's --param replaces its default parameters; the other defaults stay.
    run.modparams.extend(modparams);
    run.env.extend(args.env);
    run.share = args.share;
    run.timeout = Duration::from_secs(args.timeout);
    run.log = args.log;

    let outcome = vm::run(&kernel, &run)?;
    Ok(match outcome.end {
        VmEnd::Exited(status) => {
            eprintln!(
                "xtask vm: {} exited with {status} after {:.1} s on {}{}",
                program,
                outcome.elapsed.as_secs_f64(),
                kernel.release,
                outcome.reboot_note()
            );
            ExitCode::from(u8::try_from(status).unwrap_or(1))
        }
        VmEnd::TimedOut => {
            eprintln!("xtask vm: timed out after {} s", args.timeout);
            ExitCode::from(124)
        }
        VmEnd::NoMarker => {
            eprintln!("xtask vm: the guest stopped without reporting an exit status");
            ExitCode::from(125)
        }
    })
}
