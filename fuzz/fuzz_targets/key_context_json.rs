//! Fuzz target: a key context parsed from request JSON (both public entry points) never panics,
//! and an accepted context survives the canonical-bytes and JSON round trips unchanged.
#![no_main]

use byok_broker::context::KeyContext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The typed path (`Deserialize`) sees the raw text, e.g. repeated names.
    if let Ok(context) = serde_json::from_slice::<KeyContext>(bytes) {
        check_round_trips(&context);
    }
    // The handlers' path: the body is parsed as a JSON value first, then the context field.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Ok(context) = KeyContext::from_json(&value)
    {
        check_round_trips(&context);
    }
});

fn check_round_trips(context: &KeyContext) {
    let canonical = context.canonical_bytes();
    assert_eq!(
        KeyContext::from_canonical_bytes(&canonical).as_ref(),
        Some(context),
        "canonical bytes of an accepted context do not parse back"
    );
    let json = serde_json::to_vec(context).expect("a context always serializes");
    let reparsed: KeyContext =
        serde_json::from_slice(&json).expect("a serialized context must parse again");
    assert_eq!(&reparsed, context, "JSON round trip changed the context");
    assert_eq!(reparsed.hash(), context.hash());
}
