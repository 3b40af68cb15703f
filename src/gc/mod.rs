//! `tablesafe gc`: retention, then two-phase deletion of blobs nothing retained needs.
//!
//! One run, on a catalog that holds every node's history (replayed from the repository,
//! so a node never frees what another node still references):
//!
//! 1. Catch up with every node's log and gc's own log (`gc/log/<seq>`).
//! 2. LIST `blobs/` once into a temporary table (the only command that lists blobs:
//!    one request per 1,000 blobs, the 256 shards `--parallel` at a time; it finds
//!    orphans that no catalog ever recorded, and gives each blob's last-modified time).
//!    The listing comes *before* the references are computed, so a blob uploaded after
//!    it cannot look unreferenced.
//! 3. Retention: per node, the policy picks the points to keep; gc records a
//!    `Retention` change (versions that cover no kept point and ended before the kept
//!    window are forgotten, dropped snapshots with them).
//! 4. References: every blob a remaining version refers to.
//! 5. Absolve condemned blobs that are referenced again or were uploaded again after
//!    their condemnation; condemn unreferenced blobs last modified more than the grace
//!    period ago (younger ones may be uploads whose records are still on their way).
//! 6. Delete blobs condemned (by an earlier run) more than the grace period ago, still
//!    unreferenced and not modified since, in chunks of about one round of concurrent
//!    delete requests ([`Repository::delete_chunk`]): before each chunk gc reads the
//!    nodes' logs again (and once anything new arrived, checks the chunk against it),
//!    and records the deletions in its log every [`HASHES_PER_BATCH`] blobs.
//!
//! Why this is safe with backups running on other nodes: a backup trusts a blob to
//! exist only if its catalog knows it and gc's log (which it reads at the start of every
//! pass) has not condemned it; a condemned blob it needs is uploaded again, which gives
//! the object a last-modified time after the condemnation, and gc never deletes such an
//! object. A backup that started before the condemnation refers to the blob in a batch
//! that reaches the repository long before the grace period ends (the grace period must
//! exceed the longest a node's batches can wait to be uploaded). One window remains: a
//! re-upload that lands after the listing, with its record after gc's last log read
//! before that chunk's delete, can be deleted; the backup checks the blob exists once
//! its record is in the repository and uploads it once more (a conditional delete,
//! which object stores do not offer, would close it). A pass that deduplicated onto a
//! blob gc condemns while it runs is covered by its lease (`backup::lease`): whatever
//! the grace, nothing condemned after the earliest start of a live lease is deleted.
//! Every gc write is a
//! create-if-absent batch, so two gc runs cannot both write, and an interrupted gc is
//! simply run again: blobs it deleted without recording are found gone and recorded.

pub mod leftovers;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use serde::Serialize;

use crate::catalog::mirror::{self, MirrorError};
use crate::catalog::reach::{GcSet, ListedBlob};
use crate::catalog::{Catalog, CatalogError, Change, Hash32, SnapshotFilter};
use crate::progress::Progress;
use crate::store::{BlobId, Repository, StoreError};
use crate::timespec::{self, Micros};

pub use policy::RetentionPolicy;

/// Hashes per gc log batch (32 bytes each: about 1.6 MB).
const HASHES_PER_BATCH: usize = 50_000;

/// What gc is asked to do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    pub policy: RetentionPolicy,
    /// How long a blob stays condemned (and how old an unreferenced blob must be to be
    /// condemned) before it is deleted.
    pub grace: Micros,
    pub dry_run: bool,
    /// Run even when there is no history at all, or the policy keeps no past point.
    pub force: bool,
    /// Nodes whose last state with data the retention may free (`--force NODE`): a node
    /// decommissioned for good. Every other node keeps it, whatever the rules say.
    pub release_last_state: Vec<String>,
    /// Concurrent delete requests.
    pub parallel: usize,
    /// Evaluate the retention as of this time instead of the current time (it must not
    /// be in the future); the grace period always runs on the current time.
    pub as_of: Option<Micros>,
}

