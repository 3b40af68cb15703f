//! Leases: every backup pass announces itself in the repository while it runs, so gc
//! deletes nothing such a pass may have deduplicated onto, however short `--grace` is.
//!
//! A pass writes `leases/<node>/<pass-id>` after its pending batches are uploaded (and
//! the repository checked) and before it reads gc's log; it writes it again every
//! [`REFRESH`] (the heartbeat: the object's last-modified time moves on) and deletes it
//! when the pass ends. A lease whose last-modified time is older than [`STALE_AFTER`]
//! (a pass killed, a host gone) protects nothing any more.
//!
//! Clocks: a lease's start and heartbeat are the object store's times (last-modified),
//! never a host's. gc learns the store's "now" by writing and reading back one small
//! object (`gc/clock`, only when a lease exists), judges staleness on the store's clock,
//! and converts the earliest live start to its own clock (the difference it measured)
//! less [`CLOCK_MARGIN`], because the condemnation times it compares it with were taken
//! by the clocks of gc hosts.

use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::store::{Repository, StoreError};
use crate::timespec::{self, Micros};

/// How often a running pass rewrites its lease.
pub const REFRESH: Duration = Duration::from_secs(30);
/// A lease not rewritten for this long (20 heartbeats) protects nothing.
pub const STALE_AFTER: Micros = 10 * 60 * 1_000_000;
/// Blobs condemned up to this long before the earliest live lease started stay too:
/// the condemnation times come from the clocks of the gc hosts.
pub const CLOCK_MARGIN: Micros = 5 * 60 * 1_000_000;

const PREFIX: &str = "leases/";
const STORE_CLOCK_KEY: &str = "gc/clock";

/// What a lease object holds (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseBody {
    pub node: String,
    pub pass: String,
    pub host: String,
    pub pid: u32,
    /// The store's time of the first write (its last-modified), once known; until then
    /// the object's own last-modified time is the start.
    #[serde(default)]
    pub started: Option<Micros>,
    /// The host's clock at the start, for people reading the object.
    pub started_host: Micros,
}

/// The lease of a running pass.
pub struct Lease {
    key: String,
    body: LeaseBody,
}

impl Lease {
    /// Writes the lease of a new pass of `node`.
    pub async fn take(repo: &Repository, node: &str) -> Result<Lease, StoreError> {
        let pass = uuid::Uuid::new_v4().simple().to_string();
        let key = format!("{PREFIX}{node}/{pass}");
        let mut body = LeaseBody {
            node: node.to_string(),
            pass,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started: None,
            started_host: timespec::now(),
        };
        repo.put_object(&key, encode(&body)).await?;
        body.started = modified(repo, &key).await?;
        Ok(Lease { key, body })
    }

    /// Rewrites the lease every [`REFRESH`] until dropped (poll it beside the pass). A
    /// failed heartbeat is logged, not fatal: the pass's own requests fail the same way,
    /// and the lease only goes stale after [`STALE_AFTER`]. Stops writing once the
    /// repository is no longer the one opened (never recreates a deleted repository).
    pub async fn heartbeat(&self, repo: &Repository) {
        let opened = repo.config().id.clone();
        loop {
            tokio::time::sleep(REFRESH).await;
            match repo.current_id().await {
                Ok(Some(id)) if id == opened => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!("cannot refresh the lease of this backup pass: {e}");
                    continue;
                }
            }
            if let Err(e) = repo.put_object(&self.key, encode(&self.body)).await {
                tracing::warn!("cannot refresh the lease of this backup pass: {e}");
            }
        }
    }

    /// Deletes the lease at the end of the pass. A failure is logged: the lease then
    /// goes stale by itself.
    pub async fn release(self, repo: &Repository) {
        if let Err(e) = repo.delete_object(&self.key).await {
            tracing::warn!(
                "cannot delete lease {}: {e}; it stops protecting anything once stale",
                self.key
            );
        }
    }
}

fn encode(body: &LeaseBody) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// The store's last-modified time of `key`.
async fn modified(repo: &Repository, key: &str) -> Result<Option<Micros>, StoreError> {
    let path = ObjectPath::from(key);
    match repo.retried("head", |_| repo.store().head(&path)).await {
        Ok(meta) => Ok(Some(meta.last_modified.timestamp_micros())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(repo.classify(e)),
    }
}

/// What gc learned from the leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// Live leases (running passes) and stale ones (ignored).
    pub live: u64,
    pub stale: u64,
    /// On gc's clock: blobs condemned at or after this may be needed by a running pass
    /// (the earliest live start, less [`CLOCK_MARGIN`]).
    pub protect_from: Option<Micros>,
}

/// Reads every lease (one LIST, and when there is any, one PUT and one HEAD of
/// `gc/clock` to learn the store's time; a dry run writes nothing and uses its own
/// clock instead).
pub async fn read(repo: &Repository, dry_run: bool) -> Result<LeaseView, StoreError> {
    let prefix = ObjectPath::from(PREFIX.trim_end_matches('/'));
    let metas: Vec<object_store::ObjectMeta> = repo
        .retried("list", |_| repo.store().list(Some(&prefix)).try_collect())
        .await
        .map_err(|e| repo.classify(e))?;
    let mut view = LeaseView::default();
    if metas.is_empty() {
        return Ok(view);
    }
    let host_now = timespec::now();
    let store_now = if dry_run {
        host_now
    } else {
        repo.put_object(STORE_CLOCK_KEY, bytes::Bytes::from_static(b"gc"))
            .await?;
        modified(repo, STORE_CLOCK_KEY).await?.unwrap_or(host_now)
    };
    let mut earliest: Option<Micros> = None;
    for meta in metas {
        let heartbeat = meta.last_modified.timestamp_micros();
        if heartbeat < store_now.saturating_sub(STALE_AFTER) {
            view.stale += 1;
            continue;
        }
        view.live += 1;
        // An unreadable body: the object's own time, which is no later than the start
        // of a lease rewritten since.
        let started = match repo.get_object(meta.location.as_ref()).await {
            Ok(bytes) => serde_json::from_slice::<LeaseBody>(&bytes)
                .ok()
                .and_then(|b| b.started),
            Err(StoreError::ObjectNotFound { .. }) => {
                view.live -= 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let start = started.unwrap_or(heartbeat).min(heartbeat);
        earliest = Some(earliest.map_or(start, |e| e.min(start)));
    }
    view.protect_from = earliest.map(|start| {
        // The store's time → gc's clock, then the margin for other gc hosts' clocks.
        let on_gc_clock = start.saturating_sub(store_now.saturating_sub(host_now));
        on_gc_clock.saturating_sub(CLOCK_MARGIN)
    });
    Ok(view)
}
