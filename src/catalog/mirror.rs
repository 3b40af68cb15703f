//! The catalog's copy in the repository: `nodes/<node>/log/<seq>`, one object per batch.
//!
//! A batch is uploaded only after it is committed locally, and a batch is only ever built
//! from changes whose blobs are already durable, so no log object in the repository can
//! refer to a missing blob. Uploads are create-if-absent: an object that is already there
//! (a retry after a crash) must be byte-identical, otherwise two processes are writing
//! as the same node and the backup stops rather than overwrite the other's history
//! (unless the object there is damaged: it fails to decode or its checksum, and is
//! replaced). The catalog keeps every batch's body after uploading it, so the writer
//! puts back batches the repository lost ([`repair_log`]). Only keys of 20 digits under
//! `log/` are batches: anything else there is ignored with a warning.
//! Since some stores ignore the condition, every upload is preceded by
//! [`check_can_write`] (repository identity, writer id, and a LIST for batches this
//! catalog did not write), which does not depend on it.
//!
//! `catalog rebuild` LISTs `nodes/` and the log prefixes (never `blobs/`) and replays every
//! batch in order through [`super::Replay::apply`], the same code a backup's commit uses.
//! Log objects are fetched 8 at a time and applied in one transaction per 4 MiB of them,
//! so a rebuild commits (and fsyncs) a few times, not once per batch.
//!
//! `gc/log/<seq>` is gc's own log (retention applied, blobs condemned, absolved and
//! deleted), replayed by every catalog after the nodes' logs.

use bytes::Bytes;

use super::{Batch, Catalog, CatalogError, GC_STREAM};
use crate::store::{Repository, StoreError};

/// Errors mirroring the catalog to or from the repository.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the repository already holds a different batch {seq} for node {node:?}: two tablesafe processes are using the same --node name; give each Cassandra node its own name"
    )]
    Conflict { node: String, seq: u64 },
    #[error("catalog log object {key} in the repository is unusable: {detail}")]
    BadLog { key: String, detail: String },
    #[error(
        "another tablesafe gc wrote {key} first: two gc runs were working on this repository at once; run gc again once the other has finished"
    )]
    GcRace { key: String },
    #[error("no catalog history for node {node:?} in the repository (nodes found: {found})")]
    UnknownNode { node: String, found: String },
    #[error(
        "node {node:?} is also being backed up by another catalog ({other}, batch {seq} of its log): nothing was recorded; give each host its own --node, or if this host replaces the other one, run `tablesafe catalog rebuild` here to take the node over"
    )]
    ForeignWriter {
        node: String,
        other: String,
        seq: u64,
    },
    #[error(
        "the repository {url} is gone (its config object is missing): nothing more is written to it, and tablesafe never recreates a repository; restore it, or point --repo at the right one"
    )]
    RepositoryGone { url: String },
    #[error(
        "the repository at {url} is not the one this catalog belongs to (repository id {found}, expected {expected}): it was replaced by a new `init` or --repo names another; nothing is written to it; move the catalog aside and run `tablesafe catalog rebuild` if the new repository is the right one"
    )]
    RepositoryReplaced {
        url: String,
        expected: String,
        found: String,
    },
}

/// Object key of a node's batch; zero-padded so keys sort in sequence order.
pub fn log_key(node: &str, seq: u64) -> String {
    format!("nodes/{node}/log/{seq:020}")
}

/// Uploads every batch of `node` committed locally but not yet in the repository.
/// Returns how many were uploaded. Checks first that this catalog may still write the
/// node into this repository ([`check_can_write`]): a backup calls this at the start of
/// every pass and after committing every batch, so no batch is written without it.
pub async fn upload_pending(
    repo: &Repository,
    catalog: &mut Catalog,
    node: &str,
) -> Result<usize, MirrorError> {
    check_can_write(repo, catalog, node).await?;
    if audit_due(repo, node) {
        repair_log(repo, catalog, node).await?;
    }
    let pending = catalog.pending_bodies(node)?;
    for (seq, body) in &pending {
        put_batch(repo, node, *seq, Bytes::from(body.clone())).await?;
        catalog.mark_uploaded(node, *seq)?;
    }
    Ok(pending.len())
}

