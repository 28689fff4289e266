//! [`Device`]: an open V4L2 video capture node and the buffer-queue operations the checker
//! needs, each kernel answer turned into a clear [`Error`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use super::format::{Format, FormatDesc, FourCc, FrameInterval, FrameSize, Queue, QueueKind};
use super::Error;
use crate::mapping::Mapping;
use crate::sys::v4l2 as sys;

/// `VIDEO_MAJOR`: the character-device major number of every V4L2 node.
const VIDEO_MAJOR: u32 = 81;

/// What `VIDIOC_QUERYCAP` says about a capture node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The node's path.
    pub path: PathBuf,
    /// The driver's name (`vivid`, `uvcvideo`, `rkvdec`...).
    pub driver: String,
    /// The device's name.
    pub card: String,
    /// Where it sits (`platform:vivid-000`, `usb-0000:00:14.0-1`...).
    pub bus_info: String,
    /// The driver's version (`KERNEL_VERSION` packing: major, minor, patch).
    pub version: (u32, u32, u32),
    /// The node's capabilities (`device_caps`).
    pub caps: u32,
    /// Its video capture queues, single-planar first (a memory-to-memory device's one kind,
    /// whose OUTPUT queue is of the same kind).
    pub queues: Vec<QueueKind>,
    /// A memory-to-memory device (a codec or a converter): its capture buffers are filled
    /// from what is queued on its OUTPUT queue.
    pub m2m: bool,
}

/// One buffer's state, from `VIDIOC_QUERYBUF` or `VIDIOC_DQBUF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferState {
    /// Which buffer.
    pub index: u32,
    /// `V4L2_BUF_FLAG_*`.
    pub flags: u32,
    /// The frame counter.
    pub sequence: u32,
    /// Its timestamp (a memory-to-memory device copies the OUTPUT buffer's onto the CAPTURE
    /// buffer it fills from it).
    pub timestamp: Duration,
    /// Its memory planes.
    pub planes: Vec<PlaneState>,
}

impl BufferState {
    /// Whether the driver marked the frame as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub fn has_error(&self) -> bool {
        self.flags & sys::V4L2_BUF_FLAG_ERROR != 0
    }

    /// Whether it sits in the driver's incoming queue (`V4L2_BUF_FLAG_QUEUED`).
    pub fn is_queued(&self) -> bool {
        self.flags & sys::V4L2_BUF_FLAG_QUEUED != 0
    }
}

/// One memory plane of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneState {
    /// The plane's size in bytes.
    pub length: u32,
    /// Bytes of frame data in it.
    pub bytesused: u32,
    /// Where the data starts.
    pub data_offset: u32,
    /// Its mmap offset (the driver's cookie for this plane).
    pub mem_offset: u32,
}

/// An open video capture node.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    info: DeviceInfo,
}

