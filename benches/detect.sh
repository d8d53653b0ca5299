#!/usr/bin/env bash
# Whole-process cost of detection: `tapstream ingest` of the same capture
# with the detectors on (default settings) and off (`detect.enabled =
# false`), alternating, in one run. Not part of CI.
#
#   bash benches/detect.sh [PACKETS] [RUNS]
#
# The capture (default 2 000 000 packets of `tapstream synth` at 20 000
# packets/s, so 100 s of traffic and 100 detection seconds) is locked in the
# page cache with vmtouch. Prints each configuration's median wall time and
# the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${1:-2000000}
RUNS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
command -v vmtouch >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq vmtouch >/dev/null; }
# the api crate embeds the console: build it first
[ -n "${SKIP_BUILD:-}" ] || { bash scripts/console.sh && cargo build --release -q; }
TS="$CARGO_TARGET_DIR/release/tapstream"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapstream-detect.XXXXXX")
LOCK_PID=
cleanup() { [ -n "$LOCK_PID" ] && kill "$LOCK_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
PCAP="$WORK/bench.pcap"
"$TS" synth --out "$PCAP" --packets "$PACKETS" --pps 20000 --seed 1 2>/dev/null
vmtouch -q -l "$PCAP" & LOCK_PID=$!
sleep 2
printf '[detect]\nenabled = false\n' > "$WORK/off.toml"
printf '[detect]\nenabled = true\n' > "$WORK/on.toml"
declare -A T
for i in $(seq "$RUNS"); do
    for mode in on off; do
        rm -rf "$WORK/d"
        s=$(date +%s.%N)
        "$TS" --config "$WORK/$mode.toml" ingest --quiet --data "$WORK/d" "$PCAP" 2>/dev/null
        e=$(date +%s.%N)
        T[$mode]="${T[$mode]:-} $(echo "$e - $s" | bc -l)"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ON=$(echo "${T[on]}" | median)
OFF=$(echo "${T[off]}" | median)
echo "packets $PACKETS runs $RUNS"
echo "detection on:  median ${ON} s (runs:${T[on]})"
echo "detection off: median ${OFF} s (runs:${T[off]})"
echo "cost: $(echo "($ON / $OFF - 1) * 100" | bc -l | cut -c1-5) %"
