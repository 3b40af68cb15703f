//! One directory of SSTable files, and which of its SSTables are complete.
//!
//! An SSTable is safe to back up when it is *complete*:
//!
//! 1. no transaction log in the directory has an ADD for it without a COMMIT (3.0+ writes
//!    SSTables in place under a txn log; an ABORT means Cassandra will delete it);
//! 2. it is not a 2.x `tmp-`/`tmplink-` file (2.x writes under those names, then renames);
//! 3. its TOC.txt exists (written last), and every component TOC.txt lists exists.
//!
//! An SSTable named by a REMOVE in a committed log is *obsolete*: a compaction replaced it
//! and Cassandra is deleting it. The same rules serve `snapshots/<tag>/` and `backups/`,
//! which hold hard links made one file at a time and never have txn logs.
//!
//! Scanning reads the directory, the txn logs and the TOC files; it never reads Data.db
//! (see [`super::digest`] for that).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::classify::{FileKind, classify_file_name, parse_table_dir};
use super::name::{Component, Descriptor};
use super::txnlog::{RecordKind, TxnLog, TxnOutcome};

/// Txn logs and TOC files are small; refuse to read more than this from one.
const MAX_SMALL_FILE: u64 = 64 << 20;

/// Whether an SSTable can be backed up now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Completeness {
    /// Every component is on disk and no transaction is still writing it.
    Complete,
    /// Cassandra is still writing it (or crashed while doing so).
    InProgress(String),
    /// Its transaction was aborted; Cassandra deletes it.
    Aborted(String),
    /// A committed transaction replaced it; Cassandra deletes it.
    Obsolete(String),
    /// Something it needs is missing or damaged.
    Incomplete(String),
}

impl Completeness {
    pub fn is_complete(&self) -> bool {
        matches!(self, Completeness::Complete)
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Completeness::Complete => None,
            Completeness::InProgress(r)
            | Completeness::Aborted(r)
            | Completeness::Obsolete(r)
            | Completeness::Incomplete(r) => Some(r),
        }
    }
}

/// One component file on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentFile {
    pub component: Component,
    pub file_name: String,
    pub size: u64,
}

/// One SSTable found in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SSTable {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    pub components: Vec<ComponentFile>,
    pub completeness: Completeness,
}

impl SSTable {
    pub fn component(&self, c: &Component) -> Option<&ComponentFile> {
        self.components.iter().find(|f| &f.component == c)
    }

    /// Total bytes of the components on disk.
    pub fn bytes(&self) -> u64 {
        self.components.iter().map(|c| c.size).sum()
    }
}

/// A transaction log found in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnLogFile {
    pub file_name: String,
    #[serde(flatten)]
    pub log: TxnLog,
    pub outcome: TxnOutcome,
}

/// A file that is not backed up, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(serialize_with = "super::serialize_path")]
    pub path: PathBuf,
    pub reason: String,
}

/// A non-SSTable file Cassandra keeps next to SSTables (snapshot manifest, schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherFile {
    pub file_name: String,
    pub kind: &'static str,
    pub size: u64,
}

/// The result of scanning one directory (not recursive).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SSTableDir {
    #[serde(serialize_with = "super::serialize_path")]
    pub path: PathBuf,
    pub sstables: Vec<SSTable>,
    pub txn_logs: Vec<TxnLogFile>,
    pub other_files: Vec<OtherFile>,
    pub skipped: Vec<Skipped>,
    /// Names of subdirectories that look like 2.1+ table directories (`<table>-<id>`):
    /// their presence makes this a keyspace directory, not a table directory.
    #[serde(skip)]
    pub table_subdirs: Vec<String>,
    /// What could not be read (an I/O error other than "not found"): the directory, with
    /// the reason. Its files may be there unseen, so their history must not end.
    #[serde(skip)]
    pub unreadable: Vec<Skipped>,
}

impl SSTableDir {
    /// True when the directory held nothing Cassandra wrote.
    pub fn is_empty(&self) -> bool {
        self.sstables.is_empty() && self.txn_logs.is_empty() && self.other_files.is_empty()
    }
}

