//! Writes the fuzz targets' seed corpus (`fuzz/corpus/<target>/`) from values this library encodes,
//! so the seeds follow the formats when they change: `cargo run --example fuzz_seeds`.
//! Deterministic (fixed ids and bytes), so re-running it only changes files when a format changes.

use std::fs;
use std::path::Path;

use byok_broker::context::KeyContext;
use byok_broker::data_key::DataKey;
use byok_broker::envelope::{DataKeyBlob, SealedValue, ValueFormat, WrappedKey};
use byok_broker::store::ListPosition;
use byok_broker::timestamp::Timestamp;
use byok_broker::vault::cursor;
use uuid::Uuid;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let contexts = contexts()?;

    for (name, context) in &contexts {
        write(
            &corpus,
            "key_context_canonical",
            name,
            &context.canonical_bytes(),
        )?;
        write(
            &corpus,
            "key_context_json",
            name,
            &serde_json::to_vec(context)?,
        )?;
    }
    // What a client sends, with the whitespace and key order of hand-written JSON.
    write(
        &corpus,
        "key_context_json",
        "wire-spacing",
        br#"{ "organization_id" : "org_acme", "data_type": "pii" }"#,
    )?;

    for (index, (name, context)) in contexts.iter().enumerate() {
        // Both stored formats: values written before versions were bound still decode.
        for (format, suffix) in [(ValueFormat::V2, ""), (ValueFormat::V1, "-v1")] {
            let sealed = SealedValue {
                format,
                dek_id: fixed_uuid(index),
                key: kms_wrapped(index),
                context: context.clone(),
                ciphertext: fake_ciphertext(index),
            };
            write(
                &corpus,
                "sealed_value",
                &format!("{name}{suffix}"),
                &sealed.encode()?,
            )?;
        }
    }

    let (_, context) = &contexts[1];
    for entry_count in [1, 2, byok_broker::envelope::MAX_WRAPPED_ENTRIES] {
        let blob = DataKeyBlob {
            dek_id: fixed_uuid(entry_count),
            context: context.clone(),
            entries: (0..entry_count).map(kms_wrapped).collect(),
        };
        let name = format!("entries-{entry_count}");
        // Tagged with a fixed DEK, so the seeds are deterministic; the target checks the tag.
        write(&corpus, "data_key_blob", &name, &blob.encode(&seed_dek()?)?)?;
    }

    // List cursors as the broker issues them, and an object id (also accepted as a cursor).
    for (name, micros) in [("cursor-epoch", 0), ("cursor-now", 1_741_659_534_250_931)] {
        let position = ListPosition {
            created_at: Timestamp(micros),
            id: fixed_uuid(3),
        };
        write(
            &corpus,
            "list_cursor",
            name,
            cursor::encode(&position).as_bytes(),
        )?;
    }
    write(
        &corpus,
        "list_cursor",
        "object-id",
        fixed_uuid(4).to_string().as_bytes(),
    )?;

    for (name, micros) in [
        ("epoch", 0),
        ("microseconds", 1_741_659_534_250_931),
        ("leap-day", 951_782_400_000_000),
        ("last-instant-9999", 253_402_300_799_999_999),
    ] {
        let text = Timestamp(micros).to_rfc3339();
        write(&corpus, "timestamp", name, text.as_bytes())?;
    }
    // The other spellings the SDKs send (offsets, no fraction, JavaScript's Date.toString()):
    // nothing in this library writes them, so they are given as the SDKs produce them.
    for (name, text) in [
        ("offset", "2024-01-01T01:00:00+01:00"),
        ("lowercase-no-fraction", "2024-01-01t00:00:00z"),
        (
            "js-date-utc",
            "Mon Jan 01 2024 00:00:00 GMT+0000 (Coordinated Universal Time)",
        ),
        (
            "js-date-offset",
            "Mon Jan 01 2024 01:00:00 GMT+0100 (Central European Standard Time)",
        ),
    ] {
        write(&corpus, "timestamp", name, text.as_bytes())?;
    }
    Ok(())
}

/// Contexts from the smallest to the largest allowed, with non-ASCII text in one of them.
fn contexts() -> Result<Vec<(String, KeyContext)>, Error> {
    let ten_pairs = (0..10).map(|i| (format!("name_{i}"), format!("value_{i}")));
    Ok(vec![
        (
            "one-pair".into(),
            KeyContext::new([("organization_id", "org_acme")])?,
        ),
        (
            "two-pairs".into(),
            KeyContext::new([("organization_id", "org_acme"), ("data_type", "pii")])?,
        ),
        (
            "unicode".into(),
            KeyContext::new([("région", "Zürich ✓"), ("organization_id", "org_é")])?,
        ),
        ("ten-pairs".into(), KeyContext::new(ten_pairs)?),
    ])
}

fn fixed_uuid(seed: usize) -> Uuid {
    Uuid::from_bytes([seed as u8 + 1; 16])
}

/// A wrapped DEK shaped like KMS's: an ARN-sized KEK id and a 184-byte ciphertext blob.
fn kms_wrapped(seed: usize) -> WrappedKey {
    WrappedKey {
        kek_id: format!(
            "arn:aws:kms:us-east-1:000000000000:key/{seed:08x}-0000-4000-8000-000000000000"
        ),
        wrapped: vec![seed as u8 ^ 0x5a; 184],
    }
}

/// `nonce ‖ ciphertext ‖ tag` sizes as AES-256-GCM writes them (12 + n + 16 bytes).
fn fake_ciphertext(seed: usize) -> Vec<u8> {
    vec![seed as u8 ^ 0xa5; 12 + 8 * seed + 16]
}

fn write(corpus: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let dir = corpus.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// The DEK the data-key blob seeds are tagged with (the fuzz target uses the same bytes).
fn seed_dek() -> Result<DataKey, Error> {
    Ok(DataKey::from_slice(&[7u8; 32])?)
}
