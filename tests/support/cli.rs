//! Running the real `tablesafe` binary from tests, isolated from the caller's environment.

use std::path::Path;
use std::process::{Command, Output};

/// The binary, with no configuration or credentials leaking in from the environment, and
/// its default catalog location under `home`.
pub fn tablesafe(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tablesafe"));
    for var in [
        "TABLESAFE_CONFIG",
        "TABLESAFE_REPO",
        "TABLESAFE_CATALOG",
        "TABLESAFE_NODE",
        "TABLESAFE_LOG",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        c.env_remove(var);
    }
    c.env("HOME", home).env("XDG_DATA_HOME", home.join("xdg"));
    c
}

/// Exit status, stdout and stderr of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The output of a run that must have succeeded.
#[track_caller]
pub fn ok(out: Output) -> Output {
    assert!(out.status.success(), "command failed: {}", text(&out));
    out
}
