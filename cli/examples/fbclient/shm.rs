//! `fbclient shm`: a CPU client, the kind every compositor backend must show right. Each frame
//! is a picture of four quadrants in four colours of its own, written into a released wl_shm
//! buffer and committed; after its frame callback the output is read back and the window's
//! picture compared pixel for pixel: shown right, shown upside down (a renderer that got its
//! y axis wrong), or not shown (stale).
//!
//! It needs no kernel device, so it also judges a compositor on a machine without DRM (the
//! reference compositor's window backend under Xvfb).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use wayland_client::protocol::{wl_buffer::WlBuffer, wl_shm};

use crate::capture::{Image, Screencopy};
use crate::pixels::colour;
use crate::presentation;
use crate::session::{Attachable, Session};
use crate::wlclient::{Client, WlError, ANSWER_TIMEOUT};
use crate::{Common, FrameStats};

/// Two buffers: one shown, one written; a compositor that never releases stalls the client.
const BUFFERS: usize = 2;

/// An XRGB8888 wl_shm buffer on a memfd.
pub struct ShmBuffer {
    wl: WlBuffer,
    file: File,
}

impl Attachable for ShmBuffer {
    fn wl(&self) -> &WlBuffer {
        &self.wl
    }
}

impl ShmBuffer {
    fn new(
        client: &Client<Screencopy>,
        (width, height): (u32, u32),
        index: usize,
    ) -> Result<ShmBuffer, WlError> {
        let shm: wl_shm::WlShm = client
            .globals
            .bind(&client.qh, 1..=1, ())
            .map_err(|_| WlError::new("missing-global", "the compositor lacks wl_shm"))?;
        let size = width as usize * height as usize * 4;
        let memfd = rustix::fs::memfd_create("fbclient-shm", rustix::fs::MemfdFlags::CLOEXEC)
            .and_then(|fd| rustix::fs::ftruncate(&fd, size as u64).map(|()| fd))
            .map_err(|e| WlError::new("io", format!("memfd for a shm buffer: {e}")))?;
        let pool = shm.create_pool(memfd.as_fd(), size as i32, &client.qh, ());
        let wl = pool.create_buffer(
            0,
            width as i32,
            height as i32,
            width as i32 * 4,
            wl_shm::Format::Xrgb8888,
            &client.qh,
            index,
        );
        pool.destroy();
        Ok(ShmBuffer {
            wl,
            file: memfd.into(),
        })
    }

    fn write(&self, picture: &[u32]) -> Result<(), WlError> {
        let bytes: Vec<u8> = picture.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.file
            .write_all_at(&bytes, 0)
            .map_err(|e| WlError::new("io", format!("writing a shm buffer: {e}")))
    }
}

impl Drop for ShmBuffer {
    fn drop(&mut self) {
        self.wl.destroy();
    }
}

/// Frame `frame`'s picture, row after row: its four colours in the quadrants top-left,
/// top-right, bottom-left, bottom-right.
fn picture(tag: u8, frame: u32, (width, height): (u32, u32)) -> Vec<u32> {
    let quadrant = |q: u32| colour(tag, frame.wrapping_mul(4).wrapping_add(q));
    (0..height)
        .flat_map(|y| {
            (0..width).map(move |x| (u32::from(y >= height / 2) << 1) | u32::from(x >= width / 2))
        })
        .map(quadrant)
        .collect()
}

/// How the output showed a picture.
#[derive(Debug, PartialEq, Eq)]
enum Shown {
    Right,
    UpsideDown,
    Not,
}

/// Finds the picture in `image`: the window is where its colours are (the compositor places
/// it); compares that region with the picture and with the picture upside down.
fn judge(image: &Image, picture: &[u32], (width, height): (u32, u32)) -> Shown {
    let rgb = |p: u32| p & 0x00ff_ffff;
    let (w, h) = (width as usize, height as usize);
    let corners = [0, w - 1, (h - 1) * w, h * w - 1].map(|i| rgb(picture[i]));
    let ours = |p: u32| corners.contains(&rgb(p));
    let Some(first) = image.pixels.iter().position(|&p| ours(p)) else {
        return Shown::Not;
    };
    let (x0, y0) = (first as u32 % image.width, first as u32 / image.width);
    if x0 + width > image.width || y0 + height > image.height {
        return Shown::Not;
    }
    let region = |flip: bool| {
        (0..height).all(|y| {
            let source = if flip { height - 1 - y } else { y };
            (0..width).all(|x| {
                let out = image.pixels[((y0 + y) * image.width + x0 + x) as usize];
                rgb(out) == rgb(picture[(source * width + x) as usize])
            })
        })
    };
    if region(false) {
        Shown::Right
    } else if region(true) {
        Shown::UpsideDown
    } else {
        Shown::Not
    }
}

