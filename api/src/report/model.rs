//! What a report holds: titled sections of figures, charts and tables, with
//! raw values and the unit each is shown in. The PDF, CSV and JSON versions
//! are three renderings of one [`Report`], so they never disagree.

use serde::Serialize;

/// How a number is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Text,
    Count,
    Bytes,
    /// Bits per second.
    Bps,
    /// Nanoseconds since the Unix epoch, shown as UTC time.
    Time,
    Percent,
    /// A duration in seconds ("2h 05m").
    Seconds,
}

/// One headline number.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Figure {
    pub label: String,
    pub value: f64,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    /// A value over time (labels are times), drawn as a filled line.
    Line,
    /// Shares of a whole, drawn as a donut with a legend.
    Donut,
    /// Ranked values, drawn as horizontal bars.
    Bars,
    /// A few categories, drawn as vertical columns.
    Columns,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Point {
    pub label: String,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Chart {
    pub kind: ChartKind,
    pub unit: Unit,
    /// For a line: the time labels are nanoseconds since the epoch.
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Column {
    pub name: String,
    pub unit: Unit,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Rows left out for length (the total was `rows.len() + omitted`).
    pub omitted: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Figures {
        figures: Vec<Figure>,
    },
    Chart(Chart),
    Table(Table),
    /// A sentence (e.g. "no incidents in this range").
    Note {
        text: String,
    },
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Section {
    pub title: String,
    pub body: Body,
}

/// A whole report.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub kind: String,
    pub title: String,
    /// RFC 3339, UTC.
    pub from: String,
    pub to: String,
    pub generated: String,
    /// The filter, as the user gave it ("" when none).
    pub filter: String,
    pub sections: Vec<Section>,
}

impl Report {
    pub fn section(&mut self, title: impl Into<String>, body: Body) {
        self.sections.push(Section { title: title.into(), body });
    }
}

/// Thousands separated, as tables show counts and byte totals.
pub fn grouped(v: f64) -> String {
    let neg = v < 0.0;
    let n = v.abs().round() as u128;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3 + 1);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

/// A value scaled to a prefix (1000-based): "1.23 GB", "45.6 Mbit/s", "12.3k".
pub fn human(v: f64, unit: Unit) -> String {
    let (suffix, prefixes): (&str, &[&str]) = match unit {
        Unit::Bytes => ("B", &["", "k", "M", "G", "T", "P"]),
        Unit::Bps => ("bit/s", &["", "k", "M", "G", "T"]),
        Unit::Count => ("", &["", "k", "M", "G", "T"]),
        Unit::Percent => return format!("{v:.1}%"),
        Unit::Seconds => return duration(v),
        Unit::Time => return time_label(v as i64),
        Unit::Text => return format!("{v}"),
    };
    let mut x = v;
    let mut i = 0;
    while x.abs() >= 1000.0 && i + 1 < prefixes.len() {
        x /= 1000.0;
        i += 1;
    }
    let num = if i == 0 {
        format!("{}", x.round() as i64)
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    match (suffix, prefixes[i]) {
        ("", p) => format!("{num}{p}"),
        (s, p) => format!("{num} {p}{s}"),
    }
}

/// "3d 04h", "2h 05m", "4m 10s", "12s".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// "2026-12-01 14:05 UTC" style (seconds shown only when not zero).
pub fn time_label(ns: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128) else { return ns.to_string() };
    if t.second() == 0 {
        format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute())
    } else {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// A table cell as text (tables show exact numbers).
pub fn cell_text(v: &serde_json::Value, unit: Unit) -> String {
    match (v, unit) {
        (serde_json::Value::Null, _) => String::new(),
        (serde_json::Value::String(s), _) => s.clone(),
        (serde_json::Value::Bool(b), _) => if *b { "yes" } else { "no" }.to_string(),
        (serde_json::Value::Number(n), Unit::Time) => n.as_i64().map(time_label).unwrap_or_else(|| n.to_string()),
        (serde_json::Value::Number(n), Unit::Count | Unit::Bytes) => grouped(n.as_f64().unwrap_or(0.0)),
        (serde_json::Value::Number(n), Unit::Bps) => human(n.as_f64().unwrap_or(0.0), Unit::Bps),
        (serde_json::Value::Number(n), Unit::Percent) => human(n.as_f64().unwrap_or(0.0), Unit::Percent),
        (serde_json::Value::Number(n), Unit::Seconds) => duration(n.as_f64().unwrap_or(0.0)),
        (serde_json::Value::Number(n), Unit::Text) => n.to_string(),
        (other, _) => other.to_string(),
    }
}

/// CSV of every section in one long table: `section,row,column,value`
/// (figures and chart points are rows of their own), so any CSV reader
/// takes the whole report.
pub fn to_csv(r: &Report) -> Vec<u8> {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    }
    fn raw(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            o => o.to_string(),
        }
    }
    let mut out = String::from("section,row,column,value\n");
    let mut line = |section: &str, row: &str, col: &str, val: &str| {
        out.push_str(&format!("{},{},{},{}\n", field(section), field(row), field(col), field(val)));
    };
    line("report", "", "title", &r.title);
    line("report", "", "from", &r.from);
    line("report", "", "to", &r.to);
    line("report", "", "generated", &r.generated);
    line("report", "", "filter", &r.filter);
    for s in &r.sections {
        match &s.body {
            Body::Figures { figures } => {
                for f in figures {
                    line(&s.title, &f.label, "value", &num(f.value));
                }
            }
            Body::Chart(c) => {
                for p in &c.points {
                    line(&s.title, &p.label, "value", &num(p.value));
                }
            }
            Body::Table(t) => {
                for (i, row) in t.rows.iter().enumerate() {
                    for (c, v) in t.columns.iter().zip(row) {
                        line(&s.title, &(i + 1).to_string(), &c.name, &raw(v));
                    }
                }
            }
            Body::Note { text } => line(&s.title, "", "note", text),
        }
    }
    out.into_bytes()
}

/// Whole numbers without a fraction.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_an_operator_expects() {
        assert_eq!(grouped(1234567.0), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(0.0), "0");
        assert_eq!(human(1_234_000_000.0, Unit::Bytes), "1.23 GB");
        assert_eq!(human(512.0, Unit::Bytes), "512 B");
        assert_eq!(human(45_600_000.0, Unit::Bps), "45.6 Mbit/s");
        assert_eq!(human(12_300.0, Unit::Count), "12.3k");
        assert_eq!(time_label(1_764_547_200_000_000_000), "2025-12-01 00:00");
        let mut r = Report {
            kind: "traffic".into(),
            title: "T, \"quoted\"".into(),
            from: "a".into(),
            to: "b".into(),
            generated: "c".into(),
            filter: String::new(),
            sections: Vec::new(),
        };
        r.section(
            "Top",
            Body::Table(Table {
                columns: vec![
                    Column { name: "ip".into(), unit: Unit::Text },
                    Column { name: "bytes".into(), unit: Unit::Bytes },
                ],
                rows: vec![vec!["10.0.0.1".into(), 5.into()]],
                omitted: 0,
            }),
        );
        let csv = String::from_utf8(to_csv(&r)).unwrap();
        assert!(csv.contains("report,,title,\"T, \"\"quoted\"\"\"\n"), "{csv}");
        assert!(csv.contains("Top,1,ip,10.0.0.1\nTop,1,bytes,5\n"), "{csv}");
    }
}
