//! The order release points are signalled in, per timeline. A timeline's points are
//! monotonic: signalling point N (from the CPU, or by putting a fence into it) also answers
//! every lower point that has no fence of its own yet — a waiter on such a point finds N's
//! fence. So a release point the bridge still owes (its buffer is shown, its commit is queued,
//! or its read fence has not been put into the timeline yet) must never be overtaken by a
//! higher point on the same timeline, whichever surface or commit that higher point belongs
//! to: the client would take the owed point's buffer back while the compositor still reads it.
//!
//! [`ReleaseOrder`] keeps one timeline's owed points and hands out the ones that may be given
//! their fence (or signalled) now: a due point goes out only when no other point at or below
//! its value is still owed. Equal values count as "below": two obligations on one point are
//! answered by whichever fence lands first, so each waits for the other. Once a point has its
//! fence in the kernel, higher points no longer threaten it (the kernel chains each new point
//! on the ones before it), so the executor reports it [`settled`](ReleaseOrder::settled) and the
//! next ones go out.
//!
//! One timeline's points may come from several surfaces of a client (linux-drm-syncobj-v1 lets
//! a client use one timeline for any number of buffers and surfaces), so these books belong to
//! the timeline, not to a surface's [`super::release::ReleaseTracker`].
//!
//! # How to use
//! ```no_run
//! use fencebridge::bridge::release_order::ReleaseOrder;
//! # fn signal(_: u64, _: Option<u32>) -> bool { true }
//! let mut order = ReleaseOrder::new(); // one per timeline; the payload is the executor's
//! let shown = order.owe(2); // a buffer on one surface, still shown
//! let replaced = order.owe(4); // another surface's buffer, replaced unread
//! order.due(replaced, None);
//! assert!(order.next_due().is_none(), "point 4 would answer point 2");
//! order.due(shown, Some(7)); // its buffer is replaced: signal after read fence 7
//! while let Some((point, after)) = order.next_due() {
//!     // Put `after` into the point (or signal it); then it is settled. (A point whose fence
//!     // must be waited for on the CPU instead stays unsettled until it is signalled.)
//!     if signal(point.value, after) {
//!         order.settled(point);
//!     }
//! }
//! assert_eq!(order.owed(), 0);
//! ```

use std::collections::BTreeMap;

/// A release point the books owe: its value, and a ticket that tells apart obligations on the
/// same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwedPoint {
    /// The point's value on its timeline.
    pub value: u64,
    ticket: u64,
}

/// Where an owed point stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing<T> {
    /// Still owed: nothing says yet when it may signal.
    Owed,
    /// Due: it may signal after `T`, once nothing at or below it is still owed.
    Due(T),
    /// Handed out: the executor is giving it its fence (or will signal it once its fence has
    /// signalled). Still blocks the points above it until [`ReleaseOrder::settled`].
    Settling,
}

/// One timeline's owed release points, and the order they may signal in. `T` is what the
/// executor needs to signal a point (its read fences); it is carried, never looked into.
#[derive(Debug, Clone)]
pub struct ReleaseOrder<T> {
    points: BTreeMap<OwedPoint, Standing<T>>,
    next_ticket: u64,
}

impl<T> Default for ReleaseOrder<T> {
    fn default() -> Self {
        ReleaseOrder {
            points: BTreeMap::new(),
            next_ticket: 0,
        }
    }
}

impl<T> ReleaseOrder<T> {
    /// Empty books for a timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// A release point becomes owed (it was set on a surface); it holds back every point at or
    /// above its value until it is due and settled.
    pub fn owe(&mut self, value: u64) -> OwedPoint {
        self.next_ticket += 1;
        let point = OwedPoint {
            value,
            ticket: self.next_ticket,
        };
        self.points.insert(point, Standing::Owed);
        point
    }

    /// `point` may now signal after `after`. It goes out through [`ReleaseOrder::next_due`] once
    /// every point at or below it is settled. A point not owed (or already due) is left as
    /// it is.
    pub fn due(&mut self, point: OwedPoint, after: T) {
        if let Some(standing @ Standing::Owed) = self.points.get_mut(&point) {
            *standing = Standing::Due(after);
        }
    }

