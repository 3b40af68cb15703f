//! Pinning: a hard link of a file about to be read, in a staging directory on the same
//! filesystem, so that a compaction deleting the original cannot make it vanish before
//! it is durable in the repository. Pins are removed once the batch recording the file
//! is committed.
//!
//! Each process pins under `<pin dir>/<pid>/`; directories of processes that no longer
//! run (a killed daemon) are removed when the next process starts. Where a hard link is
//! impossible (another filesystem, no permission) the original is read directly.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A process's pin directory.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    counter: AtomicU64,
}

impl Pins {
    /// Creates `<base>/<pid>/` and removes the pin directories of dead processes.
    pub fn open(base: &Path) -> io::Result<Pins> {
        fs::create_dir_all(base)?;
        for entry in fs::read_dir(base)?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        fs::create_dir_all(&dir)?;
        Ok(Pins {
            dir,
            counter: AtomicU64::new(0),
        })
    }

    /// Hard-links `path` into the pin directory. `Ok(None)`: linking is impossible here,
    /// read the original. `Err(NotFound)`: the file is already gone.
    pub fn pin(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let pinned = self.dir.join(format!("pin-{n}"));
        match fs::hard_link(path, &pinned) {
            Ok(()) => Ok(Some(pinned)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.exists() => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Removes a pin.
    pub fn release(&self, pinned: &Path) {
        let _ = fs::remove_file(pinned);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_file_survives_deletion_of_the_original() {
        let tmp = tempfile::tempdir().unwrap();
        let original = tmp.path().join("nb-1-big-Data.db");
        fs::write(&original, b"sstable bytes").unwrap();
        let pins = Pins::open(&tmp.path().join("pins")).unwrap();
        let pinned = pins.pin(&original).unwrap().unwrap();
        fs::remove_file(&original).unwrap();
        assert_eq!(fs::read(&pinned).unwrap(), b"sstable bytes");
        pins.release(&pinned);
        assert!(!pinned.exists());
        assert_eq!(
            pins.pin(&original).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn pins_of_dead_processes_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("pins");
        let stale = base.join("999999999");
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join("pin-0"), b"x").unwrap();
        let pins = Pins::open(&base).unwrap();
        assert!(!stale.exists());
        drop(pins);
        assert!(!base.join(std::process::id().to_string()).exists());
    }
}
