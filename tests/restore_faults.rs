//! `tablesafe restore` when things go wrong: a bad point, missing and damaged blobs, a
//! target in the way, a running Cassandra, crafted catalog entries, symbolic links and a
//! full disk. The real binary, a real `file://` repository and real SQLite catalogs.
//!
//! Every failure must be one clear line on standard error with a non-zero exit code, and
//! must never leave an unverified byte at a final path, a `.partial` file, or anything
//! outside the target.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::cli::{ok, tablesafe, text};
use support::lifecycle::{Expected, FixtureFormat, Gen, Node, TableDir};
use tablesafe::catalog::{Batch, Catalog, Change, FileKey, mirror};
use tablesafe::store::{Repository, StoreOptions};
use tablesafe::timespec::{self, Micros};

/// Path relative to the data directory (or target) → (BLAKE3 hex, mtime µs).
type Tree = BTreeMap<String, (String, Micros)>;

const NODE: &str = "n1";

/// The command failed with exit code 1 and exactly one line on stderr, `error: …`;
/// returns that line.
#[track_caller]
fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", text(out));
    assert!(lines[0].starts_with("error: "), "{}", text(out));
    eprintln!("{}", lines[0]);
    lines[0].to_string()
}

fn mtime_micros(meta: &std::fs::Metadata) -> Micros {
    meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1_000
}

fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn file_entry(path: &Path) -> (String, Micros) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    (
        hash_hex(&bytes),
        mtime_micros(&std::fs::metadata(path).unwrap()),
    )
}

/// Every regular file below `root`, relative to it (symbolic links are not followed).
fn read_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    if !root.exists() {
        return tree;
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root).unwrap();
            tree.insert(rel.to_string_lossy().into_owned(), file_entry(entry.path()));
        }
    }
    tree
}

#[track_caller]
fn assert_same_tree(restored: &Tree, expected: &Tree, what: &str) {
    if restored == expected {
        return;
    }
    let mut diff = Vec::new();
    for (k, v) in expected {
        match restored.get(k) {
            None => diff.push(format!("missing    {k}")),
            Some(r) if r.0 != v.0 => diff.push(format!("content    {k}")),
            Some(r) if r.1 != v.1 => diff.push(format!("mtime      {k}: {} != {}", r.1, v.1)),
            _ => {}
        }
    }
    for k in restored.keys().filter(|k| !expected.contains_key(*k)) {
        diff.push(format!("unexpected {k}"));
    }
    panic!("{what}: the target differs:\n{}", diff.join("\n"));
}

fn partials(root: &Path) -> Vec<String> {
    read_tree(root)
        .into_keys()
        .filter(|k| k.ends_with(".partial"))
        .collect()
}

/// Live files of every complete SSTable of `tables`, relative to the data directory.
fn expected_live(data_dir: &Path, tables: &[TableDir]) -> Tree {
    let mut tree = Tree::new();
    for t in tables {
        let exp = t.expectation();
        let mut components = t.components();
        if !components.iter().any(|c| c == "TOC.txt") {
            components.push("TOC.txt".into());
        }
        for (base, s) in &exp.dirs[""].sstables {
            if s.state != Expected::Complete {
                continue;
            }
            for c in &components {
                let path = t.path().join(format!("{base}-{c}"));
                let rel = path.strip_prefix(data_dir).unwrap();
                tree.insert(rel.to_string_lossy().into_owned(), file_entry(&path));
            }
        }
    }
    tree
}

/// Every file present in `restored` has the expected content (it may lack files).
#[track_caller]
fn assert_nothing_wrong_in_place(restored: &Tree, expected: &Tree) {
    for (k, (hash, _)) in restored {
        let want = expected
            .get(k)
            .unwrap_or_else(|| panic!("unexpected file {k} in the target"));
        assert_eq!(
            &want.0, hash,
            "{k} holds bytes that are not the backed-up ones"
        );
    }
}

