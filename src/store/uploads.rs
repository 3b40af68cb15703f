//! The journal of multipart uploads in progress, so that uploads a killed process left
//! incomplete are aborted by the next one instead of holding their parts (and their
//! storage cost) in the bucket for ever.
//!
//! An object store keeps the parts of an upload that was neither completed nor aborted
//! until someone aborts it, and object_store cannot list such uploads. So the writer
//! that starts one notes it first, in a directory next to its catalog (one small file
//! per upload: the object's path and the upload id), and removes the note once the
//! upload is completed or aborted. A process that holds the catalog's writer lock is
//! the only one uploading with that journal: at its start, every note left is an upload
//! that died with an earlier process, and [`Repository::abort_leftover_uploads`]
//! (`repo.rs`) aborts it. An upload whose start request was lost on the way back (its
//! id never reached us) cannot be noted: a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) covers those, and a lost journal.

use std::io::Write;
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;

/// Where the notes of one writer's uploads in progress are kept.
#[derive(Debug, Clone)]
pub struct UploadJournal {
    dir: PathBuf,
}

/// One upload a journal notes: the bucket-level path, the upload id, and the note.
#[derive(Debug, Clone)]
pub struct NotedUpload {
    pub path: ObjectPath,
    pub id: String,
    pub note: PathBuf,
}

impl UploadJournal {
    pub fn new(dir: PathBuf) -> UploadJournal {
        UploadJournal { dir }
    }

    /// Notes an upload before any part of it is sent; returns the note to remove once
    /// the upload is completed or aborted.
    pub fn record(&self, path: &ObjectPath, id: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let note = self
            .dir
            .join(format!("{}.upload", uuid::Uuid::new_v4().simple()));
        let mut file = std::fs::File::create_new(&note)?;
        file.write_all(format!("{path}\n{id}\n").as_bytes())?;
        file.sync_all()?;
        Ok(note)
    }

    /// Removes a note (its upload is completed or aborted).
    pub fn forget(note: &Path) {
        if let Err(e) = std::fs::remove_file(note)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(note = %note.display(), "cannot remove the note of a finished multipart upload: {e}");
        }
    }

    /// Every upload noted and not forgotten. A note that cannot be read is reported
    /// and skipped (it is kept for the next start).
    pub fn noted(&self) -> std::io::Result<Vec<NotedUpload>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let note = entry?.path();
            if note.extension().is_none_or(|e| e != "upload") {
                continue;
            }
            let text = match std::fs::read_to_string(&note) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(note = %note.display(), "cannot read the note of a multipart upload: {e}");
                    continue;
                }
            };
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(path), Some(id)) if !path.is_empty() && !id.is_empty() => {
                    out.push(NotedUpload {
                        path: ObjectPath::from(path),
                        id: id.to_string(),
                        note,
                    });
                }
                // Torn by a crash while it was written: its upload never got a part.
                _ => Self::forget(&note),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noted_uploads_are_listed_until_forgotten_and_torn_notes_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = UploadJournal::new(tmp.path().join("cat.db.uploads"));
        assert!(journal.noted().unwrap().is_empty(), "no directory yet");
        let a = journal
            .record(&ObjectPath::from("pre/blobs/ab/abcd"), "id-1")
            .unwrap();
        let b = journal
            .record(&ObjectPath::from("pre/blobs/cd/cdef"), "id-2")
            .unwrap();
        std::fs::write(tmp.path().join("cat.db.uploads/torn.upload"), "pre/x\n").unwrap();
        let mut noted = journal.noted().unwrap();
        noted.sort_by(|x, y| x.id.cmp(&y.id));
        let got: Vec<(String, String)> = noted
            .iter()
            .map(|n| (n.path.to_string(), n.id.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("pre/blobs/ab/abcd".to_string(), "id-1".to_string()),
                ("pre/blobs/cd/cdef".to_string(), "id-2".to_string())
            ]
        );
        assert!(!tmp.path().join("cat.db.uploads/torn.upload").exists());
        UploadJournal::forget(&a);
        UploadJournal::forget(&a);
        assert_eq!(journal.noted().unwrap().len(), 1);
        UploadJournal::forget(&b);
        assert!(journal.noted().unwrap().is_empty());
    }
}
