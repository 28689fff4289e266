//! What the compositor says at the end: per client, its command, how it ended, how many of its
//! frames were shown (and, per surface with buffers, how many it committed and how many were
//! shown: a player's video subsurface apart from its window), and what fencebridge saw (sync
//! path per commit, waits, whether its producers fence and which of its surfaces do not,
//! deferred releases). As text, and as JSON for the tests and the demo.

use std::fmt;
use std::process::{Child, ExitStatus};

use serde_json::{json, Value};

use crate::state::Nested;

/// A client the compositor started.
pub struct Spawned {
    pub command: String,
    pub child: Child,
    pub exit: Option<ExitStatus>,
}

/// The report.
pub struct Report {
    backend: &'static str,
    frames: u64,
    bridge_on: bool,
    /// Frames that showed a window while its client was still writing it (`--labels`).
    frames_mid_write: Option<u64>,
    clients: Vec<ClientLine>,
}

struct ClientLine {
    pid: Option<i32>,
    command: Option<String>,
    exit: Option<String>,
    shown: u64,
    /// Its surfaces that had buffers, by protocol id: (id, role, committed, shown).
    surfaces: Vec<(u32, &'static str, u64, u64)>,
    bridge: Option<fencebridge::wayland::ClientReport>,
}

impl Report {
    pub fn new(state: &Nested, spawned: &[Spawned]) -> Report {
        let mut ids: Vec<_> = state.screen.shown.keys().cloned().collect();
        for (id, _) in state.bridge.client_reports() {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        let mut clients: Vec<ClientLine> = ids
            .iter()
            .map(|id| {
                let bridge = state.bridge.client_report(id).cloned();
                let (pid, shown) = state
                    .screen
                    .shown
                    .get(id)
                    .copied()
                    .unwrap_or((bridge.as_ref().and_then(|r| r.pid), 0));
                let spawned = spawned
                    .iter()
                    .find(|s| pid.is_some_and(|pid| s.child.id() as i32 == pid));
                let mut surfaces: Vec<_> = state
                    .screen
                    .surfaces
                    .values()
                    .filter(|s| s.client == *id)
                    .map(|s| (s.protocol_id, s.role, s.committed, s.shown))
                    .collect();
                surfaces.sort_unstable();
                ClientLine {
                    pid,
                    command: spawned.map(|s| s.command.clone()),
                    exit: spawned.and_then(|s| s.exit).map(|e| e.to_string()),
                    shown,
                    surfaces,
                    bridge,
                }
            })
            .collect();
        // Started clients that never showed up (say, one that failed at once).
        for s in spawned {
            let pid = s.child.id() as i32;
            if !clients.iter().any(|c| c.pid == Some(pid)) {
                clients.push(ClientLine {
                    pid: Some(pid),
                    command: Some(s.command.clone()),
                    exit: s.exit.map(|e| e.to_string()),
                    shown: 0,
                    surfaces: Vec::new(),
                    bridge: None,
                });
            }
        }
        Report {
            backend: state.screen.backend.name(),
            frames: state.screen.frames,
            bridge_on: state.bridge_on,
            frames_mid_write: state.screen.labels.as_ref().map(|l| l.stale_frames),
            clients,
        }
    }

    pub fn to_json(&self) -> Value {
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                let mut v = json!({
                    "pid": c.pid,
                    "command": c.command,
                    "exit": c.exit,
                    "frames_shown": c.shown,
                    "surfaces": c.surfaces.iter().map(|&(id, role, committed, shown)| json!({
                        "surface": format!("wl_surface@{id}"),
                        "role": role,
                        "committed": committed,
                        "shown": shown,
                    })).collect::<Vec<_>>(),
                });
                if let Some(r) = &c.bridge {
                    let commits: serde_json::Map<String, Value> = r
                        .commits
                        .iter()
                        .map(|(path, n)| (path.to_string(), json!(n)))
                        .collect();
                    v["producer"] = json!(format!("{:?}", r.producer));
                    let non_fencing: Vec<&str> = r
                        .non_fencing_surfaces
                        .iter()
                        .map(|s| s.surface.as_str())
                        .collect();
                    v["non_fencing_surfaces"] = json!(non_fencing);
                    v["commits"] = Value::Object(commits);
                    v["wait_median_ms"] = json!(r.waits.median().map(|d| d.as_secs_f64() * 1e3));
                    v["wait_max_ms"] = json!(r.waits.max.as_secs_f64() * 1e3);
                    v["releases_deferred"] = json!(r.releases_deferred);
                    v["release_points_signalled"] = json!(r.release_points_signalled);
                    v["read_fences_published"] = json!(r.read_fences_published);
                    v["overdue_waits"] = json!(r.overdue_waits);
                    v["protocol_errors"] = json!(r.protocol_errors);
                }
                v
            })
            .collect();
        json!({
            "backend": self.backend,
            "bridge": self.bridge_on,
            "frames": self.frames,
            "frames_mid_write": self.frames_mid_write,
            "clients": clients,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "frames shown: {} ({})", self.frames, self.backend)?;
        for c in &self.clients {
            let pid = c.pid.map_or("?".to_owned(), |p| p.to_string());
            write!(f, "client pid {pid}")?;
            if let Some(command) = &c.command {
                write!(f, " ({command})")?;
            }
            write!(f, ": frames shown {}", c.shown)?;
            if let Some(exit) = &c.exit {
                write!(f, ", {exit}")?;
            }
            writeln!(f)?;
            if c.surfaces.len() > 1 {
                for (id, role, committed, shown) in &c.surfaces {
                    writeln!(
                        f,
                        "  wl_surface@{id} ({role}): {committed} buffers committed, {shown} shown"
                    )?;
                }
            }
            let Some(r) = &c.bridge else {
                continue;
            };
            writeln!(f, "  producer: {:?}", r.producer)?;
            for surface in &r.non_fencing_surfaces {
                writeln!(f, "  non-fencing: {surface}")?;
            }
            for (path, n) in &r.commits {
                writeln!(f, "  {n:>6} commits: {path}")?;
            }
            if let Some(median) = r.waits.median() {
                writeln!(f, "  waits: median {median:.1?}, max {:.1?}", r.waits.max)?;
            }
            writeln!(
                f,
                "  releases deferred: {}, release points signalled: {}, overdue waits: {}, \
                 read fences put on its dma-bufs: {}",
                r.releases_deferred,
                r.release_points_signalled,
                r.overdue_waits,
                r.read_fences_published
            )?;
            for error in &r.protocol_errors {
                writeln!(f, "  protocol error: {error}")?;
            }
        }
        Ok(())
    }
}
