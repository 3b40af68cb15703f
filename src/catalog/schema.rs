//! The catalog's SQLite schema, its migrations, and how one change is applied.
//!
//! A tablesafe catalog is marked with `PRAGMA application_id` so that any other SQLite
//! file is refused, and carries its schema version in `PRAGMA user_version`. Migrations
//! are SQL in [`MIGRATIONS`], applied in order inside one transaction; a catalog newer
//! than [`MIGRATIONS`] knows is refused rather than guessed at.
//!
//! Times are microseconds since the Unix epoch (UTC); hashes are 32-byte BLOBs.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::CatalogError;
use super::change::{Change, FileKey};
use crate::cassandra::{Location, classify};

/// "TSAF": marks a SQLite file as a tablesafe catalog.
const APPLICATION_ID: i64 = 0x5453_4146;

/// Schema migrations; migration N (1-based) brings the schema to version N.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE blobs (
        hash        BLOB PRIMARY KEY,
        size        INTEGER NOT NULL,
        stored_size INTEGER NOT NULL,
        first_seen  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE files (
        id         INTEGER PRIMARY KEY,
        node       TEXT NOT NULL,
        data_dir   TEXT NOT NULL,
        keyspace   TEXT NOT NULL,
        table_name TEXT NOT NULL,
        table_id   TEXT NOT NULL,
        rel_path   TEXT NOT NULL,
        location   TEXT NOT NULL,   -- live | backups | snapshot:<tag>
        component  TEXT NOT NULL,   -- Data.db, TOC.txt, manifest.json, ...
        UNIQUE (node, data_dir, keyspace, table_name, table_id, rel_path)
    );

    CREATE TABLE versions (
        file_id    INTEGER NOT NULL REFERENCES files(id),
        valid_from INTEGER NOT NULL,
        valid_to   INTEGER,         -- NULL while the file is live
        hash       BLOB NOT NULL,
        size       INTEGER NOT NULL,
        mtime      INTEGER NOT NULL,
        PRIMARY KEY (file_id, valid_from)
    ) WITHOUT ROWID;
    CREATE INDEX versions_open ON versions (file_id) WHERE valid_to IS NULL;
    CREATE INDEX versions_from ON versions (valid_from);
    CREATE INDEX versions_hash ON versions (hash);

    CREATE TABLE snapshots (
        id    INTEGER PRIMARY KEY,
        node  TEXT NOT NULL,
        name  TEXT NOT NULL,
        time  INTEGER NOT NULL,
        scope TEXT NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        UNIQUE (node, name)
    );
    CREATE INDEX snapshots_time ON snapshots (time);

    CREATE TABLE corrupt (
        node       TEXT NOT NULL,
        data_dir   TEXT NOT NULL,
        keyspace   TEXT NOT NULL,
        table_name TEXT NOT NULL,
        table_id   TEXT NOT NULL,
        rel_path   TEXT NOT NULL,
        detail     TEXT NOT NULL,
        at         INTEGER NOT NULL,
        PRIMARY KEY (node, data_dir, keyspace, table_name, table_id, rel_path, at)
    ) WITHOUT ROWID;

    -- Local only (never mirrored): hashes of files by stat, so unchanged files and their
    -- hard links are not read again.
    CREATE TABLE stat_cache (
        dev      INTEGER NOT NULL,
        ino      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        hash     BLOB NOT NULL,
        PRIMARY KEY (dev, ino)
    ) WITHOUT ROWID;

    -- Every applied batch; body kept until the repository holds it.
    CREATE TABLE batches (
        node     TEXT NOT NULL,
        seq      INTEGER NOT NULL,
        time     INTEGER NOT NULL,
        uploaded INTEGER NOT NULL,
        body     BLOB,
        PRIMARY KEY (node, seq)
    ) WITHOUT ROWID;
    ",
    // 2: the daemon's work queue and status (local only).
    "
    -- Directories an event said to look at, kept until a pass over them succeeded, so a
    -- restarted daemon resumes where it stopped.
    CREATE TABLE dirty_roots (
        node  TEXT NOT NULL,
        path  TEXT NOT NULL,
        since INTEGER NOT NULL,
        PRIMARY KEY (node, path)
    ) WITHOUT ROWID;

    -- What `tablesafe status` shows; written by the daemon every few seconds.
    CREATE TABLE daemon_status (
        node TEXT PRIMARY KEY,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 3: garbage collection (replayed from the repository's gc log).
    "
    -- Blobs gc found unreferenced, since when. A backup never trusts these to exist.
    CREATE TABLE condemned (
        hash  BLOB PRIMARY KEY,
        since INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- The retention gc last applied to each node: every instant from keep_from on is
    -- restorable, and before it only the retained points (JSON array of times).
    CREATE TABLE retention (
        node       TEXT PRIMARY KEY,
        applied_at INTEGER NOT NULL,
        keep_from  INTEGER NOT NULL,
        points     TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 4: gc finds the versions a retention may drop (ended before its window) without
    // scanning every version.
    "
    CREATE INDEX versions_to ON versions (valid_to) WHERE valid_to IS NOT NULL;
    ",
    // 5: packs (blobs holding many small files) and where each small file sits in one.
    "
    CREATE TABLE packed (
        hash   BLOB NOT NULL,     -- the small file's content hash
        pack   BLOB NOT NULL,     -- the pack blob holding it
        offset INTEGER NOT NULL,  -- where in the pack's content
        size   INTEGER NOT NULL,
        PRIMARY KEY (hash, pack)
    ) WITHOUT ROWID;
    CREATE INDEX packed_pack ON packed (pack);
    ",
    // 6: the filesystem each data directory was on at its last accepted pass (local only),
    // so a disk unmounted under its mount point is absence, not deletion.
    "
    CREATE TABLE data_dir_devices (
        node     TEXT NOT NULL,
        data_dir TEXT NOT NULL,
        dev      INTEGER NOT NULL,
        PRIMARY KEY (node, data_dir)
    ) WITHOUT ROWID;
    ",
    // 7: one writer per node: this catalog's writer id, and who wrote each node's
    // latest batch (see `catalog::writer`).
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE writers (
        node   TEXT PRIMARY KEY,
        writer TEXT NOT NULL,     -- '' for batches written before writer ids existed
        host   TEXT NOT NULL,
        seq    INTEGER NOT NULL   -- the batch that said so
    ) WITHOUT ROWID;
    ",
    // 8: a checksum of every row restore and gc decide on (see `ROW_CHECK`); rows
    // written before are checksummed as they are now.
    "
    ALTER TABLE versions ADD COLUMN chk INTEGER;
    ALTER TABLE snapshots ADD COLUMN chk INTEGER;
    ALTER TABLE packed ADD COLUMN chk INTEGER;
    ALTER TABLE condemned ADD COLUMN chk INTEGER;
    ALTER TABLE stat_cache ADD COLUMN chk INTEGER;
    UPDATE versions SET chk = (SELECT ts_row_check('v', f.node, f.data_dir, f.keyspace,
        f.table_name, f.table_id, f.rel_path, versions.valid_from, versions.valid_to,
        versions.hash, versions.size, versions.mtime) FROM files f WHERE f.id = versions.file_id);
    UPDATE snapshots SET chk = ts_row_check('s', node, name, time, scope, files, bytes);
    UPDATE packed SET chk = ts_row_check('p', hash, pack, offset, size);
    UPDATE condemned SET chk = ts_row_check('c', hash, since);
    UPDATE stat_cache SET chk = ts_row_check('st', dev, ino, size, mtime_ns, ctime_ns, hash);
    ",
];

/// SQLite has no page checksums: one changed byte in a path or a hash would be read back
/// as if it were true. So every row that decides what restore writes where, or what gc
/// may delete, carries `chk`, this SQL function over its values (BLAKE3 of the typed,
/// length-prefixed values, first 8 bytes). A version's covers its file's node and path
/// too (a damaged `files` row or `file_id` fails the check of every version it holds).
/// It detects damage, not deliberate edits: whoever can write the catalog can recompute it.
pub const ROW_CHECK: &str = "ts_row_check";

/// SQL: true when the version row `v` (joined to its file row `f`) is intact.
pub fn version_intact(v: &str, f: &str) -> String {
    format!(
        "({v}.chk IS ts_row_check('v', {f}.node, {f}.data_dir, {f}.keyspace, {f}.table_name,
            {f}.table_id, {f}.rel_path, {v}.valid_from, {v}.valid_to, {v}.hash, {v}.size,
            {v}.mtime))"
    )
}

/// SQL: true when the snapshot, pack membership or condemnation row `t` is intact.
pub fn snapshot_intact(t: &str) -> String {
    format!(
        "({t}.chk IS ts_row_check('s', {t}.node, {t}.name, {t}.time, {t}.scope, {t}.files, {t}.bytes))"
    )
}
pub fn packed_intact(t: &str) -> String {
    format!("({t}.chk IS ts_row_check('p', {t}.hash, {t}.pack, {t}.offset, {t}.size))")
}
pub fn condemned_intact(t: &str) -> String {
    format!("({t}.chk IS ts_row_check('c', {t}.hash, {t}.since))")
}

/// Registers [`ROW_CHECK`] on a connection (before [`prepare`]: migrations use it).
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    conn.create_scalar_function(
        ROW_CHECK,
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let mut h = blake3::Hasher::new();
            for i in 0..ctx.len() {
                let mut typed = |tag: u8, bytes: &[u8]| {
                    h.update(&[tag]);
                    h.update(&(bytes.len() as u64).to_le_bytes());
                    h.update(bytes);
                };
                match ctx.get_raw(i) {
                    ValueRef::Null => typed(0, &[]),
                    ValueRef::Integer(n) => typed(1, &n.to_le_bytes()),
                    ValueRef::Real(f) => typed(2, &f.to_le_bytes()),
                    ValueRef::Text(t) => typed(3, t),
                    ValueRef::Blob(b) => typed(4, b),
                }
            }
            let mut first = [0u8; 8];
            first.copy_from_slice(&h.finalize().as_bytes()[..8]);
            Ok(i64::from_le_bytes(first))
        },
    )
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a command waits for another process's lock on the catalog (SQLite's
/// "database is locked": two commands starting at once, a daemon committing a large
/// batch) before giving up with [`CatalogError::Busy`].
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Sets connection options, checks the file is a tablesafe catalog, and migrates it.
/// A catalog another process holds locked is waited on (up to [`BUSY_TIMEOUT`]) and
/// then reported as busy, never as damaged.
pub fn prepare(conn: &mut Connection, path: &Path) -> Result<(), CatalogError> {
    let corrupt = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            CatalogError::Busy {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
        _ => CatalogError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    };
    // Before the first statement that reads the file: it may have to wait for a lock.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
    // The first statement that reads the file is where a non-database shows itself.
    let (app_id, version): (i64, i64) = conn
        .query_row(
            "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(corrupt)?;
    let table_count: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(corrupt)?;
    if app_id != APPLICATION_ID && !(app_id == 0 && table_count == 0) {
        return Err(CatalogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("SQLite application id {app_id:#x} is not tablesafe's"),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(CatalogError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(corrupt)?;
    // FULL: a committed batch survives power loss, like the blobs it refers to.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(corrupt)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(corrupt)?;
    if version < SCHEMA_VERSION {
        // Take the write lock first, then look again: another process (a daemon starting
        // while `tablesafe status` runs) may have migrated in between.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(corrupt)?;
        let version: i64 = tx
            .query_row("SELECT user_version FROM pragma_user_version", [], |r| {
                r.get(0)
            })
            .map_err(corrupt)?;
        for sql in MIGRATIONS
            .get(version.max(0) as usize..)
            .unwrap_or_default()
        {
            tx.execute_batch(sql).map_err(corrupt)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(corrupt)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(corrupt)?;
        tx.commit().map_err(corrupt)?;
    }
    Ok(())
}

/// Location and component of a file from its path in the table directory.
fn location_and_component(key: &FileKey) -> (String, String) {
    let classified = classify(std::path::Path::new(&key.data_relative_path()));
    let location = match classified.place.map(|p| p.location) {
        Some(Location::Snapshot(tag)) => format!("snapshot:{tag}"),
        Some(Location::Backups) => "backups".to_string(),
        Some(Location::Live) | None => "live".to_string(),
    };
    let component = match classified.kind {
        crate::cassandra::FileKind::Component(n) => n.component.to_string(),
        _ => key
            .rel_path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    (location, component)
}

/// Which [`file_id`] tries first: a `Start` is most often of a file never seen (a new
/// SSTable; every file of a first backup or a rebuild), an `End` of a known one.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    New,
    Known,
}

/// The row id of a file, inserting it if new; `true` when it was inserted (so it has no
/// versions yet).
fn file_id(
    tx: &Transaction<'_>,
    node: &str,
    key: &FileKey,
    expect: Expect,
) -> rusqlite::Result<(i64, bool)> {
    let lookup = || {
        tx.prepare_cached(
            "SELECT id FROM files WHERE node = ?1 AND data_dir = ?2 AND keyspace = ?3
             AND table_name = ?4 AND table_id = ?5 AND rel_path = ?6",
        )?
        .query_row(
            params![
                node,
                key.data_dir,
                key.keyspace,
                key.table,
                key.table_id,
                key.rel_path
            ],
            |r| r.get(0),
        )
        .optional()
    };
    if expect == Expect::Known
        && let Some(id) = lookup()?
    {
        return Ok((id, false));
    }
    let (location, component) = location_and_component(key);
    let inserted = tx
        .prepare_cached(
            "INSERT INTO files (node, data_dir, keyspace, table_name, table_id, rel_path, location, component)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (node, data_dir, keyspace, table_name, table_id, rel_path) DO NOTHING",
        )?
        .execute(params![
            node,
            key.data_dir,
            key.keyspace,
            key.table,
            key.table_id,
            key.rel_path,
            location,
            component
        ])?;
    if inserted == 1 {
        return Ok((tx.last_insert_rowid(), true));
    }
    let id = lookup()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    Ok((id, false))
}

/// Applies one change inside a batch's transaction.
/// `time` is the batch's time, used where a change has no time of its own.
pub fn apply_change(
    tx: &Transaction<'_>,
    node: &str,
    time: i64,
    change: &Change,
) -> rusqlite::Result<()> {
    match change {
        Change::Blob {
            hash,
            size,
            stored_size,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs (hash, size, stored_size, first_seen)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                hash.as_slice(),
                *size as i64,
                *stored_size as i64,
                time
            ])?;
            // Uploaded (again) after it was condemned: the upload saved it.
            tx.prepare_cached("DELETE FROM condemned WHERE hash = ?1 AND since <= ?2")?
                .execute(params![hash.as_slice(), time])?;
        }
        Change::Start {
            key,
            hash,
            size,
            mtime,
            at,
        } => apply_start(tx, node, key, (hash, *size, *mtime), *at)?,
        Change::End { key, at } => apply_end(tx, node, key, *at)?,
        Change::Snapshot {
            name,
            time,
            scope,
            files,
            bytes,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO snapshots (node, name, time, scope, files, bytes, chk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ts_row_check('s', ?1, ?2, ?3, ?4, ?5, ?6))",
            )?
            .execute(params![
                node,
                name,
                time,
                scope,
                *files as i64,
                *bytes as i64
            ])?;
        }
        Change::Corrupt { key, detail, at } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO corrupt (node, data_dir, keyspace, table_name, table_id, rel_path, detail, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                node,
                key.data_dir,
                key.keyspace,
                key.table,
                key.table_id,
                key.rel_path,
                detail,
                at
            ])?;
        }
        Change::Retention {
            node: retained_node,
            keep_from,
            points,
            dropped_snapshots,
        } => apply_retention(
            tx,
            retained_node,
            time,
            *keep_from,
            points,
            dropped_snapshots,
        )?,
        Change::Condemn { hashes } => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO condemned (hash, since, chk)
                 VALUES (?1, ?2, ts_row_check('c', ?1, ?2))",
            )?;
            for h in hashes {
                stmt.execute(params![h.as_slice(), time])?;
            }
        }
        Change::Absolve { hashes } => {
            let mut stmt = tx.prepare_cached("DELETE FROM condemned WHERE hash = ?1")?;
            for h in hashes {
                stmt.execute([h.as_slice()])?;
            }
        }
        Change::Delete { hashes } => {
            let mut gone = tx.prepare_cached("DELETE FROM condemned WHERE hash = ?1")?;
            let mut unknown = tx.prepare_cached("DELETE FROM blobs WHERE hash = ?1")?;
            // A deleted pack no longer holds anything.
            let mut unpacked = tx.prepare_cached("DELETE FROM packed WHERE pack = ?1")?;
            for h in hashes {
                gone.execute([h.as_slice()])?;
                unknown.execute([h.as_slice()])?;
                unpacked.execute([h.as_slice()])?;
            }
        }
        // Recorded per batch by `Replay::apply`, which knows the batch's number.
        Change::Writer { .. } => {}
        Change::Packed { pack, members } => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO packed (hash, pack, offset, size, chk)
                 VALUES (?1, ?2, ?3, ?4, ts_row_check('p', ?1, ?2, ?3, ?4))",
            )?;
            for m in members {
                stmt.execute(params![
                    m.hash.as_slice(),
                    pack.as_slice(),
                    m.offset as i64,
                    m.size as i64
                ])?;
            }
        }
    }
    Ok(())
}