/// How often a running process checks that the repository still holds every batch of
/// its node it kept ([`repair_log`]): at its first pass, then once an hour.
const AUDIT_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether [`repair_log`] is due for `node` in `repo` in this process (and marks it done).
fn audit_due(repo: &Repository, node: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static LAST: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    let key = format!("{}\n{node}", repo.url());
    match last.get(&key) {
        Some(at) if now.duration_since(*at) < AUDIT_EVERY => false,
        _ => {
            last.insert(key, now);
            true
        }
    }
}

/// Puts back every batch of `stream` (a node's log, or gc's) this catalog keeps that
/// the repository lacks or holds with another size (truncated, or replaced by something
/// else): one LIST of the log (a request per 1,000 batches), a GET only for an object
/// whose size differs. Warns about batches the repository lacks that this catalog does
/// not keep (written before catalogs kept them, or by another catalog). Returns how many
/// were put back. A same-size damage (a flipped bit) is caught by verify and rebuild,
/// whose message says to delete the object so that this puts it back. The node's writer
/// calls it from [`upload_pending`], gc for its own log at the start of every run.
pub async fn repair_log(
    repo: &Repository,
    catalog: &mut Catalog,
    stream: &str,
) -> Result<usize, MirrorError> {
    let listed: std::collections::HashMap<u64, u64> = list_new(repo, stream, 0)
        .await?
        .into_iter()
        .filter_map(|(key, size)| Some((seq_of(stream, &key)?, size)))
        .collect();
    let mut kept = std::collections::HashSet::new();
    let mut repaired = 0;
    for (seq, size) in catalog.kept_sizes(stream)? {
        kept.insert(seq);
        let there = listed.get(&seq).copied();
        if there == Some(size) {
            continue;
        }
        let Some(body) = catalog.kept_body(stream, seq)? else {
            continue;
        };
        // A damaged copy is replaced with a warning of its own.
        if put_batch(repo, stream, seq, Bytes::from(body)).await? {
            repaired += 1;
            if there.is_none() {
                tracing::warn!(
                    key = %stream_key(stream, seq),
                    "the repository had lost this batch: put back from this catalog"
                );
            }
        }
    }
    let uploaded = catalog.last_uploaded_seq(stream)?;
    let lost: Vec<u64> = (1..=uploaded)
        .filter(|seq| !listed.contains_key(seq) && !kept.contains(seq))
        .collect();
    if let Some(first) = lost.first() {
        tracing::warn!(
            key = %stream_key(stream, *first),
            missing = lost.len(),
            "batches of this log are missing from the repository and this catalog does not hold them (they predate catalogs keeping every batch, or another catalog wrote them): the log cannot be replayed past the first; put them back from a copy of the repository"
        );
    }
    Ok(repaired)
}

/// Whether `catalog` may write `node`'s history into `repo` now: two small requests
/// (a GET of `config`, a LIST of the node's log after the last batch this catalog
/// knows the repository holds, empty unless someone else wrote), and at the start of a
/// pass (nothing pending) a third, a LIST of the notices refused writers left
/// (`catalog::contenders`).
///
/// - The repository is still the one opened: its `config` exists and holds the same id
///   (and the catalog belongs to that repository). Otherwise nothing is written, so a
///   repository deleted or replaced under a running daemon is never recreated in part.
/// - The node's latest batch this catalog applied is its own ([`Catalog::may_write`]).
/// - The repository holds no batch of the node beyond the catalog's own: a batch there
///   that this catalog did not write means another catalog writes the node. This does
///   not rest on the store honouring conditional creates.
pub async fn check_can_write(
    repo: &Repository,
    catalog: &mut Catalog,
    node: &str,
) -> Result<(), MirrorError> {
    check_repository(repo).await?;
    let url = repo.url().to_string();
    let opened = repo.config().id.clone();
    if let Some(expected) = catalog.bind_repository(&opened)? {
        return Err(MirrorError::RepositoryReplaced {
            url,
            expected,
            found: opened,
        });
    }
    let uploaded = catalog.last_uploaded_seq(node)?;
    let last = catalog.last_seq(node)?;
    if let Some((other, seq)) = other_writer(repo, catalog, node, uploaded, last).await? {
        let refused = MirrorError::ForeignWriter {
            node: node.to_string(),
            other,
            seq,
        };
        // The node's writer hears of it too (see `contenders`).
        let own = catalog.writer_id()?;
        super::contenders::leave(repo, node, &own, &refused.to_string()).await;
        return Err(refused);
    }
    if uploaded == last {
        // Nothing pending: the start of a pass.
        super::contenders::report(repo, node).await?;
    }
    Ok(())
}

