//! Generates a Cassandra-like data directory for benchmarks, and the operations that
//! follow in real life: flushes, a compaction, a snapshot.
//!
//! ```text
//! cargo run --release --example gen_data -- init     DIR [--size 2G] [--sstables 1250] [--seed 1]
//! cargo run --release --example gen_data -- flush    DIR [--count 8] [--seed 2]
//! cargo run --release --example gen_data -- compact  DIR [--inputs 4] [--seed 3]
//! cargo run --release --example gen_data -- snapshot DIR --tag TAG [--keyspace KS]
//! ```
//!
//! Each command prints one JSON line: files and bytes written (and removed).
//!
//! # What the data looks like
//!
//! Three keyspaces, twelve tables (`<ks>/<table>-<32 hex>/`), 3.0+ names
//! (`nb-<gen>-big-<Component>`), eight components per SSTable: Data.db, Index.db,
//! Summary.db, Filter.db, Statistics.db, CompressionInfo.db, Digest.crc32 (the CRC32 of
//! Data.db in decimal, as Cassandra writes it) and TOC.txt (the component list, written
//! last). No transaction log is left behind: every SSTable is complete.
//!
//! - Data.db is a sequence of 16 KiB chunks of rows (binary keys, timestamps, counters, and
//!   text drawn from a skewed vocabulary), each LZ4-compressed and followed by the CRC32 of
//!   the compressed bytes, as Cassandra's default `LZ4Compressor` writes them: little is
//!   left for zstd to gain.
//! - CompressionInfo.db has Cassandra's layout: compressor name, options, chunk length,
//!   uncompressed length, chunk count, chunk offsets.
//! - Index.db (~26 bytes per partition), Summary.db (a sample of it), Filter.db (10 bits
//!   per partition, random bits), Statistics.db (~4-9 KiB of histograms, mostly small
//!   numbers) are sized like Cassandra's for the same partitions.
//! - Sizes: a few large SSTables hold ~45% of the bytes; the rest are spread log-uniformly
//!   from a few KiB up, so most SSTables are small and most bytes are in few files.
//!
//! Content is a function of the seed and the SSTable alone, so a run is reproducible
//! whatever the thread count.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use rayon::prelude::*;

#[derive(Parser)]
#[command(about = "Cassandra-like benchmark data")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a data directory of about SIZE bytes.
    Init {
        dir: PathBuf,
        /// Total size: bytes, or with a K/M/G suffix (powers of 1024).
        #[arg(long, default_value = "2G", value_parser = parse_size)]
        size: u64,
        /// SSTables (eight files each).
        #[arg(long, default_value_t = 1250)]
        sstables: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Flush: new small SSTables in random tables.
    Flush {
        dir: PathBuf,
        #[arg(long, default_value_t = 8)]
        count: usize,
        #[arg(long, default_value_t = 2)]
        seed: u64,
    },
    /// Compaction: INPUTS similar-sized SSTables of the busiest table replaced by one.
    Compact {
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        inputs: usize,
        #[arg(long, default_value_t = 3)]
        seed: u64,
    },
    /// Snapshot: hard links of every live SSTable under `snapshots/<tag>/`, plus
    /// manifest.json and schema.cql, as `nodetool snapshot` makes them.
    Snapshot {
        dir: PathBuf,
        #[arg(long)]
        tag: String,
        /// Only this keyspace (default: all).
        #[arg(long)]
        keyspace: Option<String>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("bad size {s:?}"));
    }
    Ok((n * mult as f64) as u64)
}

/// (keyspace, table, relative weight of its bytes).
const TABLES: &[(&str, &str, f64)] = &[
    ("shop", "orders", 6.0),
    ("shop", "order_items", 4.0),
    ("shop", "customers", 1.5),
    ("shop", "carts", 0.7),
    ("metrics", "raw", 8.0),
    ("metrics", "rollup_1h", 1.2),
    ("metrics", "rollup_1d", 0.3),
    ("social", "posts", 3.0),
    ("social", "comments", 2.5),
    ("social", "likes", 1.0),
    ("social", "timelines", 2.0),
    ("social", "profiles", 0.5),
];

const COMPONENTS: &[&str] = &[
    "CompressionInfo.db",
    "Index.db",
    "TOC.txt",
    "Filter.db",
    "Summary.db",
    "Statistics.db",
    "Digest.crc32",
    "Data.db",
];

const CHUNK: usize = 16 * 1024;
const MIN_DATA: u64 = 4 * 1024;
/// Approximate bytes of the components other than Data.db of a small SSTable.
const FIXED_OVERHEAD: u64 = 6 * 1024;

