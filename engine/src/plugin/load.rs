//! Loading a plugin: manifest, module (compiled once, cached on disk),
//! imports and exports checked, ABI version asked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tapstream_plugin_sdk::ABI_VERSION;
use wasmtime::{ExternType, InstancePre, Module, Store, ValType};

use super::instance::{HostState, Kv, linker};
use super::manifest::Manifest;
use super::{PluginError, engine};

/// A plugin ready to instantiate (cheaply, once per worker).
pub struct LoadedPlugin {
    pub name: Arc<str>,
    pub manifest: Manifest,
    pub wasm: PathBuf,
    pub manifest_path: PathBuf,
    /// SHA-256 of the module's bytes.
    pub sha256: String,
    /// Compiled from source this time (false: from the disk cache).
    pub compiled: bool,
    pub(crate) engine: wasmtime::Engine,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) files: Arc<Vec<(String, PathBuf)>>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("wasm", &self.wasm).finish()
    }
}

fn module_err(path: &Path, message: impl Into<String>) -> PluginError {
    PluginError::Module { path: path.to_path_buf(), message: message.into() }
}

/// What each import needs.
fn check_import(path: &Path, module: &str, name: &str, m: &Manifest) -> Result<(), PluginError> {
    if module.starts_with("wasi") {
        return Err(module_err(
            path,
            format!(
                "imports {module}.{name}: plugins get no WASI (no files, sockets or environment); build for wasm32-unknown-unknown (Rust), with -nostdlib (C), or with --runtime stub and no WASI bindings (AssemblyScript)"
            ),
        ));
    }
    if module != "tapstream" {
        return Err(module_err(
            path,
            format!("imports {module}.{name}: the host offers only the `tapstream` module (see plugin-sdk/ABI.md)"),
        ));
    }
    let grant = match name {
        "alert" | "log" | "config_get" | "counter_add" | "kv_get" | "kv_set" | "kv_del" => return Ok(()),
        "now_ns" => ("clock", m.grants.clock),
        "random" => ("random", m.grants.random),
        "read_file" => ("files", m.grants.files),
        o => {
            return Err(module_err(
                path,
                format!("imports tapstream.{o}, which this host does not have (ABI version {ABI_VERSION})"),
            ));
        }
    };
    if !grant.1 {
        return Err(module_err(
            path,
            format!("imports tapstream.{name}, which needs grants = [\"{}\"] in its manifest", grant.0),
        ));
    }
    Ok(())
}

fn check_exports(path: &Path, module: &Module) -> Result<(), PluginError> {
    let want: [(&str, &[ValType], &[ValType], bool); 5] = [
        ("tapstream_abi", &[], &[ValType::I32], true),
        ("tapstream_buffer", &[ValType::I32], &[ValType::I32], true),
        ("tapstream_batch", &[ValType::I32, ValType::I32, ValType::I32, ValType::I32], &[ValType::I32], true),
        ("tapstream_init", &[], &[ValType::I32], false),
        ("tapstream_tick", &[ValType::I64], &[], false),
    ];
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(module_err(path, "exports no `memory`"));
    }
    for (name, params, results, required) in want {
        match module.get_export(name) {
            None if required => {
                return Err(module_err(
                    path,
                    format!(
                        "exports no `{name}`: not a tapstream plugin (build it with the SDK; see plugin-sdk/ABI.md)"
                    ),
                ));
            }
            None => {}
            Some(ExternType::Func(f)) => {
                let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
                    a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
                };
                if !same(&mut f.params(), params) || !same(&mut f.results(), results) {
                    return Err(module_err(path, format!("`{name}` has the signature {f}, not the ABI's")));
                }
            }
            Some(_) => return Err(module_err(path, format!("`{name}` is not a function"))),
        }
    }
    Ok(())
}

