//! Wayland client plumbing: connect, bind the globals, an xdg_toplevel window, linux-dmabuf
//! buffers, linux-drm-syncobj-v1 with a timeline per buffer, and dispatching with a deadline.
//!
//! Used by `fencebridge v4l2 --show` and by the test clients (`examples/fbclient`). [`State`]
//! records what the compositor said (configures, frame callbacks done, buffers released); its
//! `ext` field carries what a user adds (the test clients' screencopy state) with `Dispatch`
//! impls of its own.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use fencebridge::timeline::{SyncobjDevice, Timeline};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use wayland_client::backend::WaylandError;
use wayland_client::globals::{registry_queue_init, BindError, GlobalList, GlobalListContents};
use wayland_client::protocol::{
    wl_buffer::{self, WlBuffer},
    wl_callback::{self, WlCallback},
    wl_compositor::WlCompositor,
    wl_output::WlOutput,
    wl_registry::WlRegistry,
    wl_shm::WlShm,
    wl_shm_pool::WlShmPool,
    wl_surface::WlSurface,
};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1::{self, ZwpLinuxBufferParamsV1},
    zwp_linux_dmabuf_v1::{self, ZwpLinuxDmabufV1},
};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};
use wayland_protocols::xdg::shell::client::{
    xdg_surface::{self, XdgSurface},
    xdg_toplevel::{self, XdgToplevel},
    xdg_wm_base::{self, XdgWmBase},
};

/// What went wrong, with a kind for machine-readable output.
#[derive(Debug)]
pub struct WlError {
    /// A short tag: `no-compositor`, `missing-global`, `protocol-error`, `timeout`, `io`.
    pub kind: &'static str,
    /// What happened and what to do.
    pub message: String,
}

impl WlError {
    /// An error of `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        WlError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WlError {}

/// What the compositor has told this client so far.
#[derive(Debug, Default)]
pub struct State<X> {
    /// The xdg_surface has been configured (and acked).
    pub configured: bool,
    /// The compositor asked the toplevel to close.
    pub closed: bool,
    /// Frame callbacks done: the number each was requested with, and when it came.
    pub frames_done: Vec<(u32, Instant)>,
    /// Buffers released (`wl_buffer.release`), by the index each was created with, in order.
    pub released: Vec<usize>,
    /// linux-dmabuf buffers the compositor refused (`zwp_linux_buffer_params_v1.failed`).
    pub buffers_failed: u32,
    /// The (DRM format, modifier) pairs linux-dmabuf offers.
    pub dmabuf_formats: Vec<(u32, u64)>,
    /// The user's own state.
    pub ext: X,
}

impl<X> State<X> {
    /// Whether the frame callback requested with `frame` is done.
    pub fn frame_done(&self, frame: u32) -> bool {
        self.frames_done.iter().any(|&(f, _)| f == frame)
    }
}

/// A connection with the globals bound.
pub struct Client<X: 'static> {
    /// The connection.
    pub conn: Connection,
    queue: EventQueue<State<X>>,
    /// For creating objects.
    pub qh: QueueHandle<State<X>>,
    /// What the compositor said.
    pub state: State<X>,
    /// Every global the compositor advertised (bind more with it).
    pub globals: GlobalList,
    compositor: WlCompositor,
    wm_base: XdgWmBase,
    dmabuf: ZwpLinuxDmabufV1,
    /// linux-drm-syncobj-v1, where the compositor offers it.
    pub syncobj: Option<WpLinuxDrmSyncobjManagerV1>,
}

/// An xdg_toplevel and its surface.
pub struct Window {
    /// The surface to attach and commit.
    pub surface: WlSurface,
    toplevel: XdgToplevel,
    xdg_surface: XdgSurface,
}

impl Drop for Window {
    fn drop(&mut self) {
        self.toplevel.destroy();
        self.xdg_surface.destroy();
        self.surface.destroy();
    }
}

/// How long to wait for the compositor's answer to a request before calling it hung.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

