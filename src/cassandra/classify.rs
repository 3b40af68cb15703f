//! What a path under a Cassandra data directory is.
//!
//! A data directory looks like this (`data_file_directories` in cassandra.yaml):
//!
//! ```text
//! <data_dir>/<keyspace>/<table>-<32 hex table id>/          live SSTables, txn logs
//!                                            /.<index>/     secondary index SSTables
//!                                            /backups/      incremental backup hard links
//!                                            /snapshots/<tag>/   nodetool snapshot
//! ```
//!
//! Before 2.1 the table directory had no id (`<keyspace>/<table>/`). Classification is by
//! name only and never touches the disk; [`super::table`] looks at the files themselves.

use std::ffi::OsStr;
use std::path::{Component as PathComponent, Path};

use serde::Serialize;

use super::name::{Component, SSTableName};
use super::txnlog::TxnLogName;

/// Where in a table directory a file lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "tag", rename_all = "lowercase")]
pub enum Location {
    /// The table directory itself: what Cassandra serves reads from.
    Live,
    /// `backups/`: hard links made by `incremental_backups: true`.
    Backups,
    /// `snapshots/<tag>/`: hard links made by `nodetool snapshot`.
    Snapshot(String),
}

impl Location {
    /// The directory path of this location relative to the table directory.
    pub fn relative_dir(&self) -> String {
        match self {
            Location::Live => String::new(),
            Location::Backups => "backups".to_string(),
            Location::Snapshot(tag) => format!("snapshots/{tag}"),
        }
    }
}

/// The table a path belongs to, and where in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TablePlace {
    pub keyspace: String,
    pub table: String,
    /// The 32-hex-digit table id from the directory name; `None` before 2.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    pub location: Location,
    /// Secondary index directory name without its leading dot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

/// Kinds of temporary file; none of them is ever backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Temporary {
    /// A 2.x `tmp-`/`tmplink-` SSTable file, renamed into place when finished.
    Legacy2x { name: String },
    /// A component being rewritten (`…-Statistics.db.tmp`, then renamed over the original).
    Rewrite { of: String },
    /// A file being received by streaming: `<file>.<uuid>.tmp` or similar.
    Other,
}

/// What one file is, judged by its name and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Component(SSTableName),
    TxnLog(TxnLogName),
    Temporary(Temporary),
    /// `snapshots/<tag>/manifest.json`: the SSTables of a snapshot.
    SnapshotManifest,
    /// `snapshots/<tag>/schema.cql`: the table's schema when the snapshot was taken.
    SnapshotSchema,
    /// `CommitLog-<ver>-<id>.log` (lives in commitlog_directory, not in data).
    CommitLog {
        version: u32,
        id: u64,
    },
    /// Not something tablesafe backs up; the reason says why.
    Ignored(String),
}

impl FileKind {
    /// A short label for reports.
    pub fn label(&self) -> &'static str {
        match self {
            FileKind::Component(_) => "sstable component",
            FileKind::TxnLog(_) => "transaction log",
            FileKind::Temporary(_) => "temporary file",
            FileKind::SnapshotManifest => "snapshot manifest",
            FileKind::SnapshotSchema => "snapshot schema",
            FileKind::CommitLog { .. } => "commit log segment",
            FileKind::Ignored(_) => "ignored",
        }
    }

    /// Why the file is not backed up, for the kinds that never are.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            FileKind::Temporary(Temporary::Legacy2x { name }) => Some(format!(
                "2.x temporary SSTable file ({}-): Cassandra renames it into place when finished, or deletes it",
                if name.starts_with("tmplink-") || name.contains("-tmplink-") {
                    "tmplink"
                } else {
                    "tmp"
                }
            )),
            FileKind::Temporary(Temporary::Rewrite { of }) => Some(format!(
                "temporary rewrite of {of}: Cassandra renames it over the original when done"
            )),
            FileKind::Temporary(Temporary::Other) => {
                Some("temporary file (*.tmp), e.g. an SSTable being received by streaming".into())
            }
            FileKind::Ignored(why) => Some(why.clone()),
            _ => None,
        }
    }
}