struct Env {
    tmp: tempfile::TempDir,
    data: PathBuf,
    repo: PathBuf,
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
            repo,
            catalog: tmp.path().join("catalog/n1.db"),
            data,
            tmp,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = tablesafe(self.tmp.path());
        c.arg("--repo")
            .arg(&self.url)
            .arg("--catalog")
            .arg(&self.catalog)
            .arg("--node")
            .arg(NODE);
        c
    }

    fn backup(&self) {
        self.backup_with(&[]);
    }

    fn backup_with(&self, extra: &[&str]) {
        ok(self
            .cmd()
            .args(["backup", "--init"])
            .args(extra)
            .arg("--data-dir")
            .arg(&self.data)
            .output()
            .unwrap());
    }

    fn snapshot(&self, name: &str) {
        ok(self
            .cmd()
            .args(["snapshot", "create", name, "--init", "--data-dir"])
            .arg(&self.data)
            .output()
            .unwrap());
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn restore(&self, at: &str, to: &Path, extra: &[&str]) -> Output {
        self.cmd()
            .args(["restore", "--at", at, "--to"])
            .arg(to)
            .args(extra)
            .output()
            .unwrap()
    }

    /// The stored blob of a local file's content.
    fn blob_file(&self, content_of: &Path) -> (String, PathBuf) {
        let hex = hash_hex(&std::fs::read(content_of).unwrap());
        let path = self.repo.join("blobs").join(&hex[..2]).join(&hex);
        assert!(path.is_file(), "no blob at {}", path.display());
        (hex, path)
    }

    fn remove_catalog(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.catalog.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

/// A node with a few tables (2.0, 2.2, 3.0, 4.0 and 5.0 formats), two SSTables each.
fn small_node(env: &Env) -> Vec<TableDir> {
    let mut node = Node::new(&env.data);
    let mut tables = Vec::new();
    for f in [
        FixtureFormat::Jb,
        FixtureFormat::La,
        FixtureFormat::Mc,
        FixtureFormat::Nb,
        FixtureFormat::Da,
    ] {
        let mut t = node.create_table(&format!("ks_{}", f.version()), "events", f);
        t.flush().run().unwrap();
        t.flush().run().unwrap();
        tables.push(t);
    }
    tables
}

fn now_text() -> String {
    timespec::format_precise(timespec::now())
}

#[test]
fn a_time_before_the_first_backup_names_the_restorable_range() {
    let env = Env::new();
    small_node(&env);
    env.backup();
    let (earliest, latest) = Catalog::open(&env.catalog)
        .unwrap()
        .history_bounds(NODE)
        .unwrap()
        .unwrap();
    let to = env.path("to");
    let out = env.restore("2001-02-03T04:05:06Z", &to, &[]);
    let line = one_line_error(&out);
    assert!(line.contains("is before the first backup"), "{line}");
    assert!(line.contains(&timespec::format_precise(earliest)), "{line}");
    assert!(line.contains(&timespec::format_precise(latest)), "{line}");
    assert!(!to.exists());
}

#[test]
fn an_unknown_snapshot_name_lists_the_nearest_names() {
    let env = Env::new();
    small_node(&env);
    env.snapshot("nightly-2026-11-21");
    env.snapshot("weekly-47");
    let to = env.path("to");
    let out = env.restore("nightly-2026-11-12", &to, &[]);
    let line = one_line_error(&out);
    assert!(
        line.contains("\"nightly-2026-11-12\" is neither a time nor a snapshot of node \"n1\""),
        "{line}"
    );
    assert!(
        line.contains("nearest snapshot names: nightly-2026-11-21"),
        "{line}"
    );
    assert!(line.contains("weekly-47"), "{line}");
    assert!(!to.exists());
    // The right name restores.
    ok(env.restore("nightly-2026-11-21", &to, &[]));
}

/// A missing blob, then a damaged one: the file is named with its blob and the point,
/// the others restore, nothing half-written stays; once the cause is fixed, `--resume`
/// fetches only what is missing.
#[test]
fn missing_and_damaged_blobs_fail_only_their_files() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let expected = expected_live(&env.data, &tables);
    let at = now_text();

    // A missing blob.
    let rel = |t: &TableDir, generation: u64, c: &str| {
        t.path()
            .strip_prefix(&env.data)
            .unwrap()
            .join(t.file_name(&Gen::Seq(generation), c))
            .to_string_lossy()
            .into_owned()
    };
    let victim = rel(&tables[3], 1, "Data.db");
    let (hex, blob) = env.blob_file(&env.data.join(&victim));
    let saved = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let to = env.path("missing");
    let out = env.restore(&at, &to, &[]);
    let line = one_line_error(&out);
    assert!(
        line.contains(&format!("1 of {} file(s)", expected.len())),
        "{line}"
    );
    assert!(line.contains(&victim), "names the file: {line}");
    assert!(line.contains(&hex), "names the blob: {line}");
    assert!(
        line.contains(&format!("point {at}")),
        "names the point: {line}"
    );
    assert!(line.contains("not found"), "{line}");
    assert!(line.contains("--resume"), "{line}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("FAILED: {victim}")),
        "{}",
        text(&out)
    );
    let restored = read_tree(&to);
    assert!(partials(&to).is_empty());
    let mut others = expected.clone();
    others.remove(&victim);
    assert_same_tree(&restored, &others, "every other file restored exactly");

    // The blob is back: --resume downloads just that file.
    std::fs::write(&blob, &saved).unwrap();
    let out = ok(env.restore(&at, &to, &["--resume", "--json"]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["downloaded"], 1, "{doc}");
    assert_eq!(
        doc["summary"]["already_in_place"].as_u64(),
        Some(expected.len() as u64 - 1)
    );
    assert_same_tree(&read_tree(&to), &expected, "to");

    // A damaged blob: one byte flipped in the middle.
    let victim2 = rel(&tables[1], 2, "Data.db");
    let (hex2, blob2) = env.blob_file(&env.data.join(&victim2));
    let mut bytes = std::fs::read(&blob2).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blob2, &bytes).unwrap();
    let to = env.path("damaged");
    let out = env.restore(&at, &to, &[]);
    let line = one_line_error(&out);
    assert!(line.contains(&victim2), "names the file: {line}");
    assert!(line.contains(&hex2), "names the blob: {line}");
    assert!(
        line.contains(&format!("point {at}")),
        "names the point: {line}"
    );
    assert!(line.contains("damaged"), "{line}");
    assert!(
        !to.join(&victim2).exists(),
        "a damaged file reached its final path"
    );
    assert!(partials(&to).is_empty());
    let mut others = expected.clone();
    others.remove(&victim2);
    assert_same_tree(&read_tree(&to), &others, "to");
}

/// Packs (`--pack-small-files`) as the catalog records them: pack hash → the content
/// hashes it holds.
fn packs(catalog: &Path) -> BTreeMap<String, Vec<String>> {
    let db = rusqlite::Connection::open(catalog).unwrap();
    let mut q = db.prepare("SELECT pack, hash FROM packed").unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let (pack, hash) = row.unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        out.entry(hex(&pack)).or_default().push(hex(&hash));
    }
    out
}

