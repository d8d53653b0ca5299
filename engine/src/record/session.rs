//! Session files: the operator's request (`session.json`), the appliance's
//! status (`status.json`), and the pcap files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RecordError;
use crate::filter::Filter;

/// Where recording sessions live inside a data dir.
pub fn recordings_dir(data: &Path) -> PathBuf {
    data.join("pcap")
}

pub(crate) const SPEC_FILE: &str = "session.json";
pub(crate) const STATUS_FILE: &str = "status.json";

/// What an operator asks a session to record. Written once by `record
/// start`; `record stop` only adds `stop_requested_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub name: String,
    /// Capture filter, tcpdump style (none: every packet).
    pub filter: Option<String>,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// Stop once the session's files hold this many bytes.
    pub max_bytes: Option<u64>,
    /// Stop this many seconds after the session started.
    pub max_secs: Option<u64>,
    /// Start a new file (per worker) when the current one reaches this size…
    pub rotate_bytes: u64,
    /// …or spans this many seconds of packets.
    pub rotate_secs: u64,
    pub created_ns: u64,
    /// Set by `record stop`: the appliance stops the session on its next poll.
    #[serde(default)]
    pub stop_requested_ns: Option<u64>,
}

impl SessionSpec {
    /// A spec with the defaults: whole packets, 256 MiB or one hour per file, no caps.
    pub fn new(name: &str, created_ns: u64) -> SessionSpec {
        SessionSpec {
            name: name.to_string(),
            filter: None,
            snaplen: 65_535,
            max_bytes: None,
            max_secs: None,
            rotate_bytes: 256 << 20,
            rotate_secs: 3600,
            created_ns,
            stop_requested_ns: None,
        }
    }

    /// Check every field; the filter is compiled to find mistakes.
    pub fn validate(&self) -> Result<Option<Filter>, RecordError> {
        validate_name(&self.name)?;
        if !(64..=262_144).contains(&self.snaplen) {
            return Err(RecordError::Invalid(format!("snaplen {}: use 64 to 262144 bytes", self.snaplen)));
        }
        if self.rotate_bytes < 4096 {
            return Err(RecordError::Invalid(format!("rotate size {} bytes: use at least 4 KiB", self.rotate_bytes)));
        }
        if self.rotate_secs == 0 {
            return Err(RecordError::Invalid("rotation interval 0 s: use at least 1 s".into()));
        }
        if self.max_bytes == Some(0) || self.max_secs == Some(0) {
            return Err(RecordError::Invalid("a size or time cap of 0 records nothing".into()));
        }
        Ok(match &self.filter {
            Some(f) => Some(Filter::parse(f)?),
            None => None,
        })
    }
}

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Asked for; no appliance has picked it up yet.
    Pending,
    /// A running appliance is writing its packets.
    Recording,
    /// The appliance stopped while the session was recording; it resumes
    /// when the appliance runs again.
    Paused,
    /// Asked to stop (or a cap was reached): the workers are closing its
    /// files. Stopped follows once every packet counted is on disk.
    Stopping,
    /// Finished for good (see `reason`).
    Stopped,
}

impl SessionState {
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Recording => "recording",
            SessionState::Paused => "paused",
            SessionState::Stopping => "stopping",
            SessionState::Stopped => "stopped",
        }
    }
}

/// What the appliance did with a session (written only by the appliance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub state: SessionState,
    pub started_ns: u64,
    pub stopped_ns: Option<u64>,
    /// Why it stopped (or is stopping): "stopped by operator", "size cap",
    /// "time cap", or a write error.
    pub reason: Option<String>,
    /// Packets and bytes written (file bytes, headers included).
    pub packets: u64,
    pub bytes: u64,
}

/// One pcap file of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    pub name: String,
    pub worker: u16,
    /// Timestamp of its first packet.
    pub first_ns: u64,
    pub bytes: u64,
}

/// A session as listed: request, status and files.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub spec: SessionSpec,
    pub state: SessionState,
    pub status: Option<SessionStatus>,
    pub files: Vec<FileInfo>,
    /// Bytes of all its files on disk.
    pub disk_bytes: u64,
}

/// Session names are directory names: keep them plain.
pub fn validate_name(name: &str) -> Result<(), RecordError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok { Ok(()) } else { Err(RecordError::BadName(name.to_string())) }
}

/// Write `value` as JSON to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| RecordError::Json { path: path.to_path_buf(), message: e.to_string() })?;
    let mut f = fs::File::create(&tmp).map_err(|e| RecordError::io(&tmp, e))?;
    f.write_all(&body).and_then(|_| f.sync_all()).map_err(|e| RecordError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RecordError::io(path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RecordError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RecordError::Json { path: path.to_path_buf(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RecordError::io(path, e)),
    }
}

/// Create a session (state pending until an appliance picks it up).
pub fn create(data: &Path, spec: &SessionSpec) -> Result<PathBuf, RecordError> {
    spec.validate()?;
    let root = recordings_dir(data);
    fs::create_dir_all(&root).map_err(|e| RecordError::io(&root, e))?;
    let dir = root.join(&spec.name);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RecordError::Exists(spec.name.clone()));
        }
        Err(e) => return Err(RecordError::io(&dir, e)),
    }
    write_json(&dir.join(SPEC_FILE), spec)?;
    Ok(dir)
}

