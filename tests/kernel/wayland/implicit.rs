//! Implicit clients: a dma-buf without syncobj points. The commit waits for the snapshot of its
//! write fences, not for fences added later; nothing pending means nothing created; a producer
//! that never fences is reported and its buffers come back only after the compositor's reads.

use std::time::Duration;

use fencebridge::bridge::producer_class::ProducerClass;
use fencebridge::fence::{dmabuf, Access};
use fencebridge::wayland::{self, CommitPath, Config, OverduePolicy};
use smithay::wayland::compositor::with_states;

use super::harness::{Blocking, Harness};
use super::{applied, key};
use crate::support::{kernel, pending_fence, signalled, vgem, QUIET, WAKE};

#[test]
fn an_implicit_commit_waits_for_its_pending_write_fence() {
    kernel();
    let vgem = vgem();
    let mut h = Harness::default_config();
    let mut c = h.connect();
    let (buf, wl) = c.vgem_buffer(&vgem);
    let surface = c.surface();
    let fence = buf.attach_fence(true).unwrap();
    c.commit(&surface, Some(&wl));
    h.roundtrip(&mut c);
    let k = key(&c, &surface);
    assert!(
        !h.run_until(&mut [&mut c], QUIET, applied(&k, 1)),
        "applied while the client's rendering was still pending"
    );
    fence.signal().unwrap();
    assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, 1)));
    let report = h.report(&c);
    assert_eq!(report.commits_by(CommitPath::ImplicitWaited), 1);
    assert_eq!(report.waits.count, 1);
    assert_eq!(report.producer, ProducerClass::Fencing);
}

#[test]
fn a_fence_added_after_the_commit_does_not_delay_it() {
    kernel();
    let vgem = vgem();
    let mut h = Harness::default_config();
    let mut c = h.connect();
    let (buf, wl) = c.vgem_buffer(&vgem);
    let surface = c.surface();
    let frame = buf.attach_fence(true).unwrap();
    c.commit(&surface, Some(&wl));
    h.roundtrip(&mut c); // the commit's snapshot holds `frame`
    frame.signal().unwrap();
    // The next frame's rendering starts before the compositor looks again: a poll on the live
    // buffer would wait for it too.
    let next = buf.attach_fence(true).unwrap();
    let k = key(&c, &surface);
    assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, 1)));
    let live = dmabuf::export_one(buf.dmabuf(), Access::Read).unwrap();
    assert!(!signalled(&live), "the later fence is still pending");
    next.signal().unwrap();
}

#[test]
fn a_buffer_with_nothing_pending_applies_in_the_same_dispatch_without_a_wait() {
    kernel();
    let vgem = vgem();
    let mut h = Harness::default_config();
    let mut c = h.connect();
    let (_buf, wl) = c.vgem_buffer(&vgem);
    let surface = c.surface();
    h.roundtrip(&mut c);
    let ioctls = fencebridge::sys::ioctl_count();
    c.commit(&surface, Some(&wl));
    h.roundtrip(&mut c);
    assert_eq!(
        h.applied(&c, &surface),
        1,
        "applied in the commit's own dispatch"
    );
    // The dma-buf polls ready: no export, no merge, no import, no source — no ioctl at all.
    assert_eq!(fencebridge::sys::ioctl_count() - ioctls, 0);
    let report = h.report(&c);
    assert_eq!(report.commits_by(CommitPath::ImplicitReady), 1);
    assert_eq!(report.waits.count, 0);
    let srv = h.server_surface(&c, &surface);
    assert!(
        with_states(&srv, wayland::acquire_fence).is_none(),
        "nothing to hand on"
    );
}