/// A pack missing, then damaged: only the files it holds fail, each named; the others
/// restore exactly; nothing unverified or half-written stays; once the pack is back,
/// `--resume` completes the target.
#[test]
fn a_missing_or_damaged_pack_fails_only_the_files_it_holds() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup_with(&["--pack-small-files"]);
    let expected = expected_live(&env.data, &tables);
    let at = now_text();
    let packs = packs(&env.catalog);
    // The pack holding the most of the expected files.
    let held = |members: &[String]| -> Vec<String> {
        expected
            .iter()
            .filter(|(_, (hash, _))| members.contains(hash))
            .map(|(rel, _)| rel.clone())
            .collect()
    };
    let (pack, members) = packs
        .iter()
        .max_by_key(|(_, m)| held(m).len())
        .expect("the backup made packs");
    let in_pack = held(members);
    assert!(in_pack.len() >= 2, "{in_pack:?}");
    let blob = env.repo.join("blobs").join(&pack[..2]).join(pack);
    let saved = std::fs::read(&blob).unwrap();

    // Missing.
    std::fs::remove_file(&blob).unwrap();
    let to = env.path("pack-missing");
    let out = env.restore(&at, &to, &[]);
    let line = one_line_error(&out);
    assert!(
        line.contains(&format!("{} of {} file(s)", in_pack.len(), expected.len())),
        "{line}"
    );
    assert!(line.contains(pack.as_str()), "names the pack: {line}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for rel in &in_pack {
        assert!(
            stdout.contains(&format!("FAILED: {rel}")),
            "{rel}: {stdout}"
        );
    }
    assert!(partials(&to).is_empty());
    let mut others = expected.clone();
    others.retain(|rel, _| !in_pack.contains(rel));
    assert_same_tree(&read_tree(&to), &others, "every file outside the pack");

    std::fs::write(&blob, &saved).unwrap();
    ok(env.restore(&at, &to, &["--resume"]));
    assert_same_tree(&read_tree(&to), &expected, "resumed with the pack back");

    // Damaged: a byte flipped in the middle of the pack.
    let mut bytes = saved.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();
    let to = env.path("pack-damaged");
    let out = env.restore(&at, &to, &[]);
    let line = one_line_error(&out);
    assert!(line.contains("could not be restored"), "{line}");
    let restored = read_tree(&to);
    assert_nothing_wrong_in_place(&restored, &expected);
    assert!(partials(&to).is_empty());
    let failed: Vec<&String> = expected
        .keys()
        .filter(|rel| !restored.contains_key(*rel))
        .collect();
    assert!(!failed.is_empty(), "a damaged pack failed nothing");
    for rel in &failed {
        assert!(in_pack.contains(rel), "{rel} failed but is not in the pack");
    }
    std::fs::write(&blob, &saved).unwrap();
    ok(env.restore(&at, &to, &["--resume"]));
    assert_same_tree(&read_tree(&to), &expected, "resumed with the pack mended");
}

