//! Typed errors of the blob store.
//!
//! Every variant renders as one line that names what failed (the repository URL, the
//! blob id, the local path) and, where the user can do something about it, what to
//! check. Credentials never appear in a message: URLs are rendered from the parsed
//! [`RepoUrl`](super::RepoUrl), which keeps no user info, and object_store errors only
//! carry request URIs.
//!
//! [`classify`] turns an `object_store::Error` into the variant that says what went
//! wrong (access denied, no such bucket, endpoint unreachable) rather than a raw HTTP
//! error; callers decide themselves what a plain "not found" means in their context.

use std::path::PathBuf;

use super::hash::BlobId;

/// Errors of the blob store and repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The repository URL could not be understood.
    #[error("invalid repository URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// An option value (region, endpoint, level, ...) is not acceptable.
    #[error("invalid store option: {0}")]
    InvalidOption(String),

    /// A setting (endpoint, plain http) that cannot work as given; says what to change.
    #[error("{0}")]
    Misconfigured(String),

    /// No source of credentials for a cloud store was found (checked before any request).
    #[error("{url}: {detail}")]
    MissingCredentials { url: String, detail: String },

    /// `init` found a repository already there.
    #[error("repository already initialised at {url}")]
    AlreadyInitialised { url: String },

    /// `open` found no `config` object.
    #[error("no tablesafe repository at {url}: run `tablesafe init --repo {url}` first")]
    NotInitialised { url: String },

    /// The repository was written by a newer tablesafe.
    #[error(
        "repository format {found} is newer than this tablesafe supports ({supported}): upgrade tablesafe"
    )]
    UnsupportedFormat { found: u64, supported: u64 },

    /// The `config` object exists but is not a valid tablesafe configuration.
    #[error("repository config at {url} is not valid: {reason}")]
    BadConfig { url: String, reason: String },

    /// The credentials were refused (HTTP 401/403) or the local directory is not writable.
    #[error("access denied to {url}: check {hint}")]
    AccessDenied { url: String, hint: &'static str },

    /// The bucket (or container) in the URL does not exist.
    #[error(
        "bucket {bucket:?} does not exist (repository {url}): create it first, or check the bucket name and the endpoint/region"
    )]
    NoSuchBucket { url: String, bucket: String },

    /// The endpoint could not be reached, even after retries.
    #[error(
        "cannot reach the object store for {url}{} after retries: check the endpoint, network and proxy settings ({detail})",
        at_endpoint(endpoint)
    )]
    Unreachable {
        url: String,
        /// The custom endpoint in use, if any.
        endpoint: Option<String>,
        detail: String,
    },

    /// A blob is not in the repository.
    #[error("blob {id} not found in {url}")]
    BlobNotFound { id: BlobId, url: String },

    /// A non-blob object (catalog log, manifest) is not in the repository.
    #[error("object {path} not found in {url}")]
    ObjectNotFound { path: String, url: String },

    /// A stored blob cannot be decoded: truncated, bad framing, unknown format.
    #[error("blob {id} is damaged: {reason}")]
    CorruptBlob { id: BlobId, reason: String },

    /// A blob decoded, but its content does not hash to its id.
    #[error(
        "blob {id} is damaged: its content hashes to {actual}{}",
        not_written(dest)
    )]
    HashMismatch {
        id: BlobId,
        actual: BlobId,
        /// The restore destination that was left untouched, if any.
        dest: Option<PathBuf>,
    },

    /// The local file changed while it was being read for backup.
    #[error("{} changed while it was being backed up; nothing was stored, try again", path.display())]
    SourceChanged { path: PathBuf },

    /// Reading a local file failed.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing a local file failed.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Any other object store failure, with the URL it happened on.
    #[error("object store error on {url}: {source}")]
    Backend {
        url: String,
        #[source]
        source: object_store::Error,
    },

    /// A text is not a blob id.
    #[error("invalid blob id {0:?}: expected 64 hexadecimal digits")]
    InvalidId(String),

    /// A background task died (a bug, or the runtime shutting down).
    #[error("internal error: {0}")]
    Internal(String),
}

fn at_endpoint(endpoint: &Option<String>) -> String {
    match endpoint {
        Some(e) => format!(" at {e}"),
        None => String::new(),
    }
}

fn not_written(dest: &Option<PathBuf>) -> String {
    match dest {
        Some(d) => format!("; nothing was written to {}", d.display()),
        None => String::new(),
    }
}

impl StoreError {
    /// True for errors in what the operator gave (URL, settings, credentials), which
    /// the binary reports as bad usage or configuration (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidUrl { .. }
                | StoreError::Misconfigured(_)
                | StoreError::MissingCredentials { .. }
        )
    }

    /// True for errors where retrying later with the same inputs may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. } | StoreError::SourceChanged { .. }
        )
    }
}

/// Which backend a URL uses, to word the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    S3,
    Gcs,
    Azure,
    Local,
    Memory,
}

impl BackendKind {
    fn credentials_hint(self) -> &'static str {
        match self {
            BackendKind::S3 => {
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance role) and the bucket policy"
            }
            BackendKind::Gcs => {
                "GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_SERVICE_ACCOUNT and the bucket's IAM roles"
            }
            BackendKind::Azure => {
                "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY (or the SAS token) and the container's access policy"
            }
            BackendKind::Local => "the permissions of the repository directory",
            BackendKind::Memory => "nothing (in-memory store)",
        }
    }
}

/// What the failing call was about, for the classification of a 404.
pub(crate) struct Ctx<'a> {
    pub url: &'a str,
    pub endpoint: Option<&'a str>,
    pub bucket: &'a str,
    pub kind: BackendKind,
}

/// Turns an object_store error into a typed error. `NotFound` is only special-cased
/// when the server said the *bucket* is missing; a plain missing object stays
/// `Backend` and callers that expect it match `object_store::Error::NotFound` first.
pub(crate) fn classify(err: object_store::Error, ctx: &Ctx<'_>) -> StoreError {
    use object_store::Error as E;
    let url = ctx.url.to_string();
    match &err {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            return StoreError::AccessDenied {
                url,
                hint: ctx.kind.credentials_hint(),
            };
        }
        _ => {}
    }
    let text = error_chain_text(&err);
    if mentions_missing_bucket(&text) {
        return StoreError::NoSuchBucket {
            url,
            bucket: ctx.bucket.to_string(),
        };
    }
    if let Some(detail) = connect_failure(&err) {
        return StoreError::Unreachable {
            url,
            endpoint: ctx.endpoint.map(str::to_string),
            detail,
        };
    }
    if ctx.kind == BackendKind::Local && text.contains("Permission denied") {
        return StoreError::AccessDenied {
            url,
            hint: ctx.kind.credentials_hint(),
        };
    }
    StoreError::Backend { url, source: err }
}

fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

fn mentions_missing_bucket(text: &str) -> bool {
    // S3 and S3-compatible servers: <Code>NoSuchBucket</Code>; Azure: ContainerNotFound;
    // GCS: "The specified bucket does not exist."
    text.contains("NoSuchBucket")
        || text.contains("ContainerNotFound")
        || text.contains("bucket does not exist")
}

/// If the error chain holds a connection or timeout failure of the HTTP client, a
/// short description of it.
fn connect_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            match h.kind() {
                HttpErrorKind::Connect => return Some(format!("connection failed: {h}")),
                HttpErrorKind::Timeout => return Some(format!("timed out: {h}")),
                _ => {}
            }
        }
        cur = e.source();
    }
    None
}
