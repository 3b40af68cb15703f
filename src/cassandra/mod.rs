//! Knowledge of Cassandra's data directory: what every path is, and whether an SSTable is
//! complete and intact enough to back up.
//!
//! - [`name`]: SSTable file names of every format from 2.0 to 5.0.
//! - [`txnlog`]: transaction logs (3.0+) and their ADD/REMOVE/COMMIT/ABORT records.
//! - [`classify`]: what a path under a data directory is (table, location, file kind).
//! - [`sstable_dir`]: one directory's SSTables and their completeness.
//! - [`digest`]: Data.db checked against its Digest component.
//! - [`walk`]: every directory with Cassandra files below a root, and its table.
//! - [`inventory`]: all of the above over whole data directories (`tablesafe inspect`).

pub mod classify;
pub mod digest;
pub mod inventory;
pub mod name;
pub mod sstable_dir;
pub mod txnlog;
pub mod walk;

pub use classify::{Classified, FileKind, Location, TablePlace, classify, classify_file_name};
pub use digest::{DigestAlgorithm, DigestError, DigestStatus};
pub use inventory::{Inventory, InventoryOptions};
pub use name::{Component, Descriptor, Format, Generation, SSTableName, Version};
pub use sstable_dir::{Completeness, SSTable, SSTableDir, scan_dir};
pub use txnlog::{RecordKind, TxnLog, TxnLogName, TxnOutcome, TxnRecord};

/// Serializes a path for reports: file names are data and need not be UTF-8, and a
/// report must never fail because of one, so invalid bytes become U+FFFD.
pub(crate) fn serialize_path<S: serde::Serializer>(
    path: &std::path::Path,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`serialize_path`] for a list.
pub(crate) fn serialize_paths<S: serde::Serializer>(
    paths: &[std::path::PathBuf],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}
