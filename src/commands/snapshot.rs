//! `tablesafe snapshot list` and `tablesafe snapshot show`: points in time, from the
//! catalog alone (caught up from the repository first if the catalog is new).

use std::collections::BTreeMap;
use std::process::ExitCode;

use tablesafe::catalog::{Catalog, SnapshotFilter, SnapshotRow};
use tablesafe::timespec;

use super::repo::{open_catalog, open_repo};
use super::{Failure, Settings, human_bytes, runtime};
use crate::cli::{SnapshotListArgs, SnapshotShowArgs};

fn catalog(settings: &Settings) -> Result<Catalog, Failure> {
    runtime()?.block_on(async {
        let repo = open_repo(settings, false).await?;
        open_catalog(settings, &repo).await
    })
}

fn parse_time(text: &Option<String>) -> Result<Option<i64>, Failure> {
    text.as_deref()
        .map(|t| timespec::parse_at(t, timespec::now()))
        .transpose()
        .map_err(|e| Failure::Usage(e.to_string()))
}

pub fn list(args: &SnapshotListArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let filter = SnapshotFilter {
        node: (!args.all_nodes).then(|| settings.node.clone()),
        since: parse_time(&args.since)?,
        until: parse_time(&args.until)?,
    };
    let rows = catalog(settings)?
        .snapshots(&filter)
        .map_err(anyhow::Error::from)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(anyhow::Error::from)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:<20}  {:<32}  {:<16}  {:>8}  {:>10}",
        "ID", "TIME (UTC)", "NAME", "NODE", "FILES", "SIZE"
    );
    for r in &rows {
        println!(
            "{:>5}  {:<20}  {:<32}  {:<16}  {:>8}  {:>10}",
            r.id,
            timespec::format(r.time),
            r.name,
            r.node,
            r.files,
            human_bytes(r.bytes)
        );
    }
    println!("{} point(s)", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// A snapshot by id or name, or an error naming the closest names.
pub fn find(catalog: &Catalog, node: &str, wanted: &str) -> Result<SnapshotRow, Failure> {
    let all = catalog
        .snapshots(&SnapshotFilter {
            node: Some(node.to_string()),
            ..SnapshotFilter::default()
        })
        .map_err(anyhow::Error::from)?;
    if let Some(row) = all
        .iter()
        .find(|r| r.name == wanted || r.id.to_string() == wanted)
    {
        return Ok(row.clone());
    }
    let names = tablesafe::catalog::nearest_snapshot_names(&all, wanted);
    Err(Failure::Failed(anyhow::anyhow!(
        "no snapshot {wanted:?} for node {node:?}{}",
        if names.is_empty() {
            " (it has none: run `tablesafe backup` or `tablesafe snapshot create NAME`)".to_string()
        } else {
            format!("; nearest: {}", names.join(", "))
        }
    )))
}

pub fn show(args: &SnapshotShowArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let catalog = catalog(settings)?;
    let point = find(&catalog, &settings.node, &args.snapshot)?;
    let files = catalog
        .live_at(&point.node, point.time)
        .map_err(anyhow::Error::from)?;
    if args.json {
        let doc = serde_json::json!({ "snapshot": point, "files": files });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(anyhow::Error::from)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "snapshot {} ({}) of node {} at {}: {} files, {}",
        point.name,
        point.id,
        point.node,
        timespec::format(point.time),
        files.len(),
        human_bytes(files.iter().map(|f| f.size).sum())
    );
    let mut tables: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for f in &files {
        let t = tables
            .entry((f.key.keyspace.clone(), f.key.table.clone()))
            .or_default();
        t.0 += 1;
        t.1 += f.size;
    }
    for ((ks, table), (n, bytes)) in &tables {
        println!("  {ks}.{table}: {n} files, {}", human_bytes(*bytes));
    }
    if args.files {
        for f in &files {
            println!(
                "    {}/{}  {}  {}",
                f.key.data_dir,
                f.key.data_relative_path(),
                human_bytes(f.size),
                hex::encode(&f.hash[..8])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
