//! Reading the output back: zwlr_screencopy_manager_v1 into a wl_shm buffer — what the
//! compositor last rendered, to judge by pixels rather than by its logs — or, as a screencast
//! consumer does, into a dma-buf (version 3's `linux_dmabuf` offer) that the compositor may
//! still be writing when it says `ready`: the consumer waits for the buffer's fences
//! (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`, read access) before it reads.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use fencebridge::fence::{dmabuf, Access};
use fencebridge::producer::Vgem;

use wayland_client::protocol::{wl_buffer::WlBuffer, wl_output::WlOutput, wl_shm, wl_shm_pool};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle, WEnum};
use wayland_protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1::{self, ZwlrScreencopyFrameV1},
    zwlr_screencopy_manager_v1::ZwlrScreencopyManagerV1,
};

use crate::pixels::{Buffer, XRGB8888};
use crate::wlclient::{Client, State, WlError, ANSWER_TIMEOUT};

/// What the compositor said about the capture under way.
#[derive(Debug, Default)]
pub struct Screencopy {
    /// The wl_shm buffer it wants: format, width, height, stride.
    buffer: Option<(WEnum<wl_shm::Format>, u32, u32, u32)>,
    /// The dma-buf it accepts (version 3): DRM format, width, height.
    dmabuf: Option<(u32, u32, u32)>,
    /// All buffer types announced (version 3).
    buffer_done: bool,
    ready: bool,
    failed: bool,
    /// wp_presentation's clock and feedback (`fbclient shm`).
    pub presentation: crate::presentation::Presentation,
}

