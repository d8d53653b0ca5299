//! Source → shard → workers → record sink.
//!
//! One reader (the calling thread) fills batches from a [`PacketSource`],
//! hashes every frame's flow symmetrically and appends its descriptor to the
//! batch of the owning worker. Full batches move to workers over bounded
//! single-producer channels (one send per batch, never per packet) and come
//! back empty for reuse. Workers own their flow tables and builders, and send
//! finished record batches to the output thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::decode::defrag::Defrag;
use crate::decode::{AnomalyCounters, DecodeConfig, Decoded, decode};

/// How long a live feeder gathers frames into a partly filled batch.
const LIVE_GATHER: Duration = Duration::from_millis(1);
/// Datagrams reassembled at once, per reassembler (64 KiB each).
const DEFRAG_SLOTS: usize = 64;
/// Fragments of a datagram must arrive within this time.
const DEFRAG_TIMEOUT_NS: u64 = 30_000_000_000;
use crate::flow::key::{quick_shard_hash, shard_hashes};
use crate::flow::{FlowConfig, FlowStats, FlowTracker};
use crate::records::{Output, Sinks, Table};
use crate::source::{Batch, Desc, FrameView, Layers, PacketSource, Region, SourceError, SourceStats};
use crate::stats::StatsAcc;

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub workers: usize,
    /// Frames per batch.
    pub batch_size: usize,
    /// Rows per record batch.
    pub record_batch_rows: usize,
    /// Flush partly filled record builders at least this often.
    pub flush_interval: Duration,
    pub decode: DecodeConfig,
    pub flow: FlowConfig,
    /// Pin workers to cores (worker i → core i+1 when there are enough).
    pub pin_cores: bool,
    /// Drop (and count) record batches when the sink falls behind, instead
    /// of waiting. On for live capture; off for files, where waiting loses nothing.
    pub drop_when_behind: bool,
    /// Batches queued per worker.
    pub queue_depth: usize,
    /// Seed of Community ID flow hashes.
    pub community_id_seed: u16,
    /// Cores for the workers, by worker (empty: core i+1 for worker i).
    pub worker_cores: Vec<usize>,
    /// Live capture: each RX thread runs its own worker on the frames it
    /// receives (no sharding hop). Correct only when every packet of a flow,
    /// both directions, arrives on the same source: one queue of one
    /// interface, or a NIC with a symmetric RSS hash.
    pub run_to_completion: bool,
    /// Capture filter per interface number (a missing entry or `None`: everything).
    pub filters: Vec<Option<Arc<crate::filter::Filter>>>,
    /// Timestamps are wall-clock time (live capture): idle workers advance
    /// their flow tables' clocks, so idle flows expire without new packets.
    pub live_clock: bool,
    /// Recording sessions to write packets for (see [`crate::record`]).
    pub recorder: Option<Arc<crate::record::RecordTap>>,
    /// Run the detectors (see [`crate::detect`]); alerts go to the sink as
    /// `alerts` batches.
    pub detect: Option<Arc<crate::detect::DetectSetup>>,
    /// GeoIP databases: flows get their endpoints' country and AS.
    pub geo: Option<Arc<crate::geo::Geo>>,
    /// WASM plugins (shard plugins run on the workers; they need `detect`,
    /// whose stage turns their findings into alerts).
    pub plugins: Option<crate::plugin::PluginSetup>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            batch_size: 256,
            record_batch_rows: 8192,
            flush_interval: Duration::from_secs(10),
            decode: DecodeConfig::default(),
            flow: FlowConfig::default(),
            pin_cores: false,
            drop_when_behind: false,
            queue_depth: 128,
            community_id_seed: 0,
            worker_cores: Vec::new(),
            run_to_completion: false,
            filters: Vec::new(),
            live_clock: false,
            recorder: None,
            detect: None,
            geo: None,
            plugins: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub source: SourceStats,
    pub packets: u64,
    pub bytes: u64,
    pub flows: FlowStats,
    pub anomalies: AnomalyCounters,
    pub non_ip: u64,
    /// Packets a capture filter rejected (not in `packets`).
    pub filtered: u64,
    pub records: u64,
    pub dropped_batches: u64,
    pub dropped_records: u64,
    pub rows_per_table: [u64; Table::COUNT],
    pub detect: crate::detect::DetectSummary,
    pub elapsed: Duration,
}

/// Shared progress counters, readable while a run is going.
#[derive(Debug, Default)]
pub struct Progress {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub position: AtomicU64,
}

/// One worker: decode, flows, protocols, records.
pub struct Worker {
    pub id: u16,
    decode_cfg: DecodeConfig,
    pub tracker: FlowTracker,
    pub sinks: Sinks,
    stats: StatsAcc,
    decoded: Decoded,
    defrag: Defrag,
    pub packets: u64,
    pub bytes: u64,
    pub non_ip: u64,
    /// Packets a capture filter rejected.
    pub filtered: u64,
    filters: Vec<Option<Arc<crate::filter::Filter>>>,
    batch_rows: usize,
    pub last_flush: Instant,
    flush_interval: Duration,
    record: crate::record::RecordShard,
    /// Where closed seconds go for detection (the aggregation stage).
    detect_tx: Option<Sender<crate::detect::WindowReport>>,
    /// Never wait on the aggregation stage (live capture): drop and count.
    detect_nowait: bool,
    pub detect_drops: u64,
}

