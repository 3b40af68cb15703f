//! Catalog changes: the records a backup produces, applied to the local SQLite catalog and
//! mirrored, batch by batch, to the repository as `nodes/<node>/log/<seq>`.
//!
//! One code path ([`super::Replay::apply`]) applies a batch whether it was just
//! produced by a backup or read back from the repository by `catalog rebuild`, so the
//! rebuilt catalog answers every query exactly as the original did. Applying the same
//! batch twice changes nothing.
//!
//! On the wire a batch is bincode (standard config) compressed with zstd, behind an
//! 8-byte magic that carries the encoding version. Version 2 (written since issue 20)
//! puts the BLAKE3 of the bincode bytes right after the magic and writes the zstd frame
//! with its content checksum, so one flipped bit anywhere in the object is caught
//! before the batch is applied. Version 1 objects (no checksum) still decode.

use serde::{Deserialize, Serialize};

use crate::timespec::Micros;

/// Magic and encoding version at the start of every log object written now:
/// followed by the BLAKE3 (32 bytes) of the bincode-encoded batch, then a zstd frame
/// with content checksum holding those bincode bytes.
pub const LOG_MAGIC: &[u8; 8] = b"TSLOG\x00\x00\x02";

/// The first encoding (before issue 20): magic, then a zstd frame without checksum of
/// the bincode bytes. Still decoded; never written.
pub const LOG_MAGIC_V1: &[u8; 8] = b"TSLOG\x00\x00\x01";

/// Decoded bincode bytes a log object may hold: far above any real batch (a pass
/// over a million files is ~100 MiB), it stops a damaged frame header from asking for
/// unbounded memory.
const MAX_BATCH_BYTES: u64 = 1 << 30;

/// Identifies one file path on one node: where it is, not what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileKey {
    /// The Cassandra data directory (as configured) the file lives under.
    pub data_dir: String,
    pub keyspace: String,
    pub table: String,
    /// Table id from the directory name; empty before 2.1.
    pub table_id: String,
    /// Path inside the table directory, e.g. `nb-5-big-Data.db`,
    /// `snapshots/daily/nb-5-big-Data.db`, `backups/.val_idx/nb-2-big-TOC.txt`.
    pub rel_path: String,
}

impl FileKey {
    /// The table directory's name: `<table>-<id>`, or `<table>` before 2.1.
    pub fn table_dir_name(&self) -> String {
        if self.table_id.is_empty() {
            self.table.clone()
        } else {
            format!("{}-{}", self.table, self.table_id)
        }
    }

    /// Path relative to the data directory: `<keyspace>/<table dir>/<rel_path>`.
    pub fn data_relative_path(&self) -> String {
        format!(
            "{}/{}/{}",
            self.keyspace,
            self.table_dir_name(),
            self.rel_path
        )
    }
}

/// A blob's content hash (BLAKE3 of the uncompressed bytes).
pub type Hash32 = [u8; 32];

/// One change to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A blob became durable in the repository.
    Blob {
        hash: Hash32,
        size: u64,
        stored_size: u64,
    },
    /// From `at`, the file at `key` holds blob `hash` (ends any open version of it).
    Start {
        key: FileKey,
        hash: Hash32,
        size: u64,
        /// The file's modification time, restored with it.
        mtime: Micros,
        at: Micros,
    },
    /// From `at`, the file at `key` no longer exists.
    End { key: FileKey, at: Micros },
    /// A named point in time.
    Snapshot {
        name: String,
        time: Micros,
        /// What the point covers, e.g. `all` or a list of keyspace globs.
        scope: String,
        files: u64,
        bytes: u64,
    },
    /// An SSTable whose Data.db did not match its digest: not backed up, recorded so the
    /// operator sees it in `snapshot show` and the next backups.
    Corrupt {
        key: FileKey,
        detail: String,
        at: Micros,
    },
    // The variants below are written only by `tablesafe gc`, to the repository's gc log
    // (`gc/log/<seq>`, stream [`GC_STREAM`]); every catalog replays them after the nodes'
    // own logs. New variants go at the end: bincode numbers variants by position.
    /// Retention applied to `node`: every instant from `keep_from` on stays restorable,
    /// and before it only the instants in `points` (retained snapshots). Versions that
    /// ended by `keep_from` and cover no retained point are forgotten, and the snapshots
    /// in `dropped_snapshots` with them.
    Retention {
        node: String,
        keep_from: Micros,
        points: Vec<Micros>,
        dropped_snapshots: Vec<String>,
    },
    /// No retained version refers to these blobs: condemned at the batch's time. A
    /// backup that needs one again uploads it again (its last-modified time then
    /// postdates the condemnation, which saves it), and gc deletes it only after the
    /// grace period if it is still unreferenced and untouched.
    Condemn { hashes: Vec<Hash32> },
    /// These condemned blobs are referenced (or were uploaded) again: no longer condemned.
    Absolve { hashes: Vec<Hash32> },
    /// These blobs were deleted from the repository.
    Delete { hashes: Vec<Hash32> },
    /// Blob `pack` (recorded by a `Blob` change before this one) is a pack: its content
    /// is the concatenation of small files, and these members sit in it at these
    /// offsets. A member is restored from its pack; gc keeps a pack while a retained
    /// version refers to a member it is the chosen location of (see `catalog::reach`).
    Packed {
        pack: Hash32,
        members: Vec<PackMember>,
    },
    /// The catalog that wrote this batch: every batch of a node starts with it (batches
    /// written before it existed have none, and still decode: a new variant needs no
    /// new encoding version, though a tablesafe older than it cannot read such logs).
    /// A catalog writes a node's history only while the node's latest batch is its own
    /// (see `catalog::writer`).
    Writer {
        /// The writing catalog's random id.
        id: String,
        /// The host it ran on, for messages.
        host: String,
    },
}

