//! fencebridge's own test clients (`examples/clients`, "fbclient") against the reference
//! compositor. They judge it by its pixels: after each frame callback they read the output back
//! through wlr-screencopy and count a frame as stale when its colour is not what is shown.

use super::{built, count, differing_pixels, nested, read_png, scratch};
use crate::support::{kernel, timeline_device};

fn fbclient(args: &str) -> String {
    format!("{} {args}", built("fbclient").display())
}

/// The stale-frame scenario: each frame is committed while its vgem write fence is pending,
/// and the pixels are written only just before the fence signals. With fencebridge the
/// compositor holds each commit until its fence signals: no stale frame.
#[test]
fn e2e_implicit_client_never_shows_a_stale_frame() {
    let dir = scratch("implicit");
    let run = nested(
        &dir,
        60,
        &[],
        &[fbclient("implicit --frames 12 --delay-ms 100")],
    );
    let result = run.fbclient("implicit");
    assert_eq!(count(&result, "frames"), 12, "{result:?}");
    assert_eq!(count(&result, "stale"), 0, "{}", run.stdout);
    let client = run.client("fbclient");
    assert_eq!(client["producer"], "Fencing", "{}", run.stdout);
    let waited = client["commits"]["implicit, waited for the snapshot"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        waited >= 12,
        "only {waited} commits were held:\n{}",
        run.stdout
    );
}

/// The same client with the bridge switched off: the compositor shows each frame as soon as
/// it is committed, while the "GPU" is still writing, and the client sees its old pixels.
/// This is the proof that the test above can fail.
#[test]
fn e2e_without_the_bridge_the_same_client_sees_stale_frames() {
    let dir = scratch("implicit-no-bridge");
    let run = nested(
        &dir,
        60,
        &["--no-bridge"],
        &[fbclient("implicit --frames 12 --delay-ms 100")],
    );
    let result = run.fbclient("implicit");
    assert_eq!(count(&result, "frames"), 12, "{result:?}");
    let stale = count(&result, "stale");
    assert!(
        stale >= 6,
        "only {stale} of 12 frames stale without the bridge"
    );
}

/// linux-drm-syncobj-v1 on a virtio_gpu timeline: frames wait for their acquire points, and
/// each release point is signalled only after the compositor has read the buffer and stopped
/// showing it.
#[test]
fn e2e_explicit_client_frames_and_release_order() {
    if timeline_device("e2e_explicit_client_frames_and_release_order").is_none() {
        return;
    }
    let dir = scratch("explicit");
    let run = nested(
        &dir,
        60,
        &[],
        &[fbclient("explicit --frames 12 --delay-ms 50")],
    );
    let result = run.fbclient("explicit");
    assert_eq!(count(&result, "frames"), 12, "{result:?}");
    assert_eq!(count(&result, "stale"), 0, "{}", run.stdout);
    assert_eq!(count(&result, "release_early"), 0, "{}", run.stdout);
    assert_eq!(count(&result, "release_late"), 0, "{}", run.stdout);
    let client = run.client("fbclient");
    let waited = client["commits"]["explicit, waited for the acquire point"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        waited >= 12,
        "only {waited} commits waited:\n{}",
        run.stdout
    );
    assert!(client["release_points_signalled"].as_u64().unwrap() >= 11);
}

/// A client whose fence never signals (an acquire point where the kernel has timelines, else
/// a vgem fence, which vgem itself signals only after 10 s) does not delay another client: its
/// frames all show, none stale, and none takes longer than a frame's own fence.
#[test]
fn e2e_stuck_client_does_not_delay_another() {
    let explicit = kernel().has_timelines();
    let dir = scratch("stuck");
    let stuck = if explicit {
        "stuck --explicit --seconds 8 --tag 2"
    } else {
        "stuck --seconds 8 --tag 2"
    };
    let run = nested(
        &dir,
        60,
        &[],
        &[
            fbclient(stuck),
            fbclient("implicit --frames 12 --delay-ms 100 --tag 1"),
        ],
    );
    let result = run.fbclient("implicit");
    assert_eq!(count(&result, "frames"), 12, "{result:?}");
    assert_eq!(count(&result, "stale"), 0, "{}", run.stdout);
    // A frame waits for its own 100 ms fence, plus the emulated machine's slowness; a frame
    // that waited for the stuck client would take its 1 s deadline at least.
    let slowest = count(&result, "max_frame_ms");
    assert!(slowest < 1000, "a frame took {slowest} ms:\n{}", run.stdout);
    let stuck = run.fbclient("stuck");
    assert_eq!(count(&stuck, "stale"), 0, "{}", run.stdout);
    let overdue: u64 = run.report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["overdue_waits"].as_u64())
        .sum();
    assert!(
        overdue >= 1,
        "the stuck wait was not diagnosed:\n{}",
        run.stdout
    );
}

