//! `tablesafe catalog rebuild`: recreate the local catalog from the repository alone.
//!
//! The new catalog is built beside the old one and renamed over it only when complete,
//! so an interrupted rebuild leaves the old catalog (if any) as it was.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tablesafe::catalog::{Catalog, mirror};

use super::repo::{catalog_path, lock_catalog, open_repo, repo_url};
use super::{Failure, Settings, runtime};
use crate::cli::RebuildArgs;

pub fn rebuild(args: &RebuildArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    let path = catalog_path(settings, repo_url(settings)?);
    // It replaces the catalog: never under a running daemon or backup.
    let _lock = lock_catalog(settings)?;
    let partial = path.with_extension("db.rebuild");
    remove_db(&partial)?;
    let (nodes, batches) = runtime()?.block_on(async {
        let repo = open_repo(settings, false).await?;
        let nodes = if args.all_nodes {
            mirror::nodes(&repo).await.map_err(anyhow::Error::from)?
        } else {
            vec![settings.node.clone()]
        };
        let mut catalog = Catalog::open(&partial).map_err(anyhow::Error::from)?;
        let mut batches = 0;
        for node in &nodes {
            batches += mirror::rebuild_node(&repo, &mut catalog, node)
                .await
                .with_context(|| format!("rebuilding node {node}"))?;
        }
        // Then gc's log: retention, condemned and deleted blobs.
        mirror::sync_gc_log(&repo, &mut catalog)
            .await
            .context("replaying gc's log")?;
        // The rebuilt catalog is this node's writer from now on (a replaced disk or
        // host takes the node over this way); a process still writing it elsewhere is
        // refused at its next batch once this one has written.
        catalog
            .claim_node(&settings.node)
            .map_err(anyhow::Error::from)?;
        catalog
            .bind_repository(&repo.config().id)
            .map_err(anyhow::Error::from)?;
        Ok::<_, Failure>((nodes, batches))
    })?;
    remove_db(&path)?;
    std::fs::rename(&partial, &path).with_context(|| {
        format!(
            "moving the rebuilt catalog into place at {}",
            path.display()
        )
    })?;
    println!(
        "rebuilt catalog {} from the repository: {} batch(es) of node(s) {}",
        path.display(),
        batches,
        nodes.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Removes a SQLite database and its WAL files, if present.
fn remove_db(path: &Path) -> Result<(), Failure> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::Failed(anyhow::anyhow!(
                    "cannot remove {}: {e}",
                    Path::new(&p).display()
                )));
            }
        }
    }
    Ok(())
}
