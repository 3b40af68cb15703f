//! The daemon: continuous backup of every data directory.
//!
//! Events only say where to look. inotify events (through `notify`) mark the table
//! directory they happened in as *dirty*; dirty directories are kept in the catalog (the
//! work queue), so a restarted daemon resumes where it stopped. After a short settle time
//! the daemon runs a backup pass scoped to the dirty directories: the pass re-examines
//! them with the `cassandra` model, uploads what is complete and new (pinned by hard links
//! so a compaction cannot take a file before it is durable), and records removals with
//! their time. A full rescan every `rescan_every` (and whenever the kernel's event queue
//! overflowed) catches anything missed.
//!
//! A failing pass never stops the daemon: transient storage errors are retried with
//! exponential backoff (up to a minute), permanent ones (access denied, missing bucket)
//! are reported loudly and retried every five minutes; the dirty directories stay queued
//! until a pass over them succeeds. A pass that found a directory absent rather than
//! deleted ([`crate::backup::absence`]: a data directory gone, emptied or on another
//! filesystem, a directory gone with all its siblings, an unreadable one) recorded
//! nothing as ended there; it counts as failed (state `retrying`, the reason in
//! `last_error`) and is retried with the same backoff; once a pass succeeds again the
//! data directories are watched anew (a recreated directory is a new inode). Shutdown lets a running pass finish within a timeout;
//! past it the pass is dropped, which is safe at any point (see [`crate::backup`]).

use std::collections::BTreeSet;
use std::path::{Component as PathComponent, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backup::{self, BackupError, BackupOptions, PointMode};
use crate::catalog::{Catalog, CatalogError};
use crate::progress::Progress;
use crate::store::{Repository, StoreError};
use crate::timespec::{self, Micros, NodeClock};

/// How often an idle daemon rewrites its status.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Data directories, filter, node, parallelism, pin directory, pruning.
    pub backup: BackupOptions,
    /// Full pass over every data directory this often.
    pub rescan_every: Duration,
    /// Wait this long after an event for more before starting a pass.
    pub settle: Duration,
    /// Record a named point this often.
    pub snapshot_every: Option<Duration>,
    /// How long a running pass may take to finish after a shutdown request.
    pub shutdown_timeout: Duration,
}

/// Requests to a running daemon.
#[derive(Debug)]
pub enum Control {
    /// Stop taking work, finish or drop the running pass, return.
    Shutdown,
    /// New options (SIGHUP re-read the configuration).
    Reload(Box<DaemonOptions>),
}

/// What `tablesafe status` and the metrics endpoint show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub started: Micros,
    /// When this document was last written.
    pub updated: Micros,
    /// `running`, `retrying` or `stopped`.
    pub state: String,
    /// Directories waiting for a pass.
    pub queued_dirs: u64,
    /// Files and bytes of the running pass not yet durable.
    pub pending_files: u64,
    pub pending_bytes: u64,
    /// When the oldest queued directory was marked: the backup lag starts there.
    pub oldest_pending: Option<Micros>,
    /// End of the last pass that made new content durable.
    pub last_durable: Option<Micros>,
    pub passes: u64,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub dedup_hits: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Micros>,
    /// The last pass found the system clock behind the node's recorded times (a step
    /// back) and recorded its times just after them: what it said, and when.
    #[serde(default)]
    pub clock_warning: Option<String>,
    #[serde(default)]
    pub clock_warning_at: Option<Micros>,
}

/// Errors that stop the daemon (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "cannot watch {path}: {source} (check the path; raise fs.inotify.max_user_watches if it says no space)"
    )]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Maps an event path to the directory a pass should cover: the table directory it is in
/// (or the keyspace or data directory for events at those levels).
fn root_of(path: &Path, data_dirs: &[PathBuf]) -> Option<PathBuf> {
    let data_dir = data_dirs.iter().find(|d| path.starts_with(d))?;
    let rel = path.strip_prefix(data_dir).ok()?;
    let mut root = data_dir.clone();
    for part in rel.components().take(2) {
        match part {
            PathComponent::Normal(p) => root.push(p),
            _ => return None,
        }
    }
    Some(root)
}

