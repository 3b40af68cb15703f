//! What a restore's table directories hold that the point does not, found and moved out
//! of the data directory into a quarantine: never deleted.
//!
//! Cassandra loads every live SSTable of a table directory (and of its secondary index
//! directories `.<index>/`) at startup and replays any transaction log it finds there, so
//! a file the point does not have makes the restored node something other than the point.
//! `restore --overwrite` therefore moves every such entry of the table directories it
//! covers into a quarantine directory: a new directory beside the target (or in
//! `--quarantine DIR`), on the target's filesystem, so that each move is one atomic
//! `rename` that costs nothing and a restore killed part way loses nothing. Entries keep
//! their path below the target. Symbolic links are never followed.
//!
//! Which directories are covered: every `<keyspace>/<table dir>/` of the target whose
//! keyspace and table the restore's filters select (whether or not the point has files
//! there: a table the point had no files in had none), except `snapshots/` and `backups/`,
//! which Cassandra does not load and which are covered only when the restore writes
//! them (`--include-snapshots`, data layout). A table directory with another table id
//! than the point's (the table dropped and created again) is the same table to the
//! filters and is covered the same way.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cassandra::classify::parse_table_dir;
use crate::timespec::Micros;

/// Why extra files could not be found or moved.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error(
        "cannot check {path} for files the point does not have: it is a symbolic link, and restore never follows one out of the target; remove the link, or pass --keep-extra"
    )]
    LinkInScope { path: PathBuf },
    #[error(
        "cannot quarantine the files the point does not have: {dir} is {why}, where Cassandra would read them; pass --quarantine DIR outside every data directory (on the target's filesystem), or --keep-extra"
    )]
    InsideData { dir: PathBuf, why: &'static str },
    #[error(
        "cannot quarantine the files the point does not have: {dir} is on another filesystem than the target {target}, so a move would be a copy; pass --quarantine DIR on the target's filesystem (outside every data directory), or --keep-extra"
    )]
    OtherFilesystem { dir: PathBuf, target: PathBuf },
    #[error(
        "cannot quarantine the files the point does not have: the target {target} has no parent directory; pass --quarantine DIR, or --keep-extra"
    )]
    NoParent { target: PathBuf },
    #[error("{path} exists already, and the quarantine never replaces anything: run again")]
    Exists { path: PathBuf },
    #[error("cannot look through or move {path} for the quarantine")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QuarantineError + '_ {
    move |source| QuarantineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which entries of the target a restore answers for.
pub struct Scope<'a> {
    /// Whether the restore's filters select this keyspace (table `None`) or table.
    pub covers: &'a dyn Fn(&str, Option<&str>) -> bool,
    /// Also each table directory's `snapshots/` and `backups/`.
    pub with_snapshots: bool,
    /// The files the restore writes, relative to the target.
    pub planned: &'a HashSet<PathBuf>,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    /// A directory moved whole, with everything below it.
    Dir,
    /// A symbolic link, moved as a link (its target is never touched).
    Link,
    /// Anything else (a socket, a fifo).
    Other,
}

/// One entry the point does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Path below the target.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Regular files (below it, for a directory) and their bytes.
    pub files: u64,
    pub bytes: u64,
}

/// Every entry of the covered table directories below `target` that is not a planned
/// file, a directory above one, or the `.partial` file of one (a restore's own), in path
/// order. A directory holding nothing planned is one entry.
pub fn find_extras(target: &Path, scope: &Scope) -> Result<Vec<Entry>, QuarantineError> {
    let mut planned_dirs: HashSet<&Path> = HashSet::new();
    for p in scope.planned {
        planned_dirs.extend(p.ancestors().skip(1));
    }
    let mut out = Vec::new();
    for (keyspace, kind) in sorted_entries(target)? {
        let Some(ks) = keyspace.to_str() else {
            continue;
        };
        if ks.starts_with('.') || !matches!(kind, EntryKind::Dir | EntryKind::Link) {
            continue;
        }
        if !(scope.covers)(ks, None) {
            continue;
        }
        let ks_rel = PathBuf::from(ks);
        // A link the restore would write through is refused by the restore itself.
        if kind == EntryKind::Link && planned_dirs.contains(ks_rel.as_path()) {
            continue;
        }
        if kind == EntryKind::Link {
            return Err(QuarantineError::LinkInScope {
                path: target.join(ks_rel),
            });
        }
        for (table_dir, kind) in sorted_entries(&target.join(&ks_rel))? {
            let Some(name) = table_dir.to_str() else {
                continue;
            };
            if name.starts_with('.') || !matches!(kind, EntryKind::Dir | EntryKind::Link) {
                continue;
            }
            let (table, _id) = parse_table_dir(name);
            if !(scope.covers)(ks, Some(&table)) {
                continue;
            }
            let rel = ks_rel.join(name);
            if kind == EntryKind::Link && planned_dirs.contains(rel.as_path()) {
                continue;
            }
            if kind == EntryKind::Link {
                return Err(QuarantineError::LinkInScope {
                    path: target.join(rel),
                });
            }
            extras_below(target, &rel, true, scope, &planned_dirs, &mut out)?;
        }
    }
    Ok(out)
}

