//! A repository: its `config` object, `init` and `open`, and object helpers.
//!
//! `config` is a small JSON document written once by `init`:
//!
//! ```json
//! {"format":1,"id":"7f0c…","created":"2026-01-02T03:04:05Z","hash":"blake3",
//!  "compression":{"algorithm":"zstd","level":1,"frame_size":4194304,"recompress":false}}
//! ```
//!
//! `init` HEADs `config` first and then writes it with a conditional create
//! (`PutMode::Create`, i.e. `If-None-Match: *` on S3). Some S3-compatible stores
//! ignore that header, so correctness does not rest on it: after writing, `init` reads
//! `config` back and only succeeds if the repository id there is its own; of two
//! racing `init`s on such a store exactly one (the last writer) succeeds.
//!
//! `open` reads `config`, first looking only at `format` so that a repository written
//! by a newer tablesafe is refused with a message saying so, whatever else changed.
//!
//! Since issue 20 `config` also holds `"checksum": "blake3:<hex>"`, the BLAKE3 of the
//! document without it (compact JSON, fields in declaration order): a config whose
//! checksum does not match is refused at open with one error naming it. The format
//! stays 1 (an older tablesafe ignores the field); a config without one (made before)
//! is accepted as it is.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::blob::{BlobIndex, MAX_FRAME_SIZE, MIN_FRAME_SIZE};
use super::error::{Ctx, StoreError, classify};
use super::hash::BlobId;
use super::options::{Content, StoreOptions};
use super::retry::retry;
use super::url::{MultipartTarget, RepoUrl, build_store, endpoint_of};
use super::{read, write};

/// The repository format this tablesafe writes and the newest it reads.
pub const REPO_FORMAT_VERSION: u64 = 1;

/// Key of the configuration object.
pub const CONFIG_KEY: &str = "config";

/// Compression settings recorded in the repository config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionConfig {
    /// Always `"zstd"` in format 1.
    pub algorithm: String,
    /// zstd level used for new blobs.
    pub level: i32,
    /// Raw bytes per frame for new blobs.
    pub frame_size: u32,
    /// zstd-compress content its writer already compressed (Cassandra's compressed
    /// `Data.db`) too. Absent in repositories made before it existed: false.
    #[serde(default)]
    pub recompress: bool,
}

/// The contents of `<repo>/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Repository format version.
    pub format: u64,
    /// Random repository id (UUID v4), fixed at `init`.
    pub id: String,
    /// When the repository was created (RFC 3339, UTC).
    pub created: String,
    /// Blob id hash function: `"blake3"`.
    pub hash: String,
    pub compression: CompressionConfig,
    /// `blake3:<hex>` of the document without this field; absent in repositories made
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl RepoConfig {
    fn new(opts: &StoreOptions) -> RepoConfig {
        let mut config = RepoConfig {
            format: REPO_FORMAT_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hash: "blake3".into(),
            compression: CompressionConfig {
                algorithm: "zstd".into(),
                level: opts.compression.level,
                frame_size: opts.compression.frame_size,
                recompress: opts.compression.recompress,
            },
            checksum: None,
        };
        config.checksum = Some(config.expected_checksum());
        config
    }

    /// What `checksum` must say for this document: BLAKE3 of its compact JSON without it.
    fn expected_checksum(&self) -> String {
        let unsummed = RepoConfig {
            checksum: None,
            ..self.clone()
        };
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_vec(&unsummed).unwrap_or_default();
        format!("blake3:{}", blake3::hash(&json).to_hex())
    }

    fn validate(&self) -> Result<(), String> {
        if self.hash != "blake3" {
            return Err(format!("unknown hash {:?}", self.hash));
        }
        check_compression(&self.compression)
    }

    /// Parses a config document, refusing newer formats before anything else.
    pub fn parse(bytes: &[u8], url: &str) -> Result<RepoConfig, StoreError> {
        let bad = |reason: String| StoreError::BadConfig {
            url: url.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let format = value
            .get("format")
            .and_then(|f| f.as_u64())
            .ok_or_else(|| bad("no numeric \"format\" field".into()))?;
        if format > REPO_FORMAT_VERSION {
            return Err(StoreError::UnsupportedFormat {
                found: format,
                supported: REPO_FORMAT_VERSION,
            });
        }
        if format == 0 {
            return Err(bad("format 0 does not exist".into()));
        }
        let config: RepoConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if let Some(found) = &config.checksum
            && *found != config.expected_checksum()
        {
            return Err(bad(
                "checksum mismatch: the object was changed after `init` wrote it (damaged, or edited by hand); nothing was read or written; put back a good copy of `config` (from a copy of the repository)".into(),
            ));
        }
        config.validate().map_err(bad)?;
        Ok(config)
    }
}

fn check_compression(c: &CompressionConfig) -> Result<(), String> {
    if c.algorithm != "zstd" {
        return Err(format!("unknown compression {:?}", c.algorithm));
    }
    if !(1..=19).contains(&c.level) {
        return Err(format!("zstd level {} outside 1..=19", c.level));
    }
    if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&c.frame_size) {
        return Err(format!(
            "frame size {} outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}",
            c.frame_size
        ));
    }
    Ok(())
}

