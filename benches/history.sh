#!/usr/bin/env bash
# History queries at scale, tapstream against DuckDB reading the same files,
# side by side in one run. Not part of CI.
#
#   bash benches/history.sh [ROWS] [ROUNDS] [RUNS_PER_PROCESS]
#
# Generates ROWS (default 100 000 000) synthetic flow rows over 30 days of
# hourly partitions ending now (kept under ~/.cache/tapstream/bench-history-ROWS
# for later runs), locks them in the page cache with vmtouch, then for each of
# ROUNDS rounds (default 5) runs the four queries of history_queries.sql
# RUNS_PER_PROCESS times (default 3) in one tapstream process (the `history`
# bench binary, the query crate in process) and in one DuckDB process
# (Python duckdb), alternating, and each query once as a whole
# `tapstream sql` process. Prints the median seconds per query and engine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000000}
ROUNDS=${2:-5}
RUNS=${3:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
command -v vmtouch >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq vmtouch >/dev/null; }
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet duckdb
# IN_PROCESS=0 skips the in-process tapstream runs (and building the bench
# binary in the release profile, a long link); GEN_BIN names a `history`
# bench binary already built (any profile: the files it writes are the same).
IN_PROCESS=${IN_PROCESS:-1}
# the api crate embeds the console: build it first
[ "${SKIP_BUILD:-0}" = 1 ] || { bash scripts/console.sh && cargo build --release -q; }
DATA="${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/bench-history-$ROWS"
if [ -n "${GEN_BIN:-}" ]; then
    BENCH=$GEN_BIN
elif [ "$IN_PROCESS" = 0 ] && [ -f "$DATA/end" ]; then
    BENCH=: # neither generating nor querying in process: no bench binary
else
    cargo bench --bench history --no-run -q 2>/dev/null
    BENCH=$(ls -t "$CARGO_TARGET_DIR"/release/deps/history-* | grep -v '\.d$' | head -1)
fi
TS="$CARGO_TARGET_DIR/release/tapstream"
if [ ! -f "$DATA/end" ]; then
    rm -rf "$DATA"
    END=$(date +%s)
    # Two halves of 15 days each, one per core, then joined.
    "$BENCH" gen "$DATA.a" $((ROWS / 2)) 15 $((END - 15 * 86400)) 1 &
    "$BENCH" gen "$DATA.b" $((ROWS - ROWS / 2)) 15 "$END" 2
    wait
    for h in "$DATA".[ab]/flows/date=*/hour=*; do
        d=$(basename "$(dirname "$h")")
        mkdir -p "$DATA/flows/$d"
        mv "$h" "$DATA/flows/$d/"
    done
    # Each half indexed its closed days; the day the halves share is
    # indexed once joined (a half's index of it no longer matches).
    mkdir -p "$DATA/.hosts/flows"
    for d in "$DATA".[ab]/.hosts/flows/date=*; do
        [ -d "$d" ] && [ ! -e "$DATA/.hosts/flows/$(basename "$d")" ] && mv "$d" "$DATA/.hosts/flows/"
    done
    "$BENCH" index "$DATA" "$END"
    rm -rf "$DATA.a" "$DATA.b"
    echo "$END" > "$DATA/end"
fi
END=$(cat "$DATA/end")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapstream-hist.XXXXXX")
LOCK_PID=
cleanup() { [ -n "$LOCK_PID" ] && kill "$LOCK_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
vmtouch -q -l "$DATA/flows" "$DATA/.hosts" & LOCK_PID=$!
sleep 5

# Whole-process queries: the same text as the in-process runs.
mapfile -t NAMES < <(sed -n 's/^-- name: //p' benches/history_queries.sql)
mapfile -t TSQ < <(sed -n 's/^-- tapstream: //p' benches/history_queries.sql)
at() { date -u -d "@$((END - $1 * 3600))" +%Y-%m-%dT%H:00:00Z; }
for ((r = 0; r < ROUNDS; r++)); do
    if [ "$IN_PROCESS" = 1 ]; then
        "$BENCH" query "$DATA" "$RUNS" "$END" | sed 's/^/tapstream\t/' >> "$WORK/times"
    fi
    python3 benches/history_duckdb.py "$DATA" "$RUNS" "$END" | sed 's/^/duckdb\t/' >> "$WORK/times"
    for i in "${!NAMES[@]}"; do
        q=${TSQ[$i]//\{T24H\}/$(at 24)}; q=${q//\{T7D\}/$(at 168)}; q=${q//\{T30D\}/$(at 720)}
        s=$(date +%s.%N)
        "$TS" sql "$q" --data "$DATA" --format csv --out /dev/null 2>/dev/null
        e=$(date +%s.%N)
        printf "tapstream-sql-process\t%s\t%.4f\t-\n" "${NAMES[$i]}" "$(echo "$e - $s" | bc)" >> "$WORK/times"
        # DuckDB as a whole process too: Python, import, one query.
        s=$(date +%s.%N)
        python3 benches/history_duckdb.py "$DATA" 1 "$END" "${NAMES[$i]}" >/dev/null
        e=$(date +%s.%N)
        printf "duckdb-process\t%s\t%.4f\t-\n" "${NAMES[$i]}" "$(echo "$e - $s" | bc)" >> "$WORK/times"
    done
done
echo "data: $ROWS flow rows, 30 days of hourly partitions, $(du -sb "$DATA/flows" | cut -f1) bytes ($(du -sh "$DATA/flows" | cut -f1)), host index $(du -sb "$DATA/.hosts" | cut -f1) bytes; page cache locked"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); $ROUNDS rounds x $RUNS runs per process"
python3 - "$WORK/times" <<'PY'
import sys, statistics, collections
t = collections.defaultdict(list); rows = {}
for line in open(sys.argv[1]):
    eng, q, s, n = line.rstrip("\n").split("\t")
    t[(eng, q)].append(float(s))
    if n != "-": rows[(eng, q)] = n
qs = list(dict.fromkeys(q for _, q in t))
med = lambda k: statistics.median(t[k]) if t.get(k) else float("nan")
print("| query | tapstream in process p50 s | DuckDB in process p50 s | ratio | `tapstream sql` process p50 s | DuckDB process p50 s | ratio | rows (DuckDB) |")
print("|---|---|---|---|---|---|---|---|")
for q in qs:
    a, b = med(("tapstream", q)), med(("duckdb", q))
    c, d = med(("tapstream-sql-process", q)), med(("duckdb-process", q))
    print(f"| {q} | {a:.3f} | {b:.3f} | {a / b:.2f}x | {c:.3f} | {d:.3f} | {c / d:.2f}x | {rows.get(('duckdb', q))} |")
PY
