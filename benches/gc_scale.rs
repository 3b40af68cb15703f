//! gc at scale: a `file://` repository with BLOBS blob objects and one node whose log
//! holds a version for each; half the versions ended long enough ago that retention
//! drops them. Times the two gc runs (the first condemns half the blobs, the second
//! deletes them) and, as the baseline measured in the same run, deleting the same
//! number of blob objects from a repository of the same size (written at the same time
//! as gc's) with the same store call and concurrency and no gc around it.
//! Peak RSS is reported per phase (the peak is reset before each).
//!
//! ```text
//! cargo run --release --example gc_scale -- [BLOBS (default 1000000)] [WORK_DIR] [s3]
//! ```
//!
//! With `s3`, the repository is on an `s3s-fs` server (the standalone binary, its own
//! process, on 127.0.0.1); its objects are plain files, so they are written directly.

#[path = "../tests/s3support/mod.rs"]
mod s3support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tablesafe::catalog::{Catalog, Change, FileKey, mirror};
use tablesafe::gc::{self, GcOptions, RetentionPolicy};
use tablesafe::progress::Progress;
use tablesafe::store::{BlobId, Repository, StoreOptions};
use tablesafe::timespec;

/// Changes per catalog batch.
const BATCH: usize = 50_000;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("tablesafe=info"))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let blobs: usize = args
        .next()
        .map(|a| a.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(1_000_000);
    let work = args.next().map(PathBuf::from);
    let s3 = args.next().as_deref() == Some("s3");
    let tmp = tempfile::tempdir_in(work.as_deref().unwrap_or(Path::new("/tmp")))
        .unwrap_or_else(|e| fail(&format!("cannot create a work directory: {e}")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    rt.block_on(run(blobs, tmp.path(), s3));
}

fn usage() -> ! {
    eprintln!("usage: gc_scale [BLOBS] [WORK_DIR]");
    std::process::exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("gc_scale: {msg}");
    std::process::exit(1)
}

fn id(set: u8, i: usize) -> BlobId {
    let mut seed = [0u8; 9];
    seed[0] = set;
    seed[1..].copy_from_slice(&(i as u64).to_le_bytes());
    BlobId::of_bytes(&seed)
}

/// Writes blob objects straight into the repository directory (gc never reads their
/// content, only their names, sizes and times).
fn write_blobs(repo_dir: &Path, set: u8, n: usize) {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let hex = id(set, i).to_hex();
                    let dir = repo_dir.join("blobs").join(&hex[..2]);
                    if let Err(e) = std::fs::create_dir_all(&dir)
                        .and_then(|()| std::fs::write(dir.join(&hex), b"tablesafe-bench"))
                    {
                        fail(&format!("writing blob files: {e}"));
                    }
                }
            });
        }
    });
}

