//! `tablesafe init`: create a repository at --repo.

use std::process::ExitCode;

use tablesafe::store::Repository;

use super::repo::repo_url;
use super::{Failure, Settings, runtime};
use crate::cli::InitArgs;

pub fn run(settings: &Settings, args: &InitArgs) -> Result<ExitCode, Failure> {
    let url = repo_url(settings)?;
    let mut store = settings.store.clone();
    store.compression.recompress = args.recompress;
    let repo = runtime()?
        .block_on(Repository::init(url, &store))
        .map_err(anyhow::Error::from)?;
    let config = repo.config();
    println!(
        "created repository {} (id {}, format {}, zstd level {}, {} KiB frames, {})",
        url,
        config.id,
        config.format,
        config.compression.level,
        config.compression.frame_size / 1024,
        if config.compression.recompress {
            "Cassandra-compressed Data.db compressed again"
        } else {
            "Cassandra-compressed Data.db stored as is"
        }
    );
    Ok(ExitCode::SUCCESS)
}
