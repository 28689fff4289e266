//! Syncobj timelines on virtio_gpu: sync_file in and out of points, CPU signal, query, sharing.

use fencebridge::Error;

use crate::support::{pending_fence, signalled, timeline_device, vgem};

#[test]
fn sync_file_into_a_point_and_back() {
    let Some(device) = timeline_device("sync_file_into_a_point_and_back") else {
        return;
    };
    let timeline = device.create_timeline().unwrap();
    let (f, fence) = pending_fence(&vgem());
    timeline.import_sync_file(3, &fence).unwrap();
    assert!(!timeline.is_signalled(3).unwrap());
    let back = timeline.export_sync_file(3).unwrap();
    assert!(!signalled(&back));
    f.signal().unwrap();
    assert!(signalled(&back));
    assert!(timeline.is_signalled(3).unwrap());
    assert!(timeline.signalled_point().unwrap() >= 3);
}

#[test]
fn a_point_without_a_fence_cannot_be_exported() {
    let Some(device) = timeline_device("a_point_without_a_fence_cannot_be_exported") else {
        return;
    };
    let timeline = device.create_timeline().unwrap();
    assert!(matches!(
        timeline.export_sync_file(5),
        Err(Error::PointNotSubmitted { point: 5 })
    ));
}

#[test]
fn cpu_signal_and_query() {
    let Some(device) = timeline_device("cpu_signal_and_query") else {
        return;
    };
    let timeline = device.create_timeline().unwrap();
    assert_eq!(timeline.signalled_point().unwrap(), 0);
    timeline.signal(5).unwrap();
    assert!(timeline.is_signalled(5).unwrap());
    assert!(!timeline.is_signalled(6).unwrap());
    let exported = timeline.export_sync_file(5).unwrap();
    assert!(signalled(&exported));
}

#[test]
fn a_timeline_shared_by_fd_is_the_same_timeline() {
    let Some(device) = timeline_device("a_timeline_shared_by_fd_is_the_same_timeline") else {
        return;
    };
    let ours = device.create_timeline().unwrap();
    let fd = ours.export_fd().unwrap();
    let theirs = device
        .import_timeline(std::os::fd::AsFd::as_fd(&fd))
        .unwrap();
    drop(fd);
    theirs.signal(7).unwrap();
    assert!(ours.is_signalled(7).unwrap());
}

#[test]
fn no_handle_outlives_its_timeline() {
    let Some(device) = timeline_device("no_handle_outlives_its_timeline") else {
        return;
    };
    let base = device.live_handles();
    {
        let t = device.create_timeline().unwrap();
        let shared = device
            .import_timeline(std::os::fd::AsFd::as_fd(&t.export_fd().unwrap()))
            .unwrap();
        t.signal(1).unwrap();
        let f = t.export_sync_file(1).unwrap();
        shared.import_sync_file(2, &f).unwrap();
        assert_eq!(device.live_handles(), base + 2);
    }
    assert_eq!(device.live_handles(), base);
}
