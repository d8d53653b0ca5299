//! Custom rules: operators' conditions over each second's conversations,
//! written in a TOML file (docs/detection.md, "Custom rules"):
//!
//! ```toml
//! [[rule]]
//! name = "udp-exfil"
//! condition = "bytes_per_s by src_ip > 50 MB/s for 30s where proto = udp"
//! severity = "high"
//! cooldown = "5m"
//! ```
//!
//! A condition is `METRIC by KEY OP NUMBER [UNIT] [for DUR | in DUR] [where
//! FILTER]`, or a FILTER alone (any new flow matching it). The whole file is
//! checked before anything changes: one bad rule rejects the file with its
//! line and the reason, and the rules loaded before stay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::detectors::{Finding, thousands};
use super::{ConvKey, ConvStat, Subnet};
use crate::alert::{Category, Severity, Verdict};
use crate::decode::{PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, addr};

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rules file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("rules file {path}, line {line}: rule `{rule}`: {msg}")]
    Rule { path: String, line: usize, rule: String, msg: String },
}

/// What a rule measures per key and second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Packets,
    Bytes,
    Flows,
    /// Distinct values of a field.
    Distinct(Field),
    /// No metric: any new flow matching the filter.
    Match,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    SrcIp,
    DstIp,
    DstPort,
    Proto,
    SrcCountry,
    DstCountry,
}

impl Field {
    fn parse(s: &str) -> Option<Field> {
        Some(match s {
            "src_ip" => Field::SrcIp,
            "dst_ip" => Field::DstIp,
            "dst_port" => Field::DstPort,
            "proto" => Field::Proto,
            "src_country" | "country(src_ip)" => Field::SrcCountry,
            "dst_country" | "country(dst_ip)" => Field::DstCountry,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Field::SrcIp => "src_ip",
            Field::DstIp => "dst_ip",
            Field::DstPort => "dst_port",
            Field::Proto => "proto",
            Field::SrcCountry => "src_country",
            Field::DstCountry => "dst_country",
        }
    }
}

/// A field's value in one conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Value {
    Ip([u8; 16], bool),
    Num(u64),
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Ip(a, v6) => write!(f, "{}", addr(*v6, a)),
            Value::Num(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP | PROTO_ICMP6 => "icmp",
        _ => "other",
    }
}

struct Ctx<'a> {
    k: &'a ConvKey,
    geo: Option<&'a crate::geo::Geo>,
}

impl Ctx<'_> {
    fn get(&self, f: Field) -> Option<Value> {
        let k = self.k;
        Some(match f {
            Field::SrcIp => {
                if !k.src_known() {
                    return None;
                }
                Value::Ip(k.src, k.v6)
            }
            Field::DstIp => Value::Ip(k.dst, k.v6),
            Field::DstPort => Value::Num(k.dport as u64),
            Field::Proto => Value::Text(proto_name(k.proto).into()),
            Field::SrcCountry => Value::Text(String::from_utf8_lossy(&self.geo?.country(&k.src, k.v6)?).into_owned()),
            Field::DstCountry => Value::Text(String::from_utf8_lossy(&self.geo?.country(&k.dst, k.v6)?).into_owned()),
        })
    }
}

/// One test of a filter.
#[derive(Clone, Debug, PartialEq)]
enum Test {
    Eq(Field, Vec<Pattern>, bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Pattern {
    Net(Subnet),
    Num(u64),
    Text(String),
}

impl Pattern {
    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Pattern::Net(n), Value::Ip(a, v6)) => n.contains(a, *v6),
            (Pattern::Num(n), Value::Num(x)) => n == x,
            (Pattern::Text(t), Value::Text(x)) => t.eq_ignore_ascii_case(x),
            _ => false,
        }
    }
}

