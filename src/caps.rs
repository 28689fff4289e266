//! What this machine can do for the bridge, each answer with its reason. Features are probed by
//! trying them (ENOTTY from a dma-buf ioctl = not supported), never by kernel version.
//!
//! # How to use
//! ```no_run
//! let caps = fencebridge::caps::Capabilities::probe();
//! println!("{caps}");
//! if caps.syncobj_global() {
//!     // advertise linux-drm-syncobj-v1
//! }
//! ```

use std::fmt;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::sys::drm::DriverCapability;

use crate::device::{DrmNode, DRI_DIR};
use crate::fence::{dmabuf, Access, StubSignature, SyncFile};
use crate::timeline::SyncobjDevice;
use crate::{producer, Error};

/// A yes or a no, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Supported.
    Yes(String),
    /// Not supported.
    No(String),
}

impl Support {
    /// Whether it is supported.
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes(_))
    }

    /// Why.
    pub fn reason(&self) -> &str {
        match self {
            Support::Yes(r) | Support::No(r) => r,
        }
    }
}

/// One DRM node and what its driver supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node's path.
    pub path: PathBuf,
    /// Its driver, or why it could not be opened.
    pub driver: Result<String, String>,
    /// `DRM_CAP_SYNCOBJ`.
    pub syncobj: bool,
    /// `DRM_CAP_SYNCOBJ_TIMELINE`.
    pub timeline: bool,
    /// `DRM_IOCTL_SYNCOBJ_EVENTFD` known to the kernel (asked only where timelines exist).
    pub eventfd: bool,
}

/// How the bridge will wait for timeline points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointWaitPath {
    /// The kernel signals an eventfd (`SYNCOBJ_EVENTFD`).
    Eventfd,
    /// A helper thread blocks in `SYNCOBJ_TIMELINE_WAIT` and wakes the loop.
    WaiterThread,
    /// No syncobj timeline device: explicit sync is unavailable.
    Unavailable,
}

/// Everything the probe found.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// DMA_BUF_IOCTL_EXPORT_SYNC_FILE works.
    pub dmabuf_export: Support,
    /// DMA_BUF_IOCTL_IMPORT_SYNC_FILE works.
    pub dmabuf_import: Support,
    /// Every DRM node.
    pub nodes: Vec<NodeReport>,
    /// The node the bridge would use for timelines.
    pub syncobj_device: Option<PathBuf>,
    /// How timeline points would be waited for.
    pub point_wait: PointWaitPath,
    /// How the kernel's stub fence is recognised.
    pub stub_detection: Support,
    /// The stub fence's signature, calibrated on the probe's fresh dma-buf (by name only where
    /// that failed): what the bridge recognises the stub by.
    pub stub: StubSignature,
}

impl Capabilities {
    /// Probes this machine. Cheap (a handful of ioctls), but not free: once at start-up.
    pub fn probe() -> Capabilities {
        Self::probe_and_open().0
    }

    /// Probes this machine, and keeps the syncobj device it chose open
    /// ([`Capabilities::syncobj_device`], picked as [`SyncobjDevice::find`] picks): what the
    /// bridge uses, so that `/dev/dri` is scanned once.
    pub fn probe_and_open() -> (Capabilities, Option<SyncobjDevice>) {
        let mut timeline_nodes = Vec::new();
        let nodes = DrmNode::list()
            .iter()
            .map(|n| {
                let (report, node) = probe_node(n.path().into());
                timeline_nodes.extend(node);
                report
            })
            .collect();
        let device = SyncobjDevice::first_of(timeline_nodes);
        (Self::probe_with_nodes(nodes, device.as_ref()), device)
    }

    /// Probes this machine for a compositor that hands in the syncobj device it uses: that
    /// node is the only one looked at.
    pub fn probe_device(device: &SyncobjDevice) -> Capabilities {
        let node = device.node();
        let report = NodeReport {
            path: node.path().to_owned(),
            driver: Ok(node.driver_name().to_owned()),
            syncobj: true,
            timeline: true,
            eventfd: device.supports_eventfd(),
        };
        Self::probe_with_nodes(vec![report], Some(device))
    }

    fn probe_with_nodes(nodes: Vec<NodeReport>, device: Option<&SyncobjDevice>) -> Capabilities {
        let (dmabuf_export, dmabuf_import, stub_detection, stub) = probe_dmabuf();
        let point_wait = match device {
            Some(device) if device.supports_eventfd() => PointWaitPath::Eventfd,
            Some(_) => PointWaitPath::WaiterThread,
            None => PointWaitPath::Unavailable,
        };
        Capabilities {
            dmabuf_export,
            dmabuf_import,
            syncobj_device: device.map(|d| d.node().path().to_owned()),
            nodes,
            point_wait,
            stub_detection,
            stub,
        }
    }

    /// Whether linux-drm-syncobj-v1 can be offered (a timeline device, waited on by eventfd or
    /// the waiter thread).
    pub fn syncobj_global(&self) -> bool {
        self.point_wait != PointWaitPath::Unavailable
    }

