//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod smtp;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapstream"))
}

/// Every file under `p`, recursively.
pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let q = e.path();
            if q.is_dir() {
                out.extend(walk(&q));
            } else {
                out.push(q);
            }
        }
    }
    out
}

/// The plugins under plugins/, built from source by
/// scripts/build-plugins.sh (run once per test binary); their directory.
pub fn built_plugins() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash").arg(root.join("scripts/build-plugins.sh")).output().unwrap();
        assert!(out.status.success(), "building the plugins: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Copy built plugins (e.g. "misbehave/loop") into `dir`, manifests beside them.
pub fn install_plugins(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for n in names {
        let stem = Path::new(n).file_name().unwrap().to_str().unwrap();
        for ext in ["wasm", "toml"] {
            std::fs::copy(built_plugins().join(format!("{n}.{ext}")), dir.join(format!("{stem}.{ext}"))).unwrap();
        }
    }
}
