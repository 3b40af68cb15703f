//! Frames in memory while blobs are read: one process-wide budget, and the buffers
//! they reuse.
//!
//! A restore reads `--parallel` large blobs at once, and each keeps a few frames in
//! flight so that rayon's threads always have one to decompress. Counted per blob, that
//! is `parallel × window × (compressed + decompressed frame)`: over 200 MiB at the
//! default of 8, with 4 MiB frames, for no gain, since only `threads` frames can be
//! decompressed at a time. So the bytes of frames between "payload read" and "written
//! out" are counted once for the process ([`reserve`]): enough for every rayon thread to
//! have two frames, whatever `--parallel` says.
//!
//! The buffers of those frames are recycled ([`buffer`], [`recycle`]): a fresh 4 MiB
//! allocation costs a thousand page faults and, for a payload, a memset, on every frame;
//! and a buffer allocated on one thread and freed on another grows glibc's per-thread
//! arenas (see `blob::encode_frame_into`).

use std::sync::{Condvar, LazyLock, Mutex, PoisonError};

use super::blob::DEFAULT_FRAME_SIZE;

/// Bytes of frames in flight for the whole process.
fn capacity() -> usize {
    let threads = rayon::current_num_threads().max(1);
    // A frame holds its payload and its decompressed bytes while it is decoded.
    let per_frame = 2 * DEFAULT_FRAME_SIZE as usize;
    (2 * threads + 2) * per_frame
}

/// Buffers kept for reuse: as many as the frames the budget lets in at once, each
/// holding one side of a frame.
fn kept_buffers() -> usize {
    2 * (2 * rayon::current_num_threads().max(1) + 2)
}

/// Smaller buffers come from the allocator as usual: its free lists serve them without
/// page faults, and zeroing them is cheap.
const POOLED_MIN: usize = 256 * 1024;

/// Every pooled buffer can hold a default frame, so any can serve any request.
const POOLED_CAPACITY: usize = DEFAULT_FRAME_SIZE as usize;

/// A buffer bigger than this is freed rather than kept (a blob written with a larger
/// `frame_size` than the default).
const KEPT_BUFFER_MAX: usize = POOLED_CAPACITY + 64 * 1024;

struct Pool {
    capacity: usize,
    available: Mutex<usize>,
    freed: Condvar,
    buffers: Mutex<Vec<Vec<u8>>>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let capacity = capacity();
    Pool {
        capacity,
        available: Mutex::new(capacity),
        freed: Condvar::new(),
        buffers: Mutex::new(Vec::new()),
    }
});

/// Room for one frame in the budget; given back when dropped.
#[must_use = "the room is given back as soon as the reservation is dropped"]
pub(crate) struct Reservation {
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let pool = &*POOL;
        let mut available = pool
            .available
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *available += self.bytes;
        drop(available);
        pool.freed.notify_all();
    }
}

/// What a frame of `bytes` takes: a frame bigger than the whole budget takes all of it,
/// so it can still be read (alone).
fn weight(bytes: usize) -> usize {
    bytes.min(POOL.capacity)
}

/// Room for `bytes` if the budget has it now. A reader holding frames in flight calls
/// this, and on `None` writes out its oldest frame first: waiting while holding room
/// could leave every reader waiting on the others.
pub(crate) fn try_reserve(bytes: usize) -> Option<Reservation> {
    let bytes = weight(bytes);
    let mut available = POOL
        .available
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if *available < bytes {
        return None;
    }
    *available -= bytes;
    Some(Reservation { bytes })
}

/// Room for `bytes`, waiting for it. Only for a reader that holds no other room.
pub(crate) fn reserve(bytes: usize) -> Reservation {
    let bytes = weight(bytes);
    let pool = &*POOL;
    let mut available = pool
        .available
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while *available < bytes {
        available = pool
            .freed
            .wait(available)
            .unwrap_or_else(PoisonError::into_inner);
    }
    *available -= bytes;
    Reservation { bytes }
}

/// The memory a frame buffer of `len` bytes takes: a pooled buffer is a whole default
/// frame (once reused it holds as many resident pages as it ever filled). Frames are
/// weighed in the budget by this, so many small frames cannot hold many large buffers.
pub(crate) fn footprint(len: usize) -> usize {
    if len < POOLED_MIN {
        len
    } else {
        len.max(POOLED_CAPACITY)
    }
}

