//! Web console benchmark (not part of CI; see docs/benchmarks.md):
//!
//!   console run [--loads N] [--secs S] [--pps P] [--history-rows R]
//!
//! Starts `tapstream serve` on demo traffic at P packets/s over an hour of
//! synthetic flow history (R rows), then runs `console/e2e/measure.mjs` in
//! headless Chromium: the dashboard's first contentful paint and time until
//! every panel shows data over N loads, and S seconds of scrolling a
//! 10,000-row flow table refreshed once a second — the console's
//! virtualised table against a plain HTML table rebuilt at each refresh
//! (the same rows, the same browser, the same run). Prints JSON.
//!
//! Run by `cargo test` (no arguments) it checks itself with one load and a
//! one-second scroll.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/seed.rs"]
mod seed;
#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::process::Command;

use server::Server;

fn arg(args: &[String], name: &str, d: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(d, |v| v.parse().unwrap_or_else(|_| panic!("{name} {v}: a number")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.first().map(String::as_str) == Some("run");
    let (loads, secs) = if full { (arg(&args, "--loads", 10), arg(&args, "--secs", 10)) } else { (1, 1) };
    let pps = arg(&args, "--pps", 3000).to_string();
    let rows = arg(&args, "--history-rows", if full { 200_000 } else { 20_000 });
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    seed::flow_history(&data, rows);
    let s = Server::start_in(&data, "[storage]\nflush_interval_secs = 1\n", &["--pps", &pps, "--workers", "2"]);
    let console = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let out = Command::new("node")
        .arg("e2e/measure.mjs")
        .current_dir(&console)
        .env("BASE", &s.base)
        .env("USER", "admin")
        .env("PASSWORD", &s.admin_password)
        .env("LOADS", loads.to_string())
        .env("SECS", secs.to_string())
        .output()
        .expect("node runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "measure.mjs failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON from measure.mjs");
    assert_eq!(v["table_rows"], 10_000, "{v}");
    assert!(
        v["virtualised"]["frames"].as_u64().unwrap() > 0 && v["plain_table"]["frames"].as_u64().unwrap() > 0,
        "{v}"
    );
    if full {
        println!("demo {pps} pps on 2 workers; history {rows} flow rows in the last hour");
        println!("{stdout}");
    }
}
