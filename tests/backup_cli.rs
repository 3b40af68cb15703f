//! `tablesafe backup`, `snapshot create/list/show` and `catalog rebuild` through the real
//! binary, on a real `file://` repository and a data directory written by
//! `support::lifecycle`: corrupt SSTables, bad input, rebuilding the catalog from the
//! repository, and time filters.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use support::cli::{Run, without_dac_override};
use support::lifecycle::{FixtureFormat, Gen, Node};
use tablesafe::timespec;

/// A temporary node: data directory, repository URL and catalog path.
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

    /// The binary with a clean environment (nothing from the user's shell or home).
    fn bare(&self) -> Command {
        Command::from_std(support::cli::tablesafe(&self.root.join("home")))
    }

    fn run_cmd(mut cmd: Command) -> Run {
        Run::of(cmd.output().unwrap())
    }

    /// `tablesafe <args> --repo … --catalog … --node n1`.
    fn ts(&self, args: &[&str]) -> Run {
        self.ts_with_catalog(&self.catalog, args)
    }

    fn ts_with_catalog(&self, catalog: &Path, args: &[&str]) -> Run {
        let mut cmd = self.bare();
        cmd.args(args)
            .arg("--repo")
            .arg(&self.repo_url)
            .arg("--catalog")
            .arg(catalog)
            .args(["--node", "n1"]);
        Self::run_cmd(cmd)
    }

    /// `tablesafe backup --data-dir <data> <extra>`.
    fn backup(&self, extra: &[&str]) -> Run {
        let data = self.data.to_str().unwrap();
        let mut args = vec!["backup", "--data-dir", data];
        args.extend_from_slice(extra);
        self.ts(&args)
    }

    fn snapshot_create(&self, name: &str) -> Run {
        self.ts(&[
            "snapshot",
            "create",
            name,
            "--data-dir",
            self.data.to_str().unwrap(),
        ])
    }

    fn show(&self, name: &str) -> Value {
        self.ts(&["snapshot", "show", name, "--json"])
            .succeeds()
            .json()
    }

    fn list(&self, extra: &[&str]) -> Value {
        let mut args = vec!["snapshot", "list", "--json"];
        args.extend_from_slice(extra);
        self.ts(&args).succeeds().json()
    }

    fn remove_catalog(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.catalog.as_os_str().to_owned();
            p.push(suffix);
            let _ = fs::remove_file(p);
        }
    }
}

/// `rel_path`s (relative to the table directory) of the files of a `snapshot show`.
fn shown_files(show: &Value) -> BTreeSet<String> {
    show["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rel_path"].as_str().unwrap().to_string())
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// A byte flipped in one Data.db: the backup exits 1 with one line on stderr, the summary
/// names the file, every other SSTable is backed up and the corrupt one is not; once the
/// file is repaired, the next backup takes it.
#[test]
fn a_corrupt_sstable_is_reported_and_left_out_until_repaired() {
    let mut e = Env::new();
    let mut t = e.node.create_table("ks", "t", FixtureFormat::Nb);
    for _ in 0..3 {
        t.flush().run().unwrap();
    }
    let data2 = t.path().join(t.file_name(&Gen::Seq(2), "Data.db"));
    let good = fs::read(&data2).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 3;
    bad[mid] ^= 0x01;
    fs::write(&data2, &bad).unwrap();

    // Text summary on stdout.
    let text = e.backup(&["--init"]);
    let line = text.fails_with(1);
    assert!(line.to_lowercase().contains("corrupt"), "{line}");
    assert!(
        text.stdout.lines().any(|l| l.contains("CORRUPT")
            && l.contains("nb-2-big-Data.db")
            && l.contains("does not match")),
        "{}",
        text.stdout
    );

    // JSON summary.
    let json_run = e.backup(&["--json"]);
    let line = json_run.fails_with(1);
    assert!(line.to_lowercase().contains("corrupt"), "{line}");
    let summary = json_run.json();
    let corrupt = summary["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{summary:#}");
    assert!(
        corrupt[0]
            .as_str()
            .unwrap()
            .contains(&*data2.to_string_lossy()),
        "{summary:#}"
    );
    let point = summary["point"].as_str().unwrap().to_string();
    let files = shown_files(&e.show(&point));
    let of_gen = |g: u64| -> BTreeSet<String> {
        t.components()
            .iter()
            .map(|c| t.file_name(&Gen::Seq(g), c))
            .collect()
    };
    assert_eq!(
        files,
        of_gen(1).union(&of_gen(3)).cloned().collect(),
        "nb-1 and nb-3 backed up, nb-2 not"
    );

    // Repaired (the original bytes back): the next backup takes it.
    fs::write(&data2, &good).unwrap();
    let fixed = e.backup(&["--json"]);
    fixed.succeeds();
    let summary = fixed.json();
    assert_eq!(summary["corrupt"].as_array().unwrap().len(), 0);
    let show = e.show(summary["point"].as_str().unwrap());
    assert_eq!(shown_files(&show).len(), 3 * t.components().len());
    let recorded = show["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rel_path"] == "nb-2-big-Data.db")
        .unwrap();
    assert_eq!(
        recorded["hash"].as_str().unwrap(),
        blake3::hash(&good).to_hex().as_str()
    );
}

