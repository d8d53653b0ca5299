//! API load benchmark (not part of CI; see docs/benchmarks.md):
//!
//!   api_load run [--users N] [--secs S] [--pps P] [--workers W] [--every-ms MS] [--history-rows R]
//!
//! Starts `tapstream serve` on demo traffic at P packets/s over an hour of
//! synthetic flow history (R rows), runs S seconds with no client as the
//! baseline, then S seconds with N authenticated users, each polling the
//! dashboard endpoints every MS milliseconds and holding one live stream.
//! Prints the latency of each endpoint (p50/p99/max) and the engine's
//! packets and drops in both phases.
//!
//! Run by `cargo test` (no arguments) it checks itself with 3 users for 3 s.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/seed.rs"]
mod seed;
#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use server::Server;

/// What a live dashboard polls (the stream brings per-second rates).
const ENDPOINTS: &[&str] = &[
    "/api/traffic?by=src&top=10",
    "/api/traffic?by=port&top=10",
    "/api/interfaces",
    "/api/performance?seconds=60",
    "/api/alerts?limit=50",
    "/api/health",
];

struct Opts {
    users: usize,
    secs: u64,
    pps: u64,
    workers: usize,
    every: Duration,
    history_rows: u64,
}

fn opts(args: &[String]) -> Opts {
    let get = |name: &str, d: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(d, |v| v.parse().unwrap_or_else(|_| panic!("{name} {v}: a number")))
    };
    Opts {
        users: get("--users", 50) as usize,
        secs: get("--secs", 30),
        pps: get("--pps", 20_000),
        workers: get("--workers", 1) as usize,
        every: Duration::from_millis(get("--every-ms", 1000)),
        history_rows: get("--history-rows", 500_000),
    }
}

