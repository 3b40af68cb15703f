//! A fake Cassandra node for tests: reproduces, one filesystem mutation at a time, how
//! Cassandra creates, replaces, snapshots, backs up and deletes SSTables in a table
//! directory, with real SSTable bytes copied from `fixtures/cassandra-sstables/`.
//!
//! ```ignore
//! let tmp = tempfile::tempdir()?;
//! let mut node = Node::new(tmp.path());
//! let mut table = node.create_table("ks", "tbl", FixtureFormat::Nb); // ks/tbl-<32 hex>/
//! let mut flush = table.flush();                 // nb-1-big, not written yet
//! while let Some(expected) = flush.step()? {     // ONE mutation per step
//!     expected.check().unwrap_or_else(|e| panic!("{e}")); // scan_dir agrees with the model?
//! }
//! table.compact(&[Gen::Seq(1), Gen::Seq(2)]).run()?;     // or run all steps at once
//! ```
//!
//! # Operations and Cassandra's order of mutations
//!
//! Every operation is planned when it is created (its generation is allocated then) and
//! executed step by step with [`Operation::step`]; operations of one table may be
//! interleaved (a flush while a compaction is half done), as on a real node. Dropping an
//! operation part way is a crash; [`TableDir::startup_cleanup`] then plans what Cassandra
//! does on restart.
//!
//! 3.0+ formats (`mc`…`oa`, `da`) write SSTables in place under a transaction log
//! `<ver>_txn_<op>_<uuid>.log` (records made with the library's [`TxnRecord::to_line`]):
//!
//! - **flush**: create the log with `ADD:[<abs table dir>/<base>,0,<components>]`; write the
//!   components: first half of Data.db, the index (Index.db, or Partitions.db + Rows.db for
//!   BTI), second half of Data.db, Filter.db, Summary.db, CompressionInfo.db/CRC.db, Digest,
//!   Statistics.db, TOC.txt **last**; append `COMMIT:[,0,0]` (Cassandra keeps an update time only in REMOVE); delete the log.
//! - **compaction**: as a flush (log named `…_txn_compaction_…`), then one `REMOVE` record
//!   per input (update time = newest mtime of its files in ms, count = its files; Cassandra
//!   appends them in `prepareToCommit`, after the new SSTable is written), `COMMIT`, delete
//!   every input one file at a time (Data.db first, Summary.db last), delete the log.
//! - **aborted write**: `ADD`, half of Data.db and the index, `ABORT`, delete those files,
//!   delete the log. **aborted compaction**: a whole compaction up to the REMOVE records,
//!   then `ABORT`: the new SSTable is deleted, the inputs stay.
//!
//! 2.x formats (`jb` 2.0, `ka` 2.1, `la` 2.2) have no transaction logs: components are
//! written under temporary names (`tmp-la-N-big-*`, `<ks>-<tbl>-tmp-ka-N-*`), then renamed
//! into place the way `SSTableWriter.rename` did: every component but Data.db and
//! Summary.db, then Data.db, then Summary.db. A 2.x compaction writes and renames the new
//! SSTable, then deletes the inputs (Data.db first, Summary.db last); an aborted write
//! deletes its `tmp-` files. 2.0 table directories have no id (`<ks>/<table>/`).
//!
//! Every format:
//!
//! - **snapshot**: one hard link per step into `snapshots/<tag>/` for every component of
//!   every live complete SSTable (in [`LinkOrder`]), then `manifest.json` (2.1+;
//!   `{"files":[<Data.db names>]}`, plus `created_at`/`expires_at` for nb, oa, da) and
//!   `schema.cql` (3.0+).
//! - **incremental backup**: one hard link per step into `backups/`, in [`LinkOrder`] (by
//!   default a shuffled order, so TOC.txt may come before other components).
//! - **Statistics rewrite**: write `<base>-Statistics.db.tmp` (two writes), then rename it
//!   over `<base>-Statistics.db`; hard links in snapshots and backups keep the old bytes.
//!
//! # Content
//!
//! [`Content::Distinct`] (the default) appends a short text trailer naming the SSTable to
//! each generation's Data.db and rewrites the Digest to match (CRC32 decimal for 3.0+,
//! Adler-32 decimal for `la` and `ka`, SHA-1 hex + two spaces + file name for `jb`), so
//! every generation has distinct bytes that still pass digest verification. Cassandra could
//! not read such an SSTable (the trailer is outside every chunk); tablesafe never needs to.
//! [`Content::Fixture`] copies the fixture bytes unchanged.
//!
//! # The model
//!
//! Each step returns an [`Expectation`]: for every directory of the table (the table dir
//! `""`, `backups`, `snapshots/<tag>`), the state each SSTable base name should have now,
//! the txn logs and the snapshot files present. It is computed from the helper's own record
//! of what it did, never by asking tablesafe:
//!
//! - no component file left (or only 2.x `tmp-` files) → [`Expected::Absent`];
//! - in the table dir, an `ADD` in a log without COMMIT/ABORT yet → `InProgress`; an
//!   `ADD` in an aborted log → `Aborted`; a `REMOVE` in a committed log → `Obsolete`;
//! - otherwise, judged by the files alone (snapshots, backups, 2.x, committed 3.0+): every
//!   TOC-listed component present → `Complete`; TOC.txt present but something it lists
//!   missing (a 2.x rename or a hard-link pass that reached TOC.txt first, a 2.x deletion
//!   past Data.db) → `Incomplete`; some files but no TOC.txt → `InProgress`.
//!
//! A record appended with [`TableDir::set_torn_log_appends`] takes two steps (half a line,
//! then the rest): it has no effect until its line is whole. [`Expectation::check`] then
//! compares the model with `tablesafe::cassandra::scan_dir` and `digest::verify_sstable`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha1::Digest as _;
use tablesafe::cassandra::digest::verify_sstable;
use tablesafe::cassandra::{Completeness, RecordKind, SSTable, TxnRecord, scan_dir};

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// Which fixture SSTable supplies the bytes, and so the version, naming scheme and
/// lifecycle (2.x temporary names, or 3.0+ transaction logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FixtureFormat {
    /// 2.0, long names, uncompressed (CRC.db), SHA-1 digest.
    Jb,
    /// 2.1, long names, `Digest.sha1` holding Adler-32.
    Ka,
    /// 2.2, short names `la-N-big-*`, `Digest.adler32`.
    La,
    /// 3.0.8+/3.9+.
    Mc,
    /// 3.0.25+/3.11.11+.
    Me,
    /// 4.0-rc1.
    Na,
    /// 4.0/4.1.
    Nb,
    /// 5.0 BIG.
    Oa,
    /// 5.0 BTI (`da-N-bti-*`, Partitions.db + Rows.db).
    Da,
}

impl FixtureFormat {
    pub const ALL: [FixtureFormat; 9] = [
        FixtureFormat::Jb,
        FixtureFormat::Ka,
        FixtureFormat::La,
        FixtureFormat::Mc,
        FixtureFormat::Me,
        FixtureFormat::Na,
        FixtureFormat::Nb,
        FixtureFormat::Oa,
        FixtureFormat::Da,
    ];

