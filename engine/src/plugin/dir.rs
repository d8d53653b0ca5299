//! The plugin directory: `<name>.wasm` with `<name>.toml` beside it.
//! Loaded at start, polled for changes; each change is published to the
//! runners as a new [`PluginSet`] through [`PluginTap`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::PluginError;
use super::load::{LoadedPlugin, load_plugin};

/// The plugins in force.
#[derive(Debug, Default)]
pub struct PluginSet {
    pub plugins: Vec<Arc<LoadedPlugin>>,
}

/// Publishes plugin sets to the runners: a generation counter they read
/// once per batch, and the set behind a lock they take only when it changed.
#[derive(Debug, Default)]
pub struct PluginTap {
    generation: AtomicU64,
    set: Mutex<Arc<PluginSet>>,
}

impl PluginTap {
    pub fn new(set: PluginSet) -> Arc<PluginTap> {
        Arc::new(PluginTap { generation: AtomicU64::new(1), set: Mutex::new(Arc::new(set)) })
    }

    pub fn publish(&self, set: PluginSet) {
        if let Ok(mut s) = self.set.lock() {
            *s = Arc::new(set);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> (u64, Arc<PluginSet>) {
        let g = self.generation();
        let s = self.set.lock().map(|s| s.clone()).unwrap_or_default();
        (g, s)
    }
}

/// File identity: size and modification time of the module and manifest.
type Stamp = [(u64, Option<SystemTime>); 2];

fn stamp(wasm: &Path) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None));
    [one(wasm), one(&wasm.with_extension("toml"))]
}

struct Entry {
    stamp: Stamp,
    loaded: Option<Arc<LoadedPlugin>>,
}

/// Watches a plugin directory.
pub struct PluginDir {
    dir: PathBuf,
    cache: Option<PathBuf>,
    tap: Arc<PluginTap>,
    entries: BTreeMap<PathBuf, Entry>,
    /// Problems of the last scan, by file.
    pub errors: BTreeMap<PathBuf, String>,
}

impl PluginDir {
    /// Load every plugin in `dir` (compiled modules cached in `cache`). A
    /// plugin that fails to load is logged and left out; the others run.
    pub fn open(dir: &Path, cache: Option<&Path>) -> Result<PluginDir, PluginError> {
        if !dir.is_dir() {
            return Err(PluginError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such plugin directory"),
            ));
        }
        let mut d = PluginDir {
            dir: dir.to_path_buf(),
            cache: cache.map(Path::to_path_buf),
            tap: PluginTap::new(PluginSet::default()),
            entries: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        d.poll();
        Ok(d)
    }

    pub fn tap(&self) -> Arc<PluginTap> {
        self.tap.clone()
    }

    pub fn loaded(&self) -> Vec<Arc<LoadedPlugin>> {
        self.tap.snapshot().1.plugins.clone()
    }

    /// Look for added, changed and removed plugins; publish a new set when
    /// anything changed. A changed plugin that no longer loads keeps its
    /// previous version running (and the error is logged).
    pub fn poll(&mut self) -> bool {
        let mut found: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
                .collect(),
            Err(e) => {
                tracing::warn!("plugin directory {}: {e}", self.dir.display());
                return false;
            }
        };
        found.sort();
        let mut changed = false;
        let before = self.entries.len();
        self.entries.retain(|p, _| found.contains(p));
        if self.entries.len() != before {
            changed = true;
        }
        for p in found {
            let st = stamp(&p);
            if self.entries.get(&p).is_some_and(|e| e.stamp == st) {
                continue;
            }
            let previous = self.entries.remove(&p).and_then(|e| e.loaded);
            let loaded = match load_plugin(&p, self.cache.as_deref()) {
                Ok(l) => {
                    tracing::info!(
                        "plugin {} {} loaded from {} ({})",
                        l.name,
                        l.manifest.version,
                        p.display(),
                        if l.compiled { "compiled" } else { "from the compile cache" }
                    );
                    self.errors.remove(&p);
                    changed = true;
                    Some(Arc::new(l))
                }
                Err(e) => {
                    let keep = if previous.is_some() { "; the previous version keeps running" } else { "" };
                    tracing::error!("plugin not loaded: {e}{keep}");
                    self.errors.insert(p.clone(), e.to_string());
                    previous
                }
            };
            self.entries.insert(p, Entry { stamp: st, loaded });
        }
        if changed {
            let mut plugins: Vec<Arc<LoadedPlugin>> = Vec::new();
            for e in self.entries.values() {
                let Some(l) = &e.loaded else { continue };
                if let Some(other) = plugins.iter().find(|o| o.name == l.name) {
                    tracing::error!(
                        "plugin {}: {} and {} have the same name; only the first runs",
                        l.name,
                        other.wasm.display(),
                        l.wasm.display()
                    );
                    continue;
                }
                plugins.push(l.clone());
            }
            self.tap.publish(PluginSet { plugins });
        }
        changed
    }

    /// Poll every `every` on a thread until `stop`.
    pub fn spawn(mut self, every: Duration, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("tapstream-plugins".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                self.poll();
            }
        })
    }
}
