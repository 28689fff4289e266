//! `fbclient video-over-ui`: a player's window as mpv or a browser builds it. The toplevel is
//! the user interface, drawn by the "GPU" (vgem dma-bufs committed while their write fence is
//! pending, as `implicit` does) now and then; the video is a desynchronised subsurface in the
//! middle of it, CPU-filled dma-bufs that never carry a fence (udmabuf, or the system
//! dma-heap), a small picture scaled to half the window by wp_viewporter, committed at its own
//! rate. While the UI's GPU job runs, the video must keep coming: a compositor that held the
//! video back until its parent's fence signalled would show it late (max_frame_ms).
//!
//! After each video frame's callback the output is captured: the frame is shown right if its
//! four quadrant colours fill exactly the viewport's rectangle at the subsurface's position in
//! the window; the window's own frame is shown right if its colour fills the window around it.
//! -> fbclient video-over-ui: frames=N stale=S max_frame_ms=M ui_frames=U ui_stale=V
//!    max_ui_frame_ms=X video_memory=udmabuf|dma-heap

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use fencebridge::producer::{dma_heap_alloc, udmabuf_alloc, VgemFence};
use wayland_client::protocol::{
    wl_buffer::WlBuffer, wl_compositor::WlCompositor, wl_subcompositor::WlSubcompositor,
    wl_subsurface::WlSubsurface, wl_surface::WlSurface,
};
use wayland_protocols::wp::viewporter::client::{
    wp_viewport::WpViewport, wp_viewporter::WpViewporter,
};

use crate::capture::{Image, Screencopy};
use crate::pixels::{colour, count_colour, map_whole, XRGB8888};
use crate::session::Session;
use crate::tree::{self, Tree};
use crate::wlclient::{Client, State, WlError, ANSWER_TIMEOUT};
use crate::{Common, FrameStats};
use fencebridge_cli::mapping::Mapping;

/// The video's own buffer size: small, and of another aspect than its place, so that it is
/// shown right only if the compositor scales it as the viewport says.
pub const VIDEO_SOURCE: (u32, u32) = (48, 32);
/// One buffer shown, one waiting, one being filled.
const VIDEO_BUFFERS: usize = 3;
/// The window's GPU buffers, as `implicit` keeps them.
const UI_BUFFERS: usize = 3;
/// wl_buffer numbers of the video's buffers (the window's count from 0).
const VIDEO_INDEX: usize = 1 << 20;
/// Frame callback numbers of the window's frames (the video's count from 0).
const UI_FRAME: u32 = 1 << 31;
/// The video's colours come after the window's in the client's colour range.
const VIDEO_COLOURS: u32 = 0x8000;
/// At most this many video frames, so that their colours stay apart from the window's.
pub const MAX_FRAMES: u32 = 0x1000;

/// The video's rectangle in a `size` window (x, y, width, height): its middle half.
pub fn video_rect((width, height): (u32, u32)) -> (u32, u32, u32, u32) {
    (width / 4, height / 4, width / 2, height / 2)
}

/// Frame `frame`'s quadrant colours: top-left, top-right, bottom-left, bottom-right.
fn video_colours(tag: u8, frame: u32) -> [u32; 4] {
    [0, 1, 2, 3].map(|q| colour(tag, VIDEO_COLOURS + 4 * frame + q))
}

/// A CPU-filled dma-buf that never carries a fence, and its wl_buffer.
struct VideoBuffer {
    wl: WlBuffer,
    map: Mapping,
    _dmabuf: OwnedFd,
}

