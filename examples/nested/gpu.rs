//! A software GPU: the output's frames are drawn on a worker thread, as a GPU would draw them
//! while the compositor's loop goes on. Each frame comes with a real kernel fence (a vgem
//! fence, when vgem is there) that signals when the worker has finished reading the clients'
//! buffers: the read fence the compositor gives fencebridge, exactly as a GPU compositor hands
//! over its render job's fence. The finished frame comes back to the loop on a calloop channel.
//!
//! Screen captures into a client's dma-buf are the worker's jobs too: it writes the buffer
//! after the frames queued before it, and signals a real write fence when it is written, so the
//! compositor can say `ready` at once and publish that fence on the buffer for the consumer.
//!
//! Like a Vulkan renderer, the worker never waits on implicit fences: that is fencebridge's job,
//! so with the bridge off it draws whatever a buffer holds at that moment. It brackets a dma-buf
//! read with `DMA_BUF_IOCTL_SYNC` only when the buffer has no pending writer, since `SYNC_START`
//! would wait for the writer (an implicitly synchronised reader, which is what the test of the
//! bridge-off compositor must not have).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use fencebridge::fence::SyncFile;
use fencebridge::producer::{Vgem, VgemFence};
use fencebridge::sys;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::{Buffer as _, Fourcc, Modifier};
use smithay::reexports::calloop::channel::{self, Channel};

use crate::render::{Canvas, PixelFormat, Placement, Plane, SourceImage};

/// What one surface contributes to a frame: its buffer's contents, and where it goes.
pub struct Layer {
    pub contents: Contents,
    pub placement: Placement,
}

/// A surface's buffer as the worker reads it.
pub enum Contents {
    /// A dma-buf, read by the worker.
    Dmabuf(Dmabuf),
    /// Pixels already copied out of a wl_shm pool on the loop thread.
    Pixels {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        bytes: Vec<u8>,
    },
    /// A wp_single_pixel_buffer_v1's colour, premultiplied ARGB8888.
    Solid(u32),
}

/// A frame to draw: a background, then the layers in order.
pub struct Job {
    background: u32,
    pub layers: Vec<Layer>,
    /// Signalled when the worker is done with the layers' buffers.
    done: Option<VgemFence>,
}

/// A drawn frame, back on the loop.
pub struct Finished {
    pub canvas: Canvas,
    /// Layers that could not be drawn, and why.
    pub errors: Vec<String>,
}

/// A screen capture's copy into a client's dma-buf (a single-plane XRGB8888 or ARGB8888
/// buffer of the image's size, checked by the caller).
struct CopyJob {
    image: Canvas,
    target: Dmabuf,
    /// Signalled when the worker has written the target.
    written: VgemFence,
}

/// What the worker does next, in the order it was submitted.
enum Work {
    Frame(Job, Canvas),
    Copy(CopyJob),
}

/// The worker's handle.
pub struct SoftGpu {
    jobs: mpsc::Sender<Work>,
    vgem: Option<Vgem>,
}

impl SoftGpu {
    /// Starts the worker; its frames arrive on the returned channel. Each job does its work
    /// only after `min_frame`, like a loaded GPU: a frame's reads come at the end of its time,
    /// so that they can outlast a client's next commit (the case where releasing the client's
    /// buffer must wait, and where a fencing client's next write must wait for the read fence);
    /// a capture's copy is written late too (a consumer that does not wait for it reads too
    /// early).
    pub fn start(min_frame: Duration) -> std::io::Result<(SoftGpu, Channel<Finished>)> {
        let (jobs, queue) = mpsc::channel::<Work>();
        let (finished, channel) = channel::channel();
        thread::Builder::new()
            .name("soft-gpu".to_owned())
            .spawn(move || {
                for work in queue {
                    // A loaded GPU: earlier work keeps it busy, and the job's reads and writes
                    // come at the end of its time, as late as they can.
                    thread::sleep(min_frame);
                    let (done, result) = match work {
                        Work::Frame(job, mut canvas) => {
                            let started = std::time::Instant::now();
                            let errors = draw(&mut canvas, &job);
                            tracing::debug!(
                                "nested: frame of {} layers drawn in {:?}",
                                job.layers.len(),
                                started.elapsed()
                            );
                            (job.done, Some(Finished { canvas, errors }))
                        }
                        Work::Copy(copy) => {
                            if let Err(e) = write_dmabuf(&copy.target, &copy.image) {
                                tracing::warn!("nested: a capture's copy failed: {e}");
                            }
                            (Some(copy.written), None)
                        }
                    };
                    if let Some(fence) = done {
                        if let Err(e) = fence.signal() {
                            tracing::warn!("nested: cannot signal a GPU job's fence: {e}");
                        }
                    }
                    if result.is_some_and(|finished_frame| finished.send(finished_frame).is_err()) {
                        break;
                    }
                }
            })?;
        let vgem = Vgem::open()
            .map_err(|e| tracing::info!("nested: frames without read fences: {e}"))
            .ok();
        Ok((SoftGpu { jobs, vgem }, channel))
    }

