//! The manifest beside each plugin: `<name>.toml` next to `<name>.wasm`.
//! Parsed raw (serde, unknown keys refused), then validated into
//! [`Manifest`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tapstream_plugin_sdk::{ABI_VERSION, Kind};

use super::PluginError;

/// Where a plugin's instances run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One instance per worker, fed the records of the flows that worker owns.
    Shard,
    /// One instance on the aggregation stage, fed each second's merged
    /// conversation statistics (`window` records): a global view.
    Global,
}

/// What a plugin may use beyond its own memory. Nothing unless granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// `now_ns()`: the wall clock.
    pub clock: bool,
    /// `random(ptr, len)`: random bytes.
    pub random: bool,
    /// `read_file(name, …)`: the files the manifest lists, read-only.
    pub files: bool,
}

/// Per-instance limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// Each call must return within this time (epoch deadline).
    pub deadline_ms: u64,
    /// Optional instruction budget per call (WebAssembly fuel).
    pub fuel: Option<u64>,
    /// This many crashes within `crash_window_secs` quarantines the plugin.
    pub max_crashes: u32,
    pub crash_window_secs: u64,
    /// First restart delay after a crash (doubling per consecutive crash, up to 10 s).
    pub restart_backoff_ms: u64,
    /// Alerts a plugin may raise per second (per instance); more are refused.
    pub alerts_per_sec: u32,
    /// Key-value state: entries and total bytes (keys plus values).
    pub kv_max_keys: usize,
    pub kv_max_bytes: usize,
    /// Log lines per second (per instance); more are counted and dropped.
    pub log_lines_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            deadline_ms: 10,
            fuel: None,
            max_crashes: 5,
            crash_window_secs: 300,
            restart_backoff_ms: 100,
            alerts_per_sec: 50,
            kv_max_keys: 4096,
            kv_max_bytes: 1 << 20,
            log_lines_per_sec: 20,
        }
    }
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub abi: u32,
    pub scope: Scope,
    pub subscribe: Vec<Kind>,
    /// `[config]` values, as text (numbers and booleans written out).
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
    pub grants: Grants,
    /// Files the plugin may read (with the `files` grant): the name it asks
    /// for, as the manifest writes it, and where it is (relative names are
    /// beside the manifest).
    pub files: Vec<(String, std::path::PathBuf)>,
}

