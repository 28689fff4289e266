//! Release obligations that reach beyond one buffer: a timeline shared by several buffers and
//! surfaces (its points signal in order, so an owed point must never be overtaken), and a
//! buffer read by several passes (its release waits for every one of them).
//!
//! The compositor's read fences are vgem fences signalled by hand (they self-signal after 10 s:
//! every check here ends within a second or two of its fence's creation). A release point is
//! watched two ways: its value (`SYNCOBJ_QUERY`), and an eventfd the kernel signals the moment
//! a waiter on that point would wake (`SYNCOBJ_EVENTFD`), which also catches a point that
//! reads as signalled only for an instant.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use fencebridge::producer::{Vgem, VgemBuffer, VgemFence};
use fencebridge::timeline::{SyncobjDevice, Timeline, WaitFor};
use fencebridge::wayland;
use rustix::event::{eventfd, EventfdFlags, PollFlags};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface as ServerSurface;
use wayland_client::protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

use super::harness::{hi_lo, Harness, Server, TestClient};
use super::{applied, becomes_signalled, key};
use crate::support::{
    expected_timeline_device, kernel, pending_fence, polls_ready, timeline_device, vgem, QUIET,
    WAKE,
};

/// A point on a timeline, watched by an eventfd the kernel signals when a waiter on that point
/// would wake.
struct Watch {
    eventfd: OwnedFd,
    point: u64,
}

impl Watch {
    fn new(timeline: &Timeline, point: u64) -> Watch {
        let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        timeline
            .register_eventfd(point, eventfd.as_fd(), WaitFor::Signalled)
            .unwrap();
        Watch { eventfd, point }
    }

    /// Whether the point has read as signalled, now or at any moment since the watch began.
    fn fired(&self, timeline: &Timeline) -> bool {
        polls_ready(&self.eventfd, PollFlags::IN) || timeline.is_signalled(self.point).unwrap()
    }
}

/// A surface with its syncobj object.
struct Surface {
    wl: WlSurface,
    sync: WpLinuxDrmSyncobjSurfaceV1,
}

/// One client whose release points all go on one timeline, shared by every buffer and surface
/// (acquire points go on a second timeline, signalled before each commit, so that the client's
/// own signals never touch the shared one).
struct SharedTimeline {
    /// What the scenario does, for the messages.
    scenario: &'static str,
    h: Harness,
    c: Option<TestClient>,
    vgem: Vgem,
    buffers: Vec<VgemBuffer>,
    /// The shared release timeline, as the client holds it.
    releases: Timeline,
    wl_releases: WpLinuxDrmSyncobjTimelineV1,
    acquires: Timeline,
    wl_acquires: WpLinuxDrmSyncobjTimelineV1,
    next_acquire: u64,
    /// A timeline nobody signals, for a commit that must stay queued.
    stuck: WpLinuxDrmSyncobjTimelineV1,
}

impl SharedTimeline {
    fn new(device: &SyncobjDevice, scenario: &'static str) -> SharedTimeline {
        let mut h = Harness::default_config();
        let mut c = h.connect();
        let import = |timeline: &Timeline| {
            let fd = timeline.export_fd().unwrap();
            c.syncobj().import_timeline(fd.as_fd(), &c.qh, ())
        };
        let releases = device.create_timeline().unwrap();
        let acquires = device.create_timeline().unwrap();
        let stuck = device.create_timeline().unwrap();
        let (wl_releases, wl_acquires, wl_stuck) =
            (import(&releases), import(&acquires), import(&stuck));
        h.roundtrip(&mut c);
        SharedTimeline {
            scenario,
            h,
            c: Some(c),
            vgem: vgem(),
            buffers: Vec::new(),
            releases,
            wl_releases,
            acquires,
            wl_acquires,
            next_acquire: 0,
            stuck: wl_stuck,
        }
    }

    fn c(&mut self) -> &mut TestClient {
        self.c.as_mut().expect("the client is connected")
    }

    fn surface(&mut self) -> Surface {
        let c = self.c();
        let wl = c.surface();
        let sync = c.syncobj().get_surface(&wl, &c.qh, ());
        Surface { wl, sync }
    }

