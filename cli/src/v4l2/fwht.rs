//! vicodec's FWHT stream, parsed as a stateless decoder's client must: the kernel's stateful
//! FWHT encoder writes each frame as a 44-byte header (`struct fwht_cframe_hdr`: two magic
//! words, then version, width, height, flags, colorspace, transfer function, Y'CbCr encoding,
//! quantization and the payload's size, big-endian) followed by its payload. A stateless
//! decoder takes the payload alone in its OUTPUT buffer, and the header's fields as the frame's
//! `V4L2_CID_STATELESS_FWHT_PARAMS`.

use super::format::FourCc;
use crate::sys::v4l2 as sys;

/// The header's size.
pub const HEADER_LEN: usize = 44;
/// The magic the header starts with (`FWHT_MAGIC1`, `FWHT_MAGIC2`), as bytes.
const MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];

/// One frame's header: the frame's parameters as a stateless decoder takes them (every
/// field but the reference, which is the stream position's, not the frame's), and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Version, size, flags and colorimetry (`backward_ref_ts` 0).
    pub params: sys::V4l2CtrlFwhtParams,
    /// Bytes of payload after the header.
    pub size: u32,
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `bytes`; `None` without the
    /// magic (or too few bytes).
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        Some(Header {
            params: sys::V4l2CtrlFwhtParams {
                backward_ref_ts: 0,
                version: word(0),
                width: word(1),
                height: word(2),
                flags: word(3),
                colorspace: word(4),
                xfer_func: word(5),
                ycbcr_enc: word(6),
                quantization: word(7),
            },
            size: word(8),
        })
    }

    /// Whether the frame needs no reference.
    pub fn is_i_frame(&self) -> bool {
        self.params.flags & sys::V4L2_FWHT_FL_I_FRAME != 0
    }

    /// The frame's `V4L2_CID_STATELESS_FWHT_PARAMS`, referencing the CAPTURE buffer stamped
    /// `backward_ref_ts` (ns).
    pub fn params(&self, backward_ref_ts: u64) -> sys::V4l2CtrlFwhtParams {
        sys::V4l2CtrlFwhtParams {
            backward_ref_ts,
            ..self.params
        }
    }

    /// The frame's size.
    pub fn size(&self) -> (u32, u32) {
        (self.params.width, self.params.height)
    }

    /// A raw format a compositor takes that holds the frame's pixels as coded (the decoder's
    /// CAPTURE format must match the stream's components and subsampling): NV12 for 4:2:0,
    /// YUYV for 4:2:2, NV24 for 4:4:4, XR24/AR24 for RGB, GREY for luma alone.
    pub fn raw_format(&self) -> Option<FourCc> {
        let flags = self.params.flags;
        let components = 1
            + ((flags & sys::V4L2_FWHT_FL_COMPONENTS_NUM_MSK)
                >> sys::V4L2_FWHT_FL_COMPONENTS_NUM_OFFSET);
        let full_width = flags & sys::V4L2_FWHT_FL_CHROMA_FULL_WIDTH != 0;
        let full_height = flags & sys::V4L2_FWHT_FL_CHROMA_FULL_HEIGHT != 0;
        let fourcc = match (flags & sys::V4L2_FWHT_FL_PIXENC_MSK, components) {
            (_, 1) => b"GREY",
            (sys::V4L2_FWHT_FL_PIXENC_YUV, 3) => match (full_width, full_height) {
                (false, false) => b"NV12",
                (false, true) => b"YUYV",
                (true, true) => b"NV24",
                (true, false) => return None,
            },
            (sys::V4L2_FWHT_FL_PIXENC_RGB, 3) => b"XR24",
            (sys::V4L2_FWHT_FL_PIXENC_RGB, 4) => b"AR24",
            _ => return None,
        };
        Some(FourCc::new(fourcc))
    }
}

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its header.
    pub header: Header,
    /// Its payload (what the OUTPUT buffer holds).
    pub payload: Vec<u8>,
}

/// Why bytes are not an FWHT stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// Where (bytes from the start).
    pub offset: usize,
    /// What is wrong, in words.
    pub why: String,
}

