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
#[derive(Debug, Args, Clone)]
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
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (env AWS_ENDPOINT_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (env AWS_REGION).
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Allow a plain-http S3 endpoint.
    #[arg(long, global = true)]
    pub s3_allow_http: bool,
    /// Path-style S3 requests (endpoint/bucket/key), for MinIO, Ceph, Garage.
    #[arg(long, global = true)]
    pub s3_path_style: bool,
    /// S3 server-side encryption: aes256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long, global = true, value_name = "MODE")]
    pub s3_sse: Option<String>,
    /// Give up on a failing storage request after this long (default 3m); the daemon
    /// retries the whole pass later anyway.
    #[arg(long, global = true, value_name = "DURATION")]
    pub retry_timeout: Option<String>,
    /// KMS key id or ARN for --s3-sse aws:kms.
    #[arg(long, global = true, value_name = "KEY")]
    pub s3_sse_kms_key_id: Option<String>,
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
    Init(InitArgs),
    /// Back up the data directories once: upload what is new, record everything.
    Backup(BackupArgs),
    /// Watch the data directories and back up continuously.
    Daemon(DaemonArgs),
    /// Named points in time.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Rebuild the files a node had at a point in time.
    Restore(RestoreArgs),
    /// Apply retention and delete blobs nothing retained refers to.
    Gc(GcArgs),
    /// Check that every retained point can be restored.
    Verify(VerifyArgs),
    /// Show the daemon's backlog and last errors.
    Status(StatusArgs),
    /// Maintain the local catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
}

#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// Also zstd-compress the Data.db of tables Cassandra compresses, which are otherwise
    /// stored as Cassandra wrote them: a smaller repository (zstd -1 saves about 15% on
    /// LZ4 tables) for several times the CPU to back up and to restore them.
    #[arg(long)]
    pub recompress: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GcArgs {
    /// Keep every instant of this window before now restorable (e.g. 36h, 7d).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep the newest N snapshots of each node.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Always keep this snapshot (repeatable).
    #[arg(long = "keep-snapshot", value_name = "NAME")]
    pub keep_snapshot: Vec<String>,
    /// How long an unreferenced blob stays condemned before it is deleted; must exceed
    /// the longest a node's backup records can wait to reach the repository.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub grace: String,
    /// Show what would be dropped and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run even with no history in the repository, or a retention that keeps no past point.
    /// `--force NODE` (repeatable) also lets the retention free the last state in which
    /// that node had data (a node decommissioned for good); no other node's.
    #[arg(long, value_name = "NODE", num_args = 0..)]
    pub force: Option<Vec<String>>,
    /// Concurrent delete requests.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub parallel: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// Also download every blob a retained point needs and check its content.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Download and check a random subset of the blobs, e.g. 5%.
    #[arg(long, value_name = "PERCENT")]
    pub read_data_subset: Option<String>,
    /// Concurrent downloads.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub parallel: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Instead, compare the local catalogs (this node's, and gc's and verify's
    /// all-nodes view) with catalogs rebuilt from the repository's logs; one line per
    /// difference.
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset"])]
    pub check_catalog: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Back up and record a named point.
    Create(SnapshotCreateArgs),
    /// List points in time.
    List(SnapshotListArgs),
    /// Show the files of one point.
    Show(SnapshotShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Recreate the local catalog from the repository alone.
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args, Clone)]
pub struct BackupArgs {
    /// Cassandra data directory (repeatable; default from the config file, else
    /// /var/lib/cassandra/data).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dirs: Vec<PathBuf>,
    /// Back up only these keyspaces or keyspace.table globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out these keyspaces or keyspace.table globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Delete backups/ hard links once their content is durable (Cassandra never does).
    #[arg(long)]
    pub prune_incremental: bool,
    /// Store files under 1 MiB together in packs of about 2 MiB (one object, one request
    /// for many small SSTable components) instead of one object each. Experimental.
    #[arg(long)]
    pub pack_small_files: bool,
    /// Create the repository first if there is none at --repo.
    #[arg(long)]
    pub init: bool,
    /// Files hashed and blobs uploaded at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub backup: BackupArgs,
    /// Full rescan interval (catches anything inotify missed).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub rescan_every: String,
    /// Record a named point this often (e.g. 1h, 1d).
    #[arg(long, value_name = "DURATION")]
    pub snapshot_every: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9431.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where files are hard-linked while uploading (same filesystem as the data;
    /// default: tablesafe-pins next to the first data directory).
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// How long to let a running pass finish on SIGTERM/SIGINT.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub shutdown_timeout: String,
    /// Wait this long after an event for more before a pass.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub settle: String,
    /// Print a systemd unit for the daemon and exit.
    #[arg(long)]
    pub print_systemd_unit: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotCreateArgs {
    /// Name of the point (unique per node).
    pub name: String,
    #[command(flatten)]
    pub backup: BackupArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotListArgs {
    /// Only points at or after this time (RFC 3339, 2026-11-22 08:30, 2h ago, ...).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only points at or before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Points of every node in the catalog, not just --node.
    #[arg(long)]
    pub all_nodes: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotShowArgs {
    /// Snapshot name or id.
    pub snapshot: String,
    /// List every file, not just the totals per table.
    #[arg(long)]
    pub files: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The point: a time (RFC 3339, 2026-11-22 08:30, 2h ago) or a snapshot name or id.
    #[arg(long, value_name = "WHEN")]
    pub at: String,
    /// Target directory.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Only keyspaces matching these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub keyspace: Vec<String>,
    /// Only tables matching these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub table: Vec<String>,
    /// data: <ks>/<table>-<id>/ as on the node; sstableloader: <ks>/<table>/.
    #[arg(long, value_enum, default_value = "data")]
    pub layout: LayoutArg,
    /// Also restore Cassandra's system keyspaces.
    #[arg(long)]
    pub include_system: bool,
    /// Also restore snapshots/<tag>/ and backups/ directories (data layout).
    #[arg(long)]
    pub include_snapshots: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub parallel: usize,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted restore: keep files already in place with the right content.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Give the target exactly the point: replace files that differ from it, and move
    /// what the restored table directories hold besides the point into a quarantine
    /// directory beside the target (nothing is deleted).
    #[arg(long)]
    pub overwrite: bool,
    /// Leave files the point does not have in the restored table directories (Cassandra
    /// will load them).
    #[arg(long)]
    pub keep_extra: bool,
    /// Make the quarantine in DIR instead of beside the target: on the target's
    /// filesystem, outside every data directory.
    #[arg(long, value_name = "DIR")]
    pub quarantine: Option<PathBuf>,
    /// Restore into the data directory of a running Cassandra anyway.
    #[arg(long)]
    pub force: bool,
    /// Print the plan (with --dry-run) or the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    Data,
    Sstableloader,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Rebuild every node found in the repository, not just --node.
    #[arg(long)]
    pub all_nodes: bool,
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
