//! `tablesafe status`: what the daemon of this node is doing, from the status it keeps in
//! the local catalog (it works while the daemon runs, and after it stopped or died).

use std::process::ExitCode;

use tablesafe::catalog::Catalog;
use tablesafe::timespec;
use tablesafe::watch::DaemonStatus;

use super::repo::{catalog_path, repo_url};
use super::{Failure, Settings, human_bytes};
use crate::cli::StatusArgs;

pub fn run(args: &StatusArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let path = catalog_path(settings, repo_url(settings)?);
    if !path.exists() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "no catalog at {}: no backup or daemon has run for node {} with this repository",
            path.display(),
            settings.node
        )));
    }
    let catalog = Catalog::open(&path).map_err(anyhow::Error::from)?;
    let Some(body) = catalog
        .read_status(&settings.node)
        .map_err(anyhow::Error::from)?
    else {
        return Err(Failure::Failed(anyhow::anyhow!(
            "no daemon has run for node {} with catalog {}",
            settings.node,
            path.display()
        )));
    };
    let mut s: DaemonStatus = serde_json::from_str(&body).map_err(anyhow::Error::from)?;
    let alive = std::path::Path::new(&format!("/proc/{}", s.pid)).exists();
    if !alive && s.state != "stopped" {
        s.state = "not running (died)".into();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(anyhow::Error::from)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = timespec::now();
    let ago = |t: Option<i64>| {
        t.map_or("never".to_string(), |t| {
            format!("{} ({}s ago)", timespec::format(t), (now - t) / 1_000_000)
        })
    };
    println!(
        "daemon:        {} (pid {}, since {})",
        s.state,
        s.pid,
        timespec::format(s.started)
    );
    println!(
        "queue:         {} directories, {} files / {} pending",
        s.queued_dirs,
        s.pending_files,
        human_bytes(s.pending_bytes)
    );
    println!(
        "backup lag:    oldest pending change {}",
        ago(s.oldest_pending)
    );
    println!("last durable:  {}", ago(s.last_durable));
    println!(
        "totals:        {} passes, {} blobs uploaded ({}), {} dedup hits, {} errors",
        s.passes,
        s.files_uploaded,
        human_bytes(s.bytes_uploaded),
        s.dedup_hits,
        s.errors
    );
    if let Some(w) = &s.clock_warning {
        println!("WARNING clock: {w}");
    }
    if let Some(e) = &s.last_error {
        println!("last error:    {} at {}", e, ago(s.last_error_at));
    }
    println!("status as of:  {}", ago(Some(s.updated)));
    Ok(ExitCode::SUCCESS)
}
