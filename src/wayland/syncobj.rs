//! linux-drm-syncobj-v1: the manager global, per-surface objects and imported timelines. The
//! points a client sets wait in the surface's books until its next commit, where
//! [`super::commit`] checks them against the protocol and acts on them.

use smithay::reexports::wayland_server::backend::ClientId;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{
    Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource, Weak,
};
use wayland_protocols::wp::linux_drm_syncobj::v1::server::{
    wp_linux_drm_syncobj_manager_v1::{self, WpLinuxDrmSyncobjManagerV1},
    wp_linux_drm_syncobj_surface_v1::{self, WpLinuxDrmSyncobjSurfaceV1},
    wp_linux_drm_syncobj_timeline_v1::{self, WpLinuxDrmSyncobjTimelineV1},
};

use super::release::{late_signals, ReleasePoint, TimelineReleases};
use super::surface::{track_surface, ClientPoint, SurfaceBooks};
use super::{FenceBridgeHandler, FenceBridgeState};
use crate::bridge::protocol::{self, PointRequest, ProtocolError, Verdict};
use crate::bridge::{TimelineId, TimelinePoint};
use crate::timeline::Timeline;

/// The global's data.
#[derive(Debug)]
pub struct SyncobjGlobalData;

/// A `wp_linux_drm_syncobj_surface_v1`'s data: its `wl_surface`.
#[derive(Debug)]
pub struct SyncobjSurfaceData {
    surface: Weak<WlSurface>,
}

/// A `wp_linux_drm_syncobj_timeline_v1`'s data: the imported timeline, and the release points
/// owed on it (whichever surface set them), kept in timeline order.
#[derive(Debug)]
pub struct TimelineData {
    timeline: Timeline,
    id: TimelineId,
    releases: TimelineReleases,
}

impl<D> GlobalDispatch<WpLinuxDrmSyncobjManagerV1, SyncobjGlobalData, D> for FenceBridgeState
where
    D: Dispatch<WpLinuxDrmSyncobjManagerV1, ()> + 'static,
{
    fn bind(
        _state: &mut D,
        _dh: &DisplayHandle,
        _client: &Client,
        resource: New<WpLinuxDrmSyncobjManagerV1>,
        _global_data: &SyncobjGlobalData,
        data_init: &mut DataInit<'_, D>,
    ) {
        data_init.init(resource, ());
    }
}