impl Worker {
    pub fn new(id: u16, cfg: &PipelineConfig) -> Worker {
        Worker {
            id,
            decode_cfg: cfg.decode,
            tracker: FlowTracker::new(cfg.flow, id),
            sinks: {
                let mut s = Sinks::new(cfg.record_batch_rows);
                s.community_id_seed = cfg.community_id_seed;
                s.geo = cfg.geo.clone().map(crate::geo::GeoLookup::new);
                if cfg.detect.is_some()
                    && let Some(p) = &cfg.plugins
                {
                    s.plugins = Some(Box::new(crate::plugin::PluginRunner::new(
                        crate::plugin::Scope::Shard,
                        id,
                        p.tap.clone(),
                        p.stats.clone(),
                    )));
                }
                s
            },
            stats: StatsAcc::new(id),
            decoded: Decoded::default(),
            defrag: Defrag::new(DEFRAG_SLOTS, DEFRAG_TIMEOUT_NS),
            packets: 0,
            bytes: 0,
            non_ip: 0,
            filtered: 0,
            filters: cfg.filters.clone(),
            batch_rows: cfg.record_batch_rows.max(1),
            last_flush: Instant::now(),
            flush_interval: cfg.flush_interval,
            record: crate::record::RecordShard::new(id, cfg.recorder.clone()),
            detect_tx: None,
            detect_nowait: cfg.drop_when_behind,
            detect_drops: 0,
        }
    }

    /// Send this worker's closed seconds to the aggregation stage at `tx`
    /// (the worker keeps per-second conversation counters from now on).
    pub fn attach_detect(&mut self, tx: Sender<crate::detect::WindowReport>, max_convs: usize) {
        self.tracker.enable_windows(max_convs, &mut self.sinks);
        self.detect_tx = Some(tx);
    }

    fn send_windows(&mut self) {
        let Some(tx) = &self.detect_tx else { return };
        // A second passed: plugins get their batches, and what they raise
        // travels with the newest closed second.
        if let Some(p) = self.sinks.plugins.as_deref_mut()
            && let Some(last) = self.tracker.last_window_mut()
        {
            p.tick(last.sec.saturating_add(1).saturating_mul(1_000_000_000));
            last.findings.append(&mut p.findings);
        }
        for r in self.tracker.take_windows() {
            if self.detect_nowait {
                if tx.try_send(r).is_err() {
                    self.detect_drops += 1;
                }
            } else {
                let _ = tx.send(r);
            }
        }
    }

    /// The feeder's clock passed `ts` (no packet of ours needed to tell).
    pub fn clock(&mut self, ts: u64) {
        self.tracker.tick(ts, &mut self.sinks);
        self.send_windows();
    }

    /// Process every frame of a batch (frames are borrowed, never copied).
    pub fn process(&mut self, batch: &Batch) {
        const AHEAD: usize = 4;
        self.record.refresh();
        if let Some(p) = self.sinks.plugins.as_deref_mut() {
            p.refresh();
        }
        let view = batch.view();
        for (i, d) in batch.descs.iter().enumerate() {
            // The headers of the frame a few packets on, into this core's cache.
            if let Some(next) = batch.descs.get(i + AHEAD) {
                prefetch(view.frame(next));
            }
            let frame = view.frame(d);
            self.packet(d, frame);
        }
        self.record.end_batch();
        self.send_windows();
        if self.stats.rows() >= self.batch_rows {
            let b = self.stats.finish();
            self.sinks.ready.push((Table::Stats, b));
        }
        if self.last_flush.elapsed() >= self.flush_interval {
            self.flush_builders();
        }
    }

    #[inline]
    pub fn packet(&mut self, d: &Desc, frame: &[u8]) {
        decode(d.link, frame, &self.decode_cfg, &mut self.decoded);
        if let Some(Some(f)) = self.filters.get(d.iface as usize)
            && !f.matches(&self.decoded)
        {
            if d.layers != Layers::InnerOnly && !d.in_aux {
                self.filtered += 1;
            }
            return;
        }
        // A reassembled datagram was counted as its fragments; the inner
        // half of a split tunnel packet is counted by the outer half's worker.
        if d.layers != Layers::InnerOnly && !d.in_aux {
            self.packets += 1;
            self.bytes += d.wire_len as u64;
            self.stats.packet(d.ts_ns, d.iface, d.wire_len, &self.decoded);
            self.sinks.anomalies.record(self.decoded.anomalies);
            if self.decoded.non_ip {
                self.non_ip += 1;
            }
            // Recorded as captured: each wire packet once, by the worker
            // accounting its outer layer.
            if self.record.active() {
                self.record.packet(d, frame, &self.decoded);
            }
        }
        if d.layers == Layers::All && Defrag::wants(&self.decoded) {
            // Fragments reach a worker unreassembled only when there is no
            // sharding reader (one worker): reassemble here.
            let Worker { defrag, decoded, decode_cfg, tracker, sinks, .. } = self;
            if let Some(whole) = defrag.push(d.ts_ns, frame, decoded, &mut sinks.anomalies) {
                decode(d.link, whole, decode_cfg, decoded);
                tracker.packet(d, whole, decoded, sinks);
            }
            return;
        }
        self.tracker.packet(d, frame, &self.decoded, &mut self.sinks);
    }

    /// Move partly filled builders downstream.
    pub fn flush_builders(&mut self) {
        self.last_flush = Instant::now();
        self.record.refresh();
        self.record.flush();
        self.sinks.flush_all();
        if self.stats.rows() > 0 {
            let b = self.stats.finish();
            self.sinks.ready.push((Table::Stats, b));
        }
    }

    /// Advance the flow clock to the wall clock (live capture, no packets).
    pub fn tick_now(&mut self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        self.tracker.tick(now, &mut self.sinks);
        self.send_windows();
    }

    /// End of input: flush every flow and builder.
    pub fn finish(&mut self) {
        self.tracker.flush(&mut self.sinks);
        self.send_windows();
        self.stats.close_second();
        self.flush_builders();
        self.record.close_all();
    }
}