/// Errors of a gc or verify run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the repository holds {blobs} blobs but no node has any catalog history in it, so gc would delete every blob; check --repo (or restore the nodes/ prefix), or pass --force if deleting everything is really meant"
    )]
    NoHistory { blobs: u64 },
    #[error(
        "the retention ({policy}) keeps no past point of node {node:?} ({snapshots} snapshots, none selected, and no --keep-within): add --keep-within or a --keep-* rule that selects snapshots, or pass --force to keep only the current state"
    )]
    KeepsNothing {
        node: String,
        policy: String,
        snapshots: usize,
    },
    #[error(
        "--force names node {node:?}, which has no history in this repository (its nodes: {known}): check the name"
    )]
    UnknownNode { node: String, known: String },
    #[error(
        "--keep-snapshot {name:?} matches no snapshot of any node ({close}): check the name with `tablesafe snapshot list`; nothing was changed"
    )]
    UnknownSnapshot { name: String, close: String },
}

/// What gc did (or, with `dry_run`, would do) to one node's history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeReport {
    pub node: String,
    /// Every instant from here on stays restorable (absent: all history kept).
    pub keep_from: Option<Micros>,
    pub snapshots_kept: u64,
    pub snapshots_dropped: Vec<String>,
    pub versions_dropped: u64,
    /// The node has no file now and the rules would have freed its last state with
    /// data: this instant (restorable with `restore --at`) was kept anyway.
    pub last_state_kept: Option<Micros>,
    /// Versions that rule kept.
    pub versions_held: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcSummary {
    pub dry_run: bool,
    pub policy: String,
    pub nodes: Vec<NodeReport>,
    pub blobs_listed: u64,
    pub bytes_listed: u64,
    pub blobs_referenced: u64,
    /// Condemned blobs found needed again.
    pub blobs_absolved: u64,
    pub blobs_condemned: u64,
    pub bytes_condemned: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    /// Staging files of interrupted uploads removed (`gc::leftovers`), and their bytes.
    pub leftovers_removed: u64,
    pub leftover_bytes: u64,
    /// Condemned blobs already gone (an earlier gc deleted them and was interrupted).
    pub blobs_recorded_gone: u64,
    /// Condemned blobs still inside their grace period, their bytes, and when the
    /// first of them may go.
    pub blobs_waiting: u64,
    pub bytes_waiting: u64,
    pub next_deletion: Option<Micros>,
    /// Blobs a retained version refers to that the repository does not hold.
    pub blobs_missing: u64,
    /// Backup passes running (live leases, `backup::lease`), stale leases ignored, and
    /// the condemnation time from which blobs wait for those passes to end.
    pub passes_running: u64,
    pub stale_leases: u64,
    pub held_for_passes_from: Option<Micros>,
    pub seconds: f64,
}

