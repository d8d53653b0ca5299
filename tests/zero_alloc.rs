//! Steady state costs no heap allocation per packet: a counting allocator
//! watches a worker process a long run of packets of established flows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use tapstream_engine::pipeline::{PipelineConfig, Worker};
use tapstream_engine::record;
use tapstream_engine::source::{Desc, Layers, LinkType};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // Safety: forwarding to the system allocator with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // Safety: `p` came from `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // Safety: forwarding a block obtained from this allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn desc(f: &[u8], ts: u64) -> Desc {
    Desc {
        offset: 0,
        caplen: f.len() as u32,
        wire_len: f.len() as u32,
        ts_ns: ts,
        link: LinkType::ETHERNET,
        iface: 0,
        layers: Layers::All,
        in_aux: false,
    }
}

fn frame(flow: u16, from_client: bool, seq: u32, ack: u32, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12] = 0x08;
    let total = (20 + 20 + payload) as u16;
    let (s, d) = if from_client {
        ([10, 0, (flow >> 8) as u8, flow as u8], [10, 9, 0, 1])
    } else {
        ([10, 9, 0, 1], [10, 0, (flow >> 8) as u8, flow as u8])
    };
    let (sp, dp) = if from_client { (40000 + flow, 9999) } else { (9999, 40000 + flow) };
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&s);
    ip.extend_from_slice(&d);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sp.to_be_bytes());
    tcp[2..4].copy_from_slice(&dp.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x18;
    tcp[14] = 0xff;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f.extend(std::iter::repeat_n(0x5a, payload));
    f
}

#[test]
fn no_allocation_per_packet_in_steady_state() {
    steady_state(None);
}

/// A recording session that keeps every packet costs no allocation either:
/// the worker writes through its file's preallocated buffer.
#[test]
fn no_allocation_per_packet_while_recording() {
    let dir = tempfile::tempdir().unwrap();
    let spec = record::SessionSpec::new("all", 0);
    record::create(dir.path(), &spec).unwrap();
    let mut rec = record::Recorder::open(dir.path()).unwrap();
    rec.poll(1);
    let recorded = steady_state(Some(rec.tap()));
    rec.poll(2);
    let l = record::list(dir.path()).unwrap();
    assert_eq!(l[0].status.as_ref().unwrap().packets, recorded, "every packet recorded");
}

/// With detection on, a worker folds its flows into per-second conversation
/// counters and sends one report per second: allocation happens per second
/// (the report), never per packet.
#[test]
fn detection_allocates_per_second_not_per_packet() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const FLOWS: u16 = 512;
    let cfg = PipelineConfig {
        record_batch_rows: 1 << 20,
        flush_interval: std::time::Duration::from_secs(3600),
        ..PipelineConfig::default()
    };
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let mut w = Worker::new(0, &cfg);
    w.attach_detect(tx, 1 << 16);
    // Start 30 ms before a second ends, so the warm-up closes a second too.
    let mut ts = 1_767_225_600_000_000_000u64 - 30_000_000;
    const STEP: u64 = 10_000;
    let mut frames = Vec::new();
    for r in 0..400u32 {
        for fl in 0..FLOWS {
            frames.push(frame(fl, true, 1000 + r * 100, 5000 + r * 200, 100));
            frames.push(frame(fl, false, 5000 + r * 200, 1000 + (r + 1) * 100, 200));
        }
    }
    let (warm, steady) = frames.split_at(8 * 2 * FLOWS as usize);
    for f in warm {
        ts += STEP;
        w.packet(&desc(f, ts), f);
    }
    assert!(ts > 1_767_225_600_000_000_000, "the warm-up crossed a second");
    let first_sec = ts / 1_000_000_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for f in steady {
        ts += STEP;
        w.packet(&desc(f, ts), f);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let seconds = ts / 1_000_000_000 - first_sec;
    assert!(seconds >= 3, "the measured run spans several seconds ({seconds})");
    assert!(
        allocs <= 2 * seconds,
        "{allocs} allocations over {} packets and {seconds} seconds: more than one report's worth per second",
        steady.len()
    );
    w.finish();
    // Every packet is in some second's conversations.
    let counted: u64 = rx
        .try_iter()
        .flat_map(|r: tapstream_engine::detect::WindowReport| r.convs)
        .map(|(_, s)| s.pkts + s.rpkts)
        .sum();
    assert_eq!(counted, frames.len() as u64);
}

