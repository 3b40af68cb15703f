//! Outages and dropped connections, through the real binary: a fault-injecting TCP proxy
//! (`s3support::proxy`) sits between tablesafe and the in-process S3 server. A 20-second
//! outage in the middle of a backup and of a restore, and connections reset at random
//! mid-transfer: each run completes (the `--retry-timeout` budget, not a count of
//! retries, decides when to give up), never dies of a signal, and what it stored
//! verifies. Also: the binary ends quietly when the reader of its output goes away.

mod s3support;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use s3support::data::noise;
use s3support::proxy::{Direction, FaultProxy};
use s3support::{ACCESS_KEY, S3Server, SECRET_KEY};
use support::lifecycle::{FixtureFormat, Node, digest_text, fixture_component};

const MIB: usize = 1024 * 1024;
const OUTAGE: Duration = Duration::from_secs(20);

/// A node's data directory, an S3 server and a proxy in front of it.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    server: S3Server,
    proxy: FaultProxy,
}

impl World {
    async fn new(seed: u64) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        fill(&data, seed);
        let server = S3Server::start().await;
        server.create_bucket("bkt");
        let proxy = FaultProxy::start(&server.endpoint, seed).await;
        World {
            _tmp: tmp,
            root,
            data,
            server,
            proxy,
        }
    }

    /// `tablesafe <args>` against `s3://bkt/r` through the proxy.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::cli::tablesafe(&self.root.join("home"));
        c.args(args)
            .args(["--repo", "s3://bkt/r", "--node", "n1", "--catalog"])
            .arg(self.root.join("catalog.db"))
            .args(["--s3-endpoint", &self.proxy.endpoint])
            .args([
                "--s3-allow-http",
                "--s3-path-style",
                "--s3-region",
                "us-east-1",
            ])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        c
    }

    /// Runs the binary off the runtime (the S3 server and the proxy live on it).
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    async fn backup(&self) -> Output {
        let data = self.data.to_str().unwrap().to_string();
        self.run(&["backup", "--data-dir", &data]).await
    }
}

/// Complete nb SSTables under `data`: two of 12 MiB (multipart uploads) and forty small
/// ones, every Data.db distinct noise with its Digest.crc32.
fn fill(data: &Path, seed: u64) {
    let mut node = Node::new(data);
    let format = FixtureFormat::Nb;
    let probe = node.create_table("ks", "probe", format);
    let components = probe.components();
    fs::remove_dir_all(probe.path()).unwrap();
    let mut n = 0u64;
    for (table, count, size) in [
        ("big", 2, 12 * MIB),
        ("t1", 20, 48 * 1024),
        ("t2", 20, 48 * 1024),
    ] {
        let t = node.create_table("ks", table, format);
        for g in 1..=count {
            n += 1;
            let name = |c: &str| format!("nb-{g}-big-{c}");
            let body = noise(size, seed * 1000 + n);
            for c in components.iter().filter(|c| *c != "TOC.txt") {
                let bytes = match c.as_str() {
                    "Data.db" => body.clone(),
                    d if d == format.digest_component() => {
                        digest_text(format, &body, &name("Data.db"))
                    }
                    _ => fixture_component(format, c).unwrap(),
                };
                fs::write(t.path().join(name(c)), bytes).unwrap();
            }
            let toc = fixture_component(format, "TOC.txt").unwrap();
            fs::write(t.path().join(name("TOC.txt")), toc).unwrap();
        }
    }
}

/// Every file below `dir` by relative path, with its bytes' BLAKE3.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(
                    rel,
                    blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn text(out: &Output) -> String {
    support::cli::text(out)
}

/// Exited on its own (not by a signal) with `code`.
#[track_caller]
fn exited(out: &Output, code: i32) {
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal: {}",
        text(out)
    );
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
}

