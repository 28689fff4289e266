//! Pixel formats: fourccs, what a capture queue offers, the format it was set to, and how a
//! frame's colour planes sit in its memory planes — which is what a linux-dmabuf client must
//! tell the compositor (fd, offset and stride of each plane, and a DRM fourcc).

use std::fmt;
use std::str::FromStr;

use crate::sys::v4l2 as sys;

/// A four-character code (V4L2 and DRM use the same packing: first character in the low
/// byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCc(pub u32);

impl FourCc {
    /// From its four characters.
    pub const fn new(code: &[u8; 4]) -> Self {
        FourCc(u32::from_le_bytes(*code))
    }

    /// Its four bytes.
    pub const fn bytes(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.bytes();
        if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            let s: String = bytes.iter().map(|&b| b as char).collect();
            f.write_str(s.trim_end())
        } else {
            write!(f, "{:#010x}", self.0)
        }
    }
}

/// Why a string is not a fourcc.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a fourcc: give 1 to 4 printable ASCII characters, such as YUYV, NV12, XR24")]
pub struct BadFourCc(pub String);

impl FromStr for FourCc {
    type Err = BadFourCc;

    /// 1 to 4 printable ASCII characters; shorter codes are padded with spaces (`"R8"` is
    /// `"R8  "`), as the headers define them.
    fn from_str(s: &str) -> Result<Self, BadFourCc> {
        let bytes = s.as_bytes();
        if bytes.is_empty() || bytes.len() > 4 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(BadFourCc(s.to_owned()));
        }
        let mut code = [b' '; 4];
        code[..bytes.len()].copy_from_slice(bytes);
        Ok(FourCc::new(&code))
    }
}

/// Which capture queue: the single-planar API or the multi-planar one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// `V4L2_BUF_TYPE_VIDEO_CAPTURE`: one memory plane per buffer.
    SinglePlanar,
    /// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`: up to 8 memory planes per buffer.
    MultiPlanar,
}

impl QueueKind {
    /// The V4L2 buffer type.
    pub const fn buf_type(self) -> u32 {
        match self {
            QueueKind::SinglePlanar => sys::V4L2_BUF_TYPE_VIDEO_CAPTURE,
            QueueKind::MultiPlanar => sys::V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
        }
    }

    /// A short name (`single-planar`, `multi-planar`).
    pub const fn name(self) -> &'static str {
        match self {
            QueueKind::SinglePlanar => "single-planar",
            QueueKind::MultiPlanar => "multi-planar",
        }
    }
}

/// One buffer queue of a node: a capture queue, or a memory-to-memory device's OUTPUT queue
/// (where the application hands the device its input: a bitstream, or frames to convert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Queue {
    /// Single- or multi-planar.
    pub kind: QueueKind,
    /// The OUTPUT side of a memory-to-memory device.
    pub output: bool,
}

impl Queue {
    /// `kind`'s OUTPUT queue.
    pub const fn output(kind: QueueKind) -> Self {
        Queue { kind, output: true }
    }

    /// The V4L2 buffer type.
    pub const fn buf_type(self) -> u32 {
        match (self.kind, self.output) {
            (kind, false) => kind.buf_type(),
            (QueueKind::SinglePlanar, true) => sys::V4L2_BUF_TYPE_VIDEO_OUTPUT,
            (QueueKind::MultiPlanar, true) => sys::V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
        }
    }
}

impl From<QueueKind> for Queue {
    /// `kind`'s capture queue.
    fn from(kind: QueueKind) -> Self {
        Queue {
            kind,
            output: false,
        }
    }
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One format a capture queue offers (`VIDIOC_ENUM_FMT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatDesc {
    /// The fourcc.
    pub fourcc: FourCc,
    /// The driver's description.
    pub description: String,
    /// `V4L2_FMT_FLAG_*` (compressed, emulated...).
    pub flags: u32,
}

/// The time between a capture device's frames: `seconds`/`per` (1/30 is 30 frames a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInterval {
    /// The numerator, in seconds.
    pub seconds: u32,
    /// The denominator.
    pub per: u32,
}

impl fmt::Display for FrameInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fps = f64::from(self.per) / f64::from(self.seconds.max(1));
        write!(f, "{}/{} s ({fps:.3} fps)", self.seconds, self.per)
    }
}

/// One entry of `VIDIOC_ENUM_FRAMESIZES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Exactly this size.
    Discrete {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Any size in the range, in steps (continuous: steps of 1).
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameSize::Discrete { width, height } => write!(f, "{width}x{height}"),
            FrameSize::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => write!(
                f,
                "{min_width}x{min_height} to {max_width}x{max_height} \
                 (steps {step_width}x{step_height})"
            ),
        }
    }
}