/// The allocator counts every thread: tests measure one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run a long steady state through one worker; returns the packets it saw
/// after the warm-up (from when a recording session is picked up).
fn steady_state(recorder: Option<std::sync::Arc<record::RecordTap>>) -> u64 {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const FLOWS: u16 = 512;
    const ROUNDS: u32 = 400;
    let recording = recorder.is_some();
    let cfg = PipelineConfig {
        record_batch_rows: 1 << 20,
        flush_interval: std::time::Duration::from_secs(3600),
        recorder,
        ..PipelineConfig::default()
    };
    let mut w = Worker::new(0, &cfg);
    let mut ts = 1_767_225_600_000_000_000u64;
    let mut run = |w: &mut Worker, round: u32| {
        for fl in 0..FLOWS {
            let c = frame(fl, true, 1000 + round * 100, 5000 + round * 200, 100);
            let s = frame(fl, false, 5000 + round * 200, 1000 + (round + 1) * 100, 200);
            for (f, _) in [(c, 0), (s, 1)] {
                ts += 1_000;
                w.packet(&desc(&f, ts), &f);
            }
        }
    };
    // Warm up: flows are created, analyzers classify them, counters fill.
    for r in 0..4 {
        run(&mut w, r);
    }
    // Pick up the recording session (as the next batch would) and open its file.
    w.flush_builders();
    let before_recording = w.packets;
    run(&mut w, 4);
    // Build every frame up front so the measured loop only processes.
    let mut frames = Vec::new();
    for r in 5..ROUNDS {
        for fl in 0..FLOWS {
            frames.push(frame(fl, true, 1000 + r * 100, 5000 + r * 200, 100));
            frames.push(frame(fl, false, 5000 + r * 200, 1000 + (r + 1) * 100, 200));
        }
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for f in &frames {
        ts += 1_000;
        w.packet(&desc(f, ts), f);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(w.tracker.len(), FLOWS as usize, "every flow stays open");
    assert!(frames.len() > 400_000);
    assert_eq!(allocs, 0, "{allocs} allocations over {} packets (recording: {recording})", frames.len());
    w.finish();
    w.packets - before_recording
}

/// A WASM plugin fed ten batches of 256 records a second: the host encodes
/// into buffers it keeps, copies into the instance's memory and calls it
/// without allocating; what allocates is the once-a-second bookkeeping
/// (metrics published), never a record or a batch.
#[test]
fn plugins_allocate_per_second_not_per_record() {
    use std::sync::Arc;
    use tapstream_engine::detect::{ConvKey, ConvStat};
    use tapstream_engine::plugin::{PluginRunner, PluginSet, PluginStats, PluginTap, Scope, load_plugin};

    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("count.wasm");
    std::fs::write(
        &wasm,
        r#"(module
  (import "tapstream" "counter_add" (func $counter (param i32 i32 i64)))
  (memory (export "memory") 4)
  (data (i32.const 0) "records")
  (func (export "tapstream_abi") (result i32) (i32.const 1))
  (func (export "tapstream_buffer") (param i32) (result i32) (i32.const 65536))
  (func (export "tapstream_batch") (param i32 i32 i32 i32) (result i32)
    (call $counter (i32.const 0) (i32.const 7) (i64.extend_i32_u (local.get 2)))
    (i32.const 0)))"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("count.toml"),
        "name = \"count\"\nversion = \"0\"\nabi = 1\nscope = \"global\"\nsubscribe = [\"window\"]\n",
    )
    .unwrap();
    let p = Arc::new(load_plugin(&wasm, None).unwrap());
    let stats = Arc::new(PluginStats::default());
    let mut r = PluginRunner::new(Scope::Global, 0, PluginTap::new(PluginSet { plugins: vec![p] }), stats.clone());
    let mut convs: Vec<(ConvKey, ConvStat)> = (0..2560u32)
        .map(|i| {
            let mut k = ConvKey { proto: 6, dport: 443, ..Default::default() };
            k.src[..4].copy_from_slice(&i.to_be_bytes());
            (k, ConvStat { flows: 1, pkts: 2, ..Default::default() })
        })
        .collect();
    // Warm up: the instance starts, buffers reach their size.
    for s in 0..5 {
        r.window_second(1000 + s, &mut convs);
    }
    const SECONDS: u64 = 200;
    let before = ALLOCS.load(Ordering::Relaxed);
    for s in 0..SECONDS {
        r.window_second(2000 + s, &mut convs);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let records = SECONDS * convs.len() as u64;
    assert!(allocs <= 8 * SECONDS, "{allocs} allocations for {records} records in {SECONDS} seconds");
    let m = &stats.snapshot()["count"];
    assert_eq!(m.counters["records"] as u64, records + 5 * convs.len() as u64);
    assert_eq!(m.calls, (SECONDS + 5) * 10);
}
