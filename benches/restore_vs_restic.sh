#!/usr/bin/env bash
# Times backup and full restore of the same data with tablesafe and restic, in one run, on
# this machine, into local repositories and into a local S3-protocol server (s3s-fs on
# 127.0.0.1, its own process, the same for both tools), and prints the ratios.
#
#   benches/restore_vs_restic.sh [WORK_DIR]
#
# Data sets (Cassandra layout, complete SSTables: Data.db + TOC.txt):
#   large: 64 SSTables with a 16 MiB Data.db of random bytes (1 GiB, incompressible, like
#          Cassandra's LZ4-compressed chunks)
#   small: 5,000 SSTables with a 4 KiB Data.db (10,000 files)
# Installs restic from Debian's packages if it is missing. Page cache is warm for both
# tools alike (each restore reads a repository the machine just wrote).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/tablesafe-bench.XXXXXX)}
mkdir -p "$work"
command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic; }
command -v s3s-fs >/dev/null || cargo install --quiet --locked s3s-fs@0.14.1 --features binary
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin tablesafe
ts="$(cd "$CARGO_TARGET_DIR" && pwd)/release/tablesafe"
export RESTIC_PASSWORD=bench

make_data() { # dir count size_bytes
  local dir=$1 count=$2 size=$3 t="$1/ks/t-0123456789abcdef0123456789abcdef"
  mkdir -p "$t"
  for i in $(seq 1 "$count"); do
    head -c "$size" /dev/urandom > "$t/nb-$i-big-Data.db"
    printf 'Data.db\nTOC.txt\n' > "$t/nb-$i-big-TOC.txt"
  done
}

secs() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }

run() { # name backend(file|s3)
  local name=$1 backend=$2 data="$work/$1/data" out="$work/$1/$2"
  local trepo rrepo cat="$out/ts.db"
  rm -rf "$out"; mkdir -p "$out"
  if [ "$backend" = file ]; then
    trepo="file://$out/ts-repo" rrepo="$out/restic-repo"
  else
    mkdir -p "$s3root/bench-$name"
    trepo="s3://bench-$name/ts" rrepo="s3:http://127.0.0.1:$s3port/bench-$name/restic"
  fi
  local tb rb tr rr
  tb=$(secs "$ts" --repo "$trepo" --catalog "$cat" --node bench backup --init --data-dir "$data")
  restic init -q -r "$rrepo"
  rb=$(secs restic -q -r "$rrepo" backup "$data")
  # The restores start from the repository alone: tablesafe rebuilds its catalog from it.
  rm -f "$cat"
  tr=$(secs "$ts" --repo "$trepo" --catalog "$cat" --node bench restore --at now --to "$out/ts-out")
  rr=$(secs restic -q -r "$rrepo" restore latest --target "$out/restic-out")
  diff -rq "$data/ks" "$out/ts-out/ks" >/dev/null || { echo "tablesafe restore differs" >&2; exit 1; }
  diff -rq "$data/ks" "$out/restic-out$data/ks" >/dev/null || { echo "restic restore differs" >&2; exit 1; }
  printf '%-6s %-5s backup:  tablesafe %6.2f s  restic %6.2f s  restic/tablesafe %.2fx\n' "$name" "$backend" "$tb" "$rb" "$(echo "$rb / $tb" | bc -l)"
  printf '%-6s %-5s restore: tablesafe %6.2f s  restic %6.2f s  restic/tablesafe %.2fx\n' "$name" "$backend" "$tr" "$rr" "$(echo "$rr / $tr" | bc -l)"
  rm -rf "$out"
}

[ -d "$work/large/data" ] || make_data "$work/large/data" 64 $((16 << 20))
[ -d "$work/small/data" ] || make_data "$work/small/data" 5000 4096

s3root="$work/s3"; s3port=${S3_PORT:-18014}
rm -rf "$s3root"
mkdir -p "$s3root"
s3s-fs --host 127.0.0.1 --port "$s3port" --access-key bench --secret-key benchsecret "$s3root" >/dev/null 2>&1 &
s3pid=$!
trap 'kill $s3pid 2>/dev/null' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT=http://127.0.0.1:$s3port AWS_ALLOW_HTTP=true
until (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null; do sleep 0.2; done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(restic version | head -1)"
for backend in file s3; do
  run large "$backend"
  run small "$backend"
done
