//! Walking a data directory (or any tree of table directories) to every directory that
//! holds Cassandra files, with the table and location each one belongs to.
//!
//! The keyspace and table of a directory come from the last `<keyspace>/<table>` pair
//! above it (after peeling `snapshots/<tag>`, `backups` and `.<index>`), so a whole data
//! directory, a keyspace or table directory, or a loose tree of copied table directories
//! all work. A directory holding `<table>-<id>` directories is a keyspace directory, and a
//! directory nested anywhere inside a table directory is not a table: files in either are
//! reported as skipped.
//!
//! Symbolic links to directories are followed, as Cassandra follows them (operators link
//! a keyspace or table directory, or `snapshots/`, to another disk): what is below is
//! reported under the link's path, the path Cassandra sees, never the target's. A link
//! back to a directory the walk is already inside is a loop: reported as skipped, not
//! followed again. A link whose target cannot be reached (its disk unmounted) and whose
//! name is a directory's (no `.` but a leading one, or a snapshot's tag) is
//! [`Visit::Unreadable`]: what it led to may well still exist. Symbolic links to files
//! are never read (Cassandra never makes them in a table directory): reported as skipped.
//!
//! A directory that cannot be listed (or a file in it that cannot be read) for any reason
//! but "not found" is [`Visit::Unreadable`], never an empty directory: its files may well
//! be there, so a backup must not take their absence from the listing as deletion. A
//! directory gone since its parent was listed is simply not visited.
//!
//! Both `tablesafe inspect` ([`super::inventory`]) and backup passes use this walk.

use std::path::{Path, PathBuf};

use super::classify::{Location, TablePlace, parse_table_dir, place_of};
use super::sstable_dir::{SSTableDir, Skipped, scan_dir};

/// A directory holding Cassandra files.
#[derive(Debug)]
pub struct FoundDir {
    /// The directory as reached from the root given (relative roots stay relative).
    pub dir: PathBuf,
    /// Its table directory, in the same form.
    pub table_dir: PathBuf,
    /// The absolute path of the directory holding the keyspace directory: the Cassandra
    /// data directory this table belongs to.
    pub data_dir: PathBuf,
    pub place: TablePlace,
    pub scan: SSTableDir,
}

/// What the walk reports, in walk order.
#[derive(Debug)]
pub enum Visit {
    Dir(Box<FoundDir>),
    Skipped(Skipped),
    /// A directory whose files could not all be seen (EIO, EACCES, …), with the reason.
    Unreadable(Skipped),
}

