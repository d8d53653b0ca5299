//! The appliance's side of recording: the [`Recorder`] that runs sessions,
//! the [`RecordTap`] that publishes them to the workers, and the
//! [`RecordShard`] each worker writes its files with.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::RecordError;
use super::session::{
    SPEC_FILE, STATUS_FILE, SessionSpec, SessionState, SessionStatus, file_name, files_of, read_json, recordings_dir,
    write_json,
};
use crate::decode::Decoded;
use crate::filter::Filter;
use crate::source::{Desc, LinkType, PcapWriter};

/// Bytes of a pcap file header and of a record header.
const FILE_HEADER: u64 = 24;
const RECORD_HEADER: u64 = 16;
/// Buffered bytes per open file.
const WRITE_BUFFER: usize = 256 << 10;

/// A session being recorded, as the workers see it.
pub struct Active {
    pub name: String,
    dir: PathBuf,
    filter: Option<Filter>,
    snaplen: u32,
    max_bytes: Option<u64>,
    rotate_bytes: u64,
    rotate_ns: u64,
    /// Written so far, by every worker (updated once per batch).
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// The size cap is reached: workers write no more.
    pub full: AtomicBool,
    /// A worker could not write (disk full, …): the first error.
    pub error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The sessions the workers record, published as a whole. Workers compare
/// the generation once per batch and take the lock only when it changed.
#[derive(Debug, Default)]
pub struct RecordTap {
    generation: AtomicU64,
    set: Mutex<Arc<Vec<Arc<Active>>>>,
}

impl RecordTap {
    fn publish(&self, set: Vec<Arc<Active>>) {
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn snapshot(&self) -> (u64, Arc<Vec<Arc<Active>>>) {
        let g = self.generation.load(Ordering::Acquire);
        (g, self.set.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// One open file of one session on one worker.
struct OpenFile {
    out: PcapWriter<BufWriter<File>>,
    bytes: u64,
    first_ns: u64,
    link: LinkType,
}

struct Output {
    s: Arc<Active>,
    file: Option<OpenFile>,
    /// Written since the last batch end, not yet added to the session's totals.
    pend_packets: u64,
    pend_bytes: u64,
    /// A write failed: this worker writes no more for the session.
    dead: bool,
}

/// A worker's recording state: its own files for every active session.
pub struct RecordShard {
    worker: u16,
    tap: Option<Arc<RecordTap>>,
    generation: u64,
    outs: Vec<Output>,
}

impl RecordShard {
    pub fn new(worker: u16, tap: Option<Arc<RecordTap>>) -> RecordShard {
        RecordShard { worker, tap, generation: 0, outs: Vec::new() }
    }

    /// Any session to record?
    #[inline]
    pub fn active(&self) -> bool {
        !self.outs.is_empty()
    }

    /// Pick up session changes (once per batch: one atomic load when nothing changed).
    pub fn refresh(&mut self) {
        let Some(tap) = &self.tap else { return };
        if tap.generation.load(Ordering::Acquire) == self.generation {
            return;
        }
        let (g, set) = tap.snapshot();
        self.generation = g;
        // Close the files of sessions that ended.
        let mut kept = Vec::with_capacity(set.len());
        for mut o in std::mem::take(&mut self.outs) {
            if set.iter().any(|s| Arc::ptr_eq(s, &o.s)) {
                kept.push(o);
            } else {
                close(&mut o);
            }
        }
        for s in set.iter() {
            if !kept.iter().any(|o| Arc::ptr_eq(&o.s, s)) {
                kept.push(Output { s: s.clone(), file: None, pend_packets: 0, pend_bytes: 0, dead: false });
            }
        }
        self.outs = kept;
    }

    /// Record one packet in every session whose filter it passes.
    #[inline]
    pub fn packet(&mut self, d: &Desc, frame: &[u8], decoded: &Decoded) {
        for o in &mut self.outs {
            if o.dead || o.s.full.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(f) = &o.s.filter
                && !f.matches(decoded)
            {
                continue;
            }
            if let Err(msg) = write_packet(self.worker, o, d, frame) {
                fail(o, msg);
            }
        }
    }

    /// End of a batch: add what was written to the sessions' totals.
    pub fn end_batch(&mut self) {
        for o in &mut self.outs {
            settle(o);
        }
    }

    /// Push buffered packets to the files (so exports see them).
    pub fn flush(&mut self) {
        self.end_batch();
        for o in &mut self.outs {
            if let Some(f) = &mut o.file
                && let Err(e) = f.out.flush()
            {
                fail(o, format!("writing {}: {e}", o.s.dir.display()));
            }
        }
    }

    /// End of the run: close every file.
    pub fn close_all(&mut self) {
        for o in &mut self.outs {
            close(o);
        }
    }
}

fn settle(o: &mut Output) {
    if o.pend_packets > 0 {
        o.s.packets.fetch_add(o.pend_packets, Ordering::Relaxed);
        o.s.bytes.fetch_add(o.pend_bytes, Ordering::Relaxed);
        o.pend_packets = 0;
        o.pend_bytes = 0;
    }
}

fn close(o: &mut Output) {
    settle(o);
    if let Some(f) = o.file.take()
        && let Err(e) = f.out.into_inner()
    {
        fail(o, format!("closing a file in {}: {e}", o.s.dir.display()));
    }
}

fn fail(o: &mut Output, msg: String) {
    o.dead = true;
    o.file = None;
    tracing::error!(session = %o.s.name, "recording: {msg}");
    let mut g = o.s.error.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert(msg);
}

#[inline]
/// Write one packet; a write error comes back for [`fail`].
fn write_packet(worker: u16, o: &mut Output, d: &Desc, frame: &[u8]) -> Result<(), String> {
    let s = &*o.s;
    let cap = frame.len().min(s.snaplen as usize);
    let rec = RECORD_HEADER + cap as u64;
    let rotate = match &o.file {
        None => true,
        Some(f) => {
            f.link != d.link || f.bytes + rec > s.rotate_bytes || d.ts_ns.saturating_sub(f.first_ns) >= s.rotate_ns
        }
    };
    let need = rec + if rotate { FILE_HEADER } else { 0 };
    // A capped session reserves its bytes before writing them (one atomic
    // add per packet, capped sessions only), so no worker passes the cap.
    if let Some(max) = s.max_bytes {
        let before = s.bytes.fetch_add(need, Ordering::Relaxed);
        if before + need > max {
            s.bytes.fetch_sub(need, Ordering::Relaxed);
            s.full.store(true, Ordering::Relaxed);
            return Ok(());
        }
    }
    let unreserve = |s: &Active| {
        if s.max_bytes.is_some() {
            s.bytes.fetch_sub(need, Ordering::Relaxed);
        }
    };
    if rotate {
        if let Some(f) = o.file.take()
            && let Err(e) = f.out.into_inner()
        {
            unreserve(s);
            return Err(format!("closing a file in {}: {e}", s.dir.display()));
        }
        let (path, opened) = create_file(&s.dir, worker, d.ts_ns);
        let opened = opened.and_then(|f| PcapWriter::new(BufWriter::with_capacity(WRITE_BUFFER, f), d.link, s.snaplen));
        match opened {
            Ok(out) => o.file = Some(OpenFile { out, bytes: FILE_HEADER, first_ns: d.ts_ns, link: d.link }),
            Err(e) => {
                unreserve(s);
                return Err(format!("creating {}: {e}", path.display()));
            }
        }
    }
    let Some(f) = &mut o.file else { return Ok(()) };
    if let Err(e) = f.out.write(d.ts_ns, &frame[..cap], d.wire_len) {
        unreserve(s);
        return Err(format!("writing {}: {e}", s.dir.display()));
    }
    f.bytes += rec;
    o.pend_packets += 1;
    if s.max_bytes.is_none() {
        o.pend_bytes += need;
    }
    Ok(())
}

/// A new file named for its first packet; should a file of that name exist
/// (a session resumed over the same packet times), the next free nanosecond.
fn create_file(dir: &Path, worker: u16, ts: u64) -> (PathBuf, std::io::Result<File>) {
    let mut k = 0;
    loop {
        let path = dir.join(file_name(worker, ts + k));
        match File::options().write(true).create_new(true).open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 1000 => k += 1,
            r => return (path, r),
        }
    }
}

/// One session as the recorder tracks it.
struct Managed {
    dir: PathBuf,
    spec: SessionSpec,
    status: Option<SessionStatus>,
    active: Option<Arc<Active>>,
    /// Stopped for the workers (no longer published), whose files are not
    /// all closed yet: each worker holding the session keeps a reference
    /// until its next batch or idle turn closes its file.
    closing: Option<Arc<Active>>,
}

/// Runs the sessions of one data dir inside a running appliance: picks up
/// new sessions and stop requests, enforces caps, publishes the active set
/// to the workers and keeps `status.json` current.
pub struct Recorder {
    root: PathBuf,
    tap: Arc<RecordTap>,
    sessions: BTreeMap<String, Managed>,
}

impl Recorder {
    /// Open the recordings of `data`. Sessions left recording by an earlier
    /// run resume at the first [`Recorder::poll`].
    pub fn open(data: &Path) -> Result<Recorder, RecordError> {
        let root = recordings_dir(data);
        std::fs::create_dir_all(&root).map_err(|e| RecordError::io(&root, e))?;
        Ok(Recorder { root, tap: Arc::new(RecordTap::default()), sessions: BTreeMap::new() })
    }

    /// The handle workers record through (`PipelineConfig::recorder`).
    pub fn tap(&self) -> Arc<RecordTap> {
        self.tap.clone()
    }

    /// Sessions recording now, by name.
    pub fn recording(&self) -> Vec<String> {
        self.sessions.iter().filter(|(_, m)| m.active.is_some()).map(|(n, _)| n.clone()).collect()
    }

    /// One round: read requests, start and stop sessions, write status.
    /// Problems with one session are logged and leave the others alone.
    pub fn poll(&mut self, now_ns: u64) {
        let mut changed = false;
        let names: Vec<(String, PathBuf)> = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.path().join(SPEC_FILE).is_file())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect(),
            Err(e) => {
                tracing::warn!(dir = %self.root.display(), error = %e, "recording: cannot list sessions");
                return;
            }
        };
        // Sessions deleted from disk.
        let gone: Vec<String> = self.sessions.keys().filter(|k| !names.iter().any(|(n, _)| n == *k)).cloned().collect();
        for n in gone {
            if let Some(m) = self.sessions.remove(&n)
                && m.active.is_some()
            {
                changed = true;
            }
        }
        for (name, dir) in names {
            let spec = match read_json::<SessionSpec>(&dir.join(SPEC_FILE)) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(session = %name, error = %e, "recording: unreadable request");
                    continue;
                }
            };
            let m = match self.sessions.entry(name.clone()) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let status = read_json::<SessionStatus>(&dir.join(STATUS_FILE)).unwrap_or(None);
                    v.insert(Managed { dir: dir.clone(), spec: spec.clone(), status, active: None, closing: None })
                }
            };
            m.spec = spec;
            changed |= step(m, now_ns);
        }
        if changed {
            self.publish();
        }
        for m in self.sessions.values_mut() {
            if m.active.is_some() {
                save_status(m, SessionState::Recording);
            }
            // Every worker has closed its file: all it counted is on disk.
            if m.closing.as_ref().is_some_and(|a| Arc::strong_count(a) == 1) {
                finish(m, now_ns, stopping_reason(m));
            }
        }
    }

    fn publish(&self) {
        let set: Vec<Arc<Active>> = self.sessions.values().filter_map(|m| m.active.clone()).collect();
        self.tap.publish(set);
    }

    /// The appliance is stopping: sessions still recording become paused
    /// (they resume with the next run); those stopping are stopped. Call
    /// after the workers finished (their files are closed).
    pub fn shutdown(&mut self) {
        for m in self.sessions.values_mut() {
            if m.active.is_some() {
                save_status(m, SessionState::Paused);
                m.active = None;
            }
            if m.closing.is_some() {
                finish(m, now_ns(), stopping_reason(m));
            }
        }
        self.publish();
    }

    /// Poll every `every` until `stop` is set, then shut down.
    pub fn spawn(mut self, every: Duration, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("tapstream-rec".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                self.poll(now_ns());
                std::thread::sleep(every);
            }
            self.poll(now_ns());
            self.shutdown();
        })
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Advance one session. Returns whether the active set changed.
fn step(m: &mut Managed, now: u64) -> bool {
    let state = m.status.as_ref().map(|s| s.state);
    if state == Some(SessionState::Stopped) || m.closing.is_some() {
        return false;
    }
    if let Some(a) = m.active.clone() {
        let reason = if m.spec.stop_requested_ns.is_some() {
            Some("stopped by operator".to_string())
        } else if a.full.load(Ordering::Relaxed) {
            Some("size cap".to_string())
        } else if m.spec.max_secs.is_some_and(|s| now >= started(m).saturating_add(s * 1_000_000_000)) {
            Some("time cap".to_string())
        } else {
            a.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        if let Some(r) = reason {
            begin_stop(m, a, r);
            return true;
        }
        return false;
    }
    // Not active: a new session, or one this run has not resumed yet.
    if state == Some(SessionState::Stopping) {
        // An earlier run ended while its workers closed the files (they
        // closed them as it ended).
        finish(m, now, stopping_reason(m));
        return false;
    }
    if m.spec.stop_requested_ns.is_some() {
        if m.status.is_some() {
            finish(m, now, "stopped by operator".into());
        }
        return false;
    }
    let filter = match m.spec.validate() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(session = %m.spec.name, error = %e, "recording: bad session request");
            finish(m, now, format!("bad request: {e}"));
            return false;
        }
    };
    let (packets, bytes) = m.status.as_ref().map_or((0, 0), |s| (s.packets, s.bytes));
    if m.spec.max_secs.is_some_and(|s| m.status.is_some() && now >= started(m).saturating_add(s * 1_000_000_000)) {
        finish(m, now, "time cap".into());
        return false;
    }
    let a = Arc::new(Active {
        name: m.spec.name.clone(),
        dir: m.dir.clone(),
        filter,
        snaplen: m.spec.snaplen,
        max_bytes: m.spec.max_bytes,
        rotate_bytes: m.spec.rotate_bytes,
        rotate_ns: m.spec.rotate_secs.saturating_mul(1_000_000_000),
        packets: AtomicU64::new(packets),
        bytes: AtomicU64::new(bytes),
        full: AtomicBool::new(m.spec.max_bytes.is_some_and(|max| bytes >= max)),
        error: Mutex::new(None),
    });
    let resumed = m.status.is_some();
    if m.status.is_none() {
        m.status = Some(SessionStatus {
            state: SessionState::Recording,
            started_ns: now,
            stopped_ns: None,
            reason: None,
            packets: 0,
            bytes: 0,
        });
    }
    tracing::info!(
        session = %m.spec.name,
        filter = m.spec.filter.as_deref().unwrap_or("(all packets)"),
        resumed,
        "recording started"
    );
    m.active = Some(a);
    true
}

