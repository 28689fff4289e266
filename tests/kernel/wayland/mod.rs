//! The smithay module end to end: a compositor built from `fencebridge::wayland` and real
//! Wayland clients over sockets, with real fences (vgem) and timelines (virtio_gpu).

use fencebridge_testkit::harness;

mod bounded;
mod device;
mod explicit;
mod fuzz;
mod hostile;
mod implicit;
mod mixed;
mod protocol_errors;
mod releases;
mod soak;

use std::time::{Duration, Instant};

use fencebridge::timeline::Timeline;
use harness::{Server, TestClient};
use smithay::reexports::wayland_server::backend::ClientId;
use wayland_client::protocol::wl_surface::WlSurface as CSurface;

/// The compositor's key for `client`'s `surface`.
fn key(client: &TestClient, surface: &CSurface) -> (ClientId, u32) {
    (
        client.id.clone(),
        wayland_client::Proxy::id(surface).protocol_id(),
    )
}

/// A closure for [`Harness::run_until`]: `surface` has had `n` commits applied.
fn applied(key: &(ClientId, u32), n: u32) -> impl Fn(&Server, &[&mut TestClient]) -> bool + '_ {
    move |server, _| server.applied.get(key).copied().unwrap_or(0) >= n
}

/// Waits (sleeping, off any loop) until `point` signals or `limit` passes.
fn becomes_signalled(timeline: &Timeline, point: u64, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while !timeline.is_signalled(point).unwrap() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}
