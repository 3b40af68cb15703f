//! Point-in-time restore: the exact files a node had at a moment, verified, into a target
//! directory.
//!
//! Planning reads only the catalog: the file versions live at the chosen time (a time, or
//! a named point), filtered by keyspace and table. Nothing is LISTed in the repository.
//!
//! Every file is written by [`Repository::get_to_file_deferring_dir_sync`]: streamed,
//! decompressed and hashed into `<file>.partial`, fsynced, checked against its BLAKE3 id,
//! and only then renamed into place, so a final path never holds a byte that was not
//! verified, even after a crash. The directories are fsynced once each at the end, which
//! makes the renames durable before the restore reports success. Each file's mtime
//! is set back to what the node had, on the `.partial` file before its fsync, so it is
//! as durable as the bytes. Content is downloaded once: other files with the
//! same bytes are hard-linked where Cassandra had hard links (`snapshots/`, `backups/`)
//! and copied locally otherwise.
//!
//! A restore gives exactly the point: with `--overwrite`, what the restored table
//! directories hold that the point does not, and the files at the point's paths that hold
//! other bytes, are renamed into a quarantine outside the data directory before anything
//! is downloaded (see [`crate::quarantine`]); `--resume` refuses a target holding such
//! files, and `--keep-extra` leaves them. Filters that select no table of the point are
//! an error, not an empty restore.
//!
//! A restore can be run again after an interruption (`--resume`): a file already in place
//! whose content hashes to the planned blob is skipped. A file that fails (missing or
//! damaged blob, full disk) is reported by name and the rest still restore.
//!
//! Paths come from the catalog, which comes from the repository: each one is checked to
//! stay inside the target (no `..`, no absolute paths, no symbolic links on the way).
//! Restore never follows or replaces a link it did not create: `<file>.partial` is created
//! `O_EXCL | O_NOFOLLOW` (`store::create_partial`), and a rename or copy onto anything but
//! a regular file is refused (`store::check_replaceable`). A target that is, is inside or
//! holds a running Cassandra's data directory is refused without `--force`, and so is a
//! time more than a few seconds ahead of this host's clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Component as PathComponent, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use serde::Serialize;

use crate::backup::filter::{glob_match, is_system_keyspace};
use crate::cassandra::{FileKind, Location, classify};
use crate::catalog::{
    Catalog, CatalogError, FileVersion, Hash32, PackedAt, SnapshotFilter, SnapshotRow,
};
use crate::inflight::Budget;
pub use crate::progress::Progress;
pub use crate::quarantine::Entry;
use crate::quarantine::{Quarantine, Scope, find_extras, location};
use crate::store::pack::PackExtract;
use crate::store::{BlobId, Repository, check_replaceable, create_partial, hash_file};
use crate::timespec::{self, Micros};

/// How restored files are laid out under the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `<ks>/<table>-<id>/…` as on the node: for a node restart or `nodetool import`.
    Data,
    /// `<ks>/<table>/…` live SSTables only: for `sstableloader`.
    Sstableloader,
}

/// What to do with a target that already holds files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingFiles {
    /// The target must be empty (or absent).
    Refuse,
    /// Keep files already in place with the right content; fill in the rest.
    Resume,
    /// Replace whatever is in the way.
    Overwrite,
}

/// The point to restore.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time: Micros,
    /// The snapshot name when one was asked for (or matches the time exactly).
    pub snapshot: Option<String>,
}

/// A restore request.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub node: String,
    pub to: PathBuf,
    pub layout: Layout,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub include_system: bool,
    /// Also restore `snapshots/<tag>/` and `backups/` (data layout only).
    pub include_snapshots: bool,
    pub existing: ExistingFiles,
    /// Restore into a live Cassandra data directory even if a Cassandra process runs.
    pub force: bool,
    pub parallel: usize,
}

/// One file to restore.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    #[serde(flatten)]
    pub version: FileVersion,
    /// Path below the target.
    pub dest: PathBuf,
}

/// A restored table, for the next-step commands.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlannedTable {
    pub keyspace: String,
    pub table: String,
    /// Directory below the target.
    pub dir: PathBuf,
    /// SSTable format versions seen (`nb`, `mc`, …): they decide import vs refresh.
    pub versions: BTreeSet<String>,
}

/// What a restore will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub node: String,
    pub point: Point,
    pub files: Vec<PlannedFile>,
    pub bytes: u64,
    pub tables: Vec<PlannedTable>,
    /// Contents read from a pack rather than their own blob (see `store::pack`).
    #[serde(skip)]
    pub packed: HashMap<Hash32, PackedAt>,
}

