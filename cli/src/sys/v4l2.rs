//! V4L2 (include/uapi/linux/videodev2.h): the ioctls a capture checker needs — device
//! capabilities, formats and frame sizes, MMAP buffers, exporting them as dma-bufs, and
//! streaming them — and what a memory-to-memory decoder adds: events (the source change), the
//! drain command, and for a stateless decoder a frame's controls set in a request
//! ([`vidioc_s_ext_ctrl_in_request`]; the request itself is the media controller's,
//! [`super::media`]).
//!
//! Layouts are the x86_64 ones of the kernel header (locked by the tests below). Three structs
//! hold C unions; their union fields are private and every union is zero-filled over its whole
//! size when built, so the safe accessors only ever read initialised bytes.
//!
//! Two things the kernel would do with user pointers are kept out of safe reach: the wrappers
//! take only the video buffer types (whose formats are `pix`/`pix_mp`, never the overlay's
//! clip-list pointers), and [`vidioc_qbuf`] refuses `V4L2_MEMORY_USERPTR` (the kernel would
//! pin and later DMA into whatever address the caller wrote there). Multi-planar buffers get
//! their plane array from a borrowed slice, set here, never from the caller.
//!
//! # How to use
//! ```no_run
//! use fencebridge_cli::sys::v4l2::{self, V4l2FmtDesc, V4L2_BUF_TYPE_VIDEO_CAPTURE};
//! # fn f(video: std::fs::File) -> rustix::io::Result<()> {
//! use std::os::fd::AsFd;
//! let cap = v4l2::vidioc_querycap(video.as_fd())?;
//! println!("{} caps {:#x}", cap.driver(), cap.device_caps);
//! let mut desc = V4l2FmtDesc { type_: V4L2_BUF_TYPE_VIDEO_CAPTURE, ..Default::default() };
//! while v4l2::vidioc_enum_fmt(video.as_fd(), &mut desc).is_ok() {
//!     println!("{:#x}", desc.pixelformat);
//!     desc.index += 1;
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::raw::c_ulong;

use rustix::io::{Errno, Result};
use rustix::ioctl::{opcode, Opcode, Setter, Updater};

use fencebridge::sys::{c_name, call};

// ---------------------------------------------------------------------------------------------
// Constants

/// `VIDEO_MAX_PLANES`: the most memory planes a multi-planar buffer has.
pub const VIDEO_MAX_PLANES: usize = 8;

/// `V4L2_CAP_VIDEO_CAPTURE`: single-planar video capture.
pub const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
/// `V4L2_CAP_VIDEO_OUTPUT`: single-planar video output.
pub const V4L2_CAP_VIDEO_OUTPUT: u32 = 0x0000_0002;
/// `V4L2_CAP_VBI_CAPTURE`: raw VBI capture.
pub const V4L2_CAP_VBI_CAPTURE: u32 = 0x0000_0010;
/// `V4L2_CAP_SLICED_VBI_CAPTURE`: sliced VBI capture.
pub const V4L2_CAP_SLICED_VBI_CAPTURE: u32 = 0x0000_0040;
/// `V4L2_CAP_VIDEO_CAPTURE_MPLANE`: multi-planar video capture.
pub const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
/// `V4L2_CAP_VIDEO_OUTPUT_MPLANE`: multi-planar video output.
pub const V4L2_CAP_VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
/// `V4L2_CAP_VIDEO_M2M_MPLANE`: a multi-planar memory-to-memory device (codec, converter).
pub const V4L2_CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
/// `V4L2_CAP_VIDEO_M2M`: a single-planar memory-to-memory device.
pub const V4L2_CAP_VIDEO_M2M: u32 = 0x0000_8000;
/// `V4L2_CAP_SDR_CAPTURE`: software-defined radio capture.
pub const V4L2_CAP_SDR_CAPTURE: u32 = 0x0010_0000;
/// `V4L2_CAP_META_CAPTURE`: metadata capture.
pub const V4L2_CAP_META_CAPTURE: u32 = 0x0080_0000;
/// `V4L2_CAP_STREAMING`: the streaming (buffer queue) ioctls.
pub const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
/// `V4L2_CAP_META_OUTPUT`: metadata output.
pub const V4L2_CAP_META_OUTPUT: u32 = 0x0800_0000;
/// `V4L2_CAP_TOUCH`: a touch sensor.
pub const V4L2_CAP_TOUCH: u32 = 0x1000_0000;
/// `V4L2_CAP_DEVICE_CAPS`: `device_caps` is filled (the node's own capabilities).
pub const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE`.
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
/// `V4L2_BUF_TYPE_VIDEO_OUTPUT`.
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
/// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`.
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
/// `V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE`.
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE: u32 = 10;

/// `V4L2_MEMORY_MMAP`: buffers allocated by the driver.
pub const V4L2_MEMORY_MMAP: u32 = 1;
/// `V4L2_MEMORY_USERPTR`: buffers in the application's memory.
pub const V4L2_MEMORY_USERPTR: u32 = 2;
/// `V4L2_MEMORY_DMABUF`: buffers imported from dma-bufs.
pub const V4L2_MEMORY_DMABUF: u32 = 4;

/// `V4L2_BUF_CAP_SUPPORTS_MMAP` (`v4l2_requestbuffers.capabilities`, 4.20+).
pub const V4L2_BUF_CAP_SUPPORTS_MMAP: u32 = 1 << 0;
/// `V4L2_BUF_CAP_SUPPORTS_USERPTR`.
pub const V4L2_BUF_CAP_SUPPORTS_USERPTR: u32 = 1 << 1;
/// `V4L2_BUF_CAP_SUPPORTS_DMABUF`.
pub const V4L2_BUF_CAP_SUPPORTS_DMABUF: u32 = 1 << 2;
/// `V4L2_BUF_CAP_SUPPORTS_REQUESTS`: buffers may be queued in Request API requests (what a
/// stateless decoder's OUTPUT queue says).
pub const V4L2_BUF_CAP_SUPPORTS_REQUESTS: u32 = 1 << 3;
/// `V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS`: buffers may outlive REQBUFS(0) while mapped or
/// exported.
pub const V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS: u32 = 1 << 4;

/// `V4L2_BUF_FLAG_MAPPED`.
pub const V4L2_BUF_FLAG_MAPPED: u32 = 0x0000_0001;
/// `V4L2_BUF_FLAG_QUEUED`: the buffer is in the driver's incoming queue.
pub const V4L2_BUF_FLAG_QUEUED: u32 = 0x0000_0002;
/// `V4L2_BUF_FLAG_DONE`: the buffer is in the driver's outgoing queue.
pub const V4L2_BUF_FLAG_DONE: u32 = 0x0000_0004;
/// `V4L2_BUF_FLAG_ERROR`: the buffer was filled with an error (its data may be corrupt).
pub const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;