/// Commits `a`, reports a pending read of it, then commits `b`: returns whether `a` was
/// released before the read fence signalled, and whether it was after.
fn release_waits_for_reads(producer_fences: bool) -> (bool, bool) {
    let vgem = vgem();
    let config = Config {
        non_fencing_after: 2,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let mut c = h.connect();
    let (a, wl_a) = c.vgem_buffer(&vgem);
    let (b, wl_b) = c.vgem_buffer(&vgem);
    let surface = c.surface();
    let k = key(&c, &surface);
    // Classify the producer: a pending fence once, or the stub twice.
    for (n, wl, buf) in [(1, &wl_b, &b), (2, &wl_a, &a)] {
        let fence = producer_fences.then(|| buf.attach_fence(true).unwrap());
        c.commit(&surface, Some(wl));
        h.roundtrip(&mut c);
        if let Some(fence) = fence {
            fence.signal().unwrap();
        }
        assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, n)));
    }
    let expected = if producer_fences {
        ProducerClass::Fencing
    } else {
        ProducerClass::NonFencing
    };
    assert_eq!(h.report(&c).producer, expected);
    let srv = h.server_surface(&c, &surface);
    let (read, read_fence) = pending_fence(&vgem);
    wayland::surface_read(&mut h.server, &srv, Some(read_fence));
    c.commit(&surface, Some(&wl_b));
    h.roundtrip(&mut c);
    assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, 3)));
    let a_id = wayland_client::Proxy::id(&wl_a);
    let early = h.run_until(&mut [&mut c], QUIET, |_, c| {
        c[0].side.released.contains(&a_id)
    });
    read.signal().unwrap();
    let after = h.run_until(&mut [&mut c], WAKE, |_, c| {
        c[0].side.released.contains(&a_id)
    });
    (early, after)
}

#[test]
fn a_non_fencing_producer_gets_its_buffer_back_only_after_the_reads() {
    kernel();
    let (early, after) = release_waits_for_reads(false);
    assert!(!early, "released while the compositor's read was pending");
    assert!(after, "released once the read fence signalled");
}

#[test]
fn a_fencing_producer_gets_its_buffer_back_when_replaced() {
    kernel();
    // The producer waits for the read fence on the dma-buf itself: no need to hold it back.
    // (Also proves the deferral above is observable: here the same sequence releases early.)
    let (early, _) = release_waits_for_reads(true);
    assert!(early, "a fencing producer's buffer is released at once");
}

#[test]
fn a_non_fencing_producer_is_reported_once() {
    kernel();
    let vgem = vgem();
    let config = Config {
        non_fencing_after: 3,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let mut c = h.connect();
    let (_buf, wl) = c.vgem_buffer(&vgem);
    let surface = c.surface();
    for n in 1..=6 {
        c.commit(&surface, Some(&wl));
        h.roundtrip(&mut c);
        assert_eq!(h.applied(&c, &surface), n);
        let reported = h.server.non_fencing.len();
        assert_eq!(reported, usize::from(n >= 3), "after {n} commits");
    }
    let (client, _, found) = h.server.non_fencing[0].clone();
    assert_eq!(client, c.id);
    assert_eq!(found.consecutive_stub_commits, 3);
    assert_eq!(h.report(&c).producer, ProducerClass::NonFencing);
}

#[test]
fn a_stuck_fence_is_diagnosed_and_never_delays_another_client() {
    kernel();
    let vgem = vgem();
    let config = Config {
        wait_deadline: Duration::from_millis(200),
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let (mut stuck, mut other) = (h.connect(), h.connect());
    let (buf, wl) = stuck.vgem_buffer(&vgem);
    let surface = stuck.surface();
    let never = buf.attach_fence(true).unwrap();
    stuck.commit(&surface, Some(&wl));
    h.roundtrip(&mut stuck);

    let (_other_buf, other_wl) = other.vgem_buffer(&vgem);
    let other_surface = other.surface();
    for n in 1..=3 {
        other.commit(&other_surface, Some(&other_wl));
        h.roundtrip(&mut other);
        assert_eq!(
            h.applied(&other, &other_surface),
            n,
            "delayed by another client"
        );
    }
    assert!(h.run_until(&mut [&mut stuck, &mut other], WAKE, |s, _| !s
        .overdue
        .is_empty()));
    let overdue = h.server.overdue[0].clone();
    assert_eq!(overdue.pid, Some(std::process::id() as i32));
    assert!(overdue.surface.starts_with("wl_surface@"), "{overdue}");
    assert!(overdue.fence.contains("vgem"), "names the fence: {overdue}");
    assert!(!overdue.shown_anyway);
    assert_eq!(h.applied(&stuck, &surface), 0, "kept waiting (the default)");
    assert_eq!(h.report(&stuck).overdue_waits, 1);
    never.signal().unwrap();
    let k = key(&stuck, &surface);
    assert!(h.run_until(&mut [&mut stuck], WAKE, applied(&k, 1)));
    assert_eq!(h.server.overdue.len(), 1, "reported once");
}

#[test]
fn an_overdue_commit_can_be_shown_anyway() {
    kernel();
    let vgem = vgem();
    let config = Config {
        wait_deadline: Duration::from_millis(100),
        overdue: OverduePolicy::ShowAnyway,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let mut c = h.connect();
    let (buf, wl) = c.vgem_buffer(&vgem);
    let surface = c.surface();
    let never = buf.attach_fence(true).unwrap();
    c.commit(&surface, Some(&wl));
    h.roundtrip(&mut c);
    let k = key(&c, &surface);
    assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, 1)));
    assert!(h.server.overdue[0].shown_anyway);
    never.signal().unwrap();
}

