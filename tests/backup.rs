//! Backup passes through the library API, on real parts only: a real SQLite catalog, a real
//! `file://` repository, and a data directory that `support::lifecycle` changes the way
//! Cassandra does (flushes, compactions, snapshots, incremental backups, Statistics.db
//! rewrites, aborted writes), one filesystem step at a time where it matters.
//!
//! What the catalog says is always compared with what the test itself finds on disk: the
//! files of the SSTables the helper's model says are complete, hashed here with BLAKE3.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use support::lifecycle::{
    Content, Expected, FixtureFormat, Gen, Node, Operation, TableDir, fixture_component,
};
use tablesafe::backup::filter::TableFilter;
use tablesafe::backup::{self, BackupOptions, BackupSummary, PointMode, Progress};
use tablesafe::catalog::Catalog;
use tablesafe::store::{Repository, StoreOptions};
use tablesafe::timespec::{self, Micros};

/// (path relative to the data directory, BLAKE3 hex of the content).
type FileSet = BTreeSet<(String, String)>;

/// A node's data directory, a repository and a catalog, all under one temporary directory.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    node: Node,
    repo: Repository,
    catalog: Catalog,
}

impl Setup {
    async fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        let node = Node::new(&data);
        let repo = Repository::init(
            &format!("file://{}", root.join("repo").display()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        let catalog = Catalog::open(&root.join("catalog/n1.db")).unwrap();
        Setup {
            _tmp: tmp,
            root,
            data,
            node,
            repo,
            catalog,
        }
    }

    fn opts(&self, node: &str) -> BackupOptions {
        BackupOptions {
            node: node.into(),
            data_dirs: vec![self.data.clone()],
            filter: TableFilter::default(),
            point: PointMode::Automatic,
            vanished_root_is_empty: false,
            pin_dir: None,
            parallel: 4,
            prune_incremental: false,
            pack_small_files: false,
        }
    }

    async fn pass_with(&mut self, opts: &BackupOptions) -> BackupSummary {
        backup::run(
            &self.repo,
            &mut self.catalog,
            opts,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("backup pass failed: {e}"))
    }

    async fn pass(&mut self) -> BackupSummary {
        let opts = self.opts("n1");
        self.pass_with(&opts).await
    }

    fn live(&self, node: &str, t: Micros) -> FileSet {
        catalog_view(&self.catalog, node, t, &self.data)
    }

    /// True when the repository holds a blob under `blobs/<aa>/<hex>`.
    fn has_blob_file(&self, hex: &str) -> bool {
        self.root
            .join("repo/blobs")
            .join(&hex[..2])
            .join(hex)
            .is_file()
    }
}

fn blake3_hex(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    blake3::hash(&bytes).to_hex().to_string()
}

fn relative(data: &Path, path: &Path) -> String {
    path.strip_prefix(data)
        .unwrap_or_else(|_| panic!("{} is not under {}", path.display(), data.display()))
        .to_string_lossy()
        .into_owned()
}

/// What is on disk now, per the helper's model: every file of every complete SSTable in
/// every directory of every table (live, `backups/`, `snapshots/<tag>/`), plus snapshot
/// `manifest.json`/`schema.cql`, hashed here. Directories in `cleared` were removed by the
/// test behind the helper's back (`nodetool clearsnapshot`).
fn directory_view(data: &Path, tables: &[&TableDir], cleared: &BTreeSet<PathBuf>) -> FileSet {
    let mut out = FileSet::new();
    for t in tables {
        let e = t.expectation();
        let components = t.components();
        for (dir, de) in &e.dirs {
            let d = if dir.is_empty() {
                t.path().to_path_buf()
            } else {
                t.path().join(dir)
            };
            if cleared.contains(&d) {
                continue;
            }
            for (base, s) in &de.sstables {
                if s.state != Expected::Complete {
                    continue;
                }
                for c in &components {
                    let p = d.join(format!("{base}-{c}"));
                    out.insert((relative(data, &p), blake3_hex(&p)));
                }
            }
            for name in &de.other_files {
                let p = d.join(name);
                out.insert((relative(data, &p), blake3_hex(&p)));
            }
        }
    }
    out
}

/// What the catalog says `node` had live at `t`.
fn catalog_view(c: &Catalog, node: &str, t: Micros, data: &Path) -> FileSet {
    c.live_at(node, t)
        .unwrap()
        .into_iter()
        .map(|v| {
            assert_eq!(
                Path::new(&v.key.data_dir),
                data,
                "recorded under another data dir: {v:?}"
            );
            (v.key.data_relative_path(), hex::encode(v.hash))
        })
        .collect()
}

/// Panics with the differences, if any.
fn assert_same(what: &str, catalog: &FileSet, disk: &FileSet) {
    if catalog == disk {
        return;
    }
    let missing: Vec<_> = disk.difference(catalog).collect();
    let extra: Vec<_> = catalog.difference(disk).collect();
    panic!(
        "{what}: the catalog differs from the directory\n  on disk, not in the catalog ({}):\n    {}\n  in the catalog, not on disk ({}):\n    {}",
        missing.len(),
        missing
            .iter()
            .map(|(p, h)| format!("{p} {}", &h[..12]))
            .collect::<Vec<_>>()
            .join("\n    "),
        extra.len(),
        extra
            .iter()
            .map(|(p, h)| format!("{p} {}", &h[..12]))
            .collect::<Vec<_>>()
            .join("\n    ")
    );
}

/// Runs `op` until `remaining` steps are left.
fn run_until(op: &mut Operation, remaining: usize) {
    while op.remaining() > remaining {
        op.step().unwrap().unwrap();
    }
}

/// Runs the first half of `op`'s steps.
fn run_half(op: &mut Operation) {
    let half = op.remaining() / 2;
    run_until(op, half);
}

/// A point recorded after a pass: when, what the disk held, and the pass's summary.
struct Recorded {
    label: String,
    point_time: Micros,
    after: Micros,
    disk: FileSet,
    summary: BackupSummary,
}

/// Flushes, snapshots, incremental backups, a Statistics.db rewrite, compactions (one
/// stopped part-way through deleting its inputs), aborted writes, a crash and Cassandra's
/// start-up clean-up, a cleared snapshot: a backup pass after each, and at the end, for
/// every recorded time, the catalog's live set equals what the directory held then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_view_equals_the_directory_after_every_pass() {
    let mut s = Setup::new().await;
    let mut nb = s.node.create_table("app", "users", FixtureFormat::Nb);
    let mut da = s.node.create_table("app", "events", FixtureFormat::Da);
    let mut la = s.node.create_table("legacy", "items", FixtureFormat::La);
    let mut cleared = BTreeSet::new();
    let mut points: Vec<Recorded> = Vec::new();

