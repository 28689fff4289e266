//! `fbclient implicit`: the stale-frame scenario. Each frame is committed while its "GPU job"
//! (a vgem write fence) is still running; the pixels are written and the fence signalled only
//! afterwards. A compositor that waits for the fence shows the new colour; one that samples at
//! once shows the buffer's old contents, and the screencopy that follows the frame callback
//! catches it.

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
        let index = session.released_buffer(ANSWER_TIMEOUT)?;
        let fence = session.buffers[index].start_write(ANSWER_TIMEOUT)?;
        let committed = session.commit(index, k)?;
        std::thread::sleep(delay); // the GPU is busy
        let c = colour(common.tag, k);
        session.buffers[index].fill(c);
        fence
            .signal()
            .map_err(|e| WlError::new("io", format!("signalling the vgem fence: {e}")))?;
        let shown = session.frame_done(k, delay + ANSWER_TIMEOUT)?;
        stats.frame(shown - committed, session.shows(c, common.size)?);
    }
    Ok(format!(
        "fbclient implicit: {} max_frame_ms={}",
        stats.counts(),
        stats.max_frame_ms()
    ))
}
