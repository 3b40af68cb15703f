//! Cassandra's transaction logs (3.0+): `<ver>_txn_<operation>_<uuid>.log`.
//!
//! Every flush, compaction, stream or other sstable-changing operation writes one of these
//! in the table directory before it creates any file. Each line is a record:
//!
//! ```text
//! ADD:[/var/lib/cassandra/data/ks/tbl-<id>/nb-7-big,0,8][2046999945]
//! REMOVE:[/var/lib/cassandra/data/ks/tbl-<id>/nb-5-big,1700000000000,8][1288780600]
//! COMMIT:[,0,0][2613697770]
//! ```
//!
//! ADD names an SSTable being written (kept on COMMIT, deleted on ABORT); REMOVE names one
//! being replaced (deleted after COMMIT, kept on ABORT). The trailing number is a CRC32 of
//! the record, so a line torn by a crash is recognisable. Cassandra keeps the update time
//! only for REMOVE (ADD, COMMIT and ABORT write 0); the parser accepts any number. The
//! log is deleted once the operation has fully finished. Cassandra 5.0 may prefix the name with the format
//! (`bti-da_txn_…`).

use std::fmt;

use serde::Serialize;

use super::name::{Format, Version};

/// A parsed transaction log file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TxnLogName {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    pub version: Version,
    /// Operation type as Cassandra names it: `flush`, `compaction`, `stream`, …
    pub operation: String,
    /// The transaction's time UUID.
    pub id: String,
}

impl TxnLogName {
    pub fn parse(name: &str) -> Option<TxnLogName> {
        let stem = name.strip_suffix(".log")?;
        let (head, rest) = stem.split_once("_txn_")?;
        let (operation, id) = rest.rsplit_once('_')?;
        let (format, version) = match head.split_once('-') {
            Some((f, v)) => (Some(Format::parse(f)?), v),
            None => (None, head),
        };
        let is_op = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let is_uuid = |s: &str| {
            s.len() == 36
                && s.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
                })
        };
        if !is_op(operation) || !is_uuid(id) {
            return None;
        }
        Some(TxnLogName {
            format,
            version: Version::parse(version)?,
            operation: operation.to_string(),
            id: id.to_string(),
        })
    }
}

impl fmt::Display for TxnLogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(format) = self.format {
            write!(f, "{}-", format.as_str())?;
        }
        write!(f, "{}_txn_{}_{}.log", self.version, self.operation, self.id)
    }
}

/// The kind of a transaction log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordKind {
    Add,
    Remove,
    Commit,
    Abort,
}

impl RecordKind {
    fn parse(s: &str) -> Option<RecordKind> {
        match s.to_ascii_uppercase().as_str() {
            "ADD" => Some(RecordKind::Add),
            "REMOVE" => Some(RecordKind::Remove),
            "COMMIT" => Some(RecordKind::Commit),
            "ABORT" => Some(RecordKind::Abort),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::Add => "ADD",
            RecordKind::Remove => "REMOVE",
            RecordKind::Commit => "COMMIT",
            RecordKind::Abort => "ABORT",
        }
    }
}

/// One record of a transaction log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnRecord {
    pub kind: RecordKind,
    /// For ADD/REMOVE: the SSTable's absolute path up to the component, e.g.
    /// `/data/ks/tbl-<id>/nb-7-big`. Empty for COMMIT/ABORT.
    pub path: String,
    pub update_time: i64,
    pub num_files: u32,
}

impl TxnRecord {
    /// Builds a record (what Cassandra writes; used by tests to write realistic logs).
    pub fn new(kind: RecordKind, path: &str, update_time: i64, num_files: u32) -> TxnRecord {
        TxnRecord {
            kind,
            path: path.to_string(),
            update_time,
            num_files,
        }
    }

    /// The base name of the SSTable this record names (`nb-7-big`), if any.
    pub fn sstable_base_name(&self) -> Option<&str> {
        match self.kind {
            RecordKind::Add | RecordKind::Remove => self.path.rsplit('/').next(),
            RecordKind::Commit | RecordKind::Abort => None,
        }
    }

    /// Cassandra's record checksum: CRC32 over path, kind, then the update time's low
    /// and high 32-bit halves and the file count, each big-endian.
    pub fn checksum(&self) -> u32 {
        let mut crc = crc32fast::Hasher::new();
        crc.update(self.path.as_bytes());
        crc.update(self.kind.as_str().as_bytes());
        crc.update(&(self.update_time as i32).to_be_bytes());
        crc.update(&((self.update_time as u64 >> 32) as i32).to_be_bytes());
        crc.update(&(self.num_files as i32).to_be_bytes());
        crc.finalize()
    }

    /// The line as Cassandra writes it (without the newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}:[{},{},{}][{}]",
            self.kind.as_str(),
            self.path,
            self.update_time,
            self.num_files,
            self.checksum()
        )
    }

    /// Parses one line; `Err` says why it is not a valid record.
    pub fn parse_line(line: &str) -> Result<TxnRecord, String> {
        let (kind, rest) = line
            .split_once(":[")
            .ok_or_else(|| "no `KIND:[` prefix".to_string())?;
        let kind =
            RecordKind::parse(kind).ok_or_else(|| format!("unknown record kind {kind:?}"))?;
        let (fields, checksum) = rest
            .rsplit_once("][")
            .ok_or_else(|| "no `][checksum]` part".to_string())?;
        let checksum = checksum
            .strip_suffix(']')
            .and_then(|c| c.parse::<u64>().ok())
            .ok_or_else(|| "checksum is not a number in brackets".to_string())?;
        let mut f = fields.rsplitn(3, ',');
        let num_files = f.next().unwrap_or_default();
        let update_time = f.next().unwrap_or_default();
        let path = f.next().unwrap_or_default();
        let record = TxnRecord {
            kind,
            path: path.to_string(),
            update_time: update_time
                .parse()
                .map_err(|_| format!("update time {update_time:?} is not a number"))?,
            num_files: num_files
                .parse()
                .map_err(|_| format!("file count {num_files:?} is not a number"))?,
        };
        if u64::from(record.checksum()) != checksum {
            return Err(format!(
                "checksum {checksum} does not match the record (expected {})",
                record.checksum()
            ));
        }
        Ok(record)
    }
}

