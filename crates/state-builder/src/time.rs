//! Calendar helpers for timestamp targeting: rule bounds are `google.protobuf.Timestamp`s while
//! contexts usually carry RFC 3339 strings, so tests need both directions without a date crate.

use confidence_resolver::proto::google::Timestamp;

const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 for a proleptic Gregorian date (month and day are 1-based).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A UTC instant from calendar fields.
pub fn utc(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Timestamp {
    Timestamp {
        seconds: days_from_civil(year, month, day) * SECS_PER_DAY
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second),
        nanos: 0,
    }
}

/// `YYYY-MM-DDThh:mm:ss[.fffffffff]Z` (fraction only when `nanos` is non-zero).
pub fn format_rfc3339(ts: &Timestamp) -> String {
    let days = ts.seconds.div_euclid(SECS_PER_DAY);
    let secs = ts.seconds.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let base = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60);
    if ts.nanos == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{:09}Z", ts.nanos)
    }
}

/// `YYYY-MM-DD` of the instant's UTC day.
pub fn format_date(ts: &Timestamp) -> String {
    let (y, m, d) = civil_from_days(ts.seconds.div_euclid(SECS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 instant
/// `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)` (`T` may be a space). Stricter than the
/// resolver's context parsing on purpose: rule bounds written by hand should be unambiguous.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !(1..=12).contains(&month) {
        return None;
    }
    let next_month = if month == 12 { (i64::from(year) + 1, 1) } else { (i64::from(year), month + 1) };
    let month_days = days_from_civil(next_month.0, next_month.1, 1) - days_from_civil(i64::from(year), month, 1);
    if day == 0 || i64::from(day) > month_days {
        return None;
    }
    let date = utc(i64::from(year), month, day, 0, 0, 0);
    if b.len() == 10 {
        return Some(date);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(i + 1..i + 1 + digits)? * 10u32.pow(9 - digits as u32);
        i += 1 + digits;
    }
    let offset_secs = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let seconds = date.seconds + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some(Timestamp { seconds, nanos: nanos as i32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(utc(2024, 1, 1, 0, 0, 0).seconds, 1_704_067_200);
        assert_eq!(utc(2024, 1, 15, 10, 30, 0).seconds, 1_705_314_600);
        assert_eq!(utc(1969, 12, 31, 23, 59, 59).seconds, -1);
        let ts = Timestamp { seconds: 1_705_314_600, nanos: 123_000_000 };
        assert_eq!(format_rfc3339(&ts), "2024-01-15T10:30:00.123000000Z");
        assert_eq!(format_date(&ts), "2024-01-15");
        assert_eq!(parse_rfc3339("2024-01-15"), Some(utc(2024, 1, 15, 0, 0, 0)));
        assert_eq!(parse_rfc3339("2024-01-15T10:30:00Z"), Some(utc(2024, 1, 15, 10, 30, 0)));
        assert_eq!(parse_rfc3339("2024-01-15 10:30:00.123Z"), Some(ts));
        assert_eq!(parse_rfc3339("2024-01-15T10:30:00+02:00").map(|t| t.seconds), Some(1_705_307_400));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00-00:30").map(|t| t.seconds), Some(1_709_166_600));
        for bad in ["2024-02-30", "2023-02-29", "2024-1-15", "2024-01-15T10:30Z", "2024-01-15T10:30:00", "x"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for bad in ["2024-01-15T24:00:00Z", "2024-01-15T10:30:00.Z", "2024-01-15T10:30:00+0200", "2024-01-15Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for d in [-800_000, -1, 0, 59, 60, 19_000, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
