//! [`SyncFileSource`]: fires once when a sync_file signals.

use std::sync::Arc;

use calloop::{EventSource, Poll, PostAction, Readiness, Token, TokenFactory};

use super::OneShot;
use crate::fence::SyncFile;

/// A calloop source that fires once, when its [`SyncFile`] signals, and hands the fence back.
/// The fence may be shared (an `Arc`), so that whoever else keeps it (a commit handing it to the
/// renderer) holds the same fd rather than a duplicate.
#[derive(Debug)]
pub struct SyncFileSource(OneShot<Arc<SyncFile>>);

impl SyncFileSource {
    /// Waits for `fence` once inserted into a loop. (Check
    /// [`SyncFile::is_signalled`](crate::fence::SyncFile::is_signalled) first to skip the
    /// source on the fast path.)
    pub fn new(fence: impl Into<Arc<SyncFile>>) -> Self {
        SyncFileSource(OneShot::new(fence.into()))
    }
}

impl EventSource for SyncFileSource {
    /// The fence, now signalled.
    type Event = Arc<SyncFile>;
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
        F: FnMut(Arc<SyncFile>, &mut ()),
    {
        self.0
            .process(readiness, token, |fence| callback(fence.clone(), &mut ()))
    }

    fn register(&mut self, poll: &mut Poll, tf: &mut TokenFactory) -> calloop::Result<()> {
        self.0.register(poll, tf)
    }

    fn reregister(&mut self, poll: &mut Poll, tf: &mut TokenFactory) -> calloop::Result<()> {
        self.0.reregister(poll, tf)
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.0.unregister(poll)
    }
}
