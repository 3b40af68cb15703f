//! Writing blobs: hash, dedup check, parallel compression, multipart upload.
//!
//! # Pipeline
//!
//! ```text
//! reader thread ──frames──▶ rayon (encode_frame, in parallel) ──in order──▶ channel ──▶ upload task
//!  (read 4 MiB, hash)         window of threads+2 frames                  2 frames      PartUpload,
//!                                                                                       `upload_concurrency` parts
//! ```
//!
//! Memory is bounded whatever the file size: at most `threads + 2` frames being encoded
//! (raw + compressed, 8 MiB each), 2 frames in the channel, one part being filled and
//! `upload_concurrency` parts in flight (8 MiB each by default): about 80 MiB for one
//! file in the worst case on a 2-core machine, measured at 60-75 MiB peak RSS for a 4 GiB
//! file (see the report in `benches/store_throughput.sh`). For the process, [`super::parts`]
//! lets only a few files at a time be sent by multipart upload, and their parts in flight
//! share one budget, whatever `--parallel` says.
//!
//! An encoded blob smaller than one part is sent with a single PUT; a larger one with a
//! multipart upload. Either way the final key only exists once the whole blob is there
//! (S3 makes a multipart object visible at CompleteMultipartUpload; the local store
//! writes a temporary file and renames it, fsync'd): when `put_file` returns, the blob is
//! durable, and a crash before that leaves no partial blob under `blobs/`.
//!
//! # Strategy: hash first (default) versus staging
//!
//! - [`PutStrategy::HashFirst`]: hash the file (memory-mapped, all cores), HEAD the blob,
//!   and only if it is missing compress + upload it to its final key, re-hashing during
//!   that second read; if the second hash differs (the file changed in between) the
//!   upload is aborted before it completes and `SourceChanged` returned.
//! - [`PutStrategy::Staging`]: one read that hashes while compressing and uploading to
//!   `staging/<uuid>`, then a server-side copy (a rename on `file://`) to the final key
//!   and a delete of the staging object.
//!
//! Hash-first is the default: it uploads nothing for a blob the repository already has
//! (the common case: the same SSTable seen live, in `backups/` and in snapshots, or on
//! a re-run), needs no server-side copy (S3's single CopyObject stops at 5 GiB, and a
//! copy rewrites the whole object server-side), and leaves no orphan staging objects
//! after a crash. Its cost is a second read, which comes from the page cache for any
//! file that fits there and costs one extra BLAKE3 pass otherwise. Figures in
//! `benches/store_throughput.sh`'s report.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::mpsc;

use super::blob::{
    EncodedFrame, FrameEntry, encode_frame_into, encode_header, encode_trailer, raw_frame,
};
use super::error::StoreError;
use super::frame_pool;
use super::hash::{BlobId, hash_file};
use super::options::{Content, PutStrategy};
use super::parts::{PartUpload, multipart_slot};
use super::repo::{PutOutcome, Repository, blob_key, join_err};

/// Most parts a multipart upload may have here (S3 allows 10,000).
const MAX_PARTS: u64 = 9_000;
/// S3's smallest part size (except the last part).
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

pub(crate) async fn put_file(
    repo: &Repository,
    path: &Path,
    content: Content,
) -> Result<PutOutcome, StoreError> {
    match repo.options().strategy {
        PutStrategy::HashFirst => put_hash_first(repo, path, content).await,
        PutStrategy::Staging => put_staging(repo, path, content).await,
    }
}

async fn put_hash_first(
    repo: &Repository,
    path: &Path,
    content: Content,
) -> Result<PutOutcome, StoreError> {
    let p = path.to_path_buf();
    let (id, size) = tokio::task::spawn_blocking(move || hash_file(&p))
        .await
        .map_err(join_err)??;
    let key = blob_key(&id);
    // A small blob on a remote store: one conditional PUT instead of HEAD + PUT (a small
    // blob's cost is its requests' round trips). Should a store ignore the condition, it
    // overwrites the blob with the same bytes.
    let create_only = size < SMALL_BLOB && repo.url().local_path().is_none();
    if !create_only && let Some(stored_size) = repo.head_size(&key).await? {
        return Ok(PutOutcome {
            id,
            size,
            stored_size,
            uploaded: false,
        });
    }
    let up = upload_encoded(repo, &key, path, content, Some(id), create_only).await?;
    if up.already_there {
        let stored_size = repo.head_size(&key).await?.unwrap_or(up.stored_size);
        return Ok(PutOutcome {
            id,
            size: up.raw_size,
            stored_size,
            uploaded: false,
        });
    }
    Ok(PutOutcome {
        id,
        size: up.raw_size,
        stored_size: up.stored_size,
        uploaded: true,
    })
}

