//! A software GPU: the output's frames are drawn on a worker thread, as a GPU would draw them
//! while the compositor's loop goes on. Each frame comes with a real kernel fence (a vgem
//! fence, when vgem is there) that signals when the worker has finished reading the clients'
//! buffers: the read fence the compositor gives fencebridge, exactly as a GPU compositor hands
//! over its render job's fence. The finished frame comes back to the loop on a calloop channel.
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
use smithay::backend::allocator::Buffer as _;
use smithay::reexports::calloop::channel::{self, Channel};

use crate::render::{Canvas, PixelFormat, Plane, SourceImage};

/// What one client buffer contributes to a frame.
pub enum Layer {
    /// A dma-buf, read by the worker.
    Dmabuf { buffer: Dmabuf, x: u32 },
    /// Pixels already copied out of a wl_shm pool on the loop thread.
    Pixels {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        bytes: Vec<u8>,
        x: u32,
    },
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

/// The worker's handle.
pub struct SoftGpu {
    jobs: mpsc::Sender<(Job, Canvas)>,
    vgem: Option<Vgem>,
}

impl SoftGpu {
    /// Starts the worker; its frames arrive on the returned channel. Each frame reads its
    /// buffers only after `min_frame`, like a loaded GPU, so that a frame's reads can outlast a
    /// client's next commit (the case where releasing the client's buffer must wait, and where
    /// a fencing client's next write must wait for the read fence).
    pub fn start(min_frame: Duration) -> std::io::Result<(SoftGpu, Channel<Finished>)> {
        let (jobs, queue) = mpsc::channel::<(Job, Canvas)>();
        let (finished, channel) = channel::channel();
        thread::Builder::new()
            .name("soft-gpu".to_owned())
            .spawn(move || {
                for (job, mut canvas) in queue {
                    // A loaded GPU: earlier work keeps it busy, and the frame's reads come at
                    // the end of its time, as late as they can.
                    thread::sleep(min_frame);
                    let errors = draw(&mut canvas, &job);
                    if let Some(fence) = job.done {
                        if let Err(e) = fence.signal() {
                            tracing::warn!("nested: cannot signal the frame's fence: {e}");
                        }
                    }
                    if finished.send(Finished { canvas, errors }).is_err() {
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
        let fence = self.vgem.as_ref().and_then(|vgem| match read_fence(vgem) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!("nested: no read fence for this frame: {e}");
                None
            }
        });
        let (done, fence) = fence.unzip();
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
        let _ = self.jobs.send((job, canvas));
    }
}

/// A pending vgem fence, and the same fence as a sync_file.
fn read_fence(vgem: &Vgem) -> fencebridge::Result<(VgemFence, SyncFile)> {
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
    for layer in &job.layers {
        let drawn = match layer {
            Layer::Dmabuf { buffer, x } => draw_dmabuf(canvas, buffer, *x),
            Layer::Pixels {
                format,
                width,
                height,
                stride,
                bytes,
                x,
            } => SourceImage::new(*format, *width, *height, &[Plane::new(bytes, 0, *stride)])
                .map(|image| canvas.blit(&image, *x as i32, 0))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = drawn {
            errors.push(e);
        }
    }
    errors
}

fn draw_dmabuf(canvas: &mut Canvas, dmabuf: &Dmabuf, x: u32) -> Result<(), String> {
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
    canvas.blit(&image, x as i32, 0);
    if dmabuf.y_inverted() {
        canvas.flip_vertically(x, 0, image.width(), image.height());
    }
    Ok(())
}

/// A read-only mapping of a whole dma-buf, with a CPU access bracket around it.
struct Mapping<'a> {
    fd: BorrowedFd<'a>,
    ptr: *mut std::ffi::c_void,
    len: usize,
    synced: bool,
}

impl<'a> Mapping<'a> {
    fn new(fd: BorrowedFd<'a>) -> Result<Self, String> {
        let len = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| format!("dma-buf size: {e}"))? as usize;
        // SAFETY: a fresh shared read-only mapping of `len` bytes of a dma-buf; nothing else in
        // this process maps it at that address, and it is unmapped exactly once in Drop.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| format!("mmap of a dma-buf: {e}"))?;
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
        let synced = idle && sys::dma_buf_sync(fd, sys::DMA_BUF_SYNC_START | read).is_ok();
        Ok(Mapping {
            fd,
            ptr,
            len,
            synced,
        })
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
