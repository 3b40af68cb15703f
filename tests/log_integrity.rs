//! The repository's logs (`nodes/<node>/log/<seq>`, `gc/log/<seq>`) and its `config`
//! are verified like data, through the real binary on `file://` repositories: damage is
//! caught and named, a stray file is ignored, a lost batch is put back by its writer,
//! the first log format still reads, and a catalog behind its own log catches up.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::backed_up::{BackedUpNode, NODE};
use tablesafe::catalog::{Batch, Catalog};
use tablesafe::timespec;

/// A node backed up once (`tests/support/backed_up.rs`): its log holds batch 1.
type Env = BackedUpNode;

impl Env {
    /// A new SSTable, then a backup: one more batch.
    fn flush_and_backup(&mut self) {
        self.table.flush().run().unwrap();
        support::cli::ok(self.backup(&[]));
    }

    /// Restores "now" into `to` with a catalog of its own (none yet: rebuilt from the
    /// repository, as after losing the host).
    fn restore_elsewhere(&self, to: &Path) -> Output {
        self.command_with(&self.root.join("dr/n1.db"))
            .args(["restore", "--at", "now", "--to"])
            .arg(to)
            .output()
            .unwrap()
    }

    /// How many batches the node's log holds.
    fn batches(&self) -> u64 {
        fs::read_dir(self.repo.join(format!("nodes/{NODE}/log")))
            .unwrap()
            .count() as u64
    }

    fn log(&self, seq: u64) -> PathBuf {
        self.repo.join(format!("nodes/{NODE}/log/{seq:020}"))
    }

    /// Data-relative paths live now, as the writer's catalog has them.
    fn live_files(&self) -> BTreeSet<String> {
        Catalog::open(&self.catalog)
            .unwrap()
            .live_at(NODE, timespec::now())
            .unwrap()
            .iter()
            .map(|v| v.key.data_relative_path())
            .collect()
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

fn files(base: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    if base.exists() {
        walk(base, base, &mut out);
    }
    out
}

/// One flipped bit in a file name inside a log object (it sits there as zstd literals,
/// `Data.db` → `Eata.db`) is caught by `catalog rebuild`, `verify --read-data`, and a
/// restore that rebuilds its catalog, each naming the object; nothing is restored under
/// the wrong name.
#[test]
fn a_flipped_bit_in_a_log_object_stops_rebuild_verify_and_restore_naming_the_object() {
    let mut env = Env::new();
    // A log object where zstd kept `Data.db` as plain literals (not Huffman-coded).
    let (seq, mut bytes, at) = (0..8)
        .find_map(|_| {
            let found = (1..=env.batches()).find_map(|seq| {
                let bytes = fs::read(env.log(seq)).unwrap();
                let at = bytes.windows(7).position(|w| w == b"Data.db")?;
                Some((seq, bytes, at))
            });
            if found.is_none() {
                env.flush_and_backup();
            }
            found
        })
        .expect("a log object holding a file name as plain literals");
    bytes[at] ^= 0x01;
    fs::write(env.log(seq), &bytes).unwrap();
    let named = format!("nodes/{NODE}/log/{seq:020}");

    let line = one_line_failure(&env.run(&["catalog", "rebuild"]));
    assert!(line.contains(&named) && line.contains("damaged"), "{line}");

    let line = one_line_failure(&env.run(&["verify", "--read-data"]));
    assert!(line.contains(&named) && line.contains("damaged"), "{line}");

    let to = env.root.join("restored");
    let line = one_line_failure(&env.restore_elsewhere(&to));
    assert!(line.contains(&named), "{line}");
    assert!(
        files(&to).iter().all(|f| !f.contains("Eata")),
        "{:?}",
        files(&to)
    );
}

/// A file an operator left in a log directory (sorting before the first batch) is
/// ignored with a warning naming it: verify, rebuild, backup and restore all work.
#[test]
fn a_stray_file_in_a_log_directory_is_ignored_with_a_warning() {
    let mut env = Env::new();
    for stray in [
        format!("nodes/{NODE}/log/0-copy-of-batch-1"),
        "gc/log/notes.txt".to_string(),
    ] {
        let path = env.repo.join(stray);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"not a batch").unwrap();
    }
    let out = support::cli::ok(env.run(&["verify"]));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("0-copy-of-batch-1") && said.contains("not a batch number"),
        "{}",
        support::cli::text(&out)
    );
    env.flush_and_backup();
    support::cli::ok(env.run(&["catalog", "rebuild"]));
    let to = env.root.join("restored");
    support::cli::ok(env.restore_elsewhere(&to));
    assert_eq!(files(&to), env.live_files());
    support::cli::ok(env.run(&["verify", "--read-data"]));
}

