#!/usr/bin/env bash
# tablesafe against the tools an operator would use instead, on the same generated
# Cassandra-like data, on this machine, in one run:
#
#   benches/compare.sh [SIZE] [SSTABLES] [WORK_DIR]
#     SIZE      data size, e.g. 2G (default), 500M
#     SSTABLES  SSTables of eight files each (default 1250: 10,000 files)
#     WORK_DIR  default: a new directory under /tmp (needs ~10x SIZE free; removed at the
#               end unless KEEP=1)
#
# Steps, each timed for every tool:
#   1. initial backup
#   2. no-change backup
#   3. backup after a flush (8 new small SSTables), a compaction (4 SSTables of the busiest
#      table replaced by one) and `nodetool snapshot shop` (hard links of one keyspace)
#   4. full restore of the latest backup into an empty directory, starting from the
#      repository alone (tablesafe's catalog and restic's cache are deleted first);
#      every restored tree is checked file by file against b3sum of the source. Then
#      `sync` is timed on its own ("sync" rows): tablesafe fsyncs every file before it
#      reports success, restic and borg leave their writes to the kernel's writeback,
#      so "restore + sync" compares the time until the files are on disk. Restored trees
#      are kept until every tool has restored: this machine's ext4 has no journal, and
#      without one, creating files right after deleting thousands costs each new inode a
#      scan past the recently deleted ones (`recently_deleted()`), which would tax
#      whichever tool comes next. tablesafe's and restic's restores from the local
#      directory then run again, RESTORE_ROUNDS rounds in all (default 3), alternating
#      which goes first, each round a minute after the last deletions: the report gives
#      every round, the best of each tool and the median ratio, since a burst of steal
#      can double a 4-second restore.
# Tools: tablesafe and restic into a local directory and into a local S3-protocol server
# (s3s-fs on 127.0.0.1, its own process, the same for both), borg into a local directory,
# and the physical baseline over the initial files: `b3sum` and `zstd -1 -T0`, each reading
# every file once (baseline = the two added). For restores from S3 the floor is the
# server's: before each tool's S3 restore, `curl` GETs every object of that tool's
# repository, 8 at a time, into /dev/null ("get-<tool>" rows): no restore from that
# server can take less time than sending those bytes does.
#
# Measured with /usr/bin/time: wall seconds, CPU seconds (user + sys) and peak RSS of the
# tool's process; for S3 rows, the server's CPU seconds during the step too. "stored" is
# the repository's size after the step (du --apparent-size); "steal" the seconds the
# hypervisor gave the machine's cores to someone else during it. The page cache is warm for
# every tool alike (the data was just generated; each restore reads a repository the
# machine just wrote). Settings: tablesafe defaults plus --pack-small-files (PACK=0: without)
# (zstd -1, --parallel 4 for backup, 8
# for restore); restic 0.14 defaults (repository v2, compression auto, encrypted: restic
# cannot turn encryption off); borg 1.2 `-e none`, default lz4 compression.
#
# Installs restic, borg, b3sum and zstd from Debian's packages if missing, and s3s-fs
# with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2G}
# PACK=0 stores every file as its own blob (tablesafe's default); PACK=1 (default here)
# backs up with --pack-small-files.
TS_PACK=$([ "${PACK:-1}" = 1 ] && echo --pack-small-files || true)
SSTABLES=${2:-1250}
work=${3:-$(mktemp -d /tmp/tablesafe-compare.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v b3sum >/dev/null || need+=(b3sum)
command -v zstd >/dev/null || need+=(zstd)
[ -x /usr/bin/time ] || need+=(time)
command -v bc >/dev/null || need+=(bc)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v s3s-fs >/dev/null || cargo install --quiet --locked s3s-fs@0.14.1 --features binary

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin tablesafe --example gen_data
target=$(cd "$CARGO_TARGET_DIR" && pwd)/release
ts="$target/tablesafe"
gen="$target/examples/gen_data"

data="$work/data"
results="$work/results.tsv" # tool backend step wall cpu rss_kib stored_bytes server_cpu objects steal
: >"$results"
s3root="$work/s3"
s3port=${S3_PORT:-18015}
s3pid=
cleanup() {
  [ -n "$s3pid" ] && kill "$s3pid" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"/{data,s3,repo-*,out-*,cache-*,*.zst,*.db}; fi
}
trap cleanup EXIT

log() { echo "[$(date +%T)] $*" >&2; }

# ---------------------------------------------------------------- data and baseline
log "generating $SIZE in $SSTABLES SSTables under $data"
gen_init=$("$gen" init "$data" --size "$SIZE" --sstables "$SSTABLES")
log "data: $gen_init"
files=$(find "$data" -type f | wc -l)
bytes=$(du -sb --apparent-size "$data" | cut -f1)

server_cpu() { # seconds of CPU the S3 server has used so far
  if [ -n "$s3pid" ]; then
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$s3pid/stat"
  else
    echo 0
  fi
}

# measure TOOL BACKEND STEP STORED_DIR -- command...
measure() {
  local tool=$1 backend=$2 step=$3 stored=$4
  shift 5
  local tf="$work/time.out" before after waits
  before=$(server_cpu)
  waits=$(machine_waits)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >"$work/last.out" 2>"$work/last.err"; then
    echo "FAILED: $tool $backend $step: $*" >&2
    cat "$work/last.err" >&2
    exit 1
  fi
  after=$(server_cpu)
  local size=0 objects=0
  if [ -n "$stored" ] && [ -e "$stored" ]; then
    size=$(du -sb --apparent-size "$stored" | cut -f1)
    objects=$(find "$stored" -type f | wc -l)
  fi
  read -r wall user sys rss <"$(tail -1 "$tf" >"$tf.1" && echo "$tf.1")"
  local srv=-
  [ "$backend" = s3 ] && srv=$(echo "$after - $before" | bc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$backend" "$step" "$wall" \
    "$(echo "$user + $sys" | bc -l)" "$rss" "$size" "$srv" "$objects" "$(steal_since "$waits")" >>"$results"
  log "$tool $backend $step: ${wall}s wall, $(echo "$user + $sys" | bc -l)s CPU, $((rss / 1024)) MiB;" \
    "machine: $(waits_since "$waits")"
}

# The machine's iowait and steal (the hypervisor running someone else) so far, in
# seconds summed over the cores: a step whose wall time is far above its CPU time/cores
# was waiting on one or the other.
machine_waits() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{print $6 / hz, $9 / hz}' /proc/stat; }
waits_since() {
  echo "$1 $(machine_waits)" | awk '{printf "iowait %.1fs, steal %.1fs", $3 - $1, $4 - $2}'
}
steal_since() { echo "$1 $(machine_waits)" | awk '{printf "%.1f", $4 - $2}'; }

log "baseline over $files files, $bytes bytes"
(cd "$data" && find . -type f -print0 | sort -z) >"$work/files0"
measure b3sum - backup "" -- sh -c "cd '$data' && xargs -0 b3sum <'$work/files0' >'$work/manifest-initial'"
measure zstd - backup "$work/baseline.zst" -- \
  sh -c "cd '$data' && xargs -0 zstd -1 -T0 -q -c <'$work/files0' >'$work/baseline.zst'"

# ---------------------------------------------------------------- tools
mkdir -p "$s3root/bench"
s3s-fs --host 127.0.0.1 --port "$s3port" --access-key bench --secret-key benchsecret "$s3root" \
  >"$work/s3s.log" 2>&1 &
s3pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT=http://127.0.0.1:$s3port AWS_ALLOW_HTTP=true
until (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null; do sleep 0.2; done

export RESTIC_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR="$work/cache-borg"

configs=(tablesafe:file tablesafe:s3 restic:file restic:s3 borg:file)

repo_dir() { # where a configuration's repository lives on disk
  case $2 in
    file) echo "$work/repo-$1" ;;
    s3) echo "$s3root/bench/$1" ;;
  esac
}

backup() { # tool backend step
  local tool=$1 backend=$2 step=$3 dir
  dir=$(repo_dir "$tool" "$backend")
  case $tool:$backend in
    tablesafe:file)
      measure "$tool" "$backend" "$step" "$dir" -- "$ts" -q --repo "file://$dir" \
        --catalog "$work/ts-file.db" --node bench backup --init $TS_PACK --data-dir "$data" --json
      cp "$work/last.out" "$work/ts-$backend-$step.json" ;;
    tablesafe:s3)
      measure "$tool" "$backend" "$step" "$dir" -- "$ts" -q --repo "s3://bench/tablesafe" \
        --catalog "$work/ts-s3.db" --node bench backup --init $TS_PACK --data-dir "$data" --json
      cp "$work/last.out" "$work/ts-$backend-$step.json" ;;
    restic:*)
      local r=$dir
      [ "$backend" = s3 ] && r="s3:http://127.0.0.1:$s3port/bench/restic"
      export RESTIC_CACHE_DIR="$work/cache-restic-$backend"
      [ "$step" = initial ] && restic -q -r "$r" init >/dev/null
      measure "$tool" "$backend" "$step" "$dir" -- restic -q -r "$r" backup "$data" ;;
    borg:file)
      [ "$step" = initial ] && borg init -e none "$dir"
      measure "$tool" "$backend" "$step" "$dir" -- borg create --compression lz4 "$dir::$step" "$data" ;;
  esac
}

