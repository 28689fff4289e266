//! Hostile clients: each case gets the right protocol error or a clean refusal, never a panic;
//! another client's frames keep flowing meanwhile, and once the hostile client is gone nothing
//! of it is left in the compositor (fds, syncobj handles). The protocol errors a plain
//! misbehaving client provokes (a memfd as a timeline, release without acquire, points with an
//! shm buffer or none, acquire = release) are in `protocol_errors.rs`.
//!
//! Not here: `import_timeline` with a closed fd. A closed fd cannot travel over a Wayland
//! socket (SCM_RIGHTS takes open files only: the client's `sendmsg` fails with EBADF), so the
//! compositor never sees one; the API's answer to a closed fd (`Error::BadFd`) is tested in
//! `bad_input.rs`.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use fencebridge::bridge::protocol::{MANAGER_INTERFACE, SURFACE_INTERFACE};
use fencebridge::producer::{Vgem, VgemBuffer};
use fencebridge::timeline::{SyncobjDevice, Timeline};
use fencebridge::wayland::{CommitPath, Config, KEPT_GONE_CLIENTS};
use wayland_client::protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

use super::harness::{hi_lo, Harness, TestClient};
use super::{applied, key};
use crate::support::{kernel, open_fds, pending_fence, timeline_device, vgem, QUIET, WAKE};

/// A compositor with a bystander client showing frames, and what it held before the hostile
/// client came.
pub(super) struct Arena {
    pub h: Harness,
    pub vgem: Vgem,
    bystander: TestClient,
    surface: WlSurface,
    buffer: (VgemBuffer, WlBuffer),
    fds: usize,
    handles: Option<usize>,
}

impl Arena {
    pub fn new() -> Arena {
        Arena::with(Config::default())
    }

    pub fn with(config: Config) -> Arena {
        let mut h = Harness::new(config);
        let vgem = vgem();
        let bystander = h.connect();
        let surface = bystander.surface();
        let buffer = bystander.vgem_buffer(&vgem);
        let mut arena = Arena {
            fds: 0,
            handles: None,
            h,
            vgem,
            bystander,
            surface,
            buffer,
        };
        arena.frame_flows();
        arena.fds = open_fds();
        arena.handles = arena.server_handles();
        arena
    }

    fn server_handles(&self) -> Option<usize> {
        self.h
            .server
            .bridge
            .syncobj_device()
            .map(|d| d.live_handles())
    }

    /// The bystander's next frame, with a pending fence, is applied once that fence signals.
    pub fn frame_flows(&mut self) {
        let k = key(&self.bystander, &self.surface);
        let n = self.h.server.applied.get(&k).copied().unwrap_or(0);
        let fence = self.buffer.0.attach_fence(true).unwrap();
        self.bystander.commit(&self.surface, Some(&self.buffer.1));
        self.h.roundtrip(&mut self.bystander);
        fence.signal().unwrap();
        assert!(
            self.h
                .run_until(&mut [&mut self.bystander], WAKE, applied(&k, n + 1)),
            "the bystander's frame was held up"
        );
    }

    /// The compositor's syncobj device started its waiter thread (the first wait through the
    /// fallback), which keeps one fd and one syncobj handle (its wake timeline) of its own for
    /// the device's life.
    pub fn waiter_started(&mut self) {
        self.fds += 1;
        self.handles = self.handles.map(|h| h + 1);
    }

    /// With the hostile client gone: the bystander still gets its frames, and the compositor
    /// holds exactly what it held before.
    pub fn nothing_left(&mut self) {
        for _ in 0..5 {
            self.h.turn(Duration::from_millis(5));
        }
        self.frame_flows();
        assert_eq!(open_fds(), self.fds, "fds left behind");
        assert_eq!(
            self.server_handles(),
            self.handles,
            "syncobj handles left behind"
        );
    }
}

/// An explicit client's kit: a surface with its syncobj object, a dma-buf and two timelines.
struct Explicit {
    c: TestClient,
    surface: WlSurface,
    sync: WpLinuxDrmSyncobjSurfaceV1,
    buffers: Vec<(VgemBuffer, WlBuffer)>,
    timelines: Vec<(Timeline, WpLinuxDrmSyncobjTimelineV1)>,
}