/// One memory plane of the format: what each buffer's plane `i` holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryPlaneFormat {
    /// Bytes per line.
    pub bytesperline: u32,
    /// Bytes the plane needs.
    pub sizeimage: u32,
}

/// The format a capture queue is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The queue.
    pub queue: QueueKind,
    /// The fourcc.
    pub fourcc: FourCc,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `enum v4l2_field` (1: progressive).
    pub field: u32,
    /// The memory planes (one for the single-planar API).
    pub planes: Vec<MemoryPlaneFormat>,
}

impl Format {
    /// From the kernel's `struct v4l2_format`.
    pub fn from_sys(queue: QueueKind, f: &sys::V4l2Format) -> Format {
        match queue {
            QueueKind::SinglePlanar => {
                let pix = f.pix();
                Format {
                    queue,
                    fourcc: FourCc(pix.pixelformat),
                    width: pix.width,
                    height: pix.height,
                    field: pix.field,
                    planes: vec![MemoryPlaneFormat {
                        bytesperline: pix.bytesperline,
                        sizeimage: pix.sizeimage,
                    }],
                }
            }
            QueueKind::MultiPlanar => {
                let mp = f.pix_mp();
                let n = usize::from(mp.num_planes).min(sys::VIDEO_MAX_PLANES);
                let plane_fmt = mp.plane_fmt;
                Format {
                    queue,
                    fourcc: FourCc(mp.pixelformat),
                    width: mp.width,
                    height: mp.height,
                    field: mp.field,
                    planes: plane_fmt[..n]
                        .iter()
                        .map(|p| MemoryPlaneFormat {
                            bytesperline: p.bytesperline,
                            sizeimage: p.sizeimage,
                        })
                        .collect(),
                }
            }
        }
    }

    /// How the frame's colour planes sit in the memory planes, for the formats this crate
    /// knows (`None` for others, e.g. compressed or Bayer formats).
    pub fn colour_planes(&self) -> Option<Vec<ColourPlane>> {
        colour_planes(self)
    }

    /// The DRM fourcc a linux-dmabuf client would give for this format, where there is one.
    pub fn drm_fourcc(&self) -> Option<FourCc> {
        known(self.fourcc).map(|k| k.drm)
    }

    /// The first colour plane whose lines run past the end of its memory plane, when each
    /// buffer's memory plane `i` holds `lengths[i]` bytes (`VIDIOC_QUERYBUF`): (colour plane,
    /// bytes its lines need, bytes the memory plane holds). A driver whose format and buffers
    /// disagree so would have a compositor read past a buffer's end (linux-dmabuf refuses
    /// it). `None` when all fit, or for a format this crate cannot lay out.
    pub fn plane_past_its_buffer(&self, lengths: &[u32]) -> Option<(usize, u64, u32)> {
        let sub_v = known(self.fourcc)?.sub.1;
        self.colour_planes()?
            .iter()
            .enumerate()
            .find_map(|(i, plane)| {
                let lines = if i == 0 {
                    self.height
                } else {
                    self.height.div_ceil(sub_v)
                };
                let needs = u64::from(plane.offset) + u64::from(plane.stride) * u64::from(lines);
                let holds = lengths.get(plane.memory_plane).copied().unwrap_or(0);
                (needs > u64::from(holds)).then_some((i, needs, holds))
            })
    }
}

/// One colour plane of a frame, as linux-dmabuf's `zwp_linux_buffer_params_v1.add` takes it:
/// which memory plane (dma-buf) it is in, where it starts and its stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ColourPlane {
    /// The memory plane (and so the exported dma-buf) it lives in.
    pub memory_plane: usize,
    /// Byte offset in that memory plane.
    pub offset: u32,
    /// Bytes per line.
    pub stride: u32,
}

/// What this crate knows of a V4L2 pixel format.
struct Known {
    v4l2: FourCc,
    /// The same layout's DRM fourcc (drm_fourcc.h), for linux-dmabuf.
    drm: FourCc,
    /// Colour planes, and how many memory planes hold them (1: all in one).
    colour_planes: usize,
    memory_planes: usize,
    /// Chroma subsampling (horizontal, vertical) of planes after the first.
    sub: (u32, u32),
}

