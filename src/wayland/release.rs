//! Giving buffers back: the renderer reports its reads ([`FenceBridgeState::surface_read`]),
//! the bridge puts the read fence on the client's dma-bufs, the release books say what is due,
//! and this module does it — a release point signalled by the read fence itself (imported into
//! the point: no CPU wait), a `wl_buffer.release` held back until the read fence signals (by
//! keeping smithay's renderer hold on the buffer until then).
//!
//! A read is queued where it is reported and booked from the loop: reporting it takes no lock
//! on smithay's surface state (so a render walk inside `with_states` or
//! `with_surface_tree_*` may report it) and needs nothing but the bridge's own state (so a
//! render loop that holds borrows of the compositor's other fields may report it). The queue
//! is booked before anything else could change what it is about: when the loop next turns (a
//! calloop ping), and first thing in every commit and destruction hook, so a read is always
//! booked against the buffer it read, before the commit that replaces that buffer.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use smithay::backend::renderer::utils::{Buffer as RendererBuffer, RendererSurfaceStateUserData};
use smithay::reexports::calloop::ping::make_ping;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, Resource};
use smithay::wayland::compositor;
use smithay::wayland::dmabuf::get_dmabuf;

use super::surface::{ClientPoint, Due, SurfaceBooks};
use super::{wait, FenceBridgeHandler, FenceBridgeState};
use crate::bridge::plan::{self, BufferKind};
use crate::bridge::release::ReleaseEvent;
use crate::fence::{dmabuf, Access, SyncFile};
use crate::source::SyncFileSource;

/// A reported read, until the loop books it.
#[derive(Debug)]
pub(crate) struct QueuedRead {
    surface: WlSurface,
    fence: Option<SyncFile>,
}

impl FenceBridgeState {
    /// The renderer is done sampling `surface`'s current buffer once `read` signals (`None`:
    /// done already, as after a CPU copy). Call it after every frame, output or capture that
    /// read the surface, with the fence that pass ends with (smithay's `SyncPoint::export()`);
    /// a fence that covers earlier passes too, as one in-order GPU queue gives.
    ///
    /// Where it goes in a render loop: right where the frame's fence is known, for each surface
    /// the frame drew — inside the render walk if that is where it is
    /// (`with_surface_tree_downward`, `with_states`: it takes no lock on the surface), with only
    /// the bridge's state borrowed (`self.fencebridge.surface_read(..)` while `self.backend` is
    /// borrowed for the frame). It must come before the loop dispatches the clients again, that
    /// is, anywhere in the frame's own event callback.
    ///
    /// What it drives, once the loop books it (at its next turn, or first thing in the next
    /// commit): the read fence is put on every distinct dma-buf of the buffer as a read fence
    /// (unless [`Config::renderer_publishes_reads`](super::Config::renderer_publishes_reads)),
    /// so a fencing producer's next GPU write waits for it; the surface's release point is
    /// signalled from this fence once the buffer is replaced; a non-fencing producer's
    /// `wl_buffer.release` waits for it. The deferral works with smithay's renderer utilities
    /// (`on_commit_buffer_handler`), whose hold on the buffer the bridge keeps until the fence
    /// signals.
    pub fn surface_read(&mut self, surface: &WlSurface, read: Option<SyncFile>) {
        if self.reads.is_empty() {
            if let Some(wake) = &self.read_wake {
                wake.ping();
            }
        }
        self.reads.push(QueuedRead {
            surface: surface.clone(),
            fence: read,
        });
    }
}

/// [`FenceBridgeState::surface_read`], for a caller that has the whole compositor state at hand.
pub fn surface_read<D: FenceBridgeHandler>(
    state: &mut D,
    surface: &WlSurface,
    read: Option<SyncFile>,
) {
    state.fencebridge_state().surface_read(surface, read);
}

/// Makes the loop book reported reads at its next turn (once per compositor; from a hook,
/// where the loop is at hand).
pub(crate) fn wake_for_reads<D: FenceBridgeHandler>(state: &mut D) {
    if state.fencebridge_state().read_wake.is_some() {
        return;
    }
    let (wake, woken) = match make_ping() {
        Ok(ping) => ping,
        Err(e) => {
            tracing::error!("fencebridge: no ping for reads ({e}): they wait for a commit");
            return;
        }
    };
    let inserted = state
        .loop_handle()
        .insert_source(woken, |(), &mut (), state| book_reads(state));
    match inserted {
        Ok(_) => {
            let bridge = state.fencebridge_state();
            if !bridge.reads.is_empty() {
                wake.ping();
            }
            bridge.read_wake = Some(wake);
        }
        Err(e) => tracing::error!(
            "fencebridge: cannot wake the loop for reads ({}): they wait for a commit",
            e.error
        ),
    }
}

