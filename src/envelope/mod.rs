//! Envelope encryption, pure and synchronous: AES-256-GCM under a DEK with associated data binding
//! the canonical key context, the DEK id and a caller-supplied id (the object id), plus the
//! versioned formats that carry the wrapped DEK. KMS calls happen elsewhere.

mod codec;
mod formats;

use uuid::Uuid;
use zeroize::Zeroizing;

pub use formats::{DataKeyBlob, MAX_WRAPPED_ENTRIES, SealedValue, WrappedKey};

use crate::aead;
use crate::context::KeyContext;
use crate::data_key::DataKey;

const VALUE_AAD_DOMAIN: &[u8] = b"byok-broker/value/v1\0";

/// A byte string that is not one of our formats. Parsing reports this; it never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("input ends early")]
    Truncated,
    #[error("unknown format (bad magic)")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("the key context inside is malformed")]
    BadContext,
    #[error("the KEK id inside is not UTF-8")]
    BadKekId,
    #[error("an empty KEK id or wrapped key")]
    EmptyField,
    #[error("wrong number of wrapped key entries")]
    EntryCount,
    #[error("unexpected bytes after the end")]
    TrailingBytes,
    #[error("a field is too long for the format")]
    FieldTooLong,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed sealed value: {0}")]
    Format(#[from] FormatError),
    /// The value was sealed for another context or object, or it was altered.
    #[error("sealed value does not open for this context and id")]
    Integrity,
    #[error("the sealed value's key context differs from the expected one")]
    ContextMismatch,
    #[error("the operating system's random number generator is unavailable")]
    RandomUnavailable,
}

/// Seals `plaintext` under `dek`, bound to `context`, the DEK id and `object_id`.
pub fn seal_value(
    dek: &DataKey,
    dek_id: Uuid,
    key: WrappedKey,
    context: &KeyContext,
    object_id: &str,
    plaintext: &[u8],
) -> Result<SealedValue, EnvelopeError> {
    let aad = value_aad(dek_id, context, object_id);
    let ciphertext = aead::seal(dek.expose_secret(), &aad, plaintext).map_err(|e| match e {
        aead::AeadError::RandomUnavailable => EnvelopeError::RandomUnavailable,
        _ => EnvelopeError::Integrity,
    })?;
    Ok(SealedValue {
        dek_id,
        key,
        context: context.clone(),
        ciphertext,
    })
}

/// Opens a sealed value that must belong to `expected_context` and `object_id`.
pub fn open_value(
    dek: &DataKey,
    sealed: &SealedValue,
    expected_context: &KeyContext,
    object_id: &str,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if &sealed.context != expected_context {
        return Err(EnvelopeError::ContextMismatch);
    }
    let aad = value_aad(sealed.dek_id, expected_context, object_id);
    aead::open(dek.expose_secret(), &aad, &sealed.ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Integrity)
}

/// Associated data: domain, DEK id, canonical context and object id, each length-delimited so
/// no two different bindings produce the same bytes.
fn value_aad(dek_id: Uuid, context: &KeyContext, object_id: &str) -> Vec<u8> {
    let canonical = context.canonical_bytes();
    let mut aad =
        Vec::with_capacity(VALUE_AAD_DOMAIN.len() + 16 + 8 + canonical.len() + object_id.len());
    aad.extend_from_slice(VALUE_AAD_DOMAIN);
    aad.extend_from_slice(dek_id.as_bytes());
    aad.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
    aad.extend_from_slice(&canonical);
    aad.extend_from_slice(&(object_id.len() as u32).to_be_bytes());
    aad.extend_from_slice(object_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests;
