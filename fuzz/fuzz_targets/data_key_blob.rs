//! Fuzz target: `DataKeyBlob::decode` on arbitrary bytes (a client's `encrypted_keys`, after base64)
//! never panics, and whatever it accepts encodes again to bytes that decode to the same blob.
#![no_main]

use byok_broker::envelope::DataKeyBlob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(blob) = DataKeyBlob::decode(bytes) else {
        return;
    };
    // Rekey re-encodes a decoded blob, so everything decode accepts must be encodable.
    let encoded = blob
        .encode()
        .expect("a decoded data key blob must encode again");
    let again = DataKeyBlob::decode(&encoded).expect("an encoded data key blob must decode");
    assert_eq!(again, blob, "decode -> encode -> decode changed the blob");
});
