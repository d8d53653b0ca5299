//! Detection: built-in detectors over one-second windows, and the alerts
//! they raise.
//!
//! Two stages, so the packet path takes no lock:
//! - **per worker** (`window.rs`): the flow tracker marks each flow the
//!   first time it is touched in a second; when the worker's clock passes
//!   the second, the marked flows' deltas (packets, bytes, new connection
//!   attempts and how they were answered) are folded into per-conversation
//!   counters — (source, destination, protocol, destination port) — and
//!   sent as one [`WindowReport`]. Cost per packet: one comparison.
//! - **aggregation** (`agg.rs`, one thread): merges the reports of every
//!   worker for a second once all of them have moved past it, then runs the
//!   detectors (`detectors.rs`) on the global view — a flood aimed at one
//!   host or a scan spread over every shard is seen whole — and hands what
//!   they find to the alert manager (`manager.rs`), which groups repeats
//!   into one open alert, closes quiet ones and writes every alert event to
//!   the `alerts` table, the JSON-lines alert log and the live feed.

mod agg;
mod detectors;
pub mod intel;
mod manager;
pub mod ml;
pub mod reputation;
pub mod rules;
mod window;

use std::path::PathBuf;
use std::sync::Arc;

pub use agg::{DetectHandle, DetectSummary, start};
pub use detectors::Finding;
pub use manager::{AlertFeed, AlertManager, alert_json};
pub use window::NameAcc;
pub(crate) use window::{WinMark, WindowAcc};

use crate::alert::Severity;

const SEC: u64 = 1_000_000_000;

/// One direction-oriented conversation of a second: the originator of the
/// flows, the responder, protocol and the responder's port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConvKey {
    /// All zero: sources folded together because the window's table was full.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub v6: bool,
    pub proto: u8,
    pub dport: u16,
}

impl ConvKey {
    pub fn src_known(&self) -> bool {
        self.src != [0; 16]
    }
}

/// What the flows of one conversation did in one second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvStat {
    /// Packets and IP bytes from the originators, and back.
    pub pkts: u64,
    pub bytes: u64,
    pub rpkts: u64,
    pub rbytes: u64,
    /// Flows that started in this second.
    pub flows: u32,
    /// New TCP flows opened with a SYN.
    pub syn: u32,
    /// New flows the responder answered (TCP: a SYN-ACK; others: any packet back).
    pub answered: u32,
    /// New TCP flows the responder refused with a RST.
    pub rejected: u32,
    /// Connection attempts that failed: refused, or still unanswered well
    /// after they were sent (counted in the second they were judged).
    pub failed: u32,
    /// A flow id (uid) of a new flow, for evidence.
    pub sample: u64,
}

impl ConvStat {
    pub fn merge(&mut self, o: &ConvStat) {
        self.pkts += o.pkts;
        self.bytes += o.bytes;
        self.rpkts += o.rpkts;
        self.rbytes += o.rbytes;
        self.flows += o.flows;
        self.syn += o.syn;
        self.answered += o.answered;
        self.rejected += o.rejected;
        self.failed += o.failed;
        if self.sample == 0 {
            self.sample = o.sample;
        }
    }
}

/// Where a name was seen.
pub const NAME_DNS: u8 = 1;
pub const NAME_SNI: u8 = 2;
pub const NAME_HTTP: u8 = 4;

/// A host name one client used in a second (DNS query, TLS SNI, HTTP Host).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameKey {
    /// Lowercase, without a trailing dot.
    pub name: String,
    pub client: [u8; 16],
    pub v6: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameStat {
    /// `NAME_*` bits.
    pub seen_in: u8,
    /// DNS transactions (query/response pairs), and those answered NXDOMAIN.
    pub queries: u32,
    pub nxdomain: u32,
    /// TLS handshakes and HTTP requests naming it.
    pub other: u32,
    /// The server asked (the resolver, or the TLS/HTTP server), and a flow id.
    pub server: [u8; 16],
    pub sample: u64,
}

impl NameStat {
    pub fn merge(&mut self, o: &NameStat) {
        self.seen_in |= o.seen_in;
        self.queries += o.queries;
        self.nxdomain += o.nxdomain;
        self.other += o.other;
        if self.sample == 0 {
            self.sample = o.sample;
            self.server = o.server;
        }
    }
}

