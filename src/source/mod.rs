//! calloop event sources: a [`SyncFile`](crate::fence::SyncFile) becoming ready
//! ([`SyncFileSource`]) and a timeline point becoming ready ([`TimelinePointSource`]: by
//! `SYNCOBJ_EVENTFD`, or where the kernel lacks it by the syncobj device's one waiter thread,
//! which waits for every pending point at once and wakes the loop through a calloop channel).
//! Both are one-shot: they fire once and remove themselves. Nothing here blocks the loop
//! thread, and an already-signalled point needs no source at all ([`PointWait::Ready`]).
//!
//! # How to use
//! ```no_run
//! use fencebridge::source::{PointWait, WaitMethod};
//! use fencebridge::timeline::{SyncobjDevice, WaitFor};
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let mut event_loop = calloop::EventLoop::<Vec<u64>>::try_new()?;
//! let timeline = SyncobjDevice::find()?.create_timeline()?;
//! match PointWait::new(&timeline, 5, WaitFor::Signalled, WaitMethod::Auto)? {
//!     PointWait::Ready => println!("already signalled: no fd, no source"),
//!     PointWait::Pending(source) => {
//!         event_loop.handle().insert_source(source, |result, _, ready| {
//!             result.expect("the wait failed");
//!             ready.push(5);
//!         })?;
//!     }
//! }
//! # Ok(()) }
//! ```

mod sync_file;
mod timeline_point;

pub use sync_file::SyncFileSource;
pub use timeline_point::{PointWait, TimelinePointSource, WaitMethod};

use calloop::generic::Generic;
use calloop::{Interest, Mode, PostAction, Readiness, Token};
use std::os::fd::AsFd;

/// A Generic source that fires once: on the first readiness it lends its fd-backed value to
/// the caller and asks calloop to remove it. The shared core of both one-shot sources.
#[derive(Debug)]
struct OneShot<F: AsFd>(Generic<F>);

impl<F: AsFd> OneShot<F> {
    fn new(file: F) -> Self {
        OneShot(Generic::new(file, Interest::READ, Mode::OneShot))
    }

    /// Runs `fire` with the value if this readiness is ours, then asks calloop to remove us.
    /// calloop deletes the fd from the poller after `fire` returns, so the wake path (a commit
    /// applied from `fire`) does not wait for that syscall.
    fn process(
        &mut self,
        readiness: Readiness,
        token: Token,
        fire: impl FnOnce(&F),
    ) -> std::io::Result<PostAction> {
        let mut ours = false;
        calloop::EventSource::process_events(&mut self.0, readiness, token, |_, _| {
            ours = true;
            Ok(PostAction::Disable)
        })?;
        if !ours {
            return Ok(PostAction::Continue);
        }
        fire(self.0.get_ref());
        Ok(PostAction::Remove)
    }

    fn register(
        &mut self,
        poll: &mut calloop::Poll,
        tf: &mut calloop::TokenFactory,
    ) -> calloop::Result<()> {
        calloop::EventSource::register(&mut self.0, poll, tf)
    }

    fn reregister(
        &mut self,
        poll: &mut calloop::Poll,
        tf: &mut calloop::TokenFactory,
    ) -> calloop::Result<()> {
        calloop::EventSource::reregister(&mut self.0, poll, tf)
    }

    fn unregister(&mut self, poll: &mut calloop::Poll) -> calloop::Result<()> {
        calloop::EventSource::unregister(&mut self.0, poll)
    }
}
