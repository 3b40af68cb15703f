//! One backup pass: scan the data directories, upload what the repository lacks, record
//! what every path holds now, and end the versions of paths that are gone.
//!
//! The order of a pass keeps the design's invariants:
//!
//! 1. batches left pending by a crash are uploaded first;
//! 2. each data directory is scanned ([`scan`]); a file whose stat matches the stat cache
//!    is not read (its hard links in `snapshots/` and `backups/` share its inode, so they
//!    are free too); a new Data.db is checked against its Digest before anything of its
//!    SSTable is hashed or uploaded;
//! 3. new content is uploaded, several blobs at once; only when a blob is durable are the
//!    changes that refer to it queued, and queued changes are committed to the catalog and
//!    then mirrored to the repository in batches;
//! 4. open versions of paths that were not seen end, unless what held them is absent
//!    rather than deleted ([`absence`]: a data directory gone, emptied or on another
//!    filesystem, a directory gone with all its siblings, a directory that could not be
//!    read): those stay open and the pass reports them in [`BackupSummary::absent`], a
//!    failure; the pass records a named point only when nothing was absent.
//!
//! A pass killed at any moment leaves at worst blobs nothing refers to (reused by the next
//! pass, or swept by gc) and committed batches not yet mirrored (uploaded next time).

pub mod absence;
pub mod filter;
pub mod lease;
pub mod pin;
pub mod scan;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use serde::Serialize;

use crate::cassandra::Component;
use crate::cassandra::digest::{DigestAlgorithm, verify_file};
use crate::catalog::mirror::{self, MirrorError};
use crate::catalog::{Catalog, CatalogError, Change, FileKey, Hash32, OpenVersion, PackMember};
use crate::inflight::Budget;
pub use crate::progress::Progress;
use crate::store::pack::{PACK_MEMBER_MAX, PACK_TARGET, PackCandidate, PackPut, Packing};
use crate::store::{BlobId, Content, Repository, StoreError, hash_file};
use crate::timespec::{self, Micros, NodeClock};
use filter::TableFilter;
use pin::Pins;
use scan::{DataDirScan, FoundFile, scan_data_dir, stat_key};

/// Changes committed (and mirrored) per batch.
const BATCH_CHANGES: usize = 2000;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub node: String,
    /// Roots of the pass: data directories, or any keyspace or table directory below one.
    pub data_dirs: Vec<PathBuf>,
    pub filter: TableFilter,
    /// The point recorded at the end of the pass.
    pub point: PointMode,
    /// A root that no longer exists and under which no file is recorded is skipped,
    /// rather than an error: for the daemon, when a table never backed up is dropped.
    /// (A vanished root under which files are recorded is judged by [`absence`].)
    pub vanished_root_is_empty: bool,
    /// Pin files in this directory (same filesystem as the data) while they are read.
    pub pin_dir: Option<PathBuf>,
    /// Blobs uploaded at once.
    pub parallel: usize,
    /// Delete `backups/` hard links once their content is durable.
    pub prune_incremental: bool,
    /// Store small files in packs (`store::pack`) rather than one blob each.
    pub pack_small_files: bool,
}