impl<X: Default + 'static> Client<X> {
    /// Connects to `$WAYLAND_DISPLAY` and binds wl_compositor, xdg_wm_base, linux-dmabuf (v3+)
    /// and, if offered, linux-drm-syncobj-v1.
    pub fn connect() -> Result<Self, WlError> {
        let conn = Connection::connect_to_env().map_err(|e| {
            let display = std::env::var("WAYLAND_DISPLAY").unwrap_or_else(|_| "unset".into());
            WlError::new(
                "no-compositor",
                format!(
                    "cannot connect to a Wayland compositor (WAYLAND_DISPLAY={display}): {e}; \
                     run this inside a Wayland session or a compositor such as the nested example"
                ),
            )
        })?;
        let (globals, queue) = registry_queue_init::<State<X>>(&conn).map_err(|e| {
            WlError::new("no-compositor", format!("the Wayland registry failed: {e}"))
        })?;
        let qh = queue.handle();
        let compositor = bind_required(&globals, &qh, 4..=6)?;
        let wm_base = bind_required(&globals, &qh, 1..=6)?;
        // create_immed needs version 2; 3 adds modifiers (format tables come with 4).
        let dmabuf = bind_required(&globals, &qh, 3..=3)?;
        let syncobj = globals.bind(&qh, 1..=1, ()).ok();
        let mut client = Client {
            conn,
            queue,
            qh,
            state: State::default(),
            globals,
            compositor,
            wm_base,
            dmabuf,
            syncobj,
        };
        // The linux-dmabuf formats arrive right after the bind.
        client
            .queue
            .roundtrip(&mut client.state)
            .map_err(|e| client.dispatch_error(e.to_string()))?;
        Ok(client)
    }
}

