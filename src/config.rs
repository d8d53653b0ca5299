//! Configuration: the TOML file is parsed raw (every field optional,
//! unknown keys rejected), then validated into the typed settings the
//! library crates take. Command-line flags override the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tapstream_engine::decode::DecodeConfig;
use tapstream_engine::detect::intel::{FeedFormat, FeedSpec, Intel};
use tapstream_engine::detect::{
    AllowRule, DdosConfig, DetectConfig, DetectSetup, DnsConfig, IcmpFloodConfig, MlConfig, Policy, ScanConfig,
    Service, SpikeConfig, Subnet, SynFloodConfig, UdpFloodConfig,
};
use tapstream_engine::flow::FlowConfig;
use tapstream_engine::geo::{Geo, GeoConfig};
use tapstream_engine::live::{BindMode, CaptureMethod, LiveConfig, XdpModeChoice, XskConfig};
use tapstream_engine::pipeline::PipelineConfig;
use tapstream_engine::records::Table;
use tapstream_engine::source::{AttackKind, AttackMix, ScheduledAttack};
use tapstream_query::WriterConfig;
use tapstream_query::retention::{MAX_AGE_DAYS, MIN_AGE_DAYS, RetentionPolicy};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub pipeline: RawPipeline,
    #[serde(default)]
    pub flows: RawFlows,
    #[serde(default)]
    pub decode: RawDecode,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub demo: RawDemo,
    #[serde(default)]
    pub capture: RawCapture,
    #[serde(default)]
    pub sql: RawSql,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub detect: RawDetect,
    #[serde(default)]
    pub intel: RawIntel,
    #[serde(default)]
    pub geoip: RawGeoip,
    #[serde(default)]
    pub notify: crate::notify::RawNotify,
    #[serde(default)]
    pub plugins: crate::plugins::RawPlugins,
    #[serde(default)]
    pub api: crate::serve::RawApi,
    #[serde(default)]
    pub reports: RawReports,
}

/// `[reports]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReports {
    pub keep_days: Option<u64>,
    pub max_size_mb: Option<u64>,
}

fn reports(r: RawReports) -> anyhow::Result<tapstream_api::report::schedule::ReportsConfig> {
    let keep = r.keep_days.unwrap_or(90);
    if !(1..=3650).contains(&keep) {
        anyhow::bail!("reports.keep_days = {keep}: must be between 1 and 3650");
    }
    let mb = r.max_size_mb.unwrap_or(1024);
    if !(1..=1 << 20).contains(&mb) {
        anyhow::bail!("reports.max_size_mb = {mb}: must be between 1 and 1048576");
    }
    Ok(tapstream_api::report::schedule::ReportsConfig { keep: Duration::from_secs(keep * 86_400), max_bytes: mb << 20 })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoip {
    pub country_db: Option<PathBuf>,
    pub asn_db: Option<Vec<PathBuf>>,
    pub dir: Option<PathBuf>,
}

/// GeoIP databases: configured paths, or the free ones `scripts/geoip.sh`
/// installs under `dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoSettings {
    pub configured: GeoConfig,
    pub dir: PathBuf,
}

impl GeoSettings {
    /// Open the databases. Configured paths must open (a clear error names
    /// the file); with none configured, the installed free databases are
    /// used when present, and GeoIP is off (logged) when not.
    pub fn open(&self) -> anyhow::Result<Option<std::sync::Arc<Geo>>> {
        let cfg = if self.configured != GeoConfig::default() {
            self.configured.clone()
        } else {
            let found = tapstream_engine::geo::installed(&self.dir);
            if found == GeoConfig::default() {
                tracing::info!(
                    "GeoIP off: no databases configured and none installed in {} (scripts/geoip.sh installs them)",
                    self.dir.display()
                );
                return Ok(None);
            }
            found
        };
        let g = Geo::open(&cfg)?;
        tracing::info!(country = ?cfg.country, asn = ?cfg.asn, "GeoIP databases loaded");
        Ok(Some(std::sync::Arc::new(g)))
    }
}

