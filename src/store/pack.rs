//! Packs: many small files in one blob object.
//!
//! Most of an SSTable's components are a few KiB (TOC.txt, Digest, Filter, Statistics,
//! CompressionInfo, small Index and Summary files): stored one object each, a restore
//! spends its time on requests, not bytes (on a local S3 server about a millisecond of
//! server CPU per GET). So a backup puts files smaller than [`PACK_MEMBER_MAX`] together,
//! up to [`PACK_TARGET`] bytes at a time, into a *pack*: an ordinary blob (same framing,
//! same `blobs/<aa>/<hash>` key, same listing, condemnation and deletion by gc) whose
//! content is
//!
//! ```text
//! 16 random bytes | file 1 | file 2 | …      (the pack's id is the BLAKE3 of all of it)
//! ```
//!
//! The random prefix makes every pack a new object: a file uploaded again after gc
//! condemned the pack that held it never lands on that condemned object. Where each
//! file sits is recorded in the catalog log (`Change::Packed`), after the pack is
//! durable, like any record of a blob.
//!
//! A restore downloads a pack once and splits it as it streams ([`PackSplitter`]): each
//! file goes to its own `<dest>.partial`, is hashed, fsynced, and renamed into place only
//! if its bytes hash to its id, so a damaged pack fails the files it damaged and no
//! others. The fsync and rename run on a few threads of their own, several files at
//! once, while the pack streams on. Memory: a pack is built in memory (at most
//! [`PACK_TARGET`] plus one member, twice with its encoded copy); reading one streams
//! like any blob.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::blob::encode_to_vec;
use super::error::StoreError;
use super::hash::BlobId;
use super::read::{create_partial, partial_path, place_verified, read_blob_into};
use super::repo::{Repository, blob_key, join_err};

/// Files smaller than this are packed.
pub const PACK_MEMBER_MAX: u64 = 1024 * 1024;
/// A pack is closed once its files add up to this many bytes.
pub const PACK_TARGET: u64 = 2 * 1024 * 1024;
/// Frames of a pack: small, so a restore holding several packs at once holds little.
const PACK_FRAME_SIZE: u32 = 512 * 1024;
/// Random bytes at the start of every pack.
pub const PACK_NONCE_LEN: u64 = 16;

/// A file to pack: its content hash, size, and the paths that hold it (the first that
/// still exists is read).
#[derive(Debug, Clone)]
pub struct PackCandidate {
    pub id: BlobId,
    pub size: u64,
    pub paths: Vec<PathBuf>,
}

/// What became of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// In the pack at `offset`.
    Packed { offset: u64 },
    /// Its bytes no longer hash to its id (the file changed since it was hashed).
    Changed,
    /// None of its paths exists any more.
    Vanished,
}

/// A pack written by [`Repository::put_pack`].
#[derive(Debug, Clone)]
pub struct PackPut {
    /// `None` when no candidate could be packed (nothing was written).
    pub id: Option<BlobId>,
    /// Raw size of the pack's content.
    pub size: u64,
    pub stored_size: u64,
    /// One per candidate, in the order given.
    pub members: Vec<Packing>,
}

/// A file to take out of a pack while it streams by.
#[derive(Debug, Clone)]
pub struct PackExtract {
    pub id: BlobId,
    pub offset: u64,
    pub size: u64,
    pub dest: PathBuf,
    /// Set on the file before its fsync, when given.
    pub mtime: Option<std::time::SystemTime>,
}

impl Repository {
    /// Reads the candidates, writes them as one pack, and returns where each went. The
    /// pack is durable in the store when this returns.
    pub async fn put_pack(&self, candidates: Vec<PackCandidate>) -> Result<PackPut, StoreError> {
        let level = self.config().compression.level;
        let frame_size = self.config().compression.frame_size.min(PACK_FRAME_SIZE);
        let built = tokio::task::spawn_blocking(move || build(&candidates, level, frame_size))
            .await
            .map_err(join_err)??;
        let Some((id, size, encoded)) = built.object else {
            return Ok(PackPut {
                id: None,
                size: 0,
                stored_size: 0,
                members: built.members,
            });
        };
        let stored_size = encoded.len() as u64;
        // The random prefix makes the key new; create-only guards against the impossible
        // (an object already there holds these very bytes: the key is their hash).
        self.create_object(&blob_key(&id), Bytes::from(encoded))
            .await?;
        Ok(PackPut {
            id: Some(id),
            size,
            stored_size,
            members: built.members,
        })
    }

