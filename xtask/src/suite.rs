//! `cargo xtask test`: every check the project has, as CI runs it.
//!
//! Lints, host tests, then the kernel tests booted on each kernel of the matrix. A step that
//! fails does not stop the others: the run reports all it can, then one summary line per
//! kernel, one for the host and a total, which is the last line printed. A kernel whose suite
//! did not run (no VM, no `test result:` line) counts as failed, so that CI can never pass
//! with the kernel tests quietly skipped.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::kernels::{self, Fetcher, Kernel, Suite};
use crate::m2m::M2m;
use crate::vm::{self, VmEnd, VmRun};
use crate::{apt, cmd, smithay_git};

/// Written by a kernel test that cannot run on this kernel (`fencebridge-skip: <test>:
/// <reason>`), straight to stderr so that libtest's capture does not swallow it. libtest
/// counts such a test as passed; the summary counts it as skipped.
const SKIP_MARKER: &str = "fencebridge-skip: ";

/// Which parts of the run to do; CI does all of them.
pub struct Options {
    /// Kernels to test (`6.12`, `trixie-backports`...); all of them if empty.
    pub kernels: Vec<String>,
    pub lint: bool,
    pub host: bool,
    pub vm: bool,
}

/// Runs the suite and prints the summary; false if anything failed or did not run.
pub fn run(workspace: &Path, options: &Options) -> Result<bool> {
    let started = Instant::now();
    let suites = if options.vm {
        kernels::select(&options.kernels)?
    } else {
        Vec::new()
    };
    let cargo = Cargo::new(workspace);
    let mut report = Report::default();

    step("host packages");
    let mut packages = apt::BUILD_DEPS.to_vec();
    if options.host {
        packages.extend(apt::WINDOW);
    }
    if options.vm {
        packages.extend(apt::HOST_TOOLS);
        packages.extend(apt::WAYLAND_CLIENTS);
        packages.extend(apt::GSTREAMER);
    }
    report.check("host packages", apt::ensure(&packages));
    let kernels = if suites.is_empty() {
        Vec::new()
    } else {
        step("kernels");
        fetch_kernels(&suites)
    };
    for (label, kernel) in &kernels {
        if let Ok(Kernel {
            m2m: M2m::Failed(why),
            ..
        }) = kernel
        {
            report.check(
                &format!("m2m test drivers for {label}"),
                Err(anyhow!("{why}")),
            );
        }
    }
    if options.lint {
        lint(&cargo, &mut report);
    }
    if options.host {
        step("host tests");
        report.host = Some(host_tests(&cargo));
        step("smithay's development branch");
        report.smithay_git = Some(smithay_git::check(workspace));
    }
    if !kernels.is_empty() {
        report.kernels = vm_tests(&cargo, workspace, kernels);
    }
    report.print(started.elapsed());
    Ok(report.success())
}

fn step(name: &str) {
    println!("==> {name}");
}

/// Cargo commands in the workspace, run with the cargo that runs xtask.
struct Cargo<'a> {
    program: OsString,
    workspace: &'a Path,
}

impl<'a> Cargo<'a> {
    fn new(workspace: &'a Path) -> Self {
        let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        Self { program, workspace }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(self.workspace).args(args);
        cmd
    }
}

/// The kernels of `suites`, each labelled by its release (or its suite, if it could not be
/// fetched).
fn fetch_kernels(suites: &[&Suite]) -> Vec<(String, Result<Kernel>)> {
    let started = Instant::now();
    let kernels = match Fetcher::new() {
        Ok(mut fetcher) => suites
            .iter()
            .map(|suite| match fetcher.fetch(suite) {
                Ok(kernel) => (kernel.release.clone(), Ok(kernel)),
                Err(err) => (
                    suite.name.to_owned(),
                    Err(err.context("fetching the kernel failed")),
                ),
            })
            .collect(),
        Err(err) => {
            let why = format!("{err:#}");
            suites
                .iter()
                .map(|suite| (suite.name.to_owned(), Err(anyhow!("{why}"))))
                .collect()
        }
    };
    println!("kernels ready in {:.1} s", started.elapsed().as_secs_f64());
    kernels
}

