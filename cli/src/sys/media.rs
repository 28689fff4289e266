//! The media controller (include/uapi/linux/media.h): what a media device is, and the Request
//! API a stateless decoder takes its frames through — a request allocated on the media device,
//! filled with an OUTPUT buffer and the frame's controls on the video node, queued, waited for
//! (the request fd polls `POLLPRI` once it is complete) and reinitialised for the next frame.
//!
//! # How to use
//! ```no_run
//! use std::os::fd::AsFd;
//! # fn f(media: std::fs::File) -> rustix::io::Result<()> {
//! use fencebridge_cli::sys::media;
//! let info = media::media_ioc_device_info(media.as_fd())?;
//! println!("{} on {}", info.model(), info.bus_info());
//! let request = media::media_ioc_request_alloc(media.as_fd())?;
//! // ... VIDIOC_S_EXT_CTRLS and VIDIOC_QBUF with the request's fd ...
//! media::media_request_ioc_queue(request.as_fd())?;
//! # Ok(()) }
//! ```

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Result;
use rustix::ioctl::{opcode, Getter, NoArg, Opcode, Updater};

use fencebridge::sys::{c_name, call};

/// `struct media_device_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MediaDeviceInfo {
    /// The driver's name.
    pub driver: [u8; 16],
    /// The device's model.
    pub model: [u8; 32],
    /// Its serial number (may be empty).
    pub serial: [u8; 40],
    /// Where it sits (`platform:vicodec`, as the video nodes' `bus_info`).
    pub bus_info: [u8; 32],
    /// The media API version.
    pub media_version: u32,
    /// The hardware revision.
    pub hw_revision: u32,
    /// The driver's version.
    pub driver_version: u32,
    /// Must be 0.
    pub reserved: [u32; 31],
}

impl Default for MediaDeviceInfo {
    fn default() -> Self {
        MediaDeviceInfo {
            driver: [0; 16],
            model: [0; 32],
            serial: [0; 40],
            bus_info: [0; 32],
            media_version: 0,
            hw_revision: 0,
            driver_version: 0,
            reserved: [0; 31],
        }
    }
}

impl MediaDeviceInfo {
    /// The driver's name.
    pub fn driver(&self) -> String {
        c_name(&self.driver)
    }

    /// The model.
    pub fn model(&self) -> String {
        c_name(&self.model)
    }

    /// The bus information.
    pub fn bus_info(&self) -> String {
        c_name(&self.bus_info)
    }
}

/// `MEDIA_IOC_DEVICE_INFO`.
pub const MEDIA_IOC_DEVICE_INFO: Opcode = opcode::read_write::<MediaDeviceInfo>(b'|', 0x00);
/// `MEDIA_IOC_REQUEST_ALLOC`.
pub const MEDIA_IOC_REQUEST_ALLOC: Opcode = opcode::read::<i32>(b'|', 0x05);
/// `MEDIA_REQUEST_IOC_QUEUE`.
pub const MEDIA_REQUEST_IOC_QUEUE: Opcode = opcode::none(b'|', 0x80);
/// `MEDIA_REQUEST_IOC_REINIT`.
pub const MEDIA_REQUEST_IOC_REINIT: Opcode = opcode::none(b'|', 0x81);

/// What the media device is (ENOTTY on anything else).
pub fn media_ioc_device_info(media: BorrowedFd<'_>) -> Result<MediaDeviceInfo> {
    let mut info = MediaDeviceInfo::default();
    // SAFETY: the opcode is _IOWR('|', 0x00, struct media_device_info) and `info` has that
    // layout (256 bytes, locked by the tests); no pointers, and the kernel writes only inside it.
    unsafe {
        call(
            media,
            Updater::<{ MEDIA_IOC_DEVICE_INFO }, _>::new(&mut info),
        )?
    };
    Ok(info)
}

/// Allocates a request on the media device: a new fd, to be filled (an OUTPUT buffer queued
/// with `V4L2_BUF_FLAG_REQUEST_FD`, controls set with `V4L2_CTRL_WHICH_REQUEST_VAL`) and queued.
pub fn media_ioc_request_alloc(media: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: the opcode is _IOR('|', 0x05, int) and the kernel writes one C int, the `i32`
    // the getter holds.
    let fd = unsafe { call(media, Getter::<{ MEDIA_IOC_REQUEST_ALLOC }, i32>::new())? };
    // SAFETY: on success the kernel installed a new request fd there that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Queues a filled request (ENOENT: it lacks a buffer or a control the driver requires;
/// EINVAL: more than one buffer; EBUSY: already queued).
pub fn media_request_ioc_queue(request: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: _IO('|', 0x80) takes no argument: the kernel reads and writes no user memory.
    unsafe { call(request, NoArg::<{ MEDIA_REQUEST_IOC_QUEUE }>::new()) }
}

/// Empties a completed (or never queued) request for reuse (EBUSY while it is queued and not
/// complete).
pub fn media_request_ioc_reinit(request: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: _IO('|', 0x81) takes no argument: the kernel reads and writes no user memory.
    unsafe { call(request, NoArg::<{ MEDIA_REQUEST_IOC_REINIT }>::new()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Against the numbers the C header gives on x86_64 (printed by a C program built with
    /// linux-libc-dev 6.1's <linux/media.h>).
    #[test]
    fn opcodes_and_layouts_match_the_kernel_headers() {
        assert_eq!(MEDIA_IOC_DEVICE_INFO, 0xc100_7c00);
        assert_eq!(MEDIA_IOC_REQUEST_ALLOC, 0x8004_7c05);
        assert_eq!(MEDIA_REQUEST_IOC_QUEUE, 0x7c80);
        assert_eq!(MEDIA_REQUEST_IOC_REINIT, 0x7c81);
        assert_eq!(size_of::<MediaDeviceInfo>(), 256);
        assert_eq!(offset_of!(MediaDeviceInfo, bus_info), 88);
        assert_eq!(offset_of!(MediaDeviceInfo, media_version), 120);
    }

    #[test]
    fn other_files_answer_enotty() {
        use std::os::fd::AsFd;
        let null = std::fs::File::open("/dev/null").unwrap();
        let before = fencebridge::sys::ioctl_count();
        assert_eq!(
            media_ioc_device_info(null.as_fd()).unwrap_err(),
            rustix::io::Errno::NOTTY
        );
        assert_eq!(
            media_request_ioc_queue(null.as_fd()).unwrap_err(),
            rustix::io::Errno::NOTTY
        );
        // Other tests count theirs in parallel: at least these two.
        assert!(fencebridge::sys::ioctl_count() >= before + 2, "counted");
    }
}