/// Bad flags and bad state: the right exit code and one line that says what to do.
#[test]
fn bad_input_gives_one_line_and_the_right_exit_code() {
    let mut e = Env::new();
    e.node
        .create_table("ks", "t", FixtureFormat::Nb)
        .flush()
        .run()
        .unwrap();
    let data = e.data.to_str().unwrap().to_string();

    // No repository at all.
    let mut cmd = e.bare();
    cmd.args(["backup", "--data-dir", &data, "--node", "n1", "--catalog"])
        .arg(&e.catalog);
    let line = Env::run_cmd(cmd).fails_with(2).to_string();
    assert!(line.contains("--repo"), "{line}");

    // A repository that was never initialised.
    let run = e.backup(&[]);
    let line = run.fails_with(1);
    assert!(line.contains("tablesafe init"), "{line}");
    assert!(!e.catalog.exists(), "nothing created");

    // init twice.
    e.ts(&["init"]).succeeds();
    let run = e.ts(&["init"]);
    assert!(
        run.fails_with(1).contains("already initialised"),
        "{}",
        run.stderr
    );

    // A catalog file that is not a catalog: refused, pointed to rebuild, untouched.
    fs::create_dir_all(e.catalog.parent().unwrap()).unwrap();
    let garbage = vec![0x5a_u8; 8192];
    fs::write(&e.catalog, &garbage).unwrap();
    let run = e.backup(&[]);
    let line = run.fails_with(1);
    assert!(line.contains("catalog rebuild"), "{line}");
    assert!(line.contains(&*e.catalog.to_string_lossy()), "{line}");
    assert_eq!(fs::read(&e.catalog).unwrap(), garbage, "catalog untouched");
    e.remove_catalog();

    // A data directory that does not exist.
    let missing = e.root.join("no-such-data");
    let run = e.ts(&["backup", "--data-dir", missing.to_str().unwrap()]);
    let line = run.fails_with(1);
    assert!(line.contains(&*missing.to_string_lossy()), "{line}");

    // The same snapshot name twice.
    e.snapshot_create("daily").succeeds();
    let run = e.snapshot_create("daily");
    let line = run.fails_with(1);
    assert!(
        line.contains("daily") && line.contains("already exists"),
        "{line}"
    );

    // An empty filter.
    let run = e.backup(&["--include", ""]);
    assert!(run.fails_with(2).contains("filter"), "{}", run.stderr);

    // A time nobody can read.
    let run = e.ts(&["snapshot", "list", "--since", "yesterday-ish-garbage"]);
    let line = run.fails_with(2);
    assert!(line.contains("yesterday-ish-garbage"), "{line}");

    // Nothing above recorded a second point.
    assert_eq!(names(&e.list(&[])), ["daily"]);
}