/// A log object deleted from the repository, or cut short, is named by verify with
/// what to do; the next backup of the node puts it back from its catalog, and verify is
/// clean again.
#[test]
fn a_log_object_lost_or_cut_short_is_put_back_by_the_next_backup() {
    let mut env = Env::new();
    env.flush_and_backup();
    env.flush_and_backup();
    support::cli::ok(env.run(&["verify"]));
    let (first, second) = (fs::read(env.log(1)).unwrap(), fs::read(env.log(2)).unwrap());

    fs::remove_file(env.log(1)).unwrap();
    fs::write(env.log(2), &second[..second.len() / 2]).unwrap();
    let line = one_line_failure(&env.run(&["verify"]));
    assert!(
        line.contains(&format!("nodes/{NODE}/log/{:020}", 1))
            && line.contains("missing")
            && line.contains("tablesafe backup"),
        "{line}"
    );

    let out = support::cli::ok(env.backup(&[]));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("had lost") && said.contains("held a damaged copy"),
        "{}",
        support::cli::text(&out)
    );
    assert_eq!(fs::read(env.log(1)).unwrap(), first);
    assert_eq!(fs::read(env.log(2)).unwrap(), second);
    support::cli::ok(env.run(&["verify", "--read-data"]));
}

/// Logs are written with a checksum (format 2), and logs of the first format (what
/// tablesafe wrote before: magic `TSLOG\0\0\x01`, zstd of bincode, no checksum) are
/// still read: rebuild, verify and restore work on a repository holding both.
#[test]
fn logs_are_written_with_a_checksum_and_logs_of_the_first_format_still_read() {
    let mut env = Env::new();
    env.flush_and_backup();
    let v2 = fs::read(env.log(2)).unwrap();
    assert_eq!(&v2[..8], b"TSLOG\x00\x00\x02", "new logs carry a checksum");

    // Batch 1 as the first format wrote it, from the batch itself.
    let batch = Batch::decode(&fs::read(env.log(1)).unwrap()).unwrap();
    let body = bincode::serde::encode_to_vec(&batch, bincode::config::standard()).unwrap();
    let mut v1 = b"TSLOG\x00\x00\x01".to_vec();
    v1.extend_from_slice(&zstd::bulk::compress(&body, 3).unwrap());
    fs::write(env.log(1), &v1).unwrap();

    let before = env.live_files();
    support::cli::ok(env.run(&["catalog", "rebuild"]));
    assert_eq!(env.live_files(), before);
    support::cli::ok(env.run(&["verify", "--read-data"]));
    let to = env.root.join("restored");
    support::cli::ok(env.restore_elsewhere(&to));
    assert_eq!(files(&to), before);
}

