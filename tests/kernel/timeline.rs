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

/// The ioctls a call costs, as `sys::ioctl_count` counts them (the suite runs one test at a
/// time, so nothing else moves the count).
fn ioctls<T>(call: impl FnOnce() -> T) -> (T, u64) {
    let before = fencebridge::sys::ioctl_count();
    let out = call();
    (out, fencebridge::sys::ioctl_count() - before)
}

/// Every syncobj and dumb-buffer call, with the ioctls the kernel sees for it: a call that
/// reached the kernel without being counted (the `drm` crate called from outside `sys::drm`)
/// shows here as a smaller number.
#[test]
fn every_syncobj_call_costs_its_ioctls() {
    let Some(device) = timeline_device("every_syncobj_call_costs_its_ioctls") else {
        return;
    };
    let vgem = vgem();
    let (f, fence) = pending_fence(&vgem);
    let path = device.node().path().to_owned();
    // Opening: the version (twice: lengths, then names), the timeline capability, the
    // SYNCOBJ_EVENTFD probe, the staging syncobj.
    let (opened, cost) = ioctls(|| fencebridge::timeline::SyncobjDevice::open(&path).unwrap());
    assert_eq!(cost, 5, "SyncobjDevice::open");
    let (timeline, cost) = ioctls(|| opened.create_timeline().unwrap());
    assert_eq!(cost, 1, "create_timeline");
    let mut table: Vec<(&str, u64)> = Vec::new();
    let mut measure = |name, call: &mut dyn FnMut()| table.push((name, ioctls(call).1));
    measure("signal", &mut || timeline.signal(2).unwrap());
    measure("signalled_point", &mut || {
        timeline.signalled_point().unwrap();
    });
    measure("is_signalled", &mut || {
        assert!(timeline.is_signalled(2).unwrap());
    });
    measure("import_sync_file", &mut || {
        timeline.import_sync_file(3, &fence).unwrap();
    });
    measure("export_sync_file", &mut || {
        timeline.export_sync_file(2).unwrap();
    });
    let mut shared = None;
    measure("export_fd + import_timeline", &mut || {
        let fd = timeline.export_fd().unwrap();
        shared = Some(
            opened
                .import_timeline(std::os::fd::AsFd::as_fd(&fd))
                .unwrap(),
        );
    });
    measure("drop a timeline", &mut || drop(shared.take()));
    if opened.supports_eventfd() {
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        measure("register_eventfd", &mut || {
            timeline
                .register_eventfd(
                    3,
                    std::os::fd::AsFd::as_fd(&efd),
                    fencebridge::timeline::WaitFor::Signalled,
                )
                .unwrap();
        });
    }
    let mut buffer = None;
    measure("vgem create_buffer", &mut || {
        buffer = Some(vgem.create_buffer(16, 16).unwrap());
    });
    measure("vgem buffer drop", &mut || drop(buffer.take()));
    let mut expected = vec![
        ("signal", 1),
        ("signalled_point", 1),
        ("is_signalled", 1),
        ("import_sync_file", 2), // into the staging syncobj, then transferred
        ("export_sync_file", 2), // transferred to the staging syncobj, then exported
        ("export_fd + import_timeline", 2),
        ("drop a timeline", 1),
        ("register_eventfd", 1),
        ("vgem create_buffer", 2), // the dumb buffer, its dma-buf
        ("vgem buffer drop", 1),   // the dumb buffer's GEM handle
    ];
    if !opened.supports_eventfd() {
        expected.retain(|(name, _)| *name != "register_eventfd");
    }
    assert_eq!(table, expected);
    let (_, cost) = ioctls(|| drop((timeline, opened)));
    assert_eq!(cost, 2, "the timeline, then the staging syncobj");
    f.signal().unwrap();
}
