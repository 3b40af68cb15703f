//! gc and verify through the library, on real parts: SQLite catalogs, `file://` and an
//! S3-protocol server on 127.0.0.1, and a data directory of complete SSTables that the
//! test changes step by step (flushes, compactions, dropped tables, and old content
//! coming back).
//!
//! The property: for random histories and random retention policies, after gc every
//! retained point restores byte-identically, and after the grace period the repository
//! holds exactly the blobs the retained points need.

mod s3support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tablesafe::backup::filter::TableFilter;
use tablesafe::backup::{self, BackupOptions, PointMode};
use tablesafe::catalog::{Catalog, mirror};
use tablesafe::gc::{self, GcOptions, GcSummary, RetentionPolicy};
use tablesafe::progress::Progress;
use tablesafe::restore::{self, ExistingFiles, Layout, RestoreError, RestoreOptions};
use tablesafe::store::{Repository, StoreOptions};
use tablesafe::timespec::{self, Micros};
use tablesafe::verify::{self, ReadData, VerifyOptions};

const TABLE_DIR: &str = "ks/t-0123456789abcdef0123456789abcdef";

/// Path below the data directory → BLAKE3 hex of the content.
type Tree = BTreeMap<String, String>;

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    /// A new SSTable with this many bytes of Data.db (content from the seed).
    Flush(usize, u64),
    /// The two oldest live SSTables replaced by one.
    Compact(u64),
    /// A dropped SSTable comes back with exactly its old bytes (a restore, a re-import).
    Resurrect,
    /// Every SSTable gone (DROP TABLE, TRUNCATE).
    DropAll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..4000, any::<u64>()).prop_map(|(n, s)| Step::Flush(n, s)),
        2 => any::<u64>().prop_map(Step::Compact),
        2 => Just(Step::Resurrect),
        1 => Just(Step::DropAll),
    ]
}

fn policy() -> impl Strategy<Value = (Option<usize>, Option<u32>, Option<u32>, Option<usize>)> {
    // (window: keep the last N steps whole, keep_last, keep_hourly, keep a named step)
    (
        proptest::option::of(0usize..6),
        proptest::option::of(0u32..4),
        proptest::option::of(1u32..3),
        proptest::option::of(0usize..12),
    )
}

/// A data directory of plain 3.0+ SSTables (Data.db and TOC.txt), changed step by step.
struct History {
    data: PathBuf,
    next_gen: u64,
    live: Vec<u64>,
    /// Content of every SSTable that ever existed, by generation.
    contents: BTreeMap<u64, Vec<u8>>,
    dropped: Vec<u64>,
}

impl History {
    fn new(data: &Path) -> History {
        fs::create_dir_all(data.join(TABLE_DIR)).unwrap();
        History {
            data: data.to_path_buf(),
            next_gen: 1,
            live: Vec::new(),
            contents: BTreeMap::new(),
            dropped: Vec::new(),
        }
    }

    fn write(&self, generation: u64) {
        let dir = self.data.join(TABLE_DIR);
        fs::write(
            dir.join(format!("nb-{generation}-big-Data.db")),
            &self.contents[&generation],
        )
        .unwrap();
        fs::write(
            dir.join(format!("nb-{generation}-big-TOC.txt")),
            "Data.db\nTOC.txt\n",
        )
        .unwrap();
    }

    fn remove(&mut self, generation: u64) {
        let dir = self.data.join(TABLE_DIR);
        for c in ["Data.db", "TOC.txt"] {
            fs::remove_file(dir.join(format!("nb-{generation}-big-{c}"))).unwrap();
        }
        self.live.retain(|g| *g != generation);
        self.dropped.push(generation);
    }

    fn new_sstable(&mut self, len: usize, seed: u64) {
        let generation = self.next_gen;
        self.next_gen += 1;
        let mut bytes = Vec::with_capacity(len + 16);
        bytes.extend_from_slice(&generation.to_le_bytes());
        let mut x = seed | 1;
        while bytes.len() < len + 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        self.contents.insert(generation, bytes);
        self.write(generation);
        self.live.push(generation);
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Flush(len, seed) => self.new_sstable(*len, *seed),
            Step::Compact(seed) => {
                if self.live.len() >= 2 {
                    let (a, b) = (self.live[0], self.live[1]);
                    let len = self.contents[&a].len() + self.contents[&b].len();
                    self.new_sstable(len / 2, *seed);
                    self.remove(a);
                    self.remove(b);
                }
            }
            Step::Resurrect => {
                if let Some(generation) = self.dropped.pop() {
                    self.write(generation);
                    self.live.push(generation);
                }
            }
            Step::DropAll => {
                for generation in self.live.clone() {
                    self.remove(generation);
                }
            }
        }
    }
}