/// Pull the first two cache lines of `frame` (its headers) into the cache.
#[inline]
fn prefetch(frame: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    // Safety: prefetching is a hint and never faults; the addresses are
    // inside `frame` or one cache line past its start.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = frame.as_ptr() as *const i8;
        _mm_prefetch(p, _MM_HINT_T0);
        if frame.len() > 64 {
            _mm_prefetch(p.add(64), _MM_HINT_T0);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = frame;
}

enum Msg {
    Batch(Batch),
    /// The feeder's packet clock (ns): detection's seconds close by it even
    /// on a worker that got no packet.
    Clock(u64),
}

/// Workers and the output thread: what every kind of run starts.
struct Crew {
    txs: Vec<Sender<Msg>>,
    done: Vec<Arc<AtomicU64>>,
    /// One return channel per feeder (batches come back to where they were cut).
    rets: Vec<Receiver<Batch>>,
    handles: Vec<std::thread::JoinHandle<WorkerResult>>,
    out_thread: std::thread::JoinHandle<[u64; Table::COUNT]>,
    dropped_batches: Arc<AtomicU64>,
    dropped_records: Arc<AtomicU64>,
    detect: Option<crate::detect::DetectHandle>,
}

/// The output thread: every record batch goes through `sink` there.
fn start_output<F>(sink: F) -> (Sender<Vec<Output>>, std::thread::JoinHandle<[u64; Table::COUNT]>)
where
    F: FnMut(Output) + Send + 'static,
{
    let (out_tx, out_rx) = bounded::<Vec<Output>>(64);
    let mut sink = sink;
    let h = std::thread::Builder::new()
        .name("tapstream-out".into())
        .spawn(move || {
            let mut rows = [0u64; Table::COUNT];
            for v in out_rx {
                for (t, b) in v {
                    rows[t as usize] += b.num_rows() as u64;
                    sink((t, b));
                }
            }
            rows
        })
        .expect("spawn output thread");
    (out_tx, h)
}

/// Hand a worker's finished record batches to the output thread; when
/// `drop_when_behind`, a full queue costs the batches (counted) instead of a wait.
fn deliver(w: &mut Worker, out: &Sender<Vec<Output>>, drop_when_behind: bool, db: &AtomicU64, dr: &AtomicU64) {
    if w.sinks.ready.is_empty() {
        return;
    }
    let v = std::mem::take(&mut w.sinks.ready);
    if drop_when_behind {
        if let Err(TrySendError::Full(v)) = out.try_send(v) {
            db.fetch_add(v.len() as u64, Ordering::Relaxed);
            dr.fetch_add(v.iter().map(|(_, b)| b.num_rows() as u64).sum(), Ordering::Relaxed);
        }
    } else {
        let _ = out.send(v);
    }
}

fn start_crew<F>(cfg: &PipelineConfig, feeders: usize, sink: F) -> Crew
where
    F: FnMut(Output) + Send + 'static,
{
    let n = cfg.workers.max(1);
    let (out_tx, out_thread) = start_output(sink);
    let detect = cfg.detect.as_ref().map(|d| crate::detect::start(d.clone(), n, out_tx.clone()));
    let dropped_batches = Arc::new(AtomicU64::new(0));
    let dropped_records = Arc::new(AtomicU64::new(0));
    let mut txs: Vec<Sender<Msg>> = Vec::with_capacity(n);
    let done: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    // Every batch a feeder has cut fits in its return channel at once, so a
    // worker never waits to hand one back and no lent frame is lost.
    let (ret_txs, rets): (Vec<_>, Vec<_>) = (0..feeders).map(|_| bounded::<Batch>(n * (cfg.queue_depth + 3))).unzip();
    let mut handles = Vec::with_capacity(n);
    let cores = if cfg.pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    for i in 0..n {
        let (tx, rx) = bounded::<Msg>(cfg.queue_depth.max(1));
        txs.push(tx);
        let out_tx = out_tx.clone();
        let ret = ret_txs.clone();
        let wcfg = cfg.clone();
        let core = match cfg.worker_cores.get(i) {
            // Named cores are pinned as named: the calling thread's own set
            // may leave them out (housekeeping is kept off them).
            Some(&c) => Some(core_affinity::CoreId { id: c }),
            None if cores.len() > 1 => Some(cores[(i + 1) % cores.len()]),
            None => cores.first().copied(),
        };
        let dropped_b = dropped_batches.clone();
        let dropped_r = dropped_records.clone();
        let done_w = done[i].clone();
        let detect_tx = detect.as_ref().map(|d| d.tx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("tapstream-w{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    worker_loop(
                        i as u16,
                        &wcfg,
                        WorkerChannels { rx, ret, out: out_tx, done: done_w, detect: detect_tx },
                        dropped_b,
                        dropped_r,
                    )
                })
                .expect("spawn worker"),
        );
    }
    Crew { txs, done, rets, handles, out_thread, dropped_batches, dropped_records, detect }
}

impl Crew {
    /// Wait for the workers (their inputs must be closed) and the output thread.
    fn join(self, summary: &mut RunSummary) {
        let Crew { txs, handles, out_thread, dropped_batches, dropped_records, detect, .. } = self;
        drop(txs);
        let mut detect_drops = 0;
        for h in handles {
            if let Ok(w) = h.join() {
                detect_drops += w.detect_drops;
                summary.packets += w.packets;
                summary.bytes += w.bytes;
                summary.non_ip += w.non_ip;
                summary.filtered += w.filtered;
                summary.anomalies.merge(&w.anomalies);
                let f = w.flows;
                summary.flows.created += f.created;
                summary.flows.expired += f.expired;
                summary.flows.evicted += f.evicted;
                summary.flows.interim += f.interim;
            }
        }
        if let Some(d) = detect {
            summary.detect = d.join();
        }
        summary.detect.dropped_windows = detect_drops;
        if let Ok(rows) = out_thread.join() {
            summary.rows_per_table = rows;
            summary.records = rows.iter().sum();
        }
        summary.dropped_batches = dropped_batches.load(Ordering::Relaxed);
        summary.dropped_records = dropped_records.load(Ordering::Relaxed);
    }
}

/// Live counters of one feeder (one RX queue, or the file reader), updated
/// once per batch and readable while the run goes.
#[derive(Debug, Default)]
pub struct FeedStatus {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Packets dropped because the owning worker's queue was full.
    pub worker_drops: AtomicU64,
    pub batches: AtomicU64,
    /// The kernel's losses for this source (ring full, no free frame),
    /// refreshed about once a second.
    pub kernel_drops: AtomicU64,
    /// Set once the feeder's thread runs, on its core if it has one (a
    /// live capture is ready when every feeder's is).
    pub running: AtomicBool,
}

