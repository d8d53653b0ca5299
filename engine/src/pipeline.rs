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

/// Datagrams reassembled at once, per reassembler (64 KiB each).
const DEFRAG_SLOTS: usize = 64;
/// Fragments of a datagram must arrive within this time.
const DEFRAG_TIMEOUT_NS: u64 = 30_000_000_000;
use crate::flow::key::shard_hashes;
use crate::flow::{FlowConfig, FlowStats, FlowTracker};
use crate::records::{Output, Sinks, Table};
use crate::source::{Batch, Desc, Layers, PacketSource, Region, SourceError, SourceStats};
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
            queue_depth: 16,
            community_id_seed: 0,
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
    pub records: u64,
    pub dropped_batches: u64,
    pub dropped_records: u64,
    pub rows_per_table: [u64; 6],
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
    batch_rows: usize,
    last_flush: Instant,
    flush_interval: Duration,
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
                s
            },
            stats: StatsAcc::new(id),
            decoded: Decoded::default(),
            defrag: Defrag::new(DEFRAG_SLOTS, DEFRAG_TIMEOUT_NS),
            packets: 0,
            bytes: 0,
            non_ip: 0,
            batch_rows: cfg.record_batch_rows.max(1),
            last_flush: Instant::now(),
            flush_interval: cfg.flush_interval,
        }
    }

    /// Process every frame of a batch (frames are borrowed, never copied).
    pub fn process(&mut self, batch: &Batch) {
        const AHEAD: usize = 4;
        for (i, d) in batch.descs.iter().enumerate() {
            // The headers of the frame a few packets on, into this core's cache.
            if let Some(next) = batch.descs.get(i + AHEAD) {
                prefetch(batch.frame(next));
            }
            let frame = batch.frame(d);
            self.packet(d, frame);
        }
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
        self.sinks.flush_all();
        if self.stats.rows() > 0 {
            let b = self.stats.finish();
            self.sinks.ready.push((Table::Stats, b));
        }
    }

    /// End of input: flush every flow and builder.
    pub fn finish(&mut self) {
        self.tracker.flush(&mut self.sinks);
        self.stats.close_second();
        self.flush_builders();
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
    let n = cfg.workers.max(1);
    let (out_tx, out_rx) = bounded::<Vec<Output>>(64);
    let dropped_batches = Arc::new(AtomicU64::new(0));
    let dropped_records = Arc::new(AtomicU64::new(0));
    let out_thread = {
        let mut sink = sink;
        std::thread::Builder::new()
            .name("tapstream-out".into())
            .spawn(move || {
                let mut rows = [0u64; 6];
                for v in out_rx {
                    for (t, b) in v {
                        rows[t as usize] += b.num_rows() as u64;
                        sink((t, b));
                    }
                }
                rows
            })
            .expect("spawn output thread")
    };

    let mut txs: Vec<Sender<Msg>> = Vec::with_capacity(n);
    let done: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (ret_tx, ret_rx) = bounded::<Batch>(n * (cfg.queue_depth + 2));
    let mut handles = Vec::with_capacity(n);
    let cores = if cfg.pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    for i in 0..n {
        let (tx, rx) = bounded::<Msg>(cfg.queue_depth.max(1));
        txs.push(tx);
        let out_tx = out_tx.clone();
        let ret_tx = ret_tx.clone();
        let wcfg = cfg.clone();
        let core = if cores.len() > 1 { Some(cores[(i + 1) % cores.len()]) } else { cores.first().copied() };
        let dropped_b = dropped_batches.clone();
        let dropped_r = dropped_records.clone();
        let done_w = done[i].clone();
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
                        WorkerChannels { rx, ret: ret_tx, out: out_tx, done: done_w },
                        dropped_b,
                        dropped_r,
                    )
                })
                .expect("spawn worker"),
        );
    }
    drop(out_tx);
    drop(ret_tx);

    // Reader.
    let mut sh = Sharder::new(cfg, txs, ret_rx, done.clone());
    let mut src_batch = Batch::with_capacity(cfg.batch_size);
    let mut decoded = Decoded::default();
    let mut defrag = Defrag::new(DEFRAG_SLOTS, DEFRAG_TIMEOUT_NS);
    let mut reader_anomalies = AnomalyCounters::default();
    let mut err = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        src_batch.clear();
        match source.fill(&mut src_batch, cfg.batch_size) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                // frames already in the batch are good: deliver them
            }
        }
        let region = match std::mem::take(&mut src_batch.region) {
            Region::Owned(v) => Region::Shared(Arc::new(v)),
            r => r,
        };
        for d in &src_batch.descs {
            if n == 1 {
                sh.push(0, &region, *d);
                continue;
            }
            let frame = src_batch_frame(&region, d);
            decode(d.link, frame, &cfg.decode, &mut decoded);
            if Defrag::wants(&decoded) {
                // Fragments lack ports: the reader reassembles, then shards the whole datagram.
                let (ho, _) = shard_hashes(&decoded, cfg.flow.vlan_in_key).unwrap_or((0, 0));
                sh.push(sh.worker_of(ho), &region, Desc { layers: Layers::StatsOnly, ..*d });
                if let Some(whole) = defrag.push(d.ts_ns, frame, &decoded, &mut reader_anomalies) {
                    decode(d.link, whole, &cfg.decode, &mut decoded);
                    let hashes = shard_hashes(&decoded, cfg.flow.vlan_in_key).unwrap_or((0, 0));
                    sh.push_split(hashes, &region, *d, Some(whole));
                }
                continue;
            }
            let hashes = shard_hashes(&decoded, cfg.flow.vlan_in_key).unwrap_or((0, 0));
            sh.push_split(hashes, &region, *d, None);
        }
        let st = source.stats();
        progress.packets.store(st.packets, Ordering::Relaxed);
        progress.bytes.store(st.bytes, Ordering::Relaxed);
        progress.position.store(st.position, Ordering::Relaxed);
        // Hand partial batches over so workers never wait on a slow source.
        sh.send_all();
        source.release(sh.lowest_pending(st.position));
        if err.is_some() {
            break;
        }
    }
    let Sharder { txs, .. } = sh;
    drop(txs);
    let mut summary = RunSummary { source: source.stats(), ..RunSummary::default() };
    summary.anomalies.merge(&reader_anomalies);
    for h in handles {
        if let Ok(w) = h.join() {
            summary.packets += w.packets;
            summary.bytes += w.bytes;
            summary.non_ip += w.non_ip;
            summary.anomalies.merge(&w.anomalies);
            let f = w.flows;
            summary.flows.created += f.created;
            summary.flows.expired += f.expired;
            summary.flows.evicted += f.evicted;
            summary.flows.interim += f.interim;
        }
    }
    if let Ok(rows) = out_thread.join() {
        summary.rows_per_table = rows;
        summary.records = rows.iter().sum();
    }
    summary.dropped_batches = dropped_batches.load(Ordering::Relaxed);
    summary.dropped_records = dropped_records.load(Ordering::Relaxed);
    summary.elapsed = start.elapsed();
    (summary, err)
}

