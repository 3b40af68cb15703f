//! Checking Data.db against its Digest component, to catch a corrupt SSTable before it is
//! uploaded (and later, after it is restored).
//!
//! | file             | versions      | content                                  |
//! |------------------|---------------|------------------------------------------|
//! | `Digest.sha1`    | 2.0 (`jb`…)   | SHA-1 hex of Data.db, then the file name |
//! | `Digest.sha1`    | 2.1 (`ka`)    | decimal Adler-32 (the name stayed)       |
//! | `Digest.adler32` | 2.2 (`la`,`lb`)| decimal Adler-32                        |
//! | `Digest.crc32`   | 3.0+          | decimal CRC32                            |
//!
//! Data.db is streamed in fixed-size blocks, so memory use does not depend on its size.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha1::Digest as _;

use super::name::{Component, DigestExt, Version};
use super::sstable_dir::SSTable;

const READ_BLOCK: usize = 1 << 20;

/// The checksum algorithm a Digest file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    Crc32,
    Adler32,
    Sha1,
}

impl DigestAlgorithm {
    /// The algorithm for a Digest component of an SSTable of this version.
    pub fn for_component(ext: DigestExt, version: Version) -> DigestAlgorithm {
        match ext {
            DigestExt::Crc32 => DigestAlgorithm::Crc32,
            DigestExt::Adler32 => DigestAlgorithm::Adler32,
            // 2.1 kept the `.sha1` name but switched to Adler-32.
            DigestExt::Sha1 if version.as_str() >= "ka" => DigestAlgorithm::Adler32,
            DigestExt::Sha1 => DigestAlgorithm::Sha1,
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestAlgorithm::Crc32 => "CRC32",
            DigestAlgorithm::Adler32 => "Adler-32",
            DigestAlgorithm::Sha1 => "SHA-1",
        })
    }
}

/// A successful check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestOk {
    pub algorithm: DigestAlgorithm,
    pub value: String,
}

/// Why a digest check failed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(
        "{data} does not match {digest}: {algorithm} expected {expected}, computed {actual} (the SSTable is corrupt; run `nodetool scrub` or restore it from a replica)"
    )]
    Mismatch {
        data: PathBuf,
        digest: PathBuf,
        algorithm: DigestAlgorithm,
        expected: String,
        actual: String,
    },
    #[error("{path} does not hold a {algorithm} value: {content:?}")]
    BadDigestFile {
        path: PathBuf,
        algorithm: DigestAlgorithm,
        content: String,
    },
    #[error("{}", io_message(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was rewritten or replaced while it was read: its checksum says nothing
    /// about the SSTable (read again at the next pass).
    #[error("{path} changed while it was read; it is read again at the next pass")]
    Changed { path: PathBuf },
}