    /// The lowest due point that nothing at or below it holds back, with what it signals
    /// after; it is now settling. `None` when no point may go out now.
    pub fn next_due(&mut self) -> Option<(OwedPoint, T)> {
        // Only the lowest point can go: everything above it waits until it is settled. A tie
        // goes once every point of that value is due.
        let mut lowest = self.points.iter();
        let (&point, standing) = lowest.next()?;
        let due = |standing: &Standing<T>| matches!(standing, Standing::Due(_));
        let ready = due(standing)
            && lowest
                .take_while(|(other, _)| other.value == point.value)
                .all(|(_, tied)| due(tied));
        if !ready {
            return None;
        }
        let Some(Standing::Due(after)) = self.points.insert(point, Standing::Settling) else {
            return None;
        };
        Some((point, after))
    }

    /// `point` has its fence in the kernel (or has signalled): it no longer holds anything back.
    pub fn settled(&mut self, point: OwedPoint) {
        self.points.remove(&point);
    }

    /// How many points are owed, due or settling.
    pub fn owed(&self) -> usize {
        self.points.len()
    }

    /// How many due points wait behind an owed one.
    pub fn held_back(&self) -> usize {
        self.points
            .values()
            .filter(|s| matches!(s, Standing::Due(_)))
            .count()
    }

