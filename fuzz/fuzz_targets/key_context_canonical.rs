//! Fuzz target: `KeyContext::from_canonical_bytes` (the context inside every stored value and blob)
//! never panics, and accepts only the one canonical encoding of each context.
#![no_main]

use byok_broker::context::KeyContext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some(context) = KeyContext::from_canonical_bytes(bytes) else {
        return;
    };
    // Canonical bytes feed the context hash (KEK aliases, cache keys): if two byte strings parsed
    // to one context, the encoding would not be canonical, so re-encoding must give the input back.
    assert_eq!(
        context.canonical_bytes(),
        bytes,
        "accepted bytes that are not the canonical encoding of {context:?}"
    );
});