/// Another catalog writing `node`, described, with the batch that shows it: the node's
/// latest batch this catalog applied is not its own, or the repository holds a batch
/// after `last` (the catalog's latest), listed after `uploaded` (the latest it knows
/// the repository holds), that this catalog did not write. Batches up to `last` not
/// yet marked uploaded are this catalog's own (an upload interrupted before it was
/// recorded); `put_batch` compares them byte for byte. Batches after `last` that this
/// catalog did write (it lost them: a lost write-ahead log, a host rolled back) are
/// caught up with ([`catch_up_own`]), not taken for another writer.
async fn other_writer(
    repo: &Repository,
    catalog: &mut Catalog,
    node: &str,
    uploaded: u64,
    last: u64,
) -> Result<Option<(String, u64)>, MirrorError> {
    if let Err(other) = catalog.may_write(node)? {
        return Ok(Some((other.describe(), other.seq)));
    }
    let beyond: Vec<String> = list_new(repo, node, uploaded)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| seq_of(node, key).is_some_and(|seq| seq > last))
        .collect();
    if beyond.is_empty() {
        return Ok(None);
    }
    catch_up_own(repo, catalog, node, last, &beyond).await
}

/// Applies, in order, the batches `beyond` (after `last`) that this catalog wrote
/// itself, keeping their bodies; stops at the first another catalog wrote and names
/// it. Having caught up, the catalog takes a new writer id
/// ([`Catalog::renew_writer_id`]): were its lost batches written by a copy of it (a
/// cloned host) still running rather than by its own past, that copy is refused at its
/// next batch instead of both writing the node.
async fn catch_up_own(
    repo: &Repository,
    catalog: &mut Catalog,
    node: &str,
    last: u64,
    beyond: &[String],
) -> Result<Option<(String, u64)>, MirrorError> {
    let own = catalog.writer_id()?;
    let mut caught = 0u64;
    let mut other = None;
    for (i, key) in beyond.iter().enumerate() {
        let expected = log_key(node, last + i as u64 + 1);
        if *key != expected {
            return Err(unusable(
                node,
                &expected,
                &format!("missing from the repository (next present: {key})"),
            ));
        }
        let body = repo.get_object(key).await?;
        let batch = decode_log(node, key, &body)?;
        match writer_of(&batch) {
            Some(w) if w.writer == own => {}
            w => {
                let who = w.map_or_else(|| "a writer without an id".to_string(), |w| w.describe());
                other = Some((who, batch.seq));
                break;
            }
        }
        catalog.apply_batch(&batch, true)?;
        catalog.keep_body(node, batch.seq, &body)?;
        caught += 1;
    }
    if caught > 0 {
        let renewed = catalog.renew_writer_id()?;
        tracing::warn!(
            node,
            batches = caught,
            first = last + 1,
            writer = %renewed,
            "this catalog was behind the repository (its last writes were lost: a crash, or the host rolled back): caught up with its own batches from the repository; it writes under a new writer id from now on"
        );
    }
    Ok(other)
}

/// The writer a batch names, if it names one.
fn writer_of(batch: &Batch) -> Option<super::writer::NodeWriter> {
    batch.changes.iter().find_map(|c| match c {
        super::Change::Writer { id, host } => Some(super::writer::NodeWriter {
            writer: id.clone(),
            host: host.clone(),
            seq: batch.seq,
        }),
        _ => None,
    })
}