fn matches(tests: &[Test], c: &Ctx) -> bool {
    tests.iter().all(|Test::Eq(f, pats, negate)| {
        let hit = c.get(*f).is_some_and(|v| pats.iter().any(|p| p.matches(&v)));
        hit != *negate
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    fn holds(self, x: f64, y: f64) -> bool {
        match self {
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
        }
    }
    fn text(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
        }
    }
}

/// A checked rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub metric: Metric,
    /// Grouping fields (empty with `Metric::Match`: source and destination).
    key: Vec<Field>,
    cmp: Cmp,
    threshold: f64,
    unit: String,
    /// The condition must hold this many seconds in a row.
    for_secs: u64,
    /// The metric sums (or counts distinct values) over this many seconds.
    in_secs: u64,
    filter: Vec<Test>,
    pub condition: String,
    pub severity: Severity,
    pub category: Category,
    pub verdict: Verdict,
    pub cooldown_secs: u64,
    pub description: String,
    pub actions: Vec<String>,
}

fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | ',' => flush(&mut cur, &mut out),
            '[' | ']' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            '"' | '\'' => {
                flush(&mut cur, &mut out);
                let mut q = String::from("\"");
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    q.push(d);
                }
                out.push(q);
            }
            '>' | '<' | '=' | '!' => {
                flush(&mut cur, &mut out);
                let mut op = c.to_string();
                if chars.peek() == Some(&'=') {
                    op.push('=');
                    chars.next();
                }
                out.push(op);
            }
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// `30s`, `5m`, `1h`, `2` (seconds).
pub fn duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, mul) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mul = match &s[i..] {
                "s" | "sec" | "secs" => 1,
                "m" | "min" | "mins" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return None,
            };
            (&s[..i], mul)
        }
        None => (s, 1),
    };
    n.trim().parse::<u64>().ok().map(|n| n * mul)
}

/// `50`, `50k`, `2.5M`, `50 MB/s`, `1GiB`: returns (value, unit text).
fn number(tok: &[String]) -> Option<(f64, usize, String)> {
    let first = tok.first()?;
    let split = first.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(first.len());
    let n: f64 = first[..split].parse().ok()?;
    let (mut suffix, mut used) = (first[split..].to_string(), 1);
    if suffix.is_empty()
        && let Some(next) = tok.get(1)
        && next.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !matches!(next.as_str(), "for" | "in" | "where")
    {
        suffix = next.clone();
        used = 2;
    }
    let unit = suffix.trim_end_matches("/s").trim_end_matches("ps");
    let (mul, base) = match unit.chars().next() {
        Some('k' | 'K') => (1e3, &unit[1..]),
        Some('M') => (1e6, &unit[1..]),
        Some('G') => (1e9, &unit[1..]),
        _ => (1.0, unit),
    };
    let mul = match base {
        "iB" => {
            mul / match mul as u64 {
                1_000 => 1_000.0 / 1_024.0,
                1_000_000 => 1e6 / 1_048_576.0,
                _ => 1e9 / 1_073_741_824.0,
            }
        }
        "" | "B" | "b" | "p" | "pkt" | "pkts" | "flows" => mul,
        "bit" | "bits" => mul / 8.0,
        _ => return None,
    };
    Some((n * mul, used, suffix))
}

fn pattern(f: Field, t: &str) -> Result<Pattern, String> {
    let t = t.trim_start_matches('"');
    match f {
        Field::SrcIp | Field::DstIp => {
            Subnet::parse(t).map(Pattern::Net).ok_or_else(|| format!("`{t}` is not an address or network"))
        }
        Field::DstPort => t.parse::<u16>().map(|p| Pattern::Num(p as u64)).map_err(|_| format!("`{t}` is not a port")),
        Field::Proto => match t {
            "tcp" | "udp" | "icmp" | "other" => Ok(Pattern::Text(t.into())),
            _ => Err(format!("`{t}` is not a protocol (tcp, udp, icmp, other)")),
        },
        Field::SrcCountry | Field::DstCountry => {
            if t.len() == 2 && t.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(Pattern::Text(t.to_ascii_uppercase()))
            } else {
                Err(format!("`{t}` is not a two-letter country code"))
            }
        }
    }
}