    /// Downloads pack `pack` once and places each of `files` at its `dest` (through
    /// `<dest>.partial`, fsynced, renamed only if its content hashes to its id; the
    /// caller fsyncs the directories). Returns each file's outcome, in the order given:
    /// `None` for a file the pack's bytes never reached, because of the error returned
    /// with them (the pack missing, damaged, or a transfer failure).
    pub async fn get_from_pack(
        &self,
        pack: &BlobId,
        files: Vec<PackExtract>,
    ) -> (Vec<Option<Result<u64, StoreError>>>, Option<StoreError>) {
        let splitter = PackSplitter::new(files);
        let outcomes = splitter.outcomes.clone();
        let order = splitter.order.clone();
        let failed = read_blob_into(self, pack, splitter, None).await.err();
        let mut sorted = match outcomes.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => Vec::new(),
        };
        sorted.resize_with(order.len(), || None);
        let mut by_index: Vec<Option<Result<u64, StoreError>>> = Vec::new();
        by_index.resize_with(order.len(), || None);
        for (outcome, i) in sorted.into_iter().zip(order) {
            by_index[i] = outcome;
        }
        if failed.is_none() {
            // Files the content ended before: the catalog places them past its end.
            for o in by_index.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Err(StoreError::CorruptBlob {
                    id: *pack,
                    reason: "the pack ends before a file the catalog places in it".into(),
                }));
            }
        }
        (by_index, failed)
    }
}

struct Built {
    object: Option<(BlobId, u64, Vec<u8>)>,
    members: Vec<Packing>,
}

fn build(candidates: &[PackCandidate], level: i32, frame_size: u32) -> Result<Built, StoreError> {
    let total: u64 = candidates.iter().map(|c| c.size).sum();
    let mut content = Vec::with_capacity((PACK_NONCE_LEN + total) as usize);
    content.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let mut members = Vec::with_capacity(candidates.len());
    let mut packed = 0;
    for c in candidates {
        let outcome = append_member(&mut content, c)?;
        if matches!(outcome, Packing::Packed { .. }) {
            packed += 1;
        }
        members.push(outcome);
    }
    if packed == 0 {
        return Ok(Built {
            object: None,
            members,
        });
    }
    let id = BlobId::from_bytes(*blake3::hash(&content).as_bytes());
    let encoded = encode_to_vec(&content, level, frame_size);
    Ok(Built {
        object: Some((id, content.len() as u64, encoded)),
        members,
    })
}

/// Appends the first readable path of `c` to `content` if its bytes still hash to `c.id`.
fn append_member(content: &mut Vec<u8>, c: &PackCandidate) -> Result<Packing, StoreError> {
    for path in &c.paths {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::ReadFile {
                    path: path.clone(),
                    source,
                });
            }
        };
        let offset = content.len() as u64;
        // One byte more than expected shows a file that grew.
        file.take(c.size + 1)
            .read_to_end(content)
            .map_err(|source| StoreError::ReadFile {
                path: path.clone(),
                source,
            })?;
        let read = &content[offset as usize..];
        if read.len() as u64 != c.size || blake3::hash(read).as_bytes() != c.id.as_bytes() {
            content.truncate(offset as usize);
            return Ok(Packing::Changed);
        }
        return Ok(Packing::Packed { offset });
    }
    Ok(Packing::Vanished)
}

type Outcomes = Arc<Mutex<Vec<Option<Result<u64, StoreError>>>>>;