/// SplitMix64: small, fast, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ b).next()
}

fn table_id(ks: &str, table: &str) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in ks.bytes().chain([b'.']).chain(table.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{:016x}{:016x}", mix(h, 1), mix(h, 2))
}

fn table_dir(root: &Path, ks: &str, table: &str) -> PathBuf {
    root.join(ks)
        .join(format!("{table}-{}", table_id(ks, table)))
}

/// A vocabulary of pseudo-words, the same for every run.
fn vocabulary() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(42);
    let letters = b"etaoinshrdlucmfwypvbgkjqxz";
    (0..1024)
        .map(|_| {
            let len = 4 + rng.below(9) as usize;
            (0..len)
                .map(|_| {
                    // Skewed letter choice, like English text.
                    let r = rng.below(26 * 26) as usize;
                    letters[(r * r) / (26 * 26 * 26)]
                })
                .collect()
        })
        .collect()
}

/// Appends rows until `out` holds at least `len` bytes (then truncates to `len`).
fn fill_rows(out: &mut Vec<u8>, len: usize, rng: &mut Rng, vocab: &[Vec<u8>], ts: &mut u64) {
    out.clear();
    while out.len() < len {
        // partition: 16-byte key, a few rows
        let mut key = [0u8; 16];
        rng.fill(&mut key);
        let rows = 1 + rng.below(6);
        for _ in 0..rows {
            out.extend_from_slice(&key);
            *ts += 1 + rng.below(5000);
            out.extend_from_slice(&ts.to_be_bytes());
            out.push(0x24);
            let mut v = [0u8; 8];
            rng.fill(&mut v);
            out.extend_from_slice(&v[..4 + rng.below(5) as usize]);
            // a uuid and a hash-like value: random bytes, as in real rows
            let mut id = [0u8; 40];
            rng.fill(&mut id);
            out.extend_from_slice(&id[..16 + rng.below(25) as usize]);
            let words = 2 + rng.below(6);
            for _ in 0..words {
                // Zipf-like: frequent words are much more frequent.
                let r = rng.below(1024);
                let idx = (r * r / 1024) as usize;
                out.extend_from_slice(&vocab[idx]);
                out.push(b' ');
            }
            out.push(0);
            out.extend_from_slice(&(rng.below(100_000) as u32).to_be_bytes());
        }
    }
    out.truncate(len);
}

/// What one SSTable's files amount to.
#[derive(Default, Clone, Copy)]
struct Written {
    files: u64,
    bytes: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, o: Written) {
        self.files += o.files;
        self.bytes += o.bytes;
    }
}

fn write_file(path: &Path, bytes: &[u8], w: &mut Written) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    w.files += 1;
    w.bytes += bytes.len() as u64;
    Ok(())
}

