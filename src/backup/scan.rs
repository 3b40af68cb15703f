//! One pass over a data directory: every complete SSTable (live, in `backups/`, in each
//! `snapshots/<tag>/`, and in secondary index directories of each), with the stat of each
//! component, plus snapshot manifests and schemas.
//!
//! The walk is [`crate::cassandra::walk`], shared with `tablesafe inspect`; it reads no
//! file content except the small TOC.txt and transaction logs that completeness needs.
//! Each file is recorded under the data directory that holds its keyspace directory
//! (absolute), so the same tree is recorded the same way whatever path it was given by.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::filter::TableFilter;
use crate::cassandra::sstable_dir::SSTableDir;
use crate::cassandra::walk::{Visit, WalkError, walk};
use crate::cassandra::{Component, Descriptor};
use crate::catalog::{FileKey, StatKey};
use crate::timespec::Micros;

/// A file found by the scan, with what the stat cache needs.
#[derive(Debug, Clone)]
pub struct FoundFile {
    pub key: FileKey,
    pub path: PathBuf,
    pub stat: StatKey,
    pub mtime: Micros,
}

impl FoundFile {
    pub fn size(&self) -> u64 {
        self.stat.size
    }
}

/// A complete SSTable found by the scan.
#[derive(Debug, Clone)]
pub struct FoundSSTable {
    pub dir: PathBuf,
    pub descriptor: Descriptor,
    pub files: Vec<(Component, FoundFile)>,
}

impl FoundSSTable {
    /// The file of a component, if present.
    pub fn file(&self, c: &Component) -> Option<&FoundFile> {
        self.files
            .iter()
            .find(|(have, _)| have == c)
            .map(|(_, f)| f)
    }

    /// The Digest component, whichever checksum it holds.
    pub fn digest_file(&self) -> Option<(crate::cassandra::name::DigestExt, &FoundFile)> {
        self.files.iter().find_map(|(c, f)| match c {
            Component::Digest(ext) => Some((*ext, f)),
            _ => None,
        })
    }
}

/// What one pass found in one data directory.
#[derive(Debug, Default)]
pub struct DataDirScan {
    pub sstables: Vec<FoundSSTable>,
    /// Snapshot `manifest.json` and `schema.cql` files.
    pub other_files: Vec<FoundFile>,
    /// SSTables seen but not complete yet (in progress, aborted, obsolete, incomplete).
    pub not_complete: usize,
    /// Directories left out by the filter.
    pub filtered_dirs: usize,
    /// Non-fatal problems, with the reason.
    pub problems: Vec<String>,
    /// Directories that could not be listed or read completely (EIO, EACCES, …), with the
    /// reason: their files may be there unseen, so their versions must stay open.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// The stat-cache identity of a file from its metadata.
pub fn stat_key(meta: &fs::Metadata) -> StatKey {
    StatKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    }
}

/// A file's modification time in microseconds.
pub fn mtime_micros(meta: &fs::Metadata) -> Micros {
    meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1_000
}

/// Scans a data directory (or any tree of table directories below it).
pub fn scan_data_dir(root: &Path, filter: &TableFilter) -> Result<DataDirScan, WalkError> {
    let mut out = DataDirScan::default();
    walk(root, |visit| match visit {
        // Temporary and foreign files are normal in a data directory; a symbolic link
        // that is not followed is not, and is said.
        Visit::Skipped(s) if s.reason.starts_with("symbolic link") => {
            out.problems
                .push(format!("{}: {}", s.path.display(), s.reason));
        }
        Visit::Skipped(_) => {}
        Visit::Unreadable(s) => {
            if !out.unreadable.iter().any(|(p, _)| p == &s.path) {
                out.unreadable.push((s.path, s.reason));
            }
        }
        Visit::Dir(found) => {
            let place = &found.place;
            if !filter.includes(&place.keyspace, Some(&place.table)) {
                out.filtered_dirs += 1;
                return;
            }
            let prefix = match found.dir.strip_prefix(&found.table_dir) {
                Ok(p) if p.as_os_str().is_empty() => String::new(),
                Ok(p) => format!("{}/", p.to_string_lossy()),
                Err(_) => String::new(),
            };
            let base = FileKey {
                data_dir: found.data_dir.to_string_lossy().into_owned(),
                keyspace: place.keyspace.clone(),
                table: place.table.clone(),
                table_id: place.table_id.clone().unwrap_or_default(),
                rel_path: String::new(),
            };
            collect(&mut out, &base, &prefix, found.scan);
        }
    })?;
    Ok(out)
}

/// Adds the complete SSTables and snapshot files of one scanned directory.
fn collect(out: &mut DataDirScan, base: &FileKey, prefix: &str, scan: SSTableDir) {
    let mut unreadable = Vec::new();
    let mut found = |name: &str| -> Option<FoundFile> {
        let path = scan.path.join(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Compaction may have deleted it since the directory was read: not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                unreadable.push((
                    scan.path.clone(),
                    format!("cannot read {}: {e}", path.display()),
                ));
                return None;
            }
        };
        Some(FoundFile {
            key: FileKey {
                rel_path: format!("{prefix}{name}"),
                ..base.clone()
            },
            stat: stat_key(&meta),
            mtime: mtime_micros(&meta),
            path,
        })
    };
    for sstable in &scan.sstables {
        if !sstable.completeness.is_complete() {
            out.not_complete += 1;
            continue;
        }
        let files: Option<Vec<(Component, FoundFile)>> = sstable
            .components
            .iter()
            .map(|c| found(&c.file_name).map(|f| (c.component.clone(), f)))
            .collect();
        match files {
            Some(files) => out.sstables.push(FoundSSTable {
                dir: scan.path.clone(),
                descriptor: sstable.descriptor.clone(),
                files,
            }),
            None => out.not_complete += 1,
        }
    }
    out.other_files
        .extend(scan.other_files.iter().filter_map(|f| found(&f.file_name)));
    for (path, reason) in unreadable {
        if !out.unreadable.iter().any(|(p, _)| p == &path) {
            out.unreadable.push((path, reason));
        }
    }
}
