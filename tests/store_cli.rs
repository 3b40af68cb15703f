//! Storage errors through the real binary: one line each that says what to do, the
//! documented exit code, never a panic, and no request to a cloud's instance metadata
//! service (169.254.169.254) when no credentials are configured. Every address these
//! tests contact is on 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const KEYS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")];

/// The binary with no cloud settings or credentials from the caller's environment, and
/// an empty home (no ~/.aws, no gcloud credentials).
fn bare(home: &tempfile::TempDir) -> Command {
    let mut c = support::cli::tablesafe(home.path());
    for (k, _) in std::env::vars() {
        if ["AWS_", "GOOGLE_", "AZURE_", "GCE_", "MSI_", "IDENTITY_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(&k);
        }
    }
    // On a cloud VM the lookup would be allowed by default: forbid it there, so that
    // no test ever contacts the metadata service.
    if host_looks_like_a_cloud_vm() {
        c.env("TABLESAFE_INSTANCE_METADATA", "0");
    } else {
        c.env_remove("TABLESAFE_INSTANCE_METADATA");
    }
    c
}

fn host_looks_like_a_cloud_vm() -> bool {
    let dmi =
        |f: &str| std::fs::read_to_string(format!("/sys/class/dmi/id/{f}")).unwrap_or_default();
    let vendor = dmi("sys_vendor");
    vendor.contains("Amazon")
        || vendor.contains("Google")
        || vendor.contains("Microsoft")
        || dmi("product_name").contains("Google")
        || dmi("product_uuid").to_ascii_lowercase().starts_with("ec2")
        || std::path::Path::new("/sys/hypervisor/uuid").exists()
}

struct Run {
    out: Output,
    took: Duration,
}

impl Run {
    fn of(mut c: Command) -> Run {
        let started = Instant::now();
        let out = c.output().unwrap();
        Run {
            out,
            took: started.elapsed(),
        }
    }

    /// Exited with `code` (not a signal, not a panic) and printed exactly one line on
    /// stderr, which is returned.
    #[track_caller]
    fn one_line(&self, code: i32) -> String {
        let text = support::cli::text(&self.out);
        assert_eq!(self.out.status.signal(), None, "{text}");
        assert_eq!(self.out.status.code(), Some(code), "{text}");
        let stderr = String::from_utf8_lossy(&self.out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{text}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {text}");
        lines[0].to_string()
    }
}

fn init(home: &tempfile::TempDir, repo: &str, extra: &[&str]) -> Command {
    let mut c = bare(home);
    c.args(["init", "--repo", repo]).args(extra);
    c
}

/// A server on 127.0.0.1 that answers every request with HTTP 500 and an S3 error body
/// spread over several lines.
fn failing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let body = "<?xml version=\"1.0\"?>\n<Error>\n  <Code>InternalError</Code>\n  <Message>disk on fire</Message>\n</Error>\n";
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let reply = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_storage_error_is_one_line_naming_each_cause_once() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = failing_server();
    let mut c = init(
        &home,
        "s3://bkt/r",
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-allow-http",
            "--retry-timeout",
            "1s",
        ],
    );
    c.envs(KEYS);
    let run = Run::of(c);
    let line = run.one_line(1);
    assert!(line.contains("s3://bkt/r"), "{line}");
    assert_eq!(line.matches("status code: 500").count(), 1, "{line}");
    assert_eq!(line.matches("Generic S3 error").count(), 1, "{line}");
    // Retried (5xx is transient) for the budget, no longer.
    assert!(run.took >= Duration::from_secs(1), "{:?}", run.took);
    assert!(run.took < Duration::from_secs(30), "{:?}", run.took);
}

#[test]
fn a_plain_http_endpoint_without_the_allowing_setting_says_which_to_add() {
    let home = tempfile::tempdir().unwrap();
    let mut c = init(
        &home,
        "s3://bkt/r",
        &["--s3-endpoint", "http://127.0.0.1:9"],
    );
    c.envs(KEYS);
    let line = Run::of(c).one_line(2);
    assert!(line.contains("--s3-allow-http"), "{line}");
    assert!(line.contains("http://127.0.0.1:9"), "{line}");

    let mut c = init(&home, "az://container/r", &[]);
    c.env("AZURE_STORAGE_ACCOUNT_NAME", "acct")
        .env("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0")
        .env("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:9");
    let line = Run::of(c).one_line(2);
    assert!(line.contains("AZURE_ALLOW_HTTP=true"), "{line}");
}

#[test]
fn a_malformed_endpoint_is_one_line_and_exit_2_never_a_panic() {
    let home = tempfile::tempdir().unwrap();
    for endpoint in ["localhost:9000", "http://", "not a url", "http://exa mple"] {
        let mut c = init(
            &home,
            "s3://bkt/r",
            &["--s3-endpoint", endpoint, "--s3-allow-http"],
        );
        c.envs(KEYS);
        let line = Run::of(c).one_line(2);
        assert!(line.contains("is not a URL"), "{endpoint}: {line}");
    }
}

#[test]
fn an_invalid_repository_url_exits_2() {
    let home = tempfile::tempdir().unwrap();
    for repo in [
        "ftp://x/y",
        "s3:///p",
        "file://relative/path",
        "s3://b/../x",
    ] {
        let line = Run::of(init(&home, repo, &[])).one_line(2);
        assert!(line.contains("invalid repository URL"), "{repo}: {line}");
    }
}

#[test]
fn missing_credentials_are_named_without_asking_the_instance_metadata_service() {
    let home = tempfile::tempdir().unwrap();
    for (repo, env, says) in [
        ("gs://bkt/r", vec![], "no Google Cloud Storage credentials"),
        ("s3://bkt/r", vec![], "no S3 credentials"),
        (
            "az://container/r",
            vec![("AZURE_STORAGE_ACCOUNT_NAME", "acct")],
            "no Azure credentials",
        ),
    ] {
        let mut c = init(&home, repo, &[]);
        c.envs(env);
        let run = Run::of(c);
        let line = run.one_line(2);
        assert!(line.contains(says), "{repo}: {line}");
        assert!(line.contains(repo), "{repo}: {line}");
        assert!(line.contains("TABLESAFE_INSTANCE_METADATA=1"), "{line}");
        // Refused before any request: a metadata lookup would take seconds.
        assert!(run.took < Duration::from_secs(3), "{repo}: {:?}", run.took);
    }
}

#[test]
fn an_unreachable_store_is_named_with_its_endpoint_for_azure_too() {
    let home = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut c = init(&home, "az://container/r", &["--retry-timeout", "1s"]);
    c.env("AZURE_STORAGE_ACCOUNT_NAME", "acct")
        .env("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0")
        .env("AZURE_STORAGE_ENDPOINT", &endpoint)
        .env("AZURE_ALLOW_HTTP", "true");
    let line = Run::of(c).one_line(1);
    assert!(
        line.starts_with(&format!(
            "error: cannot reach the object store for az://container/r at {endpoint}"
        )),
        "{line}"
    );
}