/// Whether an event can mean a file appeared, changed or went away. Reads (our own
/// hashing) and metadata changes (our own pins change link counts) cannot.
fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

/// Drops roots that lie below another root in the set.
fn minimize(roots: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        if !out.iter().any(|kept| r.starts_with(kept)) {
            out.push(r.clone());
        }
    }
    out
}

fn is_permanent(e: &BackupError) -> bool {
    matches!(
        e,
        BackupError::Store(StoreError::AccessDenied { .. } | StoreError::NoSuchBucket { .. })
    )
}

/// What the event thread sends.
enum Notice {
    Dirty(PathBuf),
    RescanAll,
}

/// Runs until [`Control::Shutdown`]. `status` is kept current for the metrics endpoint.
pub async fn run(
    repo: &Repository,
    catalog: &mut Catalog,
    mut opts: DaemonOptions,
    mut control: mpsc::UnboundedReceiver<Control>,
    status: Arc<Mutex<DaemonStatus>>,
) -> Result<(), DaemonError> {
    let node = opts.backup.node.clone();
    let mut data_dirs = canonical_dirs(&opts.backup.data_dirs);
    // Shared with the event thread, so directories added by a reload map to roots too.
    let watched = Arc::new(std::sync::RwLock::new(data_dirs.clone()));
    let (tx, mut notices) = mpsc::unbounded_channel();
    let mut watcher = {
        let dirs = watched.clone();
        let tx = tx.clone();
        notify::recommended_watcher(move |res: notify::Result<Event>| match res {
            Ok(event) if event.need_rescan() => {
                let _ = tx.send(Notice::RescanAll);
            }
            Ok(event) if is_relevant(&event.kind) => {
                let dirs = dirs.read().unwrap_or_else(|p| p.into_inner());
                for p in &event.paths {
                    if let Some(root) = root_of(p, &dirs) {
                        let _ = tx.send(Notice::Dirty(root));
                    }
                }
            }
            Ok(_) => {}
            // The backend lost events (queue overflow, a watch that failed): look again.
            Err(_) => {
                let _ = tx.send(Notice::RescanAll);
            }
        })
        .map_err(|source| DaemonError::Watch {
            path: PathBuf::new(),
            source,
        })?
    };
    for d in &data_dirs {
        watcher
            .watch(d, RecursiveMode::Recursive)
            .map_err(|source| DaemonError::Watch {
                path: d.clone(),
                source,
            })?;
    }
    let as_strings = |dirs: &[PathBuf]| -> Vec<String> {
        dirs.iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect()
    };
    // Queue marks never go back either: a pass clears the marks made before it started,
    // which must hold even when the system clock steps back.
    let mut marks = NodeClock::after(catalog.dirty_roots(&node)?.iter().map(|(_, t)| *t).max());
    // Start with a full pass: whatever happened while no daemon ran.
    catalog.add_dirty(&node, &as_strings(&data_dirs), marks.now())?;
    {
        let mut s = lock(&status);
        s.pid = std::process::id();
        s.started = timespec::now();
        s.state = "running".into();
    }
    let mut next_rescan = Instant::now() + opts.rescan_every;
    let mut next_snapshot = opts.snapshot_every.map(|d| Instant::now() + d);
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    let mut was_absent = false;
    let mut stopping = false;
    let mut pending_reload: Option<Box<DaemonOptions>> = None;
    loop {
        if let Some(new) = pending_reload.take() {
            reload(
                &mut opts,
                (&mut data_dirs, &watched),
                &mut watcher,
                (catalog, &mut marks),
                &node,
                *new,
            )?;
        }
        let queued = catalog.dirty_roots(&node)?;
        publish(catalog, &node, &status, &queued)?;
        let snapshot_due = next_snapshot.is_some_and(|t| Instant::now() >= t);
        let retry_ready = retry_at.is_none_or(|t| Instant::now() >= t);
        if !stopping && retry_ready && (!queued.is_empty() || snapshot_due) {
            let roots: BTreeSet<PathBuf> = if snapshot_due {
                data_dirs.iter().cloned().collect()
            } else {
                queued.iter().map(|(p, _)| PathBuf::from(p)).collect()
            };
            let roots = minimize(&roots);
            let pass_started = marks.now();
            let mut pass_opts = opts.backup.clone();
            pass_opts.data_dirs = roots.clone();
            pass_opts.vanished_root_is_empty = true;
            pass_opts.point = if snapshot_due {
                PointMode::Automatic
            } else {
                PointMode::None
            };
            let progress = Arc::new(Progress::default());
            let outcome = {
                let pass = backup::run(repo, catalog, &pass_opts, progress.clone());
                tokio::pin!(pass);
                let mut deadline: Option<Instant> = None;
                let mut tick = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        r = &mut pass => break Some(r),
                        c = control.recv() => match c {
                            Some(Control::Shutdown) | None => {
                                stopping = true;
                                deadline.get_or_insert(Instant::now() + opts.shutdown_timeout);
                            }
                            // The pass holds the catalog: apply the reload after it.
                            Some(Control::Reload(new)) => pending_reload = Some(new),
                        },
                        _ = tick.tick() => {
                            let (done, total, bytes_done, bytes_total) = progress.snapshot();
                            let mut s = lock(&status);
                            s.pending_files = total.saturating_sub(done);
                            s.pending_bytes = bytes_total.saturating_sub(bytes_done);
                        }
                        _ = sleep_until_opt(deadline) => break None,
                    }
                }
            };
            if let Some(Ok(summary)) = &outcome {
                note_clock(&status, summary);
            }
            match outcome {
                None => {
                    tracing::warn!(
                        "shutdown timeout: dropped the running pass; it resumes at next start"
                    );
                    break;
                }
                Some(Ok(summary)) if !summary.absent.is_empty() => {
                    // Nothing there was recorded as ended; the roots stay queued.
                    retry_at = Some(Instant::now() + backoff);
                    was_absent = true;
                    absent_pass(&status, &summary, backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                Some(Ok(summary)) => {
                    if std::mem::take(&mut was_absent) {
                        rewatch(&mut watcher, &data_dirs);
                    }
                    let root_strings = as_strings(&roots);
                    if snapshot_due {
                        next_snapshot = opts.snapshot_every.map(|d| Instant::now() + d);
                    }
                    catalog.clear_dirty(&node, &root_strings, pass_started)?;
                    retry_at = None;
                    backoff = Duration::from_secs(1);
                    let mut s = lock(&status);
                    s.state = "running".into();
                    s.passes += 1;
                    s.files_uploaded += summary.blobs_uploaded;
                    s.bytes_uploaded += summary.bytes_uploaded;
                    s.dedup_hits += summary.files_deduplicated + summary.files_unchanged;
                    s.pending_files = 0;
                    s.pending_bytes = 0;
                    if summary.blobs_uploaded > 0 || summary.versions_started > 0 {
                        s.last_durable = Some(timespec::now());
                    }
                    for c in &summary.corrupt {
                        tracing::error!("{c}");
                    }
                    tracing::info!(
                        roots = roots.len(),
                        uploaded = summary.blobs_uploaded,
                        started = summary.versions_started,
                        ended = summary.versions_ended,
                        "pass done"
                    );
                }
                Some(Err(BackupError::Catalog(e))) => return Err(DaemonError::Catalog(e)),
                Some(Err(e)) => {
                    let permanent = is_permanent(&e);
                    let wait = if permanent {
                        Duration::from_secs(300)
                    } else {
                        backoff
                    };
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    retry_at = Some(Instant::now() + wait);
                    tracing::error!(
                        retry_in_seconds = wait.as_secs(),
                        permanent,
                        "backup pass failed: {e:#}"
                    );
                    let mut s = lock(&status);
                    s.state = "retrying".into();
                    s.errors += 1;
                    s.last_error = Some(e.to_string());
                    s.last_error_at = Some(timespec::now());
                }
            }
            if stopping {
                break;
            }
            continue;
        }
        if stopping {
            break;
        }
        // Wake at least every HEARTBEAT to refresh the status `tablesafe status` reads.
        let heartbeat = Instant::now() + HEARTBEAT;
        let wake = [Some(next_rescan), next_snapshot, retry_at, Some(heartbeat)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(heartbeat);
        tokio::select! {
            n = notices.recv() => {
                let mut marked = BTreeSet::new();
                let mut all = false;
                let mut take = |n: Option<Notice>| match n {
                    Some(Notice::Dirty(p)) => { marked.insert(p); }
                    Some(Notice::RescanAll) | None => {
                        if !all {
                            tracing::warn!("inotify lost events (queue overflow): rescanning every data directory");
                        }
                        all = true;
                    }
                };
                take(n);
                // Let a burst of events (a flush writes ~8 files) settle into one pass.
                tokio::time::sleep(opts.settle).await;
                while let Ok(n) = notices.try_recv() {
                    take(Some(n));
                }
                if all {
                    marked.extend(data_dirs.iter().cloned());
                }
                let marked: Vec<String> = marked.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                catalog.add_dirty(&node, &marked, marks.now())?;
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= next_rescan {
                    catalog.add_dirty(&node, &as_strings(&data_dirs), marks.now())?;
                    next_rescan = Instant::now() + opts.rescan_every;
                }
            }
            c = control.recv() => match c {
                Some(Control::Shutdown) | None => stopping = true,
                Some(Control::Reload(new)) => {
                    reload(&mut opts, (&mut data_dirs, &watched), &mut watcher, (catalog, &mut marks), &node, *new)?;
                }
            },
        }
    }
    {
        let mut s = lock(&status);
        s.state = "stopped".into();
    }
    let queued = catalog.dirty_roots(&node)?;
    publish(catalog, &node, &status, &queued)?;
    drop(tx);
    Ok(())
}

/// Shows a pass's clock warning (a step back of the system clock) in the status until
/// a pass finds the clock right again.
fn note_clock(status: &Mutex<DaemonStatus>, summary: &backup::BackupSummary) {
    let mut s = lock(status);
    match &summary.clock_warning {
        Some(w) => {
            s.clock_warning = Some(w.clone());
            s.clock_warning_at = Some(timespec::now());
        }
        None => s.clock_warning = None,
    }
}

/// Reports a pass that found something absent: an error, retried after `wait`.
fn absent_pass(status: &Mutex<DaemonStatus>, summary: &backup::BackupSummary, wait: Duration) {
    for a in &summary.absent {
        tracing::error!(retry_in_seconds = wait.as_secs(), "backup pass failed: {a}");
    }
    let more = match summary.absent.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let mut s = lock(status);
    s.state = "retrying".into();
    s.errors += 1;
    s.files_uploaded += summary.blobs_uploaded;
    s.bytes_uploaded += summary.bytes_uploaded;
    s.last_error = Some(format!("{}{more}", summary.absent[0]));
    s.last_error_at = Some(timespec::now());
}

/// Watches the data directories again: one that vanished and came back is a new inode
/// the old watch does not see.
fn rewatch(watcher: &mut notify::RecommendedWatcher, data_dirs: &[PathBuf]) {
    for d in data_dirs {
        let _ = watcher.unwatch(d);
        if let Err(e) = watcher.watch(d, RecursiveMode::Recursive) {
            tracing::warn!(
                "cannot watch {} again: {e}; full rescans still cover it",
                d.display()
            );
        }
    }
    tracing::info!("data directories present again: watching them anew");
}

/// Applies new options: watches data directories that were added (and queues a full pass
/// over them); directories no longer configured are simply not passed over any more.
fn reload(
    opts: &mut DaemonOptions,
    (data_dirs, watched): (&mut Vec<PathBuf>, &std::sync::RwLock<Vec<PathBuf>>),
    watcher: &mut notify::RecommendedWatcher,
    (catalog, marks): (&mut Catalog, &mut NodeClock),
    node: &str,
    new: DaemonOptions,
) -> Result<(), DaemonError> {
    let dirs = canonical_dirs(&new.backup.data_dirs);
    for d in dirs.iter().filter(|d| !data_dirs.contains(d)) {
        watcher
            .watch(d, RecursiveMode::Recursive)
            .map_err(|source| DaemonError::Watch {
                path: d.clone(),
                source,
            })?;
        catalog.add_dirty(node, &[d.to_string_lossy().into_owned()], marks.now())?;
    }
    *watched.write().unwrap_or_else(|p| p.into_inner()) = dirs.clone();
    *data_dirs = dirs;
    *opts = new;
    tracing::info!("configuration reloaded");
    Ok(())
}

fn canonical_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect()
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn lock(status: &Mutex<DaemonStatus>) -> std::sync::MutexGuard<'_, DaemonStatus> {
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Updates the queue figures and writes the status document to the catalog.
fn publish(
    catalog: &mut Catalog,
    node: &str,
    status: &Mutex<DaemonStatus>,
    queued: &[(String, Micros)],
) -> Result<(), CatalogError> {
    let body = {
        let mut s = lock(status);
        s.queued_dirs = queued.len() as u64;
        s.oldest_pending = queued.iter().map(|(_, t)| *t).min();
        s.updated = timespec::now();
        serde_json::to_string(&*s).unwrap_or_default()
    };
    catalog.write_status(node, &body)
}

/// The Prometheus text exposition of a status.
pub fn render_metrics(s: &DaemonStatus, now: Micros) -> String {
    let secs = |t: Option<Micros>| t.map_or(0.0, |t| t as f64 / 1e6);
    let lag = s
        .oldest_pending
        .map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "tablesafe_up",
        "gauge",
        "1 while the daemon runs and its last pass succeeded",
        f64::from(u8::from(s.state == "running")),
    );
    metric(
        "tablesafe_queued_dirs",
        "gauge",
        "Directories waiting for a backup pass",
        s.queued_dirs as f64,
    );
    metric(
        "tablesafe_pending_files",
        "gauge",
        "Files of the running pass not yet durable",
        s.pending_files as f64,
    );
    metric(
        "tablesafe_pending_bytes",
        "gauge",
        "Bytes of the running pass not yet durable",
        s.pending_bytes as f64,
    );
    metric(
        "tablesafe_backup_lag_seconds",
        "gauge",
        "Age of the oldest change not yet backed up",
        lag,
    );
    metric(
        "tablesafe_last_durable_timestamp_seconds",
        "gauge",
        "When new content last became durable",
        secs(s.last_durable),
    );
    metric(
        "tablesafe_passes_total",
        "counter",
        "Backup passes completed",
        s.passes as f64,
    );
    metric(
        "tablesafe_uploaded_files_total",
        "counter",
        "Blobs uploaded",
        s.files_uploaded as f64,
    );
    metric(
        "tablesafe_uploaded_bytes_total",
        "counter",
        "Bytes uploaded (stored size)",
        s.bytes_uploaded as f64,
    );
    metric(
        "tablesafe_dedup_hits_total",
        "counter",
        "Files not uploaded because their content was already stored",
        s.dedup_hits as f64,
    );
    metric(
        "tablesafe_errors_total",
        "counter",
        "Failed backup passes",
        s.errors as f64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_their_table_directory() {
        let dirs = vec![PathBuf::from("/data")];
        assert_eq!(
            root_of(
                Path::new("/data/ks/t-0123/snapshots/x/nb-1-big-Data.db"),
                &dirs
            ),
            Some(PathBuf::from("/data/ks/t-0123"))
        );
        assert_eq!(
            root_of(Path::new("/data/ks"), &dirs),
            Some(PathBuf::from("/data/ks"))
        );
        assert_eq!(root_of(Path::new("/elsewhere/x"), &dirs), None);
        let roots: BTreeSet<PathBuf> = ["/data/ks/t", "/data", "/other/x"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            minimize(&roots),
            vec![PathBuf::from("/data"), PathBuf::from("/other/x")]
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let s = DaemonStatus {
            state: "running".into(),
            queued_dirs: 2,
            oldest_pending: Some(1_000_000),
            files_uploaded: 5,
            ..DaemonStatus::default()
        };
        let text = render_metrics(&s, 4_000_000);
        assert!(text.contains("tablesafe_up 1\n"), "{text}");
        assert!(text.contains("tablesafe_backup_lag_seconds 3\n"), "{text}");
        assert!(text.contains(
            "# TYPE tablesafe_uploaded_files_total counter\ntablesafe_uploaded_files_total 5\n"
        ));
    }
}
