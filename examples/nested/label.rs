//! Labels for people looking at the output (`--labels`, as `cargo xtask demo` runs it): under
//! each window, its client (the window's title) and the sync path fencebridge took for it; a
//! red frame and a STALE mark around a window whose buffer was drawn while its client was
//! still writing it (a write fence pending on the dma-buf when the frame read it: what a
//! compositor without the bridge shows); and a caption at the bottom. They are drawn on the
//! finished frame, so screenshots and captures show them.

use std::collections::HashSet;
use std::path::PathBuf;

use fencebridge::bridge::producer_class::ProducerClass;
use fencebridge::fence::{dmabuf, Access};
use fencebridge::wayland::CommitPath;
use smithay::reexports::wayland_server::backend::ObjectId;
use smithay::reexports::wayland_server::protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface};
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor::with_states;
use smithay::wayland::dmabuf::get_dmabuf;
use smithay::wayland::shell::xdg::XdgToplevelSurfaceData;

use crate::render::{self, Canvas};
use crate::screen;
use crate::state::Nested;

const TEXT: u32 = 0xe0_e0e0;
const STALE: u32 = 0xff_3030;
/// Glyphs are 8×8 pixels; a line takes 10.
const LINE: i32 = 10;

/// A window as a frame placed it.
pub struct Placed {
    pub surface: WlSurface,
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

/// What the labels need between frames.
pub struct Labels {
    /// The line at the bottom of the output.
    caption: String,
    /// Surfaces whose buffer had a write pending when the frame being drawn read it.
    mid_write: HashSet<ObjectId>,
    /// Frames that showed a window mid-write, over the run.
    pub stale_frames: u64,
    /// Whether the frame the labels were last drawn for showed one.
    last_frame_stale: bool,
    /// Where to write the first frame that showed a window mid-write (`--png-stale`).
    first_stale_png: Option<PathBuf>,
}

impl Labels {
    pub fn new(caption: String, first_stale_png: Option<PathBuf>) -> Labels {
        Labels {
            caption,
            mid_write: HashSet::new(),
            stale_frames: 0,
            last_frame_stale: false,
            first_stale_png,
        }
    }

