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

/// A step back of the system clock smaller than this is not reported (two readings in
/// the same microsecond, ordinary NTP slewing); it is still clamped.
const STEP_REPORTED: Micros = 1_000_000;

/// One node's clock for what it records: never earlier than the last time recorded for
/// the node, and strictly increasing. When the system clock is behind (an NTP step back,
/// a VM restored from a snapshot), each reading is clamped to just after the last one
/// and the step is remembered so the pass can warn about it.
#[derive(Debug, Clone)]
pub struct NodeClock {
    last: Micros,
    behind: Micros,
    last_recorded: Option<Micros>,
}

impl NodeClock {
    /// A clock whose readings all come after `last_recorded` (the latest time recorded
    /// for the node, if any).
    pub fn after(last_recorded: Option<Micros>) -> NodeClock {
        NodeClock {
            last: last_recorded.unwrap_or(Micros::MIN),
            behind: 0,
            last_recorded,
        }
    }

    /// The time to record now.
    pub fn now(&mut self) -> Micros {
        self.reading(now())
    }

    /// The time to record when the system clock says `system`.
    pub fn reading(&mut self, system: Micros) -> Micros {
        let floor = self.last.saturating_add(1);
        if system >= floor {
            self.last = system;
        } else {
            self.behind = self.behind.max(self.last.saturating_sub(system));
            self.last = floor;
        }
        self.last
    }

    /// How far the system clock was found behind the node's recorded times (at most),
    /// when that is a step worth reporting.
    pub fn stepped_back(&self) -> Option<Micros> {
        (self.behind >= STEP_REPORTED).then_some(self.behind)
    }

    /// One line for the operator about a step back, if there was one.
    pub fn warning(&self, node: &str) -> Option<String> {
        let behind = self.stepped_back()?;
        Some(format!(
            "the system clock is {:.1} s behind the last time recorded for node {node:?} ({}): \
             the times this pass recorded were moved to just after it, so every earlier point \
             still restores what it held; check NTP on this host (`timedatectl`, `chronyc tracking`)",
            behind as f64 / 1e6,
            self.last_recorded
                .map_or_else(|| "unknown".into(), format_precise),
        ))
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
    fn a_node_clock_never_goes_back_and_reports_a_step() {
        let mut clock = NodeClock::after(Some(NOW));
        assert_eq!(clock.reading(NOW + 5), NOW + 5);
        assert_eq!(clock.stepped_back(), None);
        // Same microsecond twice: still strictly increasing, not a step.
        assert_eq!(clock.reading(NOW + 5), NOW + 6);
        assert_eq!(clock.stepped_back(), None);
        // An hour back: clamped just after the last reading, and reported.
        let hour = 3_600_000_000;
        assert_eq!(clock.reading(NOW - hour), NOW + 7);
        assert_eq!(clock.reading(NOW - hour + 10), NOW + 8);
        assert_eq!(clock.stepped_back(), Some(hour + 6));
        assert!(clock.warning("n1").unwrap().contains("3600.0 s behind"));
        assert_eq!(NodeClock::after(None).reading(NOW), NOW);
    }

    #[test]
    fn rejects_nonsense_with_the_input_named() {
        for bad in ["yesterday", "2026-13-01", "5 fortnights", "", "-3d"] {
            let e = parse_at(bad, NOW).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