fn geoip(r: RawGeoip) -> GeoSettings {
    let dir = r.dir.unwrap_or_else(|| {
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("tapstream/geoip")
    });
    GeoSettings { configured: GeoConfig { country: r.country_db, asn: r.asn_db.unwrap_or_default() }, dir }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntel {
    pub refresh_secs: Option<f64>,
    pub feeds: Option<Vec<RawFeed>>,
    pub reputation: Option<Vec<RawReputation>>,
}

/// An online reputation service (`[[intel.reputation]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReputation {
    pub provider: String,
    /// The API key is read from this environment variable, or from this
    /// file (never written in the configuration itself).
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub url: Option<String>,
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
    pub cache_hours: Option<f64>,
    pub timeout_secs: Option<f64>,
    pub suspicious: Option<u32>,
    pub malicious: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeed {
    pub name: Option<String>,
    /// A file; or, with `url`, where the downloaded copy is kept (default
    /// DATA/feeds/NAME).
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub refresh_minutes: Option<f64>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetect {
    pub enabled: Option<bool>,
    pub alert_log: Option<PathBuf>,
    pub alert_log_max_mb: Option<u64>,
    pub alert_log_keep: Option<u64>,
    pub close_after_secs: Option<f64>,
    pub update_every_secs: Option<f64>,
    pub baseline_hours: Option<f64>,
    pub max_conversations_per_second: Option<usize>,
    #[serde(default)]
    pub syn_flood: RawSynFlood,
    #[serde(default)]
    pub udp_flood: RawUdpFlood,
    #[serde(default)]
    pub icmp_flood: RawIcmpFlood,
    #[serde(default)]
    pub ddos: RawDdos,
    #[serde(default)]
    pub spike: RawSpike,
    #[serde(default)]
    pub scan: RawScan,
    #[serde(default)]
    pub dns: RawDns,
    pub policy: Option<Vec<RawPolicy>>,
    pub watch_countries: Option<Vec<String>>,
    pub rules_file: Option<PathBuf>,
    #[serde(default)]
    pub ml: RawMl,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMl {
    pub enabled: Option<bool>,
    pub model: Option<PathBuf>,
    pub learn_minutes: Option<f64>,
    pub suspicious: Option<f64>,
    pub malicious: Option<f64>,
    pub for_secs: Option<u64>,
    pub trees: Option<u64>,
    pub sample: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    pub subnet: String,
    pub direction: Option<String>,
    pub allow: Vec<String>,
}

fn policies(raw: Option<Vec<RawPolicy>>) -> anyhow::Result<Vec<Policy>> {
    let mut out: Vec<Policy> = Vec::new();
    for p in raw.unwrap_or_default() {
        let name = p.name;
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            bail!("detect.policy: names must be set and distinct (`{name}`)");
        }
        let subnet = Subnet::parse(&p.subnet)
            .with_context(|| format!("detect.policy `{name}`: subnet `{}` is not an address or network", p.subnet))?;
        let outbound = match p.direction.as_deref().unwrap_or("inbound") {
            "inbound" => false,
            "outbound" => true,
            d => bail!("detect.policy `{name}`: direction `{d}` must be inbound or outbound"),
        };
        let mut allow = Vec::new();
        for a in &p.allow {
            let (service, any_port) = Service::parse(a).with_context(|| {
                format!("detect.policy `{name}`: `{a}` is not a service (tcp/443, udp/53, tcp, udp, icmp, icmp6)")
            })?;
            allow.push(AllowRule { service, any_port });
        }
        out.push(Policy { name, subnet, outbound, allow });
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub enabled: Option<bool>,
    pub tunnel_names: Option<u64>,
    pub tunnel_min_length: Option<f64>,
    pub tunnel_min_entropy: Option<f64>,
    pub window_secs: Option<u64>,
    pub nx_answers: Option<u64>,
    pub nx_ratio: Option<f64>,
    pub nx_window_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSynFlood {
    pub enabled: Option<bool>,
    pub min_rate: Option<f64>,
    pub max_answered: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUdpFlood {
    pub enabled: Option<bool>,
    pub min_pps: Option<f64>,
    pub max_reply_ratio: Option<f64>,
    pub baseline_factor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIcmpFlood {
    pub enabled: Option<bool>,
    pub min_pps: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDdos {
    pub enabled: Option<bool>,
    pub min_pps: Option<f64>,
    pub min_sources: Option<u64>,
    pub baseline_factor: Option<f64>,
    pub warmup_secs: Option<u64>,
    pub unlearned_min_pps: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpike {
    pub enabled: Option<bool>,
    pub factor: Option<f64>,
    pub min_pps: Option<f64>,
    pub warmup_secs: Option<u64>,
    pub for_secs: Option<u64>,
    pub average_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScan {
    pub enabled: Option<bool>,
    pub vertical_ports: Option<u64>,
    pub horizontal_hosts: Option<u64>,
    pub window_secs: Option<u64>,
}

/// Validated detection settings.
#[derive(Debug, Clone)]
pub struct Detect {
    pub cfg: DetectConfig,
    /// The JSON-lines alert log, relative to the data directory unless absolute.
    pub alert_log: PathBuf,
    pub feeds: Vec<FeedSpec>,
    pub url_feeds: Vec<UrlFeed>,
    pub intel_refresh: Duration,
    pub rules_file: Option<PathBuf>,
    /// The anomaly model's file, relative to the data directory unless absolute.
    pub model: PathBuf,
    /// Online reputation services.
    pub reputation: Vec<crate::reputation::Service>,
}

impl Detect {
    /// The wiring for a run writing history to `data`: threat feeds are
    /// loaded here, so a missing or unreadable feed stops the start with its
    /// name; lines without an indicator are warned about.
    pub fn setup(&self, data: &Path, geo: Option<std::sync::Arc<Geo>>) -> anyhow::Result<std::sync::Arc<DetectSetup>> {
        if let Some(p) = &self.rules_file {
            let r = tapstream_engine::detect::rules::RuleSet::load(p, self.cfg.close_after_ns / 1_000_000_000)?;
            tracing::info!(rules = r.rules.len(), file = %p.display(), "custom rules loaded");
        }
        // Feeds from URLs: downloaded now (or the copy kept from before, if
        // the download fails), then refreshed on their schedule.
        let mut feeds = self.feeds.clone();
        for u in &self.url_feeds {
            let path = u.path.clone().unwrap_or_else(|| data.join("feeds").join(&u.name));
            crate::feeds::fetch_at_start(u, &path)?;
            if let Some(f) = feeds.iter_mut().find(|f| f.name == u.name) {
                f.path = path.clone();
            }
            crate::feeds::keep_fresh(u.clone(), path);
        }
        let (intel, reports) = Intel::load(&feeds)?;
        for r in reports {
            tracing::info!(feed = %r.name, networks = r.networks, domains = r.domains, "threat feed loaded");
            if r.bad_count > 0 {
                let first: Vec<String> = r.bad_lines.iter().map(|(n, l)| format!("line {n}: {l}")).collect();
                tracing::warn!(feed = %r.name, "{} lines hold no IP, network or domain (skipped): {}", r.bad_count, first.join("; "));
            }
        }
        let mut cfg = self.cfg.clone();
        cfg.ml.model = Some(data.join(&self.model));
        Ok(std::sync::Arc::new(DetectSetup {
            cfg,
            log: Some(data.join(&self.alert_log)),
            feed: Some(std::sync::Arc::new(tapstream_engine::detect::AlertFeed::default())),
            intel,
            intel_feeds: feeds,
            intel_refresh: self.intel_refresh,
            geo,
            rules_file: self.rules_file.clone(),
            plugins: None,
            reputation: self
                .reputation
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.cache_file = Some(data.join("reputation").join(format!("{}.json", s.provider.name())));
                    s.start()
                })
                .collect(),
        }))
    }
}

/// A feed downloaded from a URL on a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlFeed {
    pub name: String,
    pub url: String,
    pub refresh: Duration,
    /// None: DATA/feeds/NAME.
    pub path: Option<PathBuf>,
}

fn feeds(r: RawIntel) -> anyhow::Result<(Vec<FeedSpec>, Vec<UrlFeed>, Duration)> {
    let every = secs("intel.refresh_secs", r.refresh_secs, Duration::from_secs(60), 1.0, 86_400.0 * 7.0)?;
    let mut out: Vec<FeedSpec> = Vec::new();
    let mut urls: Vec<UrlFeed> = Vec::new();
    for (i, f) in r.feeds.unwrap_or_default().into_iter().enumerate() {
        let stem = |p: &str| {
            Path::new(p.split(['?', '#']).next().unwrap_or(p)).file_stem().map(|s| s.to_string_lossy().to_string())
        };
        let name = f.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| {
            f.path
                .as_ref()
                .and_then(|p| stem(&p.to_string_lossy()))
                .or_else(|| f.url.as_deref().and_then(stem))
                .unwrap_or_else(|| format!("feed{}", i + 1))
        });
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            bail!("intel.feeds `{name}`: a name is letters, digits, `-`, `_` and `.`");
        }
        if out.iter().any(|o| o.name == name) {
            bail!("intel.feeds: two feeds are named `{name}`");
        }
        let fmt = f.format.as_deref().unwrap_or("auto");
        let format = FeedFormat::from_name(fmt).with_context(|| {
            format!("intel.feeds `{name}`: format `{fmt}` unknown (auto, plain, spamhaus-drop, hosts, abusech-csv, json-lines)")
        })?;
        match (&f.url, &f.path) {
            (Some(url), path) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("intel.feeds `{name}`: url `{url}` must start with http:// or https://");
                }
                let refresh = match f.refresh_minutes {
                    None => Duration::from_secs(3600),
                    Some(m) if m.is_finite() && (0.01..=10_080.0).contains(&m) => Duration::from_secs_f64(m * 60.0),
                    Some(m) => bail!("intel.feeds `{name}`: refresh_minutes = {m}: between 0.01 and 10080"),
                };
                urls.push(UrlFeed { name: name.clone(), url: url.clone(), refresh, path: path.clone() });
                // The path is settled with the data directory (see Detect::setup).
                out.push(FeedSpec { name, path: path.clone().unwrap_or_default(), format });
            }
            (None, Some(p)) => out.push(FeedSpec { name, path: p.clone(), format }),
            (None, None) => bail!("intel.feeds `{name}`: needs a `path` or a `url`"),
        }
    }
    Ok((out, urls, every))
}

fn reputation(r: Vec<RawReputation>) -> anyhow::Result<Vec<crate::reputation::Service>> {
    use crate::reputation::{ApiKey, Provider, Service};
    let mut out: Vec<Service> = Vec::new();
    for r in r {
        let p = Provider::from_name(&r.provider)
            .with_context(|| format!("intel.reputation: provider `{}` unknown (abuseipdb, virustotal)", r.provider))?;
        let at = format!("intel.reputation `{}`", r.provider);
        if out.iter().any(|o| o.provider == p) {
            bail!("{at}: listed twice");
        }
        let key = match (&r.api_key_env, &r.api_key_file) {
            (Some(var), None) => std::env::var(var).with_context(|| format!("{at}: api_key_env: ${var} is not set"))?,
            (None, Some(f)) => {
                std::fs::read_to_string(f).with_context(|| format!("{at}: api_key_file {}", f.display()))?
            }
            (Some(_), Some(_)) => bail!("{at}: give api_key_env or api_key_file, not both"),
            (None, None) => bail!("{at}: needs api_key_env or api_key_file (the key is not written here)"),
        };
        let key = key.trim().to_string();
        if key.is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
            bail!("{at}: the API key is empty or holds spaces or control characters");
        }
        let url = r.url.unwrap_or_else(|| p.default_url().to_string());
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("{at}: url `{url}` must start with http:// or https://");
        }
        let (pm, pd) = p.default_limits();
        let (sus, mal) = p.default_thresholds();
        let max_score = if p == Provider::AbuseIpdb { 100 } else { 1000 };
        let suspicious = range(&format!("{at}: suspicious"), r.suspicious, sus, 1, max_score)?;
        let malicious = range(&format!("{at}: malicious"), r.malicious, mal.max(suspicious), suspicious, max_score)?;
        out.push(Service {
            provider: p,
            url,
            key: ApiKey(key),
            per_minute: range(&format!("{at}: per_minute"), r.per_minute, pm, 1, 10_000)?,
            per_day: range(&format!("{at}: per_day"), r.per_day, pd, 1, 10_000_000)?,
            cache: Duration::from_secs_f64(
                range(&format!("{at}: cache_hours"), r.cache_hours, 24.0, 0.01, 24.0 * 30.0)? * 3600.0,
            ),
            timeout: secs(&format!("{at}: timeout_secs"), r.timeout_secs, Duration::from_secs(5), 0.1, 60.0)?,
            suspicious,
            malicious,
            cache_file: None,
        });
    }
    Ok(out)
}