download_floor() { # tool: every object of its S3 repository fetched, nothing else done
  local cfg="$work/urls-$1"
  (cd "$s3root/bench" && find "$1" -type f -printf \
    "url = \"http://127.0.0.1:$s3port/bench/%p\"\noutput = \"/dev/null\"\n") >"$cfg"
  measure curl s3 "get-$1" "" -- curl -sS --fail --parallel --parallel-max 8 \
    --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$cfg"
}

restore() { # tool backend
  local tool=$1 backend=$2 dir out="$work/out-$1-$2" root
  dir=$(repo_dir "$tool" "$backend")
  rm -rf "$out"
  [ "$backend" = s3 ] && download_floor "$tool"
  case $tool:$backend in
    tablesafe:*)
      local url="file://$dir"
      [ "$backend" = s3 ] && url="s3://bench/tablesafe"
      rm -f "$work/ts-$backend.db"* # restore from the repository alone
      measure "$tool" "$backend" restore "" -- "$ts" -q --repo "$url" \
        --catalog "$work/ts-$backend.db" --node bench restore --at now --to "$out" --include-snapshots
      measure "$tool" "$backend" sync "" -- sync
      root=$out ;;
    restic:*)
      local r=$dir
      [ "$backend" = s3 ] && r="s3:http://127.0.0.1:$s3port/bench/restic"
      export RESTIC_CACHE_DIR="$work/cache-restic-$backend"
      rm -rf "$RESTIC_CACHE_DIR"
      measure "$tool" "$backend" restore "" -- restic -q -r "$r" restore latest --target "$out"
      measure "$tool" "$backend" sync "" -- sync
      root=$out$data ;;
    borg:file)
      mkdir -p "$out"
      measure "$tool" "$backend" restore "" -- sh -c "cd '$out' && borg extract '$dir::after'"
      measure "$tool" "$backend" sync "" -- sync
      root=$out$data ;;
  esac
  # Every file, with the right content, and nothing else.
  local n
  n=$(find "$root" -type f | wc -l)
  [ "$n" = "$(tr -cd '\0' <"$work/files0" | wc -c)" ] || { echo "$tool $backend restored $n files" >&2; exit 1; }
  (cd "$root" && b3sum --check --quiet "$work/manifest") || { echo "$tool $backend restore differs" >&2; exit 1; }
}

