//! `fbclient capture`: a screencast consumer, as a PipeWire screencast client is. It shows
//! frames of known colours in its window and, after each frame callback, captures the output
//! into a dma-buf of its own (wlr-screencopy v3's `linux_dmabuf` offer, a vgem buffer through
//! linux-dmabuf). The compositor may say `ready` while its GPU still writes that buffer; the
//! consumer waits for the buffer's fences (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`, read access) and
//! reads the pixels through its mapping. A capture is stale when it does not show the frame on
//! a whole window's worth of pixels: the compositor's copy was not written yet when the
//! consumer's wait ended, because its write fence was not on the buffer.

use crate::capture::CaptureBuffers;
use crate::pixels::{colour, count_colour};
use crate::session::Session;
use crate::wlclient::{WlError, ANSWER_TIMEOUT};
use crate::{Common, FrameStats};

/// Two window buffers: one shown, one written.
const BUFFERS: usize = 2;

/// Runs `frames` frames, each captured into a dma-buf after its frame callback.
pub fn run(common: &Common, frames: u32) -> Result<String, WlError> {
    let mut session = Session::new("fbclient capture", common.size, BUFFERS)?;
    let mut captures = CaptureBuffers::new()?;
    let mut stats = FrameStats::default();
    let (mut pending_at_ready, mut max_wait) = (0, std::time::Duration::ZERO);
    let (width, height) = common.size;
    for k in 0..frames {
        let index = session.released_buffer(ANSWER_TIMEOUT)?;
        // Written before the commit, once the compositor's reads of it are over.
        let fence = session.buffers[index].start_write(ANSWER_TIMEOUT)?;
        let c = colour(common.tag, k);
        session.buffers[index].fill(c);
        fence
            .signal()
            .map_err(|e| WlError::new("io", format!("signalling the vgem fence: {e}")))?;
        let committed = session.commit(index, k)?;
        let shown = session.frame_done(k, ANSWER_TIMEOUT)?;
        let capture = session.capture_dmabuf(&mut captures)?;
        let image = &capture.image;
        if image.width < width || image.height < height {
            return Err(WlError::new(
                "output-too-small",
                format!(
                    "the output ({}x{}) is smaller than the window ({width}x{height})",
                    image.width, image.height
                ),
            ));
        }
        pending_at_ready += u32::from(capture.pending_at_ready);
        max_wait = max_wait.max(capture.wait);
        let right = count_colour(&image.pixels, c) >= width as usize * height as usize;
        stats.frame(shown - committed, right);
    }
    Ok(format!(
        "fbclient capture: {} pending_at_ready={pending_at_ready} max_wait_ms={} \
         max_frame_ms={}",
        stats.counts(),
        max_wait.as_millis(),
        stats.max_frame_ms()
    ))
}
