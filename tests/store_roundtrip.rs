//! Blob round trips through the public API on memory://, file:// and a real S3-protocol
//! server (s3s-fs on 127.0.0.1): frame-boundary sizes, incompressible data, multipart,
//! dedup, both write strategies, and the generic object helpers.

mod s3support;

use std::path::Path;

use bytes::Bytes;
use s3support::S3Server;
use s3support::data::{noise, text};
use tablesafe::store::{
    BlobId, BlobObject, Content, PutStrategy, Repository, StoreOptions, blob_key,
};

const MIB: usize = 1024 * 1024;
const FRAME: usize = 4 * MIB; // the default frame size

/// A repository of one kind plus what keeps it alive.
struct Fixture {
    repo: Repository,
    url: String,
    opts: StoreOptions,
    _dir: Option<tempfile::TempDir>,
    _server: Option<S3Server>,
}

async fn fixture(kind: &str, tweak: impl FnOnce(&mut StoreOptions)) -> Fixture {
    let (url, mut opts, dir, server) = match kind {
        "memory" => (
            format!("memory://rt-{}", uuid::Uuid::new_v4()),
            StoreOptions::default(),
            None,
            None,
        ),
        "file" => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("file://{}/repo", dir.path().display());
            (url, StoreOptions::default(), Some(dir), None)
        }
        "s3" => {
            let server = S3Server::start().await;
            server.create_bucket("bkt");
            let opts = server.options();
            ("s3://bkt/some/prefix".to_string(), opts, None, Some(server))
        }
        other => panic!("unknown backend {other}"),
    };
    tweak(&mut opts);
    let repo = Repository::init(&url, &opts).await.unwrap();
    Fixture {
        repo,
        url,
        opts,
        _dir: dir,
        _server: server,
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// put_file then get_to_file, checking ids, sizes and bytes.
async fn round_trip(repo: &Repository, work: &Path, name: &str, data: &[u8]) {
    let src = write(work, name, data);
    let out = repo.put_file(&src).await.unwrap();
    assert_eq!(out.id, BlobId::of_bytes(data), "{name}");
    assert_eq!(out.size, data.len() as u64, "{name}");
    assert!(out.uploaded, "{name}");
    assert!(repo.exists(&out.id).await.unwrap());
    assert_eq!(
        repo.blob_stored_size(&out.id).await.unwrap(),
        Some(out.stored_size),
        "{name}"
    );
    let dest = work.join(format!("{name}.restored"));
    let n = repo.get_to_file(&out.id, &dest).await.unwrap();
    assert_eq!(n, data.len() as u64);
    let back = std::fs::read(&dest).unwrap();
    assert!(back == data, "{name}: restored bytes differ");
    assert!(!work.join(format!("{name}.restored.partial")).exists());
    assert_eq!(repo.verify_blob(&out.id).await.unwrap(), data.len() as u64);
}

async fn frame_boundaries(kind: &str) {
    let f = fixture(kind, |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let sizes = [0, 1, FRAME - 1, FRAME, FRAME + 1, 2 * FRAME];
    for (i, &n) in sizes.iter().enumerate() {
        // alternate compressible and incompressible content
        let data = if i % 2 == 0 {
            text(n, i as u64)
        } else {
            noise(n, i as u64)
        };
        round_trip(&f.repo, work.path(), &format!("f{n}"), &data).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_boundaries_memory() {
    frame_boundaries("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_boundaries_file() {
    frame_boundaries("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_boundaries_s3() {
    frame_boundaries("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressible_data_shrinks_and_noise_costs_almost_nothing() {
    let f = fixture("file", |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let t = write(work.path(), "text", &text(8 * MIB, 1));
    let r = f.repo.put_file(&t).await.unwrap();
    assert!(r.stored_size < r.size / 2, "{r:?}");
    let n = write(work.path(), "noise", &noise(8 * MIB, 2));
    let r = f.repo.put_file(&n).await.unwrap();
    // raw frames: 16 header + 2 x 9 frame headers + 1 + 2 x 9 index + 32 footer
    assert_eq!(r.stored_size, r.size + 16 + 18 + 1 + 18 + 32, "{r:?}");
}

/// Content its writer already compressed is stored raw (and read back whole) unless the
/// repository was created with `recompress`, which the config records; a config written
/// before the setting existed reads as "store it as it is".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_compressed_content_is_stored_as_is_unless_the_repository_recompresses() {
    // Text, so that zstd would shrink it a lot: only the policy keeps it raw.
    let data = text(2 * FRAME + 100, 4);
    let raw_stored = data.len() as u64 + 16 + 3 * 9 + 1 + 3 * 9 + 32;
    for kind in ["memory", "file", "s3"] {
        let f = fixture(kind, |_| {}).await;
        assert!(!f.repo.config().compression.recompress);
        let work = tempfile::tempdir().unwrap();
        let p = write(work.path(), "data", &data);
        let put = f.repo.put_file_as(&p, Content::Compressed).await.unwrap();
        assert_eq!(put.id, BlobId::of_bytes(&data));
        assert_eq!(put.stored_size, raw_stored, "{kind}: raw frames");
        let dest = work.path().join("back");
        f.repo.get_to_file(&put.id, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data, "{kind}");
        // The same bytes as plain content: zstd.
        let p2 = write(work.path(), "plain", &[&data[..], b"!"].concat());
        let plain = f.repo.put_file_as(&p2, Content::Plain).await.unwrap();
        assert!(plain.stored_size < plain.size / 2, "{kind}: {plain:?}");

        let g = fixture(kind, |o| o.compression.recompress = true).await;
        let again = Repository::open(&g.url, &g.opts).await.unwrap();
        assert!(again.config().compression.recompress, "{kind}");
        let put = again.put_file_as(&p, Content::Compressed).await.unwrap();
        assert!(put.stored_size < put.size / 2, "{kind}: {put:?}");
    }
    // A config from before `recompress` existed.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("config"),
        r#"{"format":1,"id":"0b6f4d5e-8c1a-4b0e-9a57-2f1d3c4b5a69","created":"2026-01-02T03:04:05Z","hash":"blake3","compression":{"algorithm":"zstd","level":1,"frame_size":4194304}}"#,
    )
    .unwrap();
    let old = Repository::open(
        &format!("file://{}", root.display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(!old.config().compression.recompress);
}

/// More large blobs read at once than the process-wide frame budget has room for (it
/// holds two frames per rayon thread, and each of these blobs wants `threads + 2`): the
/// readers take turns through the budget, and every blob still comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_blobs_read_at_once_share_the_frame_budget() {
    let f = fixture("file", |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let blobs = 2 * (2 * rayon::current_num_threads() + 2);
    let mut expected = Vec::new();
    for i in 0..blobs {
        // Compressible and incompressible frames weigh differently in the budget.
        let n = 2 * FRAME + FRAME / 2 + i;
        let data = if i % 2 == 0 {
            text(n, i as u64)
        } else {
            noise(n, i as u64)
        };
        let src = write(work.path(), &format!("b{i}"), &data);
        let put = f.repo.put_file(&src).await.unwrap();
        expected.push((
            put.id,
            data.len() as u64,
            work.path().join(format!("b{i}.out")),
        ));
    }
    let reads = expected
        .iter()
        .map(|(id, _, dest)| f.repo.get_to_file(id, dest));
    // Readers that waited on each other forever would hang here: fail instead.
    let sizes = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        futures::future::join_all(reads),
    )
    .await
    .expect("concurrent reads finished");
    for ((id, size, dest), got) in expected.iter().zip(sizes) {
        assert_eq!(got.unwrap(), *size, "{id}");
        assert_eq!(tablesafe::store::hash_file(dest).unwrap().0, *id);
    }
}

async fn multipart(kind: &str, strategy: PutStrategy) {
    let f = fixture(kind, |o| {
        o.part_size = 5 * MIB;
        o.upload_concurrency = 3;
        o.strategy = strategy;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let mut data = noise(17 * MIB + 3, 7);
    data.extend_from_slice(&text(5 * MIB, 8));
    round_trip(&f.repo, work.path(), "big", &data).await;
    // nothing left in staging
    let staged = f.repo.list_objects("staging").await.unwrap();
    assert!(staged.is_empty(), "{staged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_s3_hash_first() {
    multipart("s3", PutStrategy::HashFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_s3_staging() {
    multipart("s3", PutStrategy::Staging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_file_hash_first() {
    multipart("file", PutStrategy::HashFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_file_staging() {
    multipart("file", PutStrategy::Staging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_memory() {
    multipart("memory", PutStrategy::HashFirst).await;
}

async fn dedup(kind: &str, strategy: PutStrategy) {
    let f = fixture(kind, |o| o.strategy = strategy).await;
    let work = tempfile::tempdir().unwrap();
    let data = text(3 * MIB, 11);
    let a = write(work.path(), "a", &data);
    let b = write(work.path(), "b-same-content-other-path", &data);
    let first = f.repo.put_file(&a).await.unwrap();
    assert!(first.uploaded);
    let again = f.repo.put_file(&a).await.unwrap();
    let other = f.repo.put_file(&b).await.unwrap();
    for o in [again, other] {
        assert!(!o.uploaded, "{o:?}");
        assert_eq!(o.id, first.id);
        assert_eq!(o.stored_size, first.stored_size);
    }
    let blobs = f.repo.list_objects("blobs").await.unwrap();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(blobs[0].0, blob_key(&first.id).to_string());
    assert!(f.repo.list_objects("staging").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_uploads_nothing_the_second_time() {
    dedup("memory", PutStrategy::HashFirst).await;
    dedup("file", PutStrategy::HashFirst).await;
    dedup("s3", PutStrategy::HashFirst).await;
    dedup("file", PutStrategy::Staging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_sees_blobs_and_config() {
    for kind in ["memory", "file", "s3"] {
        let f = fixture(kind, |o| {
            o.compression.level = 3;
            o.compression.frame_size = 256 * 1024;
        })
        .await;
        let work = tempfile::tempdir().unwrap();
        let data = text(MIB + 5, 3);
        let p = write(work.path(), "x", &data);
        let put = f.repo.put_file(&p).await.unwrap();
        let again = Repository::open(&f.url, &f.opts).await.unwrap();
        assert_eq!(again.config(), f.repo.config());
        assert_eq!(again.config().compression.level, 3);
        assert_eq!(again.config().compression.frame_size, 256 * 1024);
        assert_eq!(again.config().format, 1);
        assert!(again.exists(&put.id).await.unwrap());
        let dest = work.path().join("y");
        again.get_to_file(&put.id, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        again.delete(&put.id).await.unwrap();
        assert!(!f.repo.exists(&put.id).await.unwrap());
        // deleting twice is fine
        again.delete(&put.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_helpers_for_catalog_logs() {
    for kind in ["memory", "file", "s3"] {
        let f = fixture(kind, |_| {}).await;
        let r = &f.repo;
        r.put_object("nodes/n1/log/0000000001", Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert!(
            r.put_object_if_absent("nodes/n1/log/0000000002", Bytes::from_static(b"two"))
                .await
                .unwrap()
        );
        assert!(
            !r.put_object_if_absent("nodes/n1/log/0000000002", Bytes::from_static(b"2!"))
                .await
                .unwrap()
        );
        assert_eq!(
            r.get_object("nodes/n1/log/0000000002").await.unwrap(),
            Bytes::from_static(b"two")
        );
        let listed = r.list_objects("nodes/n1/log/").await.unwrap();
        let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["nodes/n1/log/0000000001", "nodes/n1/log/0000000002"]);
        assert_eq!(
            r.object_size("nodes/n1/log/0000000001").await.unwrap(),
            Some(3)
        );
        let missing = r.get_object("nodes/n1/log/9").await.unwrap_err();
        assert!(
            missing.to_string().contains("nodes/n1/log/9 not found"),
            "{missing}"
        );
        r.delete_object("nodes/n1/log/0000000001").await.unwrap();
        assert_eq!(
            r.object_size("nodes/n1/log/0000000001").await.unwrap(),
            None
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_live_under_the_prefix_with_the_documented_layout() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let repo = Repository::init("s3://bkt/some/prefix", &server.options())
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let p = write(work.path(), "x", b"hello");
    let put = repo.put_file(&p).await.unwrap();
    let hex = put.id.to_hex();
    assert!(server.object_file("bkt", "some/prefix/config").is_file());
    let blob = server.object_file("bkt", &format!("some/prefix/blobs/{}/{hex}", &hex[..2]));
    assert!(blob.is_file(), "{}", blob.display());
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(server.object_file("bkt", "some/prefix/config")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["format"], 1);
    assert_eq!(cfg["compression"]["algorithm"], "zstd");
    assert_eq!(cfg["id"].as_str().unwrap().len(), 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_side_encryption_headers_are_sent() {
    use tablesafe::store::Sse;
    let key = "arn:aws:kms:us-east-1:111122223333:key/test";
    for (sse, want, want_key) in [
        (Sse::S3, "AES256", None),
        (
            Sse::Kms { key_id: key.into() },
            "aws:kms",
            Some(key.to_string()),
        ),
    ] {
        let f = fixture("s3", |o| {
            o.s3.sse = Some(sse.clone());
            o.part_size = 5 * MIB;
        })
        .await;
        let work = tempfile::tempdir().unwrap();
        let small = text(1000, 9);
        round_trip(&f.repo, work.path(), "small", &small).await;
        let big = noise(12 * MIB, 9);
        round_trip(&f.repo, work.path(), "big", &big).await;
        let seen = f._server.as_ref().unwrap().sse_seen.lock().unwrap().clone();
        let ops: Vec<&str> = seen.iter().map(|(op, _, _)| op.as_str()).collect();
        assert!(ops.contains(&"PutObject"), "{seen:?}");
        assert!(ops.contains(&"CreateMultipartUpload"), "{seen:?}");
        for (op, value, kms) in &seen {
            assert_eq!(value, want, "{op}");
            assert_eq!(kms, &want_key, "{op}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_index_allows_ranged_reads() {
    for kind in ["memory", "file", "s3"] {
        let f = fixture(kind, |_| {}).await;
        let work = tempfile::tempdir().unwrap();
        let mut data = text(FRAME, 21);
        data.extend_from_slice(&noise(FRAME, 22));
        data.extend_from_slice(&text(12345, 23));
        let p = write(work.path(), "x", &data);
        let put = f.repo.put_file(&p).await.unwrap();
        let index = f.repo.blob_index(&put.id).await.unwrap();
        assert_eq!(index.frame_size as usize, FRAME);
        assert_eq!(index.raw_size, data.len() as u64);
        assert_eq!(index.frames.len(), 3);
        let raw_offsets: Vec<u64> = index.frames.iter().map(|f| f.raw_offset).collect();
        assert_eq!(raw_offsets, [0, FRAME as u64, 2 * FRAME as u64]);
        for (n, range) in [
            (0, 0..FRAME),
            (1, FRAME..2 * FRAME),
            (2, 2 * FRAME..data.len()),
        ] {
            let frame = f.repo.read_frame(&put.id, &index, n).await.unwrap();
            assert!(frame == data[range], "{kind} frame {n}");
        }
        assert!(f.repo.read_frame(&put.id, &index, 3).await.is_err());
        let empty = write(work.path(), "empty", b"");
        let put = f.repo.put_file(&empty).await.unwrap();
        let index = f.repo.blob_index(&put.id).await.unwrap();
        assert!(index.frames.is_empty());
        assert_eq!(index.raw_size, 0);
    }
}

/// gc and verify see the repository through `list_blobs`: every blob once, with its
/// stored size and a recent last-modified time, shards in hash order and each sorted,
/// and nothing that is not a blob id; `delete_blobs` takes them away (twice is fine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_listing_is_complete_sorted_and_skips_other_names() {
    for kind in ["memory", "file", "s3"] {
        let f = fixture(kind, |_| {}).await;
        let work = tempfile::tempdir().unwrap();
        let mut put = std::collections::BTreeMap::new();
        for i in 0..40u64 {
            let data = text(100 + i as usize * 37, i);
            let p = write(work.path(), &format!("b{i}"), &data);
            let out = f.repo.put_file(&p).await.unwrap();
            put.insert(out.id, out.stored_size);
        }
        // Names under blobs/ that are not blob ids: a store's temporary file, a stray.
        let first = put.keys().next().unwrap().to_hex();
        let temp = format!("blobs/{}/{first}#7", &first[..2]);
        if let Some(root) = f.url.strip_prefix("file://") {
            // object_store's own temporary name, which its API refuses to write.
            std::fs::write(Path::new(root).join(&temp), b"partial").unwrap();
        } else {
            f.repo
                .put_object_if_absent(&temp, Bytes::from_static(b"partial"))
                .await
                .unwrap();
        }
        f.repo
            .put_object_if_absent("blobs/zz/not-a-blob", Bytes::from_static(b"x"))
            .await
            .unwrap();

        for concurrency in [1, 7] {
            let listed = list_all(&f.repo, concurrency, kind).await;
            let ids: Vec<BlobId> = listed.iter().map(|b| b.id).collect();
            assert_eq!(ids, put.keys().copied().collect::<Vec<_>>(), "{kind}");
            let now = chrono::Utc::now();
            for b in &listed {
                assert_eq!(Some(&b.stored_size), put.get(&b.id), "{kind}");
                let age = now - b.modified;
                assert!(age.num_seconds().abs() < 600, "{kind}: modified {age}");
            }
        }
        let half: Vec<BlobId> = put.keys().step_by(2).copied().collect();
        for _ in 0..2 {
            let mut deleted = f.repo.delete_blobs(&half, 4).await.unwrap();
            deleted.sort();
            assert_eq!(deleted, half, "{kind}");
        }
        let left: Vec<BlobId> = list_all(&f.repo, 3, kind)
            .await
            .iter()
            .map(|b| b.id)
            .collect();
        let want: Vec<BlobId> = put.keys().skip(1).step_by(2).copied().collect();
        assert_eq!(left, want, "{kind}");
    }
}

async fn list_all(repo: &Repository, concurrency: usize, kind: &str) -> Vec<BlobObject> {
    use futures::TryStreamExt;
    let shards: Vec<Vec<BlobObject>> = repo.list_blobs(concurrency).try_collect().await.unwrap();
    assert_eq!(shards.len(), 256, "{kind}: one entry per shard");
    shards.into_iter().flatten().collect()
}

/// Empty files in a pack: one sharing its offset with the next file, one at the very
/// end of the pack's content. Each is split out as an empty file, and so are the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_files_in_a_pack_are_split_out_wherever_they_sit() {
    use tablesafe::store::pack::{PackCandidate, PackExtract, Packing};
    let f = fixture("file", |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a", text(1000, 1)),
        ("empty-middle", Vec::new()),
        ("b", noise(2000, 2)),
        ("empty-end", Vec::new()),
    ];
    let candidates = files
        .iter()
        .map(|(name, data)| PackCandidate {
            id: BlobId::of_bytes(data),
            size: data.len() as u64,
            paths: vec![write(work.path(), name, data)],
        })
        .collect();
    let put = f.repo.put_pack(candidates).await.unwrap();
    let offsets: Vec<u64> = put
        .members
        .iter()
        .map(|m| match m {
            Packing::Packed { offset } => *offset,
            other => panic!("not packed: {other:?}"),
        })
        .collect();
    // The layout this test is about.
    assert_eq!(
        offsets[1], offsets[2],
        "empty file shares the next one's offset"
    );
    assert_eq!(offsets[3], put.size, "empty file at the end of the content");
    // Extracts given in reverse, so the splitter's own order is what is tested.
    let extracts = files
        .iter()
        .zip(&offsets)
        .rev()
        .map(|((name, data), &offset)| PackExtract {
            id: BlobId::of_bytes(data),
            offset,
            size: data.len() as u64,
            dest: work.path().join(format!("{name}.out")),
            mtime: None,
        })
        .collect();
    let (outcomes, failed) = f.repo.get_from_pack(&put.id.unwrap(), extracts).await;
    assert!(failed.is_none(), "{failed:?}");
    for (((name, data), outcome), _) in files.iter().rev().zip(outcomes).zip(&offsets) {
        assert_eq!(outcome.unwrap().unwrap(), data.len() as u64, "{name}");
        let back = std::fs::read(work.path().join(format!("{name}.out"))).unwrap();
        assert!(back == *data, "{name}");
    }
}