impl Explicit {
    fn new(arena: &mut Arena, device: &SyncobjDevice) -> Explicit {
        let mut c = arena.h.connect();
        let surface = c.surface();
        let sync = c.syncobj().get_surface(&surface, &c.qh, ());
        let buffers = (0..2).map(|_| c.vgem_buffer(&arena.vgem)).collect();
        let timelines = (0..2)
            .map(|_| {
                let timeline = device.create_timeline().unwrap();
                let fd = timeline.export_fd().unwrap();
                let wl = c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
                (timeline, wl)
            })
            .collect();
        arena.h.roundtrip(&mut c);
        Explicit {
            c,
            surface,
            sync,
            buffers,
            timelines,
        }
    }

    /// Sets `acquire` on timeline `a` and `release` on timeline `r`, commits buffer `b`.
    fn commit(
        &mut self,
        h: &mut Harness,
        b: usize,
        (a, acquire): (usize, u64),
        (r, release): (usize, u64),
    ) {
        let (hi, lo) = hi_lo(acquire);
        self.sync.set_acquire_point(&self.timelines[a].1, hi, lo);
        let (hi, lo) = hi_lo(release);
        self.sync.set_release_point(&self.timelines[r].1, hi, lo);
        self.c.commit(&self.surface, Some(&self.buffers[b].1));
        h.roundtrip(&mut self.c);
    }

    fn timeline(&self, i: usize) -> &Timeline {
        &self.timelines[i].0
    }
}

/// A file of each kind that is not a syncobj (a memfd is in `protocol_errors.rs`).
fn not_syncobjs(vgem: &Vgem) -> Vec<(&'static str, OwnedFd)> {
    let buf = vgem.create_buffer(16, 16).unwrap();
    let (_fence, sync_file) = pending_fence(vgem);
    vec![
        (
            "an eventfd",
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap(),
        ),
        (
            "/dev/null",
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap(),
        ),
        ("a dma-buf", buf.dmabuf().try_clone_to_owned().unwrap()),
        (
            "a sync_file",
            sync_file.as_fd().try_clone_to_owned().unwrap(),
        ),
    ]
}

#[test]
fn import_timeline_refuses_every_kind_of_non_syncobj_fd() {
    kernel();
    if timeline_device("import_timeline_refuses_non_syncobjs").is_none() {
        return;
    }
    let mut arena = Arena::new();
    for (what, fd) in not_syncobjs(&arena.vgem) {
        let mut c = arena.h.connect();
        c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
        arena.h.roundtrip(&mut c);
        assert_eq!(
            c.protocol_error(),
            Some((MANAGER_INTERFACE.to_owned(), 1)),
            "{what} as a timeline"
        );
        let report = arena.h.report(&c);
        assert!(
            report.protocol_errors[0].starts_with("invalid_timeline"),
            "{what}: {:?}",
            report.protocol_errors
        );
        drop((c, fd));
        arena.frame_flows();
    }
    arena.nothing_left();
}

#[test]
fn point_zero_is_neither_waited_for_nor_signalled() {
    kernel();
    let Some(device) = timeline_device("point_zero") else {
        return;
    };
    let mut arena = Arena::new();
    let mut e = Explicit::new(&mut arena, &device);
    let k = key(&e.c, &e.surface);
    // Acquire point 0: the buffer is acquired like an implicit one, from its dma-buf's fences.
    let rendering = e.buffers[0].0.attach_fence(true).unwrap();
    e.commit(&mut arena.h, 0, (0, 0), (1, 1));
    assert!(
        !arena.h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)),
        "applied while the dma-buf's fence was pending"
    );
    rendering.signal().unwrap();
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    // Release point 0, with a pending point 5 on the same timeline: point 0 is never signalled
    // (that would replace the timeline's fence), so point 5 stays the client's.
    let (gpu, fence) = pending_fence(&arena.vgem);
    e.timeline(0).import_sync_file(5, &fence).unwrap();
    e.timeline(1).signal(2).unwrap();
    e.commit(&mut arena.h, 1, (1, 2), (0, 0));
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 2)));
    e.timeline(1).signal(4).unwrap();
    e.commit(&mut arena.h, 0, (1, 4), (1, 6)); // replaces the buffer released at point 0
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 3)));
    assert_eq!(
        e.c.protocol_error(),
        None,
        "point 0 is not a protocol error"
    );
    assert!(
        e.timeline(1).is_signalled(1).unwrap(),
        "release point 1 came"
    );
    assert!(
        !e.timeline(0).is_signalled(5).unwrap(),
        "the client's point 5 untouched"
    );
    gpu.signal().unwrap();
    assert!(e.timeline(0).is_signalled(5).unwrap());
    drop(fence);
    let report = arena.h.report(&e.c);
    assert_eq!(report.zero_points, 2);
    assert_eq!(report.commits_by(CommitPath::ImplicitWaited), 1);
    drop(e);
    arena.nothing_left();
}

