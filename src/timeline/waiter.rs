//! The shared point waiter, for kernels without `SYNCOBJ_EVENTFD`: one thread per syncobj device
//! (and per [`WaitFor`]) blocks in one `SYNCOBJ_TIMELINE_WAIT` over every pending point at once
//! (without `WAIT_ALL`: the kernel returns the first ready one), plus a private wake timeline
//! that the loop side signals when the set changes. 10,000 pending waits are one thread, not
//! 10,000.
//!
//! The set is a map of entries, each holding its [`Timeline`] (so a handle stays valid while its
//! entry exists) and a callback the thread calls once, outside the lock. Whoever changes the set
//! while the thread waits on an older snapshot of it signals the wake point the thread waits
//! for, once per snapshot: a burst of new waits costs one wake. Nothing is dropped under the
//! lock (dropping a timeline may destroy a handle, or drop the device, which stops its waiters).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::os::fd::AsFd;

use rustix::io::Errno;

use super::{SyncobjDevice, Timeline, WaitFor};
use crate::device::DrmNode;
use crate::sys::drm::{self as sys_drm, SyncobjHandle};
use crate::{Error, Result};

/// Called once from the waiter thread when the point is ready (or its wait failed).
pub(crate) type Notify = Box<dyn FnOnce(Result<()>) + Send>;

/// One device's waiter for one kind of wait; shared by the device, the thread and every
/// [`PointWatch`].
#[derive(Debug)]
pub(crate) struct Waiter {
    /// The device's DRM file, through an fd of the thread's own (the device may go first).
    node: DrmNode,
    /// The private timeline whose points wake the thread.
    wake: SyncobjHandle,
    wait_for: WaitFor,
    set: Mutex<WaitSet>,
}

struct Entry {
    timeline: Timeline,
    point: u64,
    notify: Notify,
}

#[derive(Default)]
struct WaitSet {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    /// Whether the thread is waiting on a snapshot of `entries` (or about to): a change must
    /// then signal `wake_point`.
    armed: bool,
    /// The wake point the thread waits for next; points below it have been signalled.
    wake_point: u64,
    /// Bumped by every change from outside the thread.
    changes: u64,
    shutdown: bool,
}

impl std::fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitSet")
            .field("entries", &self.entries.len())
            .field("armed", &self.armed)
            .field("wake_point", &self.wake_point)
            .finish()
    }
}

/// A point being waited for by a shared waiter; dropping it cancels the wait.
#[derive(Debug)]
pub(crate) struct PointWatch {
    waiter: Arc<Waiter>,
    id: u64,
}

impl Drop for PointWatch {
    fn drop(&mut self) {
        let removed = {
            let mut set = self.waiter.lock();
            let removed = set.entries.remove(&self.id);
            if removed.is_some() {
                self.waiter.changed(&mut set);
            }
            removed
        };
        drop(removed); // outside the lock: may destroy the timeline's handle
    }
}

impl Waiter {
    /// Starts the waiter thread for `device`.
    pub(super) fn spawn(device: &SyncobjDevice, wait_for: WaitFor) -> Result<Arc<Waiter>> {
        let node = device.node().try_clone()?;
        let wake = device.create_syncobj(false)?;
        let waiter = Arc::new(Waiter {
            node,
            wake,
            wait_for,
            set: Mutex::new(WaitSet {
                wake_point: 1,
                ..WaitSet::default()
            }),
        });
        let thread = waiter.clone();
        let spawned = std::thread::Builder::new()
            .name("fencebridge-waiter".into())
            .spawn(move || thread.run());
        if let Err(e) = spawned {
            device.destroy_syncobj(wake);
            return Err(Error::Io {
                op: "spawn the waiter thread",
                errno: Errno::from_io_error(&e).unwrap_or(Errno::AGAIN),
            });
        }
        Ok(waiter)
    }

    fn lock(&self) -> MutexGuard<'_, WaitSet> {
        self.set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `point` of `timeline` to the set.
    pub(super) fn watch(
        self: &Arc<Self>,
        timeline: &Timeline,
        point: u64,
        notify: Notify,
    ) -> PointWatch {
        let mut set = self.lock();
        set.next_id += 1;
        let id = set.next_id;
        set.entries.insert(
            id,
            Entry {
                timeline: timeline.clone(),
                point,
                notify,
            },
        );
        self.changed(&mut set);
        PointWatch {
            waiter: self.clone(),
            id,
        }
    }

    /// The set changed: wakes the thread if it waits on an older snapshot (once per snapshot).
    fn changed(&self, set: &mut WaitSet) {
        set.changes += 1;
        if std::mem::take(&mut set.armed) {
            // Under the lock, so wake points are signalled in increasing order.
            let signalled = sys_drm::syncobj_timeline_signal(
                self.node.as_fd(),
                &[self.wake],
                &[set.wake_point],
            );
            if let Err(e) = signalled {
                tracing::error!("fencebridge: could not wake the waiter thread: {e}");
            }
            set.wake_point += 1;
        }
    }

