//! udmabuf and the system dma-heap: dma-bufs from other exporters behave the same.

use fencebridge::fence::{dmabuf, Access, FenceState, StubSignature};
use fencebridge::producer;
use std::os::fd::AsFd;

use crate::support::{kernel, pending_fence, signalled, skip, vgem};

fn check_exporter(name: &str, buf: std::os::fd::OwnedFd) {
    let sig = StubSignature::calibrate();
    assert_eq!(
        dmabuf::export(&[buf.as_fd()], Access::Read, &sig)
            .unwrap()
            .state,
        FenceState::NoFence,
        "{name}"
    );
    // A pending vgem fence published onto it makes its readers wait.
    let (f, fence) = pending_fence(&vgem());
    dmabuf::import(&[buf.as_fd()], &fence, Access::Write).unwrap();
    let snap = dmabuf::export(&[buf.as_fd()], Access::Read, &sig).unwrap();
    assert_eq!(snap.state, FenceState::Pending, "{name}");
    f.signal().unwrap();
    assert!(signalled(&snap.fence.unwrap()), "{name}");
}

#[test]
fn udmabuf_buffers_carry_fences() {
    let k = kernel();
    match producer::udmabuf_alloc(8192) {
        Ok(buf) => check_exporter("udmabuf", buf),
        Err(e) => {
            assert!(
                !k.has_udmabuf_and_heaps(),
                "{} should have udmabuf: {e}",
                k.release
            );
            skip(
                "udmabuf_buffers_carry_fences",
                &format!("no udmabuf on {} ({e})", k.release),
            );
        }
    }
}

#[test]
fn dma_heap_buffers_carry_fences() {
    let k = kernel();
    match producer::dma_heap_alloc(8192) {
        Ok(buf) => check_exporter("dma-heap", buf),
        Err(e) => {
            assert!(
                !k.has_udmabuf_and_heaps(),
                "{} should have the system dma-heap: {e}",
                k.release
            );
            skip(
                "dma_heap_buffers_carry_fences",
                &format!("no dma-heap on {} ({e})", k.release),
            );
        }
    }
}
