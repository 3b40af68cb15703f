//! Through the real binary: recorded times never go backwards when a node's clock steps
//! back; gc deletes nothing a running backup pass may need (leases); `--prune-incremental`
//! never deletes the last copy of a file whose blob left the repository; and a
//! `gc --keep-snapshot` name that matches no snapshot is refused.

mod s3support;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::cli::{ok, text};
use support::minimal::{Repo, TABLE, content, remove_sstable, walk, write_sstable};

impl Repo {
    /// `backup --json` of `data` as node n1; its summary.
    fn backup(&self, data: &Path, extra: &[&str]) -> serde_json::Value {
        let out = ok(self.backup_cmd(data, extra).output().unwrap());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn backup_cmd(&self, data: &Path, extra: &[&str]) -> Command {
        let mut c = self.as_node("n1");
        c.args(["backup", "--init", "--json", "--data-dir"])
            .arg(data)
            .args(extra);
        c
    }

    /// Restores `point` of n1 into a fresh directory; relative path → BLAKE3 hex.
    fn restore(&self, point: &str, into: &str) -> BTreeMap<String, String> {
        let to = self.path(into);
        ok(self
            .as_node("n1")
            .args(["restore", "--at", point, "--to"])
            .arg(&to)
            .output()
            .unwrap());
        walk(&to)
    }
}

/// A time as `restore --at` takes it, to the microsecond (RFC 3339, UTC).
fn timespec_precise(micros: i64) -> String {
    tablesafe::timespec::format_precise(micros)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn gc_refuses_a_keep_snapshot_name_that_matches_no_snapshot_and_names_the_close_ones() {
    let repo = Repo::new();
    let data = repo.path("data");
    write_sstable(&data, 1, &content(1, 10_000));
    ok(repo
        .as_node("n1")
        .args([
            "snapshot",
            "create",
            "before-upgrade",
            "--init",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap());
    remove_sstable(&data, 1);
    write_sstable(&data, 2, &content(2, 10_000));
    repo.backup(&data, &[]);

    // A typo: refused with exit 1 or 2 and one line naming the close name.
    let out = repo
        .as_node("n1")
        .args(["gc", "--keep-snapshot", "before-upgrad", "--grace", "0s"])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(1 | 2)), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{}", text(&out));
    assert!(err.contains("\"before-upgrad\""), "{}", text(&out));
    assert!(err.contains("before-upgrade"), "{}", text(&out));
    // Nothing was recorded: the snapshot is still there, gc never wrote its log.
    assert!(!repo.path("repo/gc").exists(), "{}", text(&out));

    // The right name works and keeps it.
    ok(repo
        .as_node("n1")
        .args(["gc", "--keep-snapshot", "before-upgrade", "--grace", "0s"])
        .output()
        .unwrap());
    assert_eq!(
        repo.restore("before-upgrade", "kept").len(),
        2,
        "the kept snapshot restores"
    );
}

/// libfaketime's preload library, if installed (Debian: `apt-get install faketime`;
/// `.ci/run` installs it).
fn libfaketime() -> Option<PathBuf> {
    let listed = Command::new("dpkg")
        .args(["-L", "libfaketime"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listed
        .lines()
        .map(PathBuf::from)
        .chain([PathBuf::from(
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        )])
        .find(|p| p.file_name().is_some_and(|n| n == "libfaketime.so.1") && p.exists())
}

#[test]
fn a_clock_stepped_back_an_hour_never_changes_what_earlier_points_restore() {
    let Some(faketime) = libfaketime() else {
        eprintln!(
            "SKIPPED: libfaketime is not installed (apt-get install -y faketime); .ci/run installs it"
        );
        return;
    };
    let repo = Repo::new();
    let data = repo.path("data");
    write_sstable(&data, 1, &content(1, 20_000));
    write_sstable(&data, 2, &content(2, 20_000));
    let p1 = repo.backup(&data, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    // A flush and a compaction.
    write_sstable(&data, 3, &content(3, 20_000));
    remove_sstable(&data, 1);
    remove_sstable(&data, 2);
    write_sstable(&data, 4, &content(4, 40_000));
    let p2 = repo.backup(&data, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let at_p1 = repo.restore(&p1, "p1-before");
    let at_p2 = repo.restore(&p2, "p2-before");
    assert_eq!(at_p1.len(), 4);
    assert_eq!(at_p2.len(), 4);
    assert_ne!(at_p1, at_p2);

    // The host's clock steps back an hour; another flush and compaction.
    write_sstable(&data, 5, &content(5, 20_000));
    remove_sstable(&data, 3);
    remove_sstable(&data, 4);
    write_sstable(&data, 6, &content(6, 60_000));
    let out = ok(repo
        .backup_cmd(&data, &[])
        .env("LD_PRELOAD", &faketime)
        .env("FAKETIME", "-1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p3 = summary["point"].as_str().unwrap().to_string();

    // Every earlier point restores exactly what it did; the new one the new state.
    assert_eq!(repo.restore(&p1, "p1-after"), at_p1);
    assert_eq!(repo.restore(&p2, "p2-after"), at_p2);
    let at_p3 = repo.restore(&p3, "p3");
    assert_eq!(at_p3, walk(&data), "the point taken after the step");
    assert_eq!(repo.restore("now", "now"), at_p3);
    // On the host whose clock is still behind: `now` is still the node's latest state,
    // and the time of the point taken after the step is no time "in the future".
    let p3_time = timespec_precise(summary["point_time"].as_i64().unwrap());
    for (at, into) in [("now", "behind-now"), (p3_time.as_str(), "behind-p3")] {
        let to = repo.path(into);
        ok(repo
            .as_node("n1")
            .args(["restore", "--at", at, "--to"])
            .arg(&to)
            .env("LD_PRELOAD", &faketime)
            .env("FAKETIME", "-1h")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .output()
            .unwrap());
        assert_eq!(walk(&to), at_p3, "--at {at} on the host behind");
    }

    let warning = summary["clock_warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("behind the last time recorded"),
        "the summary warns about the step: {}",
        text(&out)
    );
    let problems = summary["problems"].to_string();
    assert!(
        problems.contains("behind the last time recorded"),
        "{summary}"
    );

    // The human summary says it too.
    write_sstable(&data, 7, &content(7, 1_000));
    let human = ok(repo
        .as_node("n1")
        .args(["backup", "--data-dir"])
        .arg(&data)
        .env("LD_PRELOAD", &faketime)
        .env("FAKETIME", "-1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(
        stdout.contains("warning: the system clock is") && stdout.contains("behind"),
        "{}",
        text(&human)
    );
}

#[test]
fn prune_incremental_never_deletes_the_last_copy_of_a_blob_gone_from_the_repository() {
    let repo = Repo::new();
    let data = repo.path("data");
    let bytes = content(9, 30_000);
    write_sstable(&data, 9, &bytes);
    // Cassandra's incremental backup: hard links in backups/.
    let table = data.join(TABLE);
    fs::create_dir_all(table.join("backups")).unwrap();
    for c in ["Data.db", "TOC.txt"] {
        fs::hard_link(
            table.join(format!("nb-9-big-{c}")),
            table.join(format!("backups/nb-9-big-{c}")),
        )
        .unwrap();
    }
    let p1 = repo.backup(&data, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    // Compaction removes the live SSTable: the backups/ links are the node's last copy.
    remove_sstable(&data, 9);
    // And the blob of its Data.db goes from the repository (an operator, a bucket rule).
    let hex = blake3::hash(&bytes).to_hex().to_string();
    let blob = repo.path(&format!("repo/blobs/{}/{}", &hex[..2], hex));
    fs::remove_file(&blob).unwrap();

    let summary = repo.backup(&data, &["--prune-incremental"]);
    let link = table.join("backups/nb-9-big-Data.db");
    let kept = link.exists();
    let back = blob.exists();
    assert!(
        kept || back,
        "the last copy was deleted and the repository lacks it: {summary}"
    );
    assert!(
        summary["problems"].to_string().contains(&hex),
        "the summary reports the missing blob: {summary}"
    );
    // The point restores, byte for byte.
    let restored = repo.restore(&p1, "p1");
    assert_eq!(
        restored.get(&format!("{TABLE}/nb-9-big-Data.db")),
        Some(&hex),
        "{restored:?}"
    );
}

/// Node n1 backed up `bytes` as SSTable 1, then lost it (compaction): after a gc that
/// keeps only the last point, its blob is unreferenced. Returns the blob's path.
fn blob_left_unreferenced(repo: &Repo, data: &Path, bytes: &[u8]) -> PathBuf {
    write_sstable(data, 1, bytes);
    write_sstable(data, 2, &content(2, 5_000));
    repo.backup(data, &[]);
    remove_sstable(data, 1);
    repo.backup(data, &[]);
    let hex = blake3::hash(bytes).to_hex().to_string();
    repo.path(&format!("repo/blobs/{}/{}", &hex[..2], hex))
}

fn gc(repo: &Repo) -> serde_json::Value {
    let out = ok(repo
        .as_node("n1")
        .args(["gc", "--keep-last", "1", "--grace", "1s", "--json"])
        .output()
        .unwrap());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Plants the lease of a pass of `node` that started `age` ago, its heartbeat `age` old.
fn plant_lease(repo: &Repo, node: &str, age: std::time::Duration) -> PathBuf {
    let dir = repo.path(&format!("repo/leases/{node}"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("0123456789abcdef0123456789abcdef");
    let when = std::time::SystemTime::now() - age;
    let micros = when
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let body = serde_json::json!({
        "node": node, "pass": "0123456789abcdef0123456789abcdef", "host": "elsewhere",
        "pid": 1, "started": micros, "started_host": micros,
    });
    fs::write(&path, body.to_string()).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(when)
        .unwrap();
    path
}

#[test]
fn gc_deletes_nothing_condemned_after_a_live_lease_started_and_ignores_a_stale_one() {
    let repo = Repo::new();
    let data = repo.path("data");
    let blob = blob_left_unreferenced(&repo, &data, &content(1, 50_000));
    // Another node's pass is running: it started before the blob is condemned.
    let lease = plant_lease(&repo, "n2", std::time::Duration::from_secs(1));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let first = gc(&repo);
    assert_eq!(first["blobs_condemned"], 1, "{first}");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let second = gc(&repo);
    assert!(blob.exists(), "the live lease kept the blob: {second}");
    assert_eq!(second["blobs_deleted"], 0, "{second}");
    assert_eq!(second["passes_running"], 1, "{second}");

    // The pass died long ago: its heartbeat is 11 minutes old.
    fs::File::options()
        .write(true)
        .open(&lease)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(660))
        .unwrap();
    let third = gc(&repo);
    assert_eq!(third["stale_leases"], 1, "{third}");
    assert_eq!(third["passes_running"], 0, "{third}");
    assert_eq!(third["blobs_deleted"], 1, "{third}");
    assert!(!blob.exists(), "a stale lease protects nothing: {third}");
}

/// `tablesafe <args>` as node n1 against `s3://bkt/r` at `endpoint`.
fn s3_cmd(root: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut c = support::cli::tablesafe(&root.join("home"));
    c.args(args)
        .args(["--repo", "s3://bkt/r", "--node", "n1", "--catalog"])
        .arg(root.join("n1.db"))
        .args(["--s3-endpoint", endpoint])
        .args([
            "--s3-allow-http",
            "--s3-path-style",
            "--s3-region",
            "us-east-1",
        ])
        .env("AWS_ACCESS_KEY_ID", s3support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3support::SECRET_KEY);
    c
}

async fn run_off_runtime(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_a_running_backup_deduplicated_onto_survives_two_gc_runs_with_a_one_second_grace() {
    use s3support::proxy::{Direction, FaultProxy};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let data = root.join("data");
    let server = s3support::S3Server::start().await;
    server.create_bucket("bkt");
    let proxy = FaultProxy::start(&server.endpoint, 7).await;
    let via_proxy = |args: &[&str]| s3_cmd(&root, &proxy.endpoint, args);
    let direct = |args: &[&str]| s3_cmd(&root, &server.endpoint, args);
    let data_arg = data.to_str().unwrap().to_string();

    // X backed up, then compacted away: unreferenced once gc keeps only the last point.
    let x = content(1, 200_000);
    write_sstable(&data, 1, &x);
    write_sstable(&data, 2, &content(2, 5_000));
    ok(run_off_runtime(via_proxy(&["backup", "--init", "--data-dir", &data_arg])).await);
    remove_sstable(&data, 1);
    ok(run_off_runtime(via_proxy(&["backup", "--data-dir", &data_arg])).await);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    // X comes back (a new SSTable with the same Data.db: the pass deduplicates onto
    // it), beside a large new file whose upload an outage holds up for 15 s.
    write_sstable(&data, 3, &x);
    write_sstable(&data, 4, &s3support::data::noise(16 << 20, 4));
    proxy.outage_after(
        Direction::Up,
        proxy.bytes(Direction::Up) + (3 << 20),
        std::time::Duration::from_secs(15),
    );
    let mut pass = via_proxy(&["backup", "--data-dir", &data_arg]);
    let pass = tokio::task::spawn_blocking(move || pass.output().unwrap());
    let waited = std::time::Instant::now();
    while proxy.outages() == 0 {
        assert!(waited.elapsed().as_secs() < 60, "the outage never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Meanwhile gc condemns X, and a second later would delete it.
    let gc = || direct(&["gc", "--keep-last", "1", "--grace", "1s", "--json"]);
    let first = ok(run_off_runtime(gc()).await);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["blobs_condemned"], 1, "gc condemned X: {first}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let second = ok(run_off_runtime(gc()).await);
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        proxy.outages(),
        1,
        "the pass was still held up during both gc runs"
    );
    let pass = pass.await.unwrap();
    ok(pass);

    // Everything the pass recorded restores, X included.
    let to = root.join("restored");
    ok(run_off_runtime(direct(&[
        "restore",
        "--at",
        "now",
        "--to",
        to.to_str().unwrap(),
    ]))
    .await);
    assert_eq!(walk(&to), walk(&data));
    assert_eq!(second["blobs_deleted"], 0, "{second}");
    assert_eq!(second["passes_running"], 1, "{second}");
    assert!(
        fs::read_dir(server.object_file("bkt", "r/leases/n1"))
            .map_or(true, |mut d| d.next().is_none()),
        "the pass removed its lease"
    );
}

#[test]
fn the_daemon_status_warns_when_the_clock_stepped_back() {
    let Some(faketime) = libfaketime() else {
        eprintln!(
            "SKIPPED: libfaketime is not installed (apt-get install -y faketime); .ci/run installs it"
        );
        return;
    };
    let repo = Repo::new();
    let data = repo.path("data");
    write_sstable(&data, 1, &content(1, 10_000));
    let p1 = repo.backup(&data, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let at_p1 = repo.restore(&p1, "p1-before");
    write_sstable(&data, 2, &content(2, 10_000));
    let mut daemon = repo
        .as_node("n1")
        .args(["daemon", "--settle", "50ms", "--data-dir"])
        .arg(&data)
        .env("LD_PRELOAD", &faketime)
        .env("FAKETIME", "-1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        let out = repo.as_node("n1").arg("status").output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        if status.contains("WARNING clock") || started.elapsed().as_secs() > 60 {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let _ = daemon.wait();
    assert!(
        status.contains("WARNING clock: the system clock is") && status.contains("behind"),
        "{status}"
    );
    assert_eq!(
        repo.restore(&p1, "p1-after"),
        at_p1,
        "p1 restores as before"
    );
    assert_eq!(
        repo.restore("now", "now").len(),
        4,
        "the daemon's pass is recorded"
    );
}
