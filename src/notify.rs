//! Notifications: alert events from the live feed, routed by severity, rule
//! and category to channels — email (SMTP with STARTTLS/TLS and auth),
//! webhooks (JSON, or a Slack-compatible body) and syslog — with a rate
//! limit per channel, retries with backoff, digests and escalation of
//! alerts nobody acknowledged. Everything runs on its own threads, reading
//! the feed detection writes to: a broken mail server never slows
//! detection.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crossbeam_channel::{Receiver, Sender, bounded};
use serde::Deserialize;
use tapstream_engine::alert::{Alert, AlertEvent, Category, Severity};
use tapstream_engine::detect::{AlertFeed, alert_json};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub rate_limit_per_minute: Option<u32>,
    pub retry_attempts: Option<u32>,
    pub retry_backoff_secs: Option<f64>,
    pub channel: Option<Vec<RawChannel>>,
    pub route: Option<Vec<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    pub name: String,
    pub kind: String,
    // email
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub security: Option<String>,
    pub username: Option<String>,
    /// The password is read from this file (never written in the config).
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    // webhook
    pub url: Option<String>,
    pub format: Option<String>,
    // syslog
    pub address: Option<String>,
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub min_severity: Option<String>,
    pub rules: Option<Vec<String>>,
    pub categories: Option<Vec<String>>,
    pub channels: Vec<String>,
    /// Also send the close event.
    pub on_close: Option<bool>,
    /// Gather this many minutes of alerts into one message (0: each at once).
    pub digest_minutes: Option<f64>,
    /// Not acknowledged within this many minutes: send to `escalate_to`.
    pub escalate_after_minutes: Option<f64>,
    pub escalate_to: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Security {
    None,
    StartTls,
    Tls,
}

#[derive(Clone)]
pub enum ChannelKind {
    Email {
        host: String,
        port: u16,
        security: Security,
        username: Option<String>,
        password: Option<String>,
        from: String,
        to: Vec<String>,
    },
    Webhook {
        url: String,
        slack: bool,
    },
    Syslog {
        address: String,
        tcp: bool,
    },
}

impl std::fmt::Debug for ChannelKind {
    // The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelKind::Email { host, port, security, from, to, .. } => {
                write!(f, "email {host}:{port} ({security:?}) from {from} to {to:?}")
            }
            ChannelKind::Webhook { url, slack } => write!(f, "webhook {url}{}", if *slack { " (slack)" } else { "" }),
            ChannelKind::Syslog { address, tcp } => write!(f, "syslog {address}/{}", if *tcp { "tcp" } else { "udp" }),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub min_severity: Severity,
    pub rules: Vec<String>,
    pub categories: Vec<Category>,
    pub channels: Vec<String>,
    pub on_close: bool,
    pub digest: Option<Duration>,
    pub escalate_after: Option<Duration>,
    pub escalate_to: Vec<String>,
}

impl Route {
    fn matches(&self, a: &Alert) -> bool {
        a.severity >= self.min_severity
            && (self.rules.is_empty() || self.rules.contains(&a.rule))
            && (self.categories.is_empty() || self.categories.contains(&a.category))
    }
}

/// Validated notification settings.
#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    pub channels: Vec<Channel>,
    pub routes: Vec<Route>,
    /// The custom rules file, whose `notify:CHANNEL` actions also route
    /// their rules' alerts (re-read when it changes).
    pub rules_file: Option<PathBuf>,
    pub rate_per_minute: u32,
    pub retries: u32,
    pub backoff: Duration,
}

