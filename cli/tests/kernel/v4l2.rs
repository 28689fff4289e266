//! `fencebridge v4l2` against vivid, on every kernel of the matrix: what the kernel really does
//! with V4L2 buffers' fences, and every bad input with its message.
//!
//! The VM loads vivid with five instances (xtask/src/vm.rs): 0 single-planar vmalloc (vivid's
//! defaults, all node types), 1 single-planar dma-contig, 2 multi-planar vmalloc, 3 multi-planar
//! dma-contig, 4 single-planar vmalloc for GStreamer alone. They are found by bus_info, never by node number.

use std::os::fd::AsFd;
use std::path::Path;

use fencebridge::bridge::plan::{Acquire, Release};
use fencebridge::bridge::producer_class::{ProducerClass, DEFAULT_NON_FENCING_AFTER};
use fencebridge_cli::sys::v4l2 as sys;
use fencebridge_cli::v4l2::{
    self, CheckOptions, Device, Error, ImportOutcome, QueueKind, Report, StubCalibration, Verdict,
};
use serde_json::Value;

use crate::support::kernel;
use fencebridge_testkit::vivid::{vivid_capture, vivid_node};

/// Small frames, few of them (but enough for the classifier's verdict): vivid draws every
/// frame on the CPU, and qemu emulates that CPU.
fn options(format: &str) -> CheckOptions {
    CheckOptions {
        format: Some(format.parse().unwrap()),
        size: Some((320, 180)),
        frames: DEFAULT_NON_FENCING_AFTER + 2,
        ..CheckOptions::default()
    }
}

/// What docs/kernel-facts.md says vivid does, asserted on one check: a non-fencing producer whose
/// buffers export the stub while queued and after DQBUF, and that ignores imported fences.
pub(crate) fn assert_non_fencing(report: &Report, what: &str) {
    let k = kernel();
    let o = &report.observations;
    let why = format!("{what} on {}:\n{report}", k.release);
    assert_eq!(o.stub, StubCalibration::FromThisDevice, "{why}");
    assert!(o.fresh.all_stub(), "{why}");
    assert!(o.queued.all_stub(), "queued buffers export the stub: {why}");
    assert_eq!(
        o.queued.total(),
        o.buffers + o.frames,
        "every queueing was watched: {why}"
    );
    assert_eq!(
        o.queued_poll_ready,
        o.queued.total(),
        "queued buffers poll ready at once: {why}"
    );
    assert!(o.dequeued.all_stub(), "{why}");
    assert_eq!(o.dequeued.total(), o.frames, "{why}");
    match &o.import {
        ImportOutcome::Ignored {
            fence_was_visible, ..
        } => assert!(fence_was_visible, "the import took: {why}"),
        other => panic!("imported fences are ignored, not {other:?}: {why}"),
    }
    assert_eq!(report.bridge.class, ProducerClass::NonFencing, "{why}");
    assert_eq!(
        report.bridge.became_non_fencing.as_ref().map(|(n, _)| *n),
        Some(DEFAULT_NON_FENCING_AFTER),
        "{why}"
    );
    let plan = report.bridge.last_plan.expect("planned");
    assert_eq!(plan.acquire, Acquire::Nothing, "{why}");
    assert_eq!(plan.release, Release::WhenReadsDone, "{why}");
    assert_eq!(report.bridge.release_when_reads_done, o.frames, "{why}");
    assert_eq!(report.verdict(), Verdict::NonFencingIgnoresFences, "{why}");
    assert!(report.would_corrupt_without_bridge(), "{why}");
    // Every buffer is its own memory: no inode is shared between buffers.
    let mut inodes: Vec<u64> = o
        .layout
        .iter()
        .flat_map(|b| b.planes.iter().map(|p| p.inode))
        .collect();
    let all = inodes.len();
    inodes.sort();
    inodes.dedup();
    assert_eq!(inodes.len(), all, "{why}");
}

/// The allocator really is the one the instance was loaded with: dma-contig takes no USERPTR
/// buffers, vmalloc does.
fn assert_allocator(report: &Report, dma_contig: bool) {
    let userptr = report.observations.buffer_caps & sys::V4L2_BUF_CAP_SUPPORTS_USERPTR != 0;
    assert_eq!(
        userptr, !dma_contig,
        "buffer caps {:#x} of {}",
        report.observations.buffer_caps, report.device.bus_info
    );
    assert!(report.observations.buffer_caps & sys::V4L2_BUF_CAP_SUPPORTS_MMAP != 0);
}