#[test]
fn the_compositors_write_fence_is_published_for_implicit_consumers() {
    // A screencopy/PipeWire buffer the compositor renders into: a consumer reading it through
    // implicit sync (from its own fd) waits for the compositor's rendering.
    use smithay::backend::allocator::dmabuf::{Dmabuf, DmabufFlags};
    use smithay::backend::allocator::{Fourcc, Modifier};
    kernel();
    let vgem = vgem();
    let target = vgem.create_buffer(16, 16).unwrap();
    let mut builder = Dmabuf::builder(
        (16, 16),
        Fourcc::Xrgb8888,
        Modifier::Linear,
        DmabufFlags::empty(),
    );
    let fd = target.dmabuf().try_clone_to_owned().unwrap();
    // smithay's development branch numbers the planes itself.
    #[cfg(not(smithay_git))]
    builder.add_plane(fd, 0, 0, target.pitch());
    #[cfg(smithay_git)]
    builder.add_plane(fd, 0, target.pitch());
    let dmabuf = builder.build().unwrap();
    let (render, rendering) = pending_fence(&vgem);
    wayland::publish_compositor_write(&dmabuf, &rendering).unwrap();
    let consumer = dmabuf::export_one(target.dmabuf(), Access::Read).unwrap();
    assert!(
        !signalled(&consumer),
        "the consumer waits for the compositor's rendering"
    );
    render.signal().unwrap();
    assert!(signalled(&consumer));
}

#[test]
fn smithays_own_blocker_is_delayed_by_a_later_fence_and_the_bridge_is_not() {
    // The same sequence as `a_fence_added_after_the_commit_does_not_delay_it`, against smithay
    // 0.7's dma-buf blocker wired as anvil does (a poll on the live dma-buf): the client's next
    // frame, started after the commit, holds the commit back there.
    kernel();
    let vgem = vgem();
    for (blocking, delayed) in [(Blocking::Bridge, false), (Blocking::Smithay, true)] {
        let mut h = Harness::with_blocking(Config::default(), blocking);
        let mut c = h.connect();
        let (buf, wl) = c.vgem_buffer(&vgem);
        let surface = c.surface();
        let frame = buf.attach_fence(true).unwrap();
        c.commit(&surface, Some(&wl));
        h.roundtrip(&mut c);
        frame.signal().unwrap();
        let next = buf.attach_fence(true).unwrap();
        let k = key(&c, &surface);
        let on_time = h.run_until(&mut [&mut c], QUIET, applied(&k, 1));
        assert_eq!(on_time, !delayed, "{blocking:?}");
        next.signal().unwrap();
        assert!(
            h.run_until(&mut [&mut c], WAKE, applied(&k, 1)),
            "{blocking:?}"
        );
    }
}