pub fn validate(r: RawNotify) -> anyhow::Result<NotifyConfig> {
    let mut channels: Vec<Channel> = Vec::new();
    for c in r.channel.unwrap_or_default() {
        let name = c.name.clone();
        if name.is_empty() || channels.iter().any(|x| x.name == name) {
            bail!("notify.channel: names must be set and distinct (`{name}`)");
        }
        let password = match &c.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("notify.channel `{name}`: reading password_file {}", p.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        channels.push(channel(c, password)?);
    }
    let known = |n: &str| channels.iter().any(|c| c.name == n);
    let mut routes = Vec::new();
    for (i, r) in r.route.unwrap_or_default().into_iter().enumerate() {
        routes.push(route(r, &format!("notify.route #{}", i + 1), &known)?);
    }
    Ok(NotifyConfig {
        channels,
        routes,
        rules_file: None,
        rate_per_minute: r.rate_limit_per_minute.unwrap_or(30).max(1),
        retries: r.retry_attempts.unwrap_or(5).min(100),
        backoff: Duration::from_secs_f64(r.retry_backoff_secs.unwrap_or(2.0).clamp(0.01, 3600.0)),
    })
}

/// Check one channel; `password` is the mail password (from the config's
/// `password_file`, or the API's sealed store), held in memory only.
pub fn channel(c: RawChannel, password: Option<String>) -> anyhow::Result<Channel> {
    let name = c.name.clone();
    if name.is_empty() {
        bail!("notify.channel: a channel needs a name");
    }
    let need = |v: &Option<String>, what: &str| -> anyhow::Result<String> {
        v.clone().filter(|s| !s.is_empty()).with_context(|| format!("notify.channel `{name}`: `{what}` is required"))
    };
    let kind = match c.kind.as_str() {
        "email" => {
            let security = match c.security.as_deref().unwrap_or("starttls") {
                "none" => Security::None,
                "starttls" => Security::StartTls,
                "tls" => Security::Tls,
                s => bail!("notify.channel `{name}`: security `{s}` (none, starttls, tls)"),
            };
            let to = c.to.clone().unwrap_or_default();
            if to.is_empty() {
                bail!("notify.channel `{name}`: `to` needs at least one address");
            }
            let from = need(&c.from, "from")?;
            for addr in to.iter().chain(std::iter::once(&from)) {
                addr.parse::<lettre::message::Mailbox>()
                    .with_context(|| format!("notify.channel `{name}`: `{addr}` is not a mail address"))?;
            }
            if password.is_some() != c.username.is_some() {
                bail!("notify.channel `{name}`: a username and a password go together");
            }
            ChannelKind::Email {
                host: need(&c.smtp_host, "smtp_host")?,
                port: c.smtp_port.unwrap_or(match security {
                    Security::Tls => 465,
                    Security::StartTls => 587,
                    Security::None => 25,
                }),
                security,
                username: c.username.clone(),
                password,
                from,
                to,
            }
        }
        "webhook" => {
            let url = need(&c.url, "url")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("notify.channel `{name}`: url `{url}` must start with http:// or https://");
            }
            let slack = match c.format.as_deref().unwrap_or("json") {
                "json" => false,
                "slack" => true,
                f => bail!("notify.channel `{name}`: format `{f}` (json, slack)"),
            };
            ChannelKind::Webhook { url, slack }
        }
        "syslog" => {
            let address = need(&c.address, "address")?;
            address
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("notify.channel `{name}`: address `{address}` is not HOST:PORT"))?;
            let tcp = match c.protocol.as_deref().unwrap_or("udp") {
                "udp" => false,
                "tcp" => true,
                p => bail!("notify.channel `{name}`: protocol `{p}` (udp, tcp)"),
            };
            ChannelKind::Syslog { address, tcp }
        }
        k => bail!("notify.channel `{name}`: kind `{k}` (email, webhook, syslog)"),
    };
    Ok(Channel { name, kind })
}