    macro_rules! pass {
        ($label:expr) => {{
            let summary = s.pass().await;
            let after = timespec::now();
            let disk = directory_view(&s.data, &[&nb, &da, &la], &cleared);
            // Checked at once too, so a failure names the step that broke it.
            assert_same(
                &format!("right after pass {:?}", $label),
                &s.live("n1", after),
                &disk,
            );
            points.push(Recorded {
                label: $label.to_string(),
                point_time: summary.point_time,
                after,
                disk,
                summary: summary.clone(),
            });
            summary
        }};
    }

    let empty = pass!("empty data directory");
    assert_eq!(empty.files_seen, 0);

    for t in [&mut nb, &mut da, &mut la] {
        t.flush().run().unwrap();
        t.flush().run().unwrap();
    }
    let first = pass!("two flushes per table");
    let components = nb.components().len() + da.components().len() + la.components().len();
    assert_eq!(first.files_seen as usize, 2 * components, "{first:?}");
    assert!(
        first.corrupt.is_empty() && first.problems.is_empty(),
        "{first:?}"
    );

    nb.incremental_backup(&Gen::Seq(1)).run().unwrap();
    da.incremental_backup(&Gen::Seq(1)).run().unwrap();
    da.incremental_backup(&Gen::Seq(2)).run().unwrap();
    let incr = pass!("incremental backup links of nb-1, da-1, da-2");
    assert_eq!(
        incr.blobs_uploaded, 0,
        "hard links add no content: {incr:?}"
    );

