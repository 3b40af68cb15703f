//! The blob object format: independent zstd frames, a frame index and a footer.
//!
//! # Layout (format version 1; all integers little-endian)
//!
//! ```text
//! header   16 bytes   magic "TSBLOB" | version u8 = 1 | flags u8 = 0 | frame_size u32 | reserved u32 = 0
//! frame*    9 bytes   kind u8 | raw_len u32 | stored_len u32
//!           + stored_len bytes of payload
//! end       1 byte    0xFF
//! index     9 bytes per frame: a copy of every frame header, in order
//! footer   32 bytes   frame_count u64 | raw_size u64 | end_offset u64 | magic "TSBLEND" | version u8 = 1
//! ```
//!
//! - `kind` 0 = raw (the payload is the data itself, `stored_len == raw_len`),
//!   1 = zstd (the payload is one complete zstd frame that decodes to `raw_len` bytes).
//! - Frame `i` covers raw bytes `[i * frame_size, i * frame_size + raw_len)`: every frame
//!   but the last has `raw_len == frame_size`, none is empty, so an empty file has no
//!   frame at all (49 bytes in all). `end_offset` is where the `0xFF` byte sits.
//! - The per-frame headers let a reader decode the object as one sequential stream
//!   (restore downloads it with a single GET and decodes frames in parallel as they
//!   arrive). The index and footer let a reader find any frame without reading the rest
//!   (ranged GETs: the last 32 bytes, then header and index; see
//!   `Repository::blob_index` and `Repository::read_frame`), which partial and parallel
//!   ranged downloads can use, and they make truncation detectable: a blob is complete
//!   only when the end byte, an index equal to the frames read and a footer whose counts
//!   match are all there.
//! - Lengths are bounded by `frame_size` (itself at most [`MAX_FRAME_SIZE`]), so a
//!   damaged length cannot make a reader allocate more than one frame.
//! - Nothing in the format checksums the data: the blob id (BLAKE3 of the raw bytes) is
//!   verified on every restore, which catches any damage the framing does not.
//!
//! # Frame size: 4 MiB
//!
//! zstd at levels 1-3 uses a 512 KiB-1 MiB match window, so frames larger than that gain
//! almost nothing: on text-like data at level 1 the ratio is 0.1894 with 1 MiB frames,
//! 0.1889 with 4 MiB, 0.1888 with 16 and 64 MiB, at the same speed
//! (`benches/store_tuning.rs`). 4 MiB gives 256 units of parallel work per GiB, keeps a
//! reader's or writer's memory at a few frames' worth (tens of MiB whatever the file
//! size), costs 18 bytes of framing per 4 MiB, and fits whole frames in 8 MiB multipart
//! parts.
//!
//! # Level 1, and raw frames for data that does not compress
//!
//! Measured on 64 MiB of text-like data, one thread: level 1 compresses at 205 MiB/s to
//! 0.189, level 2 at 202 MiB/s to 0.193 (no gain), level 3 at 180 MiB/s to 0.184 (2.6 %
//! smaller for 12 % more CPU). A backup of a large node is CPU-bound on 2 cores, so the
//! default is level 1 (the level is recorded per repository at `init`).
//!
//! Most of a Cassandra node's bytes are `Data.db` files already compressed with LZ4
//! (16-64 KiB chunks), which zstd cannot shrink further. zstd level 1 already gives up
//! quickly on such data (2.4 GiB/s per core on random bytes), and the encoder does
//! better still: before compressing a frame, two 32 KiB samples (its start and its
//! middle) are compressed, and if they do not shrink below [`PROBE_RATIO`] (97 %) the
//! frame is stored raw without compressing the rest (1.5 % of the frame is looked at).
//! A frame that is compressed but saves less than 1/32 of its size is also stored raw,
//! so decompression never pays for nothing and a restore of raw frames is a copy.
//!
//! # Data.db that Cassandra compressed: stored as it is
//!
//! LZ4 chunks of text-like rows still shrink by about 15% under zstd level 1, enough to
//! pass the probe, but at a high price: on the benchmark's data, zstd compressed them
//! at ~100 MB/s per core and decompressed them at ~450 MB/s, most of a backup's and of a
//! restore's CPU (a restore of 2.8 GiB took 6.5-7 s of user CPU with them compressed,
//! 2.0-2.5 s stored raw). So the backup marks the `Data.db` of an SSTable that has a
//! `CompressionInfo.db` as [`Content::Compressed`](super::options::Content), and its
//! frames are stored raw without trying zstd, as Medusa and tablesnap store SSTables.
//! Every other component goes through zstd as above, and so does a pack (`pack.rs`),
//! whatever its small files are. A repository created with
//! `recompress` (`tablesafe init --recompress`) compresses them too, for the smallest
//! repository.