async fn verify_clean(w: &World) {
    let out = w.run(&["verify", "--read-data"]).await;
    exited(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_outlives_a_twenty_second_outage_in_its_middle() {
    let w = World::new(1).await;
    exited(&w.run(&["init"]).await, 0);
    // The outage starts once 2 MiB of the ~26 MiB have gone up: mid-backup.
    w.proxy.outage_after(
        Direction::Up,
        w.proxy.bytes(Direction::Up) + 2 * MIB as u64,
        OUTAGE,
    );
    let started = Instant::now();
    let out = w.backup().await;
    exited(&out, 0);
    assert_eq!(w.proxy.outages(), 1, "the outage happened");
    assert!(
        started.elapsed() >= OUTAGE,
        "the backup waited the outage out"
    );
    verify_clean(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_outlives_a_twenty_second_outage_in_its_middle() {
    let w = World::new(2).await;
    exited(&w.run(&["init"]).await, 0);
    exited(&w.backup().await, 0);
    w.proxy.outage_after(
        Direction::Down,
        w.proxy.bytes(Direction::Down) + 2 * MIB as u64,
        OUTAGE,
    );
    let to = w.root.join("restored");
    let started = Instant::now();
    let out = w
        .run(&["restore", "--at", "now", "--to", to.to_str().unwrap()])
        .await;
    exited(&out, 0);
    assert_eq!(w.proxy.outages(), 1, "the outage happened");
    assert!(
        started.elapsed() >= OUTAGE,
        "the restore waited the outage out"
    );
    assert_eq!(tree(&to), tree(&w.data), "restored exactly the backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_reset_at_random_mid_transfer_never_kill_the_backup() {
    let w = World::new(3).await;
    exited(&w.run(&["init"]).await, 0);
    // Each chunk of up to 64 KiB forwarded kills its connection with a chance of 3%.
    w.proxy.reset_at_random(30);
    let out = w.backup().await;
    let resets = w.proxy.random_resets();
    w.proxy.reset_at_random(0);
    assert!(resets > 0, "no connection was reset");
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal: {}",
        text(&out)
    );
    match out.status.code() {
        Some(0) => {}
        Some(1) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.lines().count(), 1, "one line: {}", text(&out));
            panic!("the backup gave up within its budget: {}", text(&out));
        }
        _ => panic!("{}", text(&out)),
    }
    verify_clean(&w).await;
    let to = w.root.join("restored");
    let out = w
        .run(&["restore", "--at", "now", "--to", to.to_str().unwrap()])
        .await;
    exited(&out, 0);
    assert_eq!(tree(&to), tree(&w.data));
}

/// Runs the binary with its standard output a pipe whose reading end is already
/// closed, as `tablesafe … | head -1` is once head has read its line.
fn run_with_closed_output(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = support::cli::tablesafe(home.path())
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Whether s3s-fs holds multipart upload `id` open (its `.upload-<id>.json` in its root,
/// removed when the upload is completed or aborted).
fn upload_open(root: &Path, id: &str) -> bool {
    root.join(format!(".upload-{id}.json")).exists()
}

/// The upload ids a journal of uploads in progress notes (`store::uploads`: one file per
/// upload, its path then its id).
fn noted_ids(journal: &Path) -> Vec<String> {
    fs::read_dir(journal)
        .unwrap()
        .map(|e| {
            let text = fs::read_to_string(e.unwrap().path()).unwrap();
            text.lines().nth(1).unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multipart_upload_cut_short_by_a_kill_is_aborted_by_the_next_backup() {
    let w = World::new(4).await;
    exited(&w.run(&["init"]).await, 0);
    // Connections reset from 10 MiB on (the big files' first parts are 8 MiB): the
    // multipart uploads have begun and have parts in, and cannot finish.
    w.proxy.outage_after(
        Direction::Up,
        w.proxy.bytes(Direction::Up) + 10 * MIB as u64,
        Duration::from_secs(8),
    );
    let data = w.data.to_str().unwrap().to_string();
    let mut child = w.cmd(&["backup", "--data-dir", &data]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.proxy.outages() == 0 {
        assert!(Instant::now() < deadline, "the outage never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let journal = w.root.join("catalog.db.uploads");
    let noted = noted_ids(&journal);
    assert!(
        !noted.is_empty(),
        "the killed backup had multipart uploads in progress"
    );
    let root = w.server.root();
    assert!(
        noted.iter().any(|id| upload_open(root, id)),
        "the server holds them open"
    );
    // Once the store is back, the next backup aborts them, then backs up everything.
    // (An upload whose start answer the outage cut off was never noted: a bucket
    // lifecycle rule is for those.)
    tokio::time::sleep(Duration::from_secs(8)).await;
    exited(&w.backup().await, 0);
    for id in &noted {
        assert!(!upload_open(root, id), "upload {id} was aborted");
    }
    assert!(noted_ids(&journal).is_empty(), "nothing noted any more");
    verify_clean(&w).await;
}

#[test]
fn a_reader_that_goes_away_ends_the_binary_quietly_not_by_a_signal() {
    let fixture = FixtureFormat::Nb.fixture_dir();
    for args in [
        vec!["daemon", "--print-systemd-unit"],
        vec!["inspect", fixture.to_str().unwrap()],
    ] {
        let out = run_with_closed_output(&args);
        assert_eq!(out.status.signal(), None, "{args:?}: {}", text(&out));
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out));
    }
}
