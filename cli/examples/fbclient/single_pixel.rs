//! `fbclient single-pixel`: wp_single_pixel_buffer_manager_v1, as a toolkit draws a solid
//! background or a player its black bars: each frame a one-pixel buffer of the frame's colour,
//! stretched over the whole window by wp_viewporter, committed, and after its frame callback
//! found on the output on exactly a window's worth of pixels (stale otherwise).
//! -> fbclient single-pixel: frames=N stale=S max_frame_ms=M

use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_protocols::wp::single_pixel_buffer::v1::client::wp_single_pixel_buffer_manager_v1::WpSinglePixelBufferManagerV1;
use wayland_protocols::wp::viewporter::client::wp_viewporter::WpViewporter;

use crate::pixels::{colour, count_colour};
use crate::session::{Attachable, Session};
use crate::tree::{self, Tree};
use crate::wlclient::{WlError, ANSWER_TIMEOUT};
use crate::{Common, FrameStats};

/// A single-pixel buffer.
pub struct SinglePixel(WlBuffer);

impl Attachable for SinglePixel {
    fn wl(&self) -> &WlBuffer {
        &self.0
    }
}

impl Drop for SinglePixel {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

/// The protocol's channels of an opaque 0xXXRRGGBB colour: red, green, blue, alpha, each
/// scaled so that u32::MAX is 1.0.
fn channels(xrgb: u32) -> [u32; 4] {
    let channel = |shift: u32| ((xrgb >> shift) & 0xff) * 0x0101_0101;
    [channel(16), channel(8), channel(0), u32::MAX]
}

/// Shows `frames` colours, one single-pixel buffer each.
pub fn run(common: &Common, frames: u32) -> Result<String, WlError> {
    let mut manager: Option<WpSinglePixelBufferManagerV1> = None;
    let mut session =
        Session::with_buffers("fbclient single-pixel", frames as usize, |client, i| {
            let manager = match &manager {
                Some(m) => m,
                None => manager.insert(tree::bind(
                    client,
                    1..=1,
                    "wp_single_pixel_buffer_manager_v1",
                )?),
            };
            let [r, g, b, a] = channels(colour(common.tag, i as u32));
            Ok(SinglePixel(
                manager.create_u32_rgba_buffer(r, g, b, a, &client.qh, i),
            ))
        })?;
    let viewporter: WpViewporter = tree::bind(&session.client, 1..=1, "wp_viewporter")?;
    let viewport = viewporter.get_viewport(&session.window.surface, &session.client.qh, Tree);
    let (width, height) = common.size;
    viewport.set_destination(width as i32, height as i32);
    let mut stats = FrameStats::default();
    for k in 0..frames {
        let committed = session.commit(k as usize, k)?;
        let shown = session.frame_done(k, ANSWER_TIMEOUT)?;
        // Exactly the window: a viewport ignored shows one pixel, a wrong scale more or less.
        let image = session.capture()?;
        let on_screen = count_colour(&image.pixels, colour(common.tag, k));
        stats.frame(
            shown - committed,
            on_screen == width as usize * height as usize,
        );
    }
    Ok(format!(
        "fbclient single-pixel: {} max_frame_ms={}",
        stats.counts(),
        stats.max_frame_ms()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_scaled_to_the_full_u32_range() {
        assert_eq!(channels(0xff80_00ff), [0x8080_8080, 0, u32::MAX, u32::MAX]);
    }
}