    /// One line per path the bridge would take, for people.
    pub fn paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        paths.push(if self.dmabuf_export.is_yes() {
            "implicit clients: per-plane fence snapshot at commit (EXPORT_SYNC_FILE), commit held until it signals".into()
        } else {
            "implicit clients: no fence snapshot possible; commits are not held".into()
        });
        paths.push(match (&self.syncobj_device, self.point_wait) {
            (Some(dev), PointWaitPath::Eventfd) => format!(
                "explicit clients: linux-drm-syncobj-v1 on {}, points waited by SYNCOBJ_EVENTFD",
                dev.display()
            ),
            (Some(dev), _) => format!(
                "explicit clients: linux-drm-syncobj-v1 on {}, points waited by a helper thread (kernel lacks SYNCOBJ_EVENTFD)",
                dev.display()
            ),
            (None, _) => "explicit clients: linux-drm-syncobj-v1 not advertised (no syncobj timeline device)".into(),
        });
        paths.push(if self.dmabuf_import.is_yes() {
            "explicit -> implicit: acquire fences imported onto the dma-buf (IMPORT_SYNC_FILE)"
                .into()
        } else {
            "explicit -> implicit: unavailable (no IMPORT_SYNC_FILE)".into()
        });
        paths
    }
}

/// What a node's driver supports; the node itself, still open, if it has syncobj timelines.
fn probe_node(path: PathBuf) -> (NodeReport, Option<DrmNode>) {
    let node = match DrmNode::open(&path) {
        Ok(node) => node,
        Err(e) => {
            let report = NodeReport {
                path,
                driver: Err(e.to_string()),
                syncobj: false,
                timeline: false,
                eventfd: false,
            };
            return (report, None);
        }
    };
    let syncobj = node.has_capability(DriverCapability::SyncObj);
    let timeline = node.has_capability(DriverCapability::TimelineSyncObj);
    let eventfd = timeline && node.has_syncobj_eventfd();
    let report = NodeReport {
        path,
        driver: Ok(node.driver_name().to_owned()),
        syncobj,
        timeline,
        eventfd,
    };
    (report, timeline.then_some(node))
}

/// Tries EXPORT and IMPORT on a fresh dma-buf; calibrates the stub fence on the way.
fn probe_dmabuf() -> (Support, Support, Support, StubSignature) {
    let buf = match producer::fresh_dmabuf() {
        Ok(buf) => buf,
        Err(e) => {
            let why = format!("no dma-buf to try it on: no dma-heap, no udmabuf, and {e}");
            return (
                Support::No(why.clone()),
                Support::No(why.clone()),
                Support::No(why),
                StubSignature::names_only(),
            );
        }
    };
    // Calibrate first, while the buffer has never held a fence.
    let (stub_detection, stub) = match StubSignature::from_fresh_dmabuf(buf.as_fd()) {
        Ok(sig) => (
            Support::Yes(format!(
                "by name (\"stub\", up to 6.12) and by its constant timestamp ({} ns)",
                sig.timestamp_ns().unwrap_or(0)
            )),
            sig,
        ),
        Err(e) => (
            Support::No(format!("by name only ({e})")),
            StubSignature::names_only(),
        ),
    };
    // The export itself, issued for real: a snapshot of a buffer that polls ready takes its
    // fast path and never asks the kernel, so it proves nothing.
    let exported = dmabuf::export_one(buf.as_fd(), Access::Read);
    let export = match &exported {
        Ok(fence) => Support::Yes(format!(
            "DMA_BUF_IOCTL_EXPORT_SYNC_FILE answered with {}",
            describe(fence)
        )),
        Err(e) => Support::No(explain(e)),
    };
    // Import the buffer's own (stub) fence back onto it: harmless, and proves the ioctl.
    let import = match exported.and_then(|f| dmabuf::import(&[buf.as_fd()], &f, Access::Read)) {
        Ok(()) => Support::Yes("DMA_BUF_IOCTL_IMPORT_SYNC_FILE answered".into()),
        Err(e) => Support::No(explain(&e)),
    };
    (export, import, stub_detection, stub)
}

/// What an exported sync_file holds, as the kernel tells (`SYNC_IOC_FILE_INFO`).
fn describe(fence: &SyncFile) -> String {
    match fence.info() {
        Ok(info) => {
            let fences: Vec<String> = info.fences.iter().map(ToString::to_string).collect();
            format!(
                "a sync_file of {} fence(s): {}",
                fences.len(),
                fences.join(", ")
            )
        }
        Err(e) => format!("a sync_file ({e})"),
    }
}

fn explain(e: &Error) -> String {
    match e {
        Error::Unsupported { .. } => format!("{e} (needs Linux 5.20/6.0+)"),
        e => e.to_string(),
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |s: &Support| if s.is_yes() { "yes" } else { "no" };
        if self.nodes.is_empty() {
            writeln!(f, "no DRM device on this machine ({DRI_DIR} is empty or missing): no syncobj; dma-bufs only from dma-heap or udmabuf")?;
        }
        writeln!(
            f,
            "dma-buf sync_file export: {} — {}",
            yn(&self.dmabuf_export),
            self.dmabuf_export.reason()
        )?;
        writeln!(
            f,
            "dma-buf sync_file import: {} — {}",
            yn(&self.dmabuf_import),
            self.dmabuf_import.reason()
        )?;
        writeln!(
            f,
            "stub fence detection:     {} — {}",
            yn(&self.stub_detection),
            self.stub_detection.reason()
        )?;
        for n in &self.nodes {
            match &n.driver {
                Ok(driver) => writeln!(
                    f,
                    "DRM {}: driver {driver}, syncobj {}, timeline {}, eventfd {}",
                    n.path.display(),
                    n.syncobj,
                    n.timeline,
                    n.eventfd
                )?,
                Err(e) => writeln!(f, "DRM {}: cannot open ({e})", n.path.display())?,
            }
        }
        writeln!(f, "paths the bridge would take:")?;
        for p in self.paths() {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}