fn filter(tok: &[String]) -> Result<Vec<Test>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tok.len() {
        let f = Field::parse(&tok[i]).ok_or_else(|| {
            format!("`{}` is not a field (src_ip, dst_ip, dst_port, proto, src_country, dst_country)", tok[i])
        })?;
        let (negate, op_len) = match (tok.get(i + 1).map(String::as_str), tok.get(i + 2).map(String::as_str)) {
            (Some("=" | "=="), _) | (Some("in"), _) => (false, 1),
            (Some("!="), _) => (true, 1),
            (Some("not"), Some("in")) => (true, 2),
            (o, _) => {
                return Err(format!(
                    "after `{}`: expected =, !=, in or not in, found {:?}",
                    tok[i],
                    o.unwrap_or("nothing")
                ));
            }
        };
        i += 1 + op_len;
        let mut pats = Vec::new();
        if tok.get(i).map(String::as_str) == Some("[") {
            i += 1;
            while i < tok.len() && tok[i] != "]" {
                pats.push(pattern(f, &tok[i])?);
                i += 1;
            }
            if i >= tok.len() {
                return Err("a list is missing its `]`".into());
            }
            i += 1;
        } else {
            pats.push(pattern(f, tok.get(i).ok_or("a value is missing at the end")?)?);
            i += 1;
        }
        out.push(Test::Eq(f, pats, negate));
        match tok.get(i).map(String::as_str) {
            None => break,
            Some("and") => i += 1,
            Some(o) => return Err(format!("expected `and` between tests, found `{o}`")),
        }
    }
    Ok(out)
}

/// A parsed condition.
struct Cond {
    metric: Metric,
    key: Vec<Field>,
    cmp: Cmp,
    threshold: f64,
    unit: String,
    for_secs: u64,
    in_secs: u64,
    filter: Vec<Test>,
}

