//! The headless backend's CPU renderer: composes client buffers onto an XRGB8888 canvas and
//! writes the canvas as a PNG.
//!
//! It works on plain byte slices: the caller maps each buffer (a wl_shm pool, or a dma-buf
//! mmapped between `DMA_BUF_IOCTL_SYNC` start and end) and describes its planes with
//! [`SourceImage`]. A source is validated once, when it is built, so drawing it can neither
//! fail nor read out of bounds. Formats: XRGB8888 and ARGB8888 (what wl_shm clients send) and
//! the YUYV and NV12 that V4L2 cameras and decoders produce.
//!
//! Y'CbCr is converted with BT.601 limited range by default (what vivid and most V4L2 devices
//! produce for these formats); BT.709 and full range are selectable per source.

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};

use smithay::utils::{Logical, Point, Rectangle, Size, Transform};

/// The canvas keeps the X byte at 0xff, so its pixels also read as opaque ARGB8888
/// (a capture client may ask for either).
const OPAQUE: u32 = 0xff00_0000;

/// Two 8-bit channels (bits 0–7 and 16–23) of a 32-bit pixel, for blending two at once.
const TWO_CHANNELS: u32 = 0x00ff_00ff;

/// The most planes a supported format has (NV12: luma, then interleaved chroma).
const MAX_PLANES: usize = 2;

/// A DRM fourcc code (drm_fourcc.h): four ASCII characters, the first in the low byte.
const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

/// What went wrong describing a buffer, or writing the canvas out.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{format:?} has {expected} plane(s), but {given} were given")]
    PlaneCount {
        format: PixelFormat,
        expected: usize,
        given: usize,
    },
    #[error("plane {plane}: stride {stride} is shorter than a row of {row_bytes} bytes")]
    StrideTooSmall {
        plane: usize,
        stride: usize,
        row_bytes: usize,
    },
    #[error(
        "plane {plane}: needs {needed} bytes (offset, stride × rows), the buffer has {available}"
    )]
    BufferTooShort {
        plane: usize,
        needed: usize,
        available: usize,
    },
    #[error("plane {plane}: the size of a {width}x{height} image overflows")]
    SizeOverflow {
        plane: usize,
        width: u32,
        height: u32,
    },
    #[error(
        "a {width}x{height} canvas needs {needed} bytes at stride {stride}, \
         the destination has {available}"
    )]
    DestinationTooShort {
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        available: usize,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the PNG {path}: {source}")]
    Png {
        path: PathBuf,
        source: png::EncodingError,
    },
}

/// The pixel formats the renderer shows, by their DRM fourcc names. Multi-byte layouts are
/// little-endian, as DRM and wl_shm define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// `XR24`: bytes B, G, R, X. X is ignored: the buffer is opaque.
    Xrgb8888,
    /// `AR24`: bytes B, G, R, A, with premultiplied alpha (as Wayland specifies).
    Argb8888,
    /// `YUYV`: packed 4:2:2, bytes Y0, Cb, Y1, Cr for each pair of pixels.
    Yuyv,
    /// `NV12`: plane 0 is Y at full resolution, plane 1 interleaved Cb, Cr at half the
    /// resolution in both directions.
    Nv12,
}

impl PixelFormat {
    pub const XRGB8888_FOURCC: u32 = fourcc(b"XR24");
    pub const ARGB8888_FOURCC: u32 = fourcc(b"AR24");
    pub const YUYV_FOURCC: u32 = fourcc(b"YUYV");
    pub const NV12_FOURCC: u32 = fourcc(b"NV12");

    /// The format of a DRM fourcc code (linux-dmabuf, V4L2), or None if it is not supported.
    pub fn from_fourcc(code: u32) -> Option<Self> {
        match code {
            Self::XRGB8888_FOURCC => Some(Self::Xrgb8888),
            Self::ARGB8888_FOURCC => Some(Self::Argb8888),
            Self::YUYV_FOURCC => Some(Self::Yuyv),
            Self::NV12_FOURCC => Some(Self::Nv12),
            _ => None,
        }
    }

    /// The format of a `wl_shm.format` value. wl_shm uses fourccs except for its two
    /// mandatory formats, which are 0 (argb8888) and 1 (xrgb8888).
    pub fn from_wl_shm(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Argb8888),
            1 => Some(Self::Xrgb8888),
            _ => Self::from_fourcc(code),
        }
    }

    pub fn fourcc(self) -> u32 {
        match self {
            Self::Xrgb8888 => Self::XRGB8888_FOURCC,
            Self::Argb8888 => Self::ARGB8888_FOURCC,
            Self::Yuyv => Self::YUYV_FOURCC,
            Self::Nv12 => Self::NV12_FOURCC,
        }
    }

    pub fn plane_count(self) -> usize {
        match self {
            Self::Xrgb8888 | Self::Argb8888 | Self::Yuyv => 1,
            Self::Nv12 => 2,
        }
    }

    /// Bytes per row and number of rows of a plane; subsampled planes round up, so odd
    /// sizes keep their last column and row. None if the sizes overflow.
    fn plane_size(self, plane: usize, width: u32, height: u32) -> Option<(usize, usize)> {
        let width = usize::try_from(width).ok()?;
        let height = usize::try_from(height).ok()?;
        match (self, plane) {
            (Self::Xrgb8888 | Self::Argb8888, _) => Some((width.checked_mul(4)?, height)),
            (Self::Yuyv, _) => Some((width.div_ceil(2).checked_mul(4)?, height)),
            (Self::Nv12, 0) => Some((width, height)),
            (Self::Nv12, _) => Some((width.div_ceil(2).checked_mul(2)?, height.div_ceil(2))),
        }
    }
}

/// The matrix of a Y'CbCr encoding: its luma weights Kr and Kb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (SD video, JPEG, V4L2's default for SD and sRGB): Kr 0.299, Kb 0.114.
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD video): Kr 0.2126, Kb 0.0722.
    Bt709,
}

/// The quantisation range of a Y'CbCr encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvRange {
    /// Y' in 16..=235, Cb and Cr in 16..=240 (video, V4L2's default for Y'CbCr).
    #[default]
    Limited,
    /// Y', Cb and Cr in 0..=255 (JPEG).
    Full,
}

/// How a YUYV or NV12 buffer's samples map to RGB. The default, BT.601 limited range, is
/// what vivid and most V4L2 decoders produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct YuvEncoding {
    pub matrix: YuvMatrix,
    pub range: YuvRange,
}

/// Y'CbCr → R'G'B' in 16.16 fixed point, derived from the matrix's Kr, Kb (Kg = 1 − Kr − Kb):
///
/// ```text
/// R = Yg·(Y − Yo) + Cg·2(1 − Kr)·(Cr − 128)
/// G = Yg·(Y − Yo) − Cg·2(1 − Kb)·Kb/Kg·(Cb − 128) − Cg·2(1 − Kr)·Kr/Kg·(Cr − 128)
/// B = Yg·(Y − Yo) + Cg·2(1 − Kb)·(Cb − 128)
/// ```
///
/// with limited range Yo = 16, Yg = 255/219, Cg = 255/224, and full range Yo = 0, Yg = Cg = 1.
/// This gives the usual coefficients:
///
/// | encoding        | Yg    | R from Cr | G from Cb | G from Cr | B from Cb |
/// |-----------------|-------|-----------|-----------|-----------|-----------|
/// | BT.601 limited  | 1.164 | 1.596     | −0.392    | −0.813    | 2.017     |
/// | BT.709 limited  | 1.164 | 1.793     | −0.213    | −0.533    | 2.112     |
/// | BT.601 full     | 1     | 1.402     | −0.344    | −0.714    | 1.772     |
/// | BT.709 full     | 1     | 1.575     | −0.187    | −0.468    | 1.856     |
///
/// Results are rounded and clamped to 0..=255 (limited-range footroom and headroom clip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct YuvToRgb {
    luma_offset: i32,
    luma_gain: i32,
    r_from_cr: i32,
    g_from_cb: i32,
    g_from_cr: i32,
    b_from_cb: i32,
}

/// The chroma terms of a Cb, Cr sample (with the rounding half), shared by the 2 (YUYV) or
/// 4 (NV12) pixels that use it.
#[derive(Debug, Clone, Copy)]
struct ChromaTerms {
    r: i32,
    g: i32,
    b: i32,
}

const FIXED_SHIFT: u32 = 16;
const FIXED_HALF: i32 = 1 << (FIXED_SHIFT - 1);

impl YuvToRgb {
    fn new(encoding: YuvEncoding) -> Self {
        let (kr, kb) = match encoding.matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (luma_offset, luma_gain, chroma_gain) = match encoding.range {
            YuvRange::Limited => (16, 255.0 / 219.0, 255.0 / 224.0),
            YuvRange::Full => (0, 1.0, 1.0),
        };
        let fixed = |value: f64| (value * f64::from(1 << FIXED_SHIFT)).round() as i32;
        Self {
            luma_offset,
            luma_gain: fixed(luma_gain),
            r_from_cr: fixed(chroma_gain * 2.0 * (1.0 - kr)),
            g_from_cb: fixed(-chroma_gain * 2.0 * (1.0 - kb) * kb / kg),
            g_from_cr: fixed(-chroma_gain * 2.0 * (1.0 - kr) * kr / kg),
            b_from_cb: fixed(chroma_gain * 2.0 * (1.0 - kb)),
        }
    }

    #[inline]
    fn chroma(&self, cb: u8, cr: u8) -> ChromaTerms {
        let cb = i32::from(cb) - 128;
        let cr = i32::from(cr) - 128;
        ChromaTerms {
            r: self.r_from_cr * cr + FIXED_HALF,
            g: self.g_from_cb * cb + self.g_from_cr * cr + FIXED_HALF,
            b: self.b_from_cb * cb + FIXED_HALF,
        }
    }

    /// One pixel as canvas XRGB8888.
    #[inline]
    fn pixel(&self, luma: u8, chroma: ChromaTerms) -> u32 {
        let luma = (i32::from(luma) - self.luma_offset) * self.luma_gain;
        // An arithmetic shift floors, so with the half added this rounds negatives too.
        let channel = |fixed: i32| (fixed >> FIXED_SHIFT).clamp(0, 255) as u32;
        OPAQUE
            | channel(luma + chroma.r) << 16
            | channel(luma + chroma.g) << 8
            | channel(luma + chroma.b)
    }
}

