//! What can go wrong when checking a V4L2 device, in words that tell the user what to do.

use std::fmt;
use std::path::PathBuf;

use rustix::io::Errno;

use super::format::FourCc;

/// Everything that can stop a V4L2 check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist.
    #[error(
        "{}: no such device (is the driver loaded? `ls /dev/video*` lists the video devices)",
        .path.display()
    )]
    NoSuchDevice {
        /// The path asked for.
        path: PathBuf,
    },
    /// No device path was given and no /dev/video* node can capture.
    #[error(
        "no capture-capable video device: {looked_at} /dev/video* node(s) looked at, none has a \
         video capture queue (load a capture driver, e.g. `modprobe vivid`, or name the device)"
    )]
    NoCaptureDevice {
        /// How many /dev/video* nodes were looked at.
        looked_at: usize,
    },
    /// The path is something other than a V4L2 video node.
    #[error("{} is not a video device: {what}", .path.display())]
    NotAVideoDevice {
        /// The path asked for.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// A V4L2 node without a video capture queue (an output, VBI, metadata, radio... node).
    #[error(
        "{} ({card}) has no video capture queue: it is {kinds}; pick the device's capture node \
         (`v4l2-ctl --list-devices` lists them)",
        .path.display()
    )]
    NoCaptureQueue {
        /// The path asked for.
        path: PathBuf,
        /// The device's name.
        card: String,
        /// What the node is, in words.
        kinds: String,
    },
    /// An encoder where a decoder (or a capture device) is expected.
    #[error(
        "{} ({card}) is an encoder: its capture queue gives a coded bitstream ({}), not frames a \
         compositor could show; {}",
        .path.display(), FourCcList(.coded),
        match .decoder {
            Some(d) => format!("check its decoder, {}", d.display()),
            None => "check a decoder or a capture device".to_owned(),
        }
    )]
    Encoder {
        /// The path asked for.
        path: PathBuf,
        /// The device's name.
        card: String,
        /// What it encodes to.
        coded: Vec<FourCc>,
        /// The stateful decoder of the same driver, if the machine has one.
        decoder: Option<PathBuf>,
    },
    /// A stateless (Request API) decoder of a codec this checker does not parse.
    #[error(
        "{} ({card}) is a stateless decoder (its OUTPUT queue takes Request API requests{}); it \
         decodes {}. A stateless decoder parses nothing itself: its client parses the bitstream \
         and gives every frame's parameters (the codec's per-frame controls, e.g. the H.264 \
         SPS/PPS/slice controls) with its OUTPUT buffer in a request allocated on the media \
         device (MEDIA_IOC_REQUEST_ALLOC), and keeps the reference frames. This checker does \
         that for FWHT (vicodec's SFWH) only; its capture buffers are vb2 buffers like a \
         stateful decoder's: check the stateful decoder of the same driver, if there is one",
        .path.display(),
        match .media {
            Some(m) => format!(", allocated on {}", m.display()),
            None => String::new(),
        },
        FourCcList(.coded)
    )]
    StatelessDecoder {
        /// The path asked for.
        path: PathBuf,
        /// The device's name.
        card: String,
        /// What it decodes.
        coded: Vec<FourCc>,
        /// Its media controller node.
        media: Option<PathBuf>,
    },
    /// A stateless decoder whose media device cannot be found or opened.
    #[error(
        "{} ({card}) is a stateless decoder, but no media device (/dev/media*) answers \
         MEDIA_IOC_DEVICE_INFO for its bus ({bus}): its requests are allocated there \
         (MEDIA_IOC_REQUEST_ALLOC); is the media node there and can this user open it?",
        .path.display()
    )]
    NoMediaDevice {
        /// The path asked for.
        path: PathBuf,
        /// The device's name.
        card: String,
        /// Its `bus_info`.
        bus: String,
    },
    /// A stateless decoder's input is not a stream its frames can be parsed from.
    #[error(
        "{input} is not a whole stream of vicodec's FWHT frames: at byte {offset}, {why}. A \
         stateless decoder parses nothing itself, so each frame's header must be read here"
    )]
    BadStream {
        /// The input, in words.
        input: String,
        /// Where it went wrong.
        offset: usize,
        /// What is wrong.
        why: String,
    },
    /// A stateless decoder's request failed.
    #[error(
        "{}: the request of frame {frame} failed at {step}: {errno}{}",
        .path.display(),
        request_hint(.step, *.errno)
    )]
    Request {
        /// The path asked for.
        path: PathBuf,
        /// Which frame (counted from 0 since streaming started).
        frame: u64,
        /// The step, as the kernel names its call.
        step: &'static str,
        /// What the kernel answered.
        errno: Errno,
    },
    /// `--format` names a coded format the decoder does not decode.
    #[error(
        "{} does not decode {requested}; it decodes: {}",
        .path.display(), FourCcList(.offered)
    )]
    CodedFormatNotOffered {
        /// The path asked for.
        path: PathBuf,
        /// The coded format asked for.
        requested: FourCc,
        /// What its OUTPUT queue takes.
        offered: Vec<FourCc>,
    },
    /// A decoder with no `--input` and no encoder on the machine to make a bitstream with.
    #[error(
        "{} ({card}) is a decoder, and this machine has no {coded} encoder of the same driver to \
         make a stream with: give one with --input FILE (a {coded} elementary stream)",
        .path.display()
    )]
    NoBitstream {
        /// The path asked for.
        path: PathBuf,
        /// The device's name.
        card: String,
        /// The coded format.
        coded: FourCc,
    },
    /// `--input` cannot be used.
    #[error("--input {}: {why}", .file.display())]
    Input {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The decoder never said it found the stream's format.
    #[error(
        "{} raised no source-change event within {waited_ms} ms, after being fed {fed_bytes} \
         bytes of {input}: it found no {coded} stream header in them (garbage, another codec, or \
         a stream cut before its first header)",
        .path.display()
    )]
    NoSourceChange {
        /// The path asked for.
        path: PathBuf,
        /// The coded format.
        coded: FourCc,
        /// How long it waited.
        waited_ms: u64,
        /// Bytes queued on the OUTPUT queue.
        fed_bytes: u64,
        /// The input, in words.
        input: String,
    },
    /// The decoder's input ran out before the check had its frames.
    #[error(
        "{}: {input} ended after {decoded} decoded frame(s), before the {wanted} the check \
         streams: the stream is truncated or short (give a longer one, or fewer --frames)",
        .path.display()
    )]
    InputEnded {
        /// The path asked for.
        path: PathBuf,
        /// The input, in words.
        input: String,
        /// Frames decoded.
        decoded: u32,
        /// Frames wanted.
        wanted: u32,
    },
    /// `--format` names a format the capture queue does not offer.
    #[error(
        "{} does not offer format {requested} for capture; it offers: {}",
        .path.display(), FourCcList(.offered)
    )]
    FormatNotOffered {
        /// The path asked for.
        path: PathBuf,
        /// The format asked for.
        requested: FourCc,
        /// What the capture queue(s) offer.
        offered: Vec<FourCc>,
    },
    /// `--size` names a size the driver does not offer for the format (it chose another).
    #[error(
        "{} does not offer {}x{} in {fourcc}: the driver chose {}x{}{}",
        .path.display(), .requested.0, .requested.1, .chosen.0, .chosen.1,
        if .sizes.is_empty() { String::new() } else { format!("; sizes it offers: {}", .sizes) }
    )]
    SizeNotOffered {
        /// The path asked for.
        path: PathBuf,
        /// The format.
        fourcc: FourCc,
        /// The size asked for.
        requested: (u32, u32),
        /// The size the driver set instead.
        chosen: (u32, u32),
        /// The sizes VIDIOC_ENUM_FRAMESIZES lists, in words (may be empty).
        sizes: String,
    },
    /// The driver cannot hand its buffers out as dma-bufs.
    #[error(
        "{} cannot export its buffers as dma-bufs: {why}. A compositor can only be given this \
         device's frames through dma-bufs (VIDIOC_EXPBUF of MMAP buffers); with a USERPTR-only \
         driver, frames must be copied into buffers the application allocates",
        .path.display()
    )]
    ExpbufUnsupported {
        /// The path asked for.
        path: PathBuf,
        /// What the kernel said.
        why: String,
    },
    /// Another open file owns the device's buffer queue.
    #[error(
        "{} is busy: {op} answered EBUSY, so another program is streaming from it or holds its \
         buffers (`fuser -v {}` shows who); stop it and try again",
        .path.display(), .path.display()
    )]
    DeviceBusy {
        /// The path asked for.
        path: PathBuf,
        /// The ioctl that said so.
        op: &'static str,
    },
    /// The device node cannot be opened by this user.
    #[error(
        "{}: permission denied (join the `video` group, or run as root)",
        .path.display()
    )]
    PermissionDenied {
        /// The path asked for.
        path: PathBuf,
    },
    /// Streaming started but the device delivered no frame in time.
    #[error(
        "{} delivered no frame for {} ms ({done} of {wanted} frames so far): is its input \
         connected and producing a signal?",
        .path.display(), .waited_ms
    )]
    NoFrames {
        /// The path asked for.
        path: PathBuf,
        /// How long it waited.
        waited_ms: u64,
        /// Frames received before.
        done: u32,
        /// Frames wanted.
        wanted: u32,
    },
    /// A fence operation on the exported dma-bufs failed.
    #[error("{}: {op}: {source}", .path.display())]
    Fence {
        /// The path asked for.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The fence core's error.
        source: fencebridge::Error,
    },
    /// Any other kernel call failed.
    #[error("{}: {op} failed: {errno}", .path.display())]
    Io {
        /// The path asked for.
        path: PathBuf,
        /// The call, as the kernel names it.
        op: &'static str,
        /// What the kernel answered.
        errno: Errno,
    },
}

