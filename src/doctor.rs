//! `tapstream doctor`: checks the host for what a capture appliance needs
//! (kernel, XDP per interface, queues and RSS, locked memory,
//! capabilities, disk against the retention budget, clock sync) and says
//! what to fix. Nothing is changed, except with `--probe-xdp`, which
//! attaches the capture program to each interface and detaches it again.

use std::process::ExitCode;

use serde::Serialize;
use tapstream_engine::live::host::{self, cap};
use tapstream_engine::live::{CaptureMethod, iface};

use crate::cli::DoctorArgs;
use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check { check: name.into(), status, detail: detail.into(), fix: fix.map(str::to_string) }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

pub fn run(cfg: Config, a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let interfaces = if a.interface.is_empty() { cfg.capture.interfaces.clone() } else { a.interface.clone() };
    let live = !interfaces.is_empty();
    let xdp = live && cfg.capture.live.method != CaptureMethod::AfPacket;
    let mut out = Vec::new();

    // Kernel.
    let release = host::kernel_release().unwrap_or_default();
    let v = host::kernel_version(&release).unwrap_or((0, 0));
    out.push(match v {
        v if v >= (5, 11) => {
            check("kernel", Status::Ok, format!("{release}: AF_XDP with need_wakeup and busy polling"), None)
        }
        v if v >= (5, 4) => check(
            "kernel",
            Status::Ok,
            format!("{release}: AF_XDP with need_wakeup (busy polling needs 5.11)"),
            cfg.capture.live.xsk.busy_poll.then_some("busy_poll is on: upgrade to 5.11 or later, or turn it off"),
        ),
        v if v >= (4, 18) => check(
            "kernel",
            if xdp { Status::Warn } else { Status::Ok },
            format!("{release}: AF_XDP without need_wakeup (more CPU when idle)"),
            Some("use kernel 5.4 or later (5.11+ recommended)"),
        ),
        _ => check(
            "kernel",
            if xdp { Status::Fail } else { Status::Warn },
            format!("{release}: no AF_XDP (needs 4.18); capture would fall back to AF_PACKET"),
            Some("use kernel 5.4 or later (5.11+ recommended)"),
        ),
    });

    // Capabilities.
    let caps = host::effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let bpf_ok = has(cap::BPF) || has(cap::SYS_ADMIN);
    let mut missing = Vec::new();
    for (c, name) in [(cap::NET_ADMIN, "CAP_NET_ADMIN"), (cap::NET_RAW, "CAP_NET_RAW")] {
        if !has(c) {
            missing.push(name);
        }
    }
    if !bpf_ok {
        missing.push(if v >= (5, 8) { "CAP_BPF" } else { "CAP_SYS_ADMIN" });
    }
    if v >= (5, 8) && has(cap::BPF) && !has(cap::PERFMON) && !has(cap::SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    out.push(if missing.is_empty() {
        check("capabilities", Status::Ok, "live capture can load its XDP program and open its sockets", None)
    } else {
        check(
            "capabilities",
            if live { Status::Fail } else { Status::Warn },
            format!("missing {} (needed only for live capture)", missing.join(", ")),
            Some("run as root, or grant them: see deploy/systemd/tapstream.service (AmbientCapabilities)"),
        )
    });

    // Locked memory: each queue's UMEM is pinned.
    let xsk = &cfg.capture.live.xsk;
    let per_queue = xsk.frames as u64 * xsk.frame_size as u64;
    let queues: u64 = interfaces.iter().map(|i| iface::rx_queues(i) as u64).sum();
    let need = per_queue * queues.max(1);
    let limit = host::memlock_limit().ok().flatten();
    out.push(match limit {
        _ if !xdp => check("memlock", Status::Ok, "no AF_XDP capture configured", None),
        None => check("memlock", Status::Ok, format!("unlimited; AF_XDP needs {} ({} queues)", mib(need), queues), None),
        Some(_) if has(cap::IPC_LOCK) => {
            check("memlock", Status::Ok, format!("CAP_IPC_LOCK held; AF_XDP needs {}", mib(need)), None)
        }
        Some(l) if l >= need => check("memlock", Status::Ok, format!("{} allowed, {} needed", mib(l), mib(need)), None),
        Some(l) => check(
            "memlock",
            Status::Fail,
            format!("{} allowed, {} needed for {} queues of {} frames", mib(l), mib(need), queues, xsk.frames),
            Some("LimitMEMLOCK=infinity in the systemd unit, `ulimit -l unlimited`, or --ulimit memlock=-1 for a container"),
        ),
    });

    // Interfaces.
    if !live {
        out.push(check("interfaces", Status::Ok, "none configured: the appliance runs on demo traffic", None));
    }
    for name in &interfaces {
        let label = format!("interface {name}");
        let Some(ix) = iface::ifindex(name) else {
            out.push(check(label, Status::Fail, "no such interface", Some("check capture.interfaces (ip -br link)")));
            continue;
        };
        let driver = iface::driver(name).unwrap_or_else(|| "unknown".into());
        let q = iface::rx_queues(name);
        let state = host::link_state(name).unwrap_or_default();
        let (native, zc) = host::driver_xdp(&driver);
        let probed = if a.probe_xdp && xdp {
            Some(
                tapstream_engine::live::XdpProgram::attach(ix, q, tapstream_engine::live::XdpAttachMode::Native)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        let (status, mode, fix) = match (&probed, native) {
            (Some(Ok(())), _) => (
                Status::Ok,
                format!(
                    "native XDP attached and detached (probe){}",
                    if zc { ", zero-copy capable" } else { ", copy mode" }
                ),
                None,
            ),
            (Some(Err(e)), _) => (
                Status::Warn,
                format!("native XDP failed ({e}); capture falls back to generic XDP (slower)"),
                Some("a driver with native XDP (see docs/deploy.md), or a newer kernel"),
            ),
            (None, true) => {
                (Status::Ok, format!("native XDP{}", if zc { ", zero-copy capable" } else { ", copy mode" }), None)
            }
            (None, false) => (
                if xdp { Status::Warn } else { Status::Ok },
                "no native XDP known for this driver: generic XDP (slower) or AF_PACKET".to_string(),
                Some("use a NIC with native XDP for line rate (docs/deploy.md); `--probe-xdp` tries it"),
            ),
        };
        out.push(Check {
            check: format!("{label} xdp"),
            status,
            detail: format!("driver {driver}: {mode}"),
            fix: fix.map(str::to_string),
        });
        out.push(if q > 1 {
            match iface::rss_queues(name) {
                Ok((size, used)) if (used.len() as u32) < q => check(
                    format!("{label} queues"),
                    Status::Warn,
                    format!("{q} RX queues, but RSS sends flows to only {} of them ({size}-entry table)", used.len()),
                    Some("spread it over every queue: `ethtool -X IFACE equal N` (N = the queue count)"),
                ),
                Ok((size, _)) => check(
                    format!("{label} queues"),
                    Status::Ok,
                    format!("{q} RX queues; RSS ({size}-entry table) spreads flows over all of them"),
                    None,
                ),
                Err(_) => check(
                    format!("{label} queues"),
                    Status::Ok,
                    format!("{q} RX queues (the driver reports no RSS table: it or the sender picks the queue)"),
                    None,
                ),
            }
        } else {
            check(
                format!("{label} queues"),
                Status::Warn,
                "one RX queue: every packet is received on one core",
                Some("more queues: `ethtool -L IFACE combined N` (N = capture cores)"),
            )
        });
        let up = matches!(state.as_str(), "up" | "unknown");
        out.push(check(
            format!("{label} link"),
            if up { Status::Ok } else { Status::Warn },
            format!("operstate {state}"),
            (!up).then_some("bring it up: `ip link set IFACE up`"),
        ));
        // Capture makes the interface promiscuous itself while it runs
        // (both methods); an operator's setting is reported for information.
        if let Some(on) = host::promiscuous(name) {
            out.push(check(
                format!("{label} promiscuous"),
                Status::Ok,
                if on { "on now" } else { "off now; capture turns it on while it runs (a mirror port needs it)" },
                None,
            ));
        }
    }

    // Disk against the retention budget.
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let probe = std::iter::successors(Some(data.as_path()), |p| p.parent()).find(|p| p.exists()).unwrap_or(&data);
    match host::disk_space(probe) {
        Ok((avail, total)) => {
            let used = dir_size(&data);
            out.push(match cfg.retention.disk_budget {
                Some(b) if b > used + avail => check(
                    "disk",
                    Status::Fail,
                    format!(
                        "retention budget {} but only {} free + {} used in {}",
                        mib(b),
                        mib(avail),
                        mib(used),
                        data.display()
                    ),
                    Some("lower retention.disk_budget or give the data directory a larger disk"),
                ),
                Some(b) => check(
                    "disk",
                    Status::Ok,
                    format!("budget {} fits ({} free of {})", mib(b), mib(avail), mib(total)),
                    None,
                ),
                None => check(
                    "disk",
                    Status::Warn,
                    format!("no retention.disk_budget: history grows until its age limits ({} free)", mib(avail)),
                    Some("set retention.disk_budget (e.g. 80% of the disk)"),
                ),
            });
        }
        Err(e) => out.push(check("disk", Status::Fail, format!("{}: {e}", probe.display()), None)),
    }

    // Clock.
    out.push(match host::clock_synced() {
        Ok(true) => check("clock", Status::Ok, "synchronised", None),
        Ok(false) => check(
            "clock",
            Status::Warn,
            "not synchronised: timestamps of several sensors will not line up",
            Some("enable NTP (systemd-timesyncd or chrony) or PTP"),
        ),
        Err(e) => check("clock", Status::Warn, format!("cannot tell: {e}"), None),
    });

    // Huge pages (not needed; reported for appliances that reserve them).
    if let Some((total, free, size)) = host::hugepages() {
        out.push(check(
            "hugepages",
            Status::Ok,
            format!("{total} reserved, {free} free ({} each); tapstream's UMEM uses ordinary pages", mib(size)),
            None,
        ));
    }

    let worst = out.iter().map(|c| c.status).max_by_key(|s| *s as u8).unwrap_or(Status::Ok);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for c in &out {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            println!("{tag}  {:<28} {}", c.check, c.detail);
            if let Some(f) = &c.fix {
                println!("      {:<28} fix: {f}", "");
            }
        }
        let (w, f) = (
            out.iter().filter(|c| c.status == Status::Warn).count(),
            out.iter().filter(|c| c.status == Status::Fail).count(),
        );
        println!("\n{} checks: {} to fix, {} warnings", out.len(), f, w);
    }
    Ok(if worst == Status::Fail { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Bytes of the files under `p`.
fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
