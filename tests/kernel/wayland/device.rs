//! A compositor hands in the DRM node it already renders with (`Config::syncobj_device`): the
//! bridge imports client timelines into that device and opens no other node.

use std::os::fd::AsFd;

use fencebridge::timeline::SyncobjDevice;
use fencebridge::wayland::{Config, FenceBridgeState};

use super::harness::{Harness, Server};
use crate::support::timeline_device;

#[test]
fn a_handed_in_device_is_the_only_one_used() {
    let test = "a_handed_in_device_is_the_only_one_used";
    let Some(found) = timeline_device(test) else {
        return;
    };
    // The compositor's own open of its render node (another fd than the bridge could find).
    let mine = SyncobjDevice::open(found.node().path()).unwrap();
    let mut h = Harness::new(Config {
        syncobj_device: Some(mine.clone()),
        ..Config::default()
    });
    let bridge = &h.server.bridge;
    assert!(
        bridge.syncobj_global().is_some(),
        "linux-drm-syncobj-v1 offered"
    );
    let nodes: Vec<_> = bridge
        .capabilities()
        .nodes
        .iter()
        .map(|n| n.path.clone())
        .collect();
    assert_eq!(
        nodes,
        [found.node().path()],
        "only the handed-in node is looked at, not every node in /dev/dri"
    );

    let before = mine.live_handles();
    let mut c = h.connect();
    let timeline = found.create_timeline().unwrap();
    let fd = timeline.export_fd().unwrap();
    let _wl_timeline = c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
    h.roundtrip(&mut c);
    assert_eq!(c.protocol_error(), None);
    assert_eq!(
        mine.live_handles(),
        before + 1,
        "the client's timeline was imported into the handed-in device"
    );
}

#[test]
fn a_handed_in_device_is_not_offered_when_explicit_sync_is_off() {
    let test = "a_handed_in_device_is_not_offered_when_explicit_sync_is_off";
    let Some(found) = timeline_device(test) else {
        return;
    };
    let h = Harness::new(Config {
        syncobj_device: Some(found),
        explicit_sync: false,
        ..Config::default()
    });
    assert!(h.server.bridge.syncobj_global().is_none());
    assert!(h.server.bridge.syncobj_device().is_none());
}

/// The bridge probes the machine once: its state costs the ioctls of one probe (which picks,
/// opens and keeps the syncobj device, and calibrates the stub fence), with no second scan of
/// `/dev/dri` for the device and no second dma-buf to calibrate on.
#[test]
fn the_bridge_probes_once() {
    let test = "the_bridge_probes_once";
    let Some(found) = timeline_device(test) else {
        return;
    };
    let ioctls = |f: &mut dyn FnMut()| {
        let before = fencebridge::sys::ioctl_count();
        f();
        fencebridge::sys::ioctl_count() - before
    };
    // The probe as the bridge makes it, its device kept open (dropping it costs an ioctl).
    let mut probed = None;
    let probe = ioctls(&mut || probed = Some(fencebridge::caps::Capabilities::probe_and_open()));
    let (caps, _device) = probed.unwrap();
    let display = smithay::reexports::wayland_server::Display::<Server>::new().unwrap();
    let mut bridge = None;
    let new = ioctls(&mut || {
        bridge = Some(FenceBridgeState::new::<Server>(
            &display.handle(),
            Config::default(),
        ))
    });
    assert_eq!(new, probe, "FenceBridgeState::new costs one probe");
    let bridge = bridge.unwrap();
    let device = bridge.syncobj_device().expect("the probe's device");
    assert_eq!(device.node().path(), found.node().path());
    assert_eq!(
        bridge.capabilities().syncobj_device.as_deref(),
        Some(found.node().path())
    );
    assert_eq!(bridge.capabilities().stub, caps.stub);
}