    /// A job with a read fence, if the kernel has vgem: the fence signals when the worker is
    /// done reading.
    pub fn job(&self, background: u32, layers: Vec<Layer>) -> (Job, Option<SyncFile>) {
        let (done, fence) = self.job_fence("read").unzip();
        let job = Job {
            background,
            layers,
            done,
        };
        (job, fence)
    }

    /// Hands a job to the worker, with the canvas to draw it on.
    pub fn submit(&self, job: Job, canvas: Canvas) {
        // The worker only stops when this handle is gone.
        let _ = self.jobs.send(Work::Frame(job, canvas));
    }

    /// Queues a screen capture's copy of `image` into `target` (a single-plane XRGB8888 or
    /// ARGB8888 dma-buf of the image's size) after the frames already submitted; returns its
    /// write fence, which signals when the worker has written `target`. Without vgem there
    /// is no fence to tell when that is: the copy is done here and now (`Ok(None)`).
    pub fn copy(&self, image: Canvas, target: Dmabuf) -> Result<Option<SyncFile>, String> {
        let Some((written, fence)) = self.job_fence("write") else {
            return write_dmabuf(&target, &image).map(|()| None);
        };
        let _ = self.jobs.send(Work::Copy(CopyJob {
            image,
            target,
            written,
        }));
        Ok(Some(fence))
    }

    /// A pending fence for a job (`what` it fences, for the log), if the kernel has vgem.
    fn job_fence(&self, what: &str) -> Option<(VgemFence, SyncFile)> {
        match pending_fence(self.vgem.as_ref()?) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!("nested: no {what} fence for this GPU job: {e}");
                None
            }
        }
    }
}

/// A pending vgem fence, and the same fence as a sync_file.
fn pending_fence(vgem: &Vgem) -> fencebridge::Result<(VgemFence, SyncFile)> {
    let scratch = vgem.create_buffer(1, 1)?;
    let fence = scratch.attach_fence(true)?;
    let sync_file =
        fencebridge::fence::dmabuf::export_one(scratch.dmabuf(), fencebridge::fence::Access::Read)?;
    Ok((fence, sync_file))
}

/// Draws the job; returns what could not be drawn.
fn draw(canvas: &mut Canvas, job: &Job) -> Vec<String> {
    canvas.clear(job.background);
    let mut errors = Vec::new();
    for Layer {
        contents,
        placement,
    } in &job.layers
    {
        let drawn = match contents {
            Contents::Dmabuf(buffer) => draw_dmabuf(canvas, buffer, placement),
            Contents::Pixels {
                format,
                width,
                height,
                stride,
                bytes,
            } => SourceImage::new(*format, *width, *height, &[Plane::new(bytes, 0, *stride)])
                .map(|image| canvas.draw(&image, placement))
                .map_err(|e| e.to_string()),
            Contents::Solid(argb) => {
                canvas.draw_solid(*argb, placement);
                Ok(())
            }
        };
        if let Err(e) = drawn {
            errors.push(e);
        }
    }
    errors
}

fn draw_dmabuf(canvas: &mut Canvas, dmabuf: &Dmabuf, placement: &Placement) -> Result<(), String> {
    let size = dmabuf.size();
    let format = PixelFormat::from_fourcc(dmabuf.format().code as u32)
        .ok_or_else(|| format!("format {:?} not shown", dmabuf.format().code))?;
    let fds: Vec<BorrowedFd<'_>> = dmabuf.handles().collect();
    let maps = fds
        .iter()
        .map(|fd| Mapping::new(*fd))
        .collect::<Result<Vec<_>, _>>()?;
    let planes: Vec<Plane<'_>> = maps
        .iter()
        .zip(dmabuf.offsets().zip(dmabuf.strides()))
        .map(|(map, (offset, stride))| Plane::new(map.bytes(), offset as usize, stride as usize))
        .collect();
    let image = SourceImage::new(format, size.w as u32, size.h as u32, &planes)
        .map_err(|e| e.to_string())?;
    let placement = Placement {
        y_inverted: dmabuf.y_inverted(),
        ..*placement
    };
    canvas.draw(&image, &placement);
    Ok(())
}