/// Sets the outcome of file `i` (index into the splitter's `files`).
fn record(outcomes: &Outcomes, i: usize, outcome: Result<u64, StoreError>) {
    if let Ok(mut o) = outcomes.lock() {
        o[i] = Some(outcome);
    }
}

/// A `Write` that routes a pack's content, as it streams, to the files wanted from it.
/// Dropped before the end (a failed download), it removes the `.partial` file it was
/// writing; files it completed were verified and stay in place.
struct PackSplitter {
    /// Sorted by offset.
    files: Vec<PackExtract>,
    /// Position in the pack's content.
    pos: u64,
    /// The file being written (index into `files`), its open `.partial` and hasher.
    current: Option<(usize, File, blake3::Hasher)>,
    /// Next file (index into `files`) not yet started.
    next: usize,
    /// Outcome per file (index into `files`), once known; shared so that the outcomes
    /// survive a download that fails half way.
    outcomes: Outcomes,
    /// Where each file of `files` was in the caller's order.
    order: Vec<usize>,
    /// Completed files being fsynced and renamed on other threads, oldest first: each
    /// receiver hears once its file's outcome is set (or its job panicked).
    settling: VecDeque<std_mpsc::Receiver<()>>,
}

/// Completed files of one pack fsynced at once. A small file's fsync is a couple of
/// synchronous device writes (data, then inode); one after another they kept a pack's
/// thread waiting on the disk for most of a restore.
const SETTLING_AT_ONCE: usize = 8;

/// Threads that fsync and rename the files taken out of packs, shared by the process.
/// Their own, not tokio's blocking pool: a pack's reading thread waits for them, and
/// readers waiting on tasks of the very pool they fill could deadlock once it is full
/// (`--parallel` lets hundreds of packs be read at once).
const SETTLER_THREADS: usize = 16;

type SettleJob = Box<dyn FnOnce() + Send>;

/// The queue of the settler threads, started on first use; `None` if no thread could
/// be started (files are then settled on the reading thread).
fn settlers() -> Option<&'static std_mpsc::Sender<SettleJob>> {
    static SETTLERS: OnceLock<Option<std_mpsc::Sender<SettleJob>>> = OnceLock::new();
    SETTLERS
        .get_or_init(|| {
            let (queue, jobs) = std_mpsc::channel::<SettleJob>();
            let jobs = Arc::new(Mutex::new(jobs));
            let started = (0..SETTLER_THREADS)
                .filter(|n| {
                    let jobs = jobs.clone();
                    std::thread::Builder::new()
                        .name(format!("tablesafe-settle-{n}"))
                        .spawn(move || settle_jobs(&jobs))
                        .is_ok()
                })
                .count();
            (started > 0).then_some(queue)
        })
        .as_ref()
}

