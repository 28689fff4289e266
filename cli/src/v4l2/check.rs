//! The check: stream a capture device and watch its buffers' fences the way a compositor would.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::device::{BufferState, Device, DeviceInfo};
use super::format::{Format, FormatDesc, FourCc, FrameInterval, QueueKind};
use super::m2m::{M2mReport, Source};
use super::report::{self, Finding};
use super::show::ShowOutcome;
use super::Error;
use fencebridge::bridge::plan::{
    self, Acquire, BridgeCaps, CommitInput, CommitPlan, Release, SyncMode,
};
use fencebridge::bridge::producer_class::{BecameNonFencing, ProducerClass, ProducerClassifier};
use fencebridge::bridge::Attach;
use fencebridge::fence::{dmabuf, Access, FenceState, StubSignature};
use fencebridge::producer::Vgem;

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// The format to capture in (`None`: the device's current one).
    pub format: Option<FourCc>,
    /// The frame size (`None`: the device's current one).
    pub size: Option<(u32, u32)>,
    /// How many frames to stream and watch.
    pub frames: u32,
    /// The frame rate to ask a capture device for (it picks its nearest): a device keeps
    /// the rate its last client set, which may outrun a compositor.
    pub fps: u32,
    /// How many MMAP buffers to ask for.
    pub buffers: u32,
    /// How long to wait for one frame before giving up.
    pub frame_timeout: Duration,
    /// Whether to check if the device honours a fence imported onto a queued buffer (needs
    /// vgem for a fence that stays pending until signalled).
    pub import_check: bool,
    /// A decoder's input: an elementary stream in the coded `format` (`None`: one made on
    /// this machine by the decoder's encoder, from generated frames).
    pub input: Option<std::path::PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            format: None,
            size: None,
            frames: 30,
            fps: 30,
            buffers: 4,
            frame_timeout: Duration::from_secs(5),
            import_check: true,
            input: None,
        }
    }
}

/// Where a long check is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Buffers are allocated and exported; streaming starts.
    Streaming {
        /// Frames to watch.
        total: u32,
    },
    /// One more frame was dequeued and checked.
    Frame {
        /// Frames done.
        done: u32,
        /// Frames to watch.
        total: u32,
    },
    /// The imported-fence check runs (up to a few seconds).
    ImportCheck,
}

/// How many fence exports found what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FenceTally {
    /// A fence still pending.
    pub pending: u32,
    /// Real fences, all signalled.
    pub signalled: u32,
    /// The kernel's stub: no fence.
    pub no_fence: u32,
}

impl FenceTally {
    /// Counts one export.
    pub fn add(&mut self, state: FenceState) {
        match state {
            FenceState::Pending => self.pending += 1,
            FenceState::Signalled => self.signalled += 1,
            FenceState::NoFence => self.no_fence += 1,
        }
    }

    /// All exports counted.
    pub fn total(&self) -> u32 {
        self.pending + self.signalled + self.no_fence
    }

    /// Whether every export (at least one) was the stub.
    pub fn all_stub(&self) -> bool {
        self.total() > 0 && self.no_fence == self.total()
    }
}

/// One memory plane of one buffer, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlaneLayout {
    /// The plane's size in bytes.
    pub length: u32,
    /// Its mmap offset.
    pub mem_offset: u32,
    /// The exported dma-buf's inode: planes with the same inode are one dma-buf.
    pub inode: u64,
}

/// One buffer's memory planes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BufferLayout {
    /// Which buffer.
    pub index: u32,
    /// Its memory planes.
    pub planes: Vec<PlaneLayout>,
    /// How many distinct dma-bufs its planes are.
    pub distinct_dmabufs: usize,
}

/// How the stub fence is recognised on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubCalibration {
    /// Its timestamp was learnt from a buffer of this device before it was ever queued (the
    /// name "stub" also counts, up to 6.12).
    FromThisDevice,
    /// Learnt from another fresh dma-buf (dma-heap, udmabuf, DRM dumb buffer).
    FromFreshDmabuf,
    /// By name only (up to 6.12); on 7.x a stub then reads as "signalled".
    NamesOnly,
}

/// What happened to a buffer queued with a pending fence imported onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Not checked, and why.
    NotRun(String),
    /// The device filled the buffer while the fence was still pending: imported fences are
    /// ignored.
    Ignored {
        /// The buffer.
        buffer: u32,
        /// How long after QBUF it came back.
        after: Duration,
        /// Whether the export showed the imported fence on the dma-buf (proof the import
        /// took).
        fence_was_visible: bool,
    },
    /// The buffer did not come back while the fence was pending, and did after it signalled:
    /// the device waits for imported fences.
    Honoured {
        /// The buffer.
        buffer: u32,
        /// How long it stayed held while the fence was pending.
        waited: Duration,
    },
    /// Neither, and why (e.g. the device stopped delivering frames).
    Inconclusive(String),
}

