//! `fbclient stuck`: one good frame, then a frame whose acquire never signals (a vgem write
//! fence never signalled, or with `--explicit` an acquire point never signalled). The client
//! stays connected for a while: a compositor that waits for fences keeps showing the good
//! frame and sends no frame callback for the stuck one; one that does not shows the unfinished
//! buffer. vgem signals its fences by itself after about 10 s: keep `--seconds` below that.

use std::time::Duration;

use crate::pixels::colour;
use crate::session::Session;
use crate::wlclient::{WlError, ANSWER_TIMEOUT};
use crate::Common;

/// Commits the good frame and the stuck one, then dispatches for `seconds`.
pub fn run(common: &Common, explicit: bool, seconds: Duration) -> Result<String, WlError> {
    let mut session = Session::new("fbclient stuck", common.size, 2)?;
    let syncobj = explicit.then(|| session.syncobj()).transpose()?;

    // The good frame: written, then committed with nothing to wait for.
    let good = colour(common.tag, 0);
    session.buffers[0].fill(good);
    if let Some(s) = &syncobj {
        s.set_points(0, 1, 2);
        s.signal(0, 1)?;
    }
    session.commit(0, 0)?;
    session.frame_done(0, ANSWER_TIMEOUT)?;
    let good_shown = session.shows(good, common.size)?;

    // The stuck frame: its buffer is never written, its acquire never signals (the fence is
    // kept, unsignalled, until the client exits).
    let _fence = match &syncobj {
        Some(s) => {
            s.set_points(1, 1, 2);
            None
        }
        None => Some(session.buffers[1].start_write(ANSWER_TIMEOUT)?),
    };
    session.commit(1, 1)?;
    session.client.dispatch_for(seconds)?;
    let shown = session.client.state.frames_done.len();
    // Still the good frame: the stuck one's unfinished buffer must not be on screen.
    let still_good = session.shows(good, common.size)?;
    let stale = u32::from(!good_shown) + u32::from(!still_good);
    Ok(format!(
        "fbclient stuck: frames=2 stale={stale} shown={shown}"
    ))
}