/// Parse a condition (see the module doc).
fn condition(text: &str) -> Result<Cond, String> {
    let tok = tokens(text);
    if tok.is_empty() {
        return Err("the condition is empty".into());
    }
    let (metric, mut i) = match tok[0].as_str() {
        "packets_per_s" | "packets" => (Metric::Packets, 1),
        "bytes_per_s" | "bytes" => (Metric::Bytes, 1),
        "flows_per_s" | "flows" => (Metric::Flows, 1),
        "distinct" => {
            let f =
                tok.get(1).and_then(|t| Field::parse(t)).ok_or("`distinct` needs a field (e.g. distinct dst_port)")?;
            (Metric::Distinct(f), 2)
        }
        _ => {
            // A filter alone.
            let filter = filter(&tok)?;
            return Ok(Cond {
                metric: Metric::Match,
                key: vec![],
                cmp: Cmp::Gt,
                threshold: 0.0,
                unit: String::new(),
                for_secs: 1,
                in_secs: 1,
                filter,
            });
        }
    };
    if tok.get(i).map(String::as_str) != Some("by") {
        return Err(format!("expected `by KEY` after `{}`", tok[..i].join(" ")));
    }
    i += 1;
    let mut key = Vec::new();
    while let Some(f) = tok.get(i).and_then(|t| Field::parse(t)) {
        key.push(f);
        i += 1;
        if tok.get(i).map(String::as_str) == Some("and") && tok.get(i + 1).and_then(|t| Field::parse(t)).is_some() {
            i += 1;
        }
    }
    if key.is_empty() {
        return Err(format!("`by` needs a key field, found `{}`", tok.get(i).map_or("nothing", String::as_str)));
    }
    let cmp = match tok.get(i).map(String::as_str) {
        Some(">") => Cmp::Gt,
        Some(">=") => Cmp::Ge,
        Some("<") => Cmp::Lt,
        Some("<=") => Cmp::Le,
        o => return Err(format!("expected a comparison (>, >=, <, <=), found `{}`", o.unwrap_or("nothing"))),
    };
    i += 1;
    let (threshold, used, unit) =
        number(&tok[i..]).ok_or_else(|| format!("`{}` is not a number", tok.get(i).map_or("", String::as_str)))?;
    i += used;
    let (mut for_secs, mut in_secs) = (1, 1);
    while let Some(w) = tok.get(i).map(String::as_str) {
        match w {
            "for" | "in" => {
                let d = tok.get(i + 1).and_then(|t| duration_secs(t)).filter(|d| (1..=86_400).contains(d));
                let d = d.ok_or_else(|| format!("`{w}` needs a duration of 1 s to 1 day (e.g. 30s, 5m)"))?;
                if w == "for" {
                    for_secs = d;
                } else {
                    in_secs = d;
                }
                i += 2;
            }
            "where" => break,
            o => return Err(format!("unexpected `{o}` (expected for, in or where)")),
        }
    }
    let filter = if tok.get(i).map(String::as_str) == Some("where") { filter(&tok[i + 1..])? } else { vec![] };
    Ok(Cond { metric, key, cmp, threshold, unit, for_secs, in_secs, filter })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    condition: toml::Spanned<String>,
    severity: Option<String>,
    category: Option<String>,
    verdict: Option<String>,
    cooldown: Option<String>,
    description: Option<String>,
    actions: Option<Vec<String>>,
    enabled: Option<bool>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

/// Parse and check a whole rules file.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Rule>, RuleError> {
    let p = path.display().to_string();
    let raw: RawFile = toml::from_str(text).map_err(|e| RuleError::File { path: p.clone(), msg: e.to_string() })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut out: Vec<Rule> = Vec::new();
    for r in raw.rule {
        let line = line_of(r.span().start);
        let r = r.into_inner();
        let bad = |line: usize, msg: String| RuleError::Rule { path: p.clone(), line, rule: r.name.clone(), msg };
        if r.name.is_empty() || out.iter().any(|o| o.name == r.name) {
            return Err(bad(line, "names must be set and distinct".into()));
        }
        if r.enabled == Some(false) {
            continue;
        }
        let cline = line_of(r.condition.span().start);
        let Cond { metric, key, cmp, threshold, unit, for_secs, in_secs, filter } =
            condition(r.condition.get_ref()).map_err(|m| bad(cline, m))?;
        let severity = match &r.severity {
            None => Severity::Medium,
            Some(s) => Severity::from_name(s)
                .ok_or_else(|| bad(line, format!("severity `{s}` (info, low, medium, high, critical)")))?,
        };
        let category = match &r.category {
            None => Category::Policy,
            Some(s) => Category::from_name(s)
                .ok_or_else(|| bad(line, format!("category `{s}` (ddos, scan, flood, policy, intel, anomaly)")))?,
        };
        let verdict = match &r.verdict {
            None => Verdict::Suspicious,
            Some(s) => Verdict::from_name(s)
                .ok_or_else(|| bad(line, format!("verdict `{s}` (normal, suspicious, malicious)")))?,
        };
        let cooldown_secs = match &r.cooldown {
            None => 0,
            Some(c) => {
                duration_secs(c).ok_or_else(|| bad(line, format!("cooldown `{c}` is not a duration (e.g. 5m)")))?
            }
        };
        let actions = r.actions.clone().unwrap_or_else(|| vec!["alert".into()]);
        if let Some(a) = actions.iter().find(|a| !(a.as_str() == "alert" || a.starts_with("notify:"))) {
            return Err(bad(line, format!("action `{a}` (alert, or notify:CHANNEL)")));
        }
        out.push(Rule {
            name: r.name.clone(),
            metric,
            key,
            cmp,
            threshold,
            unit,
            for_secs,
            in_secs,
            filter,
            condition: r.condition.get_ref().clone(),
            severity,
            category,
            verdict,
            cooldown_secs,
            description: r.description.clone().unwrap_or_default(),
            actions,
        });
    }
    Ok(out)
}

/// Per rule and key, what the last seconds held.
#[derive(Default)]
struct KeyState {
    /// (second, sum) for sums over `in`.
    sums: VecDeque<(u64, f64)>,
    /// Distinct values with the last second each was seen.
    seen: HashMap<Value, u64>,
    streak: u64,
    last_fire: u64,
    first_fire: u64,
    samples: Vec<u64>,
}

/// The rules in force, their state, and where they come from.
pub struct RuleSet {
    path: Option<PathBuf>,
    stamp: Option<SystemTime>,
    pub rules: Vec<Rule>,
    state: Vec<HashMap<Vec<Value>, KeyState>>,
    last_check: std::time::Instant,
    every: std::time::Duration,
    close_after_secs: u64,
}