#[test]
fn the_highest_points_and_high_word_points_are_waited_for_exactly() {
    kernel();
    let Some(device) = timeline_device("extreme_points") else {
        return;
    };
    let mut arena = Arena::new();
    let mut e = Explicit::new(&mut arena, &device);
    let k = key(&e.c, &e.surface);
    // High word only: 1 << 32 (a compositor that read only the low word would see point 0).
    let high = 1u64 << 32;
    e.commit(&mut arena.h, 0, (0, high), (1, high));
    e.timeline(0).signal(high - 1).unwrap();
    assert!(
        !arena.h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)),
        "applied at point 2^32 - 1"
    );
    e.timeline(0).signal(high).unwrap();
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    // The largest point there is, on both timelines.
    e.commit(&mut arena.h, 1, (0, u64::MAX), (1, u64::MAX));
    assert!(!arena.h.run_until(&mut [&mut e.c], QUIET, applied(&k, 2)));
    e.timeline(0).signal(u64::MAX).unwrap();
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 2)));
    assert!(
        e.timeline(1).is_signalled(high).unwrap(),
        "the replaced buffer's release"
    );
    assert_eq!(e.c.protocol_error(), None);
    // Acquire u64::MAX and release 0 on one timeline: acquire >= release.
    e.commit(&mut arena.h, 0, (1, u64::MAX), (1, 0));
    assert_eq!(
        e.c.protocol_error(),
        Some((SURFACE_INTERFACE.to_owned(), 6))
    );
    drop(e);
    arena.nothing_left();
}

#[test]
fn a_timeline_destroyed_with_points_pending_still_waits_and_releases() {
    kernel();
    let Some(device) = timeline_device("timeline_destroyed_with_points") else {
        return;
    };
    let mut arena = Arena::new();
    let mut e = Explicit::new(&mut arena, &device);
    let k = key(&e.c, &e.surface);
    // Points set, then the timeline objects destroyed before the commit: the points hold them.
    let (gpu, first) = pending_fence(&arena.vgem);
    e.timeline(0).import_sync_file(1, &first).unwrap();
    let (hi, lo) = hi_lo(1);
    e.sync.set_acquire_point(&e.timelines[0].1, hi, lo);
    let (hi, lo) = hi_lo(2);
    e.sync.set_release_point(&e.timelines[0].1, hi, lo);
    e.timelines[0].1.destroy();
    e.c.commit(&e.surface, Some(&e.buffers[0].1));
    arena.h.roundtrip(&mut e.c);
    // And the other timeline destroyed while a commit waits on it.
    assert!(!arena.h.run_until(&mut [&mut e.c], QUIET, applied(&k, 1)));
    gpu.signal().unwrap();
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 1)));
    let (gpu, fence) = pending_fence(&arena.vgem);
    e.timeline(1).import_sync_file(1, &fence).unwrap();
    e.commit(&mut arena.h, 1, (1, 1), (1, 2));
    e.timelines[1].1.destroy();
    arena.h.roundtrip(&mut e.c);
    gpu.signal().unwrap();
    assert!(arena.h.run_until(&mut [&mut e.c], WAKE, applied(&k, 2)));
    assert!(
        e.timeline(0).is_signalled(2).unwrap(),
        "the release point on the destroyed timeline came"
    );
    assert_eq!(e.c.protocol_error(), None);
    drop((e, fence, first));
    arena.nothing_left();
}

#[test]
fn an_implicit_surface_destroyed_mid_wait_lets_go_of_its_wait_at_once() {
    kernel();
    let mut arena = Arena::new();
    let mut c = arena.h.connect();
    let (buf, wl) = c.vgem_buffer(&arena.vgem);
    let surface = c.surface();
    let never = buf.attach_fence(true).unwrap();
    c.commit(&surface, Some(&wl));
    arena.h.roundtrip(&mut c);
    let waiting = open_fds();
    surface.destroy();
    arena.h.roundtrip(&mut c);
    assert!(
        open_fds() < waiting,
        "the snapshot's sync_file is closed with the surface, before its fence signals"
    );
    arena.frame_flows();
    drop((c, wl, buf));
    arena.nothing_left();
    never.signal().unwrap();
}

