//! Repository URLs and the object store behind each.
//!
//! | URL | store |
//! |---|---|
//! | `file:///abs/path` (or a plain `/abs/path`) | local directory, fsync'd writes |
//! | `s3://bucket/prefix` | AWS S3 or any S3-compatible server ([`S3Options`](super::S3Options) + `AWS_*`) |
//! | `gs://bucket/prefix` | Google Cloud Storage (`GOOGLE_*` environment) |
//! | `az://container/prefix` | Azure Blob Storage (`AZURE_*` environment, account name required) |
//! | `memory://name` | in-process memory, shared by every open of the same name (tests) |
//!
//! The store returned is rooted at the repository: the prefix is applied with
//! object_store's `PrefixStore`, so the rest of tablesafe addresses `config`,
//! `blobs/..`, `nodes/..` and never sees the prefix. URLs with user info
//! (`s3://key:secret@bucket`), a query or a fragment are refused, so a URL printed in a
//! message can never carry a credential.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

use super::credentials;
use super::error::{BackendKind, StoreError};
use super::options::{Sse, StoreOptions};
use super::uploads::UploadJournal;

/// Which kind of store a repository lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    File,
    S3,
    Gcs,
    Azure,
    Memory,
}

/// A parsed repository URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUrl {
    scheme: Scheme,
    /// Bucket, container, or memory store name; empty for `file://`.
    bucket: String,
    /// Prefix inside the bucket, without leading or trailing `/`; the directory for
    /// `file://`.
    prefix: String,
}

