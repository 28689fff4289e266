//! Implicit → explicit in forty lines: snapshot a dma-buf's write fences, wait for them in a
//! calloop loop without blocking it, and hand the same fence on as a timeline point. A vgem
//! buffer with a hand-signalled fence stands in for a client's GPU-rendered buffer.
//!
//! Needs vgem (and virtio_gpu or a GPU for the timeline part):
//! `cargo build --example snapshot_wait && cargo xtask vm -- target/debug/examples/snapshot_wait`

use std::time::{Duration, Instant};

use calloop::timer::{TimeoutAction, Timer};
use calloop::EventLoop;
use fencebridge::fence::{dmabuf, Access, StubSignature};
use fencebridge::producer::Vgem;
use fencebridge::source::{PointWait, SyncFileSource, WaitMethod};
use fencebridge::timeline::{SyncobjDevice, WaitFor};

#[derive(Default)]
struct Waits {
    sync_file: Option<Instant>,
    point: Option<Instant>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vgem = Vgem::open()?;
    let buffer = vgem.create_buffer(256, 256)?;
    let mut gpu_write = Some(buffer.attach_fence(true)?); // a GPU job still writing
    let snapshot = dmabuf::export(
        &[buffer.dmabuf()],
        Access::Read,
        &StubSignature::calibrate(),
    )?;
    println!(
        "at commit: {:?}, {} dma-buf(s)",
        snapshot.state, snapshot.unique_dmabufs
    );
    let Some(fence) = snapshot.fence else {
        return Ok(());
    };

    let mut event_loop = EventLoop::<Waits>::try_new()?;
    let handle = event_loop.handle();
    let started = Instant::now();
    // The "GPU" finishes 50 ms from now.
    handle.insert_source(
        Timer::from_duration(Duration::from_millis(50)),
        move |_, _, _| {
            gpu_write.take().map(|f| f.signal());
            TimeoutAction::Drop
        },
    )?;
    // The explicit point, where a syncobj timeline device exists.
    let device = SyncobjDevice::find().ok();
    let timeline = device.as_ref().map(|d| d.create_timeline()).transpose()?;
    if let Some(timeline) = &timeline {
        timeline.import_sync_file(1, &fence)?;
        if let PointWait::Pending(source) =
            PointWait::new(timeline, 1, WaitFor::Signalled, WaitMethod::Auto)?
        {
            handle.insert_source(source, |result, _, waits: &mut Waits| {
                result.expect("point wait");
                waits.point = Some(Instant::now());
            })?;
        }
    }
    handle.insert_source(SyncFileSource::new(fence), |_, _, waits: &mut Waits| {
        waits.sync_file = Some(Instant::now())
    })?;

    let mut waits = Waits::default();
    while waits.sync_file.is_none() || (timeline.is_some() && waits.point.is_none()) {
        event_loop.dispatch(Some(Duration::from_secs(1)), &mut waits)?;
    }
    println!(
        "sync_file ready after {:?}",
        waits.sync_file.map(|t| t - started)
    );
    match waits.point {
        Some(t) => println!("timeline point 1 ready after {:?}", t - started),
        None => println!("no syncobj timeline device: no explicit point handed on"),
    }
    Ok(())
}
