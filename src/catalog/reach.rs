//! Reachability queries for `tablesafe gc` and `tablesafe verify`.
//!
//! Both commands work on a catalog holding every node's history (replayed from the
//! repository). They load the repository's blob listing into a temporary table, mark
//! the blobs that retained versions refer to, and then page through set differences in
//! hash order, so memory stays bounded whatever the number of blobs: SQLite does the
//! joins on disk.

use rusqlite::params;

use super::{Catalog, CatalogError, FileVersion, Hash32, chosen_pack};
use crate::timespec::Micros;

/// One blob object as a LIST of the repository reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedBlob {
    pub hash: Hash32,
    pub stored_size: u64,
    /// Last-modified time of the object.
    pub modified: Micros,
}

/// The sets gc pages through (each in hash order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcSet {
    /// Condemned blobs that are referenced again, or were uploaded again after their
    /// condemnation (a backup rescued them).
    ToAbsolve,
    /// Listed blobs nothing retained refers to, not condemned yet, last modified before
    /// the given time (younger ones may be an upload whose record is still on its way).
    ToCondemn { modified_before: Micros },
    /// Condemned at or before the given time, unreferenced, and not modified since.
    ToDelete { condemned_by: Micros },
    /// Condemned, unreferenced and no longer in the repository (a gc that was
    /// interrupted after deleting them): to be recorded as deleted.
    AlreadyGone,
    /// Referenced by a retained version but not in the repository.
    Missing,
}

