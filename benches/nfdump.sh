#!/usr/bin/env bash
# Storage and a top-talkers query against nfdump, on the same capture, side
# by side in one run. Not part of CI.
#
#   bash benches/nfdump.sh [PCAP] [RUNS]
#
# Without PCAP, makes a mixed capture with ../shared/tools/gen_pcap.py
# (--duration 340 --rate 480 --seed 1: about 3.5 M packets, kept under
# ~/.cache/tapstream/). nfpcapd and `tapstream ingest` each turn it into
# their history; then the sizes on disk, and RUNS (default 10) alternating
# runs of `nfdump -R DIR -s srcip/bytes -n 10` and of the same question as a
# whole `tapstream sql` process over our history, median wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${2:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
if ! command -v nfpcapd >/dev/null || ! command -v vmtouch >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nfdump vmtouch >/dev/null
fi
bash scripts/console.sh # the api crate embeds the console
cargo build --release -q
TS="$CARGO_TARGET_DIR/release/tapstream"
PCAP=${1:-}
if [ -z "$PCAP" ]; then
    PCAP="${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/gen_pcap-340s-480.pcap"
    if [ ! -f "$PCAP" ]; then
        python3 -c 'import dpkt' 2>/dev/null || python3 -m pip install --quiet dpkt
        python3 ../shared/tools/gen_pcap.py --out "$PCAP.tmp" --duration 340 --rate 480 --seed 1
        mv "$PCAP.tmp" "$PCAP"
    fi
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapstream-nf.XXXXXX")
LOCKS=()
cleanup() { for p in "${LOCKS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/nf"
nfpcapd -r "$PCAP" -w "$WORK/nf" >/dev/null 2>&1
"$TS" ingest --quiet --data "$WORK/ts" "$PCAP" 2>/dev/null
vmtouch -q -l "$WORK/nf" & LOCKS+=($!)
vmtouch -q -l "$WORK/ts" & LOCKS+=($!)
sleep 3

NF_BYTES=$(du -sb "$WORK/nf" | cut -f1)
NF_FLOWS=$(nfdump -R "$WORK/nf" -q -o csv 2>/dev/null | grep -c '^[0-9]' || true)
ALL="ts >= '2000-01-01T00:00:00Z'"
TS_FLOWS=$("$TS" sql "SELECT count(*) FROM flows WHERE $ALL" --data "$WORK/ts" --format csv 2>/dev/null | tail -1)
Q="SELECT orig_h, sum(orig_ip_bytes + resp_ip_bytes) AS bytes FROM flows WHERE $ALL GROUP BY orig_h ORDER BY bytes DESC LIMIT 10"
nf_q() { nfdump -R "$WORK/nf" -s srcip/bytes -n 10 >/dev/null 2>&1; }
ts_q() { "$TS" sql "$Q" --data "$WORK/ts" --format csv >/dev/null 2>&1; }
: > "$WORK/times"
for ((i = 0; i < RUNS; i++)); do
    for t in nf ts; do
        s=$(date +%s.%N); ${t}_q; e=$(date +%s.%N)
        echo "$t $(echo "$e - $s" | bc)" >> "$WORK/times"
    done
done
med() { grep "^$1 " "$WORK/times" | cut -d' ' -f2 | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
NFM=$(med nf); TSM=$(med ts)
echo "capture: $PCAP, $(stat -c %s "$PCAP") bytes"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); nfdump $(nfdump -V 2>&1 | head -1)"
echo
echo "| history | bytes on disk | flow records | bytes per flow record |"
echo "|---|---|---|---|"
echo "| nfpcapd (nfcapd files) | $NF_BYTES | $NF_FLOWS | $((NF_BYTES / (NF_FLOWS > 0 ? NF_FLOWS : 1))) |"
for t in flows dns tls http dhcp stats; do
    [ -d "$WORK/ts/$t" ] || continue
    b=$(du -sb "$WORK/ts/$t" | cut -f1)
    if [ "$t" = flows ]; then
        echo "| tapstream flows table | $b | $TS_FLOWS | $((b / TS_FLOWS)) |"
    else
        echo "| tapstream $t table | $b | | |"
    fi
done
if [ -d "$WORK/ts/.hosts" ]; then
    echo "| tapstream host index (flows by address, closed days) | $(du -sb "$WORK/ts/.hosts" | cut -f1) | | |"
fi
echo "| tapstream, whole history (every table and the index) | $(du -sb "$WORK/ts" | cut -f1) | | |"
echo
echo "| top 10 sources by bytes | median s over $RUNS runs |"
echo "|---|---|"
echo "| nfdump -R -s srcip/bytes -n 10 | $NFM |"
echo "| tapstream sql (whole process) | $TSM ($(echo "scale=2; $TSM / $NFM" | bc)x nfdump) |"
echo
echo "nfdump's answer:"; nfdump -R "$WORK/nf" -s srcip/bytes -n 10 2>/dev/null | head -14
echo "ours:"; "$TS" sql "$Q" --data "$WORK/ts" 2>/dev/null
