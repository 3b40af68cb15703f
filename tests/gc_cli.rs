//! `tablesafe gc` and `tablesafe verify` through the real binary: killed at random
//! moments and run again, and running on one node while another node's daemon backs up
//! a storm of flushes, compactions and returning content into the same repository.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::cli::{ok, text};
use support::minimal::{Repo, TABLE, content, remove_sstable, walk, write_sstable};

impl Repo {
    fn blob_count(&self) -> usize {
        walk(&self.path("repo/blobs")).len()
    }
}

/// A child process killed when the test ends, even by a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            kill(&mut self.0);
        }
    }
}

fn kill(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

#[test]
fn gc_killed_at_random_points_finishes_when_run_again_and_loses_nothing_retained() {
    let repo = Repo::new();
    let data = repo.path("data");
    // 20 SSTables stay; 300 are backed up and then dropped, so 300 Data.db blobs become
    // garbage (TOC.txt is the same everywhere and stays referenced).
    for g in 1..=320 {
        write_sstable(&data, g, &content(g, 600));
    }
    let backup = |r: &Repo| {
        ok(r.as_node("n1")
            .args(["backup", "--init", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap())
    };
    backup(&repo);
    for g in 21..=320 {
        remove_sstable(&data, g);
    }
    backup(&repo);
    assert_eq!(repo.blob_count(), 321);
    let gc = |r: &Repo| {
        let mut c = r.as_node("n1");
        c.args(["gc", "--keep-last", "1", "--grace", "0s"]);
        c
    };

    // Kill gc at random moments, in both phases (condemning, then deleting). A run that
    // finished before its kill halves the window the next kill falls in, so that a fast
    // machine, where gc soon has little left to do, still sees runs interrupted.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut killed = 0;
    let mut window_ms = 400;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(20 + seed % window_ms);
        let mut child = gc(&repo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            kill(&mut child);
            killed += 1;
        } else {
            window_ms = (window_ms / 2).max(10);
        }
        // Retained data is intact after every interruption.
        let out = repo.as_node("n1").args(["verify"]).output().unwrap();
        assert!(out.status.success(), "round {round}: {}", text(&out));
    }
    assert!(killed >= 3, "only {killed} of 12 runs were interrupted");
    // Run to the end twice: the second deletes whatever the first had to condemn.
    ok(gc(&repo).output().unwrap());
    let last = ok(gc(&repo).args(["--json"]).output().unwrap());
    let summary: serde_json::Value = serde_json::from_slice(&last.stdout).unwrap();
    assert_eq!(summary["blobs_waiting"], 0, "{summary}");
    assert_eq!(
        repo.blob_count(),
        21,
        "20 Data.db and the shared TOC.txt remain"
    );
    ok(repo
        .as_node("n1")
        .args(["verify", "--read-data"])
        .output()
        .unwrap());
    let out = repo.path("restored");
    ok(repo
        .as_node("n1")
        .args(["restore", "--at", "now", "--to"])
        .arg(&out)
        .output()
        .unwrap());
    assert_eq!(walk(&out.join("ks")), walk(&data.join("ks")));
}

#[test]
fn gc_on_one_node_while_another_node_backs_up_a_storm_never_loses_a_retained_blob() {
    let repo = Repo::new();
    let data = repo.path("data");
    fs::create_dir_all(data.join(TABLE)).unwrap();
    let log = fs::File::create(repo.path("daemon.log")).unwrap();
    let mut daemon = KillOnDrop(
        repo.as_node("storm")
            .args(["daemon", "--init", "--settle", "50ms", "--data-dir"])
            .arg(&data)
            .arg("--pin-dir")
            .arg(repo.path("pins"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while !repo.path("repo/config").exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon never created the repository"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The storm: flushes, compactions of the two oldest, and dropped SSTables coming back
    // with their old bytes (so gc condemns content that is then needed again).
    let storm_data = data.clone();
    let storm = std::thread::spawn(move || {
        let (mut live, mut dropped, mut next) = (Vec::new(), Vec::new(), 1u64);
        let started = Instant::now();
        let mut step = 0u64;
        while started.elapsed() < Duration::from_secs(12) {
            step += 1;
            match step % 5 {
                0 | 1 | 3 => {
                    write_sstable(&storm_data, next, &content(next, 2000));
                    live.push(next);
                    next += 1;
                }
                2 if live.len() >= 2 => {
                    let (a, b) = (live.remove(0), live.remove(0));
                    write_sstable(&storm_data, next, &content(next, 3000));
                    live.push(next);
                    next += 1;
                    remove_sstable(&storm_data, a);
                    remove_sstable(&storm_data, b);
                    dropped.extend([a, b]);
                }
                _ => {
                    if let Some(g) = dropped.pop() {
                        let len = if g % 5 == 3 { 3000 } else { 2000 };
                        write_sstable(&storm_data, g, &content(g, len));
                        live.push(g);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(60));
        }
    });

    // Meanwhile, another node runs gc with a short window and grace, and verify.
    let mut gc_runs = 0;
    let mut deleted = 0u64;
    while !storm.is_finished() {
        let out = repo
            .as_node("gc-node")
            .args(["gc", "--keep-within", "2s", "--grace", "3s", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            gc_runs += 1;
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            deleted += s["blobs_deleted"].as_u64().unwrap_or(0);
        } else {
            // Before the daemon's first batch there is nothing to collect yet.
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("no node has any catalog history"),
                "{}",
                text(&out)
            );
        }
        let v = repo.as_node("gc-node").args(["verify"]).output().unwrap();
        assert!(v.status.success(), "verify during the storm: {}", text(&v));
        std::thread::sleep(Duration::from_millis(300));
    }
    storm.join().unwrap();
    // Let the daemon catch up, then collect and check everything once more.
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..2 {
        ok(repo
            .as_node("gc-node")
            .args(["gc", "--keep-within", "2s", "--grace", "3s"])
            .output()
            .unwrap());
        std::thread::sleep(Duration::from_secs(3));
    }
    let final_gc = ok(repo
        .as_node("gc-node")
        .args(["gc", "--keep-within", "2s", "--grace", "3s", "--json"])
        .output()
        .unwrap());
    let s: serde_json::Value = serde_json::from_slice(&final_gc.stdout).unwrap();
    deleted += s["blobs_deleted"].as_u64().unwrap_or(0);
    ok(repo
        .as_node("gc-node")
        .args(["verify", "--read-data"])
        .output()
        .unwrap());
    let out = repo.path("restored");
    ok(repo
        .as_node("storm")
        .args(["restore", "--at", "now", "--to"])
        .arg(&out)
        .output()
        .unwrap());
    assert_eq!(walk(&out.join("ks")), walk(&data.join("ks")));
    kill(&mut daemon.0);
    assert!(gc_runs >= 5, "gc ran {gc_runs} times");
    assert!(
        deleted > 0,
        "gc never deleted anything: the test proved nothing"
    );
}

#[test]
fn a_node_never_frees_what_another_node_still_references_and_config_retention_applies() {
    let repo = Repo::new();
    let (a, b) = (repo.path("a"), repo.path("b"));
    let shared = content(7, 5000);
    write_sstable(&a, 1, &shared);
    write_sstable(&b, 1, &shared);
    write_sstable(&a, 2, &content(8, 5000));
    write_sstable(&a, 3, &content(9, 5000));
    for (node, dir) in [("a", &a), ("b", &b)] {
        ok(repo
            .as_node(node)
            .args(["backup", "--init", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap());
    }
    // Node a drops two of its SSTables; b still has the shared one. (A node left with
    // no file at all keeps its last state: tested below.)
    remove_sstable(&a, 1);
    remove_sstable(&a, 2);
    ok(repo
        .as_node("a")
        .args(["backup", "--data-dir"])
        .arg(&a)
        .output()
        .unwrap());
    // Retention from the config file: keep only the newest snapshot of each node.
    let config = repo.path("tablesafe.toml");
    fs::write(&config, "[retention]\nkeep_last = 1\n").unwrap();
    for _ in 0..2 {
        let out = ok(repo
            .as_node("a")
            .arg("--config")
            .arg(&config)
            .args(["gc", "--grace", "0s"])
            .output()
            .unwrap());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(stdout.contains("keep 1 last"), "{stdout}");
    }
    // Only a's own SSTable 2 is gone; the shared Data.db and TOC.txt stay for b.
    assert_eq!(repo.blob_count(), 3);
    let shared_id = blake3::hash(&shared).to_hex().to_string();
    assert!(
        walk(&repo.path("repo/blobs"))
            .keys()
            .any(|k| k.ends_with(&shared_id))
    );
    let out = repo.path("restored-b");
    ok(repo
        .as_node("b")
        .args(["restore", "--at", "now", "--to"])
        .arg(&out)
        .output()
        .unwrap());
    assert_eq!(walk(&out.join("ks")), walk(&b.join("ks")));
    ok(repo
        .as_node("a")
        .args(["verify", "--read-data"])
        .output()
        .unwrap());
    // A time that retention no longer covers is refused with a clear line.
    let refused = repo
        .as_node("a")
        .args(["restore", "--at", "1h ago", "--to"])
        .arg(repo.path("nowhere"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is no longer restorable"), "{stderr}");
}

/// The instant a gc summary says a node's last state with data was kept at.
fn last_state_kept(stdout: &str, node: &str) -> Option<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("node {node}: has had no file since")))?;
    let at = line.split("restore it with --at ").nth(1)?;
    Some(at.split(';').next()?.to_string())
}

#[test]
fn a_node_with_no_file_left_keeps_its_last_state_until_force_names_it() {
    let repo = Repo::new();
    let (a, b) = (repo.path("a"), repo.path("b"));
    let (one, two) = (content(11, 6000), content(12, 6000));
    write_sstable(&a, 1, &one);
    write_sstable(&a, 2, &two);
    write_sstable(&b, 1, &content(13, 6000));
    for (node, dir) in [("a", &a), ("b", &b)] {
        ok(repo
            .as_node(node)
            .args(["backup", "--init", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap());
    }
    let before: BTreeMap<String, String> = walk(&a.join("ks"));
    // Every file of node a ends (its table truncated); b goes on.
    remove_sstable(&a, 1);
    remove_sstable(&a, 2);
    ok(repo
        .as_node("a")
        .args(["backup", "--data-dir"])
        .arg(&a)
        .output()
        .unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    // Data.db 1, 2 and b's, and the TOC.txt they all share.
    assert_eq!(repo.blob_count(), 4);
    let gc = |extra: &[&str]| {
        let out = repo
            .as_node("b")
            .args(["gc", "--keep-within", "1s", "--grace", "0s"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            text(&out),
        )
    };
    // The retention would free a's whole history: the dry run says what the rule keeps.
    let (code, stdout, all) = gc(&["--dry-run"]);
    assert_eq!(code, Some(0), "{all}");
    let at = last_state_kept(&stdout, "a").unwrap_or_else(|| panic!("{all}"));
    assert!(stdout.contains("would be kept"), "{all}");
    assert_eq!(last_state_kept(&stdout, "b"), None, "b has files: {all}");
    // Run twice (grace 0: the second run deletes what the first condemned); naming
    // another node does not release a's last state.
    for extra in [&[][..], &["--force", "b"][..]] {
        let (code, stdout, all) = gc(extra);
        assert_eq!(code, Some(0), "{all}");
        assert_eq!(
            last_state_kept(&stdout, "a").as_deref(),
            Some(at.as_str()),
            "{all}"
        );
    }
    assert_eq!(repo.blob_count(), 4, "a's last state keeps its blobs");
    let restored = repo.path("restored-a");
    ok(repo
        .as_node("a")
        .args(["restore", "--at", &at, "--to"])
        .arg(&restored)
        .output()
        .unwrap());
    assert_eq!(walk(&restored.join("ks")), before);
    // A node name gc does not know is refused, and changes nothing.
    let (code, _, all) = gc(&["--force", "no-such-node"]);
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("no-such-node") && all.contains("check the name"),
        "{all}"
    );
    // Naming the node lets the retention free it (condemned, then deleted).
    for _ in 0..2 {
        let (code, stdout, all) = gc(&["--force", "a"]);
        assert_eq!(code, Some(0), "{all}");
        assert_eq!(last_state_kept(&stdout, "a"), None, "{all}");
    }
    assert_eq!(repo.blob_count(), 2, "b's Data.db and the shared TOC.txt");
    ok(repo
        .as_node("b")
        .args(["verify", "--read-data"])
        .output()
        .unwrap());
}
