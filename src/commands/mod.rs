//! One file per subcommand. Each `run` returns an exit code or a [`Failure`], which the
//! binary prints as a single line.

mod inspect;

use std::path::PathBuf;
use std::process::ExitCode;

use tablesafe::config::{Config, LogFormat};

use crate::cli::{CatalogCommand, Command, GlobalArgs, LogFormatArg, SnapshotCommand};

/// Why a command did not succeed, and the exit code that says so.
#[derive(Debug)]
pub enum Failure {
    /// The command ran and failed (exit 1).
    Failed(anyhow::Error),
    /// Bad flags or configuration (exit 2).
    Usage(String),
    /// The command exists in the interface but is not built yet (exit 3).
    NotBuilt { command: &'static str, issue: u32 },
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            // `{:#}` joins the error chain on one line: "what failed: why".
            Failure::Failed(e) => format!("{e:#}"),
            Failure::Usage(m) => m.clone(),
            Failure::NotBuilt { command, issue } => format!(
                "`tablesafe {command}` is not built yet (planned in issue #{issue}); nothing was done"
            ),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::NotBuilt { .. } => 3,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

/// Global settings after merging flags, environment and the config file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub repo: Option<String>,
    pub catalog: Option<PathBuf>,
    pub node: String,
    pub data_dirs: Vec<PathBuf>,
    pub log_format: LogFormatArg,
}

/// Where Cassandra keeps its data unless cassandra.yaml says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cassandra/data";

impl Settings {
    /// Flags (and their environment variables) win over the config file.
    pub fn resolve(global: &GlobalArgs) -> Result<Settings, Failure> {
        let config = match &global.config {
            Some(path) => Config::load(path).map_err(|e| Failure::Usage(e.to_string()))?,
            None => Config::default(),
        };
        let node = match global.node.clone().or(config.node) {
            Some(n) => n,
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        if node.is_empty() || node.contains('/') {
            return Err(Failure::Usage(format!(
                "node name {node:?} is not usable: give --node a non-empty name without '/'"
            )));
        }
        let log_format = global
            .log_format
            .unwrap_or(match config.log_format.unwrap_or_default() {
                LogFormat::Text => LogFormatArg::Text,
                LogFormat::Json => LogFormatArg::Json,
            });
        Ok(Settings {
            repo: global.repo.clone().or(config.repo),
            catalog: global.catalog.clone().or(config.catalog),
            node,
            data_dirs: config
                .data_dirs
                .unwrap_or_else(|| vec![PathBuf::from(DEFAULT_DATA_DIR)]),
            log_format,
        })
    }
}

pub fn run(command: Command, settings: &Settings) -> Result<ExitCode, Failure> {
    let not_built = |command, issue| Err(Failure::NotBuilt { command, issue });
    match command {
        Command::Inspect(args) => inspect::run(&args, settings),
        Command::Init => not_built("init", 3),
        Command::Backup => not_built("backup", 4),
        Command::Snapshot(SnapshotCommand::Create) => not_built("snapshot create", 4),
        Command::Snapshot(SnapshotCommand::List) => not_built("snapshot list", 4),
        Command::Snapshot(SnapshotCommand::Show) => not_built("snapshot show", 4),
        Command::Catalog(CatalogCommand::Rebuild) => not_built("catalog rebuild", 4),
        Command::Restore => not_built("restore", 5),
        Command::Daemon => not_built("daemon", 6),
        Command::Status => not_built("status", 6),
        Command::Gc => not_built("gc", 7),
        Command::Verify => not_built("verify", 7),
    }
}
