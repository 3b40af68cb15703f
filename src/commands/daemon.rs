//! `tablesafe daemon`: continuous backup until SIGTERM/SIGINT; SIGHUP re-reads the
//! configuration file. See `tablesafe::watch` for how it works.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tablesafe::backup::filter::TableFilter;
use tablesafe::backup::{BackupOptions, PointMode};
use tablesafe::timespec;
use tablesafe::watch::{self, Control, DaemonOptions, DaemonStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::repo::{lock_catalog, open_catalog, open_repo_to_write};
use super::{Failure, Settings, runtime};
use crate::cli::DaemonArgs;

/// A systemd unit for the daemon, printed by `--print-systemd-unit`.
const SYSTEMD_UNIT: &str = include_str!("tablesafe.service");

fn duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    timespec::parse_duration(text)
        .filter(|d| *d >= 0)
        .map(|d| Duration::from_micros(d as u64))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--{flag} {text:?} is not a duration: use e.g. 500ms, 30s, 5m, 1h, 1d"
            ))
        })
}

/// Daemon options from flags over settings (called again on SIGHUP).
fn options(args: &DaemonArgs, settings: &Settings) -> Result<DaemonOptions, Failure> {
    let b = &args.backup;
    let data_dirs: Vec<PathBuf> = if b.data_dirs.is_empty() {
        settings.data_dirs.clone()
    } else {
        b.data_dirs.clone()
    };
    let pick = |flag: &Vec<String>, config: &Vec<String>| {
        if flag.is_empty() {
            config.clone()
        } else {
            flag.clone()
        }
    };
    let filter = TableFilter::new(
        pick(&b.include, &settings.include),
        pick(&b.exclude, &settings.exclude),
    )
    .map_err(|e| Failure::Usage(e.to_string()))?;
    let pin_dir = args.pin_dir.clone().or_else(|| {
        data_dirs
            .first()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .and_then(|d| d.parent().map(|p| p.join("tablesafe-pins")))
    });
    Ok(DaemonOptions {
        backup: BackupOptions {
            node: settings.node.clone(),
            data_dirs,
            filter,
            point: PointMode::None,
            parallel: b.parallel.max(1),
            prune_incremental: b.prune_incremental,
            pack_small_files: b.pack_small_files,
            vanished_root_is_empty: true,
            pin_dir,
        },
        rescan_every: duration("rescan-every", &args.rescan_every)?.max(Duration::from_secs(1)),
        settle: duration("settle", &args.settle)?,
        snapshot_every: args
            .snapshot_every
            .as_deref()
            .map(|t| duration("snapshot-every", t))
            .transpose()?,
        shutdown_timeout: duration("shutdown-timeout", &args.shutdown_timeout)?,
    })
}

pub fn run(args: &DaemonArgs, settings: &Settings) -> Result<ExitCode, Failure> {
    if args.print_systemd_unit {
        print!("{SYSTEMD_UNIT}");
        return Ok(ExitCode::SUCCESS);
    }
    let opts = options(args, settings)?;
    for d in &opts.backup.data_dirs {
        if !d.is_dir() {
            return Err(Failure::Failed(anyhow::anyhow!(
                "data directory {} does not exist or is not a directory: check --data-dir or data_dirs in the config",
                d.display()
            )));
        }
    }
    let _lock = lock_catalog(settings)?;
    let rt = runtime()?;
    rt.block_on(async {
        let repo = open_repo_to_write(settings, args.backup.init).await?;
        let mut catalog = open_catalog(settings, &repo).await?;
        // Another host writing this node, or a catalog of another repository: refuse
        // now rather than retry every pass.
        tablesafe::catalog::mirror::check_can_write(&repo, &mut catalog, &settings.node)
            .await
            .map_err(anyhow::Error::from)?;
        let status = Arc::new(Mutex::new(DaemonStatus::default()));
        if let Some(addr) = args.metrics_addr {
            tablesafe::metrics::serve(addr, status.clone())
                .await
                .map_err(|e| {
                    Failure::Failed(anyhow::anyhow!(
                        "cannot serve metrics on {addr}: {e} (is the port in use?)"
                    ))
                })?;
        }
        let (control, inbox) = mpsc::unbounded_channel();
        spawn_signal_handlers(control, args.clone(), settings.clone())?;
        tracing::info!(node = %settings.node, dirs = ?opts.backup.data_dirs, "daemon started");
        watch::run(&repo, &mut catalog, opts, inbox, status)
            .await
            .map_err(anyhow::Error::from)?;
        tracing::info!("daemon stopped");
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP re-reads the config file.
fn spawn_signal_handlers(
    control: mpsc::UnboundedSender<Control>,
    args: DaemonArgs,
    settings: Settings,
) -> Result<(), Failure> {
    let install = |kind: SignalKind| {
        signal(kind)
            .map_err(|e| Failure::Failed(anyhow::anyhow!("cannot install a signal handler: {e}")))
    };
    let (mut term, mut int, mut hup) = (
        install(SignalKind::terminate())?,
        install(SignalKind::interrupt())?,
        install(SignalKind::hangup())?,
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = control.send(Control::Shutdown); }
                _ = int.recv() => { let _ = control.send(Control::Shutdown); }
                _ = hup.recv() => {
                    let reloaded = Settings::resolve(&settings.global).and_then(|s| options(&args, &s));
                    match reloaded {
                        Ok(opts) => { let _ = control.send(Control::Reload(Box::new(opts))); }
                        Err(e) => tracing::error!("configuration not reloaded: {}", e.message()),
                    }
                }
            }
        }
    });
    Ok(())
}
