#!/usr/bin/env bash
# Idle cost of `tablesafe daemon` over a data directory of 10,000 files: after the first
# pass, CPU time used and resident memory over a quiet minute.
#
#   benches/daemon_idle.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin tablesafe
ts="$(cd "$CARGO_TARGET_DIR" && pwd)/release/tablesafe"
work=$(mktemp -d /tmp/tablesafe-idle.XXXXXX)
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
t="$work/data/ks/t-0123456789abcdef0123456789abcdef"
mkdir -p "$t"
for i in $(seq 1 5000); do
  head -c 4096 /dev/urandom > "$t/nb-$i-big-Data.db"
  printf 'Data.db\nTOC.txt\n' > "$t/nb-$i-big-TOC.txt"
done
args=(--repo "file://$work/repo" --catalog "$work/catalog.db" --node idle)
"$ts" "${args[@]}" daemon --init --data-dir "$work/data" --pin-dir "$work/pins" 2>/dev/null &
pid=$!
start=$(date +%s)
until "$ts" "${args[@]}" status --json 2>/dev/null | grep -q '"passes": [1-9]'; do sleep 0.5; done
echo "first pass over 10,000 files: $(( $(date +%s) - start )) s (includes startup)"
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(ticks)
sleep "$secs"
after=$(ticks)
cpu=$(echo "scale=3; ($after - $before) / $hz" | bc)
echo "idle over ${secs} s: ${cpu} s CPU ($(echo "scale=4; 100 * $cpu / $secs" | bc)% of one core)"
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