use bytes::Bytes;
use std::cell::RefCell;
use std::io::{self, Read};
use std::sync::{Mutex, PoisonError};

/// Version written in the header and footer of every blob.
pub const BLOB_FORMAT_VERSION: u8 = 1;
/// Default raw bytes per frame.
pub const DEFAULT_FRAME_SIZE: u32 = 4 * 1024 * 1024;
/// Smallest frame size accepted at `init`.
pub const MIN_FRAME_SIZE: u32 = 64 * 1024;
/// Largest frame size a reader accepts.
pub const MAX_FRAME_SIZE: u32 = 64 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_LEVEL: i32 = 1;
/// Frames whose samples compress to more than this fraction are stored raw.
pub const PROBE_RATIO: f64 = 0.97;

pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const FRAME_HEADER_LEN: usize = 9;
pub(crate) const FOOTER_LEN: usize = 32;
const MAGIC: &[u8; 6] = b"TSBLOB";
const FOOTER_MAGIC: &[u8; 7] = b"TSBLEND";
const KIND_RAW: u8 = 0;
const KIND_ZSTD: u8 = 1;
const KIND_END: u8 = 0xFF;
const PROBE_LEN: usize = 32 * 1024;

/// How one frame is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Raw,
    Zstd,
}

/// One frame's entry in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    pub kind: FrameKind,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl FrameEntry {
    pub(crate) fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0] = match self.kind {
            FrameKind::Raw => KIND_RAW,
            FrameKind::Zstd => KIND_ZSTD,
        };
        b[1..5].copy_from_slice(&self.raw_len.to_le_bytes());
        b[5..9].copy_from_slice(&self.stored_len.to_le_bytes());
        b
    }

    fn parse(b: &[u8; FRAME_HEADER_LEN], frame_size: u32) -> Result<FrameEntry, FormatError> {
        let kind = match b[0] {
            KIND_RAW => FrameKind::Raw,
            KIND_ZSTD => FrameKind::Zstd,
            k => return Err(FormatError::Bad(format!("unknown frame kind {k:#04x}"))),
        };
        let raw_len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        let stored_len = u32::from_le_bytes([b[5], b[6], b[7], b[8]]);
        if raw_len == 0 || raw_len > frame_size {
            return Err(FormatError::Bad(format!(
                "frame length {raw_len} outside 1..={frame_size}"
            )));
        }
        let ok = match kind {
            FrameKind::Raw => stored_len == raw_len,
            FrameKind::Zstd => stored_len > 0 && stored_len < raw_len,
        };
        if !ok {
            return Err(FormatError::Bad(format!(
                "stored length {stored_len} impossible for a {kind:?} frame of {raw_len} bytes"
            )));
        }
        Ok(FrameEntry {
            kind,
            raw_len,
            stored_len,
        })
    }
}

/// The fixed-size header that starts every blob.
pub(crate) fn encode_header(frame_size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = BLOB_FORMAT_VERSION;
    h[7] = 0;
    h[8..12].copy_from_slice(&frame_size.to_le_bytes());
    h
}

/// End byte, index and footer, given every frame written and where the end byte goes.
pub(crate) fn encode_trailer(frames: &[FrameEntry], raw_size: u64, end_offset: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(1 + frames.len() * FRAME_HEADER_LEN + FOOTER_LEN);
    t.push(KIND_END);
    for f in frames {
        t.extend_from_slice(&f.to_bytes());
    }
    t.extend_from_slice(&(frames.len() as u64).to_le_bytes());
    t.extend_from_slice(&raw_size.to_le_bytes());
    t.extend_from_slice(&end_offset.to_le_bytes());
    t.extend_from_slice(FOOTER_MAGIC);
    t.push(BLOB_FORMAT_VERSION);
    t
}

/// The parsed footer of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub frame_count: u64,
    pub raw_size: u64,
    pub end_offset: u64,
}

