//! The catalog at scale: 1,000,000 file versions and ~1,000 named points, then how long
//! `snapshots()` and `live_at(node, T)` take.
//!
//! The history is a node's life: 1,250 live SSTables (10,000 files over 10 tables), then
//! 990 hourly epochs, each flushing or compacting 124 new SSTables into existing tables
//! (992 new paths), removing the 124 oldest (992 versions ended) and rewriting 8
//! Statistics.db files in place (8 new versions of existing paths), with a backup point per
//! epoch: 10,000 + 990 × 1,000 = 1,000,000 versions, about 1,000,000 paths. Batches of 10
//! epochs go through `Catalog::commit` (setup, not measured). The built catalog is kept
//! under `<target>/catalog_scale/` and reused by later runs.
//!
//! Run: `cargo bench --bench catalog_scale`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tablesafe::catalog::{Catalog, Change, FileKey, SnapshotFilter};

const NODE: &str = "node-a";
const TABLES: usize = 10;
const INITIAL_SSTABLES: usize = 1_250;
const EPOCHS: usize = 990;
const NEW_PER_EPOCH: usize = 124;
const REWRITES_PER_EPOCH: usize = 8;
const EPOCHS_PER_BATCH: usize = 10;
const COMPONENTS: [&str; 8] = [
    "Data.db",
    "Index.db",
    "Filter.db",
    "Summary.db",
    "Statistics.db",
    "CompressionInfo.db",
    "Digest.crc32",
    "TOC.txt",
];
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000_000;
const HOUR: i64 = 3_600_000_000;
const EXPECTED_VERSIONS: i64 =
    (INITIAL_SSTABLES * 8 + EPOCHS * (NEW_PER_EPOCH * 8 + REWRITES_PER_EPOCH)) as i64;
const EXPECTED_POINTS: i64 = EPOCHS as i64 + 1;

/// The SQL of `Catalog::live_at` (copied, for EXPLAIN QUERY PLAN).
const LIVE_AT_SQL: &str = "SELECT f.data_dir, f.keyspace, f.table_name, f.table_id, f.rel_path,
        v.hash, v.size, v.mtime, v.valid_from, v.valid_to
 FROM versions v JOIN files f ON f.id = v.file_id
 WHERE f.node = ?1 AND v.valid_from <= ?2 AND (v.valid_to IS NULL OR v.valid_to > ?2)
 ORDER BY f.data_dir, f.keyspace, f.table_name, f.table_id, f.rel_path";

fn key(table: usize, rel_path: String) -> FileKey {
    FileKey {
        data_dir: "/var/lib/cassandra/data".into(),
        keyspace: "app".into(),
        table: format!("table{table}"),
        table_id: format!("{:032x}", 0x5eed_0000 + table),
        rel_path,
    }
}

fn hash(n: u64) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

/// The time of epoch `e` (epoch 0 is the initial state).
fn epoch_time(e: usize) -> i64 {
    T0 + e as i64 * HOUR
}

struct History {
    next_gen: Vec<u64>,
    /// Live SSTables, oldest first: (table, generation).
    live: VecDeque<(usize, u64)>,
    counter: u64,
}

impl History {
    fn new() -> History {
        History {
            next_gen: vec![1; TABLES],
            live: VecDeque::new(),
            counter: 0,
        }
    }

    fn start(&mut self, table: usize, rel: String, at: i64) -> Change {
        self.counter += 1;
        Change::Start {
            key: key(table, rel),
            hash: hash(self.counter),
            size: 1_000 + self.counter % 100_000,
            mtime: at - 1_000_000,
            at,
        }
    }

    fn new_sstable(&mut self, table: usize, at: i64, out: &mut Vec<Change>) {
        let generation = self.next_gen[table];
        self.next_gen[table] += 1;
        for c in COMPONENTS {
            let change = self.start(table, format!("nb-{generation}-big-{c}"), at);
            out.push(change);
        }
        self.live.push_back((table, generation));
    }

    /// Changes of epoch `e` (≥ 1), ending with its backup point.
    fn epoch(&mut self, e: usize, out: &mut Vec<Change>) {
        let at = epoch_time(e);
        for i in 0..NEW_PER_EPOCH {
            self.new_sstable((e + i) % TABLES, at + i as i64, out);
        }
        for _ in 0..NEW_PER_EPOCH {
            let (table, generation) = self.live.pop_front().expect("live SSTables");
            for c in COMPONENTS {
                out.push(Change::End {
                    key: key(table, format!("nb-{generation}-big-{c}")),
                    at: at + 500,
                });
            }
        }
        for i in 0..REWRITES_PER_EPOCH {
            let (table, generation) = self.live[(e * 37 + i * 101) % self.live.len()];
            let change = self.start(
                table,
                format!("nb-{generation}-big-Statistics.db"),
                at + 1_000 + i as i64,
            );
            out.push(change);
        }
        out.push(Change::Snapshot {
            name: format!("backup-{e:04}"),
            time: at + 2_000,
            scope: "/var/lib/cassandra/data".into(),
            files: (self.live.len() * 8) as u64,
            bytes: 0,
        });
    }
}

