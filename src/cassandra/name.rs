//! SSTable file names, for every on-disk format from Cassandra 2.0 to 5.0.
//!
//! Three naming schemes exist:
//!
//! | releases | example                                   | shape                                            |
//! |----------|-------------------------------------------|--------------------------------------------------|
//! | 2.0, 2.1 | `ks-tbl-ka-5-Data.db`, `ks-tbl-tmp-ka-5-…` | `<ks>-<table>-[tmp-\|tmplink-]<ver>-<gen>-<Comp>` |
//! | 2.2      | `la-5-big-Data.db`, `tmplink-la-5-big-…`   | `[tmp-\|tmplink-]<ver>-<gen>-big-<Comp>`          |
//! | 3.0–5.0  | `nb-5-big-Data.db`, `da-3fw2_…-bti-Rows.db`| `<ver>-<gen>-<big\|bti>-<Comp>`                   |
//!
//! `<gen>` is a decimal sequence number or, from 4.1 on (`uuid_sstable_identifiers_enabled`),
//! a 28-character base-36 time-UUID id such as `3fw2_0tu3_1l0kg2gg8ku9tp6qnx`.
//!
//! [`SSTableName::parse`] and its `Display` are exact inverses for every name Cassandra
//! writes; anything else is rejected with a reason rather than guessed at.

use std::fmt;

use serde::Serialize;

/// The two-letter SSTable format version (`jb`, `ka`, `la`, `mc`, `nb`, `oa`, `da`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version([u8; 2]);

impl Version {
    /// Parses exactly two ASCII lowercase letters.
    pub fn parse(s: &str) -> Option<Version> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_lowercase() && b.is_ascii_lowercase() => Some(Version([*a, *b])),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII lowercase letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Versions before `la` (2.2) put keyspace and table in every file name.
    pub fn uses_long_names(&self) -> bool {
        self.0[0] < b'l'
    }

    /// Which Cassandra release line writes this BIG-format version.
    pub fn release(&self, format: Option<&Format>) -> &'static str {
        if let Some(Format::Bti) = format {
            return "5.0+ BTI";
        }
        match &self.0 {
            [b'j', _] => "2.0",
            [b'k', _] => "2.1",
            [b'l', _] => "2.2",
            [b'm', _] => "3.x",
            [b'n', _] => "4.x",
            [b'o', _] => "5.x",
            _ if self.0[0] < b'j' => "1.x or older",
            _ => "newer than 5.x",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The SSTable generation: a sequence number, or a time-UUID based id (4.1+).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Generation {
    Sequence(u64),
    /// The 28-character form `dddd_ssss_nnnnnrrrrrrrrrrrrr` (base 36).
    Uuid(String),
}

/// Length of the textual UUID generation id.
const UUID_ID_LEN: usize = 28;

impl Generation {
    /// Parses a generation the way Cassandra writes it: decimal without leading zeros,
    /// or the 28-character UUID id.
    pub fn parse(s: &str) -> Option<Generation> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if s.len() > 1 && s.starts_with('0') {
                return None;
            }
            return s.parse().ok().map(Generation::Sequence);
        }
        let b = s.as_bytes();
        let base36 = |c: &u8| c.is_ascii_digit() || c.is_ascii_lowercase();
        let is_uuid = b.len() == UUID_ID_LEN
            && b[4] == b'_'
            && b[9] == b'_'
            && b[..4].iter().all(base36)
            && b[5..9].iter().all(base36)
            && b[10..].iter().all(base36);
        is_uuid.then(|| Generation::Uuid(s.to_string()))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Generation::Sequence(n) => write!(f, "{n}"),
            Generation::Uuid(s) => f.write_str(s),
        }
    }
}

impl Serialize for Generation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The SSTable format: BIG (the classic one) or BTI (trie indexes, 5.0+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Big,
    Bti,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "big" => Some(Format::Big),
            "bti" => Some(Format::Bti),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Big => "big",
            Format::Bti => "bti",
        }
    }
}

/// Which checksum a Digest component holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestExt {
    /// `Digest.crc32`: decimal CRC32 of Data.db (3.0+).
    Crc32,
    /// `Digest.adler32`: decimal Adler-32 of Data.db (2.2).
    Adler32,
    /// `Digest.sha1`: SHA-1 hex in 2.0; decimal Adler-32 in 2.1 despite the name.
    Sha1,
}

/// One component of an SSTable: the part of the file name after the last separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Data,
    PrimaryIndex,
    Summary,
    Filter,
    Statistics,
    CompressionInfo,
    Digest(DigestExt),
    Crc,
    Toc,
    /// BTI partition index (5.0).
    Partitions,
    /// BTI row index (5.0).
    Rows,
    /// SASI index component `SI_<index>.db`.
    Sasi(String),
    /// Storage-attached index component `SAI+…` (5.0).
    Sai(String),
    /// Anything else Cassandra (or a plugin) may add; kept verbatim.
    Custom(String),
}