impl DigestError {
    /// Whether the error says the file may not be read by this user (not corruption).
    pub fn is_permission(&self) -> bool {
        matches!(self, DigestError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

/// "cannot read PATH: WHY", naming the user when the cause is a lack of permission.
pub fn io_message(path: &Path, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            "cannot read {} as user {}: {source} (a permission problem, not a damaged file: give that user read access, or run tablesafe as the user Cassandra runs as)",
            path.display(),
            current_user()
        )
    } else {
        format!("cannot read {}: {source}", path.display())
    }
}

/// This process's effective user, by name when it has one: `name (uid N)`.
pub fn current_user() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0u8; 4096];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pwd` and `buf`, both alive and sized as given; the
    // name pointer is read only when `result` says the entry was found.
    let name = unsafe {
        let rc = libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*result).pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Streams `data` and compares it with the value in `digest`.
pub fn verify_file(
    data: &Path,
    digest: &Path,
    algorithm: DigestAlgorithm,
) -> Result<DigestOk, DigestError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DigestError::Io { path, source }
    };
    let mut text = String::new();
    File::open(digest)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(io(digest))?;
    let token = text.split_whitespace().next().unwrap_or("");
    let expected = match algorithm {
        DigestAlgorithm::Sha1 => (token.len() == 40
            && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| token.to_ascii_lowercase()),
        DigestAlgorithm::Crc32 | DigestAlgorithm::Adler32 => {
            token.parse::<u32>().ok().map(|v| v.to_string())
        }
    };
    let Some(expected) = expected else {
        return Err(DigestError::BadDigestFile {
            path: digest.to_path_buf(),
            algorithm,
            content: text.chars().take(80).collect(),
        });
    };
    let mut file = File::open(data).map_err(io(data))?;
    let before = file.metadata().map_err(io(data))?;
    let actual = checksum_reader(&mut file, algorithm).map_err(io(data))?;
    if !same_file_state(&before, data) {
        return Err(DigestError::Changed {
            path: data.to_path_buf(),
        });
    }
    if actual != expected {
        return Err(DigestError::Mismatch {
            data: data.to_path_buf(),
            digest: digest.to_path_buf(),
            algorithm,
            expected,
            actual,
        });
    }
    Ok(DigestOk {
        algorithm,
        value: actual,
    })
}

/// Whether the file at `path` is still the one `before` describes, with the same size
/// and modification time (a change of links alone, which moves only the ctime, is not
/// a change of content).
fn same_file_state(before: &std::fs::Metadata, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|now| {
        (
            now.dev(),
            now.ino(),
            now.size(),
            now.mtime(),
            now.mtime_nsec(),
        ) == (
            before.dev(),
            before.ino(),
            before.size(),
            before.mtime(),
            before.mtime_nsec(),
        )
    })
}

/// The checksum of a whole file, formatted as Cassandra writes it.
pub fn checksum_file(path: &Path, algorithm: DigestAlgorithm) -> std::io::Result<String> {
    checksum_reader(&mut File::open(path)?, algorithm)
}

/// The checksum of everything `file` holds from where it stands.
fn checksum_reader(file: &mut File, algorithm: DigestAlgorithm) -> std::io::Result<String> {
    enum State {
        Crc(crc32fast::Hasher),
        Adler(adler2::Adler32),
        Sha(sha1::Sha1),
    }
    let mut state = match algorithm {
        DigestAlgorithm::Crc32 => State::Crc(crc32fast::Hasher::new()),
        DigestAlgorithm::Adler32 => State::Adler(adler2::Adler32::new()),
        DigestAlgorithm::Sha1 => State::Sha(sha1::Sha1::new()),
    };
    let mut buf = vec![0u8; READ_BLOCK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match &mut state {
            State::Crc(h) => h.update(&buf[..n]),
            State::Adler(h) => h.write_slice(&buf[..n]),
            State::Sha(h) => h.update(&buf[..n]),
        }
    }
    Ok(match state {
        State::Crc(h) => h.finalize().to_string(),
        State::Adler(h) => h.checksum().to_string(),
        State::Sha(h) => hex::encode(h.finalize()),
    })
}

/// The outcome of checking one SSTable, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DigestStatus {
    Ok {
        algorithm: DigestAlgorithm,
        value: String,
    },
    Mismatch {
        algorithm: DigestAlgorithm,
        expected: String,
        actual: String,
        message: String,
    },
    /// Could not check: no Digest or Data component, or a read error.
    Unchecked { reason: String },
}

impl DigestStatus {
    pub fn is_ok(&self) -> bool {
        matches!(self, DigestStatus::Ok { .. })
    }
}

/// Checks an SSTable found in `dir` against its Digest component.
pub fn verify_sstable(dir: &Path, sstable: &SSTable) -> DigestStatus {
    let digest = sstable.components.iter().find_map(|c| match c.component {
        Component::Digest(ext) => Some((ext, c)),
        _ => None,
    });
    let Some((ext, digest)) = digest else {
        return DigestStatus::Unchecked {
            reason: "no Digest component".into(),
        };
    };
    let Some(data) = sstable.component(&Component::Data) else {
        return DigestStatus::Unchecked {
            reason: "no Data.db".into(),
        };
    };
    let algorithm = DigestAlgorithm::for_component(ext, sstable.descriptor.version);
    match verify_file(
        &dir.join(&data.file_name),
        &dir.join(&digest.file_name),
        algorithm,
    ) {
        Ok(ok) => DigestStatus::Ok {
            algorithm: ok.algorithm,
            value: ok.value,
        },
        Err(e) => match &e {
            DigestError::Mismatch {
                algorithm,
                expected,
                actual,
                ..
            } => DigestStatus::Mismatch {
                algorithm: *algorithm,
                expected: expected.clone(),
                actual: actual.clone(),
                message: e.to_string(),
            },
            _ => DigestStatus::Unchecked {
                reason: e.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_data_file_rewritten_while_it_is_read_is_changed_not_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("nb-1-big-Data.db");
        let digest = tmp.path().join("nb-1-big-Digest.sha1");
        let file = File::create(&data).unwrap();
        file.set_len(32 << 20).unwrap();
        drop(file);
        std::fs::write(&digest, "0".repeat(40)).unwrap();
        // Something keeps writing the file (its mtime moves) while it is checked.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, data) = (stop.clone(), data.clone());
            std::thread::spawn(move || {
                let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
                let mut t = SystemTime::now();
                while !stop.load(Ordering::Relaxed) {
                    t += Duration::from_secs(1);
                    file.set_modified(t).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let result = verify_file(&data, &digest, DigestAlgorithm::Sha1);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            matches!(result, Err(DigestError::Changed { .. })),
            "{result:?}"
        );
        // Left alone, the same wrong digest is what it is: a mismatch.
        assert!(matches!(
            verify_file(&data, &digest, DigestAlgorithm::Sha1),
            Err(DigestError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_permission_error_names_the_user_and_the_file() {
        let e = DigestError::Io {
            path: PathBuf::from("/d/nb-1-big-Data.db"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(e.is_permission());
        let text = e.to_string();
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert!(text.contains("/d/nb-1-big-Data.db"), "{text}");
        assert!(text.contains(&format!("uid {uid}")), "{text}");
        assert!(text.contains("permission problem"), "{text}");
    }
}