fn src_batch_frame<'a>(region: &'a Region, d: &Desc) -> &'a [u8] {
    let b = region.bytes();
    let s = d.offset as usize;
    b.get(s..s.saturating_add(d.caplen as usize)).unwrap_or(&[])
}

/// The reader's side of sharding: one batch being filled per worker, the
/// channels to the workers, and what each worker still has to process (so
/// the source can release memory behind the slowest one).
struct Sharder<'c> {
    cfg: &'c PipelineConfig,
    per: Vec<Batch>,
    txs: Vec<Sender<Msg>>,
    ret: Receiver<Batch>,
    /// Batches each worker has finished (written by the worker).
    done: Vec<Arc<AtomicU64>>,
    /// Batches sent to each worker, and (sequence, lowest region offset) of those not yet done.
    sent: Vec<u64>,
    pending: Vec<std::collections::VecDeque<(u64, u64)>>,
}

impl<'c> Sharder<'c> {
    fn new(cfg: &'c PipelineConfig, txs: Vec<Sender<Msg>>, ret: Receiver<Batch>, done: Vec<Arc<AtomicU64>>) -> Self {
        let n = txs.len();
        Sharder {
            cfg,
            per: (0..n).map(|_| Batch::with_capacity(cfg.batch_size)).collect(),
            txs,
            ret,
            done,
            sent: vec![0; n],
            pending: (0..n).map(|_| std::collections::VecDeque::with_capacity(cfg.queue_depth + 2)).collect(),
        }
    }