/// Splits `bytes` into frames, each header checked: every frame starts where the last one's
/// payload ends, with the magic; the first is an I-frame (a stateless decoder has nothing to
/// decode a P-frame against); no payload runs past the end (a cut stream); all frames have the
/// first one's size.
pub fn split(bytes: &[u8]) -> Result<Vec<Frame>, StreamError> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let n = frames.len();
        let rest = &bytes[offset..];
        let Some(header) = Header::parse(rest) else {
            let why = if rest.len() < HEADER_LEN && MAGIC.starts_with(&rest[..rest.len().min(8)]) {
                format!(
                    "frame {n}'s header is cut: {} of its {HEADER_LEN} bytes (a truncated \
                     stream)",
                    rest.len()
                )
            } else {
                format!(
                    "no FWHT frame header (magic 4f4f4f4f ffffffff) where frame {n} should \
                     start{}",
                    if n == 0 {
                        ": not a stream of vicodec's FWHT frames"
                    } else {
                        ""
                    }
                )
            };
            return Err(StreamError { offset, why });
        };
        let payload = &rest[HEADER_LEN..];
        if payload.len() < header.size as usize {
            return Err(StreamError {
                offset,
                why: format!(
                    "frame {n} is cut: its header says {} bytes of payload, {} remain (a \
                     truncated stream)",
                    header.size,
                    payload.len()
                ),
            });
        }
        if n == 0 && !header.is_i_frame() {
            return Err(StreamError {
                offset,
                why: "the stream starts with a P-frame: a stateless decoder needs an I-frame \
                      first (a P-frame is decoded against the frame before it)"
                    .into(),
            });
        }
        if let Some(first) = frames.first().map(|f: &Frame| f.header) {
            if header.size() != first.size() {
                let ((w, h), (first_w, first_h)) = (header.size(), first.size());
                return Err(StreamError {
                    offset,
                    why: format!(
                        "frame {n} is {w}x{h}, the stream started at {first_w}x{first_h}: a \
                         resolution change is not supported here"
                    ),
                });
            }
        }
        frames.push(Frame {
            header,
            payload: payload[..header.size as usize].to_vec(),
        });
        offset += HEADER_LEN + header.size as usize;
    }
    if frames.is_empty() {
        return Err(StreamError {
            offset: 0,
            why: "the stream is empty".into(),
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i_frame: bool, width: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        let flags = (2 << 16)
            | sys::V4L2_FWHT_FL_PIXENC_YUV
            | if i_frame {
                sys::V4L2_FWHT_FL_I_FRAME
            } else {
                0
            };
        for word in [3, width, 368, flags, 3, 0, 0, 0, payload.len() as u32] {
            bytes.extend_from_slice(&u32::to_be_bytes(word));
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_stream_splits_into_its_frames() {
        let stream = [frame(true, 640, b"abcd"), frame(false, 640, b"ef")].concat();
        let frames = split(&stream).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, b"abcd");
        assert_eq!(frames[1].payload, b"ef");
        let h = frames[0].header;
        assert!(h.is_i_frame() && !frames[1].header.is_i_frame());
        let p = h.params;
        assert_eq!(
            (p.version, p.width, p.height, p.colorspace),
            (3, 640, 368, 3)
        );
        assert_eq!(h.raw_format(), Some(FourCc::new(b"NV12")));
        let p = frames[1].header.params(5000);
        assert_eq!(
            (p.backward_ref_ts, p.width, p.flags),
            (5000, 640, h.params.flags & !(1 << 10))
        );
    }

    #[test]
    fn bad_streams_say_where_and_why() {
        let e = split(b"garbage garbage garbage garbage garbage garbage").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(
            e.why.contains("not a stream of vicodec's FWHT frames"),
            "{e:?}"
        );

        let whole = [frame(true, 640, b"abcd"), frame(false, 640, b"efgh")].concat();
        let e = split(&whole[..whole.len() - 1]).unwrap_err();
        assert_eq!(e.offset, HEADER_LEN + 4);
        assert_eq!(
            e.why,
            "frame 1 is cut: its header says 4 bytes of payload, 3 remain (a truncated stream)"
        );
        let e = split(&whole[..HEADER_LEN + 4 + 10]).unwrap_err();
        assert!(
            e.why.starts_with("frame 1's header is cut: 10 of its 44"),
            "{e:?}"
        );

        let e = split(&frame(false, 640, b"ab")).unwrap_err();
        assert!(
            e.why.starts_with("the stream starts with a P-frame"),
            "{e:?}"
        );

        let e = split(&[frame(true, 640, b"ab"), frame(false, 1280, b"cd")].concat()).unwrap_err();
        assert!(e.why.contains("resolution change"), "{e:?}");
        assert_eq!(split(b"").unwrap_err().why, "the stream is empty");
    }
}
