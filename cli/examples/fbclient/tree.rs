//! The globals for surfaces beyond the toplevel's own: a second wl_compositor binding for
//! subsurfaces' surfaces, wl_subcompositor, wp_viewporter and wp_single_pixel_buffer_manager_v1.
//! None of their objects sends an event these clients act on.

use wayland_client::protocol::{
    wl_compositor::WlCompositor, wl_subcompositor::WlSubcompositor, wl_subsurface::WlSubsurface,
    wl_surface::WlSurface,
};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle};
use wayland_protocols::wp::single_pixel_buffer::v1::client::wp_single_pixel_buffer_manager_v1::WpSinglePixelBufferManagerV1;
use wayland_protocols::wp::viewporter::client::{
    wp_viewport::WpViewport, wp_viewporter::WpViewporter,
};

use crate::capture::Screencopy;
use crate::wlclient::{Client, State, WlError};

/// The user data of these objects (none is needed; the type makes the impls this crate's).
pub struct Tree;

/// Binds the global `I` (`versions`), or says the compositor lacks `what`.
pub fn bind<I>(
    client: &Client<Screencopy>,
    versions: std::ops::RangeInclusive<u32>,
    what: &str,
) -> Result<I, WlError>
where
    I: Proxy + 'static,
    State<Screencopy>: Dispatch<I, Tree>,
{
    client
        .globals
        .bind(&client.qh, versions, Tree)
        .map_err(|_| WlError::new("missing-global", format!("the compositor lacks {what}")))
}

macro_rules! no_events {
    ($($interface:ty),*) => {$(
        impl Dispatch<$interface, Tree> for State<Screencopy> {
            fn event(
                _: &mut Self,
                _: &$interface,
                _: <$interface as Proxy>::Event,
                _: &Tree,
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
            }
        }
    )*};
}

// wl_surface's enter/leave and preferred scale do not matter to these clients.
no_events!(
    WlCompositor,
    WlSurface,
    WlSubcompositor,
    WlSubsurface,
    WpViewporter,
    WpViewport,
    WpSinglePixelBufferManagerV1
);
