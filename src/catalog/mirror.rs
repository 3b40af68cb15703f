//! The catalog's copy in the repository: `nodes/<node>/log/<seq>`, one object per batch.
//!
//! A batch is uploaded only after it is committed locally, and a batch is only ever built
//! from changes whose blobs are already durable, so no log object in the repository can
//! refer to a missing blob. Uploads are create-if-absent: an object that is already there
//! (a retry after a crash) must be byte-identical, otherwise two processes are writing
//! as the same node and the backup stops rather than overwrite the other's history.
//!
//! `catalog rebuild` LISTs `nodes/` and the log prefixes (never `blobs/`) and replays every
//! batch in order through [`Catalog::apply_batch`], the same code a backup uses.
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
}

/// Object key of a node's batch; zero-padded so keys sort in sequence order.
pub fn log_key(node: &str, seq: u64) -> String {
    format!("nodes/{node}/log/{seq:020}")
}

/// Uploads every batch of `node` committed locally but not yet in the repository.
/// Returns how many were uploaded.
pub async fn upload_pending(
    repo: &Repository,
    catalog: &mut Catalog,
    node: &str,
) -> Result<usize, MirrorError> {
    let pending = catalog.pending_batches(node)?;
    for batch in &pending {
        upload(repo, batch).await?;
        catalog.mark_uploaded(node, batch.seq)?;
    }
    Ok(pending.len())
}

async fn upload(repo: &Repository, batch: &Batch) -> Result<(), MirrorError> {
    let key = log_key(&batch.node, batch.seq);
    let body = Bytes::from(batch.encode().map_err(|e| MirrorError::BadLog {
        key: key.clone(),
        detail: e.to_string(),
    })?);
    if repo.put_object_if_absent(&key, body.clone()).await? {
        return Ok(());
    }
    // Already there: fine if it is this very batch (a retry), fatal otherwise.
    let existing = repo.get_object(&key).await?;
    if existing == body {
        Ok(())
    } else {
        Err(MirrorError::Conflict {
            node: batch.node.clone(),
            seq: batch.seq,
        })
    }
}

/// Nodes that have a catalog log in the repository: one delimiter LIST of `nodes/`
/// (a node's own prefix holds only its `log/`), not a listing of every log object.
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
        applied += apply_listed(repo, catalog, &stream, last, listed).await?;
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
    if !repo.put_object_if_absent(&key, body).await? {
        return Err(MirrorError::GcRace { key });
    }
    catalog.apply_batch(&batch, true)?;
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
        apply_listed(repo, catalog, stream, last, listed).await?,
    ))
}

/// The objects of a stream after batch `last` (all of them when `last` is 0).
async fn list_new(
    repo: &Repository,
    stream: &str,
    last: u64,
) -> Result<Vec<(String, u64)>, MirrorError> {
    let prefix = stream_prefix(stream);
    Ok(if last == 0 {
        repo.list_objects(&prefix).await?
    } else {
        repo.list_objects_after(&prefix, &stream_key(stream, last))
            .await?
    })
}

/// Fetches and applies, in order, the batches `listed` after batch `last` of `stream`.
async fn apply_listed(
    repo: &Repository,
    catalog: &mut Catalog,
    stream: &str,
    last: u64,
    listed: Vec<(String, u64)>,
) -> Result<usize, MirrorError> {
    let mut applied = 0;
    for (i, (key, _)) in listed.into_iter().enumerate() {
        // Uploads go strictly in order, so a gap can only be damage to the repository.
        let expected = stream_key(stream, last + i as u64 + 1);
        if key != expected {
            return Err(MirrorError::BadLog {
                key: expected,
                detail: format!("missing from the repository (next present: {key})"),
            });
        }
        let bytes = repo.get_object(&key).await?;
        let batch = Batch::decode(&bytes).map_err(|e| MirrorError::BadLog {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        if batch.node != stream || stream_key(stream, batch.seq) != key {
            return Err(MirrorError::BadLog {
                key,
                detail: format!("holds batch {} of {:?}", batch.seq, batch.node),
            });
        }
        if catalog.apply_batch(&batch, true)? {
            applied += 1;
        }
    }
    Ok(applied)
}