/// The object key of a blob: `blobs/<first two hex digits>/<64 hex digits>`.
pub fn blob_key(id: &BlobId) -> ObjectPath {
    let hex = id.to_hex();
    ObjectPath::from(format!("blobs/{}/{}", &hex[..2], hex))
}

/// A blob object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobObject {
    pub id: BlobId,
    pub stored_size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// The blobs in one shard directory of a `file://` repository, sorted.
fn list_local_shard(dir: &Path) -> Result<Vec<BlobObject>, StoreError> {
    let read_err = |path: &Path, source| StoreError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(dir, e)),
    };
    let mut blobs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<BlobId>().ok())
        else {
            continue; // a store's temporary file
        };
        let path = entry.path();
        // Like object_store, follow a symlink; an entry deleted meanwhile is skipped.
        let meta = match entry.file_type() {
            Ok(t) if t.is_symlink() => std::fs::metadata(&path),
            _ => entry.metadata(),
        };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&path, e)),
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().map_err(|e| read_err(&path, e))?;
        blobs.push(BlobObject {
            id,
            stored_size: meta.len(),
            modified: modified.into(),
        });
    }
    blobs.sort_unstable_by_key(|b| b.id);
    Ok(blobs)
}

/// What `put_file` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The blob id (BLAKE3 of the file).
    pub id: BlobId,
    /// Raw size of the file.
    pub size: u64,
    /// Size of the stored object (compressed, with framing).
    pub stored_size: u64,
    /// False when the blob was already in the repository and nothing was uploaded.
    pub uploaded: bool,
}

