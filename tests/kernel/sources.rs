//! Both calloop sources, dispatched by a real `EventLoop`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fencebridge::source::{PointWait, SyncFileSource, WaitMethod};
use fencebridge::timeline::WaitFor;

use crate::support::{
    dispatch_until, kernel, open_fds, pending_fence, timeline_device, vgem, Rng, QUIET, WAKE,
};

#[test]
fn sync_file_source_fires_once_after_the_signal() {
    kernel();
    let (f, fence) = pending_fence(&vgem());
    let mut event_loop = calloop::EventLoop::<u32>::try_new().unwrap();
    event_loop
        .handle()
        .insert_source(SyncFileSource::new(fence), |fence, _, fired| {
            assert!(fence.is_signalled().unwrap());
            *fired += 1;
        })
        .unwrap();
    let mut fired = 0;
    assert!(
        !dispatch_until(&mut event_loop, &mut fired, QUIET, |n| *n > 0),
        "fired before the signal"
    );
    f.signal().unwrap();
    assert!(dispatch_until(&mut event_loop, &mut fired, WAKE, |n| *n > 0));
    event_loop
        .dispatch(Some(Duration::from_millis(20)), &mut fired)
        .unwrap();
    assert_eq!(fired, 1, "one-shot");
}

/// The point source, by either method: not before the fence exists, not before it signals, then
/// once.
fn point_source_fires_only_after_the_signal(method: WaitMethod, test: &str) {
    let Some(device) = timeline_device(test) else {
        return;
    };
    let timeline = device.create_timeline().unwrap();
    let PointWait::Pending(source) =
        PointWait::new(&timeline, 1, WaitFor::Signalled, method).unwrap()
    else {
        panic!("point 1 of a new timeline is not ready");
    };
    let mut event_loop = calloop::EventLoop::<u32>::try_new().unwrap();
    event_loop
        .handle()
        .insert_source(source, |result, _, fired| {
            result.unwrap();
            *fired += 1;
        })
        .unwrap();
    let mut fired = 0;
    assert!(
        !dispatch_until(&mut event_loop, &mut fired, QUIET, |n| *n > 0),
        "fired with no fence"
    );
    let (f, fence) = pending_fence(&vgem());
    timeline.import_sync_file(1, &fence).unwrap();
    assert!(
        !dispatch_until(&mut event_loop, &mut fired, QUIET, |n| *n > 0),
        "fired before the signal"
    );
    let signalled_at = Instant::now();
    f.signal().unwrap();
    assert!(dispatch_until(&mut event_loop, &mut fired, WAKE, |n| *n > 0));
    eprintln!("{test}: woke {:?} after the signal", signalled_at.elapsed());
    event_loop
        .dispatch(Some(Duration::from_millis(20)), &mut fired)
        .unwrap();
    assert_eq!(fired, 1, "one-shot");
}

#[test]
fn eventfd_point_source_fires_only_after_the_signal() {
    point_source_fires_only_after_the_signal(
        WaitMethod::Auto,
        "eventfd_point_source_fires_only_after_the_signal",
    );
}

#[test]
fn waiter_thread_point_source_fires_only_after_the_signal() {
    point_source_fires_only_after_the_signal(
        WaitMethod::WaiterThread,
        "waiter_thread_point_source_fires_only_after_the_signal",
    );
}

#[test]
fn available_fires_once_a_fence_is_attached() {
    let Some(device) = timeline_device("available_fires_once_a_fence_is_attached") else {
        return;
    };
    for method in [WaitMethod::Auto, WaitMethod::WaiterThread] {
        let timeline = device.create_timeline().unwrap();
        let PointWait::Pending(source) =
            PointWait::new(&timeline, 1, WaitFor::Available, method).unwrap()
        else {
            panic!("not ready");
        };
        let mut event_loop = calloop::EventLoop::<bool>::try_new().unwrap();
        event_loop
            .handle()
            .insert_source(source, |r, _, fired| *fired = r.is_ok())
            .unwrap();
        let mut fired = false;
        assert!(
            !dispatch_until(&mut event_loop, &mut fired, QUIET, |f| *f),
            "{method:?}: no fence yet"
        );
        let (f, fence) = pending_fence(&vgem());
        timeline.import_sync_file(1, &fence).unwrap();
        assert!(
            dispatch_until(&mut event_loop, &mut fired, WAKE, |f| *f),
            "{method:?}: fence is there"
        );
        f.signal().unwrap();
    }
}

#[test]
fn an_already_signalled_point_takes_the_fast_path() {
    let Some(device) = timeline_device("an_already_signalled_point_takes_the_fast_path") else {
        return;
    };
    let timeline = device.create_timeline().unwrap();
    timeline.signal(2).unwrap();
    for method in [WaitMethod::Auto, WaitMethod::WaiterThread] {
        let (fds, ioctls, handles) = (
            open_fds(),
            fencebridge::sys::ioctl_count(),
            device.live_handles(),
        );
        assert!(matches!(
            PointWait::new(&timeline, 2, WaitFor::Signalled, method).unwrap(),
            PointWait::Ready
        ));
        assert_eq!(
            fencebridge::sys::ioctl_count() - ioctls,
            1,
            "one query, nothing else"
        );
        assert_eq!(
            (open_fds(), device.live_handles()),
            (fds, handles),
            "no fd, no handle"
        );
    }
}

