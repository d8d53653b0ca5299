#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust. Installs what it
# needs itself (Python's pyarrow reads our Parquet as an outside engine).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add x86_64-unknown-linux-gnu >/dev/null
# Live-capture tests build network namespaces and veth pairs (iproute2) and
# drive real tools through them (ping; hping3 floods and nmap scans against
# hosts inside those namespaces); exported packet recordings must open in
# tshark.
if ! command -v ip >/dev/null || ! command -v ping >/dev/null || ! command -v tshark >/dev/null \
    || ! command -v hping3 >/dev/null || ! command -v nmap >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iputils-ping tshark hping3 nmap >/dev/null
fi
python3 -c 'import pyarrow' 2>/dev/null || python3 -m pip install --quiet pyarrow
# Alert notifications are delivered to a real SMTP server process on loopback.
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install --quiet aiosmtpd
# Reports are read back with poppler (pdftotext, pdftoppm); the systemd
# unit is checked by systemd-analyze; the Kubernetes manifests by
# kubernetes-validate (schemas bundled, offline) after PyYAML parses them.
if ! command -v pdftotext >/dev/null || ! command -v pdftoppm >/dev/null || ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils systemd >/dev/null
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate
# The API is fuzzed against its own OpenAPI document by schemathesis.
command -v st >/dev/null || python3 -m pip install --quiet 'schemathesis>=4,<5'
# The console is tested in Debian's Chromium, headless, driven by
# playwright-core (npm, from console/package-lock.json); the api crate
# embeds the console's built files, so they are built first.
# Only what is missing: a Node.js from elsewhere (NodeSource) bundles npm
# and conflicts with Debian's npm package.
need=()
command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/console.sh
# GeoIP tests read the free databases from the npm registry.
bash scripts/geoip.sh >/dev/null
# WASM plugins are built from source (Rust for wasm32, C with clang/lld,
# AssemblyScript from npm); the plugin tests load them.
bash scripts/build-plugins.sh >/dev/null
test -d ../shared/corpus/zeek || { echo "missing ../shared/corpus (the golden captures)" >&2; exit 1; }
# The fuzz targets are a workspace of their own (cargo fuzz builds them
# with sanitizers); they must keep building against the engine, with their
# lock file current.
cargo check --quiet --locked --manifest-path fuzz/Cargo.toml --bins
cargo test --workspace --all-targets