/// Refresh a feeder's kernel-side counters at most once a second.
fn refresh_kernel(source: &dyn PacketSource, status: &FeedStatus, last: &mut Instant) {
    if last.elapsed() < Duration::from_secs(1) {
        return;
    }
    *last = Instant::now();
    if let Some(c) = source.capture_stats() {
        status.kernel_drops.store(c.rx_dropped + c.rx_ring_full, Ordering::Relaxed);
    }
}

/// What one feeder did, at the end of a live run.
#[derive(Clone, Debug)]
pub struct FeedReport {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub worker_drops: u64,
    /// Receive batches (non-empty fills) and their size distribution.
    pub batches: u64,
    pub batch_p50: u64,
    pub batch_p99: u64,
    pub batch_max: u64,
    /// Deepest any worker queue was seen when this feeder handed it a batch.
    pub max_worker_queue: usize,
    pub capture: Option<crate::source::CaptureStats>,
}

/// How many frames ahead of the one it shards the reader prefetches headers.
const SHARD_AHEAD: usize = 6;

/// Read `source` and shard it over the workers until it ends, fails, or
/// `stop` is set. Returns the source's error, if any.
fn feed(
    source: &mut dyn PacketSource,
    sh: &mut Sharder<'_>,
    stop: &AtomicBool,
    progress: &Progress,
    status: &FeedStatus,
    hist: &mut hdrhistogram::Histogram<u64>,
) -> Option<SourceError> {
    let cfg = sh.cfg;
    let n = sh.per.len();
    let live = sh.live;
    let mut src_batch = Batch::with_capacity(cfg.batch_size);
    let mut decoded = Decoded::default();
    let mut defrag = Defrag::new(DEFRAG_SLOTS, DEFRAG_TIMEOUT_NS);
    let mut err = None;
    let mut last_kernel = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if live {
            refresh_kernel(source, status, &mut last_kernel);
        }
        sh.reclaim(source);
        src_batch.clear();
        let got = match source.fill(&mut src_batch, cfg.batch_size) {
            Ok(0) if live => {
                sh.send_all();
                continue;
            }
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => {
                err = Some(e);
                // frames already in the batch are good: deliver them
                src_batch.descs.len()
            }
        };
        let _ = hist.record(got as u64);
        let region = match std::mem::take(&mut src_batch.region) {
            Region::Owned(v) => Region::Shared(Arc::new(v)),
            r => r,
        };
        let mut bytes = 0u64;
        // A file's map is looked up once per batch, not once per frame
        // (sources never put frames in a batch's aux).
        let view = FrameView::of_region(&region);
        for (i, d) in src_batch.descs.iter().enumerate() {
            bytes += d.wire_len as u64;
            if n == 1 {
                sh.push(0, &region, *d);
                continue;
            }
            // Sharding reads each frame's headers: start loading them a few frames on.
            if let Some(next) = src_batch.descs.get(i + SHARD_AHEAD) {
                prefetch(view.frame(next));
            }
            let frame = view.frame(d);
            // Most frames are one plain TCP or UDP flow: hash them from their
            // bytes; decode only the others. (One hash for both layers: one
            // descriptor, straight to its worker.)
            if let Some(h) = quick_shard_hash(d.link, frame, &cfg.decode, cfg.flow.vlan_in_key) {
                sh.push(sh.worker_of(h), &region, Desc { layers: Layers::All, ..*d });
                continue;
            }
            decode(d.link, frame, &cfg.decode, &mut decoded);
            if Defrag::wants(&decoded) {
                // Fragments lack ports: the reader reassembles, then shards the whole datagram.
                let (ho, _) = shard_hashes(&decoded, cfg.flow.vlan_in_key).unwrap_or((0, 0));
                sh.push(sh.worker_of(ho), &region, Desc { layers: Layers::StatsOnly, ..*d });
                if let Some(whole) = defrag.push(d.ts_ns, frame, &decoded, &mut sh.anomalies) {
                    decode(d.link, whole, &cfg.decode, &mut decoded);
                    let hashes = shard_hashes(&decoded, cfg.flow.vlan_in_key).unwrap_or((0, 0));
                    sh.push_split(hashes, &region, *d, Some(whole));
                }
                continue;
            }
            let hashes = shard_hashes(&decoded, cfg.flow.vlan_in_key).unwrap_or((0, 0));
            sh.push_split(hashes, &region, *d, None);
        }
        if cfg.detect.is_some()
            && let Some(ts) = src_batch.descs.iter().map(|d| d.ts_ns).max()
        {
            sh.clock(ts);
        }
        // Hand partial batches over so workers never wait on a slow source.
        // A live source trickles a few frames per fill at moderate rates:
        // gather them for up to a millisecond, so a worker queue holds
        // batches, not single packets.
        if !live || sh.last_send.elapsed() >= LIVE_GATHER {
            sh.send_all();
        }
        status.packets.fetch_add(got as u64, Ordering::Relaxed);
        status.bytes.fetch_add(bytes, Ordering::Relaxed);
        status.batches.fetch_add(1, Ordering::Relaxed);
        status.worker_drops.store(sh.worker_drops, Ordering::Relaxed);
        let st = source.stats();
        progress.packets.store(st.packets, Ordering::Relaxed);
        progress.bytes.store(st.bytes, Ordering::Relaxed);
        progress.position.store(st.position, Ordering::Relaxed);
        if !live {
            source.release(sh.lowest_pending(st.position));
        }
        if err.is_some() {
            break;
        }
    }
    sh.reclaim(source);
    err
}

/// If `tx` is full, sleep until at most half of it is queued. Gives up
/// (the caller's `send` then blocks as usual) when the queue has not moved
/// for `patience`: a worker that is gone or stuck.
fn wait_for_room<T>(tx: &Sender<T>, patience: Duration) {
    const NAP: Duration = Duration::from_micros(500);
    let Some(cap) = tx.capacity() else { return };
    let mut last = tx.len();
    if last < cap {
        return;
    }
    let naps = patience.as_micros() / NAP.as_micros();
    let mut still = 0;
    while last > cap / 2 && still < naps {
        std::thread::sleep(NAP);
        let now = tx.len();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

fn batch_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 1 << 16, 2).expect("static histogram bounds")
}

