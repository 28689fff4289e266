//! Soak: 100,000 commit / replace / destroy cycles over several clients, implicit and explicit,
//! with seeded random fence timings (`FENCEBRIDGE_SEED` replays a run,
//! `FENCEBRIDGE_SOAK_CYCLES` runs it longer). Every applied commit is checked against what its
//! client did: applied in commit order and never before its fence signalled (no stale frame).
//! At the end, with every client gone: no fd and no syncobj handle leaked, and every release
//! point any client set has signalled.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fencebridge::fence::{dmabuf, Access, StubSignature};
use fencebridge::producer::{Vgem, VgemBuffer, VgemFence};
use fencebridge::timeline::{SyncobjDevice, Timeline};
use fencebridge::wayland::{self, Config};
use smithay::reexports::wayland_server::backend::ClientId;
use wayland_client::protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface};
use wayland_client::Proxy;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};

use super::harness::{hi_lo, Harness, TestClient};
use crate::support::{env_u64, expected_timeline_device, kernel, open_fds, vgem, Rng, WAKE};

/// Whether a fence has signalled, shared between the fence's owner and the commits it guards.
type Flag = Rc<Cell<bool>>;

fn flag(value: bool) -> Flag {
    Rc::new(Cell::new(value))
}

struct Buf {
    vgem: VgemBuffer,
    wl: WlBuffer,
    id: u32,
    /// The last fence attached to it (a vgem write fence blocks the next attach until it
    /// signals, as a GPU queue would order them).
    last_fence: Flag,
    /// Explicit clients: the buffer's own timeline (as Vulkan WSI does) and the last release
    /// point set on it.
    timeline: Option<(Timeline, WpLinuxDrmSyncobjTimelineV1, u64)>,
}

/// A commit the client made and the compositor has not applied yet.
struct Queued {
    buffer: Option<u32>,
    ready: Flag,
}

struct Slot {
    surface: WlSurface,
    sync: Option<WpLinuxDrmSyncobjSurfaceV1>,
    key: (ClientId, u32),
    queue: VecDeque<Queued>,
    bufs: Vec<Buf>,
}

struct Soaker {
    c: TestClient,
    slots: Vec<Slot>,
    explicit: bool,
}

/// Something to signal after some steps.
enum Later {
    Vgem(VgemFence),
    Point(Timeline, u64),
}

struct Pending {
    later: Later,
    steps: u64,
    ready: Option<Flag>,
}

const SLOTS: usize = 3;
const BUFFERS: usize = 3;

struct Soak {
    h: Harness,
    vgem: Vgem,
    device: Option<SyncobjDevice>,
    stub: StubSignature,
    rng: Rng,
    clients: Vec<Soaker>,
    keys: HashMap<(ClientId, u32), (usize, usize)>,
    /// Commits of surfaces destroyed (or clients gone) since the last step: the compositor may
    /// still apply those it handles before the destroy request.
    graveyard: HashMap<(ClientId, u32), (VecDeque<Queued>, bool)>,
    pending: Vec<Pending>,
    /// Timelines of clients that are gone, with their last release point.
    retired: Vec<(Timeline, u64)>,
    reader: VgemBuffer,
    applied: u64,
    explicit_applied: u64,
    commits: u64,
}

impl Soak {
    fn key(c: &TestClient, surface: &WlSurface) -> (ClientId, u32) {
        (c.id.clone(), surface.id().protocol_id())
    }

    fn new_slot(&self, c: &TestClient, explicit: bool) -> Slot {
        let surface = c.surface();
        let sync = explicit.then(|| c.syncobj().get_surface(&surface, &c.qh, ()));
        let bufs = (0..BUFFERS)
            .map(|_| {
                let (vgem, wl) = c.vgem_buffer(&self.vgem);
                let timeline = self.device.as_ref().filter(|_| explicit).map(|d| {
                    let timeline = d.create_timeline().unwrap();
                    let fd = timeline.export_fd().unwrap();
                    let wl = c.syncobj().import_timeline(fd.as_fd(), &c.qh, ());
                    (timeline, wl, 0)
                });
                Buf {
                    id: wl.id().protocol_id(),
                    vgem,
                    wl,
                    last_fence: flag(true),
                    timeline,
                }
            })
            .collect();
        Slot {
            key: Self::key(c, &surface),
            surface,
            sync,
            queue: VecDeque::new(),
            bufs,
        }
    }

