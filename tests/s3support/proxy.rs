//! A fault-injecting TCP proxy on 127.0.0.1 between tablesafe and the test S3 server.
//!
//! It forwards bytes both ways and can be told to:
//! - have an outage: every open connection is reset and every new one is reset as soon
//!   as it is accepted, for a while (started by hand, or by itself once a given number
//!   of bytes went up or down, so that it falls in the middle of a transfer);
//! - reset connections at random while they carry data (each chunk forwarded has a
//!   chance of killing its connection, from a seeded RNG, so a run can be repeated).
//!
//! A reset is a real TCP RST (SO_LINGER 0), what a peer or middlebox that drops the
//! connection sends; the client sees "connection reset by peer", mid-body or not.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// tablesafe → store (uploads).
    Up,
    /// store → tablesafe (downloads).
    Down,
}

#[derive(Default)]
struct Trigger {
    direction: Option<Direction>,
    after_bytes: u64,
    length: Duration,
}

struct State {
    started: Instant,
    /// Milliseconds since `started` until which the outage lasts (0: none).
    outage_until_ms: AtomicU64,
    /// Outages begun so far, so connections opened before one know to die.
    outages: AtomicU64,
    reset_per_mille: AtomicU32,
    rng: Mutex<StdRng>,
    up: AtomicU64,
    down: AtomicU64,
    resets: AtomicU64,
    trigger: Mutex<Trigger>,
}

impl State {
    fn in_outage(&self) -> bool {
        let until = self.outage_until_ms.load(Ordering::SeqCst);
        until != 0 && (self.started.elapsed().as_millis() as u64) < until
    }

    fn begin_outage(&self, length: Duration) {
        let until = self.started.elapsed() + length;
        self.outage_until_ms
            .store(until.as_millis() as u64, Ordering::SeqCst);
        self.outages.fetch_add(1, Ordering::SeqCst);
    }

    fn roll_reset(&self) -> bool {
        let p = self.reset_per_mille.load(Ordering::SeqCst);
        if p == 0 {
            return false;
        }
        let hit = self
            .rng
            .lock()
            .map(|mut r| r.random_range(0..1000) < p)
            .unwrap_or(false);
        if hit {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// Counts bytes forwarded and starts the armed outage when they reach its mark.
    fn count(&self, direction: Direction, n: usize) {
        let total = match direction {
            Direction::Up => self.up.fetch_add(n as u64, Ordering::SeqCst),
            Direction::Down => self.down.fetch_add(n as u64, Ordering::SeqCst),
        } + n as u64;
        let Ok(mut t) = self.trigger.lock() else {
            return;
        };
        if t.direction == Some(direction) && total >= t.after_bytes {
            t.direction = None;
            self.begin_outage(t.length);
        }
    }
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: give this to tablesafe as the endpoint.
    pub endpoint: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:<port>`), random choices seeded by `seed`.
    pub async fn start(upstream: &str, seed: u64) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            started: Instant::now(),
            outage_until_ms: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            reset_per_mille: AtomicU32::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            trigger: Mutex::new(Trigger::default()),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if s.in_outage() {
                    reset(client);
                    continue;
                }
                tokio::spawn(forward(client, upstream, s.clone()));
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// An outage of `length` starting now.
    pub fn outage(&self, length: Duration) {
        self.state.begin_outage(length);
    }

    /// An outage of `length` that starts once `after_bytes` have gone `direction`.
    pub fn outage_after(&self, direction: Direction, after_bytes: u64, length: Duration) {
        if let Ok(mut t) = self.state.trigger.lock() {
            *t = Trigger {
                direction: Some(direction),
                after_bytes,
                length,
            };
        }
    }

    /// Outages begun so far.
    pub fn outages(&self) -> u64 {
        self.state.outages.load(Ordering::SeqCst)
    }

    /// Each chunk forwarded (either way) resets its connection with this chance, in 1/1000.
    pub fn reset_at_random(&self, per_mille: u32) {
        self.state
            .reset_per_mille
            .store(per_mille, Ordering::SeqCst);
    }

    /// Connections reset at random so far.
    pub fn random_resets(&self) -> u64 {
        self.state.resets.load(Ordering::SeqCst)
    }

    /// Bytes forwarded `direction` so far.
    pub fn bytes(&self, direction: Direction) -> u64 {
        match direction {
            Direction::Up => self.state.up.load(Ordering::SeqCst),
            Direction::Down => self.state.down.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Drops a connection with a TCP RST.
fn reset(s: TcpStream) {
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, state: Arc<State>) {
    let outages_before = state.outages.load(Ordering::SeqCst);
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        let (n, direction) = tokio::select! {
            r = client.read(&mut up) => (r, Direction::Up),
            r = server.read(&mut down) => (r, Direction::Down),
            _ = tick.tick() => {
                if state.outages.load(Ordering::SeqCst) != outages_before {
                    break;
                }
                continue;
            }
        };
        let n = match n {
            Ok(0) | Err(_) => {
                // One side closed: close the other as well (politely).
                let _ = client.shutdown().await;
                let _ = server.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if state.outages.load(Ordering::SeqCst) != outages_before || state.roll_reset() {
            break;
        }
        let written = match direction {
            Direction::Up => server.write_all(&up[..n]).await,
            Direction::Down => client.write_all(&down[..n]).await,
        };
        if written.is_err() {
            break;
        }
        state.count(direction, n);
    }
    reset(client);
    reset(server);
}
