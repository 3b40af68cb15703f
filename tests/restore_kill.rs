//! A restore killed with SIGKILL part-way and run again with `--resume`: it completes,
//! the tree is exact (bytes and mtimes), only what was missing is downloaded again, and
//! no `.partial` file is left. Nothing the killed run left at a final path is unverified.
//!
//! The real binary, a real `file://` repository and catalog, and a few hundred distinct
//! files of 256 KiB to 1 MiB so that a restore takes long enough to be interrupted.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::cli::{tablesafe, text};
use tablesafe::timespec::{self, Micros};

/// Path relative to the data directory (or target) → (BLAKE3 hex, mtime µs).
type Tree = BTreeMap<String, (String, Micros)>;

const SSTABLES: u32 = 48;
const BIG_COMPONENTS: [&str; 4] = ["Data.db", "Index.db", "Filter.db", "Statistics.db"];

fn file_entry(path: &Path) -> (String, Micros) {
    let bytes = std::fs::read(path).unwrap();
    let meta = std::fs::metadata(path).unwrap();
    (
        blake3::hash(&bytes).to_hex().to_string(),
        meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1_000,
    )
}

fn files_below(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn read_tree(root: &Path) -> Tree {
    files_below(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, file_entry(&p))
        })
        .collect()
}

fn random_bytes(len: usize, seed: &str) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// `SSTABLES` complete `nb` SSTables with four random components of 256 KiB to 1 MiB each.
fn write_table(table_dir: &Path) {
    std::fs::create_dir_all(table_dir).unwrap();
    for generation in 1..=SSTABLES {
        let base = format!("nb-{generation}-big");
        let mut toc = String::new();
        for (i, c) in BIG_COMPONENTS.iter().enumerate() {
            let seed = format!("{generation}/{c}");
            let size =
                256 * 1024 + (blake3::hash(seed.as_bytes()).as_bytes()[0] as usize) * 3 * 1024;
            let bytes = random_bytes(size, &seed);
            if i == 0 {
                std::fs::write(
                    table_dir.join(format!("{base}-Digest.crc32")),
                    crc32fast::hash(&bytes).to_string(),
                )
                .unwrap();
            }
            std::fs::write(table_dir.join(format!("{base}-{c}")), bytes).unwrap();
            toc.push_str(c);
            toc.push('\n');
        }
        toc.push_str("Digest.crc32\nTOC.txt\n");
        std::fs::write(table_dir.join(format!("{base}-TOC.txt")), toc).unwrap();
    }
}

#[test]
fn a_killed_restore_resumes_and_downloads_only_what_is_missing() {
    killed_restore_resumes(false);
}

/// The same with every file in packs (all are under 1 MiB): the kill lands while packs
/// are being split.
#[test]
fn a_killed_restore_of_packed_files_resumes_and_downloads_only_what_is_missing() {
    killed_restore_resumes(true);
}

fn killed_restore_resumes(pack: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let table = data.join("ks/big-0123456789abcdef0123456789abcdef");
    write_table(&table);
    let url = format!("file://{}", tmp.path().join("repo").display());
    let catalog = tmp.path().join("catalog.db");
    let cmd = || {
        let mut c = tablesafe(tmp.path());
        c.arg("--repo")
            .arg(&url)
            .arg("--catalog")
            .arg(&catalog)
            .args(["--node", "n1"]);
        c
    };
    let out = cmd()
        .args(["backup", "--init", "--json"])
        .args(pack.then_some("--pack-small-files"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["packs_uploaded"].as_u64().unwrap() > 0,
        pack,
        "{summary}"
    );
    let expected: Tree = read_tree(&data);
    let total = expected.len();
    assert!(total >= 250, "{total} files");
    let at = timespec::format_precise(timespec::now());
    let to = tmp.path().join("to");
    let restore = |extra: &[&str]| {
        let mut c = cmd();
        c.args(["restore", "--at", &at, "--to"])
            .arg(&to)
            .args(["--parallel", "2"])
            .args(extra);
        c
    };

    // Kill it once some files are in place.
    let started = Instant::now();
    let mut child = restore(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let finals = |root: &Path| {
        files_below(root)
            .into_iter()
            .filter(|p| p.extension().is_none_or(|e| e != "partial"))
            .count()
    };
    loop {
        if finals(&to) >= 20 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore ended ({status}) before it could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "restore never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status}");
    let after_kill = read_tree(&to);
    let in_place: Vec<&String> = after_kill
        .keys()
        .filter(|k| !k.ends_with(".partial"))
        .collect();
    assert!(
        in_place.len() < total,
        "the restore finished before the kill; make it bigger"
    );
    // Whatever reached a final path is exactly the backed-up content.
    for k in &in_place {
        assert_eq!(
            after_kill[*k].0, expected[*k].0,
            "{k} is not the backed-up content"
        );
    }
    eprintln!(
        "killed after {:?}: {} of {total} files in place, {} .partial",
        started.elapsed(),
        in_place.len(),
        after_kill.len() - in_place.len()
    );

    // Without --resume, the half-restored target is refused.
    let out = restore(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty: use --resume"),
        "{}",
        text(&out)
    );

    // --resume finishes, fetching only what is missing.
    let out = restore(&["--resume", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &doc["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}")) as usize;
    assert_eq!(n("files"), total, "{s}");
    assert!(n("already_in_place") >= in_place.len(), "{s}");
    assert!(n("already_in_place") > 0, "{s}");
    assert!(n("downloaded") < total, "{s}");
    assert_eq!(
        n("already_in_place") + n("downloaded") + n("copied") + n("linked"),
        total,
        "{s}"
    );
    assert_eq!(s["failed"].as_array().map(Vec::len), Some(0), "{s}");
    let restored = read_tree(&to);
    let partials: Vec<&String> = restored
        .keys()
        .filter(|k| k.ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "left behind: {partials:?}");
    for (k, v) in &expected {
        assert_eq!(restored.get(k), Some(v), "{k}");
    }
    assert_eq!(restored.len(), total);
}
