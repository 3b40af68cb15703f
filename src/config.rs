//! The configuration file (`--config FILE`, TOML) and how it layers under flags.
//!
//! Precedence, highest first: command-line flag, environment variable, config file,
//! built-in default. Every key is optional; an unknown key is an error so that a typo
//! never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (check the path given to --config)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message} (see README.md, section Configuration)")]
    Parse { path: PathBuf, message: String },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The contents of a tablesafe configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repository URL (`file:///…`, `s3://bucket/prefix`, …).
    pub repo: Option<String>,
    /// Path of the local SQLite catalog.
    pub catalog: Option<PathBuf>,
    /// Node name recorded with every backup (defaults to the host name).
    pub node: Option<String>,
    /// Cassandra data directories (`data_file_directories` in cassandra.yaml).
    pub data_dirs: Option<Vec<PathBuf>>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Keyspace / `keyspace.table` globs to back up (default: all).
    pub include: Option<Vec<String>>,
    /// Keyspace / `keyspace.table` globs to leave out (`system_traces` always, unless included).
    pub exclude: Option<Vec<String>>,
    /// Settings for `s3://` repositories; AWS_* environment variables fill the rest.
    pub s3: Option<S3Config>,
    /// `[retention]`: what `tablesafe gc` keeps when no --keep-* flag is given.
    pub retention: Option<crate::gc::RetentionPolicy>,
}

/// `[s3]` section. Credentials belong in the environment (AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or an instance role, not in this file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow a plain-http endpoint.
    pub allow_http: Option<bool>,
    /// Path-style requests (`endpoint/bucket/key`), which MinIO, Ceph and Garage need.
    pub path_style: Option<bool>,
    /// Server-side encryption: `aes256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse: Option<String>,
    /// KMS key id or ARN for `sse = "aws:kms"`.
    pub sse_kms_key_id: Option<String>,
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses configuration text; the error is a one-line description.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c = Config::parse(
            r#"
repo = "file:///tmp/r"
catalog = "/tmp/c.db"
node = "n1"
data_dirs = ["/a", "/b"]
log_format = "json"
include = ["app_*"]
exclude = ["app_tmp"]

[s3]
endpoint = "http://127.0.0.1:9000"
region = "eu-west-1"
allow_http = true
path_style = true
sse = "aws:kms"
sse_kms_key_id = "alias/backup"
"#,
        )
        .unwrap();
        assert_eq!(c.repo.as_deref(), Some("file:///tmp/r"));
        assert_eq!(c.data_dirs.unwrap().len(), 2);
        assert_eq!(c.log_format, Some(LogFormat::Json));
        let s3 = c.s3.unwrap();
        assert_eq!(s3.path_style, Some(true));
        assert_eq!(s3.sse_kms_key_id.as_deref(), Some("alias/backup"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::parse("rep = \"x\"").unwrap_err();
        assert!(err.contains("rep"), "{err}");
    }
}