/// The repository is still the one `repo` opened: its `config` exists and holds the
/// same id (one small GET). Checked before every write of a log object.
pub async fn check_repository(repo: &Repository) -> Result<(), MirrorError> {
    let url = repo.url().to_string();
    let opened = &repo.config().id;
    match repo.current_id().await? {
        None => Err(MirrorError::RepositoryGone { url }),
        Some(found) if found != *opened => Err(MirrorError::RepositoryReplaced {
            url,
            expected: opened.clone(),
            found,
        }),
        Some(_) => Ok(()),
    }
}

/// Writes `body`, batch `seq` of `node` as this catalog committed it, unless the
/// repository already holds it. Returns whether it wrote. An object already there must
/// be this batch (a retry): a damaged one (it does not decode, or fails its checksum)
/// is replaced with a warning; another valid batch is [`MirrorError::Conflict`].
async fn put_batch(
    repo: &Repository,
    stream: &str,
    seq: u64,
    body: Bytes,
) -> Result<bool, MirrorError> {
    let key = stream_key(stream, seq);
    // The local copy is checked first: SQLite has no checksums, and a damaged copy
    // must not reach the repository.
    let ours = match Batch::decode(&body) {
        Ok(batch) if batch.node == stream && batch.seq == seq => batch,
        Ok(batch) => {
            return Err(local_copy_damaged(
                &key,
                &format!("holds batch {} of {:?}", batch.seq, batch.node),
            ));
        }
        Err(e) => return Err(local_copy_damaged(&key, &e.0)),
    };
    if repo.put_object_if_absent(&key, body.clone()).await? {
        return Ok(true);
    }
    let existing = repo.get_object(&key).await?;
    if existing == body {
        return Ok(false);
    }
    match Batch::decode(&existing) {
        // The same batch in another encoding (written by another tablesafe version).
        Ok(there) if there == ours => Ok(false),
        Ok(_) if stream == GC_STREAM => Err(MirrorError::BadLog {
            key,
            detail: "holds another gc batch than the one this catalog wrote under that number; leave it, and check which gc runs used this repository".into(),
        }),
        Ok(_) => Err(MirrorError::Conflict {
            node: stream.to_string(),
            seq,
        }),
        Err(damage) => {
            tracing::warn!(%key, damage = %damage.0, "the repository held a damaged copy of this batch: put back from this catalog's copy");
            repo.put_object(&key, body).await?;
            Ok(true)
        }
    }
}

/// This catalog's own copy of the batch for `key` cannot be used: the local catalog is
/// damaged.
fn local_copy_damaged(key: &str, what: &str) -> MirrorError {
    MirrorError::BadLog {
        key: format!("{key} (this catalog's copy)"),
        detail: format!(
            "damaged: {what}; the local catalog is damaged: move it aside and run `tablesafe catalog rebuild`, then back up again"
        ),
    }
}

/// Nodes that have a catalog log in the repository: one delimiter LIST of `nodes/`
/// (a node's own prefix holds its `log/` and `contenders/`), not a listing of every log
/// object.
/// Names starting with `@` are not node names (gc's stream is `@gc`) and are left out.
pub async fn nodes(repo: &Repository) -> Result<Vec<String>, MirrorError> {
    let mut nodes = repo.list_dirs("nodes/").await?;
    nodes.retain(|node| !node.starts_with('@'));
    Ok(nodes)
}

/// Replays the repository's log of `node` into `catalog`. Batches already applied are
/// skipped (and not even fetched), so this also catches a catalog up. Returns how many
/// batches were applied.
pub async fn rebuild_node(
    repo: &Repository,
    catalog: &mut Catalog,
    node: &str,
) -> Result<usize, MirrorError> {
    let applied = follow(repo, catalog, node).await?;
    if applied.is_none() {
        let found = nodes(repo).await?;
        return Err(MirrorError::UnknownNode {
            node: node.to_string(),
            found: if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            },
        });
    }
    Ok(applied.unwrap_or(0))
}

