//! Minimal complete SSTables (Data.db, then TOC.txt) in one table directory, for tests
//! about history (flushes, compactions, retention) rather than about formats, and a
//! tree of files by content hash to compare what was restored; a `file://` repository
//! to run them against.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A `file://` repository in a temporary directory, and the binary run as any node of
/// it, each node with its own catalog there (`<node>.db`). Test files add the methods
/// they need in `impl Repo` blocks of their own.
pub struct Repo {
    tmp: tempfile::TempDir,
    url: String,
}

impl Repo {
    pub fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("file://{}", tmp.path().join("repo").display());
        Repo { tmp, url }
    }

    /// A path in the temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The binary as `node`, with that node's own catalog.
    pub fn as_node(&self, node: &str) -> Command {
        let mut c = super::cli::tablesafe(self.tmp.path());
        c.arg("--repo").arg(&self.url);
        c.arg("--catalog").arg(self.path(&format!("{node}.db")));
        c.args(["--node", node]);
        c
    }
}

/// The table directory, below a data directory, the SSTables are written in.
pub const TABLE: &str = "ks/t-0123456789abcdef0123456789abcdef";

/// Every file below `root`: relative path → BLAKE3 hex.
pub fn walk(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, blake3::hash(&bytes).to_hex().to_string());
            }
        }
    }
    out
}

/// Writes a complete SSTable (Data.db, then TOC.txt last, as Cassandra does).
pub fn write_sstable(data: &Path, generation: u64, content: &[u8]) {
    let dir = data.join(TABLE);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("nb-{generation}-big-Data.db")), content).unwrap();
    fs::write(
        dir.join(format!("nb-{generation}-big-TOC.txt")),
        "Data.db\nTOC.txt\n",
    )
    .unwrap();
}

/// Removes an SSTable written by [`write_sstable`] (TOC.txt first, as Cassandra does).
pub fn remove_sstable(data: &Path, generation: u64) {
    let dir = data.join(TABLE);
    for c in ["TOC.txt", "Data.db"] {
        let _ = fs::remove_file(dir.join(format!("nb-{generation}-big-{c}")));
    }
}

/// `len` bytes of noise, different for every `generation`.
pub fn content(generation: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