    fn connect(&mut self, index: usize, explicit: bool) {
        let mut c = self.h.connect();
        let slots: Vec<Slot> = (0..SLOTS).map(|_| self.new_slot(&c, explicit)).collect();
        self.h.roundtrip(&mut c);
        for (s, slot) in slots.iter().enumerate() {
            self.keys.insert(slot.key.clone(), (index, s));
        }
        let soaker = Soaker { c, slots, explicit };
        if index == self.clients.len() {
            self.clients.push(soaker);
        } else {
            let old = std::mem::replace(&mut self.clients[index], soaker);
            self.retire(old);
        }
    }

    /// A client goes away (its socket closes, as when it is killed).
    fn retire(&mut self, old: Soaker) {
        for slot in old.slots {
            self.keys.remove(&slot.key);
            self.graveyard.insert(slot.key, (slot.queue, old.explicit));
            for buf in slot.bufs {
                if let Some((timeline, _, last)) = buf.timeline {
                    self.retired.push((timeline, last));
                }
            }
        }
    }

    /// A fence for a commit now: none, already signalled, or pending for a few steps.
    fn implicit_fence(&mut self, ci: usize, si: usize, b: usize) -> Flag {
        let roll = self.rng.below(100);
        let steps = self.rng.below(6);
        let buf = &mut self.clients[ci].slots[si].bufs[b];
        if roll < 30 || !buf.last_fence.get() {
            // No new fence: the commit is ready when whatever is on the buffer is.
            return buf.last_fence.clone();
        }
        let Ok(fence) = buf.vgem.attach_fence(true) else {
            return buf.last_fence.clone();
        };
        if roll < 50 {
            fence.signal().unwrap();
            return buf.last_fence.clone();
        }
        let ready = flag(false);
        buf.last_fence = ready.clone();
        self.pending.push(Pending {
            later: Later::Vgem(fence),
            steps,
            ready: Some(ready.clone()),
        });
        ready
    }

    /// An explicit commit's acquire point: signalled now, a pending fence imported into it, or
    /// no fence yet (submitted and signalled later, from the CPU).
    fn acquire(&mut self, ci: usize, si: usize, b: usize, point: u64) -> Flag {
        let roll = self.rng.below(100);
        let steps = self.rng.below(6);
        let buf = &mut self.clients[ci].slots[si].bufs[b];
        let timeline = buf.timeline.as_ref().unwrap().0.clone();
        if roll < 30 {
            timeline.signal(point).unwrap();
            return flag(true);
        }
        let ready = flag(false);
        let later = match buf.vgem.attach_fence(true) {
            Ok(fence) if roll < 65 => {
                let snap = dmabuf::export(&[buf.vgem.dmabuf()], Access::Read, &self.stub).unwrap();
                timeline
                    .import_sync_file(point, snap.fence.as_ref().expect("pending"))
                    .unwrap();
                buf.last_fence = ready.clone();
                Later::Vgem(fence)
            }
            Ok(fence) => {
                fence.signal().unwrap();
                Later::Point(timeline, point)
            }
            Err(_) => Later::Point(timeline, point),
        };
        self.pending.push(Pending {
            later,
            steps,
            ready: Some(ready.clone()),
        });
        ready
    }

