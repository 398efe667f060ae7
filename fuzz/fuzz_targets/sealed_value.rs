//! Fuzz target: `SealedValue::decode` on arbitrary bytes (a stored value as read from the database)
//! never panics, and whatever it accepts encodes again to bytes that decode to the same value.
#![no_main]

use byok_broker::envelope::SealedValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(value) = SealedValue::decode(bytes) else {
        return;
    };
    // Rewrap writes a decoded value back, so everything decode accepts must be encodable.
    let encoded = value
        .encode()
        .expect("a decoded sealed value must encode again");
    let again = SealedValue::decode(&encoded).expect("an encoded sealed value must decode");
    assert_eq!(again, value, "decode -> encode -> decode changed the value");
});
