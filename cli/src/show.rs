//! `fencebridge v4l2 --show`: presents a capture device's (or a decoder's) frames on a Wayland
//! compositor the way a video player does, and watches every buffer the compositor gives back.
//!
//! Each V4L2 buffer's planes are exported once (`VIDIOC_EXPBUF`) and wrapped in one
//! linux-dmabuf `wl_buffer`. Then: DQBUF → attach, damage, commit (with linux-drm-syncobj-v1,
//! where the compositor offers it and a timeline device exists: an acquire point signalled from
//! the CPU, since V4L2 does not fence, and a release point) → when the compositor gives the
//! buffer back (`wl_buffer.release`, or the release point signalling), export the dma-bufs'
//! fences for a write — every fence, readers included — and only then QBUF. A pending fence
//! there is an early release: the compositor handed back a buffer it was still reading, which
//! the device would overwrite. The judging is the checker's (`fencebridge_cli::v4l2::show`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use fencebridge::fence::{dmabuf, Access};
use fencebridge_cli::v4l2::{self, QueueKind, ShowOutcome, Source};
use wayland_client::protocol::wl_buffer::WlBuffer;

use fencebridge_cli::wlclient::{Client, Syncobj, WlError};

/// `DRM_FORMAT_MOD_LINEAR`.
const MOD_LINEAR: u64 = 0;
/// `DRM_FORMAT_MOD_INVALID`: the buffer's layout is implied (a linear buffer passes).
const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;
/// How long the compositor may take to give the buffers back once the surface lets go of them.
const END_GRACE: Duration = Duration::from_secs(2);

/// How to present.
pub struct ShowOptions {
    /// Frames to present.
    pub frames: u32,
    /// MMAP buffers to allocate.
    pub buffers: u32,
    /// Use linux-drm-syncobj-v1 where offered.
    pub syncobj: bool,
    /// How long the device may go without delivering a frame.
    pub frame_timeout: Duration,
}

/// Why presenting failed.
#[derive(Debug)]
pub enum ShowError {
    /// The compositor side.
    Wayland(WlError),
    /// The device side.
    Device(v4l2::Error),
    /// A fence export at release time.
    Fence(fencebridge::Error),
}

impl ShowError {
    /// A short tag for JSON errors.
    pub fn kind(&self) -> &str {
        match self {
            ShowError::Wayland(e) => e.kind,
            ShowError::Device(e) => e.kind(),
            ShowError::Fence(_) => "fence",
        }
    }
}

impl std::fmt::Display for ShowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShowError::Wayland(e) => write!(f, "--show: {e}"),
            ShowError::Device(e) => write!(f, "--show: {e}"),
            ShowError::Fence(e) => write!(f, "--show: exporting a released buffer's fences: {e}"),
        }
    }
}

impl From<WlError> for ShowError {
    fn from(e: WlError) -> Self {
        ShowError::Wayland(e)
    }
}

impl From<v4l2::Error> for ShowError {
    fn from(e: v4l2::Error) -> Self {
        ShowError::Device(e)
    }
}

/// One V4L2 buffer: its exported planes and its wl_buffer.
struct Slot {
    planes: Vec<OwnedFd>,
    wl: WlBuffer,
    /// With the compositor: the frame it carries and its release point (syncobj).
    held: Option<(u32, Option<u64>)>,
    /// The last point used on its timeline (syncobj).
    last_point: u64,
}

/// Connects to the compositor (`$WAYLAND_DISPLAY`); done first, so that a missing compositor is
/// said before the device is streamed.
pub fn connect() -> Result<Client<()>, ShowError> {
    Ok(Client::connect()?)
}