/// Check one route (`at` names it in errors) against the channels `known`.
pub fn route(r: RawRoute, at: &str, known: &dyn Fn(&str) -> bool) -> anyhow::Result<Route> {
    if let Some(c) = r.channels.iter().chain(r.escalate_to.iter().flatten()).find(|c| !known(c)) {
        bail!("{at}: no channel named `{c}`");
    }
    let min_severity = match &r.min_severity {
        None => Severity::Info,
        Some(s) => Severity::from_name(s).with_context(|| format!("{at}: severity `{s}`"))?,
    };
    let categories = r
        .categories
        .unwrap_or_default()
        .iter()
        .map(|c| Category::from_name(c).with_context(|| format!("{at}: category `{c}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mins = |v: Option<f64>, what: &str| -> anyhow::Result<Option<Duration>> {
        match v {
            None | Some(0.0) => Ok(None),
            Some(m) if m.is_finite() && m > 0.0 && m <= 10_080.0 => Ok(Some(Duration::from_secs_f64(m * 60.0))),
            Some(m) => bail!("{at}: {what} = {m}: minutes between 0 and 10080"),
        }
    };
    let escalate_after = mins(r.escalate_after_minutes, "escalate_after_minutes")?;
    let escalate_to = r.escalate_to.unwrap_or_default();
    if escalate_after.is_some() == escalate_to.is_empty() {
        bail!("{at}: escalate_after_minutes and escalate_to go together");
    }
    Ok(Route {
        min_severity,
        rules: r.rules.unwrap_or_default(),
        categories,
        channels: r.channels,
        on_close: r.on_close.unwrap_or(false),
        digest: mins(r.digest_minutes, "digest_minutes")?,
        escalate_after,
        escalate_to,
    })
}

/// One message for one channel.
#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    pub text: String,
    /// The alert events it is about (a digest holds several).
    pub alerts: Vec<Alert>,
}

fn one_line(a: &Alert) -> String {
    format!("{} {} {}: {}", a.severity.name().to_uppercase(), a.rule, a.event.name(), a.explanation)
}

fn message_for(a: &Alert, escalated: bool) -> Message {
    let subject = format!(
        "[tapstream]{} {} {}: {}",
        if escalated { " ESCALATED (not acknowledged)" } else { "" },
        a.severity.name().to_uppercase(),
        a.rule,
        a.explanation.chars().take(120).collect::<String>()
    );
    let text = format!(
        "{}\n\nalert {} ({}), {} / {}, verdict {}\nsources: {}\ndestinations: {}\nports: {:?}\ncountries: {}\npackets {}, bytes {}, flows {}\nevidence: {}\nflows to look at: {}\n\n{}\n",
        a.explanation,
        a.id,
        a.event.name(),
        a.category.name(),
        a.rule,
        a.verdict.name(),
        a.src_ips.join(", "),
        a.dst_ips.join(", "),
        a.ports,
        a.countries.join(", "),
        a.packets,
        a.bytes,
        a.flows,
        a.top_sources.join(", "),
        a.sample_flows.join(", "),
        alert_json(a)
    );
    Message { subject, text, alerts: vec![a.clone()] }
}

fn digest_for(v: &[Alert]) -> Message {
    let worst = v.iter().map(|a| a.severity).max().unwrap_or(Severity::Info);
    let subject = format!("[tapstream] digest: {} alert events (worst {})", v.len(), worst.name());
    let text = v.iter().map(one_line).collect::<Vec<_>>().join("\n");
    Message { subject, text, alerts: v.to_vec() }
}

/// Send one mail through an email channel (one attempt); `body` finishes
/// the message from a builder with sender, recipients and subject set.
fn send_mail(
    kind: &ChannelKind,
    subject: &str,
    timeout: Duration,
    body: impl FnOnce(lettre::message::MessageBuilder) -> anyhow::Result<lettre::Message>,
) -> anyhow::Result<()> {
    use lettre::Transport;
    let ChannelKind::Email { host, port, security, username, password, from, to } = kind else {
        bail!("not an email channel");
    };
    let mut b = lettre::Message::builder().from(from.parse()?).subject(subject.to_string());
    for t in to {
        b = b.to(t.parse()?);
    }
    let email = body(b)?;
    let mut t = match security {
        Security::None => lettre::SmtpTransport::builder_dangerous(host.as_str()),
        Security::StartTls => lettre::SmtpTransport::starttls_relay(host)?,
        Security::Tls => lettre::SmtpTransport::relay(host)?,
    }
    .port(*port)
    .timeout(Some(timeout));
    if let (Some(u), Some(p)) = (username, password) {
        t = t.credentials(lettre::transport::smtp::authentication::Credentials::new(u.clone(), p.clone()));
    }
    t.build().send(&email)?;
    Ok(())
}

/// Send one RFC 5424 line to a syslog server: TCP with octet counting
/// (RFC 6587) or one UDP datagram.
fn send_syslog(address: &str, tcp: bool, line: &str) -> anyhow::Result<()> {
    if tcp {
        let mut s = TcpStream::connect_timeout(&address.parse()?, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "{} {line}", line.len())?;
    } else {
        let s = UdpSocket::bind(if address.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" })?;
        s.send_to(line.as_bytes(), address)?;
    }
    Ok(())
}

/// POST a JSON body to a webhook (one attempt, 10 s).
fn post_json(url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().new_agent();
    agent.post(url).header("Content-Type", "application/json").send(body.to_string().as_bytes())?;
    Ok(())
}

/// Deliver one message now (one attempt).
pub fn deliver(kind: &ChannelKind, m: &Message) -> anyhow::Result<()> {
    match kind {
        ChannelKind::Email { .. } => {
            send_mail(kind, &m.subject, Duration::from_secs(10), |b| Ok(b.body(m.text.clone())?))
        }
        ChannelKind::Webhook { url, slack } => {
            let body = if *slack {
                serde_json::json!({ "text": format!("*{}*\n{}", m.subject, m.alerts.iter().map(one_line).collect::<Vec<_>>().join("\n")) })
            } else if m.alerts.len() == 1 {
                alert_json(&m.alerts[0])
            } else {
                serde_json::json!({ "digest": m.alerts.iter().map(alert_json).collect::<Vec<_>>() })
            };
            post_json(url, &body)
        }
        ChannelKind::Syslog { address, tcp } => {
            // RFC 5424, facility local0; one line per alert event.
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
            for a in &m.alerts {
                let sev = match a.severity {
                    Severity::Critical => 2,
                    Severity::High => 3,
                    Severity::Medium => 4,
                    Severity::Low => 5,
                    Severity::Info => 6,
                };
                let ts = alert_json(a)["timestamp"].as_str().unwrap_or("-").to_string();
                let line = format!(
                    "<{}>1 {ts} {} tapstream - alert - {}",
                    16 * 8 + sev,
                    if host.is_empty() { "-" } else { &host },
                    alert_json(a)
                );
                send_syslog(address, *tcp, &line)?;
            }
            Ok(())
        }
    }
}

/// Counters of a notifier, readable while it runs.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Events that left the in-memory feed before the notifier read them.
    pub missed: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub rate_limited: AtomicU64,
    pub retries: AtomicU64,
}

/// The running notifier.
pub struct Notifier {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<NotifyStats>,
    /// The last alert-feed event read (a successor starts after it).
    seq: Arc<AtomicU64>,
    /// Open alerts still waiting for an acknowledgement when the thread
    /// stopped (a successor keeps waiting for them): (opened, alert).
    left: Arc<std::sync::Mutex<Vec<(Instant, Alert)>>>,
}

/// Where a stopped notifier left off: the last alert event it read and the
/// escalations still waiting.
pub struct Handover {
    pub seq: u64,
    pub waiting: Vec<(Instant, Alert)>,
}

impl Notifier {
    /// Deliver what is queued (up to `grace`), then stop; the last alert
    /// event it read.
    pub fn finish(self, grace: Duration) -> u64 {
        self.hand_over(grace).seq
    }

    /// As [`Notifier::finish`], with the escalations still waiting.
    pub fn hand_over(mut self, grace: Duration) -> Handover {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("notifications still pending after {grace:?}: left behind at exit");
            }
        }
        let s = &self.stats;
        tracing::info!(
            sent = s.sent.load(Ordering::Relaxed),
            failed = s.failed.load(Ordering::Relaxed),
            rate_limited = s.rate_limited.load(Ordering::Relaxed),
            "notifications"
        );
        let waiting = std::mem::take(&mut *self.left.lock().unwrap_or_else(|p| p.into_inner()));
        Handover { seq: self.seq.load(Ordering::SeqCst), waiting }
    }
}

