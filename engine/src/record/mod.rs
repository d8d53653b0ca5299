//! Packet recording: named capture sessions that write the packets they
//! match to rotating pcap files in the data dir, and export of recorded
//! packets (one flow, or a filter and time range) to a pcap file.
//!
//! Layout, one directory per session under `<data>/pcap/`:
//!
//! ```text
//! pcap/<name>/session.json          what the operator asked for (written by `record start/stop`)
//! pcap/<name>/status.json           what the appliance did (written by the running appliance)
//! pcap/<name>/w<worker>-<first_ns>.pcap   packets, one file series per worker
//! ```
//!
//! The operator's side and the appliance's side never write the same file,
//! so a start or stop request cannot be lost to a status update. The
//! appliance's [`Recorder`] polls the directory, publishes the active
//! sessions to the workers through a [`RecordTap`] (a generation counter
//! checked once per batch, never a lock per packet), enforces the time cap
//! and writes status. Each worker writes its own files ([`RecordShard`]), so
//! recording takes no shared lock on the packet path either.

mod export;
mod session;
mod shard;

pub use export::{ExportReport, FLOW_TAIL_NS, FlowMatch, Selector, export};
pub use session::{
    FileInfo, SessionInfo, SessionSpec, SessionState, SessionStatus, create, delete, info, list, recordings_dir,
    request_stop, validate_name, wait_stopped,
};
pub use shard::{RecordShard, RecordTap, Recorder};

use std::path::PathBuf;

/// What can go wrong with recording sessions and exports.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("session name `{0}`: use 1 to 64 letters, digits, `-` or `_`")]
    BadName(String),
    #[error("a recording session named `{0}` exists already (delete it or choose another name)")]
    Exists(String),
    #[error("no recording session named `{0}`")]
    NotFound(String),
    #[error("recording session `{0}` is still recording: stop it first")]
    StillRecording(String),
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the selected packets have several link types ({0} and {1}); a pcap file holds one: narrow the selection")]
    MixedLinks(&'static str, &'static str),
}

impl RecordError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RecordError {
        RecordError::Io { path: path.into(), source }
    }
}

#[cfg(test)]
mod tests;