/// Everything measured, before it is judged ([`report::findings`] turns it into findings).
#[derive(Debug, Clone, PartialEq)]
pub struct Observations {
    /// Buffers allocated.
    pub buffers: u32,
    /// `V4L2_BUF_CAP_*` of the queue.
    pub buffer_caps: u32,
    /// Per buffer, its memory planes.
    pub layout: Vec<BufferLayout>,
    /// How the stub is recognised.
    pub stub: StubCalibration,
    /// Exports of buffers never queued yet.
    pub fresh: FenceTally,
    /// Exports of buffers while QUEUED (the device owns them and fills them).
    pub queued: FenceTally,
    /// Of the queued buffers, how many polled readable (POLLIN) at once: what a compositor
    /// that waits by poll() on the dma-buf (smithay 0.7) would see.
    pub queued_poll_ready: u32,
    /// Exports right after DQBUF: what a compositor's commit-time snapshot sees.
    pub dequeued: FenceTally,
    /// Frames dequeued (the watched ones).
    pub frames: u32,
    /// Of those, how many the driver flagged `V4L2_BUF_FLAG_ERROR`.
    pub error_frames: u32,
    /// Frames lost between dequeued ones (gaps in `sequence`).
    pub dropped: u32,
    /// How long the watched frames took.
    pub elapsed: Duration,
    /// The imported-fence check.
    pub import: ImportOutcome,
}

/// The bridge's view: the frames as an implicit client's commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeView {
    /// The capabilities the plan was made with.
    pub caps: BridgeCaps,
    /// The producer class after the last commit.
    pub class: ProducerClass,
    /// When the classifier decided non-fencing (1-based commit number), and what it said.
    pub became_non_fencing: Option<(u32, BecameNonFencing)>,
    /// The last commit's plan.
    pub last_plan: Option<CommitPlan>,
    /// Commits planned to release when the compositor's reads are done.
    pub release_when_reads_done: u32,
    /// Commits planned to release as soon as replaced.
    pub release_when_replaced: u32,
    /// Commits planned to wait for a snapshot.
    pub acquire_wait: u32,
}

/// The full result of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The device.
    pub device: DeviceInfo,
    /// Its capture queues and what each offers.
    pub offered: Vec<(QueueKind, Vec<FormatDesc>)>,
    /// The format streamed.
    pub format: Format,
    /// The capture device's frame interval, as set for the check (`None`: a memory-to-memory
    /// device, or one whose interval cannot be set).
    pub interval: Option<FrameInterval>,
    /// The measurements.
    pub observations: Observations,
    /// The bridge's view of the frames.
    pub bridge: BridgeView,
    /// The findings, each with a severity and advice.
    pub findings: Vec<Finding>,
    /// What presenting the frames on a Wayland compositor showed (`--show`), if it ran.
    pub show: Option<ShowOutcome>,
    /// For a memory-to-memory device: what it was fed, and how it answered.
    pub m2m: Option<M2mReport>,
}

impl Report {
    /// Adds what presenting the frames on a compositor showed, and its findings.
    pub fn add_show(&mut self, show: ShowOutcome) {
        self.findings.extend(super::show::findings(&show));
        self.show = Some(show);
    }
}

/// One allocated buffer and its exported planes.
struct Exported {
    index: u32,
    planes: Vec<OwnedFd>,
}

impl Exported {
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.planes.iter().map(|p| p.as_fd()).collect()
    }
}

/// Opens `path`, streams it as `options` say and reports what its buffers' fences do.
/// `progress` is told about long steps (for a display on stderr).
pub fn check(
    path: impl AsRef<std::path::Path>,
    options: &CheckOptions,
    progress: impl FnMut(Progress),
) -> Result<Report, Error> {
    check_source(&Source::open(path, options)?, options, progress)
}

