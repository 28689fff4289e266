//! Memory-to-memory devices (codecs and converters): what one is, and a [`Source`] of capture
//! frames that works for them as for a capture device — the check and `--show` dequeue frames
//! from it without knowing which it is.
//!
//! A capture device fills its buffers on its own. A memory-to-memory device fills them from
//! what is queued on its OUTPUT queue: a stateful decoder from a bitstream (started as the
//! kernel's stateful decoder interface says: coded format on OUTPUT, stream on, queue the
//! bitstream, wait for `V4L2_EVENT_SOURCE_CHANGE`, then read the CAPTURE format and set the
//! capture queue up), a converter from raw frames. The bitstream is one the machine makes
//! itself — generated frames through the stateful encoder of the same driver — or a file.
//!
//! A stateless decoder (Request API: vicodec's `stateless-decoder`, as hantro and rkvdec) parses
//! nothing itself: its FWHT stream is parsed here ([`super::fwht`]), and each frame goes in a
//! request allocated on the decoder's media device — its payload in an OUTPUT buffer, its header
//! as `V4L2_CID_STATELESS_FWHT_PARAMS`, a P-frame referencing the CAPTURE buffer of the frame
//! before it by timestamp. The CAPTURE side is then the same as a stateful decoder's. Stateless
//! decoders of other codecs, and encoders, are identified and refused, each with what it is and
//! what to do.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::io::Errno;

use super::check::CheckOptions;
use super::device::{BufferState, Device};
use super::format::{Format, FormatDesc, FourCc, FrameInterval, Queue, QueueKind};
use super::fwht;
use super::request::{sysfs_media_node, MediaDevice, Request};
use super::Error;
use crate::mapping::Mapping;
use crate::sys::v4l2 as sys;

/// How many buffers feed an OUTPUT queue.
const OUTPUT_BUFFERS: u32 = 4;
/// How long a request may take to complete once its OUTPUT buffer is back (vicodec completes
/// it right after).
const REQUEST_COMPLETION: Duration = Duration::from_secs(1);
/// The coded format vicodec's stateful encoder writes and its stateless decoder's stream is
/// parsed from.
const FWHT: FourCc = FourCc::new(b"FWHT");
/// The coded format of vicodec's stateless decoder.
const STATELESS_FWHT: FourCc = FourCc::new(b"SFWH");
/// How many distinct frames a generated input loops over.
pub const GENERATED_FRAMES: u32 = 16;
/// The size of generated frames when `--size` is not given.
const GENERATED_SIZE: (u32, u32) = (320, 240);
/// The raw formats a compositor takes most readily, best first: what a decoder or converter
/// is asked to produce when it offers one.
const SHOWABLE: [FourCc; 5] = [
    FourCc::new(b"NV12"),
    FourCc::new(b"NM12"),
    FourCc::new(b"YUYV"),
    FourCc::new(b"XR24"),
    FourCc::new(b"AR24"),
];

/// What a memory-to-memory device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum M2mRole {
    /// Coded OUTPUT, raw CAPTURE, parses the bitstream itself (coda, venus, vicodec's
    /// `stateful-decoder`).
    StatefulDecoder,
    /// Coded OUTPUT whose buffers go in Request API requests with per-frame parameters
    /// (hantro, rkvdec, cedrus, vicodec's `stateless-decoder`).
    StatelessDecoder,
    /// Raw OUTPUT, coded CAPTURE.
    Encoder,
    /// Raw on both sides (scalers, colour converters: vim2m).
    Converter,
}

impl M2mRole {
    /// In words.
    pub fn name(self) -> &'static str {
        match self {
            M2mRole::StatefulDecoder => "stateful decoder",
            M2mRole::StatelessDecoder => "stateless decoder",
            M2mRole::Encoder => "encoder",
            M2mRole::Converter => "converter",
        }
    }
}

/// What a memory-to-memory node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct M2mInfo {
    /// Its role.
    pub role: M2mRole,
    /// Its coded formats (OUTPUT for a decoder, CAPTURE for an encoder; none for a converter).
    pub coded: Vec<FourCc>,
    /// What its OUTPUT queue takes.
    pub output_formats: Vec<FormatDesc>,
    /// `V4L2_BUF_CAP_*` of its OUTPUT queue.
    pub output_caps: u32,
}

