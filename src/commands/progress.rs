//! Showing a [`Progress`] while a command runs: a bar on a terminal, a log line every
//! 10 seconds otherwise (visible with -v).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tablesafe::progress::Progress;

/// Reports progress until dropped.
pub struct Reporter {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    pub fn start(what: &'static str, progress: Arc<Progress>) -> Reporter {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || report(what, &progress, &stop));
        Reporter {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report(what: &str, progress: &Progress, done: &AtomicBool) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut ticks = 0u64;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        let (files, files_total, bytes, bytes_total) = progress.snapshot();
        match &bar {
            Some(bar) => {
                bar.set_length(bytes_total);
                bar.set_position(bytes);
                bar.set_message(format!("{files}/{files_total} files"));
            }
            None if ticks.is_multiple_of(100) => {
                tracing::info!(files, files_total, bytes, bytes_total, "{what} in progress")
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