/// Run a source to its end through the pipeline. `sink` receives every
/// record batch on a separate thread. `stop` ends the run early (flows are
/// still flushed). Returns the summary, or the source's error after all
/// records before the bad spot have been written.
pub fn run<S, F>(
    mut source: S,
    cfg: &PipelineConfig,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    sink: F,
) -> (RunSummary, Option<SourceError>)
where
    S: PacketSource,
    F: FnMut(Output) + Send + 'static,
{
    let start = Instant::now();
    let mut crew = start_crew(cfg, 1, sink);
    let ret = crew.rets.pop().expect("one feeder");
    let mut sh = Sharder::new(cfg, 0, source.is_live(), crew.txs.clone(), ret, crew.done.clone());
    let status = FeedStatus::default();
    let err = feed(&mut source, &mut sh, &stop, &progress, &status, &mut batch_histogram());
    let anomalies = std::mem::take(&mut sh.anomalies);
    drop(sh);
    let mut summary = RunSummary { source: source.stats(), ..RunSummary::default() };
    summary.anomalies.merge(&anomalies);
    crew.join(&mut summary);
    summary.elapsed = start.elapsed();
    (summary, err)
}

/// What a live run did: the pipeline summary plus one report per feeder.
#[derive(Clone, Debug, Default)]
pub struct LiveSummary {
    pub run: RunSummary,
    pub feeds: Vec<FeedReport>,
}

/// Run live sources (one RX thread each, pinned to `rx_cores[i]` when
/// given) through the workers until `stop` is set. A full worker queue never
/// blocks an RX thread: the batch is dropped, its frames go straight back
/// to the source, and the packets are counted in `worker_drops`.
/// `status` (one per source) can be read while the run goes.
pub fn run_live<F>(
    sources: Vec<Box<dyn PacketSource>>,
    cfg: &PipelineConfig,
    rx_cores: &[usize],
    stop: Arc<AtomicBool>,
    status: Vec<Arc<FeedStatus>>,
    sink: F,
) -> LiveSummary
where
    F: FnMut(Output) + Send + 'static,
{
    let start = Instant::now();
    let k = sources.len();
    if cfg.run_to_completion || (k == 1 && cfg.workers <= 1) {
        return run_inline(sources, cfg, rx_cores, stop, status, sink, start);
    }
    let mut crew = start_crew(cfg, k, sink);
    let rets = std::mem::take(&mut crew.rets);
    let mut rx_threads = Vec::with_capacity(k);
    for (i, ((mut source, ret), st)) in sources.into_iter().zip(rets).zip(status).enumerate() {
        let cfg = cfg.clone();
        let txs = crew.txs.clone();
        let done = crew.done.clone();
        let stop = stop.clone();
        let core = rx_cores.get(i).map(|&c| core_affinity::CoreId { id: c });
        let name = source.name().to_string();
        rx_threads.push(
            std::thread::Builder::new()
                .name(format!("tapstream-rx{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    st.running.store(true, Ordering::Release);
                    let mut sh = Sharder::new(&cfg, i as u16, source.is_live(), txs, ret, done);
                    let mut hist = batch_histogram();
                    let progress = Progress::default();
                    let err = feed(source.as_mut(), &mut sh, &stop, &progress, &st, &mut hist);
                    let report = FeedReport {
                        name,
                        packets: st.packets.load(Ordering::Relaxed),
                        bytes: st.bytes.load(Ordering::Relaxed),
                        worker_drops: sh.worker_drops,
                        batches: hist.len(),
                        batch_p50: hist.value_at_quantile(0.5),
                        batch_p99: hist.value_at_quantile(0.99),
                        batch_max: hist.max(),
                        max_worker_queue: sh.max_queue,
                        capture: source.capture_stats(),
                    };
                    let anomalies = std::mem::take(&mut sh.anomalies);
                    drop(sh);
                    (report, anomalies, source.stats(), err)
                })
                .expect("spawn RX thread"),
        );
    }
    let mut summary = LiveSummary::default();
    let mut anomalies = AnomalyCounters::default();
    for h in rx_threads {
        if let Ok((report, a, st, err)) = h.join() {
            if let Some(e) = err {
                tracing::error!("{}: {e}", report.name);
            }
            anomalies.merge(&a);
            summary.run.source.packets += st.packets;
            summary.run.source.bytes += st.bytes;
            summary.feeds.push(report);
        }
    }
    summary.run.anomalies.merge(&anomalies);
    crew.join(&mut summary.run);
    summary.run.elapsed = start.elapsed();
    summary
}

