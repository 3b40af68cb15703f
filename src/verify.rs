//! `tablesafe verify`: can every retained point of every node be restored?
//!
//! Reads every node's history from the repository (as `gc` does), LISTs `blobs/` once,
//! and reports each blob a retained file version needs but the repository does not
//! hold, with the files and points that need it. With `--read-data` (or a random
//! subset), it also downloads blobs and checks their content against their BLAKE3 id,
//! as a restore would.
//!
//! What it finds missing or damaged is recorded as gone: one `Delete` batch in gc's log
//! (`gc/log/<seq>`), which every catalog replays, so no backup trusts those blobs any
//! more and the next backup of any node that still holds their content uploads them
//! again. A damaged blob object is first moved out of `blobs/` to `damaged/<key>.<time>`
//! (kept, never deleted), so that upload does not find it in place. A damaged pack is
//! left where it is: its other files are still checked one by one when restored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::catalog::mirror;
use crate::catalog::reach::GcSet;
use crate::catalog::{Catalog, Change, FileVersion, Hash32, SnapshotFilter};
use crate::gc::GcError;
use crate::progress::Progress;
use crate::store::{BlobId, Repository, StoreError, blob_key};
use crate::timespec::{self, Micros};

/// Referenced blobs fetched from the catalog per page.
const PAGE: usize = 10_000;
/// Files listed per problem.
const FILES_PER_PROBLEM: usize = 5;

/// How much content to read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Existence only.
    None,
    /// Every referenced blob.
    All,
    /// A random fraction (0–1] of the referenced blobs, different on every run.
    Subset(f64),
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub read_data: ReadData,
    /// Concurrent downloads.
    pub parallel: usize,
}

/// One blob that a retained point cannot do without.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `missing` or `corrupt`.
    pub kind: &'static str,
    pub blob: String,
    pub detail: String,
    /// Some of the file versions that hold this blob.
    pub files: Vec<FileVersion>,
    /// Snapshots (`node/name`) whose restore needs it.
    pub snapshots: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub nodes: Vec<String>,
    pub snapshots: u64,
    pub blobs_listed: u64,
    pub blobs_referenced: u64,
    pub blobs_read: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    /// Blobs recorded as gone in gc's log, for the next backups to upload again.
    pub recorded_gone: u64,
    /// Damaged blob objects moved out of `blobs/` (to `damaged/`).
    pub moved_aside: u64,
    /// Problems not recorded as gone: damaged packs, blobs that could not be read.
    pub left_in_place: u64,
    pub seconds: f64,
}

