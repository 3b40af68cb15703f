//! `tablesafe restore` end to end: the real binary, a real `file://` repository (and one
//! round trip through an in-process S3 server), real SQLite catalogs, and data
//! directories driven by the lifecycle helper through Cassandra's file lifecycle in every
//! SSTable format from 2.0 to 5.0.
//!
//! The expected tree at each point is computed from the helper's own model (which
//! SSTables are complete) and the bytes and mtimes on disk right after each backup pass,
//! never by asking tablesafe.

mod s3support;
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::cli::{ok, tablesafe, text};
use support::lifecycle::{Expected, FixtureFormat, Gen, Node, TableDir};
use tablesafe::timespec::{self, Micros};

/// Path relative to the data directory (or the restore target) → (BLAKE3 hex, mtime µs).
type Tree = BTreeMap<String, (String, Micros)>;

const NODE: &str = "n1";

fn mtime_micros(meta: &std::fs::Metadata) -> Micros {
    meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1_000
}

fn file_entry(path: &Path) -> (String, Micros) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let meta = std::fs::metadata(path).unwrap();
    (
        blake3::hash(&bytes).to_hex().to_string(),
        mtime_micros(&meta),
    )
}

/// Every file below `root` (symbolic links are a failure), relative to it.
fn read_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    if !root.exists() {
        return tree;
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let ft = entry.file_type();
        assert!(
            !ft.is_symlink(),
            "symlink in restore: {}",
            entry.path().display()
        );
        if ft.is_file() {
            let rel = entry.path().strip_prefix(root).unwrap();
            tree.insert(rel.to_string_lossy().into_owned(), file_entry(entry.path()));
        }
    }
    tree
}

/// What the node holds now that a backup must record: every file of every complete
/// SSTable (live, `backups/`, `snapshots/<tag>/`) and the snapshots' manifest and schema.
fn expected_tree(data_dir: &Path, tables: &[TableDir]) -> Tree {
    let mut tree = Tree::new();
    for t in tables {
        let exp = t.expectation();
        let mut components = t.components();
        if !components.iter().any(|c| c == "TOC.txt") {
            components.push("TOC.txt".into());
        }
        for (dir, d) in &exp.dirs {
            let dir_path = if dir.is_empty() {
                t.path().to_path_buf()
            } else {
                t.path().join(dir)
            };
            let mut names: Vec<String> = d.other_files.iter().cloned().collect();
            for (base, s) in &d.sstables {
                if s.state == Expected::Complete {
                    names.extend(components.iter().map(|c| format!("{base}-{c}")));
                }
            }
            for name in names {
                let path = dir_path.join(&name);
                assert!(path.is_file(), "model says {} exists", path.display());
                let rel = path.strip_prefix(data_dir).unwrap();
                tree.insert(rel.to_string_lossy().into_owned(), file_entry(&path));
            }
        }
    }
    tree
}

