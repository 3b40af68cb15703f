//! The `tablesafe` binary: parse arguments, load configuration, set up logging, run one
//! command, and turn its outcome into a one-line message and an exit code.
//!
//! Exit codes: 0 success, 1 the command failed (or found a problem it reports),
//! 2 bad usage or configuration.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, LogFormatArg};
use crate::commands::{Failure, Settings};

/// Exit code when standard output's reader went away (`| head`): what a shell reports
/// for a filter ended by SIGPIPE, without the signal.
const OUTPUT_CLOSED: u8 = 141;

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a connection to the object store that the
    // peer resets during a write is then an error like any other, never a silent death
    // by signal. A reader of standard output that goes away (`| head`) ends the process
    // quietly instead (see `quiet_on_closed_output`).
    quiet_on_closed_output();
    tune_malloc();
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli.global) {
        Ok(s) => s,
        Err(failure) => return report(failure),
    };
    init_logging(&cli, &settings);
    tracing::debug!(
        node = %settings.node,
        repo = ?settings.repo,
        catalog = ?settings.catalog,
        data_dirs = ?settings.data_dirs,
        "settings resolved"
    );
    match commands::run(cli.command, &settings) {
        Ok(code) => code,
        Err(failure) => report(failure),
    }
}

/// Two glibc malloc tunables, each unless its environment variable sets it:
/// - arenas: glibc gives each thread that allocates its own arena, up to 8 per core, and
///   keeps freed memory in each: with dozens of download threads that alone added 40-80
///   MiB of peak RSS to a restore (benches/compare.sh). One arena per core costs no
///   measurable time here (the hot loops are zstd and BLAKE3, not malloc).
/// - mmap threshold, fixed at 4 MiB: a frame buffer (4 MiB, reused through
///   `store::frame_pool`) is then its own mapping, given back to the kernel when freed.
///   By default glibc raises the threshold after the first such free, and frames then
///   came from the arenas, which kept their freed space: the S3 initial backup of the
///   benchmark peaked at 150-192 MB of RSS over runs of the same data, 134-143 MB with
///   the threshold fixed. Smaller buffers (packs of ~2 MiB) still come from the arenas.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(2);
            // SAFETY: mallopt only sets a tunable; called before any other thread exists.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            }
        }
    }
}

/// Prints a failure as one line on standard error and returns its exit code. A failure
/// to write to standard output because its reader went away is not reported.
fn report(failure: Failure) -> ExitCode {
    if failure.is_broken_pipe() && stdout_reader_gone() {
        return ExitCode::from(OUTPUT_CLOSED);
    }
    eprintln!("error: {}", failure.message());
    ExitCode::from(failure.exit_code())
}

/// `println!` panics when standard output's reader has gone away; a program whose
/// output is cut short (`tablesafe snapshot list | head -1`) should end quietly
/// instead, as a filter does. Every other panic is reported as before.
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let printing = text.starts_with("failed printing to stdout")
            || text.starts_with("failed printing to stderr");
        if printing && text.contains("Broken pipe") {
            std::process::exit(i32::from(OUTPUT_CLOSED));
        }
        default(info);
    }));
}

/// Whether standard output is a pipe or socket whose reader has gone away.
fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

fn init_logging(cli: &Cli, settings: &Settings) {
    let level = if cli.global.quiet {
        "error"
    } else {
        match cli.global.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TABLESAFE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormatArg::Json => builder.json().init(),
        LogFormatArg::Text => builder.init(),
    }
}
