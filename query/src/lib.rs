//! tapstream history: record batches land in hourly Parquet partitions.
//!
//! Architecture Invariant: this crate depends on the engine only for its
//! record types; it never reaches into decoding or flow state.
#![forbid(unsafe_code)]

pub mod writer;

pub use writer::{HourlyWriter, WriterConfig, WriterError, WriterStats};