/// How a transaction ended, as far as its log tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnOutcome {
    /// No COMMIT or ABORT yet: the operation is running (or the node crashed in it).
    Open,
    Committed,
    Aborted,
}

/// A parsed transaction log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnLog {
    pub name: TxnLogName,
    pub records: Vec<TxnRecord>,
    /// Lines that are not valid records (1-based line number, reason). A torn last line
    /// is normal while Cassandra is writing; elsewhere it means corruption.
    pub bad_lines: Vec<(usize, String)>,
}

impl TxnLog {
    /// Parses the text of a log. Never fails: bad lines are kept with a reason.
    pub fn parse(name: TxnLogName, text: &str) -> TxnLog {
        let mut records = Vec::new();
        let mut bad_lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            match TxnRecord::parse_line(line) {
                Ok(r) => records.push(r),
                Err(why) => bad_lines.push((i + 1, why)),
            }
        }
        TxnLog {
            name,
            records,
            bad_lines,
        }
    }

    /// Committed or aborted only when a final record exists and no line is damaged:
    /// with a damaged line we cannot trust what the log says, so it stays open.
    pub fn outcome(&self) -> TxnOutcome {
        if !self.bad_lines.is_empty() {
            return TxnOutcome::Open;
        }
        for r in &self.records {
            match r.kind {
                RecordKind::Commit => return TxnOutcome::Committed,
                RecordKind::Abort => return TxnOutcome::Aborted,
                RecordKind::Add | RecordKind::Remove => {}
            }
        }
        TxnOutcome::Open
    }

    /// Records of `kind` naming the SSTable with this base name.
    pub fn names(&self, kind: RecordKind, base_name: &str) -> bool {
        self.records
            .iter()
            .any(|r| r.kind == kind && r.sstable_base_name() == Some(base_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_roundtrips_with_and_without_format_prefix() {
        for n in [
            "nb_txn_flush_3a2b1c00-1d2e-11ef-9a3b-0123456789ab.log",
            "bti-da_txn_compaction_3a2b1c00-1d2e-11ef-9a3b-0123456789ab.log",
            "ma_txn_index_build_3a2b1c00-1d2e-11ef-9a3b-0123456789ab.log",
        ] {
            let parsed = TxnLogName::parse(n).unwrap_or_else(|| panic!("{n}"));
            assert_eq!(parsed.to_string(), n);
        }
        assert_eq!(
            TxnLogName::parse("ma_txn_index_build_3a2b1c00-1d2e-11ef-9a3b-0123456789ab.log")
                .unwrap()
                .operation,
            "index_build"
        );
        assert!(TxnLogName::parse("nb_txn_flush_notauuid.log").is_none());
        assert!(TxnLogName::parse("CommitLog-7-1.log").is_none());
    }

    #[test]
    fn records_roundtrip_and_detect_tearing() {
        let add = TxnRecord::new(RecordKind::Add, "/d/ks/t-1/nb-7-big", 0, 8);
        let line = add.to_line();
        assert_eq!(TxnRecord::parse_line(&line).unwrap(), add);
        assert_eq!(add.sstable_base_name(), Some("nb-7-big"));
        let torn = &line[..line.len() - 3];
        assert!(TxnRecord::parse_line(torn).is_err());
        let mut tampered = line.replace("nb-7", "nb-8");
        assert!(TxnRecord::parse_line(&tampered).is_err());
        tampered = line.replace(",8]", ",9]");
        assert!(TxnRecord::parse_line(&tampered).is_err());
    }

    #[test]
    fn outcome_follows_final_record_unless_damaged() {
        let name =
            TxnLogName::parse("nb_txn_flush_3a2b1c00-1d2e-11ef-9a3b-0123456789ab.log").unwrap();
        let add = TxnRecord::new(RecordKind::Add, "/d/nb-7-big", 0, 8).to_line();
        let commit = TxnRecord::new(RecordKind::Commit, "", 0, 0).to_line();
        let abort = TxnRecord::new(RecordKind::Abort, "", 0, 0).to_line();
        let open = TxnLog::parse(name.clone(), &format!("{add}\n"));
        assert_eq!(open.outcome(), TxnOutcome::Open);
        assert!(open.names(RecordKind::Add, "nb-7-big"));
        let done = TxnLog::parse(name.clone(), &format!("{add}\n{commit}\n"));
        assert_eq!(done.outcome(), TxnOutcome::Committed);
        let aborted = TxnLog::parse(name.clone(), &format!("{add}\n{abort}\n"));
        assert_eq!(aborted.outcome(), TxnOutcome::Aborted);
        let torn = TxnLog::parse(name, &format!("{add}\n{}", &commit[..5]));
        assert_eq!(torn.outcome(), TxnOutcome::Open);
        assert_eq!(torn.bad_lines.len(), 1);
    }
}
