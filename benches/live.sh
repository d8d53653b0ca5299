#!/usr/bin/env bash
# Live capture on a veth pair, tapstream against tcpdump, side by side in one
# run. Not part of CI. Needs root.
#
#   [FRACTIONS="1 0.8 0.6"] bash benches/live.sh [PACKETS] [RUNS]
#
# Two network namespaces joined by a veth pair (one queue). The generator,
# pinned to core 0, is `tapstream gen --tx xdp-live`: the kernel's XDP
# live-frame runner bouncing 106-byte UDP frames (1 000 flows, not addressed
# to the capturing host) out of the sending end as fast as it can. Each
# capture tool runs pinned to core 1 on the other end:
#   - tapstream run --iface cap0 (defaults: AF_XDP; one queue, one worker:
#     run to completion on the RX thread)
#   - tcpdump -i cap0 -w /dev/null (libpcap, TPACKET_V3), with GRO on so the
#     veth accepts XDP-transmitted frames without an XDP program.
# On veth the kernel's receive work runs on the sender's core, so the
# generator's speed depends on the capture method: the table gives the
# offered rate achieved, packets captured and lost, and the capture
# process's own CPU time (packets per CPU-second of the capture process).
# Offered = what the generator handed the veth (sent + its tx_dropped);
# lost by the tool = its own drop counters (for tapstream: the kernel's
# XDP socket drops, ring full or no free frame, and worker drops); lost at
# the sender veth = frames it could not hand over (its TX drops: the
# receiving side's queue was full).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${1:-4000000}
RUNS=${2:-3}
# Send fractions to try (see `tapstream gen --send-fraction`): e.g.
# FRACTIONS="1 0.9 0.8 0.7" searches for each tool's highest loss-free rate.
FRACTIONS=${FRACTIONS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapstream/target}"
if ! command -v tcpdump >/dev/null || ! command -v ethtool >/dev/null || ! test -x /usr/bin/time; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump ethtool time >/dev/null
fi
bash scripts/console.sh # the api crate embeds the console
cargo build --release -q
TS="$CARGO_TARGET_DIR/release/tapstream"
A=tsbench-a.$$; B=tsbench-b.$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapstream-live.XXXXXX")
# Kernel housekeeping threads that may take a core for milliseconds (this
# VM's DAMON reclaim thread, kdamond, took core 1 for 6-8 ms at a time,
# longer than the 16k-frame rings last at 4 M packets/s) are kept on the
# generator's core during the runs, as an appliance keeps housekeeping off
# its capture cores, and put back afterwards. Both tools get the same.
KEEP_OFF=()
for pid in $(pgrep '^kdamond' || true); do
    KEEP_OFF+=("$pid:$(taskset -p "$pid" | awk '{print $NF}')")
    taskset -p 1 "$pid" >/dev/null