impl<X: 'static> Client<X> {
    /// Dispatches events until `done` says so or `timeout` passes; whether `done` was reached.
    pub fn dispatch_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&State<X>) -> bool,
    ) -> Result<bool, WlError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.queue
                .dispatch_pending(&mut self.state)
                .map_err(|e| self.dispatch_error(e.to_string()))?;
            if done(&self.state) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.wait(deadline, None)?;
        }
    }

    /// Dispatches what the compositor has sent, then sleeps until it sends more, `other` polls
    /// readable, or `timeout` passes, and dispatches again.
    pub fn dispatch_or_ready(
        &mut self,
        timeout: Duration,
        other: BorrowedFd<'_>,
    ) -> Result<(), WlError> {
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(|e| self.dispatch_error(e.to_string()))?;
        self.wait(Instant::now() + timeout, Some(other))?;
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(|e| self.dispatch_error(e.to_string()))
            .map(|_| ())
    }

    /// Flushes, then sleeps until the socket (or `other`) is readable or `deadline`, and reads
    /// the socket into the queue.
    fn wait(&mut self, deadline: Instant, other: Option<BorrowedFd<'_>>) -> Result<(), WlError> {
        self.queue
            .flush()
            .map_err(|e| self.dispatch_error(e.to_string()))?;
        let Some(guard) = self.queue.prepare_read() else {
            return Ok(()); // events already queued: dispatch them
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let socket = guard.connection_fd();
        let mut fds = vec![PollFd::new(&socket, PollFlags::IN)];
        if let Some(other) = &other {
            fds.push(PollFd::new(other, PollFlags::IN));
        }
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) if !fds[0].revents().is_empty() => match guard.read() {
                Ok(_) => Ok(()),
                // Another reader took the events, or a spurious wake-up.
                Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(self.dispatch_error(e.to_string())),
            },
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(WlError::new("io", format!("poll(wayland socket): {e}"))),
        }
    }

    /// Dispatches events for `time` (sleeping on the socket between them).
    pub fn dispatch_for(&mut self, time: Duration) -> Result<(), WlError> {
        self.dispatch_until(time, |_| false).map(|_| ())
    }

    /// Sends the requests made so far.
    pub fn flush(&mut self) -> Result<(), WlError> {
        self.queue
            .flush()
            .map_err(|e| self.dispatch_error(e.to_string()))
    }

    /// The compositor's protocol error, if it killed this client, else `other`.
    fn dispatch_error(&self, other: String) -> WlError {
        match self.conn.protocol_error() {
            Some(e) => WlError::new(
                "protocol-error",
                format!(
                    "the compositor raised a protocol error on {}@{} (code {}): {}",
                    e.object_interface, e.object_id, e.code, e.message
                ),
            ),
            None => WlError::new("io", format!("the Wayland connection failed: {other}")),
        }
    }

    /// A toplevel window titled `title`, configured and acked; nothing attached yet.
    pub fn window(&mut self, title: &str) -> Result<Window, WlError> {
        let surface = self.compositor.create_surface(&self.qh, ());
        let xdg_surface = self.wm_base.get_xdg_surface(&surface, &self.qh, ());
        let toplevel = xdg_surface.get_toplevel(&self.qh, ());
        toplevel.set_title(title.to_owned());
        toplevel.set_app_id("fencebridge".to_owned());
        surface.commit();
        self.state.configured = false;
        if !self.dispatch_until(ANSWER_TIMEOUT, |s| s.configured)? {
            return Err(WlError::new(
                "timeout",
                format!(
                    "the compositor did not configure the window within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Window {
            surface,
            toplevel,
            xdg_surface,
        })
    }

    /// A linux-dmabuf `wl_buffer` (`create_immed`) of `fourcc`, one entry per colour plane:
    /// (dma-buf, offset, stride). Its `wl_buffer.release` is recorded as `index`.
    pub fn dmabuf_buffer(
        &self,
        planes: &[(BorrowedFd<'_>, u32, u32)],
        (width, height): (u32, u32),
        fourcc: u32,
        index: usize,
    ) -> WlBuffer {
        let params = self.dmabuf.create_params(&self.qh, ());
        for (plane, &(fd, offset, stride)) in planes.iter().enumerate() {
            // DRM_FORMAT_MOD_LINEAR is 0: both halves 0.
            params.add(fd, plane as u32, offset, stride, 0, 0);
        }
        let buffer = params.create_immed(
            width as i32,
            height as i32,
            fourcc,
            zwp_linux_buffer_params_v1::Flags::empty(),
            &self.qh,
            index,
        );
        params.destroy();
        buffer
    }

    /// Waits until the compositor has handled every request so far, then fails if it refused
    /// a linux-dmabuf buffer.
    pub fn check_buffers(&mut self) -> Result<(), WlError> {
        self.roundtrip()?;
        match self.state.buffers_failed {
            0 => Ok(()),
            n => Err(WlError::new(
                "buffer-refused",
                format!("the compositor refused {n} linux-dmabuf buffer(s) (params.failed)"),
            )),
        }
    }

    /// Waits until the compositor has handled every request so far (and dispatches what it
    /// sent before its answer).
    pub fn roundtrip(&mut self) -> Result<(), WlError> {
        self.queue
            .roundtrip(&mut self.state)
            .map_err(|e| self.dispatch_error(e.to_string()))
            .map(|_| ())
    }

    /// Requests a frame callback on `surface`, recorded as `frame` when done.
    pub fn frame(&self, surface: &WlSurface, frame: u32) {
        surface.frame(&self.qh, frame);
    }

    /// The linux-drm-syncobj-v1 objects for `surface` and a timeline per syncobj fd in
    /// `timelines`, or why not.
    pub fn syncobj_surface(
        &self,
        surface: &WlSurface,
        timelines: &[BorrowedFd<'_>],
    ) -> Result<(WpLinuxDrmSyncobjSurfaceV1, Vec<WpLinuxDrmSyncobjTimelineV1>), WlError> {
        let manager = self.syncobj.as_ref().ok_or_else(|| {
            WlError::new(
                "missing-global",
                "no wp_linux_drm_syncobj_manager_v1 (compositor without explicit sync or kernel \
                 without timelines)",
            )
        })?;
        let sync_surface = manager.get_surface(surface, &self.qh, ());
        let timelines = timelines
            .iter()
            .map(|fd| manager.import_timeline(*fd, &self.qh, ()))
            .collect();
        Ok((sync_surface, timelines))
    }
}

/// Binds a global the client cannot do without.
fn bind_required<I, X: 'static>(
    globals: &GlobalList,
    qh: &QueueHandle<State<X>>,
    versions: std::ops::RangeInclusive<u32>,
) -> Result<I, WlError>
where
    I: Proxy + 'static,
    State<X>: Dispatch<I, ()>,
{
    globals.bind(qh, versions.clone(), ()).map_err(|e| {
        let name = I::interface().name;
        let why = match e {
            BindError::NotPresent => "not offered".to_owned(),
            BindError::UnsupportedVersion => format!("offered below version {}", versions.start()),
        };
        WlError::new(
            "missing-global",
            format!("the compositor lacks {name} ({why})"),
        )
    })
}

/// linux-drm-syncobj-v1 for a surface's buffers: one timeline per buffer, as Vulkan WSI does
/// (a timeline's points signal in order).
pub struct Syncobj {
    timelines: Vec<Timeline>,
    surface: WpLinuxDrmSyncobjSurfaceV1,
    wl_timelines: Vec<WpLinuxDrmSyncobjTimelineV1>,
}

impl Syncobj {
    /// `buffers` timelines on the first DRM device that has them, imported into the
    /// compositor for `surface`. Fails first (`missing-global`) if the compositor does not
    /// offer the protocol, then (`no-device`) if this machine has no timeline device.
    pub fn new<X: 'static>(
        client: &Client<X>,
        surface: &WlSurface,
        buffers: usize,
    ) -> Result<Syncobj, WlError> {
        if client.syncobj.is_none() {
            client.syncobj_surface(surface, &[])?; // says what is missing
        }
        let device = SyncobjDevice::find().map_err(|e| WlError::new("no-device", e.to_string()))?;
        let timelines = (0..buffers)
            .map(|_| device.create_timeline())
            .collect::<Result<Vec<Timeline>, _>>()
            .map_err(|e| WlError::new("io", format!("creating a timeline: {e}")))?;
        let fds = timelines
            .iter()
            .map(Timeline::export_fd)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WlError::new("io", format!("exporting a timeline: {e}")))?;
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let (surface, wl_timelines) = client.syncobj_surface(surface, &borrowed)?;
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

    /// Signals `point` of buffer `index`'s timeline from the CPU (the frame is ready).
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

/// A point on a timeline as linux-drm-syncobj-v1 sends it: (hi, lo).
pub fn hi_lo(point: u64) -> (u32, u32) {
    ((point >> 32) as u32, point as u32)
}

impl<X: 'static> Dispatch<XdgWmBase, ()> for State<X> {
    fn event(
        _: &mut Self,
        wm_base: &XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm_base.pong(serial);
        }
    }
}

impl<X: 'static> Dispatch<XdgSurface, ()> for State<X> {
    fn event(
        state: &mut Self,
        xdg_surface: &XdgSurface,
        event: xdg_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            xdg_surface.ack_configure(serial);
            state.configured = true;
        }
    }
}