/// Only live files (`<ks>/<table dir>/<file>`), optionally without system keyspaces.
fn live_only(tree: &Tree, include_system: bool) -> Tree {
    tree.iter()
        .filter(|(k, _)| k.split('/').count() == 3)
        .filter(|(k, _)| include_system || !k.starts_with("system/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[track_caller]
fn assert_same_tree(restored: &Tree, expected: &Tree, what: &str) {
    if restored == expected {
        return;
    }
    let mut diff = Vec::new();
    for (k, v) in expected {
        match restored.get(k) {
            None => diff.push(format!("missing   {k}")),
            Some(r) if r.0 != v.0 => diff.push(format!("content   {k}")),
            Some(r) if r.1 != v.1 => diff.push(format!("mtime     {k}: {} != {}", r.1, v.1)),
            _ => {}
        }
    }
    for k in restored.keys().filter(|k| !expected.contains_key(*k)) {
        diff.push(format!("unexpected {k}"));
    }
    panic!(
        "{what}: restored tree differs from the node's ({} restored, {} expected):\n{}",
        restored.len(),
        expected.len(),
        diff.join("\n")
    );
}

/// A node's data directory, a `file://` repository and a catalog in one temp dir.
struct Env {
    tmp: tempfile::TempDir,
    data: PathBuf,
    url: String,
    catalog: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let repo = tmp.path().join("repo");
        Env {
            url: format!("file://{}", repo.display()),
            catalog: tmp.path().join("catalog/n1.db"),
            data,
            tmp,
        }
    }

    fn cmd(&self, catalog: &Path) -> Command {
        let mut c = tablesafe(self.tmp.path());
        c.arg("--repo")
            .arg(&self.url)
            .arg("--catalog")
            .arg(catalog)
            .arg("--node")
            .arg(NODE);
        c
    }

    /// One backup pass through the CLI; returns the point's name.
    fn backup(&self) -> String {
        self.backup_with(&[])["point"].as_str().unwrap().to_string()
    }

    /// One backup pass with extra flags; returns its JSON summary.
    fn backup_with(&self, extra: &[&str]) -> serde_json::Value {
        let out = ok(self
            .cmd(&self.catalog)
            .args(["backup", "--init", "--json"])
            .args(extra)
            .arg("--data-dir")
            .arg(&self.data)
            .output()
            .unwrap());
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["corrupt"].as_array().map(Vec::len), Some(0));
        summary
    }

    fn target(&self, name: &str) -> PathBuf {
        self.tmp.path().join("restores").join(name)
    }

    fn restore(&self, catalog: &Path, at: &str, to: &Path, extra: &[&str]) -> Output {
        self.cmd(catalog)
            .args(["restore", "--at", at, "--to"])
            .arg(to)
            .args(extra)
            .output()
            .unwrap()
    }

    /// Restores everything (system keyspaces, snapshots, backups) at `at` into a fresh
    /// target and returns what landed there.
    fn restore_all(&self, catalog: &Path, at: &str, name: &str) -> Tree {
        let to = self.target(name);
        ok(self.restore(
            catalog,
            at,
            &to,
            &["--include-system", "--include-snapshots"],
        ));
        read_tree(&to)
    }
}

fn remove_catalog(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    assert!(!path.exists());
}

/// One recorded point: after a backup pass.
struct State {
    label: &'static str,
    point: String,
    /// Right after the pass finished.
    time: Micros,
    /// Right before the next pass started (after the next operation), if any.
    next_pass: Option<Micros>,
    tree: Tree,
}

fn run_all(
    tables: &mut [TableDir],
    mut op: impl FnMut(&mut TableDir) -> support::lifecycle::Operation,
) {
    for t in tables.iter_mut() {
        op(t).run().unwrap();
    }
}

/// A long history on one node with a table in every format (and a system table): every
/// backup pass's point restores exactly, byte for byte and mtime for mtime, and so does
/// any time between two passes; the same from the repository alone after the catalog is
/// lost, and on a replacement node with a new catalog.
#[test]
fn every_point_of_a_long_history_restores_exactly_in_every_format() {
    let env = Env::new();
    let mut node = Node::new(&env.data);
    let mut tables: Vec<TableDir> = FixtureFormat::ALL
        .iter()
        .map(|f| node.create_table(&format!("ks_{}", f.version()), "events", *f))
        .collect();
    tables.push(node.create_table("system", "peers", FixtureFormat::Nb));
    let n = tables.len();
    let mut gens: Vec<Vec<Gen>> = vec![Vec::new(); n];

    let mut states: Vec<State> = Vec::new();
    let steps: [&'static str; 9] = [
        "flush 1",
        "flush 2",
        "incremental backups of 1 and 2",
        "snapshot before_compaction",
        "compaction of 1 + 2 into 3",
        "Statistics.db rewrite of 3",
        "flush 4",
        "snapshot after_rewrite",
        "compaction of 3 + 4 into 5",
    ];
    for label in steps {
        match label {
            "flush 1" | "flush 2" | "flush 4" => {
                for (i, t) in tables.iter_mut().enumerate() {
                    let op = t.flush();
                    gens[i].push(op.generation().unwrap().clone());
                    op.run().unwrap();
                }
            }
            "incremental backups of 1 and 2" => {
                for (i, t) in tables.iter_mut().enumerate() {
                    t.incremental_backup(&gens[i][0]).run().unwrap();
                    t.incremental_backup(&gens[i][1]).run().unwrap();
                }
            }
            "snapshot before_compaction" => {
                run_all(&mut tables, |t| t.snapshot("before_compaction"))
            }
            "snapshot after_rewrite" => run_all(&mut tables, |t| t.snapshot("after_rewrite")),
            "compaction of 1 + 2 into 3" | "compaction of 3 + 4 into 5" => {
                let (a, b) = if label.contains("1 + 2") {
                    (0, 1)
                } else {
                    (2, 3)
                };
                for (i, t) in tables.iter_mut().enumerate() {
                    let inputs = [gens[i][a].clone(), gens[i][b].clone()];
                    let op = t.compact(&inputs);
                    gens[i].push(op.generation().unwrap().clone());
                    op.run().unwrap();
                }
            }
            "Statistics.db rewrite of 3" => {
                for (i, t) in tables.iter_mut().enumerate() {
                    t.rewrite_statistics(&gens[i][2]).run().unwrap();
                }
            }
            other => unreachable!("{other}"),
        }
        // Keep passes well apart from the operations and from each other.
        std::thread::sleep(std::time::Duration::from_millis(3));
        if let Some(prev) = states.last_mut() {
            prev.next_pass = Some(timespec::now());
        }
        std::thread::sleep(std::time::Duration::from_millis(3));
        let point = env.backup();
        let time = timespec::now();
        states.push(State {
            label,
            point,
            time,
            next_pass: None,
            tree: expected_tree(&env.data, &tables),
        });
    }
    // The history really exercises what it claims to.
    let last = &states.last().unwrap().tree;
    for f in FixtureFormat::ALL {
        let ks = format!("ks_{}/", f.version());
        assert!(
            last.keys()
                .any(|k| k.starts_with(&ks) && k.contains("/backups/"))
        );
        assert!(
            last.keys()
                .any(|k| k.starts_with(&ks) && k.contains("/snapshots/after_rewrite/"))
        );
    }
    assert!(states.windows(2).all(|w| w[0].tree != w[1].tree));

    // 1. Every pass's time, and a time strictly between two passes.
    for (i, s) in states.iter().enumerate() {
        let at = timespec::format_precise(s.time);
        let restored = env.restore_all(&env.catalog, &at, &format!("at-{i}"));
        assert_same_tree(
            &restored,
            &s.tree,
            &format!("at pass {i} ({}) {at}", s.label),
        );
        if let Some(next) = s.next_pass {
            assert!(
                next > s.time + 1,
                "no room between passes {i} and {}",
                i + 1
            );
            let mid = s.time + (next - s.time) / 2;
            let at = timespec::format_precise(mid);
            let restored = env.restore_all(&env.catalog, &at, &format!("between-{i}"));
            assert_same_tree(
                &restored,
                &s.tree,
                &format!("between pass {i} ({}) and the next, {at}", s.label),
            );
        }
    }

    // A point by name is the pass's state too.
    let s = &states[5];
    let restored = env.restore_all(&env.catalog, &s.point, "by-name");
    assert_same_tree(&restored, &s.tree, &format!("at point {}", s.point));

    // By default only live files, and no system keyspaces; filters narrow further.
    let last = states.last().unwrap();
    let at = timespec::format_precise(last.time);
    let to = env.target("live-only");
    ok(env.restore(&env.catalog, &at, &to, &[]));
    assert_same_tree(
        &read_tree(&to),
        &live_only(&last.tree, false),
        "live files only",
    );
    let to = env.target("one-table");
    ok(env.restore(
        &env.catalog,
        &at,
        &to,
        &["--keyspace", "ks_n*", "--table", "events"],
    ));
    let want: Tree = live_only(&last.tree, false)
        .into_iter()
        .filter(|(k, _)| k.starts_with("ks_na/") || k.starts_with("ks_nb/"))
        .collect();
    assert!(!want.is_empty());
    assert_same_tree(&read_tree(&to), &want, "--keyspace ks_n* --table events");

    // 2. The catalog is lost: restore rebuilds it from the repository alone.
    remove_catalog(&env.catalog);
    for (i, s) in states.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let at = timespec::format_precise(s.time);
        let restored = env.restore_all(&env.catalog, &at, &format!("rebuilt-{i}"));
        assert_same_tree(&restored, &s.tree, &format!("rebuilt catalog, pass {i}"));
    }
    let s = &states[3];
    let mid = timespec::format_precise(s.time + (s.next_pass.unwrap() - s.time) / 2);
    let restored = env.restore_all(&env.catalog, &mid, "rebuilt-between");
    assert_same_tree(&restored, &s.tree, "rebuilt catalog, between passes");

    // A replacement node: another catalog path, the old node's name.
    let other_catalog = env.tmp.path().join("new-host/catalog.db");
    for i in [1, states.len() - 1] {
        let s = &states[i];
        let at = timespec::format_precise(s.time);
        let restored = env.restore_all(&other_catalog, &at, &format!("replacement-{i}"));
        assert_same_tree(&restored, &s.tree, &format!("replacement node, pass {i}"));
    }
    assert!(other_catalog.exists());
}