/// Reads at most [`MAX_SMALL_FILE`] bytes of a small metadata file as text.
fn read_small(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_SMALL_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Scans one directory: groups component files into SSTables and decides which are
/// complete. Subdirectories are ignored (the caller walks them); entries that vanish
/// while scanning (compaction deletes files all the time) are simply not reported.
pub fn scan_dir(dir: &Path) -> std::io::Result<SSTableDir> {
    let mut out = SSTableDir {
        path: dir.to_path_buf(),
        ..SSTableDir::default()
    };
    let mut groups: BTreeMap<String, (Descriptor, Vec<ComponentFile>)> = BTreeMap::new();
    let mut log_errors = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.unreadable.push(Skipped {
                    path: dir.to_path_buf(),
                    reason: format!("cannot read the metadata of {}: {e}", path.display()),
                });
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if let Some(name) = name.to_str()
                && parse_table_dir(name).1.is_some()
            {
                out.table_subdirs.push(name.to_string());
            }
            continue;
        }
        if ft.is_symlink() {
            // A link to a directory is a directory to the walk (it follows it, as
            // Cassandra does); a link to a file is never read.
            if let Ok(target) = fs::metadata(&path)
                && target.is_dir()
            {
                if let Some(name) = name.to_str()
                    && parse_table_dir(name).1.is_some()
                {
                    out.table_subdirs.push(name.to_string());
                }
                continue;
            }
            out.skipped.push(Skipped {
                path,
                reason: "symbolic link to a file: not read (Cassandra never creates these in table directories; copy the file in if it belongs there)".into(),
            });
            continue;
        }
        if !ft.is_file() {
            out.skipped.push(Skipped {
                path,
                reason: "not a regular file (fifo, socket or device)".into(),
            });
            continue;
        }
        let kind = classify_file_name(&name);
        let file_name = name.to_string_lossy().into_owned();
        match kind {
            FileKind::Component(parsed) => {
                let key = parsed.descriptor.base_name();
                groups
                    .entry(key)
                    .or_insert_with(|| (parsed.descriptor.clone(), Vec::new()))
                    .1
                    .push(ComponentFile {
                        component: parsed.component,
                        file_name,
                        size: meta.len(),
                    });
            }
            FileKind::TxnLog(log_name) => match read_small(&path) {
                Ok(text) => {
                    let log = TxnLog::parse(log_name, &text);
                    out.txn_logs.push(TxnLogFile {
                        file_name,
                        outcome: log.outcome(),
                        log,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.unreadable.push(Skipped {
                        path: dir.to_path_buf(),
                        reason: format!("cannot read transaction log {file_name}: {e}"),
                    });
                    log_errors.push(format!("transaction log {file_name} unreadable: {e}"));
                }
            },
            FileKind::SnapshotManifest | FileKind::SnapshotSchema => {
                out.other_files.push(OtherFile {
                    file_name,
                    kind: kind.label(),
                    size: meta.len(),
                })
            }
            FileKind::CommitLog { .. } => out.skipped.push(Skipped {
                path,
                reason: "commit log segment: archived by Cassandra's commitlog_archiving, not part of a data directory backup".into(),
            }),
            FileKind::Temporary(_) | FileKind::Ignored(_) => out.skipped.push(Skipped {
                path,
                reason: kind.skip_reason().unwrap_or_default(),
            }),
        }
    }
    out.txn_logs.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    out.other_files
        .sort_by(|a, b| a.file_name.cmp(&b.file_name));
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    for (_, (descriptor, mut components)) in groups {
        components.sort_by(|a, b| a.component.cmp(&b.component));
        let completeness = judge(
            dir,
            (&descriptor, &components),
            (&out.txn_logs, &log_errors),
            &mut out.unreadable,
        );
        out.sstables.push(SSTable {
            descriptor,
            components,
            completeness,
        });
    }
    Ok(out)
}

/// Applies the completeness rules of the module header to one SSTable.
fn judge(
    dir: &Path,
    (descriptor, components): (&Descriptor, &[ComponentFile]),
    (logs, log_errors): (&[TxnLogFile], &[String]),
    unreadable: &mut Vec<Skipped>,
) -> Completeness {
    if let Some(err) = log_errors.first() {
        return Completeness::InProgress(format!("{err}; cannot tell which SSTables it covers"));
    }
    let base = descriptor.base_name();
    for log in logs {
        if log.log.names(RecordKind::Add, &base) {
            match log.outcome {
                TxnOutcome::Open => {
                    return Completeness::InProgress(format!(
                        "being written: {} has ADD for it and no COMMIT yet",
                        log.file_name
                    ));
                }
                TxnOutcome::Aborted => {
                    return Completeness::Aborted(format!(
                        "{} was aborted; Cassandra deletes these files",
                        log.file_name
                    ));
                }
                TxnOutcome::Committed => {}
            }
        }
        if log.outcome == TxnOutcome::Committed && log.log.names(RecordKind::Remove, &base) {
            return Completeness::Obsolete(format!(
                "replaced by the committed {} in {}; Cassandra is deleting it",
                log.log.name.operation, log.file_name
            ));
        }
    }
    let present: BTreeSet<&str> = components.iter().map(|c| c.component.as_str()).collect();
    if !present.contains(Component::Toc.as_str()) {
        return Completeness::InProgress("no TOC.txt yet (Cassandra writes it last)".into());
    }
    let toc_path = dir.join(descriptor.file_name(&Component::Toc));
    let toc = match read_small(&toc_path) {
        Ok(t) => t,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                unreadable.push(Skipped {
                    path: dir.to_path_buf(),
                    reason: format!("cannot read {}: {e}", toc_path.display()),
                });
            }
            return Completeness::Incomplete(format!("TOC.txt unreadable: {e}"));
        }
    };
    let mut listed = 0;
    let mut missing = Vec::new();
    for (i, line) in toc.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match Component::parse(line) {
            Some(c) if present.contains(c.as_str()) => listed += 1,
            Some(c) => missing.push(c.as_str().to_string()),
            None => {
                return Completeness::Incomplete(format!(
                    "TOC.txt line {} is not a component name",
                    i + 1
                ));
            }
        }
    }
    if listed == 0 && missing.is_empty() {
        return Completeness::Incomplete("TOC.txt is empty".into());
    }
    if !missing.is_empty() {
        return Completeness::Incomplete(format!(
            "TOC.txt lists {} but no such file exists",
            missing.join(", ")
        ));
    }
    Completeness::Complete
}
