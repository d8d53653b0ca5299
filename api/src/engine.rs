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