/// One plane of a client buffer: the bytes holding it (a whole mapped buffer is fine) and
/// where its rows are.
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    /// Byte offset of the plane's first row in `data`.
    pub offset: usize,
    /// Bytes from the start of one row to the start of the next.
    pub stride: usize,
}

impl<'a> Plane<'a> {
    pub fn new(data: &'a [u8], offset: usize, stride: usize) -> Self {
        Self {
            data,
            offset,
            stride,
        }
    }

    const EMPTY: Plane<'static> = Plane {
        data: &[],
        offset: 0,
        stride: 0,
    };
}

/// A client buffer to draw: its format, size and planes, validated against each other.
/// NV12's planes may share one buffer (at different offsets) or live in two.
#[derive(Debug, Clone)]
pub struct SourceImage<'a> {
    format: PixelFormat,
    width: u32,
    height: u32,
    planes: [Plane<'a>; MAX_PLANES],
    yuv: YuvEncoding,
}

impl<'a> SourceImage<'a> {
    /// Checks that there is one plane per plane of `format` and that every row of every
    /// plane lies inside its bytes (the last row needs only its pixels, not a whole stride).
    pub fn new(
        format: PixelFormat,
        width: u32,
        height: u32,
        planes: &[Plane<'a>],
    ) -> Result<Self, RenderError> {
        let expected = format.plane_count();
        if planes.len() != expected {
            return Err(RenderError::PlaneCount {
                format,
                expected,
                given: planes.len(),
            });
        }
        let mut stored = [Plane::EMPTY; MAX_PLANES];
        for (index, (plane, slot)) in planes.iter().zip(&mut stored).enumerate() {
            let overflow = RenderError::SizeOverflow {
                plane: index,
                width,
                height,
            };
            let Some((row_bytes, rows)) = format.plane_size(index, width, height) else {
                return Err(overflow);
            };
            if plane.stride < row_bytes {
                return Err(RenderError::StrideTooSmall {
                    plane: index,
                    stride: plane.stride,
                    row_bytes,
                });
            }
            if rows > 0 && row_bytes > 0 {
                let needed = (rows - 1)
                    .checked_mul(plane.stride)
                    .and_then(|rows_before_last| rows_before_last.checked_add(row_bytes))
                    .and_then(|span| span.checked_add(plane.offset))
                    .ok_or(overflow)?;
                if needed > plane.data.len() {
                    return Err(RenderError::BufferTooShort {
                        plane: index,
                        needed,
                        available: plane.data.len(),
                    });
                }
            }
            *slot = *plane;
        }
        Ok(Self {
            format,
            width,
            height,
            planes: stored,
            yuv: YuvEncoding::default(),
        })
    }

    /// Sets how YUYV and NV12 samples map to RGB (BT.601 limited range unless set).
    pub fn with_yuv_encoding(mut self, encoding: YuvEncoding) -> Self {
        self.yuv = encoding;
        self
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// `len` bytes of row `row` of `plane`, from byte `first` of the row. Callers stay within
    /// the plane's size, which `new` checked against the buffer.
    fn row_bytes(&self, plane: usize, row: usize, first: usize, len: usize) -> &'a [u8] {
        let plane = &self.planes[plane];
        let start = plane.offset + row * plane.stride + first;
        &plane.data[start..start + len]
    }
}

impl SourceImage<'_> {
    /// Every pixel, row after row: XRGB8888 and the YUV formats opaque, ARGB8888 as stored
    /// (premultiplied), for drawing with a viewport, scale or transform.
    fn decode(&self) -> Vec<u32> {
        let (width, height) = (self.width as usize, self.height as usize);
        let yuv = YuvToRgb::new(self.yuv);
        let mut pixels = vec![OPAQUE; width * height];
        for (y, out) in pixels
            .chunks_exact_mut(width.max(1))
            .enumerate()
            .take(height)
        {
            match self.format {
                PixelFormat::Xrgb8888 => copy_xrgb_row(self.row_bytes(0, y, 0, width * 4), out),
                PixelFormat::Argb8888 => {
                    let src = self.row_bytes(0, y, 0, width * 4);
                    for (pixel, bytes) in out.iter_mut().zip(src.chunks_exact(4)) {
                        *pixel = read_pixel(bytes);
                    }
                }
                PixelFormat::Yuyv => {
                    let pairs = width.div_ceil(2);
                    let mut decoded = vec![OPAQUE; pairs * 2];
                    decode_yuyv_row(self.row_bytes(0, y, 0, pairs * 4), &yuv, &mut decoded);
                    out.copy_from_slice(&decoded[..width]);
                }
                PixelFormat::Nv12 => {
                    let luma = self.row_bytes(0, y, 0, width);
                    let chroma = self.row_bytes(1, y / 2, 0, width.div_ceil(2) * 2);
                    decode_nv12_row(luma, chroma, &yuv, out);
                }
            }
        }
        pixels
    }
}

/// How a surface's buffer lands on the canvas: where, at what size, and which part of the
/// buffer, as the surface's viewport (wp_viewporter's source crop and destination size), its
/// buffer scale and its buffer transform say (smithay's `SurfaceView`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Canvas position of the destination's top-left corner (i64: client positions added up
    /// can exceed i32).
    pub x: i64,
    pub y: i64,
    /// The destination size in canvas pixels.
    pub width: u32,
    pub height: u32,
    /// The source rectangle in surface-local logical coordinates.
    pub src: Rectangle<f64, Logical>,
    pub buffer_scale: i32,
    pub transform: Transform,
    /// The buffer's rows run bottom to top (a y-inverted dma-buf).
    pub y_inverted: bool,
}

impl Placement {
    /// The whole `width`×`height` buffer at (x, y), as it is: no viewport, scale 1, upright.
    pub fn plain(x: i64, y: i64, width: u32, height: u32) -> Self {
        Placement {
            x,
            y,
            width,
            height,
            src: Rectangle::from_size((f64::from(width), f64::from(height)).into()),
            buffer_scale: 1,
            transform: Transform::Normal,
            y_inverted: false,
        }
    }

    /// Whether a `width`×`height` buffer is shown pixel for pixel (the fast path).
    fn is_plain(&self, width: u32, height: u32) -> bool {
        *self == Placement::plain(self.x, self.y, width, height)
    }

    /// The buffer pixel shown at pixel (`dx`, `dy`) of the destination: the centre of that
    /// pixel, taken into the source rectangle, then into buffer coordinates the way smithay's
    /// renderers do (`Point::to_buffer`), nearest sample.
    fn source_pixel(&self, dx: u32, dy: u32, buffer: (u32, u32)) -> (usize, usize) {
        let scale = f64::from(self.buffer_scale.max(1));
        let logical_area: Size<f64, Logical> = self.transform.transform_size(Size::from((
            f64::from(buffer.0) / scale,
            f64::from(buffer.1) / scale,
        )));
        let point: Point<f64, Logical> = Point::from((
            self.src.loc.x + (f64::from(dx) + 0.5) * self.src.size.w / f64::from(self.width),
            self.src.loc.y + (f64::from(dy) + 0.5) * self.src.size.h / f64::from(self.height),
        ));
        let at = point.to_buffer(scale, self.transform, &logical_area);
        // `as` saturates (NaN to 0); the clamp keeps the sample inside the buffer.
        let x = (at.x.floor() as i64).clamp(0, i64::from(buffer.0) - 1) as usize;
        let mut y = (at.y.floor() as i64).clamp(0, i64::from(buffer.1) - 1) as usize;
        if self.y_inverted {
            y = buffer.1 as usize - 1 - y;
        }
        (x, y)
    }
}

/// The part of a source that lands on the canvas.
#[derive(Debug, Clone, Copy)]
struct Clip {
    dst_x: usize,
    dst_y: usize,
    src_x: usize,
    src_y: usize,
    width: usize,
    rows: usize,
}

impl Clip {
    fn new(canvas: (u32, u32), source: (u32, u32), x: i32, y: i32) -> Option<Self> {
        // (first canvas coordinate, first source coordinate, length) along one axis; i64
        // because position + length can exceed i32.
        let axis = |position: i32, length: u32, limit: u32| {
            let position = i64::from(position);
            let start = position.max(0);
            let end = (position + i64::from(length)).min(i64::from(limit));
            if start >= end {
                return None;
            }
            let to_usize = |value: i64| usize::try_from(value).ok();
            Some((
                to_usize(start)?,
                to_usize(start - position)?,
                to_usize(end - start)?,
            ))
        };
        let (dst_x, src_x, width) = axis(x, source.0, canvas.0)?;
        let (dst_y, src_y, rows) = axis(y, source.1, canvas.1)?;
        Some(Self {
            dst_x,
            dst_y,
            src_x,
            src_y,
            width,
            rows,
        })
    }
}

/// The output image: `0xAARRGGBB` pixels (u32), row-major, no padding. Opaque (`0xff` alpha),
/// but for an overlay ([`Canvas::overlay`]), transparent wherever nothing was drawn on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
}