    /// The whole frame the labels were last drawn for, as shown: written to `--png-stale` if
    /// it is the first that showed a window mid-write.
    pub fn frame_shown(&mut self, frame: &Canvas) {
        if !self.last_frame_stale {
            return;
        }
        if let Some(path) = self.first_stale_png.take() {
            if let Err(e) = render::write_png(frame, &path) {
                tracing::warn!("nested: {}: {e}", path.display());
            }
        }
    }
}

/// Before a frame reads `surfaces`' buffers: notes those whose dma-buf still has a write
/// pending (a non-blocking export of its fences for a read).
pub fn frame_reads(state: &mut Nested, surfaces: &[screen::Placed]) {
    let Some(labels) = &mut state.screen.labels else {
        return;
    };
    labels.mid_write = surfaces
        .iter()
        .filter(|placed| being_written(&placed.buffer))
        .map(|placed| placed.surface.id())
        .collect();
}

fn being_written(buffer: &WlBuffer) -> bool {
    let Ok(buffer) = get_dmabuf(buffer) else {
        return false;
    };
    buffer.handles().any(|plane| {
        dmabuf::export_one(plane, Access::Read)
            .and_then(|fence| fence.is_signalled())
            .is_ok_and(|signalled| !signalled)
    })
}

/// Draws the labels of the windows `placed` on `canvas`: the frame that showed them, or an
/// overlay a GPU backend composes over it.
pub fn draw(state: &mut Nested, canvas: &mut Canvas, placed: &[Placed]) {
    let Some(labels) = &state.screen.labels else {
        return;
    };
    let mut stale = false;
    for window in placed {
        let mid_write = labels.mid_write.contains(&window.surface.id());
        stale |= mid_write;
        let mut lines = vec![title(&window.surface), sync_path(state, &window.surface)];
        if mid_write {
            lines.push("STALE: drawn while its client was still writing it".to_owned());
            outline(canvas, window, STALE);
        }
        // One column short of the window: a gap before the next label.
        let columns = (window.width as usize / 8).saturating_sub(1).max(8);
        let mut y = window.y + window.height as i32 + 4;
        for line in lines.iter().flat_map(|line| wrap(line, columns)) {
            let colour = if line.starts_with("STALE") || mid_write {
                STALE
            } else {
                TEXT
            };
            text(canvas, window.x + 2, y, &line, colour);
            y += LINE;
        }
    }
    let bottom = canvas.height() as i32 - LINE - 2;
    let columns = canvas.width() as usize / 8;
    let Some(labels) = &mut state.screen.labels else {
        return;
    };
    labels.stale_frames += u64::from(stale);
    labels.last_frame_stale = stale;
    let caption = format!(
        "{}   frames so far showing a window mid-write: {}",
        labels.caption, labels.stale_frames
    );
    for (i, line) in wrap(&caption, columns).iter().rev().enumerate() {
        text(canvas, 4, bottom - i as i32 * LINE, line, TEXT);
    }
}

/// The window's title (clients name themselves there), or its client's pid.
fn title(surface: &WlSurface) -> String {
    let title = with_states(surface, |states| {
        states
            .data_map
            .get::<XdgToplevelSurfaceData>()
            .and_then(|data| data.lock().ok()?.title.clone())
    });
    title.unwrap_or_else(|| format!("{}", surface.id()))
}

/// How the client's commits are synchronised, as fencebridge saw them (its most frequent
/// path), in a few words.
fn sync_path(state: &Nested, surface: &WlSurface) -> String {
    if !state.bridge_on {
        return "no bridge: shown at once, fences ignored".to_owned();
    }
    let Some(report) = surface
        .client()
        .and_then(|client| state.bridge.client_report(&client.id()))
    else {
        return String::new();
    };
    let path = report
        .commits
        .iter()
        .filter(|(path, _)| **path != CommitPath::NoBuffer)
        .max_by_key(|(_, n)| **n)
        .map(|(path, _)| *path);
    let words = match path {
        Some(CommitPath::ImplicitWaited) => "implicit sync: waits for its dma-buf's fences",
        Some(CommitPath::ExplicitWaited | CommitPath::ExplicitReady) => {
            "explicit sync: waits for its syncobj points"
        }
        Some(CommitPath::Shm) => "wl_shm: copied at commit",
        Some(CommitPath::ImplicitReady) if report.producer == ProducerClass::NonFencing => {
            "no fences (V4L2): released after the reads"
        }
        Some(CommitPath::ImplicitReady) => "implicit sync: nothing pending",
        Some(CommitPath::ImplicitUnwaited) => "implicit: could not wait",
        Some(CommitPath::NoBuffer) | None => "",
    };
    words.to_owned()
}

/// `line` cut into lines of at most `columns` characters, at spaces where it can.
fn wrap(line: &str, columns: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in line.split_whitespace() {
        if !current.is_empty() && current.len() + 1 + word.len() > columns {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        while current.len() > columns {
            let rest = current.split_off(columns);
            lines.push(std::mem::replace(&mut current, rest));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Draws `text` (ASCII; anything else as `?`) with its top-left corner at (x, y).
pub fn text(canvas: &mut Canvas, x: i32, y: i32, text: &str, colour: u32) {
    for (i, c) in text.chars().enumerate() {
        let code = if c.is_ascii() {
            c as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let left = x + i as i32 * 8;
        for (row, bits) in glyph.iter().enumerate() {
            for column in 0..8 {
                if bits >> column & 1 == 1 {
                    canvas.fill_rect(left + column, y + row as i32, 1, 1, colour);
                }
            }
        }
    }
}

/// A 3-pixel frame just inside the window's edges.
fn outline(canvas: &mut Canvas, window: &Placed, colour: u32) {
    let (x, y, w, h) = (window.x, window.y, window.width, window.height);
    canvas.fill_rect(x, y, w, 3, colour);
    canvas.fill_rect(x, y + h as i32 - 3, w, 3, colour);
    canvas.fill_rect(x, y, 3, h, colour);
    canvas.fill_rect(x + w as i32 - 3, y, 3, h, colour);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("fbclient implicit", 16), ["fbclient", "implicit"]);
        assert_eq!(wrap("a b c", 16), ["a b c"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert!(wrap("", 4).is_empty());
    }

    #[test]
    fn text_sets_the_glyph_pixels_only() {
        let mut canvas = Canvas::new(16, 8);
        canvas.clear(0);
        text(&mut canvas, 0, 0, "I ", 0xff_ffff);
        let lit = canvas
            .pixels()
            .iter()
            .filter(|&&p| p & 0xff_ffff != 0)
            .count();
        let bits: u32 = font8x8::legacy::BASIC_LEGACY['I' as usize]
            .iter()
            .map(|row| row.count_ones())
            .sum();
        assert_eq!(lit as u32, bits);
        assert!(lit > 0);
    }
}
