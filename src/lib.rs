//! tablesafe: content-addressed, deduplicating, continuous backup for Apache Cassandra.
//!
//! The library holds everything the `tablesafe` binary does; the binary only parses
//! arguments, sets up logging and maps errors to exit codes.
//!
//! Modules, in the order data flows through them (see ARCHITECTURE.md):
//! - [`cassandra`]: what every path under a Cassandra data directory is, and whether an
//!   SSTable is complete and intact enough to back up.
//! - [`catalog`]: the local SQLite catalog of file versions, blobs, stat cache and
//!   snapshots, and the change batches mirrored to the repository.
//! - [`backup`]: one backup pass: scan, upload what is new, record every change.
//! - [`restore`]: point-in-time restore: plan from the catalog, verified parallel download.
//! - [`gc`]: retention and two-phase deletion of blobs nothing retained refers to.
//! - [`verify`]: checks that every retained point can be restored.
//! - [`metrics`]: the daemon's Prometheus endpoint.
//! - [`progress`]: counters long-running commands update for progress reports.
//! - [`quarantine`]: what a restored table directory holds that the point does not, moved
//!   out of the data directory.
//! - [`timespec`]: times as operators write them.
//! - [`watch`]: the daemon: inotify events and rescans driving scoped backup passes.
//! - [`config`]: the TOML configuration file and how it merges with flags.
//! - [`store`]: the repository and its content-addressed blob store (object storage,
//!   BLAKE3 ids, framed zstd, multipart upload, verified restore).

pub mod backup;
pub mod cassandra;
pub mod catalog;
pub mod config;
pub mod gc;
pub mod inflight;
pub mod metrics;
pub mod progress;
pub mod quarantine;
pub mod restore;
pub mod store;
pub mod timespec;
pub mod verify;
pub mod watch;