impl VideoBuffer {
    fn new(
        client: &Client<Screencopy>,
        index: usize,
    ) -> Result<(VideoBuffer, &'static str), WlError> {
        let (width, height) = VIDEO_SOURCE;
        let len = u64::from(width * height * 4);
        let (dmabuf, memory) = match udmabuf_alloc(len) {
            Ok(fd) => (fd, "udmabuf"),
            Err(udmabuf) => match dma_heap_alloc(len) {
                Ok(fd) => (fd, "dma-heap"),
                Err(heap) => {
                    return Err(WlError::new(
                        "no-device",
                        format!(
                            "no CPU dma-buf for the video: udmabuf: {udmabuf}; dma-heap: {heap}"
                        ),
                    ))
                }
            },
        };
        let map = map_whole(dmabuf.as_fd())?;
        let wl = client.dmabuf_buffer(
            &[(dmabuf.as_fd(), 0, width * 4)],
            VIDEO_SOURCE,
            XRGB8888,
            VIDEO_INDEX + index,
        );
        Ok((
            VideoBuffer {
                wl,
                map,
                _dmabuf: dmabuf,
            },
            memory,
        ))
    }

    /// Writes `quadrants` into the buffer's four quadrants.
    fn fill(&mut self, quadrants: [u32; 4]) {
        let (width, height) = VIDEO_SOURCE;
        let bytes = self.map.bytes_mut();
        for (i, px) in bytes
            .chunks_exact_mut(4)
            .take((width * height) as usize)
            .enumerate()
        {
            let (x, y) = (i as u32 % width, i as u32 / width);
            let q = usize::from(y >= height / 2) << 1 | usize::from(x >= width / 2);
            px.copy_from_slice(&quadrants[q].to_le_bytes());
        }
    }
}

impl Drop for VideoBuffer {
    fn drop(&mut self) {
        self.wl.destroy();
    }
}

/// The video subsurface.
struct Video {
    surface: WlSurface,
    subsurface: WlSubsurface,
    viewport: WpViewport,
    buffers: Vec<VideoBuffer>,
    /// Whether each buffer is the client's to fill (released since its last commit).
    free: Vec<bool>,
}

impl Drop for Video {
    fn drop(&mut self) {
        self.viewport.destroy();
        self.subsurface.destroy();
        self.buffers.clear();
        self.surface.destroy();
    }
}

/// The window's GPU job under way: its buffer gets `colour` and its fence signals at `due`.
struct GpuJob {
    due: Instant,
    index: usize,
    colour: u32,
    fence: VgemFence,
}

/// The window's frame waiting for its frame callback.
struct UiFrame {
    number: u32,
    colour: u32,
    committed: Instant,
}

/// The player: its window, its video, and the window's GPU job.
struct Player {
    session: Session,
    video: Video,
    gpu: Option<GpuJob>,
}

impl Player {
    /// Dispatches until `done` or `deadline`, doing the GPU's work when it is due.
    fn wait_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&State<Screencopy>) -> bool,
    ) -> Result<bool, WlError> {
        loop {
            let now = Instant::now();
            if let Some(job) = self.gpu.take_if(|job| job.due <= now) {
                self.session.buffers[job.index].fill(job.colour);
                job.fence
                    .signal()
                    .map_err(|e| WlError::new("io", format!("signalling the vgem fence: {e}")))?;
            }
            let until = self
                .gpu
                .as_ref()
                .map_or(deadline, |job| job.due.min(deadline));
            let client = &mut self.session.client;
            if client.dispatch_until(until.saturating_duration_since(now), &done)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// A video buffer the compositor has released, waiting for one (at most `timeout`).
    fn free_video_buffer(&mut self, timeout: Duration) -> Result<usize, WlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let free = &mut self.video.free;
            self.session.client.state.released.retain(|&i| {
                match i.checked_sub(VIDEO_INDEX).and_then(|v| free.get_mut(v)) {
                    Some(f) => {
                        *f = true;
                        false
                    }
                    None => true,
                }
            });
            if let Some(i) = self.video.free.iter().position(|&f| f) {
                return Ok(i);
            }
            let released = |s: &State<Screencopy>| s.released.iter().any(|&i| i >= VIDEO_INDEX);
            if !self.wait_until(deadline, released)? {
                return Err(WlError::new(
                    "timeout",
                    format!(
                        "the compositor released none of the video's buffers within {} s",
                        timeout.as_secs()
                    ),
                ));
            }
        }
    }

    /// When frame callback `frame` came, waiting for it (at most `timeout`).
    fn frame_done(&mut self, frame: u32, timeout: Duration) -> Result<Instant, WlError> {
        self.wait_until(Instant::now() + timeout, |s| s.frame_done(frame))?;
        self.session.frame_done(frame, Duration::ZERO)
    }
}