/// Every file below `root`, by relative path, with its BLAKE3.
fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(
                    rel,
                    blake3::hash(&fs::read(&path).unwrap()).to_hex().to_string(),
                );
            }
        }
    }
    out
}

/// Blob ids (hex) present in a `file://` repository.
fn stored_blobs(repo_dir: &Path) -> BTreeSet<String> {
    tree(&repo_dir.join("blobs"))
        .into_keys()
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .filter(|name| name.len() == 64)
        .collect()
}

struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// Where the repository's objects are files.
    repo_dir: PathBuf,
    data: PathBuf,
    repo: Repository,
    catalog: Catalog,
    view: Catalog,
    /// Time at which gc evaluates retention (None: when it runs).
    as_of: Option<Micros>,
    /// Back up with `pack_small_files`.
    pack: bool,
    /// gc may free the node's last state with data (`gc --force n1`).
    release_last_state: bool,
}

impl Rig {
    /// A rig on a `file://` repository, or on `(url, options, objects directory)`.
    async fn new(remote: Option<(String, StoreOptions, PathBuf)>) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        let (url, opts, repo_dir) = remote.unwrap_or_else(|| {
            (
                format!("file://{}", root.join("repo").display()),
                StoreOptions::default(),
                root.join("repo"),
            )
        });
        let repo = Repository::init(&url, &opts).await.unwrap();
        Rig {
            repo_dir,
            catalog: Catalog::open(&root.join("n1.db")).unwrap(),
            view: Catalog::open(&root.join("n1.all-nodes.db")).unwrap(),
            as_of: None,
            pack: false,
            release_last_state: false,
            _tmp: tmp,
            root,
            data,
            repo,
        }
    }

    /// One backup pass recorded as a named point; returns its time.
    async fn backup(&mut self, name: &str) -> Micros {
        let opts = BackupOptions {
            node: "n1".into(),
            data_dirs: vec![self.data.clone()],
            filter: TableFilter::default(),
            point: PointMode::Named(name.into()),
            vanished_root_is_empty: false,
            pin_dir: None,
            parallel: 2,
            prune_incremental: false,
            pack_small_files: self.pack,
        };
        let summary = backup::run(
            &self.repo,
            &mut self.catalog,
            &opts,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("backup failed: {e}"));
        summary.point_time
    }

    async fn gc(&mut self, policy: RetentionPolicy, grace: Micros) -> GcSummary {
        let opts = GcOptions {
            policy,
            grace,
            dry_run: false,
            force: false,
            release_last_state: if self.release_last_state {
                vec!["n1".into()]
            } else {
                Vec::new()
            },
            parallel: 4,
            as_of: self.as_of,
        };
        gc::run(
            &self.repo,
            &mut self.view,
            &opts,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("gc failed: {e}"))
    }

    /// Restores `when` (a snapshot name or a time) from the node's own catalog.
    async fn restore(&mut self, when: &str) -> Result<Tree, RestoreError> {
        mirror::sync_gc_log(&self.repo, &mut self.catalog)
            .await
            .unwrap();
        let to = self.root.join("out");
        let _ = fs::remove_dir_all(&to);
        let opts = RestoreOptions {
            node: "n1".into(),
            to: to.clone(),
            layout: Layout::Data,
            keyspaces: vec![],
            tables: vec![],
            include_system: false,
            include_snapshots: false,
            existing: ExistingFiles::Refuse,
            force: false,
            parallel: 4,
        };
        let point = restore::resolve_point(&self.catalog, "n1", when)?;
        let plan = restore::plan(&self.catalog, point, &opts)?;
        let summary =
            restore::execute(&self.repo, &plan, &opts, Arc::new(Progress::default())).await?;
        assert!(summary.failed.is_empty(), "{:?}", summary.failed);
        Ok(tree(&to))
    }

    async fn verify(&mut self, read_data: ReadData) -> verify::VerifyReport {
        let opts = VerifyOptions {
            read_data,
            parallel: 4,
        };
        verify::run(
            &self.repo,
            &mut self.view,
            &opts,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap()
    }
}

