#!/usr/bin/env bash
# Store throughput against peers, on this machine:
#   1 GiB incompressible (random) and 1 GiB compressible (text-like) data, hashed +
#   compressed + stored into file:// and into a local S3 server (s3s-fs, in process),
#   with both write strategies, next to `b3sum` and `zstd -1` on the same files;
#   then peak RSS (/usr/bin/time -v) for a 4 GiB file.
#
# Usage: benches/store_throughput.sh [WORK_DIR]   (needs ~12 GiB free; default /tmp/tablesafe-bench)
# Needs: b3sum, zstd, /usr/bin/time (apt-get install b3sum zstd time).
# Files are read from the page cache (warm): figures measure CPU and the store, not the disk.
set -euo pipefail

WORK=${1:-/tmp/tablesafe-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
for tool in b3sum zstd /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install b3sum zstd time)"; exit 1; }
done

(cd "$ROOT" && cargo build --release --quiet --example store_bench)
BENCH=$CARGO_TARGET_DIR/release/examples/store_bench

mkdir -p "$WORK"
trap 'rm -rf "$WORK"/out-*' EXIT
[ -f "$WORK/noise-1g" ] || head -c 1G /dev/urandom >"$WORK/noise-1g"
[ -f "$WORK/text-1g" ] || "$BENCH" gen-text "$WORK/text-1g" $((1 << 30))
[ -f "$WORK/noise-4g" ] || head -c 4G /dev/urandom >"$WORK/noise-4g"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# load before start: $(cut -d' ' -f1-3 /proc/loadavg)"

for f in noise-1g text-1g; do
  cat "$WORK/$f" >/dev/null # warm the page cache
  echo
  echo "## $f"
  /usr/bin/time -f "peer b3sum: %e s, max RSS %M KiB" b3sum "$WORK/$f" >/dev/null
  /usr/bin/time -f "peer b3sum --no-mmap: %e s, max RSS %M KiB" b3sum --no-mmap "$WORK/$f" >/dev/null
  zsize=$(zstd -q -1 -T0 -c "$WORK/$f" | wc -c)
  for t in 1 0; do
    /usr/bin/time -f "peer zstd -1 -T$t: %e s, max RSS %M KiB" zstd -q -1 -T$t -c "$WORK/$f" >/dev/null
  done
  echo "peer zstd -1 ratio: $zsize / $(stat -c %s "$WORK/$f") bytes"
  for strategy in hash-first staging; do
    for backend in file s3; do
      out="$WORK/out-$backend-$strategy"
      rm -rf "$out"
      echo "tablesafe $backend $strategy:"
      "$BENCH" put "$backend:$out" "$strategy" "$WORK/$f" | sed 's/^/  /'
      rm -rf "$out"
    done
  done
done

echo
echo "## peak RSS, 4 GiB incompressible file"
cat "$WORK/noise-4g" >/dev/null || true
for backend in file s3; do
  out="$WORK/out-rss-$backend"
  rm -rf "$out"
  /usr/bin/time -f "tablesafe $backend put+dedup+restore 4 GiB: %e s, max RSS %M KiB" \
    "$BENCH" put "$backend:$out" hash-first "$WORK/noise-4g" | sed 's/^/  /'
  rm -rf "$out"
done
/usr/bin/time -f "peer b3sum 4 GiB (whole-file mmap): %e s, max RSS %M KiB" b3sum "$WORK/noise-4g" >/dev/null