fn run(path: &Path, options: &CheckOptions) -> Report {
    v4l2::check(path, options, |_| {}).unwrap_or_else(|e| panic!("{}: {e}", kernel().release))
}

#[test]
fn vivid_vmalloc_single_planar_yuyv_is_non_fencing() {
    let report = run(&vivid_capture(0), &options("YUYV"));
    assert_eq!(report.format.queue, QueueKind::SinglePlanar);
    assert_eq!(report.format.fourcc.to_string(), "YUYV");
    assert_eq!((report.format.width, report.format.height), (320, 180));
    assert_allocator(&report, false);
    assert_non_fencing(&report, "vivid vmalloc YUYV");
    for b in &report.observations.layout {
        assert_eq!((b.planes.len(), b.distinct_dmabufs), (1, 1));
        assert!(b.planes[0].length >= 320 * 2 * 180);
    }
}

#[test]
fn vivid_dma_contig_single_planar_yuyv_is_non_fencing() {
    let report = run(&vivid_capture(1), &options("YUYV"));
    assert_eq!(report.format.queue, QueueKind::SinglePlanar);
    assert_allocator(&report, true);
    assert_non_fencing(&report, "vivid dma-contig YUYV");
}

/// NV12 on the multi-planar queue: one memory plane holding both colour planes; NM12 (NV12M):
/// a memory plane each, exported as two distinct dma-bufs.
fn check_multi_planar(instance: u32, dma_contig: bool) {
    let path = vivid_capture(instance);
    let nv12 = run(&path, &options("NV12"));
    assert_eq!(nv12.format.queue, QueueKind::MultiPlanar);
    assert_eq!(nv12.format.planes.len(), 1);
    assert_allocator(&nv12, dma_contig);
    assert_non_fencing(&nv12, &format!("vivid-{instance:03} NV12"));
    let colour = nv12.format.colour_planes().expect("NV12 is laid out");
    assert_eq!(colour.len(), 2);
    assert_eq!(colour[1].memory_plane, 0);
    assert_eq!(colour[1].offset, colour[0].stride * 180);

    let nm12 = run(&path, &options("NM12"));
    assert_eq!(nm12.format.planes.len(), 2);
    assert_non_fencing(&nm12, &format!("vivid-{instance:03} NM12"));
    for b in &nm12.observations.layout {
        assert_eq!((b.planes.len(), b.distinct_dmabufs), (2, 2), "{b:?}");
    }
    assert_eq!(nm12.format.drm_fourcc().unwrap().to_string(), "NV12");
}

#[test]
fn vivid_vmalloc_multi_planar_nv12_is_non_fencing() {
    check_multi_planar(2, false);
}

#[test]
fn vivid_dma_contig_multi_planar_nv12_is_non_fencing() {
    check_multi_planar(3, true);
}