/// Posts `error` on `object`, or logs it if the compositor tolerates it. True if raised.
fn raise<D: FenceBridgeHandler>(
    state: &mut D,
    client: &Client,
    object: &impl Resource,
    error: ProtocolError,
) -> bool {
    let leniency = state.fencebridge_state().config.leniency;
    let report = &mut state.fencebridge_state().client_books(client).report;
    match leniency.judge(error) {
        Verdict::Raise(error) => {
            tracing::warn!("fencebridge: protocol error: {error}");
            report.note_protocol_error(error.to_string());
            object.post_error(error.code(), error.to_string());
            true
        }
        Verdict::Tolerate(error) => {
            tracing::warn!("fencebridge: tolerated a client bug: {error}");
            report.note_protocol_error(format!("tolerated: {error}"));
            false
        }
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjManagerV1, (), D> for FenceBridgeState
where
    D: Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData>
        + Dispatch<WpLinuxDrmSyncobjTimelineV1, TimelineData>
        + FenceBridgeHandler,
{
    fn request(
        state: &mut D,
        client: &Client,
        manager: &WpLinuxDrmSyncobjManagerV1,
        request: wp_linux_drm_syncobj_manager_v1::Request,
        _data: &(),
        _dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        match request {
            wp_linux_drm_syncobj_manager_v1::Request::GetSurface { id, surface } => {
                track_surface::<D>(&surface);
                let taken = SurfaceBooks::with(&surface, |b| b.syncobj.is_some()).unwrap_or(false);
                if let Err(error) = protocol::check_get_surface(taken) {
                    raise(state, client, manager, error);
                    return;
                }
                let object = data_init.init(
                    id,
                    SyncobjSurfaceData {
                        surface: surface.downgrade(),
                    },
                );
                SurfaceBooks::with(&surface, |b| b.syncobj = Some(object));
            }
            wp_linux_drm_syncobj_manager_v1::Request::ImportTimeline { id, fd } => {
                let bridge = state.fencebridge_state();
                let cap = bridge.config.max_timelines_per_client;
                let held = bridge.client_books(client).timelines;
                let imported = match &bridge.syncobj {
                    _ if held >= cap => Err(format!(
                        "this client already holds {cap} timelines, the compositor's limit"
                    )),
                    Some(device) => device
                        .import_timeline(std::os::fd::AsFd::as_fd(&fd))
                        .map_err(|e| e.to_string()),
                    None => Err("the compositor has no syncobj device".to_owned()),
                };
                match imported {
                    Ok(timeline) => {
                        let late = late_signals(state);
                        let bridge = state.fencebridge_state();
                        let id_value = bridge.next_id();
                        bridge.client_books(client).timelines += 1;
                        data_init.init(
                            id,
                            TimelineData {
                                releases: TimelineReleases::new(timeline.clone(), late),
                                timeline,
                                id: TimelineId(id_value),
                            },
                        );
                    }
                    Err(reason) => {
                        raise(
                            state,
                            client,
                            manager,
                            ProtocolError::InvalidTimeline { reason },
                        );
                    }
                }
            }
            wp_linux_drm_syncobj_manager_v1::Request::Destroy => {}
            _ => unreachable!("linux-drm-syncobj-v1 version 1 has no other request"),
        }
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData, D> for FenceBridgeState
where
    D: FenceBridgeHandler,
{
    fn request(
        state: &mut D,
        client: &Client,
        object: &WpLinuxDrmSyncobjSurfaceV1,
        request: wp_linux_drm_syncobj_surface_v1::Request,
        data: &SyncobjSurfaceData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        let (request, timeline, hi, lo) = match request {
            wp_linux_drm_syncobj_surface_v1::Request::Destroy => {
                // Points set since the last commit are dropped; a release point among them is
                // signalled, as nothing will read for it.
                if let Ok(surface) = data.surface.upgrade() {
                    SurfaceBooks::with(&surface, |books| {
                        books.syncobj = None;
                        books.pending_acquire = None;
                        if let Some(point) = books.pending_release.take() {
                            point.signal_unread();
                        }
                    });
                }
                return;
            }
            wp_linux_drm_syncobj_surface_v1::Request::SetAcquirePoint {
                timeline,
                point_hi,
                point_lo,
            } => (PointRequest::SetAcquirePoint, timeline, point_hi, point_lo),
            wp_linux_drm_syncobj_surface_v1::Request::SetReleasePoint {
                timeline,
                point_hi,
                point_lo,
            } => (PointRequest::SetReleasePoint, timeline, point_hi, point_lo),
            _ => unreachable!("linux-drm-syncobj-v1 version 1 has no other request"),
        };
        let Some(timeline) = timeline.data::<TimelineData>() else {
            return; // a dead timeline object: the client is being torn down
        };
        let point = TimelinePoint {
            timeline: timeline.id,
            value: protocol::point_from_hi_lo(hi, lo),
        };
        let surface = data.surface.upgrade().ok();
        if let Err(error) = protocol::check_surface_alive(surface.is_some(), request, point) {
            raise(state, client, object, error);
            return;
        }
        let Some(surface) = surface else { return };
        SurfaceBooks::with(&surface, |books| match request {
            PointRequest::SetAcquirePoint => {
                books.pending_acquire = Some(ClientPoint {
                    timeline: timeline.timeline.clone(),
                    point,
                })
            }
            PointRequest::SetReleasePoint => {
                // Owed on its timeline from now on. A release point replaced before any commit
                // used it is nobody's to read.
                let point = ReleasePoint::new(&timeline.releases, point);
                if let Some(replaced) = books.pending_release.replace(point) {
                    replaced.signal_unread();
                }
            }
        });
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjTimelineV1, TimelineData, D> for FenceBridgeState
where
    D: FenceBridgeHandler,
{
    fn request(
        _state: &mut D,
        _client: &Client,
        _timeline: &WpLinuxDrmSyncobjTimelineV1,
        request: wp_linux_drm_syncobj_timeline_v1::Request,
        _data: &TimelineData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        match request {
            // Points already set keep the timeline alive (they hold it).
            wp_linux_drm_syncobj_timeline_v1::Request::Destroy => {}
            _ => unreachable!("linux-drm-syncobj-v1 version 1 has no other request"),
        }
    }

    fn destroyed(
        state: &mut D,
        client: ClientId,
        _timeline: &WpLinuxDrmSyncobjTimelineV1,
        _data: &TimelineData,
    ) {
        if let Some(books) = state.fencebridge_state().clients.get_mut(&client) {
            books.timelines = books.timelines.saturating_sub(1);
        }
    }
}
