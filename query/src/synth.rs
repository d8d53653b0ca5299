//! Synthetic flow history with realistic shapes, for tests and the history
//! benchmark: a few internal hosts do most of the talking (Zipf-like), most
//! flows go to a handful of services (443, 80, 53, …), sizes are heavy-
//! tailed, and time advances steadily so every hour gets its share.

use arrow::array::RecordBatch;
use tapstream_engine::flow::{FlowKey, Service};
use tapstream_engine::records::{FlowBuilder, FlowRecord, RecordKind};

/// Deterministic generator of `flows` rows.
pub struct FlowSynth {
    state: u64,
    t_ns: i64,
    step_ns: i64,
    builder: FlowBuilder,
    scratch: String,
}

const INTERNAL_HOSTS: u64 = 4000;
const EXTERNAL_HOSTS: u64 = 20_000;

impl FlowSynth {
    /// Rows start at `start_ns` and `rows_per_hour` of them fill each hour.
    pub fn new(seed: u64, start_ns: i64, rows_per_hour: u64) -> FlowSynth {
        FlowSynth {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            t_ns: start_ns,
            step_ns: (3_600_000_000_000 / rows_per_hour.max(1)) as i64,
            builder: FlowBuilder::default(),
            scratch: String::new(),
        }
    }

    /// Time of the next row.
    pub fn now_ns(&self) -> i64 {
        self.t_ns
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Skewed pick in 0..n: low indexes are much more likely.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = self.unit();
        ((n as f64) * u * u * u) as u64
    }

    fn internal(&mut self) -> [u8; 16] {
        let i = self.skewed(INTERNAL_HOSTS);
        v4([10, 1 + (i / 250) as u8, (i % 250) as u8, 10])
    }

    fn external(&mut self) -> [u8; 16] {
        let i = self.skewed(EXTERNAL_HOSTS);
        let h = i.wrapping_mul(2_654_435_761) as u32;
        let a = [(h >> 24) as u8 % 200 + 11, (h >> 16) as u8, (h >> 8) as u8, h as u8 | 1];
        v4(a)
    }

    /// The next `rows` flows as a `flows` batch.
    pub fn batch(&mut self, rows: usize) -> RecordBatch {
        for _ in 0..rows {
            let jitter = (self.next() % self.step_ns.max(1) as u64) as i64;
            let ts = (self.t_ns + jitter / 2) as u64;
            self.t_ns += self.step_ns;
            let orig = self.internal();
            let inbound = self.next().is_multiple_of(10);
            let (orig_h, resp_h) = if inbound {
                (self.external(), orig)
            } else if self.next().is_multiple_of(3) {
                (orig, self.internal())
            } else {
                (orig, self.external())
            };
            let r = self.next() % 100;
            let (ip_proto, resp_p, service) = match r {
                0..45 => (6, 443, Service::Ssl),
                45..60 => (6, 80, Service::Http),
                60..80 => (17, 53, Service::Dns),
                80..84 => (6, 22, Service::Ssh),
                84..88 => (17, 123, Service::Ntp),
                88..90 => (6, 3389, Service::Unknown),
                90..95 => (6, 8080, Service::Http),
                _ => (17, 1024 + (self.next() % 60_000) as u16, Service::Unknown),
            };
            let orig_p = 32_768 + (self.next() % 28_000) as u16;
            // Heavy-tailed sizes: most flows are small, a few are huge.
            let orig_bytes = (40.0 * (self.unit() * 9.0).exp()) as u64;
            let resp_bytes = if self.next().is_multiple_of(8) { 0 } else { (60.0 * (self.unit() * 11.0).exp()) as u64 };
            let orig_pkts = orig_bytes / 600 + 1;
            let resp_pkts = resp_bytes / 1200 + u64::from(resp_bytes > 0);
            let dur = (self.unit() * self.unit() * 120e9) as u64;
            let (conn_state, history) = match (ip_proto, resp_bytes) {
                (6, 0) => ("S0", "S"),
                (6, _) if self.next().is_multiple_of(10) => ("RSTO", "ShADadR"),
                (6, _) => ("SF", "ShADadFf"),
                (_, 0) => ("S0", "D"),
                _ => ("SF", "Dd"),
            };
            let key = FlowKey {
                lo: orig_h.min(resp_h),
                hi: orig_h.max(resp_h),
                lo_port: if orig_h <= resp_h { orig_p } else { resp_p },
                hi_port: if orig_h <= resp_h { resp_p } else { orig_p },
                proto: ip_proto,
                v6: false,
                vlan: 0,
            };
            let rec = FlowRecord {
                kind: RecordKind::Final,
                ts,
                first_ts: ts,
                last_ts: ts + dur,
                uid: self.next(),
                key,
                orig_h,
                orig_p,
                resp_h,
                resp_p,
                v6: false,
                ip_proto,
                service,
                orig_bytes,
                resp_bytes,
                orig_pkts,
                resp_pkts,
                orig_ip_bytes: orig_bytes + orig_pkts * 40,
                resp_ip_bytes: resp_bytes + resp_pkts * 40,
                conn_state,
                history,
                missed_bytes: 0,
                vlan: 0,
                iface: 0,
                orig_flags: if ip_proto == 6 { 0x1b } else { 0 },
                resp_flags: if ip_proto == 6 && resp_bytes > 0 { 0x1b } else { 0 },
                parents: [None, None],
            };
            self.builder.append(&rec, 0, &mut self.scratch, None);
        }
        self.builder.finish()
    }
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&a);
    o
}
