//! The local catalog: which blob every file path held at every moment, the blobs known to
//! be in the repository, a stat cache, and named snapshots. One SQLite file (WAL mode).
//!
//! History is stored as *file versions*: (file, blob, valid from, valid to), with `valid to`
//! empty while the file is live. What a node held at time T is a query over versions, so
//! the catalog grows with the number of changes, never with changes × files.
//!
//! Every change arrives in a [`Batch`] (see [`change`]); [`Catalog::commit`] numbers and
//! applies a batch and keeps its encoded form until the caller has mirrored it to the
//! repository and called [`Catalog::mark_uploaded`]. A crash in between leaves the batch
//! pending, and the next run uploads it first.

pub mod change;
mod clock;
mod contenders;
pub mod lock;
pub mod mirror;
pub mod reach;
mod schema;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub use change::{Batch, Change, CodecError, FileKey, GC_STREAM, Hash32, PackMember};

use crate::timespec::Micros;

/// Errors opening or using the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "catalog {path} is damaged or not a tablesafe catalog ({detail}): move it aside and run `tablesafe catalog rebuild` to recreate it from the repository"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "catalog {path} has {count} damaged row(s) (first: {first}; its checksum does not match what it holds): nothing was done with it; move the catalog aside and run `tablesafe catalog rebuild` to recreate it from the repository (gc's and verify's <catalog>.all-nodes.db can simply be deleted: the next run rebuilds it)"
    )]
    RowDamaged {
        path: PathBuf,
        count: u64,
        first: String,
    },
    #[error(
        "catalog {path} is busy: another tablesafe process kept it locked for more than {} s ({detail}); nothing is wrong with it: run the command again once the other one is done",
        schema::BUSY_TIMEOUT.as_secs()
    )]
    Busy { path: PathBuf, detail: String },
    #[error(
        "catalog {path} has schema version {found}, newer than this tablesafe understands ({supported}): upgrade tablesafe, or rebuild into another --catalog path with `tablesafe catalog rebuild`"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("cannot create the catalog's directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog {path}: {source}")]
    Codec {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
}

/// The identity of a file's content on disk, for the stat cache: if all of these match,
/// the content has not changed (the rule restic and kopia use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// Where a small file's bytes sit in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedAt {
    pub pack: Hash32,
    pub offset: u64,
    pub size: u64,
}

/// The pack a file's bytes are read from, and that gc keeps for it, when several packs
/// hold them (a pack condemned, the file uploaded again into a new one): one gc has not
/// condemned if there is one, then the lowest hash, so every catalog that knows the
/// same packs makes the same choice. `hash` is the SQL expression of the file's hash.
pub(crate) fn chosen_pack(hash: &str) -> String {
    format!(
        "SELECT cp.pack FROM packed cp WHERE cp.hash = {hash}
         ORDER BY EXISTS (SELECT 1 FROM condemned cc WHERE cc.hash = cp.pack), cp.pack LIMIT 1"
    )
}

/// SQL: the content `?1` has a blob object of its own that gc has not condemned (the
/// test `has_blob` and `pack_location` share).
const OWN_BLOB_KEPT: &str = "(EXISTS (SELECT 1 FROM blobs WHERE hash = ?1)
     AND NOT EXISTS (SELECT 1 FROM condemned WHERE hash = ?1))";

/// A file version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileVersion {
    pub node: String,
    #[serde(flatten)]
    pub key: FileKey,
    #[serde(serialize_with = "serialize_hash")]
    pub hash: Hash32,
    pub size: u64,
    pub mtime: Micros,
    pub valid_from: Micros,
    pub valid_to: Option<Micros>,
}

fn serialize_hash<S: serde::Serializer>(h: &Hash32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(h))
}

/// The open version of a file, as the backup diff needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenVersion {
    pub hash: Hash32,
    pub size: u64,
    pub mtime: Micros,
}

/// A named point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRow {
    pub id: i64,
    pub node: String,
    pub name: String,
    pub time: Micros,
    pub scope: String,
    pub files: u64,
    pub bytes: u64,
}

/// Up to three snapshot names closest to `wanted` (edit distance), for "did you mean".
pub fn nearest_snapshot_names<'a>(rows: &'a [SnapshotRow], wanted: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort_by_key(|n| edit_distance(n, wanted));
    names.truncate(3);
    names
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The retention gc applied to a node: every instant from `keep_from` on is restorable,
/// and before it only `points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRetention {
    pub applied_at: Micros,
    pub keep_from: Micros,
    pub points: Vec<Micros>,
}