/// Runs `frames` frames, `interval` apart; `paced`: each written and committed as soon as the
/// last one's frame callback comes, and only the last one captured and judged.
pub fn run(
    common: &Common,
    frames: u32,
    interval: Duration,
    paced: bool,
) -> Result<String, WlError> {
    let size = common.size;
    let mut session = Session::with_buffers("fbclient shm", BUFFERS, |client, i| {
        ShmBuffer::new(client, size, i)
    })?;
    let mut stats = FrameStats::default();
    let mut upside_down = 0;
    // Every frame asks for its presentation feedback, as a player pacing itself does (not
    // when paced: its feedback comes when the frame is on screen, after the next commit).
    let feedback = presentation::bind(&mut session.client).filter(|_| !paced);
    let mut presented = 0;
    let mut replaced_busy = 0;
    let mut shown_buffer = None;
    for k in 0..frames {
        let index = session.released_buffer(ANSWER_TIMEOUT)?;
        let picture = picture(common.tag, k, size);
        session.buffers[index].write(&picture)?;
        let clock_at_commit = presentation::clock_now(&session.client);
        if let Some(feedback) = &feedback {
            presentation::request(&session.client, feedback, &session.window.surface, k);
        }
        let committed = session.commit(index, k)?;
        // The buffer this commit replaced was drawn by the frame whose callback came: a
        // compositor that copies wl_shm (every renderer uploads it) has its copy, and gives
        // it back with the commit that replaces it. A client with two buffers, such as
        // weston-simple-shm, draws its next frame as soon as this one's callback comes and
        // finds both busy if it has not.
        if let Some(replaced) = shown_buffer.replace(index) {
            session.client.roundtrip()?;
            replaced_busy += u32::from(!session.is_released(replaced));
        }
        let shown = session.frame_done(k, ANSWER_TIMEOUT)?;
        if paced && k + 1 < frames {
            stats.time(shown - committed);
            continue;
        }
        let verdict = judge(&session.capture()?, &picture, size);
        upside_down += u32::from(verdict == Shown::UpsideDown);
        stats.frame(shown - committed, verdict == Shown::Right);
        if feedback.is_some() && presentation::check(&mut session.client, k, clock_at_commit)? {
            presented += 1;
        }
        std::thread::sleep(interval);
    }
    let presented = match feedback {
        Some(_) => presented.to_string(),
        None => "-".to_owned(),
    };
    Ok(format!(
        "fbclient shm: {} upside_down={upside_down} presented={presented} \
         replaced_busy={replaced_busy} max_frame_ms={}",
        stats.counts(),
        stats.max_frame_ms()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(picture: &[u32], size: (u32, u32), at: (u32, u32), flip: bool) -> Image {
        let (width, height) = (64, 48);
        let mut pixels = vec![0xff20_2428; (width * height) as usize];
        for y in 0..size.1 {
            let source = if flip { size.1 - 1 - y } else { y };
            for x in 0..size.0 {
                pixels[((at.1 + y) * width + at.0 + x) as usize] =
                    picture[(source * size.0 + x) as usize];
            }
        }
        Image {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn quadrants_differ_and_change_every_frame() {
        let size = (4, 2);
        let first = picture(0, 0, size);
        assert_eq!(first[0], first[1]);
        assert_ne!(first[1], first[2], "left and right differ");
        assert_ne!(first[0], first[4], "top and bottom differ");
        assert!(picture(0, 1, size).iter().all(|p| !first.contains(p)));
    }

    #[test]
    fn finds_the_window_wherever_it_is_and_tells_a_flip() {
        let size = (8, 6);
        let pic = picture(1, 7, size);
        assert_eq!(
            judge(&image_with(&pic, size, (0, 0), false), &pic, size),
            Shown::Right
        );
        assert_eq!(
            judge(&image_with(&pic, size, (20, 9), false), &pic, size),
            Shown::Right
        );
        assert_eq!(
            judge(&image_with(&pic, size, (20, 9), true), &pic, size),
            Shown::UpsideDown
        );
        let old = picture(1, 6, size);
        assert_eq!(
            judge(&image_with(&old, size, (3, 3), false), &pic, size),
            Shown::Not
        );
        // One wrong pixel is not the picture.
        let mut image = image_with(&pic, size, (3, 3), false);
        image.pixels[(5 * 64 + 6) as usize] = 0xff00_0000;
        assert_eq!(judge(&image, &pic, size), Shown::Not);
    }
}