/// Checks that the repository still holds every batch `view` has applied, of every
/// node and of gc (one LIST per log), and with `read` downloads each one and checks its
/// checksum (8 at a time; logs weigh little next to the blobs `verify --read-data`
/// reads). `verify` calls this after catching its view up, so damage to a batch it
/// applied on an earlier run is found too. Fails naming the first unusable object and
/// what to do about it.
pub async fn check_logs(repo: &Repository, view: &Catalog, read: bool) -> Result<(), MirrorError> {
    use futures::{StreamExt, TryStreamExt};
    let mut streams = nodes(repo).await?;
    streams.push(GC_STREAM.to_string());
    for stream in &streams {
        let last = view.last_seq(stream)?;
        let listed: std::collections::HashSet<u64> = list_new(repo, stream, 0)
            .await?
            .into_iter()
            .filter_map(|(key, _)| seq_of(stream, &key))
            .collect();
        if let Some(gone) = (1..=last).find(|seq| !listed.contains(seq)) {
            return Err(unusable(
                stream,
                &stream_key(stream, gone),
                "missing from the repository",
            ));
        }
        if read {
            futures::stream::iter(1..=last)
                .map(|seq| async move {
                    let key = stream_key(stream, seq);
                    let body = repo.get_object(&key).await?;
                    decode_log(stream, &key, &body).map(|_| ())
                })
                .buffered(FETCH_CONCURRENCY)
                .try_collect::<()>()
                .await?;
        }
    }
    Ok(())
}

/// Object key of gc's batch `seq`.
pub fn gc_log_key(seq: u64) -> String {
    format!("gc/log/{seq:020}")
}

/// Catches `catalog` up with gc's log (retention applied, blobs condemned, absolved and
/// deleted). Every command that trusts the catalog's idea of which blobs exist calls
/// this first: one short LIST when nothing is new.
pub async fn sync_gc_log(repo: &Repository, catalog: &mut Catalog) -> Result<usize, MirrorError> {
    Ok(follow(repo, catalog, GC_STREAM).await?.unwrap_or(0))
}

/// Catches `catalog` up with every node's log, then gc's. Returns the nodes that have a
/// log, and how many batches were applied. The logs are LISTed concurrently (gc calls
/// this before every chunk it deletes, so with many nodes the round trips add up).
pub async fn sync_all(
    repo: &Repository,
    catalog: &mut Catalog,
) -> Result<(Vec<String>, usize), MirrorError> {
    use futures::{StreamExt, TryStreamExt};
    // Nodes' logs first, gc's last (it is replayed after them).
    let mut streams = nodes(repo).await?;
    streams.push(GC_STREAM.to_string());
    let mut lasts = Vec::with_capacity(streams.len());
    for stream in &streams {
        lasts.push(catalog.last_seq(stream)?);
    }
    let listings: Vec<Vec<(String, u64)>> = futures::stream::iter(streams.iter().zip(&lasts))
        .map(|(stream, last)| list_new(repo, stream, *last))
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    let mut with_log = Vec::new();
    let mut applied = 0;
    for ((stream, last), listed) in streams.into_iter().zip(lasts).zip(listings) {
        if last == 0 && listed.is_empty() {
            continue;
        }
        applied += apply_listed(repo, catalog, &stream, last, listed, REPLAY_CHUNK_BYTES).await?;
        if stream != GC_STREAM {
            with_log.push(stream);
        }
    }
    Ok((with_log, applied))
}

/// Logs LISTed at once by [`sync_all`].
const LIST_CONCURRENCY: usize = 8;

/// The key of batch `seq` of a stream (a node's log, or gc's).
fn stream_key(stream: &str, seq: u64) -> String {
    if stream == GC_STREAM {
        gc_log_key(seq)
    } else {
        log_key(stream, seq)
    }
}

/// The prefix holding a stream's batches.
fn stream_prefix(stream: &str) -> String {
    if stream == GC_STREAM {
        "gc/log/".to_string()
    } else {
        format!("nodes/{stream}/log/")
    }
}