impl Component {
    /// Parses a component name as it appears in file names and TOC.txt.
    pub fn parse(s: &str) -> Option<Component> {
        if s.is_empty() || s.contains('/') || s.contains('\0') {
            return None;
        }
        Some(match s {
            "Data.db" => Component::Data,
            "Index.db" => Component::PrimaryIndex,
            "Summary.db" => Component::Summary,
            "Filter.db" => Component::Filter,
            "Statistics.db" => Component::Statistics,
            "CompressionInfo.db" => Component::CompressionInfo,
            "Digest.crc32" => Component::Digest(DigestExt::Crc32),
            "Digest.adler32" => Component::Digest(DigestExt::Adler32),
            "Digest.sha1" => Component::Digest(DigestExt::Sha1),
            "CRC.db" => Component::Crc,
            "TOC.txt" => Component::Toc,
            "Partitions.db" => Component::Partitions,
            "Rows.db" => Component::Rows,
            _ if s.starts_with("SI_") => Component::Sasi(s.to_string()),
            _ if s.starts_with("SAI+") || s.starts_with("SAI_") => Component::Sai(s.to_string()),
            _ => Component::Custom(s.to_string()),
        })
    }

    /// The component's name in file names and TOC.txt.
    pub fn as_str(&self) -> &str {
        match self {
            Component::Data => "Data.db",
            Component::PrimaryIndex => "Index.db",
            Component::Summary => "Summary.db",
            Component::Filter => "Filter.db",
            Component::Statistics => "Statistics.db",
            Component::CompressionInfo => "CompressionInfo.db",
            Component::Digest(DigestExt::Crc32) => "Digest.crc32",
            Component::Digest(DigestExt::Adler32) => "Digest.adler32",
            Component::Digest(DigestExt::Sha1) => "Digest.sha1",
            Component::Crc => "CRC.db",
            Component::Toc => "TOC.txt",
            Component::Partitions => "Partitions.db",
            Component::Rows => "Rows.db",
            Component::Sasi(s) | Component::Sai(s) | Component::Custom(s) => s,
        }
    }

    /// Cassandra rewrites these in place (index summary redistribution, repair status,
    /// level changes); every other component is immutable once complete.
    pub fn is_mutable(&self) -> bool {
        matches!(
            self,
            Component::Statistics | Component::Summary | Component::Toc
        )
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Component {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The 2.x temporary prefix: files written under it are renamed into place when done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TempMarker {
    /// `tmp-`: still being written.
    Tmp,
    /// `tmplink-`: an early-opened, partially written compaction result (2.1, 2.2).
    Tmplink,
}

impl TempMarker {
    fn parse(s: &str) -> Option<TempMarker> {
        match s {
            "tmp" => Some(TempMarker::Tmp),
            "tmplink" => Some(TempMarker::Tmplink),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TempMarker::Tmp => "tmp",
            TempMarker::Tmplink => "tmplink",
        }
    }
}

/// Keyspace and table carried in pre-2.2 file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LongNamePrefix {
    pub keyspace: String,
    pub table: String,
}

/// Everything in a file name except the component: identifies one SSTable in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Descriptor {
    /// Present for 2.0/2.1 names (`<ks>-<table>-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_prefix: Option<LongNamePrefix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp: Option<TempMarker>,
    pub version: Version,
    pub generation: Generation,
    /// Absent for 2.0/2.1 names, which predate pluggable formats (they are BIG).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

impl Descriptor {
    /// The file name prefix every component shares, e.g. `nb-5-big`; the same string
    /// Cassandra writes (after the directory) in transaction log records.
    pub fn base_name(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.long_prefix {
            s.push_str(&p.keyspace);
            s.push('-');
            s.push_str(&p.table);
            s.push('-');
        }
        if let Some(t) = self.temp {
            s.push_str(t.as_str());
            s.push('-');
        }
        s.push_str(self.version.as_str());
        s.push('-');
        s.push_str(&self.generation.to_string());
        if let Some(f) = self.format {
            s.push('-');
            s.push_str(f.as_str());
        }
        s
    }

    /// The file name of one of this SSTable's components.
    pub fn file_name(&self, component: &Component) -> String {
        format!("{}-{}", self.base_name(), component)
    }

    /// The same SSTable without a 2.x temporary prefix.
    pub fn without_temp(&self) -> Descriptor {
        Descriptor {
            temp: None,
            ..self.clone()
        }
    }
}

/// A parsed SSTable component file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SSTableName {
    pub descriptor: Descriptor,
    pub component: Component,
}

/// Why a file name is not an SSTable component name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnSSTable(pub String);

impl fmt::Display for NotAnSSTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keyspace names are `\w+`; table names too, plus `.` for 2.x secondary index tables.
fn is_name(s: &str, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (allow_dot && b == b'.'))
}