impl Device {
    /// Opens `path` (non-blocking) and checks that it is a V4L2 node with a video capture
    /// queue; each way it can fail is its own [`Error`].
    pub fn open(path: impl AsRef<Path>) -> Result<Device, Error> {
        let path = path.as_ref().to_owned();
        let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NXIO | Errno::NODEV) => {
                return Err(Error::NoSuchDevice { path })
            }
            Err(Errno::ACCESS | Errno::PERM) => return Err(Error::PermissionDenied { path }),
            Err(Errno::ISDIR) => {
                return Err(Error::NotAVideoDevice {
                    path,
                    what: "a directory".into(),
                })
            }
            Err(errno) => return Err(io(&path, "open")(errno)),
        };
        let st = rustix::fs::fstat(&fd).map_err(io(&path, "fstat"))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type != FileType::CharacterDevice {
            let what = match file_type {
                FileType::RegularFile => "a regular file".to_owned(),
                FileType::BlockDevice => "a block device".to_owned(),
                other => format!("not a character device ({other:?})"),
            };
            return Err(Error::NotAVideoDevice { path, what });
        }
        let major = rustix::fs::major(st.st_rdev);
        if major != VIDEO_MAJOR {
            let minor = rustix::fs::minor(st.st_rdev);
            return Err(Error::NotAVideoDevice {
                what: format!(
                    "a character device of another subsystem ({}, major {major}; V4L2 nodes \
                     have major {VIDEO_MAJOR})",
                    char_subsystem(major, minor)
                ),
                path,
            });
        }
        let cap = match sys::vidioc_querycap(fd.as_fd()) {
            Ok(cap) => cap,
            Err(Errno::NOTTY | Errno::INVAL) => {
                return Err(Error::NotAVideoDevice {
                    path,
                    what: "a V4L2 node without VIDIOC_QUERYCAP (a sub-device or media node?)"
                        .into(),
                })
            }
            Err(errno) => return Err(io(&path, "VIDIOC_QUERYCAP")(errno)),
        };
        let caps = cap.node_caps();
        let card = cap.card();
        let mut queues = Vec::new();
        let m2m = caps & (sys::V4L2_CAP_VIDEO_M2M | sys::V4L2_CAP_VIDEO_M2M_MPLANE) != 0;
        if m2m {
            queues.push(if caps & sys::V4L2_CAP_VIDEO_M2M != 0 {
                QueueKind::SinglePlanar
            } else {
                QueueKind::MultiPlanar
            });
        } else if caps & sys::V4L2_CAP_TOUCH == 0 {
            if caps & sys::V4L2_CAP_VIDEO_CAPTURE != 0 {
                queues.push(QueueKind::SinglePlanar);
            }
            if caps & sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE != 0 {
                queues.push(QueueKind::MultiPlanar);
            }
        }
        if queues.is_empty() {
            return Err(Error::NoCaptureQueue {
                path,
                card,
                kinds: node_kinds(caps),
            });
        }
        let info = DeviceInfo {
            path,
            driver: cap.driver(),
            card,
            bus_info: cap.bus_info(),
            version: (
                cap.version >> 16,
                (cap.version >> 8) & 0xff,
                cap.version & 0xff,
            ),
            caps,
            queues,
            m2m,
        };
        Ok(Device { fd, info })
    }

    /// The first /dev/video* node (in number order) that [`Device::open`] accepts and that
    /// captures on its own (not a memory-to-memory device).
    pub fn find_capture() -> Result<PathBuf, Error> {
        let (looked_at, found) = Device::find(|d| !d.info().m2m);
        found
            .map(|d| d.info.path)
            .ok_or(Error::NoCaptureDevice { looked_at })
    }

    /// The first /dev/video* node (in number order) that opens and satisfies `wanted`, and
    /// how many nodes there are.
    pub fn find(mut wanted: impl FnMut(&Device) -> bool) -> (usize, Option<Device>) {
        let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let n = name.strip_prefix("video")?.parse().ok()?;
                        Some((n, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        let found = nodes
            .iter()
            .filter_map(|(_, path)| Device::open(path).ok())
            .find(|d| wanted(d));
        (nodes.len(), found)
    }

    /// What the node is.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// The formats `queue` offers (`VIDIOC_ENUM_FMT`).
    pub fn formats(&self, queue: impl Into<Queue>) -> Result<Vec<FormatDesc>, Error> {
        let queue = queue.into();
        let mut formats = Vec::new();
        for index in 0.. {
            let mut desc = sys::V4l2FmtDesc {
                index,
                type_: queue.buf_type(),
                ..Default::default()
            };
            match sys::vidioc_enum_fmt(self.fd.as_fd(), &mut desc) {
                Ok(()) => formats.push(FormatDesc {
                    fourcc: FourCc(desc.pixelformat),
                    description: desc.description(),
                    flags: desc.flags,
                }),
                Err(Errno::INVAL) => break,
                Err(errno) => return Err(self.io("VIDIOC_ENUM_FMT")(errno)),
            }
        }
        Ok(formats)
    }

    /// The frame sizes the driver lists for `fourcc` (empty where it lists none).
    pub fn frame_sizes(&self, fourcc: FourCc) -> Vec<FrameSize> {
        let mut sizes = Vec::new();
        for index in 0..256 {
            let mut e = sys::V4l2FrmSizeEnum {
                index,
                pixel_format: fourcc.0,
                ..Default::default()
            };
            if sys::vidioc_enum_framesizes(self.fd.as_fd(), &mut e).is_err() {
                break;
            }
            let s = e.size;
            match e.type_ {
                sys::V4L2_FRMSIZE_TYPE_DISCRETE => sizes.push(FrameSize::Discrete {
                    width: s[0],
                    height: s[1],
                }),
                sys::V4L2_FRMSIZE_TYPE_CONTINUOUS | sys::V4L2_FRMSIZE_TYPE_STEPWISE => {
                    sizes.push(FrameSize::Stepwise {
                        min_width: s[0],
                        max_width: s[1],
                        step_width: s[2],
                        min_height: s[3],
                        max_height: s[4],
                        step_height: s[5],
                    });
                    break;
                }
                _ => break,
            }
        }
        sizes
    }

    /// The current format of `queue` (`VIDIOC_G_FMT`).
    pub fn format(&self, queue: impl Into<Queue>) -> Result<Format, Error> {
        let queue = queue.into();
        let mut f = sys::V4l2Format::new(queue.buf_type());
        sys::vidioc_g_fmt(self.fd.as_fd(), &mut f).map_err(self.io("VIDIOC_G_FMT"))?;
        Ok(Format::from_sys(queue.kind, &f))
    }

    /// Sets `queue`'s format to `fourcc` and, if given, `size` (`VIDIOC_S_FMT`); returns what
    /// the driver set, which may differ (drivers adjust to what they can do).
    pub fn set_format(
        &self,
        queue: impl Into<Queue>,
        fourcc: FourCc,
        size: Option<(u32, u32)>,
    ) -> Result<Format, Error> {
        let queue = queue.into();
        let mut f = sys::V4l2Format::new(queue.buf_type());
        sys::vidioc_g_fmt(self.fd.as_fd(), &mut f).map_err(self.io("VIDIOC_G_FMT"))?;
        match queue.kind {
            QueueKind::SinglePlanar => {
                let pix = f.pix_mut();
                pix.pixelformat = fourcc.0;
                if let Some((w, h)) = size {
                    (pix.width, pix.height) = (w, h);
                }
                pix.bytesperline = 0;
                pix.sizeimage = 0;
            }
            QueueKind::MultiPlanar => {
                let mp = f.pix_mp_mut();
                mp.pixelformat = fourcc.0;
                if let Some((w, h)) = size {
                    (mp.width, mp.height) = (w, h);
                }
                mp.plane_fmt = Default::default();
            }
        }
        match sys::vidioc_s_fmt(self.fd.as_fd(), &mut f) {
            Ok(()) => Ok(Format::from_sys(queue.kind, &f)),
            Err(Errno::BUSY) => Err(self.busy("VIDIOC_S_FMT")),
            Err(errno) => Err(self.io("VIDIOC_S_FMT")(errno)),
        }
    }

    /// Asks capture queue `queue` for `fps` frames a second (`VIDIOC_S_PARM`): a device keeps
    /// the rate the last client set (GStreamer's v4l2src leaves vivid at its fastest). Returns
    /// the frame interval the driver chose (its nearest), or `None` when it has none a client
    /// can set.
    pub fn set_frame_rate(
        &self,
        queue: QueueKind,
        fps: u32,
    ) -> Result<Option<FrameInterval>, Error> {
        let mut parm = sys::V4l2StreamParm::new(queue.buf_type());
        match sys::vidioc_g_parm(self.fd.as_fd(), &mut parm) {
            Ok(()) => {}
            Err(Errno::NOTTY | Errno::INVAL) => return Ok(None),
            Err(errno) => return Err(self.io("VIDIOC_G_PARM")(errno)),
        }
        if parm.capture.capability & sys::V4L2_CAP_TIMEPERFRAME == 0 {
            return Ok(None);
        }
        parm.capture.timeperframe = sys::V4l2Fract {
            numerator: 1,
            denominator: fps.max(1),
        };
        match sys::vidioc_s_parm(self.fd.as_fd(), &mut parm) {
            Ok(()) => {
                let t = parm.capture.timeperframe;
                Ok((t.denominator != 0).then_some(FrameInterval {
                    seconds: t.numerator,
                    per: t.denominator,
                }))
            }
            Err(Errno::BUSY) => Err(self.busy("VIDIOC_S_PARM")),
            Err(errno) => Err(self.io("VIDIOC_S_PARM")(errno)),
        }
    }

    /// What the queue's buffers can be (`V4L2_BUF_CAP_*`, from `VIDIOC_REQBUFS` with count 0,
    /// which also frees buffers this file allocated). Fails with [`Error::ExpbufUnsupported`]
    /// when the driver has no MMAP buffers, and [`Error::DeviceBusy`] when another file owns
    /// the queue.
    pub fn buffer_caps(&self, queue: impl Into<Queue>) -> Result<u32, Error> {
        let queue = queue.into();
        match self.reqbufs(queue, sys::V4L2_MEMORY_MMAP, 0) {
            Ok(req) => Ok(req.capabilities),
            Err(Errno::BUSY) => Err(self.busy("VIDIOC_REQBUFS")),
            Err(Errno::NOTTY) => Err(Error::ExpbufUnsupported {
                path: self.info.path.clone(),
                why: "the driver has no streaming I/O (VIDIOC_REQBUFS: ENOTTY), only read()".into(),
            }),
            Err(Errno::INVAL) => {
                let others: Vec<&str> = [
                    (sys::V4L2_MEMORY_USERPTR, "USERPTR"),
                    (sys::V4L2_MEMORY_DMABUF, "DMABUF"),
                ]
                .into_iter()
                .filter(|&(memory, _)| self.reqbufs(queue, memory, 0).is_ok())
                .map(|(_, name)| name)
                .collect();
                let takes = if others.is_empty() {
                    "no other kind either".to_owned()
                } else {
                    format!("it takes only {} buffers", others.join(" and "))
                };
                Err(Error::ExpbufUnsupported {
                    path: self.info.path.clone(),
                    why: format!(
                        "the driver allocates no MMAP buffers (VIDIOC_REQBUFS(MMAP): EINVAL; \
                         {takes})"
                    ),
                })
            }
            Err(errno) => Err(self.io("VIDIOC_REQBUFS")(errno)),
        }
    }

    /// Allocates `count` MMAP buffers on `queue` (`VIDIOC_REQBUFS`); returns how many the
    /// driver made. `count` 0 frees them.
    pub fn allocate(&self, queue: impl Into<Queue>, count: u32) -> Result<u32, Error> {
        match self.reqbufs(queue.into(), sys::V4L2_MEMORY_MMAP, count) {
            Ok(req) => Ok(req.count),
            Err(Errno::BUSY) => Err(self.busy("VIDIOC_REQBUFS")),
            Err(errno) => Err(self.io("VIDIOC_REQBUFS")(errno)),
        }
    }

    fn reqbufs(
        &self,
        queue: Queue,
        memory: u32,
        count: u32,
    ) -> rustix::io::Result<sys::V4l2RequestBuffers> {
        let mut req = sys::V4l2RequestBuffers {
            count,
            type_: queue.buf_type(),
            memory,
            ..Default::default()
        };
        sys::vidioc_reqbufs(self.fd.as_fd(), &mut req)?;
        Ok(req)
    }

    /// Buffer `index`'s state; `planes` is the format's memory-plane count.
    pub fn query(
        &self,
        queue: impl Into<Queue>,
        index: u32,
        planes: usize,
    ) -> Result<BufferState, Error> {
        let queue = queue.into();
        let mut buf = sys::V4l2Buffer::new(queue.buf_type(), sys::V4L2_MEMORY_MMAP, index);
        let mut raw = plane_array(queue.kind, planes);
        sys::vidioc_querybuf(self.fd.as_fd(), &mut buf, &mut raw)
            .map_err(self.io("VIDIOC_QUERYBUF"))?;
        Ok(buffer_state(queue.kind, &buf, &raw))
    }

    /// Exports memory plane `plane` of buffer `index` as a dma-buf (`VIDIOC_EXPBUF`); a driver
    /// that cannot gives [`Error::ExpbufUnsupported`].
    pub fn export(
        &self,
        queue: impl Into<Queue>,
        index: u32,
        plane: u32,
    ) -> Result<OwnedFd, Error> {
        sys::vidioc_expbuf(self.fd.as_fd(), queue.into().buf_type(), index, plane).map_err(
            |errno| match errno {
                Errno::NOTTY | Errno::INVAL => Error::ExpbufUnsupported {
                    path: self.info.path.clone(),
                    why: format!(
                        "VIDIOC_EXPBUF of buffer {index} plane {plane} answered {}",
                        if errno == Errno::NOTTY {
                            "ENOTTY: the driver has no EXPBUF"
                        } else {
                            "EINVAL: its queue is not set up with exportable MMAP buffers"
                        }
                    ),
                },
                errno => self.io("VIDIOC_EXPBUF")(errno),
            },
        )
    }

    /// Queues buffer `index` for the driver to fill (`VIDIOC_QBUF`).
    pub fn queue_buffer(
        &self,
        queue: impl Into<Queue>,
        index: u32,
        planes: usize,
    ) -> Result<(), Error> {
        let queue = queue.into();
        let mut buf = sys::V4l2Buffer::new(queue.buf_type(), sys::V4L2_MEMORY_MMAP, index);
        let mut raw = plane_array(queue.kind, planes);
        sys::vidioc_qbuf(self.fd.as_fd(), &mut buf, &mut raw).map_err(self.io("VIDIOC_QBUF"))
    }

    /// Queues OUTPUT buffer `index` (one memory plane) holding `bytesused` bytes of input — a
    /// bitstream chunk, or a frame to convert — stamped `timestamp` (which the device copies
    /// onto the CAPTURE buffer it fills from it), and for a stateless decoder in `request`
    /// (`V4L2_BUF_FLAG_REQUEST_FD`). The kernel's answer is returned as is, for the caller to
    /// say which step failed.
    pub fn queue_input(
        &self,
        queue: impl Into<Queue>,
        index: u32,
        bytesused: u32,
        timestamp: Duration,
        request: Option<BorrowedFd<'_>>,
    ) -> rustix::io::Result<()> {
        let queue = queue.into();
        let mut buf = sys::V4l2Buffer::new(queue.buf_type(), sys::V4L2_MEMORY_MMAP, index);
        let mut raw = plane_array(queue.kind, 1);
        match raw.first_mut() {
            Some(plane) => plane.bytesused = bytesused,
            None => buf.bytesused = bytesused,
        }
        buf.timestamp = sys::Timeval {
            tv_sec: timestamp.as_secs() as i64,
            tv_usec: i64::from(timestamp.subsec_micros()),
        };
        if let Some(request) = request {
            use std::os::fd::AsRawFd;
            buf.flags |= sys::V4L2_BUF_FLAG_REQUEST_FD;
            buf.request_fd = request.as_raw_fd();
        }
        sys::vidioc_qbuf(self.fd.as_fd(), &mut buf, &mut raw)
    }

    /// Sets compound control `value` (a stateless decoder's per-frame parameters) in
    /// `request`, applied when the request runs (`VIDIOC_S_EXT_CTRLS`,
    /// `V4L2_CTRL_WHICH_REQUEST_VAL`); the kernel's answer as is.
    pub fn set_control_in_request<C: sys::CompoundControl>(
        &self,
        request: BorrowedFd<'_>,
        value: &mut C,
    ) -> rustix::io::Result<()> {
        sys::vidioc_s_ext_ctrl_in_request(self.fd.as_fd(), request, value)
    }

    /// Takes the next filled buffer, if one is ready (`VIDIOC_DQBUF` on the non-blocking fd).
    pub fn dequeue(
        &self,
        queue: impl Into<Queue>,
        planes: usize,
    ) -> Result<Option<BufferState>, Error> {
        let queue = queue.into();
        let mut buf = sys::V4l2Buffer::new(queue.buf_type(), sys::V4L2_MEMORY_MMAP, 0);
        let mut raw = plane_array(queue.kind, planes);
        match sys::vidioc_dqbuf(self.fd.as_fd(), &mut buf, &mut raw) {
            Ok(()) => Ok(Some(buffer_state(queue.kind, &buf, &raw))),
            Err(Errno::AGAIN) => Ok(None),
            Err(errno) => Err(self.io("VIDIOC_DQBUF")(errno)),
        }
    }

    /// Waits up to `timeout` for a filled buffer to be ready to dequeue (poll, POLLIN).
    pub fn wait_frame(&self, timeout: Duration) -> Result<bool, Error> {
        Ok(self.poll(PollFlags::IN, timeout)?.contains(PollFlags::IN))
    }

    /// Waits up to `timeout` for any of `events` (POLLIN: a capture buffer is done; POLLOUT:
    /// an OUTPUT buffer is; POLLPRI: an event is pending); what happened.
    pub fn poll(&self, events: PollFlags, timeout: Duration) -> Result<PollFlags, Error> {
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, events)];
        loop {
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Ok(PollFlags::empty()),
                Ok(_) => return Ok(fds[0].revents()),
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(self.io("poll(video)")(errno)),
            }
        }
    }

    /// Asks for events of `type_` (`V4L2_EVENT_*`; `VIDIOC_SUBSCRIBE_EVENT`).
    pub fn subscribe(&self, type_: u32) -> Result<(), Error> {
        sys::vidioc_subscribe_event(self.fd.as_fd(), type_)
            .map_err(self.io("VIDIOC_SUBSCRIBE_EVENT"))
    }

    /// The next pending event's type, if one is pending (`VIDIOC_DQEVENT`).
    pub fn next_event(&self) -> Result<Option<u32>, Error> {
        match sys::vidioc_dqevent(self.fd.as_fd()) {
            Ok(event) => Ok(Some(event.type_)),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(self.io("VIDIOC_DQEVENT")(errno)),
        }
    }

    /// Tells a stateful decoder to drain (`VIDIOC_DECODER_CMD`, `V4L2_DEC_CMD_STOP`): it
    /// decodes what it was given and marks its last capture buffer `V4L2_BUF_FLAG_LAST`.
    pub fn drain(&self) -> Result<(), Error> {
        sys::vidioc_decoder_cmd(self.fd.as_fd(), sys::V4L2_DEC_CMD_STOP)
            .map_err(self.io("VIDIOC_DECODER_CMD(STOP)"))
    }

    /// Maps buffer `index`'s first memory plane (MMAP memory) into this process, to write an
    /// OUTPUT buffer's input or read a coded capture buffer.
    pub fn map(&self, queue: impl Into<Queue>, index: u32) -> Result<Mapping, Error> {
        let queue = queue.into();
        let state = self.query(queue, index, 1)?;
        let plane = state.planes.first().copied().unwrap_or(PlaneState {
            length: 0,
            bytesused: 0,
            data_offset: 0,
            mem_offset: 0,
        });
        Mapping::new(
            self.fd.as_fd(),
            plane.length as usize,
            plane.mem_offset.into(),
        )
        .map_err(self.io("mmap(video buffer)"))
    }

    /// Starts streaming `queue` (`VIDIOC_STREAMON`).
    pub fn stream_on(&self, queue: impl Into<Queue>) -> Result<(), Error> {
        match sys::vidioc_streamon(self.fd.as_fd(), queue.into().buf_type()) {
            Ok(()) => Ok(()),
            Err(Errno::BUSY) => Err(self.busy("VIDIOC_STREAMON")),
            Err(errno) => Err(self.io("VIDIOC_STREAMON")(errno)),
        }
    }

    /// Starts streaming `queue` until the returned guard is dropped (then `VIDIOC_STREAMOFF`,
    /// whatever path the caller leaves by).
    pub fn stream(&self, queue: impl Into<Queue>) -> Result<Streaming<'_>, Error> {
        let queue = queue.into();
        self.stream_on(queue)?;
        Ok(Streaming {
            device: self,
            queue,
        })
    }

    /// Stops streaming `queue`; every buffer comes back dequeued (`VIDIOC_STREAMOFF`).
    pub fn stream_off(&self, queue: impl Into<Queue>) -> Result<(), Error> {
        sys::vidioc_streamoff(self.fd.as_fd(), queue.into().buf_type())
            .map_err(self.io("VIDIOC_STREAMOFF"))
    }

    /// The error of `op` answering `errno` on this device.
    pub(super) fn failed(&self, op: &'static str, errno: Errno) -> Error {
        io(&self.info.path, op)(errno)
    }

    fn io(&self, op: &'static str) -> impl FnOnce(Errno) -> Error + '_ {
        io(&self.info.path, op)
    }

    fn busy(&self, op: &'static str) -> Error {
        Error::DeviceBusy {
            path: self.info.path.clone(),
            op,
        }
    }
}