impl AppliedRetention {
    /// Whether the instant `t` can still be restored exactly.
    pub fn keeps(&self, t: Micros) -> bool {
        t >= self.keep_from || self.points.contains(&t)
    }
}

/// Filters for [`Catalog::snapshots`].
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub node: Option<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
}

/// The local catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

impl Catalog {
    /// Opens the catalog at `path`, creating it (and its directory) if absent.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sqlite_error(path, e))?;
        schema::register_functions(&conn).map_err(|e| sqlite_error(path, e))?;
        let mut catalog = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        schema::prepare(&mut catalog.conn, path)?;
        Ok(catalog)
    }

    /// Where the catalog for this repository and node lives unless `--catalog` says
    /// otherwise: `$XDG_DATA_HOME/tablesafe/<repository digest>/<node>.db`
    /// (`~/.local/share/…` by default).
    pub fn default_path(repo_url: &str, node: &str) -> PathBuf {
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        let digest = blake3::hash(repo_url.as_bytes()).to_hex();
        base.join("tablesafe")
            .join(&digest.as_str()[..16])
            .join(format!("{node}.db"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
        |source| sqlite_error(&self.path, source)
    }

    /// Numbers `changes` as the node's next batch, applies them, and keeps the encoded
    /// batch as pending until [`Catalog::mark_uploaded`].
    pub fn commit(
        &mut self,
        node: &str,
        time: Micros,
        changes: Vec<Change>,
    ) -> Result<Batch, CatalogError> {
        let seq = self.last_seq(node)? + 1;
        // Every batch names the catalog that wrote it (see `writer`).
        let changes = std::iter::once(self.writer_change()?)
            .chain(changes)
            .collect();
        let batch = Batch {
            node: node.to_string(),
            seq,
            time,
            changes,
        };
        self.apply_batch(&batch, false)?;
        Ok(batch)
    }

    /// Applies a batch (idempotent: a batch already applied is skipped). `uploaded` says
    /// whether the repository already holds it (true when rebuilding from it).
    pub fn apply_batch(&mut self, batch: &Batch, uploaded: bool) -> Result<bool, CatalogError> {
        let mut replay = self.replay()?;
        let applied = replay.apply(batch, uploaded)?;
        replay.commit()?;
        Ok(applied)
    }

    /// Holds one read transaction until dropped: every query in between sees the same
    /// catalog even while a daemon commits to it, and SQLite takes its locks once
    /// instead of once per statement (planning a restore asks a question per file).
    pub fn read_snapshot(&self) -> Result<ReadSnapshot<'_>, CatalogError> {
        self.conn
            .unchecked_transaction()
            .map(|tx| ReadSnapshot { _tx: tx })
            .map_err(self.err())
    }

    /// Starts applying several batches in one transaction, as a rebuild does: one
    /// commit (one fsync of the write-ahead log) for many batches instead of one each.
    pub fn replay(&mut self) -> Result<Replay<'_>, CatalogError> {
        let Catalog { conn, path } = self;
        let tx = conn.transaction().map_err(|e| sqlite_error(path, e))?;
        Ok(Replay { tx, path })
    }

    /// The highest batch number recorded for `node` (0 when none).
    pub fn last_seq(&self, node: &str) -> Result<u64, CatalogError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM batches WHERE node = ?1",
                [node],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// Batches committed locally but not yet mirrored to the repository, oldest first.
    pub fn pending_batches(&self, node: &str) -> Result<Vec<Batch>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM batches WHERE node = ?1 AND uploaded = 0 ORDER BY seq")
            .map_err(self.err())?;
        let bodies = stmt
            .query_map([node], |r| r.get::<_, Vec<u8>>(0))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        bodies
            .iter()
            .map(|b| {
                Batch::decode(b).map_err(|source| CatalogError::Codec {
                    path: self.path.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Records that the repository holds batch `seq` of `node`. The local copy is kept
    /// (see `writer::kept_bodies`): the writer puts it back if the repository loses it.
    pub fn mark_uploaded(&mut self, node: &str, seq: u64) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE batches SET uploaded = 1 WHERE node = ?1 AND seq = ?2",
                params![node, seq as i64],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// True when the repository is known to hold this blob and gc has not condemned
    /// it (a condemned blob may be deleted any time after its grace period, so a backup
    /// that needs it uploads it again).
    pub fn has_blob(&self, hash: &Hash32) -> Result<bool, CatalogError> {
        // Asked once per file a backup reads: the SQL is built once.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {OWN_BLOB_KEPT}
                 OR EXISTS (SELECT 1 FROM packed p WHERE p.hash = ?1
                            AND NOT EXISTS (SELECT 1 FROM condemned c WHERE c.hash = p.pack))"
            )
        });
        self.conn
            .prepare_cached(&SQL)
            .and_then(|mut stmt| stmt.query_row([hash.as_slice()], |r| r.get(0)))
            .map_err(self.err())
    }

    /// Where a restore reads `hash` from: `None` for its own blob object (the usual
    /// case, and the fallback), or the pack chosen for it when it has no blob object
    /// gc has left alone. The choice is [`chosen_pack`]'s, as gc makes it.
    pub fn pack_location(&self, hash: &Hash32) -> Result<Option<PackedAt>, CatalogError> {
        // Asked once per file a restore plans: the SQL is built once.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT pack, offset, size, {} FROM packed p WHERE hash = ?1 AND pack = ({})
                 AND NOT {OWN_BLOB_KEPT}",
                schema::packed_intact("p"),
                chosen_pack("?1")
            )
        });
        let located = self
            .conn
            .prepare_cached(&SQL)
            .and_then(|mut stmt| {
                stmt.query_row([hash.as_slice()], |r| {
                    Ok((
                        PackedAt {
                            pack: r.get(0)?,
                            offset: r.get::<_, i64>(1)? as u64,
                            size: r.get::<_, i64>(2)? as u64,
                        },
                        r.get::<_, bool>(3),
                    ))
                })
            })
            .optional()
            .map_err(self.err())?;
        let rows = located.into_iter().map(Ok);
        Ok(self
            .intact(rows, |_| {
                format!("pack membership of {}", hex::encode(hash))
            })?
            .pop())
    }

    /// True when gc has condemned this blob (and no upload since has saved it).
    pub fn is_condemned(&self, hash: &Hash32) -> Result<bool, CatalogError> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM condemned WHERE hash = ?1)")
            .and_then(|mut stmt| stmt.query_row([hash.as_slice()], |r| r.get(0)))
            .map_err(self.err())
    }

    /// The retention gc last applied to `node`, if any.
    pub fn retention(&self, node: &str) -> Result<Option<AppliedRetention>, CatalogError> {
        let row: Option<(Micros, Micros, String)> = self
            .conn
            .query_row(
                "SELECT applied_at, keep_from, points FROM retention WHERE node = ?1",
                [node],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err())?;
        row.map(|(applied_at, keep_from, points)| {
            let points = serde_json::from_str(&points).map_err(|e| CatalogError::Corrupt {
                path: self.path.clone(),
                detail: format!("retention points of node {node:?}: {e}"),
            })?;
            Ok(AppliedRetention {
                applied_at,
                keep_from,
                points,
            })
        })
        .transpose()
    }

    /// Every node with history in this catalog (not gc's own stream), sorted.
    pub fn nodes(&self) -> Result<Vec<String>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT node FROM batches WHERE node != ?1 ORDER BY node")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([GC_STREAM], |r| r.get(0))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// The hash remembered for a file whose stat matches exactly. A damaged row (its
    /// checksum does not match) is not used: the file is read again.
    pub fn cached_hash(&self, stat: &StatKey) -> Result<Option<Hash32>, CatalogError> {
        self.stat_cache_lookup(
            "SELECT hash FROM stat_cache WHERE dev = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4 AND ctime_ns = ?5
             AND chk IS ts_row_check('st', dev, ino, size, mtime_ns, ctime_ns, hash)",
            params![stat.dev as i64, stat.ino as i64, stat.size as i64, stat.mtime_ns, stat.ctime_ns],
        )
    }

    /// The hash remembered for the same inode with the same size and modification time
    /// (to the nanosecond) but another ctime. Adding or removing a hard link (`nodetool
    /// snapshot`, incremental backups, `clearsnapshot`) changes only an inode's ctime,
    /// and Cassandra never rewrites a component in place (Statistics.db, Summary.db and
    /// TOC.txt are rewritten as new files), so the content is the one remembered.
    pub fn cached_hash_relinked(&self, stat: &StatKey) -> Result<Option<Hash32>, CatalogError> {
        self.stat_cache_lookup(
            "SELECT hash FROM stat_cache WHERE dev = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4
             AND chk IS ts_row_check('st', dev, ino, size, mtime_ns, ctime_ns, hash)",
            params![stat.dev as i64, stat.ino as i64, stat.size as i64, stat.mtime_ns],
        )
    }

    fn stat_cache_lookup(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<Hash32>, CatalogError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row(params, |r| r.get::<_, [u8; 32]>(0)))
            .optional()
            .map_err(self.err())
    }

    /// Remembers file hashes by stat, in one transaction.
    pub fn remember_stats(&mut self, entries: &[(StatKey, Hash32)]) -> Result<(), CatalogError> {
        self.execute_each(
            "INSERT OR REPLACE INTO stat_cache (dev, ino, size, mtime_ns, ctime_ns, hash, chk)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ts_row_check('st', ?1, ?2, ?3, ?4, ?5, ?6))",
            entries.iter().map(|(s, hash)| {
                (
                    s.dev as i64,
                    s.ino as i64,
                    s.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    hash.as_slice(),
                )
            }),
        )
    }

    /// Runs one statement for each row of parameters, in one transaction.
    fn execute_each<P: rusqlite::Params>(
        &mut self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx.prepare_cached(sql).map_err(err)?;
            for row in rows {
                stmt.execute(row).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Every open version of `node` whose full path is at or below `root` (a data,
    /// keyspace or table directory): what the last pass over `root` saw live.
    pub fn open_versions_under(
        &self,
        node: &str,
        root: &str,
    ) -> Result<HashMap<FileKey, OpenVersion>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT f.data_dir, f.keyspace, f.table_name, f.table_id, f.rel_path, v.hash, v.size, v.mtime
                 FROM versions v JOIN files f ON f.id = v.file_id
                 WHERE v.valid_to IS NULL AND f.node = ?1
                   AND substr(f.data_dir || '/' || f.keyspace || '/' || f.table_name
                              || CASE f.table_id WHEN '' THEN '' ELSE '-' || f.table_id END
                              || '/' || f.rel_path, 1, length(?2) + 1) = ?2 || '/'",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![node, root.trim_end_matches('/')], |r| {
                Ok((
                    file_key(r, 0)?,
                    OpenVersion {
                        hash: r.get(5)?,
                        size: r.get::<_, i64>(6)? as u64,
                        mtime: r.get(7)?,
                    },
                ))
            })
            .map_err(self.err())?;
        rows.collect::<Result<HashMap<_, _>, _>>()
            .map_err(self.err())
    }

    /// The file versions of `node` that were live at time `t`.
    pub fn live_at(&self, node: &str, t: Micros) -> Result<Vec<FileVersion>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                &format!(
                    "SELECT f.data_dir, f.keyspace, f.table_name, f.table_id, f.rel_path,
                            v.hash, v.size, v.mtime, v.valid_from, v.valid_to, {}
                     FROM versions v JOIN files f ON f.id = v.file_id
                     WHERE f.node = ?1 AND v.valid_from <= ?2 AND (v.valid_to IS NULL OR v.valid_to > ?2)
                     ORDER BY f.data_dir, f.keyspace, f.table_name, f.table_id, f.rel_path",
                    schema::version_intact("v", "f")
                ),
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![node, t], |r| {
                Ok(FileVersion {
                    node: node.to_string(),
                    key: file_key(r, 0)?,
                    hash: r.get(5)?,
                    size: r.get::<_, i64>(6)? as u64,
                    mtime: r.get(7)?,
                    valid_from: r.get(8)?,
                    valid_to: r.get(9)?,
                })
                .map(|v| (v, r.get::<_, bool>(10)))
            })
            .map_err(self.err())?;
        self.intact(rows, |v| {
            format!(
                "version of node {node} file {}/{} from {}",
                v.key.data_dir,
                v.key.data_relative_path(),
                v.valid_from
            )
        })
    }

    /// The rows of a query whose last column says whether the row is intact; the first
    /// damaged one is an error naming it (`what`).
    fn intact<T>(
        &self,
        rows: impl Iterator<Item = rusqlite::Result<(T, rusqlite::Result<bool>)>>,
        what: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, CatalogError> {
        let mut out = Vec::new();
        for row in rows {
            let (value, ok) = row.map_err(self.err())?;
            if !ok.map_err(self.err())? {
                return Err(CatalogError::RowDamaged {
                    path: self.path.clone(),
                    count: 1,
                    first: what(&value),
                });
            }
            out.push(value);
        }
        Ok(out)
    }

    /// Checks every row gc and verify decide on (file versions, snapshots, pack
    /// memberships, condemnations) against its checksum: a full scan, once per gc or
    /// verify run, so a damaged row never makes a needed blob look unreferenced.
    pub fn check_rows(&self) -> Result<(), CatalogError> {
        let checks = [
            format!(
                "SELECT COUNT(*), MIN('version of node ' || COALESCE(f.node, '?') || ' file '
                     || COALESCE(f.data_dir || '/' || f.keyspace || '/' || f.table_name
                         || CASE f.table_id WHEN '' THEN '' ELSE '-' || f.table_id END
                         || '/' || f.rel_path, '(no file row)')
                     || ' from ' || v.valid_from)
                 FROM versions v LEFT JOIN files f ON f.id = v.file_id WHERE NOT {}",
                schema::version_intact("v", "f")
            ),
            format!(
                "SELECT COUNT(*), MIN('snapshot ' || node || '/' || name) FROM snapshots s WHERE NOT {}",
                schema::snapshot_intact("s")
            ),
            format!(
                "SELECT COUNT(*), MIN('pack membership of ' || hex(hash)) FROM packed p WHERE NOT {}",
                schema::packed_intact("p")
            ),
            format!(
                "SELECT COUNT(*), MIN('condemned blob ' || hex(hash)) FROM condemned c WHERE NOT {}",
                schema::condemned_intact("c")
            ),
        ];
        let (mut count, mut first) = (0u64, None);
        for sql in &checks {
            let (n, example): (i64, Option<String>) = self
                .conn
                .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.err())?;
            count += n as u64;
            first = first.or(example);
        }
        match first {
            Some(first) => Err(CatalogError::RowDamaged {
                path: self.path.clone(),
                count,
                first,
            }),
            None => Ok(()),
        }
    }

    /// Earliest and latest recorded change of `node`, if it has any history.
    pub fn history_bounds(&self, node: &str) -> Result<Option<(Micros, Micros)>, CatalogError> {
        self.conn
            .query_row(
                "SELECT MIN(v.valid_from), MAX(MAX(v.valid_from), COALESCE(MAX(v.valid_to), 0))
                 FROM versions v JOIN files f ON f.id = v.file_id WHERE f.node = ?1",
                [node],
                |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .map(|(a, b)| a.zip(b))
            .map_err(self.err())
    }

    /// Named points, oldest first.
    pub fn snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<SnapshotRow>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, node, name, time, scope, files, bytes, {} FROM snapshots s
                 WHERE (?1 IS NULL OR node = ?1) AND (?2 IS NULL OR time >= ?2) AND (?3 IS NULL OR time <= ?3)
                 ORDER BY time, id",
                schema::snapshot_intact("s")
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![filter.node, filter.since, filter.until], |r| {
                Ok(SnapshotRow {
                    id: r.get(0)?,
                    node: r.get(1)?,
                    name: r.get(2)?,
                    time: r.get(3)?,
                    scope: r.get(4)?,
                    files: r.get::<_, i64>(5)? as u64,
                    bytes: r.get::<_, i64>(6)? as u64,
                })
                .map(|s| (s, r.get::<_, bool>(7)))
            })
            .map_err(self.err())?;
        self.intact(rows, |s| format!("snapshot {}/{}", s.node, s.name))
    }

    /// Corrupt SSTables recorded for `node`: (key, detail, time), newest first.
    pub fn corrupt_files(
        &self,
        node: &str,
    ) -> Result<Vec<(FileKey, String, Micros)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT data_dir, keyspace, table_name, table_id, rel_path, detail, at
                 FROM corrupt WHERE node = ?1 ORDER BY at DESC",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([node], |r| Ok((file_key(r, 0)?, r.get(5)?, r.get(6)?)))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }
}