impl<X: 'static> Dispatch<XdgToplevel, ()> for State<X> {
    fn event(
        state: &mut Self,
        _: &XdgToplevel,
        event: xdg_toplevel::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_toplevel::Event::Close = event {
            state.closed = true;
        }
    }
}

impl<X: 'static> Dispatch<WlCallback, u32> for State<X> {
    fn event(
        state: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        frame: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            state.frames_done.push((*frame, Instant::now()));
        }
    }
}

impl<X: 'static> Dispatch<WlBuffer, usize> for State<X> {
    fn event(
        state: &mut Self,
        _: &WlBuffer,
        event: wl_buffer::Event,
        index: &usize,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            state.released.push(*index);
        }
    }
}

impl<X: 'static> Dispatch<ZwpLinuxDmabufV1, ()> for State<X> {
    fn event(
        state: &mut Self,
        _: &ZwpLinuxDmabufV1,
        event: zwp_linux_dmabuf_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let zwp_linux_dmabuf_v1::Event::Modifier {
            format,
            modifier_hi,
            modifier_lo,
        } = event
        {
            let modifier = u64::from(modifier_hi) << 32 | u64::from(modifier_lo);
            state.dmabuf_formats.push((format, modifier));
        }
    }
}

impl<X: 'static> Dispatch<ZwpLinuxBufferParamsV1, ()> for State<X> {
    fn event(
        state: &mut Self,
        _: &ZwpLinuxBufferParamsV1,
        event: zwp_linux_buffer_params_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let zwp_linux_buffer_params_v1::Event::Failed = event {
            state.buffers_failed += 1;
        }
    }
}

/// `Dispatch` impls for objects whose events this client ignores.
macro_rules! ignore_events {
    ($($interface:ty => $udata:ty),* $(,)?) => {$(
        impl<X: 'static> Dispatch<$interface, $udata> for State<X> {
            fn event(
                _: &mut Self,
                _: &$interface,
                _: <$interface as Proxy>::Event,
                _: &$udata,
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
            }
        }
    )*};
}

ignore_events!(
    WlRegistry => GlobalListContents,
    WlCompositor => (),
    WlSurface => (),
    WlOutput => (),
    WlShm => (),
    WlShmPool => (),
    WpLinuxDrmSyncobjManagerV1 => (),
    WpLinuxDrmSyncobjSurfaceV1 => (),
    WpLinuxDrmSyncobjTimelineV1 => (),
);