#[test]
fn a_client_sigkilled_mid_wait_leaves_nothing_behind() {
    kernel();
    let device = crate::support::expected_timeline_device();
    let mut arena = Arena::new();
    let mut c = arena.h.connect();
    // An implicit surface waiting for a fence...
    let (buf, wl) = c.vgem_buffer(&arena.vgem);
    let surface = c.surface();
    let implicit = buf.attach_fence(true).unwrap();
    c.commit(&surface, Some(&wl));
    arena.h.roundtrip(&mut c);
    let key_of_waiting = key(&c, &surface);
    // ... and, where the kernel has timelines, an explicit one waiting for its acquire point.
    let mut explicit = device.as_ref().map(|d| Explicit::new(&mut arena, d));
    let mut gpu = None;
    if let Some(e) = &mut explicit {
        e.timeline(0).signal(1).unwrap();
        e.commit(&mut arena.h, 0, (0, 1), (0, 2)); // shown
        let (fence, sync_file) = pending_fence(&arena.vgem);
        e.timeline(1).import_sync_file(1, &sync_file).unwrap();
        e.commit(&mut arena.h, 1, (1, 1), (1, 2)); // waiting
        gpu = Some(fence);
    }
    // The clients' connections now belong to a process of their own, which is SIGKILLed while
    // its commits wait: the kernel closes the sockets, nobody says goodbye.
    let mut sockets: Vec<OwnedFd> = vec![rustix::io::dup(c.conn.backend().poll_fd()).unwrap()];
    if let Some(e) = &explicit {
        sockets.push(rustix::io::dup(e.c.conn.backend().poll_fd()).unwrap());
    }
    // `dup` leaves CLOEXEC off: the child inherits exactly these.
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep runs in the guest");
    drop(sockets);
    let timelines = explicit.take().map(|e| {
        let Explicit { c, timelines, .. } = e;
        drop(c);
        timelines
    });
    drop(c);
    for _ in 0..3 {
        arena.h.turn(Duration::from_millis(5));
    }
    assert_eq!(
        arena.h.server.applied.get(&key_of_waiting).copied(),
        None,
        "still waiting while the client's process lives"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    arena.frame_flows();
    if let Some(timelines) = &timelines {
        assert!(
            timelines[0].0.is_signalled(2).unwrap(),
            "the shown buffer's release point"
        );
        gpu.take().unwrap().signal().unwrap();
        let end = std::time::Instant::now() + WAKE;
        while !timelines[1].0.is_signalled(2).unwrap() {
            assert!(
                std::time::Instant::now() < end,
                "the waiting commit's release point"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(timelines);
    drop((wl, buf));
    arena.nothing_left();
    implicit.signal().unwrap();
}

#[test]
fn ten_thousand_timelines_from_one_client_meet_the_cap_not_fd_exhaustion() {
    kernel();
    let Some(device) = timeline_device("ten_thousand_timelines") else {
        return;
    };
    let mut arena = Arena::new();
    let cap = Config::default().max_timelines_per_client;
    let timeline = device.create_timeline().unwrap();
    let fd = timeline.export_fd().unwrap();
    let mut c = arena.h.connect();
    let mut sent = 0;
    let mut most_handles = 0;
    while sent < 10_000 && c.protocol_error().is_none() {
        for _ in 0..100 {
            c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
        }
        sent += 100;
        c.pump();
        arena.h.turn(Duration::ZERO);
        c.pump();
        most_handles = most_handles.max(arena.server_handles().unwrap());
    }
    arena.h.roundtrip(&mut c);
    assert_eq!(c.protocol_error(), Some((MANAGER_INTERFACE.to_owned(), 1)));
    let report = arena.h.report(&c);
    assert!(
        report.protocol_errors[0].contains(&format!("{cap} timelines")),
        "{:?}",
        report.protocol_errors
    );
    assert!(
        most_handles <= arena.handles.unwrap() + cap,
        "the compositor held {most_handles} syncobj handles"
    );
    drop((c, fd));
    arena.nothing_left();
}

#[test]
fn client_churn_does_not_grow_the_bridges_books() {
    kernel();
    let mut arena = Arena::new();
    for _ in 0..3 * KEPT_GONE_CLIENTS {
        let mut c = arena.h.connect();
        let (buf, wl) = c.vgem_buffer(&arena.vgem);
        let surface = c.surface();
        c.commit(&surface, Some(&wl));
        arena.h.roundtrip(&mut c);
        drop((c, buf));
        arena.h.turn(Duration::ZERO);
    }
    let books = arena.h.server.bridge.client_reports().count();
    assert!(
        books <= 2 * KEPT_GONE_CLIENTS + 1,
        "{books} clients' books kept"
    );
    arena.nothing_left();
}