/// rustfmt and clippy, as cargo arguments.
const LINTS: [&str; 3] = [
    "fmt --all -- --check",
    "clippy --workspace --all-targets --all-features -- -D warnings",
    // The kernel tests (the library's and the CLI's) are not default test targets, so
    // --all-targets skips them.
    "clippy --workspace --test kernel --all-features -- -D warnings",
];

/// Builds what the end-to-end and window tests run: the `fencebridge` binary (the CLI package),
/// the reference compositor and the test clients (examples of the library and of the CLI).
const BUILD_PROGRAMS: [&str; 5] = [
    "build",
    "--workspace",
    "--bins",
    "--examples",
    "--all-features",
];

fn lint(cargo: &Cargo, report: &mut Report) {
    for lint in LINTS {
        let name = format!("cargo {lint}");
        step(&name);
        let args: Vec<&str> = lint.split_whitespace().collect();
        report.check(&name, cmd::run(&mut cargo.command(&args)));
    }
}

/// Runs the host tests, showing their output as it comes.
fn host_tests(cargo: &Cargo) -> Verdict {
    let run = || -> Result<Verdict> {
        // The window backend's test runs the reference compositor and its test client.
        cmd::run(&mut cargo.command(&BUILD_PROGRAMS))?;
        let mut cargo_test = cargo.command(&["test", "--workspace", "--all-features"]);
        let mut child = cargo_test
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::display(&cargo_test)))?;
        let output = cmd::tee(child.stdout.take().context("cargo's stdout")?, true, None)?;
        Ok(Verdict::of(&output, child.wait()?.success()))
    };
    run().unwrap_or_else(|err| Verdict::DidNotRun(format!("{err:#}")))
}

/// Builds the kernel tests and runs them on each kernel; logs go to target/xtask.
fn vm_tests(
    cargo: &Cargo,
    workspace: &Path,
    kernels: Vec<(String, Result<Kernel>)>,
) -> Vec<(String, KernelRun)> {
    step("building the kernel tests");
    let suite = kernel_suite(cargo);
    if let Err(err) = &suite {
        println!("{err:#}");
    }
    kernels
        .into_iter()
        .map(|(label, kernel)| {
            let run = match (&suite, kernel) {
                (Err(_), _) => KernelRun::did_not_run("the kernel tests did not build".to_owned()),
                (_, Err(err)) => KernelRun::did_not_run(format!("{err:#}")),
                (Ok(exes), Ok(kernel)) => {
                    step(&format!("kernel tests on {label}"));
                    let log = workspace.join(format!("target/xtask/vm-{label}.log"));
                    kernel_tests(&kernel, exes, workspace, log)
                        .unwrap_or_else(|err| KernelRun::did_not_run(format!("{err:#}")))
                }
            };
            (label, run)
        })
        .collect()
}

/// Builds the kernel tests of every package that has them (the library's and the CLI's), and
/// the `fencebridge` binary and the examples they run, and returns the test executables.
fn kernel_suite(cargo: &Cargo) -> Result<Vec<PathBuf>> {
    // The end-to-end tests run the reference compositor, the test clients and the CLI.
    cmd::run(&mut cargo.command(&BUILD_PROGRAMS))?;
    // json-render-diagnostics: cargo's messages on stdout, compiler errors readable on stderr
    let messages = cmd::output(&mut cargo.command(&[
        "test",
        "--workspace",
        "--test",
        "kernel",
        "--all-features",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]))?;
    test_executables(&messages, "kernel")
}

/// The executables of the test targets named `target` (one per package) in cargo's JSON
/// messages.
fn test_executables(messages: &str, target: &str) -> Result<Vec<PathBuf>> {
    let mut exes = Vec::new();
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == target
            && message["profile"]["test"] == true
        {
            if let Some(exe) = message["executable"].as_str() {
                exes.push(PathBuf::from(exe));
            }
        }
    }
    if exes.is_empty() {
        bail!("cargo built no test executable for `{target}`")
    }
    Ok(exes)
}

/// Runs each test executable in turn, one test at a time (they share the devices), and exits
/// non-zero if any failed: a `sh -c` script for the guest, so that all run in one boot.
const RUN_ALL: &str = "status=0
for exe; do
  echo \"running $exe\"
  \"$exe\" --test-threads=1 || status=1
done
exit $status";

/// What one kernel's boot came to.
#[derive(Debug, PartialEq, Eq)]
struct KernelRun {
    verdict: Verdict,
    /// Empty, or why the first boot was discarded ([`vm::VmOutcome::reboot_note`]).
    reboot_note: String,
}

