//! End to end: the reference compositor (`examples/nested`) with real clients — fencebridge's
//! test clients (`examples/clients`), Debian's `weston-simple-dmabuf-v4l` on vivid, and `grim`
//! — in the VM. Each test starts the compositor as its own process, as a user would, and reads
//! what it reports (`--report-json`), what the clients report (their result lines), and what
//! was on screen (`--png`, grim's screenshots).
//!
//! `cargo xtask test` builds the examples before it boots the VM and installs weston and grim.

mod clients;
mod real_clients;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

/// A program built from this workspace: the examples live next to the binaries.
pub fn built(name: &str) -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fencebridge"))
        .parent()
        .expect("the binary lives in a directory")
        .to_owned();
    let path = match name {
        "fencebridge" => bin_dir.join(name),
        _ => bin_dir.join("examples").join(name),
    };
    assert!(
        path.exists(),
        "{} is not built: `cargo build --examples --all-features` (cargo xtask test does it)",
        path.display()
    );
    path
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

/// A scratch directory for one test, on the guest's tmpfs.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("e2e-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `nested ARGS --client C...` until its clients are done (or `seconds` pass).
pub fn nested(dir: &Path, seconds: u32, args: &[&str], clients: &[String]) -> Run {
    let png = dir.join("output.png");
    let json = dir.join("report.json");
    let mut command = Command::new(built("nested"));
    command
        .current_dir(dir)
        .args(["--backend", "headless", "--seconds", &seconds.to_string()])
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
        self.report["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["command"]
                    .as_str()
                    .and_then(|cmd| cmd.split_whitespace().next())
                    .is_some_and(|p| p.ends_with(program))
            })
            .unwrap_or_else(|| panic!("no client {program} in the report:\n{}", self.stdout))
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

/// A number from a result line.
pub fn count(result: &BTreeMap<String, String>, key: &str) -> u64 {
    result
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {result:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {result:?}: {e}"))
}

/// A PNG's size and RGB pixels.
pub fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::io::BufReader::new(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight),
        "{}",
        path.display()
    );
    (info.width, info.height, pixels)
}

/// Counts pixels that differ between two images of the same size.
pub fn differing_pixels(a: &(u32, u32, Vec<u8>), b: &(u32, u32, Vec<u8>)) -> usize {
    assert_eq!((a.0, a.1), (b.0, b.1), "image sizes");
    a.2.chunks_exact(3)
        .zip(b.2.chunks_exact(3))
        .filter(|(x, y)| x != y)
        .count()
}
