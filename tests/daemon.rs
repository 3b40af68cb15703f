//! `tablesafe daemon` end to end: the real binary watching a data directory that the
//! lifecycle helper changes the way Cassandra does, then `restore --at` every step.

mod s3support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::hold::OpenHold;
use support::lifecycle::{Expected, FixtureFormat, Gen, Node, TableDir};
use tablesafe::catalog::{Batch, Catalog, Change};
use tablesafe::timespec;
use tablesafe::watch::DaemonStatus;

const NODE: &str = "n1";

/// Files below the data directory: relative path → (BLAKE3, mtime in µs).
type Tree = BTreeMap<String, (String, i64)>;

/// One test's repository, catalog and data directory.
struct Setup {
    tmp: tempfile::TempDir,
    repo: String,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Setup {
    fn file() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let repo = format!("file://{}", tmp.path().join("repo").display());
        Setup {
            tmp,
            repo,
            extra: vec![],
            envs: vec![],
        }
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn catalog(&self) -> PathBuf {
        self.tmp.path().join("catalog.db")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tablesafe"));
        c.arg("--repo").arg(&self.repo);
        c.arg("--catalog").arg(self.catalog());
        c.args(["--node", NODE]);
        c.args(&self.extra);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c.env_remove("TABLESAFE_CONFIG");
        c
    }

    fn start_daemon(&self, log: &str) -> Child {
        let log = fs::File::create(self.tmp.path().join(log)).unwrap();
        self.command()
            .args([
                "-v",
                "daemon",
                "--init",
                "--settle",
                "100ms",
                "--rescan-every",
                "10m",
            ])
            .arg("--data-dir")
            .arg(self.data())
            .arg("--pin-dir")
            .arg(self.tmp.path().join("pins"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.tmp.path().join(name)).unwrap_or_default()
    }

    fn status(&self) -> Option<DaemonStatus> {
        let catalog = Catalog::open(&self.catalog()).ok()?;
        let body = catalog.read_status(NODE).ok()??;
        serde_json::from_str(&body).ok()
    }

    /// Waits until the daemon has written a status after `since` with nothing queued.
    fn wait_idle(&self, since: i64, daemon: &mut Child) -> DaemonStatus {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(code) = daemon.try_wait().unwrap() {
                let logs: Vec<String> = fs::read_dir(self.tmp.path())
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
                    .collect();
                panic!("the daemon exited ({code}): {}", logs.join("\n"));
            }
            if let Some(s) = self.status() {
                if s.updated > since + 250_000
                    && s.queued_dirs == 0
                    && s.pending_files == 0
                    && s.state == "running"
                {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon never became idle; last status {last:?}");
    }

    fn live_now(&self) -> BTreeMap<String, String> {
        let catalog = Catalog::open(&self.catalog()).unwrap();
        catalog
            .live_at(NODE, timespec::now())
            .unwrap()
            .into_iter()
            .map(|v| (v.key.data_relative_path(), hex::encode(v.hash)))
            .collect()
    }
}

fn stop(daemon: &mut Child) {
    let pid = daemon.id() as i32;
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "daemon exit status after SIGTERM: {status}"
    );
}

/// The files of complete SSTables (and snapshot metadata) of `tables`, as restore should
/// recreate them: path below the data dir → (BLAKE3, mtime in µs).
fn expected_tree(node_data: &Path, tables: &[&TableDir]) -> Tree {
    let mut out = BTreeMap::new();
    for t in tables {
        let e = t.expectation();
        for (dir_rel, dir) in &e.dirs {
            let dir_path = t.path().join(dir_rel);
            let Ok(entries) = fs::read_dir(&dir_path) else {
                continue;
            };
            let names: Vec<String> = entries
                .flatten()
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            for name in names {
                let complete = dir.sstables.iter().any(|(base, s)| {
                    s.state == Expected::Complete && name.starts_with(&format!("{base}-"))
                });
                if complete || dir.other_files.contains(&name) {
                    let path = dir_path.join(&name);
                    let rel = path
                        .strip_prefix(node_data)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, file_print(&path));
                }
            }
        }
    }
    out
}

fn file_print(path: &Path) -> (String, i64) {
    let bytes = fs::read(path).unwrap();
    let meta = fs::metadata(path).unwrap();
    (
        blake3::hash(&bytes).to_hex().to_string(),
        meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1_000,
    )
}

fn tree(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, file_print(entry.path()));
        }
    }
    out
}

