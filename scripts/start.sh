#!/usr/bin/env bash
# Start the appliance on a fresh Debian machine with Rust: installs the free
# GeoIP databases and builds the web console (npm), then builds and runs
# tapstream (demo traffic when no interface is configured; the console on
# http://127.0.0.1:8080; arguments go to `tapstream`).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add x86_64-unknown-linux-gnu >/dev/null
bash scripts/geoip.sh >/dev/null
bash scripts/console.sh
exec cargo run --release -- "$@"
