//! Every linux-drm-syncobj-v1 protocol error, provoked by a real client and observed by it as
//! that error on that interface; and the lenient mode that logs the safe ones instead.

use std::os::fd::AsFd;

use fencebridge::bridge::protocol::{Leniency, MANAGER_INTERFACE, SURFACE_INTERFACE};
use fencebridge::timeline::Timeline;
use fencebridge::wayland::Config;
use wayland_client::protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

use super::harness::{Harness, TestClient};
use crate::support::{kernel, timeline_device, vgem};

/// What a provoking client has at hand.
struct Kit<'a> {
    c: &'a TestClient,
    surface: WlSurface,
    sync: WpLinuxDrmSyncobjSurfaceV1,
    timeline: WpLinuxDrmSyncobjTimelineV1,
    dmabuf: WlBuffer,
}

/// Runs `provoke` in a fresh client of a compositor with `leniency`; returns the protocol error
/// it died of, if it did. `None` when the kernel has no timelines (skipped, said why).
fn provoke(
    test: &str,
    leniency: Leniency,
    provoke: impl FnOnce(&Kit),
) -> Option<Option<(String, u32)>> {
    kernel();
    let device = timeline_device(test)?;
    let mut h = Harness::new(Config {
        leniency,
        ..Config::default()
    });
    let mut c = h.connect();
    let timeline: Timeline = device.create_timeline().unwrap();
    let fd = timeline.export_fd().unwrap();
    let buf = vgem().create_buffer(16, 16).unwrap();
    let surface = c.surface();
    let kit = Kit {
        c: &c,
        sync: c.syncobj().get_surface(&surface, &c.qh, ()),
        surface,
        timeline: c.syncobj().import_timeline(fd.as_fd(), &c.qh, ()),
        dmabuf: c.dmabuf_buffer(buf.dmabuf(), 16, 16, buf.pitch()),
    };
    provoke(&kit);
    h.roundtrip(&mut c);
    Some(c.protocol_error())
}

fn assert_error(test: &str, error: (&str, u32), f: impl FnOnce(&Kit)) {
    if let Some(got) = provoke(test, Leniency::Strict, f) {
        assert_eq!(got, Some((error.0.to_owned(), error.1)), "{test}");
    }
}

#[test]
fn surface_exists() {
    assert_error("surface_exists", (MANAGER_INTERFACE, 0), |k| {
        k.c.syncobj().get_surface(&k.surface, &k.c.qh, ());
    });
}

#[test]
fn invalid_timeline() {
    assert_error("invalid_timeline", (MANAGER_INTERFACE, 1), |k| {
        let memfd =
            rustix::fs::memfd_create("not-a-syncobj", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        k.c.syncobj().import_timeline(memfd.as_fd(), &k.c.qh, ());
    });
}

#[test]
fn no_surface() {
    assert_error("no_surface", (SURFACE_INTERFACE, 1), |k| {
        k.surface.destroy();
        k.sync.set_acquire_point(&k.timeline, 0, 1);
    });
}

#[test]
fn unsupported_buffer() {
    assert_error("unsupported_buffer", (SURFACE_INTERFACE, 2), |k| {
        k.sync.set_acquire_point(&k.timeline, 0, 1);
        k.sync.set_release_point(&k.timeline, 0, 2);
        k.c.commit(&k.surface, Some(&k.c.shm_buffer()));
    });
}

#[test]
fn no_buffer() {
    assert_error("no_buffer", (SURFACE_INTERFACE, 3), |k| {
        k.sync.set_acquire_point(&k.timeline, 0, 1);
        k.sync.set_release_point(&k.timeline, 0, 2);
        k.c.commit(&k.surface, None);
    });
}

#[test]
fn no_acquire_point() {
    assert_error("no_acquire_point", (SURFACE_INTERFACE, 4), |k| {
        k.sync.set_release_point(&k.timeline, 0, 2);
        k.c.commit(&k.surface, Some(&k.dmabuf));
    });
}

#[test]
fn no_acquire_point_without_any_point() {
    // A buffer committed with no points at all (smithay 0.7 lets this pass).
    assert_error(
        "no_acquire_point_without_any_point",
        (SURFACE_INTERFACE, 4),
        |k| {
            k.c.commit(&k.surface, Some(&k.dmabuf));
        },
    );
}

#[test]
fn no_release_point() {
    assert_error("no_release_point", (SURFACE_INTERFACE, 5), |k| {
        k.sync.set_acquire_point(&k.timeline, 0, 1);
        k.c.commit(&k.surface, Some(&k.dmabuf));
    });
}

#[test]
fn conflicting_points() {
    assert_error("conflicting_points", (SURFACE_INTERFACE, 6), |k| {
        k.sync.set_acquire_point(&k.timeline, 0, 5);
        k.sync.set_release_point(&k.timeline, 0, 5);
        k.c.commit(&k.surface, Some(&k.dmabuf));
    });
}

#[test]
fn a_lenient_compositor_logs_the_safe_errors_and_keeps_the_client() {
    let got = provoke("lenient_no_acquire_point", Leniency::Lenient, |k| {
        k.sync.set_release_point(&k.timeline, 0, 2);
        k.c.commit(&k.surface, Some(&k.dmabuf));
    });
    if let Some(got) = got {
        assert_eq!(got, None, "tolerated");
    }
    // Never the unsafe ones.
    let got = provoke("lenient_conflicting_points", Leniency::Lenient, |k| {
        k.sync.set_acquire_point(&k.timeline, 0, 5);
        k.sync.set_release_point(&k.timeline, 0, 4);
        k.c.commit(&k.surface, Some(&k.dmabuf));
    });
    if let Some(got) = got {
        assert_eq!(got, Some((SURFACE_INTERFACE.to_owned(), 6)));
    }
}

#[test]
fn the_global_is_offered_exactly_where_timelines_work() {
    let k = kernel();
    let mut h = Harness::new(Config::default());
    let c = h.connect();
    assert_eq!(
        h.server.bridge.syncobj_global().is_some(),
        k.has_timelines(),
        "{}",
        k.release
    );
    assert_eq!(
        c.syncobj.is_some(),
        k.has_timelines(),
        "what the client sees"
    );
}

#[test]
fn timelines_beyond_the_per_client_cap_are_refused() {
    kernel();
    let Some(device) = timeline_device("timeline_cap") else {
        return;
    };
    let mut h = Harness::new(Config {
        max_timelines_per_client: 2,
        ..Config::default()
    });
    let mut c = h.connect();
    let timeline = device.create_timeline().unwrap();
    let fd = timeline.export_fd().unwrap();
    for _ in 0..2 {
        c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
    }
    h.roundtrip(&mut c);
    assert_eq!(c.protocol_error(), None, "within the cap");
    c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
    h.roundtrip(&mut c);
    assert_eq!(c.protocol_error(), Some((MANAGER_INTERFACE.to_owned(), 1)));
    let report = h.report(&c);
    assert!(
        report.protocol_errors[0].contains("limit"),
        "{:?}",
        report.protocol_errors
    );
}