impl M2mInfo {
    /// Reads the role from the two queues' formats and the OUTPUT queue's buffer caps.
    pub fn of(device: &Device) -> Result<M2mInfo, Error> {
        let kind = device.info().queues[0];
        let output = Queue::output(kind);
        let output_formats = device.formats(output)?;
        let capture_formats = device.formats(kind)?;
        let coded = |formats: &[FormatDesc]| -> Vec<FourCc> {
            formats
                .iter()
                .filter(|f| f.flags & sys::V4L2_FMT_FLAG_COMPRESSED != 0)
                .map(|f| f.fourcc)
                .collect()
        };
        let output_caps = device.buffer_caps(output)?;
        let (role, coded) = match (coded(&output_formats), coded(&capture_formats)) {
            (out, _) if !out.is_empty() => {
                if output_caps & sys::V4L2_BUF_CAP_SUPPORTS_REQUESTS != 0 {
                    (M2mRole::StatelessDecoder, out)
                } else {
                    (M2mRole::StatefulDecoder, out)
                }
            }
            (_, cap) if !cap.is_empty() => (M2mRole::Encoder, cap),
            _ => (M2mRole::Converter, Vec::new()),
        };
        Ok(M2mInfo {
            role,
            coded,
            output_formats,
            output_caps,
        })
    }
}

/// What was fed to a memory-to-memory device, and how it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct M2mReport {
    /// Its role.
    pub role: M2mRole,
    /// The format of its OUTPUT queue (coded for a decoder).
    pub output_format: FourCc,
    /// Where the input came from, in words.
    pub input: String,
    /// How long the decoder took to raise the source-change event (decoders).
    pub source_change_after: Option<Duration>,
    /// Bytes queued on the OUTPUT queue by the end.
    pub fed_bytes: u64,
    /// The drain at the end (`V4L2_DEC_CMD_STOP`; stateful decoders).
    pub drain: Option<Drain>,
    /// The media device the requests were allocated on (stateless decoders).
    pub media: Option<PathBuf>,
    /// Requests queued by the end, one per frame (stateless decoders).
    pub requests: u64,
}

/// What the drain gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Frames dequeued after the stop command, the last one included.
    pub frames: u32,
    /// Whether a buffer flagged `V4L2_BUF_FLAG_LAST` came back.
    pub last_seen: bool,
}

/// A device's capture frames, ready to be streamed: from a capture device, or from a
/// memory-to-memory device that is being fed.
#[derive(Debug)]
pub struct Source {
    device: Device,
    format: Format,
    offered: Vec<(QueueKind, Vec<FormatDesc>)>,
    /// A capture device's frame interval, as set for the check.
    interval: Option<FrameInterval>,
    feed: Option<RefCell<Feed>>,
}

/// A memory-to-memory device's feeding.
#[derive(Debug)]
struct Feed {
    feeder: Feeder,
    report: M2mReport,
    /// The drain command was sent (the input ran out, or the check ended).
    draining: bool,
    /// The last buffer came back: nothing follows.
    ended: bool,
    /// The frames a file input must give.
    wanted: u32,
    decoded: u32,
}