#[test]
fn a_cancelled_fallback_wait_lets_go_of_everything() {
    // Earlier tests' waiter threads end (closing their fds) as their devices go.
    let end = Instant::now() + WAKE;
    while waiter_threads() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Counted before the device is opened: its own fd goes with it at the end.
    let before = open_fds();
    let Some(device) = timeline_device("a_cancelled_fallback_wait_lets_go_of_everything") else {
        return;
    };
    let (fds, handles) = (open_fds(), device.live_handles());
    let timeline = device.create_timeline().unwrap();
    let wait = |point| {
        PointWait::new(
            &timeline,
            point,
            WaitFor::Signalled,
            WaitMethod::WaiterThread,
        )
    };
    // The first fallback wait starts the device's waiter, which keeps an fd of its own and a
    // wake timeline for the device's life; a wait itself holds one fd (its channel).
    drop(wait(9).unwrap());
    let (waiter_fds, waiter_handles) = (open_fds(), device.live_handles());
    assert_eq!(
        (waiter_fds, waiter_handles),
        (fds + 1, handles + 2),
        "the waiter's fd and wake timeline, and the timeline"
    );
    let pending: Vec<_> = (10..20).map(|p| wait(p).unwrap()).collect();
    assert_eq!(
        open_fds(),
        waiter_fds + pending.len(),
        "one fd per pending wait"
    );
    assert_eq!(device.live_handles(), waiter_handles, "no handle per wait");
    drop(pending);
    assert_eq!(
        (open_fds(), device.live_handles()),
        (waiter_fds, waiter_handles),
        "cancelled at once"
    );
    // The waiter ends with its device.
    drop((timeline, device));
    let end = Instant::now() + WAKE;
    while open_fds() != before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        open_fds(),
        before,
        "the waiter let go of its fd, and the device of its own"
    );
}

/// The fallback waiter under churn: on 16 timelines at once, waits added (several per timeline,
/// at different points), cancelled and signalled in a seeded random order, the loop dispatched
/// now and then. Every wait not cancelled fires exactly once, and only once its point has
/// signalled; a cancelled one never fires. The waiter thread keeps a snapshot of its own,
/// brought up to date from the adds and removals: this is what holds it to the set.
#[test]
fn the_fallback_waiter_fires_every_wait_once_through_churn() {
    const TEST: &str = "the_fallback_waiter_fires_every_wait_once_through_churn";
    kernel();
    let Some(device) = timeline_device(TEST) else {
        return;
    };
    let mut rng = Rng::from_env(TEST, 0x3a17);
    let timelines: Vec<_> = (0..16).map(|_| device.create_timeline().unwrap()).collect();
    let mut signalled = vec![0u64; timelines.len()];
    let mut event_loop = calloop::EventLoop::<Vec<usize>>::try_new().unwrap();
    let handle = event_loop.handle();
    // Waits added and not seen firing yet, and those that must fire.
    let mut pending = Vec::new();
    let mut owed = BTreeSet::new();
    let mut fired = Vec::new();
    for id in 0..3000 {
        match rng.below(10) {
            0..=5 => {
                let t = rng.below(16) as usize;
                let point = signalled[t] + 1 + rng.below(4);
                let timeline = timelines[t].clone();
                let wait = PointWait::new(
                    &timeline,
                    point,
                    WaitFor::Signalled,
                    WaitMethod::WaiterThread,
                );
                let Ok(PointWait::Pending(source)) = wait else {
                    panic!("point {point} of a timeline at {}: {wait:?}", signalled[t]);
                };
                let token = handle
                    .insert_source(source, move |result, _, fired: &mut Vec<usize>| {
                        result.unwrap();
                        let at = timeline.signalled_point().unwrap();
                        assert!(at >= point, "wait {id} for {point} fired at {at}");
                        fired.push(id);
                    })
                    .unwrap();
                pending.push((id, token));
                owed.insert(id);
            }
            6 | 7 if !pending.is_empty() => {
                let (id, token) = pending.swap_remove(rng.below(pending.len() as u64) as usize);
                handle.remove(token);
                owed.remove(&id);
            }
            _ => {
                let t = rng.below(16) as usize;
                signalled[t] += 1 + rng.below(3);
                timelines[t].signal(signalled[t]).unwrap();
            }
        }
        if rng.chance(20) {
            event_loop
                .dispatch(Some(Duration::ZERO), &mut fired)
                .unwrap();
            pending.retain(|(id, _)| !fired.contains(id));
        }
    }
    // Past every point waited for: everything still owed fires.
    for (timeline, at) in timelines.iter().zip(&mut signalled) {
        *at += 10;
        timeline.signal(*at).unwrap();
    }
    let all_fired = |fired: &Vec<usize>| fired.len() >= owed.len();
    assert!(
        dispatch_until(&mut event_loop, &mut fired, WAKE, all_fired),
        "{} of {} waits fired",
        fired.len(),
        owed.len()
    );
    dispatch_until(&mut event_loop, &mut fired, QUIET, |_| false);
    let once: BTreeSet<usize> = fired.iter().copied().collect();
    assert_eq!(once.len(), fired.len(), "a wait fired twice");
    assert_eq!(
        once, owed,
        "the waits that fired are the ones not cancelled"
    );
}

/// Waiter threads (`fencebridge-waiter`) in this process.
fn waiter_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc is mounted")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("fencebridge-"))
        .count()
}
