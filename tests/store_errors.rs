//! Bad input and broken backends: each gives its own clear, typed error, and nothing
//! is lost (a restore destination is never created or clobbered, no `.partial` stays).

mod s3support;

use std::path::{Path, PathBuf};

use s3support::data::{noise, text};
use s3support::{ACCESS_KEY, S3Server, SECRET_KEY, options_for};
use tablesafe::store::{BlobId, Repository, StoreError, StoreOptions, blob_key};

const MIB: usize = 1024 * 1024;

/// A file:// repository holding one blob, and where that blob's object file is.
struct Damaged {
    _dir: tempfile::TempDir,
    work: PathBuf,
    repo: Repository,
    id: BlobId,
    object: PathBuf,
}

async fn file_repo_with_blob(data: &[u8]) -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = Repository::init(
        &format!("file://{}", root.display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let src = work.join("src");
    std::fs::write(&src, data).unwrap();
    let id = repo.put_file(&src).await.unwrap().id;
    let object = root.join(blob_key(&id).to_string());
    assert!(object.is_file());
    Damaged {
        _dir: dir,
        work,
        repo,
        id,
        object,
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Restores into a destination that already holds other content, expects an error,
/// and checks that the destination was not clobbered and no `.partial` remains.
async fn restore_fails(d: &Damaged) -> StoreError {
    let dest = d.work.join("dest");
    std::fs::write(&dest, b"precious old content").unwrap();
    let err = d.repo.get_to_file(&d.id, &dest).await.unwrap_err();
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious old content");
    assert!(!d.work.join("dest.partial").exists());
    // and a fresh destination is not created at all
    let fresh = d.work.join("fresh");
    let err2 = d.repo.get_to_file(&d.id, &fresh).await.unwrap_err();
    assert_eq!(
        std::mem::discriminant(&err),
        std::mem::discriminant(&err2),
        "{err} / {err2}"
    );
    assert!(!fresh.exists());
    assert!(!d.work.join("fresh.partial").exists());
    assert!(err.to_string().contains(&d.id.to_hex()), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_raw_frame_is_a_hash_mismatch() {
    let d = file_repo_with_blob(&noise(5 * MIB, 1)).await;
    flip_byte(&d.object, 3 * MIB);
    let err = restore_fails(&d).await;
    assert!(matches!(err, StoreError::HashMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("is damaged"), "{err}");
    let v = d.repo.verify_blob(&d.id).await.unwrap_err();
    assert!(matches!(v, StoreError::HashMismatch { .. }), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_compressed_frame_is_detected() {
    let d = file_repo_with_blob(&text(5 * MIB, 2)).await;
    let len = std::fs::metadata(&d.object).unwrap().len() as usize;
    flip_byte(&d.object, len / 3);
    let err = restore_fails(&d).await;
    assert!(
        matches!(
            err,
            StoreError::HashMismatch { .. } | StoreError::CorruptBlob { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_header_byte_is_a_corrupt_blob() {
    let d = file_repo_with_blob(b"small content").await;
    flip_byte(&d.object, 0);
    let err = restore_fails(&d).await;
    assert!(matches!(err, StoreError::CorruptBlob { .. }), "{err:?}");
    assert!(err.to_string().contains("not a tablesafe blob"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_is_reported_as_truncated() {
    for cut in [10u64, 1000, 4 * MIB as u64 + 20] {
        let d = file_repo_with_blob(&text(5 * MIB, 3)).await;
        let len = std::fs::metadata(&d.object).unwrap().len();
        let keep = if cut > len { len - 5 } else { len - cut };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&d.object)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let err = restore_fails(&d).await;
        assert!(matches!(err, StoreError::CorruptBlob { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_blob_is_not_found() {
    let d = file_repo_with_blob(&text(MIB, 4)).await;
    std::fs::remove_file(&d.object).unwrap();
    let err = restore_fails(&d).await;
    assert!(matches!(err, StoreError::BlobNotFound { .. }), "{err:?}");
    assert!(!d.repo.exists(&d.id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_blob_on_s3_is_detected_too() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let repo = Repository::init("s3://bkt/r", &server.options())
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::write(&src, noise(2 * MIB, 5)).unwrap();
    let id = repo.put_file(&src).await.unwrap().id;
    let object = server.object_file("bkt", &format!("r/{}", blob_key(&id)));
    flip_byte(&object, MIB);
    let dest = work.path().join("dest");
    let err = repo.get_to_file(&id, &dest).await.unwrap_err();
    assert!(matches!(err, StoreError::HashMismatch { .. }), "{err:?}");
    assert!(!dest.exists());
    std::fs::remove_file(&object).unwrap();
    let err = repo.get_to_file(&id, &dest).await.unwrap_err();
    assert!(matches!(err, StoreError::BlobNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&id.to_hex()), "{err}");
    assert!(!dest.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_named_after_bounded_retries() {
    // a port that was free a moment ago: nothing listens there
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = options_for(&format!("http://127.0.0.1:{port}"), ACCESS_KEY, SECRET_KEY);
    let started = std::time::Instant::now();
    for err in [
        Repository::open("s3://bkt/p", &opts).await.unwrap_err(),
        Repository::init("s3://bkt/p", &opts).await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
        let msg = err.to_string();
        let expected = format!(
            "cannot reach the object store for s3://bkt/p at http://127.0.0.1:{port} after retries"
        );
        assert!(msg.starts_with(&expected), "{msg}");
        assert!(msg.contains("check the endpoint"), "{msg}");
    }
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_access_denied_without_leaking_the_secret() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    Repository::init("s3://bkt/p", &server.options())
        .await
        .unwrap();
    let wrong_secret = "definitely-not-the-secret-42";
    for (key, secret) in [(ACCESS_KEY, wrong_secret), ("unknown-key", wrong_secret)] {
        let opts = options_for(&server.endpoint, key, secret);
        for err in [
            Repository::open("s3://bkt/p", &opts).await.unwrap_err(),
            Repository::init("s3://bkt/p2", &opts).await.unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.starts_with("access denied to s3://bkt/p"), "{msg}");
            assert!(
                msg.contains("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"),
                "{msg}"
            );
            assert!(!msg.contains(wrong_secret), "{msg}");
            assert!(!format!("{err:?}").contains(wrong_secret));
        }
        assert!(!format!("{opts:?}").contains(secret));
    }
    // the repository made with the right keys is intact
    Repository::open("s3://bkt/p", &server.options())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_named() {
    let server = S3Server::start().await;
    for err in [
        Repository::init("s3://nobucket/p", &server.options())
            .await
            .unwrap_err(),
        Repository::open("s3://nobucket/p", &server.options())
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NoSuchBucket { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("bucket \"nobucket\" does not exist"), "{msg}");
        assert!(msg.contains("s3://nobucket/p"), "{msg}");
    }
    assert!(!server.root().join("nobucket").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_twice_is_refused_and_keeps_the_first_config() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("memory://twice-{}", uuid::Uuid::new_v4()),
            StoreOptions::default(),
        ),
        (
            format!("file://{}/r", dir.path().display()),
            StoreOptions::default(),
        ),
        ("s3://bkt/twice".to_string(), server.options()),
    ];
    for (url, opts) in cases {
        let first = Repository::init(&url, &opts).await.unwrap();
        let err = Repository::init(&url, &opts).await.unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyInitialised { .. }),
            "{err:?}"
        );
        let shown = first.url().to_string();
        assert_eq!(
            err.to_string(),
            format!("repository already initialised at {shown}")
        );
        let reopened = Repository::open(&url, &opts).await.unwrap();
        assert_eq!(reopened.config().id, first.config().id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_without_init_says_how_to_fix_it() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "memory://never-initialised".to_string(),
            StoreOptions::default(),
        ),
        (
            format!("file://{}/missing-dir", dir.path().display()),
            StoreOptions::default(),
        ),
        (
            format!("file://{}", dir.path().display()),
            StoreOptions::default(),
        ),
        ("s3://bkt/nothing-here".to_string(), server.options()),
    ];
    for (url, opts) in cases {
        let err = Repository::open(&url, &opts).await.unwrap_err();
        assert!(matches!(err, StoreError::NotInitialised { .. }), "{err:?}");
        let shown = tablesafe::store::RepoUrl::parse(&url).unwrap().to_string();
        assert_eq!(
            err.to_string(),
            format!(
                "no tablesafe repository at {shown}: run `tablesafe init --repo {shown}` first"
            )
        );
    }
    assert!(!dir.path().join("missing-dir").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_repository_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/r", dir.path().display());
    Repository::init(&url, &StoreOptions::default())
        .await
        .unwrap();
    let cfg = dir.path().join("r/config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["format"] = 7.into();
    v["something_new"] = "x".into();
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = Repository::open(&url, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFormat { found: 7, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "repository format 7 is newer than this tablesafe supports (1): upgrade tablesafe"
    );
    // and garbage is a bad config, not a panic
    std::fs::write(&cfg, b"{not json").unwrap();
    let err = Repository::open(&url, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadConfig { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_missing_sources_are_typed() {
    let err = Repository::open("bucket/prefix", &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
    let d = file_repo_with_blob(b"x").await;
    let err = d
        .repo
        .put_file(&d.work.join("does-not-exist"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadFile { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}