    /// The two-letter SSTable version.
    pub fn version(self) -> &'static str {
        match self {
            FixtureFormat::Jb => "jb",
            FixtureFormat::Ka => "ka",
            FixtureFormat::La => "la",
            FixtureFormat::Mc => "mc",
            FixtureFormat::Me => "me",
            FixtureFormat::Na => "na",
            FixtureFormat::Nb => "nb",
            FixtureFormat::Oa => "oa",
            FixtureFormat::Da => "da",
        }
    }

    /// 3.0+ writes SSTables in place under transaction logs; 2.x uses `tmp-` names.
    pub fn has_txn_logs(self) -> bool {
        !matches!(
            self,
            FixtureFormat::Jb | FixtureFormat::Ka | FixtureFormat::La
        )
    }

    /// 2.0 and 2.1 put keyspace and table in every file name.
    pub fn long_names(self) -> bool {
        matches!(self, FixtureFormat::Jb | FixtureFormat::Ka)
    }

    /// `big`/`bti` in short names; `None` for long names.
    pub fn format_suffix(self) -> Option<&'static str> {
        match self {
            FixtureFormat::Jb | FixtureFormat::Ka => None,
            FixtureFormat::Da => Some("bti"),
            _ => Some("big"),
        }
    }

    /// Versions a 4.1+ node writes with time-UUID generation ids when asked to.
    pub fn supports_uuid_generations(self) -> bool {
        matches!(
            self,
            FixtureFormat::Nb | FixtureFormat::Oa | FixtureFormat::Da
        )
    }

    /// 2.1 and later write `manifest.json` into each snapshot.
    pub fn writes_snapshot_manifest(self) -> bool {
        self != FixtureFormat::Jb
    }

    /// 3.0 and later write `schema.cql` into each snapshot.
    pub fn writes_snapshot_schema(self) -> bool {
        self.has_txn_logs()
    }

    /// 2.0 table directories are `<ks>/<table>/`; later ones `<ks>/<table>-<32 hex id>/`.
    pub fn table_dir_has_id(self) -> bool {
        self != FixtureFormat::Jb
    }

    /// The Digest component's name.
    pub fn digest_component(self) -> &'static str {
        match self {
            FixtureFormat::Jb | FixtureFormat::Ka => "Digest.sha1",
            FixtureFormat::La => "Digest.adler32",
            _ => "Digest.crc32",
        }
    }

    /// The fixture directory holding the SSTable whose bytes are copied.
    pub fn fixture_dir(self) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cassandra-sstables");
        match self {
            FixtureFormat::Jb => root.join("jb/Keyspace1"),
            f => root.join(format!(
                "{v}/legacy_tables/legacy_{v}_simple",
                v = f.version()
            )),
        }
    }

    /// The fixture SSTable's base name in [`Self::fixture_dir`].
    pub fn fixture_base(self) -> String {
        match self {
            FixtureFormat::Jb => "Keyspace1-Standard1-jb-0".into(),
            FixtureFormat::Ka => "legacy_tables-legacy_ka_simple-ka-1".into(),
            f => format!("{}-1-{}", f.version(), f.format_suffix().unwrap_or("big")),
        }
    }
}

/// The bytes of one component of a fixture SSTable (`"Data.db"`, `"TOC.txt"`, …).
pub fn fixture_component(format: FixtureFormat, component: &str) -> io::Result<Vec<u8>> {
    fs::read(
        format
            .fixture_dir()
            .join(format!("{}-{component}", format.fixture_base())),
    )
}

/// The Digest file content Cassandra writes for `data` in this format: CRC32 decimal
/// (3.0+), Adler-32 decimal (2.1, 2.2), or SHA-1 hex, two spaces and the Data.db file
/// name (2.0). No trailing newline, like the fixtures.
pub fn digest_text(format: FixtureFormat, data: &[u8], data_file_name: &str) -> Vec<u8> {
    match format {
        FixtureFormat::Jb => format!(
            "{}  {data_file_name}",
            hex::encode(sha1::Sha1::digest(data))
        )
        .into_bytes(),
        FixtureFormat::Ka | FixtureFormat::La => {
            let mut a = adler2::Adler32::new();
            a.write_slice(data);
            a.checksum().to_string().into_bytes()
        }
        _ => crc32fast::hash(data).to_string().into_bytes(),
    }
}

/// A fixture SSTable: its components in TOC order, and their bytes.
#[derive(Debug, Clone)]
struct Fixture {
    toc: Vec<String>,
    bytes: BTreeMap<String, Vec<u8>>,
}

fn load_fixture(format: FixtureFormat) -> io::Result<Fixture> {
    let toc_bytes = fixture_component(format, "TOC.txt")?;
    let toc: Vec<String> = String::from_utf8_lossy(&toc_bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let mut bytes = BTreeMap::new();
    for c in &toc {
        bytes.insert(c.clone(), fixture_component(format, c)?);
    }
    Ok(Fixture { toc, bytes })
}

// ---------------------------------------------------------------------------------------
// Public value types
// ---------------------------------------------------------------------------------------

/// An SSTable generation as written in file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gen {
    Seq(u64),
    /// 28-character time-UUID id (4.1+), e.g. `3gk1_0abc_000011l0kg2gg8ku9t`.
    Uuid(String),
}

impl fmt::Display for Gen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gen::Seq(n) => write!(f, "{n}"),
            Gen::Uuid(s) => f.write_str(s),
        }
    }
}

/// What goes into each generation's Data.db (see the module header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Byte-identical to the fixture in every generation.
    Fixture,
    /// Fixture bytes plus a trailer naming keyspace, table, SSTable and this salt; the
    /// Digest is recomputed. Use different salts on two nodes to get different bytes for
    /// the same keyspace/table/generation.
    Distinct(String),
}

/// The order hard links are made in by snapshots and incremental backups (Cassandra
/// iterates a hash set of components: any order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOrder {
    /// A fixed pseudo-random order per SSTable and directory (the default).
    Shuffled,
    TocFirst,
    TocLast,
    /// The order components are listed in TOC.txt.
    TocFileOrder,
}

/// What the model says the library should report for one SSTable base name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expected {
    Complete,
    InProgress,
    Aborted,
    Obsolete,
    Incomplete,
    /// Not reported as an SSTable at all (no files, or only 2.x `tmp-` files).
    Absent,
}

impl Expected {
    /// Whether the library's verdict is this state.
    pub fn matches(self, c: &Completeness) -> bool {
        matches!(
            (self, c),
            (Expected::Complete, Completeness::Complete)
                | (Expected::InProgress, Completeness::InProgress(_))
                | (Expected::Aborted, Completeness::Aborted(_))
                | (Expected::Obsolete, Completeness::Obsolete(_))
                | (Expected::Incomplete, Completeness::Incomplete(_))
        )
    }
}

/// The expected state of one SSTable in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSSTable {
    pub state: Expected,
    /// Data.db and the Digest are both present and fully written, so
    /// `verify_sstable` must say Ok (and must not otherwise).
    pub digest_verifiable: bool,
}

/// What one directory should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirExpectation {
    /// Every base name that ever had a component file here (those gone are `Absent`).
    pub sstables: BTreeMap<String, ExpectedSSTable>,
    pub txn_logs: BTreeSet<String>,
    /// `manifest.json`, `schema.cql`.
    pub other_files: BTreeSet<String>,
}

