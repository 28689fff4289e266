//! The Request API as a stateless decoder needs it: the media device a video node belongs to,
//! and requests allocated on it — each filled with one OUTPUT buffer and the frame's controls,
//! queued, waited for (`POLLPRI` on the request fd) and reinitialised for the next frame.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::device::Device;
use super::Error;
use crate::sys::media;

/// The media controller node of a video device: where its requests are allocated.
#[derive(Debug)]
pub struct MediaDevice {
    fd: OwnedFd,
    path: PathBuf,
    model: String,
}

impl MediaDevice {
    /// The media device `video` belongs to: the one sysfs puts under the same parent device
    /// (the video node's `device`), else any /dev/media* — confirmed, either way, by the media
    /// controller itself: its `MEDIA_IOC_DEVICE_INFO` names the video node's bus.
    pub fn of(video: &Device) -> Result<MediaDevice, Error> {
        let bus = &video.info().bus_info;
        let mut candidates: Vec<PathBuf> = sysfs_media_node(video.path()).into_iter().collect();
        let mut all: Vec<PathBuf> = std::fs::read_dir("/dev")
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("media"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.sort();
        candidates.extend(all);
        for path in candidates {
            let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let Ok(fd) = rustix::fs::open(&path, flags, Mode::empty()) else {
                continue;
            };
            match media::media_ioc_device_info(fd.as_fd()) {
                Ok(info) if !bus.is_empty() && info.bus_info() == *bus => {
                    return Ok(MediaDevice {
                        fd,
                        path,
                        model: info.model(),
                    })
                }
                _ => continue,
            }
        }
        Err(Error::NoMediaDevice {
            path: video.path().to_owned(),
            card: video.info().card.clone(),
            bus: bus.clone(),
        })
    }

    /// Its path (`/dev/mediaN`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its model, as the media controller names it.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// A new request (`MEDIA_IOC_REQUEST_ALLOC`).
    pub fn request(&self) -> Result<Request, Errno> {
        media::media_ioc_request_alloc(self.fd.as_fd()).map(|fd| Request { fd })
    }
}

/// One request.
#[derive(Debug)]
pub struct Request {
    fd: OwnedFd,
}

impl Request {
    /// Queues it, filled (`MEDIA_REQUEST_IOC_QUEUE`).
    pub fn queue(&self) -> Result<(), Errno> {
        media::media_request_ioc_queue(self.fd.as_fd())
    }

    /// Waits up to `timeout` for it to complete (its fd polls `POLLPRI`).
    pub fn wait(&self, timeout: Duration) -> Result<bool, Errno> {
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::PRI)];
        loop {
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(fds[0].revents().contains(PollFlags::PRI)),
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(errno),
            }
        }
    }

    /// Empties it for the next frame (`MEDIA_REQUEST_IOC_REINIT`).
    pub fn reinit(&self) -> Result<(), Errno> {
        media::media_request_ioc_reinit(self.fd.as_fd())
    }
}

impl AsFd for Request {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The media controller node under the same parent device as `video`, from sysfs.
pub fn sysfs_media_node(video: &Path) -> Option<PathBuf> {
    let name = video.file_name()?;
    let parent = std::fs::canonicalize(
        Path::new("/sys/class/video4linux")
            .join(name)
            .join("device"),
    )
    .ok()?;
    let mut found: Vec<String> = std::fs::read_dir("/sys/bus/media/devices")
        .ok()?
        .flatten()
        .filter(|m| std::fs::canonicalize(m.path()).is_ok_and(|real| real.starts_with(&parent)))
        .map(|m| m.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found.first().map(|m| Path::new("/dev").join(m))
}