/// One channel's delivery thread: rate limit, retries with backoff.
fn channel_thread(ch: Channel, cfg: NotifyConfig, rx: Receiver<Message>, stats: Arc<NotifyStats>) {
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    for m in rx {
        let now = Instant::now();
        while sent_at.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            sent_at.pop_front();
        }
        if sent_at.len() as u32 >= cfg.rate_per_minute {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %ch.name, "rate limit ({} a minute) reached: dropped \"{}\"", cfg.rate_per_minute, m.subject);
            continue;
        }
        sent_at.push_back(now);
        let mut wait = cfg.backoff;
        for attempt in 0..=cfg.retries {
            match deliver(&ch.kind, &m) {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if attempt < cfg.retries => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(channel = %ch.name, attempt = attempt + 1, "delivery failed: {e:#}; retrying in {wait:?}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(300));
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(channel = %ch.name, "delivery failed for good after {} attempts: {e:#}", attempt + 1);
                }
            }
        }
    }
}

/// Acknowledged alert ids: one per line in `DATA/alerts.ack`
/// (`tapstream alerts ack ID`; the API later).
fn acked(path: &std::path::Path) -> std::collections::HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Start delivering the events of `feed` by `cfg`'s routes.
pub fn start(cfg: NotifyConfig, feed: Arc<AlertFeed>, ack_file: PathBuf) -> Notifier {
    start_at(cfg, feed, ack_file, Handover { seq: 0, waiting: Vec::new() })
}