/// One worker's second: every conversation it saw, and how far its clock
/// has moved (every second before `through` is complete for this worker).
#[derive(Clone, Debug, Default)]
pub struct WindowReport {
    pub worker: u16,
    pub sec: u64,
    pub through: u64,
    pub convs: Vec<(ConvKey, ConvStat)>,
    /// Names clients used in this second.
    pub names: Vec<(NameKey, NameStat)>,
    /// Conversations folded into unknown-source entries (table full).
    pub overflow: u64,
    /// Alerts the worker's plugins raised up to the end of this second.
    pub findings: Vec<Finding>,
}

/// SYN flood: many new TCP connections to one host and port, mostly unanswered.
#[derive(Clone, Debug, PartialEq)]
pub struct SynFloodConfig {
    pub enabled: bool,
    /// SYNs per second to one destination host:port.
    pub min_rate: f64,
    /// At most this share of the SYNs answered with a SYN-ACK.
    pub max_answered: f64,
}

/// UDP flood: a high packet rate to one host that it does not answer.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpFloodConfig {
    pub enabled: bool,
    pub min_pps: f64,
    /// At most this many reply packets per packet received.
    pub max_reply_ratio: f64,
    /// Against a learned baseline: at least this many times it.
    pub baseline_factor: f64,
}

/// ICMP flood: echo requests (or other ICMP) at a high rate to one host.
#[derive(Clone, Debug, PartialEq)]
pub struct IcmpFloodConfig {
    pub enabled: bool,
    pub min_pps: f64,
}

/// Volumetric DDoS: everything to one host from many sources, far above
/// that host's learned baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct DdosConfig {
    pub enabled: bool,
    pub min_pps: f64,
    pub min_sources: u64,
    pub baseline_factor: f64,
    /// Seconds of baseline needed before a host is judged against it; until
    /// then only `unlearned_min_pps` counts.
    pub warmup_secs: u64,
    pub unlearned_min_pps: f64,
}

/// Traffic spike: the whole link's rate above k times its moving average.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeConfig {
    pub enabled: bool,
    pub factor: f64,
    pub min_pps: f64,
    /// Seconds of traffic before the average is trusted.
    pub warmup_secs: u64,
    /// The rate must stay above for this many seconds in a row.
    pub for_secs: u64,
    /// Time constant of the moving average.
    pub average_secs: u64,
}

/// Port scans: one source failing to connect to many ports of one host
/// (vertical) or to one port on many hosts (horizontal).
#[derive(Clone, Debug, PartialEq)]
pub struct ScanConfig {
    pub enabled: bool,
    pub vertical_ports: u64,
    pub horizontal_hosts: u64,
    /// Attempts are remembered this long.
    pub window_secs: u64,
}

/// DNS anomalies: tunnelling (many long, random names under one domain)
/// and NXDOMAIN storms (one client getting mostly "no such name").
#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    pub enabled: bool,
    /// Distinct names under one registered domain within `window_secs`...
    pub tunnel_names: u64,
    /// ...whose part left of the domain averages at least this many characters...
    pub tunnel_min_length: f64,
    /// ...and this many bits of entropy per character.
    pub tunnel_min_entropy: f64,
    pub window_secs: u64,
    /// NXDOMAIN answers to one client within `nx_window_secs`...
    pub nx_answers: u64,
    /// ...being at least this share of its queries.
    pub nx_ratio: f64,
    pub nx_window_secs: u64,
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub addr: [u8; 16],
    pub v6: bool,
    pub len: u8,
}

impl Subnet {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (a, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let ip: std::net::IpAddr = a.parse().ok()?;
        let (addr, v6, max) = match ip {
            std::net::IpAddr::V4(v) => {
                let mut x = [0u8; 16];
                x[..4].copy_from_slice(&v.octets());
                (x, false, 32)
            }
            std::net::IpAddr::V6(v) => (v.octets(), true, 128),
        };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Subnet { addr, v6, len })
    }

    pub fn contains(&self, a: &[u8; 16], v6: bool) -> bool {
        if v6 != self.v6 {
            return false;
        }
        let full = (self.len / 8) as usize;
        if a[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.len % 8;
        rest == 0 || (a[full] ^ self.addr[full]) & (0xffu8 << (8 - rest)) == 0
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", crate::decode::addr(self.v6, &self.addr), self.len)
    }
}

