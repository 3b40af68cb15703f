//! Blob ids: the BLAKE3 hash of a file's raw bytes, and how files are hashed.
//!
//! A [`BlobId`] is 32 bytes, shown and stored as 64 lowercase hex digits. It is the
//! hash of the *uncompressed* content, so the same file always has the same id
//! whatever the compression settings, and a restore can verify what it wrote.
//!
//! # Hashing files
//!
//! Files of at least [`PARALLEL_THRESHOLD`] (1 MiB) are memory-mapped and hashed with
//! BLAKE3's multi-threaded `update_rayon`; smaller files go through a plain read loop.
//! Measured with `benches/store_tuning.rs` on the 2-core development machine
//! (page-cached files, MiB/s, read loop vs mmap + rayon), once with both cores free
//! and once while another build ran:
//!
//! | size | cores free | contended |
//! |---|---|---|
//! | 64 KiB | 2689 vs 1754 | 2826 vs 1622 |
//! | 256 KiB | 3023 vs 3818 | 3335 vs 2878 |
//! | 1 MiB | 2972 vs 6220 | 3115 vs 2873 |
//! | 4 MiB | 2898 vs 7206 | 3112 vs 3759 |
//! | 64 MiB | 2562 vs 6824 | 2754 vs 3732 |
//!
//! From 1 MiB the parallel path doubles the speed when the cores are free and costs
//! nothing measurable when they are not; below it the gain is small or negative, and
//! small files are hashed many at a time by the backup anyway.
//!
//! Large files are mapped in windows of [`MMAP_WINDOW`] (8 MiB), one at a time, rather
//! than whole as `Hasher::update_mmap_rayon` does: a whole-file mapping makes every
//! page of the file resident in the process while it is hashed, so the process's RSS
//! grows to the file size (`b3sum` on a 4 GiB file: 4.2 GB max RSS; hashing the same
//! file in 16 MiB windows adds under 20 MB). The hash is identical either way; 16 MiB
//! windows hashed as fast as 64 MiB ones (6.7-6.9 GiB/s on 2 cores), and 8 MiB halves
//! what a backup hashing `--parallel` files at once holds mapped (the S3 initial backup
//! of the benchmark: up to 50 MB of its peak RSS was mapped file pages).
//!
//! A memory map of a file that another process truncates while it is mapped raises
//! SIGBUS. Cassandra never truncates an SSTable component in place (it writes new
//! files and deletes old ones; deletion does not affect a mapping), so this is safe for
//! the files tablesafe backs up; the window also bounds the time any range is mapped.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use super::error::StoreError;

/// Files at least this large are hashed with memory maps and several threads.
pub const PARALLEL_THRESHOLD: u64 = 1024 * 1024;

/// Bytes of a large file mapped at once while hashing.
pub const MMAP_WINDOW: u64 = 8 * 1024 * 1024;

/// The id of a blob: BLAKE3 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// The id of a byte string.
    pub fn of_bytes(bytes: &[u8]) -> BlobId {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> BlobId {
        BlobId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for BlobId {
    fn from(h: blake3::Hash) -> BlobId {
        BlobId(*h.as_bytes())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.to_hex())
    }
}

impl FromStr for BlobId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<BlobId, StoreError> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(StoreError::InvalidId(s.chars().take(80).collect()));
        }
        Ok(BlobId(out))
    }
}

impl serde::Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes a file: its blob id and the number of bytes hashed.
///
/// Blocking and CPU-heavy: call it from `spawn_blocking` or a rayon thread. Returns
/// [`StoreError::SourceChanged`] if the file's length changed while it was hashed.
pub fn hash_file(path: &Path) -> Result<(BlobId, u64), StoreError> {
    let read_err = |source: io::Error| StoreError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut hasher = blake3::Hasher::new();
    let hashed = if len < PARALLEL_THRESHOLD {
        hash_read_loop(&file, &mut hasher).map_err(read_err)?
    } else {
        hash_mapped(&file, len, &mut hasher).map_err(read_err)?
    };
    let len_after = file.metadata().map_err(read_err)?.len();
    if hashed != len || len_after != len {
        return Err(StoreError::SourceChanged {
            path: path.to_path_buf(),
        });
    }
    Ok((hasher.finalize().into(), hashed))
}

fn hash_read_loop(mut file: &File, hasher: &mut blake3::Hasher) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn hash_mapped(file: &File, len: u64, hasher: &mut blake3::Hasher) -> io::Result<u64> {
    let mut offset = 0u64;
    while offset < len {
        let window = (len - offset).min(MMAP_WINDOW);
        let window_usize = usize::try_from(window)
            .map_err(|_| io::Error::other("mapping window larger than the address space"))?;
        // SAFETY: the mapping is read-only and dropped before the next window is mapped.
        // Its contents can change under us if another process writes the file, which
        // only changes the hash (caught later by the re-hash on upload or by restore
        // verification); truncation would raise SIGBUS, which Cassandra never does to
        // the files we back up (see the module header).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(window_usize)
                .map(file)?
        };
        hasher.update_rayon(&map);
        drop(map);
        offset += window;
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_ids() {
        let id = BlobId::of_bytes(b"abc");
        let parsed: BlobId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert!("abc".parse::<BlobId>().is_err());
        assert!("zz".repeat(32).parse::<BlobId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id));
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
    }

    #[test]
    fn both_hash_paths_equal_blake3() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0usize,
            1,
            PARALLEL_THRESHOLD as usize - 1,
            PARALLEL_THRESHOLD as usize + 12345,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap();
            let (id, n) = hash_file(&p).unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(id, BlobId::of_bytes(&data), "len {len}");
        }
    }
}
