#!/usr/bin/env bash
# Times backup and full restore of the same data with tablesafe and restic, in one run, on
# this machine, into local repositories, and prints the ratios.
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
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin tablesafe
ts="$PWD/$CARGO_TARGET_DIR/release/tablesafe"
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

run() { # name
  local name=$1 data="$work/$1/data"
  local trepo="file://$work/$1/ts-repo" cat="$work/$1/ts.db" rrepo="$work/$1/restic-repo"
  rm -rf "$work/$1/ts-repo" "$cat" "$rrepo" "$work/$1/ts-out" "$work/$1/restic-out"
  local tb rb tr rr
  tb=$(secs "$ts" --repo "$trepo" --catalog "$cat" --node bench backup --init --data-dir "$data")
  restic init -q -r "$rrepo"
  rb=$(secs restic -q -r "$rrepo" backup "$data")
  tr=$(secs "$ts" --repo "$trepo" --catalog "$cat" --node bench restore --at now --to "$work/$1/ts-out")
  rr=$(secs restic -q -r "$rrepo" restore latest --target "$work/$1/restic-out")
  diff -rq "$data/ks" "$work/$1/ts-out/ks" >/dev/null || { echo "tablesafe restore differs" >&2; exit 1; }
  printf '%-6s backup:  tablesafe %6.2f s  restic %6.2f s  ratio %.2fx\n' "$name" "$tb" "$rb" "$(echo "$rb / $tb" | bc -l)"
  printf '%-6s restore: tablesafe %6.2f s  restic %6.2f s  ratio %.2fx\n' "$name" "$tr" "$rr" "$(echo "$rr / $tr" | bc -l)"
}

[ -d "$work/large/data" ] || make_data "$work/large/data" 64 $((16 << 20))
[ -d "$work/small/data" ] || make_data "$work/small/data" 5000 4096
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(restic version | head -1)"
run large
run small