/// One table per format with one flushed SSTable, an incremental backup and a snapshot.
fn small_node(env: &Env) -> Vec<TableDir> {
    let mut node = Node::new(&env.data);
    let mut tables = Vec::new();
    for f in FixtureFormat::ALL {
        let mut t = node.create_table(&format!("ks_{}", f.version()), "events", f);
        let op = t.flush();
        let g = op.generation().unwrap().clone();
        op.run().unwrap();
        t.flush().run().unwrap();
        t.incremental_backup(&g).run().unwrap();
        t.snapshot("daily").run().unwrap();
        tables.push(t);
    }
    tables
}

/// Small files backed up into packs come back byte for byte and mtime for mtime (the
/// mtime is set on each file split out of a pack before its fsync), from the catalog
/// and from the repository alone.
#[test]
fn packed_small_files_restore_with_their_bytes_and_mtimes() {
    let env = Env::new();
    let tables = small_node(&env);
    let summary = env.backup_with(&["--pack-small-files"]);
    assert!(
        summary["packs_uploaded"].as_u64().unwrap() > 0,
        "nothing was packed: {summary}"
    );
    let tree = expected_tree(&env.data, &tables);
    let at = timespec::format_precise(timespec::now());
    assert_same_tree(
        &env.restore_all(&env.catalog, &at, "packed"),
        &tree,
        "packed, from the catalog",
    );
    let rebuilt = env.tmp.path().join("rebuilt.db");
    assert_same_tree(
        &env.restore_all(&rebuilt, &at, "packed-rebuilt"),
        &tree,
        "packed, from the repository alone",
    );
}

