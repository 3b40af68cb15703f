//! Points in time as operators type them, and as the catalog stores them.
//!
//! The catalog stores [`Micros`]: microseconds since the Unix epoch, UTC. Users may write:
//!
//! - RFC 3339: `2026-11-22T08:30:00Z`, `2026-11-22T10:30:00+02:00`
//! - a date or date-time, UTC unless a zone is given: `2026-11-22`, `2026-11-22 08:30`,
//!   `2026-11-22 08:30:15`, `2026-11-22T08:30`
//! - relative to now: `2h ago`, `90m`, `3d`, `1w ago`, `now`

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// The current time.
pub fn now() -> Micros {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as Micros,
        Err(e) => -(e.duration().as_micros() as Micros),
    }
}

/// A time that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot read {input:?} as a time: use RFC 3339 (2026-11-22T08:30:00Z), a UTC date-time (2026-11-22 08:30), or a relative time (2h ago, 3d)"
)]
pub struct TimeSpecError {
    pub input: String,
}

/// Parses a time as a user would write it, relative ones against `now`.
pub fn parse_at(input: &str, now: Micros) -> Result<Micros, TimeSpecError> {
    let s = input.trim();
    let err = || TimeSpecError {
        input: input.to_string(),
    };
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(d) = parse_duration(s.strip_suffix("ago").unwrap_or(s).trim()) {
        return now.checked_sub(d).ok_or_else(err);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_micros())
            .ok_or_else(err);
    }
    Err(err())
}

/// Parses a duration like `250ms`, `90s`, `15m`, `2h`, `3d`, `1w` into microseconds.
pub fn parse_duration(s: &str) -> Option<Micros> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(split);
    let n: i64 = number.parse().ok()?;
    let micros: i64 = match unit.trim() {
        "ms" | "msec" | "millisecond" | "milliseconds" => 1_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000,
        "h" | "hour" | "hours" => 3_600_000_000,
        "d" | "day" | "days" => 86_400_000_000,
        "w" | "week" | "weeks" => 604_800_000_000,
        _ => return None,
    };
    n.checked_mul(micros)
}

/// RFC 3339 in UTC with second precision, e.g. `2026-11-22T08:30:00Z`.
pub fn format(t: Micros) -> String {
    match DateTime::<Utc>::from_timestamp_micros(t) {
        Some(d) => d.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => format!("@{t}us"),
    }
}

/// RFC 3339 in UTC with microsecond precision, for machine output.
pub fn format_precise(t: Micros) -> String {
    match DateTime::<Utc>::from_timestamp_micros(t) {
        Some(d) => d.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => format!("@{t}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_795_000_000_000_000;

    #[test]
    fn accepts_every_documented_form() {
        let t = parse_at("2026-11-22T08:30:00Z", NOW).unwrap();
        assert_eq!(format(t), "2026-11-22T08:30:00Z");
        assert_eq!(parse_at("2026-11-22T10:30:00+02:00", NOW).unwrap(), t);
        assert_eq!(parse_at("2026-11-22 08:30", NOW).unwrap(), t);
        assert_eq!(parse_at("2026-11-22T08:30:00", NOW).unwrap(), t);
        assert_eq!(
            parse_at("2026-11-22", NOW).unwrap(),
            t - (8 * 3600 + 30 * 60) * 1_000_000
        );
        assert_eq!(parse_at("2h ago", NOW).unwrap(), NOW - 7_200_000_000);
        assert_eq!(parse_at("3d", NOW).unwrap(), NOW - 3 * 86_400_000_000);
        assert_eq!(parse_at("now", NOW).unwrap(), NOW);
        assert_eq!(
            parse_at("90 minutes ago", NOW).unwrap(),
            NOW - 5_400_000_000
        );
    }

    #[test]
    fn rejects_nonsense_with_the_input_named() {
        for bad in ["yesterday", "2026-13-01", "5 fortnights", "", "-3d"] {
            let e = parse_at(bad, NOW).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