    fn buffer(&mut self) -> WlBuffer {
        let (vgem, wl) = self.c.as_ref().unwrap().vgem_buffer(&self.vgem);
        self.buffers.push(vgem);
        wl
    }

    fn roundtrip(&mut self) {
        let c = self.c.as_mut().unwrap();
        self.h.roundtrip(c);
    }

    /// Commits a new buffer on `s` with release point `release` on the shared timeline and an
    /// acquire point already signalled: it applies at once.
    fn show(&mut self, s: &Surface, release: u64) {
        let before = self.h.applied(self.c.as_ref().unwrap(), &s.wl);
        self.commit_ready(s, release);
        self.roundtrip();
        let c = self.c.as_ref().unwrap();
        assert_eq!(self.h.applied(c, &s.wl), before + 1, "applied at once");
    }

    /// Commits a new buffer on `s` with release point `release` on the shared timeline and an
    /// acquire point already signalled.
    fn commit_ready(&mut self, s: &Surface, release: u64) {
        self.next_acquire += 1;
        self.acquires.signal(self.next_acquire).unwrap();
        let (hi, lo) = hi_lo(self.next_acquire);
        s.sync.set_acquire_point(&self.wl_acquires, hi, lo);
        self.set_release(s, release);
        let buffer = self.buffer();
        self.c().commit(&s.wl, Some(&buffer));
    }

    /// Commits a new buffer on `s` with release point `release`, whose acquire point never
    /// signals: it stays queued.
    fn queue(&mut self, s: &Surface, release: u64) {
        s.sync.set_acquire_point(&self.stuck, 0, 1);
        self.set_release(s, release);
        let buffer = self.buffer();
        let before = self.h.applied(self.c.as_ref().unwrap(), &s.wl);
        self.c().commit(&s.wl, Some(&buffer));
        self.roundtrip();
        let c = self.c.as_ref().unwrap();
        assert_eq!(self.h.applied(c, &s.wl), before, "still queued");
    }

    fn set_release(&mut self, s: &Surface, release: u64) {
        let (hi, lo) = hi_lo(release);
        s.sync.set_release_point(&self.wl_releases, hi, lo);
    }

    /// Shows a new buffer on `s` at release point `point` and reads it: the point is owed to
    /// that read until its fence (a vgem fence) signals.
    fn shown_and_read(&mut self, s: &Surface, point: u64) -> Owed {
        self.show(s, point);
        let srv = self.h.server_surface(self.c.as_ref().unwrap(), &s.wl);
        let (read, fence) = pending_fence(&self.vgem);
        wayland::surface_read(&mut self.h.server, &srv, Some(fence));
        Owed {
            read,
            watch: Watch::new(&self.releases, point),
        }
    }

    fn destroy(&mut self, s: Surface) {
        s.sync.destroy();
        s.wl.destroy();
        self.roundtrip();
    }

    /// Runs the compositor for a while, then checks that `owed` has not read as signalled.
    fn still_owed(&mut self, owed: &Owed, step: &str) {
        for _ in 0..5 {
            self.h.turn(QUIET / 5);
            if let Some(c) = self.c.as_mut() {
                c.pump();
            }
        }
        assert!(
            !owed.watch.fired(&self.releases),
            "{}: release point {} read as signalled while the compositor still read its buffer, \
             after {step}",
            self.scenario,
            owed.watch.point
        );
    }

    /// The read ends: the owed point and `held_back`, a point held back behind it, signal.
    fn read_ends(&mut self, owed: Owed, held_back: u64) {
        owed.read.signal().unwrap();
        let end = Instant::now() + WAKE;
        while !owed.watch.fired(&self.releases) && Instant::now() < end {
            self.h.turn(Duration::from_millis(10));
        }
        assert!(
            owed.watch.fired(&self.releases),
            "{}: release point {} never signalled after its read",
            self.scenario,
            owed.watch.point
        );
        assert!(
            becomes_signalled(&self.releases, held_back, WAKE),
            "{}: release point {held_back}, held back behind {}, never signalled",
            self.scenario,
            owed.watch.point
        );
    }
}

