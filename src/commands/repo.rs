//! What the repository commands share: finding the repository and the local catalog.

use std::path::PathBuf;

use anyhow::Context;
use tablesafe::catalog::lock::WriterLock;
use tablesafe::catalog::{Catalog, mirror};
use tablesafe::store::{Repository, StoreError};

use super::{Failure, Settings};

/// The repository URL from flags, environment or config, or a usage error saying how to
/// give one.
pub fn repo_url(settings: &Settings) -> Result<&str, Failure> {
    settings.repo.as_deref().ok_or_else(|| {
        Failure::Usage(
            "no repository given: use --repo URL (e.g. file:///var/backups/tablesafe or s3://bucket/prefix), TABLESAFE_REPO, or `repo` in the config file".into(),
        )
    })
}

/// Opens the repository; with `create`, initialises it first when there is none.
pub async fn open_repo(settings: &Settings, create: bool) -> Result<Repository, Failure> {
    let url = repo_url(settings)?;
    match Repository::open(url, &settings.store).await {
        Err(StoreError::NotInitialised { .. }) if create => {
            Ok(Repository::init(url, &settings.store)
                .await
                .map_err(anyhow::Error::from)?)
        }
        other => Ok(other.map_err(anyhow::Error::from)?),
    }
}

/// Opens the repository for a writer of this node's history (under the catalog's writer
/// lock): multipart uploads in progress are noted next to the catalog
/// (`<catalog>.uploads/`), and those a killed process left are aborted first.
pub async fn open_repo_to_write(settings: &Settings, create: bool) -> Result<Repository, Failure> {
    let mut with_journal = settings.clone();
    let catalog = catalog_path(settings, repo_url(settings)?);
    let mut journal = catalog.into_os_string();
    journal.push(".uploads");
    with_journal.store.upload_journal = Some(PathBuf::from(journal));
    let repo = open_repo(&with_journal, create).await?;
    repo.abort_leftover_uploads().await;
    Ok(repo)
}

/// The catalog gc and verify use: every node's history, next to the node's own catalog
/// (`<node catalog stem>.all-nodes.db`), kept between runs so only new batches are read.
pub fn all_nodes_catalog_path(settings: &Settings, url: &str) -> PathBuf {
    let own = catalog_path(settings, url);
    let stem = own
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "catalog".into());
    own.with_file_name(format!("{stem}.all-nodes.db"))
}

/// `--catalog`, or the default path for this repository and node.
pub fn catalog_path(settings: &Settings, url: &str) -> PathBuf {
    settings
        .catalog
        .clone()
        .unwrap_or_else(|| Catalog::default_path(url, &settings.node))
}

/// Takes the one-writer lock of this node's catalog (`<catalog>.lock`), held until the
/// returned guard is dropped or the process dies. Every command that writes the node's
/// history takes it before opening the catalog.
pub fn lock_catalog(settings: &Settings) -> Result<WriterLock, Failure> {
    let path = catalog_path(settings, repo_url(settings)?);
    Ok(WriterLock::acquire(&path).map_err(anyhow::Error::from)?)
}

/// Opens the local catalog. A catalog with no history of this node is first caught up
/// from the repository (a new disk, or a replacement node given the old node's name).
pub async fn open_catalog(settings: &Settings, repo: &Repository) -> Result<Catalog, Failure> {
    let path = catalog_path(settings, repo_url(settings)?);
    let mut catalog = Catalog::open(&path).map_err(anyhow::Error::from)?;
    let known = catalog
        .last_seq(&settings.node)
        .map_err(anyhow::Error::from)?;
    if known == 0
        && mirror::nodes(repo)
            .await
            .map_err(anyhow::Error::from)?
            .contains(&settings.node)
    {
        let applied = mirror::rebuild_node(repo, &mut catalog, &settings.node)
            .await
            .with_context(|| {
                format!("rebuilding catalog {} from the repository", path.display())
            })?;
        tracing::info!(applied, node = %settings.node, "caught the catalog up from the repository");
    }
    // What gc forgot, condemned and deleted since this catalog last looked.
    mirror::sync_gc_log(repo, &mut catalog)
        .await
        .with_context(|| format!("reading gc's log into catalog {}", path.display()))?;
    Ok(catalog)
}