/// Runs gc against `repo`, using `view` (a catalog for all nodes of the repository, kept
/// between runs so only new batches are read).
pub async fn run(
    repo: &Repository,
    view: &mut Catalog,
    opts: &GcOptions,
    progress: Arc<Progress>,
) -> Result<GcSummary, GcError> {
    let started = Instant::now();
    let run_start = timespec::now();
    let mut summary = GcSummary {
        dry_run: opts.dry_run,
        policy: opts.policy.describe(),
        ..GcSummary::default()
    };

    // 1–2: the listing, then history: a blob uploaded after the listing is not in it,
    // so it cannot be condemned or deleted by this run, and every record that reached
    // the repository before the listing ended is read.
    list_into(repo, view, opts.parallel, &mut summary).await?;
    tracing::info!(
        blobs = summary.blobs_listed,
        secs = started.elapsed().as_secs_f64(),
        "listed the repository's blobs"
    );
    mirror::sync_all(repo, view).await?;
    if !opts.dry_run {
        // gc's own batches this catalog wrote, put back if the repository lost them.
        mirror::repair_log(repo, view, crate::catalog::GC_STREAM).await?;
    }
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "read every node's log"
    );
    let nodes = view.nodes()?;
    if nodes.is_empty() && summary.blobs_listed > 0 && !opts.force {
        return Err(GcError::NoHistory {
            blobs: summary.blobs_listed,
        });
    }

    // 3: retention, evaluated per node.
    check_kept_names(view, &opts.policy)?;
    if let Some(unknown) = opts.release_last_state.iter().find(|n| !nodes.contains(n)) {
        return Err(GcError::UnknownNode {
            node: unknown.clone(),
            known: nodes.join(", "),
        });
    }
    let now = opts
        .as_of
        .map_or_else(timespec::now, |t| t.min(timespec::now()));
    let mut retention_changes = Vec::new();
    for node in &nodes {
        let (report, change) = node_retention(view, node, opts, now)?;
        summary.nodes.push(report);
        retention_changes.extend(change);
    }
    if !opts.dry_run && !retention_changes.is_empty() {
        mirror::append_gc_batch(repo, view, retention_changes).await?;
    }

    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "evaluated the retention"
    );

    // 4: what the retained versions refer to.
    summary.blobs_referenced = view.reach_mark_referenced()?;
    tracing::info!(
        referenced = summary.blobs_referenced,
        secs = started.elapsed().as_secs_f64(),
        "marked referenced blobs"
    );
    summary.blobs_missing = count(view, GcSet::Missing)?.0;

    // 5: absolve, then condemn.
    let (absolved, _) = record_set(repo, view, GcSet::ToAbsolve, opts.dry_run, |hashes| {
        Change::Absolve { hashes }
    })
    .await?;
    summary.blobs_absolved = absolved;
    let (condemned, condemned_bytes) = record_set(
        repo,
        view,
        GcSet::ToCondemn {
            modified_before: run_start.saturating_sub(opts.grace),
        },
        opts.dry_run,
        |hashes| Change::Condemn { hashes },
    )
    .await?;
    summary.blobs_condemned = condemned;
    summary.bytes_condemned = condemned_bytes;
    tracing::info!(
        condemned,
        absolved,
        secs = started.elapsed().as_secs_f64(),
        "recorded condemned and absolved blobs"
    );

    // 6: delete what an earlier run condemned more than the grace period ago. A blob
    // condemned by this very run always waits for a later one.
    let condemned_by = run_start.saturating_sub(opts.grace).min(run_start - 1);
    // Whatever the grace: nothing condemned after a running backup pass started (it may
    // have deduplicated onto it, its record not in the repository yet).
    let leases = crate::backup::lease::read(repo, opts.dry_run).await?;
    (summary.passes_running, summary.stale_leases) = (leases.live, leases.stale);
    summary.held_for_passes_from = leases.protect_from;
    let condemned_by = leases
        .protect_from
        .map_or(condemned_by, |from| condemned_by.min(from - 1));
    let (gone, _) = record_set(repo, view, GcSet::AlreadyGone, opts.dry_run, |hashes| {
        Change::Delete { hashes }
    })
    .await?;
    summary.blobs_recorded_gone = gone;
    let (to_delete, to_free) = count(view, GcSet::ToDelete { condemned_by })?;
    if opts.dry_run {
        summary.blobs_deleted = to_delete;
        summary.bytes_freed = to_free;
    } else {
        progress
            .files_total
            .store(to_delete, std::sync::atomic::Ordering::Relaxed);
        progress
            .bytes_total
            .store(to_free, std::sync::atomic::Ordering::Relaxed);
        sweep(repo, view, opts, condemned_by, &progress, &mut summary).await?;
    }
    let (waiting, waiting_bytes, first) = view.reach_waiting(condemned_by)?;
    summary.blobs_waiting = waiting;
    summary.bytes_waiting = waiting_bytes;
    summary.next_deletion = first.map(|t| t + opts.grace);
    if opts.dry_run {
        // Blobs this run would condemn wait for a later run too.
        summary.blobs_waiting += summary.blobs_condemned;
        summary.bytes_waiting += summary.bytes_condemned;
        if summary.blobs_condemned > 0 && summary.next_deletion.is_none() {
            summary.next_deletion = Some(now + opts.grace);
        }
    }
    let left = leftovers::clean(repo, opts.grace, opts.dry_run).await?;
    (summary.leftovers_removed, summary.leftover_bytes) = (left.files, left.bytes);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Evaluates the retention of one node: what it keeps and drops, and the `Retention`
