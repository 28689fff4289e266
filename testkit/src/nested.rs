//! Running the reference compositor (`examples/nested`) as a user would, and reading what it
//! says: its report (`--report-json`), its clients' result lines (they share its stdout) and
//! its last frame (`--png`). Used by the kernel suite's end-to-end tests (headless, in the VM)
//! and the window backend's test (`tests/window.rs`, under Xvfb on the host).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

/// A program built from this workspace (`fencebridge`, or an example such as `nested`), found
/// beside the running test: tests live in `<profile>/deps`, binaries in `<profile>`, examples
/// in `<profile>/examples`, whichever package built them.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows where it runs from");
    let bin_dir = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in a cargo target directory", exe.display()));
    let path = match name {
        "fencebridge" => bin_dir.join(name),
        _ => bin_dir.join("examples").join(name),
    };
    assert!(
        path.exists(),
        "{} is not built: `cargo build --workspace --bins --examples --all-features` (cargo \
         xtask test does it)",
        path.display()
    );
    path
}

/// A fresh scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fencebridge-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One run of the compositor.
pub struct Run {
    /// Its stdout and its clients' (they inherit it).
    pub stdout: String,
    /// `--report-json`.
    pub report: Value,
    /// The last frame (`--png`).
    pub png: PathBuf,
    /// A directory for this run's files (the clients may write there too).
    pub dir: PathBuf,
}

/// Runs `nested` — `command` starts it, possibly through a wrapper such as `xvfb-run` — with
/// `ARGS --client C...` in `dir` until its clients are done (or `seconds` pass).
pub fn run(
    mut command: Command,
    dir: &Path,
    seconds: u32,
    args: &[&str],
    clients: &[String],
) -> Run {
    let png = dir.join("output.png");
    let json = dir.join("report.json");
    command
        .current_dir(dir)
        .args(["--seconds", &seconds.to_string()])
        .arg("--png")
        .arg(&png)
        .arg("--report-json")
        .arg(&json)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for client in clients {
        command.args(["--client", client]);
    }
    let started = Instant::now();
    let output = command.output().expect("nested runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "nested failed ({}) after {:.1?}:\n{stdout}",
        output.status,
        started.elapsed()
    );
    eprintln!("nested ran {:.1?}:\n{stdout}", started.elapsed());
    let report = serde_json::from_slice(&std::fs::read(&json).expect("nested wrote its report"))
        .expect("the report is JSON");
    Run {
        stdout,
        report,
        png,
        dir: dir.to_owned(),
    }
}

impl Run {
    /// The report of the client whose command starts with `program` (its basename is enough).
    pub fn client(&self, program: &str) -> &Value {
        self.client_where(program, |cmd| {
            cmd.split_whitespace()
                .next()
                .is_some_and(|p| p.ends_with(program))
        })
    }

    /// The report of the first client whose command line `matches`; `what` names it when none
    /// does.
    pub fn client_where(&self, what: &str, matches: impl Fn(&str) -> bool) -> &Value {
        self.report["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["command"].as_str().is_some_and(&matches))
            .unwrap_or_else(|| panic!("no client {what} in the report:\n{}", self.stdout))
    }

    /// The result line `fbclient MODE: key=value ...` of the test client run in `mode`.
    pub fn fbclient(&self, mode: &str) -> BTreeMap<String, String> {
        let prefix = format!("fbclient {mode}:");
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{}", self.stdout));
        line[prefix.len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// `fencebridge v4l2 DEVICE --show --no-syncobj --frames 20 --json EXTRA...` as the one client
/// of the headless reference compositor, whose GPU puts a read fence on the buffers it reads
/// and takes 400 ms a frame (longer than a V4L2 device takes for one under emulation), with
/// the bridge or `--no-bridge`. Returns the checker's `show` report and the compositor's report
/// of the client.
pub fn show_v4l2(test: &str, device: &Path, extra: &[&str], bridge: bool) -> (Value, Value) {
    let dir = scratch(test);
    let script = dir.join("show.sh");
    std::fs::write(
        &script,
        format!(
            "exec {} v4l2 {} --show --no-syncobj --frames 20 --json {} > show.json\n",
            built("fencebridge").display(),
            device.display(),
            extra.join(" ")
        ),
    )
    .unwrap();
    let mut args = vec!["--backend", "headless", "--gpu-ms", "400"];
    if !bridge {
        args.push("--no-bridge");
    }
    let client = format!("/bin/sh {}", script.display());
    let run = run(Command::new(built("nested")), &dir, 60, &args, &[client]);
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("show.json")).unwrap())
        .unwrap_or_else(|e| panic!("the checker's JSON: {e}\n{}", run.stdout));
    assert!(json["show"].is_object(), "{json:#}\n{}", run.stdout);
    (json["show"].clone(), run.client("sh").clone())
}

/// What [`show_v4l2`] must see with the bridge: all 20 frames presented, none given back with
/// a read pending, the producer classified non-fencing and its releases deferred.
pub fn assert_shown_without_early_release(show: &Value, client: &Value) {
    assert!(show["presented"].as_u64().unwrap() >= 20, "{show}");
    assert_eq!(show["early_releases"], 0, "{show}");
    assert_eq!(client["producer"], "NonFencing", "{client}");
    let deferred = client["releases_deferred"].as_u64().unwrap();
    assert!(deferred >= 1, "no release deferred: {client}");
}

/// What [`show_v4l2`] must see without the bridge: buffers given back mid-read.
pub fn assert_early_releases(show: &Value) {
    assert!(show["presented"].as_u64().unwrap() >= 20, "{show}");
    let early = show["early_releases"].as_u64().unwrap();
    assert!(early >= 1, "no buffer came back mid-read: {show}");
}

/// A number from a result line.
pub fn count(result: &BTreeMap<String, String>, key: &str) -> u64 {
    result
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {result:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {result:?}: {e}"))
}
