//! `tablesafe gc`: apply retention, then delete blobs nothing retained refers to.
//!
//! Works on every node of the repository at once, through a catalog of all nodes kept
//! next to this node's catalog. Prints per node what the retention keeps and drops,
//! then the blobs condemned, deleted and still waiting out their grace period.

use std::process::ExitCode;
use std::sync::Arc;

use tablesafe::catalog::Catalog;
use tablesafe::gc::{self, GcOptions, GcSummary, RetentionPolicy};
use tablesafe::progress::Progress;
use tablesafe::timespec;

use super::progress::Reporter;
use super::repo::{all_nodes_catalog_path, open_repo, repo_url};
use super::{Failure, Settings, human_bytes, runtime};
use crate::cli::GcArgs;

pub fn run(args: &GcArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let opts = GcOptions {
        policy: policy(args, settings)?,
        grace: duration("--grace", &args.grace)?,
        dry_run: args.dry_run,
        force: args.force.is_some(),
        release_last_state: args.force.clone().unwrap_or_default(),
        parallel: args.parallel.max(1),
        as_of: None,
    };
    let view_path = all_nodes_catalog_path(settings, repo_url(settings)?);
    let progress = Arc::new(Progress::default());
    let rt = runtime()?;
    let summary = rt.block_on(async {
        let repo = open_repo(settings, false).await?;
        let mut view = Catalog::open(&view_path).map_err(anyhow::Error::from)?;
        let reporter = Reporter::start("gc", progress.clone());
        let result = gc::run(&repo, &mut view, &opts, progress.clone()).await;
        drop(reporter);
        Ok::<_, Failure>(result.map_err(anyhow::Error::from)?)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(anyhow::Error::from)?
        );
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

/// The flags' policy if any --keep-* flag is given, else the config file's.
fn policy(args: &GcArgs, settings: &Settings) -> Result<RetentionPolicy, Failure> {
    let from_flags = RetentionPolicy {
        keep_within: args
            .keep_within
            .as_deref()
            .map(|w| duration("--keep-within", w))
            .transpose()?,
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_snapshots: args.keep_snapshot.clone(),
    };
    Ok(if from_flags.is_empty() {
        settings.retention.clone().unwrap_or_default()
    } else {
        from_flags
    })
}

fn duration(flag: &str, text: &str) -> Result<i64, Failure> {
    timespec::parse_duration(text).ok_or_else(|| {
        Failure::Usage(format!(
            "{flag} {text:?} is not a duration: use e.g. 90m, 36h, 7d, 2w"
        ))
    })
}

fn print_summary(s: &GcSummary) {
    let verb = |done: &'static str, would: &'static str| if s.dry_run { would } else { done };
    println!(
        "{}retention: {}",
        if s.dry_run {
            "dry run, nothing changed; "
        } else {
            ""
        },
        s.policy
    );
    for n in &s.nodes {
        match n.keep_from {
            Some(from) => println!(
                "node {}: every instant from {} kept, {} snapshot(s) kept, {} {} ({}), {} file version(s) {}",
                n.node,
                timespec::format(from),
                n.snapshots_kept,
                n.snapshots_dropped.len(),
                verb("dropped", "would be dropped"),
                if n.snapshots_dropped.is_empty() {
                    "none".to_string()
                } else {
                    n.snapshots_dropped.join(", ")
                },
                n.versions_dropped,
                verb("forgotten", "would be forgotten"),
            ),
            None => println!("node {}: all history kept", n.node),
        }
        if let Some(last) = n.last_state_kept {
            println!(
                "node {}: has had no file since {}; its last state with data ({}, {} file version(s)) {} kept although the retention would drop it (restore it with --at {}; `--force {}` lets it go)",
                n.node,
                timespec::format_precise(last + 1),
                timespec::format_precise(last),
                n.versions_held,
                verb("was", "would be"),
                timespec::format_precise(last),
                n.node,
            );
        }
    }
    println!(
        "blobs: {} in the repository ({}), {} referenced by retained points",
        s.blobs_listed,
        human_bytes(s.bytes_listed),
        s.blobs_referenced
    );
    println!(
        "{} {} unreferenced blob(s) ({}), {} absolved (needed again), {} blob(s) {}, {} {}",
        verb("condemned", "would condemn"),
        s.blobs_condemned,
        human_bytes(s.bytes_condemned),
        s.blobs_absolved,
        s.blobs_deleted,
        verb("deleted", "would be deleted now"),
        human_bytes(s.bytes_freed),
        verb("freed", "reclaimable"),
    );
    if s.blobs_recorded_gone > 0 {
        println!(
            "{} condemned blob(s) were already gone (an earlier gc was interrupted) and are recorded as deleted",
            s.blobs_recorded_gone
        );
    }
    if s.leftovers_removed > 0 {
        println!(
            "{} {} staging file(s) of interrupted uploads ({})",
            verb("removed", "would remove"),
            s.leftovers_removed,
            human_bytes(s.leftover_bytes)
        );
    }
    if let Some(next) = s.next_deletion {
        println!(
            "{} condemned blob(s) ({}) wait out the grace period; the first may go at {} (run gc again then)",
            s.blobs_waiting,
            human_bytes(s.bytes_waiting),
            timespec::format(next)
        );
    }
    if let Some(from) = s.held_for_passes_from {
        println!(
            "{} backup pass(es) running: blobs condemned since {} wait until they end",
            s.passes_running,
            timespec::format(from)
        );
    }
    if s.stale_leases > 0 {
        println!(
            "{} stale lease(s) ignored (passes that stopped without ending: killed, or their host is gone)",
            s.stale_leases
        );
    }
    if s.blobs_missing > 0 {
        eprintln!(
            "warning: {} blob(s) that retained points need are missing from the repository: run `tablesafe verify` for the files and points affected",
            s.blobs_missing
        );
    }
    println!("done in {:.1} s", s.seconds);
}
