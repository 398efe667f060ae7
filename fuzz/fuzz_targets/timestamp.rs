//! Fuzz target: `Timestamp::parse` (the `updated_after` and admin `range_*` query text) never
//! panics, and an accepted instant formats to RFC 3339 text that parses back to the same instant.
#![no_main]

use std::sync::LazyLock;

use byok_broker::timestamp::Timestamp;
use libfuzzer_sys::fuzz_target;

/// The instants `to_rfc3339` can write as four-digit years; outside them (e.g. year 0 with a
/// positive offset) there is no RFC 3339 text to round-trip through.
static FORMATTABLE: LazyLock<(Timestamp, Timestamp)> = LazyLock::new(|| {
    let first = Timestamp::parse("0000-01-01T00:00:00Z").expect("year 0 parses");
    let last = Timestamp::parse("9999-12-31T23:59:59.999999Z").expect("year 9999 parses");
    (first, last)
});

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Some(instant) = Timestamp::parse(text) else {
        return;
    };
    let (first, last) = *FORMATTABLE;
    if instant < first || instant > last {
        return;
    }
    let formatted = instant.to_rfc3339();
    assert_eq!(
        Timestamp::parse(&formatted),
        Some(instant),
        "{text:?} parsed, but its RFC 3339 form {formatted:?} does not parse back"
    );
});