    /// One commit on a random surface; false if the client had no buffer free.
    fn commit(&mut self) -> bool {
        let ci = self.rng.below(self.clients.len() as u64) as usize;
        let si = self.rng.below(SLOTS as u64) as usize;
        let explicit = self.clients[ci].explicit;
        if !explicit && self.rng.chance(3) {
            // A null attach: nothing to wait for.
            let slot = &mut self.clients[ci].slots[si];
            slot.surface.attach(None, 0, 0);
            slot.surface.commit();
            slot.queue.push_back(Queued {
                buffer: None,
                ready: flag(true),
            });
            return true;
        }
        let (b, ready) = if explicit {
            // A buffer whose release point has signalled (the client's WSI waits for that).
            let free = self.clients[ci].slots[si].bufs.iter().position(|buf| {
                let (timeline, _, last) = buf.timeline.as_ref().unwrap();
                *last == 0 || timeline.is_signalled(*last).unwrap()
            });
            let Some(b) = free else {
                return false;
            };
            let last = self.clients[ci].slots[si].bufs[b]
                .timeline
                .as_ref()
                .unwrap()
                .2;
            let ready = self.acquire(ci, si, b, last + 1);
            let slot = &mut self.clients[ci].slots[si];
            let (_, wl_timeline, last) = slot.bufs[b].timeline.as_mut().unwrap();
            *last += 2;
            let sync = slot.sync.as_ref().unwrap();
            let (hi, lo) = hi_lo(*last - 1);
            sync.set_acquire_point(wl_timeline, hi, lo);
            let (hi, lo) = hi_lo(*last);
            sync.set_release_point(wl_timeline, hi, lo);
            (b, ready)
        } else {
            let b = self.rng.below(BUFFERS as u64) as usize;
            (b, self.implicit_fence(ci, si, b))
        };
        let soaker = &mut self.clients[ci];
        let slot = &mut soaker.slots[si];
        soaker.c.commit(&slot.surface, Some(&slot.bufs[b].wl));
        slot.queue.push_back(Queued {
            buffer: Some(slot.bufs[b].id),
            ready,
        });
        true
    }

    /// The renderer reads a random surface, with a read fence that signals a few steps later.
    fn read(&mut self) {
        let ci = self.rng.below(self.clients.len() as u64) as usize;
        let si = self.rng.below(SLOTS as u64) as usize;
        let key = self.clients[ci].slots[si].key.clone();
        let Some(srv) = self.h.server.surfaces.get(&key).cloned() else {
            return;
        };
        let Ok(fence) = self.reader.attach_fence(true) else {
            return;
        };
        let snap = dmabuf::export(&[self.reader.dmabuf()], Access::Read, &self.stub).unwrap();
        wayland::surface_read(&mut self.h.server, &srv, snap.fence);
        let steps = self.rng.below(8);
        self.pending.push(Pending {
            later: Later::Vgem(fence),
            steps,
            ready: None,
        });
    }

    /// Destroys a random surface (whatever it still waits for) and makes a new one in its place.
    fn destroy(&mut self) {
        let ci = self.rng.below(self.clients.len() as u64) as usize;
        let si = self.rng.below(SLOTS as u64) as usize;
        let explicit = self.clients[ci].explicit;
        let soaker = &mut self.clients[ci];
        let slot = &mut soaker.slots[si];
        if let Some(sync) = slot.sync.take() {
            sync.destroy();
        }
        slot.surface.destroy();
        self.keys.remove(&slot.key);
        let queue = std::mem::take(&mut slot.queue);
        self.graveyard.insert(slot.key.clone(), (queue, explicit));
        slot.surface = soaker.c.surface();
        slot.sync = explicit.then(|| {
            soaker
                .c
                .syncobj()
                .get_surface(&slot.surface, &soaker.c.qh, ())
        });
        slot.key = Self::key(&soaker.c, &slot.surface);
        self.keys.insert(slot.key.clone(), (ci, si));
    }

