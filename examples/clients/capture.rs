//! Reading the output back: zwlr_screencopy_manager_v1 into a wl_shm buffer — what the
//! compositor last rendered, to judge by pixels rather than by its logs.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use wayland_client::protocol::{wl_buffer, wl_output::WlOutput, wl_shm, wl_shm_pool};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle, WEnum};
use wayland_protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1::{self, ZwlrScreencopyFrameV1},
    zwlr_screencopy_manager_v1::ZwlrScreencopyManagerV1,
};

use crate::wlclient::{Client, State, WlError, ANSWER_TIMEOUT};

/// What the compositor said about the capture under way.
#[derive(Debug, Default)]
pub struct Screencopy {
    /// The wl_shm buffer it wants: format, width, height, stride.
    buffer: Option<(WEnum<wl_shm::Format>, u32, u32, u32)>,
    /// All buffer types announced (version 3).
    buffer_done: bool,
    ready: bool,
    failed: bool,
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
            .bind(&client.qh, 1..=3, ())
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

    /// Captures the output as the compositor last rendered it.
    pub fn capture(&self, client: &mut Client<Screencopy>) -> Result<Image, WlError> {
        self.request(client)?.finish(client)
    }

    /// Asks for a capture and returns once the compositor has taken the request (it copies
    /// the frame it is drawing, or the last one); [`PendingCapture::finish`] waits for it.
    /// One at a time.
    pub fn request(&self, client: &mut Client<Screencopy>) -> Result<PendingCapture, WlError> {
        client.state.ext = Screencopy::default();
        let frame = self.manager.capture_output(0, &self.output, &client.qh, ());
        let v3 = self.manager.version() >= 3;
        let announced = client.dispatch_until(ANSWER_TIMEOUT, |s| {
            let c = &s.ext;
            c.failed || c.buffer_done || (!v3 && c.buffer.is_some())
        })?;
        if !announced {
            frame.destroy();
            return Err(timeout("buffer announcement"));
        }
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
}

/// A capture asked for and not read yet.
pub struct PendingCapture {
    frame: ZwlrScreencopyFrameV1,
    buffer: wl_buffer::WlBuffer,
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
        let answered = client.dispatch_until(ANSWER_TIMEOUT, |s| s.ext.ready || s.ext.failed);
        frame.destroy();
        buffer.destroy();
        pool.destroy();
        if !answered? {
            return Err(timeout("ready event"));
        }
        if client.state.ext.failed {
            return Err(WlError::new(
                "capture-failed",
                "screencopy answered `failed`",
            ));
        }
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

impl Dispatch<ZwlrScreencopyFrameV1, ()> for State<Screencopy> {
    fn event(
        state: &mut Self,
        _: &ZwlrScreencopyFrameV1,
        event: zwlr_screencopy_frame_v1::Event,
        _: &(),
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
            zwlr_screencopy_frame_v1::Event::BufferDone => c.buffer_done = true,
            zwlr_screencopy_frame_v1::Event::Ready { .. } => c.ready = true,
            zwlr_screencopy_frame_v1::Event::Failed => c.failed = true,
            _ => {}
        }
    }
}

impl Dispatch<ZwlrScreencopyManagerV1, ()> for State<Screencopy> {
    fn event(
        _: &mut Self,
        _: &ZwlrScreencopyManagerV1,
        _: <ZwlrScreencopyManagerV1 as Proxy>::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // The manager has no events.
    }
}