impl SSTableName {
    /// Parses a file name (no directory) into an SSTable component name.
    pub fn parse(name: &str) -> Result<SSTableName, NotAnSSTable> {
        let not = |why: &str| Err(NotAnSSTable(why.to_string()));
        if let Some(parsed) = Self::parse_short(name) {
            return Ok(parsed);
        }
        if let Some(parsed) = Self::parse_long(name) {
            return Ok(parsed);
        }
        if name.split('-').count() < 4 {
            return not("not a file Cassandra writes in a table directory");
        }
        not(
            "looks like an SSTable name but has no valid version, generation, format and component of any Cassandra 2.0–5.0 naming scheme",
        )
    }

    /// `[tmp-|tmplink-]<ver>-<gen>-<big|bti>-<Component>` (2.2 and later).
    fn parse_short(name: &str) -> Option<SSTableName> {
        let (temp, rest) = match name.split_once('-') {
            Some((t, rest)) if TempMarker::parse(t).is_some() => (TempMarker::parse(t), rest),
            _ => (None, name),
        };
        let mut parts = rest.splitn(4, '-');
        let version = Version::parse(parts.next()?)?;
        let generation = Generation::parse(parts.next()?)?;
        let format = Format::parse(parts.next()?)?;
        let component = Component::parse(parts.next()?)?;
        // BIG short names start at `la`; `tmp-`/`tmplink-` died with 2.x.
        if format == Format::Big && version.uses_long_names() {
            return None;
        }
        if temp.is_some() && version.as_str() >= "ma" {
            return None;
        }
        Some(SSTableName {
            descriptor: Descriptor {
                long_prefix: None,
                temp,
                version,
                generation,
                format: Some(format),
            },
            component,
        })
    }

    /// `<ks>-<table>-[tmp-|tmplink-]<ver>-<gen>-<Component>` (2.0, 2.1).
    fn parse_long(name: &str) -> Option<SSTableName> {
        let mut parts = name.split('-');
        let keyspace = parts.next()?;
        let table = parts.next()?;
        if !is_name(keyspace, false) || !is_name(table, true) {
            return None;
        }
        let mut token = parts.next()?;
        let temp = TempMarker::parse(token);
        if temp.is_some() {
            token = parts.next()?;
        }
        let version = Version::parse(token)?;
        if !version.uses_long_names() {
            return None;
        }
        let generation = match Generation::parse(parts.next()?)? {
            g @ Generation::Sequence(_) => g,
            Generation::Uuid(_) => return None,
        };
        let component = Component::parse(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(SSTableName {
            descriptor: Descriptor {
                long_prefix: Some(LongNamePrefix {
                    keyspace: keyspace.to_string(),
                    table: table.to_string(),
                }),
                temp,
                version,
                generation,
                format: None,
            },
            component,
        })
    }
}

impl fmt::Display for SSTableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.descriptor.base_name(), self.component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(name: &str) -> SSTableName {
        let parsed = SSTableName::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.to_string(), name);
        parsed
    }

    #[test]
    fn parses_every_naming_scheme() {
        let jb = roundtrip("Keyspace1-Standard1-jb-0-Data.db");
        assert_eq!(jb.descriptor.long_prefix.unwrap().table, "Standard1");
        let ka = roundtrip("test-foo-tmplink-ka-4-Index.db");
        assert_eq!(ka.descriptor.temp, Some(TempMarker::Tmplink));
        let la = roundtrip("tmp-lb-3-big-Data.db");
        assert_eq!(la.descriptor.version.as_str(), "lb");
        let nb = roundtrip("nb-17-big-Digest.crc32");
        assert_eq!(nb.component, Component::Digest(DigestExt::Crc32));
        let da = roundtrip("da-3fw2_0tu3_1l0kg2gg8ku9tp6qnx-bti-Partitions.db");
        assert!(matches!(da.descriptor.generation, Generation::Uuid(_)));
        assert_eq!(da.descriptor.format, Some(Format::Bti));
        let sai = roundtrip("da-1-bti-SAI+aa+val_idx+PostingLists.db");
        assert!(matches!(sai.component, Component::Sai(_)));
        let idx = roundtrip("ks-tbl.tbl_val_idx-ka-2-Filter.db");
        assert_eq!(idx.descriptor.long_prefix.unwrap().table, "tbl.tbl_val_idx");
    }

    #[test]
    fn rejects_what_cassandra_never_writes() {
        for name in [
            "nb-007-big-Data.db",
            "nb-1-zzz-Data.db",
            "nb-1-big-",
            "ka-1-big-Data.db",
            "tmp-nb-1-big-Data.db",
            "Keyspace1-Standard1-nb-1-Data.db",
            "ks-t-ka-3fw2_0tu3_1l0kg2gg8ku9tp6qnx-Data.db",
            "manifest.json",
            "",
            "nb-99999999999999999999999-big-Data.db",
        ] {
            assert!(SSTableName::parse(name).is_err(), "{name} should not parse");
        }
    }
}