/// `grim`, a real screenshot tool, captures what the compositor itself rendered. The client
/// outlives the compositor's 8 s, so nothing changes between grim's capture and the
/// compositor's own picture of its last frame.
#[test]
fn e2e_grim_screenshot_matches_the_compositors_render() {
    let dir = scratch("grim");
    let grim = dir.join("grim.sh");
    std::fs::write(&grim, "sleep 3; grim grim.png\n").unwrap();
    let run = nested(
        &dir,
        8,
        &["--size", "320x200"],
        &[
            fbclient("stuck --seconds 60 --tag 3"),
            format!("/bin/sh {}", grim.display()),
        ],
    );
    let ours = read_png(&run.png);
    let theirs = read_png(&run.dir.join("grim.png"));
    assert_eq!(differing_pixels(&ours, &theirs), 0);
    // Not an empty screen: the client's 128×128 frame is in it.
    let background = &ours.2[..3];
    let drawn = ours.2.chunks_exact(3).filter(|p| p != &background).count();
    assert!(drawn >= 128 * 128, "only {drawn} pixels drawn");
}

/// A screencast consumer (`fbclient capture`) captures into its own dma-bufs through
/// wlr-screencopy v3's `linux_dmabuf` offer. The compositor says `ready` at once while its
/// (software) GPU still writes the copy, and puts the copy's write fence on the buffer
/// (`publish_compositor_write`); the consumer waits for the buffer's fences
/// (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) before it reads: every capture shows the frame.
#[test]
fn e2e_dmabuf_capture_waits_for_the_compositors_write_fence() {
    let dir = scratch("capture");
    let run = nested(
        &dir,
        60,
        &["--gpu-ms", "150"],
        &[fbclient("capture --frames 12")],
    );
    let result = run.fbclient("capture");
    assert_eq!(count(&result, "frames"), 12, "{result:?}");
    assert_eq!(count(&result, "stale"), 0, "{}", run.stdout);
    // `ready` came while the copy was still being written: the wait is what made it right.
    let pending = count(&result, "pending_at_ready");
    assert!(
        pending >= 10,
        "only {pending} of 12 copies were under way at `ready`"
    );
}

/// The same consumer against a compositor that does not publish the copy's write fence
/// (`--no-publish`): the consumer's wait finds nothing to wait for and reads the buffer before
/// the copy lands. The proof that the test above can fail.
#[test]
fn e2e_without_the_write_fence_captures_are_read_before_they_are_written() {
    let dir = scratch("capture-no-publish");
    let run = nested(
        &dir,
        60,
        &["--gpu-ms", "150", "--no-publish"],
        &[fbclient("capture --frames 12")],
    );
    let result = run.fbclient("capture");
    assert_eq!(count(&result, "frames"), 12, "{result:?}");
    assert_eq!(count(&result, "pending_at_ready"), 0, "{}", run.stdout);
    let stale = count(&result, "stale");
    assert!(
        stale >= 10,
        "only {stale} of 12 captures stale without the write fence"
    );
}

/// The compositor's read fence reaches the client's dma-bufs even when its renderer does not
/// put it there (a Vulkan or explicit-sync renderer): the software GPU keeps its fence to
/// itself (`--gpu-private-reads`) and reads each frame's buffers late (`--gpu-ms`), while a
/// pipelined implicit client writes each buffer as soon as it is released, after waiting for
/// the readers' fences on it as a GPU driver does. The bridge publishes the read fence, so the
/// write waits for the read and every judged frame shows its own colour. Told that the renderer
/// publishes (`--renderer-publishes-reads`), the bridge does not either, and the write lands in
/// the frame being read: the proof that the first run can fail.
#[test]
fn read_fence_published_without_renderer_help() {
    let client = fbclient("implicit --pipelined --frames 12 --delay-ms 50");
    let frames = 6; // every other frame is judged
    let dir = scratch("read-fence");
    let run = nested(
        &dir,
        60,
        &["--gpu-ms", "400", "--gpu-private-reads"],
        std::slice::from_ref(&client),
    );
    let result = run.fbclient("implicit");
    assert_eq!(count(&result, "frames"), frames, "{result:?}");
    assert_eq!(count(&result, "stale"), 0, "{}", run.stdout);
    let report = run.client("fbclient");
    assert_eq!(report["producer"], "Fencing", "{}", run.stdout);
    let published = report["read_fences_published"].as_u64().unwrap_or(0);
    assert!(
        published >= frames,
        "{published} read fences published:\n{}",
        run.stdout
    );

    let dir = scratch("read-fence-nobody");
    let nobody = [
        "--gpu-ms",
        "400",
        "--gpu-private-reads",
        "--renderer-publishes-reads",
    ];
    let run = nested(&dir, 60, &nobody, &[client]);
    let result = run.fbclient("implicit");
    assert_eq!(count(&result, "frames"), frames, "{result:?}");
    let stale = count(&result, "stale");
    assert!(
        stale >= frames / 2,
        "only {stale} of {frames} frames overwritten while read, with nobody publishing the \
         read fence:\n{}",
        run.stdout
    );
    assert_eq!(run.client("fbclient")["read_fences_published"], 0);
}