/// Why a restore cannot go ahead, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "node {node:?} has no backup history in this catalog or repository (check --node; nodes with history: {known})"
    )]
    NoHistory { node: String, known: String },
    #[error(
        "{asked} is before the first backup of node {node:?}: restorable times are {earliest} to now (last change recorded {latest})"
    )]
    BeforeHistory {
        node: String,
        asked: String,
        earliest: String,
        latest: String,
    },
    #[error(
        "{asked} is no longer restorable for node {node:?}: gc's retention (applied {applied}) keeps every instant from {keep_from} on and, before that, only {points} retained snapshot times; restore a snapshot (`tablesafe snapshot list`) or a time from {keep_from} on"
    )]
    NotRetained {
        node: String,
        asked: String,
        applied: String,
        keep_from: String,
        points: usize,
    },
    #[error("{input:?} is neither a time nor a snapshot of node {node:?}{nearest}")]
    UnknownPoint {
        input: String,
        node: String,
        nearest: String,
    },
    #[error(
        "{input:?} is {ahead} in the future (now is {now}): a restore gives what the node had at a moment already past; give a past time, or `now`"
    )]
    FutureTime {
        input: String,
        ahead: String,
        now: String,
    },
    #[error(
        "refusing to restore {path}: {reason} (the catalog or repository entry may be crafted or damaged)"
    )]
    UnsafePath { path: String, reason: String },
    #[error(
        "refusing to restore {path}: {link} in the target is a symbolic link, and restore never writes through one: remove it or choose another target"
    )]
    LinkInTarget { path: String, link: PathBuf },
    #[error(
        "target {dir} is not empty: use --resume to continue an interrupted restore, or --overwrite to replace what is there"
    )]
    TargetNotEmpty { dir: PathBuf },
    #[error(
        "target {dir} is, is inside, or holds the data directory of a running Cassandra node (pid {pid}): stop Cassandra first, restore elsewhere, or pass --force"
    )]
    LiveCassandra { dir: PathBuf, pid: u32 },
    #[error(
        "{path} would be restored twice with different content (from {first} and {second}), and a target holds one file per path: for snapshot files, leave out --include-snapshots; with --layout sstableloader, use --layout data"
    )]
    SamePath {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error(
        "nothing to restore: no table of node {node:?} at {point} matches {filter}; the point has files in {tables} ({hint})"
    )]
    NothingSelected {
        node: String,
        point: String,
        filter: String,
        tables: String,
        hint: String,
    },
    #[error(
        "target {dir} holds {count} entries the point does not have in the table directories restored (first: {first}), and Cassandra would load them: pass --overwrite to move them to a quarantine beside the target, or --keep-extra to keep them"
    )]
    ExtraInTarget {
        dir: PathBuf,
        count: usize,
        first: String,
    },
    #[error(transparent)]
    Quarantine(#[from] crate::quarantine::QuarantineError),
    #[error(
        "{reason}; the {moved} entries moved before are in {dir} (nothing was deleted): fix the cause and run again with --overwrite"
    )]
    QuarantineCutShort {
        reason: String,
        moved: usize,
        dir: PathBuf,
    },
    #[error("{path} exists with different content: pass --overwrite to replace it")]
    Conflict { path: PathBuf },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "{failed} of {total} file(s) could not be restored (first: {first}); the others are in place; fix the cause and run again with --resume"
    )]
    FilesFailed {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// How far past this host's clock `--at` may be and still mean "now": clock skew between
/// the host that typed the time and this one. Anything later is refused: the catalog
/// cannot say what the node will hold then, and restoring "now" instead would be
/// restoring something other than what was asked.
const FUTURE_TOLERANCE: Micros = 5_000_000;

/// Resolves WHEN: a snapshot name or id of the node, else a time (never one more than
/// [`FUTURE_TOLERANCE`] ahead of this host's clock, or of the node's last recorded time
/// when that is later).
pub fn resolve_point(catalog: &Catalog, node: &str, when: &str) -> Result<Point, RestoreError> {
    let snapshots = catalog.snapshots(&SnapshotFilter {
        node: Some(node.to_string()),
        ..SnapshotFilter::default()
    })?;
    if let Some(s) = snapshots
        .iter()
        .find(|s| s.name == when || s.id.to_string() == when)
    {
        return Ok(Point {
            time: s.time,
            snapshot: Some(s.name.clone()),
        });
    }
    // The node's "now" is never before the last time its history records: a node whose
    // clock stepped back records times after its last (`timespec::NodeClock`), and a
    // host still behind must neither restore an older state for `now` nor refuse those
    // times as being in the future.
    let recorded = catalog.last_recorded_time(node)?.unwrap_or(Micros::MIN);
    let now = timespec::now().max(recorded);
    match timespec::parse_at(when, now) {
        Ok(time) if time > now + FUTURE_TOLERANCE => Err(RestoreError::FutureTime {
            input: when.to_string(),
            ahead: format!("{}s", (time - now) / 1_000_000),
            now: timespec::format(now),
        }),
        Ok(time) => Ok(Point {
            time,
            snapshot: snapshots
                .iter()
                .find(|s| s.time == time)
                .map(|s| s.name.clone()),
        }),
        Err(_) => Err(RestoreError::UnknownPoint {
            input: when.to_string(),
            node: node.to_string(),
            nearest: nearest_names(&snapshots, when),
        }),
    }
}

fn nearest_names(snapshots: &[SnapshotRow], wanted: &str) -> String {
    let names = crate::catalog::nearest_snapshot_names(snapshots, wanted);
    if names.is_empty() {
        String::new()
    } else {
        format!("; nearest snapshot names: {}", names.join(", "))
    }
}

/// Plans a restore from the catalog alone.
pub fn plan(catalog: &Catalog, point: Point, opts: &RestoreOptions) -> Result<Plan, RestoreError> {
    let node = opts.node.as_str();
    let _one_state = catalog.read_snapshot()?;
    // History gc thinned: the versions of that instant may be partly forgotten.
    let retention = catalog.retention(node)?;
    if let Some(retention) = &retention
        && !retention.keeps(point.time)
    {
        return Err(RestoreError::NotRetained {
            node: node.to_string(),
            asked: timespec::format_precise(point.time),
            applied: timespec::format_precise(retention.applied_at),
            keep_from: timespec::format_precise(retention.keep_from),
            points: retention.points.len(),
        });
    }
    // A named point, or an instant retention vouches for, may well have held no files;
    // any other time before the first file is most likely a mistyped time.
    if point.snapshot.is_none() && retention.is_none() {
        let Some((earliest, latest)) = catalog.history_bounds(node)? else {
            let mut known: Vec<String> = catalog
                .snapshots(&SnapshotFilter::default())?
                .into_iter()
                .map(|s| s.node)
                .collect();
            known.sort();
            known.dedup();
            return Err(RestoreError::NoHistory {
                node: node.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        if point.time < earliest {
            return Err(RestoreError::BeforeHistory {
                node: node.to_string(),
                asked: timespec::format_precise(point.time),
                earliest: timespec::format_precise(earliest),
                latest: timespec::format_precise(latest),
            });
        }
    }
    let mut files: Vec<PlannedFile> = Vec::new();
    let mut tables: BTreeMap<PathBuf, PlannedTable> = BTreeMap::new();
    // Several data directories (or table ids, for sstableloader) can map to one path.
    let mut by_dest: HashMap<PathBuf, usize> = HashMap::new();
    // The tables the point has files in, to say so when the filters select none of them.
    let mut at_point: BTreeSet<String> = BTreeSet::new();
    let mut selected_any = false;
    for version in catalog.live_at(node, point.time)? {
        let key = &version.key;
        if !covers(opts, &key.keyspace, Some(&key.table)) {
            at_point.insert(format!("{}.{}", key.keyspace, key.table));
            continue;
        }
        selected_any = true;
        let relative = key.data_relative_path();
        let classified = classify(Path::new(&relative));
        let Some(place) = classified.place else {
            return Err(unsafe_path(&relative, "not a <keyspace>/<table>/… path"));
        };
        let live = place.location == Location::Live;
        if !live && (opts.layout == Layout::Sstableloader || !opts.include_snapshots) {
            continue;
        }
        let (table_dir, rel_in_table) = match opts.layout {
            Layout::Data => (
                PathBuf::from(&key.keyspace).join(key.table_dir_name()),
                key.rel_path.clone(),
            ),
            Layout::Sstableloader => {
                // sstableloader rebuilds secondary indexes itself.
                if place.index.is_some() {
                    continue;
                }
                (
                    PathBuf::from(&key.keyspace).join(&key.table),
                    key.rel_path.clone(),
                )
            }
        };
        let dest = checked_relative(&table_dir.join(&rel_in_table), &relative)?;
        if let Some(&i) = by_dest.get(&dest) {
            // The same bytes (a snapshot's manifest and schema in every data directory)
            // are one file in the target.
            let other = &files[i].version;
            if other.hash == version.hash {
                continue;
            }
            let source =
                |v: &FileVersion| format!("{}/{}", v.key.data_dir, v.key.data_relative_path());
            return Err(RestoreError::SamePath {
                path: dest,
                first: source(other),
                second: source(&version),
            });
        }
        by_dest.insert(dest.clone(), files.len());
        let entry = tables
            .entry(table_dir.clone())
            .or_insert_with(|| PlannedTable {
                keyspace: key.keyspace.clone(),
                table: key.table.clone(),
                dir: table_dir.clone(),
                versions: BTreeSet::new(),
            });
        if let FileKind::Component(name) = &classified.kind {
            entry.versions.insert(name.descriptor.version.to_string());
        }
        files.push(PlannedFile { version, dest });
    }
    if !selected_any && !at_point.is_empty() {
        return Err(nothing_selected(opts, &point, at_point));
    }
    let bytes = files.iter().map(|f| f.version.size).sum();
    let mut packed = HashMap::new();
    for f in &files {
        let hash = f.version.hash;
        if !packed.contains_key(&hash)
            && let Some(at) = catalog.pack_location(&hash)?
        {
            packed.insert(hash, at);
        }
    }
    Ok(Plan {
        node: node.to_string(),
        point,
        files,
        bytes,
        tables: tables.into_values().collect(),
        packed,
    })
}

/// Whether the restore's filters select this keyspace (table `None`: any of its tables)
/// or table.
fn covers(opts: &RestoreOptions, keyspace: &str, table: Option<&str>) -> bool {
    if is_system_keyspace(keyspace) && !opts.include_system {
        return false;
    }
    if !opts.keyspaces.is_empty() && !opts.keyspaces.iter().any(|g| glob_match(g, keyspace)) {
        return false;
    }
    match table {
        Some(t) => opts.tables.is_empty() || opts.tables.iter().any(|g| glob_match(g, t)),
        None => true,
    }
}

/// The point has files, but none in a table the filters select.
fn nothing_selected(
    opts: &RestoreOptions,
    point: &Point,
    at_point: BTreeSet<String>,
) -> RestoreError {
    let mut filter: Vec<String> = Vec::new();
    for g in &opts.keyspaces {
        filter.push(format!("--keyspace {g}"));
    }
    for g in &opts.tables {
        filter.push(format!("--table {g}"));
    }
    // Tables the filters would select with --include-system.
    let with_system = RestoreOptions {
        include_system: true,
        ..opts.clone()
    };
    let system_selected = !opts.include_system
        && at_point.iter().any(|t| {
            let (ks, table) = t.split_once('.').unwrap_or((t, ""));
            is_system_keyspace(ks) && covers(&with_system, ks, Some(table))
        });
    let filter = if filter.is_empty() {
        "the default filters (no system keyspaces)".to_string()
    } else {
        filter.join(" ")
    };
    const SHOWN: usize = 12;
    let tables: Vec<&str> = at_point.iter().map(String::as_str).take(SHOWN).collect();
    let more = at_point.len().saturating_sub(SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let hint = match &point.snapshot {
        Some(name) => format!("`tablesafe snapshot show {name}` lists them"),
        None => {
            "`tablesafe snapshot list` and `snapshot show NAME` list the points and their tables"
                .into()
        }
    };
    RestoreError::NothingSelected {
        node: opts.node.clone(),
        point: point
            .snapshot
            .clone()
            .unwrap_or_else(|| timespec::format_precise(point.time)),
        filter,
        tables: format!("{}{more}", tables.join(", ")),
        hint: if system_selected {
            format!("add --include-system to restore system keyspaces; {hint}")
        } else {
            hint
        },
    }
}

fn unsafe_path(path: &str, reason: &str) -> RestoreError {
    RestoreError::UnsafePath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// A relative path made only of plain names: no `..`, `.`, root or prefix.
fn checked_relative(path: &Path, shown: &str) -> Result<PathBuf, RestoreError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            PathComponent::Normal(part) if !part.is_empty() => out.push(part),
            PathComponent::ParentDir => return Err(unsafe_path(shown, "it contains '..'")),
            PathComponent::RootDir | PathComponent::Prefix(_) => {
                return Err(unsafe_path(shown, "it is absolute"));
            }
            _ => return Err(unsafe_path(shown, "it contains an empty or '.' component")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(unsafe_path(shown, "it is empty"));
    }
    Ok(out)
}

/// Creates the parent directories of `target/rel`, refusing to pass through a symbolic
/// link or anything that is not a directory. `checked` holds the directories this
/// restore already checked or created, so that each is looked at once, not once per
/// file under it.
fn prepare_parent(
    target: &Path,
    rel: &Path,
    checked: &mut HashSet<PathBuf>,
) -> Result<PathBuf, RestoreError> {
    let mut dir = target.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        if checked.contains(&dir) {
            continue;
        }
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RestoreError::LinkInTarget {
                    path: rel.display().to_string(),
                    link: dir,
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(unsafe_path(
                    &rel.display().to_string(),
                    &format!("{} in the target is not a directory", dir.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|source| RestoreError::Io {
                    path: dir.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(RestoreError::Io { path: dir, source }),
        }
        checked.insert(dir.clone());
    }
    let dest = target.join(rel);
    if fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(RestoreError::LinkInTarget {
            path: rel.display().to_string(),
            link: dest,
        });
    }
    Ok(dest)
}

/// Checks the target before anything is written.
pub fn check_target(opts: &RestoreOptions) -> Result<(), RestoreError> {
    let to = &opts.to;
    let io = |source| RestoreError::Io {
        path: to.clone(),
        source,
    };
    // Before anything else: a target that does not exist yet may still be inside a live
    // node's data directory.
    if !opts.force
        && let Some(pid) = running_cassandra_using(to)
    {
        return Err(RestoreError::LiveCassandra {
            dir: to.clone(),
            pid,
        });
    }
    match fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
        Ok(m) if m.file_type().is_symlink() => {
            // The target itself may be a link (a mount point's alias); follow it once.
            if !fs::metadata(to).map_err(io)?.is_dir() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "not a directory",
                )));
            }
        }
        Ok(m) if !m.is_dir() => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(_) => {}
    }
    let empty = fs::read_dir(to).map_err(io)?.next().is_none();
    if !empty && opts.existing == ExistingFiles::Refuse {
        return Err(RestoreError::TargetNotEmpty { dir: to.clone() });
    }
    Ok(())
}

/// system.local's table id is the same on every node: its directory marks a data
/// directory Cassandra has started on.
const SYSTEM_LOCAL_DIR: &str = "system/local-7ad54392bcdd35a684174e047860b377";

/// The pid of a running Cassandra that uses a data directory `dir` is, is inside, or
/// contains (a restore into `data/shop` or into the parent of `data` writes into a live
/// node as surely as one into `data`). A running Cassandra is a process whose command
/// line names Cassandra's main class; its data directories (a directory holding
/// `system/local-<id>`) are found from the files it has open, the absolute paths on its
/// command line (`-Dcassandra.storagedir=…`, and their `data/` and `data/data/`), and
/// its working directory (a tarball install runs in its home: `data/data` below it).
fn running_cassandra_using(dir: &Path) -> Option<u32> {
    let target = canonical_or_planned(dir)?;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("org.apache.cassandra.service.CassandraDaemon") {
            continue;
        }
        let overlaps = |data: &Path| target.starts_with(data) || data.starts_with(&target);
        if cassandra_data_dirs(&entry.path(), &cmdline)
            .iter()
            .any(|d| overlaps(d))
        {
            return Some(pid);
        }
    }
    None
}

/// The canonical form of `dir`, or, when it does not exist yet, of its nearest existing
/// ancestor with the rest of the path appended (the directories a restore would create).
fn canonical_or_planned(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    loop {
        if let Ok(found) = fs::canonicalize(at) {
            return Some(rest.iter().rev().fold(found, |p, name| p.join(name)));
        }
        rest.push(at.file_name()?.to_os_string());
        at = at.parent()?;
    }
}

/// The data directories of the Cassandra process whose `/proc` entry is `proc`.
fn cassandra_data_dirs(proc: &Path, cmdline: &str) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut looked = HashSet::new();
    let mut consider = |candidate: &Path, found: &mut BTreeSet<PathBuf>| {
        if looked.insert(candidate.to_path_buf())
            && candidate.join(SYSTEM_LOCAL_DIR).is_dir()
            && let Ok(c) = fs::canonicalize(candidate)
        {
            found.insert(c);
        }
    };
    // Files it has open: the data directory is the ancestor holding system/local.
    if let Ok(fds) = fs::read_dir(proc.join("fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path())
                && target.is_absolute()
            {
                for ancestor in target.ancestors().skip(1) {
                    consider(ancestor, &mut found);
                }
            }
        }
    }
    // Paths on its command line, and where it runs ("/" says nothing).
    let mut roots: Vec<PathBuf> = cmdline
        .split(['\0', ' ', '=', ':'])
        .filter(|t| t.starts_with('/') && t.len() > 1)
        .map(PathBuf::from)
        .collect();
    if let Ok(cwd) = fs::read_link(proc.join("cwd"))
        && cwd.parent().is_some()
    {
        roots.push(cwd);
    }
    for root in roots {
        for candidate in [root.clone(), root.join("data"), root.join("data/data")] {
            consider(&candidate, &mut found);
        }
    }
    found
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    pub files: usize,
    pub bytes: u64,
    /// Files already in place with the right content (resume).
    pub already_in_place: usize,
    /// Files downloaded from the repository.
    pub downloaded: usize,
    /// Snapshot and `backups/` files hard-linked to the same content restored in this run.
    pub linked: usize,
    /// Files copied from another restored file with the same content (not downloaded).
    pub copied: usize,
    /// Files that could not be restored, one line each.
    pub failed: Vec<String>,
    /// Where what the target held besides the point went (nothing is deleted).
    pub quarantine: Option<PathBuf>,
    /// Entries of the restored table directories the point does not have, moved to the
    /// quarantine.
    pub quarantined: Vec<Entry>,
    /// Files of the point the target held with other bytes: moved to the quarantine,
    /// then restored.
    pub replaced: Vec<PathBuf>,
    pub seconds: f64,
}