/// A catalog put back to an older copy of itself (the host rolled back to a VM
/// snapshot, or its write-ahead log lost) while the repository holds its later
/// batches catches up from them at the next backup instead of refusing as if another
/// host wrote them; the newer copy, were it still running (a clone), is then refused.
#[test]
fn a_catalog_rolled_back_catches_up_from_its_own_batches_in_the_repository() {
    let mut env = Env::new();
    let aside = env.root.join("aside");
    let copy = |from: &Path, to: &Path| {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap();
            if !name.to_string_lossy().ends_with(".lock") {
                fs::copy(&path, to.join(name)).unwrap();
            }
        }
    };
    let catalog_dir = env.catalog.parent().unwrap().to_path_buf();
    let clear = |dir: &Path| {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".lock") {
                fs::remove_file(path).unwrap();
            }
        }
    };
    copy(&catalog_dir, &aside);
    let kept = env.batches();
    env.flush_and_backup();
    env.flush_and_backup();
    let lost = env.batches();
    assert!(lost > kept);
    let newer = env.root.join("newer");
    copy(&catalog_dir, &newer);
    clear(&catalog_dir);
    copy(&aside, &catalog_dir);

    env.table.flush().run().unwrap();
    let out = support::cli::ok(env.backup(&[]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("caught up"),
        "{}",
        support::cli::text(&out)
    );
    let after = env.batches();
    assert!(after > lost, "the next batches follow the caught-up ones");
    assert_eq!(
        Catalog::open(&env.catalog).unwrap().last_seq(NODE).unwrap(),
        after
    );
    assert!(env.log(after).exists());
    let live = env.live_files();
    assert_eq!(
        live.iter().filter(|p| p.ends_with("Data.db")).count(),
        4,
        "{live:?}"
    );
    support::cli::ok(env.run(&["verify", "--read-data"]));
    let to = env.root.join("restored");
    support::cli::ok(env.restore_elsewhere(&to));
    assert_eq!(files(&to), live);

    // The copy that wrote batches 2 and 3, still running elsewhere: refused.
    clear(&catalog_dir);
    copy(&newer, &catalog_dir);
    let line = one_line_failure(&env.backup(&[]));
    assert!(
        line.contains("also being backed up by another catalog")
            && line.contains(&format!("batch {} of its log", lost + 1)),
        "{line}"
    );
}

/// The repository's `config` carries a checksum: one changed character is refused
/// at open, naming `config`; a config from before checksums is still read.
#[test]
fn a_config_changed_after_init_is_refused_and_one_without_a_checksum_still_reads() {
    let env = Env::new();
    let path = env.repo.join("config");
    let good = fs::read_to_string(&path).unwrap();
    let config: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert!(
        config["checksum"]
            .as_str()
            .is_some_and(|c| c.starts_with("blake3:")),
        "{good}"
    );

    let created = config["created"].as_str().unwrap();
    let moved = created.replacen("20", "21", 1);
    fs::write(&path, good.replace(created, &moved)).unwrap();
    let line = one_line_failure(&env.run(&["verify"]));
    assert!(
        line.contains("config") && line.contains("checksum mismatch"),
        "{line}"
    );

    let mut old = config.clone();
    old.as_object_mut().unwrap().remove("checksum");
    fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    support::cli::ok(env.run(&["verify"]));
    support::cli::ok(env.backup(&[]));
}

/// gc's log is kept by the catalog that wrote it as a node's is: a batch of
/// `gc/log/` deleted from the repository is named by verify, with what to do, and the
/// next gc run on that host puts it back.
#[test]
fn a_gc_log_object_lost_is_put_back_by_the_next_gc() {
    let mut env = Env::new();
    env.flush_and_backup();
    support::cli::ok(env.run(&["gc", "--keep-last", "1", "--grace", "0s"]));
    let first = env.repo.join(format!("gc/log/{:020}", 1));
    let kept = fs::read(&first).expect("gc recorded its decisions");
    fs::remove_file(&first).unwrap();

    let line = one_line_failure(&env.run(&["verify"]));
    assert!(
        line.contains(&format!("gc/log/{:020}", 1))
            && line.contains("missing")
            && line.contains("tablesafe gc"),
        "{line}"
    );
    let out = support::cli::ok(env.run(&["gc", "--keep-last", "1", "--grace", "0s"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("had lost"),
        "{}",
        support::cli::text(&out)
    );
    assert_eq!(fs::read(&first).unwrap(), kept);
    support::cli::ok(env.run(&["verify", "--read-data"]));
}