fn stamp(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl RuleSet {
    pub fn empty() -> RuleSet {
        RuleSet {
            path: None,
            stamp: None,
            rules: vec![],
            state: vec![],
            last_check: std::time::Instant::now(),
            every: std::time::Duration::from_secs(2),
            close_after_secs: 60,
        }
    }

    /// Load `path` (an error if it is bad: at start the appliance refuses it).
    pub fn load(path: &Path, close_after_secs: u64) -> Result<RuleSet, RuleError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuleError::File { path: path.display().to_string(), msg: e.to_string() })?;
        let rules = parse(path, &text)?;
        Ok(RuleSet {
            path: Some(path.to_path_buf()),
            stamp: stamp(path),
            state: rules.iter().map(|_| HashMap::new()).collect(),
            rules,
            close_after_secs,
            ..RuleSet::empty()
        })
    }

    /// With rules given directly (tests, and the API later).
    pub fn from_rules(rules: Vec<Rule>, close_after_secs: u64) -> RuleSet {
        RuleSet { state: rules.iter().map(|_| HashMap::new()).collect(), rules, close_after_secs, ..RuleSet::empty() }
    }

    /// Look for file changes at most this often (default 2 s).
    pub fn check_every(mut self, d: std::time::Duration) -> RuleSet {
        self.every = d;
        self
    }

    /// Reload when the file changed; a bad file keeps the rules in force
    /// (logged with its line and reason).
    pub fn refresh(&mut self) {
        let Some(path) = self.path.clone() else { return };
        if self.last_check.elapsed() < self.every {
            return;
        }
        self.last_check = std::time::Instant::now();
        let now = stamp(&path);
        if now == self.stamp {
            return;
        }
        self.stamp = now;
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse(&path, &t).map_err(|e| e.to_string()))
        {
            Ok(rules) => {
                tracing::info!(rules = rules.len(), file = %path.display(), "rules reloaded");
                self.state = rules.iter().map(|_| HashMap::new()).collect();
                self.rules = rules;
            }
            Err(e) => tracing::error!("{e}; the rules loaded before stay in force"),
        }
    }

    /// Judge second `sec`.
    pub fn evaluate(
        &mut self,
        sec: u64,
        convs: &HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>,
        geo: Option<&crate::geo::Geo>,
        out: &mut Vec<Finding>,
    ) {
        for (ri, rule) in self.rules.iter().enumerate() {
            let state = &mut self.state[ri];
            // This second's value per key (and distinct values seen).
            let mut now: HashMap<Vec<Value>, (f64, Vec<u64>)> = HashMap::new();
            let mut distinct: HashMap<Vec<Value>, HashSet<Value>> = HashMap::new();
            for (k, s) in convs {
                let c = Ctx { k, geo };
                if !matches(&rule.filter, &c) {
                    continue;
                }
                let fields: &[Field] =
                    if rule.metric == Metric::Match { &[Field::SrcIp, Field::DstIp] } else { &rule.key };
                let Some(key) = fields.iter().map(|f| c.get(*f)).collect::<Option<Vec<Value>>>() else { continue };
                let v = match rule.metric {
                    Metric::Packets => (s.pkts + s.rpkts) as f64,
                    Metric::Bytes => (s.bytes + s.rbytes) as f64,
                    Metric::Flows | Metric::Match => s.flows as f64,
                    Metric::Distinct(f) => {
                        if s.flows > 0
                            && let Some(x) = c.get(f)
                        {
                            distinct.entry(key.clone()).or_default().insert(x);
                        }
                        0.0
                    }
                };
                let e = now.entry(key).or_default();
                e.0 += v;
                if s.sample != 0 && e.1.len() < 5 {
                    e.1.push(s.sample);
                }
            }
            let horizon = sec.saturating_sub(rule.in_secs);
            for (key, (v, samples)) in &now {
                let st = state.entry(key.clone()).or_default();
                st.sums.push_back((sec, *v));
                if let Some(d) = distinct.get(key) {
                    for x in d {
                        st.seen.insert(x.clone(), sec);
                    }
                }
                for u in samples {
                    if st.samples.len() < 5 && !st.samples.contains(u) {
                        st.samples.push(*u);
                    }
                }
            }
            let mut keys: Vec<Vec<Value>> = state.keys().cloned().collect();
            keys.sort();
            for key in keys {
                let Some(st) = state.get_mut(&key) else { continue };
                while st.sums.front().is_some_and(|x| x.0 <= horizon) {
                    st.sums.pop_front();
                }
                st.seen.retain(|_, last| *last > horizon);
                let value = match rule.metric {
                    Metric::Distinct(_) => st.seen.len() as f64,
                    Metric::Match => now.get(&key).map_or(0.0, |x| x.0),
                    _ => st.sums.iter().map(|x| x.1).sum::<f64>() / rule.in_secs as f64,
                };
                let holds =
                    if rule.metric == Metric::Match { value > 0.0 } else { rule.cmp.holds(value, rule.threshold) };
                st.streak = if holds { st.streak + 1 } else { 0 };
                if st.streak < rule.for_secs {
                    if st.sums.is_empty()
                        && st.seen.is_empty()
                        && sec > st.last_fire + self.close_after_secs + rule.cooldown_secs
                    {
                        state.remove(&key);
                    }
                    continue;
                }
                // Cool-down: after an alert of this key has closed, stay quiet.
                let closed = st.last_fire > 0 && sec > st.last_fire + self.close_after_secs;
                if closed && sec <= st.last_fire + self.close_after_secs + rule.cooldown_secs {
                    continue;
                }
                if closed || st.last_fire == 0 {
                    st.first_fire = sec;
                }
                st.last_fire = sec;
                let key_text = key.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" → ");
                let ips: Vec<(Field, String)> = rule
                    .key
                    .iter()
                    .zip(&key)
                    .filter(|(f, _)| matches!(f, Field::SrcIp | Field::DstIp))
                    .map(|(f, v)| (*f, v.to_string()))
                    .collect();
                let (mut src_ips, mut dst_ips): (Vec<String>, Vec<String>) = (vec![], vec![]);
                if rule.metric == Metric::Match {
                    src_ips.push(key[0].to_string());
                    dst_ips.push(key[1].to_string());
                }
                for (f, v) in ips {
                    if f == Field::SrcIp { src_ips.push(v) } else { dst_ips.push(v) }
                }
                let shown = |x: f64| {
                    if rule.unit.is_empty() { thousands(x) } else { format!("{} ({})", thousands(x), rule.unit) }
                };
                let explanation = if rule.metric == Metric::Match {
                    format!("{} new flow(s) {key_text} matched `{}`", thousands(value), rule.condition)
                } else {
                    let metric = match rule.metric {
                        Metric::Packets => "packets/s".to_string(),
                        Metric::Bytes => "bytes/s".to_string(),
                        Metric::Flows => "new flows/s".to_string(),
                        Metric::Distinct(f) => format!("distinct {}", f.name()),
                        Metric::Match => String::new(),
                    };
                    let over = if rule.in_secs > 1 { format!(" over {} s", rule.in_secs) } else { String::new() };
                    let held =
                        if rule.for_secs > 1 { format!(", for {} s in a row", st.streak) } else { String::new() };
                    format!(
                        "{metric} for {} {key_text} is {}{over} ({} {}{held}): `{}`",
                        rule.key.iter().map(|f| f.name()).collect::<Vec<_>>().join(" and "),
                        thousands(value),
                        rule.cmp.text(),
                        shown(rule.threshold),
                        rule.condition
                    )
                };
                let explanation = if rule.description.is_empty() {
                    explanation
                } else {
                    format!("{}: {explanation}", rule.description)
                };
                out.push(Finding {
                    group: format!("rule:{}:{key_text}", rule.name),
                    absorbed_by: vec![],
                    rule_name: Some(rule.name.clone()),
                    rule: "custom",
                    severity: rule.severity,
                    category: rule.category,
                    verdict: rule.verdict,
                    src_ips,
                    dst_ips,
                    ports: key
                        .iter()
                        .zip(&rule.key)
                        .filter(|(_, f)| **f == Field::DstPort)
                        .filter_map(|(v, _)| match v {
                            Value::Num(n) => Some(*n as u16),
                            _ => None,
                        })
                        .collect(),
                    packets: 0,
                    bytes: 0,
                    flows: 0,
                    rate: value,
                    rate_unit: "".into(),
                    top_sources: vec![],
                    sample_flows: st.samples.iter().map(|u| crate::flow::uid_string(*u)).collect(),
                    explanation,
                });
            }
        }
    }
}
