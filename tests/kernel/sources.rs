//! Both calloop sources, dispatched by a real `EventLoop`.

use std::time::{Duration, Instant};

use fencebridge::source::{PointWait, SyncFileSource, WaitMethod};
use fencebridge::timeline::WaitFor;

use crate::support::{
    dispatch_until, kernel, open_fds, pending_fence, timeline_device, vgem, QUIET, WAKE,
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

/// Waiter threads (`fencebridge-waiter`) in this process.
fn waiter_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc is mounted")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("fencebridge-"))
        .count()
}
