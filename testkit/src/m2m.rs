//! The kernel's memory-to-memory test drivers in the VM (vicodec, vim2m; built out of tree by
//! xtask for the kernels whose compiler the host has): whether this run has them, and their
//! nodes, found by name (`/sys/class/video4linux/*/name`), never by number. The library's and
//! the CLI's kernel tests both use it.
//!
//! The harness says what to expect: `FENCEBRIDGE_M2M_MODULES` lists the m2m drivers it loaded
//! (their devices must be there, even if the build failed), `FENCEBRIDGE_M2M_ABSENT` why a
//! kernel has none (then the tests skip, with that reason).

use std::path::{Path, PathBuf};

use crate::support::{kernel, skip};

/// A video4linux node, as sysfs describes it.
#[derive(Debug)]
pub struct Node {
    /// `/dev/videoN`.
    pub dev: PathBuf,
    /// The node's name (`name`).
    pub name: String,
    /// The driver bound to the node's parent device.
    pub driver: String,
}

/// Every video4linux node of the machine.
pub fn nodes() -> Vec<Node> {
    let Ok(entries) = std::fs::read_dir("/sys/class/video4linux") else {
        return Vec::new();
    };
    let mut nodes: Vec<Node> = entries
        .flatten()
        .map(|entry| {
            let sys = entry.path();
            let read = |file: &str| {
                std::fs::read_to_string(sys.join(file))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let driver = std::fs::read_link(sys.join("device/driver"))
                .ok()
                .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .unwrap_or_default();
            Node {
                dev: Path::new("/dev").join(entry.file_name()),
                name: read("name"),
                driver,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.dev.cmp(&b.dev));
    nodes
}

/// Whether this run loaded `driver` (so that its devices must be there); `None` after a skip
/// that says why the kernel has no m2m drivers.
pub fn loaded(test: &str, driver: &str) -> Option<()> {
    let k = kernel();
    match std::env::var("FENCEBRIDGE_M2M_MODULES") {
        Ok(list) if list.split_whitespace().any(|m| m == driver) => Some(()),
        Ok(list) => panic!(
            "the run loads the m2m drivers {list:?}, not {driver}: run the whole suite with \
             xtask's default modules"
        ),
        Err(_) => {
            let why = std::env::var("FENCEBRIDGE_M2M_ABSENT").expect(
                "the harness sets FENCEBRIDGE_M2M_MODULES or FENCEBRIDGE_M2M_ABSENT: run the \
                 kernel tests with `cargo xtask`",
            );
            skip(
                test,
                &format!("not supported on this kernel ({}: {why})", k.release),
            );
            None
        }
    }
}

/// The node named `name`, which must exist and belong to `driver`.
pub fn node(name: &str, driver: &str) -> Node {
    let all = nodes();
    let listing = format!("{all:#?}");
    let mut found: Vec<Node> = all.into_iter().filter(|n| n.name == name).collect();
    let (Some(node), true) = (found.pop(), found.is_empty()) else {
        panic!(
            "{}: expected one video node named {name:?}: {listing}",
            kernel().release
        );
    };
    assert_eq!(node.driver, driver, "{node:?}");
    assert!(
        node.dev.exists(),
        "{} has no device file",
        node.dev.display()
    );
    node
}