/// As [`start`], carrying on from where another notifier stopped (after new
/// settings): the events after `from.seq`, and the escalations it was
/// waiting on, kept under the new routes that escalate them, with the time
/// they have waited already.
pub fn start_at(cfg: NotifyConfig, feed: Arc<AlertFeed>, ack_file: PathBuf, from: Handover) -> Notifier {
    let from_seq = from.seq;
    let seq_out = Arc::new(AtomicU64::new(from_seq));
    let left: Arc<std::sync::Mutex<Vec<(Instant, Alert)>>> = Arc::default();
    let left_out = left.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(NotifyStats::default());
    let mut txs: HashMap<String, Sender<Message>> = HashMap::new();
    let mut threads = Vec::new();
    for ch in &cfg.channels {
        let (tx, rx) = bounded::<Message>(1024);
        txs.insert(ch.name.clone(), tx);
        let (ch, c, st) = (ch.clone(), cfg.clone(), stats.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("notify-{}", ch.name))
                .spawn(move || channel_thread(ch, c, rx, st))
                .expect("spawn"),
        );
    }
    let (s, st, seq_shared) = (stop.clone(), stats.clone(), seq_out.clone());
    let thread = std::thread::Builder::new()
        .name("tapstream-notify".into())
        .spawn(move || {
            let mut seq = from_seq;
            let mut digests: Vec<(Instant, Vec<Alert>)> =
                cfg.routes.iter().map(|_| (Instant::now(), Vec::new())).collect();
            // Open alerts waiting for an acknowledgement: id → (route, opened, alert).
            let mut pending: HashMap<String, (usize, Instant, Alert)> = HashMap::new();
            for (opened, a) in from.waiting {
                if let Some(ri) = cfg.routes.iter().position(|r| r.escalate_after.is_some() && r.matches(&a)) {
                    pending.insert(a.id.clone(), (ri, opened, a));
                }
            }
            // Custom rules' notify actions: rule name → channels.
            let mut actions: HashMap<String, Vec<String>> = HashMap::new();
            let mut rules_stamp: Option<std::time::SystemTime> = None;
            let mut rules_checked = Instant::now() - Duration::from_secs(10);
            let send = |name: &str, m: Message| {
                if let Some(tx) = txs.get(name)
                    && tx.try_send(m).is_err()
                {
                    st.rate_limited.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(channel = name, "channel queue full: message dropped");
                }
            };
            loop {
                let stopping = s.load(Ordering::SeqCst);
                if let Some(p) = &cfg.rules_file
                    && rules_checked.elapsed() >= Duration::from_secs(2)
                {
                    rules_checked = Instant::now();
                    let stamp = std::fs::metadata(p).and_then(|m| m.modified()).ok();
                    if stamp != rules_stamp {
                        rules_stamp = stamp;
                        let parsed = std::fs::read_to_string(p)
                            .map_err(|e| e.to_string())
                            .and_then(|t| tapstream_engine::detect::rules::parse(p, &t).map_err(|e| e.to_string()));
                        match parsed {
                            Ok(rules) => {
                                actions = rules
                                    .iter()
                                    .map(|r| {
                                        let chans: Vec<String> = r
                                            .actions
                                            .iter()
                                            .filter_map(|a| a.strip_prefix("notify:"))
                                            .map(str::to_string)
                                            .collect();
                                        for c in chans.iter().filter(|c| !txs.contains_key(*c)) {
                                            tracing::warn!(rule = %r.name, "action notify:{c}: no such channel");
                                        }
                                        (r.name.clone(), chans)
                                    })
                                    .collect();
                            }
                            Err(e) => tracing::warn!("{e}; rule actions as before"),
                        }
                    }
                }
                for (n, a) in feed.since(seq) {
                    if a.event == AlertEvent::Open
                        && let Some(chans) = actions.get(&a.rule)
                    {
                        for c in chans {
                            send(c, message_for(&a, false));
                        }
                    }
                    if n > seq + 1 {
                        st.missed.fetch_add(n - seq - 1, Ordering::Relaxed);
                        tracing::error!(
                            "notifications fell behind the alert feed: {} alert events were not notified",
                            n - seq - 1
                        );
                    }
                    seq = n;
                    seq_shared.store(n, Ordering::SeqCst);
                    for (ri, r) in cfg.routes.iter().enumerate() {
                        let wanted = match a.event {
                            AlertEvent::Open => true,
                            AlertEvent::Close => r.on_close,
                            AlertEvent::Update => false,
                        };
                        if !wanted || !r.matches(&a) {
                            continue;
                        }
                        if r.escalate_after.is_some() {
                            match a.event {
                                AlertEvent::Open => {
                                    pending.insert(a.id.clone(), (ri, Instant::now(), a.clone()));
                                }
                                AlertEvent::Close => {
                                    pending.remove(&a.id);
                                }
                                AlertEvent::Update => {}
                            }
                        }
                        if r.digest.is_some() {
                            digests[ri].1.push(a.clone());
                        } else {
                            for c in &r.channels {
                                send(c, message_for(&a, false));
                            }
                        }
                    }
                }
                for (ri, r) in cfg.routes.iter().enumerate() {
                    let (since, v) = &mut digests[ri];
                    if let Some(every) = r.digest
                        && !v.is_empty()
                        && (since.elapsed() >= every || stopping)
                    {
                        let m = digest_for(v);
                        for c in &r.channels {
                            send(c, m.clone());
                        }
                        v.clear();
                        *since = Instant::now();
                    }
                }
                if !pending.is_empty() {
                    let acks = acked(&ack_file);
                    pending.retain(|id, (ri, opened, a)| {
                        if acks.contains(id) {
                            return false;
                        }
                        let r = &cfg.routes[*ri];
                        if r.escalate_after.is_some_and(|after| opened.elapsed() >= after) {
                            for c in &r.escalate_to {
                                send(c, message_for(a, true));
                            }
                            return false;
                        }
                        true
                    });
                }
                if stopping {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            *left.lock().unwrap_or_else(|p| p.into_inner()) =
                pending.into_values().map(|(_, opened, a)| (opened, a)).collect();
            drop(txs);
            for t in threads {
                let _ = t.join();
            }
        })
        .expect("spawn notifier");
    Notifier { stop, thread: Some(thread), stats, seq: seq_out, left: left_out }
}

/// The notifier of a running appliance, with the channels and routes the
/// API manages on top of the config file's. A change is checked in full
/// first, then the running notifier is replaced by one with the new
/// settings that carries on from the last alert event the old one read
/// (digests in progress are sent on the way; escalations waiting for an
/// acknowledgement keep waiting, under the new routes).
pub struct Managed {
    base: NotifyConfig,
    feed: Arc<AlertFeed>,
    ack_file: PathBuf,
    running: std::sync::Mutex<(Option<Notifier>, NotifyConfig)>,
}

fn raw_channel(name: &str, c: &tapstream_api::engine::ChannelSpec) -> RawChannel {
    RawChannel {
        name: name.to_string(),
        kind: c.kind.clone(),
        smtp_host: c.smtp_host.clone(),
        smtp_port: c.smtp_port,
        security: c.security.clone(),
        username: c.username.clone(),
        password_file: None,
        from: c.from.clone(),
        to: c.to.clone(),
        url: c.url.clone(),
        format: c.format.clone(),
        address: c.address.clone(),
        protocol: c.protocol.clone(),
    }
}

fn raw_route(r: &tapstream_api::engine::RouteSpec) -> RawRoute {
    RawRoute {
        min_severity: r.min_severity.clone(),
        rules: r.rules.clone(),
        categories: r.categories.clone(),
        channels: r.channels.clone(),
        on_close: r.on_close,
        digest_minutes: r.digest_minutes,
        escalate_after_minutes: r.escalate_after_minutes,
        escalate_to: r.escalate_to.clone(),
    }
}

impl Managed {
    /// Start with the config file's settings (`base`, its `rules_file` set).
    pub fn start(base: NotifyConfig, feed: Arc<AlertFeed>, ack_file: PathBuf) -> Managed {
        let running = (!base.channels.is_empty()).then(|| start(base.clone(), feed.clone(), ack_file.clone()));
        for c in &base.channels {
            tracing::info!(channel = %c.name, "notifications: {:?}", c.kind);
        }
        Managed { running: std::sync::Mutex::new((running, base.clone())), base, feed, ack_file }
    }

    /// The file's settings plus these, checked.
    fn build(
        &self,
        channels: &[(String, tapstream_api::engine::ChannelSpec)],
        routes: &[tapstream_api::engine::RouteSpec],
    ) -> anyhow::Result<NotifyConfig> {
        let mut cfg = self.base.clone();
        for (name, spec) in channels {
            if cfg.channels.iter().any(|c| &c.name == name) {
                bail!("channel `{name}`: a channel of that name exists already");
            }
            cfg.channels.push(channel(raw_channel(name, spec), spec.password.clone())?);
        }
        let names: Vec<String> = cfg.channels.iter().map(|c| c.name.clone()).collect();
        let known = |n: &str| names.iter().any(|x| x == n);
        for (i, r) in routes.iter().enumerate() {
            cfg.routes.push(route(raw_route(r), &format!("route #{}", i + 1), &known)?);
        }
        Ok(cfg)
    }

    /// Deliver what is queued (up to `grace`), then stop.
    pub fn finish(&self, grace: Duration) {
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.0.take() {
            n.finish(grace);
        }
    }
}

/// Deliver a generated report (one attempt): by mail with the file
/// attached; to a webhook or syslog as a notice of where to fetch it.
pub fn deliver_report(kind: &ChannelKind, r: &tapstream_api::engine::ReportMail) -> anyhow::Result<()> {
    match kind {
        ChannelKind::Email { .. } => send_mail(kind, &r.subject, Duration::from_secs(30), |b| {
            use lettre::message::{Attachment, MultiPart, SinglePart};
            let file = Attachment::new(r.file_name.clone()).body(r.data.clone(), r.content_type.parse()?);
            Ok(b.multipart(MultiPart::mixed().singlepart(SinglePart::plain(r.text.clone())).singlepart(file))?)
        }),
        ChannelKind::Webhook { url, slack } => {
            let body = if *slack {
                serde_json::json!({ "text": format!("*{}*\n{}", r.subject, r.text) })
            } else {
                r.notice.clone()
            };
            post_json(url, &body)
        }
        ChannelKind::Syslog { address, tcp } => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
            let ts = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| "-".into());
            // Notice (6), facility local0.
            let line = format!(
                "<{}>1 {ts} {} tapstream - report - {}",
                16 * 8 + 6,
                if host.is_empty() { "-" } else { &host },
                r.notice
            );
            send_syslog(address, *tcp, &line)
        }
    }
}

