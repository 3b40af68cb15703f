//! `tablesafe verify`: checks that every retained point of every node can be restored.
//!
//! Exit status 1 when any blob a retained point needs is missing or (with
//! `--read-data`) damaged; each problem is printed with the files and snapshots that
//! need it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use tablesafe::catalog::Catalog;
use tablesafe::progress::Progress;
use tablesafe::verify::{self, ReadData, VerifyOptions};

use super::progress::Reporter;
use super::repo::{all_nodes_catalog_path, catalog_path, open_repo, repo_url};
use super::{Failure, Settings, human_bytes, runtime};
use crate::cli::VerifyArgs;

pub fn run(args: &VerifyArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    if args.check_catalog {
        return check_catalogs(args, settings);
    }
    let read_data = match (&args.read_data_subset, args.read_data) {
        (Some(text), _) => ReadData::Subset(percent(text)?),
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let opts = VerifyOptions {
        read_data,
        parallel: args.parallel.max(1),
    };
    let view_path = all_nodes_catalog_path(settings, repo_url(settings)?);
    let progress = Arc::new(Progress::default());
    let report = runtime()?.block_on(async {
        let repo = open_repo(settings, false).await?;
        let mut view = Catalog::open(&view_path).map_err(anyhow::Error::from)?;
        let reporter = Reporter::start("verify", progress.clone());
        let result = verify::run(&repo, &mut view, &opts, progress.clone()).await;
        drop(reporter);
        Ok::<_, Failure>(result.map_err(anyhow::Error::from)?)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        );
    } else {
        for problem in &report.problems {
            for line in verify::problem_lines(problem) {
                println!("{line}");
            }
        }
        println!(
            "checked {} node(s), {} snapshot(s): {} blob(s) referenced, {} in the repository, {} read back ({}), {} problem(s), {:.1} s",
            report.nodes.len(),
            report.snapshots,
            report.blobs_referenced,
            report.blobs_listed,
            report.blobs_read,
            human_bytes(report.bytes_read),
            report.problems.len(),
            report.seconds
        );
    }
    match report.problems.first() {
        None => Ok(ExitCode::SUCCESS),
        Some(first) => Err(Failure::Failed(anyhow!(
            "verify found {} blob(s) that retained points need missing or damaged, first: {} blob {} ({}); {}; restores that need them fail until then, or restore other points",
            report.problems.len(),
            first.kind,
            first.blob,
            first.detail,
            repair_advice(&report)
        ))),
    }
}

/// `verify --check-catalog`: each local catalog that exists against the repository's
/// logs; exit 1 when any differs.
fn check_catalogs(args: &VerifyArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let url = repo_url(settings)?;
    let own = catalog_path(settings, url);
    let view = all_nodes_catalog_path(settings, url);
    let present: Vec<(std::path::PathBuf, Option<&str>)> = [
        (own.clone(), Some(settings.node.as_str())),
        (view.clone(), None),
    ]
    .into_iter()
    .filter(|(p, _)| p.exists())
    .collect();
    if present.is_empty() {
        return Err(Failure::Usage(format!(
            "no local catalog to compare: neither {} nor {} exists; check --catalog and --node",
            own.display(),
            view.display()
        )));
    }
    let found = runtime()?.block_on(async {
        let repo = open_repo(settings, false).await?;
        let mut found = Vec::new();
        for (path, node) in &present {
            let mut local = Catalog::open(path).map_err(anyhow::Error::from)?;
            let scratch = path.with_extension(format!("verify-{}.db", std::process::id()));
            let result = verify::check_catalog(&repo, &mut local, *node, &scratch).await;
            for suffix in ["", "-wal", "-shm"] {
                let mut p = scratch.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
            found.push(result.map_err(anyhow::Error::from)?);
        }
        Ok::<_, Failure>(found)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).map_err(anyhow::Error::from)?
        );
    } else {
        for f in &found {
            for line in &f.lines {
                println!("catalog {}: {line}", f.catalog.display());
            }
            if f.more > 0 {
                println!(
                    "catalog {}: … and {} more difference(s)",
                    f.catalog.display(),
                    f.more
                );
            }
        }
    }
    let differing: Vec<&verify::CatalogDifferences> =
        found.iter().filter(|f| !f.is_empty()).collect();
    match differing.first() {
        None => {
            if !args.json {
                println!(
                    "{} local catalog(s) match the repository's logs",
                    found.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(first) => Err(Failure::Failed(anyhow!(
            "catalog {} differs from the repository's logs ({} difference(s), listed above): batches not yet uploaded go with the next `tablesafe backup`; anything else means the catalog is damaged or was altered: move it aside and run `tablesafe catalog rebuild` (an all-nodes view can simply be deleted: gc and verify rebuild it)",
            first.catalog.display(),
            first.lines.len() as u64 + first.more
        ))),
    }
}

/// What happens next to the blobs verify found missing or damaged.
fn repair_advice(report: &verify::VerifyReport) -> String {
    let mut advice = if report.recorded_gone > 0 {
        format!(
            "{} of them are now recorded as gone in gc's log{}, so the next `tablesafe backup` of any node that still has their files uploads them again: run it on those nodes",
            report.recorded_gone,
            if report.moved_aside > 0 {
                format!(
                    " ({} damaged object(s) moved to damaged/ in the repository)",
                    report.moved_aside
                )
            } else {
                String::new()
            }
        )
    } else {
        "none of them could be recorded as gone".to_string()
    };
    let left = report.left_in_place;
    if left > 0 && report.recorded_gone > 0 {
        advice.push_str(&format!(
            "; the other {left} (damaged packs, or blobs that could not be read: see above) are left in place: run verify again"
        ));
    } else if left > 0 {
        advice.push_str(
            " (damaged packs, or blobs that could not be read: see above): run verify again",
        );
    }
    advice
}

/// `5%`, `5` or `0.5%` as a fraction in (0, 1].
fn percent(text: &str) -> Result<f64, Failure> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        _ => Err(Failure::Usage(format!(
            "--read-data-subset {text:?} is not a percentage: use e.g. 5% (more than 0, at most 100)"
        ))),
    }
}