/// A version of `key` starts at `at` (after the last start of that file, which it ends).
fn apply_start(
    tx: &Transaction<'_>,
    node: &str,
    key: &FileKey,
    (hash, size, mtime): (&super::Hash32, u64, i64),
    at: i64,
) -> rusqlite::Result<()> {
    let (id, new) = file_id(tx, node, key, Expect::New)?;
    // Versions of one file never overlap and never share a start time. A file
    // just inserted has none (most Starts of a first backup, or of a rebuild).
    let mut at = at;
    if !new {
        let last_from: Option<i64> = tx
            .prepare_cached("SELECT MAX(valid_from) FROM versions WHERE file_id = ?1")?
            .query_row([id], |r| r.get(0))?;
        at = last_from.map_or(at, |f| at.max(f + 1));
        tx.prepare_cached(
            "UPDATE versions SET valid_to = ?2,
                 chk = ts_row_check('v', ?3, ?4, ?5, ?6, ?7, ?8, valid_from, ?2, hash, size, mtime)
             WHERE file_id = ?1 AND valid_to IS NULL",
        )?
        .execute(params![
            id,
            at,
            node,
            key.data_dir,
            key.keyspace,
            key.table,
            key.table_id,
            key.rel_path
        ])?;
    }
    tx.prepare_cached(
        "INSERT INTO versions (file_id, valid_from, valid_to, hash, size, mtime, chk)
         VALUES (?1, ?2, NULL, ?3, ?4, ?5,
                 ts_row_check('v', ?6, ?7, ?8, ?9, ?10, ?11, ?2, NULL, ?3, ?4, ?5))",
    )?
    .execute(params![
        id,
        at,
        hash.as_slice(),
        size as i64,
        mtime,
        node,
        key.data_dir,
        key.keyspace,
        key.table,
        key.table_id,
        key.rel_path
    ])?;
    Ok(())
}