/// Which point a pass records when it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointMode {
    /// `backup-<UTC time>`.
    Automatic,
    /// A name chosen by the operator (unique per node).
    Named(String),
    /// None: continuous backup records every change anyway.
    None,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupSummary {
    pub point: String,
    pub point_time: Micros,
    /// Files of complete SSTables and snapshot metadata seen.
    pub files_seen: u64,
    /// Files the stat cache proved unchanged: not read at all.
    pub files_unchanged: u64,
    /// Files read and hashed.
    pub files_hashed: u64,
    /// Hashed files whose content the repository already had.
    pub files_deduplicated: u64,
    pub bytes_read: u64,
    /// New contents stored, each small file in a pack counted as one.
    pub blobs_uploaded: u64,
    /// Stored bytes written (compressed, framed), packs included.
    pub bytes_uploaded: u64,
    /// Packs written: objects holding many of the new small contents (`store::pack`).
    pub packs_uploaded: u64,
    /// Blobs gc had condemned that this pass needed and uploaded again.
    pub blobs_rescued: u64,
    pub versions_started: u64,
    pub versions_ended: u64,
    /// SSTables skipped because Data.db does not match its Digest (one line each).
    pub corrupt: Vec<String>,
    /// SSTables seen but not complete yet (picked up by a later pass).
    pub not_complete: u64,
    /// Files that changed while being read (picked up by a later pass).
    pub changed_during_backup: u64,
    /// `backups/` links deleted by `--prune-incremental`.
    pub pruned: u64,
    /// Non-fatal problems (files that vanished before they were uploaded, pins).
    pub problems: Vec<String>,
    /// What was absent rather than deleted (a data directory gone, emptied or on another
    /// filesystem, a directory gone with all its siblings, a directory that could not be
    /// read), one line each: the versions there stay open, no point is recorded, and the
    /// pass has failed.
    pub absent: Vec<String>,
    /// The system clock was behind the times already recorded for the node (a step
    /// back): this pass recorded its times just after them instead. One line.
    pub clock_warning: Option<String>,
    pub seconds: f64,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "cannot read data directory {path}: {source} (check the path and that tablesafe runs as a user that can read Cassandra's files)"
    )]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("a snapshot named {name:?} already exists for node {node:?}: choose another name")]
    DuplicateName { name: String, node: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// A file whose content must be hashed, with the SSTable it belongs to.
struct HashJob {
    file: FoundFile,
    pins: Option<Arc<Pins>>,
    /// Data.db and Digest paths to check first, for the first new file of an SSTable.
    digest_check: Option<(PathBuf, PathBuf, DigestAlgorithm)>,
    sstable: usize,
}

/// The outcome of hashing one file.
enum Hashed {
    /// `file.path` is the pinned link when the file was pinned; `original` its real path.
    Ok {
        file: FoundFile,
        id: Hash32,
        original: Option<PathBuf>,
    },
    Corrupt {
        sstable: usize,
        detail: String,
    },
    Changed {
        file: FoundFile,
    },
    Vanished {
        file: FoundFile,
    },
    /// Could not be read (no permission): not corrupt, not deleted; the pass fails.
    Unreadable {
        file: FoundFile,
        detail: String,
    },
}

/// Runs one backup pass, under a lease ([`lease`]) that keeps gc from deleting any blob
/// condemned after the pass started, for as long as the pass runs.
pub async fn run(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary, BackupError> {
    // Batches a crash left pending first: this also checks the repository is the one
    // opened before the lease (or anything) is written into it.
    mirror::upload_pending(repo, catalog, &opts.node).await?;
    let lease = lease::Lease::take(repo, &opts.node).await?;
    let result = {
        let pass = run_leased(repo, catalog, opts, progress);
        let heartbeat = lease.heartbeat(repo);
        tokio::pin!(pass, heartbeat);
        tokio::select! {
            r = &mut pass => r,
            () = &mut heartbeat => pass.await,
        }
    };
    lease.release(repo).await;
    result
}

/// The pass itself; the lease is taken (before gc's log is read).
async fn run_leased(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary, BackupError> {
    let started = Instant::now();
    let node = opts.node.as_str();
    // Every time this pass records comes from this clock: never before what the node
    // already recorded, whatever the system clock says.
    let mut clock = NodeClock::after(catalog.last_recorded_time(node)?);
    let taken: HashSet<String> = catalog
        .snapshots(&crate::catalog::SnapshotFilter {
            node: Some(node.to_string()),
            ..Default::default()
        })?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let point_name = match &opts.point {
        PointMode::Named(name) if taken.contains(name) => {
            return Err(BackupError::DuplicateName {
                name: name.clone(),
                node: node.to_string(),
            });
        }
        PointMode::Named(name) => Some(name.clone()),
        PointMode::Automatic => Some(automatic_name(&taken, clock.now())),
        PointMode::None => None,
    };
    // Which blobs gc condemned or deleted: those are never assumed to exist.
    mirror::sync_gc_log(repo, catalog).await?;
    let mut summary = BackupSummary::default();
    let pins = match &opts.pin_dir {
        Some(dir) => match Pins::open(dir) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                summary.problems.push(format!(
                    "cannot pin files in {}: {e}; reading files in place",
                    dir.display()
                ));
                None
            }
        },
        None => None,
    };
    let mut recorder = Recorder::new(node, clock);
    let (mut live_files, mut live_bytes) = (0u64, 0u64);
    for data_dir in &opts.data_dirs {
        let Some((root, open)) = open_root(catalog, opts, data_dir, &mut summary)? else {
            continue;
        };
        let mut scan = if root.exists() {
            let (dir, filter) = (root.clone(), opts.filter.clone());
            tokio::task::spawn_blocking(move || scan_data_dir(&dir, &filter))
                .await
                .map_err(|e| BackupError::Internal(e.to_string()))?
                .map_err(|e| BackupError::DataDir {
                    path: data_dir.clone(),
                    source: e.source,
                })?
        } else {
            DataDirScan::default()
        };
        let mut absence = absence::Absence::default();
        absence.note_unreadable(&scan);
        let accepted = absence.check_devices(catalog, node, &mut scan, &open)?;
        let Recorded {
            seen,
            unbacked,
            pinned,
            rescued,
        } = backup_data_dir(
            repo,
            catalog,
            opts,
            (&progress, &pins),
            &scan,
            &open,
            &mut recorder,
            &mut summary,
        )
        .await?;
        // Everything open under this root, in the pass's scope, and not seen now is gone,
        // unless what held it is absent.
        let now = recorder.clock.now();
        let gone = open.keys().filter(|k| {
            !seen.contains(*k)
                && opts.filter.includes(&k.keyspace, Some(&k.table))
                && !absence.keeps(k)
        });
        for key in gone {
            recorder.push(Change::End {
                key: key.clone(),
                at: now,
            });
            summary.versions_ended += 1;
        }
        // Pins may go once the versions of their files are committed.
        recorder.commit(repo, catalog).await?;
        recheck_rescued(repo, &rescued, &mut summary).await?;
        if let Some(pins) = &pins {
            release_pins(pins, catalog, &pinned)?;
        }
        let (files, bytes) = totals(&scan, &seen);
        live_files += files;
        live_bytes += bytes;
        if opts.prune_incremental {
            let sets = (&scan, &seen, &unbacked);
            prune_incremental(repo, catalog, &root, sets, &mut recorder, &mut summary).await?;
        }
        summary.not_complete += scan.not_complete as u64;
        summary.problems.extend(scan.problems.iter().cloned());
        let absent = absence.into_messages();
        if absent.is_empty() {
            for (dir, dev) in accepted {
                catalog.remember_data_dir_device(node, &dir, dev)?;
            }
        }
        summary.absent.extend(absent);
    }
    let point_time = recorder.clock.now();
    // A point claims the node's state: not while part of it could not be seen.
    if let Some(name) = point_name.filter(|_| summary.absent.is_empty()) {
        recorder.push(Change::Snapshot {
            name: name.clone(),
            time: point_time,
            scope: scope_label(opts),
            files: live_files,
            bytes: live_bytes,
        });
        summary.point = name;
    }
    recorder.commit(repo, catalog).await?;
    summary.point_time = point_time;
    if let Some(warning) = recorder.clock.warning(node) {
        tracing::warn!("{warning}");
        summary.problems.push(warning.clone());
        summary.clock_warning = Some(warning);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The open versions under a root, by path.
type OpenVersions = HashMap<FileKey, OpenVersion>;

/// A root of the pass, absolute, with the open versions under it; `None` when it is to
/// be skipped (gone, nothing recorded under it, and the caller allows that).
fn open_root(
    catalog: &Catalog,
    opts: &BackupOptions,
    data_dir: &std::path::Path,
    summary: &mut BackupSummary,
) -> Result<Option<(PathBuf, OpenVersions)>, BackupError> {
    let fail = |source| BackupError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    // Links Cassandra follows below the data directory are kept (`walk`'s rule).
    let (root, missing) = match crate::cassandra::walk::logical_absolute(data_dir) {
        Ok(root) => (root, None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (std::path::absolute(data_dir).map_err(fail)?, Some(e))
        }
        Err(e) => {
            // Not "gone": unreadable (EACCES or EIO on the way to it).
            summary.absent.push(format!(
                "cannot read {}: {e} (check permissions and the disk)",
                data_dir.display()
            ));
            return Ok(None);
        }
    };
    let open = catalog.open_versions_under(&opts.node, &root.to_string_lossy())?;
    let recorded = open
        .keys()
        .any(|k| opts.filter.includes(&k.keyspace, Some(&k.table)));
    match missing {
        Some(_) if opts.vanished_root_is_empty && !recorded => Ok(None),
        Some(e) if !recorded => Err(fail(e)),
        _ => Ok(Some((root, open))),
    }
}

/// `backup-<UTC time>`, with `-2`, `-3`, … when passes share a second.
fn automatic_name(taken: &HashSet<String>, now: Micros) -> String {
    let base = format!("backup-{}", timespec::format(now).replace([':', '-'], ""));
    (1..)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|name| !taken.contains(name))
        .unwrap_or(base)
}

fn scope_label(opts: &BackupOptions) -> String {
    let dirs: Vec<String> = opts
        .data_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    dirs.join(",")
}

/// Number and bytes of the files recorded as live, for the point's totals.
fn totals(scan: &DataDirScan, seen: &HashSet<FileKey>) -> (u64, u64) {
    scan.sstables
        .iter()
        .flat_map(|s| s.files.iter().map(|(_, f)| f))
        .chain(&scan.other_files)
        .filter(|f| seen.contains(&f.key))
        .fold((0, 0), |(n, b), f| (n + 1, b + f.size()))
}

/// What [`backup_data_dir`] recorded.
struct Recorded {
    /// Keys now recorded as live.
    seen: HashSet<FileKey>,
    /// Keys whose current content was not backed up (corrupt SSTable, changed while
    /// read): a recorded version stays open, and `--prune-incremental` must keep them.
    unbacked: HashSet<FileKey>,
    pinned: Vec<Pinned>,
    /// Condemned blobs uploaded again, and the files they were read from.
    rescued: Vec<(Hash32, Vec<FoundFile>, Content)>,
}

/// Backs up one scanned data directory.
#[allow(clippy::too_many_arguments)]
async fn backup_data_dir(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &BackupOptions,
    (progress, pins): (&Progress, &Option<Arc<Pins>>),
    scan: &DataDirScan,
    open: &HashMap<FileKey, OpenVersion>,
    recorder: &mut Recorder,
    summary: &mut BackupSummary,
) -> Result<Recorded, BackupError> {
    let mut seen = HashSet::new();
    let mut unbacked = HashSet::new();
    let mut jobs = Vec::new();
    let mut verified: HashSet<usize> = HashSet::new();
    let mut stats = Vec::new();
    let mut unchanged = Vec::new();
    let files = scan
        .sstables
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.files.iter().map(move |(_, f)| (Some(i), f)))
        .chain(scan.other_files.iter().map(|f| (None, f)));
    for (sstable, file) in files {
        summary.files_seen += 1;
        // Hard links (nodetool snapshot, incremental backups, clearsnapshot) change only
        // an inode's ctime: same inode, size and mtime is the same content; the stat
        // cache then learns the new ctime.
        let (cached, relinked) = match catalog.cached_hash(&file.stat)? {
            Some(hash) => (Some(hash), false),
            None => (catalog.cached_hash_relinked(&file.stat)?, true),
        };
        match cached {
            Some(hash) if catalog.has_blob(&hash)? => {
                if relinked {
                    stats.push((file.stat, hash));
                }
                summary.files_unchanged += 1;
                // Recorded once its SSTable is known not to be corrupt (below).
                unchanged.push((file, hash));
            }
            _ => {
                progress.add_todo(file.size());
                let digest_check = sstable.and_then(|i| {
                    if !verified.insert(i) {
                        return None;
                    }
                    let s = &scan.sstables[i];
                    let data = s.file(&Component::Data)?;
                    let (ext, digest) = s.digest_file()?;
                    Some((
                        data.path.clone(),
                        digest.path.clone(),
                        DigestAlgorithm::for_component(ext, s.descriptor.version),
                    ))
                });
                jobs.push(HashJob {
                    file: file.clone(),
                    pins: pins.clone(),
                    digest_check,
                    sstable: sstable.unwrap_or(usize::MAX),
                });
            }
        }
    }
    recorder.commit_if_full(repo, catalog).await?;

    // Hash every file the stat cache could not vouch for, several at once.
    let parallel = opts.parallel.max(1);
    let hashed: Vec<Hashed> = futures::stream::iter(
        jobs.into_iter()
            .map(|job| tokio::task::spawn_blocking(move || hash_job(job))),
    )
    .buffer_unordered(parallel)
    .map(|r| r.map_err(|e| BackupError::Internal(e.to_string())))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;

    let mut corrupt_sstables = HashSet::new();
    let mut to_upload: HashMap<Hash32, Vec<FoundFile>> = HashMap::new();
    let mut pinned = Vec::new();
    for h in hashed {
        match h {
            Hashed::Corrupt { sstable, detail } => {
                corrupt_sstables.insert(sstable);
                let s = &scan.sstables[sstable];
                // Reported by the caller from the summary (one line, not two).
                tracing::debug!("{detail}");
                summary.corrupt.push(detail.clone());
                let at = recorder.clock.now();
                recorder.push(Change::Corrupt {
                    key: s.files[0].1.key.clone(),
                    detail,
                    at,
                });
            }
            Hashed::Changed { file } => {
                summary.changed_during_backup += 1;
                keep_open(open, &file.key, &mut seen, &mut unbacked);
            }
            Hashed::Unreadable { file, detail } => {
                keep_open(open, &file.key, &mut seen, &mut unbacked);
                summary.absent.push(detail);
            }
            Hashed::Vanished { file } => {
                summary.problems.push(format!(
                    "{} vanished before it was read",
                    file.path.display()
                ));
            }
            Hashed::Ok { file, id, original } => {
                summary.files_hashed += 1;
                summary.bytes_read += file.size();
                stats.push((file.stat, id));
                if let Some(original) = original {
                    pinned.push(Pinned {
                        pinned: file.path.clone(),
                        original,
                        stat: file.stat,
                        id,
                    });
                }
                to_upload.entry(id).or_default().push(file);
            }
        }
    }
    // A corrupt SSTable is not backed up: whatever was recorded of it stays as it was.
    let corrupt_keys: HashSet<&FileKey> = corrupt_sstables
        .iter()
        .flat_map(|&i| scan.sstables[i].files.iter().map(|(_, f)| &f.key))
        .collect();
    if !corrupt_keys.is_empty() {
        for files in to_upload.values_mut() {
            files.retain(|f| !corrupt_keys.contains(&f.key));
        }
    }
    // Unchanged files of intact SSTables: never part of a corrupt one.
    for (file, hash) in unchanged {
        if !corrupt_keys.contains(&file.key) {
            seen.insert(file.key.clone());
            if open.get(&file.key).map(|v| v.hash) != Some(hash) {
                let change = start(file, hash, recorder.clock.now());
                recorder.push(change);
                summary.versions_started += 1;
            }
        }
    }
    for key in corrupt_keys {
        keep_open(open, key, &mut seen, &mut unbacked);
    }
    to_upload.retain(|_, files| !files.is_empty());

    // Content the repository already has: record at once.
    let mut uploads = Vec::new();
    for (id, files) in to_upload {
        if catalog.has_blob(&id)? {
            summary.files_deduplicated += files.len() as u64;
            for f in &files {
                progress.add_done(f.size());
                record(open, f, id, recorder, &mut seen, summary);
            }
        } else {
            uploads.push((id, files));
        }
    }
    recorder.commit_if_full(repo, catalog).await?;

    // New content: upload, and record each blob's files only once it is durable.
    let mut rescued = Vec::new();
    let mut singles: Vec<(Hash32, Vec<FoundFile>, bool)> = Vec::new();
    let mut small: Vec<(Hash32, Vec<FoundFile>)> = Vec::new();
    for (id, files) in uploads {
        let size = files.first().map_or(0, FoundFile::size);
        if opts.pack_small_files && size < PACK_MEMBER_MAX {
            small.push((id, files));
        } else {
            let again = catalog.is_condemned(&id)?;
            singles.push((id, files, again));
        }
    }
    let (packs, lone) = group_into_packs(small);
    for (id, files) in lone {
        let again = catalog.is_condemned(&id)?;
        singles.push((id, files, again));
    }
    // `parallel` large blobs at once, many more small ones (see `inflight`).
    let budget = Budget::new(parallel);
    let budget = &budget;
    let compressed = compressed_by_cassandra(scan);
    let content_of = |files: &[FoundFile]| {
        if files.iter().any(|f| compressed.contains(&f.key)) {
            Content::Compressed
        } else {
            Content::Plain
        }
    };
    let single_jobs = singles.into_iter().map(|(id, files, again)| {
        let content = content_of(&files);
        async move {
            let _room = budget
                .acquire(files.first().map_or(0, FoundFile::size))
                .await;
            let outcome = upload_one(repo, &files, content, again).await;
            Uploaded::Single(id, files, again, outcome)
        }
        .boxed()
    });
    let pack_jobs = packs.into_iter().map(|members| {
        async move {
            let bytes = members.iter().map(|(_, f)| f[0].size()).sum();
            let _room = budget.acquire(bytes).await;
            let candidates = members
                .iter()
                .map(|(id, files)| PackCandidate {
                    id: BlobId::from_bytes(*id),
                    size: files[0].size(),
                    paths: files.iter().map(|f| f.path.clone()).collect(),
                })
                .collect();
            let outcome = repo.put_pack(candidates).await;
            Uploaded::Pack(members, outcome)
        }
        .boxed()
    });
    let mut results = futures::stream::iter(pack_jobs.chain(single_jobs))
        .buffer_unordered(budget.max_in_flight());
    while let Some(done) = results.next().await {
        match done {
            Uploaded::Single(id, files, again, outcome) => match outcome {
                Ok(Some(put)) => {
                    if put.id.as_bytes() != &id {
                        // The file changed between hashing and upload: take it next pass.
                        summary.changed_during_backup += files.len() as u64;
                        for f in &files {
                            keep_open(open, &f.key, &mut seen, &mut unbacked);
                        }
                        continue;
                    }
                    if again {
                        summary.blobs_rescued += 1;
                        rescued.push((id, files.clone(), content_of(&files)));
                    }
                    if put.uploaded {
                        summary.blobs_uploaded += 1;
                        summary.bytes_uploaded += put.stored_size;
                    } else {
                        summary.files_deduplicated += files.len() as u64;
                    }
                    recorder.push(Change::Blob {
                        hash: id,
                        size: put.size,
                        stored_size: put.stored_size,
                    });
                    for f in &files {
                        progress.add_done(f.size());
                        record(open, f, id, recorder, &mut seen, summary);
                    }
                }
                Ok(None) => vanished(&files, summary),
                Err(e) => return Err(e.into()),
            },
            Uploaded::Pack(members, outcome) => {
                let put = outcome?;
                let mut packed = Vec::new();
                for ((id, files), packing) in members.iter().zip(&put.members) {
                    match packing {
                        Packing::Packed { offset } => {
                            packed.push(PackMember {
                                hash: *id,
                                offset: *offset,
                                size: files[0].size(),
                            });
                        }
                        Packing::Changed => {
                            summary.changed_during_backup += files.len() as u64;
                            for f in files {
                                keep_open(open, &f.key, &mut seen, &mut unbacked);
                            }
                        }
                        Packing::Vanished => vanished(files, summary),
                    }
                }
                if let Some(pack) = put.id {
                    summary.blobs_uploaded += packed.len() as u64;
                    summary.packs_uploaded += 1;
                    summary.bytes_uploaded += put.stored_size;
                    // The pack first: a record never refers to what no record made known.
                    recorder.push(Change::Blob {
                        hash: *pack.as_bytes(),
                        size: put.size,
                        stored_size: put.stored_size,
                    });
                    recorder.push(Change::Packed {
                        pack: *pack.as_bytes(),
                        members: packed,
                    });
                    for ((id, files), packing) in members.iter().zip(&put.members) {
                        if matches!(packing, Packing::Packed { .. }) {
                            for f in files {
                                progress.add_done(f.size());
                                record(open, f, *id, recorder, &mut seen, summary);
                            }
                        }
                    }
                }
            }
        }
        recorder.commit_if_full(repo, catalog).await?;
    }
    catalog.remember_stats(&stats)?;
    Ok(Recorded {
        seen,
        unbacked,
        pinned,
        rescued,
    })
}

/// Files whose every path was gone when their content was to be uploaded.
fn vanished(files: &[FoundFile], summary: &mut BackupSummary) {
    for f in files {
        summary.problems.push(format!(
            "{} vanished before it was uploaded",
            f.path.display()
        ));
    }
}

/// A finished upload: one file's blob, or a pack of small files.
enum Uploaded {
    Single(
        Hash32,
        Vec<FoundFile>,
        bool,
        Result<Option<crate::store::PutOutcome>, StoreError>,
    ),
    Pack(Vec<(Hash32, Vec<FoundFile>)>, Result<PackPut, StoreError>),
}

/// Groups small files into packs of about [`PACK_TARGET`] bytes, in path order (an
/// SSTable's small components share a pack, so restoring one table reads few packs).
/// A group of one is uploaded as a blob of its own.
#[allow(clippy::type_complexity)]
fn group_into_packs(
    mut small: Vec<(Hash32, Vec<FoundFile>)>,
) -> (
    Vec<Vec<(Hash32, Vec<FoundFile>)>>,
    Vec<(Hash32, Vec<FoundFile>)>,
) {
    small.sort_by(|a, b| a.1[0].path.cmp(&b.1[0].path));
    let mut packs = Vec::new();
    let mut current: Vec<(Hash32, Vec<FoundFile>)> = Vec::new();
    let mut bytes = 0;
    for member in small {
        bytes += member.1[0].size();
        current.push(member);
        if bytes >= PACK_TARGET {
            packs.push(std::mem::take(&mut current));
            bytes = 0;
        }
    }
    if !current.is_empty() {
        packs.push(current);
    }
    let mut lone = Vec::new();
    packs.retain_mut(|p| {
        if p.len() == 1 {
            lone.append(p);
            false
        } else {
            true
        }
    });
    (packs, lone)
}

/// A file read through a pin.
struct Pinned {
    pinned: PathBuf,
    original: PathBuf,
    stat: crate::catalog::StatKey,
    id: Hash32,
}

/// Removes pins. Linking and unlinking changed the inode's ctime (and nothing else): the
/// stat cache learns the new ctime so the next pass does not read the file again.
fn release_pins(pins: &Pins, catalog: &mut Catalog, pinned: &[Pinned]) -> Result<(), BackupError> {
    let mut learned = Vec::new();
    for p in pinned {
        pins.release(&p.pinned);
        if let Ok(meta) = std::fs::symlink_metadata(&p.original) {
            let now = stat_key(&meta);
            if same_content(&now, &p.stat) && now != p.stat {
                learned.push((now, p.id));
            }
        }
    }
    catalog.remember_stats(&learned)?;
    Ok(())
}

/// Same inode, size and mtime: the same content, whatever happened to its links (which
/// move only the ctime).
fn same_content(a: &crate::catalog::StatKey, b: &crate::catalog::StatKey) -> bool {
    a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_ns == b.mtime_ns
}

/// Keeps a path's current version (if any) open: it is there, but its current content
/// was not backed up.
fn keep_open(
    open: &HashMap<FileKey, OpenVersion>,
    key: &FileKey,
    seen: &mut HashSet<FileKey>,
    unbacked: &mut HashSet<FileKey>,
) {
    unbacked.insert(key.clone());
    if open.contains_key(key) {
        seen.insert(key.clone());
    }
}

fn start(file: &FoundFile, hash: Hash32, at: Micros) -> Change {
    Change::Start {
        key: file.key.clone(),
        hash,
        size: file.size(),
        mtime: file.mtime,
        at,
    }
}

fn record(
    open: &HashMap<FileKey, OpenVersion>,
    file: &FoundFile,
    id: Hash32,
    recorder: &mut Recorder,
    seen: &mut HashSet<FileKey>,
    summary: &mut BackupSummary,
) {
    seen.insert(file.key.clone());
    if open.get(&file.key).map(|v| v.hash) != Some(id) {
        let change = start(file, id, recorder.clock.now());
        recorder.push(change);
        summary.versions_started += 1;
    }
}

/// After the records that refer to rescued blobs reached the repository: a gc that had
/// already decided to delete one of them (it listed the blobs before the upload and
/// read the logs before the record) may have deleted it since. Upload it once more.
async fn recheck_rescued(
    repo: &Repository,
    rescued: &[(Hash32, Vec<FoundFile>, Content)],
    summary: &mut BackupSummary,
) -> Result<(), BackupError> {
    for (id, files, content) in rescued {
        if repo.exists(&crate::store::BlobId::from_bytes(*id)).await? {
            continue;
        }
        tracing::warn!(blob = %hex::encode(id), "a rescued blob was deleted by a concurrent gc; uploading it again");
        if upload_one(repo, files, *content, true).await?.is_none() {
            summary.problems.push(format!(
                "blob {} was deleted by a concurrent gc and its files are gone: the versions that need it cannot be restored",
                hex::encode(id)
            ));
        }
    }
    Ok(())
}

/// The `Data.db` files of the SSTables Cassandra compressed (those with a
/// `CompressionInfo.db`): zstd gains little on them for much CPU, on the way in and on
/// every restore, so they are stored as they are (see `store::blob`).
fn compressed_by_cassandra(scan: &DataDirScan) -> HashSet<&FileKey> {
    scan.sstables
        .iter()
        .filter(|s| s.file(&Component::CompressionInfo).is_some())
        .filter_map(|s| s.file(&Component::Data))
        .map(|f| &f.key)
        .collect()
}

/// Uploads one blob from the first of its files that still exists; `again` uploads
/// even over an existing object (a condemned blob being rescued).
async fn upload_one(
    repo: &Repository,
    files: &[FoundFile],
    content: Content,
    again: bool,
) -> Result<Option<crate::store::PutOutcome>, StoreError> {
    for f in files {
        let put = if again {
            repo.put_file_again(&f.path, content).await
        } else {
            repo.put_file_as(&f.path, content).await
        };
        match put {
            Ok(put) => return Ok(Some(put)),
            Err(e) if source_vanished(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// True when a local file disappeared under us (compaction deletes files any time).
fn source_vanished(e: &StoreError) -> bool {
    matches!(e, StoreError::ReadFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Blocking: digest check (if asked), hash, and a stat check that nothing changed.
fn hash_job(mut job: HashJob) -> Hashed {
    if let Some((data, digest, algorithm)) = &job.digest_check
        && let Err(e) = verify_file(data, digest, *algorithm)
    {
        return match e {
            crate::cassandra::DigestError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Hashed::Vanished { file: job.file }
            }
            crate::cassandra::DigestError::Changed { .. } => Hashed::Changed { file: job.file },
            e if e.is_permission() => Hashed::Unreadable {
                detail: e.to_string(),
                file: job.file,
            },
            e => Hashed::Corrupt {
                sstable: job.sstable,
                detail: e.to_string(),
            },
        };
    }
    // Pin first: from here on a compaction deleting the original cannot take the file.
    let mut original = None;
    if let Some(pins) = &job.pins {
        match pins.pin(&job.file.path) {
            Ok(Some(pinned)) => match std::fs::symlink_metadata(&pinned) {
                Ok(meta) => {
                    // Same inode: only the ctime moved (the link count changed).
                    let now = stat_key(&meta);
                    if now.ino != job.file.stat.ino || now.mtime_ns != job.file.stat.mtime_ns {
                        pins.release(&pinned);
                        return Hashed::Changed { file: job.file };
                    }
                    job.file.stat = now;
                    original = Some(std::mem::replace(&mut job.file.path, pinned));
                }
                Err(_) => pins.release(&pinned),
            },
            Ok(None) => {}
            Err(_) => return Hashed::Vanished { file: job.file },
        }
    }
    let release = |file: &FoundFile| {
        if let (Some(pins), Some(_)) = (&job.pins, &original) {
            pins.release(&file.path);
        }
    };
    let id = match hash_file(&job.file.path) {
        Ok((id, _)) => id,
        Err(e) if source_vanished(&e) => {
            release(&job.file);
            return Hashed::Vanished { file: job.file };
        }
        Err(StoreError::ReadFile { path, source })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            release(&job.file);
            let path = original.clone().unwrap_or(path);
            let detail = crate::cassandra::digest::io_message(&path, &source);
            return Hashed::Unreadable {
                file: job.file,
                detail,
            };
        }
        Err(_) => {
            release(&job.file);
            return Hashed::Changed { file: job.file };
        }
    };
    // The stat cache may only vouch for content read from this inode state. A move of
    // the ctime alone is a link added or removed, not new content (the stat cache's own
    // rule): a compaction deleting the original of a pinned file does exactly that.
    match std::fs::symlink_metadata(&job.file.path) {
        Ok(meta) if same_content(&stat_key(&meta), &job.file.stat) => Hashed::Ok {
            id: *BlobId::as_bytes(&id),
            file: job.file,
            original,
        },
        Ok(_) => {
            release(&job.file);
            Hashed::Changed { file: job.file }
        }
        Err(_) => {
            release(&job.file);
            Hashed::Vanished { file: job.file }
        }
    }
}

/// Deletes `backups/` hard links whose content is now durable and recorded; never one
/// whose content this pass did not back up (a corrupt SSTable, a file changed while read).
///
/// The catalog saying a blob is durable is not enough to delete what may be the node's
/// last copy: the object it reads from (the blob, or the pack chosen for it) is asked
/// for once per distinct content pruned (one HEAD each, 16 at a time). A blob the
/// repository lacks is uploaded again from the link first; if that fails the link is
/// kept and reported.
async fn prune_incremental(
    repo: &Repository,
    catalog: &Catalog,
    root: &std::path::Path,
    (scan, seen, unbacked): (&DataDirScan, &HashSet<FileKey>, &HashSet<FileKey>),
    recorder: &mut Recorder,
    summary: &mut BackupSummary,
) -> Result<(), BackupError> {
    let candidates: Vec<&FoundFile> = scan
        .sstables
        .iter()
        .flat_map(|s| s.files.iter().map(|(_, f)| f))
        .filter(|f| {
            f.key.rel_path.starts_with("backups/")
                && seen.contains(&f.key)
                && !unbacked.contains(&f.key)
        })
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let recorded = catalog.open_versions_under(&recorder.node, &root.to_string_lossy())?;
    let compressed = compressed_by_cassandra(scan);
    // Content → the object holding it, and the links holding it.
    let mut by_content: HashMap<Hash32, (Hash32, Vec<&FoundFile>)> = HashMap::new();
    for f in candidates {
        let Some(v) = recorded.get(&f.key) else {
            continue;
        };
        match by_content.entry(v.hash) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1.push(f),
            std::collections::hash_map::Entry::Vacant(e) => {
                let object = catalog.pack_location(&v.hash)?.map_or(v.hash, |p| p.pack);
                e.insert((object, vec![f]));
            }
        }
    }
    let checks = futures::stream::iter(by_content.into_iter().map(
        |(hash, (object, files))| async move {
            let there = repo.exists(&BlobId::from_bytes(object)).await;
            (hash, files, there)
        },
    ))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    for (hash, files, there) in checks {
        let content = if files.iter().any(|f| compressed.contains(&f.key)) {
            Content::Compressed
        } else {
            Content::Plain
        };
        if !there? && !reupload_before_prune(repo, (hash, content), &files, summary).await? {
            continue;
        }
        for f in files {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {
                    summary.pruned += 1;
                    let at = recorder.clock.now();
                    recorder.push(Change::End {
                        key: f.key.clone(),
                        at,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => summary
                    .problems
                    .push(format!("cannot prune {}: {e}", f.path.display())),
            }
        }
    }
    Ok(())
}

/// A `backups/` link about to be pruned whose content the repository lacks: uploads it
/// again from the link. False (the links are kept, and reported) when that failed.
async fn reupload_before_prune(
    repo: &Repository,
    (hash, content): (Hash32, Content),
    files: &[&FoundFile],
    summary: &mut BackupSummary,
) -> Result<bool, BackupError> {
    let owned: Vec<FoundFile> = files.iter().map(|f| (*f).clone()).collect();
    let put = upload_one(repo, &owned, content, true).await?;
    let paths = || {
        files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match put {
        Some(put) if put.id.as_bytes() == &hash => {
            summary.problems.push(format!(
                "blob {} of {} was missing from the repository although the catalog records it: uploaded it again before pruning (run `tablesafe verify` to check the rest)",
                hex::encode(hash),
                paths()
            ));
            summary.blobs_uploaded += 1;
            summary.bytes_uploaded += put.stored_size;
            Ok(true)
        }
        _ => {
            summary.problems.push(format!(
                "blob {} of {} is missing from the repository and could not be uploaded again (the file changed or vanished): not pruned, it is the node's last copy",
                hex::encode(hash),
                paths()
            ));
            Ok(false)
        }
    }
}

/// Queues changes and commits them in batches (catalog first, then the repository).
struct Recorder {
    node: String,
    changes: Vec<Change>,
    /// The node's clock: every time the pass records, batch times included.
    clock: NodeClock,
}

impl Recorder {
    fn new(node: &str, clock: NodeClock) -> Recorder {
        Recorder {
            node: node.to_string(),
            changes: Vec::new(),
            clock,
        }
    }

    fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    async fn commit_if_full(
        &mut self,
        repo: &Repository,
        catalog: &mut Catalog,
    ) -> Result<(), BackupError> {
        if self.changes.len() >= BATCH_CHANGES {
            self.commit(repo, catalog).await?;
        }
        Ok(())
    }

    async fn commit(
        &mut self,
        repo: &Repository,
        catalog: &mut Catalog,
    ) -> Result<(), BackupError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.changes);
        catalog.commit(&self.node, self.clock.now(), changes)?;
        mirror::upload_pending(repo, catalog, &self.node).await?;
        Ok(())
    }
}
