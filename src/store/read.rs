//! Reading blobs: download, parallel decompression, hash check, atomic placement.
//!
//! ```text
//! GET stream ──chunks──▶ channel (16) ──▶ decoder thread: parse frames ──▶ rayon decode (window)
//!                                                      ──in order──▶ hash + write `<dest>.partial`
//! ```
//!
//! One GET streams the whole object; the decoder parses frame headers as the bytes
//! arrive and decodes up to `threads + 2` frames at once, writing them in order. Memory
//! is bounded by that window and the channel, whatever the blob size, and, however many
//! blobs are read at once, by the process-wide frame budget of [`frame_pool`].
//!
//! [`get_to_file`] writes to `<dest>.partial` (asking the kernel to start writing each
//! few MiB to disk at once, [`super::writeback`]), fsyncs it, and renames it to `dest` only
//! when the BLAKE3 of what was written equals the blob id; otherwise (or on any other
//! error) it deletes the `.partial` file and leaves `dest` as it was. Then it fsyncs the
//! directory, unless the caller does that once for many files (a restore). A missing blob,
//! a damaged one (bad framing, truncated, undecodable frame) and one whose content does
//! not match its id each give their own error naming the blob.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use object_store::{GetResultPayload, ObjectStoreExt};
use tokio::sync::mpsc;

use super::blob::{
    BlobIndex, BlobReader, FOOTER_LEN, FormatError, FrameEntry, FrameKind, HEADER_LEN,
    decode_payload, decompress_frame_into, parse_footer,
};
use super::error::StoreError;
use super::frame_pool;
use super::hash::BlobId;
use super::repo::{Repository, blob_key, join_err};
use super::writeback::EarlyWriteback;

type TransportSlot = Arc<Mutex<Option<object_store::Error>>>;

/// A blocking `Read` over the chunks of an async GET stream.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, object_store::Error>>,
    current: Bytes,
    transport_error: TransportSlot,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    if let Ok(mut slot) = self.transport_error.lock() {
                        *slot = Some(e);
                    }
                    return Err(io::Error::other("download failed"));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

enum DecodeFail {
    Format(FormatError),
    Write(io::Error),
    Internal(String),
}

/// Streams blob `id` into `writer`; returns the writer, the hash of what was written
/// and its length. `dest` is only used to name the file in write errors.
pub(crate) async fn read_blob_into<W: Write + Send + 'static>(
    repo: &Repository,
    id: &BlobId,
    writer: W,
    dest: Option<&Path>,
) -> Result<(W, BlobId, u64), StoreError> {
    let key = blob_key(id);
    let stall = repo.options().retry.download_stall;
    let got = match repo
        .retried("download", |_| {
            super::retry::within(stall, "download", repo.store().get(&key))
        })
        .await
    {
        Ok(r) => r,
        Err(e @ object_store::Error::NotFound { .. }) => {
            return Err(match repo.classify(e) {
                StoreError::Backend { .. } => StoreError::BlobNotFound {
                    id: *id,
                    url: repo.url_text().to_string(),
                },
                other => other,
            });
        }
        Err(e) => return Err(repo.classify(e)),
    };
    let slot: TransportSlot = Arc::new(Mutex::new(None));
    let mut forwarder = None;
    let reader: Box<dyn Read + Send> = match got.payload {
        // file:// — read the object file directly: object_store's stream over a local
        // file hands out 8 KiB chunks, each from its own spawn_blocking call, which
        // costs several CPU-seconds per GiB.
        GetResultPayload::File(mut file, path) => {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(got.range.start))
                .map_err(|source| StoreError::ReadFile { path, source })?;
            // Many small blobs are read at once: no bigger buffer than the object.
            let len = got.range.end.saturating_sub(got.range.start);
            let capacity = usize::try_from(len.min(1024 * 1024)).unwrap_or(1024 * 1024);
            Box::new(io::BufReader::with_capacity(capacity.max(8 * 1024), file))
        }
        GetResultPayload::Stream(stream) => {
            let (tx, rx) = mpsc::channel(16);
            let resume = Resume {
                store: repo.store().clone(),
                key,
                e_tag: got.meta.e_tag.clone(),
                end: got.range.end,
                next: got.range.start,
                retry: repo.options().retry.clone(),
            };
            forwarder = Some(tokio::spawn(resume.forward(stream, tx)));
            Box::new(ChannelReader {
                rx,
                current: Bytes::new(),
                transport_error: slot.clone(),
            })
        }
    };
    let decoded = tokio::task::spawn_blocking(move || decode_stream(reader, writer))
        .await
        .map_err(join_err)?;
    if let Some(f) = forwarder {
        f.abort();
    }
    let transport = slot.lock().ok().and_then(|mut s| s.take());
    match decoded {
        Ok(v) => Ok(v),
        Err(_) if transport.is_some() => match transport {
            Some(e) => Err(repo.classify(e)),
            None => Err(StoreError::Internal("transport error vanished".into())),
        },
        Err(DecodeFail::Format(f)) => Err(StoreError::CorruptBlob {
            id: *id,
            reason: f.to_string(),
        }),
        Err(DecodeFail::Write(source)) => Err(StoreError::WriteFile {
            path: dest.map(Path::to_path_buf).unwrap_or_default(),
            source,
        }),
        Err(DecodeFail::Internal(m)) => Err(StoreError::Internal(m)),
    }
}

