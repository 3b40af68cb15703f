//! Symbolic links, restore targets and secrets, through the real binary: keyspace and
//! table directories linked to another disk are backed up under the path Cassandra sees
//! (and a dangling one deletes nothing); restore never writes through a link it did not
//! make; the running-Cassandra guard covers targets inside and above a live data
//! directory; a file that cannot be read is a permission problem, not corruption; the
//! printed next steps are shell-quoted; `--at` in the future is refused; credentials in a
//! repository URL are refused and never echoed.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use support::cli::{Run, without_dac_override};
use support::lifecycle::{FixtureFormat, Node};
use tablesafe::timespec;

const CASSANDRA_MAIN: &str = "org.apache.cassandra.service.CassandraDaemon";
const SYSTEM_LOCAL: &str = "system/local-7ad54392bcdd35a684174e047860b377";

/// A temporary node: data directory, repository and catalog.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    repo_url: String,
    catalog: PathBuf,
    node: Node,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        let node = Node::new(&data);
        Env {
            repo_url: format!("file://{}", root.join("repo").display()),
            catalog: root.join("catalog/n1.db"),
            _tmp: tmp,
            root,
            data,
            node,
        }
    }

    fn bare(&self) -> StdCommand {
        support::cli::tablesafe(&self.root.join("home"))
    }

    /// `tablesafe <args> --repo … --catalog … --node n1`, through `wrap`.
    fn run_with(&self, args: &[&str], wrap: impl FnOnce(StdCommand) -> Command) -> Run {
        let mut cmd = self.bare();
        cmd.args(args)
            .arg("--repo")
            .arg(&self.repo_url)
            .arg("--catalog")
            .arg(&self.catalog)
            .args(["--node", "n1"]);
        Run::of(wrap(cmd).output().unwrap())
    }

    fn ts(&self, args: &[&str]) -> Run {
        self.run_with(args, Command::from_std)
    }

    fn backup(&self, extra: &[&str]) -> Run {
        let mut args = vec!["backup", "--data-dir", self.data.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ts(&args)
    }

    fn restore(&self, at: &str, to: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["restore", "--at", at, "--to", to.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ts(&args)
    }

    /// Path (relative to the data directory) → bytes, of every live file the catalog
    /// holds now.
    fn live_now(&self) -> Vec<String> {
        let catalog = tablesafe::catalog::Catalog::open(&self.catalog).unwrap();
        let mut live: Vec<String> = catalog
            .live_at("n1", timespec::now())
            .unwrap()
            .into_iter()
            .map(|v| {
                assert_eq!(Path::new(&v.key.data_dir), self.data, "recorded under data");
                v.key.data_relative_path()
            })
            .collect();
        live.sort();
        live
    }
}

/// Regular files below `dir` (following directory links), relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(true) {
        let e = match e {
            Err(e) if e.loop_ancestor().is_some() => continue,
            e => e.unwrap(),
        };
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, fs::read(e.path()).unwrap());
        }
    }
    out
}

/// Two tables in `data`, one keyspace on another disk linked in as `data/ks2`, one table
/// directory on a third disk linked into `data/ks1`. Returns the two other disks.
fn node_with_linked_dirs(e: &mut Env) -> (PathBuf, PathBuf) {
    let mut t1 = e.node.create_table("ks1", "t1", FixtureFormat::Nb);
    t1.flush().run().unwrap();
    t1.flush().run().unwrap();
    let disk2 = e.root.join("disk2");
    let mut t2 = Node::new(&disk2).create_table("ks2", "t2", FixtureFormat::Nb);
    t2.flush().run().unwrap();
    symlink(disk2.join("ks2"), e.data.join("ks2")).unwrap();
    let disk3 = e.root.join("disk3");
    let mut t3 = Node::new(&disk3).create_table("ks1", "t3", FixtureFormat::Nb);
    t3.flush().run().unwrap();
    t3.snapshot("before").run().unwrap();
    let t3_name = t3.path().file_name().unwrap().to_owned();
    symlink(t3.path(), e.data.join("ks1").join(&t3_name)).unwrap();
    (disk2, disk3)
}