impl Canvas {
    /// A black canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![OPAQUE; width as usize * height as usize],
        }
    }

    /// A transparent canvas, for the compositor's own drawings (labels) that a GPU backend
    /// composes over its frame: what is drawn on it is opaque, the rest stays transparent.
    pub fn overlay(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width as usize * height as usize],
        }
    }

    /// The pixels as ARGB8888 bytes (DRM's order: B, G, R, A), for a GPU to upload.
    pub fn argb8888_bytes(&self) -> Vec<u8> {
        self.pixels.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// All pixels, row after row.
    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }

    /// Fills the canvas with `color` (`0xRRGGBB`; the top byte is ignored).
    pub fn clear(&mut self, color: u32) {
        self.pixels.fill(OPAQUE | color);
    }

    /// The pixel at (x, y) as `0xffRRGGBB`, or None outside the canvas.
    pub fn pixel(&self, x: u32, y: u32) -> Option<u32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.pixels
            .get(y as usize * self.width as usize + x as usize)
            .copied()
    }

    /// Draws `source` with its top-left corner at (x, y), clipped to the canvas. ARGB8888 is
    /// composed over the canvas (premultiplied alpha); every other format replaces it.
    pub fn blit(&mut self, source: &SourceImage<'_>, x: i32, y: i32) {
        let Some(clip) = Clip::new(
            (self.width, self.height),
            (source.width, source.height),
            x,
            y,
        ) else {
            return;
        };
        let yuv = YuvToRgb::new(source.yuv);
        // YUV rows are decoded from an even column (a chroma sample's first pixel) into this
        // row buffer, then copied: one allocation per blit, none per pixel.
        let mut decoded = Vec::new();
        let chroma_start = clip.src_x & !1;
        let span = clip.src_x + clip.width - chroma_start;
        let skip = clip.src_x - chroma_start;
        let canvas_width = self.width as usize;

        for row in 0..clip.rows {
            let src_y = clip.src_y + row;
            let dst_start = (clip.dst_y + row) * canvas_width + clip.dst_x;
            let dst = &mut self.pixels[dst_start..dst_start + clip.width];
            match source.format {
                PixelFormat::Xrgb8888 => {
                    let src = source.row_bytes(0, src_y, clip.src_x * 4, clip.width * 4);
                    copy_xrgb_row(src, dst);
                }
                PixelFormat::Argb8888 => {
                    let src = source.row_bytes(0, src_y, clip.src_x * 4, clip.width * 4);
                    blend_argb_row(src, dst);
                }
                PixelFormat::Yuyv => {
                    let pairs = span.div_ceil(2);
                    let src = source.row_bytes(0, src_y, chroma_start * 2, pairs * 4);
                    decoded.resize(pairs * 2, OPAQUE);
                    decode_yuyv_row(src, &yuv, &mut decoded);
                    dst.copy_from_slice(&decoded[skip..skip + clip.width]);
                }
                PixelFormat::Nv12 => {
                    let luma = source.row_bytes(0, src_y, chroma_start, span);
                    let chroma = source.row_bytes(1, src_y / 2, chroma_start, span.div_ceil(2) * 2);
                    decoded.resize(span, OPAQUE);
                    decode_nv12_row(luma, chroma, &yuv, &mut decoded);
                    dst.copy_from_slice(&decoded[skip..skip + clip.width]);
                }
            }
        }
    }

    /// Draws `source` as `placement` says: cropped, scaled (nearest sample), transformed,
    /// clipped to the canvas. ARGB8888 is composed over the canvas, as in [`Canvas::blit`].
    pub fn draw(&mut self, source: &SourceImage<'_>, placement: &Placement) {
        if source.width == 0 || source.height == 0 {
            return;
        }
        if placement.is_plain(source.width, source.height) {
            if let (Ok(x), Ok(y)) = (i32::try_from(placement.x), i32::try_from(placement.y)) {
                return self.blit(source, x, y);
            }
        }
        let Some((columns, rows)) = self.destination_clip(placement) else {
            return;
        };
        // Every transform keeps the axes apart (a buffer coordinate follows one destination
        // coordinate), so the decoded pixel shown at the `i`th visible column of the `j`th
        // visible row is `pixels[column[i] + row[j]]`: one sample per column and one per row
        // map them all.
        let size = (source.width, source.height);
        let stride = source.width as usize;
        let swapped = matches!(
            placement.transform,
            Transform::_90 | Transform::_270 | Transform::Flipped90 | Transform::Flipped270
        );
        let along_columns = columns
            .clone()
            .map(|dx| placement.source_pixel(dx, rows.start, size));
        let along_rows = rows
            .clone()
            .map(|dy| placement.source_pixel(columns.start, dy, size));
        let (column, row): (Vec<usize>, Vec<usize>) = match swapped {
            false => (
                along_columns.map(|(x, _)| x).collect(),
                along_rows.map(|(_, y)| y * stride).collect(),
            ),
            true => (
                along_columns.map(|(_, y)| y * stride).collect(),
                along_rows.map(|(x, _)| x).collect(),
            ),
        };
        let pixels = source.decode();
        let blend = source.format == PixelFormat::Argb8888;
        self.fill_destination(
            placement,
            (columns, rows),
            blend,
            |j, out| {
                let base = row[j];
                for (pixel, &offset) in out.iter_mut().zip(&column) {
                    *pixel = pixels[base + offset];
                }
            },
            // Scaled up, neighbouring rows show the same source row.
            |j| j > 0 && row[j] == row[j - 1],
        );
    }

    /// Draws one premultiplied ARGB8888 colour over the destination (a single-pixel buffer).
    pub fn draw_solid(&mut self, argb: u32, placement: &Placement) {
        if let Some(clip) = self.destination_clip(placement) {
            let blend = argb >> 24 != 0xff;
            self.fill_destination(placement, clip, blend, |_, out| out.fill(argb), |j| j > 0);
        }
    }

    /// The destination's columns and rows (relative to its corner) that lie on the canvas.
    fn destination_clip(&self, placement: &Placement) -> Option<(Range<u32>, Range<u32>)> {
        let axis = |position: i64, length: u32, limit: u32| {
            let start = position.max(0);
            let end = position
                .saturating_add(i64::from(length))
                .min(i64::from(limit));
            // Both ends lie in 0..=length, so they fit in a u32.
            (start < end).then(|| (start - position) as u32..(end - position) as u32)
        };
        Some((
            axis(placement.x, placement.width, self.width)?,
            axis(placement.y, placement.height, self.height)?,
        ))
    }

    /// Writes the clipped destination row by row: `sample(j, out)` gives the source pixels of
    /// its `j`th visible row, which replace the canvas's or, when `blend`, are composed over
    /// it. A row that `repeats` the one above (the same source row) is sampled once: opaque, it
    /// is copied on the canvas; blended, its samples are reused. Row at a time because under
    /// emulation (the VM tests) a call per pixel made a 640×480 frame cost 30 ms.
    fn fill_destination(
        &mut self,
        placement: &Placement,
        (columns, rows): (Range<u32>, Range<u32>),
        blend: bool,
        sample: impl Fn(usize, &mut [u32]),
        repeats: impl Fn(usize) -> bool,
    ) {
        let canvas_width = self.width as usize;
        // The clip keeps x + column and y + row on the canvas.
        let left = (placement.x + i64::from(columns.start)) as usize;
        let top = (placement.y + i64::from(rows.start)) as usize;
        let width = columns.len();
        let mut samples = vec![0; if blend { width } else { 0 }];
        for j in 0..rows.len() {
            let start = (top + j) * canvas_width + left;
            let repeated = repeats(j);
            if !blend {
                if repeated {
                    let above = start - canvas_width;
                    self.pixels.copy_within(above..above + width, start);
                } else {
                    let out = &mut self.pixels[start..start + width];
                    sample(j, out);
                    out.iter_mut().for_each(|pixel| *pixel |= OPAQUE);
                }
                continue;
            }
            if !repeated {
                sample(j, &mut samples);
            }
            for (pixel, &source) in self.pixels[start..start + width].iter_mut().zip(&samples) {
                *pixel = match source >> 24 {
                    0xff => source,
                    0 if source == 0 => *pixel,
                    _ => over_premultiplied(source, *pixel),
                };
            }
        }
    }

    /// The part of the canvas inside the rectangle at (x, y) of `width`×`height`, clipped to
    /// the canvas (a capture of an output region).
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Canvas {
        let x = x.min(self.width);
        let y = y.min(self.height);
        let width = width.min(self.width - x);
        let height = height.min(self.height - y);
        let mut pixels = Vec::with_capacity(width as usize * height as usize);
        for row in self.rows().skip(y as usize).take(height as usize) {
            pixels.extend_from_slice(&row[x as usize..(x + width) as usize]);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// A canvas from tightly packed RGBA bytes (GL's `GL_RGBA`/`GL_UNSIGNED_BYTE`, DRM's
    /// ABGR8888), as a GPU read-back gives them. The image is opaque: alpha is dropped.
    pub fn from_rgba(width: u32, height: u32, bytes: &[u8]) -> Result<Canvas, RenderError> {
        let needed = (width as usize)
            .checked_mul(height as usize)
            .and_then(|pixels| pixels.checked_mul(4))
            .ok_or(RenderError::SizeOverflow {
                plane: 0,
                width,
                height,
            })?;
        if bytes.len() < needed {
            return Err(RenderError::BufferTooShort {
                plane: 0,
                needed,
                available: bytes.len(),
            });
        }
        let pixels = bytes[..needed]
            .chunks_exact(4)
            .map(|p| OPAQUE | u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
            .collect();
        Ok(Canvas {
            width,
            height,
            pixels,
        })
    }

    /// Fills the rectangle at (x, y) of `width`×`height`, clipped to the canvas, with `color`
    /// (`0xRRGGBB`): the compositor's own drawings (labels, marks) over the frame.
    pub fn fill_rect(&mut self, x: i32, y: i32, width: u32, height: u32, color: u32) {
        let clip = |start: i32, len: u32, max: u32| {
            let end = i64::from(start) + i64::from(len);
            let start = i64::from(start).clamp(0, i64::from(max)) as usize;
            (start, (end.clamp(0, i64::from(max)) as usize).max(start))
        };
        let (x0, x1) = clip(x, width, self.width);
        let (y0, y1) = clip(y, height, self.height);
        let stride = self.width as usize;
        for row in y0..y1 {
            self.pixels[row * stride + x0..row * stride + x1].fill(OPAQUE | color);
        }
    }

    /// Turns the rectangle at (x, y) of `width`×`height` (clipped) upside down: how a
    /// y-inverted client buffer is shown after an upright blit.
    pub fn flip_vertically(&mut self, x: u32, y: u32, width: u32, height: u32) {
        let x = x.min(self.width) as usize;
        let y = y.min(self.height) as usize;
        let width = (width as usize).min(self.width as usize - x);
        let height = (height as usize).min(self.height as usize - y);
        let stride = self.width as usize;
        for row in 0..height / 2 {
            let (top, bottom) = (y + row, y + height - 1 - row);
            let (upper, lower) = self.pixels.split_at_mut(bottom * stride);
            upper[top * stride + x..top * stride + x + width]
                .swap_with_slice(&mut lower[x..x + width]);
        }
    }

    /// Copies the canvas into an XRGB8888 (or ARGB8888: alpha is 0xff) buffer with the given
    /// stride, as a screen capture needs.
    pub fn write_xrgb8888(&self, dst: &mut [u8], stride: usize) -> Result<(), RenderError> {
        let row_bytes = self.width as usize * 4;
        let too_short = |needed| RenderError::DestinationTooShort {
            width: self.width,
            height: self.height,
            stride,
            needed,
            available: dst.len(),
        };
        if self.pixels.is_empty() {
            return Ok(());
        }
        if stride < row_bytes {
            return Err(too_short(row_bytes));
        }
        let needed = (self.height as usize - 1)
            .checked_mul(stride)
            .and_then(|before_last| before_last.checked_add(row_bytes))
            .unwrap_or(usize::MAX);
        if needed > dst.len() {
            return Err(too_short(needed));
        }
        for (src_row, dst_row) in self.rows().zip(dst.chunks_mut(stride)) {
            for (pixel, bytes) in src_row.iter().zip(dst_row.chunks_exact_mut(4)) {
                bytes.copy_from_slice(&pixel.to_le_bytes());
            }
        }
        Ok(())
    }

    fn rows(&self) -> impl Iterator<Item = &[u32]> {
        // max(1): chunks_exact panics on 0; a zero-width canvas has no pixels anyway.
        self.pixels.chunks_exact((self.width as usize).max(1))
    }
}

/// Reads one little-endian 32-bit pixel.
#[inline]
fn read_pixel(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn copy_xrgb_row(src: &[u8], dst: &mut [u32]) {
    for (pixel, bytes) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *pixel = OPAQUE | read_pixel(bytes);
    }
}

fn blend_argb_row(src: &[u8], dst: &mut [u32]) {
    for (pixel, bytes) in dst.iter_mut().zip(src.chunks_exact(4)) {
        let source = read_pixel(bytes);
        match source >> 24 {
            0xff => *pixel = source,
            // Fully transparent black leaves the canvas as it is. A zero alpha with colour is
            // additive in premultiplied terms, so it takes the general path.
            0 if source == 0 => {}
            _ => *pixel = over_premultiplied(source, *pixel),
        }
    }
}

/// Porter-Duff OVER with premultiplied alpha, per channel:
/// `out = src + dst × (255 − src_alpha) / 255`, rounded, saturating at 255 (which only a
/// malformed source, with a channel above its alpha, reaches). Two channels are computed
/// per multiplication, in the 16-bit lanes of a u32.
#[inline]
fn over_premultiplied(src: u32, dst: u32) -> u32 {
    let inverse_alpha = 255 - (src >> 24);
    let rb = add_saturating(src & TWO_CHANNELS, scale(dst & TWO_CHANNELS, inverse_alpha));
    // The alpha lane that comes along with green is dropped: the canvas is opaque.
    let ag = add_saturating(
        (src >> 8) & TWO_CHANNELS,
        scale((dst >> 8) & TWO_CHANNELS, inverse_alpha),
    );
    OPAQUE | rb | (ag & 0xff) << 8
}

/// `round(lane × factor / 255)` for both lanes: the exact division by 255 from
/// `(t + (t >> 8)) >> 8` with `t = v + 128`, valid for `v ≤ 255 × 255`.
#[inline]
fn scale(lanes: u32, factor: u32) -> u32 {
    let t = lanes * factor + 0x0080_0080;
    ((t + ((t >> 8) & TWO_CHANNELS)) >> 8) & TWO_CHANNELS
}

/// Adds two pairs of 8-bit lanes, clamping each lane at 255. A lane's sum is at most 510,
/// so its overflow stays in its own bit 8 and turns into an 0xff mask.
#[inline]
fn add_saturating(a: u32, b: u32) -> u32 {
    let sum = a + b;
    let overflow = sum & 0x0100_0100;
    (sum | (overflow - (overflow >> 8))) & TWO_CHANNELS
}

/// Decodes whole Y0 Cb Y1 Cr groups into two pixels each.
fn decode_yuyv_row(src: &[u8], yuv: &YuvToRgb, out: &mut [u32]) {
    for (group, pair) in src.chunks_exact(4).zip(out.chunks_exact_mut(2)) {
        let chroma = yuv.chroma(group[1], group[3]);
        pair[0] = yuv.pixel(group[0], chroma);
        pair[1] = yuv.pixel(group[2], chroma);
    }
}

/// Decodes a luma row with the chroma row of its pair of rows. Chroma is not interpolated:
/// each Cb, Cr sample colours its 2×2 pixels (an odd last column has just one).
fn decode_nv12_row(luma: &[u8], chroma: &[u8], yuv: &YuvToRgb, out: &mut [u32]) {
    // Whole pairs through exact chunks (the fast loop), then an odd last column.
    let mut luma_pairs = luma.chunks_exact(2);
    let mut pixel_pairs = out.chunks_exact_mut(2);
    let mut samples = chroma.chunks_exact(2);
    for ((luma_pair, pixel_pair), sample) in
        (&mut luma_pairs).zip(&mut pixel_pairs).zip(&mut samples)
    {
        let chroma = yuv.chroma(sample[0], sample[1]);
        pixel_pair[0] = yuv.pixel(luma_pair[0], chroma);
        pixel_pair[1] = yuv.pixel(luma_pair[1], chroma);
    }
    if let ([last_luma], [last_pixel], Some(sample)) = (
        luma_pairs.remainder(),
        pixel_pairs.into_remainder(),
        samples.next(),
    ) {
        *last_pixel = yuv.pixel(*last_luma, yuv.chroma(sample[0], sample[1]));
    }
}

/// The number of pixels that differ between two canvases; where their sizes differ, pixels
/// that only one of them has count as different.
pub fn diff(a: &Canvas, b: &Canvas) -> usize {
    let common_width = a.width.min(b.width) as usize;
    let mut differing = 0;
    let mut common_pixels = 0;
    for (row_a, row_b) in a.rows().zip(b.rows()) {
        let (row_a, row_b) = (&row_a[..common_width], &row_b[..common_width]);
        differing += row_a.iter().zip(row_b).filter(|(p, q)| p != q).count();
        common_pixels += common_width;
    }
    differing + (a.pixels.len() - common_pixels) + (b.pixels.len() - common_pixels)
}

/// Writes the canvas as an 8-bit RGB PNG. Fast compression: screenshots are taken while
/// the compositor runs, under qemu TCG too.
pub fn write_png(canvas: &Canvas, path: impl AsRef<Path>) -> Result<(), RenderError> {
    let path = path.as_ref();
    let png_error = |source| RenderError::Png {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(|source| RenderError::Create {
        path: path.to_owned(),
        source,
    })?;
    let mut rgb = Vec::with_capacity(canvas.pixels.len() * 3);
    for pixel in &canvas.pixels {
        let [blue, green, red, _] = pixel.to_le_bytes();
        rgb.extend_from_slice(&[red, green, blue]);
    }
    let mut encoder = png::Encoder::new(BufWriter::new(file), canvas.width, canvas.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&rgb).map_err(png_error)?;
    writer.finish().map_err(png_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- helpers -------------------------------------------------------------------------

    fn xrgb_bytes(pixels: &[u32]) -> Vec<u8> {
        pixels
            .iter()
            .flat_map(|pixel| pixel.to_le_bytes())
            .collect()
    }

    fn single_plane<'a>(
        format: PixelFormat,
        width: u32,
        height: u32,
        data: &'a [u8],
        stride: usize,
    ) -> SourceImage<'a> {
        SourceImage::new(format, width, height, &[Plane::new(data, 0, stride)]).unwrap()
    }

    fn rgb(pixel: u32) -> [i32; 3] {
        let [blue, green, red, _] = pixel.to_le_bytes();
        [red.into(), green.into(), blue.into()]
    }

    fn assert_close(got: u32, expected: [i32; 3], tolerance: i32, what: &str) {
        let got = rgb(got);
        let close = got
            .iter()
            .zip(expected)
            .all(|(g, e)| (g - e).abs() <= tolerance);
        assert!(
            close,
            "{what}: got {got:?}, expected {expected:?} ±{tolerance}"
        );
    }

    /// Decodes one Y'CbCr sample through a real 2×1 YUYV blit.
    fn decode_one(y: u8, cb: u8, cr: u8, encoding: YuvEncoding) -> u32 {
        let data = [y, cb, y, cr];
        let source = single_plane(PixelFormat::Yuyv, 2, 1, &data, 4).with_yuv_encoding(encoding);
        let mut canvas = Canvas::new(2, 1);
        canvas.blit(&source, 0, 0);
        assert_eq!(canvas.pixel(0, 0), canvas.pixel(1, 0));
        canvas.pixel(0, 0).unwrap()
    }

    const BT601_LIMITED: YuvEncoding = YuvEncoding {
        matrix: YuvMatrix::Bt601,
        range: YuvRange::Limited,
    };
    const BT709_LIMITED: YuvEncoding = YuvEncoding {
        matrix: YuvMatrix::Bt709,
        range: YuvRange::Limited,
    };
    const ALL_ENCODINGS: [YuvEncoding; 4] = [
        BT601_LIMITED,
        BT709_LIMITED,
        YuvEncoding {
            matrix: YuvMatrix::Bt601,
            range: YuvRange::Full,
        },
        YuvEncoding {
            matrix: YuvMatrix::Bt709,
            range: YuvRange::Full,
        },
    ];

    /// The Y'CbCr → R'G'B' definition in floating point, independent of the fixed-point code.
    fn reference_yuv(y: u8, cb: u8, cr: u8, encoding: YuvEncoding) -> [i32; 3] {
        let (kr, kb) = match encoding.matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (luma, pb, pr) = match encoding.range {
            YuvRange::Limited => (
                (f64::from(y) - 16.0) / 219.0,
                (f64::from(cb) - 128.0) / 224.0,
                (f64::from(cr) - 128.0) / 224.0,
            ),
            YuvRange::Full => (
                f64::from(y) / 255.0,
                (f64::from(cb) - 128.0) / 255.0,
                (f64::from(cr) - 128.0) / 255.0,
            ),
        };
        let red = luma + 2.0 * (1.0 - kr) * pr;
        let blue = luma + 2.0 * (1.0 - kb) * pb;
        let green = (luma - kr * red - kb * blue) / kg;
        [red, green, blue].map(|value| (value * 255.0).round().clamp(0.0, 255.0) as i32)
    }

    // ---- formats -------------------------------------------------------------------------

    #[test]
    fn fourccs_are_the_drm_codes() {
        assert_eq!(PixelFormat::XRGB8888_FOURCC, 0x3432_5258);
        assert_eq!(PixelFormat::ARGB8888_FOURCC, 0x3432_5241);
        assert_eq!(PixelFormat::YUYV_FOURCC, 0x5659_5559);
        assert_eq!(PixelFormat::NV12_FOURCC, 0x3231_564e);
        for format in [
            PixelFormat::Xrgb8888,
            PixelFormat::Argb8888,
            PixelFormat::Yuyv,
            PixelFormat::Nv12,
        ] {
            assert_eq!(PixelFormat::from_fourcc(format.fourcc()), Some(format));
            assert_eq!(PixelFormat::from_wl_shm(format.fourcc()), Some(format));
        }
        assert_eq!(PixelFormat::from_fourcc(fourcc(b"NV21")), None);
        assert_eq!(PixelFormat::from_fourcc(0), None);
        assert_eq!(PixelFormat::from_wl_shm(0), Some(PixelFormat::Argb8888));
        assert_eq!(PixelFormat::from_wl_shm(1), Some(PixelFormat::Xrgb8888));
    }

    // ---- YUV conversion ------------------------------------------------------------------

    #[test]
    fn coefficients_are_the_documented_ones() {
        // 16.16 fixed point: 76309 / 65536 = 1.16438, 104597 / 65536 = 1.59603, ...
        let bt601 = YuvToRgb::new(BT601_LIMITED);
        assert_eq!(
            [
                bt601.luma_gain,
                bt601.r_from_cr,
                bt601.g_from_cb,
                bt601.g_from_cr,
                bt601.b_from_cb
            ],
            [76309, 104597, -25675, -53279, 132201]
        );
        let bt709 = YuvToRgb::new(BT709_LIMITED);
        assert_eq!(
            [
                bt709.luma_gain,
                bt709.r_from_cr,
                bt709.g_from_cb,
                bt709.g_from_cr,
                bt709.b_from_cb
            ],
            [76309, 117489, -13975, -34925, 138438]
        );
        assert_eq!(YuvEncoding::default(), BT601_LIMITED);
    }

    #[test]
    fn limited_range_black_and_white() {
        for encoding in [BT601_LIMITED, BT709_LIMITED] {
            assert_eq!(decode_one(16, 128, 128, encoding), 0xff00_0000);
            assert_eq!(decode_one(235, 128, 128, encoding), 0xffff_ffff);
            // Footroom and headroom clip rather than wrap.
            assert_eq!(decode_one(0, 128, 128, encoding), 0xff00_0000);
            assert_eq!(decode_one(255, 128, 128, encoding), 0xffff_ffff);
        }
        // Out-of-gamut samples clamp per channel: black with the most Cb and Cr has a
        // negative green, white with the least has a green above 255.
        assert_close(
            decode_one(16, 240, 240, BT601_LIMITED),
            [179, 0, 226],
            1,
            "clamp low",
        );
        assert_close(
            decode_one(235, 16, 16, BT601_LIMITED),
            [76, 255, 29],
            1,
            "clamp high",
        );
        let full = YuvEncoding {
            range: YuvRange::Full,
            ..BT601_LIMITED
        };
        assert_eq!(decode_one(0, 128, 128, full), 0xff00_0000);
        assert_eq!(decode_one(255, 128, 128, full), 0xffff_ffff);
        assert_eq!(decode_one(128, 128, 128, full), 0xff80_8080);
    }

    /// ITU-R 75% colour bars (R'G'B' 191 or 0), encoded exactly (rounded) in limited range.
    const BAR_RGB: [[i32; 3]; 7] = [
        [191, 191, 191], // white
        [191, 191, 0],   // yellow
        [0, 191, 191],   // cyan
        [0, 191, 0],     // green
        [191, 0, 191],   // magenta
        [191, 0, 0],     // red
        [0, 0, 191],     // blue
    ];
    const BT601_BARS: [[u8; 3]; 7] = [
        [180, 128, 128],
        [162, 44, 142],
        [131, 156, 44],
        [112, 72, 58],
        [84, 184, 198],
        [65, 100, 212],
        [35, 212, 114],
    ];
    const BT709_BARS: [[u8; 3]; 7] = [
        [180, 128, 128],
        [168, 44, 136],
        [145, 147, 44],
        [133, 63, 52],
        [63, 193, 204],
        [51, 109, 212],
        [28, 212, 120],
    ];

    /// The bars as one YUYV row, two pixels per bar.
    fn yuyv_bars(bars: &[[u8; 3]]) -> Vec<u8> {
        bars.iter()
            .flat_map(|&[y, cb, cr]| [y, cb, y, cr])
            .collect()
    }

    #[test]
    fn bt601_75_percent_bars() {
        let data = yuyv_bars(&BT601_BARS);
        let source = single_plane(PixelFormat::Yuyv, 14, 1, &data, data.len());
        let mut canvas = Canvas::new(14, 1);
        canvas.blit(&source, 0, 0);
        for (bar, expected) in BAR_RGB.iter().enumerate() {
            for x in [2 * bar, 2 * bar + 1] {
                assert_close(
                    canvas.pixel(x as u32, 0).unwrap(),
                    *expected,
                    1,
                    "BT.601 bar",
                );
            }
        }
        // 100% red and the limited-range white point.
        assert_close(
            decode_one(81, 90, 240, BT601_LIMITED),
            [255, 0, 0],
            1,
            "red",
        );
    }

    #[test]
    fn bt709_75_percent_bars() {
        let data = yuyv_bars(&BT709_BARS);
        let source = single_plane(PixelFormat::Yuyv, 14, 1, &data, data.len())
            .with_yuv_encoding(BT709_LIMITED);
        let mut canvas = Canvas::new(14, 1);
        canvas.blit(&source, 0, 0);
        for (bar, expected) in BAR_RGB.iter().enumerate() {
            assert_close(
                canvas.pixel(2 * bar as u32, 0).unwrap(),
                *expected,
                1,
                "BT.709 bar",
            );
        }
        // The same bytes read as BT.601 are visibly off: the matrix matters.
        let wrong = decode_one(
            BT709_BARS[1][0],
            BT709_BARS[1][1],
            BT709_BARS[1][2],
            BT601_LIMITED,
        );
        let error = rgb(wrong)
            .iter()
            .zip(BAR_RGB[1])
            .map(|(got, exact)| (got - exact).abs())
            .max();
        assert!(error > Some(10), "{:?}", rgb(wrong));
    }

    /// vivid's test pattern generator (v4l2-tpg-core.c) encodes its 75% bars with truncating
    /// 12-bit arithmetic, so its bytes sit one code below the exact ones (75% white is Y 179,
    /// 100% white Y 234) and decode to about 188–190 rather than 191. These are the bytes it
    /// writes for the default pattern (BT.601, limited range) and what they decode to.
    #[test]
    fn vivid_bars_decode_to_their_exact_values() {
        let vivid: [([u8; 3], [i32; 3]); 7] = [
            ([179, 128, 128], [190, 190, 190]),
            ([160, 44, 141], [188, 190, 0]),
            ([130, 156, 44], [0, 190, 189]),
            ([111, 72, 58], [0, 189, 0]),
            ([83, 183, 197], [188, 0, 189]),
            ([64, 99, 211], [188, 0, 0]),
            ([34, 211, 114], [0, 0, 188]),
        ];
        for ([y, cb, cr], expected) in vivid {
            assert_close(
                decode_one(y, cb, cr, BT601_LIMITED),
                expected,
                1,
                "vivid bar",
            );
        }
    }

    #[test]
    fn fixed_point_matches_the_definition() {
        for encoding in ALL_ENCODINGS {
            let yuv = YuvToRgb::new(encoding);
            for y in (0..=255u8).step_by(3) {
                for cb in (0..=255u8).step_by(5) {
                    for cr in (0..=255u8).step_by(5) {
                        let got = yuv.pixel(y, yuv.chroma(cb, cr));
                        let expected = reference_yuv(y, cb, cr, encoding);
                        assert_close(got, expected, 1, &format!("{encoding:?} {y} {cb} {cr}"));
                    }
                }
            }
        }
    }

    // ---- YUV layouts ---------------------------------------------------------------------

    /// Grey levels are easy to check position by position: with Cb = Cr = 128, a full-range
    /// Y is its own R, G and B.
    const GREY_FULL: YuvEncoding = YuvEncoding {
        matrix: YuvMatrix::Bt601,
        range: YuvRange::Full,
    };

    fn grey(level: u8) -> u32 {
        OPAQUE | u32::from_le_bytes([level, level, level, 0])
    }

    #[test]
    fn yuyv_pixel_order_and_odd_width() {
        // 3×2: three pixels need two Y0 Cb Y1 Cr groups; the last Y1 is padding. Stride 12
        // leaves 4 spare bytes per row.
        let data = [
            10, 128, 20, 128, 30, 128, 99, 128, 0, 0, 0, 0, //
            40, 128, 50, 128, 60, 128, 99, 128,
        ];
        let source = single_plane(PixelFormat::Yuyv, 3, 2, &data, 12).with_yuv_encoding(GREY_FULL);
        let mut canvas = Canvas::new(4, 3);
        canvas.blit(&source, 1, 1);
        assert_eq!(canvas.pixel(0, 1), Some(OPAQUE));
        assert_eq!(canvas.pixel(1, 1), Some(grey(10)));
        assert_eq!(canvas.pixel(2, 1), Some(grey(20)));
        assert_eq!(canvas.pixel(3, 1), Some(grey(30)));
        assert_eq!(canvas.pixel(3, 2), Some(grey(60)));
        assert_eq!(canvas.pixel(1, 0), Some(OPAQUE));

        // Clipped to start at an odd source column: the chroma of its pair is still used.
        let coloured = [81, 90, 82, 240, 41, 240, 42, 110];
        let source = single_plane(PixelFormat::Yuyv, 4, 1, &coloured, 8);
        let mut canvas = Canvas::new(3, 1);
        canvas.blit(&source, -1, 0);
        assert_eq!(
            canvas.pixel(0, 0),
            Some(decode_one(82, 90, 240, BT601_LIMITED))
        );
        assert_eq!(
            canvas.pixel(1, 0),
            Some(decode_one(41, 240, 110, BT601_LIMITED))
        );
        assert_eq!(
            canvas.pixel(2, 0),
            Some(decode_one(42, 240, 110, BT601_LIMITED))
        );
    }

    /// A 5×3 NV12 image: Y at (x, y) is 10·y + x + 1, and the chroma sample of block (bx, by)
    /// is (100 + 10·by + bx, 200 + 10·by + bx), so every pixel says where it came from.
    fn nv12_test_planes() -> (Vec<u8>, Vec<u8>) {
        let luma_stride = 8;
        let mut luma = vec![0xee; luma_stride * 3];
        for y in 0..3 {
            for x in 0..5 {
                luma[y * luma_stride + x] = (10 * y + x + 1) as u8;
            }
        }
        let chroma_stride = 6; // three Cb, Cr pairs per row: odd width rounds up
        let mut chroma = vec![0xee; chroma_stride * 2];
        for by in 0..2 {
            for bx in 0..3 {
                chroma[by * chroma_stride + 2 * bx] = (100 + 10 * by + bx) as u8;
                chroma[by * chroma_stride + 2 * bx + 1] = (200 + 10 * by + bx) as u8;
            }
        }
        (luma, chroma)
    }

    fn expected_nv12(x: usize, y: usize) -> u32 {
        let (bx, by) = (x / 2, y / 2);
        decode_one(
            (10 * y + x + 1) as u8,
            (100 + 10 * by + bx) as u8,
            (200 + 10 * by + bx) as u8,
            BT601_LIMITED,
        )
    }

    #[test]
    fn nv12_in_two_buffers_and_in_one() {
        let (luma, chroma) = nv12_test_planes();
        let two_buffers = SourceImage::new(
            PixelFormat::Nv12,
            5,
            3,
            &[Plane::new(&luma, 0, 8), Plane::new(&chroma, 0, 6)],
        )
        .unwrap();

        // One buffer: a header, the luma plane, a gap, then the chroma plane.
        let mut one = vec![0x55; 16];
        one.extend_from_slice(&luma);
        let chroma_offset = one.len() + 4;
        one.extend_from_slice(&[0x55; 4]);
        one.extend_from_slice(&chroma);
        let one_buffer = SourceImage::new(
            PixelFormat::Nv12,
            5,
            3,
            &[Plane::new(&one, 16, 8), Plane::new(&one, chroma_offset, 6)],
        )
        .unwrap();

        for source in [&two_buffers, &one_buffer] {
            let size = (source.format(), source.width(), source.height());
            assert_eq!(size, (PixelFormat::Nv12, 5, 3));
        }
        let mut from_two = Canvas::new(5, 3);
        from_two.blit(&two_buffers, 0, 0);
        let mut from_one = Canvas::new(5, 3);
        from_one.blit(&one_buffer, 0, 0);
        assert_eq!(diff(&from_two, &from_one), 0);
        for y in 0..3 {
            for x in 0..5 {
                assert_eq!(
                    from_two.pixel(x as u32, y as u32),
                    Some(expected_nv12(x, y)),
                    "({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn nv12_clipped_on_every_side() {
        let (luma, chroma) = nv12_test_planes();
        let source = SourceImage::new(
            PixelFormat::Nv12,
            5,
            3,
            &[Plane::new(&luma, 0, 8), Plane::new(&chroma, 0, 6)],
        )
        .unwrap();
        // At (-1, -1) on a 3×1 canvas: source columns 1..4, row 1 only.
        let mut canvas = Canvas::new(3, 1);
        canvas.blit(&source, -1, -1);
        for x in 0..3 {
            assert_eq!(canvas.pixel(x, 0), Some(expected_nv12(x as usize + 1, 1)));
        }
        // The odd last row and column, alone.
        let mut canvas = Canvas::new(2, 2);
        canvas.blit(&source, -4, -2);
        assert_eq!(canvas.pixel(0, 0), Some(expected_nv12(4, 2)));
        assert_eq!(canvas.pixel(1, 0), Some(OPAQUE));
        assert_eq!(canvas.pixel(0, 1), Some(OPAQUE));
    }

    #[test]
    fn yuv_odd_sizes_with_exact_buffers_do_not_panic() {
        for (width, height) in [(1, 1), (1, 7), (7, 1), (3, 5), (33, 17)] {
            let yuyv = vec![128; (width as usize).div_ceil(2) * 4 * height as usize];
            let stride = (width as usize).div_ceil(2) * 4;
            let source = single_plane(PixelFormat::Yuyv, width, height, &yuyv, stride);
            let luma = vec![128; width as usize * height as usize];
            let chroma_stride = (width as usize).div_ceil(2) * 2;
            let chroma = vec![128; chroma_stride * (height as usize).div_ceil(2)];
            let nv12 = SourceImage::new(
                PixelFormat::Nv12,
                width,
                height,
                &[
                    Plane::new(&luma, 0, width as usize),
                    Plane::new(&chroma, 0, chroma_stride),
                ],
            )
            .unwrap();
            for (x, y) in [(0, 0), (-1, -1), (1, 1), (-(width as i32) + 1, 3)] {
                let mut canvas = Canvas::new(8, 6);
                canvas.blit(&source, x, y);
                canvas.blit(&nv12, x, y);
            }
        }
    }

    // ---- validation ----------------------------------------------------------------------

    #[test]
    fn short_buffers_are_errors() {
        let data = vec![0u8; 64];
        let err = |format, width, height, planes: &[Plane<'_>]| {
            SourceImage::new(format, width, height, planes).unwrap_err()
        };
        // Exactly enough: the last row needs its pixels only, not a whole stride.
        assert!(SourceImage::new(
            PixelFormat::Xrgb8888,
            2,
            2,
            &[Plane::new(&data[..24], 0, 16)]
        )
        .is_ok());
        assert!(matches!(
            err(
                PixelFormat::Xrgb8888,
                2,
                2,
                &[Plane::new(&data[..23], 0, 16)]
            ),
            RenderError::BufferTooShort {
                plane: 0,
                needed: 24,
                available: 23
            }
        ));
        assert!(matches!(
            err(PixelFormat::Argb8888, 4, 4, &[Plane::new(&data, 1, 16)]),
            RenderError::BufferTooShort {
                plane: 0,
                needed: 65,
                available: 64
            }
        ));
        assert!(matches!(
            err(PixelFormat::Xrgb8888, 1, 1, &[Plane::new(&data, 1000, 4)]),
            RenderError::BufferTooShort { .. }
        ));
        assert!(matches!(
            err(PixelFormat::Yuyv, 3, 1, &[Plane::new(&data, 0, 6)]),
            RenderError::StrideTooSmall {
                plane: 0,
                stride: 6,
                row_bytes: 8
            }
        ));
        assert!(matches!(
            err(PixelFormat::Yuyv, 16, 3, &[Plane::new(&data, 0, 32)]),
            RenderError::BufferTooShort {
                plane: 0,
                needed: 96,
                ..
            }
        ));
        // NV12: a missing plane, and a chroma plane one row short (3 rows of luma → 2 of
        // chroma).
        assert!(matches!(
            err(PixelFormat::Nv12, 4, 4, &[Plane::new(&data, 0, 4)]),
            RenderError::PlaneCount {
                expected: 2,
                given: 1,
                ..
            }
        ));
        assert!(matches!(
            err(
                PixelFormat::Nv12,
                4,
                3,
                &[Plane::new(&data, 0, 4), Plane::new(&data[..4], 0, 4)]
            ),
            RenderError::BufferTooShort {
                plane: 1,
                needed: 8,
                available: 4
            }
        ));
        assert!(matches!(
            err(
                PixelFormat::Xrgb8888,
                1,
                1,
                &[Plane::new(&data, 0, 4), Plane::new(&data, 0, 4)]
            ),
            RenderError::PlaneCount {
                expected: 1,
                given: 2,
                ..
            }
        ));
        // Sizes that overflow are errors, not panics or wrapped arithmetic.
        assert!(matches!(
            err(
                PixelFormat::Xrgb8888,
                2,
                3,
                &[Plane::new(&data, 0, usize::MAX)]
            ),
            RenderError::SizeOverflow { plane: 0, .. }
        ));
        assert!(matches!(
            err(
                PixelFormat::Xrgb8888,
                1,
                1,
                &[Plane::new(&data, usize::MAX, 4)]
            ),
            RenderError::SizeOverflow { .. }
        ));
        assert!(matches!(
            err(
                PixelFormat::Argb8888,
                u32::MAX,
                u32::MAX,
                &[Plane::new(&data, 0, 64)]
            ),
            RenderError::StrideTooSmall { .. } | RenderError::SizeOverflow { .. }
        ));
        // The message says what is wrong.
        let message = err(
            PixelFormat::Xrgb8888,
            2,
            2,
            &[Plane::new(&data[..23], 0, 16)],
        )
        .to_string();
        assert_eq!(
            message,
            "plane 0: needs 24 bytes (offset, stride × rows), the buffer has 23"
        );
    }

    /// Every truncation of an exactly sized buffer is refused, and the exact size is drawn
    /// without panicking, for odd sizes and planes sharing one buffer.
    #[test]
    fn every_truncated_buffer_is_refused() {
        for (width, height) in [(1, 1), (3, 3), (5, 2), (4, 5)] {
            let (w, h) = (width as usize, height as usize);
            let chroma_stride = w.div_ceil(2) * 2;
            // NV12 in one buffer: luma rows of w + 1 bytes, then chroma from offset.
            let chroma_offset = (w + 1) * h;
            let layouts = [
                (
                    PixelFormat::Xrgb8888,
                    vec![(0, w * 4 + 4)],
                    (h - 1) * (w * 4 + 4) + w * 4,
                ),
                (PixelFormat::Argb8888, vec![(0, w * 4)], h * w * 4),
                (
                    PixelFormat::Yuyv,
                    vec![(0, w.div_ceil(2) * 4)],
                    h * w.div_ceil(2) * 4,
                ),
                (
                    PixelFormat::Nv12,
                    vec![(0, w + 1), (chroma_offset, chroma_stride)],
                    chroma_offset + h.div_ceil(2) * chroma_stride,
                ),
            ];
            for (format, planes, exact) in layouts {
                let data = vec![0x80; exact];
                for len in 0..=exact {
                    let planes: Vec<Plane<'_>> = planes
                        .iter()
                        .map(|&(offset, stride)| Plane::new(&data[..len], offset, stride))
                        .collect();
                    match SourceImage::new(format, width, height, &planes) {
                        Ok(source) => {
                            assert_eq!(len, exact, "{format:?} {width}x{height}");
                            for (x, y) in [(0, 0), (-1, -1), (1, 0), (0, 1), (-3, 2)] {
                                Canvas::new(6, 6).blit(&source, x, y);
                            }
                        }
                        Err(error) => {
                            assert!(len < exact, "{format:?} {width}x{height}: {error}");
                            assert!(matches!(error, RenderError::BufferTooShort { .. }));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_sources_and_canvases_draw_nothing() {
        let source = single_plane(PixelFormat::Xrgb8888, 0, 5, &[], 0);
        let mut canvas = Canvas::new(4, 4);
        canvas.blit(&source, 0, 0);
        assert_eq!(diff(&canvas, &Canvas::new(4, 4)), 0);
        let data = xrgb_bytes(&[0x123456]);
        let mut empty = Canvas::new(0, 0);
        empty.blit(&single_plane(PixelFormat::Xrgb8888, 1, 1, &data, 4), 0, 0);
        empty.write_xrgb8888(&mut [], 0).unwrap();
        assert_eq!(empty.pixel(0, 0), None);
    }

    // ---- RGB formats and composition -----------------------------------------------------

    #[test]
    fn xrgb_is_opaque_whatever_its_x_byte() {
        let data = xrgb_bytes(&[0x0011_2233, 0x7f44_5566, 0xff77_8899]);
        let source = single_plane(PixelFormat::Xrgb8888, 3, 1, &data, 12);
        let mut canvas = Canvas::new(3, 1);
        canvas.clear(0xffffff);
        canvas.blit(&source, 0, 0);
        assert_eq!(canvas.pixels(), &[0xff11_2233, 0xff44_5566, 0xff77_8899]);
        // In memory: B, G, R, X.
        let bytes = [0x33, 0x22, 0x11, 0x00];
        let mut canvas = Canvas::new(1, 1);
        canvas.blit(&single_plane(PixelFormat::Xrgb8888, 1, 1, &bytes, 4), 0, 0);
        assert_eq!(canvas.pixel(0, 0), Some(0xff11_2233));
    }

    #[test]
    fn argb_is_composed_with_premultiplied_alpha() {
        let data = xrgb_bytes(&[
            0xff10_2030, // opaque: replaces
            0x0000_0000, // transparent: leaves
            0x8080_0000, // half-transparent red, premultiplied
            0x8000_4000, // half-transparent green at half intensity
            0x0010_0000, // zero alpha with colour: additive
        ]);
        let source = single_plane(PixelFormat::Argb8888, 5, 1, &data, 20);
        let mut canvas = Canvas::new(5, 1);
        canvas.clear(0xffffff);
        canvas.blit(&source, 0, 0);
        // 255 × (255 − 128) / 255 = 127 of the white shows through.
        assert_eq!(
            canvas.pixels(),
            &[
                0xff10_2030,
                0xffff_ffff,
                0xffff_7f7f,
                0xff7f_bf7f,
                0xffff_ffff
            ]
        );
        canvas.clear(0x000000);
        canvas.blit(&source, 0, 0);
        assert_eq!(
            canvas.pixels(),
            &[
                0xff10_2030,
                0xff00_0000,
                0xff80_0000,
                0xff00_4000,
                0xff10_0000
            ]
        );
    }

    #[test]
    fn blending_matches_the_per_channel_formula() {
        let reference = |src: u32, dst: u32| {
            let alpha = src >> 24;
            let channel = |shift: u32| {
                let s = (src >> shift) & 0xff;
                let d = (dst >> shift) & 0xff;
                let blended = s as f64 + d as f64 * f64::from(255 - alpha) / 255.0;
                (blended.round() as u32).min(255) << shift
            };
            OPAQUE | channel(16) | channel(8) | channel(0)
        };
        for alpha in 0..=255u32 {
            for colour in (0..=255u32).step_by(7) {
                for background in (0..=255u32).step_by(5) {
                    // Valid premultiplied channels (≤ alpha), and malformed ones (> alpha).
                    let src =
                        alpha << 24 | colour << 16 | (colour * alpha / 255) << 8 | (255 - colour);
                    let dst =
                        OPAQUE | background << 16 | (255 - background) << 8 | (background / 2);
                    assert_eq!(
                        over_premultiplied(src, dst),
                        reference(src, dst),
                        "{src:08x} over {dst:08x}"
                    );
                }
            }
        }
    }

    // ---- clipping ------------------------------------------------------------------------

    /// A 4×3 source whose pixel (x, y) is 0x0000yx.
    fn numbered_source_data() -> Vec<u8> {
        let pixels: Vec<u32> = (0..3)
            .flat_map(|y| (0..4).map(move |x| y << 4 | x))
            .collect();
        xrgb_bytes(&pixels)
    }

    #[test]
    fn blits_are_clipped_to_the_canvas() {
        let data = numbered_source_data();
        let source = single_plane(PixelFormat::Xrgb8888, 4, 3, &data, 16);
        let background = 0xabcdef;

        let cases: [((i32, i32), usize); 7] = [
            ((0, 0), 12),
            ((-2, -1), 4),
            ((3, 2), 4),
            ((-4, 0), 0),
            ((5, 0), 0),
            ((0, -3), 0),
            ((i32::MIN, i32::MAX), 0),
        ];
        for ((x, y), drawn) in cases {
            let mut canvas = Canvas::new(5, 4);
            canvas.clear(background);
            canvas.blit(&source, x, y);
            let mut changed = 0;
            for cy in 0..4u32 {
                for cx in 0..5u32 {
                    // i64: the extreme positions overflow i32.
                    let (sx, sy) = (i64::from(cx) - i64::from(x), i64::from(cy) - i64::from(y));
                    let inside = (0..4).contains(&sx) && (0..3).contains(&sy);
                    let expected = if inside {
                        changed += 1;
                        OPAQUE | (sy as u32) << 4 | sx as u32
                    } else {
                        OPAQUE | background
                    };
                    assert_eq!(canvas.pixel(cx, cy), Some(expected), "at ({x}, {y})");
                }
            }
            assert_eq!(changed, drawn, "at ({x}, {y})");
        }

        let mut canvas = Canvas::new(5, 4);
        canvas.blit(&source, i32::MAX, i32::MIN);
        assert_eq!(diff(&canvas, &Canvas::new(5, 4)), 0);
    }

    #[test]
    fn a_source_larger_than_the_canvas() {
        let data = numbered_source_data();
        let source = single_plane(PixelFormat::Argb8888, 4, 3, &data, 16);
        let mut canvas = Canvas::new(2, 1);
        canvas.blit(&source, -1, -1);
        // The alpha byte is 0 but the colour is not: additive over black.
        assert_eq!(canvas.pixels(), &[OPAQUE | 0x11, OPAQUE | 0x12]);
    }

    // ---- canvas utilities ----------------------------------------------------------------

    #[test]
    fn pixel_clear_and_diff() {
        let mut a = Canvas::new(3, 2);
        assert_eq!(a.pixel(2, 1), Some(OPAQUE));
        assert_eq!(a.pixel(3, 0), None);
        assert_eq!(a.pixel(0, 2), None);
        a.clear(0x00ff_0000);
        assert_eq!(a.pixel(1, 1), Some(0xffff_0000));
        let mut b = a.clone();
        assert_eq!(diff(&a, &b), 0);
        let data = xrgb_bytes(&[0, 0]);
        b.blit(&single_plane(PixelFormat::Xrgb8888, 2, 1, &data, 8), 1, 1);
        assert_eq!(diff(&a, &b), 2);
        assert_eq!(diff(&b, &a), 2);
        // Sizes differ: 3×2 against 4×1 share 3 pixels; 3 + 1 exist in only one of them.
        let mut c = Canvas::new(4, 1);
        c.clear(0xff0000);
        assert_eq!(diff(&a, &c), 4);
        assert_eq!(diff(&c, &a), 4);
        assert_eq!(diff(&Canvas::new(0, 0), &Canvas::new(2, 2)), 4);
    }

    #[test]
    fn write_xrgb8888_with_stride() {
        let data = numbered_source_data();
        let mut canvas = Canvas::new(4, 3);
        canvas.blit(&single_plane(PixelFormat::Xrgb8888, 4, 3, &data, 16), 0, 0);
        let mut out = vec![0u8; 20 * 2 + 16];
        canvas.write_xrgb8888(&mut out, 20).unwrap();
        assert_eq!(&out[20..24], &[0x10, 0, 0, 0xff]);
        assert_eq!(&out[40 + 12..40 + 16], &[0x23, 0, 0, 0xff]);
        assert_eq!(&out[16..20], &[0, 0, 0, 0], "padding untouched");
        assert!(matches!(
            canvas.write_xrgb8888(&mut out[..55], 20),
            Err(RenderError::DestinationTooShort {
                needed: 56,
                available: 55,
                ..
            })
        ));
        assert!(matches!(
            canvas.write_xrgb8888(&mut out, 12),
            Err(RenderError::DestinationTooShort { .. })
        ));
    }

    #[test]
    fn png_round_trip() {
        let data = numbered_source_data();
        let mut canvas = Canvas::new(5, 4);
        canvas.clear(0x102030);
        canvas.blit(&single_plane(PixelFormat::Xrgb8888, 4, 3, &data, 16), 1, 1);
        let path = std::env::temp_dir().join(format!("render-test-{}.png", std::process::id()));
        write_png(&canvas, &path).unwrap();

        let file = std::io::BufReader::new(File::open(&path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut decoded = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut decoded).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((info.width, info.height), (canvas.width(), canvas.height()));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let mut round_trip = Canvas::new(5, 4);
        for (pixel, rgb) in round_trip.pixels.iter_mut().zip(decoded.chunks_exact(3)) {
            *pixel = OPAQUE | u32::from_le_bytes([rgb[2], rgb[1], rgb[0], 0]);
        }
        assert_eq!(diff(&canvas, &round_trip), 0);
        assert_eq!(round_trip.pixel(0, 0), Some(0xff10_2030));
        assert_eq!(round_trip.pixel(4, 3), Some(0xff00_0023));

        let missing = std::env::temp_dir().join("no-such-directory/x.png");
        assert!(matches!(
            write_png(&canvas, &missing),
            Err(RenderError::Create { .. })
        ));
    }

    /// A 4×3 canvas whose pixel (x, y) is `0xff0000yx` (as hex digits).
    fn numbered_canvas() -> Canvas {
        let mut canvas = Canvas::new(4, 3);
        for y in 0..3u32 {
            for x in 0..4u32 {
                canvas.pixels[(y * 4 + x) as usize] = OPAQUE | (y << 4) | x;
            }
        }
        canvas
    }

    #[test]
    fn crop_takes_the_region_and_clips_it() {
        let canvas = numbered_canvas();
        let part = canvas.crop(1, 1, 2, 2);
        assert_eq!((part.width(), part.height()), (2, 2));
        assert_eq!(
            part.pixels(),
            &[OPAQUE | 0x11, OPAQUE | 0x12, OPAQUE | 0x21, OPAQUE | 0x22]
        );
        let clipped = canvas.crop(3, 2, 10, 10);
        assert_eq!(clipped.pixels(), &[OPAQUE | 0x23]);
        assert!(canvas.crop(9, 9, 1, 1).pixels().is_empty());
    }

    #[test]
    fn from_rgba_reads_gl_byte_order_and_checks_the_length() {
        let bytes = [0x11, 0x22, 0x33, 0x00, 0xaa, 0xbb, 0xcc, 0xff];
        let canvas = Canvas::from_rgba(2, 1, &bytes).unwrap();
        assert_eq!(canvas.pixels(), &[0xff11_2233, 0xffaa_bbcc]);
        assert!(matches!(
            Canvas::from_rgba(2, 2, &bytes),
            Err(RenderError::BufferTooShort {
                needed: 16,
                available: 8,
                ..
            })
        ));
    }

    #[test]
    fn flip_vertically_turns_only_the_rectangle() {
        let mut canvas = numbered_canvas();
        canvas.flip_vertically(1, 0, 2, 3);
        assert_eq!(canvas.pixel(1, 0), Some(OPAQUE | 0x21));
        assert_eq!(canvas.pixel(2, 2), Some(OPAQUE | 0x02));
        assert_eq!(canvas.pixel(1, 1), Some(OPAQUE | 0x11));
        // Outside the rectangle nothing moved.
        assert_eq!(canvas.pixel(0, 0), Some(OPAQUE));
        assert_eq!(canvas.pixel(3, 2), Some(OPAQUE | 0x23));
        let mut twice = canvas.clone();
        twice.flip_vertically(1, 0, 2, 3);
        assert_eq!(twice, numbered_canvas());
    }
    // ---- placement: viewport, scale, transform ---------------------------------------------

    /// A 4×2 XRGB buffer whose pixel (x, y) is 0x10·y + x.
    fn four_by_two() -> Vec<u8> {
        xrgb_bytes(&[0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13])
    }

    fn drawn(placement: Placement, width: u32, height: u32) -> Vec<u32> {
        let data = four_by_two();
        let source = single_plane(PixelFormat::Xrgb8888, 4, 2, &data, 16);
        let mut canvas = Canvas::new(width, height);
        canvas.draw(&source, &placement);
        canvas.pixels().iter().map(|p| p & 0xff_ffff).collect()
    }

    #[test]
    fn a_plain_placement_is_a_blit() {
        assert_eq!(
            drawn(Placement::plain(0, 0, 4, 2), 4, 2),
            [0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13]
        );
    }

    #[test]
    fn a_viewport_crops_and_scales() {
        // The right half of the buffer (2×2), shown at 4×4: every pixel doubled.
        let placement = Placement {
            src: Rectangle::new((2.0, 0.0).into(), (2.0, 2.0).into()),
            ..Placement::plain(0, 0, 4, 4)
        };
        assert_eq!(
            drawn(placement, 4, 4),
            [
                0x02, 0x02, 0x03, 0x03, //
                0x02, 0x02, 0x03, 0x03, //
                0x12, 0x12, 0x13, 0x13, //
                0x12, 0x12, 0x13, 0x13,
            ]
        );
        // The whole buffer down to 2×1: the sample centres fall in columns 1 and 3 of row 1.
        let placement = Placement {
            src: Rectangle::from_size((4.0, 2.0).into()),
            ..Placement::plain(0, 0, 2, 1)
        };
        assert_eq!(drawn(placement, 2, 1), [0x11, 0x13]);
    }

    #[test]
    fn buffer_scale_and_transform_turn_the_buffer_as_smithay_does() {
        // Buffer scale 2: the 4×2 buffer is a 2×1 surface.
        let placement = Placement {
            src: Rectangle::from_size((2.0, 1.0).into()),
            buffer_scale: 2,
            ..Placement::plain(0, 0, 2, 1)
        };
        assert_eq!(drawn(placement, 2, 1), [0x11, 0x13]);
        // Transform 90: the client rotated its content, so the 4×2 buffer is a 2×4 surface;
        // smithay's to_buffer maps surface (x, y) to buffer (y, 2 − x) here.
        let placement = Placement {
            src: Rectangle::from_size((2.0, 4.0).into()),
            transform: Transform::_90,
            ..Placement::plain(0, 0, 2, 4)
        };
        let turned = drawn(placement, 2, 4);
        for dy in 0..4u32 {
            for dx in 0..2u32 {
                let p = Point::<f64, Logical>::from((f64::from(dx) + 0.5, f64::from(dy) + 0.5))
                    .to_buffer(1.0, Transform::_90, &Size::from((2.0, 4.0)));
                let expected = 0x10 * (p.y.floor() as u32) + p.x.floor() as u32;
                assert_eq!(turned[(dy * 2 + dx) as usize], expected, "({dx}, {dy})");
            }
        }
        // Every buffer pixel shows up exactly once.
        let mut sorted = turned.clone();
        sorted.sort();
        assert_eq!(sorted, [0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13]);
    }

    #[test]
    fn y_inverted_buffers_are_shown_upright() {
        let placement = Placement {
            y_inverted: true,
            ..Placement::plain(0, 0, 4, 2)
        };
        assert_eq!(
            drawn(placement, 4, 2),
            [0x10, 0x11, 0x12, 0x13, 0x00, 0x01, 0x02, 0x03]
        );
    }

    #[test]
    fn a_destination_far_outside_or_huge_is_clipped_without_overflow() {
        let far = Placement::plain(i64::from(i32::MAX) * 4, -5, 4, 2);
        assert_eq!(drawn(far, 3, 3), [0; 9]);
        let huge = Placement {
            src: Rectangle::from_size((4.0, 2.0).into()),
            ..Placement::plain(-1, -1, u32::MAX, u32::MAX)
        };
        // Clipped to the canvas; samples come from the buffer's top-left pixel.
        assert_eq!(drawn(huge, 2, 2), [0x00; 4]);
    }

    #[test]
    fn a_solid_colour_fills_and_blends() {
        let mut canvas = Canvas::new(3, 1);
        canvas.clear(0x00_00ff);
        canvas.draw_solid(0xffff_0000, &Placement::plain(0, 0, 1, 1));
        // Half-transparent green, premultiplied, over blue.
        canvas.draw_solid(0x8000_8000, &Placement::plain(1, 0, 1, 1));
        assert_eq!(
            canvas.pixels(),
            &[0xffff_0000, OPAQUE | 0x00_807f, OPAQUE | 0x00_00ff]
        );
    }

    /// The row-at-a-time drawing against its definition, pixel by pixel: the buffer pixel
    /// `source_pixel` names, replacing the canvas or composed over it. Every transform, scaled
    /// up and down, cropped, y-inverted, partly off the canvas; opaque and translucent.
    #[test]
    fn scaled_draws_match_the_per_pixel_definition() {
        let (width, height) = (5u32, 3u32);
        let argb: Vec<u32> = (0..width * height)
            .map(|i| ((i * 17 % 256) << 24) | (0x0001_0203 * (i % 8)))
            .collect();
        let data = xrgb_bytes(&argb);
        let transforms = [
            Transform::Normal,
            Transform::_90,
            Transform::_180,
            Transform::_270,
            Transform::Flipped,
            Transform::Flipped90,
            Transform::Flipped180,
            Transform::Flipped270,
        ];
        for format in [PixelFormat::Xrgb8888, PixelFormat::Argb8888] {
            let source = single_plane(format, width, height, &data, width as usize * 4);
            let decoded = source.decode();
            for transform in transforms {
                for (x, y, w, h) in [(1, 2, 13, 7), (-3, -1, 4, 9), (2, 0, 3, 2)] {
                    for y_inverted in [false, true] {
                        let logical: Size<u32, Logical> =
                            transform.transform_size(Size::from((width, height)));
                        let placement = Placement {
                            src: Rectangle::new(
                                (0.5, 0.0).into(),
                                (f64::from(logical.w) - 0.5, f64::from(logical.h)).into(),
                            ),
                            transform,
                            y_inverted,
                            ..Placement::plain(x, y, w, h)
                        };
                        let mut canvas = Canvas::new(12, 10);
                        canvas.clear(0x40_8020);
                        let mut expected = canvas.clone();
                        canvas.draw(&source, &placement);
                        for dy in 0..h {
                            for dx in 0..w {
                                let (cx, cy) = (x + i64::from(dx), y + i64::from(dy));
                                let (Ok(cx), Ok(cy)) = (u32::try_from(cx), u32::try_from(cy))
                                else {
                                    continue;
                                };
                                if cx >= 12 || cy >= 10 {
                                    continue;
                                }
                                let (sx, sy) = placement.source_pixel(dx, dy, (width, height));
                                let sample = decoded[sy * width as usize + sx];
                                let at = (cy * 12 + cx) as usize;
                                expected.pixels[at] = match format {
                                    PixelFormat::Argb8888 if sample >> 24 == 0 && sample == 0 => {
                                        expected.pixels[at]
                                    }
                                    PixelFormat::Argb8888 if sample >> 24 != 0xff => {
                                        over_premultiplied(sample, expected.pixels[at])
                                    }
                                    _ => OPAQUE | sample,
                                };
                            }
                        }
                        assert_eq!(
                            canvas, expected,
                            "{format:?} {transform:?} at ({x}, {y}) {w}x{h}, y-inverted {y_inverted}"
                        );
                    }
                }
            }
        }
    }
}