/// Writes gc's next batch: created only if absent, so two gc runs can never both
/// write batch N; the loser stops with [`MirrorError::GcRace`]. Applies it locally.
pub async fn append_gc_batch(
    repo: &Repository,
    catalog: &mut Catalog,
    changes: Vec<super::Change>,
) -> Result<Batch, MirrorError> {
    check_repository(repo).await?;
    let seq = catalog.last_seq(GC_STREAM)? + 1;
    let batch = Batch {
        node: GC_STREAM.to_string(),
        seq,
        time: crate::timespec::now(),
        changes,
    };
    let key = gc_log_key(seq);
    let body = Bytes::from(batch.encode().map_err(|e| MirrorError::BadLog {
        key: key.clone(),
        detail: e.to_string(),
    })?);
    if !repo.put_object_if_absent(&key, body.clone()).await? {
        return Err(MirrorError::GcRace { key });
    }
    catalog.apply_batch(&batch, true)?;
    // Kept, as a node's writer keeps its batches, to be put back if the repository
    // loses it (see `repair_log`).
    catalog.keep_body(GC_STREAM, seq, &body)?;
    Ok(batch)
}

/// Applies the batches of one stream (a node's log or gc's) that `catalog` does not
/// have yet, in order. `None` when the repository holds no batch of it at all.
async fn follow(
    repo: &Repository,
    catalog: &mut Catalog,
    stream: &str,
) -> Result<Option<usize>, MirrorError> {
    let last = catalog.last_seq(stream)?;
    let listed = list_new(repo, stream, last).await?;
    if last == 0 && listed.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        apply_listed(repo, catalog, stream, last, listed, REPLAY_CHUNK_BYTES).await?,
    ))
}

/// The objects of a stream after batch `last` (all of them when `last` is 0).
async fn list_new(
    repo: &Repository,
    stream: &str,
    last: u64,
) -> Result<Vec<(String, u64)>, MirrorError> {
    let prefix = stream_prefix(stream);
    let mut listed = if last == 0 {
        repo.list_objects(&prefix).await?
    } else {
        repo.list_objects_after(&prefix, &stream_key(stream, last))
            .await?
    };
    listed.retain(|(key, _)| {
        let batch = seq_of(stream, key).is_some();
        if !batch && first_sighting(key) {
            tracing::warn!(%key, "ignoring an object in a catalog log whose name is not a batch number (not written by tablesafe); remove it");
        }
        batch
    });
    Ok(listed)
}

/// Whether this process meets stray object `key` for the first time (it is warned
/// about once, however often the log is listed).
fn first_sighting(key: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(key.to_string())
}

/// The batch number a key of `stream`'s log names: exactly 20 digits after the
/// stream's prefix, from 1 (what [`log_key`] and [`gc_log_key`] write). `None` for
/// anything else, e.g. a file an operator left there.
fn seq_of(stream: &str, key: &str) -> Option<u64> {
    let name = key.strip_prefix(&stream_prefix(stream))?;
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|seq| *seq > 0)
}

/// A log object of `stream` that cannot be used (`what`: damaged, missing), with
/// what to do about it.
fn unusable(stream: &str, key: &str, what: &str) -> MirrorError {
    let advice = if stream == GC_STREAM {
        "the all-nodes catalog of the host where gc wrote it keeps it: delete the object if it is there, then run `tablesafe gc` on that host, which puts it back; if no catalog holds it (it predates issue 20, or the host is gone), put back a good copy from a copy of the repository; until then no catalog can replay gc's log past it".to_string()
    } else {
        format!(
            "the catalog of the host backing up node {stream:?} keeps every batch it wrote: delete the object if it is there, then run `tablesafe backup` on that host, which puts it back; if no catalog holds it (it predates issue 20, or the host is gone), put back a good copy from a copy of the repository"
        )
    };
    MirrorError::BadLog {
        key: key.to_string(),
        detail: format!("{what}; {advice}"),
    }
}

/// Log objects fetched at once while replaying.
const FETCH_CONCURRENCY: usize = 8;