fn started(m: &Managed) -> u64 {
    m.status.as_ref().map_or(0, |s| s.started_ns)
}

/// Stop publishing the session to the workers; it is stopped once they
/// have all closed their files for it (see [`Recorder::poll`]).
fn begin_stop(m: &mut Managed, a: Arc<Active>, reason: String) {
    tracing::info!(session = %m.spec.name, reason, "recording stopping");
    if let Some(s) = &mut m.status {
        s.reason = Some(reason);
    }
    save_status(m, SessionState::Stopping);
    m.active = None;
    m.closing = Some(a);
}

/// Why a `stopping` session stops (written by [`begin_stop`]).
fn stopping_reason(m: &Managed) -> String {
    m.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_else(|| "stopped by operator".into())
}

/// The session is stopped for good: its final counts and `reason` go to
/// its status.
fn finish(m: &mut Managed, now: u64, reason: String) {
    let (packets, bytes) = match m.closing.as_ref().or(m.active.as_ref()) {
        Some(a) => (a.packets.load(Ordering::Relaxed), a.bytes.load(Ordering::Relaxed)),
        None => m.status.as_ref().map_or((0, 0), |s| (s.packets, s.bytes)),
    };
    let started_ns = m.status.as_ref().map_or(now, |s| s.started_ns);
    let st = SessionStatus {
        state: SessionState::Stopped,
        started_ns,
        stopped_ns: Some(now),
        reason: Some(reason.clone()),
        packets,
        bytes,
    };
    m.active = None;
    m.closing = None;
    if let Err(e) = write_json(&m.dir.join(STATUS_FILE), &st) {
        tracing::error!(session = %m.spec.name, error = %e, "recording: cannot write status");
    }
    let files = files_of(&m.dir).map(|f| f.len()).unwrap_or(0);
    tracing::info!(session = %m.spec.name, reason, packets, bytes, files, "recording stopped");
    m.status = Some(st);
}

/// Copy the live counters into the status and write it.
fn save_status(m: &mut Managed, state: SessionState) {
    let (Some(a), Some(s)) = (m.active.as_ref().or(m.closing.as_ref()), &mut m.status) else { return };
    let next = SessionStatus {
        state,
        packets: a.packets.load(Ordering::Relaxed),
        bytes: a.bytes.load(Ordering::Relaxed),
        ..s.clone()
    };
    if *s == next && state == SessionState::Recording && m.dir.join(STATUS_FILE).is_file() {
        return;
    }
    *s = next;
    if let Err(e) = write_json(&m.dir.join(STATUS_FILE), s) {
        tracing::error!(session = %m.spec.name, error = %e, "recording: cannot write status");
    }
}
