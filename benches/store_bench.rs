//! Times the store on real files, for `benches/store_throughput.sh`.
//!
//! ```text
//! store_bench gen-text PATH BYTES          write text-like (compressible) test data
//! store_bench put BACKEND STRATEGY FILE... init a fresh repository, put each file
//!                                          (timed), put it again (dedup, timed),
//!                                          restore it (timed, unless --no-restore)
//! ```
//!
//! BACKEND is `file:DIR` (repository in DIR, created), `s3:DIR` (an s3s-fs server
//! started in this process on 127.0.0.1; DIR holds restored copies) or
//! `s3ext:ENDPOINT,DIR` (an S3 server running in another process, with the test keys of
//! `tests/s3support` and a bucket `bench`); STRATEGY is `hash-first` or `staging`. One line per file and step: `step=… file=… bytes=… secs=… MiB/s=…`.

#[path = "../tests/s3support/mod.rs"]
mod s3support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use tablesafe::store::{PutStrategy, Repository, StoreOptions};

const MIB: f64 = 1024.0 * 1024.0;

fn usage() -> ! {
    eprintln!(
        "usage: store_bench gen-text PATH BYTES | store_bench put file:DIR|s3:DIR|s3ext:ENDPOINT,DIR hash-first|staging [--no-restore] FILE..."
    );
    std::process::exit(2)
}

fn gen_text(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let chunk = 16 << 20;
    let mut written = 0u64;
    let mut seed = 1;
    while written < bytes {
        let n = chunk.min((bytes - written) as usize);
        f.write_all(&s3support::data::text(n, seed))?;
        written += n as u64;
        seed += 1;
    }
    f.flush()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen-text") if args.len() == 3 => {
            let bytes: u64 = args[2].parse().unwrap_or_else(|_| usage());
            gen_text(Path::new(&args[1]), bytes).expect("write test data");
        }
        Some("put") if args.len() >= 4 => put(&args[1], &args[2], &args[3..]).await,
        _ => usage(),
    }
}

async fn put(backend: &str, strategy: &str, rest: &[String]) {
    let strategy = match strategy {
        "hash-first" => PutStrategy::HashFirst,
        "staging" => PutStrategy::Staging,
        _ => usage(),
    };
    let restore = !rest.iter().any(|a| a == "--no-restore");
    let files: Vec<PathBuf> = rest
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    let mut _server = None;
    let (url, mut opts, work) = match backend.split_once(':') {
        Some(("file", dir)) => {
            let dir = PathBuf::from(dir);
            (
                format!("file://{}/repo", dir.display()),
                StoreOptions::default(),
                dir,
            )
        }
        Some(("s3ext", spec)) => {
            // an S3 server already running elsewhere with the test keys and a bucket
            // named `bench`: s3ext:ENDPOINT,DIR
            let (endpoint, dir) = spec.rsplit_once(',').unwrap_or_else(|| usage());
            let opts =
                s3support::options_for(endpoint, s3support::ACCESS_KEY, s3support::SECRET_KEY);
            let prefix = uuid::Uuid::new_v4();
            (format!("s3://bench/{prefix}"), opts, PathBuf::from(dir))
        }
        Some(("s3", dir)) => {
            let server = s3support::S3Server::start().await;
            server.create_bucket("bench");
            let opts = server.options();
            _server = Some(server);
            ("s3://bench/repo".to_string(), opts, PathBuf::from(dir))
        }
        _ => usage(),
    };
    opts.strategy = strategy;
    std::fs::create_dir_all(&work).expect("work dir");
    let repo = Repository::init(&url, &opts).await.expect("init");
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().to_string());
        let name = name.unwrap_or_default();
        let (t, cpu) = (Instant::now(), process_stats().1);
        let out = repo.put_file(file).await.expect("put");
        let stored = format!("stored={}", out.stored_size);
        report("put", &name, out.size, t, cpu, &stored);
        let (t, cpu) = (Instant::now(), process_stats().1);
        let again = repo.put_file(file).await.expect("put again");
        assert!(!again.uploaded);
        report("put-again(dedup)", &name, out.size, t, cpu, "");
        if restore {
            let dest = work.join(format!("{name}.restored"));
            let (t, cpu) = (Instant::now(), process_stats().1);
            repo.get_to_file(&out.id, &dest).await.expect("restore");
            report("restore", &name, out.size, t, cpu, "");
            std::fs::remove_file(&dest).expect("remove restored copy");
        }
    }
}

/// Peak RSS so far (KiB) and CPU seconds (user + system) used so far by this process.
fn process_stats() -> (u64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the ")" that ends the command name: utime and stime are 12th and 13th
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (hwm, (ticks(11) + ticks(12)) / 100.0)
}

fn report(step: &str, file: &str, bytes: u64, t: Instant, cpu_before: f64, extra: &str) {
    let secs = t.elapsed().as_secs_f64();
    let (hwm, cpu) = process_stats();
    println!(
        "step={step} file={file} bytes={bytes} secs={secs:.2} MiB/s={:.0} cpu_s={:.2} peak_rss_kib={hwm} {extra}",
        bytes as f64 / MIB / secs,
        cpu - cpu_before
    );
}