/// Presents `options.frames` frames of `source` (a device opened as the check opened it) on
/// `client`'s compositor. `progress` gets (presented, total) after each frame.
pub fn show(
    mut client: Client<()>,
    source: &Source,
    options: &ShowOptions,
    mut progress: impl FnMut(u32, u32),
) -> Result<ShowOutcome, ShowError> {
    let format = source.format();
    let device = source.device();
    let path = device.path();
    let (drm, colour_planes) = match (format.drm_fourcc(), format.colour_planes()) {
        (Some(drm), Some(planes)) => (drm, planes),
        _ => {
            return Err(WlError::new(
                "format-not-shown",
                format!(
                    "{} has no linux-dmabuf equivalent known to this checker; choose one with \
                     --format (YUYV, NV12, NM12, XR24...)",
                    format.fourcc
                ),
            )
            .into())
        }
    };
    let offered = &client.state.dmabuf_formats;
    if !offered.is_empty()
        && !offered
            .iter()
            .any(|&(f, m)| f == drm.0 && (m == MOD_LINEAR || m == MOD_INVALID))
    {
        let mut names: Vec<String> = offered
            .iter()
            .map(|&(f, _)| v4l2::FourCc(f).to_string())
            .collect();
        names.dedup();
        return Err(WlError::new(
            "format-not-shown",
            format!(
                "the compositor takes no linear {drm} dma-buf (it offers {}); choose another \
                 --format",
                names.join(" ")
            ),
        )
        .into());
    }

    let queue = format.queue;
    let set = format;
    let memory_planes = set.planes.len();
    let count = device.allocate(queue, options.buffers.max(2))?;
    let mut slots = Vec::with_capacity(count as usize);
    for index in 0..count {
        let state = device.query(queue, index, memory_planes)?;
        let lengths: Vec<u32> = state.planes.iter().map(|p| p.length).collect();
        if let Some((plane, needs, holds)) = set.plane_past_its_buffer(&lengths) {
            return Err(WlError::new(
                "layout-past-the-buffer",
                format!(
                    "{} {}x{} at {} bytes a line: colour plane {plane} needs {needs} bytes of \
                     each buffer, which holds {holds}; the driver's format and its buffers \
                     disagree (choose the format with --format)",
                    set.fourcc, set.width, set.height, set.planes[0].bytesperline
                ),
            )
            .into());
        }
        let planes = (0..state.planes.len())
            .map(|plane| device.export(queue, index, plane as u32))
            .collect::<Result<Vec<_>, _>>()?;
        let layout: Vec<(BorrowedFd<'_>, u32, u32)> = colour_planes
            .iter()
            .map(|p| (planes[p.memory_plane].as_fd(), p.offset, p.stride))
            .collect();
        let wl = client.dmabuf_buffer(&layout, (set.width, set.height), drm.0, index as usize);
        slots.push(Slot {
            planes,
            wl,
            held: None,
            last_point: 0,
        });
    }
    client.check_buffers()?;
    let window = client.window(&format!("fencebridge v4l2 {}", path.display()))?;

    let (sync, syncobj_note) = if !options.syncobj {
        (None, Some("--no-syncobj".to_owned()))
    } else {
        match Syncobj::new(&client, &window.surface, slots.len()) {
            Ok(sync) => (Some(sync), None),
            Err(e) if e.kind == "missing-global" => {
                (None, Some("the compositor does not offer it".to_owned()))
            }
            Err(e) if e.kind == "no-device" => (None, Some(e.message)),
            Err(e) => return Err(e.into()),
        }
    };

    let mut out = ShowOutcome {
        compositor: std::env::var("WAYLAND_DISPLAY").unwrap_or_else(|_| "wayland-0".into()),
        syncobj: sync.is_some(),
        syncobj_note,
        ..ShowOutcome::default()
    };
    for index in 0..count {
        device.queue_buffer(queue, index, memory_planes)?;
    }
    let streaming = device.stream(queue)?;
    let mut player = Player {
        client: &mut client,
        source,
        queue,
        memory_planes,
        slots: &mut slots,
        sync: sync.as_ref(),
        out: &mut out,
    };

    // A capture device has a clock: its frames come at its rate. A decoder or converter gives
    // them as fast as it can, so they are presented as a player does, at the compositor's
    // pace: the next one when the last one's frame callback is done.
    let paced = source.m2m().is_some();
    let started = Instant::now();
    let mut last_frame = Instant::now();
    let mut awaiting_callback = false;
    while player.out.presented < options.frames {
        player.take_back()?;
        while player.out.presented < options.frames {
            let previous = player.out.presented.checked_sub(1);
            awaiting_callback =
                paced && previous.is_some_and(|f| !player.client.state.frame_done(f));
            if awaiting_callback {
                break;
            }
            let Some(frame) = source.dequeue(memory_planes)? else {
                break;
            };
            last_frame = Instant::now();
            if frame.has_error() {
                // A player drops corrupt frames.
                device.queue_buffer(queue, frame.index, memory_planes)?;
                continue;
            }
            player.present(&window.surface, frame.index as usize)?;
            progress(player.out.presented, options.frames);
        }
        if last_frame.elapsed() > options.frame_timeout && awaiting_callback {
            return Err(WlError::new(
                "no-frame-callback",
                format!(
                    "the compositor sent no frame callback for {} ms after frame {}: a \
                     decoder's frames are presented at the compositor's pace, and it gave none",
                    options.frame_timeout.as_millis(),
                    player.out.presented
                ),
            )
            .into());
        }
        if last_frame.elapsed() > options.frame_timeout {
            let held = player.slots.iter().filter(|s| s.held.is_some()).count();
            return Err(WlError::new(
                "no-frames",
                format!(
                    "{} delivered no frame for {} ms after {} of {} frames; {held} of {count} \
                     buffers were with the compositor (one that never gives buffers back \
                     starves the device)",
                    path.display(),
                    options.frame_timeout.as_millis(),
                    player.out.presented,
                    options.frames
                ),
            )
            .into());
        }
        player
            .client
            .dispatch_or_ready(Duration::from_millis(50), device.as_fd())?;
        player.watch_reads()?;
    }
    player.out.elapsed = started.elapsed();

    // The end: the surface lets go of its buffer; every buffer should come back.
    window.surface.attach(None, 0, 0);
    window.surface.commit();
    let end = Instant::now() + END_GRACE;
    while player.slots.iter().any(|s| s.held.is_some()) && Instant::now() < end {
        player.client.dispatch_for(Duration::from_millis(10))?;
        player.take_back()?;
    }
    player.out.held_at_end = player.slots.iter().filter(|s| s.held.is_some()).count() as u32;
    player.out.shown = player.client.state.frames_done.len() as u32;
    drop(streaming);
    drop(window);
    for slot in slots {
        slot.wl.destroy();
    }
    let _ = device.allocate(queue, 0);
    Ok(out)
}

/// The streaming state.
struct Player<'a> {
    client: &'a mut Client<()>,
    source: &'a Source,
    queue: QueueKind,
    memory_planes: usize,
    slots: &'a mut [Slot],
    sync: Option<&'a Syncobj>,
    out: &'a mut ShowOutcome,
}

