//! What interrupted uploads leave behind, removed by gc once older than the grace period.
//!
//! On a `file://` repository object_store writes every object to a staging file beside
//! its key, `<key>#<n>` (`blobs/<aa>/<hash>#1`, `nodes/<node>/log/<seq>#1`), and renames
//! it into place when the upload completes; a process killed in between leaves the
//! staging file, which nothing else ever removes. gc deletes those whose last change is
//! older than the grace period (a running upload writes to its file all the time, and
//! one that started within the grace period is left alone). Listing blobs skips them.
//!
//! On S3 an interrupted multipart upload leaves parts that are billed until aborted;
//! object_store 0.14 can abort an upload it knows the id of but cannot list the
//! incomplete ones (no ListMultipartUploads), so gc cannot find them: a bucket
//! lifecycle rule (`AbortIncompleteMultipartUpload`) is what removes them there.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::store::{Repository, StoreError};
use crate::timespec::Micros;

/// Staging files found and removed (or, on a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub files: u64,
    pub bytes: u64,
}

/// Removes the staging files of interrupted uploads last modified more than `grace`
/// ago from a `file://` repository (nothing to do on other stores). With `dry_run`,
/// only counts them.
pub async fn clean(
    repo: &Repository,
    grace: Micros,
    dry_run: bool,
) -> Result<Leftovers, StoreError> {
    let Some(root) = repo.url().local_path() else {
        return Ok(Leftovers::default());
    };
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_micros(grace.max(0) as u64))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    tokio::task::spawn_blocking(move || clean_dir(&root, cutoff, dry_run))
        .await
        .map_err(|e| StoreError::Internal(format!("cleaning task failed: {e}")))?
}

/// A staging file's name: `<name>#<digits>`.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

fn clean_dir(root: &Path, cutoff: SystemTime, dry_run: bool) -> Result<Leftovers, StoreError> {
    let read_err = |path: PathBuf, source| StoreError::ReadFile { path, source };
    let mut found = Leftovers::default();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = match entry {
            Ok(entry) => entry,
            // Gone meanwhile (a blob deleted, a staging file renamed into place).
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                return Err(read_err(path, e.into()));
            }
        };
        if !entry.file_type().is_file() || !entry.file_name().to_str().is_some_and(is_staging) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => return Err(read_err(entry.path().to_path_buf(), e.into())),
        };
        let modified = meta
            .modified()
            .map_err(|e| read_err(entry.path().to_path_buf(), e))?;
        if modified > cutoff {
            continue;
        }
        if !dry_run {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::WriteFile {
                        path: entry.path().to_path_buf(),
                        source,
                    });
                }
            }
        }
        found.files += 1;
        found.bytes += meta.len();
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::is_staging;

    #[test]
    fn only_names_ending_in_a_hash_sign_and_digits_are_staging_files() {
        assert!(is_staging(&format!("{}#1", "ab".repeat(32))));
        assert!(is_staging("00000000000000000001#12"));
        for name in ["config", "abc", "abc#", "#1", "abc#1x", &"ab".repeat(32)] {
            assert!(!is_staging(name), "{name}");
        }
    }
}
