//! `fencebridge`: the command-line tool. `fencebridge probe` tells what this machine supports
//! and which path the bridge would take.

use clap::{Parser, Subcommand};
use fencebridge::caps::{Capabilities, PointWaitPath, Support};
use serde_json::json;

#[derive(Parser)]
#[command(
    version,
    about = "Implicit <-> explicit GPU sync bridge for Wayland compositors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this machine's dma-buf / syncobj capabilities and the paths the bridge would take.
    Probe {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe { json } => probe(json),
    }
}

fn probe(as_json: bool) {
    let caps = Capabilities::probe();
    if !as_json {
        print!("{caps}");
        return;
    }
    let support = |s: &Support| json!({ "supported": s.is_yes(), "reason": s.reason() });
    let nodes: Vec<_> = caps
        .nodes
        .iter()
        .map(|n| {
            json!({
                "path": n.path,
                "driver": n.driver.as_ref().ok(),
                "error": n.driver.as_ref().err(),
                "syncobj": n.syncobj,
                "timeline": n.timeline,
                "eventfd": n.eventfd,
            })
        })
        .collect();
    let point_wait = match caps.point_wait {
        PointWaitPath::Eventfd => "eventfd",
        PointWaitPath::WaiterThread => "waiter-thread",
        PointWaitPath::Unavailable => "unavailable",
    };
    let report = json!({
        "dmabuf_export": support(&caps.dmabuf_export),
        "dmabuf_import": support(&caps.dmabuf_import),
        "stub_detection": support(&caps.stub_detection),
        "drm_nodes": nodes,
        "syncobj_device": caps.syncobj_device,
        "point_wait": point_wait,
        "syncobj_global": caps.syncobj_global(),
        "paths": caps.paths(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("a JSON value always serialises")
    );
}