/// Verifies the repository, using `view` as the all-nodes catalog.
pub async fn run(
    repo: &Repository,
    view: &mut Catalog,
    opts: &VerifyOptions,
    progress: Arc<Progress>,
) -> Result<VerifyReport, GcError> {
    let started = Instant::now();
    // History first, then the listing (gc does the opposite): every blob a record read
    // here refers to was durable before the record, so it is in the listing unless it
    // is really gone, and a backup running meanwhile cannot cause a false alarm.
    let mut report = VerifyReport {
        nodes: mirror::sync_all(repo, view).await?.0,
        ..VerifyReport::default()
    };
    // The logs themselves: every batch still there, and with --read-data intact.
    mirror::check_logs(repo, view, opts.read_data != ReadData::None).await?;
    let mut summary = crate::gc::GcSummary::default();
    crate::gc::list_into(repo, view, opts.parallel, &mut summary).await?;
    report.blobs_listed = summary.blobs_listed;
    report.snapshots = view.snapshots(&SnapshotFilter::default())?.len() as u64;
    report.blobs_referenced = view.reach_mark_referenced()?;

    // Missing blobs are reported here and not read back below.
    let mut missing: HashSet<Hash32> = HashSet::new();
    // What the next backups must upload again.
    let mut gone: Vec<Hash32> = Vec::new();
    let mut after: Option<Hash32> = None;
    loop {
        let page = view.reach_page(GcSet::Missing, after.as_ref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (hash, _) in page {
            let problem = describe(view, "missing", &hash, "not in the repository".into())?;
            report.problems.push(problem);
            missing.insert(hash);
            gone.push(hash);
            // A packed file is missing through its pack(s): those are gone too.
            gone.extend(view.unlisted_packs_of(&hash)?);
        }
    }

    if opts.read_data != ReadData::None {
        let seed = uuid::Uuid::new_v4();
        let mut after: Option<Hash32> = None;
        loop {
            let page = view.referenced_page(after.as_ref(), PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(*last);
            let chosen: Vec<Hash32> = page
                .into_iter()
                .filter(|h| sampled(opts.read_data, seed.as_bytes(), h))
                .filter(|h| !missing.contains(h))
                .collect();
            progress
                .files_total
                .fetch_add(chosen.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let mut reads = futures::stream::iter(
                chosen
                    .into_iter()
                    .map(|h| async move { (h, repo.verify_blob(&BlobId::from_bytes(h)).await) }),
            )
            .buffer_unordered(opts.parallel.max(1));
            while let Some((hash, outcome)) = reads.next().await {
                match outcome {
                    Ok(bytes) => {
                        report.blobs_read += 1;
                        report.bytes_read += bytes;
                        progress.add_done(bytes);
                    }
                    Err(e) => {
                        progress.add_done(0);
                        let damaged = matches!(
                            e,
                            StoreError::CorruptBlob { .. } | StoreError::HashMismatch { .. }
                        );
                        let kind = if damaged { "corrupt" } else { "unreadable" };
                        let problem = describe(view, kind, &hash, e.to_string())?;
                        report.problems.push(problem);
                        if damaged && !view.is_pack(&hash)? {
                            move_aside(repo, &hash).await?;
                            report.moved_aside += 1;
                            gone.push(hash);
                        } else {
                            report.left_in_place += 1;
                        }
                    }
                }
            }
        }
    }
    if !gone.is_empty() {
        gone.sort_unstable();
        gone.dedup();
        report.recorded_gone = gone.len() as u64;
        let change = Change::Delete { hashes: gone };
        mirror::append_gc_batch(repo, view, vec![change]).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Moves a damaged blob object out of `blobs/`, to `damaged/<key>.<time>`, so an upload
/// of the same content does not find it in place (nothing is deleted).
async fn move_aside(repo: &Repository, hash: &Hash32) -> Result<(), GcError> {
    let key = blob_key(&BlobId::from_bytes(*hash));
    let aside = object_store::path::Path::from(format!("damaged/{key}.{}", timespec::now()));
    tracing::info!(blob = %hex::encode(hash), to = %aside, "moving a damaged blob aside");
    repo.retried("rename", |_| repo.store().rename(&key, &aside))
        .await
        .map_err(|e| GcError::Store(repo.classify(e)))
}

/// Whether `hash` is in this run's sample.
fn sampled(read: ReadData, seed: &[u8; 16], hash: &Hash32) -> bool {
    match read {
        ReadData::None => false,
        ReadData::All => true,
        ReadData::Subset(fraction) => {
            let mut h = blake3::Hasher::new();
            h.update(seed);
            h.update(hash);
            let mut first = [0u8; 8];
            first.copy_from_slice(&h.finalize().as_bytes()[..8]);
            (u64::from_le_bytes(first) as f64) < fraction * u64::MAX as f64
        }
    }
}

/// A problem with the files and snapshots that need the blob.
fn describe(
    view: &Catalog,
    kind: &'static str,
    hash: &Hash32,
    detail: String,
) -> Result<Problem, GcError> {
    let files = view.versions_with_blob(hash, FILES_PER_PROBLEM)?;
    let mut snapshots = Vec::new();
    for f in &files {
        let rows = view.snapshots(&SnapshotFilter {
            node: Some(f.node.clone()),
            since: Some(f.valid_from),
            until: f.valid_to.map(|t| t - 1),
        })?;
        snapshots.extend(rows.into_iter().map(|s| format!("{}/{}", s.node, s.name)));
    }
    snapshots.sort();
    snapshots.dedup();
    Ok(Problem {
        kind,
        blob: hex::encode(hash),
        detail,
        files,
        snapshots,
    })
}

/// One line per problem file, for the terminal.
pub fn problem_lines(p: &Problem) -> Vec<String> {
    let until = |t: Option<Micros>| t.map_or("now".to_string(), timespec::format_precise);
    let mut lines: Vec<String> = p
        .files
        .iter()
        .map(|f| {
            format!(
                "{} blob {} ({}): node {} file {}/{} (live {} to {}){}",
                p.kind,
                p.blob,
                p.detail,
                f.node,
                f.key.data_dir,
                f.key.data_relative_path(),
                timespec::format_precise(f.valid_from),
                until(f.valid_to),
                if p.snapshots.is_empty() {
                    String::new()
                } else {
                    format!("; needed by snapshots {}", p.snapshots.join(", "))
                }
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push(format!("{} blob {} ({})", p.kind, p.blob, p.detail));
    }
    lines
}

/// Differences listed per kind and direction; the rest are counted.
const DIFFERENCES_SHOWN: usize = 50;

/// What `verify --check-catalog` found in one local catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogDifferences {
    pub catalog: std::path::PathBuf,
    /// One line per difference (or damaged row).
    pub lines: Vec<String>,
    /// Differences found beyond those in `lines`.
    pub more: u64,
}

impl CatalogDifferences {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.more == 0
    }
}

/// Compares the local catalog `local` with one rebuilt from the repository's logs at
/// `scratch` (a new file, removed afterwards): with `node`, that node's history and
/// gc's log (what `catalog rebuild` makes of a node's catalog); without, every node's
/// (gc's and verify's all-nodes view). `local` first catches up with the same logs, so
/// only what the logs do not say shows: damaged or altered rows, and batches the
/// repository never received.
pub async fn check_catalog(
    repo: &Repository,
    local: &mut Catalog,
    node: Option<&str>,
    scratch: &std::path::Path,
) -> Result<CatalogDifferences, GcError> {
    let mut out = CatalogDifferences {
        catalog: local.path().to_path_buf(),
        lines: Vec::new(),
        more: 0,
    };
    let mut truth = Catalog::open(scratch)?;
    match node {
        Some(node) => {
            mirror::rebuild_node(repo, &mut truth, node).await?;
            mirror::sync_gc_log(repo, &mut truth).await?;
            mirror::sync_gc_log(repo, local).await?;
            let pending = local.pending_batches(node)?;
            if let Some(first) = pending.first() {
                out.lines.push(format!(
                    "{} batch(es) of node {node} from {} on are in the local catalog only, not in the repository yet: run `tablesafe backup` to upload them, then compare again",
                    pending.len(),
                    first.seq
                ));
            }
        }
        None => {
            mirror::sync_all(repo, &mut truth).await?;
            mirror::sync_all(repo, local).await?;
        }
    }
    drop(truth);
    if let Err(crate::catalog::CatalogError::RowDamaged { count, first, .. }) = local.check_rows() {
        out.lines.push(format!(
            "{count} damaged row(s) (checksum mismatch), first: {first}"
        ));
    }
    let (lines, more) = local.differences_from(scratch, node, DIFFERENCES_SHOWN)?;
    out.lines.extend(lines);
    out.more = more;
    Ok(out)
}
