//! Cassandra's SSTable lifecycle replayed one filesystem mutation at a time (see
//! `support::lifecycle`), with `scan_dir` and `verify_sstable` checked against the helper's
//! model after every single step, for every fixture format from 2.0 (`jb`) to 5.0 (`da`).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use support::lifecycle::{
    CheckReport, Content, Expectation, Expected, FixtureFormat, Gen, LinkOrder, Node, Operation,
    digest_text, fixture_component,
};
use tablesafe::cassandra::{RecordKind, TxnRecord};

/// Performs operations step by step and checks the library after each step.
#[derive(Default)]
struct Driver {
    steps: usize,
    totals: CheckReport,
    seen: BTreeSet<Expected>,
    /// Reported SSTables that are not complete yet pass digest verification (Data.db and
    /// Digest fully written: before TOC.txt, before deletion, mid hard-link pass).
    not_complete_but_digest_ok: usize,
}

impl Driver {
    fn check(&mut self, e: &Expectation) {
        let r = e.check().unwrap_or_else(|why| panic!("{why}"));
        self.steps += 1;
        self.totals.sstables_compared += r.sstables_compared;
        self.totals.digests_ok += r.digests_ok;
        self.totals.digests_not_ok += r.digests_not_ok;
        for d in e.dirs.values() {
            for (base, s) in &d.sstables {
                self.seen.insert(s.state);
                if s.state != Expected::Complete
                    && s.state != Expected::Absent
                    && s.digest_verifiable
                {
                    self.not_complete_but_digest_ok += 1;
                }
                assert!(
                    s.state != Expected::Complete || s.digest_verifiable,
                    "model: complete {base} without a verifiable digest after {}",
                    e.step
                );
            }
        }
    }

    /// Runs `op` to the end; returns the generation it created, if any.
    fn run(&mut self, mut op: Operation) -> Option<Gen> {
        let g = op.generation().cloned();
        while let Some(e) = op.step().expect("step") {
            self.check(&e);
        }
        g
    }

    fn steps(&mut self, op: &mut Operation, n: usize) {
        for _ in 0..n {
            match op.step().expect("step") {
                Some(e) => self.check(&e),
                None => break,
            }
        }
    }
}

struct Variant {
    content: Content,
    torn_log_appends: bool,
    uuid_generations: bool,
}

/// flush, flush, snapshot, incremental backups, a compaction of the two with a third flush
/// completing in its middle, an aborted write, an aborted compaction, another snapshot and
/// backup, a Statistics rewrite; every step checked.
fn scenario(format: FixtureFormat, v: &Variant) -> Driver {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new(tmp.path());
    let mut t = node.create_table("ks1", "tbl_a", format);
    t.set_content(v.content.clone());
    t.set_torn_log_appends(v.torn_log_appends);
    t.set_uuid_generations(v.uuid_generations);
    let mut d = Driver::default();
    d.check(&t.expectation());

    let g1 = d.run(t.flush()).expect("generation");
    let g2 = d.run(t.flush()).expect("generation");
    assert_eq!(t.live_generations(), vec![g1.clone(), g2.clone()]);
    let data = |g: &Gen| fs::read(t.path().join(t.file_name(g, "Data.db"))).expect("Data.db");
    let fixture_data = fixture_component(format, "Data.db").expect("fixture");
    match &v.content {
        Content::Fixture => {
            assert_eq!(data(&g1), fixture_data);
            assert_eq!(data(&g2), fixture_data);
        }
        Content::Distinct(_) => {
            assert_ne!(data(&g1), data(&g2));
            assert!(data(&g1).starts_with(&fixture_data));
        }
    }

    d.run(t.snapshot("before"));
    t.set_link_order(LinkOrder::TocFirst);
    d.run(t.incremental_backup(&g1));
    t.set_link_order(LinkOrder::Shuffled);
    d.run(t.incremental_backup(&g2));

    let mut compaction = t.compact(&[g1.clone(), g2.clone()]);
    let g3 = compaction.generation().cloned().expect("generation");
    let half = compaction.remaining() / 2;
    d.steps(&mut compaction, half);
    let g4 = d.run(t.flush()).expect("generation");
    d.run(compaction);
    assert_eq!(t.live_generations(), vec![g3.clone(), g4.clone()]);

    let g5 = d.run(t.aborted_write()).expect("generation");
    let g6 = d
        .run(t.aborted_compaction(&[g3.clone(), g4.clone()]))
        .expect("generation");
    assert_eq!(t.live_generations(), vec![g3.clone(), g4.clone()]);

    t.set_link_order(LinkOrder::TocLast);
    d.run(t.snapshot("after"));
    d.run(t.incremental_backup(&g3));
    d.run(t.rewrite_statistics(&g3));

    let e = t.expectation();
    let base = |g: &Gen| t.base_name(g);
    for (dir, g, want) in [
        ("", &g1, Expected::Absent),
        ("", &g2, Expected::Absent),
        ("", &g3, Expected::Complete),
        ("", &g4, Expected::Complete),
        ("", &g5, Expected::Absent),
        ("", &g6, Expected::Absent),
        ("snapshots/before", &g1, Expected::Complete),
        ("snapshots/before", &g2, Expected::Complete),
        ("snapshots/after", &g3, Expected::Complete),
        ("snapshots/after", &g4, Expected::Complete),
        ("backups", &g1, Expected::Complete),
        ("backups", &g2, Expected::Complete),
        ("backups", &g3, Expected::Complete),
    ] {
        assert_eq!(e.state(dir, &base(g)), want, "{dir}/{}", base(g));
    }
    d.check(&e);

    // The rewrite replaced the live Statistics.db; the snapshot's hard link kept the old one.
    let stats = t.file_name(&g3, "Statistics.db");
    let live = t.path().join(&stats);
    let snap = t.path().join("snapshots/after").join(&stats);
    assert_ne!(fs::read(&live).unwrap(), fs::read(&snap).unwrap());
    let data3 = t.file_name(&g3, "Data.db");
    let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&t.path().join(&data3)),
        ino(&t.path().join("snapshots/after").join(&data3))
    );

    if format.writes_snapshot_manifest() {
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(t.path().join("snapshots/after/manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            manifest["files"],
            serde_json::json!([t.file_name(&g3, "Data.db"), t.file_name(&g4, "Data.db")])
        );
    }

    let mut want: BTreeSet<Expected> = [
        Expected::Complete,
        Expected::InProgress,
        Expected::Incomplete,
        Expected::Absent,
    ]
    .into();
    if format.has_txn_logs() {
        want.extend([Expected::Aborted, Expected::Obsolete]);
    }
    assert_eq!(d.seen, want, "states observed during the scenario");
    d
}

