//! Synthetic flow history for benchmarks that need a busy appliance's
//! last hour without waiting for it.

use tapstream_engine::records::Table;
use tapstream_query::synth::FlowSynth;
use tapstream_query::{HourlyWriter, WriterConfig};

/// An hour of flow history ending now (`rows` flows), as a running
/// appliance has, written into `data` before the server starts.
pub fn flow_history(data: &std::path::Path, rows: u64) {
    if rows == 0 {
        return;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let start = now - 3_600_000_000_000;
    let cfg = WriterConfig { compaction: false, ..WriterConfig::default() };
    let mut w = HourlyWriter::new(data, cfg).expect("data dir");
    let mut s = FlowSynth::new(7, start, rows);
    let mut left = rows;
    while left > 0 {
        let n = left.min(65_536);
        w.write(Table::Flows, &s.batch(n as usize)).expect("write history");
        left -= n;
    }
    w.close().expect("close history");
}
