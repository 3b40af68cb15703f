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

/// The command run without the capabilities that let root read any file or list any
/// directory (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so mode 000 really is unreadable to
/// it, as to any other user; a no-op for other users.
pub fn without_dac_override(mut cmd: Command) -> assert_cmd::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it only drops capabilities of the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() == 0 {
                // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
                for cap in [1, 2] {
                    if libc::prctl(
                        libc::PR_CAPBSET_DROP,
                        cap as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    assert_cmd::Command::from_std(cmd)
}

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The run's output; it must have exited, not been killed by a signal.
    pub fn of(out: Output) -> Run {
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Non-empty lines on standard error.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Exit code `code` and exactly one line on standard error; returns that line.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines = self.stderr_lines();
        assert_eq!(lines.len(), 1, "one line on stderr, got:\n{}", self.stderr);
        lines[0].to_string()
    }

    #[track_caller]
    pub fn succeeds(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}
