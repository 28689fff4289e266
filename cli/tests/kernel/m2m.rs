//! `fencebridge v4l2` against the kernel's memory-to-memory test drivers, where the run has them
//! (xtask builds them out of tree for 6.1 and 6.12; 7.x skips, saying why): vicodec's stateful
//! FWHT decoder fed a stream its encoder made from generated frames, or a file; its stateless
//! decoder, identified; its encoder, refused; vim2m fed generated frames. What the kernel really
//! does with their capture buffers' fences is asserted, as for vivid (`v4l2.rs`), and each bad
//! input has its own message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fencebridge_cli::v4l2::{
    self, CheckOptions, Device, Error, M2mRole, QueueKind, Report, Verdict,
};
use fencebridge_testkit::m2m::{loaded, node};
use fencebridge_testkit::nested::{
    assert_early_releases, assert_shown_without_early_release, scratch, show_v4l2,
};
use serde_json::Value;

use crate::support::kernel;
use crate::v4l2::{assert_non_fencing, check_err, quick};
use fencebridge::bridge::producer_class::DEFAULT_NON_FENCING_AFTER;

/// vicodec's node `name`, or `None` (after a skip that says why) where the run has no m2m
/// drivers.
fn vicodec(test: &str, name: &str) -> Option<PathBuf> {
    loaded(test, "vicodec")?;
    Some(node(name, "vicodec").dev)
}

/// Enough frames for the classifier's verdict.
fn options() -> CheckOptions {
    CheckOptions {
        frames: DEFAULT_NON_FENCING_AFTER + 2,
        ..CheckOptions::default()
    }
}

fn run(path: &Path, options: &CheckOptions) -> Report {
    v4l2::check(path, options, |_| {})
        .unwrap_or_else(|e| panic!("{}: {}: {e}", kernel().release, path.display()))
}

/// The decoded frames' buffers are vb2 buffers like vivid's: the stub fence while queued and
/// after DQBUF, an imported fence ignored — a non-fencing producer; and the decoder was
/// started and drained as the stateful decoder interface says.
#[test]
fn m2m_stateful_decoder_frames_are_non_fencing() {
    let Some(path) = vicodec(
        "m2m_stateful_decoder_frames_are_non_fencing",
        "stateful-decoder",
    ) else {
        return;
    };
    let report = run(&path, &options());
    let why = format!("on {}:\n{report}", kernel().release);
    let m2m = report.m2m.as_ref().expect("an m2m report");
    assert_eq!(m2m.role, M2mRole::StatefulDecoder, "{why}");
    assert_eq!(m2m.output_format.to_string(), "FWHT", "{why}");
    assert!(m2m.input.contains("stateful-encoder"), "{why}");
    assert!(m2m.source_change_after.is_some(), "{why}");
    assert!(m2m.fed_bytes > 0, "{why}");
    let drain = m2m.drain.expect("drained");
    assert!(
        drain.last_seen,
        "the drain ends with V4L2_BUF_FLAG_LAST: {why}"
    );
    // vicodec encodes nothing smaller than 640x360, in 16-line macroblocks: 640x368.
    assert!(m2m.input.contains("NV12 640x368 frames"), "{why}");
    // Asked for what a compositor takes, among the formats vicodec offers for a 4:2:0 stream;
    // the decoder's frame buffers are the coded size (height rounded up to 16 lines).
    assert_eq!(report.format.fourcc.to_string(), "NV12", "{why}");
    assert_eq!(report.format.queue, QueueKind::SinglePlanar, "{why}");
    assert_eq!((report.format.width, report.format.height), (640, 368));
    assert_non_fencing(&report, "vicodec's stateful decoder");
    for b in &report.observations.layout {
        assert_eq!((b.planes.len(), b.distinct_dmabufs), (1, 1), "{why}");
        assert!(b.planes[0].length >= 640 * 368 * 3 / 2, "{why}");
    }
}