fn reset_peak() {
    // Writing 5 to clear_refs resets VmHWM (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Kills the S3 server when the run ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(n: usize, dir: &Path, s3: bool) {
    // (repository URL, options, directory holding its objects) for gc and the baseline.
    let (_server, store_opts, repo_url, repo_dir, base_url, base_dir) = if s3 {
        let port = 18_000 + (std::process::id() % 1000) as u16;
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join("bench")).unwrap_or_else(|e| fail(&e.to_string()));
        let child = std::process::Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", s3support::ACCESS_KEY])
            .args(["--secret-key", s3support::SECRET_KEY])
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                fail(&format!(
                    "cannot start s3s-fs (cargo install s3s-fs --features binary): {e}"
                ))
            });
        let server = Server(child);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let opts = s3support::options_for(
            &format!("http://127.0.0.1:{port}"),
            s3support::ACCESS_KEY,
            s3support::SECRET_KEY,
        );
        (
            Some(server),
            opts,
            "s3://bench/repo".to_string(),
            root.join("bench/repo"),
            "s3://bench/baseline".to_string(),
            root.join("bench/baseline"),
        )
    } else {
        (
            None,
            StoreOptions::default(),
            format!("file://{}", dir.join("repo").display()),
            dir.join("repo"),
            format!("file://{}", dir.join("baseline").display()),
            dir.join("baseline"),
        )
    };
    let repo = Repository::init(&repo_url, &store_opts)
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    let t = Instant::now();
    write_blobs(&repo_dir, 1, n);
    // The baseline's objects: as many (the same directory sizes) and written now, so
    // they are as old (as cold) as gc's; it deletes half of them, as gc does.
    write_blobs(&base_dir, 2, n);
    println!(
        "setup: {n} blob objects (and {n} for the baseline) written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // One node's history: a version per blob; the first half ended.
    let t = Instant::now();
    let mut catalog = Catalog::open(&dir.join("node.db")).unwrap_or_else(|e| fail(&e.to_string()));
    let key = |i: usize| FileKey {
        data_dir: "/var/lib/cassandra/data".into(),
        keyspace: "ks".into(),
        table: format!("t{}", i / 10_000),
        table_id: "0123456789abcdef0123456789abcdef".into(),
        rel_path: format!("nb-{i}-big-Data.db"),
    };
    let start = timespec::now();
    let mut changes = Vec::with_capacity(BATCH);
    for i in 0..n {
        let hash = *id(1, i).as_bytes();
        changes.push(Change::Blob {
            hash,
            size: 15,
            stored_size: 15,
        });
        changes.push(Change::Start {
            key: key(i),
            hash,
            size: 15,
            mtime: start,
            at: start,
        });
        if changes.len() >= BATCH {
            commit(&repo, &mut catalog, std::mem::take(&mut changes)).await;
        }
    }
    commit(&repo, &mut catalog, std::mem::take(&mut changes)).await;
    let ended = timespec::now();
    for i in 0..n / 2 {
        changes.push(Change::End {
            key: key(i),
            at: ended,
        });
        if changes.len() >= BATCH {
            commit(&repo, &mut catalog, std::mem::take(&mut changes)).await;
        }
    }
    commit(&repo, &mut catalog, std::mem::take(&mut changes)).await;
    println!(
        "setup: node log of {} versions ({} ended) in {:.1} s",
        n,
        n / 2,
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let opts = GcOptions {
        policy: RetentionPolicy {
            keep_within: Some(1_000_000),
            ..RetentionPolicy::default()
        },
        grace: 0,
        dry_run: false,
        force: false,
        release_last_state: Vec::new(),
        parallel: 16,
        as_of: None,
    };
    let mut gc_secs = 0.0;
    let mut view =
        Catalog::open(&dir.join("node.all-nodes.db")).unwrap_or_else(|e| fail(&e.to_string()));
    for phase in [
        "gc 1 (read logs, list, retention, condemn)",
        "gc 2 (list, delete)",
    ] {
        settle();
        reset_peak();
        let t = Instant::now();
        let s = gc::run(&repo, &mut view, &opts, Arc::new(Progress::default()))
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        gc_secs = t.elapsed().as_secs_f64();
        println!(
            "{phase}: {gc_secs:.1} s, peak RSS {:.0} MiB; listed {}, condemned {}, deleted {}",
            peak_mib(),
            s.blobs_listed,
            s.blobs_condemned,
            s.blobs_deleted
        );
    }

    // Baseline: the same number of deletes, same call, same concurrency, no gc.
    let half = n / 2;
    let baseline = Repository::init(&base_url, &store_opts)
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    // In hash order, as gc deletes them (on ext4 the order matters: objects created
    // together have neighbouring inodes, and deleting them together is cheaper).
    let mut ids: Vec<BlobId> = (0..half).map(|i| id(2, i)).collect();
    ids.sort_unstable();
    settle();
    reset_peak();
    let t = Instant::now();
    for chunk in ids.chunks(5000) {
        baseline
            .delete_blobs(chunk, 16)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    let base_secs = t.elapsed().as_secs_f64();
    println!(
        "baseline: {half} deletes alone: {base_secs:.1} s, peak RSS {:.0} MiB",
        peak_mib()
    );
    println!(
        "gc 2 / baseline: {:.2} (deletes are {:.0}% of the deleting run)",
        gc_secs / base_secs,
        100.0 * base_secs / gc_secs
    );
}

/// Flushes dirty data (the setup's writes, the previous phase's deletes) so that each
/// timed phase starts from a quiet disk instead of paying for the one before.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

async fn commit(repo: &Repository, catalog: &mut Catalog, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    catalog
        .commit("bench-node", timespec::now(), changes)
        .unwrap_or_else(|e| fail(&e.to_string()));
    mirror::upload_pending(repo, catalog, "bench-node")
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
}
