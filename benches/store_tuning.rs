//! Measurements behind the store's constants: zstd level, frame size, the raw-frame
//! probe, and the size from which files are hashed with memory maps on all cores.
//!
//! `cargo run --release --example store_tuning` (takes about a minute; prints a table).
//! Data is synthetic: text-like (compressible) and xorshift noise (incompressible, like
//! Cassandra's LZ4-compressed Data.db).

#[path = "../tests/s3support/data.rs"]
mod data;

use std::time::{Duration, Instant};

use tablesafe::store::blob::{encode_frame, encode_to_vec};
use tablesafe::store::hash_file;

const MIB: usize = 1024 * 1024;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// zstd on independent frames of `frame` bytes, one thread, no probe, always keeping
/// the compressed output: the cost of "just compress everything".
fn plain_frames(data: &[u8], level: i32, frame: usize) -> usize {
    data.chunks(frame)
        .map(|c| zstd::bulk::compress(c, level).expect("zstd").len())
        .sum()
}

fn main() {
    let n = 64 * MIB;
    let text = data::text(n, 1);
    let noise = data::noise(n, 2);
    println!("# 64 MiB buffers, one thread, best of 3 (MiB/s of input; ratio = stored/raw)");
    println!("\n## zstd level, 4 MiB frames, always compressing (no probe)");
    println!("| data | level | MiB/s | ratio |");
    println!("|---|---|---|---|");
    for (name, d) in [("text", &text), ("noise", &noise)] {
        for level in [1, 2, 3] {
            let (t, size) = best_of(3, || plain_frames(d, level, 4 * MIB));
            println!(
                "| {name} | {level} | {:.0} | {:.3} |",
                mbps(n, t),
                size as f64 / n as f64
            );
        }
    }
    println!("\n## frame size at level 1 (text)");
    println!("| frame | MiB/s | ratio |");
    println!("|---|---|---|");
    for frame in [MIB, 4 * MIB, 16 * MIB, 64 * MIB] {
        let (t, size) = best_of(3, || plain_frames(&text, 1, frame));
        println!(
            "| {} MiB | {:.0} | {:.4} |",
            frame / MIB,
            mbps(n, t),
            size as f64 / n as f64
        );
    }
    println!("\n## the blob encoder (4 MiB frames, probe + raw fallback), level 1");
    println!("| data | MiB/s | ratio |");
    println!("|---|---|---|");
    for (name, d) in [("text", &text), ("noise", &noise)] {
        let (t, blob) = best_of(3, || encode_to_vec(d, 1, 4 * MIB as u32));
        println!(
            "| {name} | {:.0} | {:.4} |",
            mbps(n, t),
            blob.len() as f64 / n as f64
        );
    }
    println!(
        "\n## per-frame encoder cost alone (encode_frame, 4 MiB frames, copy time subtracted)"
    );
    println!("| data | MiB/s | ratio |");
    println!("|---|---|---|");
    for (name, d) in [("text", &text), ("noise", &noise)] {
        let frames: Vec<Vec<u8>> = d.chunks(4 * MIB).map(<[u8]>::to_vec).collect();
        let (t_copy, _) = best_of(3, || {
            frames
                .iter()
                .map(|f| std::hint::black_box(f.clone()).len())
                .sum::<usize>()
        });
        let (t_enc, stored) = best_of(3, || {
            frames
                .iter()
                .map(|f| encode_frame(f.clone(), 1).payload.len())
                .sum::<usize>()
        });
        println!(
            "| {name} | {:.0} | {:.4} |",
            mbps(n, t_enc.saturating_sub(t_copy)),
            stored as f64 / n as f64
        );
    }
    let (t, _) = best_of(3, || blake3::hash(&noise));
    println!(
        "\nfor scale: blake3::hash, one thread: {:.0} MiB/s",
        mbps(n, t)
    );
    let (t, _) = best_of(3, || noise.to_vec());
    println!("for scale: memcpy: {:.0} MiB/s", mbps(n, t));

    println!("\n## hashing a page-cached file: read loop vs windowed mmap + update_rayon");
    println!("| size | read loop MiB/s | mmap+rayon MiB/s | hash_file MiB/s |");
    println!("|---|---|---|---|");
    let dir = tempfile::tempdir().expect("tempdir");
    for size in [
        64 * 1024,
        256 * 1024,
        512 * 1024,
        MIB,
        2 * MIB,
        4 * MIB,
        16 * MIB,
        64 * MIB,
    ] {
        let p = dir.path().join(format!("h{size}"));
        std::fs::write(&p, &noise[..size]).expect("write");
        let runs = (256 * MIB / size).clamp(3, 200);
        let (t_read, _) = best_of(3, || {
            for _ in 0..runs {
                let mut h = blake3::Hasher::new();
                h.update_reader(std::fs::File::open(&p).expect("open"))
                    .expect("read");
                std::hint::black_box(h.finalize());
            }
        });
        let (t_map, _) = best_of(3, || {
            for _ in 0..runs {
                let mut h = blake3::Hasher::new();
                h.update_mmap_rayon(&p).expect("mmap");
                std::hint::black_box(h.finalize());
            }
        });
        let (t_ours, _) = best_of(3, || {
            for _ in 0..runs {
                std::hint::black_box(hash_file(&p).expect("hash"));
            }
        });
        let total = size * runs;
        println!(
            "| {} KiB | {:.0} | {:.0} | {:.0} |",
            size / 1024,
            mbps(total, t_read),
            mbps(total, t_map),
            mbps(total, t_ours)
        );
    }
}