done
cleanup() {
    ip netns pids "$A" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; rm -rf "$WORK"
    for k in "${KEEP_OFF[@]}"; do taskset -p "${k#*:}" "${k%%:*}" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
for n in "$A" "$B"; do
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$n" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
done
ip link add cap0 netns "$A" type veth peer name gen0 netns "$B"
ip -n "$A" link set cap0 up; ip -n "$B" link set gen0 up
ip netns exec "$A" ethtool -K cap0 gro on >/dev/null

# The offered rates need the live-frame runner; a packet socket cannot
# offer them. Some kernels refuse live-frame runs (a security policy): stop
# with the generator's own error rather than measure the wrong thing.
if ! ip netns exec "$B" "$TS" gen --iface gen0 --tx xdp-live --mix udp-flood --packets 1 >/dev/null; then
    echo "benches/live.sh needs the kernel's XDP live-frame runner (see the error above)" >&2
    exit 1
fi

txdrop() { ip -n "$B" -s -j link show gen0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["dropped"])'; }

echo "machine: $(nproc) cores, $(uname -r); $PACKETS packets per run, $RUNS runs per tool and send fraction, one veth queue"
printf "| send fraction | run | tool | offered Mpps | captured | lost by the tool | lost at the sender veth | capture CPU s | M packets per capture CPU-second |\n|---|---|---|---|---|---|---|---|---|\n"
: >"$WORK/rows"
for f in $FRACTIONS; do
for ((r = 1; r <= RUNS; r++)); do
    for tool in tapstream tcpdump; do
        d0=$(txdrop)
        if [ "$tool" = tapstream ]; then
            ip netns exec "$A" /usr/bin/time -f "CPU %U %S" -o "$WORK/cpu" taskset -c 1 "$TS" ${TS_CONFIG:+--config "$TS_CONFIG"} run --iface cap0 \
                --data "$WORK/data" --summary "$WORK/s.json" >"$WORK/log" 2>&1 &
            ready="ready:"
        else
            ip netns exec "$A" /usr/bin/time -f "CPU %U %S" -o "$WORK/cpu" taskset -c 1 tcpdump -i cap0 -w /dev/null >"$WORK/log" 2>&1 &
            ready="listening"
        fi
        until grep -q "$ready" "$WORK/log"; do sleep 0.1; done
        sleep 0.5
        read -r sent secs < <(ip netns exec "$B" taskset -c 0 "$TS" gen --iface gen0 --tx xdp-live --mix udp-flood \
            --flows 1000 --pps 1000000000 --packets "$PACKETS" --send-fraction "$f" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["packets"] + d["tx_dropped"], d["seconds"])')
        sleep 1
        if [ "$tool" = tapstream ]; then pkill -INT -f -- "--summary $WORK/s.json"; else pkill -INT -x tcpdump; fi
        while pgrep -f -- "--summary $WORK/s.json" >/dev/null || pgrep -x tcpdump >/dev/null; do sleep 0.1; done
        sleep 0.2
        d1=$(txdrop)
        if [ "$tool" = tapstream ]; then
            read -r got lost < <(python3 -c "import json; d=json.load(open('$WORK/s.json')); print(d['packets'], d['kernel_drops']+d['worker_drops'])")
        else
            got=$(awk '/packets captured/{print $1}' "$WORK/log")
            lost=$(awk '/dropped by kernel/{print $1}' "$WORK/log")
        fi
        txlost=$((d1 - d0))
        cpu=$(awk '/^CPU/{print $2 + $3}' "$WORK/cpu")
        awk -v f="$f" -v r="$r" -v t="$tool" -v s="$sent" -v sec="$secs" -v g="$got" -v l="$lost" -v x="$txlost" -v c="$cpu" \
            'BEGIN { printf "| %s | %d | %s | %.2f | %d | %d | %d | %.2f | %.2f |\n", f, r, t, s/sec/1e6, g, l, x, c, g/c/1e6 }' | tee -a "$WORK/rows"
    done
done
done
# Each tool's zero-loss rate lies between the highest offered rate at which
# a run lost nothing (neither the tool nor the sender veth) and the lowest at
# which one lost frames; the offered rate of a send fraction varies from run
# to run on a shared machine, so runs are judged one by one.
python3 - "$WORK/rows" <<'PY'
import sys
ok, lossy = {}, {}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip('|').split('|')]
    tool, rate, lost = c[2], float(c[3]), int(c[5]) + int(c[6])
    (lossy if lost else ok).setdefault(tool, []).append(rate)
best = {}
for tool in ("tapstream", "tcpdump"):
    clean = ok.get(tool, [])
    low = min(lossy.get(tool, []), default=None)
    if clean:
        best[tool] = max(clean)
    print(f"{tool}: {len(clean)} loss-free runs, highest {max(clean, default=0):.2f} M packets/s; "
          f"{len(lossy.get(tool, []))} runs lost frames, lowest offered rate among them: "
          + (f"{low:.2f}" if low is not None else "none"))
if len(best) == 2:
    print(f"highest loss-free rate, tapstream over tcpdump: {best['tapstream'] / best['tcpdump']:.2f}x")
PY
