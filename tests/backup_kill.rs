//! `tablesafe backup` killed with SIGKILL at pseudo-random moments, many times, while the
//! data directory keeps changing (flushes and compactions between runs and during some of
//! them), then run to completion. After every kill the repository and the catalog must
//! keep the design's invariants:
//!
//! (a) every catalog log object in the repository refers only to blobs the repository has;
//! (b) every version and blob in the local catalog refers to a blob the repository has;
//! and once a run completes:
//! (c) the catalog's live set is exactly the directory's complete SSTables;
//! (d) `catalog rebuild` from the repository answers `snapshot list`/`show` identically.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::lifecycle::{Expected, FixtureFormat, Node, Operation, TableDir};
use tablesafe::catalog::{Batch, Catalog, Change, Hash32};
use tablesafe::store::{Repository, StoreOptions};
use tablesafe::timespec;

const NODE: &str = "n1";
/// Kill-and-restart rounds before the final complete run.
const ROUNDS: usize = 20;
const TABLES: usize = 20;
const SSTABLES_PER_TABLE: usize = 12;
/// Rounds whose kill falls in successive slices of the first run.
const STRATIFIED: usize = 6;

/// A small deterministic PRNG (xorshift64), so every run of the test kills at the same
/// offsets into each backup.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    repo_dir: PathBuf,
    catalog: PathBuf,
}

impl Env {
    fn repo_url(&self) -> String {
        format!("file://{}", self.repo_dir.display())
    }

    fn command(&self, repo: &Path, catalog: &Path, args: &[&str]) -> Command {
        let mut cmd = support::cli::tablesafe(&self.root.join("home"));
        cmd.args(args)
            .arg("--repo")
            .arg(format!("file://{}", repo.display()))
            .arg("--catalog")
            .arg(catalog)
            .args(["--node", NODE]);
        cmd
    }