/// A release point owed to a read still running.
struct Owed {
    read: VgemFence,
    watch: Watch,
}

#[test]
fn timeline_release_never_overtakes_an_owed_point() {
    kernel();
    let Some(device) = timeline_device("timeline_release_never_overtakes_an_owed_point") else {
        return;
    };

    // A buffer replaced unread on one surface while another surface's buffer on the same
    // timeline, lower point, is shown and being read.
    let mut t = SharedTimeline::new(&device, "replaced unread");
    let (s1, s2) = (t.surface(), t.surface());
    let owed = t.shown_and_read(&s1, 2);
    t.show(&s2, 4);
    t.show(&s2, 6); // point 4's buffer replaced, nothing read it
    t.still_owed(&owed, "point 4's buffer was replaced unread");
    assert!(
        !t.releases.is_signalled(4).unwrap(),
        "point 4 is held back behind the owed point 2"
    );
    t.show(&s1, 8); // point 2's buffer replaced: it is due after its read
    t.still_owed(&owed, "point 2's own buffer was replaced");
    t.read_ends(owed, 4);
    assert!(!t.releases.is_signalled(6).unwrap(), "6 is shown");

    // A commit still queued (its acquire point never signals) dropped with its surface.
    let mut t = SharedTimeline::new(&device, "queued commit dropped with its surface");
    let (s1, s2) = (t.surface(), t.surface());
    let owed = t.shown_and_read(&s1, 2);
    t.queue(&s2, 4);
    t.destroy(s2);
    t.still_owed(&owed, "a surface with a queued commit at 4 was destroyed");
    t.destroy(s1);
    t.still_owed(&owed, "point 2's surface was destroyed");
    t.read_ends(owed, 4);

    // Release points set and never committed: replaced by another, dropped with the syncobj
    // object.
    let mut t = SharedTimeline::new(&device, "uncommitted release points");
    let (s1, s2) = (t.surface(), t.surface());
    let owed = t.shown_and_read(&s1, 2);
    t.set_release(&s2, 6);
    t.set_release(&s2, 8);
    t.roundtrip();
    t.still_owed(&owed, "release point 6 was replaced before a commit");
    s2.sync.destroy();
    t.roundtrip();
    t.still_owed(&owed, "release point 8 was dropped with its syncobj object");
    t.show(&s1, 10);
    t.read_ends(owed, 8);

    // The surface that shows point 2 goes, with a higher point pending on it: its syncobj
    // object first (the pending point is dropped before the shown buffer's is due), then the
    // surface.
    let mut t = SharedTimeline::new(&device, "surface destroyed with a higher point pending");
    let s1 = t.surface();
    let owed = t.shown_and_read(&s1, 2);
    t.set_release(&s1, 4);
    t.destroy(s1);
    t.still_owed(&owed, "its surface was destroyed");
    t.read_ends(owed, 4);

    // Two buffers on one point (nothing in the protocol forbids it): the unread one's release
    // must wait for the read one.
    let mut t = SharedTimeline::new(&device, "one point, two buffers");
    let (s1, s2) = (t.surface(), t.surface());
    let owed = t.shown_and_read(&s1, 2);
    t.show(&s2, 2);
    t.show(&s2, 4); // the second buffer at point 2 replaced unread
    t.still_owed(&owed, "the other buffer at point 2 was replaced unread");
    t.show(&s1, 6);
    t.read_ends(owed, 2);

    // The client dies: every surface goes at once, in whatever order the server tears them
    // down (unread points on both sides of the read one).
    let mut t = SharedTimeline::new(&device, "client gone");
    let (before, s1, after) = (t.surface(), t.surface(), t.surface());
    t.show(&before, 4);
    let owed = t.shown_and_read(&s1, 2);
    t.show(&after, 6);
    drop(t.c.take()); // the socket closes, as when the client is SIGKILLed
    t.still_owed(&owed, "the client was killed");
    t.read_ends(owed, 6);
}