/// `V4L2_BUF_FLAG_KEYFRAME`: the frame was decoded without a reference (an I-frame).
pub const V4L2_BUF_FLAG_KEYFRAME: u32 = 0x0000_0008;
/// `V4L2_BUF_FLAG_PFRAME`: the frame was decoded from a reference (a P-frame).
pub const V4L2_BUF_FLAG_PFRAME: u32 = 0x0000_0010;
/// `V4L2_BUF_FLAG_REQUEST_FD`: `request_fd` names the request the buffer goes in.
pub const V4L2_BUF_FLAG_REQUEST_FD: u32 = 0x0080_0000;

/// `V4L2_BUF_FLAG_LAST`: the last buffer of a drain (or of a resolution change); nothing
/// follows it until the decoder is restarted.
pub const V4L2_BUF_FLAG_LAST: u32 = 0x0010_0000;

/// `V4L2_CAP_TIMEPERFRAME` (in a capture queue's parameters): the frame interval can be set.
pub const V4L2_CAP_TIMEPERFRAME: u32 = 0x1000;
/// `V4L2_FMT_FLAG_COMPRESSED`: a coded (bitstream) format.
pub const V4L2_FMT_FLAG_COMPRESSED: u32 = 0x0001;

/// `V4L2_EVENT_EOS`: the decoder drained its last frame.
pub const V4L2_EVENT_EOS: u32 = 2;
/// `V4L2_EVENT_SOURCE_CHANGE`: a decoder found the stream's format (or a change of it).
pub const V4L2_EVENT_SOURCE_CHANGE: u32 = 5;

/// `V4L2_DEC_CMD_STOP`: drain — decode what is queued, then mark the last buffer.
pub const V4L2_DEC_CMD_STOP: u32 = 1;

/// `V4L2_CTRL_WHICH_REQUEST_VAL`: controls set in (or read from) a request.
pub const V4L2_CTRL_WHICH_REQUEST_VAL: u32 = 0x0f01_0000;
/// `V4L2_CID_STATELESS_FWHT_PARAMS` (`V4L2_CID_CODEC_STATELESS_BASE + 100`): a stateless FWHT
/// frame's parameters, [`V4l2CtrlFwhtParams`].
pub const V4L2_CID_STATELESS_FWHT_PARAMS: u32 = 0x00a4_0900 + 100;

/// `V4L2_FWHT_VERSION`: the FWHT header version the kernel's codec writes and reads.
pub const V4L2_FWHT_VERSION: u32 = 3;
/// `V4L2_FWHT_FL_CHROMA_FULL_HEIGHT`: chroma not subsampled vertically.
pub const V4L2_FWHT_FL_CHROMA_FULL_HEIGHT: u32 = 1 << 7;
/// `V4L2_FWHT_FL_CHROMA_FULL_WIDTH`: chroma not subsampled horizontally.
pub const V4L2_FWHT_FL_CHROMA_FULL_WIDTH: u32 = 1 << 8;
/// `V4L2_FWHT_FL_I_FRAME`: the frame needs no reference.
pub const V4L2_FWHT_FL_I_FRAME: u32 = 1 << 10;
/// `V4L2_FWHT_FL_COMPONENTS_NUM_MSK`: the number of components, minus one.
pub const V4L2_FWHT_FL_COMPONENTS_NUM_MSK: u32 = 0b111 << 16;
/// `V4L2_FWHT_FL_COMPONENTS_NUM_OFFSET`.
pub const V4L2_FWHT_FL_COMPONENTS_NUM_OFFSET: u32 = 16;
/// `V4L2_FWHT_FL_PIXENC_MSK`: the pixel encoding.
pub const V4L2_FWHT_FL_PIXENC_MSK: u32 = 0b11 << 19;
/// `V4L2_FWHT_FL_PIXENC_YUV`.
pub const V4L2_FWHT_FL_PIXENC_YUV: u32 = 1 << 19;
/// `V4L2_FWHT_FL_PIXENC_RGB`.
pub const V4L2_FWHT_FL_PIXENC_RGB: u32 = 2 << 19;
/// `V4L2_FWHT_FL_PIXENC_HSV`.
pub const V4L2_FWHT_FL_PIXENC_HSV: u32 = 3 << 19;

/// `V4L2_FRMSIZE_TYPE_DISCRETE`.
pub const V4L2_FRMSIZE_TYPE_DISCRETE: u32 = 1;
/// `V4L2_FRMSIZE_TYPE_CONTINUOUS`.
pub const V4L2_FRMSIZE_TYPE_CONTINUOUS: u32 = 2;
/// `V4L2_FRMSIZE_TYPE_STEPWISE`.
pub const V4L2_FRMSIZE_TYPE_STEPWISE: u32 = 3;

/// `V4L2_FIELD_ANY`: let the driver choose.
pub const V4L2_FIELD_ANY: u32 = 0;
/// `V4L2_FIELD_NONE`: progressive.
pub const V4L2_FIELD_NONE: u32 = 1;

/// Whether `type_` is one of the four video buffer types these wrappers accept.
pub const fn is_video_type(type_: u32) -> bool {
    matches!(
        type_,
        V4L2_BUF_TYPE_VIDEO_CAPTURE
            | V4L2_BUF_TYPE_VIDEO_OUTPUT
            | V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
            | V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
    )
}

/// `V4L2_TYPE_IS_MULTIPLANAR`.
pub const fn is_multiplanar(type_: u32) -> bool {
    matches!(
        type_,
        V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE | V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
    )
}

// ---------------------------------------------------------------------------------------------
// Structs

/// `struct v4l2_capability`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2Capability {
    /// The driver's name (NUL-terminated).
    pub driver: [u8; 16],
    /// The device's name.
    pub card: [u8; 32],
    /// Where the device sits (`platform:vivid-000`, `usb-...`).
    pub bus_info: [u8; 32],
    /// `KERNEL_VERSION` of the driver.
    pub version: u32,
    /// The capabilities of the whole physical device (all its nodes).
    pub capabilities: u32,
    /// The capabilities of this node (when `V4L2_CAP_DEVICE_CAPS` is set).
    pub device_caps: u32,
    /// Must be 0.
    pub reserved: [u32; 3],
}

impl V4l2Capability {
    /// The driver's name.
    pub fn driver(&self) -> String {
        c_name(&self.driver)
    }

    /// The device's name.
    pub fn card(&self) -> String {
        c_name(&self.card)
    }

    /// The bus information.
    pub fn bus_info(&self) -> String {
        c_name(&self.bus_info)
    }

    /// This node's capabilities: `device_caps` where the driver fills it, else the device's.
    pub fn node_caps(&self) -> u32 {
        if self.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
            self.device_caps
        } else {
            self.capabilities
        }
    }
}