/// The open version of `key` ends at `at` (never before it started).
fn apply_end(tx: &Transaction<'_>, node: &str, key: &FileKey, at: i64) -> rusqlite::Result<()> {
    let (id, _) = file_id(tx, node, key, Expect::Known)?;
    tx.prepare_cached(
        "UPDATE versions SET valid_to = MAX(?2, valid_from + 1),
             chk = ts_row_check('v', ?3, ?4, ?5, ?6, ?7, ?8, valid_from,
                                MAX(?2, valid_from + 1), hash, size, mtime)
         WHERE file_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![
        id,
        at,
        node,
        key.data_dir,
        key.keyspace,
        key.table,
        key.table_id,
        key.rel_path
    ])?;
    Ok(())
}

/// Forgets what a retention no longer keeps: versions of `node` that ended by
/// `keep_from` and cover none of `points`, and the dropped snapshots. Versions still
/// open, or ending later, are never touched, so replaying the node's log again later
/// (a rebuild) and this change after it gives the same catalog.
fn apply_retention(
    tx: &Transaction<'_>,
    node: &str,
    applied_at: i64,
    keep_from: i64,
    points: &[i64],
    dropped_snapshots: &[String],
) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS kept_points (t INTEGER PRIMARY KEY);
         DELETE FROM kept_points;",
    )?;
    {
        let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO kept_points (t) VALUES (?1)")?;
        for t in points {
            stmt.execute([t])?;
        }
    }
    tx.prepare_cached(
        "DELETE FROM versions INDEXED BY versions_to
         WHERE valid_to IS NOT NULL AND valid_to <= ?2
           AND EXISTS (SELECT 1 FROM files f WHERE f.id = versions.file_id AND f.node = ?1)
           AND NOT EXISTS (SELECT 1 FROM kept_points p
                           WHERE p.t >= versions.valid_from AND p.t < versions.valid_to)",
    )?
    .execute(params![node, keep_from])?;
    {
        let mut stmt = tx.prepare_cached("DELETE FROM snapshots WHERE node = ?1 AND name = ?2")?;
        for name in dropped_snapshots {
            stmt.execute(params![node, name])?;
        }
    }
    let points_json = serde_json::to_string(points).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT OR REPLACE INTO retention (node, applied_at, keep_from, points) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![node, applied_at, keep_from, points_json])?;
    Ok(())
}