impl Catalog {
    /// Creates (or empties) the temporary tables of one gc or verify run.
    pub fn reach_begin(&mut self) -> Result<(), CatalogError> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS gc_listed (
                     hash BLOB PRIMARY KEY, stored_size INTEGER NOT NULL, modified INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 CREATE TEMP TABLE IF NOT EXISTS gc_referenced (hash BLOB PRIMARY KEY) WITHOUT ROWID;
                 CREATE TEMP TABLE IF NOT EXISTS gc_keep (node TEXT PRIMARY KEY, keep_from INTEGER NOT NULL);
                 CREATE TEMP TABLE IF NOT EXISTS gc_points (node TEXT NOT NULL, t INTEGER NOT NULL, PRIMARY KEY (node, t));
                 DELETE FROM gc_listed; DELETE FROM gc_referenced; DELETE FROM gc_keep; DELETE FROM gc_points;",
            )
            .map_err(self.err())
    }

    /// Adds part of the repository's blob listing.
    pub fn reach_add_listed(&mut self, blobs: &[ListedBlob]) -> Result<(), CatalogError> {
        self.execute_each(
            "INSERT OR REPLACE INTO temp.gc_listed (hash, stored_size, modified) VALUES (?1, ?2, ?3)",
            blobs
                .iter()
                .map(|b| (b.hash.as_slice(), b.stored_size as i64, b.modified)),
        )
    }

    /// Sets the retention to evaluate for `node` (without applying it): versions that
    /// ended by `keep_from` and cover none of `points` do not count as references.
    pub fn reach_set_policy(
        &mut self,
        node: &str,
        keep_from: Micros,
        points: &[Micros],
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO temp.gc_keep (node, keep_from) VALUES (?1, ?2)",
                params![node, keep_from],
            )
            .map_err(self.err())?;
        self.execute_each(
            "INSERT OR IGNORE INTO temp.gc_points (node, t) VALUES (?1, ?2)",
            points.iter().map(|t| (node, *t)),
        )
    }

    /// Versions of `node` the policy set by [`Catalog::reach_set_policy`] would forget.
    pub fn reach_count_dropped(&self, node: &str) -> Result<u64, CatalogError> {
        self.conn
            .query_row(
                // CROSS JOIN: walk the versions that ended before the window (an index
                // range), not every file of the node.
                "SELECT COUNT(*) FROM versions v CROSS JOIN files f ON f.id = v.file_id
                 WHERE f.node = ?1 AND v.valid_to IS NOT NULL
                   AND v.valid_to <= (SELECT keep_from FROM temp.gc_keep WHERE node = ?1)
                   AND NOT EXISTS (SELECT 1 FROM temp.gc_points p
                                   WHERE p.node = f.node AND p.t >= v.valid_from AND p.t < v.valid_to)",
                [node],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// The last instant at which `node` had a live file, when it has none now: the end of
    /// its last version, less one microsecond (versions are valid `[from, to)`). `None`
    /// when a version is still open (the current state, which gc always keeps, has
    /// data) or when the node never had a file.
    pub fn last_instant_with_data(&self, node: &str) -> Result<Option<Micros>, CatalogError> {
        self.conn
            .query_row(
                // CROSS JOIN: the node's files first (its index), then each file's versions.
                "SELECT CASE WHEN EXISTS (
                            SELECT 1 FROM files f CROSS JOIN versions v ON v.file_id = f.id
                            WHERE f.node = ?1 AND v.valid_to IS NULL)
                        THEN NULL
                        ELSE (SELECT MAX(v.valid_to) - 1 FROM files f CROSS JOIN versions v
                              ON v.file_id = f.id
                              WHERE f.node = ?1 AND v.valid_to > v.valid_from) END",
                [node],
                |r| r.get::<_, Option<Micros>>(0),
            )
            .map_err(self.err())
    }

    /// Marks every blob a retained version refers to (under the policies set, or all
    /// versions for nodes without one). Returns how many distinct blobs that is.
    /// The hashes go through SQLite's sorter (`+` keeps it from walking the hash index,
    /// which costs a random lookup per version) so the inserts append in key order
    /// instead of landing at random in a table larger than the cache.
    ///
    /// Every row it reads is checked first ([`Catalog::check_rows`]): a damaged row
    /// fails the run instead of making a needed blob look unreferenced.
    pub fn reach_mark_referenced(&mut self) -> Result<u64, CatalogError> {
        self.check_rows()?;
        self.conn
            .execute_batch(
                "DELETE FROM temp.gc_referenced;
                 INSERT OR IGNORE INTO temp.gc_referenced (hash)
                 SELECT v.hash FROM versions v JOIN files f ON f.id = v.file_id
                 LEFT JOIN temp.gc_keep k ON k.node = f.node
                 WHERE k.node IS NULL OR v.valid_to IS NULL OR v.valid_to > k.keep_from
                    OR EXISTS (SELECT 1 FROM temp.gc_points p
                               WHERE p.node = f.node AND p.t >= v.valid_from AND p.t < v.valid_to)
                 ORDER BY +v.hash;",
            )
            .map_err(self.err())?;
        // A small file in a pack keeps the pack chosen for it (see `chosen_pack`).
        self.conn
            .execute_batch(&format!(
                "INSERT OR IGNORE INTO temp.gc_referenced (hash)
                 SELECT ({}) FROM temp.gc_referenced r
                 WHERE EXISTS (SELECT 1 FROM packed WHERE hash = r.hash);",
                chosen_pack("r.hash")
            ))
            .map_err(self.err())?;
        self.conn
            .query_row("SELECT COUNT(*) FROM temp.gc_referenced", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// Up to `limit` members of `set` with a hash above `after`, in hash order, with
    /// their stored size (0 when not listed).
    pub fn reach_page(
        &self,
        set: GcSet,
        after: Option<&Hash32>,
        limit: usize,
    ) -> Result<Vec<(Hash32, u64)>, CatalogError> {
        let missing_sql = format!(
            "SELECT r.hash, 0 FROM temp.gc_referenced r
             WHERE r.hash > ?1 AND r.hash NOT IN (SELECT hash FROM temp.gc_listed)
               AND NOT EXISTS (SELECT 1 FROM temp.gc_listed l WHERE l.hash = ({}))
               AND NOT EXISTS (SELECT 1 FROM packed p WHERE p.pack = r.hash)
             ORDER BY r.hash LIMIT ?2",
            chosen_pack("r.hash")
        );
        let (sql, time): (&str, Micros) = match set {
            GcSet::ToAbsolve => (
                "SELECT c.hash, COALESCE(l.stored_size, 0) FROM condemned c
                 LEFT JOIN temp.gc_listed l ON l.hash = c.hash
                 WHERE c.hash > ?1 AND (c.hash IN (SELECT hash FROM temp.gc_referenced)
                                        OR l.modified > c.since)
                 ORDER BY c.hash LIMIT ?2",
                0,
            ),
            GcSet::ToCondemn { modified_before } => (
                "SELECT l.hash, l.stored_size FROM temp.gc_listed l
                 WHERE l.hash > ?1 AND l.modified < ?3
                   AND l.hash NOT IN (SELECT hash FROM temp.gc_referenced)
                   AND l.hash NOT IN (SELECT hash FROM condemned)
                 ORDER BY l.hash LIMIT ?2",
                modified_before,
            ),
            GcSet::ToDelete { condemned_by } => (
                "SELECT c.hash, l.stored_size FROM condemned c JOIN temp.gc_listed l ON l.hash = c.hash
                 WHERE c.hash > ?1 AND c.since <= ?3 AND l.modified <= c.since
                   AND c.hash NOT IN (SELECT hash FROM temp.gc_referenced)
                 ORDER BY c.hash LIMIT ?2",
                condemned_by,
            ),
            GcSet::AlreadyGone => (
                "SELECT c.hash, 0 FROM condemned c
                 WHERE c.hash > ?1 AND c.hash NOT IN (SELECT hash FROM temp.gc_listed)
                   AND c.hash NOT IN (SELECT hash FROM temp.gc_referenced)
                 ORDER BY c.hash LIMIT ?2",
                0,
            ),
            GcSet::Missing => (
                // A packed file is missing when the pack chosen for it is; a missing
                // pack is reported through its files.
                &missing_sql,
                0,
            ),
        };
        let after: &[u8] = after.map_or(&[], |h| h.as_slice());
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let bind_time = sql.contains("?3");
        let map =
            |r: &rusqlite::Row<'_>| Ok((r.get::<_, [u8; 32]>(0)?, r.get::<_, i64>(1)? as u64));
        let rows = if bind_time {
            stmt.query_map(params![after, limit as i64, time], map)
        } else {
            stmt.query_map(params![after, limit as i64], map)
        }
        .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Count and stored bytes of condemned blobs that are not yet old enough to delete
    /// (condemned after `condemned_by`), and the earliest condemnation among them.
    pub fn reach_waiting(
        &self,
        condemned_by: Micros,
    ) -> Result<(u64, u64, Option<Micros>), CatalogError> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(l.stored_size), 0), MIN(c.since)
                 FROM condemned c LEFT JOIN temp.gc_listed l ON l.hash = c.hash
                 WHERE c.since > ?1",
                [condemned_by],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get(2)?,
                    ))
                },
            )
            .map_err(self.err())
    }

    /// Those of `hashes` that are still condemned and that no version refers to, after
    /// new batches arrived: the sweep's last check of a chunk before deleting it.
    pub fn still_garbage(&self, hashes: &[Hash32]) -> Result<Vec<Hash32>, CatalogError> {
        // A pack is still needed while a version refers to a file it is chosen for.
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM condemned WHERE hash = ?1)
                AND NOT EXISTS (SELECT 1 FROM versions WHERE hash = ?1)
                AND NOT EXISTS (SELECT 1 FROM packed m WHERE m.pack = ?1
                                AND EXISTS (SELECT 1 FROM versions v WHERE v.hash = m.hash)
                                AND ({}) = ?1)",
            chosen_pack("m.hash")
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let mut garbage = Vec::with_capacity(hashes.len());
        for hash in hashes {
            if stmt
                .query_row([hash.as_slice()], |r| r.get::<_, bool>(0))
                .map_err(self.err())?
            {
                garbage.push(*hash);
            }
        }
        Ok(garbage)
    }

    /// Referenced blob objects that the listing holds (every version counts; packed
    /// files count through their pack), in hash order, for `verify --read-data`.
    pub fn referenced_page(
        &self,
        after: Option<&Hash32>,
        limit: usize,
    ) -> Result<Vec<Hash32>, CatalogError> {
        let after: &[u8] = after.map_or(&[], |h| h.as_slice());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT hash FROM temp.gc_referenced WHERE hash > ?1
                 AND hash IN (SELECT hash FROM temp.gc_listed) ORDER BY hash LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| r.get::<_, [u8; 32]>(0))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Up to `limit` file versions (any node) that hold `hash`, or a file packed in the
    /// pack `hash`, oldest first.
    pub fn versions_with_blob(
        &self,
        hash: &Hash32,
        limit: usize,
    ) -> Result<Vec<FileVersion>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT f.node, f.data_dir, f.keyspace, f.table_name, f.table_id, f.rel_path,
                        v.size, v.mtime, v.valid_from, v.valid_to, v.hash
                 FROM versions v JOIN files f ON f.id = v.file_id
                 WHERE v.hash IN (SELECT ?1 UNION SELECT hash FROM packed WHERE pack = ?1)
                 ORDER BY v.valid_from LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![hash.as_slice(), limit as i64], |r| {
                Ok(FileVersion {
                    node: r.get(0)?,
                    key: super::file_key(r, 1)?,
                    hash: r.get(10)?,
                    size: r.get::<_, i64>(6)? as u64,
                    mtime: r.get(7)?,
                    valid_from: r.get(8)?,
                    valid_to: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// True when `hash` is a pack (some file is recorded inside it).
    pub fn is_pack(&self, hash: &Hash32) -> Result<bool, CatalogError> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM packed WHERE pack = ?1)")
            .and_then(|mut stmt| stmt.query_row([hash.as_slice()], |r| r.get(0)))
            .map_err(self.err())
    }

    /// The packs recorded as holding the content `hash` that the listing does not hold.
    pub fn unlisted_packs_of(&self, hash: &Hash32) -> Result<Vec<Hash32>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT pack FROM packed WHERE hash = ?1
                 AND pack NOT IN (SELECT hash FROM temp.gc_listed) ORDER BY pack",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([hash.as_slice()], |r| r.get::<_, [u8; 32]>(0))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }
}