/// Classifies a file by its name alone.
pub fn classify_file_name(name: &OsStr) -> FileKind {
    let Some(name) = name.to_str() else {
        return FileKind::Ignored(
            "file name is not valid UTF-8: Cassandra never writes such names".into(),
        );
    };
    if let Some(stem) = name.strip_suffix(".tmp") {
        // `nb-1-big-Statistics.db.tmp` is a rewrite; `<file>.<uuid>.tmp` a stream.
        return FileKind::Temporary(match SSTableName::parse(stem) {
            Ok(of) if !matches!(of.component, Component::Custom(_)) => {
                Temporary::Rewrite { of: of.to_string() }
            }
            _ => Temporary::Other,
        });
    }
    if let Some(log) = TxnLogName::parse(name) {
        return FileKind::TxnLog(log);
    }
    match name {
        "manifest.json" => return FileKind::SnapshotManifest,
        "schema.cql" => return FileKind::SnapshotSchema,
        _ => {}
    }
    if let Some(kind) = parse_commit_log(name) {
        return kind;
    }
    match SSTableName::parse(name) {
        Ok(parsed) if parsed.descriptor.temp.is_some() => {
            FileKind::Temporary(Temporary::Legacy2x { name: name.into() })
        }
        Ok(parsed) => FileKind::Component(parsed),
        Err(why) => FileKind::Ignored(why.to_string()),
    }
}

/// `CommitLog-<version>-<segment id>.log`.
fn parse_commit_log(name: &str) -> Option<FileKind> {
    let rest = name.strip_prefix("CommitLog-")?.strip_suffix(".log")?;
    let (version, id) = rest.split_once('-')?;
    Some(FileKind::CommitLog {
        version: version.parse().ok()?,
        id: id.parse().ok()?,
    })
}

/// A table directory name split into table name and id: `tbl-<32 hex>`, or `tbl` before 2.1.
pub fn parse_table_dir(name: &str) -> (String, Option<String>) {
    if let Some((table, id)) = name.rsplit_once('-')
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !table.is_empty()
    {
        return (table.to_string(), Some(id.to_string()));
    }
    (name.to_string(), None)
}

/// Splits the directories below a table directory into (location, index) and returns
/// how many leading directories remain above them (keyspace, table dir, …).
///
/// `dirs` are the directory names from the data directory down to the file's parent.
fn peel_location<'a>(dirs: &[&'a str]) -> (usize, Location, Option<&'a str>) {
    let mut end = dirs.len();
    let mut index = None;
    if end > 0 && dirs[end - 1].starts_with('.') && dirs[end - 1].len() > 1 {
        index = Some(&dirs[end - 1][1..]);
        end -= 1;
    }
    if end > 0 && dirs[end - 1] == "backups" {
        return (end - 1, Location::Backups, index);
    }
    if end > 1 && dirs[end - 2] == "snapshots" {
        return (
            end - 2,
            Location::Snapshot(dirs[end - 1].to_string()),
            index,
        );
    }
    (end, Location::Live, index)
}

/// What a file path is, relative to the data directory it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The table and location, when the path sits where Cassandra puts table files.
    pub place: Option<TablePlace>,
    pub kind: FileKind,
}

/// Classifies a file by its path relative to a data directory
/// (`<keyspace>/<table dir>/[…]/<file>`).
pub fn classify(relative: &Path) -> Classified {
    let mut parts = Vec::new();
    for c in relative.components() {
        match c {
            PathComponent::Normal(s) => parts.push(s),
            _ => {
                return Classified {
                    place: None,
                    kind: FileKind::Ignored(
                        "path is not a plain relative path below the data directory".into(),
                    ),
                };
            }
        }
    }
    let Some((file, dirs)) = parts.split_last() else {
        return Classified {
            place: None,
            kind: FileKind::Ignored("empty path".into()),
        };
    };
    let kind = classify_file_name(file);
    let dirs: Option<Vec<&str>> = dirs.iter().map(|d| d.to_str()).collect();
    let place = match dirs {
        None => Err("a directory name on the path is not valid UTF-8".to_string()),
        Some(dirs) => place_of(&dirs, true),
    };
    match place {
        Ok(place) => Classified {
            place: Some(place),
            kind,
        },
        Err(why) => Classified {
            place: None,
            kind: match kind {
                FileKind::CommitLog { .. } | FileKind::Ignored(_) => kind,
                _ => FileKind::Ignored(why),
            },
        },
    }
}

