//! Retention policies: which points of a node's history stay restorable.
//!
//! A policy keeps every instant of a recent window (`keep_within`) and, before it, the
//! snapshots its rules select, restic-style: `keep_last` the newest N, `keep_hourly` /
//! `daily` / `weekly` / `monthly` the newest snapshot in each of the last N hours, days,
//! ISO weeks or months that have one (UTC), and `keep_snapshot` by name. A snapshot
//! kept by any rule is kept. The current state of a node is always kept.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike};
use serde::Deserialize;

use crate::catalog::SnapshotRow;
use crate::timespec::Micros;

/// What to keep. All fields empty means keep all history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep every instant of this window before now (microseconds).
    #[serde(default, deserialize_with = "duration_opt")]
    pub keep_within: Option<Micros>,
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// Snapshot names always kept.
    #[serde(default, rename = "keep_snapshot")]
    pub keep_snapshots: Vec<String>,
}

fn duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
    let text = String::deserialize(d)?;
    crate::timespec::parse_duration(&text)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "cannot read {text:?} as a duration: use e.g. 36h, 7d, 2w"
            ))
        })
}

/// Bucket of a time for the calendar rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
}

fn bucket(period: Period, t: Micros) -> (i32, u32, u32, u32) {
    let dt = DateTime::from_timestamp_micros(t).unwrap_or_default();
    match period {
        Period::Hour => (dt.year(), dt.ordinal(), dt.hour(), 0),
        Period::Day => (dt.year(), dt.ordinal(), 0, 0),
        Period::Week => {
            let w = dt.iso_week();
            (w.year(), w.week(), 0, 0)
        }
        Period::Month => (dt.year(), dt.month(), 0, 0),
    }
}

impl RetentionPolicy {
    /// True when no rule is set: gc then keeps all history and collects only blobs no
    /// version refers to.
    pub fn is_empty(&self) -> bool {
        *self == RetentionPolicy::default()
    }

    /// The rules in words, for summaries.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "keep all history".into();
        }
        let mut parts = Vec::new();
        if let Some(w) = self.keep_within {
            parts.push(format!("every instant of the last {}", human_duration(w)));
        }
        for (n, what) in [
            (self.keep_last, "last"),
            (self.keep_hourly, "hourly"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
        ] {
            if let Some(n) = n {
                parts.push(format!("{n} {what}"));
            }
        }
        if !self.keep_snapshots.is_empty() {
            parts.push(format!("snapshots {}", self.keep_snapshots.join(", ")));
        }
        format!("keep {}", parts.join(", "))
    }

    /// The earliest instant kept whole: `now - keep_within`, or `now` without a window.
    pub fn keep_from(&self, now: Micros) -> Micros {
        self.keep_within.map_or(now, |w| now.saturating_sub(w))
    }

    /// Names of the snapshots of one node the rules keep.
    pub fn select(&self, snapshots: &[SnapshotRow]) -> BTreeSet<String> {
        let mut newest_first: Vec<&SnapshotRow> = snapshots.iter().collect();
        newest_first.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let mut kept = BTreeSet::new();
        if let Some(n) = self.keep_last {
            kept.extend(newest_first.iter().take(n as usize).map(|s| s.name.clone()));
        }
        for (rule, period) in [
            (self.keep_hourly, Period::Hour),
            (self.keep_daily, Period::Day),
            (self.keep_weekly, Period::Week),
            (self.keep_monthly, Period::Month),
        ] {
            let Some(n) = rule else { continue };
            // Newest snapshot of each bucket, newest buckets first.
            let mut buckets: BTreeMap<(i32, u32, u32, u32), &SnapshotRow> = BTreeMap::new();
            for s in &newest_first {
                buckets.entry(bucket(period, s.time)).or_insert(s);
            }
            kept.extend(
                buckets
                    .values()
                    .rev()
                    .take(n as usize)
                    .map(|s| s.name.clone()),
            );
        }
        for s in snapshots {
            if self.keep_snapshots.contains(&s.name) {
                kept.insert(s.name.clone());
            }
        }
        kept
    }
}

/// Names of `known` close to `name` (edit distance at most a third of its length, at
/// least 2), closest first, at most five: for the message refusing an unknown name.
pub fn close_names<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let limit = (name.chars().count() / 3).max(2);
    let mut close: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .collect();
    close.sort();
    close.dedup();
    close
        .into_iter()
        .take(5)
        .map(|(_, k)| k.to_string())
        .collect()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `36h`, `7d` and the like, for messages.
pub fn human_duration(micros: Micros) -> String {
    let secs = micros / 1_000_000;
    match secs {
        s if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s != 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        s if s != 0 => format!("{s}s"),
        _ => format!("{}ms", micros / 1_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Micros = 3_600_000_000;

    fn snaps(times: &[Micros]) -> Vec<SnapshotRow> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| SnapshotRow {
                id: i as i64 + 1,
                node: "n".into(),
                name: format!("s{i}"),
                time: t,
                scope: "all".into(),
                files: 0,
                bytes: 0,
            })
            .collect()
    }

    #[test]
    fn last_and_calendar_rules_union() {
        // Two snapshots an hour for 3 days, starting at midnight UTC.
        let day0 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        let times: Vec<Micros> = (0..144).map(|i| day0 + i * HOUR / 2).collect();
        let rows = snaps(&times);
        let p = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        assert_eq!(
            p.select(&rows),
            ["s141", "s142", "s143"].map(String::from).into()
        );
        let p = RetentionPolicy {
            keep_daily: Some(2),
            ..Default::default()
        };
        // The newest of day 3 (s143) and of day 2 (s95).
        assert_eq!(p.select(&rows), ["s143", "s95"].map(String::from).into());
        let p = RetentionPolicy {
            keep_hourly: Some(2),
            keep_snapshots: vec!["s0".into()],
            ..Default::default()
        };
        assert_eq!(
            p.select(&rows),
            ["s0", "s141", "s143"].map(String::from).into()
        );
        assert!(RetentionPolicy::default().is_empty());
        assert_eq!(
            RetentionPolicy {
                keep_within: Some(2 * HOUR),
                ..Default::default()
            }
            .keep_from(10 * HOUR),
            8 * HOUR
        );
    }
}
