//! One client, a surface and its subsurface, as a video player or a browser shows them: two
//! producers (a GPU interface that fences, video from a device that never does), each surface
//! classified by its own commits so each gets the release its producer needs; and a render walk
//! over the tree that reports its reads from inside the walk, where smithay holds the surfaces'
//! locks.

use std::time::Duration;

use fencebridge::bridge::producer_class::ProducerClass;
use fencebridge::fence::{dmabuf, Access};
use fencebridge::producer::{udmabuf_alloc, Vgem};
use fencebridge::wayland;
use fencebridge::wayland::Config;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor::{with_surface_tree_downward, TraversalAction};
use wayland_client::protocol::wl_buffer::WlBuffer as CBuffer;

use super::harness::{Harness, TestClient};
use super::{applied, key};
use crate::support::{kernel, pending_fence, signalled, vgem, QUIET, WAKE};

/// A 16×16 buffer whose producer never fences: a udmabuf (a CPU-filled buffer, as software
/// video decoders and cameras hand over) where the kernel has udmabuf, else a vgem buffer no
/// fence is ever attached to (6.1). Either exports the kernel's stub on every commit.
fn never_fencing_buffer(client: &TestClient, vgem: &Vgem) -> (Box<dyn std::any::Any>, CBuffer) {
    if kernel().has_udmabuf_and_heaps() {
        let fd = udmabuf_alloc(4096).expect("udmabuf on this kernel");
        let wl = client.dmabuf_buffer(std::os::fd::AsFd::as_fd(&fd), 16, 16, 64);
        (Box::new(fd), wl)
    } else {
        let (buf, wl) = client.vgem_buffer(vgem);
        (Box::new(buf), wl)
    }
}

