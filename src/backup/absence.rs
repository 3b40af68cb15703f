//! Absence is not deletion: which missing files a pass may record as ended.
//!
//! A file that is not seen any more ends its version only when the pass can tell it was
//! deleted. It cannot when what held it is *absent*:
//!
//! - the data directory does not exist, holds no keyspace directory any more, or is no
//!   longer on the filesystem (device id) it was on at the last accepted pass (a disk
//!   unmounted leaves its mount point empty, or Cassandra writing a fresh system keyspace
//!   there);
//! - a keyspace directory that held the file is gone together with every sibling (the
//!   data directory holds no keyspace directory), or a table directory is gone together
//!   with every sibling (its keyspace directory holds no table directory);
//! - a directory could not be listed or read (EIO, EACCES, …).
//!
//! Then the versions stay open and the pass reports the absence as an error. A table
//! directory gone while its keyspace directory still holds others (a dropped table), or a
//! keyspace directory gone while the data directory holds others (a dropped keyspace), is
//! deletion. Cassandra creates every table's directory in every data directory and
//! always has its system keyspaces, so a live data directory is never empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::scan::DataDirScan;
use crate::catalog::{Catalog, CatalogError, FileKey, OpenVersion};

const CHECK_DISK: &str = "check that its disk is mounted and the configured path";
const CHECK_ACCESS: &str = "check permissions and the disk";
const CHECK_DROPPED: &str = "check that its disk is mounted and the configured path; if its tables were dropped on purpose, remove the empty keyspace directory";

