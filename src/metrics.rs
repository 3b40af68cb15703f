//! The daemon's Prometheus endpoint: `GET /metrics` on `--metrics-addr`, plain HTTP/1.1,
//! one short response per connection. Small enough that a web framework would be the
//! larger part of it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::timespec;
use crate::watch::{DaemonStatus, render_metrics};

/// Binds the endpoint now (so a bad address fails at start) and serves it in a task.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Mutex<DaemonStatus>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                // Read the request head (bounded); the body, if any, is ignored.
                while len < buf.len() {
                    match conn.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let response = if head.starts_with("GET /metrics ") {
                    let body = {
                        let s = status.lock().unwrap_or_else(|p| p.into_inner());
                        render_metrics(&s, timespec::now())
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    }))
}
