//! Test data: text-like (compressible, like Cassandra's Index/Statistics/TOC files)
//! and noise (incompressible, like LZ4-compressed Data.db chunks).
#![allow(dead_code)]

/// Deterministic pseudo-random bytes (xorshift64*), fast enough for tens of MiB.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that compress roughly 3-5x with zstd -1.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "keyspace",
        "table",
        "partition",
        "clustering",
        "row",
        "cell",
        "tombstone",
        "timestamp",
        "ttl",
        "generation",
        "sstable",
        "compaction",
    ];
    let r = noise(len / 4 + 16, seed);
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0;
    while out.len() < len {
        let w = WORDS[r[i % r.len()] as usize % WORDS.len()];
        out.extend_from_slice(w.as_bytes());
        out.push(if r[(i + 1) % r.len()].is_multiple_of(7) {
            b'\n'
        } else {
            b' '
        });
        if r[(i + 2) % r.len()].is_multiple_of(5) {
            out.extend_from_slice(format!("{} ", r[(i + 3) % r.len()]).as_bytes());
        }
        i += 3;
    }
    out.truncate(len);
    out
}
