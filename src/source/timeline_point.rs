//! [`TimelinePointSource`]: fires once when a timeline point is ready.

use std::os::fd::{AsFd, OwnedFd};

use calloop::channel::{self, Channel};
use calloop::{EventSource, Poll, PostAction, Readiness, Token, TokenFactory};
use rustix::event::{eventfd, EventfdFlags};

use super::OneShot;
use crate::timeline::{PointWatch, Timeline, WaitFor};
use crate::{Error, Result};

/// How to wait for a point that is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMethod {
    /// `SYNCOBJ_EVENTFD` where the kernel has it, else the waiter thread.
    #[default]
    Auto,
    /// Always the device's shared waiter thread (tests the fallback on kernels that have
    /// eventfd).
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
        /// Dropping it takes the point out of the waiter's set.
        _watch: PointWatch,
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

/// The fallback: the device's one waiter thread waits for this point among all others and
/// reports through a calloop channel of this source's own. Dropping the source cancels the
/// wait.
fn spawn_waiter(timeline: &Timeline, point: u64, wait_for: WaitFor) -> Result<Inner> {
    let (sender, channel) = channel::channel();
    let notify = Box::new(move |result: Result<()>| {
        // A send fails only when the source is gone, and then nobody listens.
        let _ = sender.send(result);
    });
    let watch = timeline.watch(point, wait_for, notify)?;
    Ok(Inner::Thread {
        channel,
        _watch: watch,
    })
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