const fn k(v4l2: &[u8; 4], drm: &[u8; 4], colour: usize, memory: usize, sub: (u32, u32)) -> Known {
    Known {
        v4l2: FourCc::new(v4l2),
        drm: FourCc::new(drm),
        colour_planes: colour,
        memory_planes: memory,
        sub,
    }
}

/// V4L2 codes name the byte order in memory and DRM codes a little-endian word, so the packed
/// RGB formats of both families coincide code for code (V4L2 `XR24`, "BGRX-8-8-8-8" in
/// memory, is DRM `XR24`, XRGB8888); the few that differ are mapped here.
const KNOWN: &[Known] = &[
    k(b"YUYV", b"YUYV", 1, 1, (1, 1)),
    k(b"YVYU", b"YVYU", 1, 1, (1, 1)),
    k(b"UYVY", b"UYVY", 1, 1, (1, 1)),
    k(b"VYUY", b"VYUY", 1, 1, (1, 1)),
    k(b"NV12", b"NV12", 2, 1, (1, 2)),
    k(b"NV21", b"NV21", 2, 1, (1, 2)),
    k(b"NV16", b"NV16", 2, 1, (1, 1)),
    k(b"NV61", b"NV61", 2, 1, (1, 1)),
    k(b"NM12", b"NV12", 2, 2, (1, 2)),
    k(b"NM21", b"NV21", 2, 2, (1, 2)),
    k(b"NM16", b"NV16", 2, 2, (1, 1)),
    k(b"NM61", b"NV61", 2, 2, (1, 1)),
    k(b"YU12", b"YU12", 3, 1, (2, 2)),
    k(b"YV12", b"YV12", 3, 1, (2, 2)),
    k(b"YM12", b"YU12", 3, 3, (2, 2)),
    k(b"YM21", b"YV12", 3, 3, (2, 2)),
    k(b"AR24", b"AR24", 1, 1, (1, 1)),
    k(b"XR24", b"XR24", 1, 1, (1, 1)),
    k(b"RA24", b"RA24", 1, 1, (1, 1)),
    k(b"RX24", b"RX24", 1, 1, (1, 1)),
    k(b"AB24", b"AB24", 1, 1, (1, 1)),
    k(b"XB24", b"XB24", 1, 1, (1, 1)),
    k(b"BA24", b"BA24", 1, 1, (1, 1)),
    k(b"BX24", b"BX24", 1, 1, (1, 1)),
    k(b"RGBP", b"RG16", 1, 1, (1, 1)),
    k(b"BGR3", b"RG24", 1, 1, (1, 1)),
    k(b"RGB3", b"BG24", 1, 1, (1, 1)),
    k(b"GREY", b"R8  ", 1, 1, (1, 1)),
];

fn known(fourcc: FourCc) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.v4l2 == fourcc)
}

