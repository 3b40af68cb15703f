//! `tablesafe inspect DATA_DIR...`: what tablesafe sees in Cassandra data directories.
//!
//! Prints every table with its SSTables (version, generation, components, bytes,
//! completeness, digest), then every skipped file with its reason. `--json` prints the
//! same inventory as one JSON document. Exits 1 when a Data.db does not match its digest.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use tablesafe::cassandra::inventory::{Inventory, InventoryOptions, SSTableReport};
use tablesafe::cassandra::{DigestStatus, Location};

use super::{Failure, Settings, human_bytes};
use crate::cli::InspectArgs;

pub fn run(args: &InspectArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let dirs = if args.dirs.is_empty() {
        settings.data_dirs.clone()
    } else {
        args.dirs.clone()
    };
    let options = InventoryOptions {
        check_digests: !args.no_digest,
    };
    let inventory = Inventory::collect(&dirs, options).map_err(anyhow::Error::from)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &inventory).context("writing JSON")?;
        writeln!(out).context("writing to standard output")?;
    } else {
        print_text(&mut out, &inventory).context("writing to standard output")?;
    }
    if inventory.has_corruption() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "{} SSTable(s) do not match their digest (listed above as CORRUPT): do not rely on them; run `nodetool scrub` or restore them from a replica",
            inventory.summary.digest_mismatch
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(out: &mut impl Write, inv: &Inventory) -> std::io::Result<()> {
    for table in &inv.tables {
        let id = table.table_id.as_deref().unwrap_or("no id");
        writeln!(
            out,
            "{}.{} ({id})  {}",
            table.keyspace,
            table.table,
            table.path.display()
        )?;
        for s in &table.sstables {
            writeln!(out, "  {}", sstable_line(s))?;
        }
        for log in &table.txn_logs {
            writeln!(
                out,
                "  txn log {}: {} record(s), {:?}",
                log.log.file_name,
                log.log.log.records.len(),
                log.log.outcome
            )?;
        }
        for f in &table.other_files {
            writeln!(
                out,
                "  {} {} ({})",
                location_label(&f.location),
                f.file.file_name,
                f.file.kind
            )?;
        }
    }
    if !inv.skipped.is_empty() {
        writeln!(out, "skipped:")?;
        for s in &inv.skipped {
            writeln!(out, "  {}: {}", s.path.display(), s.reason)?;
        }
    }
    let s = &inv.summary;
    writeln!(
        out,
        "{} SSTables in {} tables ({}): {} complete, {} not complete; digests {} ok, {} CORRUPT, {} unchecked; {} files skipped",
        s.sstables,
        s.tables,
        human_bytes(s.bytes),
        s.complete,
        s.not_complete,
        s.digest_ok,
        s.digest_mismatch,
        s.digest_unchecked,
        s.skipped
    )
}

fn location_label(l: &Location) -> String {
    match l {
        Location::Live => "live".into(),
        Location::Backups => "backups".into(),
        Location::Snapshot(tag) => format!("snapshot {tag}"),
    }
}

fn sstable_line(s: &SSTableReport) -> String {
    let mut where_ = location_label(&s.location);
    if let Some(index) = &s.index {
        where_.push_str(&format!(" index {index}"));
    }
    let state = match s.completeness.reason() {
        None => "complete".to_string(),
        Some(reason) => format!("NOT complete: {reason}"),
    };
    let digest = match &s.digest {
        Some(DigestStatus::Ok { algorithm, .. }) => format!(", digest {algorithm} ok"),
        Some(DigestStatus::Mismatch { message, .. }) => format!(", CORRUPT: {message}"),
        Some(DigestStatus::Unchecked { reason }) => format!(", digest not checked: {reason}"),
        None => String::new(),
    };
    format!(
        "{where_:<10} {:<40} {} ({}), {} components, {}: {state}{digest}",
        s.descriptor.base_name(),
        s.descriptor.version,
        s.release,
        s.components.len(),
        human_bytes(s.bytes),
    )
}