fn commit(catalog: &mut Catalog, time: i64, changes: Vec<Change>) {
    let batch = catalog.commit(NODE, time, changes).expect("commit");
    catalog
        .mark_uploaded(NODE, batch.seq)
        .expect("mark uploaded");
}

fn build(path: &Path) {
    let started = Instant::now();
    let mut catalog = Catalog::open(path).expect("open catalog");
    let mut h = History::new();
    let mut changes = Vec::new();
    for i in 0..INITIAL_SSTABLES {
        h.new_sstable(i % TABLES, epoch_time(0) + i as i64, &mut changes);
    }
    changes.push(Change::Snapshot {
        name: "initial".into(),
        time: epoch_time(0) + 5_000,
        scope: "/var/lib/cassandra/data".into(),
        files: (INITIAL_SSTABLES * 8) as u64,
        bytes: 0,
    });
    commit(
        &mut catalog,
        epoch_time(0) + 5_000,
        std::mem::take(&mut changes),
    );
    for e in 1..=EPOCHS {
        h.epoch(e, &mut changes);
        if e % EPOCHS_PER_BATCH == 0 || e == EPOCHS {
            commit(
                &mut catalog,
                epoch_time(e) + 3_000,
                std::mem::take(&mut changes),
            );
        }
        if e % 100 == 0 {
            eprintln!(
                "  epoch {e}/{EPOCHS}: {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "built {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Counts (versions, points) of a catalog file, if it is one.
fn counts(path: &Path) -> Option<(i64, i64)> {
    let conn = rusqlite::Connection::open(path).ok()?;
    let versions = conn
        .query_row("SELECT COUNT(*) FROM versions", [], |r| r.get(0))
        .ok()?;
    let points = conn
        .query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0))
        .ok()?;
    Some((versions, points))
}

fn catalog_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("catalog_scale").join("catalog-1m-v1.db")
}

/// The cached catalog, built first if missing or not the expected size.
fn prepared_catalog() -> PathBuf {
    let path = catalog_path();
    if counts(&path) != Some((EXPECTED_VERSIONS, EXPECTED_POINTS)) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        eprintln!(
            "building a catalog of {EXPECTED_VERSIONS} versions and {EXPECTED_POINTS} points (once; cached)"
        );
        build(&path);
    } else {
        eprintln!("reusing {}", path.display());
    }
    let (versions, points) = counts(&path).expect("catalog counts");
    assert_eq!((versions, points), (EXPECTED_VERSIONS, EXPECTED_POINTS));
    path
}

fn explain(path: &Path, t: i64) {
    let conn = rusqlite::Connection::open(path).expect("open for EXPLAIN");
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {LIVE_AT_SQL}"))
        .expect("explain");
    let rows = stmt
        .query_map(rusqlite::params![NODE, t], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(3)?,
            ))
        })
        .expect("explain rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("explain rows");
    eprintln!("EXPLAIN QUERY PLAN of live_at:");
    for (id, parent, detail) in rows {
        eprintln!("  {id:>3} {parent:>3}  {detail}");
    }
}

/// Median of a few timed runs of `f`.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], last.expect("at least one run"))
}

fn bench(c: &mut Criterion) {
    let path = prepared_catalog();
    let catalog = Catalog::open(&path).expect("open catalog");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "catalog: {EXPECTED_VERSIONS} versions, {EXPECTED_POINTS} points, {:.0} MiB",
        size as f64 / 1048576.0
    );
    let times = [
        ("epoch 10", epoch_time(10) + 10),
        ("epoch 495", epoch_time(495) + 1_500),
        ("epoch 985", epoch_time(985) + 2_500),
        ("now", epoch_time(EPOCHS) + HOUR),
    ];
    explain(&path, times[1].1);

    let (d, rows) = timed(5, || {
        catalog.snapshots(&SnapshotFilter::default()).unwrap().len()
    });
    eprintln!(
        "snapshots(): {rows} points in {:.2} ms (median of 5)",
        d.as_secs_f64() * 1e3
    );
    for (label, t) in times {
        let (d, rows) = timed(5, || catalog.live_at(NODE, t).unwrap().len());
        eprintln!(
            "live_at({label}): {rows} files in {:.1} ms (median of 5)",
            d.as_secs_f64() * 1e3
        );
    }

    let mut group = c.benchmark_group("catalog_1m_versions");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("snapshots", |b| {
        b.iter(|| catalog.snapshots(&SnapshotFilter::default()).unwrap().len())
    });
    group.bench_function("snapshots_since_until", |b| {
        let filter = SnapshotFilter {
            node: Some(NODE.into()),
            since: Some(epoch_time(400)),
            until: Some(epoch_time(500)),
        };
        b.iter(|| catalog.snapshots(&filter).unwrap().len())
    });
    for (label, t) in times {
        group.bench_function(format!("live_at {label}"), |b| {
            b.iter(|| catalog.live_at(NODE, t).unwrap().len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