impl Error {
    /// A stable name for tools (`no-such-device`, `device-busy`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoSuchDevice { .. } => "no-such-device",
            Error::NoCaptureDevice { .. } => "no-capture-device",
            Error::NotAVideoDevice { .. } => "not-a-video-device",
            Error::NoCaptureQueue { .. } => "no-capture-queue",
            Error::Encoder { .. } => "encoder",
            Error::StatelessDecoder { .. } => "stateless-decoder",
            Error::NoMediaDevice { .. } => "no-media-device",
            Error::BadStream { .. } => "bad-stream",
            Error::Request { .. } => "request",
            Error::CodedFormatNotOffered { .. } => "coded-format-not-offered",
            Error::NoBitstream { .. } => "no-bitstream",
            Error::Input { .. } => "input",
            Error::NoSourceChange { .. } => "no-source-change",
            Error::InputEnded { .. } => "input-ended",
            Error::FormatNotOffered { .. } => "format-not-offered",
            Error::SizeNotOffered { .. } => "size-not-offered",
            Error::ExpbufUnsupported { .. } => "expbuf-unsupported",
            Error::DeviceBusy { .. } => "device-busy",
            Error::PermissionDenied { .. } => "permission-denied",
            Error::NoFrames { .. } => "no-frames",
            Error::Fence { .. } => "fence",
            Error::Io { .. } => "io",
        }
    }

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Io { errno, .. } | Error::Request { errno, .. } => Some(*errno),
            Error::DeviceBusy { .. } => Some(Errno::BUSY),
            Error::PermissionDenied { .. } => Some(Errno::ACCESS),
            Error::NoSuchDevice { .. } => Some(Errno::NOENT),
            Error::Fence { source, .. } => source.errno(),
            _ => None,
        }
    }
}