    for t in [&mut nb, &mut da, &mut la] {
        t.snapshot("before_rewrite").run().unwrap();
    }
    let snap = pass!("snapshot before_rewrite");
    assert_eq!(
        snap.blobs_uploaded, 5,
        "manifest.json x3 + schema.cql x2: {snap:?}"
    );
    let before_rewrite = snap.point_time;

    nb.rewrite_statistics(&Gen::Seq(1)).run().unwrap();
    let rewrite = pass!("Statistics.db rewrite of nb-1");
    assert_eq!(rewrite.versions_started, 1, "{rewrite:?}");
    assert_eq!(rewrite.blobs_uploaded, 1, "{rewrite:?}");
    let after_rewrite = rewrite.point_time;

    // The rewritten Statistics.db is a new version of the same path; the snapshot's hard
    // link (and the backups/ one) keep the old bytes, and the catalog says so.
    let nb_dir = relative(&s.data, nb.path());
    let live_stats = format!("{nb_dir}/nb-1-big-Statistics.db");
    let snap_stats = format!("{nb_dir}/snapshots/before_rewrite/nb-1-big-Statistics.db");
    let backup_stats = format!("{nb_dir}/backups/nb-1-big-Statistics.db");
    let hash_of = |set: &FileSet, path: &str| -> String {
        set.iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not in {set:#?}"))
            .1
            .clone()
    };
    let old_view = s.live("n1", before_rewrite);
    let new_view = s.live("n1", after_rewrite);
    let old_hash = hash_of(&old_view, &live_stats);
    let new_hash = hash_of(&new_view, &live_stats);
    assert_ne!(old_hash, new_hash, "the rewrite is a new version");
    assert_eq!(
        new_hash,
        blake3_hex(&nb.path().join("nb-1-big-Statistics.db"))
    );
    assert_eq!(hash_of(&new_view, &snap_stats), old_hash);
    assert_eq!(hash_of(&new_view, &backup_stats), old_hash);
    assert_eq!(
        blake3_hex(
            &nb.path()
                .join("snapshots/before_rewrite/nb-1-big-Statistics.db")
        ),
        old_hash
    );
    assert!(s.has_blob_file(&old_hash) && s.has_blob_file(&new_hash));
    let version = s
        .catalog
        .live_at("n1", before_rewrite)
        .unwrap()
        .into_iter()
        .find(|v| v.key.data_relative_path() == live_stats)
        .unwrap();
    assert!(
        version
            .valid_to
            .is_some_and(|t| t > before_rewrite && t <= after_rewrite),
        "the old version ended at the rewrite: {version:?}"
    );

    for t in [&mut nb, &mut da, &mut la] {
        t.compact(&[Gen::Seq(1), Gen::Seq(2)]).run().unwrap();
    }
    pass!("compaction of 1+2 into 3 in every table");

    // A flush caught half way: Data.db and the index written, no TOC.txt.
    let mut half_flush = nb.flush();
    let nb4 = half_flush.generation().cloned().unwrap();
    run_half(&mut half_flush);
    let partial = pass!("nb flush of gen 4 half done");
    assert!(partial.not_complete >= 1, "{partial:?}");
    half_flush.run().unwrap();
    pass!("nb flush of gen 4 finished");

    // Aborted writes: one seen part-way, one only after its clean-up.
    let mut aborted = nb.aborted_write();
    run_half(&mut aborted);
    pass!("nb aborted write in progress");
    aborted.run().unwrap();
    la.aborted_write().run().unwrap();
    pass!("aborted writes cleaned up");

    // Incremental backup links caught part-way (TOC.txt may already be linked).
    let mut links = da.incremental_backup(&Gen::Seq(3));
    run_half(&mut links);
    pass!("da backups/ links of gen 3 half done");
    links.run().unwrap();
    pass!("da backups/ links of gen 3 done");

    // A compaction caught after its COMMIT, part-way through deleting its inputs (3.0+:
    // obsolete by the log; 2.x: incomplete once Data.db is gone).
    let flush = nb.flush();
    let nb6 = flush.generation().cloned().unwrap();
    flush.run().unwrap();
    let mut nb_compaction = nb.compact(&[nb4, nb6]);
    run_until(&mut nb_compaction, 6);
    let flush = la.flush();
    let la5 = flush.generation().cloned().unwrap();
    flush.run().unwrap();
    let mut la_compaction = la.compact(&[Gen::Seq(3), la5]);
    run_until(&mut la_compaction, 4);
    pass!("compactions deleting their inputs");
    nb_compaction.run().unwrap();
    la_compaction.run().unwrap();
    pass!("compactions finished");

    // A Statistics.db rewrite with only its .tmp written so far.
    let mut stats = da.rewrite_statistics(&Gen::Seq(3));
    stats.step().unwrap();
    pass!("da Statistics.db.tmp half written");
    stats.run().unwrap();
    pass!("da Statistics.db rewritten");

    // A crash in the middle of a flush, then Cassandra's start-up clean-up.
    let mut crashed = nb.flush();
    run_half(&mut crashed);
    drop(crashed);
    pass!("nb crashed mid-flush");
    nb.startup_cleanup().run().unwrap();
    pass!("nb start-up clean-up");

    // nodetool clearsnapshot of one table, and a new snapshot everywhere.
    let da_snap = da.path().join("snapshots/before_rewrite");
    fs::remove_dir_all(&da_snap).unwrap();
    cleared.insert(da_snap);
    pass!("da snapshot before_rewrite cleared");
    for t in [&mut nb, &mut da, &mut la] {
        t.snapshot("after_compaction").run().unwrap();
    }
    let last = pass!("snapshot after_compaction");
    assert!(last.problems.is_empty(), "{last:?}");

    // Every recorded time, asked again at the end: the history did not drift.
    let mut all_hashes = BTreeSet::new();
    for p in &points {
        for t in [p.point_time, p.after] {
            let view = s.live("n1", t);
            assert_same(
                &format!("at the end, for pass {:?}", p.label),
                &view,
                &p.disk,
            );
        }
        all_hashes.extend(p.disk.iter().map(|(_, h)| h.clone()));
        assert!(p.summary.corrupt.is_empty(), "{}: {:?}", p.label, p.summary);
    }
    // Every content ever live is a complete blob in the repository.
    let out = s.root.join("content");
    for h in &all_hashes {
        let hash: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
        tablesafe::restore::content_to_file(&s.repo, &s.catalog, &hash, &out)
            .await
            .unwrap_or_else(|e| panic!("content {h}: {e}"));
        assert_eq!(blake3_hex(&out), *h);
    }
    eprintln!(
        "{} passes checked against the directory, {} distinct contents verified",
        points.len(),
        all_hashes.len()
    );
}

/// Writes `per_table` complete nb SSTables with the fixture's bytes (all identical) into
/// each of `tables` new table directories: the files a run of flushes leaves once their
/// transaction logs are gone. (Written directly: the helper's model re-derives every
/// SSTable's state after each step, far too slow for 1,250 flushes.)
fn fill_node(node: &mut Node, tables: usize, per_table: usize) -> Vec<PathBuf> {
    let components: Vec<(String, Vec<u8>)> = {
        let probe = node.create_table("bulk", "probe", FixtureFormat::Nb);
        let comps = probe
            .components()
            .into_iter()
            .map(|c| {
                let bytes = fixture_component(FixtureFormat::Nb, &c).unwrap();
                (c, bytes)
            })
            .collect();
        fs::remove_dir_all(probe.path()).unwrap();
        comps
    };
    (0..tables)
        .map(|i| {
            let t = node.create_table("bulk", &format!("t{i:02}"), FixtureFormat::Nb);
            for g in 1..=per_table {
                // TOC.txt last, as Cassandra writes it.
                for (c, bytes) in components.iter().filter(|(c, _)| c != "TOC.txt") {
                    fs::write(t.path().join(format!("nb-{g}-big-{c}")), bytes).unwrap();
                }
                let (c, bytes) = components.iter().find(|(c, _)| c == "TOC.txt").unwrap();
                fs::write(t.path().join(format!("nb-{g}-big-{c}")), bytes).unwrap();
            }
            t.path().to_path_buf()
        })
        .collect()
}

/// Every file under `dir`, hashed (for trees with complete SSTables only).
fn whole_tree(data: &Path, dir: &Path, out: &mut FileSet) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            whole_tree(data, &p, out);
        } else {
            out.insert((relative(data, &p), blake3_hex(&p)));
        }
    }
}

