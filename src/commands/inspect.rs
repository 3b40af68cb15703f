//! `tablesafe inspect`: placeholder until the cassandra module lands.
use std::process::ExitCode;

use super::{Failure, Settings};
use crate::cli::InspectArgs;

pub fn run(_args: &InspectArgs, _settings: &Settings) -> Result<ExitCode, Failure> {
    Ok(ExitCode::SUCCESS)
}