/// change that applies it (none when the policy is empty: all history kept).
///
/// Whatever the rules say, the last state in which the node had data stays restorable
/// unless `--force` names the node: a node whose files all ended (decommissioned, or a
/// data directory that vanished and was recorded as such) keeps the instant before its
/// last file ended as a retained point.
fn node_retention(
    view: &mut Catalog,
    node: &str,
    opts: &GcOptions,
    now: Micros,
) -> Result<(NodeReport, Option<Change>), GcError> {
    let mut report = NodeReport {
        node: node.to_string(),
        ..NodeReport::default()
    };
    if opts.policy.is_empty() {
        return Ok((report, None));
    }
    let snapshots = view.snapshots(&SnapshotFilter {
        node: Some(node.to_string()),
        ..SnapshotFilter::default()
    })?;
    let kept = opts.policy.select(&snapshots);
    let keep_from = opts.policy.keep_from(now);
    let mut points: Vec<Micros> = snapshots
        .iter()
        .filter(|s| kept.contains(&s.name))
        .map(|s| s.time)
        .collect();
    let dropped: Vec<String> = snapshots
        .iter()
        .filter(|s| !kept.contains(&s.name) && s.time < keep_from)
        .map(|s| s.name.clone())
        .collect();
    view.reach_set_policy(node, keep_from, &points)?;
    report.keep_from = Some(keep_from);
    report.snapshots_kept = (snapshots.len() - dropped.len()) as u64;
    report.versions_dropped = view.reach_count_dropped(node)?;
    let keeps_no_past = opts.policy.keep_within.is_none() && points.is_empty();
    if keeps_no_past && (report.versions_dropped > 0 || !dropped.is_empty()) && !opts.force {
        return Err(GcError::KeepsNothing {
            node: node.to_string(),
            policy: opts.policy.describe(),
            snapshots: snapshots.len(),
        });
    }
    let last = if opts.release_last_state.iter().any(|n| n == node) {
        None
    } else {
        view.last_instant_with_data(node)?
    };
    if let Some(last) = last.filter(|t| *t < keep_from && !points.contains(t)) {
        view.reach_set_policy(node, keep_from, &[last])?;
        let dropped_now = view.reach_count_dropped(node)?;
        if dropped_now < report.versions_dropped {
            report.last_state_kept = Some(last);
            report.versions_held = report.versions_dropped - dropped_now;
            report.versions_dropped = dropped_now;
            points.push(last);
        }
    }
    report.snapshots_dropped = dropped.clone();
    let change = Change::Retention {
        node: node.to_string(),
        keep_from,
        points,
        dropped_snapshots: dropped,
    };
    Ok((report, Some(change)))
}

/// Refuses a `keep_snapshot` name no snapshot of any node has: a typo would otherwise
/// drop the very snapshot the operator meant to keep.
fn check_kept_names(view: &Catalog, policy: &RetentionPolicy) -> Result<(), GcError> {
    if policy.keep_snapshots.is_empty() {
        return Ok(());
    }
    let names: std::collections::BTreeSet<String> = view
        .snapshots(&SnapshotFilter::default())?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let Some(unknown) = policy.keep_snapshots.iter().find(|n| !names.contains(*n)) else {
        return Ok(());
    };
    let close = policy::close_names(unknown, names.iter().map(String::as_str));
    let close = if close.is_empty() {
        format!("{} snapshot(s) exist, none with a close name", names.len())
    } else {
        format!("close names: {}", close.join(", "))
    };
    Err(GcError::UnknownSnapshot {
        name: unknown.clone(),
        close,
    })
}