impl KernelRun {
    fn did_not_run(why: String) -> Self {
        Self {
            verdict: Verdict::DidNotRun(why),
            reboot_note: String::new(),
        }
    }
}

impl fmt::Display for KernelRun {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}{}", self.verdict, self.reboot_note)
    }
}

/// Boots `kernel` and runs all the kernel tests in it.
fn kernel_tests(
    kernel: &Kernel,
    exes: &[PathBuf],
    workspace: &Path,
    log: PathBuf,
) -> Result<KernelRun> {
    let mut run = VmRun::new("sh")?;
    run.args = ["-c", RUN_ALL, "sh"].map(str::to_owned).to_vec();
    for exe in exes {
        run.args.push(
            exe.to_str()
                .with_context(|| format!("not UTF-8: {}", exe.display()))?
                .to_owned(),
        );
    }
    run.cwd = workspace.to_owned();
    run.env.insert("FENCEBRIDGE_VM".to_owned(), "1".to_owned());
    run.env.insert("RUST_BACKTRACE".to_owned(), "1".to_owned());
    // as `cargo test` would set it, for tests that find their data through it
    run.env.insert(
        "CARGO_MANIFEST_DIR".to_owned(),
        workspace.display().to_string(),
    );
    run.log = Some(log.clone());
    let outcome = vm::run(kernel, &run)?;
    println!(
        "{}: VM ran for {:.1} s, log in {}",
        kernel.release,
        outcome.elapsed.as_secs_f64(),
        log.display()
    );
    let verdict = match outcome.end {
        VmEnd::Exited(status) => Verdict::of(&outcome.log, status == 0),
        VmEnd::TimedOut => Verdict::DidNotRun(format!(
            "the VM timed out after {} s",
            run.timeout.as_secs()
        )),
        VmEnd::NoMarker => Verdict::DidNotRun("the VM stopped before the tests ended".to_owned()),
    };
    Ok(KernelRun {
        verdict,
        reboot_note: outcome.reboot_note(),
    })
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let Self {
            passed,
            failed,
            skipped,
        } = self;
        write!(f, "{passed} passed, {failed} failed, {skipped} skipped")
    }
}

/// What the tests of one place (the host, or a kernel) came to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ran {
        counts: Counts,
        /// Tests that skipped themselves: (test, reason).
        skips: BTreeMap<String, String>,
    },
    DidNotRun(String),
}

impl Verdict {
    /// Reads libtest's output: the sum of its `test result:` lines (one per test binary and
    /// doctest run) less the tests that reported a skip. `success` is the exit status; a failed
    /// run that reports no failed test (a test binary that crashed) counts one failure, so that
    /// the total never reads clean for a run that was not.
    fn of(output: &str, success: bool) -> Self {
        let mut counts = None;
        let mut skips = BTreeMap::new();
        for line in output.lines() {
            let line = strip_ansi(line);
            if let Some(result) = parse_result(&line) {
                *counts.get_or_insert_with(Counts::default) += result;
            }
            if let Some((test, reason)) = parse_skip(&line) {
                skips.insert(test.to_owned(), reason.to_owned());
            }
        }
        let Some(mut counts) = counts else {
            return Self::DidNotRun("no `test result:` line".to_owned());
        };
        let skipped = skips.len() as u64;
        counts.passed = counts.passed.saturating_sub(skipped);
        counts.skipped += skipped;
        if !success && counts.failed == 0 {
            counts.failed = 1;
        }
        Self::Ran { counts, skips }
    }

    /// The counts for the total: a suite that did not run is one failure.
    fn counts(&self) -> Counts {
        match self {
            Self::Ran { counts, .. } => *counts,
            Self::DidNotRun(_) => Counts {
                failed: 1,
                ..Counts::default()
            },
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Ran { counts, .. } => write!(f, "{counts}"),
            Self::DidNotRun(why) => write!(f, "FAILED, suite did not run ({why})"),
        }
    }
}

