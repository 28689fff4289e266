//! The shared point waiter, for kernels without `SYNCOBJ_EVENTFD`: one thread per syncobj device
//! (and per [`WaitFor`]) blocks in one `SYNCOBJ_TIMELINE_WAIT` over every pending point at once
//! (without `WAIT_ALL`: the kernel returns the first ready one), plus a private wake timeline
//! that the loop side signals when the set changes. 10,000 pending waits are one thread, not
//! 10,000.
//!
//! The set is a map of entries, each holding its [`Timeline`] (so a handle stays valid while its
//! entry exists) and a callback the thread calls once, outside the lock. The thread waits on a
//! snapshot of its own, which it brings up to date from the changes made since it last looked:
//! the lock is held for those changes, never for the whole set, so a compositor adding a wait
//! does not stall while the thread rebuilds a 10,000-point snapshot. Whoever changes the set
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
    /// Entries added since the thread last looked: id, handle, point.
    added: Vec<(u64, SyncobjHandle, u64)>,
    /// Entries their watch removed since the thread last looked.
    removed: Vec<u64>,
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
                set.removed.push(self.id);
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
        set.added.push((id, timeline.syncobj().handle(), point));
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
        let mut snapshot = Snapshot::new(self.wake);
        // The change lists are swapped with these, so neither side allocates once warm.
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        loop {
            let changes = {
                let mut set = self.lock();
                if set.shutdown {
                    break;
                }
                snapshot.points[0] = set.wake_point;
                set.armed = true;
                std::mem::swap(&mut set.added, &mut added);
                std::mem::swap(&mut set.removed, &mut removed);
                set.changes
            };
            // Added before removed: an entry may come and go between two looks.
            for (id, handle, point) in added.drain(..) {
                snapshot.add(id, handle, point);
            }
            for id in removed.drain(..) {
                snapshot.remove(id);
            }
            // The handles stay valid: an entry holds its timeline, and one removed since the
            // thread looked fails the wait (ENOENT) or names another syncobj, whose wake-up
            // maps to no entry; either way the thread looks again.
            let woke = wait_any(
                &self.node,
                &snapshot.handles,
                &snapshot.points,
                self.wait_for,
                i64::MAX,
            );
            let ready = match woke {
                Ok(i) if i > 0 => self.ready(&snapshot, snapshot.ids[i - 1]),
                _ => Vec::new(),
            };
            let (fired, failed) = {
                let mut set = self.lock();
                set.armed = false;
                match woke {
                    Ok(0) | Err(Errno::INTR | Errno::AGAIN) => (Vec::new(), Vec::new()),
                    Ok(_) => (take(&mut set, ready), Vec::new()),
                    Err(errno) => self.sift(&mut set, errno, changes),
                }
            };
            for (id, entry) in fired {
                snapshot.remove(id);
                (entry.notify)(Ok(()));
            }
            for ((id, entry), errno) in failed {
                snapshot.remove(id);
                (entry.notify)(Err(Error::io("DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT")(errno)));
            }
        }
        if let Err(e) = sys_drm::syncobj_destroy(self.node.as_fd(), self.wake) {
            tracing::warn!("fencebridge: could not destroy the waiter's wake syncobj: {e}");
        }
    }

    /// Entry `first` is ready: it, and every other entry of the snapshot that has signalled
    /// too (one query for the whole snapshot, without the lock), so a burst of signals costs
    /// one wake. An entry removed meanwhile may name a handle destroyed or reused: the query
    /// then fails, or its answer is dropped with the entry ([`take`] keeps only live entries,
    /// whose handles stayed valid all along).
    fn ready(&self, snapshot: &Snapshot, first: u64) -> Vec<u64> {
        let mut ready = vec![first];
        let others = &snapshot.handles[1..];
        if self.wait_for != WaitFor::Signalled || others.len() < 2 {
            return ready;
        }
        let mut values = vec![0; others.len()];
        if sys_drm::syncobj_timeline_query(self.node.as_fd(), others, &mut values).is_ok() {
            let points = &snapshot.points[1..];
            ready.extend(
                snapshot
                    .ids
                    .iter()
                    .zip(points.iter().zip(values))
                    .filter(|&(&id, (&point, value))| id != first && value >= point)
                    .map(|(&id, _)| id),
            );
        }
        ready
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
    ) -> (Vec<Taken>, Vec<(Taken, Errno)>) {
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
        let failed = broken
            .into_iter()
            .filter_map(|(id, e)| set.entries.remove(&id).map(|entry| ((id, entry), e)))
            .collect();
        (take(set, ready), failed)
    }
}