impl Source {
    /// Opens `path` and makes its capture frames ready: for a capture device, the format
    /// `options` asks for; for a stateful decoder or a converter, also its input fed and, for
    /// the decoder, the stream's format found.
    pub fn open(path: impl AsRef<Path>, options: &CheckOptions) -> Result<Source, Error> {
        let device = Device::open(path)?;
        if !device.info().m2m {
            let offered = capture_formats(&device)?;
            let (queue, format) = super::check::choose_format(&device, &offered, options)?;
            let interval = device.set_frame_rate(queue, options.fps)?;
            return Ok(Source {
                device,
                format,
                offered,
                interval,
                feed: None,
            });
        }
        let info = M2mInfo::of(&device)?;
        match info.role {
            M2mRole::StatefulDecoder => start_decoder(device, &info, options),
            M2mRole::Converter => start_converter(device, &info, options),
            M2mRole::StatelessDecoder => start_stateless(device, &info, options),
            M2mRole::Encoder => {
                let decoder = partner(&device, M2mRole::StatefulDecoder, &info.coded)
                    .map(|d| d.path().to_owned());
                Err(Error::Encoder {
                    path: device.path().to_owned(),
                    card: device.info().card.clone(),
                    coded: info.coded,
                    decoder,
                })
            }
        }
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The capture format the frames come in.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// A capture device's frame interval, as set for the check (`None`: a memory-to-memory
    /// device, or a driver whose frame interval cannot be set).
    pub fn interval(&self) -> Option<FrameInterval> {
        self.interval
    }

    /// The capture queues and what each offers.
    pub fn offered(&self) -> &[(QueueKind, Vec<FormatDesc>)] {
        &self.offered
    }

    /// What is fed to a memory-to-memory device, so far.
    pub fn m2m(&self) -> Option<M2mReport> {
        self.feed.as_ref().map(|f| {
            let f = f.borrow();
            M2mReport {
                fed_bytes: f.feeder.fed_bytes,
                requests: if f.feeder.requests.is_some() {
                    f.feeder.next as u64
                } else {
                    0
                },
                ..f.report.clone()
            }
        })
    }

    /// Which of the input's frames a decoded capture buffer holds (its index among the
    /// generated or parsed frames), from the timestamp the device copied from the OUTPUT
    /// buffer; `None` for a capture device, or an input fed in pieces that are not frames.
    pub fn input_frame(&self, frame: &BufferState) -> Option<usize> {
        let feed = self.feed.as_ref()?.borrow();
        let feeder = &feed.feeder;
        let sequence = sequence_of(frame.timestamp)?;
        (feeder.framed && !feeder.chunks.is_empty())
            .then(|| (sequence % feeder.chunks.len() as u64) as usize)
    }

    /// The next filled capture buffer, if one is ready; a memory-to-memory device is fed
    /// first. A decoder whose input ran out says so ([`Error::InputEnded`]).
    pub fn dequeue(&self, planes: usize) -> Result<Option<BufferState>, Error> {
        let queue = self.format.queue;
        let Some(feed) = &self.feed else {
            return self.device.dequeue(queue, planes);
        };
        let mut feed = feed.borrow_mut();
        if feed.ended {
            return Err(feed.input_ended(&self.device));
        }
        feed.feeder.pump(&self.device)?;
        if feed.feeder.exhausted() && !feed.draining {
            // The whole input is queued: a stateful decoder is drained, so that its last frame
            // comes out too (a stateless one holds nothing back: each request is one frame).
            if feed.report.role == M2mRole::StatefulDecoder {
                self.device.drain()?;
            }
            feed.draining = true;
        }
        let Some(frame) = self.device.dequeue(queue, planes)? else {
            // Every request's OUTPUT buffer is back, so its frame was dequeued before.
            if feed.draining && feed.feeder.idle() && feed.report.role == M2mRole::StatelessDecoder
            {
                feed.ended = true;
                return Err(feed.input_ended(&self.device));
            }
            return Ok(None);
        };
        if frame.flags & sys::V4L2_BUF_FLAG_LAST != 0 {
            feed.ended = true;
            if frame.planes.iter().all(|p| p.bytesused == 0) {
                return Err(feed.input_ended(&self.device));
            }
        }
        feed.decoded += 1;
        Ok(Some(frame))
    }

    /// Waits up to `timeout` for a capture buffer to be ready, feeding a memory-to-memory
    /// device as its OUTPUT buffers come back.
    pub fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let Some(feed) = &self.feed else {
            return self.device.wait_frame(timeout);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = self.device.poll(PollFlags::IN | PollFlags::OUT, left)?;
            if ready.contains(PollFlags::IN) {
                return Ok(true);
            }
            if ready.contains(PollFlags::OUT) {
                feed.borrow_mut().feeder.pump(&self.device)?;
                // vb2 says POLLOUT while any OUTPUT buffer is done or none is queued: a feeder
                // with nothing left to give would spin without this pause.
                if feed.borrow().feeder.exhausted() {
                    std::thread::sleep(left.min(Duration::from_millis(5)));
                }
            }
            if left.is_zero() {
                return Ok(false);
            }
        }
    }

    /// The end of a stateful decoder's stream: the stop command, then capture buffers are
    /// dequeued (and given back) until the one flagged last, within `timeout`. `None` for
    /// other devices. `planes` is the capture format's memory-plane count.
    pub fn drain(&self, planes: usize, timeout: Duration) -> Result<Option<Drain>, Error> {
        let Some(feed) = &self.feed else {
            return Ok(None);
        };
        if feed.borrow().report.role != M2mRole::StatefulDecoder {
            return Ok(None);
        }
        let queue = self.format.queue;
        let mut drain = Drain {
            frames: 0,
            last_seen: feed.borrow().ended,
        };
        if !drain.last_seen {
            if !feed.borrow().draining {
                self.device.drain()?;
                feed.borrow_mut().draining = true;
            }
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                let Some(frame) = self.device.dequeue(queue, planes)? else {
                    self.device
                        .wait_frame(deadline.saturating_duration_since(Instant::now()))?;
                    continue;
                };
                drain.frames += 1;
                if frame.flags & sys::V4L2_BUF_FLAG_LAST != 0 {
                    drain.last_seen = true;
                    feed.borrow_mut().ended = true;
                    break;
                }
                self.device.queue_buffer(queue, frame.index, planes)?;
            }
        }
        feed.borrow_mut().report.drain = Some(drain);
        Ok(Some(drain))
    }
}