/// What to do with what the restored table directories hold that the point does not
/// (see `quarantine`).
#[derive(Debug, Clone, Default)]
pub struct ExtraFiles {
    /// Leave such entries in place (`--keep-extra`).
    pub keep: bool,
    /// The directory the quarantine is made in (default: the target's parent).
    pub quarantine_in: Option<PathBuf>,
}

/// What a restore does to the target besides writing the point's files: for `--dry-run`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetChanges {
    /// Entries of the restored table directories the point does not have.
    pub extra: Vec<Entry>,
    /// Planned paths that hold other bytes (`--overwrite`).
    pub replaced: Vec<PathBuf>,
    /// Where both would be moved.
    pub quarantine: Option<PathBuf>,
}

/// The entries of the target's restored table directories the point does not have:
/// none with `--keep-extra`, or in an empty target. Refused for `--resume`, which never
/// moves anything: a restore gives exactly the point or says why it cannot.
fn extras(
    plan: &Plan,
    opts: &RestoreOptions,
    extra: &ExtraFiles,
) -> Result<Vec<Entry>, RestoreError> {
    if extra.keep || opts.existing == ExistingFiles::Refuse || !opts.to.exists() {
        return Ok(Vec::new());
    }
    let planned: HashSet<PathBuf> = plan.files.iter().map(|f| f.dest.clone()).collect();
    let selects = |ks: &str, table: Option<&str>| covers(opts, ks, table);
    let found = find_extras(
        &opts.to,
        &Scope {
            covers: &selects,
            with_snapshots: opts.include_snapshots && opts.layout == Layout::Data,
            planned: &planned,
        },
    )?;
    if opts.existing == ExistingFiles::Resume
        && let Some(first) = found.first()
    {
        return Err(RestoreError::ExtraInTarget {
            dir: opts.to.clone(),
            count: found.len(),
            first: first.path.display().to_string(),
        });
    }
    Ok(found)
}