/// `struct v4l2_fmtdesc`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2FmtDesc {
    /// In: which format (from 0).
    pub index: u32,
    /// In: the buffer type.
    pub type_: u32,
    /// `V4L2_FMT_FLAG_*`.
    pub flags: u32,
    /// A description (NUL-terminated).
    pub description: [u8; 32],
    /// The fourcc.
    pub pixelformat: u32,
    /// In: a media bus code to filter by (0: none).
    pub mbus_code: u32,
    /// Must be 0.
    pub reserved: [u32; 3],
}

impl V4l2FmtDesc {
    /// The description.
    pub fn description(&self) -> String {
        c_name(&self.description)
    }
}

/// `struct v4l2_pix_format`: a single-planar format (`ycbcr_enc` stands for its
/// `ycbcr_enc`/`hsv_enc` union).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V4l2PixFormat {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The fourcc.
    pub pixelformat: u32,
    /// `enum v4l2_field`.
    pub field: u32,
    /// Bytes per line of the first plane (0: driver's choice).
    pub bytesperline: u32,
    /// Bytes the whole image takes.
    pub sizeimage: u32,
    /// `enum v4l2_colorspace`.
    pub colorspace: u32,
    /// `V4L2_PIX_FMT_PRIV_MAGIC` when the fields after it are valid.
    pub priv_: u32,
    /// `V4L2_PIX_FMT_FLAG_*`.
    pub flags: u32,
    /// `enum v4l2_ycbcr_encoding` (or `v4l2_hsv_encoding`).
    pub ycbcr_enc: u32,
    /// `enum v4l2_quantization`.
    pub quantization: u32,
    /// `enum v4l2_xfer_func`.
    pub xfer_func: u32,
}

/// `struct v4l2_plane_pix_format` (packed).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V4l2PlanePixFormat {
    /// Bytes this memory plane takes.
    pub sizeimage: u32,
    /// Bytes per line.
    pub bytesperline: u32,
    /// Must be 0.
    pub reserved: [u16; 6],
}

/// `struct v4l2_pix_format_mplane` (packed; `ycbcr_enc` stands for its union).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V4l2PixFormatMplane {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The fourcc.
    pub pixelformat: u32,
    /// `enum v4l2_field`.
    pub field: u32,
    /// `enum v4l2_colorspace`.
    pub colorspace: u32,
    /// Per memory plane: size and bytes per line.
    pub plane_fmt: [V4l2PlanePixFormat; VIDEO_MAX_PLANES],
    /// How many memory planes.
    pub num_planes: u8,
    /// `V4L2_PIX_FMT_FLAG_*`.
    pub flags: u8,
    /// `enum v4l2_ycbcr_encoding` (or `v4l2_hsv_encoding`).
    pub ycbcr_enc: u8,
    /// `enum v4l2_quantization`.
    pub quantization: u8,
    /// `enum v4l2_xfer_func`.
    pub xfer_func: u8,
    /// Must be 0.
    pub reserved: [u8; 7],
}

/// The union inside `struct v4l2_format`, reduced to the members these wrappers allow. The
/// `u64` array gives it the header's 8-byte alignment (other members hold pointers) and its
/// 200 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
union V4l2FormatUnion {
    pix: V4l2PixFormat,
    pix_mp: V4l2PixFormatMplane,
    raw: [u64; 25],
}

/// `struct v4l2_format`, for the video buffer types (`pix` or `pix_mp`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct V4l2Format {
    /// The buffer type; it decides which union member is meant.
    pub type_: u32,
    fmt: V4l2FormatUnion,
}

impl V4l2Format {
    /// A zeroed format of `type_`.
    pub const fn new(type_: u32) -> Self {
        V4l2Format {
            type_,
            fmt: V4l2FormatUnion { raw: [0; 25] },
        }
    }

    /// The single-planar member.
    pub fn pix(&self) -> V4l2PixFormat {
        // SAFETY: the union is created whole (all 200 bytes zeroed by `new`) and only ever
        // written through its members or by the kernel, so its bytes are always initialised;
        // `V4l2PixFormat` is plain integers, valid for any bit pattern.
        unsafe { self.fmt.pix }
    }

    /// The single-planar member, to fill in.
    pub fn pix_mut(&mut self) -> &mut V4l2PixFormat {
        // SAFETY: as in `pix`: initialised bytes, any bit pattern valid, and the union's
        // alignment (8) satisfies the member's (4).
        unsafe { &mut self.fmt.pix }
    }

    /// The multi-planar member.
    pub fn pix_mp(&self) -> V4l2PixFormatMplane {
        // SAFETY: initialised bytes (see `pix`); the packed member is plain integers.
        unsafe { self.fmt.pix_mp }
    }

    /// The multi-planar member, to fill in.
    pub fn pix_mp_mut(&mut self) -> &mut V4l2PixFormatMplane {
        // SAFETY: initialised bytes (see `pix`); the packed member has alignment 1.
        unsafe { &mut self.fmt.pix_mp }
    }
}

impl Default for V4l2Format {
    fn default() -> Self {
        Self::new(0)
    }
}

impl fmt::Debug for V4l2Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("V4l2Format");
        s.field("type_", &self.type_);
        if is_multiplanar(self.type_) {
            s.field("pix_mp", &self.pix_mp());
        } else {
            s.field("pix", &self.pix());
        }
        s.finish()
    }
}

/// `struct v4l2_requestbuffers`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2RequestBuffers {
    /// In: how many buffers (0 frees them); out: how many were allocated.
    pub count: u32,
    /// The buffer type.
    pub type_: u32,
    /// `V4L2_MEMORY_*`.
    pub memory: u32,
    /// Out: `V4L2_BUF_CAP_*` (4.20+).
    pub capabilities: u32,
    /// `V4L2_MEMORY_FLAG_*`.
    pub flags: u8,
    /// Must be 0.
    pub reserved: [u8; 3],
}

/// The `m` union of `struct v4l2_plane`.
#[repr(C)]
#[derive(Clone, Copy)]
union V4l2PlaneM {
    mem_offset: u32,
    userptr: c_ulong,
    fd: i32,
}

/// `struct v4l2_plane`: one memory plane of a multi-planar buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct V4l2Plane {
    /// Bytes of data in the plane (set by the driver for capture).
    pub bytesused: u32,
    /// The plane's size in bytes.
    pub length: u32,
    m: V4l2PlaneM,
    /// Where the data starts in the plane.
    pub data_offset: u32,
    /// Must be 0.
    pub reserved: [u32; 11],
}

impl V4l2Plane {
    /// `m.mem_offset`: the plane's mmap offset (MMAP memory).
    pub fn mem_offset(&self) -> u32 {
        // SAFETY: `m` is created whole (8 zero bytes, `Default`) and its first 4 bytes are
        // what every member starts with, so they are initialised; a u32 takes any bit pattern.
        unsafe { self.m.mem_offset }
    }

    /// `m.fd`: the plane's dma-buf (DMABUF memory).
    pub fn fd(&self) -> i32 {
        // SAFETY: as in `mem_offset`.
        unsafe { self.m.fd }
    }