/// What it takes to continue a download whose stream broke: a ranged GET from the
/// first byte not received, of the same object (`If-Match` its ETag).
struct Resume {
    store: Arc<dyn object_store::ObjectStore>,
    key: object_store::path::Path,
    e_tag: Option<String>,
    /// Offset of the next byte to deliver, and the end of the object.
    next: u64,
    end: u64,
    retry: super::options::RetryOptions,
}

impl Resume {
    /// Forwards the chunks of `stream` to `tx`; when the stream breaks with a transient
    /// error, carries on from where it broke. Failures without a byte received in
    /// between share one `--retry-timeout` budget; the last error is forwarded when it
    /// is spent (or the error is not transient).
    async fn forward(
        mut self,
        mut stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
        tx: mpsc::Sender<Result<Bytes, object_store::Error>>,
    ) {
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            let next = tokio::time::timeout(self.retry.download_stall, stream.next()).await;
            let next = next.unwrap_or_else(|_| {
                Some(Err(object_store::Error::Generic {
                    store: "tablesafe",
                    source: Box::new(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no byte of the download for the stall limit",
                    )),
                }))
            });
            let err = match next {
                None => return,
                Some(Ok(bytes)) => {
                    self.next += bytes.len() as u64;
                    failing_since = None;
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Err(e)) => e,
            };
            let since = *failing_since.get_or_insert_with(std::time::Instant::now);
            let left = self.retry.retry_timeout.saturating_sub(since.elapsed());
            if self.next >= self.end || left.is_zero() || !super::retry::is_transient(&err) {
                let _ = tx.send(Err(err)).await;
                return;
            }
            tracing::warn!(key = %self.key, offset = self.next, error = %err, "download broke off, resuming");
            let budget = super::options::RetryOptions {
                retry_timeout: left,
                ..self.retry.clone()
            };
            let reopened = super::retry::retry(&budget, "resume download", |_| {
                let opts = object_store::GetOptions {
                    range: Some((self.next..self.end).into()),
                    if_match: self.e_tag.clone(),
                    ..Default::default()
                };
                super::retry::within(
                    self.retry.download_stall,
                    "resume download",
                    self.store.get_opts(&self.key, opts),
                )
            })
            .await;
            match reopened {
                Ok(got) => stream = got.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}

/// Frames smaller than this are decoded on the calling thread when nothing is queued.
const INLINE_DECODE: usize = 256 * 1024;

type FrameResult = Result<Vec<u8>, FormatError>;

/// A frame read and being decompressed, with its room in the process-wide budget.
struct FrameInFlight {
    decoded: std_mpsc::Receiver<FrameResult>,
    _room: frame_pool::Reservation,
}

/// Decompresses a frame (a raw frame's payload is its bytes); the payload's buffer goes
/// back to the pool.
fn decode_pooled(entry: FrameEntry, payload: Vec<u8>, mut out: Vec<u8>) -> FrameResult {
    match entry.kind {
        FrameKind::Raw => Ok(payload),
        FrameKind::Zstd => {
            let decoded = decompress_frame_into(entry, &payload, &mut out);
            frame_pool::recycle(payload);
            decoded.map(|()| out)
        }
    }
}

fn decode_stream<R: Read, W: Write>(
    reader: R,
    mut writer: W,
) -> Result<(W, BlobId, u64), DecodeFail> {
    let mut blob = BlobReader::new(reader).map_err(DecodeFail::Format)?;
    let mut hasher = blake3::Hasher::new();
    let window = rayon::current_num_threads() + 2;
    let mut inflight: VecDeque<FrameInFlight> = VecDeque::new();
    let mut written = 0u64;
    let mut emit = |frame: FrameInFlight, writer: &mut W| {
        let raw = frame
            .decoded
            .recv()
            .map_err(|_| DecodeFail::Internal("a decompression task died".into()))?
            .map_err(DecodeFail::Format)?;
        hasher.update(&raw);
        writer.write_all(&raw).map_err(DecodeFail::Write)?;
        written += raw.len() as u64;
        frame_pool::recycle(raw);
        Ok::<(), DecodeFail>(())
    };
    while let Some(entry) = blob.next_header().map_err(DecodeFail::Format)? {
        let bytes = frame_pool::footprint(entry.stored_len as usize)
            + match entry.kind {
                FrameKind::Zstd => frame_pool::footprint(entry.raw_len as usize),
                FrameKind::Raw => 0,
            };
        // Room for this frame before its payload is read: while there is none, write out
        // this blob's oldest frame (giving its room back); wait only holding nothing.
        let room = loop {
            if let Some(room) = frame_pool::try_reserve(bytes) {
                break room;
            }
            match inflight.pop_front() {
                Some(frame) => emit(frame, &mut writer)?,
                None => break frame_pool::reserve(bytes),
            }
        };
        let mut payload = frame_pool::buffer(entry.stored_len as usize);
        blob.read_payload(entry, &mut payload)
            .map_err(DecodeFail::Format)?;
        // Output buffers are taken on this thread: see `blob::encode_frame_into`.
        let out = match entry.kind {
            FrameKind::Zstd => frame_pool::empty_buffer(entry.raw_len as usize),
            FrameKind::Raw => Vec::new(),
        };
        let (ftx, frx) = std_mpsc::sync_channel(1);
        let small_and_first = (entry.raw_len as usize) < INLINE_DECODE && inflight.is_empty();
        if entry.kind == FrameKind::Raw || small_and_first {
            // A raw frame needs no decoding. A small frame with nothing ahead of it (a
            // small blob): decoding it here is cheaper than waking a pool thread; small
            // blobs download several at once.
            let _ = ftx.send(decode_pooled(entry, payload, out));
        } else {
            rayon::spawn(move || {
                let _ = ftx.send(decode_pooled(entry, payload, out));
            });
        }
        inflight.push_back(FrameInFlight {
            decoded: frx,
            _room: room,
        });
        while inflight.len() >= window {
            if let Some(frame) = inflight.pop_front() {
                emit(frame, &mut writer)?;
            }
        }
    }
    while let Some(frame) = inflight.pop_front() {
        emit(frame, &mut writer)?;
    }
    writer.flush().map_err(DecodeFail::Write)?;
    if written != blob.raw_size() {
        return Err(DecodeFail::Internal(
            "decoded size differs from frame sizes".into(),
        ));
    }
    Ok((writer, hasher.finalize().into(), written))
}

/// `<dest>.partial`, next to `dest`.
pub(crate) fn partial_path(dest: &Path) -> Result<PathBuf, StoreError> {
    let name = dest.file_name().ok_or_else(|| {
        StoreError::InvalidOption(format!(
            "restore destination {} has no file name",
            dest.display()
        ))
    })?;
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(dest.with_file_name(partial))
}

/// Creates `<dest>.partial` for writing, never through a link: a `.partial` left by an
/// interrupted run is removed only when it is a regular file; anything else there (a
/// symbolic link planted by whoever can write the directory, a directory, a fifo) is
/// refused, and the file is opened with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a link
/// planted between the check and the open fails the open instead of being followed.
pub(crate) fn create_partial(dest: &Path) -> Result<(PathBuf, File), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = partial_path(dest)?;
    match std::fs::symlink_metadata(&partial) {
        Ok(m) if m.file_type().is_file() => {
            std::fs::remove_file(&partial).map_err(write_err(&partial))?;
        }
        Ok(m) => return Err(not_ours(&partial, m.file_type())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(&partial)(e)),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&partial)
        .map_err(write_err(&partial))?;
    Ok((partial, file))
}