/// Parses the last [`FOOTER_LEN`] bytes of a blob.
pub fn parse_footer(b: &[u8]) -> Result<Footer, FormatError> {
    if b.len() != FOOTER_LEN {
        return Err(FormatError::Truncated);
    }
    if &b[24..31] != FOOTER_MAGIC {
        return Err(FormatError::Bad(
            "footer magic missing (truncated or not a blob)".into(),
        ));
    }
    if b[31] > BLOB_FORMAT_VERSION {
        return Err(FormatError::NewerVersion(b[31]));
    }
    let u = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Ok(Footer {
        frame_count: u(0),
        raw_size: u(8),
        end_offset: u(16),
    })
}

/// Where every frame of a blob is, from its header, index and footer alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobIndex {
    /// Raw bytes per frame (every frame but the last has exactly this many).
    pub frame_size: u32,
    /// Raw size of the blob.
    pub raw_size: u64,
    /// The frames, in order.
    pub frames: Vec<IndexedFrame>,
}

/// One frame's place in the blob object and in the raw data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedFrame {
    pub entry: FrameEntry,
    /// Offset of the frame's payload in the object (its 9-byte header precedes it).
    pub payload_offset: u64,
    /// Offset of the frame's first raw byte in the file.
    pub raw_offset: u64,
}

impl BlobIndex {
    /// Builds the index from the 16-byte header, the index bytes and the parsed footer.
    pub fn parse(header: &[u8], index: &[u8], footer: &Footer) -> Result<BlobIndex, FormatError> {
        let reader = BlobReader::new(header)?;
        let frame_size = reader.frame_size;
        if index.len() as u64 != footer.frame_count.saturating_mul(FRAME_HEADER_LEN as u64) {
            return Err(FormatError::Bad(
                "index length does not match the frame count".into(),
            ));
        }
        let mut frames = Vec::with_capacity(index.len() / FRAME_HEADER_LEN);
        let (mut offset, mut raw_offset) = (HEADER_LEN as u64, 0u64);
        for chunk in index.chunks_exact(FRAME_HEADER_LEN) {
            let mut h = [0u8; FRAME_HEADER_LEN];
            h.copy_from_slice(chunk);
            let entry = FrameEntry::parse(&h, frame_size)?;
            frames.push(IndexedFrame {
                entry,
                payload_offset: offset + FRAME_HEADER_LEN as u64,
                raw_offset,
            });
            offset += (FRAME_HEADER_LEN as u64) + u64::from(entry.stored_len);
            raw_offset += u64::from(entry.raw_len);
        }
        if offset != footer.end_offset || raw_offset != footer.raw_size {
            return Err(FormatError::Bad(
                "index does not add up to the footer".into(),
            ));
        }
        Ok(BlobIndex {
            frame_size,
            raw_size: raw_offset,
            frames,
        })
    }
}

/// Decodes one frame's payload (as fetched with a ranged read) into its raw bytes.
pub fn decode_payload(entry: FrameEntry, payload: Vec<u8>) -> Result<Vec<u8>, FormatError> {
    if payload.len() != entry.stored_len as usize {
        return Err(FormatError::Truncated);
    }
    decode_frame(entry, payload)
}

/// What is wrong with a blob's bytes.
#[derive(Debug)]
pub enum FormatError {
    /// The object ended early.
    Truncated,
    /// The blob was written by a newer tablesafe.
    NewerVersion(u8),
    /// Anything else that does not follow the layout.
    Bad(String),
    /// The transport (not the data) failed while reading.
    Io(io::Error),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Truncated => {
                f.write_str("the object is truncated (it ends before its footer)")
            }
            FormatError::NewerVersion(v) => write!(
                f,
                "blob format {v} is newer than this tablesafe supports ({BLOB_FORMAT_VERSION}): upgrade tablesafe"
            ),
            FormatError::Bad(m) => f.write_str(m),
            FormatError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

fn read_exact_or_truncated<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FormatError::Truncated
        } else {
            FormatError::Io(e)
        }
    })
}

/// Reads a blob as one sequential stream: the header, then frame after frame, then
/// (when [`BlobReader::next_frame`] returns `None`) a verified trailer.
pub(crate) struct BlobReader<R> {
    r: R,
    frame_size: u32,
    frames: Vec<FrameEntry>,
    raw_size: u64,
    offset: u64,
}