/// The CLI: a readable report on stdout, progress on stderr, JSON for CI, and exit status 1
/// because vivid's ignored fences would corrupt frames without the bridge.
#[test]
fn cli_reports_vivid_and_exits_1() {
    let k = kernel();
    let path = vivid_capture(0);
    let cli = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fencebridge"))
            .args(["v4l2", path.to_str().unwrap(), "--frames", "9"])
            .args(["--size", "320x180", "--format", "YUYV"])
            .args(extra)
            .output()
            .expect("run fencebridge v4l2");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = cli(&[]);
    assert_eq!(code, Some(1), "on {}:\n{stdout}\n{stderr}", k.release);
    assert!(stdout.contains("verdict: NON-FENCING PRODUCER THAT IGNORES FENCES"));
    assert!(stdout.contains("[corruption] imported-fence-ignored"));
    assert!(
        stderr.contains("9/9 frames"),
        "progress on stderr: {stderr}"
    );

    let (code, stdout, _) = cli(&["--json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["verdict"], "non-fencing-ignores-fences");
    assert_eq!(report["would_corrupt_without_bridge"], true);
    assert_eq!(report["fences"]["imported"]["outcome"], "ignored");
    assert_eq!(report["fences"]["queued"]["pending"], 0);
    assert_eq!(report["bridge"]["class"], "non-fencing");
    assert_eq!(report["format"]["drm_fourcc"], "YUYV");
}

// ---------------------------------------------------------------------------------------------
// Bad input: each case its typed error and a message that says what to do.

pub(crate) fn check_err(path: &Path, options: &CheckOptions) -> Error {
    match v4l2::check(path, options, |_| {}) {
        Ok(report) => panic!("{} should fail:\n{report}", path.display()),
        Err(e) => e,
    }
}

pub(crate) fn quick() -> CheckOptions {
    CheckOptions {
        frames: 2,
        import_check: false,
        ..CheckOptions::default()
    }
}

#[test]
fn no_such_device() {
    kernel();
    let e = check_err(Path::new("/dev/video99"), &quick());
    assert!(matches!(e, Error::NoSuchDevice { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "/dev/video99: no such device (is the driver loaded? `ls /dev/video*` lists the video \
         devices)"
    );
}

#[test]
fn not_a_video_device() {
    kernel();
    let e = check_err(Path::new("/dev/null"), &quick());
    assert!(matches!(e, Error::NotAVideoDevice { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "/dev/null is not a video device: a character device of another subsystem (mem, major 1; \
         V4L2 nodes have major 81)"
    );
    // A DRM node: V4L2 ioctls must never reach it.
    let e = check_err(Path::new("/dev/dri/card0"), &quick());
    assert!(e.to_string().contains("(drm, major 226;"), "{e}");
    let e = check_err(Path::new("/dev"), &quick());
    assert_eq!(e.to_string(), "/dev is not a video device: a directory");
}

#[test]
fn no_capture_queue() {
    kernel();
    let output = vivid_node(0, sys::V4L2_CAP_VIDEO_OUTPUT);
    let e = check_err(&output, &quick());
    assert!(matches!(e, Error::NoCaptureQueue { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} (vivid) has no video capture queue: it is a video output node; pick the \
             device's capture node (`v4l2-ctl --list-devices` lists them)",
            output.display()
        )
    );
    let meta = vivid_node(0, sys::V4L2_CAP_META_CAPTURE);
    let e = check_err(&meta, &quick());
    assert!(
        e.to_string().contains("it is a metadata capture node"),
        "{e}"
    );
}

#[test]
fn format_not_offered() {
    kernel();
    let path = vivid_capture(0);
    let options = CheckOptions {
        format: Some("ABCD".parse().unwrap()),
        ..quick()
    };
    let e = check_err(&path, &options);
    let Error::FormatNotOffered { offered, .. } = &e else {
        panic!("{e:?}");
    };
    assert!(offered.contains(&"YUYV".parse().unwrap()), "{offered:?}");
    let text = e.to_string();
    let head = format!(
        "{} does not offer format ABCD for capture; it offers: YUYV, ",
        path.display()
    );
    assert!(text.starts_with(&head), "{text}");
    // NV12M exists only on the multi-planar API: a single-planar device does not offer it.
    let options = CheckOptions {
        format: Some("NM12".parse().unwrap()),
        ..quick()
    };
    assert!(matches!(
        check_err(&path, &options),
        Error::FormatNotOffered { .. }
    ));
}

#[test]
fn size_not_offered() {
    kernel();
    let path = vivid_capture(0);
    let options = CheckOptions {
        format: Some("YUYV".parse().unwrap()),
        size: Some((123, 77)),
        ..quick()
    };
    let e = check_err(&path, &options);
    assert!(matches!(e, Error::SizeNotOffered { .. }), "{e:?}");
    let text = e.to_string();
    let head = format!(
        "{} does not offer 123x77 in YUYV: the driver chose ",
        path.display()
    );
    assert!(text.starts_with(&head), "{text}");
    // vivid's webcam input lists its discrete sizes (7.x lists more than 6.x), the chosen one
    // among them.
    let Error::SizeNotOffered { chosen, sizes, .. } = &e else {
        unreachable!()
    };
    let listed: Vec<&str> = sizes.split(", ").collect();
    for size in ["320x180", "640x360", "640x480", "1280x720", "1920x1080"] {
        assert!(listed.contains(&size), "{size} in {text}");
    }
    assert!(
        listed.contains(&format!("{}x{}", chosen.0, chosen.1).as_str()),
        "{text}"
    );
    assert!(
        text.contains(&format!("; sizes it offers: {sizes}")),
        "{text}"
    );
}

/// Another open file owns the queue (it allocated buffers): the check says the device is busy,
/// whether it first trips on VIDIOC_S_FMT or on VIDIOC_REQBUFS.
#[test]
fn device_busy() {
    kernel();
    let path = vivid_capture(1);
    let owner = Device::open(&path).unwrap();
    assert!(owner.allocate(QueueKind::SinglePlanar, 2).unwrap() >= 2);

    let e = check_err(&path, &quick());
    assert!(
        matches!(
            e,
            Error::DeviceBusy {
                op: "VIDIOC_REQBUFS",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{p} is busy: VIDIOC_REQBUFS answered EBUSY, so another program is streaming from \
             it or holds its buffers (`fuser -v {p}` shows who); stop it and try again",
            p = path.display()
        )
    );
    let options = CheckOptions {
        format: Some("YUYV".parse().unwrap()),
        ..quick()
    };
    let e = check_err(&path, &options);
    assert!(
        matches!(
            e,
            Error::DeviceBusy {
                op: "VIDIOC_S_FMT",
                ..
            }
        ),
        "{e:?}"
    );

    // Once the owner lets go, the device works again.
    drop(owner);
    let report = v4l2::check(&path, &quick(), |_| {}).unwrap();
    assert_eq!(report.observations.frames, 2);
}

/// EXPBUF refused by the kernel. vivid always offers MMAP buffers, so a USERPTR-only driver
/// cannot be had in the VM; what can is the refusal itself: a queue set up with USERPTR
/// buffers (what such a driver's queue is) has nothing to export, and vb2 says EINVAL.
#[test]
fn expbuf_unsupported() {
    kernel();
    let path = vivid_capture(0);
    let device = Device::open(&path).unwrap();
    let queue = QueueKind::SinglePlanar;
    let mut req = sys::V4l2RequestBuffers {
        count: 2,
        type_: queue.buf_type(),
        memory: sys::V4L2_MEMORY_USERPTR,
        ..Default::default()
    };
    sys::vidioc_reqbufs(device.as_fd(), &mut req).expect("vivid's vmalloc queue takes USERPTR");
    assert!(req.count >= 2);
    let e = device.export(queue, 0, 0).unwrap_err();
    assert!(matches!(e, Error::ExpbufUnsupported { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} cannot export its buffers as dma-bufs: VIDIOC_EXPBUF of buffer 0 plane 0 \
             answered EINVAL: its queue is not set up with exportable MMAP buffers. A compositor can only be given this device's frames through dma-bufs \
             (VIDIOC_EXPBUF of MMAP buffers); with a USERPTR-only driver, frames must be copied \
             into buffers the application allocates",
            path.display()
        )
    );
    // Once that file is closed, the check sets the queue up with MMAP buffers and exports them.
    drop(device);
    assert!(v4l2::check(&path, &quick(), |_| {}).is_ok());
}

/// The CLI's bad-input path: exit status 2, the message on stderr, a JSON error for CI; and
/// `--show` with no compositor to talk to says so.
#[test]
fn cli_bad_input_exits_2() {
    kernel();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fencebridge"))
            .arg("v4l2")
            .args(args)
            .env("WAYLAND_DISPLAY", "/nonexistent/wayland-socket")
            .output()
            .expect("run fencebridge v4l2");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = cli(&["/dev/video99"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("fencebridge v4l2: error: /dev/video99: no such device"),
        "{stderr}"
    );
    let (code, stdout, _) = cli(&["/dev/null", "--json"]);
    assert_eq!(code, Some(2));
    let error: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(error["error"]["kind"], "not-a-video-device");
    let (code, stdout, stderr) = cli(&["--show", "--json"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("cannot connect to a Wayland compositor"),
        "{stderr}"
    );
    let error: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(error["error"]["kind"], "no-compositor");
    let (code, _, stderr) = cli(&["--size", "big"]);
    assert_eq!(code, Some(2), "clap's usage errors exit 2 too");
    assert!(stderr.contains("is not a size"), "{stderr}");
}

/// With no device named, the first capture-capable node is vivid-000's capture node (its
/// output, VBI and metadata nodes are skipped).
#[test]
fn default_device_is_the_first_capture_node() {
    kernel();
    assert_eq!(Device::find_capture().unwrap(), vivid_capture(0));
}
