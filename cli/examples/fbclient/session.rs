//! What every mode does the same way: a window, its buffers (vgem dma-bufs, or wl_shm for the
//! `shm` mode), committing a frame, waiting for its frame callback, and reading the output
//! back.

use std::time::{Duration, Instant};

use fencebridge::producer::Vgem;

use wayland_client::protocol::wl_buffer::WlBuffer;

use crate::capture::{CaptureBuffers, Capturer, DmabufCapture, Image, PendingCapture, Screencopy};
use crate::pixels::{count_colour, Buffer};
use crate::wlclient::{Client, Syncobj, Window, WlError};

/// What a session's buffers have in common: a wl_buffer to attach.
pub trait Attachable {
    fn wl(&self) -> &WlBuffer;
}

impl Attachable for Buffer {
    fn wl(&self) -> &WlBuffer {
        &self.wl
    }
}

/// A connected client with a window and its buffers.
pub struct Session<B = Buffer> {
    /// The connection.
    pub client: Client<Screencopy>,
    capturer: Capturer,
    /// The toplevel.
    pub window: Window,
    /// Its buffers, by index (the wl_buffer.release index too).
    pub buffers: Vec<B>,
    /// Whether the compositor has given each buffer back (wl_buffer.release) since its last
    /// commit.
    released: Vec<bool>,
}

impl Session {
    /// Connects, opens a `size` window titled `title` and makes `buffers` vgem buffers.
    pub fn new(title: &str, size: (u32, u32), buffers: usize) -> Result<Session, WlError> {
        let vgem = Vgem::open().map_err(|e| {
            WlError::new(
                "no-device",
                format!("no vgem device for the client's buffers ({e})"),
            )
        })?;
        Session::with_buffers(title, buffers, |client, i| {
            Buffer::new(client, &vgem, size, i)
        })
    }

    /// linux-drm-syncobj-v1 timelines for every buffer (see [`Syncobj::new`]).
    pub fn syncobj(&self) -> Result<Syncobj, WlError> {
        Syncobj::new(&self.client, &self.window.surface, self.buffers.len())
    }
}

impl<B: Attachable> Session<B> {
    /// Connects, opens a window titled `title` and makes `count` buffers with `make` (given
    /// the client and the buffer's index).
    pub fn with_buffers(
        title: &str,
        count: usize,
        mut make: impl FnMut(&Client<Screencopy>, usize) -> Result<B, WlError>,
    ) -> Result<Session<B>, WlError> {
        let mut client = Client::<Screencopy>::connect()?;
        let capturer = Capturer::new(&client)?;
        let window = client.window(title)?;
        let buffers = (0..count)
            .map(|i| make(&client, i))
            .collect::<Result<Vec<_>, _>>()?;
        client.check_buffers()?;
        let released = vec![true; buffers.len()];
        Ok(Session {
            client,
            capturer,
            window,
            buffers,
            released,
        })
    }

    /// Attaches buffer `index`, damages it all, asks for frame callback `frame` and commits;
    /// returns when the request left.
    pub fn commit(&mut self, index: usize, frame: u32) -> Result<Instant, WlError> {
        let surface = &self.window.surface;
        surface.attach(Some(self.buffers[index].wl()), 0, 0);
        surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        self.client.frame(surface, frame);
        surface.commit();
        self.released[index] = false;
        self.client.flush()?;
        Ok(Instant::now())
    }

    /// Whether buffer `index` has been released by what was dispatched so far.
    pub fn is_released(&mut self, index: usize) -> bool {
        self.take_releases();
        self.released[index]
    }

    /// Marks the buffers the dispatched `wl_buffer.release`s gave back. Releases of buffers
    /// this session did not make (another surface's) stay queued.
    fn take_releases(&mut self) {
        let released = &mut self.released;
        self.client
            .state
            .released
            .retain(|&i| match released.get_mut(i) {
                Some(r) => {
                    *r = true;
                    false
                }
                None => true,
            });
    }

    /// A buffer the compositor has released, dispatching until one is (or `timeout`).
    pub fn released_buffer(&mut self, timeout: Duration) -> Result<usize, WlError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.take_releases();
            if let Some(i) = self.released.iter().position(|&r| r) {
                return Ok(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WlError::new(
                    "timeout",
                    format!(
                        "the compositor released none of the {} buffers within {} s",
                        self.buffers.len(),
                        timeout.as_secs()
                    ),
                ));
            }
            let count = self.released.len();
            self.client
                .dispatch_until(left, |s| s.released.iter().any(|&i| i < count))?;
        }
    }

    /// Waits for frame callback `frame`; when it came.
    pub fn frame_done(&mut self, frame: u32, timeout: Duration) -> Result<Instant, WlError> {
        self.client
            .dispatch_until(timeout, |s| s.frame_done(frame))?;
        self.client
            .state
            .frames_done
            .iter()
            .find(|&&(f, _)| f == frame)
            .map(|&(_, at)| at)
            .ok_or_else(|| {
                WlError::new(
                    "timeout",
                    format!(
                        "frame {frame} was not shown (no frame callback) within {} ms",
                        timeout.as_millis()
                    ),
                )
            })
    }

    /// Whether the output, as last rendered, shows `colour` on a whole window's worth of
    /// pixels (`size`): anything less means the compositor showed stale contents.
    pub fn shows(&mut self, colour: u32, size: (u32, u32)) -> Result<bool, WlError> {
        let image = self.capture()?;
        shows(&image, colour, size)
    }

    /// Asks for a capture of the frame being drawn (or the last one), to be read later with
    /// [`Session::showed`].
    pub fn request_capture(&mut self) -> Result<PendingCapture, WlError> {
        self.capturer.request(&mut self.client)
    }

    /// Whether a capture asked for earlier shows `colour` as [`Session::shows`] judges.
    pub fn showed(
        &mut self,
        capture: PendingCapture,
        colour: u32,
        size: (u32, u32),
    ) -> Result<bool, WlError> {
        let image = capture.finish(&mut self.client)?;
        shows(&image, colour, size)
    }

    /// The output as the compositor last rendered it.
    pub fn capture(&mut self) -> Result<Image, WlError> {
        self.capturer.capture(&mut self.client)
    }

    /// The output as the compositor last rendered it, captured into one of `buffers`
    /// (dma-bufs), read once their fences signalled.
    pub fn capture_dmabuf(
        &mut self,
        buffers: &mut CaptureBuffers,
    ) -> Result<DmabufCapture, WlError> {
        self.capturer.capture_dmabuf(&mut self.client, buffers)
    }
}

/// Whether `image` has `colour` on a whole window's worth of pixels (`width`×`height`).
fn shows(image: &Image, colour: u32, (width, height): (u32, u32)) -> Result<bool, WlError> {
    if image.width < width || image.height < height {
        return Err(WlError::new(
            "output-too-small",
            format!(
                "the output ({}x{}) is smaller than the window ({width}x{height}): give the \
                 compositor a larger output or the client a smaller --size",
                image.width, image.height
            ),
        ));
    }
    let want = width as usize * height as usize;
    Ok(count_colour(&image.pixels, colour) >= want)
}