impl<R: Read> BlobReader<R> {
    pub(crate) fn new(mut r: R) -> Result<BlobReader<R>, FormatError> {
        let mut h = [0u8; HEADER_LEN];
        read_exact_or_truncated(&mut r, &mut h)?;
        if &h[..6] != MAGIC {
            return Err(FormatError::Bad(
                "header magic missing: not a tablesafe blob".into(),
            ));
        }
        if h[6] > BLOB_FORMAT_VERSION {
            return Err(FormatError::NewerVersion(h[6]));
        }
        if h[6] == 0 {
            return Err(FormatError::Bad("blob format version 0".into()));
        }
        let frame_size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if frame_size == 0 || frame_size > MAX_FRAME_SIZE {
            return Err(FormatError::Bad(format!(
                "frame size {frame_size} out of range"
            )));
        }
        Ok(BlobReader {
            r,
            frame_size,
            frames: Vec::new(),
            raw_size: 0,
            offset: HEADER_LEN as u64,
        })
    }

    /// The next frame and its payload, or `None` after a complete, consistent trailer.
    pub(crate) fn next_frame(&mut self) -> Result<Option<(FrameEntry, Vec<u8>)>, FormatError> {
        let Some(entry) = self.next_header()? else {
            return Ok(None);
        };
        let mut payload = Vec::new();
        self.read_payload(entry, &mut payload)?;
        Ok(Some((entry, payload)))
    }

    /// The next frame's header, or `None` after a complete, consistent trailer; the
    /// caller then reads its payload with [`BlobReader::read_payload`] (into a buffer of
    /// its choosing: see `frame_pool`).
    pub(crate) fn next_header(&mut self) -> Result<Option<FrameEntry>, FormatError> {
        let mut kind = [0u8; 1];
        read_exact_or_truncated(&mut self.r, &mut kind)?;
        if kind[0] == KIND_END {
            self.read_trailer()?;
            return Ok(None);
        }
        if let Some(last) = self.frames.last()
            && last.raw_len != self.frame_size
        {
            return Err(FormatError::Bad(
                "a short frame is followed by another frame".into(),
            ));
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[0] = kind[0];
        read_exact_or_truncated(&mut self.r, &mut h[1..])?;
        FrameEntry::parse(&h, self.frame_size).map(Some)
    }

    /// Reads the payload of the frame whose header [`BlobReader::next_header`] just
    /// returned into `payload`, resized to it (a reused buffer already long enough is
    /// not zeroed first).
    pub(crate) fn read_payload(
        &mut self,
        entry: FrameEntry,
        payload: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        payload.resize(entry.stored_len as usize, 0);
        read_exact_or_truncated(&mut self.r, payload)?;
        self.frames.push(entry);
        self.raw_size += u64::from(entry.raw_len);
        self.offset += (FRAME_HEADER_LEN + payload.len()) as u64;
        Ok(())
    }

    fn read_trailer(&mut self) -> Result<(), FormatError> {
        let mut index = vec![0u8; self.frames.len() * FRAME_HEADER_LEN];
        read_exact_or_truncated(&mut self.r, &mut index)?;
        for (i, chunk) in index.chunks_exact(FRAME_HEADER_LEN).enumerate() {
            let mut h = [0u8; FRAME_HEADER_LEN];
            h.copy_from_slice(chunk);
            let e = FrameEntry::parse(&h, self.frame_size)?;
            if e != self.frames[i] {
                return Err(FormatError::Bad(format!(
                    "index entry {i} does not match frame {i}"
                )));
            }
        }
        let mut footer = [0u8; FOOTER_LEN];
        read_exact_or_truncated(&mut self.r, &mut footer)?;
        let f = parse_footer(&footer)?;
        if f.frame_count != self.frames.len() as u64
            || f.raw_size != self.raw_size
            || f.end_offset != self.offset
        {
            return Err(FormatError::Bad(format!(
                "footer says {} frames, {} bytes, end at {}; found {} frames, {} bytes, end at {}",
                f.frame_count,
                f.raw_size,
                f.end_offset,
                self.frames.len(),
                self.raw_size,
                self.offset
            )));
        }
        let mut extra = [0u8; 1];
        loop {
            match self.r.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(FormatError::Bad("data after the footer".into())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FormatError::Io(e)),
            }
        }
    }

    /// Raw bytes described by the frames read so far.
    pub(crate) fn raw_size(&self) -> u64 {
        self.raw_size
    }
}