#[test]
fn linked_keyspace_and_table_directories_are_backed_up_where_cassandra_sees_them() {
    let mut e = Env::new();
    node_with_linked_dirs(&mut e);
    // A loop (a link back to the data directory) and a link to a file: not followed,
    // not read, and said.
    symlink(&e.data, e.data.join("ks1").join("loop")).unwrap();
    let t1 = fs::read_dir(e.data.join("ks1"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("t1-"))
        .unwrap();
    fs::write(e.root.join("elsewhere.txt"), b"not an sstable").unwrap();
    symlink(e.root.join("elsewhere.txt"), t1.join("linked-file.txt")).unwrap();

    let run = e.backup(&["--init"]);
    run.succeeds();
    assert!(
        run.stdout.contains("warning:") && run.stdout.contains("linked-file.txt"),
        "a linked file is said to be left out: {}",
        run.stdout
    );
    assert!(run.stdout.contains("loop"), "{}", run.stdout);

    let mut want = tree(&e.data);
    want.retain(|k, _| !k.starts_with("ks1/loop") && !k.ends_with("linked-file.txt"));
    let live = e.live_now();
    assert!(live.iter().any(|p| p.starts_with("ks2/")), "{live:#?}");
    assert_eq!(
        live.iter().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );

    let to = e.root.join("restored");
    e.restore("now", &to, &["--include-snapshots"]).succeeds();
    assert_eq!(tree(&to), want);
}

#[test]
fn a_dangling_link_to_a_keyspace_or_table_directory_fails_the_backup_and_deletes_nothing() {
    let mut e = Env::new();
    let (disk2, disk3) = node_with_linked_dirs(&mut e);
    e.backup(&["--init"]).succeeds();
    let recorded = e.live_now();
    assert!(
        recorded.iter().any(|p| p.starts_with("ks2/")),
        "{recorded:#?}"
    );

    // Both disks unmounted: the links dangle.
    fs::rename(&disk2, e.root.join("disk2-away")).unwrap();
    fs::rename(&disk3, e.root.join("disk3-away")).unwrap();
    let run = e.backup(&["--json"]);
    let line = run.fails_with(1);
    assert!(line.contains("symbolic link"), "{line}");
    assert_eq!(run.json()["versions_ended"], 0, "{}", run.stdout);
    assert_eq!(e.live_now(), recorded);

    fs::rename(e.root.join("disk2-away"), &disk2).unwrap();
    fs::rename(e.root.join("disk3-away"), &disk3).unwrap();
    let again = e.backup(&["--json"]);
    again.succeeds();
    assert_eq!(again.json()["versions_ended"], 0);
    assert_eq!(e.live_now(), recorded);
}

/// One table flushed twice, backed up.
fn backed_up(e: &mut Env) -> PathBuf {
    let mut t = e.node.create_table("ks1", "t1", FixtureFormat::Nb);
    t.flush().run().unwrap();
    t.flush().run().unwrap();
    e.backup(&["--init"]).succeeds();
    t.path().to_path_buf()
}

#[test]
fn restore_never_writes_through_a_partial_file_planted_as_a_link() {
    let mut e = Env::new();
    let table = backed_up(&mut e);
    let rel_table = table.strip_prefix(&e.data).unwrap().to_path_buf();
    let victim = e.root.join("root-only-file");
    fs::write(&victim, b"precious").unwrap();

    // Whoever can write the target plants <file>.partial -> a file outside it.
    let to = e.root.join("target");
    let dest = to.join(&rel_table).join("nb-1-big-Data.db");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    symlink(
        &victim,
        to.join(&rel_table).join("nb-1-big-Data.db.partial"),
    )
    .unwrap();
    let run = e.restore("now", &to, &["--resume"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(
        !fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()),
        "the link was renamed into place"
    );
    // Removed, the restore completes.
    fs::remove_file(to.join(&rel_table).join("nb-1-big-Data.db.partial")).unwrap();
    e.restore("now", &to, &["--resume"]).succeeds();
    assert_eq!(tree(&to), tree(&e.data));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");

    // A keyspace directory planted as a link to a directory elsewhere: refused, nothing
    // written there.
    let elsewhere = e.root.join("etc");
    fs::create_dir_all(&elsewhere).unwrap();
    let to2 = e.root.join("target2");
    fs::create_dir_all(&to2).unwrap();
    symlink(&elsewhere, to2.join("ks1")).unwrap();
    let line = e.restore("now", &to2, &["--overwrite"]).fails_with(1);
    assert!(line.contains("symbolic link"), "{line}");
    assert!(tree(&elsewhere).is_empty());
}

/// A fake Cassandra: a process whose command line names Cassandra's main class, run
/// with `script` before the exec (to open files).
struct FakeCassandra(std::process::Child);

impl FakeCassandra {
    fn start(argv0: &str, before: &str) -> FakeCassandra {
        let fake = FakeCassandra(
            StdCommand::new("bash")
                .arg("-c")
                .arg(format!("{before} exec -a '{argv0}' sleep 60"))
                .current_dir("/")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let cmdline = PathBuf::from(format!("/proc/{}/cmdline", fake.0.id()));
        for _ in 0..500 {
            if String::from_utf8_lossy(&fs::read(&cmdline).unwrap_or_default())
                .contains("CassandraDaemon")
            {
                return fake;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fake Cassandra did not start");
    }
}

impl Drop for FakeCassandra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_target_in_or_above_a_running_cassandras_data_directory_is_refused() {
    let mut e = Env::new();
    backed_up(&mut e);
    // Cassandra named by its storage directory on the command line (data below it).
    let home = e.root.join("live");
    let data = home.join("data");
    fs::create_dir_all(data.join(SYSTEM_LOCAL)).unwrap();
    let argv0 = format!(
        "java -Dcassandra.storagedir={} {CASSANDRA_MAIN}",
        home.display()
    );
    {
        let fake = FakeCassandra::start(&argv0, "");
        let pid = format!("pid {}", fake.0.id());
        for to in [
            data.clone(),
            data.join("shop"),
            data.join("new/deeper"),
            home.clone(),
        ] {
            let line = e.restore("now", &to, &["--resume"]).fails_with(1);
            assert!(
                line.contains("running Cassandra") && line.contains(&pid),
                "{line}"
            );
        }
        assert!(!data.join("shop").exists() && !data.join("new").exists());
        e.restore("now", &e.root.join("elsewhere"), &[]).succeeds();
    }
    // Cassandra known only by a file it holds open (as under systemd).
    let data2 = e.root.join("live2/data");
    fs::create_dir_all(data2.join(SYSTEM_LOCAL)).unwrap();
    let held = data2.join(SYSTEM_LOCAL).join("nb-1-big-Data.db");
    fs::write(&held, b"x").unwrap();
    {
        let fake = FakeCassandra::start(CASSANDRA_MAIN, &format!("exec 3<'{}';", held.display()));
        let line = e
            .restore("now", &data2.join("shop"), &["--dry-run"])
            .fails_with(1);
        assert!(line.contains(&format!("pid {}", fake.0.id())), "{line}");
    }
}

#[test]
fn a_file_that_cannot_be_read_is_a_permission_problem_not_a_corrupt_sstable() {
    use std::os::unix::fs::PermissionsExt;
    let mut e = Env::new();
    let table = backed_up(&mut e);
    let mut t = e.node.create_table("ks1", "t2", FixtureFormat::Nb);
    t.flush().run().unwrap();
    let data_db = t.path().join("nb-1-big-Data.db");
    assert!(data_db.is_file(), "{}", data_db.display());
    fs::set_permissions(&data_db, fs::Permissions::from_mode(0o000)).unwrap();
    let mut probe = StdCommand::new("cat");
    probe.arg(&data_db);
    if !without_dac_override(probe)
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        fs::set_permissions(&data_db, fs::Permissions::from_mode(0o644)).unwrap();
        eprintln!("skipped: cannot drop CAP_DAC_OVERRIDE here, so no file is unreadable to root");
        return;
    }
    let data = e.data.to_str().unwrap().to_string();
    let run = e.run_with(
        &["backup", "--data-dir", &data, "--json"],
        without_dac_override,
    );
    fs::set_permissions(&data_db, fs::Permissions::from_mode(0o644)).unwrap();
    let line = run.fails_with(1);
    assert!(line.contains(&*data_db.to_string_lossy()), "{line}");
    assert!(line.contains("permission"), "{line}");
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert!(line.contains(&format!("uid {uid}")), "{line}");
    assert!(!line.to_lowercase().contains("corrupt"), "{line}");
    assert_eq!(
        run.json()["corrupt"],
        serde_json::json!([]),
        "{}",
        run.stdout
    );

    // Readable again: backed up, never remembered as corrupt.
    let again = e.backup(&["--json"]);
    again.succeeds();
    assert_eq!(again.json()["corrupt"], serde_json::json!([]));
    let live = e.live_now();
    assert!(
        live.iter()
            .any(|p| p.contains("t2-") && p.ends_with("nb-1-big-Data.db"))
    );
    assert!(table.is_dir());
}

#[test]
fn a_data_file_rewritten_while_it_is_read_is_changed_and_backed_up_next_pass_not_corrupt() {
    let mut e = Env::new();
    let mut t = e.node.create_table("ks1", "t3", FixtureFormat::Nb);
    t.flush().run().unwrap();
    let data_db = t.path().join("nb-1-big-Data.db");
    let digest = t
        .path()
        .join(format!("nb-1-big-{}", FixtureFormat::Nb.digest_component()));
    assert!(data_db.is_file() && digest.is_file());
    // The backup's first read of Data.db (its digest check) is held while the file is
    // rewritten (with a matching Digest, as a new write of it would have).
    let mut hold = support::hold::OpenHold::first_read_by_another(&e.data);
    hold.watch(&data_db);
    let mut cmd = e.bare();
    cmd.args(["backup", "--json", "--data-dir"])
        .arg(&e.data)
        .arg("--repo")
        .arg(&e.repo_url)
        .arg("--catalog")
        .arg(&e.catalog)
        .args(["--node", "n1", "--init"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let held = hold.wait_held(Duration::from_secs(60));
    assert_eq!(
        held.as_deref(),
        Some(data_db.as_path()),
        "the read was held"
    );
    let mut rewritten = fs::read(&data_db).unwrap();
    rewritten.iter_mut().for_each(|b| *b = b.wrapping_add(1));
    fs::write(&data_db, &rewritten).unwrap();
    fs::write(
        &digest,
        support::lifecycle::digest_text(FixtureFormat::Nb, &rewritten, "nb-1-big-Data.db"),
    )
    .unwrap();
    hold.release();
    let first = Run::of(child.wait_with_output().unwrap());
    first.succeeds();
    let summary = first.json();
    assert_eq!(
        summary["corrupt"],
        serde_json::json!([]),
        "{}",
        first.stdout
    );
    assert!(
        summary["changed_during_backup"].as_u64().unwrap() >= 1,
        "{}",
        first.stdout
    );
    assert!(!e.live_now().iter().any(|p| p.ends_with("nb-1-big-Data.db")));
    // The next pass reads it again and backs it up as it is now.
    let again = e.backup(&["--json"]);
    again.succeeds();
    assert_eq!(again.json()["corrupt"], serde_json::json!([]));
    let to = e.root.join("restored-t3");
    e.restore("now", &to, &[]).succeeds();
    let restored = tree(&to);
    let rel = data_db
        .strip_prefix(&e.data)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(restored.get(&rel), Some(&rewritten), "{rel}");
}

#[test]
fn the_next_steps_restore_prints_are_shell_quoted() {
    let mut e = Env::new();
    backed_up(&mut e);
    let canary = e.root.join("pwned");
    let to = e.root.join(format!(
        "a b'c$(touch {})`touch {}`;x",
        canary.display(),
        canary.display()
    ));
    let run = e.restore("now", &to, &[]);
    run.succeeds();
    let line = run
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("nodetool import"))
        .unwrap_or_else(|| panic!("no nodetool line: {}", run.stdout));
    // Pasted into a shell, the line runs nodetool with the three words it names.
    let out = StdCommand::new("sh")
        .arg("-c")
        .arg(format!("nodetool() {{ printf '%s\\n' \"$@\"; }}; {line}"))
        .current_dir(&e.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert!(!canary.exists(), "a command in the path ran: {line}");
    assert_eq!(words.len(), 4, "{words:?} from {line}");
    assert_eq!(words[0], "import");
    assert_eq!(words[1], "ks1");
    assert_eq!(words[2], "t1");
    assert!(
        Path::new(&words[3]).starts_with(&to) && Path::new(&words[3]).is_dir(),
        "{words:?}"
    );
}

#[test]
fn restore_at_a_time_in_the_future_is_refused() {
    let mut e = Env::new();
    backed_up(&mut e);
    let to = e.root.join("target");
    for at in [
        timespec::format(timespec::now() + 3_600_000_000),
        "2999-01-01".to_string(),
    ] {
        let line = e.restore(&at, &to, &[]).fails_with(1);
        assert!(line.contains("in the future"), "{line}");
        assert!(!to.exists(), "nothing written for {at}");
    }
    e.restore("now", &to, &[]).succeeds();
    // Within the tolerance for clock skew (5 s): accepted as now.
    let soon = timespec::format_precise(timespec::now() + 1_000_000);
    e.restore(&soon, &e.root.join("target2"), &[]).succeeds();
}

#[test]
fn credentials_in_any_repository_url_are_refused_and_never_echoed() {
    let e = Env::new();
    for (url, secret) in [
        (
            "s3://AKIAEXAMPLE:wJalr/XUtnFEMI/K7MDENG@bucket/prefix",
            "XUtnFEMI",
        ),
        (
            "s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/prefix",
            "wJalrXUtnFEMI",
        ),
        ("gs://user:se/cret@bucket", "cret"),
        ("az://account:k/e/y@container/p", "k/e/y"),
        ("memory://user:pa/ss@name", "pa/ss"),
        ("s3://AKIAEXAMPLE:wJalr/XUtnFEMI/bucket", "XUtnFEMI"),
    ] {
        let mut cmd = Command::from_std(e.bare());
        cmd.args(["init", "--repo", url]);
        let run = Run::of(cmd.output().unwrap());
        let line = run.fails_with(2);
        assert!(!run.stderr.contains(secret), "{url}: {line}");
        assert!(!run.stdout.contains(secret), "{url}: {}", run.stdout);
        assert!(line.contains("***"), "{url}: {line}");
    }
}

/// The daemon sees a flush in a keyspace directory linked from another disk through
/// inotify (notify follows the links present when it starts watching), well before its
/// next full rescan (10 minutes away).
#[test]
fn the_daemon_watches_a_linked_keyspace_directory() {
    let mut e = Env::new();
    let mut t1 = e.node.create_table("ks1", "t1", FixtureFormat::Nb);
    t1.flush().run().unwrap();
    let disk2 = e.root.join("disk2");
    let mut t2 = Node::new(&disk2).create_table("ks2", "t2", FixtureFormat::Nb);
    t2.flush().run().unwrap();
    symlink(disk2.join("ks2"), e.data.join("ks2")).unwrap();
    let log = fs::File::create(e.root.join("daemon.log")).unwrap();
    let mut cmd = e.bare();
    cmd.args([
        "daemon",
        "--init",
        "--settle",
        "100ms",
        "--rescan-every",
        "10m",
    ])
    .arg("--data-dir")
    .arg(&e.data)
    .arg("--pin-dir")
    .arg(e.root.join("pins"))
    .arg("--repo")
    .arg(&e.repo_url)
    .arg("--catalog")
    .arg(&e.catalog)
    .args(["--node", "n1"])
    .stdout(Stdio::null())
    .stderr(log);
    let mut daemon = cmd.spawn().unwrap();
    let wait_for =
        |what: &str, daemon: &mut std::process::Child, done: &dyn Fn(&[String]) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(code) = daemon.try_wait().unwrap() {
                    panic!(
                        "the daemon exited ({code}): {}",
                        fs::read_to_string(e.root.join("daemon.log")).unwrap_or_default()
                    );
                }
                let live = if e.catalog.exists() {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.live_now()))
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                if done(&live) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never {what}: {live:#?}\n{}",
                    fs::read_to_string(e.root.join("daemon.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
    wait_for("backed up ks2", &mut daemon, &|live| {
        live.iter()
            .any(|p| p.starts_with("ks2/") && p.ends_with("nb-1-big-Data.db"))
    });
    t2.flush().run().unwrap();
    wait_for("saw the flush in ks2", &mut daemon, &|live| {
        live.iter()
            .any(|p| p.starts_with("ks2/") && p.ends_with("nb-2-big-Data.db"))
    });
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    assert!(daemon.wait().unwrap().success());
}