    /// Sets `m.fd` (DMABUF memory: the dma-buf to queue as this plane).
    pub fn set_fd(&mut self, fd: i32) {
        self.m = V4l2PlaneM { userptr: 0 };
        self.m.fd = fd;
    }
}

impl Default for V4l2Plane {
    fn default() -> Self {
        V4l2Plane {
            bytesused: 0,
            length: 0,
            m: V4l2PlaneM { userptr: 0 },
            data_offset: 0,
            reserved: [0; 11],
        }
    }
}

impl fmt::Debug for V4l2Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V4l2Plane")
            .field("bytesused", &self.bytesused)
            .field("length", &self.length)
            .field("mem_offset", &self.mem_offset())
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// `struct timeval` as V4L2 uses it (64-bit `long`s on x86_64).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timeval {
    /// Seconds.
    pub tv_sec: i64,
    /// Microseconds.
    pub tv_usec: i64,
}

/// `struct v4l2_timecode`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V4l2Timecode {
    /// `V4L2_TC_TYPE_*`.
    pub type_: u32,
    /// `V4L2_TC_FLAG_*`.
    pub flags: u32,
    /// Frames.
    pub frames: u8,
    /// Seconds.
    pub seconds: u8,
    /// Minutes.
    pub minutes: u8,
    /// Hours.
    pub hours: u8,
    /// User bits.
    pub userbits: [u8; 4],
}

/// The `m` union of `struct v4l2_buffer`.
#[repr(C)]
#[derive(Clone, Copy)]
union V4l2BufferM {
    offset: u32,
    userptr: c_ulong,
    planes: *mut V4l2Plane,
    fd: i32,
}

/// `struct v4l2_buffer`. Its `m` union is private: [`vidioc_querybuf`], [`vidioc_qbuf`] and
/// [`vidioc_dqbuf`] point it at the plane slice they are given for multi-planar types.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct V4l2Buffer {
    /// Which buffer.
    pub index: u32,
    /// The buffer type.
    pub type_: u32,
    /// Bytes of data (single-planar).
    pub bytesused: u32,
    /// `V4L2_BUF_FLAG_*`.
    pub flags: u32,
    /// `enum v4l2_field`.
    pub field: u32,
    /// When the frame was captured.
    pub timestamp: Timeval,
    /// The frame's timecode.
    pub timecode: V4l2Timecode,
    /// The frame counter (gaps mean dropped frames).
    pub sequence: u32,
    /// `V4L2_MEMORY_*`.
    pub memory: u32,
    m: V4l2BufferM,
    /// Single-planar: the buffer's size; multi-planar: how many entries the plane array has.
    pub length: u32,
    /// Must be 0.
    pub reserved2: u32,
    /// The request fd (with `V4L2_BUF_FLAG_REQUEST_FD`), else 0.
    pub request_fd: i32,
}

impl V4l2Buffer {
    /// Buffer `index` of queue `type_` with `memory`.
    pub fn new(type_: u32, memory: u32, index: u32) -> Self {
        V4l2Buffer {
            index,
            type_,
            memory,
            ..Default::default()
        }
    }

    /// `m.offset`: the buffer's mmap offset (single-planar MMAP memory).
    pub fn offset(&self) -> u32 {
        // SAFETY: `m` is created whole (8 zero bytes, `Default`), and the wrappers only store a
        // whole pointer in it; its first 4 bytes are always initialised and a u32 takes any
        // bit pattern.
        unsafe { self.m.offset }
    }

    /// `m.fd`: the buffer's dma-buf (single-planar DMABUF memory).
    pub fn fd(&self) -> i32 {
        // SAFETY: as in `offset`.
        unsafe { self.m.fd }
    }

    /// Sets `m.fd` (single-planar DMABUF memory: the dma-buf to queue).
    pub fn set_fd(&mut self, fd: i32) {
        self.m = V4l2BufferM { userptr: 0 };
        self.m.fd = fd;
    }
}

impl Default for V4l2Buffer {
    fn default() -> Self {
        V4l2Buffer {
            index: 0,
            type_: 0,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: Timeval::default(),
            timecode: V4l2Timecode::default(),
            sequence: 0,
            memory: 0,
            m: V4l2BufferM { userptr: 0 },
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }
}

impl fmt::Debug for V4l2Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V4l2Buffer")
            .field("index", &self.index)
            .field("type_", &self.type_)
            .field("bytesused", &self.bytesused)
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("sequence", &self.sequence)
            .field("memory", &self.memory)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// `struct v4l2_exportbuffer`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2ExportBuffer {
    /// The buffer type.
    pub type_: u32,
    /// Which buffer.
    pub index: u32,
    /// Which memory plane (0 for single-planar).
    pub plane: u32,
    /// `O_CLOEXEC` and the access mode for the new fd.
    pub flags: u32,
    /// Out: the dma-buf fd.
    pub fd: i32,
    /// Must be 0.
    pub reserved: [u32; 11],
}

/// `struct v4l2_frmsizeenum`; `size` is its union (discrete: `[width, height, ..]`; stepwise:
/// `[min_w, max_w, step_w, min_h, max_h, step_h]`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2FrmSizeEnum {
    /// In: which size (from 0).
    pub index: u32,
    /// In: the fourcc.
    pub pixel_format: u32,
    /// Out: `V4L2_FRMSIZE_TYPE_*`.
    pub type_: u32,
    /// Out: the size(s), as the type says.
    pub size: [u32; 6],
    /// Must be 0.
    pub reserved: [u32; 2],
}

/// `struct v4l2_event_subscription`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2EventSubscription {
    /// `V4L2_EVENT_*`.
    pub type_: u32,
    /// Which object (a control's id; 0 for the events here).
    pub id: u32,
    /// `V4L2_EVENT_SUB_FL_*`.
    pub flags: u32,
    /// Must be 0.
    pub reserved: [u32; 5],
}

/// `struct v4l2_event`; `u` is its payload union, as raw bytes (the header's 8-byte
/// alignment comes from `u64`s).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2Event {
    /// `V4L2_EVENT_*`.
    pub type_: u32,
    /// The payload (for a source change: `changes` in its first word).
    pub u: [u64; 8],
    /// Events still pending after this one.
    pub pending: u32,
    /// The event's number.
    pub sequence: u32,
    /// When it was queued (`struct timespec`).
    pub timestamp: [i64; 2],
    /// The object it is about.
    pub id: u32,
    /// Must be 0.
    pub reserved: [u32; 8],
}

/// `struct v4l2_fract`: a time per frame, in seconds.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V4l2Fract {
    /// Seconds, the numerator.
    pub numerator: u32,
    /// The denominator.
    pub denominator: u32,
}

