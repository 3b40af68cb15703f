//! Local catalogs are checked, not trusted: damaged rows are caught before restore or
//! gc act on them, `verify --catalog` compares them with the repository, a busy catalog
//! is waited on, and a blob verify finds missing or damaged is uploaded again by the
//! next backup. Through the real binary on `file://` repositories.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use support::backed_up::{BackedUpNode, NODE};

/// A node backed up once (`tests/support/backed_up.rs`).
type Env = BackedUpNode;

impl Env {
    /// The all-nodes view gc and verify keep beside the node's catalog.
    fn all_nodes_catalog(&self) -> PathBuf {
        self.root.join("catalog/n1.all-nodes.db")
    }
}

/// Files below `dir`, relative to it, with the BLAKE3 of their contents.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                let hash = blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string();
                out.push((rel, hash));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn forty_commands_starting_at_once_never_report_a_damaged_catalog() {
    let env = Env::new();
    for round in 0..2 {
        // Round 1: a catalog that does not exist yet, which the readers create together.
        let catalog = env.root.join(format!("catalog/round{round}.db"));
        if round == 0 {
            fs::copy(&env.catalog, &catalog).unwrap();
        }
        let children: Vec<_> = (0..40)
            .map(|i| {
                let mut c = support::cli::tablesafe(&env.root.join("home"));
                c.arg("--repo")
                    .arg(env.repo_url())
                    .arg("--catalog")
                    .arg(&catalog);
                c.args(["--node", NODE]);
                if round == 0 && i % 4 == 0 {
                    c.arg("backup").arg("--data-dir").arg(&env.data);
                } else {
                    c.args(["snapshot", "list"]);
                }
                c.stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let text = support::cli::text(&out);
            assert!(
                !text.contains("damaged") && !text.contains("aside"),
                "round {round}: {text}"
            );
            assert!(
                out.status.success() || text.contains("in use by another tablesafe process"),
                "round {round}: only a second writer may be refused: {text}"
            );
        }
        assert!(catalog.exists());
    }
}

#[test]
fn a_command_started_while_another_holds_the_catalog_locked_waits_instead_of_calling_it_damaged() {
    let env = Env::new();
    // Another process holding SQLite's lock longer than a default busy timeout (5 s).
    let holder = rusqlite::Connection::open(&env.catalog).unwrap();
    holder
        .execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; DELETE FROM daemon_status;",
        )
        .unwrap();
    let reader = env
        .command()
        .args(["snapshot", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(7));
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let out = reader.wait_with_output().unwrap();
    let text = support::cli::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("damaged"), "{text}");
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

/// Changes rows of a catalog behind tablesafe's back, as a damaged disk page would.
fn damage(catalog: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(catalog).unwrap();
    assert!(conn.execute(sql, []).unwrap() > 0, "{sql} changed nothing");
}

#[test]
fn restore_refuses_a_catalog_whose_path_string_was_damaged_and_writes_nothing_under_it() {
    let env = Env::new();
    damage(
        &env.catalog,
        "UPDATE files SET rel_path = replace(rel_path, 'Data.db', 'Eata.db') WHERE rel_path LIKE '%Data.db'",
    );
    let to = env.root.join("restored");
    let out = env.run(&["restore", "--at", "now", "--to", to.to_str().unwrap()]);
    let line = one_line_failure(&out);
    assert!(
        line.contains("damaged row") && line.contains("catalog rebuild"),
        "{line}"
    );
    let written: Vec<String> = if to.exists() {
        tree(&to).into_iter().map(|(p, _)| p).collect()
    } else {
        Vec::new()
    };
    assert!(!written.iter().any(|p| p.contains("Eata")), "{written:?}");

    // Rebuilt from the repository's logs, the catalog restores the real files.
    fs::remove_file(&env.catalog).unwrap();
    support::cli::ok(env.run(&["catalog", "rebuild"]));
    support::cli::ok(env.run(&["restore", "--at", "now", "--to", to.to_str().unwrap()]));
    assert_eq!(tree(&to), tree(&env.data));
}

#[test]
fn gc_never_deletes_a_blob_because_a_hash_in_its_all_nodes_view_was_damaged() {
    let env = Env::new();
    let gc = ["gc", "--keep-last", "1", "--grace", "0s"];
    support::cli::ok(env.run(&gc));
    let blobs_before = tree(&env.repo.join("blobs")).len();
    // One flipped bit in the hash of the Data.db version.
    {
        let conn = rusqlite::Connection::open(env.all_nodes_catalog()).unwrap();
        let (file_id, from, mut hash): (i64, i64, Vec<u8>) = conn
            .query_row(
                "SELECT v.file_id, v.valid_from, v.hash FROM versions v JOIN files f ON f.id = v.file_id
                 WHERE f.rel_path LIKE '%Data.db'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        hash[7] ^= 0x10;
        conn.execute(
            "UPDATE versions SET hash = ?3 WHERE file_id = ?1 AND valid_from = ?2",
            rusqlite::params![file_id, from, hash],
        )
        .unwrap();
    }
    for _ in 0..2 {
        let line = one_line_failure(&env.run(&gc));
        assert!(line.contains("damaged row"), "{line}");
    }
    assert_eq!(tree(&env.repo.join("blobs")).len(), blobs_before);

    // The view is rebuilt from the repository once deleted, as the message says.
    fs::remove_file(env.all_nodes_catalog()).unwrap();
    support::cli::ok(env.run(&gc));
    support::cli::ok(env.run(&gc));
    let to = env.root.join("restored");
    support::cli::ok(env.run(&["restore", "--at", "now", "--to", to.to_str().unwrap()]));
    assert_eq!(tree(&to), tree(&env.data));
}

/// The object of the blob holding `file`'s content.
fn blob_object(env: &Env, file: &Path) -> PathBuf {
    let hash = blake3::hash(&fs::read(file).unwrap()).to_hex();
    let object = env.repo.join("blobs").join(&hash[..2]).join(hash.as_str());
    assert!(
        object.exists(),
        "{} is not {}",
        object.display(),
        file.display()
    );
    object
}

/// The node's live files whose name ends with `suffix`.
fn live_file(env: &Env, suffix: &str) -> PathBuf {
    let mut stack = vec![env.data.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("snapshots") && !p.ends_with("backups") {
                    stack.push(p);
                }
            } else if p.to_string_lossy().ends_with(suffix) {
                return p;
            }
        }
    }
    panic!("no file *{suffix} under {}", env.data.display());
}