fn lifecycle(format: FixtureFormat) {
    let variants = [
        Variant {
            content: Content::Fixture,
            torn_log_appends: false,
            uuid_generations: false,
        },
        Variant {
            content: Content::Distinct("node-a".into()),
            torn_log_appends: format.has_txn_logs(),
            uuid_generations: format.supports_uuid_generations(),
        },
    ];
    for v in &variants {
        let d = scenario(format, v);
        eprintln!(
            "{format:?} content={:?} torn={} uuid={}: {} steps checked, {} SSTable states \
             compared, digests ok {} / not ok {}, of which ok but not complete {}",
            v.content,
            v.torn_log_appends,
            v.uuid_generations,
            d.steps,
            d.totals.sstables_compared,
            d.totals.digests_ok,
            d.totals.digests_not_ok,
            d.not_complete_but_digest_ok
        );
    }
}

#[test]
fn lifecycle_jb_2_0() {
    lifecycle(FixtureFormat::Jb);
}

#[test]
fn lifecycle_ka_2_1() {
    lifecycle(FixtureFormat::Ka);
}

#[test]
fn lifecycle_la_2_2() {
    lifecycle(FixtureFormat::La);
}

#[test]
fn lifecycle_mc_3_0() {
    lifecycle(FixtureFormat::Mc);
}

#[test]
fn lifecycle_me_3_11() {
    lifecycle(FixtureFormat::Me);
}

#[test]
fn lifecycle_na_4_0_rc() {
    lifecycle(FixtureFormat::Na);
}

#[test]
fn lifecycle_nb_4_x() {
    lifecycle(FixtureFormat::Nb);
}

#[test]
fn lifecycle_oa_5_0_big() {
    lifecycle(FixtureFormat::Oa);
}

#[test]
fn lifecycle_da_5_0_bti() {
    lifecycle(FixtureFormat::Da);
}

/// The helper's digest writer reproduces every fixture's Digest byte for byte, so the
/// digests it writes for altered Data.db are what Cassandra would have written.
#[test]
fn digest_text_reproduces_fixture_digests() {
    for f in FixtureFormat::ALL {
        let data = fixture_component(f, "Data.db").unwrap();
        let digest = fixture_component(f, f.digest_component()).unwrap();
        let name = format!("{}-Data.db", f.fixture_base());
        assert_eq!(
            String::from_utf8_lossy(&digest_text(f, &data, &name)),
            String::from_utf8_lossy(&digest),
            "{f:?}"
        );
    }
}