/// What [`execute_with`] would move out of the target, changing nothing.
pub fn preview(
    plan: &Plan,
    opts: &RestoreOptions,
    extra: &ExtraFiles,
) -> Result<TargetChanges, RestoreError> {
    check_target(opts)?;
    let mut changes = TargetChanges {
        extra: extras(plan, opts, extra)?,
        ..TargetChanges::default()
    };
    if opts.existing == ExistingFiles::Overwrite && opts.to.exists() {
        for f in &plan.files {
            let dest = opts.to.join(&f.dest);
            if in_place(&dest, &f.version.hash, f.version.size)? == Some(false) {
                changes.replaced.push(f.dest.clone());
            }
        }
    }
    if !changes.extra.is_empty() || !changes.replaced.is_empty() {
        changes.quarantine = Some(location(
            &opts.to,
            extra.quarantine_in.as_deref(),
            timespec::now(),
        )?);
    }
    Ok(changes)
}

/// Moves `extra` and `replaced` (paths below the target) into a new quarantine.
fn quarantine(
    opts: &RestoreOptions,
    extra: &ExtraFiles,
    entries: &[Entry],
    replaced: &[PathBuf],
) -> Result<Option<PathBuf>, RestoreError> {
    if entries.is_empty() && replaced.is_empty() {
        return Ok(None);
    }
    let dir = location(&opts.to, extra.quarantine_in.as_deref(), timespec::now())?;
    let mut q = Quarantine::create(&opts.to, &dir)?;
    for (moved, path) in entries.iter().map(|e| &e.path).chain(replaced).enumerate() {
        if let Err(e) = q.take(path) {
            // The chain in one line, here, so that the quarantine is named after it.
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            return Err(RestoreError::QuarantineCutShort {
                reason,
                moved,
                dir: q.dir().to_path_buf(),
            });
        }
    }
    Ok(Some(q.finish()?))
}

