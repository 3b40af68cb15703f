//! The inventory of one or more data directories: every table, its SSTables with their
//! completeness and digest, and every file that is skipped with the reason why.
//!
//! This is what `tablesafe inspect` prints, and the first thing an operator runs to see
//! what tablesafe sees. A root may be a whole data directory, a keyspace or table
//! directory, or any tree of copied table directories: the keyspace and table of each
//! directory are taken from the last `<keyspace>/<table>` pair above it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::classify::Location;
use super::digest::{DigestStatus, verify_sstable};
use super::name::Descriptor;
use super::sstable_dir::{Completeness, ComponentFile, OtherFile, Skipped, TxnLogFile};
use super::walk::{FoundDir, Visit, WalkError, walk};

/// Options for [`Inventory::collect`].
#[derive(Debug, Clone, Copy)]
pub struct InventoryOptions {
    /// Stream every complete SSTable's Data.db and compare it with its Digest.
    pub check_digests: bool,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            check_digests: true,
        }
    }
}

/// One SSTable in the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct SSTableReport {
    pub location: Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Directory holding the files.
    #[serde(serialize_with = "super::serialize_path")]
    pub dir: PathBuf,
    #[serde(flatten)]
    pub descriptor: Descriptor,
    /// The Cassandra release line that writes this format version.
    pub release: &'static str,
    pub components: Vec<ComponentFile>,
    pub bytes: u64,
    #[serde(flatten)]
    pub completeness: Completeness,
    /// `None` when digests were not checked or the SSTable is not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestStatus>,
}

/// A transaction log in the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct TxnLogReport {
    #[serde(serialize_with = "super::serialize_path")]
    pub dir: PathBuf,
    #[serde(flatten)]
    pub log: TxnLogFile,
}

/// A snapshot manifest or schema file.
#[derive(Debug, Clone, Serialize)]
pub struct OtherFileReport {
    pub location: Location,
    #[serde(serialize_with = "super::serialize_path")]
    pub dir: PathBuf,
    #[serde(flatten)]
    pub file: OtherFile,
}

/// One table directory.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub keyspace: String,
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    #[serde(serialize_with = "super::serialize_path")]
    pub path: PathBuf,
    pub sstables: Vec<SSTableReport>,
    pub txn_logs: Vec<TxnLogReport>,
    pub other_files: Vec<OtherFileReport>,
}

/// Totals over the whole inventory.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub tables: usize,
    pub sstables: usize,
    pub complete: usize,
    pub not_complete: usize,
    pub digest_ok: usize,
    pub digest_mismatch: usize,
    pub digest_unchecked: usize,
    pub bytes: u64,
    pub skipped: usize,
}

/// Everything found under the roots.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    #[serde(serialize_with = "super::serialize_paths")]
    pub roots: Vec<PathBuf>,
    pub tables: Vec<TableReport>,
    pub skipped: Vec<Skipped>,
    pub summary: Summary,
}

impl Inventory {
    /// Walks every root (symbolic links below a root are reported, never followed).
    pub fn collect(roots: &[PathBuf], options: InventoryOptions) -> Result<Inventory, WalkError> {
        let mut tables: BTreeMap<PathBuf, TableReport> = BTreeMap::new();
        let mut skipped = Vec::new();
        for root in roots {
            let mut found = Vec::new();
            walk(root, |visit| match visit {
                Visit::Dir(d) => found.push(*d),
                Visit::Skipped(s) | Visit::Unreadable(s) => skipped.push(s),
            })?;
            for FoundDir {
                dir,
                table_dir: table_path,
                place,
                scan,
                ..
            } in found
            {
                let dir = dir.as_path();
                let report = tables
                    .entry(table_path.clone())
                    .or_insert_with(|| TableReport {
                        keyspace: place.keyspace.clone(),
                        table: place.table.clone(),
                        table_id: place.table_id.clone(),
                        path: table_path,
                        sstables: Vec::new(),
                        txn_logs: Vec::new(),
                        other_files: Vec::new(),
                    });
                for sstable in &scan.sstables {
                    let digest = (options.check_digests && sstable.completeness.is_complete())
                        .then(|| verify_sstable(dir, sstable));
                    report.sstables.push(SSTableReport {
                        location: place.location.clone(),
                        index: place.index.clone(),
                        dir: dir.to_path_buf(),
                        release: sstable
                            .descriptor
                            .version
                            .release(sstable.descriptor.format.as_ref()),
                        descriptor: sstable.descriptor.clone(),
                        bytes: sstable.bytes(),
                        components: sstable.components.clone(),
                        completeness: sstable.completeness.clone(),
                        digest,
                    });
                }
                report
                    .txn_logs
                    .extend(scan.txn_logs.into_iter().map(|log| TxnLogReport {
                        dir: dir.to_path_buf(),
                        log,
                    }));
                report
                    .other_files
                    .extend(scan.other_files.into_iter().map(|file| OtherFileReport {
                        location: place.location.clone(),
                        dir: dir.to_path_buf(),
                        file,
                    }));
            }
        }
        let mut tables: Vec<TableReport> = tables.into_values().collect();
        for t in &mut tables {
            adopt_long_name_identity(t);
        }
        let summary = summarize(&tables, skipped.len());
        Ok(Inventory {
            roots: roots.to_vec(),
            tables,
            skipped,
            summary,
        })
    }

    /// True when some SSTable's Data.db does not match its digest.
    pub fn has_corruption(&self) -> bool {
        self.summary.digest_mismatch > 0
    }
}

/// Before 2.2, file names carry keyspace and table; when every SSTable in a directory
/// without a table id agrees on them, they win over the directory names (2.0 layouts and
/// loose copies of 2.x files).
fn adopt_long_name_identity(t: &mut TableReport) {
    if t.table_id.is_some() {
        return;
    }
    let mut prefixes = t.sstables.iter().map(|s| s.descriptor.long_prefix.as_ref());
    let Some(Some(first)) = prefixes.next() else {
        return;
    };
    if prefixes.all(|p| p == Some(first)) {
        t.keyspace = first.keyspace.clone();
        t.table = first.table.clone();
    }
}

fn summarize(tables: &[TableReport], skipped: usize) -> Summary {
    let mut s = Summary {
        tables: tables.len(),
        skipped,
        ..Summary::default()
    };
    for sstable in tables.iter().flat_map(|t| &t.sstables) {
        s.sstables += 1;
        s.bytes += sstable.bytes;
        if sstable.completeness.is_complete() {
            s.complete += 1;
        } else {
            s.not_complete += 1;
        }
        match &sstable.digest {
            Some(DigestStatus::Ok { .. }) => s.digest_ok += 1,
            Some(DigestStatus::Mismatch { .. }) => s.digest_mismatch += 1,
            Some(DigestStatus::Unchecked { .. }) | None => s.digest_unchecked += 1,
        }
    }
    s
}
