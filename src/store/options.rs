//! Options for opening a repository: backend settings, retries, upload tuning.
//!
//! Everything has a default that works against AWS S3, GCS and Azure with credentials
//! from the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`, read by
//! object_store's `from_env()` builders). A field set here wins over the environment.
//!
//! Secrets are held in [`Secret`], whose `Debug` prints `"***"`, so no `{:?}` of an
//! options struct can leak a key into a log.

use std::fmt;
use std::time::Duration;

/// A credential value that is never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for handing to a client builder. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// S3 server-side encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`): keys managed by S3.
    S3,
    /// SSE-KMS with the given KMS key id or ARN.
    Kms { key_id: String },
}

/// Settings for `s3://` repositories. `None` means "environment or default".
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL for S3-compatible stores, e.g. `http://127.0.0.1:9000`
    /// (env `AWS_ENDPOINT`/`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (env `AWS_REGION`/`AWS_DEFAULT_REGION`; default `us-east-1`).
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (env `AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
    /// `Some(false)` for path-style requests (`endpoint/bucket/key`), which most
    /// S3-compatible servers need; `Some(true)` for `bucket.endpoint/key`.
    /// object_store's default is path style.
    pub virtual_hosted_style: Option<bool>,
    /// Access key id (env `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (env `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// Session token for temporary credentials (env `AWS_SESSION_TOKEN`).
    pub session_token: Option<Secret>,
    /// Server-side encryption of every object written.
    pub sse: Option<Sse>,
}

/// Retry and timeout settings of storage requests (S3, GCS, Azure).
///
/// Every request is retried on a transient failure (connection refused or reset,
/// timeout, 5xx, 429) with exponential backoff and jitter until it succeeds or
/// `retry_timeout` has passed since its first attempt, however many attempts that takes
/// (`store::retry`); 4xx answers are not retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOptions {
    /// Retries object_store's HTTP client makes inside one attempt of tablesafe's (the
    /// `retry_timeout` budget, not this count, decides when a request fails).
    pub max_retries: usize,
    /// No retry is started after this long since the first attempt.
    pub retry_timeout: Duration,
    /// First backoff delay.
    pub init_backoff: Duration,
    /// Longest backoff delay.
    pub max_backoff: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (one part upload of up to `part_size` bytes must fit).
    pub request_timeout: Duration,
    /// A download that gets no answer, or no byte of its body, for this long is taken
    /// as a dead connection (a peer or middlebox that drops packets without a reset)
    /// and tried again within the budget, rather than waiting out `request_timeout`.
    pub download_stall: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            download_stall: Duration::from_secs(60),
        }
    }
}

impl RetryOptions {
    /// Few, quick retries: for tests and for failing fast interactively.
    pub fn quick() -> RetryOptions {
        RetryOptions {
            max_retries: 2,
            retry_timeout: Duration::from_secs(3),
            init_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            download_stall: Duration::from_secs(10),
        }
    }
}

/// How `put_file` gets a file into the repository (see `write.rs` for the figures
/// behind the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutStrategy {
    /// Hash the file first; if the blob is new, compress and upload it straight to its
    /// final key, re-hashing on the way to catch a file that changed in between.
    /// Reads the file twice, uploads nothing for a blob already there.
    #[default]
    HashFirst,
    /// Hash while compressing and uploading to `staging/<random>`, then copy to the
    /// final key and delete the staging object. Reads the file once, but uploads even
    /// blobs that already exist and costs a server-side copy.
    Staging,
}

/// Compression parameters, recorded in the repository config at `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionOptions {
    /// zstd level (1..=19; 1 is the default: see `blob.rs`).
    pub level: i32,
    /// Uncompressed bytes per independent frame (64 KiB ..= 64 MiB; default 4 MiB).
    pub frame_size: u32,
    /// Compress [`Content::Compressed`] files with zstd too, instead of storing them as
    /// they are (see `blob.rs`).
    pub recompress: bool,
}

/// What a file holds, as far as compressing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Content {
    /// Anything: compressed with zstd where that pays.
    #[default]
    Plain,
    /// Already compressed by the program that wrote it: the `Data.db` of a table
    /// Cassandra compresses (it has a `CompressionInfo.db`). Stored as it is, unless the
    /// repository was created with `recompress`.
    Compressed,
}

impl Default for CompressionOptions {
    fn default() -> Self {
        CompressionOptions {
            level: super::blob::DEFAULT_LEVEL,
            frame_size: super::blob::DEFAULT_FRAME_SIZE,
            recompress: false,
        }
    }
}

/// Everything that tunes how a repository is reached and written.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `s3://` settings.
    pub s3: S3Options,
    /// Retry and timeouts of the HTTP client.
    pub retry: RetryOptions,
    /// Compression written into the config by `init` (`open` uses the repository's).
    pub compression: CompressionOptions,
    /// Multipart parts uploading at once per blob.
    pub upload_concurrency: usize,
    /// Multipart part size in bytes (at least 5 MiB; raised automatically for files so
    /// large that they would need more than 9,000 parts).
    pub part_size: usize,
    /// Blob write strategy.
    pub strategy: PutStrategy,
    /// fsync objects written to `file://` repositories (on by default: a blob must be
    /// durable before the catalog records it).
    pub local_fsync: bool,
    /// Where multipart uploads in progress are noted (`store::uploads`), so that the
    /// next writer aborts what a killed one left; `None`: not noted.
    pub upload_journal: Option<std::path::PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            s3: S3Options::default(),
            retry: RetryOptions::default(),
            compression: CompressionOptions::default(),
            upload_concurrency: 4,
            part_size: 8 * 1024 * 1024,
            strategy: PutStrategy::default(),
            local_fsync: true,
            upload_journal: None,
        }
    }
}