    fn backup(&self) -> Command {
        let mut cmd = self.command(
            &self.repo_dir,
            &self.catalog,
            &["backup", "--data-dir", self.data.to_str().unwrap()],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    fn output(&self, catalog: &Path, args: &[&str]) -> Output {
        let out = self
            .command(&self.repo_dir, catalog, args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tablesafe {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn blob_path(repo: &Path, hash: &Hash32) -> PathBuf {
    let hex = hex::encode(hash);
    repo.join("blobs").join(&hex[..2]).join(&hex)
}

/// (a): every log object decodes, the sequence has no gap, and every blob a Blob or Start
/// change names is in `blobs/`. Returns the number of log objects.
fn check_repository_log(repo: &Path, context: &str) -> usize {
    let dir = repo.join("nodes").join(NODE).join("log");
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // object_store's local staging files (`<key>#<n>`) are not objects.
        .filter(|n| !n.contains('#'))
        .collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            name,
            &format!("{:020}", i + 1),
            "{context}: log objects {names:?}"
        );
        let batch = Batch::decode(&fs::read(dir.join(name)).unwrap())
            .unwrap_or_else(|e| panic!("{context}: log object {name}: {e}"));
        assert_eq!(batch.seq as usize, i + 1, "{context}");
        for change in &batch.changes {
            let hash = match change {
                Change::Blob { hash, .. } | Change::Start { hash, .. } => hash,
                _ => continue,
            };
            assert!(
                blob_path(repo, hash).is_file(),
                "{context}: log object {name} refers to missing blob {} ({change:?})",
                hex::encode(hash)
            );
        }
    }
    names.len()
}

/// (b): every hash in the local catalog's versions and blobs is in `blobs/`.
fn check_catalog(repo: &Path, catalog: &Path, context: &str) -> usize {
    if !catalog.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(catalog).unwrap();
    let mut hashes = BTreeSet::new();
    // A small file's content is in its pack: the pack must be there.
    for sql in [
        "SELECT DISTINCT hash FROM versions v
         WHERE NOT EXISTS (SELECT 1 FROM packed p WHERE p.hash = v.hash)",
        "SELECT hash FROM blobs",
        "SELECT DISTINCT pack FROM packed",
    ] {
        let Ok(mut stmt) = conn.prepare(sql) else {
            // Killed before the schema was created.
            return 0;
        };
        let rows = stmt
            .query_map([], |r| r.get::<_, [u8; 32]>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        hashes.extend(rows);
    }
    for h in &hashes {
        assert!(
            blob_path(repo, h).is_file(),
            "{context}: the catalog refers to missing blob {}",
            hex::encode(h)
        );
    }
    hashes.len()
}

/// The files of every complete SSTable of every table, as (data-relative path, BLAKE3).
fn directory_view(data: &Path, tables: &[TableDir]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for t in tables {
        let e = t.expectation();
        for (dir, de) in &e.dirs {
            let d = if dir.is_empty() {
                t.path().to_path_buf()
            } else {
                t.path().join(dir)
            };
            let mut names: Vec<String> = de.other_files.iter().cloned().collect();
            for (base, s) in &de.sstables {
                if s.state == Expected::Complete {
                    names.extend(t.components().iter().map(|c| format!("{base}-{c}")));
                }
            }
            for n in names {
                let p = d.join(n);
                let rel = p.strip_prefix(data).unwrap().to_string_lossy().into_owned();
                out.insert((
                    rel,
                    blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                ));
            }
        }
    }
    out
}

fn live_view(catalog: &Catalog, t: i64) -> BTreeSet<(String, String)> {
    catalog
        .live_at(NODE, t)
        .unwrap()
        .into_iter()
        .map(|v| (v.key.data_relative_path(), hex::encode(v.hash)))
        .collect()
}

/// Waits up to `delay` for `child`, stepping `op` (a concurrent Cassandra operation) every
/// few milliseconds; kills the child if it is still running. Returns true if killed.
fn kill_after(child: &mut Child, delay: Duration, mut op: Option<&mut Operation>) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            assert!(status.success(), "backup failed on its own: {stderr}");
            return false;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        if let Some(op) = op.as_deref_mut() {
            let _ = op.step().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_at_random_moments_keeps_repository_and_catalog_consistent() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let env = Env {
        data: root.join("data"),
        repo_dir: root.join("repo"),
        catalog: root.join("catalog/n1.db"),
        root,
        _tmp: tmp,
    };
    let mut node = Node::new(&env.data);
    // Many small tables rather than a few big ones: the helper's model costs grow fast
    // with the SSTables of one table.
    let formats = [FixtureFormat::Nb, FixtureFormat::Da, FixtureFormat::La];
    let mut tables: Vec<TableDir> = (0..TABLES)
        .map(|i| {
            let ks = ["ks", "app", "old"][i % 3];
            node.create_table(ks, &format!("t{i:02}"), formats[i % 3])
        })
        .collect();
    for t in &mut tables {
        for _ in 0..SSTABLES_PER_TABLE {
            t.flush().run().unwrap();
        }
    }
    let sstables: usize = tables.iter().map(|t| t.live_generations().len()).sum();
    eprintln!(
        "{sstables} distinct SSTables written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // How long a whole first backup takes here, on a scratch repository and catalog, so
    // the kills spread over a whole run.
    let scratch_repo = env.root.join("scratch-repo");
    let scratch_catalog = env.root.join("scratch.db");
    let t0 = Instant::now();
    let out = env
        .command(
            &scratch_repo,
            &scratch_catalog,
            &["backup", "--init", "--data-dir", env.data.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = t0.elapsed();
    eprintln!("a whole first backup takes {:.2} s", full.as_secs_f64());
    fs::remove_dir_all(&scratch_repo).unwrap();

    env.output(&env.catalog, &["init"]);
    let mut rng = XorShift(0x7ab1_e5af_e0d4_2026);
    let (mut killed, mut finished) = (0, 0);
    // Kill delays span the length of the last run that completed (runs after a complete
    // one are shorter: the stat cache spares them the reading).
    let mut span = full;
    for round in 0..ROUNDS {
        // Cassandra keeps working between runs...
        match round % 5 {
            1 => {
                let i = rng.below(TABLES as u64) as usize;
                tables[i].flush().run().unwrap();
            }
            3 => {
                let i = rng.below(TABLES as u64) as usize;
                let gens = tables[i].live_generations();
                let pick = rng.below(gens.len() as u64 - 1) as usize;
                tables[i].compact(&gens[pick..pick + 2]).run().unwrap();
            }
            _ => {}
        }
        // ...and, every fourth run, while the backup runs: a compaction deleting files.
        let mut concurrent = (round % 4 == 2).then(|| {
            let i = rng.below(TABLES as u64) as usize;
            let gens = tables[i].live_generations();
            tables[i].compact(&gens[..3])
        });
        // The first rounds kill within successive slices of the first (longest, uploading)
        // run; later ones anywhere in the last complete run.
        let delay = if round < STRATIFIED {
            let slice = full.as_millis() as u64 / STRATIFIED as u64;
            Duration::from_millis(slice * round as u64 + rng.below(slice))
        } else {
            Duration::from_millis(rng.below(span.as_millis() as u64 * 6 / 5 + 20))
        };
        let t0 = Instant::now();
        let mut child = env.backup().spawn().unwrap();
        let was_killed = kill_after(&mut child, delay, concurrent.as_mut());
        if was_killed {
            killed += 1;
        } else {
            finished += 1;
            span = t0.elapsed();
        }
        if let Some(op) = concurrent {
            op.run().unwrap();
        }
        let context = format!("after round {round} (killed at {} ms)", delay.as_millis());
        let logs = check_repository_log(&env.repo_dir, &context);
        let hashes = check_catalog(&env.repo_dir, &env.catalog, &context);
        eprintln!(
            "round {round:>2}: kill after {:>4} ms: {}; {logs} log objects, {hashes} blobs in the catalog",
            delay.as_millis(),
            if was_killed {
                "killed"
            } else {
                "finished first"
            },
        );
    }
    eprintln!("{ROUNDS} rounds: {killed} killed, {finished} finished before the kill");
    assert!(
        killed >= ROUNDS / 2,
        "most runs must be killed part-way: {killed} of {ROUNDS}"
    );

    // Run to completion.
    let out = env.backup().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = check_repository_log(&env.repo_dir, "after the final run");
    let hashes = check_catalog(&env.repo_dir, &env.catalog, "after the final run");
    eprintln!("{logs} log objects, {hashes} distinct blobs referenced");

    // (c) the catalog's live set is the directory.
    let catalog = Catalog::open(&env.catalog).unwrap();
    let now = timespec::now();
    let disk = directory_view(&env.data, &tables);
    let live = live_view(&catalog, now);
    if live != disk {
        panic!(
            "after the final run, on disk not in the catalog: {:#?}\nin the catalog not on disk: {:#?}",
            disk.difference(&live).collect::<Vec<_>>(),
            live.difference(&disk).collect::<Vec<_>>()
        );
    }

    // Every blob the catalog refers to decodes to its hash.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repository::open(&env.repo_url(), &StoreOptions::default())
            .await
            .unwrap();
        let all: BTreeSet<String> = live.iter().map(|(_, h)| h.clone()).collect();
        let out = env.root.join("content");
        for h in &all {
            let hash: Hash32 = hex::decode(h).unwrap().try_into().unwrap();
            tablesafe::restore::content_to_file(&repo, &catalog, &hash, &out)
                .await
                .unwrap_or_else(|e| panic!("content {h}: {e}"));
        }
    });

    // (d) a catalog rebuilt from the repository answers the same.
    let rebuilt = env.root.join("rebuilt/n1.db");
    env.output(&rebuilt, &["catalog", "rebuild"]);
    let list = |c: &Path| env.output(c, &["snapshot", "list", "--json"]).stdout;
    let original_list = list(&env.catalog);
    assert_eq!(original_list, list(&rebuilt), "snapshot list --json");
    let points: Vec<serde_json::Value> = serde_json::from_slice(&original_list).unwrap();
    // Every completed run recorded a point (a killed one may have, too).
    assert!(points.len() > finished, "{points:?}");
    let last = points.last().unwrap()["name"].as_str().unwrap().to_string();
    let show = |c: &Path| env.output(c, &["snapshot", "show", &last, "--json"]).stdout;
    assert_eq!(
        show(&env.catalog),
        show(&rebuilt),
        "snapshot show {last} --json"
    );
    let rebuilt_catalog = Catalog::open(&rebuilt).unwrap();
    for p in &points {
        let t = p["time"].as_i64().unwrap();
        assert_eq!(
            catalog.live_at(NODE, t).unwrap(),
            rebuilt_catalog.live_at(NODE, t).unwrap(),
            "live set at point {}",
            p["name"]
        );
    }
    assert_eq!(live_view(&rebuilt_catalog, now), disk);
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}