impl RepoUrl {
    /// Parses a repository URL (see the module documentation for the forms).
    pub fn parse(text: &str) -> Result<RepoUrl, StoreError> {
        let bad = |reason: &str| StoreError::InvalidUrl {
            url: redact(text),
            reason: reason.to_string(),
        };
        let text = text.trim();
        if text.starts_with('/') {
            return Self::file(PathBuf::from(text)).map_err(|r| bad(&r));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad(
                "expected file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or memory://name",
            ));
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(bad("query strings and fragments are not supported"));
        }
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(bad("file URLs need an absolute path: file:///path/to/repo"));
                }
                return Self::file(PathBuf::from(path)).map_err(|r| bad(&r));
            }
            "s3" | "s3a" => Scheme::S3,
            "gs" | "gcs" => Scheme::Gcs,
            "az" | "azure" | "abfs" => Scheme::Azure,
            "memory" => Scheme::Memory,
            other => return Err(bad(&format!("unknown scheme {other:?}"))),
        };
        // No bucket, container or store name holds '@' or ':', and a secret may hold '/'
        // (AWS secret keys often do), so an '@' anywhere is taken as user info.
        if rest.contains('@') {
            return Err(bad(
                "credentials in the URL are not supported (an '@' in a repository URL is taken as user info): use the environment (AWS_ACCESS_KEY_ID, ...) or options",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains(':') {
            return Err(bad(
                "credentials or a port in the bucket name are not supported: use the environment (AWS_ACCESS_KEY_ID, ...) or options, and --s3-endpoint for a server",
            ));
        }
        if bucket.is_empty() && scheme != Scheme::Memory {
            return Err(bad("the bucket (or container) name is missing"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(bad("the prefix may not contain . or .. segments"));
        }
        if prefix.contains("//") {
            return Err(bad("the prefix may not contain empty segments (//)"));
        }
        Ok(RepoUrl {
            scheme,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn file(path: PathBuf) -> Result<RepoUrl, String> {
        let s = path.to_string_lossy();
        let trimmed = if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            &s
        };
        if trimmed.split('/').any(|seg| seg == "..") {
            return Err("the path may not contain .. segments".into());
        }
        Ok(RepoUrl {
            scheme: Scheme::File,
            bucket: String::new(),
            prefix: trimmed.to_string(),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Bucket or container name (empty for `file://`).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The repository's prefix inside its bucket (the directory for `file://`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The local directory of a `file://` repository.
    pub fn local_path(&self) -> Option<PathBuf> {
        (self.scheme == Scheme::File).then(|| PathBuf::from(&self.prefix))
    }

    pub(crate) fn backend_kind(&self) -> BackendKind {
        match self.scheme {
            Scheme::File => BackendKind::Local,
            Scheme::S3 => BackendKind::S3,
            Scheme::Gcs => BackendKind::Gcs,
            Scheme::Azure => BackendKind::Azure,
            Scheme::Memory => BackendKind::Memory,
        }
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::File => return write!(f, "file://{}", self.prefix),
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
            Scheme::Memory => "memory",
        };
        if self.prefix.is_empty() {
            write!(f, "{scheme}://{}", self.bucket)
        } else {
            write!(f, "{scheme}://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUrl({self})")
    }
}

/// A URL as typed, for error messages: with anything between `://` and the last `@`
/// hidden (a secret may itself hold `/`, `@`, `?` or `#`), and with what follows `://`
/// hidden altogether when it holds a `:` before its first `/` (`s3://key:secret` with
/// the `@` forgotten).
fn redact(text: &str) -> String {
    let Some(s) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[s + 3..];
    if let Some(at) = rest.rfind('@') {
        return format!("{}://***{}", &text[..s], &rest[at..]);
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains(':') {
        return format!("{}://***", &text[..s]);
    }
    text.to_string()
}

/// The endpoint a cloud repository is reached at, for messages (user info removed):
/// the one configured, or the cloud's default.
pub(crate) fn endpoint_of(url: &RepoUrl, opts: &StoreOptions) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let e = match url.scheme {
        Scheme::File | Scheme::Memory => return None,
        Scheme::S3 => opts
            .s3
            .endpoint
            .clone()
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| var("AWS_ENDPOINT"))
            .unwrap_or_else(|| {
                let region = opts
                    .s3
                    .region
                    .clone()
                    .or_else(|| var("AWS_REGION"))
                    .or_else(|| var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                format!("https://s3.{region}.amazonaws.com")
            }),
        Scheme::Gcs => {
            var("GOOGLE_BASE_URL").unwrap_or_else(|| "https://storage.googleapis.com".into())
        }
        Scheme::Azure => var("AZURE_STORAGE_ENDPOINT")
            .or_else(|| var("AZURE_ENDPOINT"))
            .or_else(|| {
                var("AZURE_STORAGE_ACCOUNT_NAME")
                    .map(|a| format!("https://{a}.blob.core.windows.net"))
            })?,
    };
    Some(match ::url::Url::parse(&e) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => redact(&e),
    })
}

fn retry_config(opts: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: opts.retry.init_backoff,
            max_backoff: opts.retry.max_backoff,
            base: 2.0,
        },
        max_retries: opts.retry.max_retries,
        retry_timeout: opts.retry.retry_timeout,
    }
}

/// Client settings (timeouts) as config keys, so that the rest of the client
/// configuration read from the environment (proxy, HTTP/2, ...) is kept.
fn client_settings(opts: &StoreOptions) -> [(ClientConfigKey, String); 2] {
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    [
        (
            ClientConfigKey::ConnectTimeout,
            ms(opts.retry.connect_timeout),
        ),
        (ClientConfigKey::Timeout, ms(opts.retry.request_timeout)),
    ]
}

fn memory_store(name: &str) -> InMemory {
    static STORES: OnceLock<Mutex<HashMap<String, InMemory>>> = OnceLock::new();
    let map = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = match map.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(name.to_string()).or_default().clone()
}

/// The bucket-level store of a repository with numbered multipart parts, so that a
/// failed part can be sent again (`parts.rs`); keys are the repository's prefixed.
#[derive(Clone)]
pub(crate) struct MultipartTarget {
    /// The bucket's store (not rooted at the prefix).
    pub parts: Arc<dyn MultipartStore>,
    /// The same store, to HEAD a completed object.
    pub objects: Arc<dyn ObjectStore>,
    prefix: String,
    /// Where uploads in progress are noted (`store::uploads`).
    pub journal: Option<UploadJournal>,
}

impl MultipartTarget {
    fn new<S: ObjectStore + MultipartStore>(
        store: Arc<S>,
        prefix: &str,
        opts: &StoreOptions,
    ) -> MultipartTarget {
        MultipartTarget {
            parts: store.clone(),
            objects: store,
            prefix: prefix.to_string(),
            journal: opts.upload_journal.clone().map(UploadJournal::new),
        }
    }

    /// The bucket-level path of a repository key.
    pub fn path(&self, key: &ObjectPath) -> ObjectPath {
        if self.prefix.is_empty() {
            key.clone()
        } else {
            ObjectPath::from_iter(
                ObjectPath::from(self.prefix.as_str())
                    .parts()
                    .chain(key.parts()),
            )
        }
    }
}

/// A repository's object store, rooted at its prefix, and its multipart target (none
/// for `file://`, whose uploads are a local temporary file).
pub(crate) struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub multipart: Option<MultipartTarget>,
}

/// Builds the object store for a repository, rooted at its prefix. For `file://`, the
/// directory must exist.
pub(crate) fn build_store(url: &RepoUrl, opts: &StoreOptions) -> Result<Built, StoreError> {
    let backend = |e: object_store::Error| StoreError::InvalidOption(format!("{url}: {e}"));
    let (root, multipart): (Arc<dyn ObjectStore>, MultipartTarget) = match url.scheme {
        Scheme::File => {
            let store = LocalFileSystem::new_with_prefix(&url.prefix)
                .map_err(backend)?
                .with_fsync(opts.local_fsync);
            return Ok(Built {
                store: Arc::new(store),
                multipart: None,
            });
        }
        Scheme::Memory => {
            let store = Arc::new(memory_store(&url.bucket));
            (
                store.clone(),
                MultipartTarget::new(store, &url.prefix, opts),
            )
        }
        Scheme::S3 => {
            let s3 = &opts.s3;
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .with_retry(retry_config(opts));
            for (k, v) in client_settings(opts) {
                b = b.with_config(AmazonS3ConfigKey::Client(k), v);
            }
            if let Some(v) = &s3.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &s3.region {
                b = b.with_region(v);
            }
            if let Some(v) = s3.allow_http {
                b = b.with_allow_http(v);
            }
            if let Some(v) = s3.virtual_hosted_style {
                b = b.with_virtual_hosted_style_request(v);
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v.expose());
            }
            if let Some(v) = &s3.session_token {
                b = b.with_token(v.expose());
            }
            match &s3.sse {
                None => {}
                Some(Sse::S3) => {
                    // The key type is not exported; its config name is stable.
                    let key: AmazonS3ConfigKey =
                        "aws_server_side_encryption".parse().map_err(backend)?;
                    b = b.with_config(key, "AES256");
                }
                Some(Sse::Kms { key_id }) => b = b.with_sse_kms_encryption(key_id),
            }
            credentials::check_s3(&b, &url.to_string())?;
            let store = Arc::new(b.build().map_err(backend)?);
            (
                store.clone(),
                MultipartTarget::new(store, &url.prefix, opts),
            )
        }
        Scheme::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .with_retry(retry_config(opts));
            for (k, v) in client_settings(opts) {
                b = b.with_config(GoogleConfigKey::Client(k), v);
            }
            credentials::check_gcs(&b, &url.to_string())?;
            let store = Arc::new(b.build().map_err(backend)?);
            (
                store.clone(),
                MultipartTarget::new(store, &url.prefix, opts),
            )
        }
        Scheme::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(&url.bucket)
                .with_retry(retry_config(opts));
            for (k, v) in client_settings(opts) {
                b = b.with_config(AzureConfigKey::Client(k), v);
            }
            credentials::check_azure(&b, &url.to_string())?;
            let store = Arc::new(b.build().map_err(backend)?);
            (
                store.clone(),
                MultipartTarget::new(store, &url.prefix, opts),
            )
        }
    };
    let store: Arc<dyn ObjectStore> = if url.prefix.is_empty() {
        root
    } else {
        Arc::new(PrefixStore::new(root, url.prefix.as_str()))
    };
    Ok(Built {
        store,
        multipart: Some(multipart),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let u = RepoUrl::parse("s3://bkt/a/b/").unwrap();
        assert_eq!(
            (u.scheme(), u.bucket(), u.prefix()),
            (Scheme::S3, "bkt", "a/b")
        );
        assert_eq!(u.to_string(), "s3://bkt/a/b");
        let u = RepoUrl::parse("gs://bkt").unwrap();
        assert_eq!((u.scheme(), u.prefix()), (Scheme::Gcs, ""));
        assert_eq!(RepoUrl::parse("az://c/p").unwrap().scheme(), Scheme::Azure);
        let u = RepoUrl::parse("file:///tmp/repo/").unwrap();
        assert_eq!(u.local_path().unwrap(), PathBuf::from("/tmp/repo"));
        assert_eq!(u.to_string(), "file:///tmp/repo");
        assert_eq!(RepoUrl::parse("/tmp/r").unwrap().scheme(), Scheme::File);
        assert_eq!(
            RepoUrl::parse("memory://").unwrap().scheme(),
            Scheme::Memory
        );
        assert_eq!(RepoUrl::parse("memory://t1").unwrap().bucket(), "t1");
    }

    #[test]
    fn refuses_bad_urls_without_echoing_secrets() {
        for bad in [
            "bucket/prefix",
            "ftp://x/y",
            "s3:///prefix",
            "file://relative/path",
            "s3://b/p?x=1",
            "s3://b/../x",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad}");
        }
        for (url, secret) in [
            ("s3://AKIA:topsecret@bkt/p", "topsecret"),
            ("s3://AKIA:top/secret@bkt/p", "secret"),
            ("gs://user:pa/ss@bkt", "ss@"),
            ("az://acct:k/e/y@container/p", "e/y"),
            ("memory://u:p/w@name", "p/w"),
            ("s3://AKIA:s3cr@t/x@bkt/p", "s3cr"),
            ("s3://AKIA:sec?ret@bkt", "sec?ret"),
            ("file://u:se/cret@host/x", "se/cret"),
        ] {
            let err = RepoUrl::parse(url).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
            assert!(err.contains("***"), "{err}");
        }
        let err = RepoUrl::parse("s3://AKIA:topsecret@bkt/p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("credentials in the URL"), "{err}");
        let err = RepoUrl::parse("s3://AKIA:top/secret/bkt").unwrap_err();
        assert!(!err.to_string().contains("top"), "{err}");
    }

    #[test]
    fn builds_cloud_stores_without_network() {
        let mut opts = StoreOptions::default();
        opts.s3.access_key_id = Some("key".into());
        opts.s3.secret_access_key = Some("secret".into());
        let url = RepoUrl::parse("s3://bkt/p").unwrap();
        assert!(build_store(&url, &opts).is_ok());
        // Without credentials (and off Google's cloud) a GCS store is refused up front.
        let url = RepoUrl::parse("gs://bkt/p").unwrap();
        match build_store(&url, &opts) {
            Ok(_) | Err(StoreError::MissingCredentials { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}