/// Checks what a rename onto `dest` would replace: nothing, or a regular file. A
/// symbolic link, a directory or anything else there was not made by this restore and
/// is refused (a rename replaces a link rather than writing through it, but the link
/// was someone else's to make, and a directory is never replaced).
pub(crate) fn check_replaceable(dest: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(not_ours(dest, m.file_type())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(write_err(dest)(e)),
    }
}

/// The error for an entry restore did not create and will not write through or replace.
fn not_ours(path: &Path, kind: std::fs::FileType) -> StoreError {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() || kind.is_socket() {
        "a fifo or socket"
    } else {
        "not a regular file"
    };
    write_err(path)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "it is {what} that restore did not create, and restore never writes through or replaces one: remove it (after checking who made it), then run again with --resume"
        ),
    ))
}

/// Maps an I/O error writing `path` to [`StoreError::WriteFile`].
pub(crate) fn write_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::WriteFile { path, source }
}

/// Sets `mtime` (when given) on `partial` (written through `file`), fsyncs it, and
/// renames it to `dest` if its content hashed to `id`; removes it otherwise, so `dest`
/// never holds an unverified byte. The mtime is set before the fsync so that it is as
/// durable as the bytes.
pub(crate) fn place_verified(
    file: File,
    partial: &Path,
    dest: &Path,
    id: BlobId,
    actual: BlobId,
    mtime: Option<SystemTime>,
) -> Result<(), StoreError> {
    let result = (|| {
        if let Some(time) = mtime {
            file.set_modified(time).map_err(write_err(partial))?;
        }
        file.sync_all().map_err(write_err(partial))?;
        drop(file);
        if actual != id {
            return Err(StoreError::HashMismatch {
                id,
                actual,
                dest: Some(dest.to_path_buf()),
            });
        }
        check_replaceable(dest)?;
        std::fs::rename(partial, dest).map_err(write_err(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    result
}

pub(crate) async fn get_to_file(
    repo: &Repository,
    id: &BlobId,
    dest: &Path,
    sync_dir: bool,
    mtime: Option<SystemTime>,
) -> Result<u64, StoreError> {
    let (partial, file) = create_partial(dest)?;
    let result = read_blob_into(repo, id, EarlyWriteback::new(file), Some(&partial)).await;
    let (file, actual, size) = match result {
        Ok((file, actual, size)) => (file.into_inner(), actual, size),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let id = *id;
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        place_verified(file, &partial, &dest, id, actual, mtime)?;
        if !sync_dir {
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            let dir = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write_err(dir))?;
        }
        Ok::<(), StoreError>(())
    })
    .await
    .map_err(join_err)??;
    Ok(size)
}

pub(crate) async fn verify(repo: &Repository, id: &BlobId) -> Result<u64, StoreError> {
    let (_, actual, size) = read_blob_into(repo, id, io::sink(), None).await?;
    if actual != *id {
        return Err(StoreError::HashMismatch {
            id: *id,
            actual,
            dest: None,
        });
    }
    Ok(size)
}

/// Reads a blob's frame index with ranged reads (HEAD, the footer, then header and
/// index), without downloading any frame.
pub(crate) async fn blob_index(repo: &Repository, id: &BlobId) -> Result<BlobIndex, StoreError> {
    let key = blob_key(id);
    let corrupt = |f: FormatError| StoreError::CorruptBlob {
        id: *id,
        reason: f.to_string(),
    };
    let not_found = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => match repo.classify(e) {
            StoreError::Backend { .. } => StoreError::BlobNotFound {
                id: *id,
                url: repo.url_text().to_string(),
            },
            other => other,
        },
        e => repo.classify(e),
    };
    let size = repo
        .retried("head", |_| repo.store().head(&key))
        .await
        .map_err(not_found)?
        .size;
    let min = (HEADER_LEN + 1 + FOOTER_LEN) as u64;
    if size < min {
        return Err(corrupt(FormatError::Truncated));
    }
    let footer = repo
        .retried("read footer", |_| {
            repo.store().get_range(&key, size - FOOTER_LEN as u64..size)
        })
        .await
        .map_err(not_found)?;
    let footer = parse_footer(&footer).map_err(corrupt)?;
    let index_start = footer.end_offset.saturating_add(1);
    let index_end = size - FOOTER_LEN as u64;
    if index_start > index_end || footer.end_offset < HEADER_LEN as u64 {
        return Err(corrupt(FormatError::Bad(
            "footer points outside the object".into(),
        )));
    }
    if index_start == index_end {
        // no frame: an empty blob (and an empty range is not a valid request)
        let header = repo
            .retried("read header", |_| {
                repo.store().get_range(&key, 0..HEADER_LEN as u64)
            })
            .await
            .map_err(not_found)?;
        return BlobIndex::parse(&header, &[], &footer).map_err(corrupt);
    }
    let ranges = [0..HEADER_LEN as u64, index_start..index_end];
    let parts = repo
        .retried("read index", |_| repo.store().get_ranges(&key, &ranges))
        .await
        .map_err(not_found)?;
    match parts.as_slice() {
        [header, index] => BlobIndex::parse(header, index, &footer).map_err(corrupt),
        _ => Err(StoreError::Internal(
            "ranged read returned the wrong number of parts".into(),
        )),
    }
}

/// Reads and decodes frame `n` of a blob with one ranged read.
pub(crate) async fn read_frame(
    repo: &Repository,
    id: &BlobId,
    index: &BlobIndex,
    n: usize,
) -> Result<Vec<u8>, StoreError> {
    let f = index.frames.get(n).ok_or_else(|| {
        StoreError::InvalidOption(format!(
            "blob {id} has {} frames, not {}",
            index.frames.len(),
            n + 1
        ))
    })?;
    let range = f.payload_offset..f.payload_offset + u64::from(f.entry.stored_len);
    let key = blob_key(id);
    let bytes = repo
        .retried("read frame", |_| {
            repo.store().get_range(&key, range.clone())
        })
        .await
        .map_err(|e| repo.classify(e))?;
    let entry = f.entry;
    tokio::task::spawn_blocking(move || decode_payload(entry, bytes.to_vec()))
        .await
        .map_err(join_err)?
        .map_err(|e| StoreError::CorruptBlob {
            id: *id,
            reason: e.to_string(),
        })
}