/// Writes one complete SSTable with a Data.db of about `data_size` bytes.
fn write_sstable(
    dir: &Path,
    generation: u64,
    data_size: u64,
    seed: u64,
    vocab: &[Vec<u8>],
) -> io::Result<Written> {
    let mut rng = Rng::new(seed);
    let base = dir.join(format!("nb-{generation}-big-"));
    let path = |c: &str| {
        let mut p = base.clone().into_os_string();
        p.push(c);
        PathBuf::from(p)
    };
    let mut w = Written::default();

    // Data.db: LZ4 chunks + CRC32 each.
    let mut data = fs::File::create(path("Data.db"))?;
    let mut raw = Vec::with_capacity(CHUNK);
    let mut packed = vec![0u8; lz4_flex::block::get_maximum_output_size(CHUNK)];
    let mut crc_all = crc32fast::Hasher::new();
    let mut offsets: Vec<u64> = Vec::new();
    let (mut written, mut uncompressed) = (0u64, 0u64);
    let mut ts = 1_700_000_000_000_000 + rng.below(1 << 40);
    let mut out = Vec::with_capacity(1 << 20);
    while written < data_size {
        // Text rows compress ~2x with LZ4: size the last chunk to land near the target.
        let left = (data_size - written) as usize;
        let len = CHUNK.min(left * 2 + 64);
        fill_rows(&mut raw, len, &mut rng, vocab, &mut ts);
        let n = lz4_flex::block::compress_into(&raw, &mut packed)
            .map_err(|e| io::Error::other(e.to_string()))?;
        offsets.push(written);
        out.extend_from_slice(&packed[..n]);
        out.extend_from_slice(&crc32fast::hash(&packed[..n]).to_be_bytes());
        written += n as u64 + 4;
        uncompressed += len as u64;
        if out.len() >= 1 << 20 {
            crc_all.update(&out);
            data.write_all(&out)?;
            out.clear();
        }
    }
    crc_all.update(&out);
    data.write_all(&out)?;
    drop(data);
    w.files += 1;
    w.bytes += written;

    let partitions = (uncompressed / 600).max(1);

    let mut ci = Vec::new();
    let name = b"LZ4Compressor";
    ci.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ci.extend_from_slice(name);
    ci.extend_from_slice(&0u32.to_be_bytes());
    ci.extend_from_slice(&(CHUNK as u32).to_be_bytes());
    ci.extend_from_slice(&uncompressed.to_be_bytes());
    ci.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
    for o in &offsets {
        ci.extend_from_slice(&o.to_be_bytes());
    }
    write_file(&path("CompressionInfo.db"), &ci, &mut w)?;

    let mut index = Vec::with_capacity(partitions as usize * 28);
    let mut pos = 0u64;
    let mut key = [0u8; 16];
    for _ in 0..partitions {
        index.extend_from_slice(&16u16.to_be_bytes());
        rng.fill(&mut key);
        index.extend_from_slice(&key);
        pos += 200 + rng.below(800);
        // position as an unsigned vint-ish: 3-5 bytes, then an empty promoted index
        let bytes = pos.to_be_bytes();
        index.extend_from_slice(&bytes[3..]);
        index.push(0);
    }
    write_file(&path("Index.db"), &index, &mut w)?;

    let mut summary = Vec::new();
    summary.extend_from_slice(&128u32.to_be_bytes());
    summary.extend_from_slice(&(partitions / 128 + 1).to_be_bytes());
    for i in 0..(partitions / 128 + 1) {
        rng.fill(&mut key);
        summary.extend_from_slice(&key);
        summary.extend_from_slice(&(i * 128 * 28).to_be_bytes());
    }
    summary.extend_from_slice(&[0u8; 12]);
    write_file(&path("Summary.db"), &summary, &mut w)?;

    let mut filter = vec![0u8; 16 + (partitions as usize * 10).div_ceil(8)];
    filter[..4].copy_from_slice(&5u32.to_be_bytes());
    rng.fill(&mut filter[8..]);
    write_file(&path("Filter.db"), &filter, &mut w)?;

    // Statistics.db: histograms (mostly small numbers and zeros) and a few random values.
    let mut stats = Vec::new();
    let buckets = 400 + rng.below(300);
    for b in 0..buckets {
        let count = if rng.below(3) == 0 {
            0
        } else {
            rng.below(1 << (b % 24))
        };
        stats.extend_from_slice(&(b * 7).to_be_bytes());
        stats.extend_from_slice(&count.to_be_bytes());
    }
    let mut tail = vec![0u8; 64 + rng.below(256) as usize];
    rng.fill(&mut tail);
    stats.extend_from_slice(&tail);
    write_file(&path("Statistics.db"), &stats, &mut w)?;

    write_file(
        &path("Digest.crc32"),
        crc_all.finalize().to_string().as_bytes(),
        &mut w,
    )?;
    let toc: String = COMPONENTS.iter().map(|c| format!("{c}\n")).collect();
    write_file(&path("TOC.txt"), toc.as_bytes(), &mut w)?;
    Ok(w)
}

/// Live SSTables of a table directory: (generation, Data.db size).
fn live_sstables(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(rest) = name.strip_prefix("nb-")
            && let Some(generation) = rest.strip_suffix("-big-Data.db")
            && let Ok(g) = generation.parse::<u64>()
        {
            out.push((g, e.metadata()?.len()));
        }
    }
    out.sort();
    Ok(out)
}

fn next_generation(dir: &Path) -> io::Result<u64> {
    Ok(live_sstables(dir)?.last().map_or(1, |(g, _)| g + 1))
}

