//! Envelope tests: round trips, every binding checked, and property tests that parsing random or
//! mutated bytes returns an error instead of panicking.

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

#[test]
fn sealed_value_round_trips_through_bytes() {
    let ctx = context("org_acme");
    let sealed = seal_value(&dek(), Uuid::new_v4(), wrapped(), &ctx, "obj_1", b"secret").unwrap();
    let bytes = sealed.encode().unwrap();
    let decoded = SealedValue::decode(&bytes).unwrap();
    assert_eq!(decoded, sealed);
    assert_eq!(
        &*open_value(&dek(), &decoded, &ctx, "obj_1").unwrap(),
        b"secret"
    );
}

#[test]
fn every_binding_is_enforced() {
    let ctx = context("org_acme");
    let sealed = seal_value(&dek(), Uuid::new_v4(), wrapped(), &ctx, "obj_1", b"secret").unwrap();
    assert_eq!(
        open_value(&dek(), &sealed, &ctx, "obj_2"),
        Err(EnvelopeError::Integrity)
    );
    assert_eq!(
        open_value(&dek(), &sealed, &context("org_other"), "obj_1"),
        Err(EnvelopeError::ContextMismatch)
    );
    let other_key = DataKey::from_slice(&[0x43; 32]).unwrap();
    assert_eq!(
        open_value(&other_key, &sealed, &ctx, "obj_1"),
        Err(EnvelopeError::Integrity)
    );
    // Swapping the stored context for another one does not get past the AAD either.
    let mut moved = sealed.clone();
    moved.context = context("org_other");
    assert_eq!(
        open_value(&dek(), &moved, &context("org_other"), "obj_1"),
        Err(EnvelopeError::Integrity)
    );
    let mut relabelled = sealed;
    relabelled.dek_id = Uuid::new_v4();
    assert_eq!(
        open_value(&dek(), &relabelled, &ctx, "obj_1"),
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
    assert_eq!(DataKeyBlob::decode(&blob.encode().unwrap()).unwrap(), blob);
    let empty = DataKeyBlob {
        entries: vec![],
        ..blob.clone()
    };
    assert_eq!(empty.encode(), Err(FormatError::EntryCount));
    let mut bytes = blob.encode().unwrap();
    bytes.push(0);
    assert_eq!(DataKeyBlob::decode(&bytes), Err(FormatError::TrailingBytes));
}

#[test]
fn formats_are_distinguished_by_magic_and_version() {
    let sealed = seal_value(&dek(), Uuid::new_v4(), wrapped(), &context("a"), "o", b"x").unwrap();
    let bytes = sealed.encode().unwrap();
    assert_eq!(DataKeyBlob::decode(&bytes), Err(FormatError::BadMagic));
    let mut future = bytes.clone();
    future[4] = 2;
    assert_eq!(
        SealedValue::decode(&future),
        Err(FormatError::UnsupportedVersion(2))
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
    .encode()
    .unwrap()
}

fn sample_value_bytes() -> Vec<u8> {
    seal_value(
        &dek(),
        Uuid::nil(),
        wrapped(),
        &context("org_acme"),
        "o",
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
        let _ = DataKeyBlob::decode(&bytes);
        if let Ok(value) = SealedValue::decode(&bytes) {
            // A mutation may still parse (the wrapped DEK is deliberately outside the AAD, so rewrap
            // can replace it), but it never yields a plaintext other than the sealed one.
            let opened = open_value(&dek(), &value, &value.context.clone(), "o");
            prop_assert!(opened.map_or(true, |p| p.as_slice() == b"payload"));
        }
    }
}
