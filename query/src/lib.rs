//! tapstream history: record batches land in hourly Parquet partitions;
//! SQL (DataFusion) reads them back.
//!
//! Architecture Invariant: this crate depends on the engine only for its
//! record types; it never reaches into decoding or flow state.
#![forbid(unsafe_code)]

pub mod compact;
pub mod dirlock;
pub mod export;
pub mod flows;
pub mod hosts;
pub mod import;
pub mod layout;
pub mod retention;
pub mod sql;
pub mod store;
pub mod synth;
pub mod topn;
pub mod udf;
pub mod writer;

pub use dirlock::DataDirLock;
pub use sql::{Guardrails, History, QueryError, QueryResult};
pub use writer::{BatchSink, Holder, HourLocks, HourlyWriter, SharedWriter, WriterConfig, WriterError, WriterStats};