/// What `verify --check-catalog` compares, per kind: the columns (with `{db}` the
/// schema, `?1` the node or NULL for all) and how a row reads.
const COMPARED: &[(&str, &str, bool)] = &[
    (
        "version",
        "SELECT f.node, f.data_dir || '/' || f.keyspace || '/' || f.table_name
                || CASE f.table_id WHEN '' THEN '' ELSE '-' || f.table_id END || '/' || f.rel_path,
                v.valid_from, v.valid_to, lower(hex(v.hash)), v.size, v.mtime
         FROM {db}.versions v JOIN {db}.files f ON f.id = v.file_id WHERE ?1 IS NULL OR f.node = ?1",
        false,
    ),
    (
        "snapshot",
        "SELECT node, name, time, NULL, scope, files, bytes FROM {db}.snapshots
         WHERE ?1 IS NULL OR node = ?1",
        false,
    ),
    (
        "blob",
        "SELECT lower(hex(hash)), size, stored_size, NULL, NULL, NULL, NULL FROM {db}.blobs
         WHERE ?1 IS NULL",
        true,
    ),
    (
        "condemned blob",
        "SELECT lower(hex(hash)), since, NULL, NULL, NULL, NULL, NULL FROM {db}.condemned
         WHERE ?1 IS NULL",
        true,
    ),
    (
        "pack membership",
        "SELECT lower(hex(hash)), lower(hex(pack)), offset, size, NULL, NULL, NULL FROM {db}.packed
         WHERE ?1 IS NULL",
        true,
    ),
];

