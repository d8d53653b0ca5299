#!/usr/bin/env bash
# Build every plugin under plugins/ from source into
# $CARGO_TARGET_DIR/plugins (or the directory given as $1):
#   examples/   beacon (Rust), tls_watch (C), dns_exfil (AssemblyScript),
#               each .wasm with its manifest beside it
#   misbehave/  loop, hog, trap, badabi (C): the sandbox tests' culprits;
#               count and count2 (two versions of one plugin, for hot reload)
# Installs what it needs: the wasm32 Rust target, Debian's clang and lld,
# AssemblyScript from npm. Prints the output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
out="${1:-$CARGO_TARGET_DIR/plugins}"
mkdir -p "$out/examples" "$out/misbehave"

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld >/dev/null
fi

# Rust: cdylib for wasm32, no debug info.
cargo build --quiet --release --target wasm32-unknown-unknown -p tapstream-plugin-beacon \
    --config 'profile.release.debug=false' --config 'profile.release.strip=true'
cp "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/tapstream_plugin_beacon.wasm" "$out/examples/beacon.wasm"
cp plugins/beacon/beacon.toml "$out/examples/beacon.toml"

# C: freestanding, bulk-memory so struct copies need no libc memcpy.
cc_wasm() {
    clang --target=wasm32 -O2 -nostdlib -mbulk-memory -Wall -Werror -I plugin-sdk/include \
        -Wl,--no-entry -Wl,--export-dynamic -Wl,--strip-all "$@"
}
cc_wasm -o "$out/examples/tls_watch.wasm" plugins/tls-watch/tls_watch.c
cp plugins/tls-watch/tls_watch.toml "$out/examples/tls_watch.toml"
for v in loop hog trap badabi count count2; do
    cc_wasm "-D${v^^}" -o "$out/misbehave/$v.wasm" plugins/misbehave/misbehave.c
    cp "plugins/misbehave/${v%2}.toml" "$out/misbehave/$v.toml"
done

# AssemblyScript: the compiler from npm (pinned in package-lock.json).
(
    cd plugins/dns-exfil
    if [ ! -x node_modules/.bin/asc ]; then
        npm ci --no-audit --no-fund --silent >/dev/null
    fi
    node_modules/.bin/asc assembly/index.ts --runtime incremental \
        --use abort=../../plugin-sdk/assemblyscript/tapstream/tsAbort -O3 --noAssert \
        -o "$out/examples/dns_exfil.wasm"
)
cp plugins/dns-exfil/dns_exfil.toml "$out/examples/dns_exfil.toml"
echo "$out"