fn detect(r: RawDetect, mut intel: RawIntel) -> anyhow::Result<Option<Detect>> {
    let reputation = reputation(intel.reputation.take().unwrap_or_default())?;
    let (feeds, url_feeds, intel_refresh) = feeds(intel)?;
    if !r.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let d = DetectConfig::default();
    let ns = |d: Duration| d.as_nanos() as u64;
    let pos = |name: &str, v: Option<f64>, default: f64, max: f64| -> anyhow::Result<f64> {
        match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x > 0.0 && x <= max => Ok(x),
            Some(x) => bail!("detect.{name} = {x}: must be above 0 and at most {max}"),
        }
    };
    let ratio = |name: &str, v: Option<f64>, default: f64| -> anyhow::Result<f64> {
        match v {
            None => Ok(default),
            Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
            Some(x) => bail!("detect.{name} = {x}: must be a fraction between 0 and 1"),
        }
    };
    let count = |name: &str, v: Option<u64>, default: u64, min: u64, max: u64| {
        range(&format!("detect.{name}"), v, default, min, max)
    };
    let cfg = DetectConfig {
        close_after_ns: ns(secs(
            "detect.close_after_secs",
            r.close_after_secs,
            Duration::from_nanos(d.close_after_ns),
            1.0,
            86_400.0,
        )?),
        update_every_ns: ns(secs(
            "detect.update_every_secs",
            r.update_every_secs,
            Duration::from_nanos(d.update_every_ns),
            1.0,
            86_400.0,
        )?),
        baseline_tau_secs: (pos("baseline_hours", r.baseline_hours, d.baseline_tau_secs as f64 / 3600.0, 24.0 * 30.0)?
            * 3600.0) as u64,
        max_convs: range(
            "detect.max_conversations_per_second",
            r.max_conversations_per_second,
            d.max_convs,
            1024,
            1 << 26,
        )?,
        syn_flood: SynFloodConfig {
            enabled: r.syn_flood.enabled.unwrap_or(true),
            min_rate: pos("syn_flood.min_rate", r.syn_flood.min_rate, d.syn_flood.min_rate, 1e9)?,
            max_answered: ratio("syn_flood.max_answered", r.syn_flood.max_answered, d.syn_flood.max_answered)?,
        },
        udp_flood: UdpFloodConfig {
            enabled: r.udp_flood.enabled.unwrap_or(true),
            min_pps: pos("udp_flood.min_pps", r.udp_flood.min_pps, d.udp_flood.min_pps, 1e9)?,
            max_reply_ratio: ratio(
                "udp_flood.max_reply_ratio",
                r.udp_flood.max_reply_ratio,
                d.udp_flood.max_reply_ratio,
            )?,
            baseline_factor: pos(
                "udp_flood.baseline_factor",
                r.udp_flood.baseline_factor,
                d.udp_flood.baseline_factor,
                1e6,
            )?,
        },
        icmp_flood: IcmpFloodConfig {
            enabled: r.icmp_flood.enabled.unwrap_or(true),
            min_pps: pos("icmp_flood.min_pps", r.icmp_flood.min_pps, d.icmp_flood.min_pps, 1e9)?,
        },
        ddos: DdosConfig {
            enabled: r.ddos.enabled.unwrap_or(true),
            min_pps: pos("ddos.min_pps", r.ddos.min_pps, d.ddos.min_pps, 1e10)?,
            min_sources: count("ddos.min_sources", r.ddos.min_sources, d.ddos.min_sources, 1, 1 << 32)?,
            baseline_factor: pos("ddos.baseline_factor", r.ddos.baseline_factor, d.ddos.baseline_factor, 1e6)?,
            warmup_secs: count("ddos.warmup_secs", r.ddos.warmup_secs, d.ddos.warmup_secs, 0, 86_400 * 30)?,
            unlearned_min_pps: pos("ddos.unlearned_min_pps", r.ddos.unlearned_min_pps, d.ddos.unlearned_min_pps, 1e10)?,
        },
        spike: SpikeConfig {
            enabled: r.spike.enabled.unwrap_or(true),
            factor: pos("spike.factor", r.spike.factor, d.spike.factor, 1e6)?,
            min_pps: pos("spike.min_pps", r.spike.min_pps, d.spike.min_pps, 1e10)?,
            warmup_secs: count("spike.warmup_secs", r.spike.warmup_secs, d.spike.warmup_secs, 0, 86_400 * 30)?,
            for_secs: count("spike.for_secs", r.spike.for_secs, d.spike.for_secs, 1, 86_400)?,
            average_secs: count("spike.average_secs", r.spike.average_secs, d.spike.average_secs, 10, 86_400 * 30)?,
        },
        scan: ScanConfig {
            enabled: r.scan.enabled.unwrap_or(true),
            vertical_ports: count("scan.vertical_ports", r.scan.vertical_ports, d.scan.vertical_ports, 2, 65_536)?,
            horizontal_hosts: count(
                "scan.horizontal_hosts",
                r.scan.horizontal_hosts,
                d.scan.horizontal_hosts,
                2,
                1 << 24,
            )?,
            window_secs: count("scan.window_secs", r.scan.window_secs, d.scan.window_secs, 1, 86_400)?,
        },
        dns: DnsConfig {
            enabled: r.dns.enabled.unwrap_or(true),
            tunnel_names: count("dns.tunnel_names", r.dns.tunnel_names, d.dns.tunnel_names, 2, 1 << 20)?,
            tunnel_min_length: pos("dns.tunnel_min_length", r.dns.tunnel_min_length, d.dns.tunnel_min_length, 253.0)?,
            tunnel_min_entropy: pos("dns.tunnel_min_entropy", r.dns.tunnel_min_entropy, d.dns.tunnel_min_entropy, 8.0)?,
            window_secs: count("dns.window_secs", r.dns.window_secs, d.dns.window_secs, 1, 86_400)?,
            nx_answers: count("dns.nx_answers", r.dns.nx_answers, d.dns.nx_answers, 1, 1 << 32)?,
            nx_ratio: ratio("dns.nx_ratio", r.dns.nx_ratio, d.dns.nx_ratio)?,
            nx_window_secs: count("dns.nx_window_secs", r.dns.nx_window_secs, d.dns.nx_window_secs, 1, 86_400)?,
        },
        policies: policies(r.policy)?,
        ml: {
            let m = &r.ml;
            let suspicious = ratio("ml.suspicious", m.suspicious, d.ml.suspicious)?;
            let malicious = ratio("ml.malicious", m.malicious, d.ml.malicious)?;
            if malicious < suspicious {
                bail!("detect.ml.malicious = {malicious}: must not be below detect.ml.suspicious ({suspicious})");
            }
            MlConfig {
                enabled: m.enabled.unwrap_or(true),
                model: None,
                learn_secs: match m.learn_minutes {
                    None => d.ml.learn_secs,
                    Some(x) if x.is_finite() && (0.0..=10_080.0).contains(&x) => (x * 60.0) as u64,
                    Some(x) => bail!("detect.ml.learn_minutes = {x}: must be between 0 and 10080 (a week)"),
                },
                suspicious,
                malicious,
                for_secs: count("ml.for_secs", m.for_secs, d.ml.for_secs, 1, 3600)?,
                trees: count("ml.trees", m.trees, d.ml.trees as u64, 1, 10_000)? as usize,
                sample: count("ml.sample", m.sample, d.ml.sample as u64, 16, 1 << 20)? as usize,
            }
        },
        watch_countries: {
            let w = r.watch_countries.unwrap_or_default();
            if let Some(bad) = w.iter().find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase())) {
                bail!("detect.watch_countries: `{bad}` is not a two-letter country code (ISO 3166, upper case)");
            }
            w
        },
        log_max_bytes: count("alert_log_max_mb", r.alert_log_max_mb, d.log_max_bytes >> 20, 0, 1 << 20)? << 20,
        log_keep: count("alert_log_keep", r.alert_log_keep, d.log_keep as u64, 0, 1000)? as u32,
    };
    let alert_log = r.alert_log.unwrap_or_else(|| PathBuf::from("alerts.json"));
    if alert_log.as_os_str().is_empty() {
        bail!("detect.alert_log: must name a file");
    }
    let rules_file = r.rules_file.filter(|p| !p.as_os_str().is_empty());
    let model = r.ml.model.clone().unwrap_or_else(|| PathBuf::from("model.json"));
    Ok(Some(Detect { cfg, alert_log, feeds, url_feeds, intel_refresh, rules_file, model, reputation }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub max_age_days: Option<u32>,
    pub flows_days: Option<u32>,
    pub dns_days: Option<u32>,
    pub tls_days: Option<u32>,
    pub http_days: Option<u32>,
    pub dhcp_days: Option<u32>,
    pub stats_days: Option<u32>,
    pub alerts_days: Option<u32>,
    pub disk_budget_gb: Option<f64>,
    pub interval_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    pub timeout_secs: Option<f64>,
    pub memory_limit_mb: Option<usize>,
    pub max_rows: Option<usize>,
    pub default_range_hours: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub interfaces: Option<Vec<String>>,
    pub filter: Option<String>,
    pub method: Option<CaptureMethod>,
    pub xdp_mode: Option<XdpModeChoice>,
    pub bind: Option<BindMode>,
    pub queues: Option<u32>,
    pub umem_frames: Option<u32>,
    pub frame_size: Option<u32>,
    pub fill_ring: Option<u32>,
    pub rx_ring: Option<u32>,
    pub busy_poll: Option<bool>,
    pub spin_us: Option<u32>,
    pub rx_cores: Option<Vec<usize>>,
    pub worker_cores: Option<Vec<usize>>,
    pub af_packet_block_size: Option<u32>,
    pub run_to_completion: Option<bool>,
    pub stats_interval_secs: Option<f64>,
    pub af_packet_blocks: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub workers: Option<usize>,
    pub batch_size: Option<usize>,
    pub pin_cores: Option<bool>,
    pub queue_depth: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlows {
    pub tcp_idle_timeout_secs: Option<f64>,
    pub udp_idle_timeout_secs: Option<f64>,
    pub other_idle_timeout_secs: Option<f64>,
    pub active_timeout_secs: Option<f64>,
    pub max_flows_per_worker: Option<usize>,
    pub community_id_seed: Option<u16>,
    pub vlan_in_key: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecode {
    pub verify_checksums: Option<bool>,
    pub tunnels: Option<bool>,
    pub vxlan_port: Option<u16>,
    pub geneve_port: Option<u16>,
    pub gtpu_port: Option<u16>,
    pub teredo_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: Option<PathBuf>,
    pub flush_interval_secs: Option<f64>,
    pub max_rows_per_file: Option<usize>,
    pub record_batch_rows: Option<usize>,
    pub zstd_level: Option<i32>,
    pub row_group_rows: Option<usize>,
    pub page_rows: Option<usize>,
    pub compaction: Option<bool>,
    pub compaction_grace_secs: Option<f64>,
    pub compaction_memory_mb: Option<usize>,
    pub host_index: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub seed: Option<u64>,
    pub pps: Option<u64>,
    pub syn_flood: Option<f64>,
    pub udp_flood: Option<f64>,
    pub port_scan: Option<f64>,
    pub dns_tunnel: Option<f64>,
    /// Scheduled attacks, as `run --attacks`: `syn-flood:3000@10+600,…`.
    pub attacks: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub pipeline: PipelineConfig,
    /// Workers when reading capture files (`ingest`, `flows`):
    /// `pipeline.workers` when set, else one per core.
    pub file_workers: usize,
    pub writer: WriterConfig,
    pub data_dir: PathBuf,
    pub demo_seed: u64,
    pub demo_pps: u64,
    pub attacks: AttackMix,
    pub capture: Capture,
    pub sql: tapstream_query::Guardrails,
    pub retention: RetentionPolicy,
    /// None: detection off.
    pub detect: Option<Detect>,
    pub geoip: GeoSettings,
    pub notify: crate::notify::NotifyConfig,
    pub plugins: crate::plugins::PluginsConfig,
    pub api: crate::serve::ApiSettings,
    /// How long generated reports are kept and how much room they take.
    pub reports: tapstream_api::report::schedule::ReportsConfig,
}

/// Validated live-capture settings.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub interfaces: Vec<String>,
    pub filter: Option<String>,
    pub queues: Option<u32>,
    pub live: LiveConfig,
    pub rx_cores: Vec<usize>,
    /// Log per-queue capture counters this often (None: never).
    pub stats_interval: Option<Duration>,
}

fn pow2(name: &str, v: Option<u32>, default: u32, min: u32, max: u32) -> anyhow::Result<u32> {
    let x = range(name, v, default, min, max)?;
    if !x.is_power_of_two() {
        bail!("{name} = {x}: must be a power of two");
    }
    Ok(x)
}

fn capture(raw: RawCapture, cores: usize) -> anyhow::Result<(Capture, Vec<usize>)> {
    let d = XskConfig::default();
    let frame_size = match raw.frame_size {
        None => d.frame_size,
        Some(x @ (2048 | 4096)) => x,
        Some(x) => bail!("capture.frame_size = {x}: must be 2048 or 4096"),
    };
    let fill = pow2("capture.fill_ring", raw.fill_ring, d.fill_size, 64, 1 << 20)?;
    let rx = pow2("capture.rx_ring", raw.rx_ring, d.rx_size, 64, 1 << 20)?;
    let frames = range("capture.umem_frames", raw.umem_frames, d.frames.max(fill * 2), 128, 1 << 22)?;
    if frames < fill {
        bail!("capture.umem_frames = {frames}: must be at least capture.fill_ring ({fill})");
    }
    let core_ok = |name: &str, v: &[usize]| -> anyhow::Result<()> {
        if let Some(c) = v.iter().find(|&&c| c >= cores) {
            bail!("{name}: core {c} does not exist (this machine has {cores}: 0..{})", cores - 1);
        }
        Ok(())
    };
    let rx_cores = raw.rx_cores.unwrap_or_default();
    core_ok("capture.rx_cores", &rx_cores)?;
    let worker_cores = raw.worker_cores.unwrap_or_default();
    core_ok("capture.worker_cores", &worker_cores)?;
    let interfaces = raw.interfaces.unwrap_or_default();
    if let Some(bad) = interfaces.iter().find(|i| i.is_empty() || i.len() >= 16 || i.contains('/') || i.contains(' ')) {
        bail!("capture.interfaces: `{bad}` is not a valid interface name");
    }
    let queues = match raw.queues {
        None => None,
        Some(q) => Some(range("capture.queues", Some(q), 1, 1, 1024)?),
    };
    Ok((
        Capture {
            interfaces,
            filter: raw.filter,
            queues,
            live: LiveConfig {
                method: raw.method.unwrap_or_default(),
                xdp_mode: raw.xdp_mode.unwrap_or_default(),
                packet_block_size: pow2(
                    "capture.af_packet_block_size",
                    raw.af_packet_block_size,
                    LiveConfig::default().packet_block_size,
                    4096,
                    1 << 26,
                )?,
                packet_blocks: range("capture.af_packet_blocks", raw.af_packet_blocks, 32, 2, 1 << 16)?,
                xsk: XskConfig {
                    frames,
                    frame_size,
                    fill_size: fill,
                    rx_size: rx,
                    bind: raw.bind.unwrap_or_default(),
                    busy_poll: raw.busy_poll.unwrap_or(false),
                    spin: Duration::from_micros(
                        range("capture.spin_us", raw.spin_us, d.spin.as_micros().min(100_000) as u32, 0, 100_000)?
                            .into(),
                    ),
                },
            },
            rx_cores,
            stats_interval: match raw.stats_interval_secs {
                Some(0.0) => None,
                v => Some(secs("capture.stats_interval_secs", v, Duration::from_secs(10), 0.1, 86_400.0)?),
            },
        },
        worker_cores,
    ))
}

pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let raw = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str::<RawConfig>(&text).with_context(|| format!("config {}", p.display()))?
        }
        None => RawConfig::default(),
    };
    validate(raw)
}

