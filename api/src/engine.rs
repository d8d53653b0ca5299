//! What the server sees of the running engine: counters it reads (never
//! writes) and the alert feed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use tapstream_engine::detect::AlertFeed;
use tapstream_engine::pipeline::{FeedStatus, Progress};

/// One capture queue (or the demo generator) as the engine publishes it.
#[derive(Clone)]
pub struct Feed {
    pub interface: String,
    pub queue: String,
    /// Capture mode (`xdp-zerocopy`, `xdp-copy`, `af-packet`, `demo`).
    pub mode: String,
    pub status: Arc<FeedStatus>,
}

/// The engine's handles, given to the server by whoever started the engine.
#[derive(Clone, Default)]
pub struct EngineLink {
    /// `demo`, `live`, or `none` (a server over history only).
    pub source: String,
    pub feeds: Vec<Feed>,
    /// Demo or file runs: packets and bytes read so far.
    pub progress: Option<Arc<Progress>>,
    pub alerts: Option<Arc<AlertFeed>>,
    pub geo: Option<Arc<tapstream_engine::geo::Geo>>,
    /// The history writer the engine writes through: imports go through
    /// it too, so they share its hour claims with retention and compaction.
    pub writer: Option<tapstream_query::SharedWriter>,
    /// Settings for analysing uploaded captures into the history (no
    /// detection, recording or plugins: those belong to live traffic).
    pub import_pipeline: Option<tapstream_engine::pipeline::PipelineConfig>,
    /// The retention policy the background sweep follows (changed by
    /// `/api/settings/retention`).
    pub retention: Option<Arc<tapstream_query::retention::SharedPolicy>>,
    /// The running notifier (changed by `/api/settings/channels` and `…/routes`).
    pub notify: Option<Arc<dyn Notifications>>,
    /// Online reputation services detection asks (their counters).
    pub reputation: Vec<Arc<tapstream_engine::detect::reputation::Lookups>>,
}

/// A notification channel managed through the API. The password (mail)
/// and URL (webhooks carry tokens in them) are secrets: sealed at rest,
/// in clear only in memory, never answered.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// email, webhook or syslog.
    #[schemars(extend("enum" = ["email", "webhook", "syslog"]))]
    pub kind: String,
    /// email: SMTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    /// email: none, starttls (default) or tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["none", "starttls", "tls", null]))]
    pub security: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: the SMTP password (write-only; left out on a change keeps the stored one).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// webhook: the URL (write-only; left out on a change keeps the stored one).
    #[serde(default, skip_serializing)]
    pub url: Option<String>,
    /// webhook: json (default) or slack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["json", "slack", null]))]
    pub format: Option<String>,
    /// syslog: HOST:PORT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// syslog: udp (default) or tcp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["udp", "tcp", null]))]
    pub protocol: Option<String>,
}

/// Which alerts go to which channels (as `[[notify.route]]` in the config).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// info, low, medium, high or critical (default info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["info", "low", "medium", "high", "critical", null]))]
    pub min_severity: Option<String>,
    /// Only these rules (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// Only these categories (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    pub channels: Vec<String>,
    /// Also send when an alert closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_close: Option<bool>,
    /// Gather this many minutes of alerts into one message (0: each at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10080.0))]
    pub digest_minutes: Option<f64>,
    /// Not acknowledged within this many minutes: also send to `escalate_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10080.0))]
    pub escalate_after_minutes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<Vec<String>>,
}

/// The running notifier, as the API changes it (implemented where the
/// notifier lives, in the binary).
pub trait Notifications: Send + Sync {
    /// Check the API-managed channels and routes as the config file's are
    /// checked and, if they pass, deliver by them (with the file's) from
    /// now on. On an error nothing changes.
    fn apply(&self, channels: &[(String, ChannelSpec)], routes: &[RouteSpec]) -> Result<(), String>;
    /// The channels the config file defines (read-only through the API).
    fn file_channels(&self) -> Vec<String>;
    /// Send a test message through a channel now (blocking).
    fn test(&self, channel: &str) -> Result<(), String>;
    /// Send a generated report through a channel now (blocking): a mail
    /// carries the file attached; a webhook or syslog gets a notice.
    fn send_report(&self, channel: &str, report: &ReportMail) -> Result<(), String>;
}

/// A generated report on its way to a channel.
#[derive(Clone, Debug)]
pub struct ReportMail {
    pub subject: String,
    pub text: String,
    pub file_name: String,
    pub content_type: String,
    pub data: Vec<u8>,
    /// What a webhook receives: the report's id, kind, range and file.
    pub notice: serde_json::Value,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, schemars::JsonSchema)]
pub struct QueueStatus {
    pub queue: String,
    pub packets: u64,
    pub bytes: u64,
    /// Dropped because a worker fell behind.
    pub worker_drops: u64,
    /// Dropped by the kernel (ring full, no free frame).
    pub kernel_drops: u64,
    pub batches: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, schemars::JsonSchema)]
pub struct InterfaceStatus {
    pub name: String,
    pub mode: String,
    pub packets: u64,
    pub bytes: u64,
    pub worker_drops: u64,
    pub kernel_drops: u64,
    pub queues: Vec<QueueStatus>,
}

/// A snapshot of the engine's counters (totals since start).
#[derive(Clone, Debug, Default, Serialize, PartialEq, schemars::JsonSchema)]
pub struct EngineStatus {
    pub source: String,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub interfaces: Vec<InterfaceStatus>,
}

impl EngineLink {
    pub fn status(&self) -> EngineStatus {
        let mut s = EngineStatus { source: self.source.clone(), ..EngineStatus::default() };
        for f in &self.feeds {
            let q = QueueStatus {
                queue: f.queue.clone(),
                packets: f.status.packets.load(Ordering::Relaxed),
                bytes: f.status.bytes.load(Ordering::Relaxed),
                worker_drops: f.status.worker_drops.load(Ordering::Relaxed),
                kernel_drops: f.status.kernel_drops.load(Ordering::Relaxed),
                batches: f.status.batches.load(Ordering::Relaxed),
            };
            let i = match s.interfaces.iter_mut().position(|i| i.name == f.interface) {
                Some(i) => &mut s.interfaces[i],
                None => {
                    s.interfaces.push(InterfaceStatus {
                        name: f.interface.clone(),
                        mode: f.mode.clone(),
                        ..InterfaceStatus::default()
                    });
                    s.interfaces.last_mut().expect("just pushed")
                }
            };
            i.packets += q.packets;
            i.bytes += q.bytes;
            i.worker_drops += q.worker_drops;
            i.kernel_drops += q.kernel_drops;
            i.queues.push(q);
        }
        if let Some(p) = &self.progress {
            let (packets, bytes) = (p.packets.load(Ordering::Relaxed), p.bytes.load(Ordering::Relaxed));
            s.interfaces.push(InterfaceStatus {
                name: self.source.clone(),
                mode: "synthetic".into(),
                packets,
                bytes,
                queues: vec![QueueStatus {
                    queue: format!("{}:0", self.source),
                    packets,
                    bytes,
                    ..QueueStatus::default()
                }],
                ..InterfaceStatus::default()
            });
        }
        s.packets = s.interfaces.iter().map(|i| i.packets).sum();
        s.bytes = s.interfaces.iter().map(|i| i.bytes).sum();
        s.drops = s.interfaces.iter().map(|i| i.worker_drops + i.kernel_drops).sum();
        s
    }
}
