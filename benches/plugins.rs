//! WASM plugin cost against the same detector compiled natively.
//!
//! The beacon detector (plugins/beacon) is fed batches of 256 `window`
//! records — the production batch size — as the engine encodes them; the
//! native build of the same crate gets the same encoded batch through the
//! SDK's `dispatch`, the WASM build through a sandboxed instance (copy into
//! its memory, call under the epoch deadline). Traffic: 65,536 conversation
//! pairs at random, one second per batch, time always moving on (4,096
//! distinct seconds, replayed later than the detector's longest interval),
//! so pairs recur at irregular intervals and nothing alerts (the common
//! case; checked). Also measured: a call with an empty batch (the per-call
//! overhead), and encoding alone.
//!
//! Needs the plugins built (scripts/build-plugins.sh; run here if missing).

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapstream_engine::detect::{ConvKey, ConvStat};
use tapstream_engine::plugin::{BatchBuf, Standalone, load_plugin};
use tapstream_plugin_beacon::Beacon;
use tapstream_plugin_sdk::{AlertFields, Host, Kind, Level, Plugin, dispatch};

const BATCHES: usize = 64;
const PER_BATCH: usize = 256;
const SECONDS: usize = 4096;

/// Discards what the plugin does, counting alerts.
struct NullHost(u64);

impl Host for NullHost {
    fn alert(&mut self, _: &AlertFields<'_>) -> Result<(), i32> {
        self.0 += 1;
        Ok(())
    }
    fn log(&mut self, _: Level, _: &str) {}
    fn config<'b>(&mut self, _: &str, _: &'b mut [u8]) -> Option<&'b str> {
        None
    }
    fn counter(&mut self, _: &str, _: i64) {}
    fn kv_get(&mut self, _: &[u8], _: &mut [u8]) -> Option<usize> {
        None
    }
    fn kv_set(&mut self, _: &[u8], _: &[u8]) -> Result<(), i32> {
        Ok(())
    }
    fn kv_del(&mut self, _: &[u8]) {}
}

fn built() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let wasm = target.join("plugins/examples/beacon.wasm");
    if !wasm.exists() {
        let ok = std::process::Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "scripts/build-plugins.sh failed");
    }
    wasm
}

/// The conversations of `SECONDS` seconds.
fn seconds() -> Vec<Vec<(ConvKey, ConvStat)>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..SECONDS)
        .map(|_| {
            (0..PER_BATCH)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let pair = (x % 65_536) as u16;
                    let mut k = ConvKey { proto: 6, dport: 443, ..Default::default() };
                    k.src[..4].copy_from_slice(&[10, 1, (pair >> 8) as u8, pair as u8]);
                    k.dst[..4].copy_from_slice(&[198, 51, 100, (pair % 200) as u8]);
                    (
                        k,
                        ConvStat {
                            flows: 1,
                            pkts: 6,
                            bytes: 900,
                            rpkts: 5,
                            rbytes: 4000,
                            syn: 1,
                            answered: 1,
                            sample: x,
                            ..Default::default()
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where the replay is: batches handed out, and the traffic clock.
#[derive(Default)]
struct Clock {
    batch: u64,
    sec: u64,
}

/// The next `BATCHES` seconds into `out`. Each replay of the recorded
/// seconds starts after a pause longer than the detector's longest interval
/// and different every time, so the replay adds no regular intervals.
fn encode(seconds: &[Vec<(ConvKey, ConvStat)>], clock: &mut Clock, out: &mut [BatchBuf]) {
    for b in out.iter_mut() {
        if clock.batch > 0 && clock.batch.is_multiple_of(SECONDS as u64) {
            clock.sec += 3600 + (clock.batch / SECONDS as u64 * 977) % 3600;
        }
        let convs = &seconds[(clock.batch as usize) % SECONDS];
        let sec = 1_800_000_000 + clock.sec;
        clock.batch += 1;
        clock.sec += 1;
        b.clear();
        for (k, s) in convs {
            b.window(sec * 1_000_000_000, k, s);
        }
    }
}

fn bench(c: &mut Criterion) {
    let secs = seconds();
    let mut bufs: Vec<BatchBuf> = (0..BATCHES).map(|_| BatchBuf::new(Kind::Window)).collect();
    let plugin = load_plugin(&built(), None).expect("the beacon plugin loads");
    let mut g = c.benchmark_group("plugin_beacon");
    g.throughput(Throughput::Elements((BATCHES * PER_BATCH) as u64));
    g.sample_size(30);
    let mut clock = Clock::default();
    g.bench_function("encode_only", |b| b.iter(|| encode(&secs, &mut clock, &mut bufs)));
    let mut host = NullHost(0);
    g.bench_function("native", |b| {
        let mut p = Beacon::init(&mut host).unwrap();
        let mut clock = Clock::default();
        let mut bytes = Vec::new();
        b.iter(|| {
            encode(&secs, &mut clock, &mut bufs);
            for buf in &bufs {
                bytes.clear();
                bytes.extend_from_slice(&buf.records);
                bytes.extend_from_slice(&buf.strings);
                assert_eq!(dispatch(&mut p, &mut host, Kind::Window as u32, &bytes, buf.count), 0);
            }
        })
    });
    let mut wasm_alerts = 0;
    g.bench_function("wasm", |b| {
        let mut inst = Standalone::start(&plugin).unwrap();
        let mut clock = Clock::default();
        b.iter(|| {
            encode(&secs, &mut clock, &mut bufs);
            for buf in &bufs {
                let r = inst.batch(buf);
                assert_eq!(r, Ok(0), "at batch {}", clock.batch);
            }
            wasm_alerts += inst.take_alerts().len();
        })
    });
    assert_eq!((host.0, wasm_alerts), (0, 0), "the benchmark's traffic must not alert");
    g.finish();

    // Per call: an empty batch.
    let empty = BatchBuf::new(Kind::Window);
    let mut g = c.benchmark_group("plugin_call");
    g.throughput(Throughput::Elements(1));
    g.bench_function("native_empty", |b| {
        let mut h = NullHost(0);
        let mut p = Beacon::init(&mut h).unwrap();
        b.iter(|| dispatch(&mut p, &mut h, Kind::Window as u32, std::hint::black_box(&[]), 0))
    });
    g.bench_function("wasm_empty", |b| {
        let mut inst = Standalone::start(&plugin).unwrap();
        b.iter(|| inst.batch(std::hint::black_box(&empty)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
