//! Explicit clients (linux-drm-syncobj-v1 on a virtio_gpu timeline): the commit waits for the
//! acquire point, the acquire fence is published on the dma-buf for implicit readers, and the
//! release point comes from the renderer's read fence — and always comes.

use std::os::fd::AsFd;
use std::time::Duration;

use fencebridge::fence::{dmabuf, Access};
use fencebridge::producer::{VgemBuffer, VgemFence};
use fencebridge::source::WaitMethod;
use fencebridge::timeline::Timeline;
use fencebridge::wayland::{self, CommitPath, Config};
use smithay::wayland::compositor::with_states;
use wayland_client::protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

use super::harness::{Harness, TestClient};
use super::{applied, becomes_signalled, key};
use crate::support::{kernel, pending_fence, signalled, timeline_device, vgem, QUIET, WAKE};

/// An explicit-sync client: a surface with its syncobj object and two buffers, each with its
/// own timeline (as Vulkan WSI does: a timeline's points signal in order, so a release point
/// must not fall behind a later acquire point on the same timeline).
struct Explicit {
    c: TestClient,
    surface: WlSurface,
    sync: WpLinuxDrmSyncobjSurfaceV1,
    buffers: Vec<ExplicitBuffer>,
}

struct ExplicitBuffer {
    vgem: VgemBuffer,
    wl: WlBuffer,
    timeline: Timeline,
    wl_timeline: WpLinuxDrmSyncobjTimelineV1,
}

impl Explicit {
    fn new(h: &mut Harness, test: &str) -> Option<Explicit> {
        kernel();
        let device = timeline_device(test)?;
        assert!(
            h.server.bridge.syncobj_global().is_some(),
            "linux-drm-syncobj-v1 offered where timelines work"
        );
        let mut c = h.connect();
        let surface = c.surface();
        let sync = c.syncobj().get_surface(&surface, &c.qh, ());
        let vgem = vgem();
        let buffers = (0..2)
            .map(|_| {
                let buf = vgem.create_buffer(16, 16).unwrap();
                let timeline = device.create_timeline().unwrap();
                let fd = timeline.export_fd().unwrap();
                ExplicitBuffer {
                    wl: c.dmabuf_buffer(buf.dmabuf(), 16, 16, buf.pitch()),
                    vgem: buf,
                    wl_timeline: c.syncobj().import_timeline(fd.as_fd(), &c.qh, ()),
                    timeline,
                }
            })
            .collect();
        h.roundtrip(&mut c);
        Some(Explicit {
            c,
            surface,
            sync,
            buffers,
        })
    }

    /// Commits buffer `i` with acquire point 1 and release point 2 on its timeline.
    fn commit(&mut self, h: &mut Harness, i: usize) {
        let timeline = &self.buffers[i].wl_timeline;
        self.sync.set_acquire_point(timeline, 0, 1);
        self.sync.set_release_point(timeline, 0, 2);
        self.c.commit(&self.surface, Some(&self.buffers[i].wl));
        h.roundtrip(&mut self.c);
    }

    /// The timeline of buffer `i`.
    fn timeline(&self, i: usize) -> &Timeline {
        &self.buffers[i].timeline
    }

    /// Whether buffer `i`'s release point has signalled.
    fn released(&self, i: usize) -> bool {
        self.timeline(i).is_signalled(2).unwrap()
    }
}

#[test]
fn without_eventfd_the_waiter_thread_holds_the_commit() {
    // Kernels before 6.6 lack SYNCOBJ_EVENTFD; the same wait through the fallback.
    let mut h = Harness::new(Config {
        point_wait: WaitMethod::WaiterThread,
        ..Config::default()
    });
    let Some(mut e) = Explicit::new(&mut h, "explicit_acquire_waiter_thread") else {
        return;
    };
    // Committed before it is submitted: a point with a fence would be waited for on that.
    e.commit(&mut h, 0);
    let (gpu, acquire) = pending_fence(&vgem());
    e.timeline(0).import_sync_file(1, &acquire).unwrap();
    let k = key(&e.c, &e.surface);
    assert!(
        !h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)),
        "applied before acquire"
    );
    gpu.signal().unwrap();
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
}