/// `struct v4l2_captureparm`: a capture queue's streaming parameters.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2CaptureParm {
    /// `V4L2_CAP_TIMEPERFRAME` when the frame interval can be set.
    pub capability: u32,
    /// `V4L2_MODE_*`.
    pub capturemode: u32,
    /// The time between frames.
    pub timeperframe: V4l2Fract,
    /// Driver-specific.
    pub extendedmode: u32,
    /// Buffers for read().
    pub readbuffers: u32,
    /// Must be 0.
    pub reserved: [u32; 4],
}

/// `struct v4l2_streamparm` for the video capture types: its union (200 bytes) holds the
/// capture parameters, followed by the rest of the union, zero-filled.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct V4l2StreamParm {
    /// The buffer type (a video capture type).
    pub type_: u32,
    /// The union's `capture` member.
    pub capture: V4l2CaptureParm,
    rest: [u8; 160],
}

impl V4l2StreamParm {
    /// Zeroed parameters of queue `type_`.
    pub const fn new(type_: u32) -> Self {
        V4l2StreamParm {
            type_,
            capture: V4l2CaptureParm {
                capability: 0,
                capturemode: 0,
                timeperframe: V4l2Fract {
                    numerator: 0,
                    denominator: 0,
                },
                extendedmode: 0,
                readbuffers: 0,
                reserved: [0; 4],
            },
            rest: [0; 160],
        }
    }
}

/// `struct v4l2_decoder_cmd`; `raw` is its union (`stop.pts`, `start.speed`/`format`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct V4l2DecoderCmd {
    /// `V4L2_DEC_CMD_*`.
    pub cmd: u32,
    /// `V4L2_DEC_CMD_*_FL_*`.
    pub flags: u32,
    /// The command's arguments.
    pub raw: [u32; 16],
}

/// `struct v4l2_ctrl_fwht_params`: what a stateless FWHT decoder needs to decode one frame (the
/// fields of the frame's header in vicodec's stream, and its reference).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V4l2CtrlFwhtParams {
    /// The reference frame: the timestamp of the CAPTURE buffer that holds it, in nanoseconds
    /// (`v4l2_timeval_to_ns`); unused for an I-frame.
    pub backward_ref_ts: u64,
    /// [`V4L2_FWHT_VERSION`].
    pub version: u32,
    /// Width of the frame.
    pub width: u32,
    /// Height of the frame.
    pub height: u32,
    /// `V4L2_FWHT_FL_*`.
    pub flags: u32,
    /// `enum v4l2_colorspace`.
    pub colorspace: u32,
    /// `enum v4l2_xfer_func`.
    pub xfer_func: u32,
    /// `enum v4l2_ycbcr_encoding`.
    pub ycbcr_enc: u32,
    /// `enum v4l2_quantization`.
    pub quantization: u32,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::V4l2CtrlFwhtParams {}
}

/// A compound control's value that [`vidioc_s_ext_ctrl_in_request`] hands the kernel: a
/// `#[repr(C)]` struct of plain integers (any bit pattern valid), of exactly the size the
/// control has, with its control id. Sealed: only this module's payloads.
pub trait CompoundControl: sealed::Sealed + Copy {
    /// The control's id (`V4L2_CID_*`).
    const ID: u32;
}

impl CompoundControl for V4l2CtrlFwhtParams {
    const ID: u32 = V4L2_CID_STATELESS_FWHT_PARAMS;
}

/// `struct v4l2_ext_control` (packed), for a compound control: `ptr` points at its value.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct V4l2ExtControl {
    id: u32,
    size: u32,
    reserved2: [u32; 1],
    ptr: *mut std::ffi::c_void,
}

/// `struct v4l2_ext_controls`; `controls` points at `count` [`V4l2ExtControl`]s.
#[repr(C)]
#[derive(Clone, Copy)]
struct V4l2ExtControls {
    which: u32,
    count: u32,
    error_idx: u32,
    request_fd: i32,
    reserved: [u32; 1],
    controls: *mut V4l2ExtControl,
}

// ---------------------------------------------------------------------------------------------
// Opcodes

/// `VIDIOC_QUERYCAP`.
pub const VIDIOC_QUERYCAP: Opcode = opcode::read::<V4l2Capability>(b'V', 0);
/// `VIDIOC_ENUM_FMT`.
pub const VIDIOC_ENUM_FMT: Opcode = opcode::read_write::<V4l2FmtDesc>(b'V', 2);
/// `VIDIOC_G_FMT`.
pub const VIDIOC_G_FMT: Opcode = opcode::read_write::<V4l2Format>(b'V', 4);
/// `VIDIOC_S_FMT`.
pub const VIDIOC_S_FMT: Opcode = opcode::read_write::<V4l2Format>(b'V', 5);
/// `VIDIOC_REQBUFS`.
pub const VIDIOC_REQBUFS: Opcode = opcode::read_write::<V4l2RequestBuffers>(b'V', 8);
/// `VIDIOC_QUERYBUF`.
pub const VIDIOC_QUERYBUF: Opcode = opcode::read_write::<V4l2Buffer>(b'V', 9);
/// `VIDIOC_QBUF`.
pub const VIDIOC_QBUF: Opcode = opcode::read_write::<V4l2Buffer>(b'V', 15);
/// `VIDIOC_EXPBUF`.
pub const VIDIOC_EXPBUF: Opcode = opcode::read_write::<V4l2ExportBuffer>(b'V', 16);
/// `VIDIOC_DQBUF`.
pub const VIDIOC_DQBUF: Opcode = opcode::read_write::<V4l2Buffer>(b'V', 17);
/// `VIDIOC_STREAMON`.
pub const VIDIOC_STREAMON: Opcode = opcode::write::<i32>(b'V', 18);
/// `VIDIOC_STREAMOFF`.
pub const VIDIOC_STREAMOFF: Opcode = opcode::write::<i32>(b'V', 19);
/// `VIDIOC_G_PARM`.
pub const VIDIOC_G_PARM: Opcode = opcode::read_write::<V4l2StreamParm>(b'V', 21);
/// `VIDIOC_S_PARM`.
pub const VIDIOC_S_PARM: Opcode = opcode::read_write::<V4l2StreamParm>(b'V', 22);
/// `VIDIOC_TRY_FMT`.
pub const VIDIOC_TRY_FMT: Opcode = opcode::read_write::<V4l2Format>(b'V', 64);
/// `VIDIOC_S_EXT_CTRLS`.
pub const VIDIOC_S_EXT_CTRLS: Opcode = opcode::read_write::<V4l2ExtControls>(b'V', 72);
/// `VIDIOC_ENUM_FRAMESIZES`.
pub const VIDIOC_ENUM_FRAMESIZES: Opcode = opcode::read_write::<V4l2FrmSizeEnum>(b'V', 74);
/// `VIDIOC_DQEVENT`.
pub const VIDIOC_DQEVENT: Opcode = opcode::read::<V4l2Event>(b'V', 89);
/// `VIDIOC_SUBSCRIBE_EVENT`.
pub const VIDIOC_SUBSCRIBE_EVENT: Opcode = opcode::write::<V4l2EventSubscription>(b'V', 90);
/// `VIDIOC_DECODER_CMD`.
pub const VIDIOC_DECODER_CMD: Opcode = opcode::read_write::<V4l2DecoderCmd>(b'V', 96);