/// A queue streaming until dropped ([`Device::stream`]).
#[derive(Debug)]
pub struct Streaming<'a> {
    device: &'a Device,
    queue: Queue,
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        let _ = self.device.stream_off(self.queue);
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> Error + 'a {
    move |errno| match errno {
        Errno::BUSY => Error::DeviceBusy {
            path: path.to_owned(),
            op,
        },
        errno => Error::Io {
            path: path.to_owned(),
            op,
            errno,
        },
    }
}

/// The plane array a multi-planar buffer ioctl needs (none for single-planar).
fn plane_array(queue: QueueKind, planes: usize) -> Vec<sys::V4l2Plane> {
    match queue {
        QueueKind::SinglePlanar => Vec::new(),
        QueueKind::MultiPlanar => {
            vec![sys::V4l2Plane::default(); planes.clamp(1, sys::VIDEO_MAX_PLANES)]
        }
    }
}

fn buffer_state(queue: QueueKind, buf: &sys::V4l2Buffer, raw: &[sys::V4l2Plane]) -> BufferState {
    let planes = match queue {
        QueueKind::SinglePlanar => vec![PlaneState {
            length: buf.length,
            bytesused: buf.bytesused,
            data_offset: 0,
            mem_offset: buf.offset(),
        }],
        QueueKind::MultiPlanar => raw
            .iter()
            .take(buf.length as usize)
            .map(|p| PlaneState {
                length: p.length,
                bytesused: p.bytesused,
                data_offset: p.data_offset,
                mem_offset: p.mem_offset(),
            })
            .collect(),
    };
    let t = buf.timestamp;
    BufferState {
        index: buf.index,
        flags: buf.flags,
        sequence: buf.sequence,
        timestamp: Duration::from_secs(t.tv_sec.max(0) as u64)
            + Duration::from_micros(t.tv_usec.clamp(0, 999_999) as u64),
        planes,
    }
}