for c in "${configs[@]}"; do backup "${c%%:*}" "${c##*:}" initial; done
for c in "${configs[@]}"; do backup "${c%%:*}" "${c##*:}" nochange; done

live_files() { (cd "$data" && find . -type f -not -path '*/snapshots/*' -printf '%P\t%s\n' | sort); }
live_files >"$work/live-before"
log "flush, compaction, snapshot"
ops_flush=$("$gen" flush "$data")
ops_compact=$("$gen" compact "$data")
ops_snap=$("$gen" snapshot "$data" --tag bench --keyspace shop)
log "flush $ops_flush; compaction $ops_compact; snapshot $ops_snap"
# The new SSTables: files live now that were not before (a compaction may take flushed ones).
live_files >"$work/live-after"
read -r new_files new_bytes < <(comm -13 "$work/live-before" "$work/live-after" |
  awk -F'\t' '{n++; b += $2} END {print n + 0, b + 0}')
# What a backup has to upload: the distinct contents among the new files and the snapshot's
# manifest and schema that the initial data did not already have (every TOC.txt is alike).
{
  comm -13 "$work/live-before" "$work/live-after" | cut -f1
  (cd "$data" && find . -path '*/snapshots/*' \( -name manifest.json -o -name schema.cql \) -printf '%P\n')
} | tr '\n' '\0' >"$work/new0"
(cd "$data" && xargs -0 b3sum <"$work/new0") >"$work/new.b3"
must_upload=$(awk 'NR == FNR {seen[$1] = 1; next} !($1 in seen) {seen[$1] = 1; print $2}' \
  "$work/manifest-initial" "$work/new.b3" | (cd "$data" && xargs -r stat -c %s) | awk '{b += $1} END {print b + 0}')
