//! Envelope tests: round trips, every binding checked, values and blobs of format 1 (bytes written
//! by the format-1 code) still open, and property tests that parsing random or mutated bytes
//! returns an error instead of panicking.

use super::*;
use proptest::prelude::*;

fn context(org: &str) -> KeyContext {
    KeyContext::new([("organization_id", org), ("data_type", "pii")]).unwrap()
}

fn wrapped() -> WrappedKey {
    WrappedKey {
        kek_id: "arn:aws:kms:us-east-1:000000000000:key/0b7d".into(),
        wrapped: vec![9; 116],
    }
}

fn dek() -> DataKey {
    DataKey::from_slice(&[0x42; 32]).unwrap()
}

fn bound<'a>(object_id: &'a str, version_id: &'a str) -> ValueBinding<'a> {
    ValueBinding {
        object_id,
        version_id,
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Written by the format-1 code (before versions were bound): `seal_value` with `dek()`, DEK id
/// `LEGACY_DEK_ID`, `wrapped()`, `context("org_acme")`, object `obj_legacy`, "legacy secret".
const LEGACY_VALUE_HEX: &str = "42425356016f1c2a3b4d5e4f608172839405a6b7c8002b61726e3a6177733a6b6d733a75732d656173742d313a3030303030303030303030303a6b65792f3062376400740909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909000000370000000200000009646174615f74797065000000037069690000000f6f7267616e697a6174696f6e5f6964000000086f72675f61636d65f4e89a63d41fb5b093dbcdd4efe4bde9d66191f9fd98f766a204db973e3a13e51d313c8acf9a1669ad";
/// Written by the format-1 code: `DataKeyBlob` with the same DEK id, context and entry.
const LEGACY_BLOB_HEX: &str = "4242454b016f1c2a3b4d5e4f608172839405a6b7c8000000370000000200000009646174615f74797065000000037069690000000f6f7267616e697a6174696f6e5f6964000000086f72675f61636d6501002b61726e3a6177733a6b6d733a75732d656173742d313a3030303030303030303030303a6b65792f3062376400740909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909";
const LEGACY_DEK_ID: &str = "6f1c2a3b-4d5e-4f60-8172-839405a6b7c8";

#[test]
fn sealed_value_round_trips_through_bytes() {
    let ctx = context("org_acme");
    let sealed = seal_value(
        &dek(),
        Uuid::new_v4(),
        wrapped(),
        &ctx,
        bound("obj_1", "v_1"),
        b"secret",
    )
    .unwrap();
    let bytes = sealed.encode().unwrap();
    let decoded = SealedValue::decode(&bytes).unwrap();
    assert_eq!(decoded, sealed);
    assert_eq!(
        &*open_value(&dek(), &decoded, &ctx, bound("obj_1", "v_1")).unwrap(),
        b"secret"
    );
}

#[test]
fn every_binding_is_enforced() {
    let ctx = context("org_acme");
    let sealed = seal_value(
        &dek(),
        Uuid::new_v4(),
        wrapped(),
        &ctx,
        bound("obj_1", "v_1"),
        b"secret",
    )
    .unwrap();
    assert_eq!(
        open_value(&dek(), &sealed, &ctx, bound("obj_2", "v_1")),
        Err(EnvelopeError::Integrity)
    );
    assert_eq!(
        open_value(&dek(), &sealed, &ctx, bound("obj_1", "v_0")),
        Err(EnvelopeError::Integrity),
        "a value copied over another version's row does not open"
    );
    let mut downgraded = sealed.clone();
    downgraded.format = ValueFormat::V1;
    assert_eq!(
        open_value(&dek(), &downgraded, &ctx, bound("obj_1", "v_1")),
        Err(EnvelopeError::Integrity),
        "relabelling a format-2 value as format 1 drops no binding"
    );
    assert_eq!(
        open_value(
            &dek(),
            &sealed,
            &context("org_other"),
            bound("obj_1", "v_1")
        ),
        Err(EnvelopeError::ContextMismatch)
    );
    let other_key = DataKey::from_slice(&[0x43; 32]).unwrap();
    assert_eq!(
        open_value(&other_key, &sealed, &ctx, bound("obj_1", "v_1")),
        Err(EnvelopeError::Integrity)
    );
    // Swapping the stored context for another one does not get past the AAD either.
    let mut moved = sealed.clone();
    moved.context = context("org_other");
    assert_eq!(
        open_value(&dek(), &moved, &context("org_other"), bound("obj_1", "v_1")),
        Err(EnvelopeError::Integrity)
    );
    let mut relabelled = sealed;
    relabelled.dek_id = Uuid::new_v4();
    assert_eq!(
        open_value(&dek(), &relabelled, &ctx, bound("obj_1", "v_1")),
        Err(EnvelopeError::Integrity)
    );
}

#[test]
fn data_key_blob_round_trips_and_limits_entries() {
    let blob = DataKeyBlob {
        dek_id: Uuid::new_v4(),
        context: context("org_acme"),
        entries: vec![wrapped(), wrapped()],
    };
    let parsed = DataKeyBlob::decode(&blob.encode(&dek()).unwrap()).unwrap();
    assert_eq!(parsed.blob, blob);
    assert!(!parsed.is_legacy());
    assert_eq!(parsed.verify(&dek()), Ok(()));
    let empty = DataKeyBlob {
        entries: vec![],
        ..blob.clone()
    };
    assert_eq!(empty.encode(&dek()), Err(FormatError::EntryCount));
    let mut bytes = blob.encode(&dek()).unwrap();
    bytes.push(0);
    assert_eq!(DataKeyBlob::decode(&bytes), Err(FormatError::TrailingBytes));
}

#[test]
fn every_field_of_a_v2_blob_is_authenticated_by_its_dek() {
    let blob = DataKeyBlob {
        dek_id: Uuid::new_v4(),
        context: context("org_acme"),
        entries: vec![wrapped()],
    };
    let bytes = blob.encode(&dek()).unwrap();
    let other_dek = DataKey::from_slice(&[0x43; 32]).unwrap();
    assert_eq!(
        DataKeyBlob::decode(&bytes).unwrap().verify(&other_dek),
        Err(EnvelopeError::Integrity)
    );
    // Flip each byte after the header in turn: whatever still parses fails the tag.
    for i in 5..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        if let Ok(parsed) = DataKeyBlob::decode(&tampered) {
            assert_eq!(
                parsed.verify(&dek()),
                Err(EnvelopeError::Integrity),
                "byte {i}"
            );
        }
    }
    // Truncating the tag away is not a downgrade to an untagged blob.
    assert!(DataKeyBlob::decode(&bytes[..bytes.len() - 32]).is_err());
}

#[test]
fn format_1_values_and_blobs_written_by_earlier_versions_still_open() {
    let dek_id = Uuid::parse_str(LEGACY_DEK_ID).unwrap();
    let value = SealedValue::decode(&hex_bytes(LEGACY_VALUE_HEX)).unwrap();
    assert_eq!((value.format, value.dek_id), (ValueFormat::V1, dek_id));
    let ctx = context("org_acme");
    // Format 1 binds no version: any version id opens it (only the object id is checked).
    assert_eq!(
        &*open_value(&dek(), &value, &ctx, bound("obj_legacy", "any")).unwrap(),
        b"legacy secret"
    );
    assert_eq!(
        open_value(&dek(), &value, &ctx, bound("obj_other", "any")),
        Err(EnvelopeError::Integrity)
    );
    // Rewrap re-encodes a value with a new wrapped DEK: a format-1 value stays format 1.
    assert_eq!(value.encode().unwrap(), hex_bytes(LEGACY_VALUE_HEX));

    let blob = DataKeyBlob::decode(&hex_bytes(LEGACY_BLOB_HEX)).unwrap();
    assert!(blob.is_legacy());
    assert_eq!(
        blob.blob,
        DataKeyBlob {
            dek_id,
            context: ctx,
            entries: vec![wrapped()]
        }
    );
    assert_eq!(blob.verify(&dek()), Ok(()), "a legacy blob carries no tag");
}

#[test]
fn formats_are_distinguished_by_magic_and_version() {
    let sealed = seal_value(
        &dek(),
        Uuid::new_v4(),
        wrapped(),
        &context("a"),
        bound("o", "v"),
        b"x",
    )
    .unwrap();
    let bytes = sealed.encode().unwrap();
    assert_eq!(DataKeyBlob::decode(&bytes), Err(FormatError::BadMagic));
    let mut future = bytes.clone();
    future[4] = 3;
    assert_eq!(
        SealedValue::decode(&future),
        Err(FormatError::UnsupportedVersion(3))
    );
    assert_eq!(
        SealedValue::decode(&bytes[..3]),
        Err(FormatError::Truncated)
    );
}

fn sample_blob_bytes() -> Vec<u8> {
    DataKeyBlob {
        dek_id: Uuid::nil(),
        context: context("org_acme"),
        entries: vec![wrapped()],
    }
    .encode(&dek())
    .unwrap()
}

fn sample_value_bytes() -> Vec<u8> {
    seal_value(
        &dek(),
        Uuid::nil(),
        wrapped(),
        &context("org_acme"),
        bound("o", "v"),
        b"payload",
    )
    .unwrap()
    .encode()
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SealedValue::decode(&bytes);
        let _ = DataKeyBlob::decode(&bytes);
    }

    #[test]
    fn mutated_blobs_never_panic_and_never_open(
        which in 0usize..2,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = if which == 0 { sample_blob_bytes() } else { sample_value_bytes() };
        for (index, value) in &edits {
            let i = index.index(bytes.len());
            bytes[i] = *value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(parsed) = DataKeyBlob::decode(&bytes) {
            // An edited blob that still parses never passes its tag.
            prop_assert!(which != 0 || bytes == sample_blob_bytes() || parsed.verify(&dek()).is_err());
        }
        if let Ok(value) = SealedValue::decode(&bytes) {
            // A mutation may still parse (the wrapped DEK is deliberately outside the AAD, so rewrap
            // can replace it), but it never yields a plaintext other than the sealed one.
            let opened = open_value(&dek(), &value, &value.context.clone(), bound("o", "v"));
            prop_assert!(opened.map_or(true, |p| p.as_slice() == b"payload"));
        }
    }
}