/// The counts in a libtest summary line: `test result: ok. 20 passed; 0 failed; 1 ignored;
/// 0 measured; 0 filtered out; finished in 0.01s`. Ignored tests count as skipped.
fn parse_result(line: &str) -> Option<Counts> {
    const PREFIX: &str = "test result: ";
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let (_, fields) = rest.split_once(". ")?;
    let mut counts = Counts::default();
    for field in fields.split("; ") {
        let Some((number, what)) = field.trim().split_once(' ') else {
            continue;
        };
        let Ok(number) = number.parse() else {
            continue;
        };
        match what {
            "passed" => counts.passed = number,
            "failed" => counts.failed = number,
            "ignored" => counts.skipped = number,
            _ => {}
        }
    }
    Some(counts)
}

/// The test and reason of a skip marker. The marker may follow libtest's `test name ... ` on
/// the same line, since libtest prints the result only when the test ends.
fn parse_skip(line: &str) -> Option<(&str, &str)> {
    let rest = &line[line.find(SKIP_MARKER)? + SKIP_MARKER.len()..];
    let (test, reason) = rest.split_once(": ").unwrap_or((rest, ""));
    Some((test.trim(), reason.trim()))
}

/// `line` without terminal escape sequences (libtest colours its words on a terminal, and the
/// guest's console is one).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                // parameters and intermediates, up to the final byte
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
struct Report {
    /// Steps that failed outright, with why.
    failed_steps: Vec<(String, String)>,
    kernels: Vec<(String, KernelRun)>,
    host: Option<Verdict>,
    smithay_git: Option<smithay_git::Outcome>,
}

impl Report {
    fn check(&mut self, step: &str, result: Result<()>) {
        if let Err(err) = result {
            println!("{step} failed: {err:#}");
            self.failed_steps
                .push((step.to_owned(), format!("{err:#}")));
        }
    }

    fn verdicts(&self) -> impl Iterator<Item = &Verdict> {
        self.kernels
            .iter()
            .map(|(_, run)| &run.verdict)
            .chain(&self.host)
    }

    fn total(&self) -> Counts {
        let smithay_git_failed = self.smithay_git.as_ref().is_some_and(|o| o.failed());
        let mut total = Counts {
            failed: self.failed_steps.len() as u64 + u64::from(smithay_git_failed),
            ..Counts::default()
        };
        for verdict in self.verdicts() {
            total += verdict.counts();
        }
        total
    }

    fn success(&self) -> bool {
        self.total().failed == 0
    }

    /// The summary, the run's time (`took`) on the last line with the total.
    fn print(&self, took: std::time::Duration) {
        println!();
        for (label, run) in &self.kernels {
            if let Verdict::Ran { skips, .. } = &run.verdict {
                for (test, reason) in skips {
                    println!("skipped on {label}: {test}: {reason}");
                }
            }
        }
        for (step, why) in &self.failed_steps {
            println!("step failed: {step}: {why}");
        }
        for (label, run) in &self.kernels {
            println!("kernel {label}: {run}");
        }
        if let Some(host) = &self.host {
            println!("host: {host}");
        }
        if let Some(outcome) = &self.smithay_git {
            println!("smithay development branch: {outcome}");
        }
        println!("total: {} in {}", self.total(), minutes_and_seconds(took));
    }
}