# Content bytes the repository holds: blobs of one file each, plus the files in packs.
blob_bytes() { python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute("select coalesce(sum(size), 0) from blobs where hash not in (select pack from packed)").fetchone()[0] + c.execute("select coalesce(sum(size), 0) from (select distinct hash, size from packed)").fetchone()[0])' "$1"; }
ts_blobs_before=$(blob_bytes "$work/ts-file.db")
for c in "${configs[@]}"; do backup "${c%%:*}" "${c##*:}" after; done
ts_uploaded_raw=$(($(blob_bytes "$work/ts-file.db") - ts_blobs_before))

# Restores are checked against the final state of the data.
(cd "$data" && find . -type f -print0 | sort -z) >"$work/files0"
(cd "$data" && xargs -0 b3sum <"$work/files0" >"$work/manifest")
sync
for c in "${configs[@]}"; do restore "${c%%:*}" "${c##*:}"; done
rm -rf "$work"/out-*

# More rounds of the two file:// restores that the restore target compares, alternating
# which goes first, so that a burst of steal in one of them does not decide the ratio. Each
# round starts 61 s after the previous round's trees were deleted and synced: past the
# window in which ext4 without a journal makes a new inode scan past recently deleted ones
# (RECENTCY_MIN in the kernel's ialloc.c).
rounds=${RESTORE_ROUNDS:-3}
main_results=$results
results="$work/rounds.tsv"
: >"$results"
for round in $(seq 2 "$rounds"); do
  sync
  log "restore round $round: waiting 61 s after the last deletions"
  sleep 61
  order="tablesafe:file restic:file"
  [ $((round % 2)) = 0 ] && order="restic:file tablesafe:file"
  for c in $order; do restore "${c%%:*}" "${c##*:}"; done
  rm -rf "$work"/out-*
done
results=$main_results