/// Every blob a repository log refers to exists (invariant 1, checked from the outside).
fn check_logs_refer_to_existing_blobs(repo_dir: &Path) -> usize {
    let mut checked = 0;
    let logs = repo_dir.join("nodes").join(NODE).join("log");
    for entry in fs::read_dir(&logs).unwrap() {
        let batch = Batch::decode(&fs::read(entry.unwrap().path()).unwrap()).unwrap();
        for change in &batch.changes {
            let hash = match change {
                Change::Blob { hash, .. } | Change::Start { hash, .. } => hash,
                _ => continue,
            };
            let hex = hex::encode(hash);
            let blob = repo_dir.join("blobs").join(&hex[..2]).join(&hex);
            assert!(
                blob.is_file(),
                "batch {} refers to missing blob {hex}",
                batch.seq
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn restore_at_every_step_of_a_storm_equals_the_directory() {
    let s = Setup::file();
    let mut node = Node::new(&s.data());
    let mut t1 = node.create_table("ks", "t1", FixtureFormat::Nb);
    let mut t2 = node.create_table("ks", "t2", FixtureFormat::Da);
    let mut daemon = s.start_daemon("daemon.log");
    s.wait_idle(timespec::now(), &mut daemon);

    let mut points: Vec<(i64, i64, Tree)> = Vec::new();
    let mut lags = Vec::new();
    let mut aborted = Vec::new();
    for step in 0..10 {
        let before = timespec::now();
        let mut flushed: Option<(String, i64)> = None;
        match step {
            0 | 2 | 4 | 8 => {
                let t = if step == 4 { &mut t2 } else { &mut t1 };
                let op = t.flush();
                let base = t.base_name(op.generation().unwrap());
                op.run().unwrap();
                let rel = format!(
                    "{}/{}/{}-Data.db",
                    t.keyspace(),
                    t.path().file_name().unwrap().to_string_lossy(),
                    base
                );
                flushed = Some((rel, timespec::now()));
            }
            1 => t2.flush().run().unwrap(),
            3 => t1.snapshot("before-compaction").run().unwrap(),
            5 => t1.compact(&[Gen::Seq(1), Gen::Seq(2)]).run().unwrap(),
            6 => {
                let live = t1.live_generations();
                t1.rewrite_statistics(&live[0]).run().unwrap();
            }
            7 => {
                let op = t2.aborted_write();
                aborted.push(t2.base_name(op.generation().unwrap()));
                op.run().unwrap();
            }
            _ => {
                let live = t2.live_generations();
                t2.incremental_backup(&live[0]).run().unwrap();
            }
        }
        let after_op = timespec::now();
        s.wait_idle(after_op, &mut daemon);
        let at = timespec::now();
        if let Some((rel, completed)) = flushed {
            let catalog = Catalog::open(&s.catalog()).unwrap();
            let v = catalog
                .live_at(NODE, at)
                .unwrap()
                .into_iter()
                .find(|v| v.key.data_relative_path() == rel)
                .unwrap_or_else(|| panic!("{rel} not recorded"));
            lags.push(v.valid_from - completed);
        }
        points.push((before, at, expected_tree(&s.data(), &[&t1, &t2])));
    }
    stop(&mut daemon);

    lags.sort();
    eprintln!(
        "complete SSTable -> durable lag over {} flushes: median {} ms, worst {} ms",
        lags.len(),
        lags[lags.len() / 2] / 1000,
        lags[lags.len() - 1] / 1000
    );
    for (i, (_, at, expected)) in points.iter().enumerate() {
        let out = s.tmp.path().join(format!("restore-{i}"));
        let result = s
            .command()
            .args([
                "restore",
                "--include-snapshots",
                "--at",
                &timespec::format_precise(*at),
            ])
            .arg("--to")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert_eq!(&tree(&out), expected, "restore at step {i}");
        // Just before the next operation started, the tree was this step's.
        if let Some((next_before, _, _)) = points.get(i + 1) {
            let out = s.tmp.path().join(format!("restore-{i}-later"));
            let result = s
                .command()
                .args([
                    "restore",
                    "--include-snapshots",
                    "--at",
                    &timespec::format_precise(next_before - 1),
                ])
                .arg("--to")
                .arg(&out)
                .output()
                .unwrap();
            assert!(result.status.success());
            assert_eq!(
                &tree(&out),
                expected,
                "restore between step {i} and the next"
            );
        }
    }
    // No aborted SSTable was ever recorded, at any time.
    let repo_dir = s.tmp.path().join("repo");
    for entry in fs::read_dir(repo_dir.join("nodes").join(NODE).join("log")).unwrap() {
        let batch = Batch::decode(&fs::read(entry.unwrap().path()).unwrap()).unwrap();
        for c in &batch.changes {
            if let Change::Start { key, .. } = c {
                for base in &aborted {
                    assert!(
                        !key.rel_path.contains(base.as_str()),
                        "aborted {base} was recorded"
                    );
                }
            }
        }
    }
    assert!(check_logs_refer_to_existing_blobs(&repo_dir) > 0);
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let s = Setup::file();
    let mut node = Node::new(&s.data());
    let mut t = node.create_table("ks", "t", FixtureFormat::Nb);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut daemon = s.start_daemon("daemon-0.log");
    for round in 0..8 {
        t.flush().run().unwrap();
        t.flush().run().unwrap();
        if round % 3 == 2 {
            let live = t.live_generations();
            t.compact(&live[..2]).run().unwrap();
        }
        std::thread::sleep(Duration::from_millis(next() % 400));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        daemon = s.start_daemon(&format!("daemon-{}.log", round + 1));
    }
    s.wait_idle(timespec::now(), &mut daemon);
    stop(&mut daemon);

    let expected: BTreeMap<String, String> = expected_tree(&s.data(), &[&t])
        .into_iter()
        .map(|(k, (h, _))| (k, h))
        .collect();
    assert_eq!(s.live_now(), expected);
    let repo_dir = s.tmp.path().join("repo");
    assert!(check_logs_refer_to_existing_blobs(&repo_dir) > 0);
    // Every version in the local catalog refers to an existing blob too.
    for hash in s.live_now().values() {
        assert!(repo_dir.join("blobs").join(&hash[..2]).join(hash).is_file());
    }
    // Pins of killed daemons were cleared by the next start; the last one removed its own.
    let pins: Vec<_> = fs::read_dir(s.tmp.path().join("pins")).unwrap().collect();
    assert!(pins.is_empty(), "{pins:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_outage_keeps_the_daemon_running_and_the_backlog_drains() {
    let mut server = s3support::S3Server::start().await;
    server.create_bucket("backups");
    let mut s = Setup::file();
    s.repo = "s3://backups/cluster".into();
    s.extra = vec![
        "--s3-endpoint".into(),
        server.endpoint.clone(),
        "--s3-allow-http".into(),
        "--s3-path-style".into(),
        "--s3-region".into(),
        "us-east-1".into(),
        "--retry-timeout".into(),
        "2s".into(),
    ];
    s.envs = vec![
        ("AWS_ACCESS_KEY_ID".into(), s3support::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), s3support::SECRET_KEY.into()),
    ];
    let mut node = Node::new(&s.data());
    let mut t = node.create_table("ks", "t", FixtureFormat::Oa);
    t.flush().run().unwrap();
    let mut daemon = s.start_daemon("daemon.log");
    s.wait_idle(timespec::now(), &mut daemon);

    server.stop();
    t.flush().run().unwrap();
    t.flush().run().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = s.status().unwrap();
        if st.errors > 0 && st.state == "retrying" {
            assert!(st.queued_dirs > 0, "{st:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no error reported while storage is down: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon must keep running"
    );
    let log = s.log("daemon.log");
    assert!(log.contains("backup pass failed"), "{log}");

    server.restart().await;
    s.wait_idle(timespec::now(), &mut daemon);
    stop(&mut daemon);
    let expected: BTreeMap<String, String> = expected_tree(&s.data(), &[&t])
        .into_iter()
        .map(|(k, (h, _))| (k, h))
        .collect();
    assert_eq!(s.live_now(), expected);
    assert_eq!(expected.len(), 3 * 8, "three flushed SSTables");
}

/// Restores fs.inotify.max_queued_events when dropped.
struct QueueLimit(String);

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/fs/inotify/max_queued_events", &self.0);
    }
}

#[test]
fn an_inotify_queue_overflow_is_caught_by_a_rescan() {
    let limit_file = "/proc/sys/fs/inotify/max_queued_events";
    let old = fs::read_to_string(limit_file).unwrap();
    let _restore = QueueLimit(old.trim().to_string());
    fs::write(limit_file, "64").expect("this test needs root to lower the inotify queue limit");
    let s = Setup::file();
    let mut node = Node::new(&s.data());
    // The tables exist (and are watched) before the daemon is stopped, so their files'
    // events can only be lost, not replaced by a directory-creation event.
    let mut first = node.create_table("ks", "first", FixtureFormat::Mc);
    let mut tables: Vec<TableDir> = (0..20)
        .map(|i| node.create_table("ks", &format!("t{i}"), FixtureFormat::Mc))
        .collect();
    let mut daemon = s.start_daemon("daemon.log");
    s.wait_idle(timespec::now(), &mut daemon);
    drop(_restore);

    // Nobody reads events while the daemon is stopped: `first` alone fills the 64-event
    // queue, and every event of the other tables is dropped by the kernel.
    let pid = daemon.id() as i32;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for _ in 0..10 {
        first.flush().run().unwrap();
    }
    for t in &mut tables {
        t.flush().run().unwrap();
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(500));
    s.wait_idle(timespec::now(), &mut daemon);
    stop(&mut daemon);

    let log = s.log("daemon.log");
    assert!(
        log.contains("queue overflow"),
        "the overflow was not noticed: {log}"
    );
    let mut all: Vec<&TableDir> = tables.iter().collect();
    all.push(&first);
    let expected: BTreeMap<String, String> = expected_tree(&s.data(), &all)
        .into_iter()
        .map(|(k, (h, _))| (k, h))
        .collect();
    assert_eq!(expected.len(), 30 * 8);
    assert_eq!(s.live_now(), expected);
}

#[test]
fn status_metrics_sighup_reload_and_periodic_points() {
    let s = Setup::file();
    let config = s.tmp.path().join("tablesafe.toml");
    fs::write(&config, "log_format = \"text\"\n").unwrap();
    let mut node = Node::new(&s.data());
    let mut kept = node.create_table("ks", "kept", FixtureFormat::Nb);
    let mut skipped = node.create_table("ks", "skipped", FixtureFormat::Nb);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = fs::File::create(s.tmp.path().join("daemon.log")).unwrap();
    let mut daemon = s
        .command()
        .arg("--config")
        .arg(&config)
        .args([
            "-v",
            "daemon",
            "--init",
            "--settle",
            "100ms",
            "--snapshot-every",
            "1s",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(s.data())
        .arg("--pin-dir")
        .arg(s.tmp.path().join("pins"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    s.wait_idle(timespec::now(), &mut daemon);

    // SIGHUP: the config file now leaves ks.skipped out.
    fs::write(
        &config,
        "log_format = \"text\"\nexclude = [\"ks.skipped\"]\n",
    )
    .unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.log("daemon.log").contains("configuration reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload: {}",
            s.log("daemon.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kept.flush().run().unwrap();
    skipped.flush().run().unwrap();
    s.wait_idle(timespec::now(), &mut daemon);
    // Periodic points: at least two by now (one per second of activity).
    std::thread::sleep(Duration::from_millis(2200));
    s.wait_idle(timespec::now(), &mut daemon);

    // The metrics endpoint answers in Prometheus text.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\ntablesafe_up 1\n"), "{response}");
    assert!(
        response.contains("tablesafe_uploaded_files_total "),
        "{response}"
    );

    // `tablesafe status` reads the daemon's status from the catalog.
    let out = s.command().args(["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: DaemonStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st.state, "running");
    assert_eq!(st.pid, daemon.id());
    assert!(st.passes >= 2 && st.files_uploaded > 0, "{st:?}");
    stop(&mut daemon);
    let out = s.command().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("daemon:        stopped"), "{text}");

    let live = s.live_now();
    assert!(live.keys().any(|k| k.contains("/kept-")), "{live:?}");
    assert!(
        !live.keys().any(|k| k.contains("/skipped-")),
        "excluded after reload: {live:?}"
    );
    let out = s
        .command()
        .args(["snapshot", "list", "--json"])
        .output()
        .unwrap();
    let points: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(points.as_array().unwrap().len() >= 2, "{points}");
}

/// Compaction deletes a file right after it becomes complete: the pinned copy is still
/// uploaded.
///
/// The moment is forced, not hoped for: fanotify holds the daemon's first open of the new
/// Data.db through a path in its pin directory (so the daemon has pinned it and read
/// nothing through the pin yet). While it is held, and once every component is pinned, a
/// compaction of that SSTable runs to the end: new SSTable, committed REMOVE, every input
/// file unlinked. Only then is the open allowed. Every read the daemon makes of Data.db
/// through the pin, and every upload of the SSTable (uploads start after all hashing),
/// happens after the originals are gone. Without working pins (nothing linked, reads of
/// the original path, pins released before the upload, a pinned file judged changed
/// because the unlink moved its ctime) the SSTable, or part of it, is never recorded.
/// fanotify permission events need CAP_SYS_ADMIN (the overflow test above needs root).
#[test]
fn compaction_deleting_a_just_completed_sstable_cannot_take_the_pinned_copy() {
    let s = Setup::file();
    let pin_dir = fs::canonicalize(s.tmp.path()).unwrap().join("pins");
    let mut node = Node::new(&s.data());
    let mut t = node.create_table("ks", "t", FixtureFormat::Nb);
    let mut daemon = s.start_daemon("daemon.log");
    s.wait_idle(timespec::now(), &mut daemon);

    let mut hold = OpenHold::new(daemon.id(), &pin_dir);
    let mut flush = t.flush();
    let generation = flush.generation().unwrap().clone();
    let paths: Vec<PathBuf> = t
        .components()
        .iter()
        .map(|c| t.path().join(t.file_name(&generation, c)))
        .collect();
    let data_db = t.path().join(t.file_name(&generation, "Data.db"));
    // Watch Data.db from its creation, long before the SSTable is complete.
    while !data_db.exists() {
        assert!(
            flush.step().unwrap().is_some(),
            "the flush wrote no Data.db"
        );
    }
    hold.watch(&data_db);
    flush.run().unwrap();
    let rel = |p: &Path| {
        p.strip_prefix(s.data())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let original: Tree = paths.iter().map(|p| (rel(p), file_print(p))).collect();
    let inodes: BTreeSet<u64> = paths
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();

    let held = hold.wait_held(Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "the daemon never opened {} through a link in {}: {}",
            data_db.display(),
            pin_dir.display(),
            s.log("daemon.log")
        )
    });
    assert_eq!(
        fs::metadata(&held).unwrap().ino(),
        fs::metadata(&data_db).unwrap().ino()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !inodes.is_subset(&pinned_inodes(&pin_dir)) {
        assert!(
            Instant::now() < deadline,
            "not every component of {generation} was pinned: {}",
            s.log("daemon.log")
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    t.compact(std::slice::from_ref(&generation)).run().unwrap();
    let deleted_at = timespec::now();
    for p in &paths {
        assert!(!p.exists(), "{} still exists", p.display());
    }
    // The pins are the only names left of the SSTable's files.
    let pins = pin_files(&pin_dir);
    for ino in &inodes {
        let pin = pins.iter().find(|(_, m)| m.ino() == *ino).expect("pinned");
        assert_eq!(pin.1.nlink(), 1, "{}", pin.0.display());
    }
    hold.release();

    // The daemon catches up: the compaction's output is live, the input has ended.
    let expected: BTreeMap<String, String> = expected_tree(&s.data(), &[&t])
        .into_iter()
        .map(|(k, (h, _))| (k, h))
        .collect();
    assert_eq!(expected.len(), paths.len());
    let deadline = Instant::now() + Duration::from_secs(90);
    while s.live_now() != expected {
        assert!(
            Instant::now() < deadline,
            "live set {:?}, expected {expected:?}: {}",
            s.live_now(),
            s.log("daemon.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.wait_idle(timespec::now(), &mut daemon);
    drop(hold);
    assert_eq!(entries(&pin_dir), Vec::<PathBuf>::new(), "pins left behind");

    // The repository log: every file of the deleted SSTable recorded with its exact
    // content, after the compaction deleted it, and ended by a later pass.
    let repo_dir = s.tmp.path().join("repo");
    let mut starts: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut ends: BTreeMap<String, i64> = BTreeMap::new();
    for entry in fs::read_dir(repo_dir.join("nodes").join(NODE).join("log")).unwrap() {
        let batch = Batch::decode(&fs::read(entry.unwrap().path()).unwrap()).unwrap();
        for c in &batch.changes {
            match c {
                Change::Start { key, hash, at, .. }
                    if original.contains_key(&key.data_relative_path()) =>
                {
                    let old = starts.insert(key.data_relative_path(), (hex::encode(hash), *at));
                    assert!(old.is_none(), "{} started twice", key.data_relative_path());
                }
                Change::End { key, at } if original.contains_key(&key.data_relative_path()) => {
                    ends.insert(key.data_relative_path(), *at);
                }
                _ => {}
            }
        }
    }
    let recorded: BTreeMap<&String, &String> = starts.iter().map(|(k, (h, _))| (k, h)).collect();
    let wanted: BTreeMap<&String, &String> = original.iter().map(|(k, (h, _))| (k, h)).collect();
    assert_eq!(
        recorded,
        wanted,
        "versions of the compacted SSTable: {}",
        s.log("daemon.log")
    );
    for (path, (_, at)) in &starts {
        assert!(*at > deleted_at, "{path} recorded before its deletion");
        let end = ends
            .get(path)
            .unwrap_or_else(|| panic!("{path} never ended"));
        assert!(end > at, "{path} ended before it started");
    }
    assert!(check_logs_refer_to_existing_blobs(&repo_dir) >= paths.len());

    // Restore at the moment the last of its files was recorded: exactly that SSTable,
    // byte for byte, with its mtimes.
    let at = starts.values().map(|(_, at)| *at).max().unwrap();
    let out = s.tmp.path().join("restore");
    let result = s
        .command()
        .args(["restore", "--at", &timespec::format_precise(at)])
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(tree(&out), original);

    stop(&mut daemon);
    assert_eq!(entries(&pin_dir), Vec::<PathBuf>::new(), "pins left behind");
}

/// Everything in a directory.
fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Every file below the pin directory, with its metadata.
fn pin_files(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| Some((e.path().to_path_buf(), e.metadata().ok()?)))
        .collect()
}

fn pinned_inodes(dir: &Path) -> BTreeSet<u64> {
    pin_files(dir).iter().map(|(_, m)| m.ino()).collect()
}

/// Waits until the daemon's status satisfies `done`; panics with the last status and the
/// log if it does not within a minute.
fn wait_status(
    s: &Setup,
    daemon: &mut Child,
    what: &str,
    done: impl Fn(&DaemonStatus) -> bool,
) -> DaemonStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(code) = daemon.try_wait().unwrap() {
            panic!("the daemon exited ({code}): {}", s.log("daemon.log"));
        }
        if let Some(st) = s.status() {
            if done(&st) {
                return st;
            }
            last = Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "never {what}; last status {last:?}\n{}",
        s.log("daemon.log")
    );
}

/// The daemon's `/metrics` text.
fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

/// Absence is not deletion, in the daemon: the data directory removed while it runs,
/// then every keyspace directory moved out of it. Each time the daemon reports the error
/// (`status`: retrying with the reason; `/metrics`: tablesafe_up 0) and keeps retrying,
/// the catalog and a restore at a moment after still have every file, and once the
/// directories are back it recovers: running again, and a new flush is backed up.
#[test]
fn a_data_directory_gone_or_emptied_under_the_daemon_deletes_nothing_and_it_recovers() {
    let s = Setup::file();
    let mut node = Node::new(&s.data());
    let mut t1 = node.create_table("ks", "t1", FixtureFormat::Nb);
    let mut t2 = node.create_table("ks2", "t2", FixtureFormat::Nb);
    for t in [&mut t1, &mut t2] {
        t.flush().run().unwrap();
        t.flush().run().unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = fs::File::create(s.tmp.path().join("daemon.log")).unwrap();
    let mut daemon = s
        .command()
        .args(["-v", "daemon", "--init", "--settle", "100ms"])
        .args(["--rescan-every", "10m"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(s.data())
        .arg("--pin-dir")
        .arg(s.tmp.path().join("pins"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    s.wait_idle(timespec::now(), &mut daemon);
    let live = s.live_now();
    assert_eq!(live.len(), tree(&s.data()).len(), "{live:?}");

    let away = s.tmp.path().join("data.away");
    let aside = s.tmp.path().join("aside");
    fs::create_dir(&aside).unwrap();
    // The data directory removed (a copy kept to bring back: a new inode then, as a disk
    // mounted again), then its keyspace directories moved out.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(s.data())
        .arg(&away)
        .status()
        .unwrap();
    assert!(copied.success());
    let gone_and_emptied = [
        ("does not exist", vec![(s.data(), away.clone())]),
        (
            "holds no keyspace directory any more",
            ["ks", "ks2"]
                .iter()
                .map(|k| (s.data().join(k), aside.join(k)))
                .collect(),
        ),
    ];
    for (reason, moves) in gone_and_emptied {
        let errors_before = s.status().unwrap().errors;
        for (from, to) in &moves {
            if to == &away {
                fs::remove_dir_all(from).unwrap();
            } else {
                fs::rename(from, to).unwrap();
            }
        }
        let st = wait_status(&s, &mut daemon, "reported the absence twice", |st| {
            st.state == "retrying"
                && st.errors >= errors_before + 2
                && st.last_error.as_deref().is_some_and(|e| e.contains(reason))
        });
        assert!(
            st.last_error
                .as_deref()
                .unwrap()
                .contains("check that its disk is mounted"),
            "{st:?}"
        );
        let m = metrics(port);
        assert!(m.contains("\ntablesafe_up 0\n"), "{m}");
        let out = s.command().arg("status").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("retrying") && text.contains(reason), "{text}");
        assert_eq!(s.live_now(), live, "nothing recorded as deleted ({reason})");
        let to = s.tmp.path().join(format!("restored-{}", st.errors));
        let out = s
            .command()
            .args(["restore", "--at", "now", "--to"])
            .arg(&to)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            tree(&to).len(),
            live.len(),
            "a restore after still has every file"
        );

        for (from, to) in moves.iter().rev() {
            fs::rename(to, from).unwrap();
        }
        s.wait_idle(timespec::now(), &mut daemon);
        assert_eq!(s.live_now(), live, "back: nothing changed ({reason})");
        assert!(metrics(port).contains("\ntablesafe_up 1\n"));
    }
    // Watching again: a flush after the recovery is backed up.
    let since = timespec::now();
    t1.flush().run().unwrap();
    s.wait_idle(since, &mut daemon);
    let now = s.live_now();
    assert!(now.len() > live.len(), "the new flush is recorded: {now:?}");
    assert_eq!(now.len(), tree(&s.data()).len());
    stop(&mut daemon);
}
