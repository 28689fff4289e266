//! Booting a kernel of the matrix under qemu and running one host program in it, as root.
//!
//! The guest mounts the host's `/` read-only over virtio-9p and chroots into it, so the
//! dynamically linked programs of the host (cargo test binaries, the compositor, Debian's own
//! Wayland clients) run there unchanged, against the guest kernel's vgem, virtio_gpu, udmabuf
//! and vivid. The guest says `KHARNESS_STARTED` on the serial console just before it starts the
//! program, and the program's exit status comes back as a `KHARNESS_EXIT=<n>` line; the
//! console is also the program's stdout and stderr. KVM is not available on the project's
//! machines: qemu emulates (TCG), about 4 s a boot.
//!
//! A boot that dies (or hangs) before the guest started the program is booted again, once:
//! emulated kernels rarely oops in early boot (seen once in about fifteen boots of 7.3.4 under
//! TCG), and nothing of the project has run by then. Once the program started, a crash is the
//! run's own failure, never retried.

use std::collections::BTreeMap;
use std::env;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::kernels::Kernel;
use crate::{cmd, initramfs, m2m};

/// The modules the kernel tests use; a kernel that lacks one still boots (the run's log says
/// so, and the tests that need it skip). vicodec and vim2m are built out of tree (see
/// [`m2m`]), for the kernels whose compiler the host has.
pub const DEFAULT_MODULES: [&str; 6] = [
    "vgem",
    "virtio_gpu",
    "udmabuf",
    "vivid",
    m2m::DRIVERS[0],
    m2m::DRIVERS[1],
];

/// Module parameters of every boot, unless a run replaces a module's. vivid makes five
/// instances (its parameters are per-instance arrays): instance 0 keeps vivid's defaults
/// (single-planar, vmalloc, all node types), and 1–3 are a capture and an output node each,
/// covering single-planar dma-contig, multi-planar vmalloc and multi-planar dma-contig.
/// Instance 4 (single-planar vmalloc, a capture node) is GStreamer's alone: a device keeps the
/// format and frame rate its last client set, and v4l2src leaves vivid at its fastest. The
/// V4L2 kernel tests tell them apart by bus_info (`platform:vivid-00N`).
pub const DEFAULT_MODPARAMS: [(&str, &str); 1] = [(
    "vivid",
    "n_devs=5 multiplanar=1,1,2,2,1 allocators=0,1,0,1,0 \
     node_types=0xe1d3d,0x101,0x101,0x101,0x1",
)];

/// Long enough for the whole kernel suite under emulation (about 3–4 minutes a kernel with the
/// real players, longer on a loaded machine), short enough that a hung test does not eat CI's
/// time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

const EXIT_MARKER: &str = "KHARNESS_EXIT=";
/// Printed by the guest's `/init` just before it runs the program.
const STARTED_MARKER: &str = "KHARNESS_STARTED";

/// qemu's settings for every boot: emulation (no KVM on the project's machines), the
/// machine's 2 cores, a 2D virtio GPU (the guest's virtio_gpu DRM device), no network, and
/// the serial console on stdout.
const QEMU_ARGS: &str = "-accel tcg -m 1024 -smp 2 -nodefaults -display none -no-reboot \
    -monitor none -serial stdio -device virtio-gpu-pci -nic none";

/// Quiet, so that the console is mostly the program's output; panic=-1 powers off at once
/// on a kernel panic (with -no-reboot), which the harness sees as a run without exit marker.
const KERNEL_COMMAND_LINE: &str = "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init";

/// One boot: what to run in the guest, and how to set the guest up for it.
pub struct VmRun {
    /// The program: a host path, or a bare name looked up on the PATH in the guest.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The working directory in the guest (a host path).
    pub cwd: PathBuf,
    /// Environment of the program, on top of a plain PATH and HOME=/root.
    pub env: BTreeMap<String, String>,
    /// Modules to load, with their dependencies.
    pub modules: Vec<String>,
    /// Module parameters, by module: `"vivid" → "multiplanar=2 n_devs=2"`.
    pub modparams: BTreeMap<String, String>,
    /// A host directory the guest may write to, mounted at the same path.
    pub share: Option<PathBuf>,
    /// qemu is killed when the run takes longer.
    pub timeout: Duration,
    /// Whether to copy the guest's console to stdout as it comes.
    pub echo: bool,
    /// A file to keep the console output in.
    pub log: Option<PathBuf>,
}