/// A frame ready to be written: its header and payload.
pub struct EncodedFrame {
    pub entry: FrameEntry,
    pub payload: Bytes,
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd compression contexts (about 0.6 MB each at level 3), shared by the process and
/// reused. Frames are compressed on rayon's threads, but small ones on whichever
/// blocking thread reads them (`write::encode_file`, `pack`): contexts kept per thread
/// grew with every blocking thread tokio ever started (31 contexts, 18 MB of the S3
/// initial backup's peak). Now as many exist as compress at once, and
/// [`KEPT_COMPRESSORS`] stay for reuse.
static COMPRESSORS: Mutex<Vec<(i32, zstd::bulk::Compressor<'static>)>> = Mutex::new(Vec::new());

/// Compression contexts kept for reuse.
const KEPT_COMPRESSORS: usize = 8;

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> io::Result<T>,
) -> io::Result<T> {
    let kept = {
        let mut kept = COMPRESSORS.lock().unwrap_or_else(PoisonError::into_inner);
        let at = kept.iter().position(|(l, _)| *l == level);
        at.map(|i| kept.swap_remove(i).1)
    };
    let mut compressor = match kept {
        Some(c) => c,
        None => zstd::bulk::Compressor::new(level)?,
    };
    let out = f(&mut compressor);
    let mut kept = COMPRESSORS.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() < KEPT_COMPRESSORS {
        kept.push((level, compressor));
    }
    out
}

/// True when samples of `raw` suggest zstd will not shrink it meaningfully.
fn looks_incompressible(raw: &[u8], level: i32) -> bool {
    if raw.len() < 4 * PROBE_LEN {
        return false; // small frames: just try the whole thing
    }
    let mid = raw.len() / 2;
    let samples = [&raw[..PROBE_LEN], &raw[mid..mid + PROBE_LEN]];
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(PROBE_LEN));
    let mut stored = 0usize;
    for s in samples {
        out.clear();
        match with_compressor(level, |c| c.compress_to_buffer(s, &mut out)) {
            Ok(n) => stored += n,
            Err(_) => return false,
        }
    }
    stored as f64 > PROBE_RATIO * (2 * PROBE_LEN) as f64
}

/// Compresses one frame, or keeps it raw when compression does not pay.
pub fn encode_frame(raw: Vec<u8>, level: i32) -> EncodedFrame {
    encode_frame_into(raw, Vec::new(), level)
}

/// [`encode_frame`] with the output buffer supplied by the caller (its capacity is
/// grown as needed). The pipelines allocate every large buffer on their one reader
/// thread so that glibc serves them all from one arena: buffers allocated on the rayon
/// threads and freed elsewhere made each thread's arena keep its own high-water mark
/// (measured: 130 MB peak RSS instead of 70 MB for a 1 GiB compressible file).
pub(crate) fn encode_frame_into(raw: Vec<u8>, mut out: Vec<u8>, level: i32) -> EncodedFrame {
    let raw_len = raw.len() as u32;
    if raw.is_empty() || looks_incompressible(&raw, level) {
        return raw_frame(raw);
    }
    // Keep zstd only if it saves at least 1/32 of the frame: the output buffer is that
    // big and no bigger, so zstd itself fails ("destination too small") otherwise.
    let limit = raw.len() - raw.len() / 32 - 1;
    out.clear();
    out.reserve_exact(limit);
    match with_compressor(level, |c| c.compress_to_buffer(&raw, &mut out)) {
        Ok(n) if n > 0 && n < raw.len() => {
            // The buffer was sized for the worst case: copy the frame out at its exact
            // size, or every queued frame would pin ~frame_size bytes (a 4:1 frame
            // would hold 4x its size in the upload queue).
            let payload = Bytes::copy_from_slice(&out[..n]);
            EncodedFrame {
                entry: FrameEntry {
                    kind: FrameKind::Zstd,
                    raw_len,
                    stored_len: n as u32,
                },
                payload,
            }
        }
        _ => raw_frame(raw),
    }
}

/// A frame stored as it is.
pub(crate) fn raw_frame(raw: Vec<u8>) -> EncodedFrame {
    let raw_len = raw.len() as u32;
    EncodedFrame {
        entry: FrameEntry {
            kind: FrameKind::Raw,
            raw_len,
            stored_len: raw_len,
        },
        payload: Bytes::from_owner(super::frame_pool::Recycled(raw)),
    }
}

/// Decodes one frame's payload into its raw bytes.
pub(crate) fn decode_frame(entry: FrameEntry, payload: Vec<u8>) -> Result<Vec<u8>, FormatError> {
    decode_frame_into(entry, payload, Vec::new())
}