/// Where one small file's bytes sit inside a pack's (uncompressed) content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackMember {
    pub hash: Hash32,
    pub offset: u64,
    pub size: u64,
}

/// The name under which gc's batches are numbered (`gc/log/<seq>`): not a valid node
/// name, since node names become object key segments and never start with `@`.
pub const GC_STREAM: &str = "@gc";

/// A committed group of changes from one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub node: String,
    /// Per-node sequence number, from 1, without gaps.
    pub seq: u64,
    pub time: Micros,
    pub changes: Vec<Change>,
}

/// A log object that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("catalog log object is damaged or of an unknown format: {0}")]
pub struct CodecError(pub String);

impl Batch {
    /// Encodes the batch for the repository: [`LOG_MAGIC`], the BLAKE3 of the bincode
    /// bytes, then those bytes in one zstd frame with content checksum.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let body = self.bincode()?;
        let mut encoder = zstd::bulk::Compressor::new(3).map_err(codec)?;
        encoder
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .map_err(codec)?;
        let compressed = encoder.compress(&body).map_err(codec)?;
        let mut out = Vec::with_capacity(LOG_MAGIC.len() + 32 + compressed.len());
        out.extend_from_slice(LOG_MAGIC);
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    /// The first encoding ([`LOG_MAGIC_V1`]: no checksum), kept so tests can write the
    /// logs an older tablesafe wrote and check they still decode.
    pub fn encode_v1(&self) -> Result<Vec<u8>, CodecError> {
        let compressed = zstd::bulk::compress(&self.bincode()?, 3).map_err(codec)?;
        let mut out = LOG_MAGIC_V1.to_vec();
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    fn bincode(&self) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(codec)
    }

    /// Decodes what [`Batch::encode`] (or [`Batch::encode_v1`]) wrote. A version 2
    /// object whose bytes do not hash to the checksum it carries is refused.
    pub fn decode(bytes: &[u8]) -> Result<Batch, CodecError> {
        let raw = if let Some(rest) = bytes.strip_prefix(LOG_MAGIC.as_slice()) {
            let (sum, frame) = rest
                .split_at_checked(32)
                .ok_or_else(|| CodecError("truncated before its checksum".into()))?;
            let raw = decompress(frame)?;
            if blake3::hash(&raw).as_bytes() != sum {
                return Err(CodecError(
                    "checksum mismatch: its content is not what was written".into(),
                ));
            }
            raw
        } else if let Some(frame) = bytes.strip_prefix(LOG_MAGIC_V1.as_slice()) {
            decompress(frame)?
        } else {
            return Err(CodecError(
                "missing magic (not a tablesafe log object, or a newer format)".into(),
            ));
        };
        let (batch, used) =
            bincode::serde::decode_from_slice(&raw, bincode::config::standard()).map_err(codec)?;
        if used != raw.len() {
            return Err(CodecError("trailing bytes after the batch".into()));
        }
        Ok(batch)
    }
}

/// One zstd frame's content, checked against the frame's own checksum when it has one.
fn decompress(frame: &[u8]) -> Result<Vec<u8>, CodecError> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(frame).map_err(codec)?;
    let mut raw = Vec::new();
    decoder
        .take(MAX_BATCH_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| CodecError(format!("compressed frame: {e}")))?;
    if raw.len() as u64 > MAX_BATCH_BYTES {
        return Err(CodecError("decodes to more than 1 GiB".into()));
    }
    Ok(raw)
}

fn codec(e: impl std::fmt::Display) -> CodecError {
    CodecError(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_roundtrip_and_damage_is_detected() {
        let key = FileKey {
            data_dir: "/var/lib/cassandra/data".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            table_id: "0123456789abcdef0123456789abcdef".into(),
            rel_path: "nb-1-big-Data.db".into(),
        };
        let batch = Batch {
            node: "n1".into(),
            seq: 7,
            time: 42,
            changes: vec![
                Change::Writer {
                    id: "9a1c".into(),
                    host: "cass-1".into(),
                },
                Change::Blob {
                    hash: [1; 32],
                    size: 10,
                    stored_size: 5,
                },
                Change::Packed {
                    pack: [3; 32],
                    members: vec![PackMember {
                        hash: [4; 32],
                        offset: 16,
                        size: 10,
                    }],
                },
                Change::Start {
                    key: key.clone(),
                    hash: [1; 32],
                    size: 10,
                    mtime: 3,
                    at: 41,
                },
                Change::End { key, at: 42 },
            ],
        };
        let bytes = batch.encode().unwrap();
        assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        assert!(Batch::decode(&bytes[..bytes.len() - 2]).is_err());
        assert!(Batch::decode(b"garbage").is_err());
        // One flipped bit anywhere never yields another batch: refused, or (a bit the
        // zstd frame header does not use) the very same batch.
        for i in 0..bytes.len() {
            for bit in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
                let mut flipped = bytes.clone();
                flipped[i] ^= bit;
                if let Ok(decoded) = Batch::decode(&flipped) {
                    assert_eq!(decoded, batch, "byte {i} bit {bit:#x}");
                }
            }
        }
        // The first format still decodes.
        assert_eq!(Batch::decode(&batch.encode_v1().unwrap()).unwrap(), batch);
    }
}
