//! Clients fencebridge did not write: Debian's `weston-simple-dmabuf-v4l` (a V4L2 → linux-dmabuf
//! video client) on vivid, and `grim` taking screenshots through wlr-screencopy.

use serde_json::Value;

use super::{differing_pixels, nested, read_png, scratch, script};
use crate::support::kernel;
use fencebridge_testkit::nested::{
    assert_early_releases, assert_shown_without_early_release, show_v4l2,
};
use fencebridge_testkit::vivid::vivid_capture;

/// The V4L2 client's frames are shown (the screen changes), its producer is classified
/// non-fencing, and with a GPU whose reads outlast the next commit the bridge holds its
/// buffers' releases until the reads are done — vb2 re-queues a released buffer at once, and
/// vivid would overwrite it under the read.
#[test]
fn e2e_v4l2_client_shown_non_fencing_releases_deferred() {
    let k = kernel();
    let dir = scratch("v4l2");
    let device = vivid_capture(0);
    let grim = script(
        &dir,
        "grim.sh",
        "sleep 4; grim first.png; sleep 2; grim second.png\n",
    );
    let run = nested(
        &dir,
        10,
        &["--gpu-ms", "250", "--size", "640x480"],
        &[
            format!("weston-simple-dmabuf-v4l -v {}", device.display()),
            grim,
        ],
    );
    let v4l = run.client("weston-simple-dmabuf-v4l");
    let shown = v4l["frames_shown"].as_u64().unwrap();
    assert!(shown >= 5, "{}: only {shown} frames shown", k.release);
    assert_eq!(v4l["producer"], "NonFencing", "{}", run.stdout);
    // vb2 attaches no fence: every commit finds nothing to wait for.
    let commits = &v4l["commits"];
    assert!(commits["implicit, ready"].as_u64().unwrap() >= shown);
    assert!(commits.get("implicit, waited for the snapshot").is_none());
    let deferred = v4l["releases_deferred"].as_u64().unwrap();
    assert!(deferred >= 1, "no release deferred:\n{}", run.stdout);

    let first = read_png(&run.dir.join("first.png"));
    let second = read_png(&run.dir.join("second.png"));
    assert_eq!((first.0, first.1), (640, 480));
    // vivid's overlay prints the time and the frame count: the picture moves.
    let changed = differing_pixels(&first, &second);
    assert!(changed > 100, "the video did not move: {changed} pixels");
}

/// `fencebridge v4l2 --show` presents vivid's frames like a video player and checks, at each
/// `wl_buffer.release`, that no read fence is still on the buffer (`testkit::nested::show_v4l2`:
/// the compositor's GPU reads each frame for longer than vivid takes to fill one, so a
/// compositor that gives a buffer back at once hands it back mid-read). vivid keeps the format
/// the last client left (Weston's V4L2 client leaves YUYV with GStreamer's BGRx line length),
/// so the checker is given the format and size it streams.
fn show(test: &str, bridge: bool) -> (Value, Value) {
    show_v4l2(
        test,
        &vivid_capture(0),
        &["--format", "YUYV", "--size", "640x480"],
        bridge,
    )
}

#[test]
fn e2e_v4l2_show_with_the_bridge_no_early_release() {
    let (show, client) = show("show-bridge", true);
    assert_shown_without_early_release(&show, &client);
}

#[test]
fn e2e_v4l2_show_without_the_bridge_catches_early_releases() {
    let (show, _) = show("show-no-bridge", false);
    assert_early_releases(&show);
}
