//! `fencebridge v4l2` against the kernel's memory-to-memory test drivers, where the run has them
//! (xtask builds them out of tree for 6.1 and 6.12; 7.x skips, saying why): vicodec's stateful
//! FWHT decoder fed a stream its encoder made from generated frames, or a file; its stateless
//! decoder fed the same frames in Request API requests, its decoded pixels compared with the
//! generated ones; its encoder, refused; vim2m fed generated frames. What the kernel really
//! does with their capture buffers' fences is asserted, as for vivid (`v4l2.rs`), and each bad
//! input has its own message.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fencebridge_cli::sys::v4l2 as sys;
use fencebridge_cli::v4l2::{
    self, m2m, CheckOptions, Device, Error, M2mRole, QueueKind, Report, Source, Verdict,
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

/// The CLI on the decoder: the report says what was fed and how the decoder answered.
#[test]
fn m2m_stateful_decoder_cli_reports_and_exits_1() {
    let Some(path) = vicodec(
        "m2m_stateful_decoder_cli_reports_and_exits_1",
        "stateful-decoder",
    ) else {
        return;
    };
    let (stdout, report) = cli_report(
        &path,
        "m2m:      a stateful decoder; its OUTPUT queue (FWHT) was fed 16 FWHT frames (looped) \
         made by",
    );
    assert!(
        stdout.contains("the last flagged V4L2_BUF_FLAG_LAST"),
        "{stdout}"
    );
    assert_eq!(report["m2m"]["role"], "stateful-decoder");
    assert_eq!(report["m2m"]["output_format"], "FWHT");
    assert_eq!(report["m2m"]["drain"]["last_seen"], true);
}

/// `fencebridge v4l2 DECODER --frames 10`, as text and as JSON: both exit 1 (its ignored fences
/// would corrupt frames without the bridge), the text says `m2m` and the verdict, the JSON
/// that the imported fence was ignored and the producer is non-fencing. The text and the JSON.
fn cli_report(path: &Path, m2m: &str) -> (String, Value) {
    let (code, stdout, stderr) = cli(&[path.to_str().unwrap(), "--frames", "10"]);
    println!("{stdout}");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(m2m), "{stdout}");
    assert!(
        stdout.contains("verdict: NON-FENCING PRODUCER THAT IGNORES FENCES"),
        "{stdout}"
    );
    let (code, json, _) = cli(&[path.to_str().unwrap(), "--frames", "10", "--json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(report["fences"]["imported"]["outcome"], "ignored");
    assert_eq!(report["bridge"]["class"], "non-fencing");
    (stdout, report)
}

/// A stream from a file decodes the same; one shorter than the frames asked for ends with its
/// own message, and so does one cut in its middle.
#[test]
fn m2m_stateful_decoder_input_file_and_truncated_input() {
    let test = "m2m_stateful_decoder_input_file_and_truncated_input";
    let Some(path) = vicodec(test, "stateful-decoder") else {
        return;
    };
    let (frames, raw) = encoded_frames();
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

/// vicodec's stateless decoder, with the frames its stateful encoder made, each in a request:
/// its decoded frames' buffers are vb2 buffers like the stateful decoder's — the stub fence
/// while queued and after DQBUF, an imported fence ignored: a non-fencing producer; and every
/// request decoded (no frame flagged with an error).
#[test]
fn m2m_stateless_decoder_frames_are_non_fencing() {
    let Some(path) = vicodec(
        "m2m_stateless_decoder_frames_are_non_fencing",
        "stateless-decoder",
    ) else {
        return;
    };
    let report = run(&path, &options());
    let why = format!("on {}:\n{report}", kernel().release);
    let m2m = report.m2m.as_ref().expect("an m2m report");
    assert_eq!(m2m.role, M2mRole::StatelessDecoder, "{why}");
    assert_eq!(m2m.output_format.to_string(), "SFWH", "{why}");
    assert!(m2m.input.contains("stateful-encoder"), "{why}");
    assert!(m2m.input.contains("NV12 640x368 frames"), "{why}");
    let media = m2m.media.as_ref().expect("a media device");
    assert!(media.starts_with("/dev") && media.exists(), "{why}");
    // Every frame the check dequeued came from a request (more are in flight at the end).
    assert!(
        m2m.requests >= u64::from(report.observations.frames),
        "{why}"
    );
    assert_eq!(m2m.source_change_after, None, "{why}");
    assert_eq!(m2m.drain, None, "a stateless decoder is not drained: {why}");
    assert_eq!(report.observations.error_frames, 0, "{why}");
    assert_eq!(report.format.fourcc.to_string(), "NV12", "{why}");
    assert_eq!((report.format.width, report.format.height), (640, 368));
    assert_non_fencing(&report, "vicodec's stateless decoder");
    for b in &report.observations.layout {
        assert_eq!((b.planes.len(), b.distinct_dmabufs), (1, 1), "{why}");
    }
}

/// The decoded frames are the generated ones the encoder was fed, in order, within FWHT's
/// loss: so each request carried the right frame and parameters, and each P-frame was decoded
/// against the right reference (against another frame it would be off by the 8 a byte the
/// generated frames move by).
#[test]
fn m2m_stateless_decoder_gives_back_the_encoded_frames() {
    let Some(path) = vicodec(
        "m2m_stateless_decoder_gives_back_the_encoded_frames",
        "stateless-decoder",
    ) else {
        return;
    };
    let source = Source::open(&path, &options()).unwrap();
    let device = source.device();
    let format = source.format().clone();
    let queue = format.queue;
    let count = device.allocate(queue, 4).unwrap();
    let maps: Vec<_> = (0..count).map(|i| device.map(queue, i).unwrap()).collect();
    for index in 0..count {
        device.queue_buffer(queue, index, 1).unwrap();
    }
    let streaming = device.stream(queue).unwrap();
    let expected = m2m::generated_frames(&format, m2m::GENERATED_FRAMES);
    let frames = expected.len() + 8; // once round the loop, and again to its second I-frame
    let mut decoded = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while decoded.len() < frames {
        assert!(Instant::now() < deadline, "decoded only {decoded:?}");
        let Some(frame) = source.dequeue(1).unwrap() else {
            source.wait(Duration::from_millis(100)).unwrap();
            continue;
        };
        assert!(!frame.has_error(), "{frame:?} after {decoded:?}");
        let k = source.input_frame(&frame).expect("a generated frame");
        let pixels = maps[frame.index as usize].read(frame.planes[0].bytesused as usize);
        let off = |other: &[u8]| {
            assert_eq!(pixels.len(), other.len());
            let sum: u64 = pixels
                .iter()
                .zip(other)
                .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                .sum();
            sum as f64 / pixels.len() as f64
        };
        let own = off(&expected[k]);
        let next = off(&expected[(k + 1) % expected.len()]);
        let keyframe = frame.flags & sys::V4L2_BUF_FLAG_KEYFRAME != 0;
        decoded.push((k, keyframe, own, next));
        device.queue_buffer(queue, frame.index, 1).unwrap();
    }
    drop(streaming);
    let table: Vec<String> = decoded
        .iter()
        .map(|(k, i, own, next)| format!("{k}{}: {own:.2}/{next:.2}", if *i { " (I)" } else { "" }))
        .collect();
    println!(
        "{}: frame: mean |decoded - its source| / |decoded - the next source|, a byte: {}",
        kernel().release,
        table.join(", ")
    );
    let order: Vec<usize> = decoded.iter().map(|d| d.0).collect();
    let wanted: Vec<usize> = (0..frames).map(|i| i % expected.len()).collect();
    assert_eq!(order, wanted, "decoded in the order fed");
    for &(k, keyframe, own, next) in &decoded {
        assert!(
            own < 2.0,
            "frame {k}: {own:.2} a byte off its source: {table:?}"
        );
        assert!(
            next > 4.0 * own.max(1.0),
            "frame {k} is not told from the next one: {table:?}"
        );
        if k == 0 {
            assert!(
                keyframe,
                "the stream's first frame is an I-frame: {table:?}"
            );
        }
    }
    let p_frames = decoded.iter().filter(|d| !d.1).count();
    assert!(
        p_frames >= frames / 2,
        "P-frames decoded against their reference: {table:?}"
    );
}

/// The CLI on the stateless decoder: what was fed, in requests on which media device.
#[test]
fn m2m_stateless_decoder_cli_reports_and_exits_1() {
    let Some(path) = vicodec(
        "m2m_stateless_decoder_cli_reports_and_exits_1",
        "stateless-decoder",
    ) else {
        return;
    };
    let (stdout, report) = cli_report(
        &path,
        "m2m:      a stateless decoder; its OUTPUT queue (SFWH) was fed 16 FWHT frames (looped) \
         made by",
    );
    assert!(stdout.contains(" requests on /dev/media"), "{stdout}");
    assert_eq!(report["m2m"]["role"], "stateless-decoder");
    assert_eq!(report["m2m"]["output_format"], "SFWH");
    assert!(
        report["m2m"]["requests"].as_u64().unwrap() >= 10,
        "{report}"
    );
    assert!(report["m2m"]["media"]
        .as_str()
        .unwrap()
        .starts_with("/dev/media"));
}

/// `--input` on the stateless decoder: a stream of vicodec's FWHT frames decodes as the
/// generated one; one that is garbage, cut, or starts with a P-frame is refused with where and
/// why before anything is queued; a short one ends with its own message; a frame whose
/// parameters the decoder refuses fails its request, naming the step.
#[test]
fn m2m_stateless_decoder_input_file_and_bad_input() {
    let test = "m2m_stateless_decoder_input_file_and_bad_input";
    let Some(path) = vicodec(test, "stateless-decoder") else {
        return;
    };
    let (frames, _) = encoded_frames();
    let dir = scratch(test);
    let write = |name: &str, bytes: &[u8]| {
        let file = dir.join(name);
        std::fs::write(&file, bytes).unwrap();
        file
    };
    let with_input = |file: &Path| CheckOptions {
        input: Some(file.to_owned()),
        import_check: false,
        ..options()
    };

    let whole = write("whole.fwht", &frames.concat());
    let report = run(&path, &with_input(&whole));
    let m2m = report.m2m.as_ref().unwrap();
    assert_eq!(m2m.input, whole.display().to_string());
    assert_eq!(m2m.role, M2mRole::StatelessDecoder);
    // The payloads alone were queued: the headers went as controls.
    let headers = frames.len() as u64 * v4l2::fwht::HEADER_LEN as u64;
    assert_eq!(
        m2m.fed_bytes,
        frames.concat().len() as u64 - headers,
        "{report}"
    );
    assert_eq!(report.observations.frames, options().frames);
    assert_eq!(report.observations.error_frames, 0, "{report}");

    let bad_stream = |file: &Path| {
        let e = check_err(&path, &with_input(file));
        let Error::BadStream { offset, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(e.kind(), "bad-stream");
        (*offset, e.to_string())
    };
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i % 61) as u8).collect();
    let file = write("garbage.bin", &garbage);
    assert_eq!(
        bad_stream(&file),
        (
            0,
            format!(
                "{} is not a whole stream of vicodec's FWHT frames: at byte 0, no FWHT frame \
                 header (magic 4f4f4f4f ffffffff) where frame 0 should start: not a stream of \
                 vicodec's FWHT frames. A stateless decoder parses nothing itself, so each \
                 frame's header must be read here",
                file.display()
            )
        )
    );
    let mut cut = frames[..3].concat();
    cut.extend_from_slice(&frames[3][..frames[3].len() / 2]);
    let (offset, text) = bad_stream(&write("cut.fwht", &cut));
    assert_eq!(offset, frames[..3].concat().len());
    assert!(text.contains("frame 3 is cut: its header says"), "{text}");
    let (offset, text) = bad_stream(&write("p-first.fwht", &frames[1..].concat()));
    assert_eq!(offset, 0);
    assert!(text.contains("the stream starts with a P-frame"), "{text}");

    // Three whole frames: decoded, then the end.
    let e = check_err(
        &path,
        &with_input(&write("short.fwht", &frames[..3].concat())),
    );
    let Error::InputEnded {
        decoded, wanted, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((*decoded, *wanted), (3, options().frames), "{e}");

    // Frame 1 claims 4:4:4 chroma: the capture format (NV12) cannot hold it, and the decoder
    // refuses its parameters in the request.
    let mut odd = frames[..3].to_vec();
    let flags = 8 + 4 * 3;
    let word = u32::from_be_bytes(odd[1][flags..flags + 4].try_into().unwrap())
        | sys::V4L2_FWHT_FL_CHROMA_FULL_WIDTH
        | sys::V4L2_FWHT_FL_CHROMA_FULL_HEIGHT;
    odd[1][flags..flags + 4].copy_from_slice(&word.to_be_bytes());
    let e = check_err(&path, &with_input(&write("odd.fwht", &odd.concat())));
    let Error::Request {
        frame, step, errno, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((*frame, *errno), (1, rustix::io::Errno::INVAL), "{e}");
    assert!(step.starts_with("VIDIOC_S_EXT_CTRLS"), "{e}");
    assert_eq!(e.kind(), "request");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: the request of frame 1 failed at VIDIOC_S_EXT_CTRLS \
             (V4L2_CID_STATELESS_FWHT_PARAMS in the request): Invalid argument (os error 22) \
             (the decoder refused the frame's parameters: a size larger than the capture \
             format's, or components and subsampling other than the capture format's)",
            path.display()
        )
    );
}

/// `--show` on the stateless decoder: as the stateful decoder's frames, shown without a
/// buffer given back mid-read when the bridge defers the releases.
#[test]
fn m2m_show_stateless_decoded_frames_with_the_bridge_no_early_release() {
    let test = "m2m_show_stateless_decoded_frames_with_the_bridge_no_early_release";
    let Some(path) = vicodec(test, "stateless-decoder") else {
        return;
    };
    let (show, client) = show_v4l2(test, &path, &[], true);
    assert_shown_without_early_release(&show, &client);
    assert!(show["shown"].as_u64().unwrap() >= 10, "{show}");
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

/// 14 FWHT frames, one a chunk, made by vicodec's encoder from generated frames, and the raw
/// format they were made from.
fn encoded_frames() -> (Vec<Vec<u8>>, v4l2::Format) {
    let encoder = Device::open(node("stateful-encoder", "vicodec").dev).unwrap();
    v4l2::m2m::encode(
        &encoder,
        "FWHT".parse().unwrap(),
        (320, 240),
        14,
        Duration::from_secs(5),
    )
    .unwrap()
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