// ---------------------------------------------------------------------------------------------
// Wrappers

/// What the device and this node can do.
pub fn vidioc_querycap(video: BorrowedFd<'_>) -> Result<V4l2Capability> {
    let mut cap = V4l2Capability::default();
    // SAFETY: the opcode is _IOR('V', 0, struct v4l2_capability) and `cap` has that exact
    // layout (size locked by the tests); the kernel writes only inside it.
    unsafe { call(video, Updater::<{ VIDIOC_QUERYCAP }, _>::new(&mut cap))? };
    Ok(cap)
}

/// Describes format `desc.index` of queue `desc.type_` (EINVAL past the last one).
pub fn vidioc_enum_fmt(video: BorrowedFd<'_>, desc: &mut V4l2FmtDesc) -> Result<()> {
    // SAFETY: the opcode is _IOWR('V', 2, struct v4l2_fmtdesc) and `desc` has that layout; the
    // struct holds no pointers, and the kernel writes only inside it.
    unsafe { call(video, Updater::<{ VIDIOC_ENUM_FMT }, _>::new(desc)) }
}

/// The three format ioctls share one argument; only video types reach the kernel, so the
/// union never holds the overlay's clip-list pointers.
fn format_ioctl<const OPCODE: Opcode>(video: BorrowedFd<'_>, f: &mut V4l2Format) -> Result<()> {
    if !is_video_type(f.type_) {
        return Err(Errno::INVAL);
    }
    // SAFETY: OPCODE is one of VIDIOC_G_FMT / S_FMT / TRY_FMT (the callers below), all
    // _IOWR('V', n, struct v4l2_format), and `f` has that layout (208 bytes, union at 8). For
    // the video types checked above the kernel reads and writes only the `pix`/`pix_mp` member,
    // inside the struct: no pointer in it is followed.
    unsafe { call(video, Updater::<OPCODE, _>::new(f)) }
}

/// The current format of queue `f.type_`.
pub fn vidioc_g_fmt(video: BorrowedFd<'_>, f: &mut V4l2Format) -> Result<()> {
    format_ioctl::<{ VIDIOC_G_FMT }>(video, f)
}

/// Sets the format (the driver adjusts it to what it can do and says so in `f`); EBUSY while
/// buffers are allocated.
pub fn vidioc_s_fmt(video: BorrowedFd<'_>, f: &mut V4l2Format) -> Result<()> {
    format_ioctl::<{ VIDIOC_S_FMT }>(video, f)
}

/// What `vidioc_s_fmt` would set, without setting it.
pub fn vidioc_try_fmt(video: BorrowedFd<'_>, f: &mut V4l2Format) -> Result<()> {
    format_ioctl::<{ VIDIOC_TRY_FMT }>(video, f)
}

/// The two parameter ioctls share one argument; only the video capture types reach the
/// kernel, so its union is always the capture member (no pointers in any member).
fn parm_ioctl<const OPCODE: Opcode>(video: BorrowedFd<'_>, p: &mut V4l2StreamParm) -> Result<()> {
    if !matches!(
        p.type_,
        V4L2_BUF_TYPE_VIDEO_CAPTURE | V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
    ) {
        return Err(Errno::INVAL);
    }
    // SAFETY: OPCODE is VIDIOC_G_PARM or VIDIOC_S_PARM (the callers below), both
    // _IOWR('V', n, struct v4l2_streamparm), and `p` has that layout (204 bytes, union at 4,
    // locked by the tests); no pointers, and the kernel reads and writes only inside it.
    unsafe { call(video, Updater::<OPCODE, _>::new(p)) }
}

/// The streaming parameters of capture queue `p.type_` (the frame interval, and whether it can
/// be set); ENOTTY from drivers that have none.
pub fn vidioc_g_parm(video: BorrowedFd<'_>, p: &mut V4l2StreamParm) -> Result<()> {
    parm_ioctl::<{ VIDIOC_G_PARM }>(video, p)
}

/// Sets them (the driver picks the nearest frame interval it has and says so in `p`).
pub fn vidioc_s_parm(video: BorrowedFd<'_>, p: &mut V4l2StreamParm) -> Result<()> {
    parm_ioctl::<{ VIDIOC_S_PARM }>(video, p)
}

/// Allocates (or with `count` 0 frees) the queue's buffers; EBUSY when another open file owns
/// the queue.
pub fn vidioc_reqbufs(video: BorrowedFd<'_>, req: &mut V4l2RequestBuffers) -> Result<()> {
    // SAFETY: the opcode is _IOWR('V', 8, struct v4l2_requestbuffers) and `req` has that
    // layout; it holds no pointers (USERPTR memory here only names the kind of buffers).
    unsafe { call(video, Updater::<{ VIDIOC_REQBUFS }, _>::new(req)) }
}

/// Shared by QUERYBUF, QBUF and DQBUF: multi-planar types get `planes` as their plane array.
fn buffer_ioctl<const OPCODE: Opcode>(
    video: BorrowedFd<'_>,
    buf: &mut V4l2Buffer,
    planes: &mut [V4l2Plane],
) -> Result<()> {
    if !is_video_type(buf.type_) {
        return Err(Errno::INVAL);
    }
    if is_multiplanar(buf.type_) {
        if planes.is_empty() || planes.len() > VIDEO_MAX_PLANES {
            return Err(Errno::INVAL);
        }
        buf.m = V4l2BufferM {
            planes: planes.as_mut_ptr(),
        };
        buf.length = planes.len() as u32;
    }
    // SAFETY: OPCODE is VIDIOC_QUERYBUF / QBUF / DQBUF (the callers below), all
    // _IOWR('V', n, struct v4l2_buffer), and `buf` has that layout (88 bytes). For the
    // multi-planar types the kernel copies in and out at most `buf.length` `struct v4l2_plane`s
    // through `m.planes`, which was just set to `planes` — exactly that many elements, of that
    // layout, borrowed mutably for the call. For single-planar types `m` is an integer to the
    // kernel (offset or fd); USERPTR memory, the one case where it is an address the kernel
    // would write into, never reaches QBUF (see `vidioc_qbuf`), and QUERYBUF/DQBUF only report.
    let result = unsafe { call(video, Updater::<OPCODE, _>::new(buf)) };
    if is_multiplanar(buf.type_) {
        // Do not leave a pointer to the caller's slice behind in a Copy struct.
        buf.m = V4l2BufferM { userptr: 0 };
    }
    result
}

/// What buffer `buf.index` is: size, mmap offset, flags; `planes` receives its memory planes
/// (multi-planar types; at least as many as the format has).
pub fn vidioc_querybuf(
    video: BorrowedFd<'_>,
    buf: &mut V4l2Buffer,
    planes: &mut [V4l2Plane],
) -> Result<()> {
    buffer_ioctl::<{ VIDIOC_QUERYBUF }>(video, buf, planes)
}