fn secs(name: &str, v: Option<f64>, default: Duration, min: f64, max: f64) -> anyhow::Result<Duration> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(Duration::from_secs_f64(x)),
        Some(x) => bail!("{name} = {x}: must be between {min} and {max} seconds"),
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: Option<T>,
    default: T,
    min: T,
    max: T,
) -> anyhow::Result<T> {
    match v {
        None => Ok(default),
        Some(x) if x >= min && x <= max => Ok(x),
        Some(x) => bail!("{name} = {x}: must be between {min} and {max}"),
    }
}

fn frac(name: &str, v: Option<f64>) -> anyhow::Result<f64> {
    match v {
        None => Ok(0.0),
        Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Some(x) => bail!("{name} = {x}: must be a fraction between 0 and 1"),
    }
}

pub fn validate(raw: RawConfig) -> anyhow::Result<Config> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let fd = FlowConfig::default();
    let ns = |d: Duration| d.as_nanos() as u64;
    let flow = FlowConfig {
        tcp_idle_ns: ns(secs(
            "flows.tcp_idle_timeout_secs",
            raw.flows.tcp_idle_timeout_secs,
            Duration::from_nanos(fd.tcp_idle_ns),
            1.0,
            86_400.0,
        )?),
        udp_idle_ns: ns(secs(
            "flows.udp_idle_timeout_secs",
            raw.flows.udp_idle_timeout_secs,
            Duration::from_nanos(fd.udp_idle_ns),
            1.0,
            86_400.0,
        )?),
        other_idle_ns: ns(secs(
            "flows.other_idle_timeout_secs",
            raw.flows.other_idle_timeout_secs,
            Duration::from_nanos(fd.other_idle_ns),
            1.0,
            86_400.0,
        )?),
        active_timeout_ns: ns(secs(
            "flows.active_timeout_secs",
            raw.flows.active_timeout_secs,
            Duration::from_secs(300),
            0.0,
            86_400.0,
        )?),
        vlan_in_key: raw.flows.vlan_in_key.unwrap_or(false),
        max_flows: range("flows.max_flows_per_worker", raw.flows.max_flows_per_worker, fd.max_flows, 16, 1 << 28)?,
        ..fd
    };
    let dd = DecodeConfig::default();
    let decode = DecodeConfig {
        verify_checksums: raw.decode.verify_checksums.unwrap_or(false),
        tunnels: raw.decode.tunnels.unwrap_or(true),
        vxlan_port: raw.decode.vxlan_port.unwrap_or(dd.vxlan_port),
        geneve_port: raw.decode.geneve_port.unwrap_or(dd.geneve_port),
        gtpu_port: raw.decode.gtpu_port.unwrap_or(dd.gtpu_port),
        teredo_port: raw.decode.teredo_port.unwrap_or(dd.teredo_port),
        ..dd
    };
    let flush =
        secs("storage.flush_interval_secs", raw.storage.flush_interval_secs, Duration::from_secs(30), 0.1, 3600.0)?;
    let raw_rtc = raw.capture.run_to_completion.unwrap_or(false);
    let (capture, worker_cores) = capture(raw.capture, cores)?;
    // Reading a file, the reader hashes most frames without decoding them
    // (`quick_shard_hash`) and mostly waits: a worker per core.
    let workers_set = raw.pipeline.workers.is_some();
    let pipeline = PipelineConfig {
        // One core goes to the reader that feeds the workers.
        workers: range("pipeline.workers", raw.pipeline.workers, cores.saturating_sub(1).clamp(1, 8), 1, 256)?,
        batch_size: range("pipeline.batch_size", raw.pipeline.batch_size, 256, 1, 65_536)?,
        pin_cores: raw.pipeline.pin_cores.unwrap_or(false),
        queue_depth: range("pipeline.queue_depth", raw.pipeline.queue_depth, 128, 1, 4096)?,
        record_batch_rows: range("storage.record_batch_rows", raw.storage.record_batch_rows, 8192, 1, 1 << 22)?,
        // Batches leave the workers every half interval and part files
        // commit within the other half (see `writer`): a crash loses at most
        // one flush interval of records.
        flush_interval: flush / 2,
        decode,
        flow,
        drop_when_behind: false,
        community_id_seed: raw.flows.community_id_seed.unwrap_or(0),
        worker_cores,
        run_to_completion: raw_rtc,
        filters: Vec::new(),
        live_clock: false,
        recorder: None,
        detect: None,
        geo: None,
        plugins: None,
    };
    let compaction_memory_bytes =
        range("storage.compaction_memory_mb", raw.storage.compaction_memory_mb, 256, 16, 1 << 20)? << 20;
    let writer = WriterConfig {
        max_rows_per_file: range("storage.max_rows_per_file", raw.storage.max_rows_per_file, 1_000_000, 1, 1 << 30)?,
        max_file_age: flush.mul_f64(0.45),
        zstd_level: range("storage.zstd_level", raw.storage.zstd_level, 3, 1, 22)?,
        row_group_rows: range("storage.row_group_rows", raw.storage.row_group_rows, 128 * 1024, 1024, 1 << 24)?,
        page_rows: range("storage.page_rows", raw.storage.page_rows, 8 * 1024, 512, 1 << 20)?,
        compaction: raw.storage.compaction.unwrap_or(true),
        compaction_grace: secs(
            "storage.compaction_grace_secs",
            raw.storage.compaction_grace_secs,
            Duration::from_secs(300),
            0.0,
            86_400.0,
        )?,
        compaction_memory_bytes,
        host_index: raw.storage.host_index.unwrap_or(true),
        // An ingest holds an hour's rows in half the sort's budget; a
        // long-running capture streams (`WriterConfig::streaming`).
        hold_bytes: compaction_memory_bytes / 2,
    };
    let retention = retention(&raw.retention)?;
    let detect = detect(raw.detect, raw.intel)?;
    Ok(Config {
        detect,
        geoip: geoip(raw.geoip),
        notify: crate::notify::validate(raw.notify)?,
        plugins: crate::plugins::validate(raw.plugins)?,
        api: crate::serve::validate(raw.api)?,
        reports: reports(raw.reports)?,
        file_workers: if workers_set { pipeline.workers } else { cores.clamp(1, 8) },
        pipeline,
        writer,
        data_dir: raw.storage.data_dir.unwrap_or_else(|| PathBuf::from("data")),
        demo_seed: raw.demo.seed.unwrap_or(1),
        demo_pps: range("demo.pps", raw.demo.pps, 2_000, 1, 100_000_000)?,
        attacks: AttackMix {
            syn_flood: frac("demo.syn_flood", raw.demo.syn_flood)?,
            udp_flood: frac("demo.udp_flood", raw.demo.udp_flood)?,
            port_scan: frac("demo.port_scan", raw.demo.port_scan)?,
            dns_tunnel: frac("demo.dns_tunnel", raw.demo.dns_tunnel)?,
            schedule: match &raw.demo.attacks {
                Some(a) => parse_attacks(a).map_err(|e| anyhow::anyhow!("demo.attacks: {e}"))?.schedule,
                None => Vec::new(),
            },
        },
        capture,
        retention,
        sql: tapstream_query::Guardrails {
            timeout: secs("sql.timeout_secs", raw.sql.timeout_secs, Duration::from_secs(60), 0.01, 86_400.0)?,
            memory_bytes: range("sql.memory_limit_mb", raw.sql.memory_limit_mb, 1024, 16, 1 << 20)? << 20,
            max_rows: match range("sql.max_rows", raw.sql.max_rows, 10_000, 0, 1 << 40)? {
                0 => None,
                n => Some(n),
            },
            default_range: secs(
                "sql.default_range_hours",
                raw.sql.default_range_hours.map(|h| h * 3600.0),
                Duration::from_secs(24 * 3600),
                3600.0,
                3600.0 * 24.0 * 3650.0,
            )?,
        },
    })
}

