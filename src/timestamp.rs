//! UTC timestamps with microsecond precision: RFC 3339 formatting (what the WorkOS API returns) and
//! parsing of the two `updated_after` formats the SDKs send (RFC 3339, and JavaScript's
//! `Date.prototype.toString()`, e.g. `Mon Jan 01 2024 00:00:00 GMT+0000 (Coordinated Universal Time)`).
//! Calendar arithmetic and parsing are the `time` crate's; any input answers `None`, never a panic.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// `Jan 01 2024 00:00:00 GMT+0100`: JavaScript's form once the weekday and the zone name are cut.
static JS_DATE: LazyLock<Option<Vec<BorrowedFormatItem<'static>>>> = LazyLock::new(|| {
    time::format_description::parse_borrowed::<2>(
        "[month repr:short] [day] [year] [hour]:[minute]:[second] \
         GMT[offset_hour sign:mandatory][offset_minute]",
    )
    .ok()
});

impl Timestamp {
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Self(micros)
    }

    /// `2025-03-11T02:18:54.250931Z`: fixed width, so text order equals time order. Written by
    /// hand from the crate's calendar fields: `time`'s RFC 3339 formatter trims the fraction (and
    /// its `formatting` feature would rebuild the AWS SDK, which uses `time` without it).
    pub fn to_rfc3339(self) -> String {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .unwrap_or_else(|_| {
                // Beyond year ±9999: only a corrupted row could hold such a value; clamp, never panic.
                let edge = if self.0 < 0 {
                    PrimitiveDateTime::MIN
                } else {
                    PrimitiveDateTime::MAX
                };
                edge.assume_utc()
            });
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.microsecond()
        )
    }

    /// Parses RFC 3339 (`Z` or `±hh:mm`, optional fraction) or the JavaScript `Date` string form.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let at = OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .or_else(|| Self::parse_js_date(text))?;
        let micros = at.unix_timestamp_nanos().div_euclid(1_000);
        i64::try_from(micros).ok().map(Self)
    }

    fn parse_js_date(text: &str) -> Option<OffsetDateTime> {
        // The parenthesised zone name is informational and locale-dependent; the weekday is
        // implied by the date (and was never checked).
        let text = text.split(" (").next()?.trim();
        let (_weekday, rest) = text.split_once(' ')?;
        OffsetDateTime::parse(rest.trim_start(), JS_DATE.as_deref()?).ok()
    }
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
            // Multi-byte characters where digits belong used to panic (slicing through `é`).
            "2024-01-01T00:00:0é",
            "2024-01-01T00:00:éZ",
            "Mon Jan 01 2024 00:00:0é GMT+0000",
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

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = Timestamp::parse(&text);
        }

        #[test]
        fn formatted_timestamps_parse_back(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            let t = Timestamp(micros);
            proptest::prop_assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
        }
    }
}