/// LISTs `blobs/` into the view's temporary table, `concurrency` shards at a time.
pub(crate) async fn list_into(
    repo: &Repository,
    view: &mut Catalog,
    concurrency: usize,
    summary: &mut GcSummary,
) -> Result<(), GcError> {
    view.reach_begin()?;
    let mut listing = std::pin::pin!(repo.list_blobs(concurrency));
    // Shards arrive in hash order, each sorted: the inserts append to the table.
    while let Some(shard) = listing.try_next().await? {
        summary.blobs_listed += shard.len() as u64;
        summary.bytes_listed += shard.iter().map(|b| b.stored_size).sum::<u64>();
        let rows: Vec<ListedBlob> = shard
            .iter()
            .map(|blob| ListedBlob {
                hash: *blob.id.as_bytes(),
                stored_size: blob.stored_size,
                modified: blob.modified.timestamp_micros(),
            })
            .collect();
        view.reach_add_listed(&rows)?;
    }
    Ok(())
}

/// The next `limit` members of `set` after `*after` (hash, stored size), moving `after`
/// on and adding to `totals` (count, stored bytes); `None` once the set is exhausted.
fn next_page(
    view: &Catalog,
    set: GcSet,
    after: &mut Option<Hash32>,
    limit: usize,
    totals: &mut (u64, u64),
) -> Result<Option<Vec<(Hash32, u64)>>, GcError> {
    let page = view.reach_page(set, after.as_ref(), limit)?;
    let Some(last) = page.last() else {
        return Ok(None);
    };
    *after = Some(last.0);
    totals.0 += page.len() as u64;
    totals.1 += page.iter().map(|(_, size)| size).sum::<u64>();
    Ok(Some(page))
}

/// Count and stored bytes of a set.
fn count(view: &Catalog, set: GcSet) -> Result<(u64, u64), GcError> {
    let (mut totals, mut after) = ((0, 0), None);
    while next_page(view, set, &mut after, HASHES_PER_BATCH, &mut totals)?.is_some() {}
    Ok(totals)
}

/// Records every member of `set` in gc's log with `change` (unless `dry_run`), in
/// batches. Returns the count and stored bytes.
async fn record_set(
    repo: &Repository,
    view: &mut Catalog,
    set: GcSet,
    dry_run: bool,
    change: impl Fn(Vec<Hash32>) -> Change,
) -> Result<(u64, u64), GcError> {
    if dry_run {
        return count(view, set);
    }
    let (mut totals, mut after) = ((0, 0), None);
    while let Some(page) = next_page(view, set, &mut after, HASHES_PER_BATCH, &mut totals)? {
        mirror::append_gc_batch(
            repo,
            view,
            vec![change(page.into_iter().map(|(h, _)| h).collect())],
        )
        .await?;
    }
    Ok(totals)
}

/// Deletes the condemned blobs that are due, chunk by chunk, reading the nodes' logs
/// again before each chunk so a blob referenced meanwhile is absolved instead. The
/// deletions are recorded in batches of up to [`HASHES_PER_BATCH`] (a blob deleted but
/// not recorded yet is still condemned, which no backup trusts, and a run interrupted
/// before recording it finds it gone and records it).
async fn sweep(
    repo: &Repository,
    view: &mut Catalog,
    opts: &GcOptions,
    condemned_by: Micros,
    progress: &Progress,
    summary: &mut GcSummary,
) -> Result<(), GcError> {
    let mut sweeper = Sweeper {
        repo,
        view,
        parallel: opts.parallel,
        progress,
        summary,
        unrecorded: Vec::new(),
        news_since_mark: false,
        spent: [std::time::Duration::ZERO; 4],
    };
    let swept = sweeper.run(condemned_by).await;
    // Record what was deleted even when a delete failed part-way.
    let recorded = sweeper.record_deleted().await;
    let [logs, checks, deletes, records] = sweeper.spent.map(|d| d.as_secs_f64());
    tracing::info!(
        logs,
        checks,
        deletes,
        records,
        "deletion phase: seconds spent"
    );
    swept.and(recorded)
}

