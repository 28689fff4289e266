//! End to end: the reference compositor (`examples/nested`) with real clients — fencebridge's
//! test clients (`examples/clients`), Debian's `weston-simple-dmabuf-v4l` on vivid, and `grim`
//! — in the VM. Each test starts the compositor as its own process, as a user would, and reads
//! what it reports (`--report-json`), what the clients report (their result lines), and what
//! was on screen (`--png`, grim's screenshots).
//!
//! `cargo xtask test` builds the examples before it boots the VM and installs weston and grim.

mod clients;
mod players;
mod real_clients;

use std::path::Path;
use std::process::Command;

use fencebridge_testkit::nested as harness;
pub use harness::{built, count, scratch, Run};

/// Runs the headless compositor: `nested --backend headless ARGS --client C...` until its
/// clients are done (or `seconds` pass).
pub fn nested(dir: &Path, seconds: u32, args: &[&str], clients: &[String]) -> Run {
    let args: Vec<&str> = ["--backend", "headless"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    harness::run(Command::new(built("nested")), dir, seconds, &args, clients)
}

/// A shell script for `nested --client` (which splits its argument at spaces).
pub fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    format!("/bin/sh {}", path.display())
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
