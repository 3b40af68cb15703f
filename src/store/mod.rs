//! The content-addressed blob store: one repository = one bucket prefix or directory.
//!
//! ```text
//! <repo>/config                 repository format, id, compression (repo.rs)
//! <repo>/blobs/<aa>/<hash>      one file's bytes, framed zstd (blob.rs), named by BLAKE3 (hash.rs),
//!                               or a pack of small files (pack.rs)
//! <repo>/staging/<uuid>         only while a blob is written with PutStrategy::Staging
//! <repo>/nodes/…                catalog logs and manifests (later modules, via put_object/get_object)
//! ```
//!
//! Files in this module, one concept each:
//! - [`url`]: repository URLs and building the object store (S3, GCS, Azure, file, memory).
//! - [`options`]: [`StoreOptions`]: backend settings, retries, upload tuning; redacted secrets.
//! - [`repo`]: [`Repository`]: `config`, `init`/`open`, object helpers.
//! - [`hash`]: [`BlobId`] and file hashing.
//! - [`blob`]: the blob object format (frames, index, footer) and frame (de)compression.
//! - [`write`]: `put_file`: hash, dedup, parallel compression, multipart upload.
//! - [`read`]: `get_to_file`: download, parallel decompression, verified atomic placement.
//! - [`frame_pool`]: the process-wide budget for frames being read, and their buffers.
//! - [`writeback`]: a restored file's disk writes started while it is written.
//! - [`pack`]: many small files in one blob: `put_pack`, and `get_from_pack` splitting it.
//! - [`parts`]: multipart uploads a few at a time, their parts in flight under one budget.
//! - [`error`]: the typed [`StoreError`] and how backend errors are classified.
//!
//! The API is async (tokio); CPU work runs on rayon's pool and blocking file I/O on
//! tokio's blocking threads, so callers need a multi-threaded tokio runtime.

pub mod blob;
pub mod credentials;
pub mod error;
mod frame_pool;
pub mod hash;
pub mod options;
pub mod pack;
mod parts;
mod read;
pub mod repo;
pub(crate) mod retry;
pub mod uploads;
pub mod url;
mod write;
mod writeback;

pub use error::StoreError;
pub use hash::{BlobId, hash_file};
pub use options::{
    CompressionOptions, Content, PutStrategy, RetryOptions, S3Options, Secret, Sse, StoreOptions,
};
pub(crate) use read::{check_replaceable, create_partial};
pub use repo::{
    BlobObject, CONFIG_KEY, CompressionConfig, PutOutcome, REPO_FORMAT_VERSION, RepoConfig,
    Repository, blob_key,
};
pub use url::{RepoUrl, Scheme};