/// Run to completion: each RX thread decodes and tracks the flows of the
/// frames it receives itself, then hands the frames straight back.
fn run_inline<F>(
    sources: Vec<Box<dyn PacketSource>>,
    cfg: &PipelineConfig,
    rx_cores: &[usize],
    stop: Arc<AtomicBool>,
    status: Vec<Arc<FeedStatus>>,
    sink: F,
    start: Instant,
) -> LiveSummary
where
    F: FnMut(Output) + Send + 'static,
{
    let (out_tx, out_thread) = start_output(sink);
    let detect = cfg.detect.as_ref().map(|d| crate::detect::start(d.clone(), sources.len(), out_tx.clone()));
    let dropped_batches = Arc::new(AtomicU64::new(0));
    let dropped_records = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::with_capacity(sources.len());
    for (i, (mut source, st)) in sources.into_iter().zip(status).enumerate() {
        let cfg = cfg.clone();
        let stop = stop.clone();
        let out = out_tx.clone();
        let (db, dr) = (dropped_batches.clone(), dropped_records.clone());
        let core = rx_cores.get(i).map(|&c| core_affinity::CoreId { id: c });
        let detect_tx = detect.as_ref().map(|d| d.tx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("tapstream-rx{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    st.running.store(true, Ordering::Release);
                    let mut w = Worker::new(i as u16, &cfg);
                    if let (Some(tx), Some(d)) = (detect_tx, &cfg.detect) {
                        w.attach_detect(tx, d.cfg.max_convs);
                    }
                    let mut last_tick = Instant::now();
                    let mut batch = Batch::with_capacity(cfg.batch_size);
                    let mut hist = batch_histogram();
                    let mut last_kernel = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        refresh_kernel(source.as_ref(), &st, &mut last_kernel);
                        batch.clear();
                        let got = source.fill(&mut batch, cfg.batch_size).unwrap_or(0);
                        if got == 0 {
                            // Sessions stopped while the link is quiet close
                            // their files now, not at the next packet.
                            w.record.refresh();
                            if w.last_flush.elapsed() >= cfg.flush_interval {
                                w.tick_now();
                                w.flush_builders();
                            } else if cfg.detect.is_some() && last_tick.elapsed() >= Duration::from_millis(250) {
                                last_tick = Instant::now();
                                w.tick_now();
                            }
                        } else {
                            let _ = hist.record(got as u64);
                            w.process(&batch);
                            source.recycle(&batch);
                            st.packets.fetch_add(got as u64, Ordering::Relaxed);
                            st.bytes.fetch_add(batch.descs.iter().map(|d| d.wire_len as u64).sum(), Ordering::Relaxed);
                            st.batches.fetch_add(1, Ordering::Relaxed);
                        }
                        deliver(&mut w, &out, cfg.drop_when_behind, &db, &dr);
                    }
                    w.finish();
                    deliver(&mut w, &out, cfg.drop_when_behind, &db, &dr);
                    let report = FeedReport {
                        name: source.name().to_string(),
                        packets: st.packets.load(Ordering::Relaxed),
                        bytes: st.bytes.load(Ordering::Relaxed),
                        worker_drops: 0,
                        batches: hist.len(),
                        batch_p50: hist.value_at_quantile(0.5),
                        batch_p99: hist.value_at_quantile(0.99),
                        batch_max: hist.max(),
                        max_worker_queue: 0,
                        capture: source.capture_stats(),
                    };
                    let r = WorkerResult {
                        detect_drops: w.detect_drops,
                        filtered: w.filtered,
                        packets: w.packets,
                        bytes: w.bytes,
                        non_ip: w.non_ip,
                        anomalies: w.sinks.anomalies.clone(),
                        flows: w.tracker.stats,
                    };
                    (report, r, source.stats())
                })
                .expect("spawn RX thread"),
        );
    }
    drop(out_tx);
    let mut summary = LiveSummary::default();
    let mut detect_drops = 0;
    for h in threads {
        if let Ok((report, w, st)) = h.join() {
            detect_drops += w.detect_drops;
            summary.run.source.packets += st.packets;
            summary.run.source.bytes += st.bytes;
            summary.run.packets += w.packets;
            summary.run.bytes += w.bytes;
            summary.run.non_ip += w.non_ip;
            summary.run.filtered += w.filtered;
            summary.run.anomalies.merge(&w.anomalies);
            summary.run.flows.created += w.flows.created;
            summary.run.flows.expired += w.flows.expired;
            summary.run.flows.evicted += w.flows.evicted;
            summary.run.flows.interim += w.flows.interim;
            summary.feeds.push(report);
        }
    }
    if let Some(d) = detect {
        summary.run.detect = d.join();
    }
    summary.run.detect.dropped_windows = detect_drops;
    if let Ok(rows) = out_thread.join() {
        summary.run.rows_per_table = rows;
        summary.run.records = rows.iter().sum();
    }
    summary.run.dropped_batches = dropped_batches.load(Ordering::Relaxed);
    summary.run.dropped_records = dropped_records.load(Ordering::Relaxed);
    summary.run.elapsed = start.elapsed();
    summary
}

/// The worker, of `workers`, that owns a flow hash: the hash scaled to
/// 0..workers by a multiplication (its high bits are as well mixed as its
/// low ones). A division per packet cost more than hashing the key.
#[inline]
fn shard_of(hash: u64, workers: usize) -> usize {
    ((hash as u128 * workers as u128) >> 64) as usize
}

fn src_batch_frame<'a>(region: &'a Region, d: &Desc) -> &'a [u8] {
    region.slice(d.offset as usize, d.caplen as usize)
}

/// The reader's side of sharding: one batch being filled per worker, the
/// channels to the workers, and what each worker still has to process (so
/// the source can release memory behind the slowest one).
struct Sharder<'c> {
    cfg: &'c PipelineConfig,
    /// Which feeder this is (workers return batches to `origin`).
    origin: u16,
    /// Live source: never wait on a worker; frames are lent (each must be in
    /// exactly one batch).
    live: bool,
    per: Vec<Batch>,
    txs: Vec<Sender<Msg>>,
    ret: Receiver<Batch>,
    /// Empty batches ready for reuse, and batches a full worker queue refused.
    pool: Vec<Batch>,
    refused: Vec<Batch>,
    /// Batches each worker has finished (written by the worker).
    done: Vec<Arc<AtomicU64>>,
    /// Batches sent to each worker, and (sequence, lowest region offset) of those not yet done.
    sent: Vec<u64>,
    pending: Vec<std::collections::VecDeque<(u64, u64)>>,
    /// Packets dropped because their worker's queue was full.
    worker_drops: u64,
    max_queue: usize,
    anomalies: AnomalyCounters,
    last_send: Instant,
    /// The second of the latest packet (detection's clock).
    clock_sec: u64,
}

