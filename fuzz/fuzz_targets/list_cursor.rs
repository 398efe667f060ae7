//! Fuzz target: the list cursor decoder (`after` / `before` query values, chosen by any caller)
//! never panics, and a position it accepts encodes to a cursor that decodes to the same position.
#![no_main]

use byok_broker::vault::cursor::{self, Cursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(decoded) = cursor::decode(text) else {
        return;
    };
    if let Cursor::Position(position) = decoded {
        let again = cursor::decode(&cursor::encode(&position)).expect("an encoded cursor decodes");
        assert_eq!(again, Cursor::Position(position), "encode -> decode changed the position");
    }
});