# ---------------------------------------------------------------- report
json_num() { sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1" | head -1; }
snap_meta=$(echo "$ops_snap" | sed 's/.*"bytes":\([0-9]*\),.*/\1/')
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
report="$work/report.md"
{
  echo "Data: $files files, $(echo "scale=2; $bytes / 1073741824" | bc) GiB ($SSTABLES SSTables in 12 tables of 3 keyspaces; \`benches/gen_data.rs\`)."
  echo "Machine: $(nproc) cores ($cpu_model), $(free -g | awk '/Mem:/{print $2}') GiB RAM; $(restic version | cut -d' ' -f1-2), $(borg --version), $(b3sum --version), zstd $(zstd -V | sed 's/.*v\([0-9.]*\).*/\1/')."
  echo
  echo "| tool | repo | step | wall s | CPU s | peak RSS MiB | stored MiB | objects | S3 server CPU s | steal s |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{
    stored = ($7 > 0) ? sprintf("%.1f", $7 / 1048576) : "";
    objects = ($9 > 0) ? $9 : "";
    srv = ($8 == "-") ? "" : sprintf("%.2f", $8);
    printf "| %s | %s | %s | %.2f | %.2f | %.0f | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 / 1024, stored, objects, srv, $10
  }' "$results"
  echo
  echo "steal: seconds the hypervisor ran something else instead of this machine during the step (from /proc/stat, summed over the cores); a step with much of it was slowed by another tenant, not by the tool."
  echo
  echo "Speed-up of tablesafe (the other tool's wall time ÷ tablesafe's, same repository kind; >1: tablesafe is faster). Baseline: tablesafe's wall time ÷ (b3sum + zstd)."
  echo
  echo "| step | vs restic (file) | vs restic (S3) | vs borg (file) | CPU vs restic (file) | tablesafe (file) ÷ baseline |"
  echo "|---|---:|---:|---:|---:|---:|"
  awk -F'\t' '
    { wall[$1 "/" $2 "/" $3] = $4; cpu[$1 "/" $2 "/" $3] = $5 }
    END {
      base = wall["b3sum/-/backup"] + wall["zstd/-/backup"];
      for (k in wall) {
        split(k, p, "/");
        if (p[3] == "restore") {
          r = p[1] "/" p[2] "/";
          wall[r "restore+sync"] = wall[k] + wall[r "sync"];
          cpu[r "restore+sync"] = cpu[k] + cpu[r "sync"];
        }
      }
      split("initial nochange after restore restore+sync", steps, " ");
      for (i = 1; i <= 5; i++) {
        s = steps[i];
        t = wall["tablesafe/file/" s]; t3 = wall["tablesafe/s3/" s];
        if (t == 0) t = 0.005; if (t3 == 0) t3 = 0.005;
        tc = cpu["tablesafe/file/" s]; if (tc == 0) tc = 0.005;
        b = (s == "initial") ? sprintf("%.2fx", t / base) : "";
        printf "| %s | %.2fx | %.2fx | %.2fx | %.2fx | %s |\n", s,
          wall["restic/file/" s] / t, wall["restic/s3/" s] / t3, wall["borg/file/" s] / t,
          cpu["restic/file/" s] / tc, b
      }
    }' "$results"
  echo
  echo "Restore from file:// in $rounds rounds (round 1 is the table's; later rounds alternate which tool goes first):"
  echo
  echo "| round | tablesafe s | restic s | ratio | with \`sync\` | steal s (tablesafe, restic) |"
  echo "|---|---:|---:|---:|---:|---|"
  # Rows of each round in order: a tool's restore row, then its sync row.
  { grep -P '^(tablesafe|restic)\tfile\t(restore|sync)\t' "$results"; cat "$work/rounds.tsv"; } | awk -F'\t' '
    $3 == "restore" { round[$1]++; r = round[$1]; wall[$1, r] = $4; steal[$1, r] = $10; n = (r > n) ? r : n }
    $3 == "sync" { sync[$1, round[$1]] = $4 }
    END {
      best_t = best_r = 1e9;
      for (r = 1; r <= n; r++) {
        t = wall["tablesafe", r]; x = wall["restic", r];
        ratio[r] = x / t;
        printf "| %d | %.2f | %.2f | %.2fx | %.2fx | %s, %s |\n", r, t, x, x / t,
          (x + sync["restic", r]) / (t + sync["tablesafe", r]), steal["tablesafe", r], steal["restic", r];
        if (t < best_t) best_t = t; if (x < best_r) best_r = x;
      }
      # Median of the ratios (insertion sort: a handful of rounds).
      for (i = 2; i <= n; i++) { v = ratio[i]; for (j = i - 1; j >= 1 && ratio[j] > v; j--) ratio[j + 1] = ratio[j]; ratio[j + 1] = v }
      med = (n % 2) ? ratio[(n + 1) / 2] : (ratio[n / 2] + ratio[n / 2 + 1]) / 2;
      printf "\nBest of %d rounds each: tablesafe %.2f s, restic %.2f s: %.2fx. Median of the rounds'"'"' ratios: %.2fx.\n", n, best_t, best_r, best_r / best_t, med
    }'
  echo
  awk -F'\t' '
    { wall[$1 "/" $2 "/" $3] = $4 }
    END {
      for (i = split("tablesafe restic", tools, " "); i > 0; i--) {
        t = tools[i]; f = wall["curl/s3/get-" t]; r = wall[t "/s3/restore"];
        line[i] = sprintf("%s'"'"'s repository %.2f s, its restore from S3 %.2f s (%.2fx the floor)", t, f, r, r / f);
      }
      printf "Restore from S3 against the server'"'"'s floor (curl fetching every object of the repository, 8 at a time, bytes discarded): %s; %s. Half of restic'"'"'s restore is %.2f s.\n",
        line[1], line[2], wall["restic/s3/restore"] / 2
    }' "$results"
  echo
  echo "After the flush, compaction and snapshot: the new SSTables are $new_files files, $new_bytes bytes; with the snapshot's manifest and schema ($snap_meta bytes), $must_upload bytes of content the repository did not have."
  verdict="exactly that"
  [ "$ts_uploaded_raw" = "$must_upload" ] || verdict="NOT that"
  echo "tablesafe (file) uploaded blobs of $ts_uploaded_raw bytes before compression: $verdict."
  for b in file s3; do
    f="$work/ts-$b-after.json"
    echo "tablesafe ($b): $(json_num "$f" files_hashed) files read ($(json_num "$f" bytes_read) bytes), $(json_num "$f" blobs_uploaded) blobs uploaded ($(json_num "$f" bytes_uploaded) bytes stored), $(json_num "$f" files_unchanged) files unchanged and not read."
  done
  f="$work/ts-file-nochange.json"
  echo "No-change backup: tablesafe saw $(json_num "$f" files_seen) files, read $(json_num "$f" files_hashed)."
} >"$report"
cat "$report"
cp "$report" "$results" "$work/rounds.tsv" "${REPORT_DIR:-/tmp}/" 2>/dev/null || true