/// A settler thread: runs jobs until the queue is gone. A job that panics loses only
/// itself (its file is then reported without an outcome).
fn settle_jobs(jobs: &Mutex<std_mpsc::Receiver<SettleJob>>) {
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

impl PackSplitter {
    fn new(files: Vec<PackExtract>) -> PackSplitter {
        let mut indexed: Vec<(usize, PackExtract)> = files.into_iter().enumerate().collect();
        // An empty file shares its offset with the file after it: it goes first, since
        // it is complete before that file's first byte.
        indexed.sort_by_key(|(_, f)| (f.offset, f.size));
        let order = indexed.iter().map(|(i, _)| *i).collect();
        let files: Vec<PackExtract> = indexed.into_iter().map(|(_, f)| f).collect();
        let outcomes = Arc::new(Mutex::new(files.iter().map(|_| None).collect()));
        PackSplitter {
            files,
            pos: 0,
            current: None,
            next: 0,
            outcomes,
            order,
            settling: VecDeque::new(),
        }
    }

    fn set(&self, i: usize, outcome: Result<u64, StoreError>) {
        record(&self.outcomes, i, outcome);
    }

    /// Opens `<dest>.partial` for file `i`; a failure is that file's outcome.
    fn start(&mut self, i: usize) {
        let opened = create_partial(&self.files[i].dest).map(|(_, file)| file);
        match opened {
            Ok(file) => self.current = Some((i, file, blake3::Hasher::new())),
            Err(e) => self.set(i, Err(e)),
        }
    }

    /// The current file is complete: fsync, check and rename it on a settler thread,
    /// at most [`SETTLING_AT_ONCE`] of this pack's files at a time.
    fn complete(&mut self) {
        let Some((i, file, hasher)) = self.current.take() else {
            return;
        };
        let f = self.files[i].clone();
        let actual = BlobId::from_bytes(*hasher.finalize().as_bytes());
        let outcomes = self.outcomes.clone();
        let settle = move || {
            let outcome = partial_path(&f.dest)
                .and_then(|partial| place_verified(file, &partial, &f.dest, f.id, actual, f.mtime))
                .map(|()| f.size);
            record(&outcomes, i, outcome);
        };
        while self.settling.len() >= SETTLING_AT_ONCE {
            self.settle_oldest();
        }
        let (done, heard) = std_mpsc::sync_channel(1);
        let job: SettleJob = Box::new(move || {
            settle();
            let _ = done.send(());
        });
        match settlers() {
            Some(queue) => {
                if let Err(unsent) = queue.send(job) {
                    (unsent.0)();
                }
            }
            None => job(),
        }
        self.settling.push_back(heard);
    }

    /// Waits for the oldest file being settled (an error means its job panicked: the
    /// file has no outcome, which the caller reports).
    fn settle_oldest(&mut self) {
        if let Some(heard) = self.settling.pop_front() {
            let _ = heard.recv();
        }
    }

    /// Waits for every file being settled.
    fn settle_all(&mut self) {
        while !self.settling.is_empty() {
            self.settle_oldest();
        }
    }

    /// Abandons the current file with `error`.
    fn abandon(&mut self, error: Option<StoreError>) {
        if let Some((i, file, _)) = self.current.take() {
            drop(file);
            if let Ok(p) = partial_path(&self.files[i].dest) {
                let _ = std::fs::remove_file(p);
            }
            if let Some(e) = error {
                self.set(i, Err(e));
            }
        }
    }
}

impl Drop for PackSplitter {
    fn drop(&mut self) {
        self.abandon(None);
        self.settle_all();
    }
}

impl Write for PackSplitter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let len = buf.len();
        loop {
            // Start every file whose first byte is here (an empty one completes at once;
            // one at the very end of the content is started after the last byte).
            while self.current.is_none() && self.next < self.files.len() {
                let f = &self.files[self.next];
                if f.offset > self.pos {
                    break;
                }
                let i = self.next;
                self.next += 1;
                if f.offset < self.pos {
                    let e = StoreError::Internal(format!(
                        "the catalog places file {} over another in its pack",
                        f.id
                    ));
                    self.set(i, Err(e));
                    continue;
                }
                self.start(i);
                if self.files[i].size == 0 {
                    self.complete();
                }
            }
            if buf.is_empty() {
                return Ok(len);
            }
            let until = match &self.current {
                Some((i, _, _)) => self.files[*i].offset + self.files[*i].size,
                None => self.files.get(self.next).map_or(u64::MAX, |f| f.offset),
            };
            let take = (until - self.pos).min(buf.len() as u64) as usize;
            let (chunk, rest) = buf.split_at(take);
            if let Some((i, file, hasher)) = self.current.as_mut() {
                hasher.update(chunk);
                if let Err(source) = file.write_all(chunk) {
                    // A full disk fails this file; the others still get their bytes.
                    let path = self.files[*i].dest.clone();
                    self.abandon(Some(StoreError::WriteFile { path, source }));
                }
            }
            self.pos += take as u64;
            buf = rest;
            if self.pos == until && self.current.is_some() {
                self.complete();
            }
        }
    }

    /// Called once the content has been written: waits for the files still settling,
    /// here on the reading thread rather than in `drop`, which may run on an async one.
    fn flush(&mut self) -> io::Result<()> {
        self.settle_all();
        Ok(())
    }
}