    /// The device is gone: the thread ends (its set is empty, as every entry holds the device).
    pub(super) fn stop(&self) {
        let mut set = self.lock();
        set.shutdown = true;
        self.changed(&mut set);
    }

    fn run(self: Arc<Self>) {
        let (mut handles, mut points, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let changes = {
                let mut set = self.lock();
                if set.shutdown {
                    break;
                }
                handles.clear();
                points.clear();
                ids.clear();
                handles.push(self.wake);
                points.push(set.wake_point);
                for (id, entry) in &set.entries {
                    ids.push(*id);
                    handles.push(entry.timeline.syncobj().handle());
                    points.push(entry.point);
                }
                set.armed = true;
                set.changes
            };
            // The handles stay valid: an entry holds its timeline, and one removed since the
            // snapshot fails the wait (ENOENT) or names another syncobj, whose wake-up maps to
            // no entry; either way the thread looks again.
            let woke = wait_any(&self.node, &handles, &points, self.wait_for, i64::MAX);
            let (fired, failed) = {
                let mut set = self.lock();
                set.armed = false;
                match woke {
                    Ok(0) => (Vec::new(), Vec::new()), // the set changed
                    Ok(i) => (self.ready(&mut set, ids[i - 1]), Vec::new()),
                    Err(Errno::INTR | Errno::AGAIN) => (Vec::new(), Vec::new()),
                    Err(errno) => self.sift(&mut set, errno, changes),
                }
            };
            for entry in fired {
                (entry.notify)(Ok(()));
            }
            for (entry, errno) in failed {
                (entry.notify)(Err(Error::io("DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT")(errno)));
            }
        }
        if let Err(e) = sys_drm::syncobj_destroy(self.node.as_fd(), self.wake) {
            tracing::warn!("fencebridge: could not destroy the waiter's wake syncobj: {e}");
        }
    }

    /// Entry `first` is ready: takes it, and every other entry that has signalled too (one
    /// query for the whole set), so a burst of signals costs one wake.
    fn ready(&self, set: &mut WaitSet, first: u64) -> Vec<Entry> {
        let mut fired: Vec<Entry> = set.entries.remove(&first).into_iter().collect();
        if self.wait_for != WaitFor::Signalled || set.entries.is_empty() {
            return fired;
        }
        let (ids, handles): (Vec<u64>, Vec<SyncobjHandle>) = set
            .entries
            .iter()
            .map(|(id, e)| (*id, e.timeline.syncobj().handle()))
            .unzip();
        let mut values = vec![0; handles.len()];
        if sys_drm::syncobj_timeline_query(self.node.as_fd(), &handles, &mut values).is_ok() {
            for (id, value) in ids.iter().zip(values) {
                if set.entries.get(id).is_some_and(|e| value >= e.point) {
                    fired.extend(set.entries.remove(id));
                }
            }
        }
        fired
    }

    /// The wait failed with `errno`: finds the entries it is about by waiting for each alone
    /// (no time), fires the ready ones, fails the broken ones, keeps the rest. If none is to
    /// blame and nothing changed since the snapshot, every entry fails rather than the thread
    /// spinning on an error it cannot place.
    fn sift(
        &self,
        set: &mut WaitSet,
        errno: Errno,
        changes: u64,
    ) -> (Vec<Entry>, Vec<(Entry, Errno)>) {
        let (mut ready, mut broken) = (Vec::new(), Vec::new());
        for (id, entry) in &set.entries {
            let handle = [entry.timeline.syncobj().handle()];
            match wait_any(&self.node, &handle, &[entry.point], self.wait_for, 0) {
                Ok(_) => ready.push(*id),
                Err(Errno::TIME) => {}
                Err(e) => broken.push((*id, e)),
            }
        }
        if ready.is_empty() && broken.is_empty() && set.changes == changes {
            tracing::error!("fencebridge: the waiter thread's wait failed: {errno}");
            broken = set.entries.keys().map(|id| (*id, errno)).collect();
        }
        let fired = ready
            .into_iter()
            .filter_map(|id| set.entries.remove(&id))
            .collect();
        let failed = broken
            .into_iter()
            .filter_map(|(id, e)| set.entries.remove(&id).map(|entry| (entry, e)))
            .collect();
        (fired, failed)
    }
}

/// Blocks until any of (handle, point) is ready or `deadline_ns` (absolute CLOCK_MONOTONIC)
/// passes; the index of the first ready one. Points with no fence yet are waited for
/// (WAIT_FOR_SUBMIT). Only for helper threads, never the loop thread (or with deadline 0).
pub(super) fn wait_any(
    node: &DrmNode,
    handles: &[SyncobjHandle],
    points: &[u64],
    wait_for: WaitFor,
    deadline_ns: i64,
) -> std::result::Result<usize, Errno> {
    let available = wait_for == WaitFor::Available;
    sys_drm::syncobj_timeline_wait_any(node.as_fd(), handles, points, deadline_ns, available)
        .map(|first| first as usize)
}