/// `12 min 51 s`, or `41 s` under a minute.
fn minutes_and_seconds(took: std::time::Duration) -> String {
    let seconds = took.as_secs();
    match seconds / 60 {
        0 => format!("{seconds} s"),
        minutes => format!("{minutes} min {} s", seconds % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_reads_in_minutes_and_seconds() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(minutes_and_seconds(secs(771)), "12 min 51 s");
        assert_eq!(minutes_and_seconds(secs(41)), "41 s");
        assert_eq!(minutes_and_seconds(secs(120)), "2 min 0 s");
    }

    fn counts(passed: u64, failed: u64, skipped: u64) -> Counts {
        Counts {
            passed,
            failed,
            skipped,
        }
    }

    #[test]
    fn results_of_all_binaries_and_doctests_add_up() {
        let output = "running 3 tests\n\
            test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s\n\
            \x1b[0mtest result: \x1b[32mok\x1b[0m. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let Verdict::Ran { counts: c, .. } = Verdict::of(output, false) else {
            panic!("no counts");
        };
        assert_eq!(c, counts(9, 1, 1));
    }

    #[test]
    fn skip_markers_move_passed_tests_to_skipped() {
        let output = "test syncobj::timeline ... fencebridge-skip: syncobj::timeline: no syncobj on 6.1\nok\n\
            test udmabuf::create ... fencebridge-skip: udmabuf::create: no /dev/udmabuf\n\
            fencebridge-skip: udmabuf::create: said twice\nok\n\
            test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.00s\n";
        let Verdict::Ran { counts: c, skips } = Verdict::of(output, true) else {
            panic!("no counts");
        };
        assert_eq!(c, counts(3, 0, 2));
        assert_eq!(skips["syncobj::timeline"], "no syncobj on 6.1");
    }

    #[test]
    fn no_result_line_means_the_suite_did_not_run() {
        let verdict = Verdict::of("KHARNESS: kernel 6.1.0-50-amd64\nKHARNESS_EXIT=0\n", true);
        assert!(matches!(verdict, Verdict::DidNotRun(_)));
        assert_eq!(verdict.counts(), counts(0, 1, 0));
    }

    #[test]
    fn a_failed_exit_without_failed_tests_is_a_failure() {
        let output = "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(Verdict::of(output, false).counts(), counts(2, 1, 0));
    }

    #[test]
    fn summary_lines_have_the_plain_format() {
        assert_eq!(
            counts(121, 0, 4).to_string(),
            "121 passed, 0 failed, 4 skipped"
        );
        let mut report = Report::default();
        report.kernels.push((
            "7.2.12+deb13-amd64".to_owned(),
            KernelRun::did_not_run("the VM timed out after 300 s".to_owned()),
        ));
        report.host = Some(Verdict::of(
            "test result: ok. 20 passed; 0 failed; 0 ignored\n",
            true,
        ));
        report.check("cargo fmt", Err(anyhow!("diff")));
        assert_eq!(report.total(), counts(20, 2, 0));
        assert!(!report.success());
    }

    #[test]
    fn a_failed_build_against_smithays_development_branch_fails_the_run() {
        let mut report = Report {
            host: Some(Verdict::of("test result: ok. 20 passed; 0 failed;\n", true)),
            ..Report::default()
        };
        report.smithay_git = Some(smithay_git::Outcome::NotChecked("absent".to_owned()));
        assert!(report.success());
        report.smithay_git = Some(smithay_git::Outcome::Failed {
            snapshot: "smithay 5fb12b87".to_owned(),
            failures: vec!["anvil with fencebridge".to_owned()],
        });
        assert_eq!(report.total(), counts(20, 1, 0));
        assert!(!report.success());
    }

    #[test]
    fn every_package_s_kernel_tests_are_found_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"fencebridge"},"profile":{"test":false},"executable":"/t/debug/fencebridge"}
{"reason":"compiler-artifact","target":{"name":"kernel"},"profile":{"test":true},"executable":"/t/debug/deps/kernel-0123"}
{"reason":"compiler-artifact","target":{"name":"kernel"},"profile":{"test":true},"executable":"/t/debug/deps/kernel-4567"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executables(messages, "kernel").unwrap(),
            [
                Path::new("/t/debug/deps/kernel-0123"),
                Path::new("/t/debug/deps/kernel-4567")
            ]
        );
        assert!(test_executables(messages, "other").is_err());
    }

    #[test]
    fn all_kernel_test_executables_run_and_any_failure_fails_the_boot() {
        let run = |exes: &[&str]| {
            Command::new("sh")
                .args(["-c", RUN_ALL, "sh"])
                .args(exes)
                .output()
                .unwrap()
        };
        let all = run(&["true", "false", "true"]);
        let out = String::from_utf8(all.stdout).unwrap();
        assert_eq!(out, "running true\nrunning false\nrunning true\n");
        assert!(!all.status.success());
        assert!(run(&["true", "true"]).status.success());
    }

    #[test]
    fn a_second_boot_is_said_in_the_kernel_s_summary_line() {
        let outcome = vm::VmOutcome {
            end: VmEnd::Exited(0),
            log: "test result: ok. 2 passed; 0 failed; 0 ignored\n".to_owned(),
            elapsed: std::time::Duration::from_secs(8),
            rebooted: Some("the first boot died before the guest started".to_owned()),
        };
        let run = KernelRun {
            verdict: Verdict::of(&outcome.log, true),
            reboot_note: outcome.reboot_note(),
        };
        assert_eq!(
            run.to_string(),
            "2 passed, 0 failed, 0 skipped (booted twice: the first boot died before the guest \
             started)"
        );
    }
}
