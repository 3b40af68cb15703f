//! A real S3-protocol server for the store tests: s3s-fs (the `s3s` project's
//! file-system-backed S3 implementation) served over HTTP on 127.0.0.1, on an ephemeral
//! port, in a task of the test's own tokio runtime. No manual step, no network.
//!
//! It enforces SigV4 with one access key / secret pair (a wrong secret gets 403), and an
//! access hook answers `NoSuchBucket` for a bucket whose directory does not exist (s3s-fs
//! on its own would create it on the first PUT, unlike S3).
//!
//! Objects are plain files under `root/<bucket>/<key>`, so tests can damage them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Result, s3_error};
use tablesafe::store::{RetryOptions, S3Options, Secret, StoreOptions};
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "tablesafe-test-key";
pub const SECRET_KEY: &str = "tablesafe-test-secret-0123456789";

/// A running server; it stops when the test's runtime shuts down or on drop.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    /// `(operation, x-amz-server-side-encryption, x-amz-…-aws-kms-key-id)` of every
    /// request that carried an encryption header.
    pub sse_seen: SseLog,
    task: tokio::task::JoinHandle<()>,
}

pub type SseLog = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

struct BucketMustExist {
    root: PathBuf,
    sse_seen: SseLog,
}

#[async_trait::async_trait]
impl S3Access for BucketMustExist {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "anonymous access is not allowed"));
        }
        let header = |name: &str| {
            cx.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(sse) = header("x-amz-server-side-encryption") {
            let kms = header("x-amz-server-side-encryption-aws-kms-key-id");
            let op = cx.s3_op().name().to_string();
            if let Ok(mut log) = self.sse_seen.lock() {
                log.push((op, sse, kms));
            }
        }
        match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => {
                if !self.root.join(&**bucket).is_dir() {
                    return Err(s3_error!(NoSuchBucket));
                }
                Ok(())
            }
            S3Path::Root => Ok(()),
        }
    }
}

impl S3Server {
    /// Starts a server with an empty root directory.
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        let sse_seen = SseLog::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = serve(root.path(), listener, sse_seen.clone());
        S3Server {
            endpoint: format!("http://{addr}"),
            root,
            sse_seen,
            task,
        }
    }

    /// Stops serving: connections are refused, as when the storage goes away.
    pub fn stop(&mut self) {
        self.task.abort();
    }

    /// Serves again on the same port, with the same objects.
    pub async fn restart(&mut self) {
        self.task.abort();
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(l) => break l,
                // The aborted listener may take a moment to release the port.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.task = serve(self.root.path(), listener, self.sse_seen.clone());
    }

    /// Creates a bucket (a directory under the root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join(name)).expect("create bucket");
    }

    /// Store options that reach this server with the right keys and quick retries.
    pub fn options(&self) -> StoreOptions {
        options_for(&self.endpoint, ACCESS_KEY, SECRET_KEY)
    }

    /// The file holding an object.
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// Serves s3s-fs over `root` on `listener` in a task.
fn serve(root: &Path, listener: TcpListener, sse_seen: SseLog) -> tokio::task::JoinHandle<()> {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    b.set_access(BucketMustExist {
        root: root.to_path_buf(),
        sse_seen,
    });
    let service = b.build();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        // Connections live in this task's JoinSet: aborting the server drops them all,
        // so a stopped server really is unreachable, keep-alive or not.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            connections.spawn(async move {
                let _ = conn.await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options for an S3-compatible endpoint on 127.0.0.1 with explicit keys (never the
/// environment's), path-style requests and quick retries.
pub fn options_for(endpoint: &str, key: &str, secret: &str) -> StoreOptions {
    StoreOptions {
        s3: S3Options {
            endpoint: Some(endpoint.to_string()),
            region: Some("us-east-1".into()),
            allow_http: Some(true),
            virtual_hosted_style: Some(false),
            access_key_id: Some(key.to_string()),
            secret_access_key: Some(Secret::new(secret)),
            session_token: None,
            sse: None,
        },
        retry: RetryOptions {
            max_retries: 2,
            retry_timeout: Duration::from_secs(3),
            init_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            download_stall: Duration::from_secs(10),
        },
        ..StoreOptions::default()
    }
}

pub mod data;
pub mod proxy;