pub(crate) fn session_dir(data: &Path, name: &str) -> Result<PathBuf, RecordError> {
    validate_name(name)?;
    let dir = recordings_dir(data).join(name);
    if !dir.join(SPEC_FILE).is_file() {
        return Err(RecordError::NotFound(name.to_string()));
    }
    Ok(dir)
}

/// Ask the appliance to stop a session. Stopping a session that has
/// stopped already changes nothing.
pub fn request_stop(data: &Path, name: &str, now_ns: u64) -> Result<SessionSpec, RecordError> {
    let dir = session_dir(data, name)?;
    let path = dir.join(SPEC_FILE);
    let mut spec: SessionSpec = read_json(&path)?.ok_or_else(|| RecordError::NotFound(name.to_string()))?;
    if spec.stop_requested_ns.is_none() {
        spec.stop_requested_ns = Some(now_ns);
        write_json(&path, &spec)?;
    }
    Ok(spec)
}

/// One session, as [`list`] shows it.
pub fn info(data: &Path, name: &str) -> Result<SessionInfo, RecordError> {
    let dir = session_dir(data, name)?;
    let spec: SessionSpec = read_json(&dir.join(SPEC_FILE))?.ok_or_else(|| RecordError::NotFound(name.to_string()))?;
    info_of(&dir, spec)
}

fn info_of(dir: &Path, spec: SessionSpec) -> Result<SessionInfo, RecordError> {
    let status = read_json::<SessionStatus>(&dir.join(STATUS_FILE))?;
    let files = files_of(dir)?;
    let disk_bytes = files.iter().map(|f| f.bytes).sum();
    let state = state_of(&spec, status.as_ref());
    Ok(SessionInfo { spec, state, status, files, disk_bytes })
}

/// Wait (at most `timeout`) until a running appliance has stopped the
/// session `name`, i.e. closed its files, so an export sees every packet
/// it counted. Returns the session as it is then: still `Recording` or
/// `Stopping` if the appliance did not finish in time (it will; nothing is
/// lost), `Paused` or `Pending` when no appliance is running it.
pub fn wait_stopped(data: &Path, name: &str, timeout: std::time::Duration) -> Result<SessionInfo, RecordError> {
    let until = std::time::Instant::now() + timeout;
    loop {
        let s = info(data, name)?;
        let busy = matches!(s.state, SessionState::Recording | SessionState::Stopping);
        if !busy || std::time::Instant::now() >= until {
            return Ok(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The state a session is in, from its two files.
pub(crate) fn state_of(spec: &SessionSpec, status: Option<&SessionStatus>) -> SessionState {
    match status {
        Some(s) => s.state,
        // Stopped before any appliance picked it up.
        None if spec.stop_requested_ns.is_some() => SessionState::Stopped,
        None => SessionState::Pending,
    }
}

/// A session's pcap files, oldest first per worker.
pub(crate) fn files_of(dir: &Path) -> Result<Vec<FileInfo>, RecordError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| RecordError::io(dir, e))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((worker, first_ns)) = parse_file_name(&name) else { continue };
        let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(FileInfo { name, worker, first_ns, bytes });
    }
    out.sort_by_key(|f| (f.first_ns, f.worker));
    Ok(out)
}

pub(crate) fn file_name(worker: u16, first_ns: u64) -> String {
    format!("w{worker}-{first_ns}.pcap")
}

fn parse_file_name(name: &str) -> Option<(u16, u64)> {
    let rest = name.strip_prefix('w')?.strip_suffix(".pcap")?;
    let (w, ts) = rest.split_once('-')?;
    Some((w.parse().ok()?, ts.parse().ok()?))
}

/// Every session under the data dir, by name.
pub fn list(data: &Path) -> Result<Vec<SessionInfo>, RecordError> {
    let root = recordings_dir(data);
    let rd = match fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RecordError::io(&root, e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        let Some(spec) = read_json::<SessionSpec>(&dir.join(SPEC_FILE))? else { continue };
        out.push(info_of(&dir, spec)?);
    }
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(out)
}

/// Delete a session that is not recording, files and all.
pub fn delete(data: &Path, name: &str) -> Result<u64, RecordError> {
    let dir = session_dir(data, name)?;
    let spec: SessionSpec = read_json(&dir.join(SPEC_FILE))?.ok_or_else(|| RecordError::NotFound(name.to_string()))?;
    let status: Option<SessionStatus> = read_json(&dir.join(STATUS_FILE))?;
    if matches!(
        state_of(&spec, status.as_ref()),
        SessionState::Recording | SessionState::Paused | SessionState::Stopping
    ) || (status.is_none() && spec.stop_requested_ns.is_none())
    {
        return Err(RecordError::StillRecording(name.to_string()));
    }
    let freed = files_of(&dir)?.iter().map(|f| f.bytes).sum();
    fs::remove_dir_all(&dir).map_err(|e| RecordError::io(&dir, e))?;
    Ok(freed)
}
