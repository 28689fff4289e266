//! Implicit fences on real dma-bufs (vgem): what export sees, what import publishes.

use std::os::fd::AsFd;

use fencebridge::fence::{dmabuf, Access, FenceState, StubSignature};
use rustix::event::PollFlags;

use crate::support::{kernel, pending_fence, polls_ready, signalled, vgem};

fn export(fd: std::os::fd::BorrowedFd<'_>, access: Access) -> dmabuf::Snapshot {
    dmabuf::export(&[fd], access, &StubSignature::calibrate()).expect("export")
}

#[test]
fn write_fence_blocks_read_export_and_pollin() {
    kernel();
    let buf = vgem().create_buffer(64, 64).unwrap();
    let fence = buf.attach_fence(true).unwrap();
    let snap = export(buf.dmabuf(), Access::Read);
    assert_eq!(snap.state, FenceState::Pending);
    assert!(
        !polls_ready(buf.dmabuf(), PollFlags::IN),
        "POLLIN must wait for the writer"
    );
    fence.signal().unwrap();
    assert!(polls_ready(buf.dmabuf(), PollFlags::IN));
    assert!(signalled(&snap.fence.unwrap()));
}

#[test]
fn read_fence_blocks_only_writers() {
    kernel();
    let buf = vgem().create_buffer(64, 64).unwrap();
    let fence = buf.attach_fence(false).unwrap();
    assert_ne!(
        export(buf.dmabuf(), Access::Read).state,
        FenceState::Pending,
        "a reader does not wait for readers"
    );
    assert!(polls_ready(buf.dmabuf(), PollFlags::IN));
    assert_eq!(
        export(buf.dmabuf(), Access::Write).state,
        FenceState::Pending,
        "a writer waits for readers"
    );
    assert!(!polls_ready(buf.dmabuf(), PollFlags::OUT));
    fence.signal().unwrap();
    assert_ne!(
        export(buf.dmabuf(), Access::Write).state,
        FenceState::Pending
    );
}

#[test]
fn export_taken_before_a_signal_follows_that_fence() {
    kernel();
    let buf = vgem().create_buffer(16, 16).unwrap();
    let fence = buf.attach_fence(true).unwrap();
    let snap = export(buf.dmabuf(), Access::Read).fence.unwrap();
    assert!(!signalled(&snap));
    fence.signal().unwrap();
    assert!(signalled(&snap));
}

#[test]
fn export_waits_for_all_earlier_fences() {
    kernel();
    let vgem = vgem();
    let buf = vgem.create_buffer(16, 16).unwrap();
    let (f1, s1) = pending_fence(&vgem);
    let (f2, s2) = pending_fence(&vgem);
    dmabuf::import(&[buf.dmabuf()], &s1, Access::Write).unwrap();
    dmabuf::import(&[buf.dmabuf()], &s2, Access::Write).unwrap();
    let snap = export(buf.dmabuf(), Access::Read).fence.unwrap();
    f1.signal().unwrap();
    assert!(!signalled(&snap), "one of two writers is still running");
    f2.signal().unwrap();
    assert!(signalled(&snap));
}

#[test]
fn export_is_a_snapshot_that_ignores_later_fences() {
    kernel();
    let vgem = vgem();
    let buf = vgem.create_buffer(16, 16).unwrap();
    let early = buf.attach_fence(true).unwrap();
    let snap = export(buf.dmabuf(), Access::Read).fence.unwrap();
    let (late, late_file) = pending_fence(&vgem);
    dmabuf::import(&[buf.dmabuf()], &late_file, Access::Write).unwrap();
    early.signal().unwrap();
    assert!(
        signalled(&snap),
        "a fence added after the snapshot must not delay it"
    );
    assert!(
        !polls_ready(buf.dmabuf(), PollFlags::IN),
        "while the live buffer does wait for it"
    );
    late.signal().unwrap();
}

#[test]
fn import_sets_the_right_busy_state() {
    kernel();
    let vgem = vgem();
    let (wf, write_fence) = pending_fence(&vgem);
    let buf = vgem.create_buffer(16, 16).unwrap();
    dmabuf::import(&[buf.dmabuf()], &write_fence, Access::Write).unwrap();
    assert!(
        !polls_ready(buf.dmabuf(), PollFlags::IN),
        "an imported write fence blocks readers"
    );
    assert!(!polls_ready(buf.dmabuf(), PollFlags::OUT));
    wf.signal().unwrap();
    assert!(polls_ready(buf.dmabuf(), PollFlags::IN | PollFlags::OUT));

    let (rf, read_fence) = pending_fence(&vgem);
    let buf = vgem.create_buffer(16, 16).unwrap();
    dmabuf::import(&[buf.dmabuf()], &read_fence, Access::Read).unwrap();
    assert!(
        polls_ready(buf.dmabuf(), PollFlags::IN),
        "an imported read fence does not block readers"
    );
    assert!(
        !polls_ready(buf.dmabuf(), PollFlags::OUT),
        "but blocks writers"
    );
    rf.signal().unwrap();
    assert!(polls_ready(buf.dmabuf(), PollFlags::OUT));
}

#[test]
fn planes_sharing_a_dmabuf_are_exported_once_and_merged() {
    kernel();
    let vgem = vgem();
    let a = vgem.create_buffer(16, 16).unwrap();
    let b = vgem.create_buffer(16, 16).unwrap();
    let a_again = a.dmabuf().try_clone_to_owned().unwrap();
    let fa = a.attach_fence(true).unwrap();
    let fb = b.attach_fence(true).unwrap();
    let planes = [a.dmabuf(), a_again.as_fd(), b.dmabuf()];
    let before = fencebridge::sys::ioctl_count();
    let snap = dmabuf::export(&planes, Access::Read, &StubSignature::names_only()).unwrap();
    // One export per distinct dma-buf (a pending fence needs no FILE_INFO: poll says it is
    // pending) and one merge: three planes cost 3 ioctls.
    assert_eq!(fencebridge::sys::ioctl_count() - before, 3);
    assert_eq!(snap.unique_dmabufs, 2);
    assert_eq!(snap.state, FenceState::Pending);
    let merged = snap.fence.unwrap();
    assert_eq!(merged.info().unwrap().fences.len(), 2);
    fa.signal().unwrap();
    assert!(!signalled(&merged));
    fb.signal().unwrap();
    assert!(signalled(&merged));

    // Importing onto the three planes publishes once per distinct dma-buf.
    let (f, fence) = pending_fence(&vgem);
    let before = fencebridge::sys::ioctl_count();
    dmabuf::import(&planes, &fence, Access::Write).unwrap();
    assert_eq!(fencebridge::sys::ioctl_count() - before, 2);
    assert!(!polls_ready(a.dmabuf(), PollFlags::IN) && !polls_ready(b.dmabuf(), PollFlags::IN));
    f.signal().unwrap();
}

#[test]
fn nothing_pending_keeps_no_fd() {
    kernel();
    let buf = vgem().create_buffer(16, 16).unwrap();
    let snap = export(buf.dmabuf(), Access::Read);
    assert!(snap.fence.is_none(), "the fast path holds no fd");
}