/// Queues buffer `buf.index` to the driver (MMAP or DMABUF memory; USERPTR is refused with
/// EINVAL: it would let the kernel DMA into an address this safe function cannot vouch for).
pub fn vidioc_qbuf(
    video: BorrowedFd<'_>,
    buf: &mut V4l2Buffer,
    planes: &mut [V4l2Plane],
) -> Result<()> {
    if buf.memory == V4L2_MEMORY_USERPTR {
        return Err(Errno::INVAL);
    }
    buffer_ioctl::<{ VIDIOC_QBUF }>(video, buf, planes)
}

/// Takes the next filled buffer back (EAGAIN on a non-blocking fd when none is ready).
pub fn vidioc_dqbuf(
    video: BorrowedFd<'_>,
    buf: &mut V4l2Buffer,
    planes: &mut [V4l2Plane],
) -> Result<()> {
    buffer_ioctl::<{ VIDIOC_DQBUF }>(video, buf, planes)
}

/// Exports memory plane `plane` of buffer `index` as a new dma-buf (close-on-exec,
/// read-write).
pub fn vidioc_expbuf(video: BorrowedFd<'_>, type_: u32, index: u32, plane: u32) -> Result<OwnedFd> {
    let flags = (rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC).bits();
    let mut arg = V4l2ExportBuffer {
        type_,
        index,
        plane,
        flags,
        fd: -1,
        reserved: [0; 11],
    };
    // SAFETY: the opcode is _IOWR('V', 16, struct v4l2_exportbuffer) and `arg` has that layout;
    // it holds no pointers, and the kernel writes only inside it.
    unsafe { call(video, Updater::<{ VIDIOC_EXPBUF }, _>::new(&mut arg))? };
    // SAFETY: on success the kernel installed a new fd in `arg.fd` that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(arg.fd) })
}

/// Starts streaming queue `type_`.
pub fn vidioc_streamon(video: BorrowedFd<'_>, type_: u32) -> Result<()> {
    let type_ = i32::try_from(type_).map_err(|_| Errno::INVAL)?;
    // SAFETY: the opcode is _IOW('V', 18, int) and the argument is an i32 (a C int).
    unsafe { call(video, Setter::<{ VIDIOC_STREAMON }, i32>::new(type_)) }
}

/// Stops streaming queue `type_` (every buffer returns to the application, dequeued).
pub fn vidioc_streamoff(video: BorrowedFd<'_>, type_: u32) -> Result<()> {
    let type_ = i32::try_from(type_).map_err(|_| Errno::INVAL)?;
    // SAFETY: the opcode is _IOW('V', 19, int) and the argument is an i32 (a C int).
    unsafe { call(video, Setter::<{ VIDIOC_STREAMOFF }, i32>::new(type_)) }
}

/// Describes frame size `e.index` of fourcc `e.pixel_format` (EINVAL past the last one).
pub fn vidioc_enum_framesizes(video: BorrowedFd<'_>, e: &mut V4l2FrmSizeEnum) -> Result<()> {
    // SAFETY: the opcode is _IOWR('V', 74, struct v4l2_frmsizeenum) and `e` has that layout
    // (the union is the `[u32; 6]`); no pointers, and the kernel writes only inside it.
    unsafe { call(video, Updater::<{ VIDIOC_ENUM_FRAMESIZES }, _>::new(e)) }
}

/// Subscribes to events of `type_` (`V4L2_EVENT_*`); they then wake poll with POLLPRI.
pub fn vidioc_subscribe_event(video: BorrowedFd<'_>, type_: u32) -> Result<()> {
    let sub = V4l2EventSubscription {
        type_,
        ..Default::default()
    };
    // SAFETY: the opcode is _IOW('V', 90, struct v4l2_event_subscription) and `sub` has that
    // layout (size locked by the tests); no pointers, and the kernel only reads it.
    unsafe { call(video, Setter::<{ VIDIOC_SUBSCRIBE_EVENT }, _>::new(sub)) }
}

/// Takes the next pending event (ENOENT when there is none).
pub fn vidioc_dqevent(video: BorrowedFd<'_>) -> Result<V4l2Event> {
    let mut event = V4l2Event::default();
    // SAFETY: the opcode is _IOR('V', 89, struct v4l2_event) and `event` has that layout (136
    // bytes, locked by the tests); the kernel writes only inside it.
    unsafe { call(video, Updater::<{ VIDIOC_DQEVENT }, _>::new(&mut event))? };
    Ok(event)
}

/// Sends a decoder command (`V4L2_DEC_CMD_*`, no flags).
pub fn vidioc_decoder_cmd(video: BorrowedFd<'_>, cmd: u32) -> Result<()> {
    let mut arg = V4l2DecoderCmd {
        cmd,
        ..Default::default()
    };
    // SAFETY: the opcode is _IOWR('V', 96, struct v4l2_decoder_cmd) and `arg` has that layout
    // (72 bytes); no pointers, and the kernel writes only inside it.
    unsafe { call(video, Updater::<{ VIDIOC_DECODER_CMD }, _>::new(&mut arg)) }
}