impl Source {
    /// A memory-to-memory device whose OUTPUT queue `feeder` feeds, streaming.
    fn fed(
        device: Device,
        format: Format,
        offered: Vec<(QueueKind, Vec<FormatDesc>)>,
        feeder: Feeder,
        report: M2mReport,
        options: &CheckOptions,
    ) -> Source {
        Source {
            device,
            format,
            offered,
            interval: None,
            feed: Some(RefCell::new(Feed {
                feeder,
                report,
                draining: false,
                ended: false,
                wanted: options.frames,
                decoded: 0,
            })),
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(feed) = &self.feed {
            let queue = feed.borrow().feeder.queue;
            let _ = self.device.stream_off(queue);
            let _ = self.device.allocate(queue, 0);
        }
    }
}

impl Feed {
    fn input_ended(&self, device: &Device) -> Error {
        Error::InputEnded {
            path: device.path().to_owned(),
            input: self.report.input.clone(),
            decoded: self.decoded,
            wanted: self.wanted,
        }
    }
}

/// The capture queues and their formats.
fn capture_formats(device: &Device) -> Result<Vec<(QueueKind, Vec<FormatDesc>)>, Error> {
    device
        .info()
        .queues
        .iter()
        .map(|&q| device.formats(q).map(|f| (q, f)))
        .collect()
}

/// The timestamp of the `sequence`-th chunk queued on an OUTPUT queue: unique, never 0 (a
/// CAPTURE buffer never filled has timestamp 0, and a stateless decoder finds a reference by
/// its timestamp).
fn stamp(sequence: u64) -> Duration {
    Duration::from_micros(sequence + 1)
}

/// The chunk sequence number a timestamp from [`stamp`] stands for.
fn sequence_of(timestamp: Duration) -> Option<u64> {
    (timestamp.as_micros() as u64).checked_sub(1)
}

/// Feeds an OUTPUT queue from a list of chunks (bitstream pieces or frames), looping over
/// them or not; each chunk queued is stamped [`stamp`] of its sequence number.
#[derive(Debug)]
struct Feeder {
    queue: Queue,
    maps: Vec<Mapping>,
    free: Vec<u32>,
    chunks: Vec<Vec<u8>>,
    /// The chunks are whole frames (so a capture buffer's timestamp names its frame).
    framed: bool,
    next: usize,
    looping: bool,
    fed_bytes: u64,
    /// A stateless decoder's: each chunk goes in a request.
    requests: Option<Requests>,
}

/// A stateless decoder's requests: one per OUTPUT buffer, and each frame's header.
#[derive(Debug)]
struct Requests {
    slots: Vec<Request>,
    headers: Vec<fwht::Header>,
}

impl Feeder {
    /// Allocates and maps the OUTPUT buffers (the queue's format must be set).
    fn new(
        device: &Device,
        queue: Queue,
        chunks: Vec<Vec<u8>>,
        framed: bool,
        looping: bool,
    ) -> Result<Feeder, Error> {
        let count = device.allocate(queue, OUTPUT_BUFFERS)?;
        let maps = (0..count)
            .map(|index| device.map(queue, index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Feeder {
            queue,
            maps,
            free: (0..count).rev().collect(),
            chunks,
            framed,
            next: 0,
            looping,
            fed_bytes: 0,
            requests: None,
        })
    }

    /// Makes every chunk go in a request on `media` with its header's parameters: one request
    /// per OUTPUT buffer, reused once complete.
    fn in_requests(
        mut self,
        media: &MediaDevice,
        headers: Vec<fwht::Header>,
    ) -> Result<Feeder, Error> {
        let slots = (0..self.maps.len())
            .map(|_| media.request())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|errno| Error::Io {
                path: media.path().to_owned(),
                op: "MEDIA_IOC_REQUEST_ALLOC",
                errno,
            })?;
        self.requests = Some(Requests { slots, headers });
        Ok(self)
    }