fn colour_planes(format: &Format) -> Option<Vec<ColourPlane>> {
    let k = known(format.fourcc)?;
    if format.planes.len() != k.memory_planes {
        return None;
    }
    if k.memory_planes == k.colour_planes {
        // One colour plane per memory plane, each at the start of its own buffer.
        return Some(
            format
                .planes
                .iter()
                .enumerate()
                .map(|(i, p)| ColourPlane {
                    memory_plane: i,
                    offset: 0,
                    stride: p.bytesperline,
                })
                .collect(),
        );
    }
    // All colour planes in one memory plane, one after the other.
    let luma_stride = format.planes[0].bytesperline;
    let (sub_h, sub_v) = k.sub;
    let chroma_stride = if k.colour_planes == 2 {
        luma_stride // interleaved CbCr: as many bytes per line as luma
    } else {
        luma_stride / sub_h
    };
    let chroma_lines = format.height.div_ceil(sub_v);
    let mut planes = vec![ColourPlane {
        memory_plane: 0,
        offset: 0,
        stride: luma_stride,
    }];
    let mut offset = luma_stride.checked_mul(format.height)?;
    for _ in 1..k.colour_planes {
        planes.push(ColourPlane {
            memory_plane: 0,
            offset,
            stride: chroma_stride,
        });
        offset = offset.checked_add(chroma_stride.checked_mul(chroma_lines)?)?;
    }
    Some(planes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs_parse_and_print() {
        let yuyv: FourCc = "YUYV".parse().unwrap();
        assert_eq!(yuyv.0, 0x5659_5559); // V4L2_PIX_FMT_YUYV
        assert_eq!(yuyv.to_string(), "YUYV");
        assert_eq!("NV12".parse::<FourCc>().unwrap().0, 0x3231_564e);
        assert_eq!("BX24".parse::<FourCc>().unwrap().0, 0x3432_5842); // V4L2_PIX_FMT_XRGB32
        assert_eq!("R8".parse::<FourCc>().unwrap(), FourCc::new(b"R8  "));
        assert_eq!(FourCc::new(b"R8  ").to_string(), "R8");
        assert_eq!(FourCc(0x0102_0304).to_string(), "0x01020304");
        for bad in ["", "TOOLONG", "a b", "é"] {
            assert!(bad.parse::<FourCc>().is_err(), "{bad:?}");
        }
    }

    fn format(fourcc: &str, queue: QueueKind, w: u32, h: u32, planes: &[u32]) -> Format {
        Format {
            queue,
            fourcc: fourcc.parse().unwrap(),
            width: w,
            height: h,
            field: 1,
            planes: planes
                .iter()
                .map(|&bpl| MemoryPlaneFormat {
                    bytesperline: bpl,
                    sizeimage: bpl * h,
                })
                .collect(),
        }
    }

    #[test]
    fn planes_past_their_buffers_are_found() {
        let yuyv = |bytesperline| Format {
            queue: QueueKind::SinglePlanar,
            fourcc: FourCc(u32::from_le_bytes(*b"YUYV")),
            width: 640,
            height: 480,
            field: 1,
            planes: vec![MemoryPlaneFormat {
                bytesperline,
                sizeimage: 614_400,
            }],
        };
        // The lines as the format says, 2560 bytes each, in buffers sized for 1280-byte lines.
        assert_eq!(
            yuyv(2560).plane_past_its_buffer(&[614_400]),
            Some((0, 1_228_800, 614_400))
        );
        assert_eq!(yuyv(1280).plane_past_its_buffer(&[614_400]), None);
        assert_eq!(yuyv(1280).plane_past_its_buffer(&[]), Some((0, 614_400, 0)));
        // NV12 in one buffer: the chroma plane, half as many lines, must fit after the luma.
        let nv12 = Format {
            fourcc: FourCc(u32::from_le_bytes(*b"NV12")),
            planes: vec![MemoryPlaneFormat {
                bytesperline: 640,
                sizeimage: 460_800,
            }],
            ..yuyv(640)
        };
        assert_eq!(nv12.plane_past_its_buffer(&[460_800]), None);
        assert_eq!(
            nv12.plane_past_its_buffer(&[460_799]),
            Some((1, 460_800, 460_799))
        );
    }

    #[test]
    fn colour_planes_in_one_buffer_follow_each_other() {
        let nv12 = format("NV12", QueueKind::SinglePlanar, 640, 360, &[640]);
        assert_eq!(
            nv12.colour_planes().unwrap(),
            [
                ColourPlane {
                    memory_plane: 0,
                    offset: 0,
                    stride: 640
                },
                ColourPlane {
                    memory_plane: 0,
                    offset: 640 * 360,
                    stride: 640
                },
            ]
        );
        let yu12 = format("YU12", QueueKind::SinglePlanar, 64, 30, &[64]);
        let offsets: Vec<_> = yu12
            .colour_planes()
            .unwrap()
            .iter()
            .map(|p| (p.offset, p.stride))
            .collect();
        assert_eq!(offsets, [(0, 64), (64 * 30, 32), (64 * 30 + 32 * 15, 32)]);
        assert_eq!(yu12.drm_fourcc(), Some(FourCc::new(b"YU12")));
    }

    #[test]
    fn multi_planar_formats_have_one_colour_plane_per_buffer() {
        let nm12 = format("NM12", QueueKind::MultiPlanar, 640, 360, &[640, 640]);
        let planes = nm12.colour_planes().unwrap();
        assert_eq!(planes[1].memory_plane, 1);
        assert_eq!(planes[1].offset, 0);
        assert_eq!(nm12.drm_fourcc(), Some(FourCc::new(b"NV12")));
        // A plane count that contradicts the format is not guessed at.
        let odd = format("NM12", QueueKind::MultiPlanar, 640, 360, &[640]);
        assert_eq!(odd.colour_planes(), None);
        let unknown = format("MJPG", QueueKind::SinglePlanar, 640, 360, &[0]);
        assert_eq!(unknown.colour_planes(), None);
        assert_eq!(unknown.drm_fourcc(), None);
    }
}