fn retention(r: &RawRetention) -> anyhow::Result<RetentionPolicy> {
    let days = |name: &str, v: Option<u32>, default: u32| {
        range(&format!("retention.{name}"), v, default, MIN_AGE_DAYS, MAX_AGE_DAYS)
    };
    let all = days("max_age_days", r.max_age_days, 90)?;
    let mut max_age = std::collections::BTreeMap::new();
    for t in Table::ALL {
        let v = match t {
            Table::Flows => r.flows_days,
            Table::Dns => r.dns_days,
            Table::Tls => r.tls_days,
            Table::Http => r.http_days,
            Table::Dhcp => r.dhcp_days,
            Table::Stats => r.stats_days,
            Table::Alerts => r.alerts_days,
        };
        let d = days(&format!("{}_days", t.name()), v, all)?;
        max_age.insert(t, Duration::from_secs(u64::from(d) * 86_400));
    }
    let disk_budget = match r.disk_budget_gb {
        None => None,
        Some(0.0) => None,
        Some(g) if g.is_finite() && (0.001..=1e6).contains(&g) => Some((g * 1e9) as u64),
        Some(g) => bail!("retention.disk_budget_gb = {g}: must be 0 (no budget) or between 0.001 and 1000000"),
    };
    Ok(RetentionPolicy {
        max_age,
        disk_budget,
        interval: secs("retention.interval_secs", r.interval_secs, Duration::from_secs(60), 0.1, 86_400.0)?,
    })
}