#[test]
fn a_target_that_is_not_empty_needs_resume_or_overwrite() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let expected = expected_live(&env.data, &tables);
    let at = now_text();
    let to = env.path("to");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("notes.txt"), b"operator's file").unwrap();
    let before = read_tree(&to);

    let line = one_line_error(&env.restore(&at, &to, &[]));
    assert!(line.contains("is not empty"), "{line}");
    assert!(
        line.contains("--resume") && line.contains("--overwrite"),
        "{line}"
    );
    assert_same_tree(&read_tree(&to), &before, "nothing written");

    // A planned file already there with other bytes: --resume refuses to replace it.
    let (rel, _) = expected.iter().next().unwrap();
    let wrong = to.join(rel);
    std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
    std::fs::write(&wrong, b"not the backed-up bytes").unwrap();
    let line = one_line_error(&env.restore(&at, &to, &["--resume"]));
    assert!(line.contains("exists with different content"), "{line}");
    assert!(line.contains("--overwrite"), "{line}");
    assert_eq!(std::fs::read(&wrong).unwrap(), b"not the backed-up bytes");

    // --overwrite replaces it and restores the rest; the operator's file stays.
    ok(env.restore(&at, &to, &["--overwrite"]));
    let mut want = expected.clone();
    want.insert("notes.txt".into(), before["notes.txt"].clone());
    assert_same_tree(&read_tree(&to), &want, "to");

    // --resume on a complete restore has nothing to download; a file with the right
    // bytes but another mtime (a run killed between placing it and setting its time)
    // gets its time back.
    let (rel, _) = expected.iter().nth(1).unwrap();
    std::fs::File::options()
        .write(true)
        .open(to.join(rel))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    assert_ne!(read_tree(&to), want);
    let out = ok(env.restore(&at, &to, &["--resume", "--json"]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["downloaded"], 0);
    assert_eq!(
        doc["summary"]["already_in_place"].as_u64(),
        Some(expected.len() as u64)
    );
    assert_same_tree(&read_tree(&to), &want, "to");
}

/// A fake Cassandra: a process whose command line names Cassandra's main class.
struct FakeCassandra(std::process::Child);