    #[inline]
    fn worker_of(&self, hash: u64) -> usize {
        (hash % self.per.len() as u64) as usize
    }

    /// Queue a packet for the workers owning its outer and inner flows: one
    /// descriptor when they are the same worker, else one for each layer.
    /// `rebuilt` carries the bytes of a reassembled datagram.
    fn push_split(&mut self, (ho, hi): (u64, u64), region: &Region, d: Desc, rebuilt: Option<&[u8]>) {
        let (wo, wi) = (self.worker_of(ho), self.worker_of(hi));
        let parts: &[(usize, Layers)] =
            if wo == wi { &[(wo, Layers::All)] } else { &[(wo, Layers::OuterOnly), (wi, Layers::InnerOnly)] };
        for &(w, layers) in parts {
            let d = Desc { layers, ..d };
            match rebuilt {
                None => self.push(w, region, d),
                Some(bytes) => {
                    let b = &mut self.per[w];
                    let offset = b.aux.len() as u64;
                    b.aux.extend_from_slice(bytes);
                    let len = bytes.len() as u32;
                    self.push(w, region, Desc { offset, caplen: len, wire_len: len, in_aux: true, ..d });
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
        for w in 0..self.per.len() {
            if !self.per[w].is_empty() {
                self.send(w);
            }
        }
    }

    fn send(&mut self, w: usize) {
        let mut fresh = self.ret.try_recv().unwrap_or_else(|_| Batch::with_capacity(self.cfg.batch_size));
        fresh.clear();
        let full = std::mem::replace(&mut self.per[w], fresh);
        let low = full.descs.iter().find(|d| !d.in_aux).map_or(u64::MAX, |d| d.offset);
        self.sent[w] += 1;
        self.pending[w].push_back((self.sent[w], low));
        // Files: wait for the worker. (Live sources count drops at the RX ring.)
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
    packets: u64,
    bytes: u64,
    non_ip: u64,
    anomalies: AnomalyCounters,
    flows: FlowStats,
}

struct WorkerChannels {
    rx: Receiver<Msg>,
    ret: Sender<Batch>,
    out: Sender<Vec<Output>>,
    /// Batches finished, for the reader's memory release.
    done: Arc<AtomicU64>,
}

fn worker_loop(
    id: u16,
    cfg: &PipelineConfig,
    ch: WorkerChannels,
    dropped_batches: Arc<AtomicU64>,
    dropped_records: Arc<AtomicU64>,
) -> WorkerResult {
    let WorkerChannels { rx, ret, out, done } = ch;
    let mut w = Worker::new(id, cfg);
    let deliver = |w: &mut Worker| {
        if w.sinks.ready.is_empty() {
            return;
        }
        let v = std::mem::take(&mut w.sinks.ready);
        if cfg.drop_when_behind {
            if let Err(TrySendError::Full(v)) = out.try_send(v) {
                dropped_batches.fetch_add(v.len() as u64, Ordering::Relaxed);
                dropped_records.fetch_add(v.iter().map(|(_, b)| b.num_rows() as u64).sum(), Ordering::Relaxed);
            }
        } else {
            let _ = out.send(v);
        }
    };
    loop {
        // Wake at least once per flush interval, so records reach the sink
        // on time even when no packets arrive.
        match rx.recv_timeout(cfg.flush_interval) {
            Ok(Msg::Batch(mut b)) => {
                w.process(&b);
                done.fetch_add(1, Ordering::Release);
                b.clear();
                let _ = ret.try_send(b);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => w.flush_builders(),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        deliver(&mut w);
    }
    w.finish();
    deliver(&mut w);
    WorkerResult {
        packets: w.packets,
        bytes: w.bytes,
        non_ip: w.non_ip,
        anomalies: w.sinks.anomalies.clone(),
        flows: w.tracker.stats,
    }
}
