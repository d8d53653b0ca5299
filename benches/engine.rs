//! Criterion benchmarks of the packet path: decode alone, and decode + flow
//! tracking + protocol analysis per worker core, over synthetic traffic held
//! in memory, with and without the detectors' per-worker half. Whole-process pcap→Parquet runs against peers live in
//! `benches/peers.sh` (see docs/benchmarks.md).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapstream_engine::decode::{DecodeConfig, Decoded, decode};
use tapstream_engine::detect::DetectConfig;
use tapstream_engine::pipeline::{PipelineConfig, Worker};
use tapstream_engine::source::{Batch, PacketSource, SynthConfig, SynthSource};

fn batches(n: u64) -> Vec<Batch> {
    let mut src = SynthSource::new(SynthConfig { seed: 3, packets: n, pps: 200_000, ..SynthConfig::default() });
    let mut out = Vec::new();
    loop {
        let mut b = Batch::with_capacity(256);
        if src.fill(&mut b, 256).unwrap() == 0 {
            break;
        }
        out.push(b);
    }
    out
}

fn bench(c: &mut Criterion) {
    let bs = batches(200_000);
    let pkts: u64 = bs.iter().map(|b| b.len() as u64).sum();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(pkts));
    g.sample_size(10);
    g.bench_function("decode", |bch| {
        let cfg = DecodeConfig::default();
        let mut d = Decoded::default();
        bch.iter(|| {
            let mut n = 0u64;
            for b in &bs {
                for (desc, f) in b.frames() {
                    decode(desc.link, f, &cfg, &mut d);
                    n += d.depth as u64;
                }
            }
            n
        })
    });
    g.bench_function("decode_flow_proto_per_worker", |bch| {
        bch.iter_batched(
            || Worker::new(0, &PipelineConfig::default()),
            |mut w| {
                for b in &bs {
                    w.process(b);
                    w.sinks.ready.clear();
                }
                w.packets
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // The same with the built-in detectors' per-worker half on (flows marked
    // per second, folded into conversations when a second closes); the
    // aggregation stage runs on its own thread and is measured in the
    // whole-run comparison (docs/benchmarks.md).
    g.bench_function("decode_flow_proto_detect_per_worker", |bch| {
        let (tx, rx) = crossbeam_channel::unbounded();
        bch.iter_batched(
            || {
                while rx.try_recv().is_ok() {}
                let mut w = Worker::new(0, &PipelineConfig::default());
                w.attach_detect(tx.clone(), DetectConfig::default().max_convs);
                w
            },
            |mut w| {
                for b in &bs {
                    w.process(b);
                    w.sinks.ready.clear();
                }
                w.packets
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// GeoIP: what a flow record pays for its endpoints' country and AS (two
/// of each per flow), over random public IPv4 addresses, with the free
/// databases `scripts/geoip.sh` installs.
fn geoip(c: &mut Criterion) {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share"));
    let cfg = tapstream_engine::geo::installed(&base.join("tapstream/geoip"));
    assert!(cfg.country.is_some(), "GeoIP databases missing: run scripts/geoip.sh");
    let geo = tapstream_engine::geo::Geo::open(&cfg).expect("open GeoIP databases");
    let mut x = 0x1234_5678_9abc_def0u64;
    let addrs: Vec<[u8; 16]> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&((x as u32) | 0x0100_0000).to_be_bytes());
            a
        })
        .collect();
    let mut g = c.benchmark_group("geoip");
    g.throughput(Throughput::Elements(addrs.len() as u64));
    g.sample_size(10);
    g.bench_function("country_and_asn_per_address", |bch| {
        bch.iter(|| {
            let mut n = 0u64;
            for a in &addrs {
                n += geo.country(a, false).map_or(0, |c| c[0] as u64);
                n += geo.asn(a, false).unwrap_or(0) as u64;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench, geoip);
criterion_main!(benches);
