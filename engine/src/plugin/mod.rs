//! WebAssembly detector plugins (see `plugin-sdk/ABI.md` and `docs/plugins.md`).
//!
//! - `manifest.rs`: the TOML beside each `.wasm`, validated.
//! - `load.rs`: compiling a module (Cranelift, cached on disk), checking its
//!   imports, exports and ABI version once, at load time.
//! - `instance.rs`: one sandboxed instance — its store, memory cap, epoch
//!   deadline, host functions (alert, log, config, counters, key-value).
//! - `runner.rs`: what a worker (or the aggregation stage) owns: encoded
//!   batches per record kind, one slot per plugin with crash backoff and
//!   quarantine, metrics.
//! - `dir.rs`: the plugin directory: loaded at start, polled for changes,
//!   published to the runners through a generation counter (hot reload
//!   between batches, no lock on the packet path).
//!
//! Architecture Invariant: a plugin runs on the thread that owns its
//! records, synchronously and under a deadline; it cannot block capture for
//! longer than its deadline, and a trap costs only that plugin's instance.

mod dir;
mod encode;
mod instance;
mod load;
pub mod manifest;
mod runner;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use dir::{PluginDir, PluginSet, PluginTap};
pub use encode::BatchBuf;
pub use load::{LoadedPlugin, load_plugin};
pub use manifest::{Grants, Limits, Manifest, Scope};
pub use runner::{PluginMetrics, PluginRunner, PluginStats, SlotState, Standalone};

/// Epoch ticks: the deadline of a call is counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What can go wrong loading or running plugins.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Module { path: PathBuf, message: String },
}

impl PluginError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> PluginError {
        PluginError::Io { path: path.to_path_buf(), source }
    }
}

static ENGINES: [OnceLock<wasmtime::Engine>; 2] = [OnceLock::new(), OnceLock::new()];

/// The shared Wasmtime engines: one plain, one counting fuel (for plugins
/// whose manifest sets `limits.fuel`; fuel costs every plugin some speed,
/// so only those pay it). Both interrupt on epochs, ticked by one thread.
pub(crate) fn engine(fuel: bool) -> &'static wasmtime::Engine {
    let e = ENGINES[fuel as usize].get_or_init(|| {
        let mut c = wasmtime::Config::new();
        c.epoch_interruption(true);
        c.consume_fuel(fuel);
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        wasmtime::Engine::new(&c).expect("a Wasmtime engine with these settings")
    });
    start_ticker();
    e
}

/// One thread advancing both engines' epochs every [`EPOCH_TICK`].
fn start_ticker() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("tapstream-epoch".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    for e in &ENGINES {
                        if let Some(e) = e.get() {
                            e.increment_epoch();
                        }
                    }
                }
            })
            .expect("spawn the plugin epoch thread");
    });
}

/// What the pipeline needs to run plugins: the published set and where
/// metrics go.
#[derive(Clone, Debug)]
pub struct PluginSetup {
    pub tap: std::sync::Arc<PluginTap>,
    pub stats: std::sync::Arc<PluginStats>,
}

#[cfg(test)]
mod tests;