/// The CLI on the decoder: the report says what was fed and how the decoder answered, and
/// exits 1 (its ignored fences would corrupt frames without the bridge).
#[test]
fn m2m_stateful_decoder_cli_reports_and_exits_1() {
    let Some(path) = vicodec(
        "m2m_stateful_decoder_cli_reports_and_exits_1",
        "stateful-decoder",
    ) else {
        return;
    };
    let (code, stdout, stderr) = cli(&[path.to_str().unwrap(), "--frames", "10"]);
    println!("{stdout}");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("m2m:      a stateful decoder; its OUTPUT queue (FWHT) was fed 16 FWHT frames (looped) made by"), "{stdout}");
    assert!(
        stdout.contains("the last flagged V4L2_BUF_FLAG_LAST"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict: NON-FENCING PRODUCER THAT IGNORES FENCES"),
        "{stdout}"
    );

    let (code, stdout, _) = cli(&[path.to_str().unwrap(), "--frames", "10", "--json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["m2m"]["role"], "stateful-decoder");
    assert_eq!(report["m2m"]["output_format"], "FWHT");
    assert_eq!(report["m2m"]["drain"]["last_seen"], true);
    assert_eq!(report["fences"]["imported"]["outcome"], "ignored");
    assert_eq!(report["bridge"]["class"], "non-fencing");
}

/// A stream from a file decodes the same; one shorter than the frames asked for ends with its
/// own message, and so does one cut in its middle.
#[test]
fn m2m_stateful_decoder_input_file_and_truncated_input() {
    let test = "m2m_stateful_decoder_input_file_and_truncated_input";
    let Some(path) = vicodec(test, "stateful-decoder") else {
        return;
    };
    let encoder = Device::open(node("stateful-encoder", "vicodec").dev).unwrap();
    let (frames, raw) = v4l2::m2m::encode(
        &encoder,
        "FWHT".parse().unwrap(),
        (320, 240),
        14,
        Duration::from_secs(5),
    )
    .unwrap();
    drop(encoder);
    assert_eq!(raw.fourcc.to_string(), "NV12");
    assert_eq!(
        (raw.width, raw.height),
        (640, 368),
        "vicodec's smallest, in whole macroblocks"
    );
    assert_eq!(frames.len(), 14);
    let dir = scratch(test);

    let whole = dir.join("whole.fwht");
    std::fs::write(&whole, frames.concat()).unwrap();
    let report = run(
        &path,
        &CheckOptions {
            input: Some(whole.clone()),
            format: Some("FWHT".parse().unwrap()),
            import_check: false,
            ..options()
        },
    );
    let m2m = report.m2m.as_ref().unwrap();
    assert_eq!(m2m.input, whole.display().to_string());
    assert_eq!(m2m.fed_bytes, frames.concat().len() as u64);
    assert_eq!(report.observations.frames, options().frames);
    assert!(report.observations.dequeued.all_stub(), "{report}");

    // Three whole frames and half of the fourth: the decoder gives what it can, then the end.
    let cut = dir.join("cut.fwht");
    let mut bytes = frames[..3].concat();
    bytes.extend_from_slice(&frames[3][..frames[3].len() / 2]);
    std::fs::write(&cut, &bytes).unwrap();
    let e = check_err(
        &path,
        &CheckOptions {
            input: Some(cut.clone()),
            ..options()
        },
    );
    let Error::InputEnded {
        decoded, wanted, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(*wanted, options().frames);
    assert!((3..=4).contains(decoded), "{e}");
    assert_eq!(e.kind(), "input-ended");
    assert!(
        e.to_string().ends_with(&format!(
            "{} ended after {decoded} decoded frame(s), before the {wanted} the check streams: \
             the stream is truncated or short (give a longer one, or fewer --frames)",
            cut.display()
        )),
        "{e}"
    );
}

/// Bytes with no FWHT header anywhere: the decoder never raises the source-change event, and
/// the wait for it is bounded.
#[test]
fn m2m_stateful_decoder_garbage_input_no_source_change() {
    let test = "m2m_stateful_decoder_garbage_input_no_source_change";
    let Some(path) = vicodec(test, "stateful-decoder") else {
        return;
    };
    let dir = scratch(test);
    let garbage = dir.join("garbage.bin");
    // A byte pattern that never holds the header's magic (0x4f x4, 0xff x4).
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 61) as u8).collect();
    std::fs::write(&garbage, &bytes).unwrap();
    let options = CheckOptions {
        input: Some(garbage.clone()),
        frame_timeout: Duration::from_secs(2),
        ..quick()
    };
    let started = std::time::Instant::now();
    let e = check_err(&path, &options);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
    let Error::NoSourceChange { fed_bytes, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*fed_bytes, bytes.len() as u64, "the whole file was fed");
    assert_eq!(
        e.to_string(),
        format!(
            "{} raised no source-change event within 2000 ms, after being fed 100000 bytes of \
             {}: it found no FWHT stream header in them (garbage, another codec, or a stream cut \
             before its first header)",
            path.display(),
            garbage.display()
        )
    );

    // An empty file and a missing one are refused before the device is fed.
    let empty = dir.join("empty.fwht");
    std::fs::write(&empty, b"").unwrap();
    let e = check_err(
        &path,
        &CheckOptions {
            input: Some(empty.clone()),
            ..quick()
        },
    );
    assert_eq!(
        e.to_string(),
        format!("--input {}: the file is empty", empty.display())
    );
    let e = check_err(
        &path,
        &CheckOptions {
            input: Some(dir.join("missing.fwht")),
            ..quick()
        },
    );
    assert_eq!(e.kind(), "input", "{e}");
}

/// `--format` on a decoder names its coded format: one it lacks is refused with what it has.
#[test]
fn m2m_stateful_decoder_coded_format_not_offered() {
    let Some(path) = vicodec(
        "m2m_stateful_decoder_coded_format_not_offered",
        "stateful-decoder",
    ) else {
        return;
    };
    let e = check_err(
        &path,
        &CheckOptions {
            format: Some("H264".parse().unwrap()),
            ..quick()
        },
    );
    assert_eq!(
        e.to_string(),
        format!("{} does not decode H264; it decodes: FWHT", path.display())
    );
    assert_eq!(e.kind(), "coded-format-not-offered");
}

/// The encoder where a decoder is expected: refused, pointing at its decoder.
#[test]
fn m2m_encoder_is_refused_with_its_decoder() {
    let Some(path) = vicodec(
        "m2m_encoder_is_refused_with_its_decoder",
        "stateful-encoder",
    ) else {
        return;
    };
    let decoder = node("stateful-decoder", "vicodec").dev;
    let e = check_err(&path, &quick());
    assert_eq!(
        e.to_string(),
        format!(
            "{} (vicodec) is an encoder: its capture queue gives a coded bitstream (FWHT), not \
             frames a compositor could show; check its decoder, {}",
            path.display(),
            decoder.display()
        )
    );
    let (code, stdout, _) = cli(&[path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2));
    let error: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(error["error"]["kind"], "encoder");
}

/// The stateless decoder: identified by its OUTPUT queue's Request API support, its coded
/// format listed with its media device, and what a stateless check needs said.
#[test]
fn m2m_stateless_decoder_is_identified() {
    let Some(path) = vicodec("m2m_stateless_decoder_is_identified", "stateless-decoder") else {
        return;
    };
    let e = check_err(&path, &quick());
    let Error::StatelessDecoder { coded, media, .. } = &e else {
        panic!("{e:?}");
    };
    let coded: Vec<String> = coded.iter().map(ToString::to_string).collect();
    assert_eq!(coded, ["SFWH"], "{e}");
    let media = media
        .as_ref()
        .unwrap_or_else(|| panic!("no media device: {e}"));
    assert!(media.exists(), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "{} (vicodec) is a stateless decoder (its OUTPUT queue takes Request API requests, \
             allocated on {}); it decodes SFWH.",
            path.display(),
            media.display()
        )),
        "{text}"
    );
    assert!(text.contains("MEDIA_IOC_REQUEST_ALLOC"), "{text}");
    assert_eq!(e.kind(), "stateless-decoder");
}

