//! Alerts as history records: the `alerts` table. One row per alert event
//! (opened, updated, closed), so the table tells an alert's whole story and
//! the latest row of an `id` is its current state.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Float64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt16Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::records::{list_of, ts_type};

macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s),* }
            }
            pub fn from_name(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|x| x.name() == s)
            }
        }
    };
}

named!(
    /// How bad.
    Severity { Info => "info", Low => "low", Medium => "medium", High => "high", Critical => "critical" }
);
named!(
    /// What kind of trouble.
    Category {
        Ddos => "ddos", Scan => "scan", Flood => "flood", Policy => "policy", Intel => "intel", Anomaly => "anomaly",
        Malware => "malware", Exfiltration => "exfiltration",
        /// The appliance's own health (a quarantined plugin).
        System => "system",
    }
);
named!(
    /// The detector's judgement.
    Verdict { Normal => "normal", Suspicious => "suspicious", Malicious => "malicious" }
);
named!(
    /// Which moment of an alert's life a row records.
    AlertEvent {
        /// The condition started.
        Open => "open",
        /// It goes on: counters and evidence updated.
        Update => "update",
        /// Quiet for the configured time: over.
        Close => "close",
    }
);

/// One alert event.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// When this event happened (ns since the epoch): the row's time.
    pub ts: u64,
    pub event: AlertEvent,
    /// Stable across the alert's events.
    pub id: String,
    /// The rule or built-in detector that raised it.
    pub rule: String,
    pub severity: Severity,
    pub category: Category,
    pub verdict: Verdict,
    pub start_ts: u64,
    pub last_ts: u64,
    pub src_ips: Vec<String>,
    pub dst_ips: Vec<String>,
    pub ports: Vec<u16>,
    pub countries: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    /// The measured rate that tripped it, in `rate_unit` (e.g. `syn/s`).
    pub rate: f64,
    pub rate_unit: String,
    /// Evidence: the heaviest sources, and flow ids to look at.
    pub top_sources: Vec<String>,
    pub sample_flows: Vec<String>,
    /// In plain language, what was seen and against what baseline.
    pub explanation: String,
}

pub fn alerts_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let f = Field::new;
        Arc::new(Schema::new(vec![
            f("ts", ts_type(), false),
            f("event", DataType::Utf8, false),
            f("id", DataType::Utf8, false),
            f("rule", DataType::Utf8, false),
            f("severity", DataType::Utf8, false),
            f("category", DataType::Utf8, false),
            f("verdict", DataType::Utf8, false),
            f("start_ts", ts_type(), false),
            f("last_ts", ts_type(), false),
            f("src_ips", list_of(DataType::Utf8), false),
            f("dst_ips", list_of(DataType::Utf8), false),
            f("ports", list_of(DataType::UInt16), false),
            f("countries", list_of(DataType::Utf8), false),
            f("packets", DataType::UInt64, false),
            f("bytes", DataType::UInt64, false),
            f("flows", DataType::UInt64, false),
            f("rate", DataType::Float64, false),
            f("rate_unit", DataType::Utf8, false),
            f("top_sources", list_of(DataType::Utf8), false),
            f("sample_flows", list_of(DataType::Utf8), false),
            f("explanation", DataType::Utf8, false),
        ]))
    })
    .clone()
}

/// Builds `alerts` record batches.
#[derive(Default)]
pub struct AlertBuilder {
    ts: TimestampNanosecondBuilder,
    event: StringBuilder,
    id: StringBuilder,
    rule: StringBuilder,
    severity: StringBuilder,
    category: StringBuilder,
    verdict: StringBuilder,
    start_ts: TimestampNanosecondBuilder,
    last_ts: TimestampNanosecondBuilder,
    src_ips: ListBuilder<StringBuilder>,
    dst_ips: ListBuilder<StringBuilder>,
    ports: ListBuilder<UInt16Builder>,
    countries: ListBuilder<StringBuilder>,
    packets: UInt64Builder,
    bytes: UInt64Builder,
    flows: UInt64Builder,
    rate: Float64Builder,
    rate_unit: StringBuilder,
    top_sources: ListBuilder<StringBuilder>,
    sample_flows: ListBuilder<StringBuilder>,
    explanation: StringBuilder,
    rows: usize,
}

