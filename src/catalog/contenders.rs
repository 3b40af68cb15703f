//! Telling a node's writer that another host tried to write the node and was refused.
//!
//! A catalog refused as a second writer of a node leaves a small notice at
//! `nodes/<node>/contenders/<its writer id>` (JSON: writer, host, time, why). The
//! node's writer LISTs that prefix at the start of every pass (one small LIST, empty
//! unless something is wrong), logs a warning naming the other host for each notice,
//! and deletes it: both hosts hear about the misconfiguration, while the writer keeps
//! backing up its own node. Notices are never replayed: they are not under `log/`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::mirror::MirrorError;
use crate::store::Repository;

/// One notice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Notice {
    writer: String,
    host: String,
    /// When it was refused (RFC 3339, UTC).
    at: String,
    /// The refusal it got.
    refused: String,
}

fn prefix(node: &str) -> String {
    format!("nodes/{node}/contenders/")
}

/// Leaves a notice that the catalog with writer id `writer` was refused writing `node`
/// (best effort: the refusal itself is what the operator of this host sees).
pub(crate) async fn leave(repo: &Repository, node: &str, writer: &str, refused: &str) {
    let notice = Notice {
        writer: writer.to_string(),
        host: super::writer::this_host(),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        refused: refused.to_string(),
    };
    let key = format!("{}{writer}", prefix(node));
    let written = match serde_json::to_vec(&notice) {
        Ok(body) => repo.put_object(&key, Bytes::from(body)).await.err(),
        Err(e) => Some(crate::store::StoreError::Internal(e.to_string())),
    };
    if let Some(e) = written {
        tracing::debug!("could not leave a notice for node {node}'s writer at {key}: {e}");
    }
}

/// Logs a warning for every notice another catalog left for `node`, and deletes it.
/// Returns how many there were.
pub(crate) async fn report(repo: &Repository, node: &str) -> Result<usize, MirrorError> {
    let listed = repo.list_objects(&prefix(node)).await?;
    for (key, _) in &listed {
        let body = repo.get_object(key).await?;
        match serde_json::from_slice::<Notice>(&body) {
            Ok(n) => tracing::warn!(
                "another host tried to back up node {node} and was refused: host {}, writer {}, at {} ({}); give that host its own --node (or, if it replaces this one, stop this one)",
                n.host,
                n.writer,
                n.at,
                n.refused
            ),
            Err(_) => tracing::warn!(
                "another host tried to back up node {node} and was refused (notice {key})"
            ),
        }
        repo.delete_object(key).await?;
    }
    Ok(listed.len())
}
