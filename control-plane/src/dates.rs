//! Times as the CLI reads them (`--since 1h`, `--expires-in 1d`) and prints them
//! (`2026-03-07`, `2026-03-07 10:12 UTC`), and as the demo server's `current_time`
//! tells them (RFC 3339). The API speaks unix seconds; all rendering is UTC so
//! output does not depend on the machine's zone.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses a span: plain seconds (`86400`) or units `s m h d w`, combinable (`1h30m`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid duration {text:?}: expected e.g. 90, 30s, 15m, 1h, 7d, 1h30m");
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid()),
        };
        let amount: u64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total = amount
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
    }
    if !digits.is_empty() {
        // "1h30": a trailing number without a unit is ambiguous.
        return Err(invalid());
    }
    Ok(total)
}

/// A `--since` value: how long ago, or a UTC calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(u64),
    /// Unix seconds of the start of a UTC day.
    At(i64),
}

impl Since {
    /// Unix seconds to send as `since=`.
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            Since::Ago(secs) => now.saturating_sub(secs as i64),
            Since::At(at) => at,
        }
    }
}

/// Parses `--since`: a duration (`1h`, `7d`) or a date (`2026-03-07`).
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Some(day) = parse_date(text.trim()) {
        return Ok(Since::At(day));
    }
    parse_duration(text).map(Since::Ago).map_err(|_| {
        format!(
            "invalid --since {text:?}: expected a duration (30m, 1h, 7d) or a date (2026-03-07)"
        )
    })
}

fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `2026-03-07`.
pub fn format_date(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-03-07 10:12 UTC`.
pub fn format_minute(unix: i64) -> String {
    let secs_of_day = unix.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02} UTC",
        format_date(unix),
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60
    )
}

/// `2026-03-07T10:12:00Z` (RFC 3339, UTC).
pub fn format_rfc3339(unix: i64) -> String {
    let secs_of_day = unix.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        format_date(unix),
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60
    )
}

/// How long ago, for "last seen": `12s ago`, `4m ago`, `3h ago`, else the minute.
pub fn format_ago(unix: i64, now: i64) -> String {
    let age = now - unix;
    match age {
        i64::MIN..=-1 => format_minute(unix),
        0..=59 => format!("{age}s ago"),
        60..=3_599 => format!("{}m ago", age / 60),
        3_600..=86_399 => format!("{}h ago", age / 3_600),
        _ => format_minute(unix),
    }
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian, UTC).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-03-07 10:12:34 UTC
    const SEED_TIME: i64 = 1_772_878_354;

    #[test]
    fn durations_accept_seconds_units_and_combinations() {
        assert_eq!(parse_duration("86400"), Ok(86_400));
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3_600));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration(" 1h "), Ok(3_600));
    }

    #[test]
    fn durations_reject_garbage_with_an_example() {
        for bad in [
            "",
            "h",
            "1x",
            "1h30",
            "-1h",
            "1.5h",
            "99999999999999999999w",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("expected e.g."), "{bad:?}: {err}");
        }
    }

    #[test]
    fn since_is_relative_to_now_or_a_utc_day() {
        assert_eq!(parse_since("1h"), Ok(Since::Ago(3_600)));
        assert_eq!(parse_since("1h").unwrap().resolve(10_000), 6_400);
        assert_eq!(parse_since("2026-03-07"), Ok(Since::At(1_772_841_600)));
        assert_eq!(parse_since("1970-01-01").unwrap().resolve(5), 0);
        assert!(parse_since("2026-02-30").is_err());
        assert!(parse_since("yesterday").unwrap_err().contains("2026-03-07"));
    }

    #[test]
    fn dates_render_in_utc() {
        assert_eq!(format_date(SEED_TIME), "2026-03-07");
        assert_eq!(format_minute(SEED_TIME), "2026-03-07 10:12 UTC");
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_minute(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_date(-86_400), "1969-12-31");
    }

    #[test]
    fn civil_conversion_round_trips() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn ago_is_short_for_recent_times() {
        assert_eq!(format_ago(SEED_TIME - 5, SEED_TIME), "5s ago");
        assert_eq!(format_ago(SEED_TIME - 125, SEED_TIME), "2m ago");
        assert_eq!(format_ago(SEED_TIME - 7_300, SEED_TIME), "2h ago");
        assert_eq!(
            format_ago(SEED_TIME - 2 * 86_400, SEED_TIME),
            "2026-03-05 10:12 UTC"
        );
    }
}
