//! Flow life cycle through a worker: active-timeout interim records carry
//! deltas that add up, a full table evicts and counts, the synthetic source
//! is deterministic for a seed.

use tapstream_engine::arrow::array::{Array, StringArray, UInt64Array};
use tapstream_engine::decode::Anomaly;
use tapstream_engine::pipeline::{PipelineConfig, Worker};
use tapstream_engine::records::Table;
use tapstream_engine::source::{Batch, Desc, Layers, LinkType, PacketSource, SynthConfig, SynthSource};

fn udp(sport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (28 + payload) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&9999u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend(std::iter::repeat_n(7u8, payload));
    f
}

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

fn column_u64(w: &Worker, name: &str) -> Vec<u64> {
    w.sinks
        .ready
        .iter()
        .filter(|(t, _)| *t == Table::Flows)
        .flat_map(|(_, b)| {
            let a = b.column_by_name(name).unwrap().as_any().downcast_ref::<UInt64Array>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect()
}

fn kinds(w: &Worker) -> Vec<String> {
    w.sinks
        .ready
        .iter()
        .filter(|(t, _)| *t == Table::Flows)
        .flat_map(|(_, b)| {
            let a = b.column_by_name("record_kind").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect()
}

const SEC: u64 = 1_000_000_000;

#[test]
fn active_timeout_interim_records_add_up() {
    let mut cfg = PipelineConfig::default();
    cfg.flow.active_timeout_ns = 10 * SEC;
    cfg.flow.udp_idle_ns = 3600 * SEC;
    cfg.flow.max_flows = 64;
    let mut w = Worker::new(0, &cfg);
    let f = udp(1000, 100);
    // one packet a second for 35 s
    for s in 0..35 {
        w.packet(&desc(&f, s * SEC + 1), &f);
    }
    w.finish();
    let k = kinds(&w);
    assert_eq!(k.iter().filter(|k| *k == "interim").count(), 3, "{k:?}");
    assert_eq!(k.last().map(String::as_str), Some("final"));
    assert_eq!(column_u64(&w, "orig_pkts").iter().sum::<u64>(), 35);
    assert_eq!(column_u64(&w, "orig_bytes").iter().sum::<u64>(), 3500);
    assert_eq!(w.tracker.stats.interim, 3);
}

#[test]
fn full_table_evicts_oldest_and_counts() {
    let mut cfg = PipelineConfig::default();
    cfg.flow.max_flows = 16;
    let mut w = Worker::new(0, &cfg);
    for p in 0..40u16 {
        let f = udp(2000 + p, 10);
        w.packet(&desc(&f, 1 + p as u64), &f);
    }
    assert!(w.tracker.len() <= 16);
    assert_eq!(w.tracker.stats.evicted, 24);
    assert_eq!(w.sinks.anomalies.get(Anomaly::FlowTableEviction), 24);
    w.finish();
    let k = kinds(&w);
    assert_eq!(k.iter().filter(|k| *k == "evicted").count(), 24);
    assert_eq!(k.len(), 40, "every flow is written exactly once");
}

#[test]
fn synthetic_source_is_deterministic_for_a_seed() {
    let run = |seed| {
        let mut s = SynthSource::new(SynthConfig { seed, packets: 5000, ..SynthConfig::default() });
        let mut out = Vec::new();
        let mut b = Batch::with_capacity(256);
        loop {
            b.clear();
            if s.fill(&mut b, 256).unwrap() == 0 {
                break;
            }
            for (d, f) in b.frames() {
                out.push((d.ts_ns, f.to_vec()));
            }
        }
        out
    };
    let a = run(5);
    assert_eq!(a.len(), 5000);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}