/// A protocol and port (`tcp/443`); ICMP and other protocols have port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub proto: u8,
    pub port: u16,
}

impl Service {
    /// `tcp/443`, `udp/53`, `icmp`, `icmp6`, `tcp` (any port: port 0 with `any_port`).
    pub fn parse(s: &str) -> Option<(Service, bool)> {
        let (p, port) = match s.trim().split_once('/') {
            Some((p, n)) => (p, Some(n.parse::<u16>().ok()?)),
            None => (s.trim(), None),
        };
        let proto = match p {
            "tcp" => crate::decode::PROTO_TCP,
            "udp" => crate::decode::PROTO_UDP,
            "icmp" => crate::decode::PROTO_ICMP,
            "icmp6" => crate::decode::PROTO_ICMP6,
            _ => return None,
        };
        let ported = matches!(proto, crate::decode::PROTO_TCP | crate::decode::PROTO_UDP);
        if port.is_some() && !ported {
            return None;
        }
        Some((Service { proto, port: port.unwrap_or(0) }, port.is_none()))
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.proto {
            crate::decode::PROTO_TCP => "tcp",
            crate::decode::PROTO_UDP => "udp",
            crate::decode::PROTO_ICMP => "icmp",
            crate::decode::PROTO_ICMP6 => "icmp6",
            _ => return write!(f, "ip-proto-{}", self.proto),
        };
        if matches!(self.proto, crate::decode::PROTO_TCP | crate::decode::PROTO_UDP) {
            write!(f, "{name}/{}", self.port)
        } else {
            f.write_str(name)
        }
    }
}

/// A policy allow-list: new connections into `subnet` (or out of it, when
/// `outbound`) may use only the allowed services.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub subnet: Subnet,
    pub outbound: bool,
    /// (service, any port of its protocol)
    pub allow: Vec<AllowRule>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AllowRule {
    pub service: Service,
    pub any_port: bool,
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.any_port {
            let s = self.service.to_string();
            f.write_str(s.split('/').next().unwrap_or(""))
        } else {
            self.service.fmt(f)
        }
    }
}

impl Policy {
    pub fn allows(&self, proto: u8, port: u16) -> bool {
        let ported = matches!(proto, crate::decode::PROTO_TCP | crate::decode::PROTO_UDP);
        self.allow.iter().any(|r| r.service.proto == proto && (r.any_port || !ported || r.service.port == port))
    }
}

/// Anomaly detection with an isolation forest (see [`ml`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MlConfig {
    pub enabled: bool,
    /// Where the model is kept (loaded at start when present).
    pub model: Option<PathBuf>,
    /// With no model: learn one from the first this many seconds of traffic
    /// (0: only `tapstream model train` makes one).
    pub learn_secs: u64,
    /// Score thresholds for the verdicts.
    pub suspicious: f64,
    pub malicious: f64,
    /// The score must stay over `suspicious` this many seconds in a row.
    pub for_secs: u64,
    pub trees: usize,
    pub sample: usize,
}

impl Default for MlConfig {
    fn default() -> Self {
        MlConfig {
            enabled: true,
            model: None,
            learn_secs: 0,
            suspicious: 0.6,
            malicious: 0.7,
            for_secs: 3,
            trees: 100,
            sample: 256,
        }
    }
}

