//! UTC timestamps with microsecond precision: RFC 3339 formatting (what the WorkOS API returns) and
//! parsing of the two `updated_after` formats the SDKs send (RFC 3339, and JavaScript's
//! `Date.prototype.toString()`, e.g. `Mon Jan 01 2024 00:00:00 GMT+0000 (Coordinated Universal Time)`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Timestamp {
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Self(micros)
    }

    /// `2025-03-11T02:18:54.250931Z`: fixed width, so text order equals time order.
    pub fn to_rfc3339(self) -> String {
        let seconds = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = seconds.div_euclid(86_400);
        let secs_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            secs_of_day / 3600,
            secs_of_day % 3600 / 60,
            secs_of_day % 60
        )
    }

    /// Parses RFC 3339 (`Z` or `±hh:mm`, optional fraction) or the JavaScript `Date` string form.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::parse_rfc3339(text).or_else(|| Self::parse_js_date(text))
    }

    fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        // The fixed-width prefix is sliced by byte offsets below, so it must be ASCII: a
        // multi-byte character there would put a slice boundary inside it and panic.
        if b.len() < 20
            || !b[..19].is_ascii()
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let year = digits(&text[0..4])?;
        let month = digits(&text[5..7])?;
        let day = digits(&text[8..10])?;
        let (hour, minute, second) = (
            digits(&text[11..13])?,
            digits(&text[14..16])?,
            digits(&text[17..19])?,
        );
        let mut rest = &text[19..];
        let mut micros = 0;
        if let Some(fraction) = rest.strip_prefix('.') {
            let end = fraction
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(fraction.len());
            if end == 0 {
                return None;
            }
            let padded = format!("{:0<6}", &fraction[..end.min(6)]);
            micros = digits(&padded)?;
            rest = &fraction[end..];
        }
        let offset_seconds = match rest {
            "Z" | "z" => 0,
            _ => parse_offset(rest, true)?,
        };
        Self::from_parts(
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            offset_seconds,
        )
    }

    fn parse_js_date(text: &str) -> Option<Self> {
        // Drop the parenthesised zone name, which is informational and locale-dependent.
        let text = text.split(" (").next()?.trim();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [_weekday, month, day, year, time, zone] = parts.as_slice() else {
            return None;
        };
        let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
        let time: Vec<&str> = time.split(':').collect();
        let [hour, minute, second] = time.as_slice() else {
            return None;
        };
        let offset = parse_offset(zone.strip_prefix("GMT")?, false)?;
        Self::from_parts(
            digits(year)?,
            month,
            digits(day)?,
            digits(hour)?,
            digits(minute)?,
            digits(second)?,
            0,
            offset,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        year: i64,
        month: i64,
        day: i64,
        hour: i64,
        minute: i64,
        second: i64,
        micros: i64,
        offset_seconds: i64,
    ) -> Option<Self> {
        // Four-digit years only (RFC 3339 has no others, and JavaScript's form could otherwise
        // carry a year large enough to overflow the day and second arithmetic below).
        let valid = (0..=9999).contains(&year)
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour < 24
            && minute < 60
            && second < 61;
        if !valid {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
        Some(Self(seconds * 1_000_000 + micros))
    }
}

/// `+hh:mm`, `-hh:mm` (RFC 3339, colon required) or `+hhmm` (JavaScript's `GMT+0100`).
fn parse_offset(text: &str, rfc3339: bool) -> Option<i64> {
    let (sign, body) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = if rfc3339 {
        body.split_once(':')?
    } else {
        (body.get(0..2)?, body.get(2..)?)
    };
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    Some(sign * (digits(hours)? * 3600 + digits(minutes)? * 60))
}

fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp(1_741_659_534_250_931).to_rfc3339(),
            "2025-03-11T02:18:54.250931Z"
        );
    }

    #[test]
    fn parses_both_sdk_formats() {
        let midnight = Timestamp::parse("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(midnight.to_rfc3339(), "2024-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp::parse("2024-01-01T01:00:00+01:00"),
            Some(midnight)
        );
        assert_eq!(
            Timestamp::parse("Mon Jan 01 2024 00:00:00 GMT+0000 (Coordinated Universal Time)"),
            Some(midnight)
        );
        assert_eq!(
            Timestamp::parse("Mon Jan 01 2024 01:00:00 GMT+0100 (Central European Standard Time)"),
            Some(midnight)
        );
        let precise = Timestamp::parse("2025-03-11T02:18:54.250931Z").unwrap();
        assert_eq!(precise, Timestamp(1_741_659_534_250_931));
        assert_eq!(
            Timestamp::parse("2025-03-11T02:18:54.25Z").unwrap().0 % 1_000_000,
            250_000
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00",
            "Mon Foo 01 2024 00:00:00 GMT+0000",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    /// Untrusted query text reaches `parse`; a panic there would cut the client's connection.
    #[test]
    fn multi_byte_characters_are_refused_not_sliced() {
        for bad in [
            "2024-01-01T00:00:0\u{e9}",
            "2024-01-01T00:00:0\u{e9}Z",
            "2024-01-01T00:00:00\u{e9}",
            "2024-01-01T00:00:00.\u{e9}Z",
            "2024-01-01T00:00:00+0\u{e9}",
            "Mon Jan 01 2024 00:00:00 GMT+\u{e9}",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    /// JavaScript's form has no fixed year width; an absurd year must not overflow the arithmetic.
    #[test]
    fn huge_years_are_refused_not_overflowed() {
        for bad in [
            "Mon Jan 01 999999999999999 00:00:00 GMT+0000",
            "Mon Jan 01 9223372036854775807 00:00:00 GMT+0000",
            "Mon Jan 01 10000 00:00:00 GMT+0000",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_across_leap_years() {
        for micros in [
            951_782_400_000_000i64,
            4_107_542_399_999_999,
            1_709_164_800_123_456,
        ] {
            let t = Timestamp(micros);
            assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
        }
    }
}
