//! [`TimelinePointSource`]: fires once when a timeline point is ready.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use calloop::channel::{self, Channel};
use calloop::{EventSource, Poll, PostAction, Readiness, Token, TokenFactory};
use rustix::event::{eventfd, EventfdFlags};

use super::OneShot;
use crate::timeline::{OwnedSyncobj, Timeline, WaitFor};
use crate::{Error, Result};

/// How to wait for a point that is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMethod {
    /// `SYNCOBJ_EVENTFD` where the kernel has it, else the waiter thread.
    #[default]
    Auto,
    /// Always the waiter thread (tests the fallback on kernels that have eventfd).
    WaiterThread,
}

/// The result of asking for a point: ready now (no fd, no source), or a source to insert.
#[derive(Debug)]
pub enum PointWait {
    /// Already signalled: nothing to wait for.
    Ready,
    /// Insert this source; it fires once the point is ready.
    Pending(TimelinePointSource),
}

/// A calloop source that fires once when a timeline point is ready. Its event is `Ok(())`, or
/// the error that ended a waiter thread's wait.
#[derive(Debug)]
pub struct TimelinePointSource(Inner);

#[derive(Debug)]
enum Inner {
    Eventfd(OneShot<OwnedFd>),
    Thread {
        channel: Channel<Result<()>>,
        cancel: Arc<OwnedSyncobj>,
    },
}

impl PointWait {
    /// Waits for `point` of `timeline`. Checks first (one query ioctl) whether it has already
    /// signalled, and then creates nothing.
    pub fn new(
        timeline: &Timeline,
        point: u64,
        wait_for: WaitFor,
        method: WaitMethod,
    ) -> Result<PointWait> {
        if timeline.is_signalled(point)? {
            return Ok(PointWait::Ready);
        }
        TimelinePointSource::new(timeline, point, wait_for, method).map(PointWait::Pending)
    }
}

impl TimelinePointSource {
    /// A source for `point` without asking first whether it has signalled, for a caller that
    /// has just asked: a point that signalled in between fires the source at once (the
    /// kernel's eventfd registration and the waiter's wait both see it).
    pub fn new(
        timeline: &Timeline,
        point: u64,
        wait_for: WaitFor,
        method: WaitMethod,
    ) -> Result<TimelinePointSource> {
        let inner = if method == WaitMethod::Auto && timeline.device().supports_eventfd() {
            let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(Error::io("eventfd"))?;
            timeline.register_eventfd(point, efd.as_fd(), wait_for)?;
            Inner::Eventfd(OneShot::new(efd))
        } else {
            spawn_waiter(timeline, point, wait_for)?
        };
        Ok(TimelinePointSource(inner))
    }
}

/// The fallback: a thread blocks in `SYNCOBJ_TIMELINE_WAIT` on the point and on a private
/// "cancel" syncobj, and reports through a calloop channel. Dropping the source signals the
/// cancel syncobj, so the thread never outlives its use; both share the cancel syncobj so its
/// handle is destroyed only after both let go (a handle number is never reused under either).
fn spawn_waiter(timeline: &Timeline, point: u64, wait_for: WaitFor) -> Result<Inner> {
    let cancel = Arc::new(OwnedSyncobj::new(timeline.device(), false)?);
    let (sender, channel) = channel::channel();
    let (timeline, thread_cancel) = (timeline.clone(), cancel.clone());
    std::thread::Builder::new()
        .name("fencebridge-point-waiter".into())
        .spawn(move || {
            let handles = [timeline.syncobj().handle(), thread_cancel.handle()];
            let result = timeline
                .device()
                .wait_any(&handles, &[point, 0], wait_for, i64::MAX);
            if !matches!(result, Ok(1)) {
                // Ok(1) is the cancel: the source is gone and nobody listens.
                let _ = sender.send(result.map(drop));
            }
        })
        .map_err(|e| Error::Io {
            op: "spawn waiter thread",
            errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::AGAIN),
        })?;
    Ok(Inner::Thread { channel, cancel })
}

impl Drop for TimelinePointSource {
    fn drop(&mut self) {
        if let Inner::Thread { cancel, .. } = &self.0 {
            let _ = cancel.device().signal_binary(cancel.handle());
        }
    }
}

impl EventSource for TimelinePointSource {
    /// `Ok(())` once the point is ready.
    type Event = Result<()>;
    type Metadata = ();
    type Ret = ();
    type Error = std::io::Error;

    fn process_events<F>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: F,
    ) -> std::io::Result<PostAction>
    where
        F: FnMut(Result<()>, &mut ()),
    {
        match &mut self.0 {
            // The eventfd's count does not matter: it is closed right after.
            Inner::Eventfd(oneshot) => {
                oneshot.process(readiness, token, |_efd| callback(Ok(()), &mut ()))
            }
            Inner::Thread { channel, .. } => {
                let mut fired = false;
                channel
                    .process_events(readiness, token, |event, _| {
                        if let channel::Event::Msg(result) = event {
                            fired = true;
                            callback(result, &mut ());
                        }
                    })
                    .map_err(std::io::Error::other)?;
                Ok(if fired {
                    PostAction::Remove
                } else {
                    PostAction::Continue
                })
            }
        }
    }

    fn register(&mut self, poll: &mut Poll, tf: &mut TokenFactory) -> calloop::Result<()> {
        match &mut self.0 {
            Inner::Eventfd(o) => o.register(poll, tf),
            Inner::Thread { channel, .. } => channel.register(poll, tf),
        }
    }

    fn reregister(&mut self, poll: &mut Poll, tf: &mut TokenFactory) -> calloop::Result<()> {
        match &mut self.0 {
            Inner::Eventfd(o) => o.reregister(poll, tf),
            Inner::Thread { channel, .. } => channel.reregister(poll, tf),
        }
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        match &mut self.0 {
            Inner::Eventfd(o) => o.unregister(poll),
            Inner::Thread { channel, .. } => channel.unregister(poll),
        }
    }
}
