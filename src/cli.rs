//! Command-line interface: the clap definitions of every flag and subcommand.
//!
//! Only parsing lives here; each subcommand's work is in `commands/<name>.rs`, which
//! calls into the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Content-addressed, deduplicating, continuous backup for Apache Cassandra.
#[derive(Debug, Parser)]
#[command(name = "tablesafe", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML); flags and environment variables override it.
    #[arg(long, global = true, value_name = "FILE", env = "TABLESAFE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Repository URL: file:///path, s3://bucket/prefix, gs://…, az://…, memory://
    #[arg(long, global = true, value_name = "URL", env = "TABLESAFE_REPO")]
    pub repo: Option<String>,
    /// Local SQLite catalog (default: under the user's data directory).
    #[arg(long, global = true, value_name = "PATH", env = "TABLESAFE_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Node name recorded with backups (default: this host's name).
    #[arg(long, global = true, value_name = "NAME", env = "TABLESAFE_NODE")]
    pub node: Option<String>,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on standard error.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what tablesafe sees in Cassandra data directories: SSTables, completeness, digests.
    Inspect(InspectArgs),
    /// Create a new repository.
    Init,
    /// Back up the data directories once: upload what is new, record everything.
    Backup,
    /// Watch the data directories and back up continuously.
    Daemon,
    /// Named points in time.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Rebuild the files a node had at a point in time.
    Restore,
    /// Apply retention and delete blobs nothing retained refers to.
    Gc,
    /// Check that every retained point can be restored.
    Verify,
    /// Show the daemon's backlog and last errors.
    Status,
    /// Maintain the local catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Back up and record a named point.
    Create,
    /// List points in time.
    List,
    /// Show the files of one point.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Recreate the local catalog from the repository alone.
    Rebuild,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Data directories (or any directory below one) to inspect.
    #[arg(value_name = "DATA_DIR")]
    pub dirs: Vec<PathBuf>,
    /// Machine-readable JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Skip reading Data.db to check it against its Digest file.
    #[arg(long)]
    pub no_digest: bool,
}