/// Compile `bytes`, or take the compiled module from `cache` (a directory
/// of our own; entries are keyed by the module's hash and checked by
/// Wasmtime against this engine's settings before use).
fn compile(
    engine: &wasmtime::Engine,
    fuel: bool,
    path: &Path,
    bytes: &[u8],
    sha: &str,
    cache: Option<&Path>,
) -> Result<(Module, bool), PluginError> {
    let fuel = if fuel { "fuel" } else { "plain" };
    let entry = cache.map(|d| d.join(format!("{sha}-{fuel}.cwasm")));
    if let Some(e) = &entry
        && e.exists()
    {
        // Safety: the cache directory is ours and entries are written only
        // below, from Module::serialize of a module this engine compiled;
        // Wasmtime refuses (Err) an entry made for other settings or another
        // Wasmtime version, and we fall back to compiling.
        match unsafe { Module::deserialize_file(engine, e) } {
            Ok(m) => return Ok((m, false)),
            Err(err) => tracing::info!("plugin cache {}: {err}; compiling again", e.display()),
        }
    }
    let m =
        Module::new(engine, bytes).map_err(|e| module_err(path, format!("not a valid WebAssembly module: {e:#}")))?;
    if let Some(e) = &entry {
        let store = || -> std::io::Result<()> {
            let data = m.serialize().map_err(std::io::Error::other)?;
            if let Some(d) = e.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = e.with_extension("tmp");
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, e)
        };
        if let Err(err) = store() {
            tracing::warn!("plugin cache {}: {err}; the module is compiled at every start", e.display());
        }
    }
    Ok((m, true))
}

/// Load the plugin `wasm` with its manifest beside it (`x.wasm` → `x.toml`).
pub fn load_plugin(wasm: &Path, cache: Option<&Path>) -> Result<LoadedPlugin, PluginError> {
    let manifest_path = wasm.with_extension("toml");
    if !manifest_path.exists() {
        return Err(PluginError::Manifest {
            path: manifest_path,
            message: "missing: every plugin needs a manifest beside its .wasm (see docs/plugins.md)".into(),
        });
    }
    let manifest = Manifest::load(&manifest_path)?;
    let bytes = std::fs::read(wasm).map_err(|e| PluginError::io(wasm, e))?;
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let fuel = manifest.limits.fuel.is_some();
    let engine = engine(fuel).clone();
    let (module, compiled) = compile(&engine, fuel, wasm, &bytes, &sha, cache)?;
    for imp in module.imports() {
        check_import(wasm, imp.module(), imp.name(), &manifest)?;
    }
    check_exports(wasm, &module)?;
    let linker = linker(&engine, manifest.grants).map_err(|e| module_err(wasm, format!("{e:#}")))?;
    let pre = linker.instantiate_pre(&module).map_err(|e| module_err(wasm, format!("{e:#}")))?;
    let p = LoadedPlugin {
        name: manifest.name.as_str().into(),
        config: Arc::new(manifest.config.clone()),
        files: Arc::new(manifest.files.clone()),
        manifest,
        wasm: wasm.to_path_buf(),
        manifest_path,
        sha256: sha,
        compiled,
        engine,
        pre,
    };
    // Ask the module its ABI version (no init, no batch: a fresh scratch store).
    let mut store = Store::new(&p.engine, HostState::new(&p, Kv::default()));
    store.epoch_deadline_trap();
    let ticks = super::instance::deadline_ticks(p.manifest.limits.deadline_ms);
    store.set_epoch_deadline(ticks);
    if let Some(f) = p.manifest.limits.fuel {
        let _ = store.set_fuel(f);
    }
    let asked = |e: wasmtime::Error| module_err(wasm, format!("asking its ABI version failed: {e:#}"));
    let ask = p.pre.instantiate(&mut store).and_then(|i| i.get_typed_func::<(), i32>(&mut store, "tapstream_abi"));
    let ask = ask.map_err(asked)?;
    // The deadline is per call, not for instantiating (host work).
    store.set_epoch_deadline(ticks);
    let abi = ask.call(&mut store, ()).map_err(asked)?;
    if abi as u32 != ABI_VERSION {
        return Err(module_err(
            wasm,
            format!(
                "speaks plugin ABI version {abi}; this tapstream speaks version {ABI_VERSION}: rebuild it with a matching SDK"
            ),
        ));
    }
    Ok(p)
}