/// Whether a file already in place holds the planned content.
fn in_place(path: &Path, hash: &Hash32, size: u64) -> Result<Option<bool>, RestoreError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RestoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if !m.is_file() => Ok(Some(false)),
        Ok(m) if m.len() != size => Ok(Some(false)),
        Ok(_) => Ok(Some(
            hash_file(path).is_ok_and(|(id, _)| id.as_bytes() == hash),
        )),
    }
}

fn system_time(mtime: Micros) -> SystemTime {
    if mtime >= 0 {
        UNIX_EPOCH + Duration::from_micros(mtime as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(mtime.unsigned_abs())
    }
}

fn set_mtime(path: &Path, mtime: Micros) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::File::options()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .set_modified(system_time(mtime))
}

/// Restores every file of the plan; what the restored table directories hold besides
/// is moved to a quarantine (`--overwrite`) or refused (`--resume`).
pub async fn execute(
    repo: &Repository,
    plan: &Plan,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary, RestoreError> {
    execute_with(repo, plan, opts, &ExtraFiles::default(), progress).await
}

/// [`execute`], saying what to do with entries the point does not have.
pub async fn execute_with(
    repo: &Repository,
    plan: &Plan,
    opts: &RestoreOptions,
    extra: &ExtraFiles,
    progress: Arc<Progress>,
) -> Result<RestoreSummary, RestoreError> {
    let started = Instant::now();
    check_target(opts)?;
    let extra_entries = extras(plan, opts, extra)?;
    fs::create_dir_all(&opts.to).map_err(|source| RestoreError::Io {
        path: opts.to.clone(),
        source,
    })?;
    let mut summary = RestoreSummary {
        files: plan.files.len(),
        bytes: plan.bytes,
        ..RestoreSummary::default()
    };
    for f in &plan.files {
        progress.add_todo(f.version.size);
    }

    // Group by content: one download per blob, hard links for the other paths.
    let mut by_hash: HashMap<Hash32, Vec<(&PlannedFile, PathBuf)>> = HashMap::new();
    let mut checked_dirs = HashSet::new();
    let mut replaced = Vec::new();
    for f in &plan.files {
        let dest = prepare_parent(&opts.to, &f.dest, &mut checked_dirs)?;
        match in_place(&dest, &f.version.hash, f.version.size)? {
            Some(true) if opts.existing != ExistingFiles::Refuse => {
                // A run killed between placing a file and setting its mtime left the
                // right bytes with the time of the restore.
                let mtime = fs::metadata(&dest).map(|m| crate::backup::scan::mtime_micros(&m));
                if mtime.ok() != Some(f.version.mtime) {
                    set_mtime(&dest, f.version.mtime).map_err(|source| RestoreError::Io {
                        path: dest.clone(),
                        source,
                    })?;
                }
                summary.already_in_place += 1;
                progress.add_done(f.version.size);
                continue;
            }
            Some(_) if opts.existing == ExistingFiles::Overwrite => replaced.push(f.dest.clone()),
            Some(_) => return Err(RestoreError::Conflict { path: dest }),
            None => {}
        }
        by_hash.entry(f.version.hash).or_default().push((f, dest));
    }
    // Every refusal came before this: from here on the target changes. The moves come
    // before the downloads, so a run that fails later leaves no extra file behind, and
    // the files a run replaces are kept.
    summary.quarantine = quarantine(opts, extra, &extra_entries, &replaced)?;
    summary.quarantined = extra_entries;
    summary.replaced = replaced;
    let point = plan
        .point
        .snapshot
        .clone()
        .unwrap_or_else(|| timespec::format_precise(plan.point.time));
    // `--parallel` large blobs at once, many more small ones: a small blob's time is
    // its request's round trip, not bandwidth (see `inflight`).
    let budget = Budget::new(opts.parallel);
    // Small files come out of packs: one download for all the files of a pack.
    let mut by_pack: HashMap<Hash32, Vec<(PackedAt, Targets)>> = HashMap::new();
    let mut singles = Vec::new();
    for (hash, targets) in by_hash {
        match plan.packed.get(&hash) {
            Some(at) => by_pack
                .entry(at.pack)
                .or_default()
                .push((*at, (hash, targets))),
            None => singles.push((hash, targets)),
        }
    }
    let pack_jobs = by_pack.into_iter().map(|(pack, members)| {
        let progress = progress.clone();
        let point = point.clone();
        let budget = &budget;
        let size = members.iter().map(|(at, _)| at.size).sum();
        let job = async move {
            let _room = budget.acquire(size).await;
            restore_pack(repo, pack, members, &point, &progress).await
        }
        .boxed();
        (size, job)
    });
    let single_jobs = singles.into_iter().map(|(hash, targets)| {
        let progress = progress.clone();
        let point = point.clone();
        let budget = &budget;
        let size = targets.first().map_or(0, |(f, _)| f.version.size);
        let job = async move {
            let _room = budget.acquire(size).await;
            restore_blob(repo, hash, targets, &point, &progress).await
        }
        .boxed();
        (size, job)
    });
    let jobs = schedule(single_jobs.collect(), pack_jobs.collect());
    let mut results = futures::stream::iter(jobs).buffer_unordered(budget.max_in_flight());
    while let Some(result) = results.next().await {
        summary.downloaded += result.downloaded;
        summary.linked += result.linked;
        summary.copied += result.copied;
        summary.failed.extend(result.failed);
    }
    // Each file's bytes were fsynced before its rename; the renames, links and new
    // directories are made durable here, once per directory rather than once per file.
    let dirs = restored_dirs(&opts.to, plan.files.iter().map(|f| f.dest.as_path()));
    tokio::task::spawn_blocking(move || sync_dirs(&dirs))
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))??;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The order downloads start in: the largest blobs first, so that no large one starts
/// last and leaves one core writing it alone at the end, with the packs spread among
/// them in proportion to their bytes. A pack is many small files, each created and
/// fsynced in turn: its time goes to waiting on the disk, which the decompression of
/// the large blobs beside it fills. (All packs first left a core idle for seconds.)
fn schedule<T>(mut singles: Vec<(u64, T)>, mut packs: Vec<(u64, T)>) -> Vec<T> {
    singles.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    packs.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let singles_total: u64 = singles.iter().map(|(size, _)| size).sum::<u64>().max(1);
    let packs_total: u64 = packs.iter().map(|(size, _)| size).sum::<u64>().max(1);
    let (mut singles_started, mut packs_started) = (0u64, 0u64);
    let mut order = Vec::with_capacity(singles.len() + packs.len());
    let mut singles = singles.into_iter().peekable();
    let mut packs = packs.into_iter().peekable();
    loop {
        // Whichever stream is behind in the share of its bytes started goes next
        // (compared as singles_started/singles_total <= packs_started/packs_total).
        let single_next = match (singles.peek(), packs.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(_), Some(_)) => {
                u128::from(singles_started) * u128::from(packs_total)
                    <= u128::from(packs_started) * u128::from(singles_total)
            }
        };
        let (started, next) = if single_next {
            (&mut singles_started, singles.next())
        } else {
            (&mut packs_started, packs.next())
        };
        if let Some((size, job)) = next {
            *started += size;
            order.push(job);
        }
    }
    order
}