/// vim2m converts generated frames; its capture buffers behave like every vb2 driver's.
#[test]
fn m2m_vim2m_frames_are_non_fencing() {
    let test = "m2m_vim2m_frames_are_non_fencing";
    if loaded(test, "vim2m").is_none() {
        return;
    }
    let path = node("vim2m", "vim2m").dev;
    let report = run(&path, &options());
    let m2m = report.m2m.as_ref().expect("an m2m report");
    assert_eq!(m2m.role, M2mRole::Converter, "{report}");
    assert_eq!(m2m.output_format.to_string(), "RGBP", "{report}");
    assert_eq!(m2m.drain, None, "a converter is not drained");
    assert_eq!(report.format.fourcc.to_string(), "YUYV", "{report}");
    assert_non_fencing(&report, "vim2m");
    assert_eq!(report.verdict(), Verdict::NonFencingIgnoresFences);
}

/// `--show` on the decoder: the decoded frames go through linux-dmabuf to the reference
/// compositor, which shows them, classifies the surface non-fencing and defers its releases;
/// without the bridge, buffers come back mid-read.
#[test]
fn m2m_show_decoded_frames_with_the_bridge_no_early_release() {
    let test = "m2m_show_decoded_frames_with_the_bridge_no_early_release";
    let Some(path) = vicodec(test, "stateful-decoder") else {
        return;
    };
    let (show, client) = show_v4l2(test, &path, &[], true);
    assert_shown_without_early_release(&show, &client);
    // Presented at the compositor's pace: most frames reach the screen.
    assert!(show["shown"].as_u64().unwrap() >= 10, "{show}");
}

#[test]
fn m2m_show_decoded_frames_without_the_bridge_catches_early_releases() {
    let test = "m2m_show_decoded_frames_without_the_bridge_catches_early_releases";
    let Some(path) = vicodec(test, "stateful-decoder") else {
        return;
    };
    let (show, _) = show_v4l2(test, &path, &[], false);
    assert_early_releases(&show);
}

/// `fencebridge v4l2 ARGS`: exit status, stdout, stderr.
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fencebridge"))
        .arg("v4l2")
        .args(args)
        .output()
        .expect("run fencebridge v4l2");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