/// The parent surface draws with the GPU: vgem buffers committed while their write fence is
/// pending. The desynchronised subsurface shows video whose buffers never fence. `video_first`:
/// the subsurface is classified before the parent commits at all (else after). Then one frame
/// reads both surfaces, with one pending read fence, and both replace their buffer: the
/// video's old buffer must come back only after the read, the interface's at once (its GPU
/// waits for the read fence on the dma-buf by itself).
fn mixed_producers(video_first: bool) {
    let order = if video_first {
        "video first"
    } else {
        "interface first"
    };
    let vgem = vgem();
    let config = Config {
        non_fencing_after: 2,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let mut c = h.connect();
    let ui = c.surface();
    let video = c.surface();
    let _subsurface = c.desync_subsurface(&video, &ui);
    let (ui_a, wl_ui_a) = c.vgem_buffer(&vgem);
    let (ui_b, wl_ui_b) = c.vgem_buffer(&vgem);
    let (_video_a, wl_video_a) = never_fencing_buffer(&c, &vgem);
    let (_video_b, wl_video_b) = never_fencing_buffer(&c, &vgem);
    let (k_ui, k_video) = (key(&c, &ui), key(&c, &video));
    h.roundtrip(&mut c);

    // Classification: two commits per surface, ending with buffer a on each.
    let interface = |h: &mut Harness, c: &mut TestClient| {
        for (n, buf, wl) in [(1, &ui_b, &wl_ui_b), (2, &ui_a, &wl_ui_a)] {
            let rendering = buf.attach_fence(true).unwrap();
            c.commit(&ui, Some(wl));
            h.roundtrip(c);
            rendering.signal().unwrap();
            assert!(
                h.run_until(&mut [&mut *c], WAKE, applied(&k_ui, n)),
                "{order}"
            );
        }
    };
    let video_frames = |h: &mut Harness, c: &mut TestClient| {
        for (n, wl) in [(1, &wl_video_b), (2, &wl_video_a)] {
            c.commit(&video, Some(wl));
            h.roundtrip(c);
            assert!(
                h.run_until(&mut [&mut *c], WAKE, applied(&k_video, n)),
                "{order}"
            );
        }
    };
    if video_first {
        video_frames(&mut h, &mut c);
        interface(&mut h, &mut c);
    } else {
        interface(&mut h, &mut c);
        video_frames(&mut h, &mut c);
    }

    // One frame reads both surfaces; then each replaces its buffer.
    let (read, read_fence) = pending_fence(&vgem);
    let (srv_ui, srv_video) = (h.server_surface(&c, &ui), h.server_surface(&c, &video));
    wayland::surface_read(
        &mut h.server,
        &srv_ui,
        Some(read_fence.try_clone().unwrap()),
    );
    wayland::surface_read(&mut h.server, &srv_video, Some(read_fence));
    c.side.released.clear();
    let rendering = ui_b.attach_fence(true).unwrap();
    c.commit(&ui, Some(&wl_ui_b));
    c.commit(&video, Some(&wl_video_b));
    h.roundtrip(&mut c);
    rendering.signal().unwrap();
    assert!(
        h.run_until(&mut [&mut c], WAKE, applied(&k_ui, 3)),
        "{order}"
    );
    assert!(
        h.run_until(&mut [&mut c], WAKE, applied(&k_video, 3)),
        "{order}"
    );
    let (ui_a_id, video_a_id) = (
        wayland_client::Proxy::id(&wl_ui_a),
        wayland_client::Proxy::id(&wl_video_a),
    );
    let ui_released = h.run_until(&mut [&mut c], QUIET, |_, c| {
        c[0].side.released.contains(&ui_a_id)
    });
    assert!(
        ui_released,
        "{order}: the interface's buffer was held back until the read, as if it did not fence"
    );
    assert!(
        !c.side.released.contains(&video_a_id),
        "{order}: the video's buffer came back while the compositor was still reading it"
    );
    read.signal().unwrap();
    let video_released = h.run_until(&mut [&mut c], WAKE, |_, c| {
        c[0].side.released.contains(&video_a_id)
    });
    assert!(
        video_released,
        "{order}: the video's buffer never came back"
    );

    // The reports name the video surface, and only it.
    let video_name = format!("wl_surface@{}", srv_video.id().protocol_id());
    let report = h.report(&c);
    assert_eq!(report.producer, ProducerClass::NonFencing, "{order}");
    let named: Vec<&str> = report
        .non_fencing_surfaces
        .iter()
        .map(|s| s.surface.as_str())
        .collect();
    assert_eq!(named, [video_name.as_str()], "{order}");
    assert_eq!(h.server.non_fencing.len(), 1, "{order}: reported once");
    let (client, surface, found) = &h.server.non_fencing[0];
    assert_eq!((client, surface), (&c.id, &srv_video.id()), "{order}");
    assert_eq!(found.consecutive_stub_commits, 2, "{order}");
}

#[test]
fn mixed_producers_are_classified_per_surface() {
    kernel();
    mixed_producers(false);
    mixed_producers(true);
}

/// A renderer's walk over a surface tree (`with_surface_tree_downward`, where smithay holds each
/// surface's lock while the processor runs) takes each surface's acquire fence and reports its
/// read from inside the walk, with only the bridge's state borrowed. Once the loop has turned,
/// the read fence is on both surfaces' dma-bufs (a writer waits for it), unless the
/// configuration says the renderer puts it there itself.
#[test]
fn render_walks_report_reads_inside_the_walk() {
    kernel();
    let vgem = vgem();
    for renderer_publishes_reads in [false, true] {
        let config = Config {
            renderer_publishes_reads,
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let mut c = h.connect();
        let (parent, child) = (c.surface(), c.surface());
        let _subsurface = c.desync_subsurface(&child, &parent);
        let (parent_buf, parent_wl) = c.vgem_buffer(&vgem);
        let (child_buf, child_wl) = c.vgem_buffer(&vgem);
        for (surface, buf, wl) in [
            (&parent, &parent_buf, &parent_wl),
            (&child, &child_buf, &child_wl),
        ] {
            let rendering = buf.attach_fence(true).unwrap();
            c.commit(surface, Some(wl));
            h.roundtrip(&mut c);
            rendering.signal().unwrap();
            let k = key(&c, surface);
            assert!(h.run_until(&mut [&mut c], WAKE, applied(&k, 1)));
        }

        let (read, read_fence) = pending_fence(&vgem);
        let root = h.server_surface(&c, &parent);
        let bridge = &mut h.server.bridge;
        let mut drawn = 0;
        with_surface_tree_downward(
            &root,
            (),
            |_, _, _| TraversalAction::DoChildren(()),
            |surface, states, _| {
                drawn += 1;
                let acquire = wayland::acquire_fence(states).expect("each commit waited");
                assert!(signalled(&acquire));
                bridge.surface_read(surface, Some(read_fence.try_clone().unwrap()));
            },
            |_, _, _| true,
        );
        assert_eq!(drawn, 2, "the walk visits the surface and its subsurface");
        h.turn(Duration::ZERO); // the loop books the reads

        for buf in [&parent_buf, &child_buf] {
            let writer = dmabuf::export_one(buf.dmabuf(), Access::Write).unwrap();
            assert_eq!(
                signalled(&writer),
                renderer_publishes_reads,
                "renderer publishes: {renderer_publishes_reads}: a writer of the dma-buf waits \
                 for the compositor's read exactly when the bridge put the read fence there"
            );
        }
        let published = h.report(&c).read_fences_published;
        assert_eq!(published, if renderer_publishes_reads { 0 } else { 2 });
        read.signal().unwrap();
    }
}