impl Catalog {
    /// Adds directories to the node's work queue (keeping the earliest time of each).
    pub fn add_dirty(
        &mut self,
        node: &str,
        paths: &[String],
        since: Micros,
    ) -> Result<(), CatalogError> {
        self.execute_each(
            "INSERT OR IGNORE INTO dirty_roots (node, path, since) VALUES (?1, ?2, ?3)",
            paths.iter().map(|p| (node, p.as_str(), since)),
        )
    }

    /// The node's work queue: (directory, time it was first marked), oldest first.
    pub fn dirty_roots(&self, node: &str) -> Result<Vec<(String, Micros)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, since FROM dirty_roots WHERE node = ?1 ORDER BY since, path")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([node], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Removes directories from the work queue once a pass that started after they were
    /// marked has covered them (a newer mark stays).
    pub fn clear_dirty(
        &mut self,
        node: &str,
        paths: &[String],
        pass_started: Micros,
    ) -> Result<(), CatalogError> {
        self.execute_each(
            "DELETE FROM dirty_roots WHERE node = ?1 AND path = ?2 AND since <= ?3",
            paths.iter().map(|p| (node, p.as_str(), pass_started)),
        )
    }

    /// The device id (`st_dev`) a data directory had at the last pass that accepted it.
    pub fn data_dir_device(&self, node: &str, data_dir: &str) -> Result<Option<u64>, CatalogError> {
        self.conn
            .query_row(
                "SELECT dev FROM data_dir_devices WHERE node = ?1 AND data_dir = ?2",
                params![node, data_dir],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|d| d.map(|d| d as u64))
            .map_err(self.err())
    }