    /// Signals what is due, runs the compositor once, and checks every commit it applied.
    fn step(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].steps == 0 {
                let due = self.pending.swap_remove(i);
                match due.later {
                    Later::Vgem(fence) => fence.signal().unwrap(),
                    Later::Point(timeline, point) => timeline.signal(point).unwrap(),
                }
                if let Some(ready) = due.ready {
                    ready.set(true);
                }
            } else {
                self.pending[i].steps -= 1;
                i += 1;
            }
        }
        for s in &mut self.clients {
            let _ = s.c.conn.flush();
        }
        self.h.turn(Duration::ZERO);
        for s in &mut self.clients {
            s.c.pump();
            s.c.side.released.clear();
        }
        for applied in std::mem::take(&mut self.h.server.log) {
            let (queue, explicit) = match self.keys.get(&applied.key) {
                Some(&(ci, si)) => {
                    let soaker = &mut self.clients[ci];
                    (&mut soaker.slots[si].queue, soaker.explicit)
                }
                None => match self.graveyard.get_mut(&applied.key) {
                    Some((queue, explicit)) => (queue, *explicit),
                    None => panic!("a commit applied on unknown {:?}", applied.key),
                },
            };
            let queued = queue
                .pop_front()
                .expect("applied a commit the client never made");
            assert_eq!(
                queued.buffer, applied.buffer,
                "commits applied out of order"
            );
            assert!(
                queued.ready.get(),
                "STALE FRAME: buffer {:?} applied before its fence signalled",
                applied.buffer
            );
            self.applied += 1;
            self.explicit_applied += u64::from(explicit);
        }
        self.graveyard.clear();
    }

    /// Signals everything, lets every client go, and runs the compositor until it is idle.
    fn finish(&mut self) {
        for p in &mut self.pending {
            p.steps = 0;
        }
        let end = Instant::now() + WAKE;
        let idle = |s: &Soak| {
            s.clients
                .iter()
                .all(|c| c.slots.iter().all(|slot| slot.queue.is_empty()))
        };
        while !idle(self) {
            assert!(
                Instant::now() < end,
                "every commit applies once its fence signalled"
            );
            self.step();
        }
        for old in std::mem::take(&mut self.clients) {
            self.retire(old);
        }
        for _ in 0..5 {
            self.h.turn(Duration::from_millis(5));
        }
    }
}

#[test]
fn a_hundred_thousand_cycles_leak_nothing_and_never_show_a_stale_frame() {
    kernel();
    let cycles = env_u64("FENCEBRIDGE_SOAK_CYCLES", 100_000);
    let seed = crate::support::env_u64("FENCEBRIDGE_SEED", 0x50a4);
    let fds = open_fds();
    // Two compositors, one per core (each single-threaded, as a compositor is), share the
    // cycles: under emulation one would take a minute. Their crate-wide state (the ioctl
    // counter, the devices) is shared. The fds are counted with both compositors up, before
    // their clients come and after they are gone (so a source left in a loop counts), and
    // again once the compositors are gone.
    let meet = Arc::new(Rendezvous::new(3));
    let halves: Vec<_> = (0..2)
        .map(|i| {
            let n = cycles / 2 + (cycles % 2) * (1 - i);
            let meet = meet.clone();
            std::thread::spawn(move || {
                let _guard = BreakOnPanic(&meet);
                soak(seed.wrapping_add(i), n, &meet)
            })
        })
        .collect();
    let mut counts = Vec::new();
    for _ in 0..2 {
        if !meet.wait() {
            break;
        }
        counts.push(open_fds());
        if !meet.wait() {
            break;
        }
    }
    for half in halves {
        if let Err(panic) = half.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let [with_compositors, after] = counts[..] else {
        panic!("a compositor thread stopped early");
    };
    assert_eq!(after, with_compositors, "fds leaked (all clients gone)");
    assert_eq!(open_fds(), fds, "fds leaked (both compositors gone)");
}

/// A barrier that a panicking party breaks, so that the others stop waiting.
struct Rendezvous {
    state: Mutex<(usize, u64, bool)>,
    cv: Condvar,
    parties: usize,
}

impl Rendezvous {
    fn new(parties: usize) -> Self {
        Rendezvous {
            state: Mutex::new((0, 0, false)),
            cv: Condvar::new(),
            parties,
        }
    }

    /// Waits for every party; false if one broke the rendezvous.
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, generation + 1, state.2);
            self.cv.notify_all();
            return !state.2;
        }
        while state.1 == generation && !state.2 {
            state = self.cv.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        !state.2
    }

    fn break_it(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).2 = true;
        self.cv.notify_all();
    }
}