/// Everything detection needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    /// An open alert closes after this long without the condition.
    pub close_after_ns: u64,
    /// An open alert writes an update event at most this often.
    pub update_every_ns: u64,
    /// Time constant of per-host baselines (the "1-hour baseline").
    pub baseline_tau_secs: u64,
    /// Conversations a worker keeps per second before folding sources.
    pub max_convs: usize,
    pub syn_flood: SynFloodConfig,
    pub udp_flood: UdpFloodConfig,
    pub icmp_flood: IcmpFloodConfig,
    pub ddos: DdosConfig,
    pub spike: SpikeConfig,
    pub scan: ScanConfig,
    pub dns: DnsConfig,
    /// Allow-lists per subnet (`policy_violation`).
    pub policies: Vec<Policy>,
    /// Countries (ISO codes) whose traffic raises `country_watch` alerts.
    pub watch_countries: Vec<String>,
    pub ml: MlConfig,
    /// The JSON-lines alert log is rotated (`alerts.json` → `alerts.json.1`
    /// → … `.N`) when it would pass this many bytes (0: never rotated) …
    pub log_max_bytes: u64,
    /// … and this many rotated files are kept (the oldest is deleted).
    pub log_keep: u32,
}

impl DetectConfig {
    /// Every built-in detector off (plugins alone raise alerts).
    pub fn builtins_off() -> DetectConfig {
        let mut c = DetectConfig::default();
        c.syn_flood.enabled = false;
        c.udp_flood.enabled = false;
        c.icmp_flood.enabled = false;
        c.ddos.enabled = false;
        c.spike.enabled = false;
        c.scan.enabled = false;
        c.dns.enabled = false;
        c.ml.enabled = false;
        c
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            close_after_ns: 60 * SEC,
            update_every_ns: 10 * SEC,
            baseline_tau_secs: 3600,
            max_convs: 1 << 17,
            syn_flood: SynFloodConfig { enabled: true, min_rate: 500.0, max_answered: 0.5 },
            udp_flood: UdpFloodConfig { enabled: true, min_pps: 5000.0, max_reply_ratio: 0.2, baseline_factor: 10.0 },
            icmp_flood: IcmpFloodConfig { enabled: true, min_pps: 1000.0 },
            ddos: DdosConfig {
                enabled: true,
                min_pps: 20_000.0,
                min_sources: 50,
                baseline_factor: 10.0,
                warmup_secs: 300,
                unlearned_min_pps: 100_000.0,
            },
            spike: SpikeConfig {
                enabled: true,
                factor: 2.0,
                min_pps: 1000.0,
                warmup_secs: 60,
                for_secs: 3,
                average_secs: 300,
            },
            scan: ScanConfig { enabled: true, vertical_ports: 100, horizontal_hosts: 50, window_secs: 60 },
            dns: DnsConfig {
                enabled: true,
                tunnel_names: 30,
                tunnel_min_length: 24.0,
                tunnel_min_entropy: 3.3,
                window_secs: 60,
                nx_answers: 100,
                nx_ratio: 0.5,
                nx_window_secs: 10,
            },
            policies: Vec::new(),
            watch_countries: Vec::new(),
            ml: MlConfig::default(),
            log_max_bytes: 100 << 20,
            log_keep: 5,
        }
    }
}

/// A detection run's wiring: the settings and where alerts go besides the
/// `alerts` table.
#[derive(Clone, Debug, Default)]
pub struct DetectSetup {
    pub cfg: DetectConfig,
    /// JSON-lines alert log (one object per alert event), appended to.
    pub log: Option<PathBuf>,
    /// In-memory feed of recent alert events.
    pub feed: Option<Arc<AlertFeed>>,
    /// Threat feeds (as loaded at start, and where to reload them from when
    /// their files change) and how often to look for changes.
    pub intel: intel::Intel,
    pub intel_feeds: Vec<intel::FeedSpec>,
    pub intel_refresh: std::time::Duration,
    /// Countries of alert endpoints, and the country watch list.
    pub geo: Option<Arc<crate::geo::Geo>>,
    /// Custom rules file (hot-reloaded), already checked at start.
    pub rules_file: Option<PathBuf>,
    /// Plugins: the global ones run on this stage.
    pub plugins: Option<crate::plugin::PluginSetup>,
    /// Online reputation services the stage offers addresses to (their
    /// lookups run outside the engine).
    pub reputation: Vec<Arc<reputation::Lookups>>,
}

/// Severity scaled by how far past its threshold a measurement is.
pub(crate) fn severity_for(ratio: f64) -> Severity {
    if ratio >= 20.0 {
        Severity::Critical
    } else if ratio >= 4.0 {
        Severity::High
    } else {
        Severity::Medium
    }
}

#[cfg(test)]
mod tests;