impl<'c> Sharder<'c> {
    fn new(
        cfg: &'c PipelineConfig,
        origin: u16,
        live: bool,
        txs: Vec<Sender<Msg>>,
        ret: Receiver<Batch>,
        done: Vec<Arc<AtomicU64>>,
    ) -> Self {
        let n = txs.len();
        let fresh = || {
            let mut b = Batch::with_capacity(cfg.batch_size);
            b.origin = origin;
            b
        };
        Sharder {
            cfg,
            origin,
            live,
            per: (0..n).map(|_| fresh()).collect(),
            txs,
            ret,
            pool: Vec::new(),
            refused: Vec::new(),
            done,
            sent: vec![0; n],
            pending: (0..n).map(|_| std::collections::VecDeque::with_capacity(cfg.queue_depth + 2)).collect(),
            worker_drops: 0,
            max_queue: 0,
            anomalies: AnomalyCounters::default(),
            last_send: Instant::now(),
            clock_sec: 0,
        }
    }

    /// The packets have reached `ts`: when that starts a new second, hand
    /// every worker what it has so far and then the time, so every worker
    /// closes the second before it (detection waits for all of them).
    fn clock(&mut self, ts: u64) {
        let sec = ts / 1_000_000_000;
        if sec <= self.clock_sec {
            return;
        }
        self.clock_sec = sec;
        self.send_all();
        for tx in &self.txs {
            if self.live {
                let _ = tx.try_send(Msg::Clock(ts));
            } else {
                let _ = tx.send(Msg::Clock(ts));
            }
        }
    }

    /// Take back batches the workers finished (and ones they refused): their
    /// frames go back to the source, the batches into the pool.
    fn reclaim(&mut self, source: &mut dyn PacketSource) {
        while let Ok(mut b) = self.ret.try_recv() {
            source.recycle(&b);
            b.clear();
            self.pool.push(b);
        }
        for mut b in self.refused.drain(..) {
            source.recycle(&b);
            b.clear();
            self.pool.push(b);
        }
    }

    #[inline]
    fn worker_of(&self, hash: u64) -> usize {
        shard_of(hash, self.per.len())
    }

    /// Queue a packet for the workers owning its outer and inner flows: one
    /// descriptor when they are the same worker, else one for each layer.
    /// `rebuilt` carries the bytes of a reassembled datagram.
    fn push_split(&mut self, (ho, hi): (u64, u64), region: &Region, d: Desc, rebuilt: Option<&[u8]>) {
        let (wo, wi) = (self.worker_of(ho), self.worker_of(hi));
        let parts: &[(usize, Layers)] =
            if wo == wi { &[(wo, Layers::All)] } else { &[(wo, Layers::OuterOnly), (wi, Layers::InnerOnly)] };
        for (k, &(w, layers)) in parts.iter().enumerate() {
            let d = Desc { layers, ..d };
            // A lent frame may sit in one batch only: the second half of a
            // split gets a copy.
            let bytes = match rebuilt {
                Some(b) => Some(b),
                None if self.live && k > 0 => Some(src_batch_frame(region, &d)),
                None => None,
            };
            match bytes {
                None => self.push(w, region, d),
                Some(bytes) => {
                    let b = &mut self.per[w];
                    let offset = b.aux.len() as u64;
                    b.aux.extend_from_slice(bytes);
                    let len = bytes.len() as u32;
                    let wire_len = if rebuilt.is_some() { len } else { d.wire_len };
                    self.push(w, region, Desc { offset, caplen: len, wire_len, in_aux: true, ..d });
                }
            }
        }
    }

    #[inline]
    fn push(&mut self, w: usize, region: &Region, d: Desc) {
        let b = &mut self.per[w];
        if b.descs.is_empty() {
            b.region = region.clone();
        }
        b.descs.push(d);
        if b.descs.len() >= self.cfg.batch_size {
            self.send(w);
        }
    }

    fn send_all(&mut self) {
        self.last_send = Instant::now();
        for w in 0..self.per.len() {
            if !self.per[w].is_empty() {
                self.send(w);
            }
        }
    }

    fn send(&mut self, w: usize) {
        let mut fresh = self.pool.pop().unwrap_or_else(|| Batch::with_capacity(self.cfg.batch_size));
        fresh.origin = self.origin;
        let full = std::mem::replace(&mut self.per[w], fresh);
        if self.live {
            self.max_queue = self.max_queue.max(self.txs[w].len());
            // Never wait on a worker: a full queue costs this batch, counted.
            if let Err(TrySendError::Full(Msg::Batch(b)) | TrySendError::Disconnected(Msg::Batch(b))) =
                self.txs[w].try_send(Msg::Batch(full))
            {
                self.worker_drops +=
                    b.descs.iter().filter(|d| !d.in_aux && d.layers != Layers::InnerOnly).count() as u64;
                self.refused.push(b);
            }
            return;
        }
        let low = full.descs.iter().find(|d| !d.in_aux).map_or(u64::MAX, |d| d.offset);
        self.sent[w] += 1;
        self.pending[w].push_back((self.sent[w], low));
        // Files: wait for the worker. A full queue is waited out asleep
        // until half of it is drained: blocked in `send`, this thread would
        // be woken by the worker after every batch it takes, a futex call
        // per batch on the busiest core. The other workers do not starve
        // meanwhile: a nap is half a millisecond and a queue holds
        // `queue_depth` batches.
        wait_for_room(&self.txs[w], Duration::from_millis(100));
        let _ = self.txs[w].send(Msg::Batch(full));
    }

    /// The lowest region offset some worker has yet to process (`pos` when none).
    fn lowest_pending(&mut self, pos: u64) -> u64 {
        let mut low = pos;
        for w in 0..self.per.len() {
            let done = self.done[w].load(Ordering::Acquire);
            while self.pending[w].front().is_some_and(|&(seq, _)| seq <= done) {
                self.pending[w].pop_front();
            }
            if let Some(&(_, off)) = self.pending[w].front() {
                low = low.min(off);
            }
        }
        low
    }
}

struct WorkerResult {
    detect_drops: u64,
    filtered: u64,
    packets: u64,
    bytes: u64,
    non_ip: u64,
    anomalies: AnomalyCounters,
    flows: FlowStats,
}