/// Several backups and named points; the catalog deleted; `catalog rebuild` from the
/// repository; `snapshot list --json` and `snapshot show --json` of every point answer
/// exactly as before.
#[test]
fn catalog_rebuild_answers_exactly_as_before() {
    let mut e = Env::new();
    let mut nb = e.node.create_table("ks", "users", FixtureFormat::Nb);
    let mut la = e.node.create_table("old", "items", FixtureFormat::La);
    for t in [&mut nb, &mut la] {
        t.flush().run().unwrap();
        t.flush().run().unwrap();
    }
    e.backup(&["--init"]).succeeds();
    nb.incremental_backup(&Gen::Seq(2)).run().unwrap();
    nb.snapshot("weekly").run().unwrap();
    e.snapshot_create("before-compaction").succeeds();
    for t in [&mut nb, &mut la] {
        t.compact(&[Gen::Seq(1), Gen::Seq(2)]).run().unwrap();
    }
    e.backup(&[]).succeeds();
    nb.rewrite_statistics(&Gen::Seq(3)).run().unwrap();
    la.flush().run().unwrap();
    e.backup(&["--prune-incremental"]).succeeds();
    e.snapshot_create("after").succeeds();

    let list = e.list(&[]);
    let points = names(&list);
    assert_eq!(points.len(), 5, "{list:#}");
    let shows: Vec<Value> = points.iter().map(|p| e.show(p)).collect();
    let by_id: Vec<Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| e.show(&p["id"].to_string()))
        .collect();
    assert_eq!(shows, by_id, "a point by name or by id");

    e.remove_catalog();
    let run = e.ts(&["catalog", "rebuild"]);
    run.succeeds();
    assert!(run.stdout.contains("rebuilt catalog"), "{}", run.stdout);
    assert!(e.catalog.exists());

    assert_eq!(e.list(&[]), list, "snapshot list --json");
    for (p, before) in points.iter().zip(&shows) {
        assert_eq!(&e.show(p), before, "snapshot show {p} --json");
    }
    // The rebuilt catalog carries on: a backup with nothing new starts no version.
    let next = e.backup(&["--json"]);
    next.succeeds();
    let summary = next.json();
    assert_eq!(summary["versions_started"], 0, "{summary:#}");
    assert_eq!(summary["versions_ended"], 0, "{summary:#}");
    assert_eq!(summary["blobs_uploaded"], 0, "{summary:#}");
}

/// `snapshot list --since/--until` select by time, inclusive; `snapshot show` of an
/// unknown name names the nearest ones.
#[test]
fn snapshot_list_filters_by_time_and_show_suggests_names() {
    let mut e = Env::new();
    let mut t = e.node.create_table("ks", "t", FixtureFormat::Nb);
    t.flush().run().unwrap();
    e.ts(&["init"]).succeeds();
    for name in ["daily", "weekly", "monthly"] {
        t.flush().run().unwrap();
        e.snapshot_create(name).succeeds();
    }
    let all = e.list(&[]);
    assert_eq!(names(&all), ["daily", "weekly", "monthly"]);
    let times: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time"].as_i64().unwrap())
        .collect();
    assert!(times[0] < times[1] && times[1] < times[2], "{times:?}");
    let at = |i: usize| timespec::format_precise(times[i]);

    assert_eq!(names(&e.list(&["--since", &at(1)])), ["weekly", "monthly"]);
    assert_eq!(names(&e.list(&["--until", &at(1)])), ["daily", "weekly"]);
    assert_eq!(
        names(&e.list(&["--since", &at(0), "--until", &at(1)])),
        ["daily", "weekly"]
    );
    assert_eq!(
        names(&e.list(&["--since", &timespec::format_precise(times[2] + 1)])),
        Vec::<String>::new()
    );
    assert_eq!(names(&e.list(&["--since", "2h ago"])).len(), 3);
    assert_eq!(names(&e.list(&["--since", "1d"])).len(), 3);
    assert_eq!(names(&e.list(&["--until", "2000-01-01"])).len(), 0);
    // Plain text lists the same points.
    let text = e.ts(&["snapshot", "list", "--since", &at(1)]);
    text.succeeds();
    assert!(text.stdout.contains("weekly") && !text.stdout.contains("daily"));
    assert!(text.stdout.contains("2 point(s)"), "{}", text.stdout);

    let run = e.ts(&["snapshot", "show", "dayly"]);
    let line = run.fails_with(1);
    assert!(line.contains("dayly"), "{line}");
    assert!(line.contains("nearest: daily"), "{line}");
    assert!(
        line.contains("weekly") && line.contains("monthly"),
        "{line}"
    );

    // Known names work in text form too.
    let run = e.ts(&["snapshot", "show", "weekly", "--files"]);
    run.succeeds();
    assert!(run.stdout.contains("ks.t: 24 files"), "{}", run.stdout);
}

