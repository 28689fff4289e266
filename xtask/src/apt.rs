//! Host packages the harness and the build need, installed with the machine's apt when missing.
//!
//! A fresh CI machine has none of them, and nothing installed by hand survives a change of
//! machine: the harness installs what it uses itself. Checks go through the package database
//! (`dpkg-query`), which is cheap enough to do on every run.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

use crate::cmd;

/// What booting the VM needs: qemu; a *static* busybox (it runs in the initramfs, where there
/// is no libc); xz and zstd to decompress kernel modules (Debian ships `.ko.xz`, newer
/// kernels may ship `.ko.zst`) and the kernel's source tarball; strace, so a test can be traced
/// inside the guest, which runs the host's own programs; make and the machine's gcc, which
/// build the m2m test drivers for the kernels built with the same gcc (xtask/src/m2m.rs).
/// dpkg-deb and apt-get come with every Debian system.
pub const HOST_TOOLS: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    "zstd",
    "strace",
    "make",
    "gcc",
];

/// Real Wayland clients the end-to-end tests and the demo run against the reference compositor
/// (the guest runs the host's programs): Weston's clients (`weston-simple-dmabuf-v4l`, a V4L2
/// → linux-dmabuf video client, `weston-simple-shm`, `weston-simple-egl`) and `grim`, a
/// screenshot tool speaking wlr-screencopy. GStreamer, the player, is [`GSTREAMER`].
pub const WAYLAND_CLIENTS: &[&str] = &["weston", "grim"];

/// GStreamer 1.x: `gst-launch-1.0` (-tools), `videotestsrc` (-base), `v4l2src` and the V4L2
/// codec elements `v4l2fwhtenc`, `v4l2fwhtdec`, `v4l2convert` (-good), `waylandsink` (-bad):
/// the player the end-to-end tests run against the reference compositor, and the pipelines the
/// kernel tests run on the m2m drivers in the guest.
pub const GSTREAMER: &[&str] = &[
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
];

/// What the reference compositor's window backend needs at run time, and its host test
/// (`tests/window.rs`): an X server without a screen (`xvfb-run`, which needs xauth), Mesa's
/// EGL and GLES (llvmpipe renders when there is no GPU), the X client libraries winit opens
/// at run time, and `xwd` (x11-apps) to read the X server's pixels.
pub const WINDOW: &[&str] = &[
    "xvfb",
    "xauth",
    "x11-apps",
    "libegl1",
    "libegl-mesa0",
    "libgles2",
    "libgl1-mesa-dri",
    "libx11-xcb1",
    "libxcursor1",
    "libxrandr2",
    "libxi6",
    "libxkbcommon-x11-0",
];

/// `-dev` packages of the C libraries that the workspace's `-sys` crates build against.
pub const BUILD_DEPS: &[&str] = &[
    "pkg-config",
    "libxkbcommon-dev",
    "libpixman-1-dev",
    "libwayland-dev",
];

/// Installs whichever of `packages` are not installed. Needs root only when something is
/// missing.
pub fn ensure(packages: &[&str]) -> Result<()> {
    let missing = missing(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root()? {
        bail!(
            "missing host packages: {}; install them as root: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("installing host packages: {}", missing.join(" "));
    install(&missing)
}

/// Installs or upgrades `packages` from the machine's own apt sources.
pub fn install(packages: &[&str]) -> Result<()> {
    // The machine's lists may be absent (a fresh image) or old; one update per run is enough.
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.swap(true, Ordering::Relaxed) {
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    }
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages),
    )
}

fn missing<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    // dpkg-query exits non-zero when it has never heard of a package, but still prints the
    // ones it knows: read its stdout whatever the status.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(packages)
        .stderr(std::process::Stdio::null())
        .output()?;
    let installed: BTreeSet<&str> = std::str::from_utf8(&out.stdout)?
        .lines()
        .filter_map(|l| l.strip_suffix(" install ok installed"))
        .collect();
    Ok(packages
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn is_root() -> Result<bool> {
    // /proc/self belongs to the process's effective user.
    Ok(fs::metadata("/proc/self")?.uid() == 0)
}
