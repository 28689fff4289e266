//! Bad input gets typed errors, never a panic.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use fencebridge::fence::{dmabuf, Access, StubSignature, SyncFile};
use fencebridge::Error;
use rustix::fs::{Mode, OFlags};

use crate::support::{kernel, timeline_device, vgem};

fn not_dmabufs() -> Vec<(&'static str, OwnedFd)> {
    vec![
        (
            "memfd",
            rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap(),
        ),
        (
            "eventfd",
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap(),
        ),
        (
            "/dev/null",
            rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap(),
        ),
    ]
}

/// An fd number that is not open in this process.
fn closed_fd() -> BorrowedFd<'static> {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(
        rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap(),
    );
    // SAFETY: closing a number we own outright; nothing else refers to it.
    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    // SAFETY: deliberately a dangling number, to see the kernel's EBADF turn into a typed error.
    // The tests run single-threaded and open nothing in between, so no other file gets it.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

#[test]
fn dmabuf_operations_refuse_other_files() {
    kernel();
    let sig = StubSignature::names_only();
    let buf = vgem().create_buffer(16, 16).unwrap();
    let fence = dmabuf::export(&[buf.dmabuf()], Access::Write, &sig).unwrap();
    assert!(fence.fence.is_none());
    let some_fence = SyncFile::try_from(
        fencebridge::sys::dma_buf_export_sync_file(
            buf.dmabuf(),
            fencebridge::sys::DMA_BUF_SYNC_READ,
        )
        .unwrap(),
    )
    .unwrap();
    for (name, fd) in not_dmabufs() {
        let e = dmabuf::export(&[fd.as_fd()], Access::Read, &sig).unwrap_err();
        assert!(matches!(e, Error::NotADmaBuf), "export {name}: {e}");
        let e =
            dmabuf::import(&[buf.dmabuf(), fd.as_fd()], &some_fence, Access::Write).unwrap_err();
        assert!(matches!(e, Error::NotADmaBuf), "import {name}: {e}");
        assert!(
            matches!(SyncFile::try_from(fd), Err(Error::NotASyncFile)),
            "{name} as a sync_file"
        );
    }
    let closed = closed_fd();
    assert!(matches!(
        dmabuf::export(&[closed], Access::Read, &sig),
        Err(Error::BadFd)
    ));
}

#[test]
fn timelines_refuse_bad_fds_and_points() {
    let Some(device) = timeline_device("timelines_refuse_bad_fds_and_points") else {
        return;
    };
    for (name, fd) in not_dmabufs() {
        let e = device.import_timeline(fd.as_fd()).unwrap_err();
        assert!(matches!(e, Error::NotASyncobj), "{name} as a timeline: {e}");
    }
    let buf = vgem().create_buffer(16, 16).unwrap();
    let e = device.import_timeline(buf.dmabuf()).unwrap_err();
    assert!(
        matches!(e, Error::NotASyncobj),
        "a dma-buf as a timeline: {e}"
    );
    assert!(matches!(
        device.import_timeline(closed_fd()),
        Err(Error::BadFd)
    ));

    let timeline = device.create_timeline().unwrap();
    let handles = device.live_handles();
    assert!(matches!(
        timeline.signal(0),
        Err(Error::InvalidPoint { point: 0, .. })
    ));
    assert!(matches!(
        timeline.is_signalled(0),
        Err(Error::InvalidPoint { .. })
    ));
    assert!(matches!(
        timeline.export_sync_file(0),
        Err(Error::InvalidPoint { .. })
    ));
    let stub = timeline.export_sync_file(u64::MAX);
    assert!(
        matches!(stub, Err(Error::PointNotSubmitted { point: u64::MAX })),
        "{stub:?}"
    );
    timeline.signal(u64::MAX).unwrap();
    assert!(timeline.is_signalled(u64::MAX).unwrap());
    assert!(timeline
        .export_sync_file(u64::MAX)
        .unwrap()
        .is_signalled()
        .unwrap());
    assert_eq!(device.live_handles(), handles);
}

#[test]
fn sync_file_import_refuses_a_non_sync_file() {
    kernel();
    // Through the dma-buf path: the kernel's EINVAL on a non-sync_file becomes a typed error.
    let buf = vgem().create_buffer(16, 16).unwrap();
    let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let e = fencebridge::sys::dma_buf_import_sync_file(
        buf.dmabuf(),
        memfd.as_fd(),
        fencebridge::sys::DMA_BUF_SYNC_WRITE,
    );
    assert!(e.is_err(), "the kernel refuses a memfd as a fence");
}
