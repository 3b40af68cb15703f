//! One file per subcommand. Each `run` returns an exit code or a [`Failure`], which the
//! binary prints as a single line.

mod backup;
mod catalog;
mod daemon;
mod gc;
mod init;
mod inspect;
mod progress;
mod repo;
mod restore;
mod snapshot;
mod status;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use tablesafe::config::{Config, LogFormat};
use tablesafe::store::{S3Options, Sse, StoreOptions};

use crate::cli::{CatalogCommand, Command, GlobalArgs, LogFormatArg, SnapshotCommand};

/// Why a command did not succeed, and the exit code that says so.
#[derive(Debug)]
pub enum Failure {
    /// The command ran and failed (exit 1).
    Failed(anyhow::Error),
    /// Bad flags or configuration (exit 2).
    Usage(String),
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            Failure::Failed(e) => one_line(e),
            Failure::Usage(m) => m.clone(),
        }
    }

    /// Whether the failure was a write to a pipe whose reader has gone away.
    pub fn is_broken_pipe(&self) -> bool {
        let Failure::Failed(e) = self else {
            return false;
        };
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        })
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
        }
    }
}

/// The error chain on one line, "what failed: why: why that": a cause whose text the
/// line already holds is left out (library errors name their source in their own
/// message, and object_store's errors repeat theirs), and line breaks (a server's
/// error body) become spaces.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

impl From<anyhow::Error> for Failure {
    /// A store error in what the operator gave (URL, endpoint, credentials) is bad
    /// configuration (exit 2); anything else a failure (exit 1).
    fn from(e: anyhow::Error) -> Self {
        let usage = e.chain().any(|c| {
            c.downcast_ref::<tablesafe::store::StoreError>()
                .is_some_and(|s| s.is_usage())
        });
        if usage {
            Failure::Usage(one_line(&e))
        } else {
            Failure::Failed(e)
        }
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
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub store: StoreOptions,
    /// `[retention]` from the config file (gc's flags win).
    pub retention: Option<tablesafe::gc::RetentionPolicy>,
    /// The flags these settings came from, to re-read the config file on SIGHUP.
    pub global: GlobalArgs,
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
        if node.is_empty() || node.contains('/') || node.starts_with('@') {
            return Err(Failure::Usage(format!(
                "node name {node:?} is not usable: give --node a non-empty name without '/' that does not start with '@'"
            )));
        }
        let log_format = global
            .log_format
            .unwrap_or(match config.log_format.unwrap_or_default() {
                LogFormat::Text => LogFormatArg::Text,
                LogFormat::Json => LogFormatArg::Json,
            });
        let s3 = config.s3.unwrap_or_default();
        let sse = match global.s3_sse.clone().or(s3.sse) {
            None => None,
            Some(mode) => Some(match mode.to_ascii_lowercase().as_str() {
                "aes256" | "sse-s3" => Sse::S3,
                "aws:kms" | "sse-kms" => Sse::Kms {
                    key_id: global
                        .s3_sse_kms_key_id
                        .clone()
                        .or(s3.sse_kms_key_id)
                        .ok_or_else(|| {
                            Failure::Usage(
                                "SSE-KMS needs a key: give --s3-sse-kms-key-id or sse_kms_key_id in [s3]".into(),
                            )
                        })?,
                },
                other => {
                    return Err(Failure::Usage(format!(
                        "unknown S3 server-side encryption {other:?}: use aes256 or aws:kms"
                    )));
                }
            }),
        };
        let mut retry = tablesafe::store::RetryOptions::default();
        if let Some(text) = &global.retry_timeout {
            let micros = tablesafe::timespec::parse_duration(text)
                .filter(|d| *d > 0)
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "--retry-timeout {text:?} is not a duration: use e.g. 10s, 3m"
                    ))
                })?;
            retry.retry_timeout = std::time::Duration::from_micros(micros as u64);
            retry.max_backoff = retry.max_backoff.min(retry.retry_timeout);
        }
        let store = StoreOptions {
            retry,
            s3: S3Options {
                endpoint: global.s3_endpoint.clone().or(s3.endpoint),
                region: global.s3_region.clone().or(s3.region),
                allow_http: global.s3_allow_http.then_some(true).or(s3.allow_http),
                virtual_hosted_style: global
                    .s3_path_style
                    .then_some(true)
                    .or(s3.path_style)
                    .map(|path_style| !path_style),
                sse,
                ..S3Options::default()
            },
            ..StoreOptions::default()
        };
        Ok(Settings {
            global: global.clone(),
            include: config.include.unwrap_or_default(),
            exclude: config.exclude.unwrap_or_default(),
            store,
            retention: config.retention,
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
    match command {
        Command::Inspect(args) => inspect::run(&args, settings),
        Command::Init(args) => init::run(settings, &args),
        Command::Backup(args) => backup::run(&args, None, settings),
        Command::Snapshot(SnapshotCommand::Create(args)) => {
            backup::run(&args.backup, Some(args.name), settings)
        }
        Command::Snapshot(SnapshotCommand::List(args)) => snapshot::list(&args, settings),
        Command::Snapshot(SnapshotCommand::Show(args)) => snapshot::show(&args, settings),
        Command::Catalog(CatalogCommand::Rebuild(args)) => catalog::rebuild(&args, settings),
        Command::Restore(args) => restore::run(&args, settings),
        Command::Daemon(args) => daemon::run(&args, settings),
        Command::Status(args) => status::run(&args, settings),
        Command::Gc(args) => gc::run(&args, settings),
        Command::Verify(args) => verify::run(&args, settings),
    }
}

/// Bytes in binary units, e.g. `642.1 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A multi-threaded tokio runtime for commands that talk to the repository.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(anyhow::anyhow!("cannot start the async runtime: {e}")))
}
