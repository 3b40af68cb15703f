//! The latest time the catalog records for a node, so its clock never goes back
//! (`timespec::NodeClock`).

use rusqlite::OptionalExtension;

use super::{Catalog, CatalogError};
use crate::timespec::Micros;

impl Catalog {
    /// The latest time recorded for `node`: the start or end of a file version, a
    /// point, a corruption report, or its newest batch. Each term reads one end of an
    /// index (the versions' ends through their time indexes, newest first).
    pub fn last_recorded_time(&self, node: &str) -> Result<Option<Micros>, CatalogError> {
        self.conn
            .prepare_cached(
                "SELECT MAX(t) FROM (
                   SELECT (SELECT v.valid_from FROM versions v JOIN files f ON f.id = v.file_id
                           WHERE f.node = ?1 ORDER BY v.valid_from DESC LIMIT 1) AS t
                   UNION ALL
                   SELECT (SELECT v.valid_to FROM versions v JOIN files f ON f.id = v.file_id
                           WHERE f.node = ?1 AND v.valid_to IS NOT NULL
                           ORDER BY v.valid_to DESC LIMIT 1)
                   UNION ALL SELECT MAX(time) FROM snapshots WHERE node = ?1
                   UNION ALL SELECT MAX(at) FROM corrupt WHERE node = ?1
                   UNION ALL
                   SELECT (SELECT time FROM batches WHERE node = ?1 ORDER BY seq DESC LIMIT 1)
                 )",
            )
            .and_then(|mut stmt| stmt.query_row([node], |r| r.get::<_, Option<Micros>>(0)))
            .optional()
            .map(Option::flatten)
            .map_err(self.err())
    }
}
