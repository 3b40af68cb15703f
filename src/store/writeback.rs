//! Starting the disk writes of a restored file while it is still being written.
//!
//! A restored file is fsynced before it is renamed into place. On a machine with much
//! RAM the kernel keeps gigabytes dirty before it writes any back on its own, so without
//! help every byte of a large file waits in the page cache until that fsync, which then
//! stalls its thread for as long as the disk takes to write the whole file, while the
//! disk sat idle during the decompression before. [`EarlyWriteback`] asks the kernel to
//! start writing each few MiB as soon as they are written (`sync_file_range` with
//! `SYNC_FILE_RANGE_WRITE`, which does not wait for the writes to finish), so the disk
//! works alongside the CPU and the fsync finds little left to do. It changes nothing
//! about durability: the fsync is still what makes the file durable. Elsewhere than
//! Linux it only writes.

use std::fs::File;
use std::io::{self, Write};

/// Bytes written between two writeback requests.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// A file whose written bytes are handed to the disk every [`WRITEBACK_EVERY`] bytes.
pub(crate) struct EarlyWriteback {
    file: File,
    /// Bytes written so far.
    written: u64,
    /// Where the bytes not yet handed to the disk start.
    requested: u64,
}

impl EarlyWriteback {
    pub(crate) fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            requested: 0,
        }
    }

    /// The file, for its fsync (which writes back what is left).
    pub(crate) fn into_inner(self) -> File {
        self.file
    }

    fn request_writeback(&mut self) {
        let len = self.written - self.requested;
        start_writeback(&self.file, self.requested, len);
        self.requested = self.written;
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.requested >= WRITEBACK_EVERY {
            self.request_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to the disk. Only
/// a hint: a file system that does not support it loses nothing, the fsync still comes.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed; the call reads
    // no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_every_byte_in_order_across_writeback_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = EarlyWriteback::new(File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..6 {
            w.write_all(&chunk).unwrap();
        }
        // Requests at 9 MiB and 18 MiB: each once 8 MiB or more were waiting.
        assert_eq!(w.requested, 18 * 1024 * 1024);
        w.into_inner().sync_all().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 6 * chunk.len());
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }
}