/// Parse `syn-flood=0.05,port-scan=0.01` (a share of new sessions all
/// along) and `syn-flood:5000@20+10` (5,000 packets/s from 20 s after the
/// start, for 10 s) into attacks. For `beacon` the number is the period in
/// seconds (`beacon:60@0+900`: a connection a minute for 15 minutes).
pub fn parse_attacks(s: &str) -> anyhow::Result<AttackMix> {
    let mut m = AttackMix::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        if let Some((k, rest)) = part.split_once(':') {
            let bad =
                || format!("attack `{part}`: expected NAME:PPS@START+DURATION (seconds), e.g. syn-flood:5000@20+10");
            let kind = AttackKind::ALL.iter().copied().find(|a| a.name() == k).with_context(|| {
                format!(
                    "attack `{k}`: unknown ({})",
                    AttackKind::ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
                )
            })?;
            let (pps, when) = rest.split_once('@').with_context(bad)?;
            let (start, dur) = when.split_once('+').with_context(bad)?;
            let pps: u64 = pps.parse().ok().filter(|&p| (1..=10_000_000).contains(&p)).with_context(bad)?;
            let secs = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0 && *x <= 1e6);
            let (start, dur) = (secs(start).with_context(bad)?, secs(dur).with_context(bad)?);
            m.schedule.push(ScheduledAttack {
                kind,
                pps,
                start_ns: (start * 1e9) as u64,
                duration_ns: (dur * 1e9) as u64,
            });
            continue;
        }
        let (k, v) = part.split_once('=').with_context(|| format!("attack `{part}`: expected NAME=FRACTION"))?;
        let v: f64 = v.parse().with_context(|| format!("attack `{part}`: bad fraction"))?;
        if !(0.0..=1.0).contains(&v) {
            bail!("attack `{part}`: fraction must be between 0 and 1");
        }
        match k {
            "syn-flood" => m.syn_flood = v,
            "udp-flood" => m.udp_flood = v,
            "port-scan" => m.port_scan = v,
            "dns-tunnel" => m.dns_tunnel = v,
            _ => bail!("attack `{k}`: unknown as a share (syn-flood, udp-flood, port-scan, dns-tunnel)"),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values_and_unknown_keys() {
        let e = validate(toml::from_str("[flows]\ntcp_idle_timeout_secs = -3").unwrap()).unwrap_err();
        assert!(e.to_string().contains("flows.tcp_idle_timeout_secs"), "{e}");
        let e = toml::from_str::<RawConfig>("[flows]\ntcp_idle = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(parse_attacks("syn-flood=2").is_err());
        let e = validate(toml::from_str("[retention]\nflows_days = 7").unwrap()).unwrap_err();
        assert!(e.to_string().contains("retention.flows_days = 7: must be between 30 and 730"), "{e}");
        let e = validate(toml::from_str("[retention]\ndisk_budget_gb = -1").unwrap()).unwrap_err();
        assert!(e.to_string().contains("retention.disk_budget_gb"), "{e}");
        let c =
            validate(toml::from_str("[retention]\nmax_age_days = 60\ndns_days = 400\ndisk_budget_gb = 2.5").unwrap())
                .unwrap();
        assert_eq!(c.retention.max_age[&Table::Flows], Duration::from_secs(60 * 86_400));
        assert_eq!(c.retention.max_age[&Table::Dns], Duration::from_secs(400 * 86_400));
        assert_eq!(c.retention.disk_budget, Some(2_500_000_000));
        assert_eq!(parse_attacks("port-scan=0.5").unwrap().port_scan, 0.5);
        let c = validate(toml::from_str("[capture]\nspin_us = 0").unwrap()).unwrap();
        assert_eq!(c.capture.live.xsk.spin, Duration::ZERO);
        let c = validate(RawConfig::default()).unwrap();
        assert_eq!(c.capture.live.xsk.spin, Duration::from_micros(50));
        let e = validate(toml::from_str("[capture]\nspin_us = 200000").unwrap()).unwrap_err();
        assert!(e.to_string().contains("capture.spin_us = 200000: must be between 0 and 100000"), "{e}");
    }

    #[test]
    fn detection_settings_and_scheduled_attacks() {
        let c = validate(toml::from_str("[detect]\nenabled = false").unwrap()).unwrap();
        assert!(c.detect.is_none());
        let c = validate(toml::from_str("[detect.scan]\nvertical_ports = 20\n[detect]\nclose_after_secs = 5").unwrap())
            .unwrap();
        let d = c.detect.unwrap();
        assert_eq!(d.cfg.scan.vertical_ports, 20);
        assert_eq!(d.cfg.close_after_ns, 5_000_000_000);
        assert_eq!(d.setup(Path::new("/d"), None).unwrap().log.as_deref(), Some(Path::new("/d/alerts.json")));
        let e = validate(toml::from_str("[[intel.feeds]]\npath = \"x.txt\"\nformat = \"xml\"").unwrap()).unwrap_err();
        assert!(e.to_string().contains("intel.feeds `x`: format `xml` unknown"), "{e}");
        let c = validate(toml::from_str("[[intel.feeds]]\npath = \"/nonexistent/drop.txt\"").unwrap()).unwrap();
        let e = c.detect.unwrap().setup(Path::new("/d"), None).unwrap_err();
        assert!(e.to_string().contains("threat feed drop (/nonexistent/drop.txt)"), "{e}");
        let m = parse_attacks("syn-flood:5000@20+10,port-scan=0.1,icmp-flood:10@0.5+1").unwrap();
        assert_eq!(m.port_scan, 0.1);
        assert_eq!(
            m.schedule,
            vec![
                ScheduledAttack {
                    kind: AttackKind::SynFlood,
                    pps: 5000,
                    start_ns: 20_000_000_000,
                    duration_ns: 10_000_000_000
                },
                ScheduledAttack {
                    kind: AttackKind::IcmpFlood,
                    pps: 10,
                    start_ns: 500_000_000,
                    duration_ns: 1_000_000_000
                },
            ]
        );
        let c = validate(
            toml::from_str(
                "[[detect.policy]]\nname = \"dmz\"\nsubnet = \"10.0.0.0/24\"\nallow = [\"tcp/443\", \"icmp\", \"udp\"]",
            )
            .unwrap(),
        )
        .unwrap();
        let p = &c.detect.unwrap().cfg.policies[0];
        assert!(p.allows(6, 443) && p.allows(1, 0) && p.allows(17, 9999) && !p.allows(6, 22));
        for (bad, msg) in [
            ("subnet = \"10.0.0.0/33\"\nallow = []", "subnet `10.0.0.0/33`"),
            ("subnet = \"10.0.0.0/8\"\nallow = [\"icmp/3\"]", "`icmp/3` is not a service"),
            ("subnet = \"10.0.0.0/8\"\ndirection = \"up\"\nallow = []", "direction `up`"),
        ] {
            let e = validate(toml::from_str(&format!("[[detect.policy]]\nname = \"p\"\n{bad}")).unwrap()).unwrap_err();
            assert!(e.to_string().contains(msg), "{e}");
        }
        for bad in ["syn-flood:0@1+1", "nope:10@1+1", "syn-flood:10@1", "syn-flood:10@x+1"] {
            assert!(parse_attacks(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_get_a_worker_per_core_unless_workers_are_set() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let c = validate(RawConfig::default()).unwrap();
        assert_eq!(c.file_workers, cores.clamp(1, 8));
        assert_eq!(c.pipeline.workers, cores.saturating_sub(1).clamp(1, 8));
        let raw: RawConfig = toml::from_str("[pipeline]\nworkers = 3\n").unwrap();
        let c = validate(raw).unwrap();
        assert_eq!((c.file_workers, c.pipeline.workers), (3, 3));
    }

    #[test]
    fn shipped_config_is_valid_and_documents_the_defaults() {
        let text = include_str!("../configs/tapstream.toml");
        let raw: RawConfig = toml::from_str(text).unwrap();
        let shipped = validate(raw).unwrap();
        // Every value the file spells out is the built-in default.
        let builtin = validate(RawConfig::default()).unwrap();
        assert_eq!(format!("{shipped:#?}"), format!("{builtin:#?}"));
    }
}