/// Whether a pixel has the colour of one of the window's first `frames` frames.
fn is_window(tag: u8, frames: u32) -> impl Fn(u32) -> bool {
    move |p| (0..frames).any(|u| (p ^ colour(tag, u)) & 0x00ff_ffff == 0)
}

/// Where the window is on `image`: its top-left pixel, the first (row after row) that has one
/// of the window's colours (the video's rectangle leaves the window's first row alone).
fn window_origin(image: &Image, is_window: impl Fn(u32) -> bool) -> Option<(u32, u32)> {
    let first = image.pixels.iter().position(|&p| is_window(p))?;
    Some((first as u32 % image.width, first as u32 / image.width))
}

/// Whether `image` shows the video frame of `quadrants` exactly on `rect` (window
/// coordinates) of the window at `origin`: every pixel there one of its colours, the middle of
/// each quadrant the right one, and no pixel of those colours anywhere else.
fn video_shown(
    image: &Image,
    origin: (u32, u32),
    rect: (u32, u32, u32, u32),
    quadrants: [u32; 4],
) -> bool {
    let rgb = |p: u32| p & 0x00ff_ffff;
    let (x0, y0) = (origin.0 + rect.0, origin.1 + rect.1);
    let (width, height) = (rect.2, rect.3);
    if x0 + width > image.width || y0 + height > image.height {
        return false;
    }
    let at = |x: u32, y: u32| rgb(image.pixels[((y0 + y) * image.width + x0 + x) as usize]);
    let ours = |p: u32| quadrants.iter().any(|&q| rgb(q) == rgb(p));
    let inside = (0..height).all(|y| (0..width).all(|x| ours(at(x, y))));
    let middles = (0..4).all(|q: u32| {
        let x = width / 4 + (q & 1) * width / 2;
        let y = height / 4 + (q >> 1) * height / 2;
        at(x, y) == rgb(quadrants[q as usize])
    });
    let everywhere: usize = quadrants
        .iter()
        .map(|&q| count_colour(&image.pixels, q))
        .sum();
    inside && middles && everywhere == (width * height) as usize
}

/// Whether `image` shows the window's `colour` on every pixel of the `size` window at `origin`
/// but the video's `rect`.
fn window_shown(
    image: &Image,
    origin: (u32, u32),
    size: (u32, u32),
    rect: (u32, u32, u32, u32),
    colour: u32,
) -> bool {
    let rgb = |p: u32| p & 0x00ff_ffff;
    let (width, height) = size;
    if origin.0 + width > image.width || origin.1 + height > image.height {
        return false;
    }
    let outside_video =
        |x: u32, y: u32| x < rect.0 || x >= rect.0 + rect.2 || y < rect.1 || y >= rect.1 + rect.3;
    (0..height).all(|y| {
        (0..width).all(|x| {
            let p = image.pixels[((origin.1 + y) * image.width + origin.0 + x) as usize];
            !outside_video(x, y) || rgb(p) == rgb(colour)
        })
    })
}