/// A buffer of length `len` (contents unspecified: the caller overwrites them). A large
/// one is reused when one is kept, so neither page faults nor zeroing are paid again.
pub(crate) fn buffer(len: usize) -> Vec<u8> {
    let mut buf = if len < POOLED_MIN {
        Vec::new()
    } else {
        pooled(len)
    };
    // Only bytes never initialised before are zeroed.
    buf.resize(len, 0);
    buf
}

/// An empty buffer with room for `capacity` bytes, reused like [`buffer`].
pub(crate) fn empty_buffer(capacity: usize) -> Vec<u8> {
    if capacity < POOLED_MIN {
        return Vec::with_capacity(capacity);
    }
    let mut buf = pooled(capacity);
    buf.clear();
    buf.reserve_exact(capacity);
    buf
}

/// A kept buffer, or a new one that can hold at least a default frame.
fn pooled(len: usize) -> Vec<u8> {
    let kept = POOL
        .buffers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    kept.unwrap_or_else(|| Vec::with_capacity(len.max(POOLED_CAPACITY)))
}

/// Gives a frame's buffer back for reuse; small and oversized ones are simply freed.
pub(crate) fn recycle(buf: Vec<u8>) {
    if !(POOLED_CAPACITY..=KEPT_BUFFER_MAX).contains(&buf.capacity()) {
        return;
    }
    let mut buffers = POOL.buffers.lock().unwrap_or_else(PoisonError::into_inner);
    if buffers.len() < kept_buffers() {
        buffers.push(buf);
    }
}

/// A pooled buffer as the owner of a [`bytes::Bytes`]: recycled when the last view of
/// it is dropped, on whichever thread that happens (an upload's part, once sent).
pub(crate) struct Recycled(pub(crate) Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_given_back_when_a_reservation_drops() {
        let all = POOL.capacity;
        // Other tests in this process may read blobs: wait for the whole budget.
        let whole = reserve(all);
        assert!(try_reserve(1).is_none(), "the budget is all taken");
        drop(whole);
        let some = try_reserve(all / 2).expect("half the budget is free again");
        drop(some);
    }

    #[test]
    fn a_frame_in_a_pooled_buffer_weighs_the_whole_buffer() {
        assert_eq!(footprint(0), 0);
        assert_eq!(footprint(POOLED_MIN - 1), POOLED_MIN - 1);
        assert_eq!(footprint(POOLED_MIN), POOLED_CAPACITY);
        assert_eq!(footprint(POOLED_CAPACITY + 1), POOLED_CAPACITY + 1);
        // So the budget holds no more pooled buffers than its capacity in default frames.
        let frames = POOL.capacity / (2 * footprint(POOLED_MIN));
        assert_eq!(frames, 2 * rayon::current_num_threads().max(1) + 2);
    }

    #[test]
    fn a_frame_bigger_than_the_budget_still_gets_it_all() {
        let r = reserve(POOL.capacity * 4);
        assert_eq!(r.bytes, POOL.capacity);
    }

    #[test]
    fn a_recycled_buffer_is_handed_out_again_at_the_asked_length() {
        let mut b = buffer(POOLED_MIN + 1000);
        assert!(b.capacity() >= POOLED_CAPACITY);
        b[POOLED_MIN + 999] = 7;
        let ptr = b.as_ptr();
        recycle(b);
        let again = buffer(POOLED_MIN);
        assert_eq!(again.len(), POOLED_MIN);
        // Buffers are shared by the whole process, so another test may have taken it;
        // when it is ours, its allocation was reused, not made anew.
        if again.as_ptr() == ptr {
            assert!(again.capacity() >= POOLED_CAPACITY);
        }
        assert_eq!(buffer(10).len(), 10);
        assert!(empty_buffer(POOLED_MIN).capacity() >= POOLED_MIN);
        recycle(vec![0u8; KEPT_BUFFER_MAX + 1]);
        recycle(vec![0u8; 10]);
        let kept: Vec<usize> = POOL
            .buffers
            .lock()
            .unwrap()
            .iter()
            .map(Vec::capacity)
            .collect();
        assert!(
            kept.iter()
                .all(|c| (POOLED_CAPACITY..=KEPT_BUFFER_MAX).contains(c)),
            "{kept:?}"
        );
    }
}
