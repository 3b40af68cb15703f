//! tablesafe's own retries around every storage request: the `--retry-timeout` budget.
//!
//! object_store retries a request a fixed number of times (its `max_retries`) and not
//! at all once a non-idempotent request (a conditional create, a POST) has started
//! sending, nor a response body that breaks while it streams. An outage of the store
//! longer than a few seconds or one connection reset mid-upload would then end a
//! backup. So every request the store layer makes goes through [`retry`]: a transient
//! failure (connection refused or reset, timeout, HTTP 5xx, 429, 408) is tried again,
//! with exponential backoff and jitter, until it succeeds or [`RetryOptions::retry_timeout`]
//! has passed since its first attempt, however many attempts that takes. Answers that
//! mean something (404, 403, 401, 409, 412) are returned at once.
//!
//! A repeated request must be safe: reads and overwrites are; a conditional create is
//! because keys are content addressed (the caller is told which attempt it is, and
//! treats "already exists" after a failed attempt as possibly its own write, checking
//! it); a multipart part is re-sent with the same part number (`parts.rs`).

use std::future::Future;
use std::time::{Duration, Instant};

use object_store::client::{HttpError, HttpErrorKind};

use super::options::RetryOptions;

/// Runs `op(attempt)` (attempt 0 first) until it succeeds, fails with an error that is
/// not transient, or the budget is spent; returns the last result.
pub(crate) async fn retry<T, F, Fut>(
    opts: &RetryOptions,
    what: &str,
    mut op: F,
) -> object_store::Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let start = Instant::now();
    let mut backoff = opts.init_backoff.max(Duration::from_millis(1));
    let mut attempt = 0u32;
    loop {
        let err = match op(attempt).await {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!(what, attempt, elapsed = ?start.elapsed(), "storage request succeeded after retries");
                }
                return Ok(v);
            }
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        if !is_transient(&err) || elapsed >= opts.retry_timeout {
            return Err(err);
        }
        let sleep = jitter(backoff).min(opts.retry_timeout - elapsed);
        if attempt == 0 {
            tracing::info!(what, error = %err, "storage request failed, retrying for up to {:?}", opts.retry_timeout);
        } else {
            tracing::debug!(what, attempt, error = %err, ?sleep, "storage request failed again");
        }
        tokio::time::sleep(sleep).await;
        backoff = (backoff * 2).min(opts.max_backoff.max(Duration::from_millis(1)));
        attempt += 1;
    }
}

/// `fut`, or a transient "timed out" error when it has not finished within `limit`: a
/// download whose connection went silent is then retried like one that was reset.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(object_store::Error::Generic {
            store: "tablesafe",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what}: no answer for {} s", limit.as_secs_f64()),
            )),
        }),
    }
}

/// Half the backoff plus a random part of the other half, so that many requests failing
/// together do not all come back at the same moment.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    let random = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    half + Duration::from_nanos(random % nanos)
}

/// Whether trying the same request again may succeed: the connection failed, broke or
/// timed out, or the server said it is overloaded or failing (5xx, 429, 408).
pub(crate) fn is_transient(err: &object_store::Error) -> bool {
    use object_store::Error as E;
    match err {
        E::NotFound { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::InvalidPath { .. }
        | E::UnknownConfigurationKey { .. }
        | E::JoinError { .. } => return false,
        _ => {}
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            return !matches!(h.kind(), HttpErrorKind::Decode);
        }
        if let Some(status) = http_status(&e.to_string()) {
            return status >= 500 || matches!(status, 408 | 429);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::UnexpectedEof
            );
        }
        cur = e.source();
    }
    false
}

/// The HTTP status of an object_store request error, from its text (the error type
/// that carries it is not public): `"... non-2xx status code: 503 Service Unavailable"`,
/// or a 200 whose body holds an error (S3's `InternalError`/`SlowDown`).
fn http_status(text: &str) -> Option<u16> {
    if text.contains("Server returned error response") {
        return Some(500);
    }
    let (_, rest) = text.split_once("non-2xx status code: ")?;
    rest.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn reset() -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: Box::new(HttpError::new(
                HttpErrorKind::Interrupted,
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            )),
        }
    }

    fn quick(budget_ms: u64) -> RetryOptions {
        RetryOptions {
            max_retries: 1,
            retry_timeout: Duration::from_millis(budget_ms),
            init_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryOptions::default()
        }
    }

    #[tokio::test]
    async fn a_download_that_goes_silent_is_a_transient_timeout_and_is_retried() {
        let silent = within(Duration::from_millis(50), "download", async {
            std::future::pending::<object_store::Result<()>>().await
        })
        .await
        .unwrap_err();
        assert!(is_transient(&silent), "{silent}");
        assert!(silent.to_string().contains("no answer"), "{silent}");
        // The second attempt answers: the retry loop gets past a silent first one.
        let got = retry(&quick(10_000), "test", |attempt| {
            within(Duration::from_millis(50), "download", async move {
                if attempt == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(attempt)
            })
        })
        .await
        .unwrap();
        assert_eq!(got, 1);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_past_any_count_until_success() {
        let calls = AtomicU32::new(0);
        let got = retry(&quick(10_000), "test", |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 40 {
                    Err(reset())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 40);
        assert_eq!(calls.load(Ordering::SeqCst), 41);
    }

    #[tokio::test]
    async fn the_budget_ends_retrying_and_meaningful_answers_are_not_retried() {
        let started = Instant::now();
        let err = retry(&quick(150), "test", |_| async { Err::<(), _>(reset()) })
            .await
            .unwrap_err();
        assert!(is_transient(&err));
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(started.elapsed() < Duration::from_secs(5));
        let calls = AtomicU32::new(0);
        let err = retry(&quick(10_000), "test", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<(), _>(object_store::Error::NotFound {
                    path: "x".into(),
                    source: "gone".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, object_store::Error::NotFound { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
