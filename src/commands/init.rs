//! `tablesafe init`: create a repository at --repo.

use std::process::ExitCode;

use tablesafe::store::Repository;

use super::repo::repo_url;
use super::{Failure, Settings, runtime};

pub fn run(settings: &Settings) -> Result<ExitCode, Failure> {
    let url = repo_url(settings)?;
    let repo = runtime()?
        .block_on(Repository::init(url, &settings.store))
        .map_err(anyhow::Error::from)?;
    let config = repo.config();
    println!(
        "created repository {} (id {}, format {}, zstd level {}, {} KiB frames)",
        url,
        config.id,
        config.format,
        config.compression.level,
        config.compression.frame_size / 1024
    );
    Ok(ExitCode::SUCCESS)
}