/// The extras of one covered directory (`top`: a table directory itself).
fn extras_below(
    target: &Path,
    rel: &Path,
    top: bool,
    scope: &Scope,
    planned_dirs: &HashSet<&Path>,
    out: &mut Vec<Entry>,
) -> Result<(), QuarantineError> {
    for (name, kind) in sorted_entries(&target.join(rel))? {
        if top && !scope.with_snapshots && (name == "snapshots" || name == "backups") {
            continue;
        }
        let child = rel.join(&name);
        if scope.planned.contains(&child) {
            continue;
        }
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".partial"))
            && scope.planned.contains(&rel.join(stem))
        {
            continue;
        }
        if kind == EntryKind::Dir && planned_dirs.contains(child.as_path()) {
            extras_below(target, &child, false, scope, planned_dirs, out)?;
            continue;
        }
        let (files, bytes) = weigh(&target.join(&child), kind)?;
        out.push(Entry {
            path: child,
            kind,
            files,
            bytes,
        });
    }
    Ok(())
}

/// A directory's entries by name, with what each is (links not followed).
fn sorted_entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, EntryKind)>, QuarantineError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let ft = entry.file_type().map_err(io(&entry.path()))?;
        entries.push((entry.file_name(), kind_of(ft)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

fn kind_of(ft: fs::FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Link
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// Regular files and bytes at `path` (below it, for a directory; links not followed).
fn weigh(path: &Path, kind: EntryKind) -> Result<(u64, u64), QuarantineError> {
    match kind {
        EntryKind::File => Ok((1, fs::symlink_metadata(path).map_err(io(path))?.len())),
        EntryKind::Dir => {
            let (mut files, mut bytes) = (0, 0);
            for entry in walkdir::WalkDir::new(path).follow_links(false) {
                let entry = entry.map_err(|e| QuarantineError::Io {
                    path: e.path().unwrap_or(path).to_path_buf(),
                    source: e.into(),
                })?;
                if entry.file_type().is_file() {
                    files += 1;
                    let meta = entry.metadata().map_err(|e| QuarantineError::Io {
                        path: entry.path().to_path_buf(),
                        source: e.into(),
                    })?;
                    bytes += meta.len();
                }
            }
            Ok((files, bytes))
        }
        EntryKind::Link | EntryKind::Other => Ok((0, 0)),
    }
}

/// The quarantine directory a restore into `target` at `now` uses: a new directory
/// `tablesafe-quarantine-<target name>-<UTC time>` in `parent` (default: the target's
/// parent directory). Checks that it is outside every data directory and on the
/// target's filesystem; makes nothing (the directory is made by [`Quarantine::create`]).
pub fn location(
    target: &Path,
    parent: Option<&Path>,
    now: Micros,
) -> Result<PathBuf, QuarantineError> {
    let target = fs::canonicalize(target).map_err(io(target))?;
    let parent = match parent {
        Some(p) => {
            let p = canonical_to_be(p)?;
            if p.starts_with(&target) {
                return Err(QuarantineError::InsideData {
                    dir: p,
                    why: "inside the target",
                });
            }
            p
        }
        None => target
            .parent()
            .ok_or_else(|| QuarantineError::NoParent {
                target: target.clone(),
            })?
            .to_path_buf(),
    };
    // A directory in a data directory would look like a keyspace to Cassandra.
    if ["system", "system_schema"]
        .iter()
        .any(|ks| parent.join(ks).is_dir())
    {
        return Err(QuarantineError::InsideData {
            dir: parent,
            why: "a Cassandra data directory (it holds system keyspaces)",
        });
    }
    // The parent may not exist yet: its nearest existing ancestor says where it will be.
    let existing = parent.ancestors().find(|a| a.exists()).unwrap_or(&parent);
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).map_err(io(p));
    if dev(existing)? != dev(&target)? {
        return Err(QuarantineError::OtherFilesystem {
            dir: parent,
            target,
        });
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(now)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| now.to_string());
    Ok(parent.join(format!("tablesafe-quarantine-{name}-{time}")))
}

/// `p` made absolute with every link of its existing part resolved, without making it.
fn canonical_to_be(p: &Path) -> Result<PathBuf, QuarantineError> {
    let mut rest = Vec::new();
    let mut base = p;
    loop {
        match fs::canonicalize(base) {
            Ok(mut c) => {
                c.extend(rest.iter().rev());
                return Ok(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (base.parent(), base.file_name()) else {
                    return Err(io(p)(e));
                };
                rest.push(name);
                base = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            Err(e) => return Err(io(p)(e)),
        }
    }
}

/// A quarantine being filled: entries renamed into it keep their path below the target.
pub struct Quarantine {
    target: PathBuf,
    dir: PathBuf,
    /// Directories whose entries changed, fsynced at the end.
    touched: BTreeSet<PathBuf>,
}

impl Quarantine {
    /// Makes the quarantine directory `dir` (from [`location`]), or `dir-2`, `dir-3`… when
    /// it exists: a quarantine is always new, so no move can replace anything.
    pub fn create(target: &Path, dir: &Path) -> Result<Quarantine, QuarantineError> {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut n = 1;
        loop {
            let candidate = if n == 1 {
                dir.to_path_buf()
            } else {
                PathBuf::from(format!("{}-{n}", dir.display()))
            };
            match fs::create_dir(&candidate) {
                Ok(()) => {
                    let mut touched = BTreeSet::new();
                    if let Some(parent) = candidate.parent() {
                        touched.insert(parent.to_path_buf());
                    }
                    return Ok(Quarantine {
                        target: target.to_path_buf(),
                        dir: candidate,
                        touched,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io(&candidate)(e)),
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renames `target/rel` to `<quarantine>/rel`: atomic, so a kill leaves it in one
    /// place or the other.
    pub fn take(&mut self, rel: &Path) -> Result<(), QuarantineError> {
        let from = self.target.join(rel);
        let to = self.dir.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
            self.touched.extend(
                parent
                    .ancestors()
                    .take_while(|d| d.starts_with(&self.dir))
                    .map(Path::to_path_buf),
            );
        }
        if fs::symlink_metadata(&to).is_ok() {
            return Err(QuarantineError::Exists { path: to });
        }
        fs::rename(&from, &to).map_err(io(&from))?;
        if let Some(parent) = from.parent() {
            self.touched.insert(parent.to_path_buf());
        }
        Ok(())
    }

    /// Makes every move durable.
    pub fn finish(self) -> Result<PathBuf, QuarantineError> {
        for dir in &self.touched {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, rel).unwrap();
    }

    #[test]
    fn only_covered_table_directories_are_searched_and_a_restores_own_partials_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("data");
        let table = "ks1/t-0123456789abcdef0123456789abcdef";
        for rel in [
            "notes.txt",
            "ks1/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db",
            "ks1/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db.partial",
            "ks1/t-0123456789abcdef0123456789abcdef/nb-2-big-Data.db",
            "ks1/t-0123456789abcdef0123456789abcdef/nb-2-big-Data.db.partial",
            "ks1/t-0123456789abcdef0123456789abcdef/nb_txn_flush_x.log",
            "ks1/t-0123456789abcdef0123456789abcdef/.idx/nb-1-big-Data.db",
            "ks1/t-0123456789abcdef0123456789abcdef/.idx/nb-3-big-Data.db",
            "ks1/t-0123456789abcdef0123456789abcdef/.gone/nb-3-big-Data.db",
            "ks1/t-0123456789abcdef0123456789abcdef/snapshots/s/nb-9-big-Data.db",
            "ks1/t-0123456789abcdef0123456789abcdef/backups/nb-9-big-Data.db",
            "ks1/t-fedcba9876543210fedcba9876543210/nb-7-big-Data.db",
            "ks1/other-0123456789abcdef0123456789abcdef/nb-1-big-Data.db",
            "ks2/t-0123456789abcdef0123456789abcdef/nb-5-big-Data.db",
        ] {
            touch(&t, rel);
        }
        let planned: HashSet<PathBuf> = [
            format!("{table}/nb-1-big-Data.db"),
            format!("{table}/.idx/nb-1-big-Data.db"),
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        let covers = |ks: &str, t: Option<&str>| ks == "ks1" && t.is_none_or(|t| t == "t");
        let scope = Scope {
            covers: &covers,
            with_snapshots: false,
            planned: &planned,
        };
        let found: Vec<(String, EntryKind, u64)> = find_extras(&t, &scope)
            .unwrap()
            .into_iter()
            .map(|e| (e.path.display().to_string(), e.kind, e.files))
            .collect();
        let f = |rel: &str, kind, files| (rel.to_string(), kind, files);
        assert_eq!(
            found,
            [
                f(&format!("{table}/.gone"), EntryKind::Dir, 1),
                f(
                    &format!("{table}/.idx/nb-3-big-Data.db"),
                    EntryKind::File,
                    1
                ),
                f(&format!("{table}/nb-2-big-Data.db"), EntryKind::File, 1),
                f(
                    &format!("{table}/nb-2-big-Data.db.partial"),
                    EntryKind::File,
                    1
                ),
                f(&format!("{table}/nb_txn_flush_x.log"), EntryKind::File, 1),
                f(
                    "ks1/t-fedcba9876543210fedcba9876543210/nb-7-big-Data.db",
                    EntryKind::File,
                    1
                ),
            ]
        );
        let scope = Scope {
            with_snapshots: true,
            ..scope
        };
        let found: Vec<String> = find_extras(&t, &scope)
            .unwrap()
            .into_iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert!(found.contains(&format!("{table}/snapshots")), "{found:?}");
        assert!(found.contains(&format!("{table}/backups")), "{found:?}");
    }

    #[test]
    fn a_link_in_a_covered_place_is_refused_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("data");
        touch(
            tmp.path(),
            "elsewhere/t-0123456789abcdef0123456789abcdef/x-Data.db",
        );
        fs::create_dir_all(t.join("ks1")).unwrap();
        std::os::unix::fs::symlink(
            tmp.path()
                .join("elsewhere/t-0123456789abcdef0123456789abcdef"),
            t.join("ks1/t-0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        let planned = HashSet::new();
        let covers = |_: &str, _: Option<&str>| true;
        let scope = Scope {
            covers: &covers,
            with_snapshots: false,
            planned: &planned,
        };
        let e = find_extras(&t, &scope).unwrap_err();
        assert!(matches!(e, QuarantineError::LinkInScope { .. }), "{e}");
        // A link inside a table directory is an entry, moved as a link.
        fs::remove_file(t.join("ks1/t-0123456789abcdef0123456789abcdef")).unwrap();
        touch(
            &t,
            "ks1/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db",
        );
        std::os::unix::fs::symlink(
            tmp.path().join("elsewhere"),
            t.join("ks1/t-0123456789abcdef0123456789abcdef/link"),
        )
        .unwrap();
        let found = find_extras(&t, &scope).unwrap();
        let kinds: Vec<EntryKind> = found.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EntryKind::Link, EntryKind::File]);
        let dir = location(&t, None, 0).unwrap();
        assert_eq!(dir.parent().unwrap(), fs::canonicalize(tmp.path()).unwrap());
        let mut q = Quarantine::create(&t, &dir).unwrap();
        for e in &found {
            q.take(&e.path).unwrap();
        }
        let dir = q.finish().unwrap();
        assert!(
            fs::symlink_metadata(dir.join("ks1/t-0123456789abcdef0123456789abcdef/link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            tmp.path()
                .join("elsewhere/t-0123456789abcdef0123456789abcdef/x-Data.db")
                .is_file()
        );
        // A second quarantine at the same time is a new directory.
        let again = Quarantine::create(&t, &location(&t, None, 0).unwrap()).unwrap();
        assert_ne!(again.dir(), dir);
    }

    #[test]
    fn the_quarantine_is_never_inside_a_data_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir_all(data.join("system")).unwrap();
        let target = data.join("restore");
        fs::create_dir_all(&target).unwrap();
        let e = location(&target, None, 0).unwrap_err();
        assert!(matches!(e, QuarantineError::InsideData { .. }), "{e}");
        let e = location(&data, Some(&data.join("q")), 0).unwrap_err();
        assert!(matches!(e, QuarantineError::InsideData { .. }), "{e}");
        // A DIR that does not exist yet is fine, and nothing is made until a move.
        let q = location(&data, Some(&tmp.path().join("q/r")), 0).unwrap();
        let tmp_dir = fs::canonicalize(tmp.path()).unwrap();
        assert_eq!(q.parent().unwrap(), tmp_dir.join("q/r"));
        assert!(!tmp_dir.join("q").exists());
    }
}