/// Hashes and uploads a file to its blob key without looking for an existing object.
pub(crate) async fn put_file_again(
    repo: &Repository,
    path: &Path,
    content: Content,
) -> Result<PutOutcome, StoreError> {
    let p = path.to_path_buf();
    let (id, _) = tokio::task::spawn_blocking(move || hash_file(&p))
        .await
        .map_err(join_err)??;
    let up = upload_encoded(repo, &blob_key(&id), path, content, Some(id), false).await?;
    Ok(PutOutcome {
        id,
        size: up.raw_size,
        stored_size: up.stored_size,
        uploaded: true,
    })
}

/// Files smaller than this go to a remote store with one conditional PUT, no HEAD first.
const SMALL_BLOB: u64 = 1024 * 1024;

async fn put_staging(
    repo: &Repository,
    path: &Path,
    content: Content,
) -> Result<PutOutcome, StoreError> {
    let staging = ObjectPath::from(format!("staging/{}", uuid::Uuid::new_v4()));
    let up = upload_encoded(repo, &staging, path, content, None, false).await?;
    let key = blob_key(&up.id);
    let moved = async {
        if repo.head_size(&key).await?.is_some() {
            return Ok(false);
        }
        // `rename` is an atomic rename(2) on file://, copy + delete on object stores.
        // Retrying is safe: the copy overwrites with the same bytes, and a retry that
        // finds the staging object gone finds the blob in place.
        let renamed = repo
            .retried("rename", |_| repo.store().rename(&staging, &key))
            .await;
        if let Err(e) = renamed
            && repo.head_size(&key).await? != Some(up.stored_size)
        {
            return Err(repo.classify(e));
        }
        Ok::<bool, StoreError>(true)
    }
    .await;
    if !matches!(moved, Ok(true)) {
        let _ = repo.delete_key(&staging).await;
    }
    let uploaded = moved?;
    let stored_size = if uploaded {
        up.stored_size
    } else {
        repo.head_size(&key).await?.unwrap_or(up.stored_size)
    };
    Ok(PutOutcome {
        id: up.id,
        size: up.raw_size,
        stored_size,
        uploaded,
    })
}

pub(crate) struct Uploaded {
    pub id: BlobId,
    pub raw_size: u64,
    pub stored_size: u64,
    /// `create_only` was asked and an object was already at the key: nothing written.
    pub already_there: bool,
}

/// Part size for a file: the configured size, raised so the upload needs at most
/// [`MAX_PARTS`] parts, rounded up to a MiB.
fn part_size_for(configured: usize, file_len: u64) -> usize {
    const MIB: u64 = 1024 * 1024;
    let needed = file_len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
    configured.max(MIN_PART_SIZE).max(needed)
}

/// Encoded frames (up to 4 MiB each) queued between a file's reader and its upload: a
/// part's worth. More only piles up memory when the store is slower than the disk (8
/// queued frames per upload were a sixth of the S3 initial backup's peak RSS).
const CHANNEL_FRAMES: usize = 2;