/// Plays `frames` video frames, `interval` apart, with a window frame every `ui_every` video
/// frames (when the last one is shown) whose GPU job takes `delay`.
pub fn run(
    common: &Common,
    frames: u32,
    interval: Duration,
    ui_every: u32,
    delay: Duration,
) -> Result<String, WlError> {
    let size = common.size;
    if size.0 < 8 || size.1 < 8 {
        return Err(WlError::new(
            "bad-size",
            format!(
                "a {}x{} window has no room for a video in it: give at least 8x8",
                size.0, size.1
            ),
        ));
    }
    let session = Session::new("fbclient video-over-ui", size, UI_BUFFERS)?;
    let compositor: WlCompositor = tree::bind(&session.client, 4..=6, "wl_compositor")?;
    let subcompositor: WlSubcompositor = tree::bind(&session.client, 1..=1, "wl_subcompositor")?;
    let viewporter: WpViewporter = tree::bind(&session.client, 1..=1, "wp_viewporter")?;
    let qh = &session.client.qh;
    let surface = compositor.create_surface(qh, Tree);
    let subsurface = subcompositor.get_subsurface(&surface, &session.window.surface, qh, Tree);
    let rect = video_rect(size);
    subsurface.set_position(rect.0 as i32, rect.1 as i32);
    subsurface.set_desync();
    let viewport = viewporter.get_viewport(&surface, qh, Tree);
    viewport.set_destination(rect.2 as i32, rect.3 as i32);
    let mut memory = "";
    let buffers = (0..VIDEO_BUFFERS)
        .map(|i| {
            VideoBuffer::new(&session.client, i).map(|(buffer, m)| {
                memory = m;
                buffer
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut player = Player {
        session,
        video: Video {
            surface,
            subsurface,
            viewport,
            buffers,
            free: vec![true; VIDEO_BUFFERS],
        },
        gpu: None,
    };
    player.session.client.check_buffers()?;

    // The window's first frame maps it (no GPU job: nothing to wait for yet). Every buffer
    // starts with it, as a GPU client clears what it allocates: a window frame shown before
    // its GPU job (without the bridge) is then stale, not a black hole the window cannot be
    // found by.
    let ui_colour = |u: u32| colour(common.tag, u);
    for buffer in &mut player.session.buffers {
        buffer.fill(ui_colour(0));
    }
    let index = player.session.released_buffer(ANSWER_TIMEOUT)?;
    player.session.commit(index, UI_FRAME)?;
    player.frame_done(UI_FRAME, ANSWER_TIMEOUT)?;
    let mut ui_frames = 1;
    let mut ui_waiting: Option<UiFrame> = None;
    let mut ui_stats = FrameStats::default();

    let mut stats = FrameStats::default();
    let start = Instant::now();
    for k in 0..frames {
        player.wait_until(start + interval * k, |_| false)?;
        // A window frame, drawn by the GPU after its commit, when the last one is shown.
        if k % ui_every == 0 && ui_waiting.is_none() {
            let index = player.session.released_buffer(ANSWER_TIMEOUT)?;
            let fence = player.session.buffers[index].start_write(ANSWER_TIMEOUT)?;
            let number = ui_frames;
            let committed = player.session.commit(index, UI_FRAME + number)?;
            player.gpu = Some(GpuJob {
                due: committed + delay,
                index,
                colour: ui_colour(number),
                fence,
            });
            ui_waiting = Some(UiFrame {
                number,
                colour: ui_colour(number),
                committed,
            });
            ui_frames += 1;
        }
        // The video frame: filled by the CPU, committed on the desynchronised subsurface.
        let v = player.free_video_buffer(ANSWER_TIMEOUT)?;
        let quadrants = video_colours(common.tag, k);
        player.video.buffers[v].fill(quadrants);
        let surface = &player.video.surface;
        surface.attach(Some(&player.video.buffers[v].wl), 0, 0);
        surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        player.session.client.frame(surface, k);
        surface.commit();
        player.video.free[v] = false;
        player.session.client.flush()?;
        let committed = Instant::now();
        let shown = player.frame_done(k, ANSWER_TIMEOUT)?;
        let image = player.session.capture()?;
        let origin = window_origin(&image, is_window(common.tag, ui_frames));
        let right = origin.is_some_and(|o| video_shown(&image, o, rect, quadrants));
        stats.frame(shown - committed, right);
        // The window's frame, in the first capture after its frame callback.
        if let Some(ui) =
            ui_waiting.take_if(|ui| player.session.client.state.frame_done(UI_FRAME + ui.number))
        {
            let at = player
                .session
                .frame_done(UI_FRAME + ui.number, Duration::ZERO)?;
            let right = origin.is_some_and(|o| window_shown(&image, o, size, rect, ui.colour));
            ui_stats.frame(at - ui.committed, right);
        }
    }
    if let Some(ui) = ui_waiting {
        let at = player.frame_done(UI_FRAME + ui.number, delay + ANSWER_TIMEOUT)?;
        let image = player.session.capture()?;
        let right = window_origin(&image, is_window(common.tag, ui_frames))
            .is_some_and(|o| window_shown(&image, o, size, rect, ui.colour));
        ui_stats.frame(at - ui.committed, right);
    }
    Ok(format!(
        "fbclient video-over-ui: {} max_frame_ms={} ui_frames={} ui_stale={} max_ui_frame_ms={} \
         video_memory={memory}",
        stats.counts(),
        stats.max_frame_ms(),
        ui_stats.frames,
        ui_stats.stale,
        ui_stats.max_frame_ms(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: (u32, u32) = (40, 24);

    /// A 100×60 output with the window at `at` in `window` colour, and the video's rectangle
    /// (shifted by `shift`, of `rect`'s size plus `grow`) in `quadrants`.
    fn output(
        at: (u32, u32),
        window: u32,
        quadrants: [u32; 4],
        shift: (u32, u32),
        grow: u32,
    ) -> Image {
        let (width, height) = (100, 60);
        let mut pixels = vec![0xff20_2428; (width * height) as usize];
        let rect = video_rect(SIZE);
        for y in 0..SIZE.1 {
            for x in 0..SIZE.0 {
                pixels[((at.1 + y) * width + at.0 + x) as usize] = window;
            }
        }
        let (vw, vh) = (rect.2 + grow, rect.3 + grow);
        for y in 0..vh {
            for x in 0..vw {
                let q = usize::from(y >= vh / 2) << 1 | usize::from(x >= vw / 2);
                let (ox, oy) = (at.0 + rect.0 + shift.0 + x, at.1 + rect.1 + shift.1 + y);
                pixels[(oy * width + ox) as usize] = quadrants[q];
            }
        }
        Image {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn the_video_must_be_at_its_place_and_of_its_size() {
        let window = colour(0, 3);
        let video = video_colours(0, 7);
        let rect = video_rect(SIZE);
        let right = output((30, 10), window, video, (0, 0), 0);
        let origin = window_origin(&right, is_window(0, 4)).unwrap();
        assert_eq!(origin, (30, 10));
        assert!(video_shown(&right, origin, rect, video));
        assert!(window_shown(&right, origin, SIZE, rect, window));
        // One pixel to the right, one pixel larger, another frame, quadrants swapped.
        let moved = output((30, 10), window, video, (1, 0), 0);
        assert!(!video_shown(&moved, origin, rect, video));
        let larger = output((30, 10), window, video, (0, 0), 1);
        assert!(!video_shown(&larger, origin, rect, video));
        assert!(!video_shown(&right, origin, rect, video_colours(0, 8)));
        let swapped = [video[1], video[0], video[2], video[3]];
        let mixed = output((30, 10), window, swapped, (0, 0), 0);
        assert!(!video_shown(&mixed, origin, rect, video));
        // The window's older frame.
        assert!(!window_shown(&right, origin, SIZE, rect, colour(0, 2)));
    }

    #[test]
    fn video_and_window_colours_never_meet() {
        let window: Vec<u32> = (0..MAX_FRAMES).map(|u| colour(5, u)).collect();
        for k in [0, 1, MAX_FRAMES - 1] {
            assert!(video_colours(5, k).iter().all(|c| !window.contains(c)));
        }
    }
}
