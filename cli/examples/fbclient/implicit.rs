//! `fbclient implicit`: the stale-frame scenario. Each frame is committed while its "GPU job"
//! (a vgem write fence) is still running; the pixels are written and the fence signalled only
//! afterwards. A compositor that waits for the fence shows the new colour; one that samples at
//! once shows the buffer's old contents, and the screencopy that follows the frame callback
//! catches it.
//!
//! Pipelined (`--pipelined`), the client writes each buffer as soon as the compositor gives it
//! back, while the frame that read it may still be drawing: two buffers, and the next frames
//! are committed before the last one's capture is read. A GPU driver makes such a write wait
//! for the readers' fences on the dma-buf; so does this client (`start_write` polls for them).
//! If the compositor's read fence is not there, the write changes the frame being read, and the
//! capture of that frame shows the later colour.

use std::time::Duration;

use crate::pixels::colour;
use crate::session::Session;
use crate::wlclient::{WlError, ANSWER_TIMEOUT};
use crate::{Common, FrameStats};

/// Three buffers: one shown, one waiting, one being written, as a GPU client keeps them.
const BUFFERS: usize = 3;

/// Runs `frames` frames, each with its write fence signalled `delay` after the commit.
pub fn run(common: &Common, frames: u32, delay: Duration) -> Result<String, WlError> {
    let mut session = Session::new("fbclient implicit", common.size, BUFFERS)?;
    let mut stats = FrameStats::default();
    for k in 0..frames {
        let committed = render(&mut session, common, k, delay)?;
        let shown = session.frame_done(k, delay + ANSWER_TIMEOUT)?;
        let c = colour(common.tag, k);
        stats.frame(shown - committed, session.shows(c, common.size)?);
    }
    Ok(format!(
        "fbclient implicit: {} max_frame_ms={}",
        stats.counts(),
        stats.max_frame_ms()
    ))
}

/// `--pipelined`: two buffers, each written as soon as it is released. Every other frame is
/// captured right after its frame callback (the frame that reads it is then being drawn), and
/// judged only after the next two frames were committed — the second of them into the very
/// buffer that frame reads.
pub fn run_pipelined(common: &Common, frames: u32, delay: Duration) -> Result<String, WlError> {
    let mut session = Session::new("fbclient implicit", common.size, 2)?;
    let mut stats = FrameStats::default();
    let mut captured = None;
    for k in 0..frames {
        let committed = render(&mut session, common, k, delay)?;
        if k % 2 == 1 {
            continue; // committed without waiting: the next write is into the buffer being read
        }
        if let Some((capture, c, time)) = captured.take() {
            let right = session.showed(capture, c, common.size)?;
            stats.frame(time, right);
        }
        let shown = session.frame_done(k, delay + ANSWER_TIMEOUT)?;
        let capture = session.request_capture()?;
        captured = Some((capture, colour(common.tag, k), shown - committed));
    }
    if let Some((capture, c, time)) = captured {
        let right = session.showed(capture, c, common.size)?;
        stats.frame(time, right);
    }
    Ok(format!(
        "fbclient implicit: {} max_frame_ms={}",
        stats.counts(),
        stats.max_frame_ms()
    ))
}

/// Frame `k`: a released buffer, its write fence attached once the compositor's reads of it
/// are over, the commit, the "GPU" writing for `delay`, the colour, the fence signalled.
/// Returns when the commit left.
fn render(
    session: &mut Session,
    common: &Common,
    k: u32,
    delay: Duration,
) -> Result<std::time::Instant, WlError> {
    let index = session.released_buffer(ANSWER_TIMEOUT)?;
    let fence = session.buffers[index].start_write(ANSWER_TIMEOUT)?;
    let committed = session.commit(index, k)?;
    std::thread::sleep(delay); // the GPU is busy
    session.buffers[index].fill(colour(common.tag, k));
    fence
        .signal()
        .map_err(|e| WlError::new("io", format!("signalling the vgem fence: {e}")))?;
    Ok(committed)
}
