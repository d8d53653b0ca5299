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

criterion_group!(benches, bench);
criterion_main!(benches);
