#!/usr/bin/env bash
# Store throughput against peers, on this machine:
#   1 GiB incompressible (random) and 1 GiB compressible (text-like) data, hashed +
#   compressed + stored into file:// and into a local S3 server (s3s-fs), with both
#   write strategies, next to `b3sum` and `zstd -1` on the same files; then peak RSS
#   (/usr/bin/time -v's "maximum resident set size") for a 4 GiB file.
#
# Usage: benches/store_throughput.sh [WORK_DIR]   (needs ~12 GiB free; default /tmp/tablesafe-bench)
# Needs: b3sum, zstd, /usr/bin/time (apt-get install b3sum zstd time).
# Optional: the s3s-fs binary on PATH (cargo install s3s-fs@0.14.1 --features binary
# --locked): then S3 is also measured against a server in its own process ("s3ext"),
# so that the client's CPU and memory are measured apart from the server's. Without it,
# only the in-process server ("s3": client + server in one process) is measured.
#
# Files are read from the page cache (warm): figures measure CPU and the store, not the
# disk. Every tablesafe line gives wall seconds, CPU seconds (user + sys) of the step and
# the process's peak RSS so far.
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
S3S_PID=
cleanup() {
  if [ -n "$S3S_PID" ]; then kill "$S3S_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"/out-*
}
trap cleanup EXIT
[ -f "$WORK/noise-1g" ] || head -c 1G /dev/urandom >"$WORK/noise-1g"
[ -f "$WORK/text-1g" ] || "$BENCH" gen-text "$WORK/text-1g" $((1 << 30))
[ -f "$WORK/noise-4g" ] || head -c 4G /dev/urandom >"$WORK/noise-4g"

BACKENDS="file s3"
if command -v s3s-fs >/dev/null; then
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/out-s3s-root/bench"
  # keys: those of tests/s3support/mod.rs
  s3s-fs --host 127.0.0.1 --port "$PORT" --access-key tablesafe-test-key \
    --secret-key tablesafe-test-secret-0123456789 "$WORK/out-s3s-root" >/dev/null 2>&1 &
  S3S_PID=$!
  for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  BACKENDS="file s3 s3ext"
fi

backend_arg() { # backend, output dir
  case $1 in
    s3ext) echo "s3ext:http://127.0.0.1:$PORT,$2" ;;
    *) echo "$1:$2" ;;
  esac
}

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# load before start: $(cut -d' ' -f1-3 /proc/loadavg)"

for f in noise-1g text-1g; do
  cat "$WORK/$f" >/dev/null # warm the page cache
  echo
  echo "## $f"
  /usr/bin/time -f "peer b3sum: %e s wall, %U s user + %S s sys, max RSS %M KiB" b3sum "$WORK/$f" >/dev/null
  /usr/bin/time -f "peer b3sum --no-mmap: %e s wall, %U s user + %S s sys, max RSS %M KiB" b3sum --no-mmap "$WORK/$f" >/dev/null
  zsize=$(zstd -q -1 -T0 -c "$WORK/$f" | wc -c)
  for t in 1 0; do
    /usr/bin/time -f "peer zstd -1 -T$t: %e s wall, %U s user + %S s sys, max RSS %M KiB" zstd -q -1 -T$t -c "$WORK/$f" >/dev/null
  done
  echo "peer zstd -1 ratio: $zsize / $(stat -c %s "$WORK/$f") bytes"
  for strategy in hash-first staging; do
    for backend in $BACKENDS; do
      out="$WORK/out-$backend-$strategy"
      rm -rf "$out"
      echo "tablesafe $backend $strategy:"
      "$BENCH" put "$(backend_arg "$backend" "$out")" "$strategy" "$WORK/$f" | sed 's/^/  /'
      rm -rf "$out"
      if [ -d "$WORK/out-s3s-root/bench" ]; then find "$WORK/out-s3s-root/bench" -mindepth 1 -delete; fi
    done
  done
done

echo
echo "## peak RSS, 4 GiB incompressible file (hash-first: put, put again, restore)"
cat "$WORK/noise-4g" >/dev/null || true
for backend in $BACKENDS; do
  out="$WORK/out-rss-$backend"
  rm -rf "$out"
  /usr/bin/time -f "tablesafe $backend 4 GiB: %e s wall, %U s user + %S s sys, max RSS %M KiB" \
    "$BENCH" put "$(backend_arg "$backend" "$out")" hash-first "$WORK/noise-4g" | sed 's/^/  /'
  rm -rf "$out"
  if [ -d "$WORK/out-s3s-root/bench" ]; then find "$WORK/out-s3s-root/bench" -mindepth 1 -delete; fi
done
/usr/bin/time -f "peer b3sum 4 GiB (whole-file mmap): %e s wall, %U s user + %S s sys, max RSS %M KiB" b3sum "$WORK/noise-4g" >/dev/null