struct BreakOnPanic<'a>(&'a Rendezvous);

impl Drop for BreakOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.break_it();
        }
    }
}

/// One compositor and its clients through `cycles` cycles.
fn soak(seed: u64, cycles: u64, meet: &Rendezvous) {
    let device = expected_timeline_device();
    let h = Harness::new(Config {
        // A slow emulated step must not make a wait overdue (that is reported, not a failure,
        // but it is not what this test is about).
        wait_deadline: Duration::from_secs(60),
        ..Config::default()
    });
    let vgem = vgem();
    let mut soak = Soak {
        reader: vgem.create_buffer(16, 16).unwrap(),
        h,
        vgem,
        device,
        stub: StubSignature::calibrate(),
        rng: Rng::seeded("soak", seed),
        clients: Vec::new(),
        keys: HashMap::new(),
        graveyard: HashMap::new(),
        pending: Vec::new(),
        retired: Vec::new(),
        applied: 0,
        explicit_applied: 0,
        commits: 0,
    };
    // Both compositors are up: the test counts fds.
    assert!(meet.wait() && meet.wait());
    let server_handles = soak
        .h
        .server
        .bridge
        .syncobj_device()
        .map(|d| d.live_handles());
    // Three implicit clients, and two explicit ones where the kernel has timelines.
    let explicit = usize::from(soak.device.is_some()) * 2;
    for i in 0..3 + explicit {
        soak.connect(i, i >= 3);
    }
    let started = Instant::now();
    let mut cycle = 0;
    while cycle < cycles {
        let roll = soak.rng.below(1000);
        if roll < 40 {
            soak.destroy();
            cycle += 1;
        } else if roll < 90 {
            soak.read();
        } else if roll == 999 && soak.rng.chance(10) {
            // Now and then a client disconnects with everything in flight.
            let i = soak.rng.below(soak.clients.len() as u64) as usize;
            let explicit = soak.clients[i].explicit;
            soak.connect(i, explicit);
        } else if soak.commit() {
            soak.commits += 1;
            cycle += 1;
        }
        if roll % 4 == 0 {
            soak.step();
        }
    }
    soak.finish();
    let elapsed = started.elapsed();
    let line = format!(
        "soak (seed {seed}): {cycles} cycles ({} commits, {} applied, {} explicit) in {:.1} s\n",
        soak.commits,
        soak.applied,
        soak.explicit_applied,
        elapsed.as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    assert!(
        soak.applied > cycles / 2,
        "the clients made progress: {line}"
    );
    if explicit > 0 {
        assert!(
            soak.explicit_applied > cycles / 10,
            "explicit clients made progress: {line}"
        );
    }
    // Every release point any client ever set comes (a timeline point reads as signalled once
    // the client's own acquire points before it have).
    for (timeline, last) in &soak.retired {
        if *last > 0 {
            let end = Instant::now() + WAKE;
            while !timeline.is_signalled(*last).unwrap() {
                assert!(Instant::now() < end, "release point {last} never signalled");
                soak.h.turn(Duration::from_millis(5));
            }
        }
    }
    soak.retired.clear();
    // Every client gone, the compositors still up: the test counts fds again.
    assert!(meet.wait() && meet.wait());
    assert_eq!(
        soak.h
            .server
            .bridge
            .syncobj_device()
            .map(|d| d.live_handles()),
        server_handles,
        "syncobj handles leaked (seed {seed})"
    );
}
