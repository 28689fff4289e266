//! Finding vivid's nodes: the VM loads vivid with five instances (xtask/src/vm.rs), told apart
//! by bus_info (`platform:vivid-00N`), never by node number. Used by the CLI's V4L2 kernel tests
//! and the end-to-end tests that show vivid's frames.

use std::os::fd::AsFd;
use std::path::PathBuf;

use fencebridge_cli::sys::v4l2 as sys;

use crate::support::kernel;

/// vivid's bus_info for instance `n`.
fn bus_info(n: u32) -> String {
    format!("platform:vivid-{n:03}")
}

/// The /dev/video* nodes, in number order.
fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("video")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The node of vivid instance `n` whose own capabilities include `cap`.
pub fn vivid_node(n: u32, cap: u32) -> PathBuf {
    for path in video_nodes() {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(c) = sys::vidioc_querycap(file.as_fd()) else {
            continue;
        };
        if c.driver() == "vivid" && c.bus_info() == bus_info(n) && c.node_caps() & cap != 0 {
            return path;
        }
    }
    panic!(
        "no vivid-{n:03} node with capability {cap:#x} on {}: is vivid loaded with xtask's \
         parameters?",
        kernel().release
    );
}

/// The capture node of vivid instance `n`.
pub fn vivid_capture(n: u32) -> PathBuf {
    vivid_node(
        n,
        sys::V4L2_CAP_VIDEO_CAPTURE | sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE,
    )
}
