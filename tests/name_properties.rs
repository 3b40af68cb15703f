//! Property tests of the name parsers: every SSTable name Cassandra can write parses and
//! formats back to itself, and no byte string makes the classifier panic.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use proptest::prelude::*;
use tablesafe::cassandra::name::{
    Component, Descriptor, DigestExt, Format, Generation, LongNamePrefix, SSTableName, TempMarker,
    Version,
};
use tablesafe::cassandra::{TxnLog, TxnLogName, TxnRecord, classify, classify_file_name};

fn version(first: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = Version> {
    (first, b'a'..=b'z')
        .prop_map(|(a, b)| Version::parse(std::str::from_utf8(&[a, b]).unwrap()).unwrap())
}

fn generation(allow_uuid: bool) -> BoxedStrategy<Generation> {
    let seq = any::<u64>().prop_map(Generation::Sequence);
    if allow_uuid {
        prop_oneof![
            seq,
            "[0-9a-z]{4}_[0-9a-z]{4}_[0-9a-z]{18}".prop_map(|s| Generation::parse(&s).unwrap()),
        ]
        .boxed()
    } else {
        seq.boxed()
    }
}

fn component(allow_dash: bool) -> BoxedStrategy<Component> {
    let custom = if allow_dash {
        "[A-Z][A-Za-z0-9_-]{0,12}\\.(db|txt|bin)"
    } else {
        "[A-Z][A-Za-z0-9_]{0,12}\\.(db|txt|bin)"
    };
    prop_oneof![
        Just(Component::Data),
        Just(Component::PrimaryIndex),
        Just(Component::Summary),
        Just(Component::Filter),
        Just(Component::Statistics),
        Just(Component::CompressionInfo),
        Just(Component::Digest(DigestExt::Crc32)),
        Just(Component::Digest(DigestExt::Adler32)),
        Just(Component::Digest(DigestExt::Sha1)),
        Just(Component::Crc),
        Just(Component::Toc),
        Just(Component::Partitions),
        Just(Component::Rows),
        "SI_[A-Za-z0-9_]{1,20}\\.db".prop_map(|s| Component::parse(&s).unwrap()),
        "SAI\\+[a-z]{2}\\+[A-Za-z0-9_]{1,12}(\\+[A-Za-z]{1,12})?\\.db"
            .prop_map(|s| Component::parse(&s).unwrap()),
        custom.prop_map(|s| Component::parse(&s).unwrap()),
    ]
    .boxed()
}

fn temp() -> impl Strategy<Value = Option<TempMarker>> {
    prop_oneof![
        Just(None),
        Just(Some(TempMarker::Tmp)),
        Just(Some(TempMarker::Tmplink))
    ]
}

/// 2.0/2.1: `<ks>-<table>-[tmp-|tmplink-]<ver>-<gen>-<Component>`.
fn long_name() -> impl Strategy<Value = SSTableName> {
    (
        "[A-Za-z0-9_]{1,48}",
        "[A-Za-z0-9_]{1,24}(\\.[A-Za-z0-9_]{1,24})?",
        temp(),
        version(b'a'..=b'k'),
        generation(false),
        component(false),
    )
        .prop_map(
            |(keyspace, table, temp, version, generation, component)| SSTableName {
                descriptor: Descriptor {
                    long_prefix: Some(LongNamePrefix { keyspace, table }),
                    temp,
                    version,
                    generation,
                    format: None,
                },
                component,
            },
        )
}

/// 2.2: `[tmp-|tmplink-]l?-<gen>-big-<C>`; 3.0–5.0: `<ver>-<gen>-<big|bti>-<C>`.
fn short_name() -> impl Strategy<Value = SSTableName> {
    let legacy_22 = (temp(), version(b'l'..=b'l'), generation(false))
        .prop_map(|(t, v, g)| (t, v, g, Format::Big));
    let big = (version(b'm'..=b'z'), generation(true)).prop_map(|(v, g)| (None, v, g, Format::Big));
    let bti = (version(b'a'..=b'z'), generation(true)).prop_map(|(v, g)| (None, v, g, Format::Bti));
    (prop_oneof![legacy_22, big, bti], component(true)).prop_map(
        |((temp, version, generation, format), component)| SSTableName {
            descriptor: Descriptor {
                long_prefix: None,
                temp,
                version,
                generation,
                format: Some(format),
            },
            component,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_long_name_roundtrips(name in long_name()) {
        let text = name.to_string();
        prop_assert_eq!(SSTableName::parse(&text), Ok(name), "{}", text);
    }

    #[test]
    fn every_short_name_roundtrips(name in short_name()) {
        let text = name.to_string();
        prop_assert_eq!(SSTableName::parse(&text), Ok(name), "{}", text);
    }

    #[test]
    fn txn_log_names_and_records_roundtrip(
        format in prop_oneof![Just(None), Just(Some(Format::Bti)), Just(Some(Format::Big))],
        ver in version(b'a'..=b'z'),
        op in "[a-z]{1,8}(_[a-z]{1,8})?",
        id in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        path in "(/[A-Za-z0-9_.-]{1,12}){1,6}",
        update_time in any::<i64>(),
        num_files in 0u32..1000,
    ) {
        let name = TxnLogName { format, version: ver, operation: op, id };
        prop_assert_eq!(TxnLogName::parse(&name.to_string()), Some(name.clone()));
        let record = TxnRecord::new(tablesafe::cassandra::RecordKind::Remove, &path, update_time, num_files);
        prop_assert_eq!(TxnRecord::parse_line(&record.to_line()), Ok(record.clone()));
        let log = TxnLog::parse(name, &format!("{}\n", record.to_line()));
        prop_assert!(log.bad_lines.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let os = OsStr::from_bytes(&bytes);
        let _ = classify_file_name(os);
        let _ = classify(Path::new(os));
        let text = String::from_utf8_lossy(&bytes);
        let _ = SSTableName::parse(&text);
        let _ = TxnLogName::parse(&text);
        let _ = TxnRecord::parse_line(&text);
        let _ = Generation::parse(&text);
        let _ = Component::parse(&text);
    }

    /// Strings made of the pieces real names are made of reach the parsers' deep paths.
    #[test]
    fn near_miss_names_never_panic(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("-"), Just("_"), Just("."), Just("/"), Just("tmp"), Just("tmplink"),
                Just("nb"), Just("ka"), Just("la"), Just("da"), Just("big"), Just("bti"),
                Just("0"), Just("17"), Just("Data.db"), Just("TOC.txt"), Just("_txn_"),
                Just(".log"), Just(".tmp"), Just("snapshots"), Just("backups"), Just(".idx"),
                Just("ADD:["), Just("]["), Just(","), Just("CommitLog"), Just("\u{ff}"),
            ],
            0..16,
        )
    ) {
        let text: String = parts.concat();
        let _ = classify_file_name(OsStr::new(&text));
        let _ = classify(Path::new(&text));
        let _ = TxnRecord::parse_line(&text);
        if let Ok(parsed) = SSTableName::parse(&text) {
            prop_assert_eq!(parsed.to_string(), text);
        }
    }
}