/// Engine packets and drops (all interfaces) as the API reports them.
fn engine(s: &Server, token: &str) -> (u64, u64) {
    let r = s.call("GET", "/api/interfaces", Some(token), None);
    let ifs = r.body["interfaces"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| ifs.iter().map(|i| i[k].as_u64().unwrap_or(0)).sum::<u64>();
    (sum("packets"), sum("worker_drops") + sum("kernel_drops"))
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

struct Outcome {
    per_endpoint: Vec<Histogram<u64>>,
    errors: u64,
    stream_messages: Vec<u64>,
}

fn load(s: &Server, tokens: &[String], o: &Opts) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(o.secs) + Duration::from_millis(500);
    let start = Arc::new(Barrier::new(tokens.len() * 2));
    let errors = Arc::new(AtomicU64::new(0));
    let mut pollers = Vec::new();
    let mut streams = Vec::new();
    for tok in tokens {
        // The stream: one per user, read as it comes.
        let url = format!("{}/api/stream?access_token={tok}", s.base.replace("http://", "ws://"));
        let b = start.clone();
        streams.push(std::thread::spawn(move || {
            let (mut ws, _) = tungstenite::connect(&url).expect("stream");
            if let tungstenite::stream::MaybeTlsStream::Plain(t) = ws.get_mut() {
                let _ = TcpStream::set_read_timeout(t, Some(Duration::from_millis(200)));
            }
            b.wait();
            let mut n = 0u64;
            while Instant::now() < deadline {
                match ws.read() {
                    Ok(m) if m.is_text() => n += 1,
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => panic!("stream ended: {e}"),
                }
            }
            n
        }));
        let (b, tok, base, errors, every) = (start.clone(), tok.clone(), s.base.clone(), errors.clone(), o.every);
        pollers.push(std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut h: Vec<Histogram<u64>> = ENDPOINTS.iter().map(|_| hist()).collect();
            b.wait();
            // Users start spread over one period, as real ones would.
            std::thread::sleep(every.mul_f64(rand_unit(&tok)));
            while Instant::now() < deadline {
                let round = Instant::now();
                for (i, ep) in ENDPOINTS.iter().enumerate() {
                    let t = Instant::now();
                    let r = agent.get(format!("{base}{ep}")).header("authorization", format!("Bearer {tok}")).call();
                    let ok = match r {
                        Ok(mut r) => r.status() == 200 && r.body_mut().read_to_vec().is_ok(),
                        Err(_) => false,
                    };
                    h[i].record(t.elapsed().as_micros().max(1) as u64).expect("record");
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(rest) = every.checked_sub(round.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            h
        }));
    }
    let mut per_endpoint: Vec<Histogram<u64>> = ENDPOINTS.iter().map(|_| hist()).collect();
    for p in pollers {
        for (i, h) in p.join().expect("poller").into_iter().enumerate() {
            per_endpoint[i].add(&h).expect("merge");
        }
    }
    let stream_messages = streams.into_iter().map(|t| t.join().expect("stream reader")).collect();
    Outcome { per_endpoint, errors: errors.load(Ordering::Relaxed), stream_messages }
}

/// A number in [0, 1) from a string (spreads users' start times).
fn rand_unit(s: &str) -> f64 {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % 1000) as f64 / 1000.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn run(o: &Opts) -> (Outcome, (u64, u64), (u64, u64)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    seed::flow_history(&data, o.history_rows);
    let pps = o.pps.to_string();
    let workers = o.workers.to_string();
    let s = Server::start_in(&data, "", &["--pps", &pps, "--workers", &workers]);
    let admin = s.admin();
    let tokens: Vec<String> = (0..o.users).map(|i| s.user(&admin, &format!("user{i}"), "viewer")).collect();
    std::thread::sleep(Duration::from_secs(3));
    // Baseline: the engine alone.
    let a0 = engine(&s, &admin);
    std::thread::sleep(Duration::from_secs(o.secs));
    let a1 = engine(&s, &admin);
    // Under load.
    let b0 = engine(&s, &admin);
    let out = load(&s, &tokens, o);
    let b1 = engine(&s, &admin);
    s.stop();
    (out, (a1.0 - a0.0, a1.1 - a0.1), (b1.0 - b0.0, b1.1 - b0.1))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("run") {
        // `cargo test`: a small run that must work end to end.
        let o =
            Opts { users: 3, secs: 3, pps: 1000, workers: 1, every: Duration::from_millis(500), history_rows: 20_000 };
        let (out, _, (packets, _)) = run(&o);
        assert_eq!(out.errors, 0, "requests failed");
        assert!(out.per_endpoint.iter().all(|h| h.len() >= 3), "every endpoint polled");
        assert!(out.stream_messages.iter().all(|&n| n >= 2), "streams: {:?}", out.stream_messages);
        assert!(packets > 0);
        return;
    }
    let o = opts(&args);
    let (out, base, loaded) = run(&o);
    println!(
        "users {} every {} ms for {} s; demo {} pps on {} worker(s); history {} rows in the last hour",
        o.users,
        o.every.as_millis(),
        o.secs,
        o.pps,
        o.workers,
        o.history_rows
    );
    println!("{:<32} {:>8} {:>9} {:>9} {:>9}", "endpoint", "requests", "p50 ms", "p99 ms", "max ms");
    let mut all = hist();
    for (ep, h) in ENDPOINTS.iter().zip(&out.per_endpoint) {
        all.add(h).expect("merge");
        println!(
            "{:<32} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            ep,
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    println!(
        "{:<32} {:>8} {:>9.1} {:>9.1} {:>9.1}",
        "all",
        all.len(),
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.99)),
        ms(all.max())
    );
    let msgs = &out.stream_messages;
    println!(
        "errors {}; stream messages per client min {} max {}",
        out.errors,
        msgs.iter().min().unwrap_or(&0),
        msgs.iter().max().unwrap_or(&0)
    );
    println!("engine without clients: packets {} drops {}", base.0, base.1);
    println!("engine under load:      packets {} drops {}", loaded.0, loaded.1);
}