/// The model's view of a whole table after a step.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// "<operation> step <n>/<total>: <what the step did>".
    pub step: String,
    pub table_dir: PathBuf,
    /// Keyed by directory relative to the table dir: `""`, `backups`, `snapshots/<tag>`.
    pub dirs: BTreeMap<String, DirExpectation>,
}

/// Counts from a successful [`Expectation::check`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub sstables_compared: usize,
    pub digests_ok: usize,
    pub digests_not_ok: usize,
}

// ---------------------------------------------------------------------------------------
// Node and table
// ---------------------------------------------------------------------------------------

/// A fake Cassandra node: one data directory.
#[derive(Debug)]
pub struct Node {
    data_dir: PathBuf,
    tables_created: u64,
}

impl Node {
    /// Uses `data_dir` (created if missing) as the node's data directory.
    pub fn new(data_dir: &Path) -> Node {
        fs::create_dir_all(data_dir).expect("create data dir");
        let data_dir = std::path::absolute(data_dir).expect("absolute data dir");
        Node {
            data_dir,
            tables_created: 0,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates `<ks>/<table>-<32 hex id>/` (`<ks>/<table>/` for 2.0) and returns it.
    /// Names must be `[A-Za-z0-9_]+`, as Cassandra requires.
    pub fn create_table(&mut self, keyspace: &str, table: &str, format: FixtureFormat) -> TableDir {
        for n in [keyspace, table] {
            assert!(
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "invalid keyspace/table name {n:?}"
            );
        }
        self.tables_created += 1;
        let key = format!("{keyspace}.{table}#{}", self.tables_created);
        let table_id = format!("{:016x}{:016x}", fnv(&key), fnv(&format!("{key}/id")));
        let dir_name = if format.table_dir_has_id() {
            format!("{table}-{table_id}")
        } else {
            table.to_string()
        };
        let root = self.data_dir.join(keyspace).join(dir_name);
        fs::create_dir_all(&root).expect("create table dir");
        let fixture = load_fixture(format).expect("read fixture sstable");
        let model = Model {
            format,
            keyspace: keyspace.into(),
            table: table.into(),
            table_id,
            root: root.clone(),
            fixture,
            content: Content::Distinct(String::new()),
            torn_appends: false,
            uuid_generations: false,
            link_order: LinkOrder::Shuffled,
            counter: 0,
            next_gen: 0,
            gens: BTreeMap::new(),
            dirs: BTreeSet::from([String::new()]),
            files: BTreeMap::new(),
            known: BTreeSet::new(),
            logs: BTreeMap::new(),
        };
        TableDir {
            model: Rc::new(RefCell::new(model)),
            path: root,
        }
    }
}

/// One table directory of a [`Node`], with the model of what Cassandra did in it.
/// Cloning gives another handle on the same table.
#[derive(Debug, Clone)]
pub struct TableDir {
    model: Rc<RefCell<Model>>,
    path: PathBuf,
}

impl TableDir {
    /// The absolute table directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> FixtureFormat {
        self.model.borrow().format
    }

    pub fn keyspace(&self) -> String {
        self.model.borrow().keyspace.clone()
    }

    pub fn table(&self) -> String {
        self.model.borrow().table.clone()
    }

    /// The 32-hex-digit table id (also used for 2.0 tables, whose directory lacks it).
    pub fn table_id(&self) -> String {
        self.model.borrow().table_id.clone()
    }

    /// Content of SSTables planned from now on.
    pub fn set_content(&mut self, content: Content) {
        self.model.borrow_mut().content = content;
    }

    /// Append every txn log record in two steps (half a line, then the rest), so a torn
    /// record is observable.
    pub fn set_torn_log_appends(&mut self, on: bool) {
        self.model.borrow_mut().torn_appends = on;
    }

    /// Use 4.1+ time-UUID generation ids for SSTables planned from now on (nb, oa, da).
    pub fn set_uuid_generations(&mut self, on: bool) {
        let mut m = self.model.borrow_mut();
        assert!(
            !on || m.format.supports_uuid_generations(),
            "{:?} SSTables never have UUID generation ids",
            m.format
        );
        m.uuid_generations = on;
    }

    /// Hard-link order of snapshots and backups planned from now on.
    pub fn set_link_order(&mut self, order: LinkOrder) {
        self.model.borrow_mut().link_order = order;
    }

    /// The components every SSTable of this table has, in TOC.txt order.
    pub fn components(&self) -> Vec<String> {
        self.model.borrow().fixture.toc.clone()
    }

    /// `nb-3-big`, `ks-tbl-ka-3`, … for a generation.
    pub fn base_name(&self, generation: &Gen) -> String {
        self.model.borrow().base(generation, false)
    }

    /// A component's file name for a generation, e.g. `nb-3-big-Data.db`.
    pub fn file_name(&self, generation: &Gen, component: &str) -> String {
        format!("{}-{component}", self.base_name(generation))
    }

    /// Generations whose SSTable in the table directory is complete now (per the model).
    pub fn live_generations(&self) -> Vec<Gen> {
        let m = self.model.borrow();
        m.gens
            .iter()
            .filter(|(_, base)| m.state("", base) == Expected::Complete)
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// The model's expectation now, without performing a step.
    pub fn expectation(&self) -> Expectation {
        self.model.borrow().expectation("current state".into())
    }

    /// Plans a memtable flush creating a new generation.
    pub fn flush(&mut self) -> Operation {
        let mut m = self.model.borrow_mut();
        let g = m.alloc_gen();
        let base = m.base(&g, false);
        let mut steps = Vec::new();
        if m.format.has_txn_logs() {
            let log = m.new_log_name("flush");
            let n = m.fixture.toc.len() as u32;
            m.push_append(&mut steps, &log, Rec::Add(base.clone(), n));
            steps.extend(m.write_steps(&base, &base, false));
            m.push_append(&mut steps, &log, Rec::Commit);
            steps.push(delete_log_step(&log));
        } else {
            let tmp = m.base(&g, true);
            steps.extend(m.write_steps(&base, &tmp, true));
            steps.extend(m.rename_steps(&tmp, &base));
        }
        m.gens.insert(g.clone(), base.clone());
        drop(m);
        self.operation(format!("flush of {base}"), Some(g), steps)
    }

    /// Plans a compaction of `inputs` (complete live generations) into a new generation.
    pub fn compact(&mut self, inputs: &[Gen]) -> Operation {
        let mut m = self.model.borrow_mut();
        let inputs = m.live_inputs(inputs);
        let g = m.alloc_gen();
        let base = m.base(&g, false);
        let mut steps = Vec::new();
        if m.format.has_txn_logs() {
            let log = m.new_log_name("compaction");
            let n = m.fixture.toc.len() as u32;
            m.push_append(&mut steps, &log, Rec::Add(base.clone(), n));
            steps.extend(m.write_steps(&base, &base, false));
            for input in &inputs {
                m.push_append(&mut steps, &log, Rec::Remove(input.clone()));
            }
            m.push_append(&mut steps, &log, Rec::Commit);
            for input in &inputs {
                steps.extend(m.delete_steps("", input));
            }
            steps.push(delete_log_step(&log));
        } else {
            let tmp = m.base(&g, true);
            steps.extend(m.write_steps(&base, &tmp, true));
            steps.extend(m.rename_steps(&tmp, &base));
            for input in &inputs {
                steps.extend(m.delete_steps("", input));
            }
        }
        m.gens.insert(g.clone(), base.clone());
        drop(m);
        self.operation(
            format!("compaction of {} into {base}", inputs.join(" + ")),
            Some(g),
            steps,
        )
    }

    /// Plans a write that fails part way: a few components, ABORT (3.0+), then deletion.
    pub fn aborted_write(&mut self) -> Operation {
        let mut m = self.model.borrow_mut();
        let g = m.alloc_gen();
        let base = m.base(&g, false);
        let temp = !m.format.has_txn_logs();
        let written = m.base(&g, temp);
        // Data.db (first half) and the index component(s).
        let writes: Vec<Step> = m
            .write_steps(&base, &written, temp)
            .into_iter()
            .take_while(|s| {
                !matches!(
                    &s.action,
                    Action::Write {
                        part: Part::Tail,
                        ..
                    }
                )
            })
            .collect();
        let mut steps = Vec::new();
        if temp {
            steps.extend(writes.iter().cloned());
            steps.extend(delete_written(&writes));
        } else {
            let log = m.new_log_name("flush");
            let n = m.fixture.toc.len() as u32;
            m.push_append(&mut steps, &log, Rec::Add(base.clone(), n));
            steps.extend(writes.iter().cloned());
            m.push_append(&mut steps, &log, Rec::Abort);
            steps.extend(delete_written(&writes));
            steps.push(delete_log_step(&log));
        }
        m.gens.insert(g.clone(), base.clone());
        drop(m);
        self.operation(format!("aborted write of {written}"), Some(g), steps)
    }

    /// Plans a compaction of `inputs` that aborts after writing its output (and, 3.0+,
    /// after its REMOVE records): the output is deleted, the inputs stay complete.
    pub fn aborted_compaction(&mut self, inputs: &[Gen]) -> Operation {
        let mut m = self.model.borrow_mut();
        let inputs = m.live_inputs(inputs);
        let g = m.alloc_gen();
        let base = m.base(&g, false);
        let temp = !m.format.has_txn_logs();
        let written = m.base(&g, temp);
        let writes = m.write_steps(&base, &written, temp);
        let mut steps = Vec::new();
        if temp {
            steps.extend(writes.iter().cloned());
            steps.extend(delete_written(&writes));
        } else {
            let log = m.new_log_name("compaction");
            let n = m.fixture.toc.len() as u32;
            m.push_append(&mut steps, &log, Rec::Add(base.clone(), n));
            steps.extend(writes.iter().cloned());
            for input in &inputs {
                m.push_append(&mut steps, &log, Rec::Remove(input.clone()));
            }
            m.push_append(&mut steps, &log, Rec::Abort);
            steps.extend(delete_written(&writes));
            steps.push(delete_log_step(&log));
        }
        m.gens.insert(g.clone(), base.clone());
        drop(m);
        self.operation(
            format!(
                "aborted compaction of {} into {written}",
                inputs.join(" + ")
            ),
            Some(g),
            steps,
        )
    }

    /// Plans `nodetool snapshot -t <tag>` of the SSTables complete now.
    pub fn snapshot(&mut self, tag: &str) -> Operation {
        assert!(
            !tag.is_empty() && !tag.contains('/'),
            "invalid snapshot tag {tag:?}"
        );
        let m = self.model.borrow();
        let dir = format!("snapshots/{tag}");
        let live: Vec<String> = m
            .gens
            .values()
            .filter(|b| m.state("", b) == Expected::Complete)
            .cloned()
            .collect();
        let mut steps = Vec::new();
        for base in &live {
            steps.extend(m.link_steps(base, &dir));
        }
        if m.format.writes_snapshot_manifest() {
            let files: Vec<String> = live.iter().map(|b| format!("{b}-Data.db")).collect();
            let manifest = if matches!(
                m.format,
                FixtureFormat::Nb | FixtureFormat::Oa | FixtureFormat::Da
            ) {
                serde_json::json!({
                    "files": files,
                    "created_at": iso8601_now(),
                    "expires_at": null,
                })
            } else {
                serde_json::json!({ "files": files })
            };
            steps.push(Step {
                desc: format!("write {dir}/manifest.json"),
                action: Action::Write {
                    dir: dir.clone(),
                    name: "manifest.json".into(),
                    role: Role::Manifest,
                    bytes: manifest.to_string().into_bytes(),
                    part: Part::Whole,
                },
            });
        }
        if m.format.writes_snapshot_schema() {
            let schema = format!(
                "CREATE TABLE IF NOT EXISTS {}.{} (\n\tpk int PRIMARY KEY,\n\tval text)\n\tWITH ID = {};\n",
                m.keyspace,
                m.table,
                dashed_uuid(&m.table_id)
            );
            steps.push(Step {
                desc: format!("write {dir}/schema.cql"),
                action: Action::Write {
                    dir: dir.clone(),
                    name: "schema.cql".into(),
                    role: Role::Schema,
                    bytes: schema.into_bytes(),
                    part: Part::Whole,
                },
            });
        }
        if steps.is_empty() {
            steps.push(Step {
                desc: format!("create {dir}/"),
                action: Action::MkDir { dir: dir.clone() },
            });
        }
        drop(m);
        self.operation(format!("snapshot {tag}"), None, steps)
    }

    /// Plans the incremental backup hard links (`backups/`) of a complete live generation.
    pub fn incremental_backup(&mut self, generation: &Gen) -> Operation {
        let m = self.model.borrow();
        let base = m.live_inputs(std::slice::from_ref(generation)).remove(0);
        let steps = m.link_steps(&base, "backups");
        drop(m);
        self.operation(format!("incremental backup of {base}"), None, steps)
    }

    /// Plans a Statistics.db rewrite (repair status, level change) of a live generation:
    /// `<base>-Statistics.db.tmp` in two writes, then renamed over `<base>-Statistics.db`.
    pub fn rewrite_statistics(&mut self, generation: &Gen) -> Operation {
        let mut m = self.model.borrow_mut();
        let base = m.live_inputs(std::slice::from_ref(generation)).remove(0);
        m.counter += 1;
        let stats = format!("{base}-Statistics.db");
        let mut bytes = fs::read(m.root.join(&stats)).expect("read live Statistics.db");
        bytes.extend_from_slice(
            format!("\n#tablesafe-lifecycle statistics rewrite {}\n", m.counter).as_bytes(),
        );
        let tmp = format!("{stats}.tmp");
        let half = bytes.len() / 2;
        let steps = vec![
            Step {
                desc: format!("write first half of {tmp}"),
                action: Action::Write {
                    dir: String::new(),
                    name: tmp.clone(),
                    role: Role::RewriteTmp,
                    bytes: bytes[..half].to_vec(),
                    part: Part::Head,
                },
            },
            Step {
                desc: format!("write rest of {tmp}"),
                action: Action::Write {
                    dir: String::new(),
                    name: tmp.clone(),
                    role: Role::RewriteTmp,
                    bytes: bytes[half..].to_vec(),
                    part: Part::Tail,
                },
            },
            Step {
                desc: format!("rename {tmp} over {stats}"),
                action: Action::Rename {
                    from: tmp,
                    to: stats,
                    role: Role::Component {
                        base: base.clone(),
                        component: "Statistics.db".into(),
                        temp: false,
                    },
                },
            },
        ];
        drop(m);
        self.operation(format!("Statistics rewrite of {base}"), None, steps)
    }

    /// Plans what Cassandra does to this table directory when it starts after a crash.
    /// (Dropping an [`Operation`] before it finishes leaves the directory as a crash
    /// would.)
    ///
    /// 3.0+ (`LogTransaction.removeUnfinishedLeftovers`): for each txn log, the files of
    /// its REMOVE records if it committed, else of its ADD records (a torn last line is not
    /// a COMMIT), Data.db first; then the log. 2.x (`scrubDataDirectories`): every `tmp-`
    /// file; every SSTable left without Data.db (a rename or deletion cut short); then
    /// Summary.db rebuilt for SSTables that have Data.db but lost the race to rename it.
    pub fn startup_cleanup(&mut self) -> Operation {
        let m = self.model.borrow();
        let mut steps = Vec::new();
        if m.format.has_txn_logs() {
            for (log, state) in &m.logs {
                let bases = if state.outcome == Outcome::Committed {
                    &state.removes
                } else {
                    &state.adds
                };
                for base in bases {
                    steps.extend(m.delete_steps("", base));
                }
                steps.push(delete_log_step(log));
            }
        } else {
            let mut bases = BTreeSet::new();
            for ((dir, name), f) in &m.files {
                if let Role::Component { base, temp, .. } = &f.role
                    && dir.is_empty()
                {
                    if *temp {
                        steps.push(Step {
                            desc: format!("delete temporary {name}"),
                            action: Action::Delete {
                                dir: String::new(),
                                name: name.clone(),
                            },
                        });
                    } else {
                        bases.insert(base.clone());
                    }
                }
            }
            for base in &bases {
                let present = m.present("", base);
                if !present.iter().any(|c| c == "Data.db") {
                    steps.extend(m.delete_steps("", base));
                } else if m.fixture.toc.iter().any(|c| c == "Summary.db")
                    && !present.iter().any(|c| c == "Summary.db")
                {
                    let name = format!("{base}-Summary.db");
                    steps.push(Step {
                        desc: format!("rebuild {name}"),
                        action: Action::Write {
                            dir: String::new(),
                            name,
                            role: Role::Component {
                                base: base.clone(),
                                component: "Summary.db".into(),
                                temp: false,
                            },
                            bytes: m.fixture.bytes["Summary.db"].clone(),
                            part: Part::Whole,
                        },
                    });
                }
            }
        }
        drop(m);
        self.operation("startup cleanup".into(), None, steps)
    }

    fn operation(&self, what: String, generation: Option<Gen>, steps: Vec<Step>) -> Operation {
        Operation {
            model: self.model.clone(),
            what,
            generation,
            total: steps.len(),
            steps: steps.into(),
            done: 0,
        }
    }
}

/// A planned sequence of filesystem mutations; see the module header.
#[derive(Debug)]
pub struct Operation {
    model: Rc<RefCell<Model>>,
    what: String,
    generation: Option<Gen>,
    steps: std::collections::VecDeque<Step>,
    total: usize,
    done: usize,
}

impl Operation {
    /// Performs the next mutation and returns what every directory of the table should
    /// look like now; `None` when the operation is finished.
    pub fn step(&mut self) -> io::Result<Option<Expectation>> {
        let Some(step) = self.steps.pop_front() else {
            return Ok(None);
        };
        let mut m = self.model.borrow_mut();
        self.done += 1;
        let label = format!(
            "{} step {}/{}: {}",
            self.what, self.done, self.total, step.desc
        );
        m.apply(&step.action)
            .map_err(|e| io::Error::new(e.kind(), format!("{label}: {e}")))?;
        Ok(Some(m.expectation(label)))
    }

    /// Performs all remaining steps.
    pub fn run(mut self) -> io::Result<()> {
        while self.step()?.is_some() {}
        Ok(())
    }

    /// Performs up to `n` steps; returns the expectation after the last one performed.
    pub fn run_steps(&mut self, n: usize) -> io::Result<Option<Expectation>> {
        let mut last = None;
        for _ in 0..n {
            match self.step()? {
                Some(e) => last = Some(e),
                None => break,
            }
        }
        Ok(last)
    }

    /// The generation this operation creates (flush, compaction, aborted writes).
    pub fn generation(&self) -> Option<&Gen> {
        self.generation.as_ref()
    }

    pub fn description(&self) -> &str {
        &self.what
    }

    pub fn remaining(&self) -> usize {
        self.steps.len()
    }

    pub fn is_done(&self) -> bool {
        self.steps.is_empty()
    }

    /// Descriptions of the steps not yet performed.
    pub fn pending_steps(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.desc.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Step {
    desc: String,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Create (truncate) and write all bytes: the file is complete.
    Whole,
    /// Create and write the first part: the file is partially written.
    Head,
    /// Append the rest: the file is complete.
    Tail,
}

#[derive(Debug, Clone)]
enum Rec {
    Add(String, u32),
    Remove(String),
    Commit,
    Abort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Component {
        base: String,
        component: String,
        temp: bool,
    },
    TxnLog,
    Manifest,
    Schema,
    RewriteTmp,
}

#[derive(Debug, Clone)]
enum Action {
    LogAppend {
        log: String,
        rec: Rec,
        part: Part,
    },
    DeleteLog {
        log: String,
    },
    Write {
        dir: String,
        name: String,
        role: Role,
        bytes: Vec<u8>,
        part: Part,
    },
    /// Within the table directory.
    Rename {
        from: String,
        to: String,
        role: Role,
    },
    /// From the table directory into `dir`.
    Link {
        name: String,
        dir: String,
    },
    Delete {
        dir: String,
        name: String,
    },
    MkDir {
        dir: String,
    },
}

#[derive(Debug, Clone)]
struct FileState {
    role: Role,
    complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Open,
    Committed,
    Aborted,
}

#[derive(Debug, Clone)]
struct LogState {
    adds: Vec<String>,
    removes: Vec<String>,
    outcome: Outcome,
    /// A line whose first half is on disk.
    torn: Option<(String, Rec)>,
}

#[derive(Debug)]
struct Model {
    format: FixtureFormat,
    keyspace: String,
    table: String,
    table_id: String,
    root: PathBuf,
    fixture: Fixture,
    content: Content,
    torn_appends: bool,
    uuid_generations: bool,
    link_order: LinkOrder,
    /// Numbers txn ids and Statistics rewrites.
    counter: u64,
    /// The last generation allocated.
    next_gen: u64,
    gens: BTreeMap<Gen, String>,
    /// Directories (relative) that exist.
    dirs: BTreeSet<String>,
    /// (relative dir, file name) → state, for every file the helper created.
    files: BTreeMap<(String, String), FileState>,
    /// (relative dir, base) of every SSTable (or 2.x tmp SSTable) that had files.
    known: BTreeSet<(String, String)>,
    logs: BTreeMap<String, LogState>,
}

fn rel(dir: &str, name: &str) -> PathBuf {
    if dir.is_empty() {
        PathBuf::from(name)
    } else {
        Path::new(dir).join(name)
    }
}

fn delete_log_step(log: &str) -> Step {
    Step {
        desc: format!("delete txn log {log}"),
        action: Action::DeleteLog { log: log.into() },
    }
}

/// Deletes of every file the given write steps create, Data.db first.
fn delete_written(writes: &[Step]) -> Vec<Step> {
    let mut names: Vec<String> = Vec::new();
    for s in writes {
        if let Action::Write { name, .. } = &s.action
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names.sort_by_key(|n| !n.ends_with("-Data.db"));
    names
        .into_iter()
        .map(|name| Step {
            desc: format!("delete {name}"),
            action: Action::Delete {
                dir: String::new(),
                name,
            },
        })
        .collect()
}

/// Position of a component in the order a flush writes them (Data.db is split in two).
fn write_rank(c: &str) -> u32 {
    match c {
        "Data.db" => 0,
        "Index.db" | "Partitions.db" | "Rows.db" => 1,
        "Filter.db" => 3,
        "Summary.db" => 4,
        "CompressionInfo.db" | "CRC.db" => 5,
        _ if c.starts_with("Digest.") => 6,
        "Statistics.db" => 7,
        "TOC.txt" => 9,
        _ => 8,
    }
}

impl Model {
    fn alloc_gen(&mut self) -> Gen {
        self.next_gen += 1;
        if self.uuid_generations {
            Gen::Uuid(format!(
                "3gk1_0abc_{:0>5}1l0kg2gg8ku9t",
                base36(self.next_gen)
            ))
        } else {
            Gen::Seq(self.next_gen)
        }
    }

    fn base(&self, g: &Gen, temp: bool) -> String {
        let v = self.format.version();
        let t = if temp { "tmp-" } else { "" };
        match self.format.format_suffix() {
            None => format!("{}-{}-{t}{v}-{g}", self.keyspace, self.table),
            Some(f) => format!("{t}{v}-{g}-{f}"),
        }
    }

    /// `<ver>_txn_<op>_<time-uuid-like>.log`.
    fn new_log_name(&mut self, op: &str) -> String {
        self.counter += 1;
        let n = self.counter;
        format!(
            "{}_txn_{op}_{:08x}-{:04x}-11ef-{:04x}-{:012x}.log",
            self.format.version(),
            0x3a2b_1c00u64.wrapping_add(n.wrapping_mul(7919)) & 0xffff_ffff,
            (fnv(&self.table_id) ^ n) & 0xffff,
            0x8000 | (n & 0x3fff),
            fnv(&self.table_id) & 0xffff_ffff_ffff,
        )
    }

    fn live_inputs(&self, inputs: &[Gen]) -> Vec<String> {
        inputs
            .iter()
            .map(|g| {
                let base = self
                    .gens
                    .get(g)
                    .unwrap_or_else(|| panic!("unknown generation {g}"));
                assert_eq!(
                    self.state("", base),
                    Expected::Complete,
                    "{base} is not a complete live SSTable"
                );
                base.clone()
            })
            .collect()
    }

    /// The bytes of each component of the SSTable `base`.
    fn component_bytes(&self, base: &str) -> BTreeMap<String, Vec<u8>> {
        let mut out = self.fixture.bytes.clone();
        if let Content::Distinct(salt) = &self.content {
            let data = out.get_mut("Data.db").expect("fixture has Data.db");
            data.extend_from_slice(
                format!(
                    "\n#tablesafe-lifecycle {}.{} {base} {salt}\n",
                    self.keyspace, self.table
                )
                .as_bytes(),
            );
            let digest = digest_text(self.format, data, &format!("{base}-Data.db"));
            out.insert(self.format.digest_component().to_string(), digest);
        }
        out
    }

    fn push_append(&self, steps: &mut Vec<Step>, log: &str, rec: Rec) {
        let what = match &rec {
            Rec::Add(b, _) => format!("ADD {b}"),
            Rec::Remove(b) => format!("REMOVE {b}"),
            Rec::Commit => "COMMIT".into(),
            Rec::Abort => "ABORT".into(),
        };
        let parts: &[(Part, &str)] = if self.torn_appends {
            &[
                (Part::Head, " (first half of the line)"),
                (Part::Tail, " (rest of the line)"),
            ]
        } else {
            &[(Part::Whole, "")]
        };
        for (part, note) in parts {
            steps.push(Step {
                desc: format!("append {what} to {log}{note}"),
                action: Action::LogAppend {
                    log: log.into(),
                    rec: rec.clone(),
                    part: *part,
                },
            });
        }
    }

    /// Writes every component of `content_base` under the name `written_base`, in flush
    /// order, Data.db in two halves around the index, TOC.txt last.
    fn write_steps(&self, content_base: &str, written_base: &str, temp: bool) -> Vec<Step> {
        let bytes = self.component_bytes(content_base);
        let mut comps = self.fixture.toc.clone();
        comps.sort_by_key(|c| write_rank(c));
        let write = |c: &str, part: Part, b: &[u8]| {
            let name = format!("{written_base}-{c}");
            Step {
                desc: match part {
                    Part::Whole => format!("write {name}"),
                    Part::Head => format!("write first half of {name}"),
                    Part::Tail => format!("write rest of {name}"),
                },
                action: Action::Write {
                    dir: String::new(),
                    name,
                    role: Role::Component {
                        base: written_base.into(),
                        component: c.into(),
                        temp,
                    },
                    bytes: b.to_vec(),
                    part,
                },
            }
        };
        let data = &bytes["Data.db"];
        let half = data.len() / 2;
        let mut steps = vec![write("Data.db", Part::Head, &data[..half])];
        for c in comps.iter().filter(|c| write_rank(c) == 1) {
            steps.push(write(c, Part::Whole, &bytes[c]));
        }
        steps.push(write("Data.db", Part::Tail, &data[half..]));
        for c in comps.iter().filter(|c| write_rank(c) > 1) {
            steps.push(write(c, Part::Whole, &bytes[c]));
        }
        steps
    }

    /// 2.x: renames `tmp` into `base`: all but Data.db and Summary.db, Data.db, Summary.db.
    fn rename_steps(&self, tmp: &str, base: &str) -> Vec<Step> {
        let mut comps: Vec<&String> = self
            .fixture
            .toc
            .iter()
            .filter(|c| *c != "Data.db" && *c != "Summary.db")
            .collect();
        let data = "Data.db".to_string();
        let summary = "Summary.db".to_string();
        comps.push(&data);
        if self.fixture.toc.contains(&summary) {
            comps.push(&summary);
        }
        comps
            .into_iter()
            .map(|c| {
                let (from, to) = (format!("{tmp}-{c}"), format!("{base}-{c}"));
                Step {
                    desc: format!("rename {from} to {to}"),
                    action: Action::Rename {
                        from,
                        to,
                        role: Role::Component {
                            base: base.into(),
                            component: c.clone(),
                            temp: false,
                        },
                    },
                }
            })
            .collect()
    }

    /// Component names of `base` present in `dir` now, in TOC order.
    fn present(&self, dir: &str, base: &str) -> Vec<String> {
        self.fixture
            .toc
            .iter()
            .filter(|c| {
                self.files
                    .contains_key(&(dir.to_string(), format!("{base}-{c}")))
            })
            .cloned()
            .collect()
    }

    /// Deletes every file of `base` in `dir`: Data.db first, Summary.db last.
    fn delete_steps(&self, dir: &str, base: &str) -> Vec<Step> {
        let mut comps = self.present(dir, base);
        comps.sort_by_key(|c| match c.as_str() {
            "Data.db" => 0,
            "Summary.db" => 2,
            _ => 1,
        });
        comps
            .into_iter()
            .map(|c| {
                let name = format!("{base}-{c}");
                Step {
                    desc: format!("delete {}", rel(dir, &name).display()),
                    action: Action::Delete {
                        dir: dir.into(),
                        name,
                    },
                }
            })
            .collect()
    }

    /// Hard links of every present component of live `base` into `dir`, in link order.
    fn link_steps(&self, base: &str, dir: &str) -> Vec<Step> {
        let mut comps = self.present("", base);
        match self.link_order {
            LinkOrder::TocFileOrder => {}
            LinkOrder::TocFirst => comps.sort_by_key(|c| c != "TOC.txt"),
            LinkOrder::TocLast => comps.sort_by_key(|c| c == "TOC.txt"),
            LinkOrder::Shuffled => {
                let mut x = fnv(&format!("{dir}/{base}")) | 1;
                for i in (1..comps.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    comps.swap(i, (x % (i as u64 + 1)) as usize);
                }
            }
        }
        comps
            .into_iter()
            .map(|c| {
                let name = format!("{base}-{c}");
                Step {
                    desc: format!("hard link {name} into {dir}/"),
                    action: Action::Link {
                        name,
                        dir: dir.into(),
                    },
                }
            })
            .collect()
    }

    fn record_line(&self, rec: &Rec) -> io::Result<String> {
        let path = |b: &str| format!("{}/{b}", self.root.display());
        Ok(match rec {
            Rec::Add(b, n) => TxnRecord::new(RecordKind::Add, &path(b), 0, *n).to_line(),
            Rec::Remove(b) => {
                let mut newest = 0i64;
                let mut count = 0u32;
                for c in self.present("", b) {
                    let meta = fs::metadata(self.root.join(format!("{b}-{c}")))?;
                    let ms = meta
                        .modified()?
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    newest = newest.max(ms);
                    count += 1;
                }
                TxnRecord::new(RecordKind::Remove, &path(b), newest, count).to_line()
            }
            Rec::Commit => TxnRecord::new(RecordKind::Commit, "", 0, 0).to_line(),
            Rec::Abort => TxnRecord::new(RecordKind::Abort, "", 0, 0).to_line(),
        })
    }

    fn apply(&mut self, action: &Action) -> io::Result<()> {
        match action {
            Action::LogAppend { log, rec, part } => {
                let (line, rec) = match part {
                    Part::Whole | Part::Head => (self.record_line(rec)?, rec.clone()),
                    Part::Tail => self
                        .logs
                        .get_mut(log)
                        .and_then(|l| l.torn.take())
                        .expect("tail of a torn txn log line without its head"),
                };
                let half = line.len() / 2;
                let text = match part {
                    Part::Whole => format!("{line}\n"),
                    Part::Head => line[..half].to_string(),
                    Part::Tail => format!("{}\n", &line[half..]),
                };
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.root.join(log))?;
                f.write_all(text.as_bytes())?;
                let state = self.logs.entry(log.clone()).or_insert_with(|| LogState {
                    adds: Vec::new(),
                    removes: Vec::new(),
                    outcome: Outcome::Open,
                    torn: None,
                });
                if *part == Part::Head {
                    state.torn = Some((line, rec));
                } else {
                    match rec {
                        Rec::Add(b, _) => state.adds.push(b),
                        Rec::Remove(b) => state.removes.push(b),
                        Rec::Commit => state.outcome = Outcome::Committed,
                        Rec::Abort => state.outcome = Outcome::Aborted,
                    }
                }
                self.files.insert(
                    (String::new(), log.clone()),
                    FileState {
                        role: Role::TxnLog,
                        complete: *part != Part::Head,
                    },
                );
            }
            Action::DeleteLog { log } => {
                fs::remove_file(self.root.join(log))?;
                self.logs.remove(log);
                self.files.remove(&(String::new(), log.clone()));
            }
            Action::Write {
                dir,
                name,
                role,
                bytes,
                part,
            } => {
                let d = self.root.join(dir);
                fs::create_dir_all(&d)?;
                self.dirs.insert(dir.clone());
                let mut f = match part {
                    Part::Whole | Part::Head => fs::File::create(d.join(name))?,
                    Part::Tail => OpenOptions::new().append(true).open(d.join(name))?,
                };
                f.write_all(bytes)?;
                if let Role::Component { base, .. } = role {
                    self.known.insert((dir.clone(), base.clone()));
                }
                self.files.insert(
                    (dir.clone(), name.clone()),
                    FileState {
                        role: role.clone(),
                        complete: *part != Part::Head,
                    },
                );
            }
            Action::Rename { from, to, role } => {
                fs::rename(self.root.join(from), self.root.join(to))?;
                let old = self
                    .files
                    .remove(&(String::new(), from.clone()))
                    .expect("renamed file is in the model");
                if let Role::Component { base, .. } = role {
                    self.known.insert((String::new(), base.clone()));
                }
                self.files.insert(
                    (String::new(), to.clone()),
                    FileState {
                        role: role.clone(),
                        complete: old.complete,
                    },
                );
            }
            Action::Link { name, dir } => {
                let d = self.root.join(dir);
                fs::create_dir_all(&d)?;
                self.dirs.insert(dir.clone());
                fs::hard_link(self.root.join(name), d.join(name))?;
                let src = self.files[&(String::new(), name.clone())].clone();
                if let Role::Component { base, .. } = &src.role {
                    self.known.insert((dir.clone(), base.clone()));
                }
                self.files.insert((dir.clone(), name.clone()), src);
            }
            Action::Delete { dir, name } => {
                fs::remove_file(self.root.join(dir).join(name))?;
                self.files.remove(&(dir.clone(), name.clone()));
            }
            Action::MkDir { dir } => {
                fs::create_dir_all(self.root.join(dir))?;
                self.dirs.insert(dir.clone());
            }
        }
        Ok(())
    }

    /// (component, complete, temp) of every file of `base` in `dir`.
    fn group(&self, dir: &str, base: &str) -> Vec<(&str, bool, bool)> {
        self.files
            .iter()
            .filter(|((d, _), _)| d == dir)
            .filter_map(|(_, f)| match &f.role {
                Role::Component {
                    base: b,
                    component,
                    temp,
                } if b == base => Some((component.as_str(), f.complete, *temp)),
                _ => None,
            })
            .collect()
    }

    /// The rules of the module header.
    fn state(&self, dir: &str, base: &str) -> Expected {
        let group = self.group(dir, base);
        if group.is_empty() || group.iter().any(|(_, _, temp)| *temp) {
            return Expected::Absent;
        }
        if dir.is_empty() {
            for log in self.logs.values() {
                if log.adds.iter().any(|b| b == base) {
                    match log.outcome {
                        Outcome::Open => return Expected::InProgress,
                        Outcome::Aborted => return Expected::Aborted,
                        Outcome::Committed => {}
                    }
                }
                if log.outcome == Outcome::Committed && log.removes.iter().any(|b| b == base) {
                    return Expected::Obsolete;
                }
            }
        }
        let present: BTreeSet<&str> = group.iter().map(|(c, _, _)| *c).collect();
        if self
            .fixture
            .toc
            .iter()
            .all(|c| present.contains(c.as_str()))
        {
            Expected::Complete
        } else if present.contains("TOC.txt") {
            Expected::Incomplete
        } else {
            Expected::InProgress
        }
    }

    fn digest_verifiable(&self, dir: &str, base: &str) -> bool {
        let group = self.group(dir, base);
        let whole = |c: &str| group.iter().any(|(g, done, _)| *g == c && *done);
        whole("Data.db") && whole(self.format.digest_component())
    }

    fn expectation(&self, step: String) -> Expectation {
        let mut dirs = BTreeMap::new();
        for d in &self.dirs {
            let mut de = DirExpectation::default();
            for ((dir, name), f) in &self.files {
                if dir != d {
                    continue;
                }
                match f.role {
                    Role::TxnLog => {
                        de.txn_logs.insert(name.clone());
                    }
                    Role::Manifest | Role::Schema => {
                        de.other_files.insert(name.clone());
                    }
                    Role::Component { .. } | Role::RewriteTmp => {}
                }
            }
            for (dir, base) in &self.known {
                if dir == d {
                    de.sstables.insert(
                        base.clone(),
                        ExpectedSSTable {
                            state: self.state(d, base),
                            digest_verifiable: self.digest_verifiable(d, base),
                        },
                    );
                }
            }
            dirs.insert(d.clone(), de);
        }
        Expectation {
            step,
            table_dir: self.root.clone(),
            dirs,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparing with the library
// ---------------------------------------------------------------------------------------

impl Expectation {
    /// The expected state of `base` in `dir` (`""`, `backups`, `snapshots/<tag>`).
    pub fn state(&self, dir: &str, base: &str) -> Expected {
        self.dirs
            .get(dir)
            .and_then(|d| d.sstables.get(base))
            .map_or(Expected::Absent, |s| s.state)
    }

    /// Runs `scan_dir` on every directory and `verify_sstable` on every SSTable it
    /// reports, and compares them with the model: each base name's completeness (Absent:
    /// not reported), no unexpected SSTables, the txn logs and snapshot files, and digest
    /// verification Ok exactly for the SSTables whose Data.db and Digest are fully written
    /// (which includes every complete one). Errors carry the step, every mismatch and a
    /// listing of the table directory.
    pub fn check(&self) -> Result<CheckReport, String> {
        let mut report = CheckReport::default();
        let mut problems = Vec::new();
        for (dir, de) in &self.dirs {
            let label = if dir.is_empty() { "<table dir>" } else { dir };
            let path = self.table_dir.join(dir);
            let scanned = match scan_dir(&path) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{label}: scan_dir failed: {e}"));
                    continue;
                }
            };
            let actual: BTreeMap<String, &SSTable> = scanned
                .sstables
                .iter()
                .map(|s| (s.descriptor.base_name(), s))
                .collect();
            for (base, exp) in &de.sstables {
                match (exp.state, actual.get(base)) {
                    (Expected::Absent, None) => {}
                    (Expected::Absent, Some(s)) => problems.push(format!(
                        "{label}: {base}: expected absent, library reports {:?}",
                        s.completeness
                    )),
                    (e, None) => problems.push(format!(
                        "{label}: {base}: expected {e:?}, library does not report it"
                    )),
                    (e, Some(s)) if !e.matches(&s.completeness) => problems.push(format!(
                        "{label}: {base}: expected {e:?}, library reports {:?}",
                        s.completeness
                    )),
                    _ => report.sstables_compared += 1,
                }
            }
            for (base, s) in &actual {
                if !de.sstables.contains_key(base) {
                    problems.push(format!(
                        "{label}: unexpected SSTable {base}: {:?}",
                        s.completeness
                    ));
                }
                let status = verify_sstable(&path, s);
                let want_ok = de.sstables.get(base).is_some_and(|e| e.digest_verifiable);
                let is_complete = de
                    .sstables
                    .get(base)
                    .is_some_and(|e| e.state == Expected::Complete);
                if status.is_ok() {
                    report.digests_ok += 1;
                } else {
                    report.digests_not_ok += 1;
                }
                if status.is_ok() != want_ok || (is_complete && !status.is_ok()) {
                    problems.push(format!(
                        "{label}: {base}: digest verification {} but the model expects it {} \
                         (state {:?}): {status:?}",
                        if status.is_ok() { "passes" } else { "fails" },
                        if want_ok { "to pass" } else { "not to pass" },
                        s.completeness
                    ));
                }
            }
            let logs: BTreeSet<String> = scanned
                .txn_logs
                .iter()
                .map(|l| l.file_name.clone())
                .collect();
            if logs != de.txn_logs {
                problems.push(format!(
                    "{label}: txn logs: expected {:?}, library reports {logs:?}",
                    de.txn_logs
                ));
            }
            let others: BTreeSet<String> = scanned
                .other_files
                .iter()
                .map(|o| o.file_name.clone())
                .collect();
            if others != de.other_files {
                problems.push(format!(
                    "{label}: other files: expected {:?}, library reports {others:?}",
                    de.other_files
                ));
            }
        }
        if problems.is_empty() {
            Ok(report)
        } else {
            Err(format!(
                "after {}\n  {}\n{}",
                self.step,
                problems.join("\n  "),
                listing(&self.table_dir)
            ))
        }
    }
}

/// A recursive listing of `dir` (path, size, hard-link count) with the content of every
/// txn log, for failure messages.
pub fn listing(dir: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut String) {
        let mut entries: Vec<_> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) => {
                out.push_str(&format!("  <cannot read {}: {e}>\n", dir.display()));
                return;
            }
        };
        entries.sort();
        for p in entries {
            let shown = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                out.push_str(&format!("  {shown}/\n"));
                walk(root, &p, out);
                continue;
            }
            out.push_str(&format!(
                "  {shown:<72} {:>8} B  links={}\n",
                meta.len(),
                meta.nlink()
            ));
            if shown.ends_with(".log") {
                for line in fs::read_to_string(&p).unwrap_or_default().lines() {
                    out.push_str(&format!("      | {line}\n"));
                }
            }
        }
    }
    let mut out = format!("listing of {}:\n", dir.display());
    walk(dir, dir, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------

fn fnv(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `8-4-4-4-12` form of 32 hex digits.
fn dashed_uuid(hex32: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex32[..8],
        &hex32[8..12],
        &hex32[12..16],
        &hex32[16..20],
        &hex32[20..]
    )
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the form of 4.1+ manifest timestamps).
fn iso8601_now() -> String {
    let ms = now_ms();
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}
