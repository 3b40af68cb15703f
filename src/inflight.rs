//! How many transfers run at once, weighted by size.
//!
//! A large blob is limited by bandwidth and CPU: a few at a time keep both busy, and each
//! holds several frames in memory. A small blob is limited by the round trip of its
//! request (a few ms on a local S3 server, tens of ms on a cloud store) and holds almost
//! nothing: only many requests in flight keep the link busy. So `--parallel N` means N
//! large transfers at once, and a transfer of a small blob takes a fraction of a slot:
//! up to `N * SMALL_PER_SLOT` tiny ones at once. Memory stays bounded as before: the
//! bytes in flight never exceed what N large transfers could hold.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Small transfers that share one slot of `--parallel`.
pub const SMALL_PER_SLOT: usize = 8;
/// A transfer of this many bytes or more takes a whole slot.
pub const WHOLE_SLOT_BYTES: u64 = 1024 * 1024;

/// Slots for transfers weighted by size.
#[derive(Debug)]
pub struct Budget {
    permits: Semaphore,
}

impl Budget {
    /// Room for `parallel` large transfers at once.
    pub fn new(parallel: usize) -> Budget {
        Budget {
            permits: Semaphore::new(parallel.max(1) * SMALL_PER_SLOT),
        }
    }

    /// The most transfers that can be in flight at once (all of them small).
    pub fn max_in_flight(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for room for a transfer of `bytes`; the room is given back when the permit
    /// is dropped. Waiters are served in order, so a large transfer is not starved.
    pub async fn acquire(&self, bytes: u64) -> Option<SemaphorePermit<'_>> {
        self.permits.acquire_many(weight(bytes)).await.ok()
    }
}

/// Permits a transfer of `bytes` takes: 1 for the smallest, a whole slot from
/// [`WHOLE_SLOT_BYTES`] up.
fn weight(bytes: u64) -> u32 {
    let step = WHOLE_SLOT_BYTES / SMALL_PER_SLOT as u64;
    (bytes / step + 1).min(SMALL_PER_SLOT as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(weight(0), 1);
        assert_eq!(weight(4096), 1);
        assert_eq!(weight(WHOLE_SLOT_BYTES / 2), 5);
        assert_eq!(weight(WHOLE_SLOT_BYTES - 1), SMALL_PER_SLOT as u32);
        assert_eq!(weight(1 << 40), SMALL_PER_SLOT as u32);
    }

    #[tokio::test]
    async fn large_transfers_take_a_whole_slot() {
        let b = Budget::new(2);
        assert_eq!(b.max_in_flight(), 16);
        let big1 = b.acquire(64 << 20).await;
        let big2 = b.acquire(64 << 20).await;
        assert!(big1.is_some() && big2.is_some());
        assert_eq!(b.permits.available_permits(), 0);
        drop(big1);
        let small: Vec<_> = futures::future::join_all((0..8).map(|_| b.acquire(10))).await;
        assert!(small.iter().all(Option::is_some));
        assert_eq!(b.permits.available_permits(), 0);
    }
}