/// [`decode_frame`] into a caller-supplied buffer (see [`encode_frame_into`] for why).
pub(crate) fn decode_frame_into(
    entry: FrameEntry,
    payload: Vec<u8>,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, FormatError> {
    match entry.kind {
        FrameKind::Raw => Ok(payload),
        FrameKind::Zstd => {
            decompress_frame_into(entry, &payload, &mut out)?;
            Ok(out)
        }
    }
}

/// Decompresses a zstd frame's payload into `out` (cleared first; its spare capacity
/// is written, not zeroed), checking the size the index gives.
pub(crate) fn decompress_frame_into(
    entry: FrameEntry,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    out.clear();
    out.reserve_exact(entry.raw_len as usize);
    let n = DECOMPRESSOR
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            match slot.as_mut() {
                Some(d) => d.decompress_to_buffer(payload, out),
                None => Err(io::Error::other("zstd decompressor missing")),
            }
        })
        .map_err(|e| FormatError::Bad(format!("zstd frame does not decode: {e}")))?;
    if n != entry.raw_len as usize {
        return Err(FormatError::Bad(format!(
            "zstd frame decoded to {n} bytes, index says {}",
            entry.raw_len
        )));
    }
    Ok(())
}

/// Encodes a whole buffer as a blob, in memory and on the calling thread (small blobs,
/// tests, benchmarks).
pub fn encode_to_vec(data: &[u8], level: i32, frame_size: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    out.extend_from_slice(&encode_header(frame_size));
    let mut frames = Vec::new();
    for chunk in data.chunks(frame_size.max(1) as usize) {
        let f = encode_frame(chunk.to_vec(), level);
        out.extend_from_slice(&f.entry.to_bytes());
        out.extend_from_slice(&f.payload);
        frames.push(f.entry);
    }
    let end = out.len() as u64;
    out.extend_from_slice(&encode_trailer(&frames, data.len() as u64, end));
    out
}

/// Decodes a whole blob held in memory, on the calling thread.
pub fn decode_from_slice(blob: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut r = BlobReader::new(blob)?;
    let mut out = Vec::new();
    while let Some((entry, payload)) = r.next_frame()? {
        out.extend_from_slice(&decode_frame(entry, payload)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let words = [
            "keyspace ",
            "table ",
            "partition ",
            "row ",
            "cell ",
            "42 ",
            "\n",
        ];
        let mut v = Vec::with_capacity(n);
        let mut i = 0usize;
        while v.len() < n {
            v.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_at_frame_boundaries() {
        let fs = 64 * 1024u32;
        for n in [
            0,
            1,
            fs as usize - 1,
            fs as usize,
            fs as usize + 1,
            2 * fs as usize,
        ] {
            for data in [text(n), noise(n)] {
                let blob = encode_to_vec(&data, 1, fs);
                assert_eq!(decode_from_slice(&blob).unwrap(), data, "n={n}");
            }
        }
        assert_eq!(encode_to_vec(&[], 1, fs).len(), HEADER_LEN + 1 + FOOTER_LEN);
    }

    #[test]
    fn text_is_compressed_noise_is_raw() {
        let f = encode_frame(text(1 << 20), 1);
        assert_eq!(f.entry.kind, FrameKind::Zstd);
        assert!(f.entry.stored_len < (1 << 18));
        let f = encode_frame(noise(1 << 20), 1);
        assert_eq!(f.entry.kind, FrameKind::Raw);
        // small incompressible frames skip the probe but still end up raw
        let f = encode_frame(noise(1000), 1);
        assert_eq!(f.entry.kind, FrameKind::Raw);
    }

    #[test]
    fn every_truncation_is_detected() {
        let data = text(200_000);
        let blob = encode_to_vec(&data, 1, 64 * 1024);
        for cut in 0..blob.len() {
            assert!(decode_from_slice(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode_from_slice(&longer).is_err());
    }

    #[test]
    fn footer_locates_the_index() {
        let data = noise(150_000);
        let blob = encode_to_vec(&data, 1, 64 * 1024);
        let f = parse_footer(&blob[blob.len() - FOOTER_LEN..]).unwrap();
        assert_eq!(f.frame_count, 3);
        assert_eq!(f.raw_size, 150_000);
        assert_eq!(blob[f.end_offset as usize], KIND_END);
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut blob = encode_to_vec(b"abc", 1, 64 * 1024);
        blob[6] = 9;
        assert!(matches!(
            decode_from_slice(&blob),
            Err(FormatError::NewerVersion(9))
        ));
    }
}
