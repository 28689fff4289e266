//! What every mode does the same way: a window, its vgem buffers, committing a frame, waiting
//! for its frame callback, asking the output whether it shows a colour, and linux-drm-syncobj-v1
//! timelines for the buffers.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fencebridge::producer::Vgem;
use fencebridge::timeline::{SyncobjDevice, Timeline};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

use crate::capture::{Capturer, Screencopy};
use crate::pixels::{count_colour, Buffer};
use crate::wlclient::{hi_lo, Client, Window, WlError};

/// A connected client with a window and its buffers.
pub struct Session {
    /// The connection.
    pub client: Client<Screencopy>,
    capturer: Capturer,
    /// The toplevel.
    pub window: Window,
    /// Its buffers, by index (the wl_buffer.release index too).
    pub buffers: Vec<Buffer>,
    /// Whether the compositor has given each buffer back (wl_buffer.release) since its last
    /// commit.
    released: Vec<bool>,
}

impl Session {
    /// Connects, opens a `size` window titled `title` and makes `buffers` vgem buffers.
    pub fn new(title: &str, size: (u32, u32), buffers: usize) -> Result<Session, WlError> {
        let mut client = Client::<Screencopy>::connect()?;
        let capturer = Capturer::new(&client)?;
        let vgem = Vgem::open().map_err(|e| {
            WlError::new(
                "no-device",
                format!("no vgem device for the client's buffers ({e})"),
            )
        })?;
        let window = client.window(title)?;
        let buffers = (0..buffers)
            .map(|i| Buffer::new(&client, &vgem, size, i))
            .collect::<Result<Vec<_>, _>>()?;
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
        surface.attach(Some(&self.buffers[index].wl), 0, 0);
        surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        self.client.frame(surface, frame);
        surface.commit();
        self.released[index] = false;
        self.client.flush()?;
        Ok(Instant::now())
    }

    /// A buffer the compositor has released, dispatching until one is (or `timeout`).
    pub fn released_buffer(&mut self, timeout: Duration) -> Result<usize, WlError> {
        let deadline = Instant::now() + timeout;
        loop {
            for i in self.client.state.released.drain(..) {
                if let Some(r) = self.released.get_mut(i) {
                    *r = true;
                }
            }
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
            self.client
                .dispatch_until(left, |s| !s.released.is_empty())?;
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
    pub fn shows(&mut self, colour: u32, (width, height): (u32, u32)) -> Result<bool, WlError> {
        let image = self.capturer.capture(&mut self.client)?;
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
}

/// linux-drm-syncobj-v1 for a session's buffers: one timeline per buffer, as Vulkan WSI does
/// (a timeline's points signal in order).
pub struct Syncobj {
    timelines: Vec<Timeline>,
    surface: WpLinuxDrmSyncobjSurfaceV1,
    wl_timelines: Vec<WpLinuxDrmSyncobjTimelineV1>,
}

impl Syncobj {
    /// Timelines for every buffer of `session`, on the first DRM device that has them, imported
    /// into the compositor. Fails first if the compositor does not offer the protocol.
    pub fn new(session: &Session) -> Result<Syncobj, WlError> {
        if session.client.syncobj.is_none() {
            // Said before looking for a device: the compositor is what lacks it.
            session
                .client
                .syncobj_surface(&session.window.surface, &[])?;
        }
        let device = SyncobjDevice::find().map_err(|e| WlError::new("no-device", e.to_string()))?;
        let timelines = session
            .buffers
            .iter()
            .map(|_| device.create_timeline())
            .collect::<Result<Vec<Timeline>, _>>()
            .map_err(|e| WlError::new("io", format!("creating a timeline: {e}")))?;
        let fds = timelines
            .iter()
            .map(Timeline::export_fd)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WlError::new("io", format!("exporting a timeline: {e}")))?;
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let (surface, wl_timelines) = session
            .client
            .syncobj_surface(&session.window.surface, &borrowed)?;
        Ok(Syncobj {
            timelines,
            surface,
            wl_timelines,
        })
    }

    /// Sets the next commit's acquire and release points on buffer `index`'s timeline.
    pub fn set_points(&self, index: usize, acquire: u64, release: u64) {
        let ((ahi, alo), (rhi, rlo)) = (hi_lo(acquire), hi_lo(release));
        let timeline = &self.wl_timelines[index];
        self.surface.set_acquire_point(timeline, ahi, alo);
        self.surface.set_release_point(timeline, rhi, rlo);
    }

    /// Signals `point` of buffer `index`'s timeline from the CPU (the frame is written).
    pub fn signal(&self, index: usize, point: u64) -> Result<(), WlError> {
        self.timelines[index]
            .signal(point)
            .map_err(|e| WlError::new("io", format!("signalling an acquire point: {e}")))
    }

    /// Whether `point` of buffer `index`'s timeline has signalled.
    pub fn signalled(&self, index: usize, point: u64) -> Result<bool, WlError> {
        self.timelines[index]
            .is_signalled(point)
            .map_err(|e| WlError::new("io", format!("querying a release point: {e}")))
    }
}