/// The deletion phase's state.
struct Sweeper<'a> {
    repo: &'a Repository,
    view: &'a mut Catalog,
    parallel: usize,
    progress: &'a Progress,
    summary: &'a mut GcSummary,
    /// Deleted, not yet recorded in gc's log.
    unrecorded: Vec<Hash32>,
    /// Whether a batch arrived since the references were marked.
    news_since_mark: bool,
    /// Where the time goes, for the log: re-reading logs, checks, deletes, records.
    spent: [std::time::Duration; 4],
}

impl Sweeper<'_> {
    async fn run(&mut self, condemned_by: Micros) -> Result<(), GcError> {
        let chunk = self.repo.delete_chunk();
        let (mut after, mut paged) = (None, (0, 0));
        let set = GcSet::ToDelete { condemned_by };
        while let Some(page) = next_page(self.view, set, &mut after, chunk, &mut paged)? {
            self.delete_chunk(page).await?;
        }
        Ok(())
    }

    /// Reads the logs again, then deletes the blobs of `chunk` nothing refers to.
    async fn delete_chunk(&mut self, chunk: Vec<(Hash32, u64)>) -> Result<(), GcError> {
        let t = Instant::now();
        let (_, applied) = mirror::sync_all(self.repo, self.view).await?;
        // Until a batch arrives, the pages (computed from the references marked at the
        // start of the run) are exact; from then on every chunk is checked again.
        self.news_since_mark |= applied > 0;
        self.spent[0] += t.elapsed();
        let t = Instant::now();
        let garbage = if self.news_since_mark {
            let hashes: Vec<Hash32> = chunk.iter().map(|(hash, _)| *hash).collect();
            Some(self.view.still_garbage(&hashes)?)
        } else {
            None
        };
        let mut sizes: BTreeMap<Hash32, u64> = BTreeMap::new();
        let mut needed = Vec::new();
        for (hash, size) in chunk {
            // `chunk` is in hash order, and so is what `still_garbage` keeps of it.
            if garbage
                .as_ref()
                .is_none_or(|g| g.binary_search(&hash).is_ok())
            {
                sizes.insert(hash, size);
            } else {
                needed.push(hash);
            }
        }
        if !needed.is_empty() {
            self.summary.blobs_absolved += needed.len() as u64;
            let absolve = vec![Change::Absolve { hashes: needed }];
            mirror::append_gc_batch(self.repo, self.view, absolve).await?;
        }
        let ids: Vec<BlobId> = sizes.keys().map(|h| BlobId::from_bytes(*h)).collect();
        self.spent[1] += t.elapsed();
        let t = Instant::now();
        // If this fails part-way, the next run finds the deleted ones gone and records them.
        let deleted = self.repo.delete_blobs(&ids, self.parallel).await?;
        self.spent[2] += t.elapsed();
        let freed: u64 = deleted
            .iter()
            .filter_map(|id| sizes.get(id.as_bytes()))
            .sum();
        self.summary.blobs_deleted += deleted.len() as u64;
        self.summary.bytes_freed += freed;
        self.progress.add_done_many(deleted.len() as u64, freed);
        self.unrecorded
            .extend(deleted.iter().map(|id| *id.as_bytes()));
        if self.unrecorded.len() >= HASHES_PER_BATCH {
            self.record_deleted().await?;
        }
        Ok(())
    }

    /// Records the deletions not recorded yet in gc's log (one batch).
    async fn record_deleted(&mut self) -> Result<(), GcError> {
        let t = Instant::now();
        if !self.unrecorded.is_empty() {
            let hashes = std::mem::take(&mut self.unrecorded);
            mirror::append_gc_batch(self.repo, self.view, vec![Change::Delete { hashes }]).await?;
        }
        self.spent[3] += t.elapsed();
        Ok(())
    }
}