struct WorkerChannels {
    rx: Receiver<Msg>,
    /// Return channels, by batch origin.
    ret: Vec<Sender<Batch>>,
    out: Sender<Vec<Output>>,
    /// Batches finished, for the reader's memory release.
    done: Arc<AtomicU64>,
    /// The aggregation stage, when detection runs.
    detect: Option<Sender<crate::detect::WindowReport>>,
}

fn worker_loop(
    id: u16,
    cfg: &PipelineConfig,
    ch: WorkerChannels,
    dropped_batches: Arc<AtomicU64>,
    dropped_records: Arc<AtomicU64>,
) -> WorkerResult {
    let WorkerChannels { rx, ret, out, done, detect } = ch;
    let mut w = Worker::new(id, cfg);
    if let (Some(tx), Some(d)) = (detect, &cfg.detect) {
        w.attach_detect(tx, d.cfg.max_convs);
    }
    // Wake at least once per flush interval, so records reach the sink on
    // time even when no packets arrive, and twice a second, so a recording
    // session stopped on a quiet link closes its files; with detection on a
    // live clock, four times a second, so an idle worker's seconds still close.
    let wake = if cfg.detect.is_some() && cfg.live_clock {
        cfg.flush_interval.min(Duration::from_millis(250))
    } else {
        cfg.flush_interval.min(Duration::from_millis(500))
    };
    loop {
        match rx.recv_timeout(wake) {
            Ok(Msg::Batch(b)) => {
                w.process(&b);
                done.fetch_add(1, Ordering::Release);
                // Back to its feeder, frames and all (a live source takes
                // them back). The channel holds every batch there is.
                if let Some(r) = ret.get(b.origin as usize) {
                    let _ = r.send(b);
                }
            }
            Ok(Msg::Clock(ts)) => w.clock(ts),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                w.record.refresh();
                if cfg.live_clock {
                    w.tick_now();
                }
                if w.last_flush.elapsed() >= cfg.flush_interval {
                    w.flush_builders()
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        deliver(&mut w, &out, cfg.drop_when_behind, &dropped_batches, &dropped_records);
    }
    w.finish();
    deliver(&mut w, &out, cfg.drop_when_behind, &dropped_batches, &dropped_records);
    WorkerResult {
        detect_drops: w.detect_drops,
        filtered: w.filtered,
        packets: w.packets,
        bytes: w.bytes,
        non_ip: w.non_ip,
        anomalies: w.sinks.anomalies.clone(),
        flows: w.tracker.stats,
    }
}

#[cfg(test)]
mod tests {
    use super::{PipelineConfig, Progress, run, shard_of, wait_for_room};
    use crate::flow::key::FlowKey;
    use crate::source::{SynthConfig, SynthSource};
    use crossbeam_channel::bounded;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn flow_hashes_spread_evenly_over_every_worker() {
        for workers in 1..=8 {
            assert_eq!(shard_of(0, workers), 0);
            assert_eq!(shard_of(u64::MAX, workers), workers - 1);
            let mut counts = vec![0u32; workers];
            // Real flow hashes: one per key, ports counting up.
            for port in 0..40_000u16 {
                let key = FlowKey {
                    lo: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    hi: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    lo_port: port,
                    hi_port: 443,
                    proto: 6,
                    v6: false,
                    vlan: 0,
                };
                counts[shard_of(key.hash64(), workers)] += 1;
            }
            let even = 40_000 / workers as u32;
            for (w, &c) in counts.iter().enumerate() {
                assert!(c.abs_diff(even) < even / 20, "{workers} workers: worker {w} got {c} of 40000");
            }
        }
    }

    /// Several workers behind queues of one small batch: the reader waits
    /// for each in turn and every packet and flow is counted once, as with
    /// one worker.
    #[test]
    fn many_workers_behind_tiny_queues_lose_nothing() {
        let go = |workers, queue_depth, batch_size| {
            let cfg = PipelineConfig { workers, queue_depth, batch_size, ..PipelineConfig::default() };
            let src = SynthSource::new(SynthConfig { seed: 3, packets: 20_000, ..SynthConfig::default() });
            let (summary, err) =
                run(src, &cfg, Arc::new(AtomicBool::new(false)), Arc::new(Progress::default()), |_| {});
            assert!(err.is_none());
            summary
        };
        let one = go(1, 128, 256);
        assert_eq!(one.packets, 20_000);
        for workers in [2, 3, 5] {
            let many = go(workers, 1, 8);
            assert_eq!((many.packets, many.bytes), (one.packets, one.bytes), "{workers} workers");
            assert_eq!(many.flows.created, one.flows.created, "{workers} workers");
            // Every record table but `stats`, which has a row per worker and second.
            assert_eq!(many.rows_per_table[..5], one.rows_per_table[..5], "{workers} workers");
        }
    }

    #[test]
    fn a_full_queue_is_waited_out_until_half_drained() {
        let (tx, rx) = bounded::<u32>(8);
        // Room: no wait.
        tx.send(0).unwrap();
        wait_for_room(&tx, Duration::from_secs(60));
        assert_eq!(tx.len(), 1);
        for i in 1..8 {
            tx.send(i).unwrap();
        }
        let taker = std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..8 {
                std::thread::sleep(Duration::from_millis(2));
                got.push(rx.recv().unwrap());
            }
            got
        });
        // Patience far beyond the taker's pace: only half-drained returns.
        wait_for_room(&tx, Duration::from_secs(60));
        assert!(tx.len() <= 4, "returned with {} of 8 queued", tx.len());
        assert_eq!(taker.join().unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_queue_nobody_drains_is_given_up_on() {
        let (tx, rx) = bounded::<u32>(4);
        for i in 0..4 {
            tx.send(i).unwrap();
        }
        drop(rx);
        let (done_tx, done) = bounded(1);
        std::thread::spawn(move || {
            wait_for_room(&tx, Duration::from_millis(100));
            done_tx.send(tx.len()).unwrap();
        });
        // Gone receiver: the wait ends (the caller's send then errors).
        assert_eq!(done.recv_timeout(Duration::from_secs(10)).unwrap(), 4);
    }
}