/// The surfaces of `client`'s report entry, by role: (committed, shown) for each.
fn surfaces(client: &serde_json::Value) -> Vec<(String, u64, u64)> {
    client["surfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["role"].as_str().unwrap().to_owned(),
                s["committed"].as_u64().unwrap(),
                s["shown"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Whether this kernel has the CPU dma-bufs `fbclient video-over-ui` fills its video with
/// (udmabuf or the system dma-heap); Debian's 6.1 builds neither, and the test then says so.
fn has_cpu_dmabufs(test: &str) -> bool {
    let k = kernel();
    if !k.has_udmabuf_and_heaps() {
        crate::support::skip(
            test,
            &format!(
                "{}: no udmabuf and no system dma-heap for the video",
                k.release
            ),
        );
    }
    k.has_udmabuf_and_heaps()
}

/// A player's window as mpv or a browser builds it: the toplevel drawn by the "GPU" (vgem
/// buffers committed while their write fence is pending for 200 ms) and, in its middle half,
/// a desynchronised video subsurface of CPU-filled dma-bufs that never fence (udmabuf), 48×32
/// scaled to 160×120 by wp_viewporter, a frame every 33 ms. The client captures the output
/// after every frame callback: each video frame must fill exactly the viewport's rectangle at
/// the subsurface's position, each window frame the window around it. The compositor's report
/// must show both surfaces, every buffer of each, and the window's commits held for their
/// fences — while the video, which has no fence, is not held behind its parent's.
#[test]
fn e2e_video_subsurface_over_a_gpu_drawn_window() {
    if !has_cpu_dmabufs("e2e_video_subsurface_over_a_gpu_drawn_window") {
        return;
    }
    let dir = scratch("video-over-ui");
    let run = nested(
        &dir,
        90,
        &[],
        &[fbclient(
            "video-over-ui --size 320x240 --frames 60 --interval-ms 33 --ui-every 10 \
             --delay-ms 200",
        )],
    );
    let result = run.fbclient("video-over-ui");
    assert_eq!(
        ["frames", "stale", "ui_stale"].map(|key| count(&result, key)),
        [60, 0, 0],
        "{}",
        run.stdout
    );
    let ui_frames = count(&result, "ui_frames");
    assert!(ui_frames >= 3, "{ui_frames} window frames:\n{}", run.stdout);
    // A video frame held until its parent's GPU job ended would take 200 ms or more.
    let slowest = count(&result, "max_frame_ms");
    assert!(
        slowest < 200,
        "a video frame took {slowest} ms: held behind the window's fence?\n{}",
        run.stdout
    );
    let client = run.client("fbclient");
    // The window's first frame (no GPU job) and each judged one; the video's 60.
    assert_eq!(
        surfaces(client),
        [
            ("xdg_toplevel".to_owned(), ui_frames + 1, ui_frames + 1),
            ("subsurface".to_owned(), 60, 60)
        ],
        "{}",
        run.stdout
    );
    let waited = client["commits"]["implicit, waited for the snapshot"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        waited >= ui_frames,
        "only {waited} commits were held for {ui_frames} window frames:\n{}",
        run.stdout
    );
    // Classified per surface: the window fences, its video subsurface does not (and so the
    // video's buffers, and only those, are given back after the compositor's reads).
    let video = client["surfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "subsurface")
        .map(|s| s["surface"].clone());
    assert_eq!(
        client["non_fencing_surfaces"],
        serde_json::json!([video.unwrap()]),
        "{}",
        run.stdout
    );
}

/// The same player against the compositor without the bridge: each window frame is shown
/// while its GPU job is still drawing it, and the capture after its frame callback finds the
/// window's old colour around the video — the proof that the window's check can fail. The
/// video, CPU-written before its commit, is still right.
#[test]
fn e2e_without_the_bridge_the_gpu_drawn_window_is_stale_around_the_video() {
    if !has_cpu_dmabufs("e2e_without_the_bridge_the_gpu_drawn_window_is_stale_around_the_video") {
        return;
    }
    let dir = scratch("video-over-ui-no-bridge");
    let run = nested(
        &dir,
        90,
        &["--no-bridge"],
        &[fbclient(
            "video-over-ui --size 320x240 --frames 60 --interval-ms 33 --ui-every 10 \
             --delay-ms 200",
        )],
    );
    let result = run.fbclient("video-over-ui");
    assert_eq!(
        ["frames", "stale"].map(|key| count(&result, key)),
        [60, 0],
        "{}",
        run.stdout
    );
    let (ui_frames, ui_stale) = (count(&result, "ui_frames"), count(&result, "ui_stale"));
    assert!(
        ui_frames >= 3 && ui_stale == ui_frames,
        "{ui_stale} of {ui_frames} window frames stale without the bridge:\n{}",
        run.stdout
    );
}

/// wp_single_pixel_buffer_manager_v1, stretched by wp_viewporter: each of ten frames is one
/// pixel of its own colour, and exactly the window's 200×100 output pixels must show it.
#[test]
fn e2e_single_pixel_buffers_fill_the_window() {
    let dir = scratch("single-pixel");
    let run = nested(
        &dir,
        60,
        &[],
        &[fbclient("single-pixel --frames 10 --size 200x100")],
    );
    let result = run.fbclient("single-pixel");
    assert_eq!(
        ["frames", "stale"].map(|key| count(&result, key)),
        [10, 0],
        "{}",
        run.stdout
    );
}