impl tapstream_api::engine::Notifications for Managed {
    fn apply(
        &self,
        channels: &[(String, tapstream_api::engine::ChannelSpec)],
        routes: &[tapstream_api::engine::RouteSpec],
    ) -> Result<(), String> {
        let cfg = self.build(channels, routes).map_err(|e| format!("{e:#}"))?;
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let from = match g.0.take() {
            Some(n) => n.hand_over(Duration::from_secs(5)),
            None => Handover { seq: self.feed.head(), waiting: Vec::new() },
        };
        let n =
            (!cfg.channels.is_empty()).then(|| start_at(cfg.clone(), self.feed.clone(), self.ack_file.clone(), from));
        tracing::info!(channels = cfg.channels.len(), routes = cfg.routes.len(), "notification settings applied");
        *g = (n, cfg);
        Ok(())
    }

    fn file_channels(&self) -> Vec<String> {
        self.base.channels.iter().map(|c| c.name.clone()).collect()
    }

    fn send_report(&self, name: &str, r: &tapstream_api::engine::ReportMail) -> Result<(), String> {
        let kind = {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.1.channels.iter().find(|c| c.name == name).map(|c| c.kind.clone())
        };
        let kind = kind.ok_or_else(|| format!("no channel `{name}`"))?;
        deliver_report(&kind, r).map_err(|e| format!("{e:#}"))
    }

    fn test(&self, name: &str) -> Result<(), String> {
        let kind = {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.1.channels.iter().find(|c| c.name == name).map(|c| c.kind.clone())
        };
        let kind = kind.ok_or_else(|| format!("no channel `{name}`"))?;
        let now = crate::commands::now_ns();
        let a = Alert {
            ts: now,
            event: AlertEvent::Open,
            id: "test".into(),
            rule: "test".into(),
            severity: Severity::Info,
            category: Category::System,
            verdict: tapstream_engine::alert::Verdict::Normal,
            start_ts: now,
            last_ts: now,
            src_ips: Vec::new(),
            dst_ips: Vec::new(),
            ports: Vec::new(),
            countries: Vec::new(),
            packets: 0,
            bytes: 0,
            flows: 0,
            rate: 0.0,
            rate_unit: String::new(),
            top_sources: Vec::new(),
            sample_flows: Vec::new(),
            explanation: format!("a test message through channel `{name}`: it works"),
        };
        deliver(&kind, &message_for(&a, false)).map_err(|e| format!("{e:#}"))
    }
}