/// What a request step's failure usually means.
fn request_hint(step: &str, errno: Errno) -> &'static str {
    match (step, errno) {
        (s, Errno::INVAL) if s.starts_with("VIDIOC_S_EXT_CTRLS") => {
            " (the decoder refused the frame's parameters: a size larger than the capture \
             format's, or components and subsampling other than the capture format's)"
        }
        (s, Errno::NOENT) if s.starts_with("MEDIA_REQUEST_IOC_QUEUE") => {
            " (the request lacks its OUTPUT buffer or a control the decoder requires)"
        }
        (s, Errno::INVAL) if s.starts_with("VIDIOC_QBUF") => {
            " (the OUTPUT buffer was refused in the request)"
        }
        (s, _) if s.starts_with("poll") => " (the request never completed)",
        _ => "",
    }
}

/// A list of fourccs, comma-separated.
struct FourCcList<'a>(&'a [FourCc]);

impl fmt::Display for FourCcList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        for (i, fourcc) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{fourcc}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let path = PathBuf::from("/dev/video7");
        let e = Error::FormatNotOffered {
            path: path.clone(),
            requested: "ABCD".parse().unwrap(),
            offered: vec!["YUYV".parse().unwrap(), "NV12".parse().unwrap()],
        };
        assert_eq!(
            e.to_string(),
            "/dev/video7 does not offer format ABCD for capture; it offers: YUYV, NV12"
        );
        let e = Error::DeviceBusy {
            path: path.clone(),
            op: "VIDIOC_REQBUFS",
        };
        assert!(e.to_string().contains("fuser -v /dev/video7"), "{e}");
        let e = Error::Encoder {
            path: path.clone(),
            card: "stateful-encoder".into(),
            coded: vec!["FWHT".parse().unwrap()],
            decoder: Some("/dev/video11".into()),
        };
        assert_eq!(
            e.to_string(),
            "/dev/video7 (stateful-encoder) is an encoder: its capture queue gives a coded \
             bitstream (FWHT), not frames a compositor could show; check its decoder, /dev/video11"
        );
        assert_eq!(e.kind(), "encoder");
        let e = Error::SizeNotOffered {
            path,
            fourcc: "YUYV".parse().unwrap(),
            requested: (123, 45),
            chosen: (640, 360),
            sizes: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "/dev/video7 does not offer 123x45 in YUYV: the driver chose 640x360"
        );
    }
}