/// Blob ids (hex) a tree needs.
fn blobs_of(t: &Tree) -> BTreeSet<String> {
    t.values().cloned().collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn retained_points_restore_and_nothing_else_survives_the_grace() {
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (proptest::collection::vec(step(), 3..12), policy());
    runner
        .run(&strategy, |(steps, policy)| {
            rt().block_on(check_history(steps, policy));
            Ok(())
        })
        .unwrap();
}

async fn check_history(
    steps: Vec<Step>,
    (window, keep_last, keep_hourly, keep_named): (
        Option<usize>,
        Option<u32>,
        Option<u32>,
        Option<usize>,
    ),
) {
    let mut rig = Rig::new(None).await;
    let mut history = History::new(&rig.data);
    // (name, time, tree) of every step's point, and when each pass started.
    let mut points: Vec<(String, Micros, Tree)> = Vec::new();
    let mut pass_starts: Vec<Micros> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        history.apply(s);
        let name = format!("step-{i}");
        pass_starts.push(timespec::now());
        let time = rig.backup(&name).await;
        points.push((name, time, tree(&rig.data)));
        // A gap between passes, so a window edge can fall between two of them.
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let n = points.len();
    // The window starts between two passes, when nothing was being recorded (or before
    // the first).
    let keep_from_target = window.map(|w| {
        let first_kept = n.saturating_sub(w.max(1));
        if first_kept == 0 {
            pass_starts[0] - 1
        } else {
            (points[first_kept - 1].1 + pass_starts[first_kept]) / 2
        }
    });
    let as_of = timespec::now();
    rig.as_of = Some(as_of);
    let policy_now = |keep_snapshots: Vec<String>| RetentionPolicy {
        keep_within: keep_from_target.map(|from| as_of - from),
        keep_last,
        keep_hourly,
        keep_snapshots,
        ..RetentionPolicy::default()
    };
    let named: Vec<String> = keep_named
        .filter(|i| *i < n)
        .map(|i| vec![points[i].0.clone()])
        .unwrap_or_default();
    let policy = policy_now(named.clone());
    let keeps_past = policy.keep_within.is_some() || {
        let rows = rig
            .catalog
            .snapshots(&tablesafe::catalog::SnapshotFilter::default())
            .unwrap();
        !policy.select(&rows).is_empty()
    };
    if !keeps_past {
        // Such a policy is refused without --force (tested below); nothing to check here.
        return;
    }
    rig.gc(policy, 0).await;
    // A second run deletes what the first condemned (grace 0), with the window edge at
    // the same instant.
    let second = rig.gc(policy_now(named), 0).await;
    assert_eq!(second.blobs_condemned, 0, "{second:?}");
    let keep_from = second.nodes[0].keep_from.unwrap();
    assert!(
        keep_from_target.is_none_or(|t| keep_from == t),
        "window edge {keep_from} vs {keep_from_target:?}"
    );
    let kept_names: BTreeSet<String> = {
        let rows = rig
            .view
            .snapshots(&tablesafe::catalog::SnapshotFilter::default())
            .unwrap();
        rows.into_iter().map(|r| r.name).collect()
    };

    // Every retained point restores exactly: the named ones, and every pass in the window
    // (by time), and the instant the window starts.
    let mut needed = BTreeSet::new();
    for (i, (name, time, expected)) in points.iter().enumerate() {
        let in_window = *time >= keep_from;
        let live_at_edge = *time < keep_from && points.get(i + 1).is_none_or(|p| p.1 >= keep_from);
        if kept_names.contains(name) {
            assert_eq!(
                &rig.restore(name).await.unwrap(),
                expected,
                "snapshot {name}"
            );
            needed.extend(blobs_of(expected));
        }
        if in_window || live_at_edge {
            let at = if in_window { *time } else { keep_from };
            let got = rig.restore(&timespec::format_precise(at)).await.unwrap();
            assert_eq!(&got, expected, "time of {name} (window from {keep_from})");
            needed.extend(blobs_of(expected));
        }
        if !in_window && !live_at_edge && !kept_names.contains(name) {
            // Thinned: refused rather than restored incompletely.
            match rig.restore(&timespec::format_precise(*time)).await {
                Err(RestoreError::NotRetained { .. }) => {}
                other => panic!("{name} was not retained but restore gave {other:?}"),
            }
        }
    }
    // A node with no file left keeps its last state with data, whatever the rules say:
    // the state of the last point that had files (its files all ended in the next pass).
    let last_with_data = points.iter().rev().find(|p| !p.2.is_empty());
    match (points.last(), last_with_data) {
        (Some((_, _, now)), Some((name, _, last))) if now.is_empty() => {
            needed.extend(blobs_of(last));
            if let Some(t) = second.nodes[0].last_state_kept {
                let got = rig.restore(&timespec::format_precise(t)).await.unwrap();
                assert_eq!(&got, last, "last state with data (that of {name})");
            }
        }
        _ => assert_eq!(second.nodes[0].last_state_kept, None, "{second:?}"),
    }
    assert_eq!(
        stored_blobs(&rig.repo_dir),
        needed,
        "after the grace the repository holds exactly what retained points need"
    );
    let report = rig.verify(ReadData::All).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_condemned_blob_needed_again_is_uploaded_again_and_kept() {
    let mut rig = Rig::new(None).await;
    let mut history = History::new(&rig.data);
    history.apply(&Step::Flush(3000, 7));
    history.apply(&Step::Flush(3000, 8));
    rig.backup("one").await;
    history.apply(&Step::Compact(9));
    rig.backup("two").await;
    let data_one = blake3::hash(&history.contents[&1]).to_hex().to_string();
    // Keep only now: the first two SSTables' Data.db are condemned.
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    let first = rig.gc(policy.clone(), 0).await;
    assert_eq!(first.blobs_condemned, 2, "{first:?}");
    // SSTable 1 comes back (say, re-imported); the next pass must not trust the
    // condemned blob to exist: it uploads it again.
    history.dropped.retain(|g| *g == 1);
    history.apply(&Step::Resurrect);
    let opts_time = rig.backup("three").await;
    assert!(opts_time > 0);
    assert!(!rig.catalog.is_condemned(&hash_of(&data_one)).unwrap());
    let second = rig.gc(policy, 0).await;
    assert_eq!(
        second.blobs_deleted, 1,
        "only SSTable 2's Data.db goes: {second:?}"
    );
    assert!(stored_blobs(&rig.repo_dir).contains(&data_one));
    let now = rig.restore("three").await.unwrap();
    assert_eq!(now, tree(&rig.data));
    assert!(rig.verify(ReadData::All).await.problems.is_empty());
}

fn hash_of(hex_text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_dry_run_and_grace() {
    let mut rig = Rig::new(None).await;
    let mut history = History::new(&rig.data);
    history.apply(&Step::Flush(500, 1));
    history.apply(&Step::Flush(500, 3));
    rig.backup("a").await;
    history.apply(&Step::Compact(4));
    rig.backup("b").await;

    // A policy that keeps no past point is refused, and changes nothing.
    let keeps_nothing = GcOptions {
        policy: RetentionPolicy {
            keep_last: Some(0),
            ..RetentionPolicy::default()
        },
        grace: 0,
        dry_run: false,
        force: false,
        release_last_state: Vec::new(),
        parallel: 2,
        as_of: None,
    };
    let err = gc::run(
        &rig.repo,
        &mut rig.view,
        &keeps_nothing,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, gc::GcError::KeepsNothing { .. }), "{err}");
    assert!(!rig.root.join("repo/gc").exists());

    // A dry run reports and changes nothing.
    let before = tree(&rig.root.join("repo"));
    let dry = GcOptions {
        policy: RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        },
        grace: 0,
        dry_run: true,
        force: false,
        release_last_state: Vec::new(),
        parallel: 2,
        as_of: None,
    };
    let s = gc::run(
        &rig.repo,
        &mut rig.view,
        &dry,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert_eq!(s.nodes[0].snapshots_dropped, vec!["a".to_string()]);
    assert_eq!(s.blobs_condemned, 2, "the two compacted Data.db: {s:?}");
    assert_eq!(tree(&rig.root.join("repo")), before);

    // With a grace period, condemned blobs wait.
    let policy = dry.policy.clone();
    let first = rig.gc(policy.clone(), 60_000_000).await;
    assert_eq!(first.blobs_condemned, 0, "too young to condemn: {first:?}");
    let first = rig.gc(policy.clone(), 0).await;
    assert_eq!(first.blobs_condemned, 2);
    let waiting = rig.gc(policy.clone(), 60_000_000).await;
    assert_eq!((waiting.blobs_deleted, waiting.blobs_waiting), (0, 2));
    let done = rig.gc(policy, 0).await;
    assert_eq!(done.blobs_deleted, 2);

    // A repository whose node logs are gone would lose every blob: refused.
    history.apply(&Step::Flush(500, 2));
    rig.backup("c").await;
    fs::remove_dir_all(rig.root.join("repo/nodes")).unwrap();
    let mut fresh_view = Catalog::open(&rig.root.join("other.all-nodes.db")).unwrap();
    let err = gc::run(
        &rig.repo,
        &mut fresh_view,
        &dry,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, gc::GcError::NoHistory { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_missing_and_corrupt_blobs_with_their_files_and_points() {
    let mut rig = Rig::new(None).await;
    let mut history = History::new(&rig.data);
    history.apply(&Step::Flush(2000, 3));
    history.apply(&Step::Flush(2000, 4));
    rig.backup("p1").await;
    assert!(rig.verify(ReadData::All).await.problems.is_empty());
    let blob = |g: u64| blake3::hash(&history.contents[&g]).to_hex().to_string();
    let path = |hex: &str| rig.root.join("repo/blobs").join(&hex[..2]).join(hex);
    fs::remove_file(path(&blob(1))).unwrap();
    let mut damaged = fs::read(path(&blob(2))).unwrap();
    let last = damaged.len() - 40;
    damaged[last] ^= 0xff;
    fs::write(path(&blob(2)), damaged).unwrap();

    let existence = rig.verify(ReadData::None).await;
    assert_eq!(existence.problems.len(), 1, "{:?}", existence.problems);
    let p = &existence.problems[0];
    assert_eq!((p.kind, p.blob.as_str()), ("missing", blob(1).as_str()));
    assert!(p.files[0].key.rel_path.ends_with("nb-1-big-Data.db"));
    assert_eq!(p.snapshots, vec!["n1/p1".to_string()]);

    let full = rig.verify(ReadData::All).await;
    let kinds: BTreeSet<(&str, String)> = full
        .problems
        .iter()
        .map(|p| (p.kind, p.blob.clone()))
        .collect();
    assert_eq!(
        kinds,
        [("missing", blob(1)), ("corrupt", blob(2))]
            .into_iter()
            .collect()
    );
    // A 100% subset reads everything too; a tiny one reads less.
    let all = rig.verify(ReadData::Subset(1.0)).await;
    assert_eq!(all.problems.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_and_verify_through_the_s3_server() {
    let server = s3support::S3Server::start().await;
    server.create_bucket("gc-tests");
    let mut rig = Rig::new(Some((
        "s3://gc-tests/repo".into(),
        server.options(),
        server.object_file("gc-tests", "repo"),
    )))
    .await;
    let mut history = History::new(&rig.data);
    history.apply(&Step::Flush(3000, 11));
    history.apply(&Step::Flush(3000, 12));
    rig.backup("one").await;
    history.apply(&Step::Compact(13));
    rig.backup("two").await;
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    assert_eq!(rig.gc(policy.clone(), 0).await.blobs_condemned, 2);
    let second = rig.gc(policy, 0).await;
    assert_eq!(second.blobs_deleted, 2, "{second:?}");
    assert_eq!(rig.restore("two").await.unwrap(), tree(&rig.data));
    let report = rig.verify(ReadData::All).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.blobs_read, 2,
        "the compacted Data.db and the shared TOC.txt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_resurrected_then_compacted() {
    check_history(
        vec![
            Step::Flush(225, 16706063057412224740),
            Step::DropAll,
            Step::Resurrect,
            Step::Resurrect,
            Step::Flush(1379, 15787011980455197724),
            Step::Compact(4780681062781048403),
        ],
        (Some(5), Some(2), Some(2), None),
    )
    .await;
}

/// While gc deletes, a node starts referring to a blob gc condemned and has not reached
/// yet: gc reads the nodes' logs again before each chunk, so it absolves that blob
/// instead of deleting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_referenced_while_gc_deletes_is_absolved_not_deleted() {
    use tablesafe::catalog::{Change, FileKey};
    use tablesafe::store::BlobId;
    // Eight chunks of 5,000 on file://: the writer has seven chunks' time to land.
    const ORPHANS: u64 = 40_000;
    let work = tempfile::tempdir().unwrap();
    let repo_dir = work.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let repo = Repository::init(&url, &StoreOptions::default())
        .await
        .unwrap();
    // Orphans (no record refers to them), written directly: gc reads only names.
    let mut orphans: Vec<BlobId> = (0..ORPHANS)
        .map(|i| BlobId::of_bytes(&i.to_le_bytes()))
        .collect();
    orphans.sort();
    for id in &orphans {
        let hex = id.to_hex();
        let dir = repo_dir.join("blobs").join(&hex[..2]);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(&hex), b"orphan").unwrap();
    }
    let key = |name: &str| FileKey {
        data_dir: "/var/lib/cassandra/data".into(),
        keyspace: "ks".into(),
        table: "t".into(),
        table_id: "0123456789abcdef0123456789abcdef".into(),
        rel_path: name.into(),
    };
    // Node n1 has a history of one file, so gc has something to keep.
    let kept_file = work.path().join("kept");
    fs::write(&kept_file, b"kept").unwrap();
    let kept = repo.put_file(&kept_file).await.unwrap();
    let mut n1 = Catalog::open(&work.path().join("n1.db")).unwrap();
    let now = timespec::now();
    let changes = vec![
        Change::Blob {
            hash: *kept.id.as_bytes(),
            size: kept.size,
            stored_size: kept.stored_size,
        },
        Change::Start {
            key: key("nb-1-big-Data.db"),
            hash: *kept.id.as_bytes(),
            size: kept.size,
            mtime: now,
            at: now,
        },
    ];
    n1.commit("n1", now, changes).unwrap();
    mirror::upload_pending(&repo, &mut n1, "n1").await.unwrap();

    let opts = GcOptions {
        policy: RetentionPolicy::default(),
        grace: 0,
        dry_run: false,
        force: false,
        release_last_state: Vec::new(),
        parallel: 4,
        as_of: None,
    };
    // No node can be named `@...` (gc's stream is `@gc`): such a prefix is not a log.
    repo.put_object_if_absent(
        "nodes/@evil/log/00000000000000000001",
        bytes::Bytes::from_static(b"not a batch"),
    )
    .await
    .unwrap();
    let mut view = Catalog::open(&work.path().join("view.db")).unwrap();
    let first = gc::run(&repo, &mut view, &opts, Arc::new(Progress::default()))
        .await
        .unwrap();
    assert_eq!(first.blobs_condemned, ORPHANS, "{first:?}");
    assert_eq!(first.nodes.len(), 1, "{:?}", first.nodes);

    // The last blob in hash order is in gc's last chunk. Once the first chunk is gone,
    // node n2 records a file holding it.
    let target = *orphans.last().unwrap();
    let progress = Arc::new(Progress::default());
    let writer = {
        let (progress, url) = (progress.clone(), url.clone());
        let db = work.path().join("n2.db");
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while progress.files_done.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let repo = Repository::open(&url, &StoreOptions::default())
                .await
                .unwrap();
            let mut n2 = Catalog::open(&db).unwrap();
            let now = timespec::now();
            let changes = vec![Change::Start {
                key: key("nb-9-big-Data.db"),
                hash: *target.as_bytes(),
                size: 6,
                mtime: now,
                at: now,
            }];
            n2.commit("n2", now, changes).unwrap();
            mirror::upload_pending(&repo, &mut n2, "n2").await.unwrap();
            progress.files_done.load(Ordering::Relaxed)
        })
    };
    let second = gc::run(&repo, &mut view, &opts, progress.clone())
        .await
        .unwrap();
    let deleted_when_recorded = writer.await.unwrap();
    assert!(
        deleted_when_recorded < ORPHANS - 5_000,
        "the writer was too slow to test anything ({deleted_when_recorded} deleted by then)"
    );
    assert_eq!(second.blobs_absolved, 1, "{second:?}");
    assert_eq!(second.blobs_deleted, ORPHANS - 1, "{second:?}");
    let left = stored_blobs(&repo_dir);
    assert!(
        left.contains(&target.to_hex()),
        "the referenced blob was deleted"
    );
    assert!(left.contains(&kept.id.to_hex()));
    assert_eq!(left.len(), 2, "{left:?}");
    let report = verify::run(
        &repo,
        &mut view,
        &VerifyOptions {
            read_data: ReadData::None,
            parallel: 4,
        },
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Small files in packs: a pack stays while any retained version needs a file in it,
/// a file whose pack gc condemned is uploaded again into a new pack, a pack nothing
/// needs goes after the grace, and verify names the files of a missing pack.
#[tokio::test(flavor = "multi_thread")]
async fn packs_stay_while_a_file_in_them_is_needed_and_go_after() {
    let mut rig = Rig::new(None).await;
    rig.pack = true;
    let mut history = History::new(&rig.data);
    history.apply(&Step::Flush(3000, 1));
    history.apply(&Step::Flush(3000, 2));
    rig.backup("one").await;
    // Data.db of 1 and 2 and the shared TOC.txt: one pack.
    let first_pack = stored_blobs(&rig.repo_dir);
    assert_eq!(first_pack.len(), 1, "{first_pack:?}");
    let data_one = blake3::hash(&history.contents[&1]).to_hex().to_string();
    let at = rig
        .catalog
        .pack_location(&hash_of(&data_one))
        .unwrap()
        .unwrap();
    assert_eq!(hex::encode(at.pack), *first_pack.iter().next().unwrap());

    history.apply(&Step::Flush(3000, 3));
    history.apply(&Step::Compact(4));
    rig.backup("two").await;
    assert_eq!(
        stored_blobs(&rig.repo_dir).len(),
        2,
        "Data.db of 3 and 4: a second pack"
    );
    let keep_last = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    // Only "two" is kept; Data.db of 1 and 2 are dead, but the first pack also holds
    // the TOC.txt that "two" needs: nothing can go.
    let kept = rig.gc(keep_last.clone(), 0).await;
    assert_eq!(kept.blobs_condemned, 0, "{kept:?}");
    assert_eq!(rig.restore("two").await.unwrap(), tree(&rig.data));

    // Nothing live any more: gc keeps the last state with data...
    history.apply(&Step::DropAll);
    rig.backup("three").await;
    let held = rig.gc(keep_last.clone(), 0).await;
    assert_eq!(held.blobs_condemned, 0, "{held:?}");
    assert!(held.nodes[0].last_state_kept.is_some(), "{held:?}");
    // ...unless told the node is gone for good: then both packs are condemned...
    rig.release_last_state = true;
    let condemned = rig.gc(keep_last.clone(), 0).await;
    assert_eq!(condemned.blobs_condemned, 2, "{condemned:?}");
    // ...then an SSTable comes back: its files are only in condemned packs, so the
    // backup uploads them again, into a new pack, and the old packs can go.
    history.apply(&Step::Resurrect);
    rig.backup("four").await;
    let before = stored_blobs(&rig.repo_dir);
    assert_eq!(before.len(), 3, "{before:?}");
    let swept = rig.gc(keep_last, 0).await;
    assert_eq!(swept.blobs_deleted, 2, "{swept:?}");
    let after = stored_blobs(&rig.repo_dir);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!after.iter().any(|p| first_pack.contains(p)));
    assert_eq!(rig.restore("four").await.unwrap(), tree(&rig.data));
    let report = rig.verify(ReadData::All).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.blobs_read, 1,
        "the one pack is read back: {report:?}"
    );

    // The last pack lost: verify names the files it held, not just an object.
    let pack = after.iter().next().unwrap();
    fs::remove_file(rig.repo_dir.join("blobs").join(&pack[..2]).join(pack)).unwrap();
    let report = rig.verify(ReadData::None).await;
    assert_eq!(
        report.problems.len(),
        2,
        "Data.db and TOC.txt: {:?}",
        report.problems
    );
    for p in &report.problems {
        assert_eq!(p.kind, "missing");
        assert_eq!(p.files.len(), 1, "{p:?}");
        assert_ne!(&p.blob, pack, "reported by file content, not by pack");
    }
}