/// Start notifications for a run with this pipeline (None when no route is
/// configured or detection is off).
pub fn start_for(
    cfg: &crate::config::Config,
    pcfg: &tapstream_engine::pipeline::PipelineConfig,
    data: &std::path::Path,
) -> Option<Notifier> {
    if cfg.notify.channels.is_empty() {
        return None;
    }
    let feed = pcfg.detect.as_ref()?.feed.clone()?;
    let mut ncfg = cfg.notify.clone();
    ncfg.rules_file = cfg.detect.as_ref().and_then(|d| d.rules_file.clone());
    for c in &cfg.notify.channels {
        tracing::info!(channel = %c.name, "notifications: {:?}", c.kind);
    }
    Some(start(ncfg, feed, data.join("alerts.ack")))
}

/// `tapstream alerts ack ID…`: acknowledge alerts (no escalation for them).
pub fn ack(data: &std::path::Path, ids: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(data)?;
    let p = data.join("alerts.ack");
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(&p).with_context(|| format!("{}", p.display()))?;
    for id in ids {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("`{id}` is not an alert id");
        }
        writeln!(f, "{id}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawNotify {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn settings_are_checked_and_secrets_stay_out_of_logs() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = validate(raw(&format!(
            "[[channel]]\nname = \"mail\"\nkind = \"email\"\nsmtp_host = \"mx.example\"\nfrom = \"ts@example.org\"\nto = [\"soc@example.org\"]\nusername = \"ts\"\npassword_file = \"{}\"\n\
             [[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://hooks.example/x\"\nformat = \"slack\"\n\
             [[route]]\nmin_severity = \"high\"\nchannels = [\"mail\"]\nescalate_after_minutes = 15\nescalate_to = [\"hook\"]\n",
            pw.display()
        )))
        .unwrap();
        assert_eq!(c.channels.len(), 2);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            matches!(&c.channels[0].kind, ChannelKind::Email { password: Some(p), port: 587, .. } if p == "s3cret")
        );
        for (text, msg) in [
            ("[[channel]]\nname = \"x\"\nkind = \"pager\"\n", "kind `pager`"),
            ("[[channel]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"ftp://a\"\n", "must start with http"),
            (
                "[[channel]]\nname = \"x\"\nkind = \"email\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"not an address\"]\n",
                "not a mail address",
            ),
            ("[[channel]]\nname = \"x\"\nkind = \"syslog\"\naddress = \"nowhere\"\n", "not HOST:PORT"),
            ("[[route]]\nchannels = [\"ghost\"]\n", "no channel named `ghost`"),
        ] {
            let e = validate(raw(text)).unwrap_err().to_string();
            assert!(e.contains(msg), "{text}: {e}");
        }
    }

    fn alert(rule: &str, sev: Severity, event: AlertEvent) -> Alert {
        Alert {
            ts: 1_767_225_600_000_000_000,
            event,
            id: format!("A{rule}"),
            rule: rule.into(),
            severity: sev,
            category: Category::Flood,
            verdict: tapstream_engine::alert::Verdict::Malicious,
            start_ts: 1_767_225_600_000_000_000,
            last_ts: 1_767_225_600_000_000_000,
            src_ips: vec!["203.0.113.9".into()],
            dst_ips: vec!["10.0.0.5".into()],
            ports: vec![80],
            countries: vec![],
            packets: 1,
            bytes: 60,
            flows: 1,
            rate: 1.0,
            rate_unit: "syn/s".into(),
            top_sources: vec![],
            sample_flows: vec![],
            explanation: format!("{rule} explained"),
        }
    }

    #[test]
    fn routes_match_by_severity_rule_and_category() {
        let r = Route {
            min_severity: Severity::High,
            rules: vec!["syn_flood".into()],
            categories: vec![],
            channels: vec![],
            on_close: false,
            digest: None,
            escalate_after: None,
            escalate_to: vec![],
        };
        assert!(r.matches(&alert("syn_flood", Severity::Critical, AlertEvent::Open)));
        assert!(!r.matches(&alert("syn_flood", Severity::Medium, AlertEvent::Open)));
        assert!(!r.matches(&alert("udp_flood", Severity::High, AlertEvent::Open)));
        let m = message_for(&alert("syn_flood", Severity::High, AlertEvent::Open), true);
        assert!(m.subject.starts_with("[tapstream] ESCALATED (not acknowledged) HIGH syn_flood: syn_flood explained"));
        let d =
            digest_for(&[alert("a", Severity::Low, AlertEvent::Open), alert("b", Severity::High, AlertEvent::Open)]);
        assert_eq!(d.subject, "[tapstream] digest: 2 alert events (worst high)");
    }

    /// An HTTP listener recording request bodies.
    fn listener() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s);
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                g.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
                let _ = write!(r.into_inner(), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        (url, got)
    }

    #[test]
    fn unacknowledged_alerts_escalate_and_the_rate_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_got) = listener();
        let (second, second_got) = listener();
        let cfg = validate(raw(&format!(
            "rate_limit_per_minute = 2\n[[channel]]\nname = \"first\"\nkind = \"webhook\"\nurl = \"{first}\"\n\
             [[channel]]\nname = \"second\"\nkind = \"webhook\"\nurl = \"{second}\"\nformat = \"slack\"\n\
             [[route]]\nchannels = [\"first\"]\nescalate_after_minutes = 0.005\nescalate_to = [\"second\"]\n"
        )))
        .unwrap();
        let feed = Arc::new(AlertFeed::new(100));
        let ack = dir.path().join("alerts.ack");
        let n = start(cfg, feed.clone(), ack.clone());
        let mut a = alert("syn_flood", Severity::High, AlertEvent::Open);
        a.id = "Aone".into();
        let mut b = alert("udp_flood", Severity::High, AlertEvent::Open);
        b.id = "Atwo".into();
        let mut c = alert("icmp_flood", Severity::High, AlertEvent::Open);
        c.id = "Athree".into();
        feed.push(&a);
        feed.push(&b);
        feed.push(&c);
        std::fs::write(&ack, "Atwo\n").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let stats = n.stats.clone();
        n.finish(Duration::from_secs(10));
        // Two a minute: the third is dropped, and counted.
        assert_eq!(first_got.lock().unwrap().len(), 2);
        assert_eq!(stats.rate_limited.load(Ordering::Relaxed), 1);
        // Not acknowledged within 0.3 s: escalated (the acknowledged one is not).
        let esc = second_got.lock().unwrap().clone();
        assert_eq!(esc.len(), 2, "{esc:?}");
        assert!(esc.iter().all(|e| e.contains("ESCALATED (not acknowledged)")));
        assert!(esc.iter().any(|e| e.contains("syn_flood")) && esc.iter().all(|e| !e.contains("udp_flood")));
    }

    /// New settings replace the notifier: an alert waiting for an
    /// acknowledgement keeps waiting under the new routes (escalated once,
    /// on time counted from when it opened), its first message is not sent
    /// again; with no escalating route left, nothing escalates.
    #[test]
    fn waiting_escalations_survive_new_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_got) = listener();
        let (second, second_got) = listener();
        let settings = |escalate: bool| {
            let route = if escalate {
                "[[route]]\nchannels = [\"first\"]\nescalate_after_minutes = 0.02\nescalate_to = [\"second\"]\n"
            } else {
                "[[route]]\nchannels = [\"first\"]\n"
            };
            validate(raw(&format!(
                "[[channel]]\nname = \"first\"\nkind = \"webhook\"\nurl = \"{first}\"\n\
                 [[channel]]\nname = \"second\"\nkind = \"webhook\"\nurl = \"{second}\"\nformat = \"slack\"\n{route}"
            )))
            .unwrap()
        };
        let feed = Arc::new(AlertFeed::new(100));
        let ack = dir.path().join("alerts.ack");
        let n = start(settings(true), feed.clone(), ack.clone());
        let mut a = alert("syn_flood", Severity::High, AlertEvent::Open);
        a.id = "Akept".into();
        feed.push(&a);
        // 1.2 s to escalate: 0.9 s pass under the first notifier (its
        // hand-over waits 0.3 s) and 0.9 s under the second, which must
        // count from the opening to escalate.
        std::thread::sleep(Duration::from_millis(600));
        let h = n.hand_over(Duration::from_secs(10));
        assert_eq!(h.waiting.len(), 1, "the alert still waits");
        assert_eq!(second_got.lock().unwrap().len(), 0, "not escalated yet");
        let n = start_at(settings(true), feed.clone(), ack.clone(), h);
        std::thread::sleep(Duration::from_millis(600));
        let h = n.hand_over(Duration::from_secs(10));
        assert!(h.waiting.is_empty());
        let esc = second_got.lock().unwrap().clone();
        assert_eq!(esc.len(), 1, "escalated once, by the new notifier: {esc:?}");
        assert!(esc[0].contains("ESCALATED (not acknowledged)") && esc[0].contains("syn_flood"), "{esc:?}");
        assert_eq!(first_got.lock().unwrap().len(), 1, "the first message is not sent again");
        // Settings without escalation: a waiting alert is let go.
        let mut b = alert("udp_flood", Severity::High, AlertEvent::Open);
        b.id = "Adropped".into();
        let n = start_at(settings(true), feed.clone(), ack.clone(), h);
        feed.push(&b);
        std::thread::sleep(Duration::from_millis(300));
        let h = n.hand_over(Duration::from_secs(10));
        assert_eq!(h.waiting.len(), 1);
        let n = start_at(settings(false), feed.clone(), ack.clone(), h);
        std::thread::sleep(Duration::from_millis(1500));
        assert!(n.hand_over(Duration::from_secs(10)).waiting.is_empty());
        assert_eq!(second_got.lock().unwrap().len(), 1, "no escalation without an escalating route");
    }

    #[test]
    fn events_that_left_the_feed_unread_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (url, got) = listener();
        let cfg = validate(raw(&format!(
            "[[channel]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"{url}\"\n[[route]]\nchannels = [\"h\"]\n"
        )))
        .unwrap();
        let feed = Arc::new(AlertFeed::new(2));
        for i in 0..5 {
            let mut a = alert("syn_flood", Severity::High, AlertEvent::Open);
            a.id = format!("A{i}");
            feed.push(&a);
        }
        let n = start(cfg, feed, dir.path().join("alerts.ack"));
        let stats = n.stats.clone();
        n.finish(Duration::from_secs(10));
        assert_eq!(stats.missed.load(Ordering::Relaxed), 3);
        assert_eq!(got.lock().unwrap().len(), 2, "the two the feed still held");
    }
}
