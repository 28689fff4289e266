//! wlr-screencopy-unstable-v1 (version 3), the capture protocol `grim` and most screenshot
//! and recording tools speak. A capture copies the output into a client's buffer, in XRGB8888
//! or ARGB8888: the frame being drawn when it is done, else the frame shown now. The buffer is
//! a wl_shm one (copied on the loop), or, from version 3, a linux-dmabuf one, as screencast
//! tools (PipeWire) use: the headless backend's software GPU writes it, and `ready` goes out
//! at once, while it still writes. The copy's write fence is published on the dma-buf
//! (fencebridge's `publish_compositor_write`), so the consumer's implicit wait
//! (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`, poll, its GPU's import) ends when the copy is written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::Fourcc;
use smithay::output::Output;
use smithay::reexports::wayland_server::protocol::{wl_buffer::WlBuffer, wl_shm};
use smithay::reexports::wayland_server::{
    Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource,
};
use smithay::wayland::dmabuf::get_dmabuf;
use smithay::wayland::shm::{with_buffer_contents_mut, BufferData};
use wayland_protocols_wlr::screencopy::v1::server::{
    zwlr_screencopy_frame_v1::{self, ZwlrScreencopyFrameV1},
    zwlr_screencopy_manager_v1::{self, ZwlrScreencopyManagerV1},
};

use crate::gpu;
use crate::screen::{self, Backend};
use crate::state::Nested;

const VERSION: u32 = 3;

/// Advertises the screencopy global.
pub fn create_global(dh: &DisplayHandle) {
    dh.create_global::<Nested, ZwlrScreencopyManagerV1, ()>(VERSION, ());
}

/// One capture: the output region it covers, and whether a copy was asked already.
pub struct Frame {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    used: AtomicBool,
}

impl GlobalDispatch<ZwlrScreencopyManagerV1, ()> for Nested {
    fn bind(
        _: &mut Nested,
        _: &DisplayHandle,
        _: &Client,
        manager: New<ZwlrScreencopyManagerV1>,
        _: &(),
        init: &mut DataInit<'_, Nested>,
    ) {
        init.init(manager, ());
    }
}

impl Dispatch<ZwlrScreencopyManagerV1, ()> for Nested {
    fn request(
        state: &mut Nested,
        _: &Client,
        _: &ZwlrScreencopyManagerV1,
        request: zwlr_screencopy_manager_v1::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Nested>,
    ) {
        use zwlr_screencopy_manager_v1::Request;
        let (width, height) = state.screen.size();
        let (frame, output, region) = match request {
            Request::CaptureOutput { frame, output, .. } => {
                (frame, output, Some((0, 0, width as i32, height as i32)))
            }
            Request::CaptureOutputRegion {
                frame,
                output,
                x,
                y,
                width: w,
                height: h,
                ..
            } => {
                // The region is in output coordinates; clip it to the output.
                let (x0, y0) = (x.clamp(0, width as i32), y.clamp(0, height as i32));
                let x1 = x.saturating_add(w).clamp(0, width as i32);
                let y1 = y.saturating_add(h).clamp(0, height as i32);
                let region =
                    (w > 0 && h > 0 && x1 > x0 && y1 > y0).then_some((x0, y0, x1 - x0, y1 - y0));
                (frame, output, region)
            }
            // Destroy, and requests of later versions than ours.
            _ => return,
        };
        let ours = Output::from_resource(&output).is_some_and(|o| o == state.screen.output);
        let (x, y, w, h) = region.unwrap_or_default();
        let frame = init.init(
            frame,
            Frame {
                x: x as u32,
                y: y as u32,
                width: w as u32,
                height: h as u32,
                used: AtomicBool::new(false),
            },
        );
        if !ours || region.is_none() {
            frame.failed();
            return;
        }
        frame.buffer(wl_shm::Format::Xrgb8888, w as u32, h as u32, w as u32 * 4);
        if frame.version() >= 3 {
            frame.linux_dmabuf(Fourcc::Xrgb8888 as u32, w as u32, h as u32);
            frame.buffer_done();
        }
    }
}

impl Dispatch<ZwlrScreencopyFrameV1, Frame> for Nested {
    fn request(
        state: &mut Nested,
        _: &Client,
        frame: &ZwlrScreencopyFrameV1,
        request: zwlr_screencopy_frame_v1::Request,
        data: &Frame,
        _: &DisplayHandle,
        _: &mut DataInit<'_, Nested>,
    ) {
        use zwlr_screencopy_frame_v1::{Error, Request};
        let buffer = match request {
            Request::Copy { buffer } | Request::CopyWithDamage { buffer } => buffer,
            // Destroy, and requests of later versions than ours.
            _ => return,
        };
        if data.used.swap(true, Ordering::Relaxed) {
            frame.post_error(Error::AlreadyUsed, "this frame was already copied");
            return;
        }
        screen::capture(state, frame, buffer);
    }
}