/// A synchronised subsurface's commit superseded by the next one before its parent commits is
/// never shown, so its release point is due at once (and leaves the books at once) — in its
/// timeline's order all the same: never before a lower point still owed to a read.
#[test]
fn merged_subsurface_commit_never_overtakes_an_owed_point() {
    kernel();
    let Some(device) = timeline_device("merged_subsurface_commit_never_overtakes_an_owed_point")
    else {
        return;
    };
    let mut t = SharedTimeline::new(&device, "synchronised subsurface commit merged away");
    let shown = t.surface();
    let owed = t.shown_and_read(&shown, 2);
    let (parent, child) = (t.surface(), t.surface());
    let c = t.c();
    let subcompositor = c
        .subcompositor
        .as_ref()
        .expect("wl_subcompositor is offered");
    let _synchronised = subcompositor.get_subsurface(&child.wl, &parent.wl, &c.qh, ());
    t.commit_ready(&child, 4);
    t.commit_ready(&child, 6); // the commit at 4 is merged away: nothing will show it
    t.roundtrip();
    t.still_owed(
        &owed,
        "a synchronised subsurface's commit at 4 was merged away",
    );
    assert!(
        !t.releases.is_signalled(4).unwrap(),
        "point 4 is held back behind the owed point 2"
    );
    t.show(&shown, 8); // point 2's buffer replaced: it is due after its read
    t.still_owed(&owed, "point 2's own buffer was replaced");
    t.read_ends(owed, 4);
    assert!(
        !t.releases.is_signalled(6).unwrap(),
        "6 waits in the subsurface's transaction"
    );
}

/// An explicit client with a timeline per buffer (as Vulkan WSI has).
struct PerBuffer {
    c: TestClient,
    surface: WlSurface,
    sync: WpLinuxDrmSyncobjSurfaceV1,
    buffers: Vec<(VgemBuffer, WlBuffer, Timeline, WpLinuxDrmSyncobjTimelineV1)>,
}

impl PerBuffer {
    fn new(h: &mut Harness, device: &SyncobjDevice) -> PerBuffer {
        let mut c = h.connect();
        let surface = c.surface();
        let sync = c.syncobj().get_surface(&surface, &c.qh, ());
        let buffers = (0..2)
            .map(|_| {
                let (vgem, wl) = c.vgem_buffer(&vgem());
                let timeline = device.create_timeline().unwrap();
                let fd = timeline.export_fd().unwrap();
                let wl_timeline = c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
                (vgem, wl, timeline, wl_timeline)
            })
            .collect();
        h.roundtrip(&mut c);
        PerBuffer {
            c,
            surface,
            sync,
            buffers,
        }
    }

    /// Commits buffer `i`: acquire point 1 (signalled), release point 2, on its timeline.
    fn commit(&mut self, h: &mut Harness, i: usize) {
        let (_, wl, timeline, wl_timeline) = &self.buffers[i];
        timeline.signal(1).unwrap();
        self.sync.set_acquire_point(wl_timeline, 0, 1);
        self.sync.set_release_point(wl_timeline, 0, 2);
        self.c.commit(&self.surface, Some(wl));
        h.roundtrip(&mut self.c);
    }
}

/// Commits `buffer` as `surface`'s first frame and waits until it applies; the surface as the
/// compositor knows it.
fn first_frame(
    h: &mut Harness,
    c: &mut TestClient,
    surface: &WlSurface,
    buffer: &WlBuffer,
) -> ServerSurface {
    let k = key(c, surface);
    c.commit(surface, Some(buffer));
    h.roundtrip(c);
    assert!(h.run_until(&mut [&mut *c], WAKE, applied(&k, 1)));
    h.server_surface(c, surface)
}

