//! One writer per node, a repository that disappears under a running process, and the
//! leftovers of interrupted uploads, through the real binary on `file://` repositories.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use support::lifecycle::{FixtureFormat, Node};
use tablesafe::catalog::Catalog;
use tablesafe::timespec;
use tablesafe::watch::DaemonStatus;

const NODE: &str = "n1";

/// One host: its data directory and its catalog, backing up node `n1`.
struct Host {
    data: PathBuf,
    catalog: PathBuf,
    node: Node,
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        Env {
            repo: root.join("repo"),
            _tmp: tmp,
            root,
        }
    }

    fn repo_url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    /// A host with one table holding one flushed SSTable.
    fn host(&self, name: &str, keyspace: &str) -> Host {
        let data = self.root.join(name).join("data");
        let mut node = Node::new(&data);
        node.create_table(keyspace, "events", FixtureFormat::Nb)
            .flush()
            .run()
            .unwrap();
        Host {
            data,
            catalog: self.root.join(name).join("catalog/n1.db"),
            node,
        }
    }

    fn command(&self, host: &Host) -> Command {
        let mut c = support::cli::tablesafe(&self.root.join("home"));
        c.arg("--repo")
            .arg(self.repo_url())
            .arg("--catalog")
            .arg(&host.catalog)
            .args(["--node", NODE]);
        c
    }

    fn run(&self, host: &Host, args: &[&str]) -> Output {
        self.command(host).args(args).output().unwrap()
    }

    fn backup(&self, host: &Host, extra: &[&str]) -> Output {
        let mut c = self.command(host);
        c.arg("backup")
            .arg("--data-dir")
            .arg(&host.data)
            .args(extra);
        c.output().unwrap()
    }

    fn start_daemon(&self, host: &Host, log: &str) -> Daemon {
        Daemon(self.spawn_daemon(host, log))
    }

    fn spawn_daemon(&self, host: &Host, log: &str) -> Child {
        let log = fs::File::create(self.root.join(log)).unwrap();
        self.command(host)
            .args([
                "daemon",
                "--init",
                "--settle",
                "100ms",
                "--rescan-every",
                "10m",
            ])
            .arg("--data-dir")
            .arg(&host.data)
            .arg("--pin-dir")
            .arg(self.root.join("pins"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

/// A daemon killed when the test ends, passed or not.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Exit code 1 and exactly one line on stderr; returns it.
#[track_caller]
fn one_line_failure(out: &Output) -> String {
    let text = support::cli::text(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {text}");
    lines[0].to_string()
}

fn status(catalog: &Path) -> Option<DaemonStatus> {
    let catalog = Catalog::open(catalog).ok()?;
    let body = catalog.read_status(NODE).ok()??;
    serde_json::from_str(&body).ok()
}

/// Waits until `until` holds for the daemon's status, failing if the daemon exits.
fn wait_status(
    env: &Env,
    host: &Host,
    daemon: &mut Child,
    log: &str,
    what: &str,
    until: impl Fn(&DaemonStatus) -> bool,
) -> DaemonStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(code) = daemon.try_wait().unwrap() {
            panic!(
                "the daemon exited ({code}): {}",
                fs::read_to_string(env.root.join(log)).unwrap_or_default()
            );
        }
        if let Some(s) = status(&host.catalog) {
            if s.pid == daemon.id() && until(&s) {
                return s;
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: never happened; last status {last:?}");
}

fn idle(s: &DaemonStatus) -> bool {
    s.state == "running" && s.passes > 0 && s.queued_dirs == 0 && s.pending_files == 0
}

fn signal(daemon: &mut Child, sig: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(daemon.id() as i32, sig);
    }
    daemon.wait().unwrap();
}

/// The output of a process that must end by itself within 20 seconds (killed, and the
/// test failed, otherwise).
fn exits_soon(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "still running after 20 s: {}",
                support::cli::text(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Paths below `dir`, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    walk(dir, dir)
}

fn walk(base: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(base, &p));
        } else {
            out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

/// A daemon holds the node's catalog for its whole life: a backup or a second daemon is
/// refused with its PID, read-only commands still work, and once it is killed with
/// SIGKILL the next backup and daemon start as if it had never run.
#[test]
fn a_backup_while_a_daemon_runs_is_refused_with_its_pid_and_a_killed_daemon_blocks_nothing() {
    let env = Env::new();
    let host = env.host("h1", "ks");
    let mut daemon = env.start_daemon(&host, "d1.log");
    wait_status(&env, &host, &mut daemon.0, "d1.log", "first pass", idle);
    let pid = daemon.0.id().to_string();

    for out in [
        env.backup(&host, &[]),
        env.run(
            &host,
            &[
                "snapshot",
                "create",
                "x",
                "--data-dir",
                host.data.to_str().unwrap(),
            ],
        ),
        exits_soon(
            env.command(&host)
                .args(["daemon", "--data-dir", host.data.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ),
        env.run(&host, &["catalog", "rebuild"]),
    ] {
        let line = one_line_failure(&out);
        assert!(
            line.contains(&format!("pid {pid}")) && line.contains("in use"),
            "{line}"
        );
    }
    // Readers are not writers.
    support::cli::ok(env.run(&host, &["status"]));
    support::cli::ok(env.run(&host, &["snapshot", "list"]));

    signal(&mut daemon.0, libc::SIGKILL);
    support::cli::ok(env.backup(&host, &[]));
    let mut second = env.start_daemon(&host, "d2.log");
    wait_status(
        &env,
        &host,
        &mut second.0,
        "d2.log",
        "second daemon's pass",
        idle,
    );
    signal(&mut second.0, libc::SIGTERM);
}

/// Two hosts configured with one node name against one repository, each with its
/// Cassandra data at the same path: the second is refused before it records anything
/// (the node still restores to the first host's files), as a one-shot backup and as a
/// daemon, however often it tries. `catalog rebuild` on the second host takes the node
/// over, and then the first host is refused. Each refused host leaves a notice that the
/// node's writer reports, once, at its next backup. Neither refusal rests on the store
/// honouring conditional creates: the second host knows from the log who wrote it, the
/// first finds a batch it did not write.
#[test]
fn a_second_host_with_the_same_node_name_is_refused_until_it_takes_the_node_over() {
    let env = Env::new();
    let shared = env.root.join("data");
    let (h1_away, h2_away) = (env.root.join("h1-data"), env.root.join("h2-data"));
    let swap = |out: &Path, back: &Path| {
        fs::rename(&shared, out).unwrap();
        fs::rename(back, &shared).unwrap();
    };
    let mut h1 = env.host("h1", "ks_one");
    h1.data = shared.clone();
    fs::rename(env.root.join("h1/data"), &shared).unwrap();
    support::cli::ok(env.backup(&h1, &["--init"]));
    let h1_files: BTreeSet<String> = Catalog::open(&h1.catalog)
        .unwrap()
        .live_at(NODE, timespec::now())
        .unwrap()
        .iter()
        .map(|v| v.key.data_relative_path())
        .collect();
    assert!(!h1_files.is_empty());

    fs::rename(&shared, &h1_away).unwrap();
    let mut h2 = env.host("h2", "ks_two");
    h2.data = shared.clone();
    fs::rename(env.root.join("h2/data"), &shared).unwrap();
    for _ in 0..2 {
        let line = one_line_failure(&env.backup(&h2, &[]));
        assert!(
            line.contains("also being backed up by another catalog")
                && line.contains("catalog rebuild")
                && line.contains("--node"),
            "{line}"
        );
    }
    let out = exits_soon(env.spawn_daemon(&h2, "h2.log"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second host's daemon refuses to start"
    );

    // Nothing was recorded as ended: the node at "now" is still the first host's.
    let to = env.root.join("restored");
    support::cli::ok(env.run(
        &h2,
        &["restore", "--at", "now", "--to", to.to_str().unwrap()],
    ));
    assert_eq!(files(&to), h1_files);

    // The first host carries on, and is told.
    swap(&h2_away, &h1_away);
    let contenders = env.repo.join("nodes/n1/contenders");
    assert_eq!(
        files(&contenders).len(),
        1,
        "one notice per refused catalog"
    );
    let out = support::cli::ok(env.backup(&h1, &[]));
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(
        told.contains("another host tried to back up node n1 and was refused")
            && told.contains("--node"),
        "{told}"
    );
    assert!(files(&contenders).is_empty(), "a notice is reported once");
    let out = support::cli::ok(env.backup(&h1, &[]));
    assert!(out.stderr.is_empty(), "{}", support::cli::text(&out));

    // Host 2 replaces host 1: from now on the node is host 2's files.
    swap(&h1_away, &h2_away);
    support::cli::ok(env.run(&h2, &["catalog", "rebuild"]));
    support::cli::ok(env.backup(&h2, &[]));
    let now: BTreeSet<String> = Catalog::open(&h2.catalog)
        .unwrap()
        .live_at(NODE, timespec::now())
        .unwrap()
        .iter()
        .map(|v| v.key.data_relative_path())
        .collect();
    assert!(
        !now.is_empty() && now.iter().all(|p| p.starts_with("ks_two/")),
        "{now:?}"
    );
    swap(&h2_away, &h1_away);
    let line = one_line_failure(&env.backup(&h1, &[]));
    assert!(
        line.contains("also being backed up by another catalog") && line.contains("writer"),
        "{line}"
    );
    // The new writer hears that the old one still runs.
    swap(&h1_away, &h2_away);
    let out = support::cli::ok(env.backup(&h2, &[]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another host tried to back up node n1"),
        "{}",
        support::cli::text(&out)
    );
}

/// A daemon whose `file://` repository is deleted under it writes nothing there (no
/// `nodes/` reappears) and says why in `status`; a repository re-created by another
/// `init` in its place is refused too, by the daemon and by a one-shot backup.
#[test]
fn a_repository_deleted_or_replaced_under_a_daemon_is_never_written_again() {
    let env = Env::new();
    let mut host = env.host("h1", "ks");
    let mut daemon = env.start_daemon(&host, "d.log");
    wait_status(&env, &host, &mut daemon.0, "d.log", "first pass", idle);
    assert!(env.repo.join("nodes").is_dir());

    fs::remove_dir_all(&env.repo).unwrap();
    let mut table = host.node.create_table("ks", "more", FixtureFormat::Nb);
    table.flush().run().unwrap();
    let gone = wait_status(&env, &host, &mut daemon.0, "d.log", "the error", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("is gone"))
    });
    assert!(!env.repo.exists(), "the repository was recreated: {gone:?}");
    let out = support::cli::ok(env.run(&host, &["status"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is gone"),
        "{}",
        support::cli::text(&out)
    );

    // Another repository at the same place.
    support::cli::ok(env.run(&host, &["init"]));
    table.flush().run().unwrap();
    wait_status(
        &env,
        &host,
        &mut daemon.0,
        "d.log",
        "the replaced error",
        |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("not the one"))
        },
    );
    signal(&mut daemon.0, libc::SIGTERM);
    assert!(!env.repo.join("nodes").exists());
    let line = one_line_failure(&env.backup(&host, &[]));
    assert!(
        line.contains("not the one this catalog belongs to"),
        "{line}"
    );
    assert!(!env.repo.join("nodes").exists());
}

/// The staging files interrupted uploads leave in a `file://` repository
/// (`blobs/<aa>/<hash>#N`, `nodes/<node>/log/<seq>#N`) are removed by gc once older than
/// the grace period; younger ones, and everything else, stay; `--dry-run` only counts.
#[test]
fn gc_removes_staging_files_of_interrupted_uploads_older_than_the_grace_period() {
    let env = Env::new();
    let host = env.host("h1", "ks");
    support::cli::ok(env.backup(&host, &["--init"]));
    let before = files(&env.repo);
    let blob = before
        .iter()
        .find(|p| p.starts_with("blobs/"))
        .unwrap()
        .clone();
    let log = before
        .iter()
        .find(|p| p.starts_with("nodes/"))
        .unwrap()
        .clone();
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    let make = |rel: String, mtime: Option<SystemTime>| {
        let path = env.repo.join(&rel);
        fs::write(&path, vec![7u8; 1000]).unwrap();
        if let Some(t) = mtime {
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        rel
    };
    let stale = [
        make(format!("{blob}#1"), Some(old)),
        make(format!("{blob}#2"), Some(old)),
        make(format!("{log}#1"), Some(old)),
    ];
    let young = make(format!("{blob}#3"), None);
    let gc = |extra: &[&str]| {
        let mut args = vec!["gc", "--keep-within", "7d", "--grace", "1h", "--json"];
        args.extend_from_slice(extra);
        let out = support::cli::ok(env.run(&host, &args));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let dry = gc(&["--dry-run"]);
    assert_eq!(dry["leftovers_removed"], 3, "{dry:#}");
    assert!(env.repo.join(&stale[0]).exists());
    let done = gc(&[]);
    assert_eq!(done["leftovers_removed"], 3, "{done:#}");
    assert_eq!(done["leftover_bytes"], 3000, "{done:#}");
    let mut expected = before.clone();
    expected.insert(young);
    let after: BTreeSet<String> = files(&env.repo)
        .into_iter()
        .filter(|p| !p.starts_with("gc/"))
        .collect();
    assert_eq!(after, expected);
    support::cli::ok(env.run(&host, &["verify"]));
}
