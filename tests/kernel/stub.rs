//! The kernel's stub fence: no fence ever, fence already signalled, fence pending — told apart
//! on every kernel of the matrix.

use fencebridge::fence::{dmabuf, Access, FenceState, StubSignature};

use crate::support::{kernel, vgem};

#[test]
fn classifies_no_fence_signalled_and_pending() {
    let k = kernel();
    let sig = StubSignature::calibrate();
    assert!(
        sig.timestamp_ns().is_some(),
        "calibration needs a fresh dma-buf, which the VM has"
    );
    let vgem = vgem();

    let never = vgem.create_buffer(16, 16).unwrap();
    assert_eq!(
        dmabuf::export(&[never.dmabuf()], Access::Read, &sig)
            .unwrap()
            .state,
        FenceState::NoFence
    );

    // The kernel skips signalled fences when it exports: "already done" is the stub too.
    let done = vgem.create_buffer(16, 16).unwrap();
    done.attach_fence(true).unwrap().signal().unwrap();
    assert_eq!(
        dmabuf::export(&[done.dmabuf()], Access::Read, &sig)
            .unwrap()
            .state,
        FenceState::NoFence
    );

    let pending = vgem.create_buffer(16, 16).unwrap();
    let f = pending.attach_fence(true).unwrap();
    let snap = dmabuf::export(&[pending.dmabuf()], Access::Read, &sig).unwrap();
    assert_eq!(snap.state, FenceState::Pending);
    f.signal().unwrap();
    // The real fence, once it has signalled, is not mistaken for the stub.
    let real = snap.fence.unwrap().info().unwrap();
    assert_eq!(
        sig.classify(&real),
        FenceState::Signalled,
        "{:?}",
        real.fences
    );

    // What the stub looks like on this kernel, as docs/kernel-facts.md has it.
    let fd = fencebridge::sys::dma_buf_export_sync_file(
        never.dmabuf(),
        fencebridge::sys::DMA_BUF_SYNC_READ,
    )
    .unwrap();
    let info = fencebridge::fence::SyncFile::try_from(fd)
        .unwrap()
        .info()
        .unwrap();
    let names_say_stub = info.fences.iter().all(|f| f.driver == "stub");
    assert_eq!(
        names_say_stub,
        k.stub_is_named(),
        "stub names on {}: {:?}",
        k.release,
        info.fences
    );
    let names_only = StubSignature::names_only().classify(&info);
    let expected = if k.stub_is_named() {
        FenceState::NoFence
    } else {
        FenceState::Signalled
    };
    assert_eq!(names_only, expected, "names alone on {}", k.release);
}

#[test]
fn stub_timestamp_is_constant() {
    kernel();
    let vgem = vgem();
    let a = StubSignature::from_fresh_dmabuf(vgem.create_buffer(16, 16).unwrap().dmabuf()).unwrap();
    let b = StubSignature::from_fresh_dmabuf(vgem.create_buffer(16, 16).unwrap().dmabuf()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, StubSignature::calibrate());
}