#[test]
fn release_waits_for_every_read() {
    kernel();
    let vgem = vgem();

    // wl_buffer.release of a buffer whose producer may ignore fences (a client not yet
    // classified): two passes read it (two outputs), and the first to report ends last.
    let mut h = Harness::default_config();
    let mut c = h.connect();
    let surface = c.surface();
    let k = key(&c, &surface);
    let (_a, wl_a) = c.vgem_buffer(&vgem);
    let (_b, wl_b) = c.vgem_buffer(&vgem);
    let srv = first_frame(&mut h, &mut c, &surface, &wl_a);
    let (first, first_fence) = pending_fence(&vgem);
    let (second, second_fence) = pending_fence(&vgem);
    wayland::surface_read(&mut h.server, &srv, Some(first_fence));
    wayland::surface_read(&mut h.server, &srv, Some(second_fence));
    c.commit(&surface, Some(&wl_b));
    h.roundtrip(&mut c);
    assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, 2)));
    let a = wayland_client::Proxy::id(&wl_a);
    let released = |_: &Server, c: &[&mut TestClient]| c[0].side.released.contains(&a);
    second.signal().unwrap();
    assert!(
        !h.run_until(&mut [&mut c], QUIET, released),
        "wl_buffer.release sent while the first read was still running"
    );
    first.signal().unwrap();
    assert!(
        h.run_until(&mut [&mut c], WAKE, released),
        "wl_buffer.release once both reads ended"
    );

    // The release point of an explicit client's buffer, read twice the same way.
    let device = expected_timeline_device();
    let Some(device) = device else {
        // Not a skip: the wl_buffer.release half above ran; this kernel has no timelines.
        eprintln!(
            "release_waits_for_every_read: release points not checked on {} (no syncobj \
             timeline device)",
            kernel().release
        );
        return;
    };
    let mut h = Harness::default_config();
    let mut e = PerBuffer::new(&mut h, &device);
    let k = key(&e.c, &e.surface);
    e.commit(&mut h, 0);
    assert_eq!(h.applied(&e.c, &e.surface), 1);
    let srv = h.server_surface(&e.c, &e.surface);
    let (first, first_fence) = pending_fence(&vgem);
    let (second, second_fence) = pending_fence(&vgem);
    wayland::surface_read(&mut h.server, &srv, Some(first_fence));
    wayland::surface_read(&mut h.server, &srv, Some(second_fence));
    let timeline = &e.buffers[0].2;
    let watch = Watch::new(timeline, 2);
    e.commit(&mut h, 1);
    assert!(h.run_until(&mut [&mut e.c], WAKE, applied(&k, 2)));
    second.signal().unwrap();
    h.run_until(&mut [&mut e.c], QUIET, |_, _| false);
    let timeline = &e.buffers[0].2;
    assert!(
        !watch.fired(timeline),
        "release point signalled while the first read was still running"
    );
    first.signal().unwrap();
    assert!(
        becomes_signalled(timeline, 2, WAKE),
        "release point signalled once both reads ended"
    );
}

/// wl_shm is copied as the renderer draws it (GLES uploads it, pixman reads it on the CPU): a
/// frame's read fence still pending does not hold the buffer back, which goes back with the
/// commit that replaces it. A two-buffer client that draws the moment its frame callback comes
/// (weston-simple-shm) needs it by then, and the next frame's callbacks may go out before the
/// last frame's fence has signalled.
#[test]
fn a_copied_shm_buffer_goes_back_with_the_commit_replacing_it() {
    kernel();
    let vgem = vgem();
    let mut h = Harness::default_config();
    let mut c = h.connect();
    let surface = c.surface();
    let (wl_a, wl_b) = (c.shm_buffer(), c.shm_buffer());
    let srv = first_frame(&mut h, &mut c, &surface, &wl_a);
    let (frame, frame_fence) = pending_fence(&vgem);
    wayland::surface_read(&mut h.server, &srv, Some(frame_fence));
    c.commit(&surface, Some(&wl_b));
    h.roundtrip(&mut c);
    let a = wayland_client::Proxy::id(&wl_a);
    assert!(
        c.side.released.contains(&a),
        "the copied shm buffer was not released by the roundtrip after its replacement"
    );
    // Replacing an shm buffer no frame read waits for nothing either.
    c.commit(&surface, Some(&wl_a));
    h.roundtrip(&mut c);
    let b = wayland_client::Proxy::id(&wl_b);
    assert!(c.side.released.contains(&b), "the unread shm buffer");
    frame.signal().unwrap();
}