/// Encoded bytes of log objects fetched, then applied in one transaction: memory holds
/// this much plus one decoded batch, and a rebuild commits once per chunk.
const REPLAY_CHUNK_BYTES: u64 = 4 << 20;

/// Fetches and applies, in order, the batches `listed` after batch `last` of `stream`,
/// committing once per `chunk_bytes` of log objects.
async fn apply_listed(
    repo: &Repository,
    catalog: &mut Catalog,
    stream: &str,
    last: u64,
    listed: Vec<(String, u64)>,
    chunk_bytes: u64,
) -> Result<usize, MirrorError> {
    use futures::{StreamExt, TryStreamExt};
    // Uploads go strictly in order, so a gap can only be damage to the repository:
    // the batches before it are applied, then the gap is reported.
    let in_order = listed
        .iter()
        .enumerate()
        .take_while(|(i, (key, _))| *key == stream_key(stream, last + *i as u64 + 1))
        .count();
    let mut applied = 0;
    let mut rest = &listed[..in_order];
    while !rest.is_empty() {
        let mut bytes = 0;
        let take = rest
            .iter()
            .take_while(|(_, size)| {
                bytes += size;
                bytes <= chunk_bytes
            })
            .count()
            .max(1);
        let (chunk, after) = rest.split_at(take);
        rest = after;
        let bodies: Vec<Bytes> = futures::stream::iter(chunk)
            .map(|(key, _)| repo.get_object(key))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut replay = catalog.replay()?;
        for ((key, _), body) in chunk.iter().zip(bodies) {
            let batch = match decode_log(stream, key, &body) {
                Ok(batch) => batch,
                Err(unusable) => {
                    // Keep the batches before it, as a gap does.
                    replay.commit()?;
                    return Err(unusable);
                }
            };
            if replay.apply(&batch, true)? {
                applied += 1;
            }
        }
        replay.commit()?;
    }
    if let Some((key, _)) = listed.get(in_order) {
        return Err(unusable(
            stream,
            &stream_key(stream, last + in_order as u64 + 1),
            &format!("missing from the repository (next present: {key})"),
        ));
    }
    Ok(applied)
}

