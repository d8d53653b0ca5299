#!/usr/bin/env bash
# Whole-process pcap → flow records, tapstream against nfdump's nfpcapd and
# softflowd on the same capture, side by side in one run. Not part of CI.
#
#   bash benches/peers.sh [PACKETS] [RUNS]
#
# Makes a capture with `tapstream synth` (default 4 000 000 packets), locks it
# in the page cache with vmtouch, then runs every tool RUNS times (default 5)
# in rotation and prints the median wall time, packets/s, ratios and peak RSS.
# CAPTURE=FILE uses that capture instead (PACKETS must then be its packet
# count), e.g. one made by ../shared/tools/gen_pcap.py. `cat` and the two
# floor_* rows (benches/read_floor.c) are no peers: they show what merely
# reading the file costs here.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${1:-4000000}
RUNS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
if ! command -v nfpcapd >/dev/null || ! command -v softflowd >/dev/null || ! command -v vmtouch >/dev/null || ! command -v gcc >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nfdump softflowd vmtouch time gcc >/dev/null
fi
# the api crate embeds the console: build it first (SKIP_BUILD=1 measures
# the release binary already in the target dir)
[ "${SKIP_BUILD:-0}" = 1 ] || { bash scripts/console.sh && cargo build --release -q; }
TS="$CARGO_TARGET_DIR/release/tapstream"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapstream-bench.XXXXXX")
LOCK_PID=
cleanup() { [ -n "$LOCK_PID" ] && kill "$LOCK_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -n "${CAPTURE:-}" ]; then
    PCAP=$CAPTURE
    ORIGIN=$CAPTURE
else
    PCAP="$WORK/bench.pcap"
    "$TS" synth --out "$PCAP" --packets "$PACKETS" --seed 1 2>/dev/null
    ORIGIN="tapstream synth --seed 1"
fi
SIZE=$(stat -c %s "$PCAP")
vmtouch -q -l "$PCAP" & LOCK_PID=$!
sleep 2

# Each tool reads the same file and writes its flow records (softflowd
# exports NetFlow to a closed port on loopback).
run_tapstream() { rm -rf "$WORK/ts"; "$TS" ingest --quiet --data "$WORK/ts" "$PCAP" 2>/dev/null || true; }
run_nfpcapd() { rm -rf "$WORK/nf"; mkdir -p "$WORK/nf"; nfpcapd -r "$PCAP" -w "$WORK/nf" >/dev/null 2>&1 || true; }
# softflowd 1.1.0 waits forever on its control socket after reading a file
# when the socket path is longer than about 12 characters: keep it short.
run_softflowd() { rm -f /tmp/sf.ctl; softflowd -d -r "$PCAP" -n 127.0.0.1:9 -c /tmp/sf.ctl -p /tmp/sf.pid -m 262144 >/dev/null 2>&1 || true; }
run_cat() { cat "$PCAP" >/dev/null; }
# The floor under any reader of this file (benches/read_floor.c): walking
# its record headers and the first bytes of each frame, nothing else.
gcc -O2 -o "$WORK/read_floor" benches/read_floor.c
run_floor_chain() { "$WORK/read_floor" "$PCAP" chain >/dev/null; }
run_floor_stream() { "$WORK/read_floor" "$PCAP" stream >/dev/null; }

TOOLS="tapstream nfpcapd softflowd cat floor_chain floor_stream"
declare -A TIMES RSS
for t in $TOOLS; do TIMES[$t]=""; RSS[$t]=0; done
for ((i = 0; i < RUNS; i++)); do
    for t in $TOOLS; do
        out=$( { /usr/bin/time -f "%e %M" bash -c "$(declare -f run_$t); WORK='$WORK' PCAP='$PCAP' TS='$TS' run_$t" ; } 2>&1 | tail -1 || true)
        TIMES[$t]+="${out% *} "
        kb=${out#* }
        if (( kb > ${RSS[$t]} )); then RSS[$t]=$kb; fi
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "capture: $PACKETS packets, $SIZE bytes ($ORIGIN), page cache locked; $RUNS runs each, median"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
TSM=$(echo "${TIMES[tapstream]}" | median)
printf "| tool | median s | Mpackets/s | tapstream speed-up | peak RSS MiB |\n|---|---|---|---|---|\n"
for t in $TOOLS; do
    m=$(echo "${TIMES[$t]}" | median)
    awk -v t="$t" -v m="$m" -v p="$PACKETS" -v ts="$TSM" -v r="${RSS[$t]}" \
        'BEGIN { printf "| %s | %.2f | %.2f | %.2fx | %.0f |\n", t, m, p/m/1e6, m/ts, r/1024 }'
done