/// Hard-links every file of every table directory into `snapshots/<tag>/`, like
/// `nodetool snapshot` minus its manifest.
fn link_everything(tables: &[PathBuf], tag: &str) -> usize {
    let mut n = 0;
    for t in tables {
        let dest = t.join("snapshots").join(tag);
        fs::create_dir_all(&dest).unwrap();
        for entry in fs::read_dir(t).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::hard_link(entry.path(), dest.join(entry.file_name())).unwrap();
                n += 1;
            }
        }
    }
    n
}

/// 10,000 files (1,250 nb SSTables × 8 components): a second backup with nothing changed
/// reads nothing and uploads nothing; hard links of the whole tree (a snapshot) are free
/// too, although linking changes every inode's ctime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_files_and_hard_links_are_neither_read_nor_uploaded() {
    const TABLES: usize = 10;
    const PER_TABLE: usize = 125;
    let mut s = Setup::new().await;
    let started = Instant::now();
    let tables = fill_node(&mut s.node, TABLES, PER_TABLE);
    eprintln!(
        "wrote {} SSTables in {:.1} s",
        TABLES * PER_TABLE,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let first = s.pass().await;
    eprintln!(
        "first backup of 10,000 files: {:.2} s: {first:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(first.files_seen, 10_000);
    assert_eq!(first.files_hashed, 10_000);
    assert!(first.blobs_uploaded <= 8, "identical SSTables: {first:?}");

    let started = Instant::now();
    let second = s.pass().await;
    eprintln!(
        "no-change backup of 10,000 files: {:.2} s ({:.2} s by its own clock)",
        started.elapsed().as_secs_f64(),
        second.seconds
    );
    assert_eq!(second.files_seen, 10_000, "{second:?}");
    assert_eq!(second.files_unchanged, 10_000, "{second:?}");
    assert_eq!(second.files_hashed, 0, "{second:?}");
    assert_eq!(second.bytes_read, 0, "{second:?}");
    assert_eq!(second.blobs_uploaded, 0, "{second:?}");
    assert_eq!(
        second.versions_started + second.versions_ended,
        0,
        "{second:?}"
    );

    let linked = link_everything(&tables, "all");
    assert_eq!(linked, 10_000);
    let started = Instant::now();
    let third = s.pass().await;
    eprintln!(
        "backup after hard-linking all 10,000 files: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(third.files_seen, 20_000, "{third:?}");
    assert_eq!(third.files_hashed, 0, "hard links are not read: {third:?}");
    assert_eq!(third.bytes_read, 0, "{third:?}");
    assert_eq!(third.blobs_uploaded, 0, "{third:?}");
    assert_eq!(
        third.versions_started, 10_000,
        "one version per new path: {third:?}"
    );
    let view = s.live("n1", third.point_time);
    assert_eq!(view.len(), 20_000);

    // nodetool snapshot: hard links again, plus a new manifest.json and schema.cql per
    // table: only those are read.
    let mut metadata_bytes = 0;
    for (i, t) in tables.iter().enumerate() {
        let dir = t.join("snapshots/nodetool");
        fs::create_dir_all(&dir).unwrap();
        let mut data_files = Vec::new();
        for g in 1..=PER_TABLE {
            for c in ["CompressionInfo.db", "Data.db", "Digest.crc32", "Filter.db"] {
                let name = format!("nb-{g}-big-{c}");
                fs::hard_link(t.join(&name), dir.join(&name)).unwrap();
            }
            for c in ["Index.db", "Statistics.db", "Summary.db", "TOC.txt"] {
                let name = format!("nb-{g}-big-{c}");
                fs::hard_link(t.join(&name), dir.join(&name)).unwrap();
            }
            data_files.push(format!("nb-{g}-big-Data.db"));
        }
        let manifest = serde_json::json!({ "files": data_files, "created_at": "2026-11-22T00:00:00Z", "expires_at": null }).to_string();
        let schema =
            format!("CREATE TABLE IF NOT EXISTS bulk.t{i:02} (pk int PRIMARY KEY, val text);\n");
        fs::write(dir.join("manifest.json"), &manifest).unwrap();
        fs::write(dir.join("schema.cql"), &schema).unwrap();
        metadata_bytes += (manifest.len() + schema.len()) as u64;
    }
    let fourth = s.pass().await;
    assert_eq!(
        fourth.files_hashed,
        2 * TABLES as u64,
        "only the manifests and schemas are read: {fourth:?}"
    );
    assert_eq!(fourth.bytes_read, metadata_bytes, "{fourth:?}");
    // The manifests list the same file names in every table: one blob for all of them.
    assert_eq!(fourth.blobs_uploaded, 1 + TABLES as u64, "{fourth:?}");
    let mut disk = FileSet::new();
    whole_tree(&s.data, &s.data, &mut disk);
    assert_eq!(disk.len(), 30_000 + 2 * TABLES);
    assert_same(
        "after the snapshots",
        &s.live("n1", fourth.point_time),
        &disk,
    );
}

fn tables_of(set: &FileSet) -> BTreeSet<String> {
    set.iter()
        .map(|(p, _)| {
            let mut parts = p.split('/');
            let ks = parts.next().unwrap();
            let dir = parts.next().unwrap();
            format!("{ks}.{}", dir.rsplit_once('-').map_or(dir, |(t, _)| t))
        })
        .collect()
}

/// Which tables a pass covers: system_traces is left out unless named; `--include`
/// narrows to what it names; `--exclude` removes; and a narrowed pass does not record the
/// tables it did not look at as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_choose_the_tables() {
    let mut s = Setup::new().await;
    let mut tables = vec![
        s.node.create_table("ks", "t1", FixtureFormat::Nb),
        s.node.create_table("ks", "t2", FixtureFormat::Nb),
        s.node.create_table("other", "t3", FixtureFormat::Da),
        s.node
            .create_table("system_traces", "sessions", FixtureFormat::Nb),
        s.node.create_table("system", "local", FixtureFormat::Nb),
    ];
    for t in &mut tables {
        t.flush().run().unwrap();
    }
    // (case, --include, --exclude, tables backed up)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "default",
            &[],
            &[],
            &["ks.t1", "ks.t2", "other.t3", "system.local"],
        ),
        ("include", &["ks.t1"], &[], &["ks.t1"]),
        ("include-ks", &["ks"], &[], &["ks.t1", "ks.t2"]),
        ("exclude", &[], &["ks.t2", "system"], &["ks.t1", "other.t3"]),
        ("glob", &["*.t?"], &["other"], &["ks.t1", "ks.t2"]),
        (
            "traces",
            &["system_traces"],
            &[],
            &["system_traces.sessions"],
        ),
    ];
    for (node, include, exclude, want) in cases {
        let opts = BackupOptions {
            filter: TableFilter::new(
                include.iter().map(|g| g.to_string()).collect(),
                exclude.iter().map(|g| g.to_string()).collect(),
            )
            .unwrap(),
            ..s.opts(node)
        };
        let summary = s.pass_with(&opts).await;
        let got = tables_of(&s.live(node, summary.point_time));
        let want: BTreeSet<String> = want.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            got, want,
            "node {node}: include {include:?} exclude {exclude:?}"
        );
    }

    // A full pass, then a pass narrowed to ks.t1 while ks.t2 and other.t3 change: the
    // narrowed pass records ks.t1's change and leaves the others as last seen.
    let full = s.pass().await;
    let before = s.live("n1", full.point_time);
    tables[0].flush().run().unwrap();
    tables[1].flush().run().unwrap();
    tables[2].compact(&[Gen::Seq(1)]).run().unwrap();
    let narrow = BackupOptions {
        filter: TableFilter::new(vec!["ks.t1".into()], vec![]).unwrap(),
        ..s.opts("n1")
    };
    let summary = s.pass_with(&narrow).await;
    assert_eq!(summary.versions_ended, 0, "{summary:?}");
    let after = s.live("n1", summary.point_time);
    let others = |set: &FileSet| -> FileSet {
        set.iter()
            .filter(|(p, _)| !p.starts_with("ks/t1-"))
            .cloned()
            .collect()
    };
    assert_eq!(
        others(&after),
        others(&before),
        "tables the pass did not look at"
    );
    assert_eq!(
        after.len(),
        before.len() + 8,
        "ks.t1 gained the files of its new SSTable"
    );
}

