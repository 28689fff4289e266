//! wp_presentation, as a player uses it for A/V sync: feedback requested with each commit, and
//! checked when it comes — presented (not discarded), at a time on the presentation clock
//! between the commit and now, with the output's refresh period.

use std::time::Duration;

use wayland_client::protocol::wl_surface::WlSurface;
use wayland_client::{Connection, Dispatch, QueueHandle};
use wayland_protocols::wp::presentation_time::client::{
    wp_presentation::{self, WpPresentation},
    wp_presentation_feedback::{self, WpPresentationFeedback},
};

use crate::capture::Screencopy;
use crate::wlclient::{Client, State, WlError};

/// What the compositor said about one frame's presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Shown at `time` on the presentation clock, with this refresh period.
    Presented {
        time: Duration,
        refresh_ns: u32,
    },
    Discarded,
}

/// The presentation clock and the feedback so far, by frame.
#[derive(Debug, Default)]
pub struct Presentation {
    clock: Option<u32>,
    feedback: Vec<(u32, Feedback)>,
}

/// The user data of the presentation objects: the frame a feedback is for.
pub struct ForFrame(u32);

/// The wp_presentation global, if the compositor offers it.
pub fn bind(client: &mut Client<Screencopy>) -> Option<WpPresentation> {
    let presentation = client.globals.bind(&client.qh, 1..=1, ForFrame(0)).ok()?;
    // The clock_id event follows the bind.
    client
        .dispatch_until(crate::wlclient::ANSWER_TIMEOUT, |s| {
            s.ext.presentation.clock.is_some()
        })
        .ok()?;
    Some(presentation)
}

/// Asks for frame `frame`'s feedback (before its commit).
pub fn request(
    client: &Client<Screencopy>,
    presentation: &WpPresentation,
    surface: &WlSurface,
    frame: u32,
) {
    presentation.feedback(surface, &client.qh, ForFrame(frame));
}

/// The time now on `clock`.
fn now(clock: u32) -> Duration {
    let id = match clock {
        1 => rustix::time::ClockId::Monotonic,
        _ => rustix::time::ClockId::Realtime,
    };
    let t = rustix::time::clock_gettime(id);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The presentation clock's time now (CLOCK_MONOTONIC if the compositor said so).
pub fn clock_now(client: &Client<Screencopy>) -> Duration {
    now(client.state.ext.presentation.clock.unwrap_or(1))
}

/// Waits for frame `frame`'s feedback and checks it against the time it was committed
/// (`committed`, on the presentation clock): `Ok(true)` presented as it should be, `Ok(false)`
/// discarded or at an impossible time.
pub fn check(
    client: &mut Client<Screencopy>,
    frame: u32,
    committed: Duration,
) -> Result<bool, WlError> {
    let came = |s: &State<Screencopy>| s.ext.presentation.feedback.iter().any(|(f, _)| *f == frame);
    client.dispatch_until(crate::wlclient::ANSWER_TIMEOUT, came)?;
    let now = clock_now(client);
    let feedback = client
        .state
        .ext
        .presentation
        .feedback
        .iter()
        .find(|(f, _)| *f == frame)
        .map(|(_, fb)| *fb);
    Ok(match feedback {
        Some(Feedback::Presented { time, refresh_ns }) => {
            committed <= time && time <= now && refresh_ns > 0
        }
        _ => false,
    })
}

impl Dispatch<WpPresentation, ForFrame> for State<Screencopy> {
    fn event(
        state: &mut Self,
        _: &WpPresentation,
        event: wp_presentation::Event,
        _: &ForFrame,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wp_presentation::Event::ClockId { clk_id } = event {
            state.ext.presentation.clock = Some(clk_id);
        }
    }
}

impl Dispatch<WpPresentationFeedback, ForFrame> for State<Screencopy> {
    fn event(
        state: &mut Self,
        _: &WpPresentationFeedback,
        event: wp_presentation_feedback::Event,
        frame: &ForFrame,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let feedback = match event {
            wp_presentation_feedback::Event::Presented {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
                refresh,
                ..
            } => Feedback::Presented {
                time: Duration::new(u64::from(tv_sec_hi) << 32 | u64::from(tv_sec_lo), tv_nsec),
                refresh_ns: refresh,
            },
            wp_presentation_feedback::Event::Discarded => Feedback::Discarded,
            _ => return,
        };
        state.ext.presentation.feedback.push((frame.0, feedback));
    }
}
