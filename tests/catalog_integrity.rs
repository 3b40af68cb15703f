//! Local catalogs are checked, not trusted: damaged rows are caught before restore or
//! gc act on them, `verify --catalog` compares them with the repository, a busy catalog
//! is waited on, and a blob verify finds missing or damaged is uploaded again by the
//! next backup. Through the real binary on `file://` repositories.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::lifecycle::{FixtureFormat, Node};

const NODE: &str = "n1";

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    data: PathBuf,
    catalog: PathBuf,
    node: Node,
}

impl Env {
    /// A node with one table holding one flushed SSTable, backed up once.
    fn backed_up() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        let mut node = Node::new(&data);
        node.create_table("shop", "orders", FixtureFormat::Nb)
            .flush()
            .run()
            .unwrap();
        let env = Env {
            repo: root.join("repo"),
            catalog: root.join("catalog/n1.db"),
            data,
            node,
            _tmp: tmp,
            root,
        };
        support::cli::ok(env.backup(&["--init"]));
        env
    }

    fn repo_url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    fn command(&self) -> Command {
        let mut c = support::cli::tablesafe(&self.root.join("home"));
        c.arg("--repo")
            .arg(self.repo_url())
            .arg("--catalog")
            .arg(&self.catalog)
            .args(["--node", NODE]);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn backup(&self, extra: &[&str]) -> Output {
        let mut c = self.command();
        c.arg("backup")
            .arg("--data-dir")
            .arg(&self.data)
            .args(extra);
        c.output().unwrap()
    }

    /// The all-nodes view gc and verify keep beside the node's catalog.
    fn all_nodes_catalog(&self) -> PathBuf {
        self.root.join("catalog/n1.all-nodes.db")
    }
}

/// Files below `dir`, relative to it, with their contents.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn forty_commands_starting_at_once_never_report_a_damaged_catalog() {
    let env = Env::backed_up();
    for round in 0..2 {
        // Round 1: a catalog that does not exist yet, which the readers create together.
        let catalog = env.root.join(format!("catalog/round{round}.db"));
        if round == 0 {
            fs::copy(&env.catalog, &catalog).unwrap();
        }
        let children: Vec<_> = (0..40)
            .map(|i| {
                let mut c = support::cli::tablesafe(&env.root.join("home"));
                c.arg("--repo")
                    .arg(env.repo_url())
                    .arg("--catalog")
                    .arg(&catalog);
                c.args(["--node", NODE]);
                if round == 0 && i % 4 == 0 {
                    c.arg("backup").arg("--data-dir").arg(&env.data);
                } else {
                    c.args(["snapshot", "list"]);
                }
                c.stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let text = support::cli::text(&out);
            assert!(
                !text.contains("damaged") && !text.contains("aside"),
                "round {round}: {text}"
            );
            assert!(
                out.status.success() || text.contains("in use by another tablesafe process"),
                "round {round}: only a second writer may be refused: {text}"
            );
        }
        assert!(catalog.exists());
    }
}

#[test]
fn a_command_started_while_another_holds_the_catalog_locked_waits_instead_of_calling_it_damaged() {
    let env = Env::backed_up();
    // Another process holding SQLite's lock longer than a default busy timeout (5 s).
    let holder = rusqlite::Connection::open(&env.catalog).unwrap();
    holder
        .execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; DELETE FROM daemon_status;",
        )
        .unwrap();
    let reader = env
        .command()
        .args(["snapshot", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(7));
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let out = reader.wait_with_output().unwrap();
    let text = support::cli::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("damaged"), "{text}");
}