/// Writes `image` into plane 0 of `target`, a single-plane XRGB8888 or ARGB8888 dma-buf of the
/// image's size (the caller checked it with [`check_capture_target`]). No `DMA_BUF_IOCTL_SYNC`
/// bracket: its START would wait for the write fence this very job signals when done.
pub fn write_dmabuf(target: &Dmabuf, image: &Canvas) -> Result<(), String> {
    let fd = target.handles().next().ok_or("a dma-buf without planes")?;
    let offset = target.offsets().next().unwrap_or(0) as usize;
    let stride = target.strides().next().unwrap_or(0) as usize;
    let mut pixels = vec![0; stride * image.height() as usize];
    image
        .write_xrgb8888(&mut pixels, stride)
        .map_err(|e| e.to_string())?;
    let map = Mapping::writable(fd)?;
    if !offset
        .checked_add(pixels.len())
        .is_some_and(|end| end <= map.len)
    {
        return Err("the capture buffer does not fit in its dma-buf".to_owned());
    }
    // SAFETY: `map` maps `map.len` writable bytes until it drops after this copy, and
    // `offset + pixels.len() <= map.len` was just checked. The copy goes through raw pointers,
    // so no Rust reference to memory the client may touch concurrently exists.
    unsafe {
        std::ptr::copy_nonoverlapping(
            pixels.as_ptr(),
            map.ptr.cast::<u8>().add(offset),
            pixels.len(),
        )
    };
    Ok(())
}

/// Whether `target` can take a screen capture of `width`×`height`: one plane of XRGB8888 or
/// ARGB8888, linear, of exactly that size, lying inside its dma-buf, opened for writing.
pub fn check_capture_target(target: &Dmabuf, width: u32, height: u32) -> Result<(), String> {
    let format = target.format();
    let size = target.size();
    let single_plane_rgb = matches!(format.code, Fourcc::Xrgb8888 | Fourcc::Argb8888)
        && format.modifier == Modifier::Linear
        && target.num_planes() == 1;
    if !single_plane_rgb || (size.w, size.h) != (width as i32, height as i32) {
        return Err(format!(
            "expected a {width}x{height} linear xrgb8888/argb8888 dma-buf, got {}x{} {:?} \
             ({:?}, {} planes)",
            size.w,
            size.h,
            format.code,
            format.modifier,
            target.num_planes()
        ));
    }
    crate::headless::check_dmabuf(target)?;
    let fd = target.handles().next().ok_or("a dma-buf without planes")?;
    let mode = rustix::fs::fcntl_getfl(fd).map_err(|e| format!("dma-buf flags: {e}"))?;
    if !mode.intersects(rustix::fs::OFlags::RDWR | rustix::fs::OFlags::WRONLY) {
        return Err("the dma-buf was exported read-only: the copy cannot write it".to_owned());
    }
    Ok(())
}

/// A mapping of a whole dma-buf: read-only with a CPU access bracket around it (a frame's
/// reads), or writable without one (a capture's copy).
struct Mapping<'a> {
    fd: BorrowedFd<'a>,
    ptr: *mut std::ffi::c_void,
    len: usize,
    synced: bool,
}

impl<'a> Mapping<'a> {
    /// A shared mapping of the whole dma-buf with `prot`, no CPU access bracket yet.
    fn map(fd: BorrowedFd<'a>, prot: ProtFlags) -> Result<Self, String> {
        let len = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| format!("dma-buf size: {e}"))? as usize;
        // SAFETY: a fresh shared mapping of `len` bytes of a dma-buf; nothing else in this
        // process maps it at that address, and it is unmapped exactly once in Drop.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0) }
            .map_err(|e| format!("mmap of a dma-buf ({prot:?}): {e}"))?;
        Ok(Mapping {
            fd,
            ptr,
            len,
            synced: false,
        })
    }

    /// A shared writable mapping, without a CPU access bracket.
    fn writable(fd: BorrowedFd<'a>) -> Result<Self, String> {
        Self::map(fd, ProtFlags::READ | ProtFlags::WRITE)
    }

    /// A read-only mapping, bracketed for CPU reads when no writer is pending.
    fn new(fd: BorrowedFd<'a>) -> Result<Self, String> {
        let mut mapping = Self::map(fd, ProtFlags::READ)?;
        // Only when no writer is pending: SYNC_START would wait for it.
        let idle = rustix::event::poll(
            &mut [rustix::event::PollFd::new(
                &fd.as_fd(),
                rustix::event::PollFlags::IN,
            )],
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )
        .is_ok_and(|n| n > 0);
        let read = u64::from(sys::DMA_BUF_SYNC_READ);
        mapping.synced = idle && sys::dma_buf_sync(fd, sys::DMA_BUF_SYNC_START | read).is_ok();
        Ok(mapping)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until Drop; the returned borrow ends before.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        if self.synced {
            let read = u64::from(sys::DMA_BUF_SYNC_READ);
            let _ = sys::dma_buf_sync(self.fd, sys::DMA_BUF_SYNC_END | read);
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once, and no slice of
        // it outlives `self` (bytes() borrows self).
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}
