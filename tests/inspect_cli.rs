//! `tablesafe inspect` and the CLI's handling of bad input, driven through the real binary.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

const FIXTURES: &str = "fixtures/cassandra-sstables";

fn tablesafe() -> Command {
    let mut cmd = Command::cargo_bin("tablesafe").unwrap();
    cmd.env_remove("TABLESAFE_REPO")
        .env_remove("TABLESAFE_CATALOG")
        .env_remove("TABLESAFE_CONFIG");
    cmd
}

fn inspect_json(dir: &Path) -> (i32, Value) {
    let out = tablesafe()
        .args(["inspect", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

fn sstables(inv: &Value) -> Vec<&Value> {
    inv["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["sstables"].as_array().unwrap())
        .collect()
}

#[test]
fn every_fixture_sstable_is_complete_and_digest_verified() {
    let (code, inv) = inspect_json(Path::new(FIXTURES));
    assert_eq!(code, 0);
    let all = sstables(&inv);
    assert_eq!(all.len(), 18, "{inv:#}");
    for s in &all {
        assert_eq!(s["state"], "complete", "{s:#}");
        assert_eq!(s["digest"]["status"], "ok", "{s:#}");
    }
    let mut versions: Vec<&str> = all.iter().map(|s| s["version"].as_str().unwrap()).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions,
        ["da", "jb", "ka", "la", "mc", "me", "na", "nb", "oa"],
        "every format from 2.0 to 5.0"
    );
    let algorithms: Vec<(&str, &str)> = all
        .iter()
        .map(|s| {
            (
                s["version"].as_str().unwrap(),
                s["digest"]["algorithm"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(algorithms.contains(&("jb", "sha1")));
    assert!(algorithms.contains(&("ka", "adler32")));
    assert!(algorithms.contains(&("la", "adler32")));
    assert!(algorithms.contains(&("da", "crc32")));
    assert_eq!(inv["summary"]["digest_ok"], 18);
}

#[test]
fn leftover_tmp_and_tmplink_files_are_skipped_with_reasons() {
    let (_, inv) = inspect_json(Path::new(FIXTURES));
    let temporary: Vec<&Value> = inv["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["path"].as_str().unwrap().contains("tmp"))
        .collect();
    // 4 in the 2.1 migration table, 6 in the 2.2 one.
    assert_eq!(temporary.len(), 10, "{inv:#}");
    for s in temporary {
        let reason = s["reason"].as_str().unwrap();
        assert!(reason.contains("2.x temporary SSTable file"), "{reason}");
    }
    // No temporary file was mistaken for an SSTable.
    for s in sstables(&inv) {
        assert!(s.get("temp").is_none(), "{s:#}");
    }
}

#[test]
fn text_output_names_tables_and_summarises() {
    let out = tablesafe().args(["inspect", FIXTURES]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("test.foo (0094ac203e7411e59149ef9f87394ca6)"),
        "{text}"
    );
    assert!(
        text.contains("Keyspace1.Standard1"),
        "2.0 names carry the table: {text}"
    );
    assert!(
        text.contains("18 SSTables in 19 tables") && text.contains("18 complete, 0 not complete"),
        "{text}"
    );
}

/// Copies one fixture SSTable into `<root>/ks/tbl-<id>/` and returns the table dir.
fn copy_fixture(root: &Path, fixture: &str) -> PathBuf {
    let table = root.join("ks").join("tbl-0123456789abcdef0123456789abcdef");
    fs::create_dir_all(&table).unwrap();
    for entry in fs::read_dir(Path::new(FIXTURES).join(fixture)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), table.join(entry.file_name())).unwrap();
    }
    table
}

#[test]
fn a_corrupt_data_file_fails_with_both_values_and_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let table = copy_fixture(tmp.path(), "nb/legacy_tables/legacy_nb_clust");
    let data = table.join("nb-1-big-Data.db");
    let mut bytes = fs::read(&data).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&data, bytes).unwrap();

    let (code, inv) = inspect_json(tmp.path());
    assert_eq!(code, 1);
    let s = sstables(&inv)[0];
    assert_eq!(s["digest"]["status"], "mismatch");
    let expected = s["digest"]["expected"].as_str().unwrap();
    let actual = s["digest"]["actual"].as_str().unwrap();
    assert_ne!(expected, actual);
    let message = s["digest"]["message"].as_str().unwrap();
    assert!(
        message.contains("nb-1-big-Data.db")
            && message.contains(expected)
            && message.contains(actual),
        "{message}"
    );

    let out = tablesafe().arg("inspect").arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: 1 SSTable(s) do not match their digest"),
        "{stderr}"
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("CORRUPT"));
}

#[test]
fn odd_files_are_skipped_with_reasons_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let table = copy_fixture(tmp.path(), "oa/legacy_tables/legacy_oa_simple");
    fs::write(
        table.join(std::ffi::OsStr::from_bytes(b"oa-2-big-Data\xff.db")),
        b"x",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", table.join("oa-3-big-Data.db")).unwrap();
    let fifo = table.join("oa-4-big-Data.db");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    fs::create_dir(table.join("oa-5-big-Data.db")).unwrap();
    fs::write(table.join("oa-1-big-Statistics.db.tmp"), b"partial").unwrap();
    fs::write(table.join("notes.txt"), b"operator notes").unwrap();
    fs::write(tmp.path().join("ks").join("oa-6-big-Data.db"), b"x").unwrap();
    let non_utf8_dir = tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"k\xffs"))
        .join("t");
    fs::create_dir_all(&non_utf8_dir).unwrap();
    fs::write(non_utf8_dir.join("oa-7-big-Data.db"), b"x").unwrap();

    let (code, inv) = inspect_json(tmp.path());
    assert_eq!(code, 0, "{inv:#}");
    let ok = sstables(&inv);
    assert_eq!(ok.len(), 1, "only the real SSTable: {inv:#}");
    assert_eq!(ok[0]["state"], "complete");
    let reasons: Vec<(String, String)> = inv["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let reason_for = |needle: &str| -> &str {
        &reasons
            .iter()
            .find(|(p, _)| p.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not skipped: {reasons:#?}"))
            .1
    };
    assert!(reason_for("oa-2-big-Data").contains("not valid UTF-8"));
    assert!(reason_for("oa-3-big").contains("symbolic link"));
    assert!(reason_for("oa-4-big").contains("not a regular file"));
    assert!(reason_for("Statistics.db.tmp").contains("temporary rewrite"));
    assert!(reason_for("notes.txt").contains("not a file Cassandra writes"));
    assert!(reason_for("oa-6-big").contains("outside any <keyspace>/<table>"));
    assert!(reason_for("oa-7-big").contains("not valid UTF-8"));
}

#[test]
fn a_table_missing_a_toc_listed_component_is_not_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let table = copy_fixture(tmp.path(), "mc/legacy_tables/legacy_mc_simple");
    fs::remove_file(table.join("mc-1-big-Filter.db")).unwrap();
    let (code, inv) = inspect_json(tmp.path());
    assert_eq!(code, 0);
    let s = sstables(&inv)[0];
    assert_eq!(s["state"], "incomplete");
    assert!(s["reason"].as_str().unwrap().contains("Filter.db"), "{s:#}");
    assert!(
        s.get("digest").is_none(),
        "incomplete SSTables are not digest-checked"
    );
}

#[test]
fn a_missing_data_dir_is_one_clear_line() {
    let out = tablesafe()
        .args(["inspect", "/nonexistent/tablesafe-data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot read data directory /nonexistent/tablesafe-data"),
        "{stderr}"
    );
}

#[test]
fn gc_and_verify_reject_bad_flags_with_one_line_and_exit_2() {
    for (args, wanted) in [
        (
            vec!["gc", "--grace", "soon"],
            "--grace \"soon\" is not a duration",
        ),
        (
            vec!["gc", "--keep-within", "3 parsecs"],
            "--keep-within \"3 parsecs\" is not a duration",
        ),
        (
            vec!["verify", "--read-data-subset", "0%"],
            "--read-data-subset \"0%\" is not a percentage",
        ),
        (vec!["gc"], "no repository given"),
    ] {
        let out = tablesafe().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_config_and_flags_exit_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let out = tablesafe()
        .arg("--config")
        .arg(&missing)
        .args(["inspect", FIXTURES])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot read config file"), "{stderr}");

    let typo = tmp.path().join("typo.toml");
    fs::write(&typo, "data_dir = [\"/x\"]\n").unwrap();
    let out = tablesafe()
        .arg("--config")
        .arg(&typo)
        .args(["inspect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("data_dir") && stderr.contains("not valid"),
        "{stderr}"
    );

    let out = tablesafe()
        .args(["inspect", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_file_supplies_data_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tablesafe.toml");
    let fixtures = fs::canonicalize(FIXTURES).unwrap();
    fs::write(
        &config,
        format!("data_dirs = [{:?}]\nnode = \"n1\"\n", fixtures.join("nb")),
    )
    .unwrap();
    let out = tablesafe()
        .arg("--config")
        .arg(&config)
        .args(["inspect", "--json", "--no-digest"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inv["summary"]["sstables"], 2);
    assert_eq!(inv["summary"]["digest_unchecked"], 2);
}