/// Why a copy did not happen.
enum CopyError {
    /// The client's buffer does not fit the capture: a protocol error.
    InvalidBuffer(String),
    /// The compositor could not do it: the capture fails (`failed`).
    Failed(String),
}

/// Copies the output into the capture's buffer and tells the client, or raises the protocol
/// error for a buffer that does not fit.
pub fn copy_now(state: &Nested, frame: &ZwlrScreencopyFrameV1, buffer: &WlBuffer) {
    let Some(data) = frame.data::<Frame>() else {
        return;
    };
    let copied = match get_dmabuf(buffer) {
        Ok(dmabuf) => copy_dmabuf(state, data, dmabuf),
        Err(_) => copy(state, data, buffer).map_err(CopyError::InvalidBuffer),
    };
    match copied {
        Ok(()) => {
            frame.flags(zwlr_screencopy_frame_v1::Flags::empty());
            if frame.version() >= 2 {
                frame.damage(0, 0, data.width, data.height);
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let secs = now.as_secs();
            frame.ready((secs >> 32) as u32, secs as u32, now.subsec_nanos());
        }
        Err(CopyError::InvalidBuffer(reason)) => {
            frame.post_error(zwlr_screencopy_frame_v1::Error::InvalidBuffer, reason)
        }
        Err(CopyError::Failed(reason)) => {
            tracing::warn!("nested: a capture failed: {reason}");
            frame.failed();
        }
    }
}

/// Copies the frame's region of the last rendered frame into a client's dma-buf. Headless, the
/// software GPU writes it after the frames queued before (`ready` goes out now) and its write
/// fence goes on the buffer; in a window, or without vgem for a fence, it is written here.
fn copy_dmabuf(state: &Nested, frame: &Frame, target: &Dmabuf) -> Result<(), CopyError> {
    gpu::check_capture_target(target, frame.width, frame.height)
        .map_err(CopyError::InvalidBuffer)?;
    let image = state
        .screen
        .canvas
        .crop(frame.x, frame.y, frame.width, frame.height);
    let Backend::Headless(headless) = &state.screen.backend else {
        return gpu::write_dmabuf(target, &image).map_err(CopyError::Failed);
    };
    let written = headless
        .copy(image, target.clone())
        .map_err(CopyError::Failed)?;
    if let Some(written) = written.filter(|_| state.screen.publish_capture_writes) {
        // fencebridge: whoever reads the capture implicitly waits until the GPU has written it.
        fencebridge::wayland::publish_compositor_write(target, &written).map_err(|e| {
            CopyError::Failed(format!(
                "cannot put the copy's write fence on the dma-buf: {e}"
            ))
        })?;
    }
    Ok(())
}

/// Copies the frame's region of the last rendered frame into `buffer`, which must be a wl_shm
/// buffer of the size and stride the frame announced, in XRGB8888 or ARGB8888.
fn copy(state: &Nested, frame: &Frame, buffer: &WlBuffer) -> Result<(), String> {
    let image = state
        .screen
        .canvas
        .crop(frame.x, frame.y, frame.width, frame.height);
    with_buffer_contents_mut(buffer, |ptr, len, info: BufferData| {
        let format_ok = matches!(
            info.format,
            wl_shm::Format::Xrgb8888 | wl_shm::Format::Argb8888
        );
        if !format_ok
            || info.width as u32 != frame.width
            || info.height as u32 != frame.height
            || info.stride < frame.width as i32 * 4
        {
            return Err(format!(
                "expected a {}x{} xrgb8888/argb8888 buffer, got {}x{} {:?} stride {}",
                frame.width, frame.height, info.width, info.height, info.format, info.stride
            ));
        }
        let (offset, stride) = (info.offset as usize, info.stride as usize);
        let mut pixels = vec![0; stride * frame.height as usize];
        image
            .write_xrgb8888(&mut pixels, stride)
            .map_err(|e| e.to_string())?;
        if !offset
            .checked_add(pixels.len())
            .is_some_and(|end| end <= len)
        {
            return Err("the buffer does not fit in its pool".to_owned());
        }
        // SAFETY: smithay maps the client's pool, `len` bytes valid for writes during this
        // closure, and `offset + pixels.len() <= len` was just checked. The copy goes through
        // raw pointers, so no Rust reference to memory the client may touch concurrently exists.
        unsafe { std::ptr::copy_nonoverlapping(pixels.as_ptr(), ptr.add(offset), pixels.len()) };
        Ok(())
    })
    .map_err(|_| "not a wl_shm buffer".to_owned())?
}
