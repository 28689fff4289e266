//! `fencebridge probe --json` tells the truth about each kernel.

use serde_json::Value;

use crate::support::kernel;

#[test]
fn probe_json_matches_the_kernel() {
    let k = kernel();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fencebridge"))
        .args(["probe", "--json"])
        .output()
        .expect("run fencebridge probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("probe prints JSON");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    assert_eq!(report["dmabuf_export"]["supported"], true);
    // The answer is the kernel's: the export was issued, and what it returned is named (a
    // fresh buffer exports the stub), not assumed from a buffer that merely polls ready.
    let export = report["dmabuf_export"]["reason"].as_str().unwrap();
    assert!(
        export.contains("answered with a sync_file of 1 fence(s)"),
        "{export}"
    );
    assert_eq!(report["dmabuf_import"]["supported"], true);
    assert_eq!(report["stub_detection"]["supported"], true);
    let drivers: Vec<&str> = report["drm_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["driver"].as_str())
        .collect();
    assert!(
        drivers.contains(&"vgem") && drivers.contains(&"virtio_gpu"),
        "{drivers:?}"
    );
    for node in report["drm_nodes"].as_array().unwrap() {
        if node["driver"] == "vgem" {
            assert_eq!(node["timeline"], false, "vgem has no syncobj");
        }
    }
    assert_eq!(
        report["syncobj_global"],
        k.has_timelines(),
        "on {}",
        k.release
    );
    let expected_wait = match (k.has_timelines(), k.has_eventfd()) {
        (false, _) => "unavailable",
        (true, true) => "eventfd",
        (true, false) => "waiter-thread",
    };
    assert_eq!(report["point_wait"], expected_wait);
    if k.has_timelines() {
        let dev = report["syncobj_device"].as_str().expect("a device path");
        assert!(
            dev.starts_with("/dev/dri/renderD"),
            "render nodes first: {dev}"
        );
    } else {
        assert!(report["syncobj_device"].is_null());
        let paths = report["paths"].as_array().unwrap();
        assert!(
            paths
                .iter()
                .any(|p| p.as_str().unwrap().contains("not advertised")),
            "{paths:?}"
        );
    }

    let human = std::process::Command::new(env!("CARGO_BIN_EXE_fencebridge"))
        .arg("probe")
        .output()
        .unwrap();
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stdout).contains("paths the bridge would take"));
}