/// The table place of a file from the directory names above it.
///
/// With `exact`, `dirs` must be exactly `[keyspace, table dir, location…]` (a path
/// relative to a data directory); otherwise the last keyspace/table pair is taken, so that
/// any directory below a data directory, or a loose copy of table directories, works.
pub fn place_of(dirs: &[&str], exact: bool) -> Result<TablePlace, String> {
    let (above, location, index) = peel_location(dirs);
    if above < 2 || (exact && above != 2) {
        return Err(if above < 2 {
            "not inside a <keyspace>/<table> directory".to_string()
        } else {
            "unexpected directory layout below the table directory".to_string()
        });
    }
    // A `<table>-<id>` directory above the keyspace position means this directory is
    // nested somewhere inside a table directory where Cassandra puts nothing.
    if dirs[..above - 1]
        .iter()
        .any(|d| parse_table_dir(d).1.is_some())
    {
        return Err("unexpected directory inside a table directory".to_string());
    }
    let keyspace = dirs[above - 2];
    let (table, table_id) = parse_table_dir(dirs[above - 1]);
    Ok(TablePlace {
        keyspace: keyspace.to_string(),
        table,
        table_id,
        location,
        index: index.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn classifies_locations() {
        let c = classify(Path::new(
            "ks/tbl-0123456789abcdef0123456789abcdef/snapshots/before-upgrade/.tbl_idx/nb-1-big-Data.db",
        ));
        let place = c.place.unwrap();
        assert_eq!(place.keyspace, "ks");
        assert_eq!(place.table, "tbl");
        assert_eq!(
            place.table_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(place.location, Location::Snapshot("before-upgrade".into()));
        assert_eq!(place.index.as_deref(), Some("tbl_idx"));
        assert!(matches!(c.kind, FileKind::Component(_)));

        let b = classify(Path::new("ks/tbl/backups/Ks-tbl-ka-1-Data.db"));
        let place = b.place.unwrap();
        assert_eq!(place.location, Location::Backups);
        assert_eq!(place.table_id, None);

        let deep = classify(Path::new("ks/tbl-x/odd/dir/nb-1-big-Data.db"));
        assert!(deep.place.is_none());
        assert!(matches!(deep.kind, FileKind::Ignored(_)));
        let nested = place_of(
            &[
                "data",
                "ks",
                "tbl-0123456789abcdef0123456789abcdef",
                "odd",
                "dir",
            ],
            false,
        );
        assert!(nested.unwrap_err().contains("inside a table directory"));
        let copied = place_of(
            &["copies", "da", "legacy_tables", "legacy_da_simple"],
            false,
        );
        assert_eq!(copied.unwrap().table, "legacy_da_simple");
        let shallow = classify(Path::new("ks/nb-1-big-Data.db"));
        assert!(matches!(shallow.kind, FileKind::Ignored(_)));
    }

    #[test]
    fn classifies_every_kind_of_file() {
        let k = |n: &str| classify_file_name(OsStr::new(n));
        assert!(matches!(
            k("nb-1-big-Statistics.db.tmp"),
            FileKind::Temporary(Temporary::Rewrite { .. })
        ));
        assert!(matches!(
            k("nb-1-big-Data.db.3a2b1c00-1d2e-11ef-9a3b-0123456789ab.tmp"),
            FileKind::Temporary(Temporary::Other)
        ));
        assert!(matches!(
            k("tmplink-la-2-big-Data.db"),
            FileKind::Temporary(Temporary::Legacy2x { .. })
        ));
        assert!(matches!(
            k("test-foo-tmp-ka-4-Data.db"),
            FileKind::Temporary(Temporary::Legacy2x { .. })
        ));
        assert_eq!(k("manifest.json"), FileKind::SnapshotManifest);
        assert_eq!(k("schema.cql"), FileKind::SnapshotSchema);
        assert_eq!(
            k("CommitLog-7-1700000000123.log"),
            FileKind::CommitLog {
                version: 7,
                id: 1700000000123
            }
        );
        assert!(matches!(
            k("nb_txn_flush_3a2b1c00-1d2e-11ef-9a3b-0123456789ab.log"),
            FileKind::TxnLog(_)
        ));
        assert!(matches!(k("README"), FileKind::Ignored(_)));
        let bad = classify_file_name(OsStr::from_bytes(b"nb-1-big-Data\xff.db"));
        assert!(matches!(bad, FileKind::Ignored(ref r) if r.contains("UTF-8")));
    }
}