/// An entry taken out of the set, with its id (the thread's snapshot drops it by that).
type Taken = (u64, Entry);

/// Takes the entries `ids` that are still in the set.
fn take(set: &mut WaitSet, ids: Vec<u64>) -> Vec<Taken> {
    ids.into_iter()
        .filter_map(|id| set.entries.remove(&id).map(|entry| (id, entry)))
        .collect()
}

/// The thread's copy of the set, as the wait takes it: the wake point first, then every
/// entry's handle and point, in arrays kept from one wait to the next.
struct Snapshot {
    handles: Vec<SyncobjHandle>,
    points: Vec<u64>,
    /// The entry of `handles[i + 1]`.
    ids: Vec<u64>,
    /// Where each entry is in `ids`.
    at: HashMap<u64, usize>,
}

impl Snapshot {
    fn new(wake: SyncobjHandle) -> Snapshot {
        Snapshot {
            handles: vec![wake],
            points: vec![0],
            ids: Vec::new(),
            at: HashMap::new(),
        }
    }

    fn add(&mut self, id: u64, handle: SyncobjHandle, point: u64) {
        self.at.insert(id, self.ids.len());
        self.ids.push(id);
        self.handles.push(handle);
        self.points.push(point);
    }

    /// Removes entry `id`, if there, moving the last entry into its place.
    fn remove(&mut self, id: u64) {
        let Some(i) = self.at.remove(&id) else {
            return;
        };
        self.ids.swap_remove(i);
        self.handles.swap_remove(i + 1);
        self.points.swap_remove(i + 1);
        if let Some(&moved) = self.ids.get(i) {
            self.at.insert(moved, i);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(n: u32) -> SyncobjHandle {
        ::drm::control::from_u32(n).expect("a non-zero handle")
    }

    /// What the wait would be given: (id, handle, point) of every entry, wake point first.
    fn waited(snapshot: &Snapshot) -> Vec<(Option<u64>, u32, u64)> {
        let ids = std::iter::once(None).chain(snapshot.ids.iter().copied().map(Some));
        ids.zip(&snapshot.handles)
            .zip(&snapshot.points)
            .map(|((id, h), p)| (id, u32::from(*h), *p))
            .collect()
    }

    #[test]
    fn the_snapshot_keeps_each_entry_with_its_handle_and_point() {
        let mut s = Snapshot::new(handle(99));
        for id in 1..=4 {
            s.add(id, handle(10 + id as u32), 100 + id);
        }
        // The second moves the last into its place; the moved entry can still be removed.
        s.remove(2);
        assert_eq!(
            waited(&s),
            [
                (None, 99, 0),
                (Some(1), 11, 101),
                (Some(4), 14, 104),
                (Some(3), 13, 103)
            ]
        );
        s.remove(4);
        s.remove(4); // gone already: nothing happens
        s.remove(7); // never there
        assert_eq!(
            waited(&s),
            [(None, 99, 0), (Some(1), 11, 101), (Some(3), 13, 103)]
        );
        // The last one, and then the rest: only the wake point is left.
        s.remove(3);
        s.remove(1);
        assert_eq!(waited(&s), [(None, 99, 0)]);
        assert!(s.at.is_empty());
        s.add(5, handle(15), 105);
        assert_eq!(waited(&s), [(None, 99, 0), (Some(5), 15, 105)]);
    }
}
