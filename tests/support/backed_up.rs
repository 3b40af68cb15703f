//! A node with one table holding one flushed SSTable (written by `lifecycle` as Cassandra
//! does), backed up once into a `file://` repository: where the tests that damage a
//! repository or a catalog start, to see what the binary makes of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::lifecycle::{FixtureFormat, Node, TableDir};

/// The node's name.
pub const NODE: &str = "n1";

pub struct BackedUpNode {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub data: PathBuf,
    pub catalog: PathBuf,
    /// `shop.orders`, to flush more SSTables into.
    pub table: TableDir,
    _node: Node,
}

impl BackedUpNode {
    /// The node, its table with one flushed SSTable, and a first backup (`--init`).
    pub fn new() -> BackedUpNode {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        let mut node = Node::new(&data);
        let mut table = node.create_table("shop", "orders", FixtureFormat::Nb);
        table.flush().run().unwrap();
        let env = BackedUpNode {
            repo: root.join("repo"),
            catalog: root.join("catalog/n1.db"),
            data,
            root,
            table,
            _node: node,
            _tmp: tmp,
        };
        super::cli::ok(env.backup(&["--init"]));
        env
    }

    pub fn repo_url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    /// The binary against the repository as the node, with `catalog`.
    pub fn command_with(&self, catalog: &Path) -> Command {
        let mut c = super::cli::tablesafe(&self.root.join("home"));
        c.arg("--repo")
            .arg(self.repo_url())
            .arg("--catalog")
            .arg(catalog)
            .args(["--node", NODE]);
        c
    }

    /// The binary with the node's own catalog.
    pub fn command(&self) -> Command {
        self.command_with(&self.catalog)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `backup --data-dir <data> <extra>`.
    pub fn backup(&self, extra: &[&str]) -> Output {
        self.command()
            .arg("backup")
            .arg("--data-dir")
            .arg(&self.data)
            .args(extra)
            .output()
            .unwrap()
    }
}