/// Encodes `path` (as `content` says) and uploads it to `key`. With `expected`, the
/// upload is abandoned (nothing appears at `key`) if the bytes read do not hash to it.
/// With `create_only`, a blob sent in one PUT is sent as a conditional create, and an
/// object already at `key` is left as it is (`already_there`); a multipart upload
/// ignores it.
async fn upload_encoded(
    repo: &Repository,
    key: &ObjectPath,
    path: &Path,
    content: Content,
    expected: Option<BlobId>,
    create_only: bool,
) -> Result<Uploaded, StoreError> {
    let opts = repo.options();
    let compression = &repo.config().compression;
    // None: every frame stored raw.
    let level = match content {
        Content::Compressed if !compression.recompress => None,
        _ => Some(compression.level),
    };
    let frame_size = compression.frame_size;
    let file_len = std::fs::metadata(path)
        .map_err(|source| StoreError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let part_size = part_size_for(opts.part_size, file_len);
    let concurrency = opts.upload_concurrency.max(1);
    // Held until the upload ends; taken before anything is read.
    let _multipart = if file_len >= part_size as u64 {
        multipart_slot().await
    } else {
        None
    };

    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_FRAMES);
    let p = path.to_path_buf();
    let producer =
        tokio::task::spawn_blocking(move || encode_file(&p, level, frame_size, file_len, tx));

    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut upload: Option<PartUpload> = None;
    let consumed: Result<(), object_store::Error> = async {
        while let Some(chunk) = rx.recv().await {
            match upload.as_mut() {
                Some(w) => w.put(chunk).await?,
                None => {
                    pending_len += chunk.len();
                    pending.push(chunk);
                    if pending_len >= part_size {
                        let started = match repo.multipart_target() {
                            Some(target) => {
                                PartUpload::numbered(
                                    target,
                                    key,
                                    &opts.retry,
                                    part_size,
                                    concurrency,
                                )
                                .await?
                            }
                            None => PartUpload::new(
                                repo.store().put_multipart(key).await?,
                                part_size,
                                concurrency,
                            ),
                        };
                        let w = upload.insert(started);
                        for c in pending.drain(..) {
                            w.put(c).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    // Let a producer blocked on a full channel see that nobody listens any more.
    drop(rx);
    let produced = producer.await.map_err(join_err);

    let abort = |upload: Option<PartUpload>| async move {
        if let Some(w) = upload {
            let _ = w.abort().await;
        }
    };
    if let Err(e) = consumed {
        abort(upload).await;
        return Err(repo.classify(e));
    }
    let (id, raw_size, stored_size) = match produced {
        Ok(Ok(v)) => v,
        Ok(Err(e)) | Err(e) => {
            abort(upload).await;
            return Err(e);
        }
    };
    if expected.is_some_and(|e| e != id) {
        abort(upload).await;
        return Err(StoreError::SourceChanged {
            path: path.to_path_buf(),
        });
    }
    let already_there = match upload {
        Some(w) => {
            w.finish().await.map_err(|e| repo.classify(e))?;
            false
        }
        None => {
            let payload = PutPayload::from_iter(pending);
            put_single(repo, key, payload, create_only, id, stored_size).await?
        }
    };
    Ok(Uploaded {
        id,
        raw_size,
        stored_size,
        already_there,
    })
}

/// Sends a blob in one PUT (a conditional create with `create_only`), retried within
/// the budget. Returns true when an object was already at `key` and nothing was written.
/// An object found there only after an attempt that failed on the way may be that
/// attempt's own write: it counts as written when it is as long as `payload` and its
/// content hashes to `id` (the blob is small, so reading it back is cheap); an object
/// that fails that check is overwritten with `payload`, which the key names.
async fn put_single(
    repo: &Repository,
    key: &ObjectPath,
    payload: PutPayload,
    create_only: bool,
    id: BlobId,
    stored_size: u64,
) -> Result<bool, StoreError> {
    let put = |mode: PutMode| {
        let payload = payload.clone();
        repo.retried("upload", move |attempt| {
            let opts = PutOptions {
                mode: mode.clone(),
                ..Default::default()
            };
            let request = repo.store().put_opts(key, payload.clone(), opts);
            async move {
                match request.await {
                    Ok(_) => Ok(Exists::No),
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. })
                        if create_only =>
                    {
                        Ok(if attempt == 0 {
                            Exists::Before
                        } else {
                            Exists::MaybeOurs
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        })
    };
    let mode = if create_only {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    match put(mode).await.map_err(|e| repo.classify(e))? {
        Exists::No => Ok(false),
        Exists::Before => Ok(true),
        Exists::MaybeOurs => {
            let size_ok = repo.head_size(key).await? == Some(stored_size);
            if size_ok && repo.verify_blob(&id).await.is_ok() {
                return Ok(false);
            }
            tracing::warn!(%id, "an object at the blob's key does not hold the blob: replacing it");
            put(PutMode::Overwrite)
                .await
                .map_err(|e| repo.classify(e))?;
            Ok(false)
        }
    }
}

/// What a conditional create found at its key.
enum Exists {
    /// Nothing: the object was written.
    No,
    /// An object, at the first attempt: written by someone else.
    Before,
    /// An object, after an attempt that failed on the way: perhaps that attempt's.
    MaybeOurs,
}

/// Frames smaller than this are encoded on the reader thread when nothing is queued.
const SPAWN_THRESHOLD: usize = 256 * 1024;

/// Appends up to `want` bytes to `buf` (whose spare capacity need not be zeroed),
/// stopping early only at end of file.
fn read_up_to(file: &mut File, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    file.by_ref().take(want as u64).read_to_end(buf)
}

struct Emitter {
    tx: mpsc::Sender<Bytes>,
    frames: Vec<FrameEntry>,
    offset: u64,
}

impl Emitter {
    fn send(&mut self, b: Bytes) -> Result<(), StoreError> {
        self.offset += b.len() as u64;
        self.tx
            .blocking_send(b)
            .map_err(|_| StoreError::Internal("upload stopped".into()))
    }

    fn frame(&mut self, f: EncodedFrame) -> Result<(), StoreError> {
        self.frames.push(f.entry);
        self.send(Bytes::copy_from_slice(&f.entry.to_bytes()))?;
        self.send(f.payload)
    }
}

/// The blocking half of the pipeline: reads, hashes, hands frames to rayon (zstd at
/// `level`; with none, each frame is sent raw from here), and sends the encoded blob
/// down `tx` in order. Returns (hash, raw size, stored size).
fn encode_file(
    path: &PathBuf,
    level: Option<i32>,
    frame_size: u32,
    expected_len: u64,
    tx: mpsc::Sender<Bytes>,
) -> Result<(BlobId, u64, u64), StoreError> {
    let read_err = |source: io::Error| StoreError::ReadFile {
        path: path.clone(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = blake3::Hasher::new();
    let mut out = Emitter {
        tx,
        frames: Vec::new(),
        offset: 0,
    };
    out.send(Bytes::copy_from_slice(&encode_header(frame_size)))?;
    let window = rayon::current_num_threads() + 2;
    let mut inflight: VecDeque<std_mpsc::Receiver<EncodedFrame>> = VecDeque::new();
    let recv = |rx: std_mpsc::Receiver<EncodedFrame>| {
        rx.recv()
            .map_err(|_| StoreError::Internal("a compression task died".into()))
    };
    let mut raw_size = 0u64;
    loop {
        // Sized to what is left of the file (plus one byte, to notice a file that grew):
        // a zeroed frame-size buffer per small file costs more than compressing it.
        let left = expected_len.saturating_sub(raw_size).saturating_add(1);
        let want = (frame_size as u64).min(left) as usize;
        // A whole frame sent as it is: its buffer is reused once the upload has sent it.
        // Anything shorter gets a buffer of its own size (a pooled one is a whole frame).
        let mut buf = if level.is_none() && want == frame_size as usize {
            frame_pool::empty_buffer(want)
        } else {
            Vec::with_capacity(want)
        };
        let n = read_up_to(&mut file, &mut buf, want).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf);
        raw_size += n as u64;
        match level {
            // Nothing to compress (and so nothing in flight): sent as it is.
            None => out.frame(raw_frame(buf))?,
            Some(level) => {
                // Allocated here, on the reader thread: see `blob::encode_frame_into`.
                let out_buf = Vec::with_capacity(n);
                let (ftx, frx) = std_mpsc::sync_channel(1);
                if n < SPAWN_THRESHOLD && inflight.is_empty() {
                    // A small frame with nothing ahead of it: encoding it here is cheaper
                    // than waking a pool thread (small files are encoded several at once
                    // anyway).
                    let _ = ftx.send(encode_frame_into(buf, out_buf, level));
                } else {
                    rayon::spawn(move || {
                        let _ = ftx.send(encode_frame_into(buf, out_buf, level));
                    });
                }
                inflight.push_back(frx);
                while inflight.len() >= window {
                    if let Some(rx) = inflight.pop_front() {
                        out.frame(recv(rx)?)?;
                    }
                }
            }
        }
        if n < frame_size as usize {
            break;
        }
    }
    while let Some(rx) = inflight.pop_front() {
        out.frame(recv(rx)?)?;
    }
    let len_now = file.metadata().map_err(read_err)?.len();
    if raw_size != expected_len || len_now != expected_len {
        return Err(StoreError::SourceChanged { path: path.clone() });
    }
    let trailer = encode_trailer(&out.frames, raw_size, out.offset);
    out.send(Bytes::from(trailer))?;
    Ok((hasher.finalize().into(), raw_size, out.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_for_huge_files() {
        let mib = 1024 * 1024;
        assert_eq!(part_size_for(8 * mib, 4 << 30), 8 * mib);
        assert_eq!(part_size_for(mib, 10), MIN_PART_SIZE);
        let huge = 500u64 << 30; // 500 GiB
        let p = part_size_for(8 * mib, huge) as u64;
        assert!(huge.div_ceil(p) <= MAX_PARTS, "{p}");
    }
}
