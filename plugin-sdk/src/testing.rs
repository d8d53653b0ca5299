//! Test a plugin natively: [`RecordingHost`] plays the appliance, and
//! [`BatchWriter`] builds batches as the host would.

extern crate std;

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::abi::{self, FieldType, Kind};
use crate::{AlertFields, Host, Level};

/// An alert as the test host received it.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedAlert {
    pub rule: String,
    pub severity: crate::Severity,
    pub category: crate::Category,
    pub verdict: crate::Verdict,
    pub group: String,
    pub explanation: String,
    pub src_ips: String,
    pub dst_ips: String,
    pub sample_flows: String,
    pub ports: [u16; 4],
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub rate: f64,
}

/// A [`Host`] that records what the plugin does.
#[derive(Default, Debug)]
pub struct RecordingHost {
    pub config: BTreeMap<String, String>,
    pub alerts: Vec<OwnedAlert>,
    pub logs: Vec<(Level, String)>,
    pub counters: BTreeMap<String, i64>,
    pub kv: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl RecordingHost {
    pub fn with_config(pairs: &[(&str, &str)]) -> RecordingHost {
        RecordingHost {
            config: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }
}

impl Host for RecordingHost {
    fn alert(&mut self, a: &AlertFields<'_>) -> Result<(), i32> {
        self.alerts.push(OwnedAlert {
            rule: a.rule.into(),
            severity: a.severity,
            category: a.category,
            verdict: a.verdict,
            group: a.group.into(),
            explanation: a.explanation.into(),
            src_ips: a.src_ips.into(),
            dst_ips: a.dst_ips.into(),
            sample_flows: a.sample_flows.into(),
            ports: a.ports,
            packets: a.packets,
            bytes: a.bytes,
            flows: a.flows,
            rate: a.rate,
        });
        Ok(())
    }
    fn log(&mut self, level: Level, msg: &str) {
        self.logs.push((level, msg.into()));
    }
    fn config<'b>(&mut self, key: &str, buf: &'b mut [u8]) -> Option<&'b str> {
        let v = self.config.get(key)?;
        let b = buf.get_mut(..v.len())?;
        b.copy_from_slice(v.as_bytes());
        core::str::from_utf8(b).ok()
    }
    fn counter(&mut self, name: &str, delta: i64) {
        *self.counters.entry(name.into()).or_default() += delta;
    }
    fn kv_get(&mut self, key: &[u8], buf: &mut [u8]) -> Option<usize> {
        let v = self.kv.get(key)?;
        buf.get_mut(..v.len())?.copy_from_slice(v);
        Some(v.len())
    }
    fn kv_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), i32> {
        self.kv.insert(key.into(), value.into());
        Ok(())
    }
    fn kv_del(&mut self, key: &[u8]) {
        self.kv.remove(key);
    }
}

/// Builds a batch the way the host does.
pub struct BatchWriter {
    pub kind: Kind,
    records: Vec<u8>,
    strings: Vec<u8>,
    pub count: usize,
}

/// One record being written.
pub struct RecordWriter<'w> {
    w: &'w mut BatchWriter,
    at: usize,
}

impl BatchWriter {
    pub fn new(kind: Kind) -> BatchWriter {
        BatchWriter { kind, records: Vec::new(), strings: Vec::new(), count: 0 }
    }

    /// Start a zeroed record.
    pub fn record(&mut self) -> RecordWriter<'_> {
        let at = self.records.len();
        self.records.resize(at + self.kind.stride(), 0);
        self.count += 1;
        RecordWriter { w: self, at }
    }

    /// Records, then the string area.
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.records.clone();
        b.extend_from_slice(&self.strings);
        b
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.strings.clear();
        self.count = 0;
    }
}

impl RecordWriter<'_> {
    fn r(&mut self) -> &mut [u8] {
        let end = self.at + self.w.kind.stride();
        &mut self.w.records[self.at..end]
    }
    pub fn u8(mut self, f: (usize, FieldType), v: u8) -> Self {
        abi::put_u8(self.r(), f, v);
        self
    }
    pub fn u16(mut self, f: (usize, FieldType), v: u16) -> Self {
        abi::put_u16(self.r(), f, v);
        self
    }
    pub fn u32(mut self, f: (usize, FieldType), v: u32) -> Self {
        abi::put_u32(self.r(), f, v);
        self
    }
    pub fn u64(mut self, f: (usize, FieldType), v: u64) -> Self {
        abi::put_u64(self.r(), f, v);
        self
    }
    /// An address: `"10.0.0.1"` or an IPv6 text (also sets nothing else:
    /// set the record's `V6` field yourself for IPv6).
    pub fn addr(mut self, f: (usize, FieldType), ip: &str) -> Self {
        let mut a = [0u8; 16];
        if let Ok(v4) = ip.parse::<core::net::Ipv4Addr>() {
            a[..4].copy_from_slice(&v4.octets());
        } else if let Ok(v6) = ip.parse::<core::net::Ipv6Addr>() {
            a = v6.octets();
        } else {
            panic!("not an address: {ip}");
        }
        abi::put_addr(self.r(), f, &a);
        self
    }
    pub fn str(mut self, f: (usize, FieldType), s: &str) -> Self {
        let off = self.w.strings.len() as u32;
        self.w.strings.extend_from_slice(s.as_bytes());
        abi::put_str(self.r(), f, off, s.len() as u32);
        self
    }
}
