//! The catalog through its public API, on real SQLite files.

use tablesafe::catalog::{Batch, Catalog, CatalogError, Change, FileKey, SnapshotFilter, StatKey};

fn key(rel: &str) -> FileKey {
    FileKey {
        data_dir: "/var/lib/cassandra/data".into(),
        keyspace: "ks".into(),
        table: "t".into(),
        table_id: "0123456789abcdef0123456789abcdef".into(),
        rel_path: rel.into(),
    }
}

fn start(rel: &str, h: u8, at: i64) -> Change {
    Change::Start {
        key: key(rel),
        hash: [h; 32],
        size: u64::from(h) * 10,
        mtime: at - 5,
        at,
    }
}

fn live_names(c: &Catalog, t: i64) -> Vec<(String, u8)> {
    c.live_at("n1", t)
        .unwrap()
        .into_iter()
        .map(|v| (v.key.rel_path, v.hash[0]))
        .collect()
}

/// A history: two flushes, a Statistics.db rewrite, a compaction, a snapshot.
fn history() -> Vec<(i64, Vec<Change>)> {
    vec![
        (
            100,
            vec![
                start("nb-1-big-Data.db", 1, 100),
                start("nb-1-big-Statistics.db", 2, 100),
            ],
        ),
        (200, vec![start("nb-2-big-Data.db", 3, 200)]),
        (300, vec![start("nb-1-big-Statistics.db", 4, 300)]),
        (
            400,
            vec![
                start("nb-3-big-Data.db", 5, 400),
                Change::End {
                    key: key("nb-1-big-Data.db"),
                    at: 400,
                },
                Change::End {
                    key: key("nb-1-big-Statistics.db"),
                    at: 400,
                },
                Change::End {
                    key: key("nb-2-big-Data.db"),
                    at: 400,
                },
            ],
        ),
        (
            500,
            vec![Change::Snapshot {
                name: "daily".into(),
                time: 500,
                scope: "all".into(),
                files: 1,
                bytes: 50,
            }],
        ),
    ]
}

fn fill(c: &mut Catalog) -> Vec<Batch> {
    history()
        .into_iter()
        .map(|(t, changes)| c.commit("n1", t, changes).unwrap())
        .collect()
}

#[test]
fn live_set_at_every_moment_follows_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
    fill(&mut c);
    assert!(live_names(&c, 99).is_empty());
    assert_eq!(
        live_names(&c, 150),
        [
            ("nb-1-big-Data.db".into(), 1),
            ("nb-1-big-Statistics.db".into(), 2)
        ]
    );
    assert_eq!(live_names(&c, 299).len(), 3);
    let at_300 = live_names(&c, 300);
    assert!(
        at_300.contains(&("nb-1-big-Statistics.db".into(), 4)),
        "rewritten content: {at_300:?}"
    );
    assert!(!at_300.contains(&("nb-1-big-Statistics.db".into(), 2)));
    assert_eq!(live_names(&c, 450), [("nb-3-big-Data.db".into(), 5)]);
    assert_eq!(c.history_bounds("n1").unwrap(), Some((100, 400)));
    assert_eq!(c.history_bounds("other").unwrap(), None);
    let snaps = c.snapshots(&SnapshotFilter::default()).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "daily");
    let none = c
        .snapshots(&SnapshotFilter {
            since: Some(501),
            ..Default::default()
        })
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn replaying_the_batches_rebuilds_an_identical_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut original = Catalog::open(&dir.path().join("a.db")).unwrap();
    let batches = fill(&mut original);
    let mut rebuilt = Catalog::open(&dir.path().join("b.db")).unwrap();
    for b in &batches {
        let bytes = b.encode().unwrap();
        assert!(
            rebuilt
                .apply_batch(&Batch::decode(&bytes).unwrap(), true)
                .unwrap()
        );
        // Applying the same batch again changes nothing.
        assert!(!rebuilt.apply_batch(b, true).unwrap());
    }
    for t in [0, 100, 150, 200, 299, 300, 399, 400, 1000] {
        assert_eq!(
            original.live_at("n1", t).unwrap(),
            rebuilt.live_at("n1", t).unwrap(),
            "t={t}"
        );
    }
    let all = SnapshotFilter::default();
    assert_eq!(
        original.snapshots(&all).unwrap(),
        rebuilt.snapshots(&all).unwrap()
    );
    assert_eq!(rebuilt.last_seq("n1").unwrap(), 5);
    assert!(rebuilt.pending_batches("n1").unwrap().is_empty());
}

#[test]
fn batches_stay_pending_until_uploaded_even_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let batches = {
        let mut c = Catalog::open(&path).unwrap();
        fill(&mut c)
    };
    let mut c = Catalog::open(&path).unwrap();
    assert_eq!(c.pending_batches("n1").unwrap(), batches);
    c.mark_uploaded("n1", 1).unwrap();
    c.mark_uploaded("n1", 2).unwrap();
    let pending: Vec<u64> = c
        .pending_batches("n1")
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    assert_eq!(pending, [3, 4, 5]);
    let next = c.commit("n1", 600, vec![]).unwrap();
    assert_eq!(next.seq, 6);
}

#[test]
fn known_blobs_and_the_stat_cache_answer_without_reading_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
    c.commit(
        "n1",
        1,
        vec![Change::Blob {
            hash: [7; 32],
            size: 3,
            stored_size: 2,
        }],
    )
    .unwrap();
    assert!(c.has_blob(&[7; 32]).unwrap());
    assert!(!c.has_blob(&[8; 32]).unwrap());
    let stat = StatKey {
        dev: 1,
        ino: 2,
        size: 3,
        mtime_ns: 4,
        ctime_ns: 5,
    };
    assert_eq!(c.cached_hash(&stat).unwrap(), None);
    c.remember_stats(&[(stat, [7; 32])]).unwrap();
    assert_eq!(c.cached_hash(&stat).unwrap(), Some([7; 32]));
    // Any difference in the stat (here ctime: a chmod, or a rewrite in place) is a miss.
    let touched = StatKey {
        ctime_ns: 6,
        ..stat
    };
    assert_eq!(c.cached_hash(&touched).unwrap(), None);
}

#[test]
fn a_damaged_or_foreign_catalog_is_refused_pointing_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let e = Catalog::open(&garbage).err().unwrap();
    assert!(matches!(e, CatalogError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("tablesafe catalog rebuild"), "{e}");
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x5a; 8192],
        "nothing was overwritten"
    );

    let foreign = dir.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE x (y INTEGER);").unwrap();
    drop(conn);
    let e = Catalog::open(&foreign).err().unwrap();
    assert!(e.to_string().contains("not tablesafe's"), "{e}");

    let newer = dir.path().join("newer.db");
    drop(Catalog::open(&newer).unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let e = Catalog::open(&newer).err().unwrap();
    assert!(
        matches!(e, CatalogError::NewerSchema { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade tablesafe"), "{e}");
}

#[test]
fn a_truncated_catalog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let mut c = Catalog::open(&path).unwrap();
        fill(&mut c);
    }
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let _ = std::fs::remove_file(dir.path().join("c.db-wal"));
    let result = Catalog::open(&path).and_then(|c| c.live_at("n1", 1000));
    let Err(e) = result else {
        panic!("a truncated catalog must not answer queries")
    };
    assert!(matches!(e, CatalogError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("catalog rebuild"), "{e}");
}

#[test]
fn processes_creating_the_same_catalog_at_once_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Catalog::open(&path).map(|_| ()).map_err(|e| e.to_string()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
}
