//! GStreamer in a test's own folder, with only the plugins its pipelines use: the folder holds
//! the plugin registry (it must be writable, and the guest sees the host's root read-only) and
//! links to those plugins. Scanning all of Debian's plugins takes 10–25 s under emulation, the
//! first time in each boot; a handful, well under one.

use std::path::{Path, PathBuf};

/// Debian's folder of GStreamer 1.x plugins.
const PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/gstreamer-1.0";

/// Links `plugins` (as their files are named: `coreelements` for `libgstcoreelements.so`)
/// into `dir/plugins`, and returns the environment `gst-launch-1.0` needs to use them alone,
/// with its registry in `dir`. A plugin Debian's packages did not install fails the test,
/// naming it.
pub fn environment(dir: &Path, plugins: &[&str]) -> [(&'static str, PathBuf); 2] {
    let linked = dir.join("plugins");
    std::fs::create_dir_all(&linked).unwrap();
    for plugin in plugins {
        let file = format!("libgst{plugin}.so");
        let target = Path::new(PLUGINS).join(&file);
        assert!(
            target.exists(),
            "no {} (packages gstreamer1.0-plugins-base, -good and -bad)",
            target.display()
        );
        let link = linked.join(file);
        if !link.exists() {
            std::os::unix::fs::symlink(target, link).unwrap();
        }
    }
    [
        ("GST_REGISTRY", dir.join("registry.bin")),
        ("GST_PLUGIN_SYSTEM_PATH_1_0", linked),
    ]
}
