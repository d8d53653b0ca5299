//! Per-second traffic statistics (the `stats` table): one row per second,
//! interface and worker. Sum over rows to get totals.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, RecordBatch, TimestampNanosecondBuilder, UInt16Builder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::decode::{Decoded, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};

const COLS: [&str; 11] = [
    "packets",
    "bytes",
    "ipv4_packets",
    "ipv6_packets",
    "tcp_packets",
    "udp_packets",
    "icmp_packets",
    "other_ip_packets",
    "non_ip_packets",
    "tunneled_packets",
    "anomalies",
];

pub fn stats_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("interface", DataType::UInt16, false),
            Field::new("worker", DataType::UInt16, false),
        ];
        v.extend(COLS.iter().map(|c| Field::new(*c, DataType::UInt64, false)));
        Arc::new(Schema::new(v))
    })
    .clone()
}

#[derive(Clone, Copy, Default)]
struct Counters([u64; 11]);

/// Accumulates one worker's per-second counters.
pub struct StatsAcc {
    worker: u16,
    sec: u64,
    ifaces: Vec<Counters>,
    ts: TimestampNanosecondBuilder,
    iface: UInt16Builder,
    wk: UInt16Builder,
    cols: Vec<UInt64Builder>,
    rows: usize,
}

impl StatsAcc {
    pub fn new(worker: u16) -> StatsAcc {
        StatsAcc {
            worker,
            sec: 0,
            ifaces: vec![Counters::default(); 4],
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            iface: UInt16Builder::new(),
            wk: UInt16Builder::new(),
            cols: (0..COLS.len()).map(|_| UInt64Builder::new()).collect(),
            rows: 0,
        }
    }

    /// Count one packet.
    #[inline]
    pub fn packet(&mut self, ts_ns: u64, iface: u16, wire_len: u32, d: &Decoded) {
        let sec = ts_ns / 1_000_000_000;
        if sec != self.sec {
            self.close_second();
            self.sec = sec;
        }
        let i = iface as usize;
        if i >= self.ifaces.len() {
            if i >= 4096 {
                return;
            }
            self.ifaces.resize(i + 1, Counters::default());
        }
        let c = &mut self.ifaces[i].0;
        c[0] += 1;
        c[1] += wire_len as u64;
        match d.outer() {
            None => c[8] += 1,
            Some(o) => {
                if o.v6 {
                    c[3] += 1
                } else {
                    c[2] += 1
                }
                let inner = d.inner().unwrap_or(o);
                match inner.proto {
                    PROTO_TCP => c[4] += 1,
                    PROTO_UDP => c[5] += 1,
                    PROTO_ICMP | PROTO_ICMP6 => c[6] += 1,
                    _ => c[7] += 1,
                }
                if d.depth > 1 {
                    c[9] += 1;
                }
            }
        }
        if !d.anomalies.is_empty() {
            c[10] += 1;
        }
    }

    /// Write the current second's rows into the builders.
    pub fn close_second(&mut self) {
        for (i, c) in self.ifaces.iter_mut().enumerate() {
            if c.0[0] == 0 {
                continue;
            }
            self.ts.append_value((self.sec * 1_000_000_000) as i64);
            self.iface.append_value(i as u16);
            self.wk.append_value(self.worker);
            for (b, v) in self.cols.iter_mut().zip(c.0.iter()) {
                b.append_value(*v);
            }
            self.rows += 1;
            *c = Counters::default();
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let mut cols: Vec<ArrayRef> =
            vec![Arc::new(self.ts.finish()), Arc::new(self.iface.finish()), Arc::new(self.wk.finish())];
        for b in &mut self.cols {
            cols.push(Arc::new(b.finish()));
        }
        RecordBatch::try_new(stats_schema(), cols).expect("stats batch matches its schema")
    }
}
