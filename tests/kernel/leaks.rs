//! 1,000 rounds of every core operation leave no fd and no syncobj handle behind.

use std::time::Duration;

use fencebridge::fence::{dmabuf, Access, StubSignature};
use fencebridge::source::{PointWait, SyncFileSource, WaitMethod};
use fencebridge::timeline::WaitFor;

use crate::support::{expected_timeline_device, kernel, open_fds, vgem};

#[test]
fn a_thousand_rounds_leak_nothing() {
    kernel();
    let vgem = vgem();
    // Where there are no timelines (6.1) the dma-buf half still runs.
    let device = expected_timeline_device();
    let timeline = device.as_ref().map(|d| d.create_timeline().unwrap());
    // The device's shared waiter (started by the first fallback wait) keeps an fd and a wake
    // timeline for the device's life: started before counting.
    if let Some(t) = &timeline {
        drop(PointWait::new(t, u64::MAX, WaitFor::Signalled, WaitMethod::WaiterThread).unwrap());
    }
    let sig = StubSignature::calibrate();
    let mut event_loop = calloop::EventLoop::<u32>::try_new().unwrap();
    let handle = event_loop.handle();
    let (fds, handles) = (open_fds(), device.as_ref().map(|d| d.live_handles()));
    let mut fired = 0;
    for round in 0..1000u64 {
        let buf = vgem.create_buffer(16, 16).unwrap();
        let other = vgem.create_buffer(16, 16).unwrap();
        let f = buf.attach_fence(true).unwrap();
        let snap = dmabuf::export(&[buf.dmabuf(), buf.dmabuf()], Access::Read, &sig).unwrap();
        let fence = snap.fence.unwrap();
        dmabuf::import(&[other.dmabuf()], &fence, Access::Write).unwrap();
        let merged = fence.merge(&fence.try_clone().unwrap()).unwrap();
        handle
            .insert_source(SyncFileSource::new(merged), |_, _, n| *n += 1)
            .unwrap();
        if let Some(t) = &timeline {
            let point = round * 2 + 1;
            t.import_sync_file(point, &fence).unwrap();
            let method = if round % 2 == 0 {
                WaitMethod::Auto
            } else {
                WaitMethod::WaiterThread
            };
            if let PointWait::Pending(src) =
                PointWait::new(t, point, WaitFor::Signalled, method).unwrap()
            {
                handle
                    .insert_source(src, |r, _, n| *n += u32::from(r.is_ok()))
                    .unwrap();
            }
            drop(t.export_sync_file(point).unwrap());
            t.signal(point + 1).unwrap();
        }
        f.signal().unwrap();
        let want = fired + if timeline.is_some() { 2 } else { 1 };
        while fired < want {
            event_loop
                .dispatch(Some(Duration::from_millis(500)), &mut fired)
                .unwrap();
        }
    }
    drop(timeline);
    // Waits let go of their handles as they end.
    for _ in 0..200 {
        if device.as_ref().map(|d| d.live_handles()) == handles.map(|h| h - 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(open_fds(), fds, "fds leaked");
    assert_eq!(
        device.as_ref().map(|d| d.live_handles()),
        handles.map(|h| h - 1),
        "syncobj handles leaked"
    );
}