/// `--prune-incremental`: `backups/` links are deleted once their content is durable; the
/// content stays in the catalog's history (versions ended) and in the repository. A
/// corrupt SSTable's links are never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_incremental_deletes_backups_links_only_when_durable() {
    let mut s = Setup::new().await;
    let mut t = s.node.create_table("ks", "t", FixtureFormat::Nb);
    for g in 1..=3 {
        t.flush().run().unwrap();
        t.incremental_backup(&Gen::Seq(g)).run().unwrap();
    }
    let backups = t.path().join("backups");
    let linked: BTreeMap<String, String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                blake3_hex(&p),
            )
        })
        .collect();
    assert_eq!(linked.len(), 24);

    // One pass without pruning, to have a time at which the links were live.
    let plain = s.pass().await;
    let was_live = s.live("n1", plain.point_time);

    // nb-3 goes bad on disk (the live file and its backups/ link are one inode).
    let data3 = t.path().join("nb-3-big-Data.db");
    let good = fs::read(&data3).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    fs::write(&data3, &bad).unwrap();

    let prune = BackupOptions {
        prune_incremental: true,
        pack_small_files: false,
        ..s.opts("n1")
    };
    let pruned = s.pass_with(&prune).await;
    // Reported twice: the live SSTable and its backups/ copy (one inode).
    assert_eq!(pruned.corrupt.len(), 2, "{pruned:?}");
    assert_eq!(pruned.pruned, 16, "nb-1 and nb-2 links: {pruned:?}");
    let left: BTreeSet<String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 8, "{left:?}");
    assert!(
        left.iter().all(|n| n.starts_with("nb-3-big-")),
        "the corrupt SSTable's links stay: {left:?}"
    );

    // History: at the earlier point every link was live with its content; the pruned
    // ones have ended since; their content is in the repository.
    let versions = s.catalog.live_at("n1", plain.point_time).unwrap();
    let now = s.live("n1", timespec::now());
    for (name, hash) in &linked {
        let rel = format!("{}/backups/{name}", relative(&s.data, t.path()));
        assert!(was_live.contains(&(rel.clone(), hash.clone())), "{rel}");
        let v = versions
            .iter()
            .find(|v| v.key.data_relative_path() == rel)
            .unwrap();
        if name.starts_with("nb-3-") {
            assert_eq!(v.valid_to, None, "{rel} is still there");
        } else {
            assert!(v.valid_to.is_some(), "{rel} was pruned: {v:?}");
            assert!(!now.iter().any(|(p, _)| *p == rel));
            let restored = s.root.join("restored");
            tablesafe::restore::content_to_file(&s.repo, &s.catalog, &v.hash, &restored)
                .await
                .unwrap();
            assert_eq!(blake3_hex(&restored), *hash, "{rel} restorable");
            fs::remove_file(&restored).unwrap();
        }
    }

    // Fixed: the next pruning pass takes nb-3's links too.
    fs::write(&data3, &good).unwrap();
    let fixed = s.pass_with(&prune).await;
    assert!(fixed.corrupt.is_empty(), "{fixed:?}");
    assert_eq!(fixed.pruned, 8, "{fixed:?}");
    assert_eq!(fs::read_dir(&backups).unwrap().count(), 0);
    let again = s.pass_with(&prune).await;
    assert_eq!(
        again.pruned + again.versions_ended + again.versions_started,
        0,
        "{again:?}"
    );
}