/// Sets compound control `C` to `value` in `request` (`VIDIOC_S_EXT_CTRLS` with `which`
/// `V4L2_CTRL_WHICH_REQUEST_VAL`): the value the driver applies when the request runs, not
/// now. The driver may adjust `value` and writes it back.
pub fn vidioc_s_ext_ctrl_in_request<C: CompoundControl>(
    video: BorrowedFd<'_>,
    request: BorrowedFd<'_>,
    value: &mut C,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let mut control = V4l2ExtControl {
        id: C::ID,
        size: std::mem::size_of::<C>() as u32,
        reserved2: [0],
        ptr: (value as *mut C).cast(),
    };
    let mut arg = V4l2ExtControls {
        which: V4L2_CTRL_WHICH_REQUEST_VAL,
        count: 1,
        error_idx: 0,
        request_fd: request.as_raw_fd(),
        reserved: [0],
        controls: &mut control,
    };
    // SAFETY: the opcode is _IOWR('V', 72, struct v4l2_ext_controls) and `arg` has that layout
    // (32 bytes, `controls` at 24; locked by the tests). The kernel copies in and back out
    // `count` = 1 `struct v4l2_ext_control` through `controls`, which points at `control` (20
    // bytes, packed, as the header's), alive and borrowed mutably for the call. For the compound
    // control `C::ID` it reads and may write back `size` bytes through `ptr`: exactly the
    // `size_of::<C>()` bytes of `value`, borrowed mutably, and `C` (sealed to this module's
    // plain-integer structs) is valid for any bit pattern. `request_fd` is only an fd number to
    // the kernel.
    unsafe { call(video, Updater::<{ VIDIOC_S_EXT_CTRLS }, _>::new(&mut arg)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Against the numbers the C header gives on x86_64 (printed by a C program built with
    /// linux-libc-dev 6.1's <linux/videodev2.h>; these layouts are uAPI and never change).
    #[test]
    fn opcodes_match_the_kernel_headers() {
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_ENUM_FMT, 0xc040_5602);
        assert_eq!(VIDIOC_G_FMT, 0xc0d0_5604);
        assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_EXPBUF, 0xc040_5610);
        assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
        assert_eq!(VIDIOC_G_PARM, 0xc0cc_5615);
        assert_eq!(VIDIOC_S_PARM, 0xc0cc_5616);
        assert_eq!(VIDIOC_TRY_FMT, 0xc0d0_5640);
        assert_eq!(VIDIOC_ENUM_FRAMESIZES, 0xc02c_564a);
        assert_eq!(VIDIOC_DQEVENT, 0x8088_5659);
        assert_eq!(VIDIOC_SUBSCRIBE_EVENT, 0x4020_565a);
        assert_eq!(VIDIOC_DECODER_CMD, 0xc048_5660);
        assert_eq!(VIDIOC_S_EXT_CTRLS, 0xc020_5648);
        assert_eq!(V4L2_CID_STATELESS_FWHT_PARAMS, 0x00a4_0964);
    }

    #[test]
    fn struct_layouts_match_the_kernel_headers() {
        assert_eq!(size_of::<V4l2Capability>(), 104);
        assert_eq!(offset_of!(V4l2Capability, device_caps), 88);
        assert_eq!(size_of::<V4l2FmtDesc>(), 64);
        assert_eq!(offset_of!(V4l2FmtDesc, pixelformat), 44);
        assert_eq!(size_of::<V4l2PixFormat>(), 48);
        assert_eq!(size_of::<V4l2PlanePixFormat>(), 20);
        assert_eq!(size_of::<V4l2PixFormatMplane>(), 192);
        assert_eq!(offset_of!(V4l2PixFormatMplane, plane_fmt), 20);
        assert_eq!(offset_of!(V4l2PixFormatMplane, num_planes), 180);
        assert_eq!(size_of::<V4l2Format>(), 208);
        assert_eq!(offset_of!(V4l2Format, fmt), 8);
        assert_eq!(align_of::<V4l2Format>(), 8);
        assert_eq!(size_of::<V4l2RequestBuffers>(), 20);
        assert_eq!(offset_of!(V4l2RequestBuffers, capabilities), 12);
        assert_eq!(size_of::<V4l2Plane>(), 64);
        assert_eq!(offset_of!(V4l2Plane, m), 8);
        assert_eq!(offset_of!(V4l2Plane, data_offset), 16);
        assert_eq!(size_of::<V4l2Timecode>(), 16);
        assert_eq!(size_of::<V4l2Buffer>(), 88);
        assert_eq!(offset_of!(V4l2Buffer, timestamp), 24);
        assert_eq!(offset_of!(V4l2Buffer, timecode), 40);
        assert_eq!(offset_of!(V4l2Buffer, sequence), 56);
        assert_eq!(offset_of!(V4l2Buffer, m), 64);
        assert_eq!(offset_of!(V4l2Buffer, length), 72);
        assert_eq!(offset_of!(V4l2Buffer, request_fd), 80);
        assert_eq!(size_of::<V4l2ExportBuffer>(), 64);
        assert_eq!(offset_of!(V4l2ExportBuffer, fd), 16);
        assert_eq!(size_of::<V4l2FrmSizeEnum>(), 44);
        assert_eq!(offset_of!(V4l2FrmSizeEnum, size), 12);
        assert_eq!(size_of::<V4l2EventSubscription>(), 32);
        assert_eq!(size_of::<V4l2Event>(), 136);
        assert_eq!(offset_of!(V4l2Event, u), 8);
        assert_eq!(offset_of!(V4l2Event, pending), 72);
        assert_eq!(offset_of!(V4l2Event, timestamp), 80);
        assert_eq!(offset_of!(V4l2Event, id), 96);
        assert_eq!(size_of::<V4l2DecoderCmd>(), 72);
        assert_eq!(size_of::<V4l2ExtControls>(), 32);
        assert_eq!(offset_of!(V4l2ExtControls, request_fd), 12);
        assert_eq!(offset_of!(V4l2ExtControls, controls), 24);
        assert_eq!(size_of::<V4l2ExtControl>(), 20);
        assert_eq!(offset_of!(V4l2ExtControl, ptr), 12);
        assert_eq!(size_of::<V4l2CtrlFwhtParams>(), 40);
        assert_eq!(size_of::<V4l2CaptureParm>(), 40);
        assert_eq!(offset_of!(V4l2CaptureParm, timeperframe), 8);
        assert_eq!(size_of::<V4l2StreamParm>(), 204);
        assert_eq!(offset_of!(V4l2StreamParm, capture), 4);
    }

    #[test]
    fn unions_read_what_was_written() {
        let mut f = V4l2Format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE);
        f.pix_mp_mut().num_planes = 2;
        f.pix_mp_mut().plane_fmt[1].bytesperline = 640;
        let mp = f.pix_mp();
        assert_eq!({ mp.num_planes }, 2);
        assert_eq!({ mp.plane_fmt[1].bytesperline }, 640);
        let mut b = V4l2Buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_DMABUF, 3);
        b.set_fd(7);
        assert_eq!(b.fd(), 7);
        assert_eq!(V4l2Plane::default().mem_offset(), 0);
    }

    #[test]
    fn unsafe_requests_never_reach_the_kernel() {
        // /dev/null would answer ENOTTY; EINVAL proves the wrapper refused first.
        let null = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        let mut f = V4l2Format::new(3); // VIDEO_OVERLAY: its union holds pointers
        assert_eq!(vidioc_g_fmt(null.as_fd(), &mut f), Err(Errno::INVAL));
        let mut b = V4l2Buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_USERPTR, 0);
        assert_eq!(
            vidioc_qbuf(null.as_fd(), &mut b, &mut []),
            Err(Errno::INVAL)
        );
        let mut b = V4l2Buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, V4L2_MEMORY_MMAP, 0);
        assert_eq!(
            vidioc_querybuf(null.as_fd(), &mut b, &mut []),
            Err(Errno::INVAL)
        );
        let mut planes = [V4l2Plane::default(); 1];
        assert_eq!(
            vidioc_querybuf(null.as_fd(), &mut b, &mut planes),
            Err(Errno::NOTTY)
        );
        let mut p = V4l2StreamParm::new(V4L2_BUF_TYPE_VIDEO_OUTPUT);
        assert_eq!(vidioc_s_parm(null.as_fd(), &mut p), Err(Errno::INVAL));
        let mut p = V4l2StreamParm::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
        assert_eq!(vidioc_g_parm(null.as_fd(), &mut p), Err(Errno::NOTTY));
    }
}