    /// Takes back the OUTPUT buffers the device is done with (and their requests, once
    /// complete) and queues the next chunks.
    fn pump(&mut self, device: &Device) -> Result<(), Error> {
        while let Some(done) = device.dequeue(self.queue, 1)? {
            if let Some(requests) = &self.requests {
                let request = &requests.slots[done.index as usize];
                let frame = sequence_of(done.timestamp).unwrap_or_default();
                let failed = |step, errno| Error::Request {
                    path: device.path().to_owned(),
                    frame,
                    step,
                    errno,
                };
                match request.wait(REQUEST_COMPLETION) {
                    Ok(true) => {}
                    Ok(false) => return Err(failed("poll(request, POLLPRI)", Errno::TIMEDOUT)),
                    Err(errno) => return Err(failed("poll(request, POLLPRI)", errno)),
                }
                request
                    .reinit()
                    .map_err(|errno| failed("MEDIA_REQUEST_IOC_REINIT", errno))?;
            }
            self.free.push(done.index);
        }
        while !self.exhausted() {
            let Some(index) = self.free.pop() else { break };
            let sequence = self.next as u64;
            let chunk = self.next % self.chunks.len();
            self.next += 1;
            let n = self.maps[index as usize].write(&self.chunks[chunk]) as u32;
            let Some(requests) = &self.requests else {
                device
                    .queue_input(self.queue, index, n, stamp(sequence), None)
                    .map_err(|errno| device.failed("VIDIOC_QBUF", errno))?;
                self.fed_bytes += u64::from(n);
                continue;
            };
            let request = &requests.slots[index as usize];
            let failed = |step| {
                move |errno| Error::Request {
                    path: device.path().to_owned(),
                    frame: sequence,
                    step,
                    errno,
                }
            };
            // A P-frame is decoded against the frame queued before it: the CAPTURE buffer
            // that carries its timestamp.
            let reference = sequence
                .checked_sub(1)
                .map_or(0, |previous| stamp(previous).as_nanos() as u64);
            let mut params = requests.headers[chunk].params(reference);
            device
                .set_control_in_request(request.as_fd(), &mut params)
                .map_err(failed(
                    "VIDIOC_S_EXT_CTRLS (V4L2_CID_STATELESS_FWHT_PARAMS in the request)",
                ))?;
            device
                .queue_input(self.queue, index, n, stamp(sequence), Some(request.as_fd()))
                .map_err(failed("VIDIOC_QBUF (the OUTPUT buffer in the request)"))?;
            request.queue().map_err(failed("MEDIA_REQUEST_IOC_QUEUE"))?;
            self.fed_bytes += u64::from(n);
        }
        Ok(())
    }

    /// Whether the device holds none of the OUTPUT buffers.
    fn idle(&self) -> bool {
        self.free.len() == self.maps.len()
    }