/// Why something is absent, and what the operator should check.
type Reason = (String, &'static str);

/// What a pass found absent under one root, and which files it therefore keeps.
#[derive(Debug, Default)]
pub struct Absence {
    /// Data directories on another filesystem than at the last accepted pass.
    moved: HashMap<String, String>,
    /// Directories that could not be read, with the reason.
    unreadable: Vec<(PathBuf, String)>,
    /// Decisions about vanished directories (`None`: deleted on purpose).
    judged: HashMap<PathBuf, Option<Reason>>,
    /// Per reason, the number of open versions kept open because of it.
    kept: BTreeMap<Reason, u64>,
}

impl Absence {
    /// Checks the filesystem of every data directory this root's files belong to, and
    /// removes the files of a data directory on another filesystem from the scan (nothing
    /// there is recorded). Returns the data directories accepted, with their device id.
    pub fn check_devices(
        &mut self,
        catalog: &Catalog,
        node: &str,
        scan: &mut DataDirScan,
        open: &HashMap<FileKey, OpenVersion>,
    ) -> Result<Vec<(String, u64)>, CatalogError> {
        let found = || {
            scan.sstables
                .iter()
                .flat_map(|s| s.files.iter().map(|(_, f)| f))
                .chain(&scan.other_files)
        };
        let data_dirs: HashSet<&String> = open
            .keys()
            .map(|k| &k.data_dir)
            .chain(found().map(|f| &f.key.data_dir))
            .collect();
        let mut accepted = Vec::new();
        for data_dir in data_dirs {
            let Ok(meta) = std::fs::metadata(data_dir) else {
                continue; // judged with the files it held
            };
            let now = meta.dev();
            match catalog.data_dir_device(node, data_dir)? {
                Some(was) if was != now => {
                    // The same filesystem under a new device number (btrfs, LVM and NFS
                    // renumber across reboots) still holds files exactly as recorded.
                    let same_files = found().any(|f| {
                        &f.key.data_dir == data_dir
                            && open
                                .get(&f.key)
                                .is_some_and(|v| v.size == f.size() && v.mtime == f.mtime)
                    });
                    if same_files {
                        accepted.push((data_dir.clone(), now));
                    } else {
                        self.moved.insert(
                            data_dir.clone(),
                            format!(
                                "data directory {data_dir} is not on the filesystem it was on at the last backup (device {}, was {}) and holds none of the files recorded there",
                                device(now),
                                device(was)
                            ),
                        );
                    }
                }
                _ => accepted.push((data_dir.clone(), now)),
            }
        }
        if !self.moved.is_empty() {
            let moved = &self.moved;
            scan.sstables.retain(|s| {
                s.files
                    .iter()
                    .all(|(_, f)| !moved.contains_key(&f.key.data_dir))
            });
            scan.other_files
                .retain(|f| !moved.contains_key(&f.key.data_dir));
        }
        Ok(accepted)
    }

    /// Takes note of the directories a scan could not read.
    pub fn note_unreadable(&mut self, scan: &DataDirScan) {
        for (path, reason) in &scan.unreadable {
            if !self.unreadable.iter().any(|(p, _)| p == path) {
                self.unreadable.push((path.clone(), reason.clone()));
            }
        }
    }

    /// Whether the open version of a file not seen by the pass must stay open: true when
    /// what held it is absent rather than deleted.
    pub fn keeps(&mut self, key: &FileKey) -> bool {
        let path = full_path(key);
        let reason = if let Some((dir, why)) = self
            .unreadable
            .iter()
            .find(|(dir, _)| path.starts_with(dir))
        {
            Some((
                format!("cannot read {}: {why}", dir.display()),
                CHECK_ACCESS,
            ))
        } else if let Some(why) = self.moved.get(&key.data_dir) {
            Some((why.clone(), CHECK_DISK))
        } else {
            let data_dir = Path::new(&key.data_dir);
            let keyspace = data_dir.join(&key.keyspace);
            self.vanished(&keyspace.join(key.table_dir_name()), &keyspace, data_dir)
        };
        match reason {
            Some(reason) => {
                *self.kept.entry(reason).or_default() += 1;
                true
            }
            None => false,
        }
    }

    /// Whether a table directory that may have vanished is absent (the reason) or,
    /// when it exists or was removed on purpose, not (`None`).
    fn vanished(&mut self, table: &Path, keyspace: &Path, data_dir: &Path) -> Option<Reason> {
        if let Some(decided) = self.judged.get(table) {
            return decided.clone();
        }
        let decided = match std::fs::symlink_metadata(table) {
            // A link whose target cannot be reached (its disk unmounted) is absence.
            Ok(m) if m.file_type().is_symlink() => std::fs::metadata(table)
                .err()
                .map(|e| unreadable(table, &e)),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match self.vanished_keyspace(keyspace, data_dir) {
                    Ok(()) => siblings(keyspace, table, is_table_name).err().map(|e| {
                        e.unwrap_or_else(|| {
                            (
                                format!(
                                    "keyspace directory {} holds no table directory any more",
                                    keyspace.display()
                                ),
                                CHECK_DROPPED,
                            )
                        })
                    }),
                    Err(Some(why)) => Some(why),
                    // The keyspace directory went with its siblings still there: dropped.
                    Err(None) => None,
                }
            }
            Err(e) => Some(unreadable(table, &e)),
        };
        self.judged.insert(table.to_path_buf(), decided.clone());
        decided
    }

    /// `Ok` when the keyspace directory exists; `Err(None)` when it vanished while the
    /// data directory holds other keyspaces (dropped); `Err(Some(reason))` when absent.
    fn vanished_keyspace(
        &mut self,
        keyspace: &Path,
        data_dir: &Path,
    ) -> Result<(), Option<Reason>> {
        if let Some(decided) = self.judged.get(keyspace) {
            return Err(decided.clone());
        }
        let decided = match std::fs::symlink_metadata(keyspace) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(keyspace) {
                Err(e) => Some(unreadable(keyspace, &e)),
                Ok(_) => return Ok(()),
            },
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::symlink_metadata(data_dir) {
                    Ok(_) => siblings(data_dir, keyspace, is_keyspace_name)
                        .err()
                        .map(|e| {
                            e.unwrap_or_else(|| {
                                (
                                    format!(
                                        "data directory {} holds no keyspace directory any more",
                                        data_dir.display()
                                    ),
                                    CHECK_DISK,
                                )
                            })
                        }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((
                        format!("data directory {} does not exist", data_dir.display()),
                        CHECK_DISK,
                    )),
                    Err(e) => Some(unreadable(data_dir, &e)),
                }
            }
            Err(e) => Some(unreadable(keyspace, &e)),
        };
        self.judged.insert(keyspace.to_path_buf(), decided.clone());
        Err(decided)
    }

    /// One line per reason, with how many recorded files it kept, then every unreadable
    /// directory that held no recorded file (new files there were not seen either).
    pub fn into_messages(self) -> Vec<String> {
        let mut out: Vec<String> = self
            .kept
            .iter()
            .map(|((reason, hint), n)| {
                format!(
                    "{reason}: {n} backed-up file(s) there kept, not recorded as deleted ({hint})"
                )
            })
            .collect();
        for (dir, why) in &self.unreadable {
            let reason = (
                format!("cannot read {}: {why}", dir.display()),
                CHECK_ACCESS,
            );
            if !self.kept.contains_key(&reason) {
                out.push(format!("{} ({})", reason.0, reason.1));
            }
        }
        out
    }
}

/// `Ok` when `parent` holds a directory named like `kind` other than `gone`; `Err(None)`
/// when it holds none; `Err(Some(reason))` when it cannot be listed.
fn siblings(parent: &Path, gone: &Path, kind: fn(&str) -> bool) -> Result<(), Option<Reason>> {
    let entries = std::fs::read_dir(parent).map_err(|e| Some(unreadable(parent, &e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| Some(unreadable(parent, &e)))?;
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && entry.path() != gone && name.to_str().is_some_and(kind) {
            return Ok(());
        }
    }
    Err(None)
}

/// Keyspace names are letters, digits and underscores (so not `lost+found`).
fn is_keyspace_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `<table>-<id>`, or `<table>` before 2.1.
fn is_table_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unreadable(path: &Path, e: &std::io::Error) -> Reason {
    (format!("cannot read {}: {e}", path.display()), CHECK_ACCESS)
}

/// The path a recorded file had.
pub fn full_path(key: &FileKey) -> PathBuf {
    Path::new(&key.data_dir)
        .join(&key.keyspace)
        .join(key.table_dir_name())
        .join(&key.rel_path)
}

/// A device id as `major:minor`, as `stat` and `/proc/self/mountinfo` show it.
fn device(dev: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major}:{minor}")
}