impl VmRun {
    /// A run of `program` in the current directory with the default modules, echoed, with the
    /// host's `RUST_*` and `NO_COLOR` variables (log filters, backtraces) passed on.
    pub fn new(program: impl Into<PathBuf>) -> Result<Self> {
        let env = env::vars()
            .filter(|(name, _)| name.starts_with("RUST_") || name == "NO_COLOR")
            .filter(|(name, _)| is_shell_name(name))
            .collect();
        Ok(Self {
            program: program.into(),
            args: Vec::new(),
            cwd: env::current_dir()?,
            env,
            modules: DEFAULT_MODULES.map(str::to_owned).to_vec(),
            modparams: DEFAULT_MODPARAMS
                .iter()
                .map(|&(m, p)| (m.to_owned(), p.to_owned()))
                .collect(),
            share: None,
            timeout: DEFAULT_TIMEOUT,
            echo: true,
            log: None,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEnd {
    /// The program exited with this status.
    Exited(i32),
    /// The run exceeded its timeout and qemu was killed.
    TimedOut,
    /// qemu ended without an exit marker: the guest panicked or never got to the program.
    NoMarker,
}

/// What a run produced.
pub struct VmOutcome {
    pub end: VmEnd,
    /// The console output (carriage returns removed), after the harness's own notes.
    pub log: String,
    /// From starting qemu to its end.
    pub elapsed: Duration,
    /// Why the first boot was discarded, when the run was booted a second time.
    pub rebooted: Option<String>,
}

impl VmOutcome {
    /// ` (booted twice: why)` when the first boot was discarded, for a run's summary line.
    pub fn reboot_note(&self) -> String {
        self.rebooted
            .as_ref()
            .map_or_else(String::new, |why| format!(" (booted twice: {why})"))
    }
}

/// One boot, as the retry decision sees it.
pub struct Boot {
    pub end: VmEnd,
    /// The console output, harness notes included.
    pub log: String,
    pub elapsed: Duration,
}

/// Why a boot should be done again, if it should: it died or hung before the guest said it
/// started the program. A guest that started and then crashed, or that ended with an exit
/// status of its own (even before starting: its set-up failed and said why), is the run's
/// result.
fn bad_boot(boot: &Boot) -> Option<&'static str> {
    let started = boot.log.contains(STARTED_MARKER);
    match boot.end {
        _ if started => None,
        VmEnd::Exited(_) => None,
        VmEnd::NoMarker => Some("the first boot died before the guest started"),
        VmEnd::TimedOut => Some("the first boot hung before the guest started"),
    }
}

/// Boots with `boot` (given the attempt, 1 or 2) until a boot is not bad, twice at most.
fn boot_until_started(mut boot: impl FnMut(u32) -> Result<Boot>) -> Result<VmOutcome> {
    let first = boot(1)?;
    let Some(why) = bad_boot(&first) else {
        return Ok(VmOutcome {
            end: first.end,
            log: first.log,
            elapsed: first.elapsed,
            rebooted: None,
        });
    };
    eprintln!("xtask vm: {why}; booting again (once)");
    let second = boot(2)?;
    Ok(VmOutcome {
        end: second.end,
        log: second.log,
        elapsed: first.elapsed + second.elapsed,
        rebooted: Some(why.to_owned()),
    })
}

/// Boots `kernel` and runs `run` in it. An error means the run could not be started (no qemu,
/// a bad path...); what happens in the guest is in the outcome.
pub fn run(kernel: &Kernel, run: &VmRun) -> Result<VmOutcome> {
    let program = if is_bare_name(&run.program) {
        run.program.clone()
    } else {
        absolute(&run.program)?
    };
    let cwd = absolute(&run.cwd)?;
    let share = match &run.share {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            Some(absolute(dir)?)
        }
        None => None,
    };

    // What the kernel tests expect of the m2m drivers on this kernel.
    let (name, value) = kernel.m2m.guest_env(&run.modules);
    let mut env = run.env.clone();
    env.insert(name.to_owned(), value);
    let (conf, args) = guest_settings(run, &env, &program, &cwd, share.as_deref())?;
    let initramfs = initramfs::build(
        kernel,
        &run.modules,
        &[
            ("xtask/run.conf", conf.as_bytes()),
            ("xtask/args", args.as_bytes()),
        ],
    )?;
    // Unique per run, so that runs may go on in parallel.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let initrd = env::temp_dir().join(format!(
        "xtask-initrd-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&initrd, &initramfs.image)?;
    let log = match &run.log {
        Some(path) => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            Some(File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };
    let result = boot_until_started(|attempt| {
        let mut notes = initramfs.notes.clone();
        if attempt > 1 {
            notes.push(format!(
                "boot {attempt}: the one before died before the guest started"
            ));
        }
        // a clone shares the file's offset: each boot appends to the same log
        let log = log.as_ref().map(File::try_clone).transpose()?;
        boot(kernel, run, &initrd, share.as_deref(), &notes, log)
    });
    let _ = fs::remove_file(&initrd);
    result
}

/// The guest's `/xtask/run.conf` and `/xtask/args` (read by guest/init.sh).
fn guest_settings(
    run: &VmRun,
    env: &BTreeMap<String, String>,
    program: &Path,
    cwd: &Path,
    share: Option<&Path>,
) -> Result<(String, String)> {
    // Host paths under /tmp that the guest's fresh /tmp would hide.
    let keep: Vec<&str> = [program.parent(), Some(cwd)]
        .into_iter()
        .flatten()
        .filter(|p| p.starts_with("/tmp") && p != &Path::new("/tmp"))
        .map(utf8)
        .collect::<Result<_>>()?;
    let mut conf = format!(
        "CWD={}\nKEEP={}\nSHARE={}\n",
        quote(utf8(cwd)?),
        quote(&keep.join(" ")),
        quote(share.map(utf8).transpose()?.unwrap_or(""))
    );
    for (module, params) in &run.modparams {
        let module = module.replace('-', "_");
        if !is_shell_name(&module) {
            bail!("not a module name: {module:?}");
        }
        conf += &format!("MODPARAMS_{module}={}\n", quote(params));
    }
    for (name, value) in env {
        if !is_shell_name(name) {
            bail!("not an environment variable name: {name:?}");
        }
        conf += &format!("export {name}={}\n", quote(value));
    }
    let mut args = quote(utf8(program)?);
    for arg in &run.args {
        args.push(' ');
        args.push_str(&quote(arg));
    }
    Ok((conf, args))
}

/// Starts qemu and follows the console until qemu ends or the run times out; the console goes
/// to `log` too (after what earlier boots of the run wrote there).
fn boot(
    kernel: &Kernel,
    run: &VmRun,
    initrd: &Path,
    share: Option<&Path>,
    notes: &[String],
    mut log: Option<File>,
) -> Result<Boot> {
    let mut head = String::new();
    for note in notes {
        head += &format!("KHARNESS: {note}\n");
    }
    cmd::tee(head.as_bytes(), run.echo, log.as_mut())?;

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(QEMU_ARGS.split_whitespace())
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", KERNEL_COMMAND_LINE])
        .arg("-virtfs")
        .arg(virtfs(Path::new("/"), "hostroot", true)?);
    if let Some(share) = share {
        qemu.arg("-virtfs").arg(virtfs(share, "share", false)?);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes one prctl
    // system call, which is async-signal-safe: it allocates nothing and takes no lock.
    unsafe {
        // A killed xtask (a timeout, ^C, a helper's kill) must not leave an emulated guest
        // running on its own, holding CPU that the next run measures with.
        qemu.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let start = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(&qemu)))?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let echo = run.echo;
    let reader = thread::spawn(move || cmd::tee(stdout, echo, log.as_mut()));

    let mut timed_out = false;
    while child.try_wait()?.is_none() {
        if start.elapsed() > run.timeout {
            child.kill()?;
            child.wait()?;
            timed_out = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    let console = reader
        .join()
        .map_err(|_| anyhow!("the console reader panicked"))??;
    let end = if timed_out {
        VmEnd::TimedOut
    } else {
        exit_status(&console).map_or(VmEnd::NoMarker, VmEnd::Exited)
    };
    Ok(Boot {
        end,
        log: head + &console,
        elapsed,
    })
}

/// The status in the last exit marker line of the console output.
fn exit_status(console: &str) -> Option<i32> {
    console
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(EXIT_MARKER)?.parse().ok())
}

/// A `-virtfs` argument sharing `path` under `tag` (commas in the path doubled, as qemu's
/// option syntax wants).
fn virtfs(path: &Path, tag: &str, readonly: bool) -> Result<String> {
    let path = utf8(path)?.replace(',', ",,");
    let readonly = if readonly { ",readonly=on" } else { "" };
    Ok(format!(
        "local,path={path},mount_tag={tag},security_model=none,multidevs=remap{readonly}"
    ))
}

/// A program name without a directory, which the guest's PATH resolves (like a shell would).
fn is_bare_name(program: &Path) -> bool {
    program.components().count() == 1 && program.is_relative()
}

fn absolute(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).with_context(|| format!("no such file: {}", path.display()))
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("not UTF-8: {}", path.display()))
}

/// `s` as one word for the guest's shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        let words = ["plain", "two words", "it's", "$HOME `x` \\ \"q\"", ""];
        let line: Vec<String> = words.iter().map(|w| quote(w)).collect();
        let script = format!("for w in {}; do printf '%s|' \"$w\"; done", line.join(" "));
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "plain|two words|it's|$HOME `x` \\ \"q\"||"
        );
    }

    #[test]
    fn the_last_exit_marker_counts() {
        let console = "KHARNESS_EXIT=3 is not alone\nKHARNESS_EXIT=1\nout\n KHARNESS_EXIT=0 \n";
        assert_eq!(exit_status(console), Some(0));
        assert_eq!(exit_status("KHARNESS: done\n"), None);
    }

    /// Boots that end as `ends` say, one per attempt; returns the outcome and how many booted.
    fn boots(ends: &[(VmEnd, &str)]) -> (VmOutcome, usize) {
        let mut booted = 0;
        let outcome = boot_until_started(|attempt| {
            assert_eq!(attempt as usize, booted + 1);
            let (end, log) = ends[booted];
            booted += 1;
            Ok(Boot {
                end,
                log: log.to_owned(),
                elapsed: Duration::from_secs(4),
            })
        })
        .unwrap();
        (outcome, booted)
    }

    const OOPS: &str = "KHARNESS: kernel modules...\nOops: int3 in sched_clock_cpu\n";
    const RAN: &str = "KHARNESS_STARTED\ntest result: ok. 1 passed\nKHARNESS_EXIT=0\n";

    #[test]
    fn a_boot_that_dies_before_the_guest_started_is_booted_again_once() {
        let (outcome, booted) = boots(&[(VmEnd::NoMarker, OOPS), (VmEnd::Exited(0), RAN)]);
        assert_eq!(booted, 2);
        assert_eq!(outcome.end, VmEnd::Exited(0));
        assert_eq!(outcome.log, RAN);
        assert_eq!(outcome.elapsed, Duration::from_secs(8));
        assert_eq!(
            outcome.rebooted.as_deref(),
            Some("the first boot died before the guest started")
        );
        // a hang in early boot too
        let (outcome, booted) = boots(&[(VmEnd::TimedOut, OOPS), (VmEnd::Exited(0), RAN)]);
        assert_eq!((booted, outcome.end), (2, VmEnd::Exited(0)));
        // but only once: a second bad boot is the run's result
        let (outcome, booted) = boots(&[(VmEnd::NoMarker, OOPS), (VmEnd::NoMarker, OOPS)]);
        assert_eq!((booted, outcome.end), (2, VmEnd::NoMarker));
    }

    #[test]
    fn a_crash_after_the_guest_started_is_a_failure_not_retried() {
        let crashed = "KHARNESS_STARTED\nrunning kernel-0123\nKernel panic\n";
        let (outcome, booted) = boots(&[(VmEnd::NoMarker, crashed), (VmEnd::Exited(0), RAN)]);
        assert_eq!((booted, outcome.end), (1, VmEnd::NoMarker));
        assert_eq!(outcome.rebooted, None);
        let (outcome, booted) = boots(&[(VmEnd::TimedOut, crashed)]);
        assert_eq!((booted, outcome.end), (1, VmEnd::TimedOut));
        // a guest whose set-up failed said so with its own exit status: not a bad boot
        let setup = "KHARNESS: mount hostroot failed\nKHARNESS_EXIT=126\n";
        let (outcome, booted) = boots(&[(VmEnd::Exited(126), setup)]);
        assert_eq!((booted, outcome.end), (1, VmEnd::Exited(126)));
        // and a good first boot is the only one
        let (outcome, booted) = boots(&[(VmEnd::Exited(1), RAN)]);
        assert_eq!(
            (booted, outcome.end, outcome.rebooted),
            (1, VmEnd::Exited(1), None)
        );
    }

    #[test]
    fn virtfs_escapes_commas() {
        assert_eq!(
            virtfs(Path::new("/a,b"), "share", false).unwrap(),
            "local,path=/a,,b,mount_tag=share,security_model=none,multidevs=remap"
        );
    }

    #[test]
    fn shell_names() {
        assert!(is_shell_name("RUST_LOG"));
        assert!(is_shell_name("_x1"));
        assert!(!is_shell_name("1x"));
        assert!(!is_shell_name("A-B"));
        assert!(!is_shell_name(""));
    }
}