fn init(dir: &Path, size: u64, sstables: usize, seed: u64) -> io::Result<Written> {
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        return Err(io::Error::other(format!("{} is not empty", dir.display())));
    }
    let mut rng = Rng::new(seed);
    let n = sstables.max(TABLES.len());
    let large = (n / 300).max(2);
    let budget = size.saturating_sub(n as u64 * FIXED_OVERHEAD) as f64 / 1.07;
    let large_budget = budget * 0.45;
    let mut sizes: Vec<u64> = (0..large)
        .map(|_| (large_budget / large as f64 * (0.7 + 0.6 * rng.unit())) as u64)
        .collect();
    // Log-uniform from MIN_DATA to MIN_DATA * r, with r chosen so the sum fits.
    let us: Vec<f64> = (0..n - large).map(|_| rng.unit()).collect();
    let small_budget = budget - sizes.iter().sum::<u64>() as f64;
    let sum_for = |r: f64| -> f64 { us.iter().map(|u| MIN_DATA as f64 * r.powf(*u)).sum() };
    let (mut lo, mut hi) = (1.0f64, 1e9f64);
    for _ in 0..200 {
        let mid = (lo * hi).sqrt();
        if sum_for(mid) < small_budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    sizes.extend(us.iter().map(|u| (MIN_DATA as f64 * lo.powf(*u)) as u64));

    // Tables by weight; the large SSTables go to the heaviest tables.
    let total_weight: f64 = TABLES.iter().map(|t| t.2).sum();
    let mut heaviest: Vec<usize> = (0..TABLES.len()).collect();
    heaviest.sort_by(|a, b| TABLES[*b].2.total_cmp(&TABLES[*a].2));
    let pick_table = |rng: &mut Rng| {
        let mut x = rng.unit() * total_weight;
        for (i, t) in TABLES.iter().enumerate() {
            if x < t.2 {
                return i;
            }
            x -= t.2;
        }
        TABLES.len() - 1
    };
    let mut jobs: Vec<(usize, u64, u64)> = Vec::new(); // (table, generation, data size)
    let mut generation = vec![0u64; TABLES.len()];
    for (i, s) in sizes.into_iter().enumerate() {
        let t = if i < large {
            heaviest[i % 3]
        } else if i < large + TABLES.len() {
            i - large // every table has at least one SSTable
        } else {
            pick_table(&mut rng)
        };
        generation[t] += 1;
        jobs.push((t, generation[t], s.max(MIN_DATA)));
    }
    for (ks, table, _) in TABLES {
        fs::create_dir_all(table_dir(dir, ks, table))?;
    }
    let vocab = vocabulary();
    // Largest first so the two cores finish together.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.2));
    let results: Vec<io::Result<Written>> = jobs
        .par_iter()
        .map(|&(t, g, s)| {
            let (ks, table, _) = TABLES[t];
            write_sstable(
                &table_dir(dir, ks, table),
                g,
                s,
                mix(seed, (t as u64) << 32 | g),
                &vocab,
            )
        })
        .collect();
    let mut total = Written::default();
    for r in results {
        total += r?;
    }
    Ok(total)
}

fn flush(dir: &Path, count: usize, seed: u64) -> io::Result<Written> {
    let mut rng = Rng::new(seed);
    let vocab = vocabulary();
    let mut total = Written::default();
    for _ in 0..count {
        let t = rng.below(TABLES.len() as u64) as usize;
        let (ks, table, _) = TABLES[t];
        let d = table_dir(dir, ks, table);
        let g = next_generation(&d)?;
        // 64 KiB .. 4 MiB, log-uniform
        let size = (64.0 * 1024.0 * 64f64.powf(rng.unit())) as u64;
        total += write_sstable(&d, g, size, mix(seed, (t as u64) << 32 | g), &vocab)?;
    }
    Ok(total)
}

fn remove_sstable(dir: &Path, generation: u64) -> io::Result<Written> {
    let mut w = Written::default();
    // Data.db first, TOC.txt last, as Cassandra deletes them.
    let mut order: Vec<&str> = COMPONENTS.to_vec();
    order.sort_by_key(|c| match *c {
        "Data.db" => 0,
        "TOC.txt" => 2,
        _ => 1,
    });
    for c in order {
        let p = dir.join(format!("nb-{generation}-big-{c}"));
        w.bytes += fs::metadata(&p)?.len();
        w.files += 1;
        fs::remove_file(&p)?;
    }
    Ok(w)
}