/// What a V4L2 node without a video capture queue is, in words.
fn node_kinds(caps: u32) -> String {
    const KINDS: &[(u32, &str)] = &[
        (sys::V4L2_CAP_VIDEO_OUTPUT, "a video output node"),
        (sys::V4L2_CAP_VIDEO_OUTPUT_MPLANE, "a video output node"),
        (sys::V4L2_CAP_VBI_CAPTURE, "a VBI capture node"),
        (
            sys::V4L2_CAP_SLICED_VBI_CAPTURE,
            "a sliced VBI capture node",
        ),
        (sys::V4L2_CAP_META_CAPTURE, "a metadata capture node"),
        (sys::V4L2_CAP_META_OUTPUT, "a metadata output node"),
        (sys::V4L2_CAP_SDR_CAPTURE, "a software-defined radio node"),
        (sys::V4L2_CAP_TOUCH, "a touch sensor node"),
    ];
    let mut kinds: Vec<&str> = KINDS
        .iter()
        .filter(|(bit, _)| caps & bit != 0)
        .map(|&(_, name)| name)
        .collect();
    kinds.dedup();
    if kinds.is_empty() {
        format!("a node with capabilities {caps:#010x}")
    } else {
        kinds.join(" and ")
    }
}

/// The subsystem of a character device, from sysfs (`drm`, `mem`, `tty`...).
fn char_subsystem(major: u32, minor: u32) -> String {
    std::fs::read_link(format!("/sys/dev/char/{major}:{minor}/subsystem"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_files_are_refused_with_what_they_are() {
        match Device::open("/dev/null") {
            Err(Error::NotAVideoDevice { what, .. }) => {
                assert!(what.contains("major 1"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        match Device::open("/etc/hostname") {
            Err(Error::NotAVideoDevice { what, .. }) => assert_eq!(what, "a regular file"),
            Err(Error::NoSuchDevice { .. }) => {} // a host without the file
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Device::open("/dev"),
            Err(Error::NotAVideoDevice { .. })
        ));
        assert!(matches!(
            Device::open("/dev/video-that-does-not-exist"),
            Err(Error::NoSuchDevice { .. })
        ));
    }

    #[test]
    fn node_kinds_are_named() {
        assert_eq!(
            node_kinds(sys::V4L2_CAP_VIDEO_OUTPUT),
            "a video output node"
        );
        assert_eq!(
            node_kinds(sys::V4L2_CAP_VIDEO_OUTPUT | sys::V4L2_CAP_VIDEO_OUTPUT_MPLANE),
            "a video output node"
        );
        assert_eq!(
            node_kinds(sys::V4L2_CAP_META_CAPTURE),
            "a metadata capture node"
        );
        assert_eq!(node_kinds(0x4), "a node with capabilities 0x00000004");
    }
}
