//! Giving buffers back: the renderer reports its reads ([`surface_read`]), the release books
//! say what is due, and this module does it — a release point signalled by the read fence
//! itself (imported into the point: no CPU wait), a `wl_buffer.release` held back until the
//! read fence signals (by keeping smithay's renderer hold on the buffer until then).

use std::sync::Arc;

use smithay::backend::renderer::utils::{Buffer as RendererBuffer, RendererSurfaceStateUserData};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, Resource};
use smithay::wayland::compositor;

use super::surface::{ClientPoint, Due, SurfaceBooks};
use super::{wait, FenceBridgeHandler};
use crate::bridge::release::ReleaseEvent;
use crate::fence::SyncFile;
use crate::source::SyncFileSource;

/// The renderer is done sampling `surface`'s current buffer once `read` signals (`None`: done
/// already, as after a CPU copy). Call it after every frame, output or capture that read the
/// surface, with the fence that pass ends with (smithay's `SyncPoint::export()`); a fence that
/// covers earlier passes too, as one in-order GPU queue gives.
///
/// What it drives: the surface's release point is signalled from this fence once the buffer is
/// replaced; a non-fencing producer's `wl_buffer.release` waits for it. The deferral works with
/// smithay's renderer utilities (`on_commit_buffer_handler`), whose hold on the buffer the
/// bridge keeps until the fence signals.
pub fn surface_read<D: FenceBridgeHandler>(
    state: &mut D,
    surface: &WlSurface,
    read: Option<SyncFile>,
) {
    if !surface.is_alive() {
        return;
    }
    let due = compositor::with_states(surface, |states| {
        let hold = states
            .data_map
            .get::<RendererSurfaceStateUserData>()
            .and_then(|r| r.lock().ok()?.buffer().cloned());
        let mut books = SurfaceBooks::of(states)?;
        let (buffer, fence) = books.read(read, hold)?;
        Some(books.book(ReleaseEvent::Read { buffer, fence }))
    });
    if let Some(due) = due {
        execute(state, surface, due);
    }
}

/// The destruction hook: whatever the surface still owes becomes due.
pub(crate) fn surface_destroyed<D: FenceBridgeHandler>(state: &mut D, surface: &WlSurface) {
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