/// Every directory a restore wrote into or created, deepest first, and the target's
/// parent (where the target itself may have been created).
fn restored_dirs<'a>(to: &Path, dests: impl Iterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for dest in dests {
        let mut dir = dest.parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() || !dirs.insert(to.join(d)) {
                break;
            }
            dir = d.parent();
        }
    }
    dirs.insert(to.to_path_buf());
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        dirs.insert(parent.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs
}

fn sync_dirs(dirs: &[PathBuf]) -> Result<(), RestoreError> {
    for dir in dirs {
        match fs::File::open(dir).and_then(|d| d.sync_all()) {
            Ok(()) => {}
            // A directory that holds no restored file any more (every file failed).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RestoreError::Io {
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct BlobResult {
    downloaded: usize,
    linked: usize,
    copied: usize,
    failed: Vec<String>,
}

/// The files that hold one content: the first is downloaded, the others linked or copied.
type Targets<'a> = (Hash32, Vec<(&'a PlannedFile, PathBuf)>);

/// What failed for a file, as the restore reports it.
fn failure(f: &PlannedFile, hash: &Hash32, point: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "{} (blob {}, point {point}): {}",
        f.dest.display(),
        BlobId::from_bytes(*hash),
        explain(e)
    )
}

/// Downloads one blob to its first path and links (or copies) it to the others.
async fn restore_blob(
    repo: &Repository,
    hash: Hash32,
    targets: Vec<(&PlannedFile, PathBuf)>,
    point: &str,
    progress: &Progress,
) -> BlobResult {
    let mut out = BlobResult::default();
    let Some((first, first_dest)) = targets.first() else {
        return out;
    };
    let id = BlobId::from_bytes(hash);
    let mtime = Some(system_time(first.version.mtime));
    if let Err(e) = repo
        .get_to_file_deferring_dir_sync(&id, first_dest, mtime)
        .await
    {
        for (f, _) in &targets {
            out.failed.push(failure(f, &hash, point, &e));
        }
        return out;
    }
    place_others(vec![(&hash, &targets)], point, progress, &mut out).await;
    out
}