#[test]
fn an_explicit_commit_waits_for_its_acquire_point_and_publishes_it_on_the_dmabuf() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_acquire") else {
        return;
    };
    let (gpu, acquire) = pending_fence(&vgem());
    e.timeline(0).import_sync_file(1, &acquire).unwrap();
    e.commit(&mut h, 0);
    let k = key(&e.c, &e.surface);
    // Implicit readers of the buffer (another process, another fd) now wait for the acquire
    // fence, although the client's "GPU" never touched the dma-buf's own fences.
    let implicit = dmabuf::export_one(e.buffers[0].vgem.dmabuf(), Access::Read).unwrap();
    assert!(!signalled(&implicit), "the acquire fence is on the dma-buf");
    assert!(
        !h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)),
        "applied before acquire"
    );
    gpu.signal().unwrap();
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    assert!(signalled(&implicit));
    assert!(!e.released(0), "the buffer is still shown");
    let report = h.report(&e.c);
    assert_eq!(report.commits_by(CommitPath::ExplicitWaited), 1);
    // The applied commit's acquire fence, for KMS or capture, and on the compositor's timeline.
    let srv = h.server_surface(&e.c, &e.surface);
    assert!(signalled(
        &with_states(&srv, wayland::acquire_fence).expect("an acquire fence")
    ));
    let bridge = &mut h.server.bridge;
    let handoff = with_states(&srv, |states| {
        wayland::acquire_timeline_point(bridge, states)
    })
    .unwrap()
    .expect("a point on the compositor's timeline");
    assert!(handoff.timeline.is_signalled(handoff.point).unwrap());
    let bridge = &mut h.server.bridge;
    let again = with_states(&srv, |states| {
        wayland::acquire_timeline_point(bridge, states)
    })
    .unwrap();
    assert_eq!(
        again.map(|p| p.point),
        Some(handoff.point),
        "one point per commit"
    );
}

#[test]
fn a_pending_acquire_point_is_waited_for_on_its_published_fence_without_an_eventfd() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_acquire_without_eventfd") else {
        return;
    };
    let (gpu, acquire) = pending_fence(&vgem());
    e.timeline(0).import_sync_file(1, &acquire).unwrap();
    let ioctls = fencebridge::sys::ioctl_count();
    e.commit(&mut h, 0);
    // The query that finds the point pending, its export (transfer and sync_file) and its
    // publishing on the dma-buf; the wait polls that sync_file, with no SYNCOBJ_EVENTFD.
    assert_eq!(fencebridge::sys::ioctl_count() - ioctls, 4);
    let k = key(&e.c, &e.surface);
    assert!(
        !h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)),
        "applied before acquire"
    );
    gpu.signal().unwrap();
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    assert_eq!(h.report(&e.c).commits_by(CommitPath::ExplicitWaited), 1);
}

#[test]
fn an_acquire_point_submitted_after_the_commit_costs_no_ioctl_once_it_has_signalled() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_acquire_submitted_late") else {
        return;
    };
    // The client commits before it submits: point 1 has no fence yet.
    e.commit(&mut h, 0);
    let k = key(&e.c, &e.surface);
    assert!(
        !h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)),
        "applied before acquire"
    );
    let (gpu, acquire) = pending_fence(&vgem());
    e.timeline(0).import_sync_file(1, &acquire).unwrap();
    gpu.signal().unwrap();
    let ioctls = fencebridge::sys::ioctl_count();
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    // The wait fired because the point has signalled: exporting its fence and putting it on
    // the dma-buf (three ioctls) would hand implicit readers a fence with nothing to wait for.
    assert_eq!(fencebridge::sys::ioctl_count() - ioctls, 0);
    assert_eq!(h.report(&e.c).commits_by(CommitPath::ExplicitWaited), 1);
}

#[test]
fn a_read_reported_by_the_commit_handler_of_a_woken_commit_holds_its_release_point() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_read_in_commit_handler") else {
        return;
    };
    let (gpu, acquire) = pending_fence(&vgem());
    e.timeline(0).import_sync_file(1, &acquire).unwrap();
    e.commit(&mut h, 0);
    // The compositor renders buffer 0 from its commit handler, while the wake that applied it
    // has not booked it yet: the read must count as buffer 0's.
    let (read, read_fence) = pending_fence(&vgem());
    h.server.reads_in_commit.push(read_fence);
    gpu.signal().unwrap();
    let k = key(&e.c, &e.surface);
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    assert!(h.server.reads_in_commit.is_empty(), "the handler read it");
    replace_while_read(&mut h, &mut e, read);
}

#[test]
fn two_commits_applied_by_one_wake_each_keep_the_read_their_handler_reported() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_two_commits_one_wake") else {
        return;
    };
    let k = key(&e.c, &e.surface);
    let (gpu0, acquire0) = pending_fence(&vgem());
    let (gpu1, acquire1) = pending_fence(&vgem());
    e.timeline(0).import_sync_file(1, &acquire0).unwrap();
    e.timeline(1).import_sync_file(1, &acquire1).unwrap();
    e.commit(&mut h, 0);
    e.commit(&mut h, 1);
    // The second commit's fence first: it waits in smithay's queue behind the first.
    gpu1.signal().unwrap();
    assert!(!h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)));
    // One wake applies both; the compositor renders each from its commit handler.
    let (read0, read0_fence) = pending_fence(&vgem());
    let (_read1, read1_fence) = pending_fence(&vgem());
    h.server.reads_in_commit = vec![read1_fence, read0_fence];
    gpu0.signal().unwrap();
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 2)));
    assert!(h.server.reads_in_commit.is_empty(), "the handler read both");
    assert!(
        !becomes_signalled(e.timeline(0), 2, QUIET),
        "buffer 0 released while the read its commit handler reported still runs"
    );
    read0.signal().unwrap();
    assert!(
        becomes_signalled(e.timeline(0), 2, WAKE),
        "signalled by the read fence"
    );
    assert!(!e.released(1), "buffer 1 is shown");
}