fn strings(b: &mut ListBuilder<StringBuilder>, v: &[String]) {
    for s in v {
        b.values().append_value(s);
    }
    b.append(true);
}

impl AlertBuilder {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push(&mut self, a: &Alert) {
        let t = |v: u64| v.min(i64::MAX as u64) as i64;
        self.ts.append_value(t(a.ts));
        self.event.append_value(a.event.name());
        self.id.append_value(&a.id);
        self.rule.append_value(&a.rule);
        self.severity.append_value(a.severity.name());
        self.category.append_value(a.category.name());
        self.verdict.append_value(a.verdict.name());
        self.start_ts.append_value(t(a.start_ts));
        self.last_ts.append_value(t(a.last_ts));
        strings(&mut self.src_ips, &a.src_ips);
        strings(&mut self.dst_ips, &a.dst_ips);
        for p in &a.ports {
            self.ports.values().append_value(*p);
        }
        self.ports.append(true);
        strings(&mut self.countries, &a.countries);
        self.packets.append_value(a.packets);
        self.bytes.append_value(a.bytes);
        self.flows.append_value(a.flows);
        self.rate.append_value(a.rate);
        self.rate_unit.append_value(&a.rate_unit);
        strings(&mut self.top_sources, &a.top_sources);
        strings(&mut self.sample_flows, &a.sample_flows);
        self.explanation.append_value(&a.explanation);
        self.rows += 1;
    }

    /// The rows pushed so far as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let utc = |b: &mut TimestampNanosecondBuilder| Arc::new(b.finish().with_timezone("UTC")) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            utc(&mut self.ts),
            Arc::new(self.event.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.verdict.finish()),
            utc(&mut self.start_ts),
            utc(&mut self.last_ts),
            Arc::new(self.src_ips.finish()),
            Arc::new(self.dst_ips.finish()),
            Arc::new(self.ports.finish()),
            Arc::new(self.countries.finish()),
            Arc::new(self.packets.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.flows.finish()),
            Arc::new(self.rate.finish()),
            Arc::new(self.rate_unit.finish()),
            Arc::new(self.top_sources.finish()),
            Arc::new(self.sample_flows.finish()),
            Arc::new(self.explanation.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(alerts_schema(), cols).expect("alert columns match alerts_schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn names_round_trip_and_batches_match_the_schema() {
        for s in Severity::ALL {
            assert_eq!(Severity::from_name(s.name()), Some(*s));
        }
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Info);
        assert_eq!(Category::from_name("scan"), Some(Category::Scan));
        assert_eq!(Verdict::from_name("bogus"), None);
        let a = Alert {
            ts: 5,
            event: AlertEvent::Open,
            id: "A1".into(),
            rule: "syn_flood".into(),
            severity: Severity::High,
            category: Category::Flood,
            verdict: Verdict::Malicious,
            start_ts: 5,
            last_ts: 5,
            src_ips: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            dst_ips: vec!["10.0.0.5".into()],
            ports: vec![80],
            countries: vec![],
            packets: 48_000,
            bytes: 2_880_000,
            flows: 47_000,
            rate: 48_000.0,
            rate_unit: "syn/s".into(),
            top_sources: vec!["10.0.0.1".into()],
            sample_flows: vec!["CAbc".into()],
            explanation: "SYN rate to 10.0.0.5:80 is 48,000/s".into(),
        };
        let mut b = AlertBuilder::default();
        b.push(&a);
        b.push(&Alert { event: AlertEvent::Close, ts: 9, ..a.clone() });
        assert_eq!(b.rows(), 2);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(b.rows(), 0);
        let src = batch.column(9).as_list::<i32>();
        assert_eq!(src.value(0).len(), 2);
        assert_eq!(batch.column(1).as_string::<i32>().value(1), "close");
        assert_eq!(b.finish().num_rows(), 0);
    }
}
