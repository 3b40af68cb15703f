//! `tablesafe restore --at WHEN --to DIR`: the files a node had at a point, verified.
//!
//! Prints the plan with `--dry-run`; otherwise restores with progress on a terminal, then
//! a summary and the commands that load the restored tables into Cassandra.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tablesafe::restore::{
    self, Entry, ExistingFiles, ExtraFiles, Layout, Plan, Progress, RestoreOptions, RestoreSummary,
    TargetChanges,
};
use tablesafe::timespec;

use super::progress::Reporter;
use super::repo::{open_catalog, open_repo};
use super::{Failure, Settings, human_bytes, runtime};
use crate::cli::{LayoutArg, RestoreArgs};

pub fn run(args: &RestoreArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let opts = RestoreOptions {
        node: settings.node.clone(),
        to: args.to.clone(),
        layout: match args.layout {
            LayoutArg::Data => Layout::Data,
            LayoutArg::Sstableloader => Layout::Sstableloader,
        },
        keyspaces: args.keyspace.clone(),
        tables: args.table.clone(),
        include_system: args.include_system,
        include_snapshots: args.include_snapshots,
        existing: if args.overwrite {
            ExistingFiles::Overwrite
        } else if args.resume {
            ExistingFiles::Resume
        } else {
            ExistingFiles::Refuse
        },
        force: args.force,
        parallel: args.parallel.max(1),
    };
    let extra = ExtraFiles {
        keep: args.keep_extra,
        quarantine_in: args.quarantine.clone(),
    };
    let rt = runtime()?;
    let (repo, plan) = rt.block_on(async {
        let repo = open_repo(settings, false).await?;
        let catalog = open_catalog(settings, &repo).await?;
        let point =
            restore::resolve_point(&catalog, &opts.node, &args.at).map_err(anyhow::Error::from)?;
        let plan = restore::plan(&catalog, point, &opts).map_err(anyhow::Error::from)?;
        Ok::<_, Failure>((repo, plan))
    })?;
    if args.dry_run {
        let changes = restore::preview(&plan, &opts, &extra).map_err(anyhow::Error::from)?;
        print_plan(&plan, &changes, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Arc::new(Progress::default());
    let reporter = Reporter::start("restore", progress.clone());
    let result = rt.block_on(restore::execute_with(&repo, &plan, &opts, &extra, progress));
    drop(reporter);
    let summary = result.map_err(anyhow::Error::from)?;
    if args.json {
        let doc = serde_json::json!({ "point": plan.point, "summary": summary });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(anyhow::Error::from)?
        );
    } else {
        print_summary(&plan, &summary, &opts);
    }
    if let Some(first) = summary.failed.first() {
        return Err(Failure::Failed(anyhow::Error::from(
            restore::RestoreError::FilesFailed {
                failed: summary.failed.len(),
                total: summary.files,
                first: first.clone(),
            },
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn point_label(plan: &Plan) -> String {
    match &plan.point.snapshot {
        Some(name) => format!(
            "snapshot {name} ({})",
            timespec::format_precise(plan.point.time)
        ),
        None => timespec::format_precise(plan.point.time),
    }
}

fn print_plan(plan: &Plan, changes: &TargetChanges, json: bool) -> Result<(), Failure> {
    if json {
        let mut doc = serde_json::to_value(plan).map_err(anyhow::Error::from)?;
        let changes = serde_json::to_value(changes).map_err(anyhow::Error::from)?;
        if let (Some(doc), serde_json::Value::Object(changes)) = (doc.as_object_mut(), changes) {
            doc.extend(changes);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    println!(
        "would restore {} files ({}) of node {} at {} into {} tables:",
        plan.files.len(),
        human_bytes(plan.bytes),
        plan.node,
        point_label(plan),
        plan.tables.len()
    );
    // Files and bytes per table directory, in one pass over the files.
    let mut per_table: HashMap<&Path, (usize, u64)> = plan
        .tables
        .iter()
        .map(|t| (t.dir.as_path(), (0, 0)))
        .collect();
    for f in &plan.files {
        let table = f.dest.ancestors().find(|dir| per_table.contains_key(dir));
        if let Some(counts) = table.and_then(|dir| per_table.get_mut(dir)) {
            counts.0 += 1;
            counts.1 += f.version.size;
        }
    }
    for t in &plan.tables {
        let (n, bytes) = per_table.get(t.dir.as_path()).copied().unwrap_or_default();
        println!(
            "  {}.{}: {n} files, {} -> {}",
            t.keyspace,
            t.table,
            human_bytes(bytes),
            t.dir.display()
        );
    }
    if let Some(dir) = &changes.quarantine {
        let (files, bytes) = weight(&changes.extra);
        println!(
            "would move {} entries the point does not have ({files} files, {}) and {} files it has with other bytes to {} (nothing deleted):",
            changes.extra.len(),
            human_bytes(bytes),
            changes.replaced.len(),
            dir.display()
        );
        for e in &changes.extra {
            println!("  extra: {}", e.path.display());
        }
        for path in &changes.replaced {
            println!("  replaced: {}", path.display());
        }
    }
    Ok(())
}

/// Files and bytes of entries (below them, for directories).
fn weight(entries: &[Entry]) -> (u64, u64) {
    entries
        .iter()
        .fold((0, 0), |(f, b), e| (f + e.files, b + e.bytes))
}

fn print_summary(plan: &Plan, s: &RestoreSummary, opts: &RestoreOptions) {
    println!(
        "restored {} files ({}) of node {} at {} into {} in {:.2} s: {} downloaded, {} copied, {} hard-linked, {} already in place",
        s.files - s.failed.len(),
        human_bytes(s.bytes),
        plan.node,
        point_label(plan),
        opts.to.display(),
        s.seconds,
        s.downloaded,
        s.copied,
        s.linked,
        s.already_in_place
    );
    if let Some(dir) = &s.quarantine {
        let (files, bytes) = weight(&s.quarantined);
        println!(
            "moved {} entries the point does not have ({files} files, {}) and {} files it has with other bytes to {} (nothing deleted)",
            s.quarantined.len(),
            human_bytes(bytes),
            s.replaced.len(),
            dir.display()
        );
    }
    for f in &s.failed {
        println!("FAILED: {f}");
    }
    if s.failed.is_empty() {
        println!("next steps:");
        for line in restore::next_steps(plan, &opts.to, opts.layout) {
            println!("  {line}");
        }
    }
}