/// The txn log holds Cassandra's exact lines: ADD with the absolute path and component
/// count, then COMMIT (update time 0, as LogRecord writes it); gone when the flush is over.
#[test]
fn flush_writes_cassandra_txn_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path());
    let mut t = node.create_table("ks", "tbl", FixtureFormat::Nb);
    let dir_name = t.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(dir_name.starts_with("tbl-") && dir_name.len() == 4 + 32);
    let mut flush = t.flush();
    let e = flush.step().unwrap().unwrap();
    let logs: Vec<String> = e.dirs[""].txn_logs.iter().cloned().collect();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].starts_with("nb_txn_flush_"), "{}", logs[0]);
    let log_path = t.path().join(&logs[0]);
    let add = TxnRecord::new(
        RecordKind::Add,
        &format!("{}/nb-1-big", t.path().display()),
        0,
        8,
    );
    assert_eq!(
        fs::read_to_string(&log_path).unwrap(),
        format!("{}\n", add.to_line())
    );
    while !flush.pending_steps()[0].starts_with("delete txn log") {
        flush.step().unwrap().unwrap().check().unwrap();
    }
    let text = fs::read_to_string(&log_path).unwrap();
    let last = TxnRecord::parse_line(text.lines().last().unwrap()).unwrap();
    assert_eq!(last.kind, RecordKind::Commit);
    assert_eq!(last.update_time, 0);
    flush.run().unwrap();
    assert!(!log_path.exists());
    assert_eq!(t.live_generations(), vec![Gen::Seq(1)]);
}

/// 2.0 tables have no id in their directory name; 2.x SSTables use long names.
#[test]
fn legacy_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path());
    let mut jb = node.create_table("Keyspace1", "Standard1", FixtureFormat::Jb);
    assert_eq!(jb.path(), node.data_dir().join("Keyspace1/Standard1"));
    jb.flush().run().unwrap();
    assert!(jb.path().join("Keyspace1-Standard1-jb-1-Data.db").exists());
    let mut ka = node.create_table("ks", "t", FixtureFormat::Ka);
    ka.flush().run().unwrap();
    assert_eq!(ka.base_name(&Gen::Seq(1)), "ks-t-ka-1");
    ka.expectation()
        .check()
        .unwrap_or_else(|why| panic!("{why}"));
}

/// A crash at every step of a compaction, then Cassandra's startup cleanup: afterwards
/// either the inputs or the output are live (2.x: whichever has its Data.db), nothing
/// temporary is left, and the library agrees at every step.
fn crash_during_compaction(format: FixtureFormat, torn: bool) {
    let total = {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Node::new(tmp.path()).create_table("ks", "tbl", format);
        t.flush().run().unwrap();
        t.flush().run().unwrap();
        t.set_torn_log_appends(torn);
        t.compact(&[Gen::Seq(1), Gen::Seq(2)]).remaining()
    };
    for crash_after in 1..total {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Node::new(tmp.path()).create_table("ks", "tbl", format);
        let mut d = Driver::default();
        let g1 = d.run(t.flush()).unwrap();
        let g2 = d.run(t.flush()).unwrap();
        t.set_torn_log_appends(torn);
        let mut c = t.compact(&[g1.clone(), g2.clone()]);
        let g3 = c.generation().cloned().unwrap();
        d.steps(&mut c, crash_after);
        drop(c); // the node dies here
        let data_exists = |g: &Gen| t.path().join(t.file_name(g, "Data.db")).exists();
        let survivors: Vec<Gen> = if format.has_txn_logs() {
            let committed = t.expectation().state("", &t.base_name(&g3)) == Expected::Complete
                || t.expectation().state("", &t.base_name(&g1)) == Expected::Obsolete;
            if committed {
                vec![g3.clone()]
            } else {
                vec![g1.clone(), g2.clone()]
            }
        } else {
            [&g1, &g2, &g3]
                .into_iter()
                .filter(|g| data_exists(g))
                .cloned()
                .collect()
        };
        d.run(t.startup_cleanup());
        assert_eq!(
            t.live_generations(),
            survivors,
            "{format:?} crash after step {crash_after}"
        );
        let e = t.expectation();
        for g in [&g1, &g2, &g3] {
            let want = if survivors.contains(g) {
                Expected::Complete
            } else {
                Expected::Absent
            };
            assert_eq!(
                e.state("", &t.base_name(g)),
                want,
                "crash after step {crash_after}"
            );
        }
        assert!(e.dirs[""].txn_logs.is_empty());
        for entry in fs::read_dir(t.path()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("tmp") && !name.ends_with(".log"),
                "{name} left over"
            );
        }
    }
}

#[test]
fn crash_during_compaction_nb() {
    crash_during_compaction(FixtureFormat::Nb, true);
}

#[test]
fn crash_during_compaction_da() {
    crash_during_compaction(FixtureFormat::Da, false);
}

#[test]
fn crash_during_compaction_la() {
    crash_during_compaction(FixtureFormat::La, false);
}

#[test]
fn crash_during_compaction_ka() {
    crash_during_compaction(FixtureFormat::Ka, false);
}
