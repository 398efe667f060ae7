//! Fuzz target: `DataKeyBlob::decode` on arbitrary bytes (a client's `encrypted_keys`, after base64)
//! never panics; checking its tag never panics; whatever it accepts encodes again (tagged with a
//! DEK) to bytes that decode to the same blob, whose tag that DEK, and no other, verifies.
#![no_main]

use byok_broker::data_key::DataKey;
use byok_broker::envelope::DataKeyBlob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(parsed) = DataKeyBlob::decode(bytes) else {
        return;
    };
    // The seeds are tagged with this DEK; arbitrary input mostly fails the check, never panics.
    let dek = DataKey::from_slice(&[7u8; 32]).expect("32 bytes");
    let _ = parsed.verify(&dek);
    // Rekey re-encodes a decoded blob, so everything decode accepts must be encodable.
    let encoded = parsed
        .blob
        .encode(&dek)
        .expect("a decoded data key blob must encode again");
    let again = DataKeyBlob::decode(&encoded).expect("an encoded data key blob must decode");
    assert_eq!(again.blob, parsed.blob, "decode -> encode -> decode changed the blob");
    assert!(!again.is_legacy(), "blobs are encoded in the tagged format");
    assert!(again.verify(&dek).is_ok(), "the DEK that tagged a blob verifies it");
    let other = DataKey::from_slice(&[8u8; 32]).expect("32 bytes");
    assert!(again.verify(&other).is_err(), "another DEK does not verify the tag");
});
