//! One writer per catalog: the lock a process that writes a node's history holds for its
//! whole life.
//!
//! `backup`, `snapshot create`, `daemon` and `catalog rebuild` take an exclusive
//! `flock` on `<catalog>.lock` (next to the catalog) before they open the catalog, and
//! write their PID into it. The kernel releases the lock when the process ends, however
//! it ends, so a killed daemon never blocks the next one; a second writer is refused
//! with the PID of the one that holds it. Read-only commands (`status`, `snapshot list`,
//! `restore`) take no lock: SQLite lets them read while a daemon writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "catalog {catalog} is in use by another tablesafe process (pid {pid}), a daemon or backup writing this node's history: stop it (or let it finish) first; status, snapshot list and restore work meanwhile"
    )]
    Held { catalog: PathBuf, pid: String },
    #[error("cannot lock {path}: {source} (check the permissions of the catalog's directory)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while the process writes the catalog's node history; released when dropped or
/// when the process dies.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// The lock file of the catalog at `catalog`: `<catalog>.lock`.
    pub fn path_for(catalog: &Path) -> PathBuf {
        let mut name = catalog.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of the catalog at `catalog` without waiting, creating the lock file
    /// (and the catalog's directory) if needed.
    pub fn acquire(catalog: &Path) -> Result<WriterLock, LockError> {
        let path = Self::path_for(catalog);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            return Err(LockError::Held {
                catalog: catalog.to_path_buf(),
                pid: holder_pid(&mut file),
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(WriterLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID the holder wrote. It writes it right after taking the lock: wait briefly if
/// it is not there yet.
fn holder_pid(file: &mut File) -> String {
    for _ in 0..50 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            let pid = text.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                return pid.to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "unknown".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("sub/n1.db");
        let held = WriterLock::acquire(&catalog).unwrap();
        assert_eq!(held.path(), dir.path().join("sub/n1.db.lock"));
        // flock locks belong to the open file description: a second open is refused.
        let err = WriterLock::acquire(&catalog).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(held);
        WriterLock::acquire(&catalog).unwrap();
    }
}