#[test]
fn a_blob_verify_finds_missing_or_damaged_is_uploaded_again_by_the_next_backup() {
    let env = Env::new();
    let data = blob_object(&env, &live_file(&env, "-Data.db"));
    let index = blob_object(&env, &live_file(&env, "-Index.db"));
    fs::remove_file(&data).unwrap();
    let mut bytes = fs::read(&index).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&index, bytes).unwrap();

    let line = one_line_failure(&env.run(&["verify", "--read-data"]));
    assert!(
        line.contains("2 blob(s)")
            && line.contains("recorded as gone")
            && line.contains("next `tablesafe backup`"),
        "{line}"
    );
    // The damaged object is kept, out of the way.
    assert_eq!(tree(&env.repo.join("damaged")).len(), 1);

    let backed_up = String::from_utf8(support::cli::ok(env.backup(&[])).stdout).unwrap();
    assert!(data.exists() && index.exists(), "{backed_up}");
    support::cli::ok(env.run(&["verify", "--read-data"]));
    let to = env.root.join("restored");
    support::cli::ok(env.run(&["restore", "--at", "now", "--to", to.to_str().unwrap()]));
    assert_eq!(tree(&to), tree(&env.data));
}

#[test]
fn verify_check_catalog_reports_each_row_that_differs_from_the_repositorys_logs() {
    let env = Env::new();
    support::cli::ok(env.run(&["gc", "--keep-last", "1", "--grace", "1h"]));
    let out = support::cli::ok(env.run(&["verify", "--check-catalog"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 local catalog(s) match"), "{stdout}");

    damage(
        &env.catalog,
        "UPDATE files SET rel_path = replace(rel_path, 'Data.db', 'Eata.db') WHERE rel_path LIKE '%Data.db'",
    );
    damage(
        &env.all_nodes_catalog(),
        "UPDATE snapshots SET time = time - 3600000000",
    );
    let out = env.run(&["verify", "--check-catalog"]);
    let line = one_line_failure(&out);
    assert!(
        line.contains("differs from the repository's logs"),
        "{line}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let own = format!("catalog {}: ", env.catalog.display());
    let view = format!("catalog {}: ", env.all_nodes_catalog().display());
    let has = |prefix: &str, what: &str| {
        stdout
            .lines()
            .any(|l| l.starts_with(prefix) && l.contains(what))
    };
    assert!(has(&own, "damaged row"), "{stdout}");
    assert!(
        has(&own, "only in the local catalog") && has(&own, "Eata.db"),
        "{stdout}"
    );
    assert!(
        has(&own, "only in the repository's logs") && has(&own, "Data.db"),
        "{stdout}"
    );
    assert!(has(&view, "snapshot only in the local catalog"), "{stdout}");
    assert!(
        has(&view, "snapshot only in the repository's logs"),
        "{stdout}"
    );
    // Nothing else differs, and no scratch catalog is left behind.
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    let left: Vec<_> = fs::read_dir(env.root.join("catalog"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("verify"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_damaged_stat_cache_row_makes_the_file_be_read_again_not_recorded_with_another_hash() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let data = live_file(&env, "-Data.db");
    let index = live_file(&env, "-Index.db");
    // Each file's remembered hash replaced by the other's (both blobs exist).
    let conn = rusqlite::Connection::open(&env.catalog).unwrap();
    let hash_of = |p: &Path| -> Vec<u8> {
        conn.query_row(
            "SELECT hash FROM stat_cache WHERE ino = ?1",
            [fs::metadata(p).unwrap().ino() as i64],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (h_data, h_index) = (hash_of(&data), hash_of(&index));
    for (p, h) in [(&data, &h_index), (&index, &h_data)] {
        conn.execute(
            "UPDATE stat_cache SET hash = ?2 WHERE ino = ?1",
            rusqlite::params![fs::metadata(p).unwrap().ino() as i64, h],
        )
        .unwrap();
    }
    drop(conn);
    support::cli::ok(env.backup(&[]));
    let to = env.root.join("restored");
    support::cli::ok(env.run(&["restore", "--at", "now", "--to", to.to_str().unwrap()]));
    assert_eq!(tree(&to), tree(&env.data));
}