/// Decodes log object `key` of `stream`, checking it holds the batch its key names.
fn decode_log(stream: &str, key: &str, body: &[u8]) -> Result<Batch, MirrorError> {
    let batch =
        Batch::decode(body).map_err(|e| unusable(stream, key, &format!("damaged: {}", e.0)))?;
    if batch.node != stream || stream_key(stream, batch.seq) != key {
        return Err(unusable(
            stream,
            key,
            &format!("holds batch {} of {:?}", batch.seq, batch.node),
        ));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Change, FileKey};
    use crate::store::StoreOptions;

    const NODE: &str = "n1";
    const BATCHES: u64 = 10;

    fn key(i: u64) -> FileKey {
        FileKey {
            data_dir: "/var/lib/cassandra/data".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            table_id: "0123456789abcdef0123456789abcdef".into(),
            rel_path: format!("nb-{i}-big-Data.db"),
        }
    }

    /// A repository holding `BATCHES` batches of `NODE`: batch i starts file i and, from
    /// the third on, ends file i - 2 and gives file i - 1 new content (so replay meets
    /// new files, known files and ended ones). Returns the catalog that wrote them.
    async fn logged(dir: &std::path::Path) -> (Repository, Catalog) {
        let url = format!("memory://mirror-{}", uuid::Uuid::new_v4());
        let repo = Repository::init(&url, &StoreOptions::default())
            .await
            .unwrap();
        let mut original = Catalog::open(&dir.join("original.db")).unwrap();
        for i in 1..=BATCHES {
            let at = i as i64 * 100;
            let start = |n: u64, h: u64| Change::Start {
                key: key(n),
                hash: [h as u8; 32],
                size: h,
                mtime: at,
                at,
            };
            let mut changes = vec![start(i, i)];
            if i > 2 {
                changes.push(Change::End {
                    key: key(i - 2),
                    at,
                });
                changes.push(start(i - 1, 100 + i));
            }
            original.commit(NODE, at, changes).unwrap();
        }
        assert_eq!(
            upload_pending(&repo, &mut original, NODE).await.unwrap(),
            BATCHES as usize
        );
        (repo, original)
    }

    async fn replay(
        repo: &Repository,
        catalog: &mut Catalog,
        chunk_bytes: u64,
    ) -> Result<usize, MirrorError> {
        let last = catalog.last_seq(NODE)?;
        let listed = list_new(repo, NODE, last).await?;
        apply_listed(repo, catalog, NODE, last, listed, chunk_bytes).await
    }

    fn same_history(a: &Catalog, b: &Catalog) {
        for t in (0..=BATCHES as i64 + 1).map(|i| i * 100) {
            assert_eq!(
                a.live_at(NODE, t).unwrap(),
                b.live_at(NODE, t).unwrap(),
                "t={t}"
            );
        }
    }

    #[tokio::test]
    async fn replay_in_chunks_of_any_size_rebuilds_the_same_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, original) = logged(dir.path()).await;
        // One batch per transaction, a few per transaction, all in one.
        for (i, chunk_bytes) in [1, 300, u64::MAX].into_iter().enumerate() {
            let mut rebuilt = Catalog::open(&dir.path().join(format!("r{i}.db"))).unwrap();
            assert_eq!(
                replay(&repo, &mut rebuilt, chunk_bytes).await.unwrap(),
                BATCHES as usize
            );
            assert_eq!(rebuilt.last_seq(NODE).unwrap(), BATCHES);
            same_history(&original, &rebuilt);
            // Nothing new: nothing applied.
            assert_eq!(replay(&repo, &mut rebuilt, chunk_bytes).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn a_damaged_local_copy_of_a_batch_never_reaches_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, mut original) = logged(dir.path()).await;
        original.commit(NODE, 5_000, vec![]).unwrap();
        original
            .conn
            .execute(
                "UPDATE batches SET body = CAST('TSLOG' || zeroblob(40) AS BLOB) WHERE seq = ?1",
                [BATCHES as i64 + 1],
            )
            .unwrap();
        let err = upload_pending(&repo, &mut original, NODE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("catalog rebuild"), "{err}");
        let listed = list_new(&repo, NODE, 0).await.unwrap();
        assert_eq!(listed.len(), BATCHES as usize);
    }

    #[tokio::test]
    async fn replay_keeps_the_batches_before_a_damaged_or_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, original) = logged(dir.path()).await;
        let sixth = repo.get_object(&log_key(NODE, 6)).await.unwrap();
        repo.put_object(&log_key(NODE, 6), Bytes::from_static(b"not a batch"))
            .await
            .unwrap();
        let mut rebuilt = Catalog::open(&dir.path().join("rebuilt.db")).unwrap();
        let err = replay(&repo, &mut rebuilt, u64::MAX).await.unwrap_err();
        assert!(
            matches!(&err, MirrorError::BadLog { key, .. } if *key == log_key(NODE, 6)),
            "{err}"
        );
        assert_eq!(rebuilt.last_seq(NODE).unwrap(), 5);

        // Repaired, but batch 8 is gone: 6 and 7 are applied, then the gap is named.
        repo.put_object(&log_key(NODE, 6), sixth).await.unwrap();
        let eighth = repo.get_object(&log_key(NODE, 8)).await.unwrap();
        repo.delete_object(&log_key(NODE, 8)).await.unwrap();
        let err = replay(&repo, &mut rebuilt, 1).await.unwrap_err();
        assert!(
            err.to_string().contains("missing from the repository"),
            "{err}"
        );
        assert!(
            matches!(&err, MirrorError::BadLog { key, .. } if *key == log_key(NODE, 8)),
            "{err}"
        );
        assert_eq!(rebuilt.last_seq(NODE).unwrap(), 7);

        repo.put_object(&log_key(NODE, 8), eighth).await.unwrap();
        assert_eq!(replay(&repo, &mut rebuilt, u64::MAX).await.unwrap(), 3);
        same_history(&original, &rebuilt);
    }
}