    /// Whether everything was queued (never, when looping).
    fn exhausted(&self) -> bool {
        self.chunks.is_empty() || (!self.looping && self.next >= self.chunks.len())
    }
}

/// A stateful decoder, started as the kernel's interface says, up to the capture setup.
fn start_decoder(device: Device, info: &M2mInfo, options: &CheckOptions) -> Result<Source, Error> {
    let kind = device.info().queues[0];
    let output = Queue::output(kind);
    let coded = requested_coded(&device, info, options)?.unwrap_or(info.coded[0]);
    let set = device.set_format(output, coded, None)?;
    let chunk_size = set.planes.first().map_or(0, |p| p.sizeimage).max(4096) as usize;
    let (chunks, looping, input) = match &options.input {
        Some(file) => (
            read_input(file)?
                .chunks(chunk_size)
                .map(<[u8]>::to_vec)
                .collect(),
            false,
            file.display().to_string(),
        ),
        None => {
            let Some(encoder) = partner(&device, M2mRole::Encoder, &[coded]) else {
                return Err(Error::NoBitstream {
                    path: device.path().to_owned(),
                    card: device.info().card.clone(),
                    coded,
                });
            };
            let size = options.size.unwrap_or(GENERATED_SIZE);
            let (chunks, raw) = encode(
                &encoder,
                coded,
                size,
                GENERATED_FRAMES,
                options.frame_timeout,
            )?;
            let input = generated_input(&encoder, coded, &raw);
            (chunks, true, input)
        }
    };
    device.subscribe(sys::V4L2_EVENT_SOURCE_CHANGE)?;
    // Generated input comes one encoded frame per chunk.
    let framed = options.input.is_none();
    let mut feeder = Feeder::new(&device, output, chunks, framed, looping)?;
    device.stream_on(output)?;
    let started = Instant::now();
    let timeout = options.frame_timeout;
    loop {
        feeder.pump(&device)?;
        if device.next_event()? == Some(sys::V4L2_EVENT_SOURCE_CHANGE) {
            break;
        }
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            let _ = device.stream_off(output);
            return Err(Error::NoSourceChange {
                path: device.path().to_owned(),
                coded,
                waited_ms: timeout.as_millis() as u64,
                fed_bytes: feeder.fed_bytes,
                input,
            });
        }
        let ready = device.poll(PollFlags::PRI | PollFlags::OUT, left)?;
        if feeder.exhausted() && !ready.contains(PollFlags::PRI) {
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }
    let source_change_after = started.elapsed();

    // Capture setup: the decoder's format for this stream, or one a compositor takes more
    // readily among those it offers for it.
    let current = device.format(kind)?;
    let offered = capture_formats(&device)?;
    let format = match showable(&offered, current.fourcc) {
        Some(fourcc) if fourcc != current.fourcc => {
            device.set_format(kind, fourcc, Some((current.width, current.height)))?
        }
        _ => current,
    };
    let report = M2mReport {
        role: M2mRole::StatefulDecoder,
        output_format: coded,
        input,
        source_change_after: Some(source_change_after),
        fed_bytes: 0,
        drain: None,
        media: None,
        requests: 0,
    };
    Ok(Source::fed(
        device, format, offered, feeder, report, options,
    ))
}

/// The coded format `--format` asks a decoder for, which it must decode.
fn requested_coded(
    device: &Device,
    info: &M2mInfo,
    options: &CheckOptions,
) -> Result<Option<FourCc>, Error> {
    match options.format {
        Some(fourcc) if !info.coded.contains(&fourcc) => Err(Error::CodedFormatNotOffered {
            path: device.path().to_owned(),
            requested: fourcc,
            offered: info.coded.clone(),
        }),
        requested => Ok(requested),
    }
}

/// A converter fed with generated frames in its first OUTPUT format; its CAPTURE format is
/// `--format` or the first one a compositor takes readily.
fn start_converter(
    device: Device,
    info: &M2mInfo,
    options: &CheckOptions,
) -> Result<Source, Error> {
    let kind = device.info().queues[0];
    let output = Queue::output(kind);
    let Some(raw) = info.output_formats.first().map(|f| f.fourcc) else {
        return Err(Error::Io {
            path: device.path().to_owned(),
            op: "VIDIOC_ENUM_FMT(OUTPUT): no format",
            errno: rustix::io::Errno::INVAL,
        });
    };
    let size = options.size.unwrap_or(GENERATED_SIZE);
    let input_format = device.set_format(output, raw, Some(size))?;
    let offered = capture_formats(&device)?;
    let options = CheckOptions {
        format: options
            .format
            .or_else(|| showable(&offered, FourCc(0)))
            .or(Some(device.format(kind)?.fourcc)),
        size: Some((input_format.width, input_format.height)),
        ..options.clone()
    };
    let (_, format) = super::check::choose_format(&device, &offered, &options)?;
    let frames = generated_frames(&input_format, GENERATED_FRAMES);
    let feeder = Feeder::new(&device, output, frames, true, true)?;
    device.stream_on(output)?;
    let report = M2mReport {
        role: M2mRole::Converter,
        output_format: raw,
        input: format!(
            "{GENERATED_FRAMES} generated {raw} {}x{} frames (looped)",
            input_format.width, input_format.height
        ),
        source_change_after: None,
        fed_bytes: 0,
        drain: None,
        media: None,
        requests: 0,
    };
    Ok(Source::fed(
        device, format, offered, feeder, report, &options,
    ))
}

/// A stateless FWHT decoder, set up as the kernel's stateless decoder interface says: the
/// stream parsed here (generated frames through the stateful encoder of the same driver, or
/// `--input`: a stream of vicodec's FWHT frames), the coded format and size on OUTPUT, a raw
/// format that holds the stream's frames on CAPTURE, a request per OUTPUT buffer on the media
/// device; frames are queued as the check dequeues.
fn start_stateless(
    device: Device,
    info: &M2mInfo,
    options: &CheckOptions,
) -> Result<Source, Error> {
    let kind = device.info().queues[0];
    let output = Queue::output(kind);
    requested_coded(&device, info, options)?;
    if !info.coded.contains(&STATELESS_FWHT) {
        return Err(Error::StatelessDecoder {
            path: device.path().to_owned(),
            card: device.info().card.clone(),
            coded: info.coded.clone(),
            media: sysfs_media_node(device.path()),
        });
    }
    let (bytes, looping, input) = match &options.input {
        Some(file) => (read_input(file)?, false, file.display().to_string()),
        None => {
            let Some(encoder) = partner(&device, M2mRole::Encoder, &[FWHT]) else {
                return Err(Error::NoBitstream {
                    path: device.path().to_owned(),
                    card: device.info().card.clone(),
                    coded: FWHT,
                });
            };
            let size = options.size.unwrap_or(GENERATED_SIZE);
            let (chunks, raw) = encode(
                &encoder,
                FWHT,
                size,
                GENERATED_FRAMES,
                options.frame_timeout,
            )?;
            let input = generated_input(&encoder, FWHT, &raw);
            (chunks.concat(), true, input)
        }
    };
    let frames = fwht::split(&bytes).map_err(|e| Error::BadStream {
        input: input.clone(),
        offset: e.offset,
        why: e.why,
    })?;
    let first = frames[0].header;
    let size = Some(first.size());
    device.set_format(output, STATELESS_FWHT, size)?;

    // CAPTURE: a raw format that holds the stream's frames as coded (the decoder checks every
    // frame's parameters against it).
    let offered = capture_formats(&device)?;
    let all: Vec<FourCc> = offered
        .iter()
        .flat_map(|(_, f)| f.iter().map(|f| f.fourcc))
        .collect();
    let raw = first.raw_format().unwrap_or(FourCc(0));
    if !all.contains(&raw) {
        return Err(Error::FormatNotOffered {
            path: device.path().to_owned(),
            requested: raw,
            offered: all,
        });
    }
    let format = device.set_format(kind, raw, size)?;
    if format.fourcc != raw {
        return Err(Error::FormatNotOffered {
            path: device.path().to_owned(),
            requested: raw,
            offered: vec![format.fourcc],
        });
    }

    let media = MediaDevice::of(&device)?;
    let (headers, payloads): (Vec<_>, Vec<_>) =
        frames.into_iter().map(|f| (f.header, f.payload)).unzip();
    let feeder =
        Feeder::new(&device, output, payloads, true, looping)?.in_requests(&media, headers)?;
    device.stream_on(output)?;
    let report = M2mReport {
        role: M2mRole::StatelessDecoder,
        output_format: STATELESS_FWHT,
        input,
        source_change_after: None,
        fed_bytes: 0,
        drain: None,
        media: Some(media.path().to_owned()),
        requests: 0,
    };
    Ok(Source::fed(
        device, format, offered, feeder, report, options,
    ))
}

/// Generated frames through `encoder` into `coded`, in words.
fn generated_input(encoder: &Device, coded: FourCc, raw: &Format) -> String {
    format!(
        "{GENERATED_FRAMES} {coded} frames (looped) made by {} ({}) from generated {} {}x{} \
         frames",
        encoder.path().display(),
        node_name(encoder),
        raw.fourcc,
        raw.width,
        raw.height
    )
}

/// The first of [`SHOWABLE`] the capture queue offers, `current` first if it is one.
fn showable(offered: &[(QueueKind, Vec<FormatDesc>)], current: FourCc) -> Option<FourCc> {
    let all: Vec<FourCc> = offered
        .iter()
        .flat_map(|(_, f)| f.iter().map(|f| f.fourcc))
        .collect();
    if SHOWABLE.contains(&current) {
        return Some(current);
    }
    SHOWABLE.into_iter().find(|f| all.contains(f))
}

/// Reads `--input`.
fn read_input(file: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(file).map_err(|e| Error::Input {
        file: file.to_owned(),
        why: e.to_string(),
    })?;
    if bytes.is_empty() {
        return Err(Error::Input {
            file: file.to_owned(),
            why: "the file is empty".into(),
        });
    }
    Ok(bytes)
}

/// The memory-to-memory node of the same driver as `device` with `role` and one of `coded`
/// (a decoder's encoder, an encoder's decoder).
fn partner(device: &Device, role: M2mRole, coded: &[FourCc]) -> Option<Device> {
    let driver = device.info().driver.clone();
    let me = device.path().to_owned();
    Device::find(|d| {
        d.info().m2m
            && d.info().driver == driver
            && d.path() != me
            && M2mInfo::of(d)
                .is_ok_and(|i| i.role == role && i.coded.iter().any(|c| coded.contains(c)))
    })
    .1
}

/// Encodes `count` generated frames of `size` (or the nearest the encoder takes) into `coded`
/// with `encoder` (a stateful encoder; `frame_timeout` bounds the wait for each frame): one
/// chunk per frame, and the raw format they were made in.
pub fn encode(
    encoder: &Device,
    coded: FourCc,
    size: (u32, u32),
    count: u32,
    frame_timeout: Duration,
) -> Result<(Vec<Vec<u8>>, Format), Error> {
    let kind = encoder.info().queues[0];
    let output = Queue::output(kind);
    let raw_formats = encoder.formats(output)?;
    let raw = SHOWABLE
        .into_iter()
        .find(|f| raw_formats.iter().any(|r| r.fourcc == *f))
        .or(raw_formats.first().map(|f| f.fourcc))
        .unwrap_or(FourCc::new(b"NV12"));
    let input = encoder.set_format(output, raw, Some(size))?;
    encoder.set_format(kind, coded, Some(size))?;
    let mut feeder = Feeder::new(
        encoder,
        output,
        generated_frames(&input, count),
        true,
        false,
    )?;
    let count_out = encoder.allocate(kind, OUTPUT_BUFFERS)?;
    let maps = (0..count_out)
        .map(|index| encoder.map(kind, index))
        .collect::<Result<Vec<_>, _>>()?;
    for index in 0..count_out {
        encoder.queue_buffer(kind, index, 1)?;
    }
    let capture = encoder.stream(kind)?;
    let streaming = encoder.stream(output)?;
    let mut chunks = Vec::with_capacity(count as usize);
    let mut last = Instant::now();
    while chunks.len() < count as usize {
        feeder.pump(encoder)?;
        if let Some(frame) = encoder.dequeue(kind, 1)? {
            last = Instant::now();
            let used = frame.planes.first().map_or(0, |p| p.bytesused) as usize;
            if used > 0 && !frame.has_error() {
                chunks.push(maps[frame.index as usize].read(used));
            }
            encoder.queue_buffer(kind, frame.index, 1)?;
            continue;
        }
        if last.elapsed() > frame_timeout {
            return Err(Error::NoFrames {
                path: encoder.path().to_owned(),
                waited_ms: frame_timeout.as_millis() as u64,
                done: chunks.len() as u32,
                wanted: count,
            });
        }
        encoder.poll(PollFlags::IN | PollFlags::OUT, Duration::from_millis(20))?;
    }
    drop(streaming);
    drop(capture);
    drop(maps);
    drop(feeder);
    let _ = encoder.allocate(kind, 0);
    let _ = encoder.allocate(output, 0);
    Ok((chunks, input))
}

/// The node's name in sysfs (vicodec's `stateful-encoder`...), else the device's card name.
fn node_name(device: &Device) -> String {
    device
        .path()
        .file_name()
        .and_then(|n| {
            std::fs::read_to_string(Path::new("/sys/class/video4linux").join(n).join("name")).ok()
        })
        .map(|n| n.trim().to_owned())
        .unwrap_or_else(|| device.info().card.clone())
}

/// `count` frames of `format`: a diagonal gradient that moves from frame to frame, written
/// byte for byte over the whole image (so any raw layout gets a picture that changes). What a
/// converter or an encoder is fed, so what a decoder of their output should give back.
pub fn generated_frames(format: &Format, count: u32) -> Vec<Vec<u8>> {
    let plane = format.planes.first().copied().unwrap_or_default();
    let stride = plane.bytesperline.max(1) as usize;
    let size = plane.sizeimage as usize;
    (0..count)
        .map(|frame| {
            (0..size)
                .map(|i| ((i % stride) / 2 + i / stride + frame as usize * 8) as u8)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4l2::MemoryPlaneFormat;

    #[test]
    fn generated_frames_move() {
        let format = Format {
            queue: QueueKind::SinglePlanar,
            fourcc: FourCc::new(b"YUYV"),
            width: 8,
            height: 2,
            field: 1,
            planes: vec![MemoryPlaneFormat {
                bytesperline: 16,
                sizeimage: 32,
            }],
        };
        let frames = generated_frames(&format, 2);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 32);
        assert_ne!(frames[0], frames[1]);
        assert_eq!(frames[0][16], 1, "the second line starts one step brighter");
    }

    #[test]
    fn the_showable_format_is_preferred() {
        let desc = |f: &[u8; 4]| FormatDesc {
            fourcc: FourCc::new(f),
            description: String::new(),
            flags: 0,
        };
        let offered = vec![(
            QueueKind::SinglePlanar,
            vec![desc(b"YU12"), desc(b"422P"), desc(b"NV12")],
        )];
        assert_eq!(
            showable(&offered, FourCc::new(b"YU12")),
            Some(FourCc::new(b"NV12"))
        );
        assert_eq!(
            showable(&offered, FourCc::new(b"YUYV")),
            Some(FourCc::new(b"YUYV"))
        );
        assert_eq!(showable(&offered[..0], FourCc::new(b"YU12")), None);
    }
}
