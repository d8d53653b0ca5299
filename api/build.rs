//! The console's built files are embedded in this crate: they must exist
//! before it compiles. When they do not (a fresh clone built with plain
//! `cargo build` or `cargo run`), this script builds them with
//! `scripts/console.sh`, which the start, test and CI scripts also run first.

use std::path::Path;
use std::process::Command;

fn main() {
    // Read at run time: a build script compiled for one checkout is reused
    // by another sharing the target directory (the CI cache).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dist = Path::new(&manifest).join("../console/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-changed={}", dist.join("index.html").display());
    println!("cargo:rerun-if-changed={}", dist.join("assets").display());
    if dist.join("index.html").is_file() {
        return;
    }
    let script = Path::new(&manifest).join("../scripts/console.sh");
    println!("cargo:warning=the web console is not built: building it with {}", script.display());
    let built = Command::new("bash").arg(&script).status();
    if !matches!(built, Ok(s) if s.success()) || !dist.join("index.html").is_file() {
        panic!(
            "the web console is not built ({} has no index.html) and `bash scripts/console.sh` \
             (npm ci && npm run build in console/) failed: {built:?}. It needs Node.js 20 or newer and npm.",
            dist.display()
        );
    }
}