/// Streams `source`'s capture frames as `options` say and reports what their buffers' fences
/// do: the same checks for a capture device's frames and a memory-to-memory device's.
pub fn check_source(
    source: &Source,
    options: &CheckOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Report, Error> {
    let device = source.device();
    let offered = source.offered().to_vec();
    let format = source.format().clone();
    let queue = format.queue;
    let planes = format.planes.len();

    let buffer_caps = device.buffer_caps(queue)?;
    let count = device.allocate(queue, options.buffers.max(2))?;
    let mut buffers = Vec::with_capacity(count as usize);
    let mut layout = Vec::with_capacity(count as usize);
    for index in 0..count {
        let state = device.query(queue, index, planes)?;
        let mut fds = Vec::with_capacity(state.planes.len());
        let mut plane_layout = Vec::with_capacity(state.planes.len());
        for (plane, p) in state.planes.iter().enumerate() {
            let fd = device.export(queue, index, plane as u32)?;
            let st = rustix::fs::fstat(&fd).map_err(|errno| Error::Io {
                path: device.path().to_owned(),
                op: "fstat(dma-buf)",
                errno,
            })?;
            plane_layout.push(PlaneLayout {
                length: p.length,
                mem_offset: p.mem_offset,
                inode: st.st_ino,
            });
            fds.push(fd);
        }
        let exported = Exported { index, planes: fds };
        let distinct_dmabufs = dmabuf::unique_dmabufs(&exported.fds())
            .map_err(fence_error(device, "fstat(dma-buf)"))?
            .len();
        layout.push(BufferLayout {
            index,
            planes: plane_layout,
            distinct_dmabufs,
        });
        buffers.push(exported);
    }

    // A buffer that was never queued has never held a fence: the best calibration there is.
    let (stub, calibration) = match buffers
        .first()
        .and_then(|b| b.planes.first())
        .map(|fd| StubSignature::from_fresh_dmabuf(fd.as_fd()))
    {
        Some(Ok(stub)) if stub.timestamp_ns().is_some() => (stub, StubCalibration::FromThisDevice),
        _ => {
            let stub = StubSignature::calibrate();
            let how = if stub.timestamp_ns().is_some() {
                StubCalibration::FromFreshDmabuf
            } else {
                StubCalibration::NamesOnly
            };
            (stub, how)
        }
    };
    let snapshot = |b: &Exported, access: Access| -> Result<FenceState, Error> {
        dmabuf::export(&b.fds(), access, &stub)
            .map(|s| s.state)
            .map_err(fence_error(device, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE"))
    };

    let mut obs = Observations {
        buffers: count,
        buffer_caps,
        layout,
        stub: calibration,
        fresh: FenceTally::default(),
        queued: FenceTally::default(),
        queued_poll_ready: 0,
        dequeued: FenceTally::default(),
        frames: 0,
        error_frames: 0,
        dropped: 0,
        elapsed: Duration::ZERO,
        import: ImportOutcome::NotRun("not asked for".into()),
    };
    let watch_queued = |b: &Exported, obs: &mut Observations| -> Result<(), Error> {
        obs.queued.add(snapshot(b, Access::Read)?);
        if b.planes.iter().all(|fd| polls_ready(fd.as_fd())) {
            obs.queued_poll_ready += 1;
        }
        Ok(())
    };

    for b in &buffers {
        obs.fresh.add(snapshot(b, Access::Read)?);
    }
    for b in &buffers {
        device.queue_buffer(queue, b.index, planes)?;
        watch_queued(b, &mut obs)?;
    }

    let caps = BridgeCaps::from(&fencebridge::caps::Capabilities::probe());
    let mut classifier = ProducerClassifier::new();
    let mut bridge = BridgeView {
        caps,
        class: ProducerClass::Unknown,
        became_non_fencing: None,
        last_plan: None,
        release_when_reads_done: 0,
        release_when_replaced: 0,
        acquire_wait: 0,
    };

    progress(Progress::Streaming {
        total: options.frames,
    });
    let streaming = device.stream(queue)?;
    let started = Instant::now();
    let mut last_sequence: Option<u32> = None;
    while obs.frames < options.frames {
        let frame = next_frame(source, planes, options, obs.frames)?;
        let b = &buffers[frame.index as usize];
        obs.frames += 1;
        if frame.has_error() {
            obs.error_frames += 1;
        }
        if let Some(last) = last_sequence {
            obs.dropped += frame.sequence.saturating_sub(last).saturating_sub(1);
        }
        last_sequence = Some(frame.sequence);

        // The commit of this frame, as a compositor would see it.
        let state = snapshot(b, Access::Read)?;
        obs.dequeued.add(state);
        if let Some(event) = classifier.observe(state) {
            bridge.became_non_fencing = Some((obs.frames, event));
        }
        let plan = plan::plan_commit(&CommitInput {
            buffer: Attach::dmabuf(obs.layout[frame.index as usize].distinct_dmabufs),
            sync: SyncMode::Implicit,
            snapshot: Some(state),
            acquire: None,
            producer: classifier.class(),
            caps,
        });
        match plan.release {
            Release::WhenReadsDone => bridge.release_when_reads_done += 1,
            Release::WhenReplaced => bridge.release_when_replaced += 1,
            _ => {}
        }
        if plan.acquire == Acquire::WaitSnapshot {
            bridge.acquire_wait += 1;
        }
        bridge.last_plan = Some(plan);

        device.queue_buffer(queue, b.index, planes)?;
        watch_queued(b, &mut obs)?;
        progress(Progress::Frame {
            done: obs.frames,
            total: options.frames,
        });
    }
    obs.elapsed = started.elapsed();
    bridge.class = classifier.class();

    if options.import_check {
        progress(Progress::ImportCheck);
        obs.import = match import_check(source, planes, &buffers, &stub, options, &obs) {
            Err(Error::InputEnded { .. }) => ImportOutcome::NotRun(
                "the decoder's input ended before a buffer could be held".into(),
            ),
            outcome => outcome?,
        };
    }
    source.drain(planes, options.frame_timeout)?;
    drop(streaming);
    drop(buffers);
    let _ = device.allocate(queue, 0);

    let findings = report::findings(&format, &obs, &bridge);
    Ok(Report {
        device: device.info().clone(),
        offered,
        format,
        interval: source.interval(),
        observations: obs,
        bridge,
        findings,
        show: None,
        m2m: source.m2m(),
    })
}

/// The queue and format to stream: the requested fourcc on the first queue offering it, or
/// the current format of the first queue; then the size.
pub(super) fn choose_format(
    device: &Device,
    offered: &[(QueueKind, Vec<FormatDesc>)],
    options: &CheckOptions,
) -> Result<(QueueKind, Format), Error> {
    let (queue, fourcc) = match options.format {
        Some(fourcc) => {
            let queue = offered
                .iter()
                .find(|(_, formats)| formats.iter().any(|f| f.fourcc == fourcc))
                .map(|(q, _)| *q);
            match queue {
                Some(queue) => (queue, fourcc),
                None => {
                    let mut all: Vec<FourCc> = Vec::new();
                    for f in offered.iter().flat_map(|(_, f)| f) {
                        if !all.contains(&f.fourcc) {
                            all.push(f.fourcc);
                        }
                    }
                    return Err(Error::FormatNotOffered {
                        path: device.path().to_owned(),
                        requested: fourcc,
                        offered: all,
                    });
                }
            }
        }
        None => {
            let queue = offered[0].0;
            (queue, device.format(queue)?.fourcc)
        }
    };
    if options.format.is_none() && options.size.is_none() {
        return Ok((queue, device.format(queue)?));
    }
    let format = device.set_format(queue, fourcc, options.size)?;
    if format.fourcc != fourcc {
        // The driver listed it but would not set it (another input, a locked standard...).
        return Err(Error::FormatNotOffered {
            path: device.path().to_owned(),
            requested: fourcc,
            offered: vec![format.fourcc],
        });
    }
    if let Some(requested) = options.size {
        let chosen = (format.width, format.height);
        if chosen != requested {
            let sizes: Vec<String> = device
                .frame_sizes(fourcc)
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(Error::SizeNotOffered {
                path: device.path().to_owned(),
                fourcc,
                requested,
                chosen,
                sizes: sizes.join(", "),
            });
        }
    }
    Ok((queue, format))
}

/// Waits for and dequeues the next filled buffer.
fn next_frame(
    source: &Source,
    planes: usize,
    options: &CheckOptions,
    done: u32,
) -> Result<BufferState, Error> {
    let deadline = Instant::now() + options.frame_timeout;
    loop {
        if let Some(frame) = source.dequeue(planes)? {
            return Ok(frame);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::NoFrames {
                path: source.device().path().to_owned(),
                waited_ms: options.frame_timeout.as_millis() as u64,
                done,
                wanted: options.frames,
            });
        }
        // Ready or timed out: the next turn dequeues or gives up.
        source.wait(left)?;
    }
}

/// Holds one dequeued buffer, imports a pending (vgem) read fence onto it — what a compositor
/// still reading the buffer leaves there — queues it, and watches whether the device fills it
/// before the fence signals.
fn import_check(
    source: &Source,
    planes: usize,
    buffers: &[Exported],
    stub: &StubSignature,
    options: &CheckOptions,
    obs: &Observations,
) -> Result<ImportOutcome, Error> {
    let device = source.device();
    let queue = source.format().queue;
    let vgem = match Vgem::open() {
        Ok(vgem) => vgem,
        Err(e) => {
            return Ok(ImportOutcome::NotRun(format!(
                "no fence that stays pending until signalled is available here ({e})"
            )))
        }
    };
    let vgem_buffer = vgem
        .create_buffer(16, 16)
        .map_err(fence_error(device, "vgem buffer"))?;
    let vgem_fence = vgem_buffer
        .attach_fence(true)
        .map_err(fence_error(device, "vgem fence"))?;
    let fence = dmabuf::export(&[vgem_buffer.dmabuf()], Access::Read, stub)
        .map_err(fence_error(device, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE"))?
        .fence;
    let Some(fence) = fence else {
        let _ = vgem_fence.signal();
        return Ok(ImportOutcome::Inconclusive(
            "the vgem fence was not pending when exported".into(),
        ));
    };

    // Long enough for the held buffer to come round the queue a few times; well inside vgem's
    // 10 s self-signal.
    let per_frame = obs
        .elapsed
        .checked_div(obs.frames.max(1))
        .unwrap_or_default();
    let window = (per_frame * (buffers.len() as u32 + 2) * 3)
        .clamp(Duration::from_millis(1500), Duration::from_secs(6));

    let held = next_frame(source, planes, options, obs.frames)?;
    let b = &buffers[held.index as usize];
    if let Err(e) = dmabuf::import(&b.fds(), &fence, Access::Read) {
        let _ = vgem_fence.signal();
        device.queue_buffer(queue, b.index, planes)?;
        return Ok(ImportOutcome::NotRun(format!(
            "the kernel refused the import ({e})"
        )));
    }
    // A writer must wait for readers: the write-access export now shows the fence.
    let fence_was_visible = dmabuf::export(&b.fds(), Access::Write, stub)
        .map(|s| s.state == FenceState::Pending)
        .unwrap_or(false);
    device.queue_buffer(queue, b.index, planes)?;
    let queued_at = Instant::now();

    let mut signal = Some(vgem_fence);
    let outcome = loop {
        let left = window.saturating_sub(queued_at.elapsed());
        if left.is_zero() {
            break None;
        }
        if !source.wait(left.min(Duration::from_millis(100)))? {
            continue;
        }
        let Some(frame) = source.dequeue(planes)? else {
            continue;
        };
        if frame.index == b.index {
            let after = queued_at.elapsed();
            let pending = !fence
                .is_signalled()
                .map_err(fence_error(device, "poll(sync_file)"))?;
            break Some(if pending {
                ImportOutcome::Ignored {
                    buffer: b.index,
                    after,
                    fence_was_visible,
                }
            } else {
                ImportOutcome::Inconclusive(format!(
                    "buffer {} came back after {} ms, but the fence had signalled by itself",
                    b.index,
                    after.as_millis()
                ))
            });
        }
        device.queue_buffer(queue, frame.index, planes)?;
    };
    if let Some(outcome) = outcome {
        if let Some(f) = signal.take() {
            let _ = f.signal();
        }
        return Ok(outcome);
    }

    // Held for the whole window: signal, and the buffer must now come back.
    let waited = queued_at.elapsed();
    if let Some(f) = signal.take() {
        f.signal()
            .map_err(fence_error(device, "vgem fence signal"))?;
    }
    let deadline = Instant::now() + options.frame_timeout;
    while Instant::now() < deadline {
        if !source.wait(Duration::from_millis(100))? {
            continue;
        }
        if let Some(frame) = source.dequeue(planes)? {
            if frame.index == b.index {
                return Ok(ImportOutcome::Honoured {
                    buffer: b.index,
                    waited,
                });
            }
            device.queue_buffer(queue, frame.index, planes)?;
        }
    }
    Ok(ImportOutcome::Inconclusive(format!(
        "buffer {} did not come back in {} ms with the fence pending, nor after it signalled",
        b.index,
        waited.as_millis()
    )))
}

/// Whether a dma-buf polls readable (POLLIN) right now: a reader would not wait.
fn polls_ready(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

fn fence_error<'a>(
    device: &'a Device,
    op: &'static str,
) -> impl FnOnce(fencebridge::Error) -> Error + 'a {
    move |source| Error::Fence {
        path: device.path().to_owned(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_each_state() {
        let mut t = FenceTally::default();
        assert!(!t.all_stub());
        t.add(FenceState::NoFence);
        t.add(FenceState::NoFence);
        assert!(t.all_stub());
        t.add(FenceState::Signalled);
        assert!(!t.all_stub());
        assert_eq!(t.total(), 3);
    }
}
