//! One writer per node, across hosts: every catalog has a random *writer id*, and every
//! batch it commits for a node starts with a [`Change::Writer`] naming it. Replaying a
//! node's log (a backup's own commits, `catalog rebuild`, or the catch-up a new catalog
//! does) records in `writers` who wrote the node's latest batch.
//!
//! A catalog may write a node's history only while that latest batch is its own (or
//! the catalog has no record of a writer, as an upgraded catalog whose batches predate
//! writer ids). A second host configured with the same node name therefore replays the
//! first host's log and is refused before it records anything; `catalog rebuild`
//! is the way to take a node over (a replaced disk or host): the rebuilt catalog claims
//! the node, and its next batch tells the old writer, if it still runs, to stop (see
//! `mirror::check_can_write`). A catalog that finds batches of its own id in the repository
//! beyond its latest (it lost them: a lost write-ahead log, a rolled-back host) catches
//! up with them and takes a new writer id ([`Catalog::renew_writer_id`]).

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Batch, Catalog, CatalogError, Change, GC_STREAM};

/// Who wrote a node's latest batch, as this catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWriter {
    /// The writer id; empty for batches written before writer ids existed.
    pub writer: String,
    pub host: String,
    /// The batch that says so.
    pub seq: u64,
}

impl NodeWriter {
    /// "writer <id> on host <host>", or what is known of a writer without an id.
    pub fn describe(&self) -> String {
        if self.writer.is_empty() {
            "a catalog from before writer ids (tablesafe < issue 19)".to_string()
        } else {
            format!("writer {} on host {}", self.writer, self.host)
        }
    }
}

const WRITER_KEY: &str = "writer_id";
const REPOSITORY_KEY: &str = "repository_id";

impl Catalog {
    /// This catalog's writer id, created the first time it is asked for.
    pub fn writer_id(&mut self) -> Result<String, CatalogError> {
        let path = self.path.clone();
        let err = |source| super::sqlite_error(&path, source);
        let fresh = uuid::Uuid::new_v4().to_string();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![WRITER_KEY, fresh],
            )
            .map_err(err)?;
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [WRITER_KEY], |r| {
                r.get(0)
            })
            .map_err(err)
    }

    /// The change that starts every batch this catalog commits.
    pub(super) fn writer_change(&mut self) -> Result<Change, CatalogError> {
        Ok(Change::Writer {
            id: self.writer_id()?,
            host: this_host(),
        })
    }

    /// Who wrote `node`'s latest batch this catalog has applied, if it knows.
    pub fn node_writer(&self, node: &str) -> Result<Option<NodeWriter>, CatalogError> {
        self.conn
            .query_row(
                "SELECT writer, host, seq FROM writers WHERE node = ?1",
                [node],
                |r| {
                    Ok(NodeWriter {
                        writer: r.get(0)?,
                        host: r.get(1)?,
                        seq: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    /// Whether this catalog may write `node`'s history: `Err` names the other writer
    /// when the node's latest batch it knows of is not its own.
    pub fn may_write(&mut self, node: &str) -> Result<Result<(), NodeWriter>, CatalogError> {
        let own = self.writer_id()?;
        Ok(match self.node_writer(node)? {
            Some(w) if w.writer != own => Err(w),
            _ => Ok(()),
        })
    }

    /// Makes this catalog the writer of `node` from its latest batch on (`catalog
    /// rebuild` takes a node over this way). Nothing is written to the repository
    /// until the next backup's first batch.
    pub fn claim_node(&mut self, node: &str) -> Result<(), CatalogError> {
        let own = self.writer_id()?;
        let seq = self.last_seq(node)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO writers (node, writer, host, seq) VALUES (?1, ?2, ?3, ?4)",
                params![node, own, this_host(), seq as i64],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Remembers the id of the repository this catalog mirrors on first use; returns the
    /// one remembered when it is another (the repository was replaced by a new `init`,
    /// or `--repo` names a different one: this catalog's idea of which blobs exist is
    /// then wrong for it).
    pub fn bind_repository(&mut self, id: &str) -> Result<Option<String>, CatalogError> {
        let path = self.path.clone();
        let err = |source| super::sqlite_error(&path, source);
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![REPOSITORY_KEY, id],
            )
            .map_err(err)?;
        let bound: String = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [REPOSITORY_KEY],
                |r| r.get(0),
            )
            .map_err(err)?;
        Ok((bound != id).then_some(bound))
    }

    /// The highest batch of `node` the repository is known to hold (0 when none).
    pub fn last_uploaded_seq(&self, node: &str) -> Result<u64, CatalogError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM batches WHERE node = ?1 AND uploaded = 1",
                [node],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(self.err())
    }
}

impl Catalog {
    /// The encoded bodies of `node`'s batches not yet in the repository, oldest first:
    /// uploaded byte for byte as committed (a batch committed by an older tablesafe
    /// keeps its older encoding).
    pub fn pending_bodies(&self, node: &str) -> Result<Vec<(u64, Vec<u8>)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, body FROM batches WHERE node = ?1 AND uploaded = 0 ORDER BY seq")
            .map_err(self.err())?;
        stmt.query_map([node], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(self.err())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(self.err())
    }

    /// Sequence number and encoded size of `node`'s batches the repository should hold
    /// and this catalog still keeps (every batch it wrote, since issue 20: the writer
    /// puts one back when the repository lost or damaged it), oldest first.
    pub fn kept_sizes(&self, node: &str) -> Result<Vec<(u64, u64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, length(body) FROM batches
                 WHERE node = ?1 AND uploaded = 1 AND body IS NOT NULL ORDER BY seq",
            )
            .map_err(self.err())?;
        stmt.query_map([node], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .map_err(self.err())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(self.err())
    }

    /// The encoded body of batch `seq` of `node`, if this catalog keeps it.
    pub fn kept_body(&self, node: &str, seq: u64) -> Result<Option<Vec<u8>>, CatalogError> {
        self.conn
            .query_row(
                "SELECT body FROM batches WHERE node = ?1 AND seq = ?2",
                params![node, seq as i64],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.err())
    }

    /// Keeps `body`, the repository's object of batch `seq` of `node`, already applied
    /// (a catalog catching up with its own batches keeps them as it keeps the others).
    pub fn keep_body(&mut self, node: &str, seq: u64, body: &[u8]) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE batches SET body = ?3 WHERE node = ?1 AND seq = ?2",
                params![node, seq as i64, body],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Gives this catalog a new writer id and makes it the writer of every node the old
    /// id wrote last. Done after catching up with batches the repository holds under
    /// this catalog's id but the catalog had lost (a rollback): a copy of the catalog
    /// (a cloned host) still writing under the old id is then told apart and refused.
    pub fn renew_writer_id(&mut self) -> Result<String, CatalogError> {
        let old = self.writer_id()?;
        let fresh = uuid::Uuid::new_v4().to_string();
        let tx = self
            .conn
            .transaction()
            .map_err(|e| super::sqlite_error(&self.path, e))?;
        tx.execute(
            "UPDATE meta SET value = ?2 WHERE key = ?1",
            params![WRITER_KEY, fresh],
        )
        .and_then(|_| {
            tx.execute(
                "UPDATE writers SET writer = ?1, host = ?2 WHERE writer = ?3",
                params![fresh, this_host(), old],
            )
        })
        .map_err(|e| super::sqlite_error(&self.path, e))?;
        tx.commit()
            .map_err(|e| super::sqlite_error(&self.path, e))?;
        Ok(fresh)
    }
}

/// Records who wrote `batch` (inside the transaction applying it): its
/// [`Change::Writer`], or no one known for a batch from before writer ids.
pub(super) fn record(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    if batch.node == GC_STREAM {
        return Ok(());
    }
    let (writer, host) = batch
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Writer { id, host } => Some((id.as_str(), host.as_str())),
            _ => None,
        })
        .unwrap_or(("", ""));
    tx.prepare_cached(
        "INSERT INTO writers (node, writer, host, seq) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (node) DO UPDATE SET writer = ?2, host = ?3, seq = ?4 WHERE seq <= ?4",
    )?
    .execute(params![batch.node, writer, host, batch.seq as i64])
    .map(|_| ())
}