impl Manifest {
    pub fn wants(&self, k: Kind) -> bool {
        self.subscribe.contains(&k)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    abi: u32,
    #[serde(default)]
    scope: Option<String>,
    subscribe: Vec<String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<u64>,
    deadline_ms: Option<u64>,
    fuel: Option<u64>,
    max_crashes: Option<u32>,
    crash_window_secs: Option<u64>,
    restart_backoff_ms: Option<u64>,
    alerts_per_sec: Option<u32>,
    kv_max_keys: Option<usize>,
    kv_max_bytes: Option<usize>,
    log_lines_per_sec: Option<u32>,
}

/// A plugin name: 1 to 64 of `a-z 0-9 _ -`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, PluginError> {
        let text = std::fs::read_to_string(path).map_err(|e| PluginError::io(path, e))?;
        let mut m =
            Manifest::parse(&text).map_err(|m| PluginError::Manifest { path: path.to_path_buf(), message: m })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for (_, p) in m.files.iter_mut() {
            *p = dir.join(&*p);
        }
        Ok(m)
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if !valid_name(&raw.name) {
            return Err(format!("name `{}`: use 1 to 64 of a-z, 0-9, `_` and `-`", raw.name));
        }
        if raw.abi != ABI_VERSION {
            return Err(format!(
                "abi = {}: this tapstream speaks plugin ABI version {ABI_VERSION} only; rebuild the plugin with a matching SDK",
                raw.abi
            ));
        }
        let scope = match raw.scope.as_deref() {
            None | Some("shard") => Scope::Shard,
            Some("global") => Scope::Global,
            Some(o) => {
                return Err(format!("scope = \"{o}\": use \"shard\" (per worker) or \"global\" (aggregation stage)"));
            }
        };
        if raw.subscribe.is_empty() {
            return Err("subscribe is empty: name the records the plugin reads (flow, dns, tls, http, window)".into());
        }
        let mut subscribe = Vec::new();
        for s in &raw.subscribe {
            let k = Kind::from_name(s)
                .ok_or_else(|| format!("subscribe: unknown record kind `{s}` (use flow, dns, tls, http or window)"))?;
            match (scope, k) {
                (Scope::Shard, Kind::Window) => {
                    return Err("subscribe: `window` records go to global plugins only: set scope = \"global\"".into());
                }
                (Scope::Global, k) if k != Kind::Window => {
                    return Err(format!(
                        "subscribe: `{s}` records are seen by the workers only: global plugins read `window` records"
                    ));
                }
                _ => {}
            }
            if !subscribe.contains(&k) {
                subscribe.push(k);
            }
        }
        let mut config = BTreeMap::new();
        for (k, v) in raw.config {
            let s = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(a) => {
                    let mut parts = Vec::new();
                    for x in a {
                        match x {
                            toml::Value::String(s) => parts.push(s),
                            other => parts.push(other.to_string()),
                        }
                    }
                    parts.join("\n")
                }
                other => {
                    return Err(format!(
                        "config.{k}: {} values are not supported (use text, numbers, booleans or lists)",
                        other.type_str()
                    ));
                }
            };
            config.insert(k, s);
        }
        let d = Limits::default();
        let l = raw.limits;
        let range = |name: &str, v: Option<u64>, lo: u64, hi: u64, def: u64| -> Result<u64, String> {
            match v {
                None => Ok(def),
                Some(x) if (lo..=hi).contains(&x) => Ok(x),
                Some(x) => Err(format!("limits.{name} = {x}: use {lo} to {hi}")),
            }
        };
        let limits = Limits {
            memory_bytes: (range("memory_mb", l.memory_mb, 1, 4096, (d.memory_bytes >> 20) as u64)? as usize) << 20,
            deadline_ms: range("deadline_ms", l.deadline_ms, 1, 10_000, d.deadline_ms)?,
            fuel: match l.fuel {
                Some(0) => return Err("limits.fuel = 0: leave it out for no budget, or give a positive count".into()),
                f => f,
            },
            max_crashes: range("max_crashes", l.max_crashes.map(u64::from), 1, 1000, d.max_crashes as u64)? as u32,
            crash_window_secs: range("crash_window_secs", l.crash_window_secs, 1, 86_400, d.crash_window_secs)?,
            restart_backoff_ms: range("restart_backoff_ms", l.restart_backoff_ms, 1, 10_000, d.restart_backoff_ms)?,
            alerts_per_sec: range(
                "alerts_per_sec",
                l.alerts_per_sec.map(u64::from),
                1,
                100_000,
                d.alerts_per_sec as u64,
            )? as u32,
            kv_max_keys: range("kv_max_keys", l.kv_max_keys.map(|x| x as u64), 0, 1 << 20, d.kv_max_keys as u64)?
                as usize,
            kv_max_bytes: range("kv_max_bytes", l.kv_max_bytes.map(|x| x as u64), 0, 256 << 20, d.kv_max_bytes as u64)?
                as usize,
            log_lines_per_sec: range(
                "log_lines_per_sec",
                l.log_lines_per_sec.map(u64::from),
                0,
                10_000,
                d.log_lines_per_sec as u64,
            )? as u32,
        };
        let mut grants = Grants::default();
        for g in &raw.grants {
            match g.as_str() {
                "clock" => grants.clock = true,
                "random" => grants.random = true,
                "files" => grants.files = true,
                "filesystem" | "network" | "env" => {
                    return Err(format!(
                        "grants: `{g}` cannot be granted: plugins never open sockets, the environment or arbitrary paths (grant `files` and list the files a plugin may read)"
                    ));
                }
                o => return Err(format!("grants: unknown grant `{o}` (use clock, random or files)")),
            }
        }
        if grants.files && raw.files.is_empty() {
            return Err("grants: `files` with no `files = [...]` list: name the files the plugin may read".into());
        }
        if !grants.files && !raw.files.is_empty() {
            return Err("files: listed, but `files` is not in grants".into());
        }
        let files = raw.files.iter().map(|f| (f.clone(), std::path::PathBuf::from(f))).collect();
        Ok(Manifest {
            files,
            name: raw.name,
            version: raw.version,
            description: raw.description,
            abi: raw.abi,
            scope,
            subscribe,
            config,
            limits,
            grants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "beacon"
version = "1.0.0"
abi = 1
scope = "global"
subscribe = ["window"]
grants = ["clock"]
[config]
min_connections = 6
max_jitter = 0.1
patterns = ["*.evil.example", "bad.test"]
[limits]
memory_mb = 16
deadline_ms = 5
"#;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(OK).unwrap();
        assert_eq!(m.name, "beacon");
        assert_eq!(m.scope, Scope::Global);
        assert_eq!(m.subscribe, vec![Kind::Window]);
        assert_eq!(m.config["min_connections"], "6");
        assert_eq!(m.config["max_jitter"], "0.1");
        assert_eq!(m.config["patterns"], "*.evil.example\nbad.test");
        assert_eq!(m.limits.memory_bytes, 16 << 20);
        assert_eq!(m.limits.deadline_ms, 5);
        assert_eq!(m.limits.max_crashes, 5);
        assert!(m.grants.clock && !m.grants.random);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let cases = [
            (OK.replace("abi = 1", "abi = 2"), "ABI version 1 only"),
            (OK.replace("\"beacon\"", "\"Bea con\""), "name `Bea con`"),
            (OK.replace("[\"window\"]", "[\"dns\"]"), "global plugins read `window`"),
            (OK.replace("scope = \"global\"", "scope = \"shard\""), "global plugins only"),
            (OK.replace("[\"window\"]", "[\"smtp\"]"), "unknown record kind `smtp`"),
            (OK.replace("[\"clock\"]", "[\"filesystem\"]"), "cannot be granted"),
            (OK.replace("[\"clock\"]", "[\"files\"]"), "no `files = [...]` list"),
            (OK.replace("grants = [\"clock\"]", "files = [\"a.txt\"]"), "`files` is not in grants"),
            (OK.replace("memory_mb = 16", "memory_mb = 0"), "limits.memory_mb = 0"),
            (OK.replace("deadline_ms = 5", "deadline_ms = 5\nstack = 1"), "unknown field `stack`"),
            (OK.replace("abi = 1\n", ""), "missing field `abi`"),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }
}
