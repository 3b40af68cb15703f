//! `tablesafe backup` and `tablesafe snapshot create NAME`: one backup pass, with progress
//! on a terminal (plain log lines otherwise) and a summary at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tablesafe::backup::filter::TableFilter;
use tablesafe::backup::{self, BackupOptions, BackupSummary, PointMode, Progress};
use tablesafe::timespec;

use super::progress::Reporter;
use super::repo::{lock_catalog, open_catalog, open_repo_to_write};
use super::{Failure, Settings, human_bytes, runtime};
use crate::cli::BackupArgs;

pub fn run(
    args: &BackupArgs,
    point: Option<String>,
    settings: &Settings,
) -> Result<ExitCode, Failure> {
    let data_dirs: Vec<PathBuf> = if args.data_dirs.is_empty() {
        settings.data_dirs.clone()
    } else {
        args.data_dirs.clone()
    };
    let include = if args.include.is_empty() {
        settings.include.clone()
    } else {
        args.include.clone()
    };
    let exclude = if args.exclude.is_empty() {
        settings.exclude.clone()
    } else {
        args.exclude.clone()
    };
    let filter = TableFilter::new(include, exclude).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(name) = &point
        && (name.is_empty() || name.contains('/') || name.chars().any(char::is_control))
    {
        return Err(Failure::Usage(format!(
            "snapshot name {name:?} is not usable: give a non-empty name without '/'"
        )));
    }
    let opts = BackupOptions {
        node: settings.node.clone(),
        data_dirs,
        filter,
        point: match point {
            Some(name) => PointMode::Named(name),
            None => PointMode::Automatic,
        },
        vanished_root_is_empty: false,
        pin_dir: None,
        parallel: args.parallel.max(1),
        prune_incremental: args.prune_incremental,
        pack_small_files: args.pack_small_files,
    };
    let _lock = lock_catalog(settings)?;
    let progress = Arc::new(Progress::default());
    let reporter = Reporter::start("backup", progress.clone());
    let result = runtime()?.block_on(async {
        let repo = open_repo_to_write(settings, args.init).await?;
        let mut catalog = open_catalog(settings, &repo).await?;
        backup::run(&repo, &mut catalog, &opts, progress)
            .await
            .map_err(|e| Failure::Failed(e.into()))
    });
    drop(reporter);
    let summary = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(anyhow::Error::from)?
        );
    } else {
        print_summary(&summary);
    }
    if let Some(first) = summary.absent.first() {
        let more = match summary.absent.len() {
            1 => String::new(),
            n => format!(" (and {} more, listed above)", n - 1),
        };
        return Err(Failure::Failed(anyhow::anyhow!(
            "{first}{more}; everything else is backed up, no point was recorded"
        )));
    }
    if !summary.corrupt.is_empty() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "{} corrupt SSTable(s) were not backed up (listed above); everything else is backed up in point {}",
            summary.corrupt.len(),
            summary.point
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &BackupSummary) {
    let point = if s.point.is_empty() {
        "no point".to_string()
    } else {
        format!("point {}", s.point)
    };
    println!(
        "{point} at {}: {} files seen, {} unchanged (not read), {} read ({}), {} deduplicated",
        timespec::format(s.point_time),
        s.files_seen,
        s.files_unchanged,
        s.files_hashed,
        human_bytes(s.bytes_read),
        s.files_deduplicated,
    );
    println!(
        "uploaded {} new blobs ({} stored); {} versions started, {} ended; {} SSTables not complete yet; {:.2} s",
        s.blobs_uploaded,
        human_bytes(s.bytes_uploaded),
        s.versions_started,
        s.versions_ended,
        s.not_complete,
        s.seconds
    );
    if s.pruned > 0 {
        println!("pruned {} backups/ links", s.pruned);
    }
    if s.changed_during_backup > 0 {
        println!(
            "{} files changed while being read; the next backup takes them",
            s.changed_during_backup
        );
    }
    for p in &s.problems {
        println!("warning: {p}");
    }
    for c in &s.corrupt {
        println!("CORRUPT: {c}");
    }
    for a in &s.absent {
        println!("ABSENT: {a}");
    }
}