/// Downloads a pack once and places each of its files wanted here (where the pack
/// holds it, and the files with that content), then their links and copies.
async fn restore_pack(
    repo: &Repository,
    pack: Hash32,
    members: Vec<(PackedAt, Targets<'_>)>,
    point: &str,
    progress: &Progress,
) -> BlobResult {
    let mut out = BlobResult::default();
    // Each extract beside the files it is for: outcomes come back in this order.
    let (extracts, wanted): (Vec<PackExtract>, Vec<&Targets>) = members
        .iter()
        .filter_map(|(at, member)| {
            let (hash, targets) = member;
            let (first, dest) = targets.first()?;
            let extract = PackExtract {
                id: BlobId::from_bytes(*hash),
                offset: at.offset,
                size: at.size,
                dest: dest.clone(),
                mtime: Some(system_time(first.version.mtime)),
            };
            Some((extract, member))
        })
        .unzip();
    let (outcomes, failed) = repo
        .get_from_pack(&BlobId::from_bytes(pack), extracts)
        .await;
    let mut restored = Vec::with_capacity(wanted.len());
    for ((hash, targets), outcome) in wanted.into_iter().zip(outcomes) {
        let error: Option<String> = match (&outcome, &failed) {
            (Some(Ok(_)), _) => None,
            (Some(Err(e)), _) => Some(explain(e)),
            (None, Some(e)) => Some(format!("pack {}: {}", BlobId::from_bytes(pack), explain(e))),
            (None, None) => Some("not restored".into()),
        };
        match error {
            Some(e) => {
                for (f, _) in targets {
                    out.failed.push(failure(f, hash, point, &e));
                }
            }
            None => restored.push((hash, targets.as_slice())),
        }
    }
    place_others(restored, point, progress, &mut out).await;
    out
}

/// Where one file of a content goes: owned, so that the linking and copying can run on
/// a blocking thread.
struct Placement {
    dest: PathBuf,
    mtime: Micros,
    /// Under `snapshots/` or `backups/`, where Cassandra makes hard links.
    link_location: bool,
}

impl Placement {
    fn of(f: &PlannedFile, dest: &Path) -> Self {
        Self {
            dest: dest.to_path_buf(),
            mtime: f.version.mtime,
            link_location: is_link_location(&f.version.key.rel_path),
        }
    }
}

/// After the first file of each of `contents` was restored (its mtime set before its
/// fsync): hard-links or copies it to the others. The links and copies (each copy
/// fsynced) run on a blocking thread: this future is polled on the thread that drives
/// every download of the restore, and a thousand fsyncs there stalled them all.
async fn place_others(
    contents: Vec<(&Hash32, &[(&PlannedFile, PathBuf)])>,
    point: &str,
    progress: &Progress,
    out: &mut BlobResult,
) {
    let contents: Vec<_> = contents
        .into_iter()
        .filter_map(|(hash, targets)| Some((hash, targets.split_first()?)))
        .collect();
    let mut work = Vec::with_capacity(contents.len());
    for (_, ((first, first_dest), rest)) in &contents {
        out.downloaded += 1;
        progress.add_done(first.version.size);
        let rest: Vec<Placement> = rest
            .iter()
            .map(|(f, dest)| Placement::of(f, dest))
            .collect();
        work.push((Placement::of(first, first_dest), rest));
    }
    if work.iter().all(|(_, rest)| rest.is_empty()) {
        return;
    }
    let placed = tokio::task::spawn_blocking(move || {
        work.iter()
            .map(|(first, rest)| link_or_copy(first, rest))
            .collect::<Vec<_>>()
    })
    .await;
    let placed = match placed {
        Ok(placed) => placed,
        Err(e) => {
            let e = format!("internal error placing copies: {e}");
            for (hash, (_, rest)) in &contents {
                for (f, _) in *rest {
                    out.failed.push(failure(f, hash, point, &e));
                    progress.add_done(f.version.size);
                }
            }
            return;
        }
    };
    for ((hash, (_, rest)), results) in contents.iter().zip(placed) {
        for ((f, _), result) in rest.iter().zip(results) {
            match result {
                Ok(true) => out.linked += 1,
                Ok(false) => out.copied += 1,
                Err(e) => out.failed.push(failure(f, hash, point, &e)),
            }
            progress.add_done(f.version.size);
        }
    }
}

/// Gives the content restored at `first` to each of `rest`: `Ok(true)` for a hard
/// link, `Ok(false)` for a copy.
fn link_or_copy(first: &Placement, rest: &[Placement]) -> Vec<std::io::Result<bool>> {
    // Files placed so far with this content.
    let mut placed: Vec<&Placement> = vec![first];
    let mut results = Vec::with_capacity(rest.len());
    for other in rest {
        // Cassandra's own hard links (snapshots/, backups/) are restored as hard links: same
        // content and same mtime mean the same inode on the node. Anything else was a
        // separate file and stays one (Cassandra appends to a live TOC.txt in place).
        let link_to = placed
            .iter()
            .find(|p| p.mtime == other.mtime && (p.link_location || other.link_location))
            .map(|p| p.dest.as_path());
        let _ = fs::remove_file(&other.dest);
        let result = match link_to {
            Some(source) if fs::hard_link(source, &other.dest).is_ok() => Ok(true),
            _ => copy_into_place(&first.dest, &other.dest, other.mtime).map(|_| false),
        };
        if result.is_ok() {
            placed.push(other);
        }
        results.push(result);
    }
    results
}

/// Writes the content `hash` to `dest` (verified, fsynced, renamed into place), from
/// its own blob or from the pack the catalog places it in: one file's bytes, wherever
/// the repository keeps them.
pub async fn content_to_file(
    repo: &Repository,
    catalog: &Catalog,
    hash: &Hash32,
    dest: &Path,
) -> Result<u64, RestoreError> {
    let id = BlobId::from_bytes(*hash);
    let Some(at) = catalog.pack_location(hash)? else {
        return Ok(repo.get_to_file(&id, dest).await?);
    };
    let extract = PackExtract {
        id,
        offset: at.offset,
        size: at.size,
        dest: dest.to_path_buf(),
        mtime: None,
    };
    let pack = BlobId::from_bytes(at.pack);
    let (mut outcomes, failed) = repo.get_from_pack(&pack, vec![extract]).await;
    match (outcomes.pop().flatten(), failed) {
        (Some(outcome), _) => Ok(outcome?),
        (None, Some(e)) => Err(e.into()),
        (None, None) => Err(RestoreError::Internal(format!(
            "{id} was not read from pack {pack}"
        ))),
    }
}

/// Copies a restored file to `dest` the way downloads are placed: into `<dest>.partial`,
/// with its mtime, fsynced, then renamed; on failure (a full disk) the `.partial` file is
/// removed, so a final path never holds a short copy.
fn copy_into_place(source: &Path, dest: &Path, mtime: Micros) -> std::io::Result<()> {
    let (partial, mut file) = create_partial(dest).map_err(std::io::Error::other)?;
    let result = (|| {
        std::io::copy(&mut fs::File::open(source)?, &mut file)?;
        file.set_modified(system_time(mtime))?;
        file.sync_all()?;
        check_replaceable(dest).map_err(std::io::Error::other)?;
        fs::rename(&partial, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Where Cassandra makes hard links of live files.
fn is_link_location(rel_path: &str) -> bool {
    rel_path.starts_with("snapshots/") || rel_path.starts_with("backups/")
}

/// A store error, with the remedy for a full disk spelled out.
fn explain(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("No space left on device") {
        format!(
            "{text}: the target's disk is full; free space or restore elsewhere, then run again with --resume"
        )
    } else {
        text
    }
}

/// Lines telling the operator how to load what was restored.
pub fn next_steps(plan: &Plan, to: &Path, layout: Layout) -> Vec<String> {
    let mut lines = Vec::new();
    for t in &plan.tables {
        let dir = to.join(&t.dir);
        let line = match layout {
            Layout::Sstableloader => format!("sstableloader -d <cassandra host> {}", quoted(&dir)),
            // `nodetool import` exists from 4.0; older releases load with refresh after
            // the files are copied into the live table directory.
            Layout::Data if !t.versions.is_empty() && t.versions.iter().all(|v| importable(v)) => {
                format!(
                    "nodetool import {} {} {}",
                    shell_word(&t.keyspace),
                    shell_word(&t.table),
                    quoted(&dir)
                )
            }
            Layout::Data => format!(
                "copy {}/* into the live table directory, then: nodetool refresh {} {}",
                quoted(&dir),
                shell_word(&t.keyspace),
                shell_word(&t.table)
            ),
        };
        lines.push(line);
    }
    lines
}

/// A path as one POSIX shell word (see [`shell_word`]).
fn quoted(path: &Path) -> String {
    shell_word(&path.to_string_lossy())
}

/// `text` as one POSIX shell word: as is when made only of characters no shell gives a
/// meaning to, else in single quotes (each `'` written `'\''`), so that a name or path
/// holding `;`, `$(…)`, a space or a newline is pasted as data, never as a command.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:,+=@%".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// SSTable versions written by Cassandra 4.0 and later: BIG `na` and up, and BTI (`da`…,
/// whose letters sort before every BIG version Cassandra 2.0+ wrote).
fn importable(version: &str) -> bool {
    !("ja".."na").contains(&version)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::{Placement, link_or_copy, schedule};

    #[test]
    fn the_largest_blobs_start_first_and_the_packs_are_spread_among_them() {
        let singles: Vec<(u64, &str)> = vec![
            (10, "s10"),
            (400, "s400"),
            (100, "s100"),
            (300, "s300"),
            (200, "s200"),
        ];
        let packs: Vec<(u64, &str)> = vec![(50, "p1"), (50, "p2"), (50, "p3")];
        let order = schedule(singles, packs);
        // Singles by size, largest first; a pack goes next while the singles started
        // have a larger share of their bytes (400 of 1010, then 700) than the packs
        // started have of theirs (50 of 150, then 100, then 150).
        assert_eq!(
            order,
            ["s400", "p1", "p2", "s300", "p3", "s200", "s100", "s10"]
        );
    }

    #[test]
    fn either_kind_alone_keeps_every_job_largest_first() {
        let only_packs = schedule(Vec::new(), vec![(1, 'a'), (3, 'b'), (2, 'c')]);
        assert_eq!(only_packs, ['b', 'c', 'a']);
        let only_singles = schedule(vec![(5, 'x'), (0, 'y'), (9, 'z')], Vec::new());
        assert_eq!(only_singles, ['z', 'x', 'y']);
        assert!(schedule::<u8>(Vec::new(), Vec::new()).is_empty());
    }

    #[test]
    fn cassandras_hard_links_come_back_as_links_and_other_copies_as_files() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, mtime: i64, link_location: bool| Placement {
            dest: dir.path().join(name),
            mtime,
            link_location,
        };
        let first = at("live-Data.db", 1_000_000, false);
        fs::write(&first.dest, b"content").unwrap();
        let rest = [
            // The same bytes in another live file: its own inode.
            at("other-Data.db", 1_000_000, false),
            // A snapshot of a live file: same mtime, in snapshots/.
            at("snap-Data.db", 1_000_000, true),
            // In backups/, but written at another time: not the same inode on the node.
            at("backup-Data.db", 2_000_000, true),
            // A destination that cannot be written: fails alone.
            at("missing-dir/x-Data.db", 1_000_000, true),
            // A failure before it stops nothing.
            at("snap2-Data.db", 1_000_000, true),
        ];
        let results = link_or_copy(&first, &rest);
        let got: Vec<Option<bool>> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(
            got,
            [Some(false), Some(true), Some(false), None, Some(true)]
        );
        let ino = |p: &Placement| fs::metadata(&p.dest).unwrap().ino();
        assert_eq!(ino(&rest[1]), ino(&first));
        assert_eq!(ino(&rest[4]), ino(&first));
        for copy in [&rest[0], &rest[2]] {
            assert_ne!(ino(copy), ino(&first));
            assert_eq!(fs::read(&copy.dest).unwrap(), b"content");
            let meta = fs::metadata(&copy.dest).unwrap();
            let micros = meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1_000;
            assert_eq!(micros, copy.mtime);
        }
        assert!(!rest[3].dest.exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
