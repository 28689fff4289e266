//! What every kernel test needs: the kernel it runs on and what that kernel is known to offer
//! (docs/kernel-facts.md, measured), a skip that says why, fd counting, bounded dispatching.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fencebridge::fence::SyncFile;
use fencebridge::producer::Vgem;

/// The running kernel.
pub struct Kernel {
    pub release: String,
    version: (u32, u32),
}

impl Kernel {
    /// Syncobj timelines on virtio_gpu: 6.12 and later (6.1 answers EOPNOTSUPP).
    pub fn has_timelines(&self) -> bool {
        self.version >= (6, 12)
    }

    /// `SYNCOBJ_EVENTFD` (6.6+), where timelines exist at all.
    pub fn has_eventfd(&self) -> bool {
        self.version >= (6, 6) && self.has_timelines()
    }

    /// udmabuf and /dev/dma_heap/system are built in Debian's 6.12 and 7.x kernels, not 6.1.
    pub fn has_udmabuf_and_heaps(&self) -> bool {
        self.version >= (6, 12)
    }

    /// Up to 6.12 the stub fence is named "stub"; from 7.x signalled fences are renamed.
    pub fn stub_is_named(&self) -> bool {
        self.version < (7, 0)
    }
}

/// The kernel we run on; panics outside the VM, where these tests mean nothing.
pub fn kernel() -> Kernel {
    assert_eq!(
        std::env::var("FENCEBRIDGE_VM").as_deref(),
        Ok("1"),
        "kernel tests run inside the VM: use `cargo xtask test`"
    );
    let uts = rustix::system::uname();
    let release = uts.release().to_string_lossy().into_owned();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    Kernel { release, version }
}

/// Records that a test could not run its body on this kernel, and why. The harness counts these
/// lines as skipped. Callers assert first that the kernel really is expected to lack the feature,
/// so a regression on a kernel that has it fails instead of skipping.
pub fn skip(test: &str, reason: &str) {
    let line = format!("fencebridge-skip: {test}: {reason}\n");
    // Straight to fd 2: libtest captures `eprintln!`, not writes to the stderr handle.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The vgem device; every VM has it.
pub fn vgem() -> Vgem {
    Vgem::open().expect("vgem is loaded in the VM")
}

/// A pending write fence, as a sync_file, from a fresh vgem buffer (signal it with the first
/// half; the buffer itself is no longer needed: the fence lives on).
pub fn pending_fence(vgem: &Vgem) -> (fencebridge::producer::VgemFence, SyncFile) {
    let buf = vgem.create_buffer(16, 16).unwrap();
    let fence = buf.attach_fence(true).unwrap();
    let snapshot = fencebridge::fence::dmabuf::export(
        &[buf.dmabuf()],
        fencebridge::fence::Access::Read,
        &fencebridge::fence::StubSignature::names_only(),
    )
    .unwrap();
    (fence, snapshot.fence.expect("a pending fence"))
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc is mounted")
        .count()
}

/// Whether a dma-buf (or sync_file) polls ready for `flags` right now.
pub fn polls_ready(fd: impl AsFd, flags: rustix::event::PollFlags) -> bool {
    let mut fds = [rustix::event::PollFd::new(&fd, flags)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).expect("poll") > 0
}

/// Whether a sync_file has signalled.
pub fn signalled(fence: &SyncFile) -> bool {
    fence.is_signalled().expect("poll a sync_file")
}

/// Dispatches `event_loop` until `done(data)` or `limit` passes; returns whether it got done.
/// Limits stay far below vgem's 10 s self-signal.
pub fn dispatch_until<D>(
    event_loop: &mut calloop::EventLoop<'_, D>,
    data: &mut D,
    limit: Duration,
    done: impl Fn(&D) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while !done(data) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        event_loop
            .dispatch(Some(left.min(Duration::from_millis(50))), data)
            .expect("dispatch");
    }
    true
}

/// How long a "still pending" observation waits: long enough for a wrongly-early wake-up to show
/// (the fallback waiter wakes 5–10 ms after a transfer), far inside vgem's 10 s timeout.
pub const QUIET: Duration = Duration::from_millis(150);
/// How long a test allows for a wake-up that must come.
pub const WAKE: Duration = Duration::from_secs(3);

/// The syncobj timeline device, or — on a kernel the measured matrix says lacks one — a skip
/// that says so. A kernel that disagrees with the matrix either way fails the test.
pub fn timeline_device(test: &str) -> Option<fencebridge::timeline::SyncobjDevice> {
    let device = expected_timeline_device();
    if device.is_none() {
        skip(
            test,
            &format!(
                "not supported on this kernel ({}: no syncobj timeline device)",
                kernel().release
            ),
        );
    }
    device
}

/// The syncobj timeline device where the matrix says there is one, `None` where it says there
/// is none; anything else fails.
pub fn expected_timeline_device() -> Option<fencebridge::timeline::SyncobjDevice> {
    let k = kernel();
    match fencebridge::timeline::SyncobjDevice::find() {
        Ok(device) => {
            assert!(
                k.has_timelines(),
                "{} unexpectedly offers syncobj timelines",
                k.release
            );
            assert_eq!(
                device.supports_eventfd(),
                k.has_eventfd(),
                "SYNCOBJ_EVENTFD on {}",
                k.release
            );
            Some(device)
        }
        Err(e) => {
            assert!(
                !k.has_timelines(),
                "{} should offer syncobj timelines: {e}",
                k.release
            );
            None
        }
    }
}

/// A small seeded generator (splitmix64) for the soak and the randomised request sequences:
/// the same seed gives the same run.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `FENCEBRIDGE_SEED` if set, else `default`; says which seed it uses, so a
    /// failing run can be replayed.
    pub fn from_env(test: &str, default: u64) -> Rng {
        Rng::seeded(test, env_u64("FENCEBRIDGE_SEED", default))
    }

    /// Seeded with `seed`; says so.
    pub fn seeded(test: &str, seed: u64) -> Rng {
        let line = format!("{test}: seed {seed} (replay with FENCEBRIDGE_SEED={seed})\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
        Rng(seed)
    }

    // A generator step, not an iterator: it never ends, and the tests call it by this name.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A number from the environment (runs longer on demand), else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