/// Replaces buffer 0, which `read` still reads, with buffer 1: buffer 0's release point waits
/// for the read.
fn replace_while_read(h: &mut Harness, e: &mut Explicit, read: VgemFence) {
    let k = key(&e.c, &e.surface);
    e.timeline(1).signal(1).unwrap();
    e.commit(h, 1);
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 2)));
    assert!(
        !becomes_signalled(e.timeline(0), 2, QUIET),
        "release point signalled while the renderer still reads the buffer"
    );
    read.signal().unwrap();
    assert!(
        becomes_signalled(e.timeline(0), 2, WAKE),
        "signalled by the read fence"
    );
}

#[test]
fn the_release_point_follows_the_renderers_read_fence() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_release_after_read") else {
        return;
    };
    e.timeline(0).signal(1).unwrap();
    e.commit(&mut h, 0);
    assert_eq!(
        h.applied(&e.c, &e.surface),
        1,
        "acquire already signalled: applied at once"
    );
    assert_eq!(h.report(&e.c).commits_by(CommitPath::ExplicitReady), 1);
    let srv = h.server_surface(&e.c, &e.surface);
    let (read, read_fence) = pending_fence(&vgem());
    wayland::surface_read(&mut h.server, &srv, Some(read_fence));
    replace_while_read(&mut h, &mut e, read);
    assert!(!e.released(1), "buffer 1 is shown");
}

#[test]
fn the_release_point_comes_when_the_buffer_is_replaced_unread() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_release_on_replace") else {
        return;
    };
    e.timeline(0).signal(1).unwrap();
    e.commit(&mut h, 0);
    e.timeline(1).signal(1).unwrap();
    e.commit(&mut h, 1);
    assert_eq!(h.applied(&e.c, &e.surface), 2);
    assert!(e.released(0), "nothing read buffer 0: released at once");
    assert!(!e.released(1));
    assert_eq!(h.report(&e.c).release_points_signalled, 1);
}

/// Buffer 0 shown, buffer 1 committed and still waiting for its acquire point.
fn one_shown_one_waiting(h: &mut Harness, e: &mut Explicit) -> VgemFence {
    e.timeline(0).signal(1).unwrap();
    e.commit(h, 0);
    let (gpu, acquire) = pending_fence(&vgem());
    e.timeline(1).import_sync_file(1, &acquire).unwrap();
    e.commit(h, 1);
    assert_eq!(h.applied(&e.c, &e.surface), 1);
    assert!(!e.released(0) && !e.released(1));
    gpu
}

#[test]
fn the_release_points_come_when_the_surface_is_destroyed() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_release_on_destroy") else {
        return;
    };
    let gpu = one_shown_one_waiting(&mut h, &mut e);
    e.sync.destroy();
    e.surface.destroy();
    h.roundtrip(&mut e.c);
    assert!(e.released(0), "the shown buffer's release point");
    // A timeline signals in order: the waiting commit's release point (2) shows once the
    // client's own acquire point (1) has signalled, with no compositor left to do anything.
    gpu.signal().unwrap();
    let waiting = e.timeline(1);
    assert!(
        becomes_signalled(waiting, 2, WAKE),
        "the waiting commit's release point"
    );
}

#[test]
fn the_release_points_come_when_the_client_is_killed() {
    let mut h = Harness::default_config();
    let Some(mut e) = Explicit::new(&mut h, "explicit_release_on_kill") else {
        return;
    };
    let gpu = one_shown_one_waiting(&mut h, &mut e);
    let fds = crate::support::open_fds();
    let Explicit { c, buffers, .. } = e;
    drop(c); // the socket closes, as when the client is SIGKILLed
    for _ in 0..5 {
        h.turn(Duration::from_millis(10));
    }
    assert!(
        buffers[0].timeline.is_signalled(2).unwrap(),
        "the shown buffer's release point"
    );
    assert!(
        crate::support::open_fds() < fds,
        "the client's fds and waits are gone"
    );
    gpu.signal().unwrap();
    let waiting = &buffers[1].timeline;
    assert!(
        becomes_signalled(waiting, 2, WAKE),
        "the waiting commit's release point"
    );
}