impl FakeCassandra {
    fn start(cwd: &Path, argv0: &str) -> FakeCassandra {
        // Owned by the guard at once, so it is killed and reaped on every path.
        let fake = FakeCassandra(
            Command::new("bash")
                .arg("-c")
                .arg(format!("exec -a '{argv0}' sleep 60"))
                .current_dir(cwd)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let cmdline = PathBuf::from(format!("/proc/{}/cmdline", fake.pid()));
        for _ in 0..500 {
            let now = std::fs::read(&cmdline).unwrap_or_default();
            if String::from_utf8_lossy(&now).contains("CassandraDaemon") {
                return fake;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fake Cassandra did not start");
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FakeCassandra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CASSANDRA_MAIN: &str = "org.apache.cassandra.service.CassandraDaemon";
const SYSTEM_LOCAL: &str = "system/local-7ad54392bcdd35a684174e047860b377";

#[test]
fn a_running_cassandras_data_directory_is_refused_unless_forced() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let expected = expected_live(&env.data, &tables);
    let at = now_text();

    // Cassandra runs in the target (its working directory).
    let to = env.path("live-cwd");
    std::fs::create_dir_all(to.join(SYSTEM_LOCAL)).unwrap();
    {
        let cassandra = FakeCassandra::start(&to, CASSANDRA_MAIN);
        let line = one_line_error(&env.restore(&at, &to, &["--resume"]));
        assert!(line.contains("running Cassandra node"), "{line}");
        assert!(line.contains(&format!("pid {}", cassandra.pid())), "{line}");
        assert!(line.contains("--force"), "{line}");
        assert!(read_tree(&to).is_empty(), "nothing written");
        let line = one_line_error(&env.restore(&at, &to, &["--resume", "--dry-run"]));
        assert!(line.contains("running Cassandra node"), "{line}");
        ok(env.restore(&at, &to, &["--resume", "--force"]));
        assert_same_tree(&read_tree(&to), &expected, "to");
    }

    // Cassandra names the target on its command line.
    let to = env.path("live-cmdline");
    std::fs::create_dir_all(to.join(SYSTEM_LOCAL)).unwrap();
    {
        let argv0 = format!(
            "java -Dcassandra.storagedir={} {CASSANDRA_MAIN}",
            to.display()
        );
        let cassandra = FakeCassandra::start(Path::new("/"), &argv0);
        let line = one_line_error(&env.restore(&at, &to, &["--resume"]));
        assert!(line.contains(&format!("pid {}", cassandra.pid())), "{line}");
        assert!(read_tree(&to).is_empty(), "nothing written");
    }

    // A Cassandra elsewhere (working directory /, as under systemd) is not this target's.
    let to = env.path("other-node");
    std::fs::create_dir_all(to.join(SYSTEM_LOCAL)).unwrap();
    {
        let _cassandra = FakeCassandra::start(Path::new("/"), CASSANDRA_MAIN);
        ok(env.restore(&at, &to, &["--resume"]));
        assert_same_tree(&read_tree(&to), &expected, "to");
    }
}

/// Catalog log entries whose paths escape the target, written into the repository as the
/// node's next batch: after the catalog is rebuilt from the repository, a restore that
/// meets one refuses and writes nothing.
#[test]
fn crafted_catalog_paths_cannot_escape_the_target() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let catalog = Catalog::open(&env.catalog).unwrap();
    let real = catalog.live_at(NODE, timespec::now()).unwrap().remove(0);
    let last_seq = catalog.last_seq(NODE).unwrap();
    drop(catalog);
    let id = tables[3].table_id();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let key = |keyspace: &str, table_id: &str, rel: &str| FileKey {
        data_dir: real.key.data_dir.clone(),
        keyspace: keyspace.into(),
        table: "events".into(),
        table_id: table_id.into(),
        rel_path: rel.into(),
    };
    let abs_file = outside.join("evil-abs");
    let variants = [
        key("ks_nb", &id, "../../../etc/evil"),
        key("..", &id, "nb-9-big-Data.db"),
        key("ks_nb", &id, &abs_file.to_string_lossy()),
        key(&outside.to_string_lossy(), "", "nb-9-big-Data.db"),
        key("ks_nb", "../../../../outside", "nb-9-big-Data.db"),
    ];
    // Each crafted path is live alone during its own window of time.
    let base = timespec::now() + 1_000;
    let mut changes = Vec::new();
    for (i, k) in variants.iter().enumerate() {
        let at = base + 1_000 * i as i64;
        changes.push(Change::Start {
            key: k.clone(),
            hash: real.hash,
            size: real.size,
            mtime: real.mtime,
            at,
        });
        changes.push(Change::End {
            key: k.clone(),
            at: at + 500,
        });
    }
    let batch = Batch {
        node: NODE.into(),
        seq: last_seq + 1,
        time: base,
        changes,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let repo = Repository::open(&env.url, &StoreOptions::default())
            .await
            .unwrap();
        repo.put_object(
            &mirror::log_key(NODE, batch.seq),
            bytes::Bytes::from(batch.encode().unwrap()),
        )
        .await
        .unwrap();
    });
    env.remove_catalog();
    std::thread::sleep(Duration::from_millis(20));

    // Deep enough that `../../../` from a table directory is still inside the temp dir.
    let to = env.path("a/b/c/to");
    for (i, k) in variants.iter().enumerate() {
        let at = timespec::format_precise(base + 1_000 * i as i64 + 100);
        let out = env.restore(&at, &to, &[]);
        let line = one_line_error(&out);
        assert!(
            line.contains("refusing to restore") && line.contains("crafted or damaged"),
            "variant {k:?}: {line}"
        );
        assert!(!to.exists(), "variant {k:?} created the target");
        let out = env.restore(&at, &to, &["--dry-run"]);
        let line = one_line_error(&out);
        assert!(
            line.contains("refusing to restore"),
            "dry run, {k:?}: {line}"
        );
    }
    // Nothing anywhere but where it was.
    for entry in walkdir::WalkDir::new(env.tmp.path()) {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy();
        assert!(!name.contains("evil"), "{}", entry.path().display());
        assert!(
            !entry.path().starts_with(&outside) || entry.path() == outside,
            "written outside: {}",
            entry.path().display()
        );
    }
    assert!(!Path::new("/etc/evil").exists());
    assert!(!env.path("a/b/etc").exists() && !env.path("a/b/c/etc").exists());
    // Before the crafted entries, the node's real files still restore.
    let before = timespec::format_precise(base - 500);
    ok(env.restore(&before, &to, &[]));
    assert_same_tree(&read_tree(&to), &expected_live(&env.data, &tables), "to");
}

#[test]
fn symbolic_links_in_the_target_are_not_followed() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let at = now_text();
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();

    // A keyspace directory that is a link to another directory.
    let to = env.path("to");
    std::fs::create_dir_all(&to).unwrap();
    std::os::unix::fs::symlink(&elsewhere, to.join("ks_nb")).unwrap();
    let line = one_line_error(&env.restore(&at, &to, &["--resume"]));
    assert!(line.contains("refusing to restore ks_nb/"), "{line}");
    assert!(
        line.contains(&format!(
            "{} in the target is a symbolic link",
            to.join("ks_nb").display()
        )),
        "{line}"
    );
    assert!(read_tree(&elsewhere).is_empty(), "written through the link");
    let line = one_line_error(&env.restore(&at, &to, &["--overwrite"]));
    assert!(line.contains("is a symbolic link"), "{line}");
    assert!(read_tree(&elsewhere).is_empty(), "written through the link");

    // A file that is a link to a file elsewhere.
    let to = env.path("to2");
    let t = &tables[1];
    let dir = to.join(t.path().strip_prefix(&env.data).unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let victim = elsewhere.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let name = t.file_name(&Gen::Seq(1), "Data.db");
    std::os::unix::fs::symlink(&victim, dir.join(&name)).unwrap();
    for mode in ["--resume", "--overwrite"] {
        let line = one_line_error(&env.restore(&at, &to, &[mode]));
        assert!(line.contains("is a symbolic link"), "{mode}: {line}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
    assert!(
        std::fs::symlink_metadata(dir.join(&name))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// A small tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes a complete `nb` SSTable whose components have the given bytes.
fn write_sstable(table_dir: &Path, generation: u32, components: &[(&str, Vec<u8>)]) {
    let base = format!("nb-{generation}-big");
    let mut toc = String::new();
    for (c, bytes) in components {
        std::fs::write(table_dir.join(format!("{base}-{c}")), bytes).unwrap();
        toc.push_str(c);
        toc.push('\n');
    }
    let data = &components.iter().find(|(c, _)| *c == "Data.db").unwrap().1;
    std::fs::write(
        table_dir.join(format!("{base}-Digest.crc32")),
        crc32fast::hash(data).to_string(),
    )
    .unwrap();
    toc.push_str("Digest.crc32\nTOC.txt\n");
    std::fs::write(table_dir.join(format!("{base}-TOC.txt")), toc).unwrap();
}

fn random_bytes(len: usize, seed: &str) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Restoring more than the target's filesystem holds: a clear "disk is full" error, no
/// `.partial` file, no short file at a final path; with more room, `--resume` finishes.
#[test]
fn a_full_disk_fails_cleanly_and_resume_finishes() {
    let env = Env::new();
    let table = env.data.join("ks/big-0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&table).unwrap();
    // Two SSTables sharing a 700 KiB Index.db: one download, one local copy, 1.4 MiB.
    let index = random_bytes(700 * 1024, "shared index");
    for generation in 1..=2 {
        write_sstable(
            &table,
            generation,
            &[
                (
                    "Data.db",
                    random_bytes(20 * 1024, &format!("data {generation}")),
                ),
                ("Index.db", index.clone()),
                (
                    "Statistics.db",
                    random_bytes(3000, &format!("stats {generation}")),
                ),
            ],
        );
    }
    env.backup();
    let mut expected = Tree::new();
    for entry in std::fs::read_dir(&table).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(&env.data).unwrap();
        expected.insert(rel.to_string_lossy().into_owned(), file_entry(&path));
    }
    let total: u64 = expected
        .keys()
        .map(|k| std::fs::metadata(env.data.join(k)).unwrap().len())
        .sum();
    assert!(total > 1024 * 1024);
    let at = now_text();

    let Some(mount) = Tmpfs::mount(&env.path("small"), "1m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let to = mount.0.join("to");
    let out = env.restore(&at, &to, &["--parallel", "1"]);
    let line = one_line_error(&out);
    assert!(line.contains("disk is full"), "{line}");
    assert!(line.contains("--resume"), "{line}");
    assert!(partials(&to).is_empty(), "left: {:?}", partials(&to));
    let restored = read_tree(&to);
    assert!(restored.len() < expected.len());
    assert_nothing_wrong_in_place(&restored, &expected);

    mount.resize("4m");
    let out = ok(env.restore(&at, &to, &["--resume", "--json"]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["summary"]["already_in_place"].as_u64().unwrap() > 0,
        "{doc}"
    );
    assert_same_tree(&read_tree(&to), &expected, "to");
    assert!(partials(&to).is_empty());
}

/// The same with the files in one pack: the disk fills while the pack is split, the file
/// being written fails and is removed, the ones already placed are whole, and `--resume`
/// with more room finishes.
#[test]
fn a_full_disk_while_a_pack_is_split_fails_cleanly_and_resume_finishes() {
    let env = Env::new();
    let table = env.data.join("ks/packed-0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&table).unwrap();
    // Three SSTables of small files: one pack of ~1.2 MiB, more than the target holds.
    for generation in 1..=3 {
        write_sstable(
            &table,
            generation,
            &[
                (
                    "Data.db",
                    random_bytes(400 * 1024, &format!("data {generation}")),
                ),
                (
                    "Statistics.db",
                    random_bytes(3000, &format!("stats {generation}")),
                ),
            ],
        );
    }
    env.backup_with(&["--pack-small-files"]);
    assert_eq!(packs(&env.catalog).len(), 1, "one pack");
    let mut expected = Tree::new();
    for entry in std::fs::read_dir(&table).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(&env.data).unwrap();
        expected.insert(rel.to_string_lossy().into_owned(), file_entry(&path));
    }
    let at = now_text();

    let Some(mount) = Tmpfs::mount(&env.path("small"), "1m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let to = mount.0.join("to");
    let out = env.restore(&at, &to, &[]);
    let line = one_line_error(&out);
    assert!(line.contains("disk is full"), "{line}");
    assert!(partials(&to).is_empty(), "left: {:?}", partials(&to));
    let restored = read_tree(&to);
    assert!(restored.len() < expected.len());
    assert_nothing_wrong_in_place(&restored, &expected);

    mount.resize("4m");
    ok(env.restore(&at, &to, &["--resume"]));
    assert_same_tree(&read_tree(&to), &expected, "to");
    assert!(partials(&to).is_empty());
}

/// The quarantine is never made where Cassandra would read it; one cut short (an entry
/// that cannot be moved: here a mount point) stops the restore with one line naming the
/// quarantine that holds what was moved, and a rerun finishes it.
#[test]
fn a_quarantine_refused_or_cut_short_says_where_everything_is() {
    let env = Env::new();
    let tables = small_node(&env);
    env.backup();
    let expected = expected_live(&env.data, &tables);
    let at = now_text();
    let table = tables[3]
        .path()
        .strip_prefix(&env.data)
        .unwrap()
        .to_path_buf();

    // A target inside a Cassandra data directory: its parent would look like a keyspace.
    let cassandra_data = env.path("cassandra-data");
    std::fs::create_dir_all(cassandra_data.join("system_schema")).unwrap();
    let to = cassandra_data.join("restore");
    std::fs::create_dir_all(to.join(&table)).unwrap();
    std::fs::write(to.join(&table).join("nb-99-big-Data.db"), b"newer").unwrap();
    let line = one_line_error(&env.restore(&at, &to, &["--overwrite"]));
    assert!(line.contains("--quarantine DIR"), "{line}");
    assert_eq!(
        std::fs::read(to.join(&table).join("nb-99-big-Data.db")).unwrap(),
        b"newer"
    );
    let q = env.path("q");
    let out = ok(env.restore(
        &at,
        &to,
        &["--overwrite", "--quarantine", q.to_str().unwrap()],
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&*q.canonicalize().unwrap().to_string_lossy())
    );
    assert_same_tree(&read_tree(&to), &expected, "restored");
    let moved = read_tree(&q);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        moved
            .keys()
            .all(|k| k.ends_with(&format!("{}/nb-99-big-Data.db", table.display())))
    );

    // An entry that cannot be renamed (a mount point), after one that can.
    let to = env.path("to");
    ok(env.restore(&at, &to, &[]));
    std::fs::write(to.join(&table).join("aa-extra"), b"extra").unwrap();
    let Some(mount) = Tmpfs::mount(&to.join(&table).join("zz-mounted"), "1m") else {
        eprintln!("cannot mount a tmpfs here: the cut-short half of this test is skipped");
        return;
    };
    std::fs::write(to.join(&table).join("zz-mounted/inside"), b"inside").unwrap();
    let line = one_line_error(&env.restore(&at, &to, &["--overwrite"]));
    assert!(
        line.contains("the 1 entries moved before are in "),
        "{line}"
    );
    assert!(line.contains("run again with --overwrite"), "{line}");
    let first = PathBuf::from(
        line.split("moved before are in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap(),
    );
    assert!(
        first.starts_with(env.tmp.path().canonicalize().unwrap()),
        "{line}"
    );
    assert_eq!(
        std::fs::read(first.join(&table).join("aa-extra")).unwrap(),
        b"extra"
    );
    drop(mount);
    let out = ok(env.restore(&at, &to, &["--overwrite", "--json"]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = PathBuf::from(doc["summary"]["quarantine"].as_str().unwrap());
    assert!(second.join(&table).join("zz-mounted").is_dir());
    assert_same_tree(&read_tree(&to), &expected, "restored after the rerun");
}