#[test]
fn init_records_whether_cassandra_compressed_data_is_compressed_again() {
    for (flags, recompress) in [(&[][..], false), (&["--recompress"][..], true)] {
        let e = Env::new();
        let run = e.ts(&[&["init"][..], flags].concat());
        run.succeeds();
        let said = if recompress {
            "compressed again"
        } else {
            "stored as is"
        };
        assert!(run.stdout.contains(said), "{}", run.stdout);
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(e.root.join("repo/config")).unwrap()).unwrap();
        assert_eq!(
            config["compression"]["recompress"],
            serde_json::Value::Bool(recompress),
            "{config}"
        );
    }
}

/// The files the catalog holds as live now, below the data directory.
fn live_now(e: &Env) -> BTreeSet<String> {
    let catalog = tablesafe::catalog::Catalog::open(&e.catalog).unwrap();
    catalog
        .live_at("n1", timespec::now())
        .unwrap()
        .into_iter()
        .map(|v| v.key.data_relative_path())
        .collect()
}

/// Regular files below `dir`, recursively.
fn files_below(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                files_below(&e.path())
            } else {
                usize::from(t.is_file())
            }
        })
        .sum()
}

/// Two keyspaces, three tables, each flushed twice, backed up once; returns the number of
/// files recorded.
fn backed_up_node(e: &mut Env) -> usize {
    for (ks, t) in [("ks1", "t1"), ("ks1", "t2"), ("ks2", "t3")] {
        let mut t = e.node.create_table(ks, t, FixtureFormat::Nb);
        t.flush().run().unwrap();
        t.flush().run().unwrap();
    }
    e.backup(&["--init"]).succeeds();
    let live = live_now(e);
    assert_eq!(live.len(), files_below(&e.data));
    live.len()
}

/// `backup --json` that fails with one line: (that line, the summary).
fn failed_backup(e: &Env) -> (String, Value) {
    let run = e.backup(&["--json"]);
    let line = run.fails_with(1).to_string();
    (line, run.json())
}

/// A data directory that vanished after a backup: exit 1 with one line naming it, and
/// nothing recorded as deleted (the catalog and a restore at a moment after still have
/// every file); once it is back, the next backup succeeds and ends nothing.
#[test]
fn a_vanished_data_directory_fails_the_backup_and_deletes_nothing() {
    let mut e = Env::new();
    let recorded = backed_up_node(&mut e);
    let away = e.root.join("data.away");
    fs::rename(&e.data, &away).unwrap();

    let (line, summary) = failed_backup(&e);
    assert!(
        line.contains(&format!(
            "data directory {} does not exist",
            e.data.display()
        )),
        "{line}"
    );
    assert!(line.contains("check that its disk is mounted"), "{line}");
    assert!(
        line.contains(&format!("{recorded} backed-up file(s) there kept")),
        "{line}"
    );
    assert_eq!(summary["versions_ended"], 0, "{summary:#}");
    assert_eq!(
        summary["point"], "",
        "no point while part of the node is absent"
    );
    assert_eq!(live_now(&e).len(), recorded);
    let target = e.root.join("restored");
    let restore = e.ts(&["restore", "--at", "now", "--to", target.to_str().unwrap()]);
    restore.succeeds();
    assert_eq!(files_below(&target), recorded, "{}", restore.stdout);

    fs::rename(&away, &e.data).unwrap();
    let back = e.backup(&["--json"]);
    back.succeeds();
    assert_eq!(back.json()["versions_ended"], 0);
    assert_eq!(live_now(&e).len(), recorded);
}

/// A data directory emptied (every keyspace directory gone at once; a `lost+found` left
/// there is not a keyspace): an error, nothing ended.
#[test]
fn an_emptied_data_directory_fails_the_backup_and_deletes_nothing() {
    let mut e = Env::new();
    let recorded = backed_up_node(&mut e);
    for ks in ["ks1", "ks2"] {
        fs::remove_dir_all(e.data.join(ks)).unwrap();
    }
    fs::create_dir(e.data.join("lost+found")).unwrap();

    let (line, summary) = failed_backup(&e);
    assert!(
        line.contains(&format!(
            "data directory {} holds no keyspace directory any more",
            e.data.display()
        )),
        "{line}"
    );
    assert_eq!(summary["versions_ended"], 0, "{summary:#}");
    assert_eq!(live_now(&e).len(), recorded);
}

