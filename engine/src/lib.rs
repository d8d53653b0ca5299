//! The tapstream packet engine.
//!
//! Sources yield [`source::Batch`]es of frames; the [`pipeline`] shards them by
//! a symmetric flow hash over worker threads; each worker decodes
//! ([`decode`]), tracks flows ([`flow`]), runs protocol analyzers ([`proto`])
//! and appends records to Arrow builders ([`records`]), handing finished
//! record batches to a sink.
//!
//! Architecture Invariant: this crate depends on no other tapstream crate.

pub mod alert;
pub mod decode;
pub mod derived;
pub mod detect;
pub mod filter;
pub mod flow;
pub mod geo;
#[cfg(target_os = "linux")]
pub mod live;
pub mod pipeline;
pub mod plugin;
pub mod proto;
pub mod record;
pub mod records;
pub mod source;
pub mod stats;

pub use arrow;