/// Bytes of the object holding `path`'s content in the `file://` repository at `repo`.
fn stored_size(repo: &Path, path: &Path) -> u64 {
    let hex = blake3_hex(path);
    let object = repo.join("blobs").join(&hex[..2]).join(&hex);
    fs::metadata(&object)
        .unwrap_or_else(|e| panic!("no blob for {}: {e}", path.display()))
        .len()
}

/// The path of component `component` of the SSTable a flush of `table` just wrote.
fn flushed(table: &mut TableDir, component: &str) -> PathBuf {
    let flush = table.flush();
    let generation = flush
        .generation()
        .cloned()
        .expect("a flush has a generation");
    flush.run().unwrap();
    table.path().join(table.file_name(&generation, component))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_db_that_cassandra_compressed_is_stored_as_is_unless_the_repository_recompresses() {
    let mut s = Setup::new().await;
    // Data.db files mostly of text: zstd shrinks them many times over, so how each is
    // stored shows what the backup decided, not what zstd could do.
    let text = "order 1234 shipped to 42 Main Street, 3 items, paid by card\n".repeat(10_000);
    // 4.0 `nb` with CompressionInfo.db (Cassandra compressed its Data.db); 2.0 `jb`
    // with CRC.db (an uncompressed table).
    let mut compressed_table = s.node.create_table("ks", "lz4", FixtureFormat::Nb);
    compressed_table.set_content(Content::Distinct(text.clone()));
    let compressed = flushed(&mut compressed_table, "Data.db");
    let mut plain_table = s.node.create_table("ks", "plain", FixtureFormat::Jb);
    plain_table.set_content(Content::Distinct(text));
    let plain = flushed(&mut plain_table, "Data.db");
    s.pass().await;

    let size = |p: &Path| fs::metadata(p).unwrap().len();
    let repo = s.root.join("repo");
    assert!(
        stored_size(&repo, &compressed) >= size(&compressed),
        "Cassandra-compressed Data.db: stored as it is ({} bytes stored for {})",
        stored_size(&repo, &compressed),
        size(&compressed)
    );
    assert!(
        stored_size(&repo, &plain) < size(&plain) / 4,
        "uncompressed table's Data.db: zstd ({} bytes stored for {})",
        stored_size(&repo, &plain),
        size(&plain)
    );
    // Raw frames come back byte for byte.
    let id = tablesafe::store::BlobId::of_bytes(&fs::read(&compressed).unwrap());
    let back = s.root.join("back-Data.db");
    s.repo.get_to_file(&id, &back).await.unwrap();
    assert_eq!(fs::read(&back).unwrap(), fs::read(&compressed).unwrap());

    // The same files into a repository created with `recompress`.
    let mut store = StoreOptions::default();
    store.compression.recompress = true;
    let recompressing = Repository::init(
        &format!("file://{}", s.root.join("repo2").display()),
        &store,
    )
    .await
    .unwrap();
    assert!(recompressing.config().compression.recompress);
    let mut catalog = Catalog::open(&s.root.join("catalog/n2.db")).unwrap();
    backup::run(
        &recompressing,
        &mut catalog,
        &s.opts("n1"),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let repo2 = s.root.join("repo2");
    assert!(
        stored_size(&repo2, &compressed) < size(&compressed) / 4,
        "recompress: zstd for it too ({} bytes stored for {})",
        stored_size(&repo2, &compressed),
        size(&compressed)
    );
}