/// A captured output: XRGB pixels, row after row.
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` pixels, 0xXXRRGGBB.
    pub pixels: Vec<u32>,
}

/// The globals a capture needs.
pub struct Capturer {
    manager: ZwlrScreencopyManagerV1,
    output: WlOutput,
    shm: wl_shm::WlShm,
}

/// wl_buffer index of the capture buffer (the vgem buffers count from 0).
const CAPTURE_BUFFER: usize = usize::MAX;

/// What a dma-buf capture buffer holds before the compositor writes it: black, which no test
/// client draws and the compositor's background is not.
const UNWRITTEN: u32 = 0;

/// A capture into a dma-buf, and how the consumer's wait for it went.
pub struct DmabufCapture {
    /// The pixels read after the wait.
    pub image: Image,
    /// Whether a fence was still pending on the buffer when `ready` came.
    pub pending_at_ready: bool,
    /// How long the consumer waited for the buffer's fences.
    pub wait: Duration,
}

/// A screencast consumer's capture buffers: vgem dma-bufs shared through linux-dmabuf, used in
/// turn, made again when the output's size changes.
pub struct CaptureBuffers {
    vgem: Vgem,
    buffers: Vec<Buffer>,
    next: usize,
}

impl CaptureBuffers {
    /// How many buffers a consumer keeps in turn (one read while the next is written).
    const COUNT: usize = 2;

    pub fn new() -> Result<CaptureBuffers, WlError> {
        let vgem = Vgem::open().map_err(|e| {
            WlError::new(
                "no-device",
                format!("no vgem device for the capture buffers ({e})"),
            )
        })?;
        Ok(CaptureBuffers {
            vgem,
            buffers: Vec::new(),
            next: 0,
        })
    }

    /// The next buffer of `size`.
    fn take<X>(&mut self, client: &Client<X>, size: (u32, u32)) -> Result<&mut Buffer, WlError> {
        if self.buffers.first().map_or(true, |b| b.size() != size) {
            self.buffers = (0..Self::COUNT)
                .map(|i| Buffer::new(client, &self.vgem, size, CAPTURE_BUFFER - 1 - i))
                .collect::<Result<_, _>>()?;
        }
        self.next = (self.next + 1) % self.buffers.len();
        Ok(&mut self.buffers[self.next])
    }
}

impl Capturer {
    /// Binds the screencopy manager (up to v3), the first wl_output and wl_shm.
    pub fn new(client: &Client<Screencopy>) -> Result<Capturer, WlError> {
        let missing = |name: &str| {
            WlError::new(
                "missing-global",
                format!("the compositor lacks {name}: the output cannot be read back"),
            )
        };
        let manager = client
            .globals
            .bind(&client.qh, 1..=3, Ours)
            .map_err(|_| missing("zwlr_screencopy_manager_v1"))?;
        let output = client
            .globals
            .bind(&client.qh, 1..=4, ())
            .map_err(|_| missing("wl_output"))?;
        let shm = client
            .globals
            .bind(&client.qh, 1..=1, ())
            .map_err(|_| missing("wl_shm"))?;
        Ok(Capturer {
            manager,
            output,
            shm,
        })
    }

    /// Asks for a capture of the whole output and waits for the buffer types it offers.
    fn announce(&self, client: &mut Client<Screencopy>) -> Result<ZwlrScreencopyFrameV1, WlError> {
        // A fresh capture's state; what other protocols said stays.
        let presentation = std::mem::take(&mut client.state.ext.presentation);
        client.state.ext = Screencopy {
            presentation,
            ..Screencopy::default()
        };
        let frame = self
            .manager
            .capture_output(0, &self.output, &client.qh, Ours);
        let v3 = self.manager.version() >= 3;
        let announced = client.dispatch_until(ANSWER_TIMEOUT, |s| {
            let c = &s.ext;
            c.failed || c.buffer_done || (!v3 && c.buffer.is_some())
        })?;
        if !announced {
            frame.destroy();
            return Err(timeout("buffer announcement"));
        }
        Ok(frame)
    }

    /// Waits for `ready` (or `failed`) to a copy asked for on `frame`; destroys the frame.
    fn copied(
        client: &mut Client<Screencopy>,
        frame: ZwlrScreencopyFrameV1,
    ) -> Result<(), WlError> {
        let answered = client.dispatch_until(ANSWER_TIMEOUT, |s| s.ext.ready || s.ext.failed);
        frame.destroy();
        if !answered? {
            return Err(timeout("ready event"));
        }
        if client.state.ext.failed {
            return Err(WlError::new(
                "capture-failed",
                "screencopy answered `failed`",
            ));
        }
        Ok(())
    }

    /// Captures the output as the compositor last rendered it.
    pub fn capture(&self, client: &mut Client<Screencopy>) -> Result<Image, WlError> {
        self.request(client)?.finish(client)
    }

    /// Asks for a capture into shared memory and returns as soon as the copy is asked for (the
    /// compositor copies the frame it is drawing, or the last one); [`PendingCapture::finish`]
    /// waits for it. One at a time.
    pub fn request(&self, client: &mut Client<Screencopy>) -> Result<PendingCapture, WlError> {
        let frame = self.announce(client)?;
        let Some((format, width, height, stride)) = client.state.ext.buffer.take() else {
            frame.destroy();
            return Err(WlError::new(
                "capture-failed",
                "screencopy failed before offering a buffer",
            ));
        };
        let format = match format {
            WEnum::Value(f @ (wl_shm::Format::Xrgb8888 | wl_shm::Format::Argb8888)) => f,
            other => {
                frame.destroy();
                return Err(WlError::new(
                    "capture-failed",
                    format!("screencopy offers {other:?}, not xrgb8888/argb8888"),
                ));
            }
        };
        if stride < width * 4 {
            frame.destroy();
            return Err(WlError::new(
                "capture-failed",
                format!("screencopy stride {stride} is below 4 × width {width}"),
            ));
        }
        let size = u64::from(stride) * u64::from(height);
        let memfd = rustix::fs::memfd_create("fbclient-capture", rustix::fs::MemfdFlags::CLOEXEC)
            .and_then(|fd| rustix::fs::ftruncate(&fd, size).map(|()| fd))
            .map_err(|e| WlError::new("io", format!("memfd for the capture: {e}")))?;
        let pool = self
            .shm
            .create_pool(memfd.as_fd(), size as i32, &client.qh, ());
        let buffer = pool.create_buffer(
            0,
            width as i32,
            height as i32,
            stride as i32,
            format,
            &client.qh,
            CAPTURE_BUFFER,
        );
        frame.copy(&buffer);
        client.flush()?;
        Ok(PendingCapture {
            frame,
            buffer,
            pool,
            memfd,
            width,
            height,
            stride,
        })
    }

    /// Captures the output into one of `buffers`, a dma-buf, as a screencast consumer does:
    /// the compositor may still be writing it when it says `ready`, so after `ready` the
    /// consumer exports the buffer's fences for a read (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) and
    /// waits for them, then reads the pixels through its mapping.
    pub fn capture_dmabuf(
        &self,
        client: &mut Client<Screencopy>,
        buffers: &mut CaptureBuffers,
    ) -> Result<DmabufCapture, WlError> {
        let frame = self.announce(client)?;
        let Some((format, width, height)) = client.state.ext.dmabuf.take() else {
            frame.destroy();
            return Err(WlError::new(
                "capture-failed",
                "screencopy offers no dma-buf (wlr-screencopy v3's linux_dmabuf event)",
            ));
        };
        if format != XRGB8888 {
            frame.destroy();
            return Err(WlError::new(
                "capture-failed",
                format!("screencopy offers dma-buf format {format:#010x}, not XRGB8888"),
            ));
        }
        let buffer = buffers.take(client, (width, height))?;
        buffer.fill(UNWRITTEN);
        client.check_buffers()?;
        frame.copy(&buffer.wl);
        Self::copied(client, frame)?;
        let fence = dmabuf::export_one(buffer.vgem.dmabuf(), Access::Read)
            .map_err(|e| WlError::new("io", format!("exporting the capture's fences: {e}")))?;
        let pending_at_ready = !fence
            .is_signalled()
            .map_err(|e| WlError::new("io", format!("polling the capture's fence: {e}")))?;
        let started = Instant::now();
        let signalled = fence
            .wait_for(Some(ANSWER_TIMEOUT))
            .map_err(|e| WlError::new("io", format!("waiting for the capture's fence: {e}")))?;
        if !signalled {
            return Err(timeout("end of the copy's write fence"));
        }
        Ok(DmabufCapture {
            image: Image {
                width,
                height,
                pixels: buffer.read_pixels(),
            },
            pending_at_ready,
            wait: started.elapsed(),
        })
    }
}

/// A capture into shared memory asked for and not read yet.
pub struct PendingCapture {
    frame: ZwlrScreencopyFrameV1,
    buffer: WlBuffer,
    pool: wl_shm_pool::WlShmPool,
    memfd: OwnedFd,
    width: u32,
    height: u32,
    stride: u32,
}

impl PendingCapture {
    /// Waits for the compositor's copy and reads it.
    pub fn finish(self, client: &mut Client<Screencopy>) -> Result<Image, WlError> {
        let PendingCapture {
            frame,
            buffer,
            pool,
            memfd,
            width,
            height,
            stride,
        } = self;
        let copied = Capturer::copied(client, frame);
        buffer.destroy();
        pool.destroy();
        copied?;
        let mut bytes = vec![0u8; stride as usize * height as usize];
        std::fs::File::from(memfd)
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| WlError::new("io", format!("reading the capture: {e}")))?;
        let pixels = bytes
            .chunks_exact(stride as usize)
            .flat_map(|row| row[..width as usize * 4].chunks_exact(4))
            .map(|px| u32::from_le_bytes([px[0], px[1], px[2], px[3]]))
            .collect();
        Ok(Image {
            width,
            height,
            pixels,
        })
    }
}

/// No answer to a capture in time.
fn timeout(what: &str) -> WlError {
    WlError::new(
        "timeout",
        format!(
            "screencopy: no {what} within {} s",
            ANSWER_TIMEOUT.as_secs()
        ),
    )
}

/// The user data of the screencopy objects: a type of this crate, so that their `Dispatch`
/// impls for wlclient's `State` may live here (the orphan rule).
struct Ours;

impl Dispatch<ZwlrScreencopyFrameV1, Ours> for State<Screencopy> {
    fn event(
        state: &mut Self,
        _: &ZwlrScreencopyFrameV1,
        event: zwlr_screencopy_frame_v1::Event,
        _: &Ours,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let c = &mut state.ext;
        match event {
            zwlr_screencopy_frame_v1::Event::Buffer {
                format,
                width,
                height,
                stride,
            } => c.buffer = Some((format, width, height, stride)),
            zwlr_screencopy_frame_v1::Event::LinuxDmabuf {
                format,
                width,
                height,
            } => c.dmabuf = Some((format, width, height)),
            zwlr_screencopy_frame_v1::Event::BufferDone => c.buffer_done = true,
            zwlr_screencopy_frame_v1::Event::Ready { .. } => c.ready = true,
            zwlr_screencopy_frame_v1::Event::Failed => c.failed = true,
            _ => {}
        }
    }
}

impl Dispatch<ZwlrScreencopyManagerV1, Ours> for State<Screencopy> {
    fn event(
        _: &mut Self,
        _: &ZwlrScreencopyManagerV1,
        _: <ZwlrScreencopyManagerV1 as Proxy>::Event,
        _: &Ours,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // The manager has no events.
    }
}