/// `--layout sstableloader` writes `<ks>/<table>/` live SSTables only and says how to
/// load them; the data layout says `nodetool import` (4.0+) or `refresh` (older).
#[test]
fn layouts_and_next_steps() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let tree = expected_tree(&env.data, &tables);
    let at = timespec::format_precise(timespec::now());

    let to = env.target("loader");
    let out = ok(env.restore(
        &env.catalog,
        &at,
        &to,
        &["--layout", "sstableloader", "--include-snapshots"],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want: Tree = live_only(&tree, false)
        .into_iter()
        .map(|(k, v)| {
            let mut parts: Vec<&str> = k.split('/').collect();
            parts[1] = "events"; // <table>-<id> → <table>
            (parts.join("/"), v)
        })
        .collect();
    assert_eq!(want.len(), live_only(&tree, false).len());
    assert_same_tree(&read_tree(&to), &want, "sstableloader layout");
    for f in FixtureFormat::ALL {
        let dir = to.join(format!("ks_{}", f.version())).join("events");
        let line = format!("sstableloader -d <cassandra host> {}", dir.display());
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }

    let to = env.target("data");
    let out = ok(env.restore(&env.catalog, &at, &to, &[]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_same_tree(&read_tree(&to), &live_only(&tree, false), "data layout");
    assert!(stdout.contains("next steps:"), "{stdout}");
    for t in &tables {
        let ks = t.keyspace();
        let dir = t.path().strip_prefix(&env.data).unwrap();
        let dir = to.join(dir);
        let modern = matches!(
            t.format(),
            FixtureFormat::Na | FixtureFormat::Nb | FixtureFormat::Oa | FixtureFormat::Da
        );
        let line = if modern {
            format!("nodetool import {ks} events {}", dir.display())
        } else {
            format!(
                "copy {}/* into the live table directory, then: nodetool refresh {ks} events",
                dir.display()
            )
        };
        assert!(
            stdout.contains(&line),
            "{:?}: missing {line:?} in:\n{stdout}",
            t.format()
        );
    }
    assert!(!stdout.contains("sstableloader"), "{stdout}");
}

/// `--dry-run` prints the plan (files, bytes, tables, point) and writes nothing; with
/// `--json` the plan is one JSON document.
#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let env = Env::new();
    let tables = small_node(&env);
    let point = env.backup();
    let tree = expected_tree(&env.data, &tables);
    let live = live_only(&tree, false);
    let bytes: u64 = live
        .keys()
        .map(|k| std::fs::metadata(env.data.join(k)).unwrap().len())
        .sum();

    let to = env.target("dry");
    let out = ok(env.restore(&env.catalog, &point, &to, &["--dry-run"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!to.exists(), "dry run created {}", to.display());
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("would restore {} files (", live.len())),
        "{stdout}"
    );
    assert!(
        first.contains(&format!("of node {NODE} at snapshot {point} (")),
        "{stdout}"
    );
    assert!(
        first.contains(&format!("into {} tables:", tables.len())),
        "{stdout}"
    );
    for t in &tables {
        assert!(
            stdout.contains(&format!("  {}.events: ", t.keyspace())),
            "{stdout}"
        );
    }

    let out = ok(env.restore(&env.catalog, &point, &to, &["--dry-run", "--json"]));
    assert!(!to.exists());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    assert_eq!(plan["node"], NODE);
    assert_eq!(plan["point"]["snapshot"], point.as_str());
    assert!(plan["point"]["time"].as_i64().unwrap() > 0);
    assert_eq!(plan["bytes"].as_u64(), Some(bytes));
    let files = plan["files"].as_array().unwrap();
    assert_eq!(files.len(), live.len());
    let dests: std::collections::BTreeSet<String> = files
        .iter()
        .map(|f| f["dest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dests, live.keys().cloned().collect());
    for f in files {
        let want = &live[f["dest"].as_str().unwrap()];
        assert_eq!(f["hash"].as_str(), Some(want.0.as_str()));
        assert_eq!(f["mtime"].as_i64(), Some(want.1));
    }
    assert_eq!(plan["tables"].as_array().unwrap().len(), tables.len());
}

/// Backup and restore through a real S3-protocol server (s3s-fs on 127.0.0.1, served by
/// this test process while the binary runs as a separate process).
#[test]
fn round_trip_through_s3() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(s3support::S3Server::start());
    server.create_bucket("tsbucket");
    let env = Env::new();
    let tables = small_node(&env);
    let s3 = |c: &mut Command| {
        c.arg("--repo")
            .arg("s3://tsbucket/cluster-a")
            .arg("--catalog")
            .arg(&env.catalog)
            .arg("--node")
            .arg(NODE)
            .arg("--s3-endpoint")
            .arg(&server.endpoint)
            .args([
                "--s3-allow-http",
                "--s3-path-style",
                "--s3-region",
                "us-east-1",
            ])
            .env("AWS_ACCESS_KEY_ID", s3support::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3support::SECRET_KEY);
    };
    let mut c = tablesafe(env.tmp.path());
    s3(&mut c);
    ok(c.args(["backup", "--init", "--data-dir"])
        .arg(&env.data)
        .output()
        .unwrap());
    let tree = expected_tree(&env.data, &tables);
    let at = timespec::format_precise(timespec::now());
    assert!(
        server
            .root()
            .join("tsbucket/cluster-a/nodes/n1/log")
            .is_dir(),
        "the catalog log is in the bucket"
    );
    // From the bucket alone: no local catalog.
    remove_catalog(&env.catalog);
    let to = env.target("s3");
    let mut c = tablesafe(env.tmp.path());
    s3(&mut c);
    ok(
        c.args(["restore", "--include-snapshots", "--at", &at, "--to"])
            .arg(&to)
            .output()
            .unwrap(),
    );
    assert_same_tree(&read_tree(&to), &tree, "through S3");
    drop(server);
    drop(rt);
}

/// Writes a complete `nb` SSTable with small distinct components.
fn write_sstable(table_dir: &Path, generation: u32) {
    std::fs::create_dir_all(table_dir).unwrap();
    let base = format!("nb-{generation}-big");
    let data = format!("data of generation {generation}").repeat(50);
    std::fs::write(table_dir.join(format!("{base}-Data.db")), &data).unwrap();
    std::fs::write(
        table_dir.join(format!("{base}-Digest.crc32")),
        crc32fast::hash(data.as_bytes()).to_string(),
    )
    .unwrap();
    std::fs::write(
        table_dir.join(format!("{base}-Statistics.db")),
        format!("statistics {generation}"),
    )
    .unwrap();
    std::fs::write(
        table_dir.join(format!("{base}-TOC.txt")),
        "Data.db\nDigest.crc32\nStatistics.db\nTOC.txt\n",
    )
    .unwrap();
}

/// Cassandra with two `data_file_directories`: the same table directory in each, with
/// different SSTables, and a snapshot that has a manifest and schema in each.
#[test]
fn a_node_with_two_data_directories_restores_into_one_target() {
    let env = Env::new();
    let dirs = [env.tmp.path().join("disk1"), env.tmp.path().join("disk2")];
    let table_rel = "ks/t-0123456789abcdef0123456789abcdef";
    for (i, d) in dirs.iter().enumerate() {
        let table = d.join(table_rel);
        write_sstable(&table, i as u32 + 1);
        let snap = table.join("snapshots/daily");
        std::fs::create_dir_all(&snap).unwrap();
        for e in std::fs::read_dir(&table).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::hard_link(&p, snap.join(p.file_name().unwrap())).unwrap();
            }
        }
        // Cassandra 4.1+ writes the same manifest into the snapshot of every data directory.
        std::fs::write(
            snap.join("manifest.json"),
            "{\"files\":[\"nb-1-big-Data.db\",\"nb-2-big-Data.db\"]}",
        )
        .unwrap();
        std::fs::write(
            snap.join("schema.cql"),
            "CREATE TABLE ks.t (pk int PRIMARY KEY);\n",
        )
        .unwrap();
    }
    ok(env
        .cmd(&env.catalog)
        .args(["backup", "--init", "--data-dir"])
        .arg(&dirs[0])
        .arg("--data-dir")
        .arg(&dirs[1])
        .output()
        .unwrap());
    let at = timespec::format_precise(timespec::now());
    let mut live = Tree::new();
    for d in &dirs {
        for (k, v) in read_tree(d) {
            if k.split('/').count() == 3 {
                live.insert(k, v);
            }
        }
    }
    assert_eq!(live.len(), 8);
    let to = env.target("two-dirs");
    ok(env.restore(&env.catalog, &at, &to, &[]));
    assert_same_tree(
        &read_tree(&to),
        &live,
        "live files of both data directories",
    );

    // With snapshots: each data directory's SSTable links, and the manifest and schema
    // both directories hold (same bytes) once.
    let mut all = Tree::new();
    for d in &dirs {
        all.extend(read_tree(d));
    }
    assert_eq!(all.len(), 18);
    let to = env.target("two-dirs-snapshots");
    ok(env.restore(&env.catalog, &at, &to, &["--include-snapshots"]));
    let restored = read_tree(&to);
    assert_eq!(restored.len(), 18, "{restored:?}");
    for (k, v) in &restored {
        let sources: Vec<_> = dirs
            .iter()
            .filter_map(|d| read_tree(d).get(k).cloned())
            .collect();
        assert!(sources.iter().any(|s| s.0 == v.0), "{k}");
        assert!(
            sources.iter().any(|s| s == v),
            "{k}: mtime of one of the sources"
        );
    }

    // Different bytes at one path cannot both be restored: refused before writing.
    std::fs::write(
        dirs[1]
            .join(table_rel)
            .join("snapshots/daily/manifest.json"),
        "{\"files\":[\"nb-2-big-Data.db\"]}",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    ok(env
        .cmd(&env.catalog)
        .args(["backup", "--data-dir"])
        .arg(&dirs[0])
        .arg("--data-dir")
        .arg(&dirs[1])
        .output()
        .unwrap());
    let at = timespec::format_precise(timespec::now());
    let to = env.target("two-dirs-conflict");
    let out = env.restore(&env.catalog, &at, &to, &["--include-snapshots"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{table_rel}/snapshots/daily/manifest.json would be restored twice with different content"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&*dirs[1].to_string_lossy()), "{stderr}");
    assert!(!to.exists(), "nothing written");
    ok(env.restore(&env.catalog, &at, &to, &[]));
    assert_same_tree(&read_tree(&to), &live, "live files still restore");
}

/// A node backed up at point A, then changed the way a live node changes: a Statistics.db
/// rewritten (same name, other bytes), flushes and a compaction (new SSTables, old ones
/// gone), a table dropped (Cassandra snapshots it) and created again under a new id, a new
/// table, and a flush cut short by a crash (its transaction log and half its files left),
/// backed up again at point B. Returns point A and the node's tree at A.
struct Later {
    env: Env,
    point_a: String,
    tree_a: Tree,
}

fn later_history() -> Later {
    let env = Env::new();
    let mut node = Node::new(&env.data);
    let mut events = node.create_table("ks1", "events", FixtureFormat::Nb);
    let mut audit = node.create_table("ks1", "audit", FixtureFormat::Mc);
    let mut old = node.create_table("ks2", "events", FixtureFormat::Oa);
    let mut gens = Vec::new();
    for t in [&mut events, &mut audit, &mut old] {
        for _ in 0..2 {
            let op = t.flush();
            gens.push(op.generation().unwrap().clone());
            op.run().unwrap();
        }
    }
    events.snapshot("early").run().unwrap();
    let point_a = env.backup();
    let tree_a = expected_tree(&env.data, &[events.clone(), audit.clone(), old.clone()]);

    std::thread::sleep(std::time::Duration::from_millis(5));
    for t in [&mut events, &mut audit] {
        let live = t.live_generations();
        t.rewrite_statistics(&live[0]).run().unwrap();
        let op = t.flush();
        let third = op.generation().unwrap().clone();
        op.run().unwrap();
        t.compact(&[live[1].clone(), third]).run().unwrap();
        t.flush().run().unwrap();
    }
    // DROP TABLE ks2.events (auto_snapshot), then CREATE TABLE ks2.events again.
    old.snapshot("dropped-ks2-events").run().unwrap();
    for g in old.live_generations() {
        for c in old.components() {
            let _ = std::fs::remove_file(old.path().join(old.file_name(&g, &c)));
        }
    }
    let mut recreated = node.create_table("ks2", "events", FixtureFormat::Oa);
    recreated.flush().run().unwrap();
    let mut late = node.create_table("ks1", "late", FixtureFormat::Nb);
    late.flush().run().unwrap();
    env.backup();
    // A crash part way through a flush: its txn log and some components stay.
    let mut cut = events.flush();
    cut.run_steps(4).unwrap();
    drop(cut);
    Later {
        env,
        point_a,
        tree_a,
    }
}

/// Live table files only (`<ks>/<table dir>/<file>`, index directories included).
fn live_part(tree: &Tree) -> Tree {
    tree.iter()
        .filter(|(k, _)| {
            let parts: Vec<&str> = k.split('/').collect();
            parts.len() >= 3 && parts[2] != "snapshots" && parts[2] != "backups"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn not_live_part(tree: &Tree) -> Tree {
    let live = live_part(tree);
    tree.iter()
        .filter(|(k, _)| !live.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// After flushes and compactions, `restore --overwrite` in place to the earlier point
/// leaves the table directories holding exactly that point's files (bytes and mtimes);
/// every newer file, the crashed flush's files and log, the recreated table's and the new
/// table's files, and the files the point has with other bytes are in a quarantine beside
/// the data directory, byte for byte; snapshots and backups stay where they are.
#[test]
fn restoring_in_place_with_overwrite_gives_exactly_the_earlier_point() {
    let Later {
        env,
        point_a,
        tree_a,
    } = later_history();
    let before = read_tree(&env.data);
    let want = live_part(&tree_a);
    assert!(
        live_part(&before).keys().any(|k| !want.contains_key(k)),
        "the node has newer files"
    );
    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &["--overwrite", "--json"],
    ));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let after = read_tree(&env.data);
    assert_same_tree(
        &live_part(&after),
        &want,
        "table directories after the restore",
    );
    assert_same_tree(
        &not_live_part(&after),
        &not_live_part(&before),
        "snapshots and backups stay",
    );

    // The quarantine: beside the data directory, holding everything else, intact.
    let q = PathBuf::from(doc["summary"]["quarantine"].as_str().unwrap());
    assert_eq!(
        q.parent().unwrap(),
        std::fs::canonicalize(env.tmp.path()).unwrap()
    );
    assert!(
        q.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("tablesafe-quarantine-data-"),
        "{}",
        q.display()
    );
    let moved: Tree = live_part(&before)
        .into_iter()
        .filter(|(k, v)| want.get(k).is_none_or(|w| w.0 != v.0))
        .collect();
    assert!(moved.keys().any(|k| k.ends_with(".log")), "{moved:?}");
    assert!(
        moved
            .keys()
            .any(|k| k.ends_with("Statistics.db") && want.contains_key(k))
    );
    assert_same_tree(&read_tree(&q), &moved, "the quarantine");
    let replaced = doc["summary"]["replaced"].as_array().unwrap();
    assert_eq!(
        replaced.len(),
        moved.keys().filter(|k| want.contains_key(*k)).count()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&q.display().to_string()), "{stdout}");

    // Again: the node is the point, so nothing to move and nothing to download.
    let out = ok(env.restore(&env.catalog, &point_a, &env.data, &["--overwrite"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("quarantine"), "{stdout}");
    assert!(stdout.contains(" 0 downloaded,"), "{stdout}");
    assert_same_tree(&read_tree(&env.data), &after, "unchanged");
}

/// `--dry-run` lists what `--overwrite` would move and changes nothing; `--resume` refuses
/// a target with files the point does not have; `--keep-extra` keeps them in place.
#[test]
fn extra_files_are_listed_by_dry_run_refused_by_resume_and_kept_by_keep_extra() {
    let Later {
        env,
        point_a,
        tree_a,
    } = later_history();
    let before = read_tree(&env.data);
    let want = live_part(&tree_a);
    let extra: Vec<String> = live_part(&before)
        .into_keys()
        .filter(|k| !want.contains_key(k))
        .collect();
    assert!(!extra.is_empty());

    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &["--overwrite", "--dry-run"],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_same_tree(&read_tree(&env.data), &before, "dry run changed nothing");
    assert!(stdout.contains("would move "), "{stdout}");
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  extra: "))
        .collect();
    // Each listed entry is an extra file, or a directory holding only extra files.
    for k in &extra {
        assert!(
            listed
                .iter()
                .any(|l| k.as_str() == *l || k.starts_with(&format!("{l}/"))),
            "{k} not listed:\n{stdout}"
        );
    }
    for l in &listed {
        assert!(
            !want
                .keys()
                .any(|w| w == l || w.starts_with(&format!("{l}/"))),
            "{l}"
        );
    }
    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &["--overwrite", "--dry-run", "--json"],
    ));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["extra"].as_array().unwrap().len(), listed.len());
    assert!(plan["quarantine"].as_str().is_some());
    assert!(!plan["replaced"].as_array().unwrap().is_empty());
    let siblings = std::fs::read_dir(env.tmp.path()).unwrap().count();

    let out = env.restore(&env.catalog, &point_a, &env.data, &["--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the point does not have")
            && stderr.contains("--overwrite")
            && stderr.contains("--keep-extra"),
        "{stderr}"
    );
    assert_same_tree(&read_tree(&env.data), &before, "--resume changed nothing");

    // --keep-extra: the point's files are restored, the others stay; the files the point
    // has with other bytes still go to a quarantine, so nothing is lost.
    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &["--overwrite", "--keep-extra", "--json"],
    ));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["quarantined"].as_array().unwrap().len(), 0);
    let after = read_tree(&env.data);
    let mut kept = want.clone();
    for k in &extra {
        kept.insert(k.clone(), before[k].clone());
    }
    assert_same_tree(&live_part(&after), &kept, "--keep-extra");
    assert_eq!(
        std::fs::read_dir(env.tmp.path()).unwrap().count(),
        siblings + 1,
        "one quarantine, for the replaced files"
    );
}

/// A restore limited to one keyspace (or table) moves nothing out of the others; the
/// quarantine is made in `--quarantine DIR` when given.
#[test]
fn a_filtered_restore_touches_only_the_tables_it_restores() {
    let Later {
        env,
        point_a,
        tree_a,
    } = later_history();
    let before = read_tree(&env.data);
    let elsewhere = env.tmp.path().join("quarantines/restore-1");
    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &[
            "--overwrite",
            "--keyspace",
            "ks1",
            "--table",
            "events",
            "--json",
            "--quarantine",
            elsewhere.to_str().unwrap(),
        ],
    ));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = PathBuf::from(doc["summary"]["quarantine"].as_str().unwrap());
    assert_eq!(
        q.parent().unwrap(),
        std::fs::canonicalize(&elsewhere).unwrap(),
        "in --quarantine DIR"
    );
    let moved = read_tree(&q);
    assert!(!moved.is_empty());
    assert!(
        moved.keys().all(|k| k.starts_with("ks1/events-")),
        "{moved:?}"
    );
    let after = read_tree(&env.data);
    let in_scope = |k: &str| k.starts_with("ks1/events-");
    let want: Tree = live_part(&tree_a)
        .into_iter()
        .filter(|(k, _)| in_scope(k))
        .collect();
    let got: Tree = live_part(&after)
        .into_iter()
        .filter(|(k, _)| in_scope(k))
        .collect();
    assert_same_tree(&got, &want, "ks1.events");
    let others = |t: &Tree| -> Tree {
        t.iter()
            .filter(|(k, _)| !in_scope(k) || !live_part(t).contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_same_tree(&others(&after), &others(&before), "everything else");
}

/// A restore whose filters select no table of the point exits 1 with one line naming the
/// filter and the tables the point has, and writes nothing.
#[test]
fn filters_that_match_nothing_exit_1_and_say_so() {
    let env = Env::new();
    small_node(&env);
    let point = env.backup();
    let to = env.target("nothing");
    for (filter, shown) in [
        (vec!["--keyspace", "ks_nope"], "--keyspace ks_nope"),
        (
            vec!["--keyspace", "ks_nb", "--table", "evnts"],
            "--keyspace ks_nb --table evnts",
        ),
        (vec!["--table", "nope"], "--table nope"),
    ] {
        for extra in [vec![], vec!["--dry-run"]] {
            let out = env.restore(&env.catalog, &point, &to, &[filter.clone(), extra].concat());
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(stderr.contains(&format!("matches {shown};")), "{stderr}");
            assert!(stderr.contains("ks_nb.events"), "{stderr}");
            assert!(
                stderr.contains(&format!("tablesafe snapshot show {point}")),
                "{stderr}"
            );
            assert!(!to.exists());
        }
    }
    // By time, not by name: the hint says how to list points.
    let at = timespec::format_precise(timespec::now());
    let out = env.restore(&env.catalog, &at, &to, &["--table", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tablesafe snapshot list"),
        "{}",
        text(&out)
    );
    ok(env.restore(&env.catalog, &point, &to, &["--table", "ev*"]));
}

/// A restore killed while it moved extra files has renamed some into its quarantine and
/// left the others (each rename is atomic: a file is in one place or the other). A rerun
/// with `--resume` says so; one with `--overwrite` moves the rest into a new quarantine:
/// the node is then the point and the two quarantines hold every other file, intact.
#[test]
fn a_rerun_after_a_quarantine_cut_short_finishes_it() {
    let Later {
        env,
        point_a,
        tree_a,
    } = later_history();
    let before = read_tree(&env.data);
    let want = live_part(&tree_a);
    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &["--overwrite", "--dry-run", "--json"],
    ));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let extra: Vec<&str> = plan["extra"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(extra.len() >= 4, "{extra:?}");
    // What the killed run did: every other entry renamed into its quarantine.
    let first = env.tmp.path().join("tablesafe-quarantine-data-killed");
    for rel in extra.iter().step_by(2) {
        let to = first.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(env.data.join(rel), to).unwrap();
    }

    let out = env.restore(&env.catalog, &point_a, &env.data, &["--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --overwrite"),
        "{}",
        text(&out)
    );

    let out = ok(env.restore(
        &env.catalog,
        &point_a,
        &env.data,
        &["--overwrite", "--json"],
    ));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_same_tree(&live_part(&read_tree(&env.data)), &want, "the point");
    let second = PathBuf::from(doc["summary"]["quarantine"].as_str().unwrap());
    assert_ne!(std::fs::canonicalize(&first).unwrap(), second);
    let mut quarantined = read_tree(&first);
    for (k, v) in read_tree(&second) {
        assert!(quarantined.insert(k.clone(), v).is_none(), "{k} twice");
    }
    let moved: Tree = live_part(&before)
        .into_iter()
        .filter(|(k, v)| want.get(k).is_none_or(|w| w.0 != v.0))
        .collect();
    assert_same_tree(&quarantined, &moved, "both quarantines");
}