impl Catalog {
    /// The rows of this catalog and of the catalog at `truth` (rebuilt from the
    /// repository) that differ, one line each, up to `limit` per kind and direction,
    /// and how many more there are. `node`: compare that node's versions and snapshots
    /// only (a node's catalog, which holds no other node's blobs); `None`: everything.
    pub fn differences_from(
        &self,
        truth: &std::path::Path,
        node: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, u64), CatalogError> {
        self.conn
            .execute("ATTACH DATABASE ?1 AS truth", [truth.to_string_lossy()])
            .map_err(self.err())?;
        let compared = self.compare_attached(node, limit);
        let detached = self
            .conn
            .execute_batch("DETACH DATABASE truth")
            .map_err(self.err());
        let out = compared?;
        detached?;
        Ok(out)
    }

    fn compare_attached(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, u64), CatalogError> {
        let (mut lines, mut more) = (Vec::new(), 0u64);
        for (kind, select, all_nodes_only) in COMPARED {
            if *all_nodes_only && node.is_some() {
                continue;
            }
            for (ours, theirs, side) in [
                ("main", "truth", "only in the local catalog"),
                ("truth", "main", "only in the repository's logs"),
            ] {
                let sql = format!(
                    "{} EXCEPT {}",
                    select.replace("{db}", ours),
                    select.replace("{db}", theirs)
                );
                let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
                let mut rows = stmt.query([node]).map_err(self.err())?;
                let mut n = 0usize;
                while let Some(row) = rows.next().map_err(self.err())? {
                    n += 1;
                    if n > limit {
                        more += 1;
                        continue;
                    }
                    lines.push(format!("{kind} {side}: {}", describe_row(kind, row)?));
                }
            }
        }
        Ok((lines, more))
    }
}

/// One compared row, readable.
fn describe_row(kind: &str, r: &rusqlite::Row<'_>) -> Result<String, CatalogError> {
    let text = |i: usize| -> String {
        match r.get_ref(i) {
            Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            Ok(rusqlite::types::ValueRef::Integer(n)) => n.to_string(),
            Ok(rusqlite::types::ValueRef::Null) | Err(_) => String::new(),
            Ok(other) => format!("{other:?}"),
        }
    };
    let time = |i: usize| -> String {
        r.get::<_, Option<Micros>>(i)
            .ok()
            .flatten()
            .map_or_else(|| "now".into(), crate::timespec::format_precise)
    };
    Ok(match kind {
        "version" => format!(
            "node {} file {} from {} to {}, blob {}, {} bytes, mtime {}",
            text(0),
            text(1),
            time(2),
            time(3),
            text(4),
            text(5),
            time(6)
        ),
        "snapshot" => format!(
            "{}/{} at {}, scope {:?}, {} files, {} bytes",
            text(0),
            text(1),
            time(2),
            text(4),
            text(5),
            text(6)
        ),
        "blob" => format!("{}, {} bytes ({} stored)", text(0), text(1), text(2)),
        "condemned blob" => format!("{} since {}", text(0), time(1)),
        _ => format!(
            "{} in pack {} at {}, {} bytes",
            text(0),
            text(1),
            text(2),
            text(3)
        ),
    })
}