/// (new SSTable's files, removed files).
fn compact(dir: &Path, inputs: usize, seed: u64) -> io::Result<(Written, Written)> {
    let mut busiest: Option<(PathBuf, Vec<(u64, u64)>)> = None;
    for (ks, table, _) in TABLES {
        let d = table_dir(dir, ks, table);
        let live = live_sstables(&d)?;
        if busiest.as_ref().is_none_or(|(_, b)| live.len() > b.len()) {
            busiest = Some((d, live));
        }
    }
    let Some((d, mut live)) = busiest else {
        return Err(io::Error::other("no table"));
    };
    let inputs = inputs.max(2);
    if live.len() < inputs {
        return Err(io::Error::other("too few SSTables to compact"));
    }
    // Size-tiered: the run of `inputs` similar-sized SSTables with the largest total
    // whose sizes are within 2x of each other, else the most similar run.
    live.sort_by_key(|&(_, s)| s);
    let windows: Vec<&[(u64, u64)]> = live.windows(inputs).collect();
    let similar = windows
        .iter()
        .filter(|w| w[inputs - 1].1 <= 2 * w[0].1.max(1))
        .max_by_key(|w| w.iter().map(|x| x.1).sum::<u64>());
    let chosen = similar.copied().unwrap_or_else(|| {
        windows
            .iter()
            .min_by(|a, b| {
                let ra = a[inputs - 1].1 as f64 / a[0].1.max(1) as f64;
                let rb = b[inputs - 1].1 as f64 / b[0].1.max(1) as f64;
                ra.total_cmp(&rb)
            })
            .copied()
            .unwrap_or(&live[..inputs])
    });
    let chosen: Vec<(u64, u64)> = chosen.to_vec();
    // Overwritten and expired cells are dropped: the result is ~90% of the inputs.
    let size = chosen.iter().map(|c| c.1).sum::<u64>() * 9 / 10;
    let g = next_generation(&d)?;
    let new = write_sstable(&d, g, size, mix(seed, g), &vocabulary())?;
    let mut removed = Written::default();
    for (g, _) in chosen {
        removed += remove_sstable(&d, g)?;
    }
    Ok((new, removed))
}

fn snapshot(dir: &Path, tag: &str, keyspace: Option<&str>) -> io::Result<(Written, Written)> {
    let (mut linked, mut new) = (Written::default(), Written::default());
    for (ks, table, _) in TABLES {
        if keyspace.is_some_and(|k| k != *ks) {
            continue;
        }
        let d = table_dir(dir, ks, table);
        let snap = d.join("snapshots").join(tag);
        fs::create_dir_all(&snap)?;
        let live = live_sstables(&d)?;
        for (g, _) in &live {
            for c in COMPONENTS {
                let name = format!("nb-{g}-big-{c}");
                let src = d.join(&name);
                fs::hard_link(&src, snap.join(&name))?;
                linked.files += 1;
                linked.bytes += fs::metadata(&src)?.len();
            }
        }
        let files: Vec<String> = live
            .iter()
            .map(|(g, _)| format!("\"nb-{g}-big-Data.db\""))
            .collect();
        let manifest = format!(
            "{{\"files\":[{}],\"created_at\":\"2026-11-22T05:00:00Z\",\"expires_at\":null}}",
            files.join(",")
        );
        write_file(&snap.join("manifest.json"), manifest.as_bytes(), &mut new)?;
        let schema = format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{table} (\n    id uuid,\n    ts timestamp,\n    body text,\n    n int,\n    PRIMARY KEY (id, ts)\n) WITH ID = {}\n    AND compaction = {{'class': 'SizeTieredCompactionStrategy'}}\n    AND compression = {{'chunk_length_in_kb': '16', 'class': 'LZ4Compressor'}};\n",
            table_id(ks, table)
        );
        write_file(&snap.join("schema.cql"), schema.as_bytes(), &mut new)?;
    }
    Ok((linked, new))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Init {
            dir,
            size,
            sstables,
            seed,
        } => init(&dir, size, sstables, seed)
            .map(|w| format!("{{\"files\":{},\"bytes\":{}}}", w.files, w.bytes)),
        Cmd::Flush { dir, count, seed } => flush(&dir, count, seed)
            .map(|w| format!("{{\"files\":{},\"bytes\":{}}}", w.files, w.bytes)),
        Cmd::Compact { dir, inputs, seed } => compact(&dir, inputs, seed).map(|(n, r)| {
            format!(
                "{{\"files\":{},\"bytes\":{},\"removed_files\":{},\"removed_bytes\":{}}}",
                n.files, n.bytes, r.files, r.bytes
            )
        }),
        Cmd::Snapshot { dir, tag, keyspace } => {
            snapshot(&dir, &tag, keyspace.as_deref()).map(|(l, n)| {
                format!(
                    "{{\"files\":{},\"bytes\":{},\"linked_files\":{},\"linked_bytes\":{}}}",
                    n.files, n.bytes, l.files, l.bytes
                )
            })
        }
    };
    match result {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_data: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