/// This host's name, for messages.
pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_writes_only_a_node_whose_latest_batch_is_its_own_until_it_claims_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Catalog::open(&dir.path().join("a.db")).unwrap();
        let mut b = Catalog::open(&dir.path().join("b.db")).unwrap();
        assert_ne!(a.writer_id().unwrap(), b.writer_id().unwrap());
        assert_eq!(a.writer_id().unwrap(), a.writer_id().unwrap());
        let batch = a.commit("n1", 10, vec![]).unwrap();
        assert!(
            matches!(&batch.changes[0], Change::Writer { id, .. } if *id == a.writer_id().unwrap())
        );
        assert_eq!(a.may_write("n1").unwrap(), Ok(()));
        // B replays A's batch: A is the writer, B may not write.
        b.apply_batch(&batch, true).unwrap();
        let other = b.may_write("n1").unwrap().unwrap_err();
        assert_eq!(other.writer, a.writer_id().unwrap());
        assert_eq!(other.seq, 1);
        // A batch from before writer ids: no one known, still not B.
        let legacy = Batch {
            node: "n1".into(),
            seq: 2,
            time: 20,
            changes: vec![],
        };
        b.apply_batch(&legacy, true).unwrap();
        assert_eq!(b.may_write("n1").unwrap().unwrap_err().writer, "");
        // A takeover.
        b.claim_node("n1").unwrap();
        assert_eq!(b.may_write("n1").unwrap(), Ok(()));
        // A node never written: anyone.
        assert_eq!(b.may_write("n2").unwrap(), Ok(()));
    }

    #[test]
    fn a_renewed_writer_id_keeps_the_nodes_it_wrote_and_keeps_batch_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Catalog::open(&dir.path().join("a.db")).unwrap();
        let old = a.writer_id().unwrap();
        let batch = a.commit("n1", 10, vec![]).unwrap();
        a.mark_uploaded("n1", 1).unwrap();
        assert_eq!(
            a.kept_body("n1", 1)
                .unwrap()
                .map(|b| Batch::decode(&b).unwrap()),
            Some(batch)
        );
        assert_eq!(a.kept_sizes("n1").unwrap().len(), 1);
        assert!(a.pending_bodies("n1").unwrap().is_empty());
        let renewed = a.renew_writer_id().unwrap();
        assert_ne!(renewed, old);
        assert_eq!(a.writer_id().unwrap(), renewed);
        assert_eq!(a.may_write("n1").unwrap(), Ok(()));
        let next = a.commit("n1", 20, vec![]).unwrap();
        assert!(matches!(&next.changes[0], Change::Writer { id, .. } if *id == renewed));
    }
}