/// An open repository.
pub struct Repository {
    url: RepoUrl,
    url_text: String,
    endpoint: Option<String>,
    store: Arc<dyn ObjectStore>,
    multipart: Option<MultipartTarget>,
    config: RepoConfig,
    opts: StoreOptions,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.url_text)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Creates a new repository at `url` and returns it open. Fails with
    /// [`StoreError::AlreadyInitialised`] if one is there already. For `file://`, the
    /// directory is created if needed.
    pub async fn init(url: &str, opts: &StoreOptions) -> Result<Repository, StoreError> {
        let url = RepoUrl::parse(url)?;
        let url_text = url.to_string();
        let config = RepoConfig::new(opts);
        check_compression(&config.compression).map_err(StoreError::InvalidOption)?;
        if let Some(dir) = url.local_path() {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || std::fs::create_dir_all(&d))
                .await
                .map_err(join_err)?
                .map_err(|source| local_dir_error(&url_text, dir, source))?;
        }
        let built = build_store(&url, opts)?;
        let repo = Repository {
            endpoint: endpoint_of(&url, opts),
            url,
            url_text,
            store: built.store,
            multipart: built.multipart,
            config,
            opts: opts.clone(),
        };
        let key = ObjectPath::from(CONFIG_KEY);
        if repo.head_size(&key).await?.is_some() {
            return Err(repo.already());
        }
        let body = serde_json::to_vec_pretty(&repo.config)
            .map_err(|e| StoreError::Internal(format!("config serialisation: {e}")))?;
        if !repo.create_object(&key, Bytes::from(body)).await? {
            return Err(repo.already());
        }
        // Read back: on a store that ignored the condition, a concurrent init may have
        // overwritten ours, and then it is that one's repository, not ours.
        let stored = repo.get_object(CONFIG_KEY).await?;
        match RepoConfig::parse(&stored, &repo.url_text) {
            Ok(c) if c.id == repo.config.id => Ok(repo),
            _ => Err(repo.already()),
        }
    }

    /// Opens an existing repository, refusing a URL with no `config` and a repository
    /// of a newer format.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Repository, StoreError> {
        let url = RepoUrl::parse(url)?;
        let url_text = url.to_string();
        if let Some(dir) = url.local_path()
            && !dir.is_dir()
        {
            return Err(StoreError::NotInitialised { url: url_text });
        }
        let built = build_store(&url, opts)?;
        let store = built.store;
        let config_key = ObjectPath::from(CONFIG_KEY);
        let bytes = retry(&opts.retry, "read config", |_| async {
            store.get(&config_key).await?.bytes().await
        })
        .await;
        let endpoint = endpoint_of(&url, opts);
        let ctx = Ctx {
            url: &url_text,
            endpoint: endpoint.as_deref(),
            bucket: url.bucket(),
            kind: url.backend_kind(),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e @ object_store::Error::NotFound { .. }) => {
                return Err(match classify(e, &ctx) {
                    StoreError::Backend { .. } => StoreError::NotInitialised { url: url_text },
                    other => other,
                });
            }
            Err(e) => return Err(classify(e, &ctx)),
        };
        let config = RepoConfig::parse(&bytes, &url_text)?;
        Ok(Repository {
            url,
            url_text,
            endpoint,
            store,
            multipart: built.multipart,
            config,
            opts: opts.clone(),
        })
    }

    /// The repository URL.
    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    /// The repository's configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The object store, rooted at the repository (keys like `config`, `blobs/..`).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Where numbered multipart parts go (none for `file://`).
    pub(crate) fn multipart_target(&self) -> Option<&MultipartTarget> {
        self.multipart.as_ref()
    }

    /// Runs one storage request under the `--retry-timeout` budget ([`retry`]).
    pub(crate) async fn retried<T, F, Fut>(&self, what: &str, op: F) -> object_store::Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        retry(&self.opts.retry, what, op).await
    }

    /// Stores a file as a blob (unless it is there already) and returns its id. The
    /// blob is complete and durable in the store when this returns.
    pub async fn put_file(&self, path: &Path) -> Result<PutOutcome, StoreError> {
        write::put_file(self, path, Content::Plain).await
    }

    /// [`put_file`](Self::put_file) for a file holding `content`: one already
    /// compressed is stored as it is, unless the repository says `recompress`.
    pub async fn put_file_as(
        &self,
        path: &Path,
        content: Content,
    ) -> Result<PutOutcome, StoreError> {
        write::put_file(self, path, content).await
    }

    /// Restores a blob to `dest`: downloads, decompresses and hashes it into
    /// `<dest>.partial`, fsyncs, checks the hash, then renames to `dest`. On any
    /// error `dest` is untouched and the `.partial` file removed. Returns the size.
    pub async fn get_to_file(&self, id: &BlobId, dest: &Path) -> Result<u64, StoreError> {
        read::get_to_file(self, id, dest, true, None).await
    }

    /// [`Repository::get_to_file`] without the fsync of `dest`'s directory: the file's
    /// bytes are durable before it is renamed into place (so a crash never leaves an
    /// unverified final file), but the rename itself is durable only once the caller
    /// fsyncs the directory, which it must do before reporting the file restored. A
    /// restore of many files does that once per directory at the end. `mtime`, when
    /// given, is set on the file before its fsync, so it is as durable as the bytes.
    pub async fn get_to_file_deferring_dir_sync(
        &self,
        id: &BlobId,
        dest: &Path,
        mtime: Option<std::time::SystemTime>,
    ) -> Result<u64, StoreError> {
        read::get_to_file(self, id, dest, false, mtime).await
    }

    /// Downloads and decodes a blob, checking its hash, without writing it anywhere.
    /// Returns its size.
    pub async fn verify_blob(&self, id: &BlobId) -> Result<u64, StoreError> {
        read::verify(self, id).await
    }

    /// Streams a blob's raw bytes into `writer` (decoded in parallel, bounded memory)
    /// and returns the writer, the hash of what was written and its size. The caller
    /// must compare the hash with `id` before trusting the bytes.
    pub async fn read_blob_into<W: std::io::Write + Send + 'static>(
        &self,
        id: &BlobId,
        writer: W,
    ) -> Result<(W, BlobId, u64), StoreError> {
        read::read_blob_into(self, id, writer, None).await
    }

    /// A blob's frame index, read with ranged reads (no frame is downloaded): where
    /// each frame is, for ranged or parallel downloads.
    pub async fn blob_index(&self, id: &BlobId) -> Result<BlobIndex, StoreError> {
        read::blob_index(self, id).await
    }

    /// Frame `n` of a blob, fetched with one ranged read and decoded. The caller checks
    /// the content (only the whole blob's hash is known).
    pub async fn read_frame(
        &self,
        id: &BlobId,
        index: &BlobIndex,
        n: usize,
    ) -> Result<Vec<u8>, StoreError> {
        read::read_frame(self, id, index, n).await
    }

    /// Whether a blob is in the repository.
    pub async fn exists(&self, id: &BlobId) -> Result<bool, StoreError> {
        Ok(self.head_size(&blob_key(id)).await?.is_some())
    }

    /// Stored size of a blob, if it is there.
    pub async fn blob_stored_size(&self, id: &BlobId) -> Result<Option<u64>, StoreError> {
        self.head_size(&blob_key(id)).await
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    pub async fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        self.delete_key(&blob_key(id)).await
    }

    /// Writes (or overwrites) a small object, e.g. `nodes/<node>/log/<seq>`.
    pub async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let key = object_path(key)?;
        let payload = PutPayload::from(bytes);
        self.retried("put", |_| self.store.put(&key, payload.clone()))
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e))
    }

    /// Writes an object only if none exists at `key`: true if it was created. Checks
    /// with HEAD first and then uses a conditional create, so it also refuses to
    /// overwrite on stores that ignore the condition (except in a race).
    pub async fn put_object_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, StoreError> {
        let path = object_path(key)?;
        if self.head_size(&path).await?.is_some() {
            return Ok(false);
        }
        self.create_object(&path, bytes).await
    }

    /// A conditional create of `path` (`If-None-Match: *` on S3): true if it was
    /// created, false if an object was already there. An object found there after an
    /// attempt that failed on the way may be that attempt's own write: it counts as
    /// created when it holds exactly `bytes`.
    pub(crate) async fn create_object(
        &self,
        path: &ObjectPath,
        bytes: Bytes,
    ) -> Result<bool, StoreError> {
        let payload = PutPayload::from(bytes.clone());
        let created = self
            .retried("create", |attempt| {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                let put = self.store.put_opts(path, payload.clone(), opts);
                async move {
                    match put.await {
                        Ok(_) => Ok(Some(true)),
                        Err(object_store::Error::AlreadyExists { .. })
                        | Err(object_store::Error::Precondition { .. }) => {
                            Ok(if attempt == 0 { Some(false) } else { None })
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await
            .map_err(|e| self.classify(e))?;
        match created {
            Some(created) => Ok(created),
            None => {
                let there = self
                    .retried("read back", |_| async {
                        self.store.get(path).await?.bytes().await
                    })
                    .await
                    .map_err(|e| self.classify(e))?;
                Ok(there == bytes)
            }
        }
    }

    /// The id in the repository's `config` object as it is now (`None` when there is
    /// no `config`: the repository was deleted). One small GET. A process compares it
    /// with [`RepoConfig::id`] of what it opened before it writes, so it never writes
    /// into a repository that disappeared or was replaced under it.
    pub async fn current_id(&self) -> Result<Option<String>, StoreError> {
        match self.get_object(CONFIG_KEY).await {
            Ok(bytes) => Ok(Some(RepoConfig::parse(&bytes, &self.url_text)?.id)),
            Err(StoreError::ObjectNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a whole (small) object.
    pub async fn get_object(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = object_path(key)?;
        let result = self
            .retried("get", |_| async {
                self.store.get(&path).await?.bytes().await
            })
            .await;
        result.map_err(|e| match e {
            object_store::Error::NotFound { .. } => match self.classify(e) {
                StoreError::Backend { .. } => StoreError::ObjectNotFound {
                    path: key.to_string(),
                    url: self.url_text.clone(),
                },
                other => other,
            },
            e => self.classify(e),
        })
    }

    /// Size of an object, or `None` if there is none at `key`.
    pub async fn object_size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.head_size(&object_path(key)?).await
    }

    /// Aborts the multipart uploads an earlier process noted in the journal and never
    /// completed or aborted (`store::uploads`): it was killed. Call it before this
    /// process starts an upload of its own, under the catalog's writer lock. Returns
    /// how many were aborted; failures are logged, never fatal (a bucket lifecycle
    /// rule is the backstop), and a note is kept only while the store cannot be reached.
    pub async fn abort_leftover_uploads(&self) -> u64 {
        let Some(target) = &self.multipart else {
            return 0;
        };
        let Some(journal) = &target.journal else {
            return 0;
        };
        let noted = match journal.noted() {
            Ok(noted) => noted,
            Err(e) => {
                tracing::warn!("cannot read the journal of multipart uploads in progress: {e}");
                return 0;
            }
        };
        let mut aborted = 0;
        for upload in noted {
            let answer = self
                .retried("abort a multipart upload left by a killed process", |_| {
                    target.parts.abort_multipart(&upload.path, &upload.id)
                })
                .await;
            match answer {
                Ok(()) => aborted += 1,
                // Completed or aborted already (the process died before removing the note).
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) if super::retry::is_transient(&e) => {
                    tracing::warn!(path = %upload.path, "cannot abort a multipart upload left by a killed process, will try at the next start: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %upload.path, "cannot abort a multipart upload left by a killed process (a bucket lifecycle rule AbortIncompleteMultipartUpload removes it): {e}")
                }
            }
            super::uploads::UploadJournal::forget(&upload.note);
        }
        if aborted > 0 {
            tracing::info!(
                aborted,
                "aborted multipart uploads left incomplete by a killed process"
            );
        }
        aborted
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.delete_key(&object_path(key)?).await
    }

    /// Keys and sizes of every object under `prefix` (e.g. `nodes/n1/log/`), sorted.
    /// Meant for small prefixes (catalog rebuild), never for `blobs/`.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = object_path(prefix.trim_end_matches('/'))?;
        let mut out: Vec<(String, u64)> = self
            .retried("list", |_| {
                self.store
                    .list(Some(&prefix))
                    .map_ok(|m| (m.location.to_string(), m.size))
                    .try_collect()
            })
            .await
            .map_err(|e| self.classify(e))?;
        out.sort();
        Ok(out)
    }

    /// The "directories" directly below `prefix` (e.g. the node names under `nodes/`):
    /// one delimiter LIST, however many objects lie below them.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = object_path(prefix.trim_end_matches('/'))?;
        let listing = self
            .retried("list", |_| self.store.list_with_delimiter(Some(&prefix)))
            .await
            .map_err(|e| self.classify(e))?;
        let mut dirs: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Like [`Repository::list_objects`], but only keys that sort after `offset` (a full
    /// key): S3 and GCS skip the rest server-side, so following a log costs one short
    /// LIST however long the log has grown.
    pub async fn list_objects_after(
        &self,
        prefix: &str,
        offset: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = object_path(prefix.trim_end_matches('/'))?;
        let offset = object_path(offset)?;
        let mut out: Vec<(String, u64)> = self
            .retried("list", |_| {
                self.store
                    .list_with_offset(Some(&prefix), &offset)
                    .map_ok(|m| (m.location.to_string(), m.size))
                    .try_collect()
            })
            .await
            .map_err(|e| self.classify(e))?;
        out.sort();
        Ok(out)
    }

    /// Every blob object in the repository with its stored size and last-modified time,
    /// one shard (`blobs/<aa>/`) at a time, in hash order: the 256 shards are listed
    /// `concurrency` at a time (S3 pages a listing 1,000 keys per request, one request
    /// after the other, so a single listing of millions of blobs is bound by round
    /// trips) and each is sorted before it is yielded, so a caller can insert in key
    /// order. Memory is one shard per listing in flight. Only gc and verify LIST blobs;
    /// objects whose names are not blob ids (a store's temporary files) are left out.
    pub fn list_blobs(
        &self,
        concurrency: usize,
    ) -> impl futures::Stream<Item = Result<Vec<BlobObject>, StoreError>> + Send + '_ {
        use futures::StreamExt;
        futures::stream::iter(0..=u8::MAX)
            .map(move |shard| self.list_blob_shard(shard))
            .buffered(concurrency.max(1))
    }

    async fn list_blob_shard(&self, shard: u8) -> Result<Vec<BlobObject>, StoreError> {
        let prefix = ObjectPath::from(format!("blobs/{shard:02x}"));
        if let Some(root) = self.url.local_path() {
            // object_store's local listing stats every entry four times and converts
            // every path; a listing is one readdir and one stat per blob.
            let dir = root.join(prefix.as_ref());
            return tokio::task::spawn_blocking(move || list_local_shard(&dir))
                .await
                .map_err(|e| StoreError::Internal(format!("listing task failed: {e}")))?;
        }
        let mut blobs: Vec<BlobObject> = self
            .retried("list blobs", |_| {
                self.store
                    .list(Some(&prefix))
                    .try_filter_map(|meta| async move {
                        let id = meta
                            .location
                            .filename()
                            .and_then(|name| name.parse::<BlobId>().ok());
                        Ok(id.map(|id| BlobObject {
                            id,
                            stored_size: meta.size,
                            modified: meta.last_modified,
                        }))
                    })
                    .try_collect()
            })
            .await
            .map_err(|e| self.classify(e))?;
        blobs.sort_unstable_by_key(|b| b.id);
        Ok(blobs)
    }

    /// How many blobs gc deletes between two reads of the nodes' logs: about one round
    /// of concurrent requests, so what gc knows when it deletes is never older than
    /// that. S3 deletes 1,000 keys per request, 20 requests at a time (object_store's
    /// bulk delete); the local and memory stores delete one object per call.
    pub fn delete_chunk(&self) -> usize {
        match self.url.backend_kind() {
            super::error::BackendKind::Local | super::error::BackendKind::Memory => 5_000,
            _ => 20_000,
        }
    }

    /// Deletes blobs, `concurrency` requests at a time (S3 deletes up to 1,000 keys per
    /// request). A blob that is already gone counts as deleted. Returns the ids deleted;
    /// the first failure ends the call (what was deleted before stays deleted, and a
    /// rerun of gc records it).
    pub async fn delete_blobs(
        &self,
        ids: &[BlobId],
        concurrency: usize,
    ) -> Result<Vec<BlobId>, StoreError> {
        use futures::StreamExt;
        let keys: Vec<ObjectPath> = ids.iter().map(blob_key).collect();
        let one_by_one = matches!(
            self.url.backend_kind(),
            super::error::BackendKind::Local | super::error::BackendKind::Memory
        );
        // Deleting again is harmless (a missing blob counts as deleted): a batch with a
        // transient failure is sent again whole.
        let results: Vec<object_store::Result<ObjectPath>> = self
            .retried("delete blobs", |_| {
                let keys = keys.clone();
                async move {
                    let results: Vec<object_store::Result<ObjectPath>> = if one_by_one {
                        // These stores delete one object per call; run them concurrently.
                        futures::stream::iter(keys)
                            .map(|k| async move { self.store.delete(&k).await.map(|_| k) })
                            .buffer_unordered(concurrency.max(1))
                            .collect()
                            .await
                    } else {
                        let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
                        self.store.delete_stream(stream).collect().await
                    };
                    match results
                        .iter()
                        .position(|r| r.as_ref().is_err_and(super::retry::is_transient))
                    {
                        Some(i) => Err(results.into_iter().nth(i).and_then(Result::err).unwrap_or(
                            object_store::Error::Generic {
                                store: "delete",
                                source: "a transient failure vanished".into(),
                            },
                        )),
                        None => Ok(results),
                    }
                }
            })
            .await
            .map_err(|e| self.classify(e))?;
        let mut deleted = Vec::with_capacity(ids.len());
        for r in results {
            match r {
                Ok(path) => {
                    if let Some(id) = path.filename().and_then(|n| n.parse::<BlobId>().ok()) {
                        deleted.push(id);
                    }
                }
                Err(object_store::Error::NotFound { path, .. }) => {
                    if let Some(id) = path
                        .rsplit('/')
                        .next()
                        .and_then(|n| n.parse::<BlobId>().ok())
                    {
                        deleted.push(id);
                    }
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
        Ok(deleted)
    }

    /// Uploads a file to its blob key even if an object is there already. A backup
    /// that needs a condemned blob again does this: the fresh last-modified time tells
    /// gc the blob is wanted, whatever the catalogs say at that moment.
    pub async fn put_file_again(
        &self,
        path: &Path,
        content: Content,
    ) -> Result<PutOutcome, StoreError> {
        write::put_file_again(self, path, content).await
    }

    pub(crate) async fn head_size(&self, key: &ObjectPath) -> Result<Option<u64>, StoreError> {
        match self.retried("head", |_| self.store.head(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e @ object_store::Error::NotFound { .. }) => match self.classify(e) {
                StoreError::Backend { .. } => Ok(None),
                other => Err(other),
            },
            Err(e) => Err(self.classify(e)),
        }
    }

    pub(crate) async fn delete_key(&self, key: &ObjectPath) -> Result<(), StoreError> {
        match self.retried("delete", |_| self.store.delete(key)).await {
            Ok(()) => Ok(()),
            Err(e @ object_store::Error::NotFound { .. }) => match self.classify(e) {
                StoreError::Backend { .. } => Ok(()),
                other => Err(other),
            },
            Err(e) => Err(self.classify(e)),
        }
    }

    pub(crate) fn classify(&self, e: object_store::Error) -> StoreError {
        classify(
            e,
            &Ctx {
                url: &self.url_text,
                endpoint: self.endpoint.as_deref(),
                bucket: self.url.bucket(),
                kind: self.url.backend_kind(),
            },
        )
    }

    pub(crate) fn url_text(&self) -> &str {
        &self.url_text
    }

    fn already(&self) -> StoreError {
        StoreError::AlreadyInitialised {
            url: self.url_text.clone(),
        }
    }
}

fn object_path(key: &str) -> Result<ObjectPath, StoreError> {
    ObjectPath::parse(key)
        .map_err(|e| StoreError::InvalidOption(format!("object key {key:?}: {e}")))
}

fn local_dir_error(url: &str, dir: std::path::PathBuf, source: std::io::Error) -> StoreError {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        StoreError::AccessDenied {
            url: url.to_string(),
            hint: "the permissions of the repository directory",
        }
    } else {
        StoreError::WriteFile { path: dir, source }
    }
}

pub(crate) fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Internal(format!("background task failed: {e}"))
}