    /// What each due point will signal after, to drop what is no longer needed (fences that
    /// have signalled meanwhile).
    pub fn due_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.points.values_mut().filter_map(|s| match s {
            Standing::Due(after) => Some(after),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Hands out and settles everything that may go now; the values, in order.
    fn drain(order: &mut ReleaseOrder<u32>) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while let Some((point, after)) = order.next_due() {
            out.push((point.value, after));
            order.settled(point);
        }
        out
    }

    #[test]
    fn a_due_point_waits_for_every_owed_point_below_it() {
        let mut order = ReleaseOrder::new();
        let shown = order.owe(2);
        let queued = order.owe(3);
        let replaced = order.owe(4);
        order.due(replaced, 40);
        assert_eq!(drain(&mut order), []);
        assert_eq!(order.held_back(), 1);
        order.due(shown, 20);
        assert_eq!(drain(&mut order), [(2, 20)], "3 still owed");
        order.due(queued, 30);
        assert_eq!(drain(&mut order), [(3, 30), (4, 40)], "in timeline order");
        assert_eq!(order.owed(), 0);
    }

    #[test]
    fn lower_points_never_wait_for_higher_ones() {
        let mut order = ReleaseOrder::new();
        let high = order.owe(9);
        let low = order.owe(1);
        order.due(low, 10);
        assert_eq!(drain(&mut order), [(1, 10)]);
        order.due(high, 90);
        assert_eq!(drain(&mut order), [(9, 90)]);
    }

    #[test]
    fn two_obligations_on_one_point_wait_for_each_other() {
        let mut order = ReleaseOrder::new();
        let first = order.owe(5);
        let second = order.owe(5);
        order.due(first, 1);
        assert_eq!(drain(&mut order), [], "the second buffer is still shown");
        order.due(second, 2);
        assert_eq!(drain(&mut order), [(5, 1), (5, 2)]);
        // And the other way round.
        let first = order.owe(7);
        let second = order.owe(7);
        order.due(second, 2);
        assert_eq!(drain(&mut order), []);
        order.due(first, 1);
        assert_eq!(drain(&mut order), [(7, 1), (7, 2)]);
    }

    #[test]
    fn a_point_signalled_later_on_the_cpu_holds_back_the_points_above_it() {
        let mut order = ReleaseOrder::new();
        let late = order.owe(2);
        let tied = order.owe(2);
        let above = order.owe(3);
        order.due(late, 1);
        order.due(tied, 2);
        order.due(above, 3);
        // Its fence could not go into the timeline: it is signalled once the fence has.
        let (point, _) = order.next_due().unwrap();
        assert_eq!(point, late);
        assert_eq!(
            order.next_due(),
            None,
            "neither the tie nor the point above"
        );
        order.settled(late);
        assert_eq!(drain(&mut order), [(2, 2), (3, 3)]);
    }

    #[test]
    fn due_twice_or_never_owed_changes_nothing() {
        let mut order = ReleaseOrder::new();
        let point = order.owe(4);
        order.due(point, 1);
        order.due(point, 2);
        assert_eq!(drain(&mut order), [(4, 1)]);
        order.due(point, 3); // settled already
        assert_eq!(drain(&mut order), []);
        assert_eq!(order.owed(), 0);
    }

    #[test]
    fn signalled_fences_can_be_dropped_while_held_back() {
        let mut order = ReleaseOrder::new();
        let shown = order.owe(1);
        let replaced = order.owe(2);
        order.due(replaced, vec![7, 8]);
        order
            .due_mut()
            .for_each(|fences| fences.retain(|f| *f != 7));
        order.due(shown, vec![]);
        let mut out = Vec::new();
        while let Some((point, after)) = order.next_due() {
            out.push((point.value, after));
            order.settled(point);
        }
        assert_eq!(out, [(1, vec![]), (2, vec![8])]);
    }

    /// splitmix64: enough randomness for operation sequences, no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    /// Random owe / due / hand-out / late-settle sequences against the rule stated plainly:
    /// a point goes out only when every other point at or below it is due and none below it
    /// remains; each due point goes out exactly once, with its own payload; nothing is held
    /// back once everything is due and settled.
    #[test]
    fn random_sequences_keep_timeline_order() {
        let mut rng = Rng(0x0dde_7001_5eed);
        for _ in 0..2_000 {
            let mut order = ReleaseOrder::new();
            // What the model knows: every live point and whether it is due (with its payload).
            let mut live: HashMap<OwedPoint, Option<u32>> = HashMap::new();
            let mut settling: Vec<OwedPoint> = Vec::new();
            let mut payload = 0;
            for _ in 0..rng.below(40) {
                match rng.below(4) {
                    0 => {
                        let point = order.owe(1 + rng.below(6));
                        live.insert(point, None);
                    }
                    1 => {
                        let owed: Vec<OwedPoint> = live
                            .iter()
                            .filter(|(_, due)| due.is_none())
                            .map(|(p, _)| *p)
                            .collect();
                        if !owed.is_empty() {
                            let point = owed[rng.below(owed.len() as u64) as usize];
                            payload += 1;
                            order.due(point, payload);
                            live.insert(point, Some(payload));
                        }
                    }
                    2 => {
                        if let Some((point, after)) = order.next_due() {
                            assert_eq!(live.get(&point), Some(&Some(after)), "its own payload");
                            for (other, due) in &live {
                                if *other != point && other.value <= point.value {
                                    assert!(other.value == point.value, "{other:?} below");
                                    assert!(due.is_some(), "{other:?} tied and not due");
                                }
                            }
                            assert!(
                                settling.iter().all(|s| s.value > point.value),
                                "{point:?} overtakes a point still settling"
                            );
                            live.remove(&point);
                            // Settled at once (imported), or later (signalled from the CPU).
                            if rng.below(3) == 0 {
                                settling.push(point);
                            } else {
                                order.settled(point);
                            }
                        }
                    }
                    _ => {
                        if let Some(point) = settling.pop() {
                            order.settled(point);
                        }
                    }
                }
            }
            // Everything becomes due and settles: everything goes out, once.
            for point in settling.drain(..) {
                order.settled(point);
            }
            let owed: Vec<OwedPoint> = live
                .iter()
                .filter(|(_, d)| d.is_none())
                .map(|(p, _)| *p)
                .collect();
            for point in owed {
                payload += 1;
                order.due(point, payload);
                live.insert(point, Some(payload));
            }
            let mut last = 0;
            while let Some((point, after)) = order.next_due() {
                assert!(point.value >= last, "out of order");
                last = point.value;
                assert_eq!(live.remove(&point), Some(Some(after)));
                order.settled(point);
            }
            assert!(live.is_empty() && order.owed() == 0, "{live:?} left");
        }
    }
}
