//! The tapstream plugin SDK for Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with
//! [`export_plugin!`] and compiled for `wasm32-unknown-unknown`:
//!
//! ```
//! use tapstream_plugin_sdk::{Alert, Batch, Host, Plugin, Severity, Category, export_plugin};
//!
//! #[derive(Default)]
//! struct Telnet;
//!
//! impl Plugin for Telnet {
//!     fn init(_host: &mut dyn Host) -> Result<Self, &'static str> { Ok(Telnet) }
//!     fn on_flows(&mut self, host: &mut dyn Host, batch: Batch<'_>) {
//!         for f in batch.flows() {
//!             if f.resp_p() == 23 {
//!                 let _ = Alert::new("telnet").severity(Severity::Low).category(Category::Policy)
//!                     .src(&f.orig_h(), f.v6()).explanation("telnet in use").emit(host);
//!             }
//!         }
//!     }
//! }
//! export_plugin!(Telnet);
//! ```
//!
//! The crate is `no_std` and needs no allocator. The same plugin type runs
//! natively too (unit tests, benchmarks): pass any [`Host`] implementation
//! and a batch to [`dispatch`].

#![no_std]

pub mod abi;
mod alert;
#[doc(hidden)]
pub mod guest;
/// What a manifest must grant: the clock, randomness, listed files
/// (WebAssembly only; a plugin imports these only when it calls them).
#[cfg(target_arch = "wasm32")]
pub mod granted {
    pub use crate::guest::{now_ns, random, read_file};
}
#[cfg(feature = "testing")]
pub mod testing;
mod view;

pub use abi::{ABI_VERSION, Category, Kind, Level, Severity, Verdict};
pub use alert::{Alert, AlertFields, Text, write_uid};
pub use view::{Batch, DnsView, FlowView, HttpView, TlsView, WindowView, fmt_addr};

/// What a plugin can ask of the appliance. In WebAssembly these are the
/// host's imports; natively, tests supply their own.
pub trait Host {
    /// Raise (or repeat) an alert. Err: the host refused it (see
    /// [`abi::errno`]), e.g. over the plugin's alert rate limit.
    fn alert(&mut self, alert: &AlertFields<'_>) -> Result<(), i32>;
    /// A line in the appliance's log, tagged with the plugin's name.
    fn log(&mut self, level: Level, msg: &str);
    /// A value from the manifest's `[config]` table, written into `buf`;
    /// `None` when the key is missing or `buf` is too small.
    fn config<'b>(&mut self, key: &str, buf: &'b mut [u8]) -> Option<&'b str>;
    /// Add to one of the plugin's own counters (shown with its metrics).
    fn counter(&mut self, name: &str, delta: i64);
    /// Read a value of the plugin's key-value state into `buf`; its length.
    /// The state outlives a crashed instance and a hot reload.
    fn kv_get(&mut self, key: &[u8], buf: &mut [u8]) -> Option<usize>;
    /// Store a value; Err when over the manifest's limits.
    fn kv_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), i32>;
    /// Forget a key.
    fn kv_del(&mut self, key: &[u8]);
}

impl dyn Host + '_ {
    /// A config value parsed as a number.
    pub fn config_u64(&mut self, key: &str) -> Option<u64> {
        let mut b = [0u8; 32];
        self.config(key, &mut b)?.trim().parse().ok()
    }

    /// A config value parsed as a float.
    pub fn config_f64(&mut self, key: &str) -> Option<f64> {
        let mut b = [0u8; 48];
        self.config(key, &mut b)?.trim().parse().ok()
    }
}

/// A detector. Every method but `init` has a default that ignores its input,
/// so a plugin implements only what its manifest subscribes to.
pub trait Plugin: Sized {
    /// Called once per instance, before any batch. Err refuses to start (the
    /// message goes to the log).
    fn init(host: &mut dyn Host) -> Result<Self, &'static str>;
    fn on_flows(&mut self, _host: &mut dyn Host, _batch: Batch<'_>) {}
    fn on_dns(&mut self, _host: &mut dyn Host, _batch: Batch<'_>) {}
    fn on_tls(&mut self, _host: &mut dyn Host, _batch: Batch<'_>) {}
    fn on_http(&mut self, _host: &mut dyn Host, _batch: Batch<'_>) {}
    fn on_windows(&mut self, _host: &mut dyn Host, _batch: Batch<'_>) {}
    /// Once per second of traffic time (the packets' clock): expire state here.
    fn on_tick(&mut self, _host: &mut dyn Host, _now_ns: u64) {}
}

/// Hand a batch (`count` records of `kind`, then the string area) to a
/// plugin. 0: handled; [`abi::errno::INVALID`]: unknown kind or a batch
/// shorter than its records.
pub fn dispatch<P: Plugin>(p: &mut P, host: &mut dyn Host, kind: u32, bytes: &[u8], count: usize) -> i32 {
    let Some(kind) = Kind::from_u32(kind) else { return abi::errno::INVALID };
    let Some(batch) = Batch::new(kind, bytes, count) else { return abi::errno::INVALID };
    match kind {
        Kind::Flow => p.on_flows(host, batch),
        Kind::Dns => p.on_dns(host, batch),
        Kind::Tls => p.on_tls(host, batch),
        Kind::Http => p.on_http(host, batch),
        Kind::Window => p.on_windows(host, batch),
    }
    0
}
