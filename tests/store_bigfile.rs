//! Memory stays bounded whatever the file size: a 3 GiB sparse file is stored and read
//! back (decoded and verified) while the process's peak RSS (VmHWM, which counts
//! mapped file pages too) grows by well under 200 MiB.
//!
//! Alone in its own test binary so that no other test's allocations move the peak.

use tablesafe::store::{Repository, StoreOptions};

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gib_sparse_file_in_bounded_memory() {
    const SIZE: u64 = 3 << 30;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse-Data.db");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(SIZE).unwrap();
    // a little real data at both ends so the content is not trivially all zeros
    use std::io::{Seek, SeekFrom, Write};
    let mut f = f;
    f.write_all(b"head of a big sstable").unwrap();
    f.seek(SeekFrom::Start(SIZE - 16)).unwrap();
    f.write_all(b"tail-tail-tail!!").unwrap();
    drop(f);

    let url = format!("file://{}/repo", dir.path().display());
    let repo = Repository::init(&url, &StoreOptions::default())
        .await
        .unwrap();
    let before = vm_hwm_kib();
    let started = std::time::Instant::now();
    let put = repo.put_file(&src).await.unwrap();
    let put_time = started.elapsed();
    let after_put = vm_hwm_kib();
    assert_eq!(put.size, SIZE);
    assert!(put.uploaded);
    assert!(put.stored_size < SIZE / 100, "{put:?}");

    let started = std::time::Instant::now();
    let verified = repo.verify_blob(&put.id).await.unwrap();
    let verify_time = started.elapsed();
    let after_verify = vm_hwm_kib();
    assert_eq!(verified, SIZE);

    let (put_growth, verify_growth) = (after_put - before, after_verify - before);
    eprintln!(
        "3 GiB sparse: put {put_time:?}, verify {verify_time:?}; VmHWM before {before} KiB, \
         +{put_growth} KiB after put, +{verify_growth} KiB after verify"
    );
    assert!(
        put_growth < 150 * 1024,
        "put grew peak RSS by {put_growth} KiB"
    );
    assert!(
        verify_growth < 150 * 1024,
        "verify grew peak RSS by {verify_growth} KiB"
    );
}