    /// Remembers the device id of a data directory a pass accepted.
    pub fn remember_data_dir_device(
        &mut self,
        node: &str,
        data_dir: &str,
        dev: u64,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO data_dir_devices (node, data_dir, dev) VALUES (?1, ?2, ?3)",
                params![node, data_dir, dev as i64],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Stores the daemon's status document (JSON) for `tablesafe status`.
    pub fn write_status(&mut self, node: &str, body: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO daemon_status (node, body) VALUES (?1, ?2)",
                params![node, body],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The daemon's last status document, if a daemon ever ran for this node.
    pub fn read_status(&self, node: &str) -> Result<Option<String>, CatalogError> {
        self.conn
            .query_row(
                "SELECT body FROM daemon_status WHERE node = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }
}

/// The [`FileKey`] in five consecutive columns of a row (data_dir, keyspace, table_name,
/// table_id, rel_path), starting at column `first`.
fn file_key(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<FileKey> {
    Ok(FileKey {
        data_dir: r.get(first)?,
        keyspace: r.get(first + 1)?,
        table: r.get(first + 2)?,
        table_id: r.get(first + 3)?,
        rel_path: r.get(first + 4)?,
    })
}

/// Turns SQLite's "not a database" and "malformed" into the catalog's own clear error.
/// A read transaction ([`Catalog::read_snapshot`]), ended (rolled back: it wrote
/// nothing) when dropped.
pub struct ReadSnapshot<'c> {
    _tx: rusqlite::Transaction<'c>,
}

/// Batches being applied in one transaction ([`Catalog::replay`]); nothing is kept
/// unless [`Replay::commit`] is called.
pub struct Replay<'c> {
    tx: rusqlite::Transaction<'c>,
    path: &'c Path,
}

impl Replay<'_> {
    /// Applies a batch (idempotent: a batch already applied is skipped). `uploaded` says
    /// whether the repository already holds it (true when rebuilding from it).
    pub fn apply(&mut self, batch: &Batch, uploaded: bool) -> Result<bool, CatalogError> {
        let path = self.path;
        let sql = |source| sqlite_error(path, source);
        let body = if uploaded {
            None
        } else {
            Some(batch.encode().map_err(|source| CatalogError::Codec {
                path: path.to_path_buf(),
                source,
            })?)
        };
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO batches (node, seq, time, uploaded, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![batch.node, batch.seq as i64, batch.time, uploaded, body])
            })
            .map_err(sql)?;
        if inserted == 0 {
            return Ok(false);
        }
        for change in &batch.changes {
            schema::apply_change(&self.tx, &batch.node, batch.time, change).map_err(sql)?;
        }
        writer::record(&self.tx, batch).map_err(sql)?;
        Ok(true)
    }

    /// Makes every batch applied so far durable.
    pub fn commit(self) -> Result<(), CatalogError> {
        let path = self.path;
        self.tx.commit().map_err(|e| sqlite_error(path, e))
    }
}

fn sqlite_error(path: &Path, e: rusqlite::Error) -> CatalogError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            CatalogError::Busy {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            CatalogError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
        _ => CatalogError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}