/// Books the reads reported so far, in order, and does what they make due. Called outside
/// `with_states` only (from the loop and the hooks).
pub(crate) fn book_reads<D: FenceBridgeHandler>(state: &mut D) {
    let bridge = state.fencebridge_state();
    if bridge.reads.is_empty() {
        return;
    }
    let reads = std::mem::take(&mut bridge.reads);
    let renderer_publishes = bridge.config.renderer_publishes_reads;
    let caps = bridge.bridge_caps;
    for QueuedRead { surface, fence } in reads {
        if !surface.is_alive() {
            continue;
        }
        let booked = compositor::with_states(&surface, |states| {
            let hold = states
                .data_map
                .get::<RendererSurfaceStateUserData>()
                .and_then(|r| r.lock().ok()?.buffer().cloned());
            let mut books = SurfaceBooks::of(states)?;
            let published = match (&fence, books.current_buffer().map(get_dmabuf)) {
                (Some(fence), Some(Ok(buffer))) => {
                    let kind = BufferKind::DmaBuf {
                        unique_planes: buffer.num_planes(),
                    };
                    plan::publish_read_fence(kind, caps, renderer_publishes) && {
                        let planes: Vec<BorrowedFd<'_>> = buffer.handles().collect();
                        dmabuf::import(&planes, fence, Access::Read)
                            .inspect_err(|e| {
                                tracing::warn!("fencebridge: could not publish a read fence: {e}")
                            })
                            .is_ok()
                    }
                }
                _ => false,
            };
            let (buffer, fence) = books.read(fence, hold)?;
            Some((published, books.book(ReleaseEvent::Read { buffer, fence })))
        });
        if let Some((published, due)) = booked {
            if let (true, Some(client)) = (published, surface.client()) {
                let report = &mut state.fencebridge_state().client_books(&client).report;
                report.read_fences_published += 1;
            }
            execute(state, &surface, due);
        }
    }
}

/// The destruction hook: whatever the surface still owes becomes due.
pub(crate) fn surface_destroyed<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface) {
    book_reads(state);
    let Some((due, waits)) = SurfaceBooks::with(surface, |books| {
        (books.destroyed(), std::mem::take(&mut books.waits))
    }) else {
        return;
    };
    wait::drop_waits(state, waits);
    execute(state, surface, due);
}

/// Does what is due (outside `with_states`: it may send events and insert sources).
pub(crate) fn execute<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface, due: Vec<Due>) {
    let client = surface.client();
    for due in due {
        match due {
            Due::SignalPoint { point, after } => {
                signal_after(state, point, after);
                if let Some(client) = &client {
                    let report = &mut state.fencebridge_state().client_books(client).report;
                    report.release_points_signalled += 1;
                }
            }
            Due::ReleaseBuffer { hold, after } => {
                release_after(state, client.as_ref(), hold, after)
            }
        }
    }
}

/// Signals `point` when `after` signals: the fence itself goes into the point, so the kernel
/// signals it and no one waits on the CPU.
fn signal_after<D: FenceBridgeHandler>(
    state: &mut D,
    point: ClientPoint,
    after: Option<Arc<SyncFile>>,
) {
    let Some(fence) = after else {
        return point.signal_now();
    };
    match point.timeline.import_sync_file(point.point.value, &fence) {
        Ok(()) => {}
        Err(e) => {
            // Still never left unsignalled: signal it from the loop once the fence has.
            tracing::warn!(
                "fencebridge: could not import the read fence into {}: {e}",
                point.point
            );
            let later = point.clone();
            let inserted = state
                .loop_handle()
                .insert_source(SyncFileSource::new(fence), move |_, _, _| {
                    later.signal_now()
                });
            if let Err(e) = inserted {
                tracing::error!("fencebridge: {}; signalling {} now", e.error, point.point);
                point.signal_now();
            }
        }
    }
}

/// Lets go of the renderer's hold on a buffer once `after` signals; smithay sends
/// `wl_buffer.release` when the last hold goes.
fn release_after<D: FenceBridgeHandler>(
    state: &mut D,
    client: Option<&Client>,
    hold: RendererBuffer,
    after: Option<Arc<SyncFile>>,
) {
    let Some(fence) = after.filter(|f| !matches!(f.is_signalled(), Ok(true))) else {
        return drop(hold);
    };
    if let Some(client) = client {
        state
            .fencebridge_state()
            .client_books(client)
            .report
            .releases_deferred += 1;
    }
    let mut hold = Some(hold);
    let inserted = state
        .loop_handle()
        .insert_source(SyncFileSource::new(fence), move |_, _, _| drop(hold.take()));
    if let Err(e) = inserted {
        tracing::error!("fencebridge: could not defer a buffer release: {}", e.error);
    }
}
