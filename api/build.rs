//! The console's built files are embedded in this crate: they must exist
//! before it compiles. `bash scripts/console.sh` builds them (the start,
//! test and CI scripts run it first).

fn main() {
    // Read at run time: a build script compiled for one checkout is reused
    // by another sharing the target directory (the CI cache).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dist = std::path::Path::new(&manifest).join("../console/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-changed={}", dist.join("index.html").display());
    println!("cargo:rerun-if-changed={}", dist.join("assets").display());
    if !dist.join("index.html").is_file() {
        panic!(
            "the web console is not built: {} has no index.html. Run `bash scripts/console.sh` \
             (npm ci && npm run build in console/) first.",
            dist.display()
        );
    }
}
