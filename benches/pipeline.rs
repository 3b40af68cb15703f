//! Hash and compression throughput of the store pipeline against the raw primitives,
//! on the same 64 MiB buffers: text-like (compressible) and noise (incompressible).
//!
//! `cargo bench --bench pipeline` (a few minutes). Groups:
//! - `hash`: `blake3::hash` (one thread) vs `Hasher::update_rayon` vs `store::hash_file`
//!   on a page-cached file (windowed mmap + rayon).
//! - `compress/<data>`: `zstd::bulk::compress` level 1 of the whole buffer vs the blob
//!   encoder (`blob::encode_to_vec`, 4 MiB frames with probe and raw fallback), both on
//!   one thread.
//! - `put_file/<data>`: the whole write path, `Repository::put_file` into `memory://`
//!   (hash pass, then parallel encode on rayon, then store), vs
//!   `blake3::hash` + `zstd::bulk::compress` run one after the other on one thread.

#[path = "../tests/s3support/data.rs"]
mod data;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tablesafe::store::blob::encode_to_vec;
use tablesafe::store::{Repository, StoreOptions, hash_file};

const MIB: usize = 1024 * 1024;
const N: usize = 64 * MIB;

fn hash(c: &mut Criterion) {
    let buf = data::text(N, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, &buf).expect("write");
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(N as u64));
    g.bench_function("blake3::hash", |b| b.iter(|| blake3::hash(black_box(&buf))));
    g.bench_function("blake3 update_rayon", |b| {
        b.iter(|| {
            blake3::Hasher::new()
                .update_rayon(black_box(&buf))
                .finalize()
        })
    });
    g.bench_function("store::hash_file", |b| {
        b.iter(|| hash_file(black_box(&path)).expect("hash"))
    });
    g.finish();
}

fn compress(c: &mut Criterion) {
    for (name, buf) in [("text", data::text(N, 2)), ("noise", data::noise(N, 3))] {
        let mut g = c.benchmark_group(format!("compress/{name}"));
        g.throughput(Throughput::Bytes(N as u64));
        g.bench_function("zstd::bulk::compress l1", |b| {
            b.iter(|| zstd::bulk::compress(black_box(&buf), 1).expect("zstd"))
        });
        g.bench_function("blob::encode_to_vec l1", |b| {
            b.iter(|| encode_to_vec(black_box(&buf), 1, 4 * MIB as u32))
        });
        g.finish();
    }
}

fn put_file(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let repo = rt
        .block_on(Repository::init(
            &format!("memory://bench-{}", uuid::Uuid::new_v4()),
            &StoreOptions::default(),
        ))
        .expect("init");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, buf) in [("text", data::text(N, 4)), ("noise", data::noise(N, 5))] {
        let path = dir.path().join(name);
        std::fs::write(&path, &buf).expect("write");
        let mut g = c.benchmark_group(format!("put_file/{name}"));
        g.throughput(Throughput::Bytes(N as u64));
        g.bench_function("Repository::put_file memory://", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let out = rt.block_on(repo.put_file(&path)).expect("put");
                    total += t.elapsed();
                    assert!(out.uploaded);
                    rt.block_on(repo.delete(&out.id)).expect("delete");
                }
                total
            })
        });
        g.bench_function("blake3::hash + zstd::bulk::compress l1", |b| {
            b.iter(|| {
                let h = blake3::hash(black_box(&buf));
                let z = zstd::bulk::compress(black_box(&buf), 1).expect("zstd");
                (h, z.len())
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = hash, compress, put_file
}
criterion_main!(benches);