impl Player<'_> {
    /// Commits buffer `index`, just dequeued.
    fn present(
        &mut self,
        surface: &wayland_client::protocol::wl_surface::WlSurface,
        index: usize,
    ) -> Result<(), ShowError> {
        let frame = self.out.presented;
        let slot = &mut self.slots[index];
        let release = match self.sync {
            Some(sync) => {
                let (acquire, release) = (slot.last_point + 1, slot.last_point + 2);
                slot.last_point = release;
                // The frame is complete at DQBUF: nothing to wait for but the protocol's point.
                sync.signal(index, acquire)?;
                sync.set_points(index, acquire, release);
                Some(release)
            }
            None => None,
        };
        surface.attach(Some(&slot.wl), 0, 0);
        surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        self.client.frame(surface, frame);
        surface.commit();
        slot.held = Some((frame, release));
        self.out.presented += 1;
        self.client.flush()?;
        Ok(())
    }

    /// Re-queues every buffer the compositor has given back, checking its fences first.
    fn take_back(&mut self) -> Result<(), ShowError> {
        let events: Vec<usize> = self.client.state.released.drain(..).collect();
        let mut due = Vec::new();
        for index in events {
            match self.slots.get(index).and_then(|s| s.held) {
                Some((_, None)) => due.push(index),
                Some((_, Some(point))) if !self.released_point(index, point)? => {
                    self.out.release_events_before_point += 1;
                }
                // The release point has signalled (taken back below), or the buffer was
                // taken back already.
                _ => {}
            }
        }
        for index in 0..self.slots.len() {
            if let Some((_, Some(point))) = self.slots[index].held {
                if self.released_point(index, point)? {
                    due.push(index);
                }
            }
        }
        for index in due {
            self.give_back(index)?;
        }
        Ok(())
    }

    fn released_point(&self, index: usize, point: u64) -> Result<bool, ShowError> {
        match self.sync {
            Some(sync) => Ok(sync.signalled(index, point)?),
            None => Ok(false),
        }
    }

    /// Counts the buffers the compositor holds that have a fence pending on them: its reads,
    /// if it publishes them (without any, an early release could not be seen).
    fn watch_reads(&mut self) -> Result<(), ShowError> {
        for slot in self.slots.iter().filter(|s| s.held.is_some()) {
            if fence_pending(&slot.planes)? {
                self.out.reads_seen += 1;
            }
        }
        Ok(())
    }

    /// The compositor gave buffer `index` back: any fence still pending on its dma-bufs is an
    /// early release. Then it goes back to the device.
    fn give_back(&mut self, index: usize) -> Result<(), ShowError> {
        let slot = &mut self.slots[index];
        let Some((frame, _)) = slot.held.take() else {
            return Ok(());
        };
        let pending = fence_pending(&slot.planes)?;
        self.out.releases += 1;
        if pending {
            self.out.early_releases += 1;
            self.out.first_early.get_or_insert((index as u32, frame));
        }
        self.source
            .device()
            .queue_buffer(self.queue, index as u32, self.memory_planes)?;
        Ok(())
    }
}

/// Whether any fence, readers' included, is pending on the buffer's dma-bufs: what a writer
/// would have to wait for (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` for a write, once per dma-buf).
fn fence_pending(planes: &[OwnedFd]) -> Result<bool, ShowError> {
    let fds: Vec<BorrowedFd<'_>> = planes.iter().map(|p| p.as_fd()).collect();
    for fd in dmabuf::unique_dmabufs(&fds).map_err(ShowError::Fence)? {
        let fence = dmabuf::export_one(fd, Access::Write).map_err(ShowError::Fence)?;
        if !fence.is_signalled().map_err(ShowError::Fence)? {
            return Ok(true);
        }
    }
    Ok(false)
}