/// Every table directory of a keyspace gone at once while its keyspace directory stays:
/// an error for that keyspace, nothing of it ended, and the other keyspace backed up.
#[test]
fn every_table_directory_of_a_keyspace_gone_at_once_deletes_nothing() {
    let mut e = Env::new();
    let recorded = backed_up_node(&mut e);
    let ks1 = e.data.join("ks1");
    let mut kept = 0;
    for t in fs::read_dir(&ks1).unwrap() {
        let t = t.unwrap().path();
        kept += files_below(&t);
        fs::remove_dir_all(t).unwrap();
    }
    let mut t4 = e.node.create_table("ks2", "t4", FixtureFormat::Nb);
    t4.flush().run().unwrap();

    let (line, summary) = failed_backup(&e);
    assert!(
        line.contains(&format!(
            "keyspace directory {} holds no table directory any more",
            ks1.display()
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("{kept} backed-up file(s) there kept")),
        "{line}"
    );
    assert_eq!(summary["versions_ended"], 0, "{summary:#}");
    assert_eq!(
        live_now(&e).len(),
        recorded + files_below(t4.path()),
        "ks1 kept, the new ks2.t4 recorded"
    );
}

/// No regression: a table directory removed while its siblings remain is a dropped table,
/// and a keyspace directory removed while others remain a dropped keyspace; both end.
#[test]
fn a_dropped_table_and_a_dropped_keyspace_are_recorded_as_ended() {
    let mut e = Env::new();
    let recorded = backed_up_node(&mut e);
    let t1 = fs::read_dir(e.data.join("ks1"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("t1-"))
        .unwrap();
    let t1_files = files_below(&t1);
    fs::remove_dir_all(&t1).unwrap();
    let run = e.backup(&["--json"]);
    run.succeeds();
    assert_eq!(run.json()["versions_ended"], t1_files as u64);

    let ks2_files = files_below(&e.data.join("ks2"));
    fs::remove_dir_all(e.data.join("ks2")).unwrap();
    let run = e.backup(&["--json"]);
    run.succeeds();
    assert_eq!(run.json()["versions_ended"], ks2_files as u64);
    assert_eq!(live_now(&e).len(), recorded - t1_files - ks2_files);
}

/// A table directory that cannot be listed (EACCES: mode 000, and for root the binary runs
/// without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH): exit 1 naming it and what to check,
/// its files' versions stay open, the rest is backed up; readable again, all is well.
/// `inspect` still reports it among the skipped entries.
#[test]
fn an_unreadable_table_directory_fails_the_backup_and_deletes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mut e = Env::new();
    let recorded = backed_up_node(&mut e);
    let t3 = fs::read_dir(e.data.join("ks2"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let restricted = |args: &[&str]| {
        let mut cmd = support::cli::tablesafe(&e.root.join("home"));
        cmd.args(args);
        Env::run_cmd(without_dac_override(cmd))
    };
    fs::set_permissions(&t3, fs::Permissions::from_mode(0o000)).unwrap();
    // And in a readable table directory, one SSTable's TOC.txt that cannot be read.
    let t1 = fs::read_dir(e.data.join("ks1"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("t1-"))
        .unwrap();
    let toc = t1.join("nb-1-big-TOC.txt");
    fs::set_permissions(&toc, fs::Permissions::from_mode(0o000)).unwrap();
    let mut probe = std::process::Command::new("ls");
    probe.arg(&t3);
    // Unless `ls` itself is refused, this process cannot make a directory unreadable.
    if !without_dac_override(probe)
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        fs::set_permissions(&t3, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&toc, fs::Permissions::from_mode(0o644)).unwrap();
        eprintln!(
            "skipped: cannot drop CAP_DAC_OVERRIDE here (no CAP_SETPCAP?), so no directory is unreadable to root"
        );
        return;
    }
    let (data, repo, catalog) = (
        e.data.to_str().unwrap(),
        e.repo_url.as_str(),
        e.catalog.to_str().unwrap(),
    );
    let run = restricted(&[
        "backup",
        "--data-dir",
        data,
        "--repo",
        repo,
        "--catalog",
        catalog,
        "--node",
        "n1",
        "--json",
    ]);
    let line = run.fails_with(1).to_string();
    let inspect = restricted(&["inspect", data, "--json"]);
    fs::set_permissions(&t3, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&toc, fs::Permissions::from_mode(0o644)).unwrap();
    let absent = run.json()["absent"].clone();
    assert_eq!(absent.as_array().unwrap().len(), 2, "{absent:#}");
    assert!(
        absent[0]
            .as_str()
            .unwrap()
            .contains(&format!("cannot read {}", toc.display())),
        "{absent:#}"
    );

    let dir_line = absent[1].as_str().unwrap();
    assert!(
        dir_line.starts_with(&format!("cannot read {}", t3.display())),
        "{absent:#}"
    );
    assert!(dir_line.contains("Permission denied"), "{dir_line}");
    assert!(
        dir_line.contains("check permissions and the disk"),
        "{dir_line}"
    );
    assert!(
        line.starts_with("error: cannot read") && line.contains("(and 1 more, listed above)"),
        "{line}"
    );
    assert_eq!(run.json()["versions_ended"], 0, "{}", run.stdout);
    assert_eq!(live_now(&e).len(), recorded);
    assert!(
        inspect.stdout.contains(&*t3.to_string_lossy()) && inspect.stdout.contains("cannot"),
        "inspect reports the unreadable directory: {}",
        inspect.stdout
    );
    let again = e.backup(&["--json"]);
    again.succeeds();
    assert_eq!(again.json()["versions_ended"], 0);
}

/// The data directory on another filesystem than at the last backup (its disk unmounted
/// and Cassandra started afresh on the mount point, writing a new system keyspace there):
/// exit 1, nothing ended and nothing of the stranger recorded. With a real tmpfs mount
/// where the test may mount (root with CAP_SYS_ADMIN); otherwise the remembered device id
/// is changed in the catalog and the data directory swapped for a fresh one. The same
/// filesystem under a new device number (files exactly as recorded) is accepted.
#[test]
fn a_data_directory_on_another_filesystem_fails_the_backup_and_deletes_nothing() {
    let mut e = Env::new();
    let recorded = backed_up_node(&mut e);
    let renumber = |e: &Env| {
        let db = rusqlite::Connection::open(&e.catalog).unwrap();
        let n = db
            .execute("UPDATE data_dir_devices SET dev = dev + 1", [])
            .unwrap();
        assert_eq!(n, 1, "the data directory's device is remembered");
    };
    // Same files, new device number: accepted, nothing ended.
    renumber(&e);
    let run = e.backup(&["--json"]);
    run.succeeds();
    assert_eq!(run.json()["versions_ended"], 0);

    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tablesafe-test"])
        .arg(&e.data)
        .status()
        .is_ok_and(|s| s.success());
    let away = e.root.join("data.away");
    if !mounted {
        eprintln!("cannot mount a tmpfs here (not root?): simulating the device change");
        renumber(&e);
        fs::rename(&e.data, &away).unwrap();
        fs::create_dir(&e.data).unwrap();
    }
    let mut fresh = Node::new(&e.data);
    let mut local = fresh.create_table("system", "local", FixtureFormat::Nb);
    local.flush().run().unwrap();

    let (line, summary) = failed_backup(&e);
    if mounted {
        assert!(
            std::process::Command::new("umount")
                .arg(&e.data)
                .status()
                .unwrap()
                .success()
        );
    } else {
        fs::remove_dir_all(&e.data).unwrap();
        fs::rename(&away, &e.data).unwrap();
    }
    assert!(
        line.contains(&format!(
            "data directory {} is not on the filesystem it was on at the last backup",
            e.data.display()
        )),
        "{line}"
    );
    assert!(line.contains("check that its disk is mounted"), "{line}");
    assert_eq!(summary["versions_ended"], 0, "{summary:#}");
    assert_eq!(summary["versions_started"], 0, "{summary:#}");
    assert_eq!(live_now(&e).len(), recorded);
    // The disk back: all is well, nothing ended.
    let back = e.backup(&["--json"]);
    back.succeeds();
    assert_eq!(back.json()["versions_ended"], 0);
}
