//! `fbclient explicit`: linux-drm-syncobj-v1 with one timeline per buffer (as Vulkan WSI does).
//! Each frame is committed with an acquire point the client signals from the CPU only after
//! writing the pixels, and a release point after it. Besides the stale check it watches the
//! release points: commit k's must not signal before k's frame callback nor while k's buffer
//! is still the surface's current one, and must signal soon after commit k+1 is shown.

use std::time::{Duration, Instant};

use crate::pixels::colour;
use crate::session::Session;
use crate::wlclient::{Syncobj, WlError, ANSWER_TIMEOUT};
use crate::{Common, FrameStats};

/// How long after the next commit's frame callback a release point may take to signal.
pub const RELEASE_BOUND: Duration = Duration::from_secs(2);

const BUFFERS: usize = 3;

/// A shown frame whose release point is still watched.
struct Shown {
    buffer: usize,
    release: u64,
    /// Already counted as released early (a frame counts once).
    early: bool,
}

/// Runs `frames` frames, each acquire point signalled `delay` after its commit.
pub fn run(common: &Common, frames: u32, delay: Duration) -> Result<String, WlError> {
    let mut session = Session::new("fbclient explicit", common.size, BUFFERS)?;
    let sync = session.syncobj()?;
    // Per buffer: the last point used, and the release point to wait for before reuse.
    let mut last_point = [0u64; BUFFERS];
    let mut releases: [Option<u64>; BUFFERS] = [None; BUFFERS];
    let mut stats = FrameStats::default();
    let (mut early, mut late) = (0u32, 0u32);
    let mut previous: Option<Shown> = None;
    for k in 0..frames {
        let index = free_buffer(&mut session, &sync, &releases)?;
        let (acquire, release) = (last_point[index] + 1, last_point[index] + 2);
        last_point[index] = release;
        releases[index] = Some(release);
        sync.set_points(index, acquire, release);
        let committed = session.commit(index, k)?;
        std::thread::sleep(delay); // the GPU is busy
        let c = colour(common.tag, k);
        session.buffers[index].fill(c);
        // Commit k cannot apply before its acquire point: k-1's buffer is still current.
        if let Some(p) = &mut previous {
            if !p.early && sync.signalled(p.buffer, p.release)? {
                p.early = true;
                early += 1;
            }
        }
        sync.signal(index, acquire)?;
        let shown = session.frame_done(k, delay + ANSWER_TIMEOUT)?;
        // Shown, and still current: its release point must be pending.
        let this = Shown {
            buffer: index,
            release,
            early: sync.signalled(index, release)?,
        };
        early += u32::from(this.early);
        // k-1's buffer was replaced: its release point is due now.
        if let Some(p) = previous.take() {
            let deadline = Instant::now() + RELEASE_BOUND;
            while !sync.signalled(p.buffer, p.release)? && Instant::now() < deadline {
                session.client.dispatch_for(Duration::from_millis(2))?;
            }
            late += u32::from(!sync.signalled(p.buffer, p.release)?);
        }
        stats.frame(shown - committed, session.shows(c, common.size)?);
        previous = Some(this);
    }
    // The last buffer is still current: its release point must not have signalled.
    if let Some(p) = previous {
        early += u32::from(!p.early && sync.signalled(p.buffer, p.release)?);
    }
    Ok(format!(
        "fbclient explicit: {} release_early={early} release_late={late} max_frame_ms={}",
        stats.counts(),
        stats.max_frame_ms()
    ))
}

/// A buffer whose last release point has signalled (or that was never committed); waits up to
/// [`ANSWER_TIMEOUT`] for one.
fn free_buffer(
    session: &mut Session,
    sync: &Syncobj,
    releases: &[Option<u64>; BUFFERS],
) -> Result<usize, WlError> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        for (i, release) in releases.iter().enumerate() {
            match release {
                None => return Ok(i),
                Some(point) if sync.signalled(i, *point)? => return Ok(i),
                Some(_) => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(WlError::new(
                "timeout",
                format!(
                    "no release point of the {BUFFERS} buffers signalled within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ),
            ));
        }
        session.client.dispatch_for(Duration::from_millis(5))?;
    }
}