/// Why a walk could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot read data directory {path}: {source} (check the path and permissions)")]
pub struct WalkError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Walks `root`, calling `visit` for every directory with Cassandra files and for every
/// file or directory skipped (with the reason).
pub fn walk(root: &Path, mut visit: impl FnMut(Visit)) -> Result<(), WalkError> {
    let root_error = |source| WalkError {
        path: root.to_path_buf(),
        source,
    };
    let absolute = logical_absolute(root).map_err(root_error)?;
    if !absolute.is_dir() {
        return Err(root_error(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.loop_ancestor().is_some() => {
                visit(Visit::Skipped(Skipped {
                    path: e
                        .path()
                        .map_or_else(|| root.to_path_buf(), Path::to_path_buf),
                    reason: format!(
                        "symbolic link loop: it leads back to {}, which is walked already; not followed again",
                        e.loop_ancestor()
                            .map(Path::display)
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    ),
                }));
                continue;
            }
            Err(e) if e.path().is_some_and(is_link) => {
                let link = e.path().map(Path::to_path_buf).unwrap_or_default();
                visit(dangling(link, &e));
                continue;
            }
            // Gone since its parent was listed (a snapshot being cleared): nothing to see.
            Err(e)
                if e.io_error().map(std::io::Error::kind) == Some(std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => {
                visit(Visit::Unreadable(Skipped {
                    path: e
                        .path()
                        .map_or_else(|| root.to_path_buf(), Path::to_path_buf),
                    reason: format!("cannot read: {e}"),
                }));
                continue;
            }
        };
        if !entry.file_type().is_dir() {
            continue;
        }
        let dir = entry.path();
        let scan = match scan_dir(dir) {
            Ok(s) => s,
            // Gone since its parent was listed (a snapshot being cleared): nothing to see.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                visit(Visit::Unreadable(Skipped {
                    path: dir.to_path_buf(),
                    reason: format!("cannot list directory: {e}"),
                }));
                continue;
            }
        };
        for s in &scan.skipped {
            visit(Visit::Skipped(s.clone()));
        }
        for s in &scan.unreadable {
            visit(Visit::Unreadable(s.clone()));
        }
        if scan.is_empty() {
            continue;
        }
        let absolute_dir = absolute.join(dir.strip_prefix(root).unwrap_or(Path::new("")));
        let place = if scan.table_subdirs.is_empty() {
            place_for(&absolute_dir)
        } else {
            Err("keyspace directory (it holds <table>-<id> directories)".to_string())
        };
        match place {
            Ok((place, levels)) => {
                let table_dir = dir.ancestors().nth(levels).unwrap_or(dir).to_path_buf();
                let data_dir = absolute_dir
                    .ancestors()
                    .nth(levels + 2)
                    .unwrap_or(&absolute_dir)
                    .to_path_buf();
                visit(Visit::Dir(Box::new(FoundDir {
                    dir: dir.to_path_buf(),
                    table_dir,
                    data_dir,
                    place,
                    scan,
                })));
            }
            Err(why) => {
                let reason =
                    format!("Cassandra file outside any <keyspace>/<table> directory: {why}");
                let components = scan
                    .sstables
                    .iter()
                    .flat_map(|s| &s.components)
                    .map(|c| &c.file_name);
                let logs = scan.txn_logs.iter().map(|l| &l.file_name);
                let others = scan.other_files.iter().map(|o| &o.file_name);
                for name in components.chain(logs).chain(others) {
                    visit(Visit::Skipped(Skipped {
                        path: dir.join(name),
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }
    Ok(())
}

/// `path` made absolute the way backups record it: symbolic links above the data
/// directory resolved (a data directory reached through `/var/lib/cassandra` → `/data`
/// is recorded once, whatever path it was given by), links Cassandra follows inside it
/// kept as the path Cassandra sees: a link named `<table>-<id>`, a link to a keyspace
/// directory (one holding `<table>-<id>` directories), and `snapshots`, `backups` or a
/// snapshot's tag below a table directory. Fails as `canonicalize` does when `path`
/// cannot be reached.
pub fn logical_absolute(path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    std::fs::metadata(path)?;
    let absolute = std::path::absolute(path)?;
    if absolute
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return std::fs::canonicalize(path);
    }
    // Once inside a table directory or a kept link, every further link is kept.
    let mut keep_all = false;
    let mut resolved = PathBuf::from("/");
    for c in absolute.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        let next = resolved.join(name);
        let is_table = parse_table_dir(&name.to_string_lossy()).1.is_some();
        if is_link(&next) {
            let kept = keep_all
                || is_table
                || std::fs::read_dir(&next).is_ok_and(|entries| {
                    entries.flatten().any(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| parse_table_dir(n).1.is_some())
                    })
                });
            if kept {
                keep_all = true;
                resolved = next;
            } else {
                resolved = std::fs::canonicalize(&next)?;
            }
        } else {
            resolved = next;
        }
        keep_all = keep_all || is_table;
    }
    Ok(resolved)
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// A symbolic link whose target cannot be reached: unreadable when it looks like a
/// directory's link (what it led to may still exist, on a disk unmounted), else skipped.
fn dangling(link: PathBuf, e: &walkdir::Error) -> Visit {
    let target = std::fs::read_link(&link)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_snapshots = link
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|p| p == "snapshots");
    let dir_like = !name.trim_start_matches('.').contains('.') || in_snapshots;
    let cause = e
        .io_error()
        .map_or_else(|| e.to_string(), ToString::to_string);
    let skipped = Skipped {
        reason: if dir_like {
            format!(
                "symbolic link to {target}, which cannot be reached ({cause}); is its disk mounted?"
            )
        } else {
            format!("symbolic link to {target}, which cannot be reached ({cause}); not read")
        },
        path: link,
    };
    if dir_like {
        Visit::Unreadable(skipped)
    } else {
        Visit::Skipped(skipped)
    }
}

/// The table place of a directory given by its absolute path, and how many levels the
/// directory sits below its table directory.
fn place_for(absolute_dir: &Path) -> Result<(TablePlace, usize), String> {
    let names: Option<Vec<&str>> = absolute_dir
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_str()),
            _ => None,
        })
        .collect();
    let names = names.ok_or("a directory name on the path is not valid UTF-8")?;
    let place = place_of(&names, false)?;
    let levels = match &place.location {
        Location::Live => 0,
        Location::Backups => 1,
        Location::Snapshot(_) => 2,
    } + usize::from(place.index.is_some());
    Ok((place, levels))
}
