//! CalDAV's UTC date-times (`20060104T000000Z`, RFC 4791 §9.9) and the ranges built from them.
//! Kept free of chrono so the XML layer has no calendar dependency; use
//! [`UtcDateTime::unix_seconds`] to convert.

use std::fmt;

/// A validated `YYYYMMDDTHHMMSSZ` instant. Ordering is chronological (fields compare from
/// the year down). Leap seconds (`60`) are refused, as chrono would refuse them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl UtcDateTime {
    /// Parses exactly `YYYYMMDDTHHMMSSZ` (16 ASCII characters, upper-case `T` and `Z`).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<u32> {
            let digits = b.get(range)?;
            digits.iter().try_fold(0u32, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
            })
        };
        let year = u16::try_from(num(0..4)?).ok()?;
        let month = u8::try_from(num(4..6)?).ok()?;
        let day = u8::try_from(num(6..8)?).ok()?;
        let hour = u8::try_from(num(9..11)?).ok()?;
        let minute = u8::try_from(num(11..13)?).ok()?;
        let second = u8::try_from(num(13..15)?).ok()?;
        let valid = (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(UtcDateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub fn unix_seconds(&self) -> i64 {
        let days = days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn is_leap(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for UtcDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl fmt::Debug for UtcDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A `CALDAV:time-range` (RFC 4791 §9.9): at least one bound is present (the parser
/// enforces it); a missing start means "since forever", a missing end "for ever after".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Option<UtcDateTime>,
    pub end: Option<UtcDateTime>,
}

/// A range with both bounds required: `CALDAV:expand`, `limit-recurrence-set` and
/// `limit-freebusy-set` (RFC 4791 §9.6.5-9.6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: UtcDateTime,
    pub end: UtcDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let t = UtcDateTime::parse("20060104T000000Z").expect("valid");
        assert_eq!(t.to_string(), "20060104T000000Z");
        assert_eq!(t.unix_seconds(), 1_136_332_800);
        assert!(UtcDateTime::parse("20240229T235959Z").is_some());
        for bad in [
            "20230229T000000Z", // not a leap year
            "20261301T000000Z",
            "20260100T000000Z",
            "20260101T240000Z",
            "20260101T000060Z",
            "20260101T000000",
            "20260101t000000z",
            "2026-01-01T00:00:00Z",
            "2026010１T000000Z", // a non-ASCII digit
            "",
        ] {
            assert_eq!(UtcDateTime::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_seconds_before_the_epoch() {
        let t = UtcDateTime::parse("19691231T235959Z").expect("valid");
        assert_eq!(t.unix_seconds(), -1);
    }
}
