//! Envelope encryption, pure and synchronous: AES-256-GCM under a DEK with associated data binding
//! the canonical key context, the DEK id, the object id and (format 2) the object version id, plus
//! the versioned formats that carry the wrapped DEK. KMS calls happen elsewhere.

mod blob_tag;
mod codec;
mod formats;

use uuid::Uuid;
use zeroize::Zeroizing;

pub use formats::{
    DataKeyBlob, MAX_WRAPPED_ENTRIES, ParsedBlob, SealedValue, ValueFormat, WrappedKey,
};

use crate::aead;
use crate::context::KeyContext;
use crate::data_key::DataKey;

const VALUE_AAD_DOMAIN_V1: &[u8] = b"byok-broker/value/v1\0";
const VALUE_AAD_DOMAIN_V2: &[u8] = b"byok-broker/value/v2\0";

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
    /// The value was sealed for another context, object or version, or it was altered.
    #[error("integrity failure: does not open for this context, id and version")]
    Integrity,
    #[error("the sealed value's key context differs from the expected one")]
    ContextMismatch,
    #[error("the operating system's random number generator is unavailable")]
    RandomUnavailable,
}

/// Which object version a value belongs to: both ids go into the associated data.
#[derive(Debug, Clone, Copy)]
pub struct ValueBinding<'a> {
    pub object_id: &'a str,
    pub version_id: &'a str,
}

/// Seals `plaintext` under `dek` (format 2), bound to `context`, the DEK id, the object id and the
/// version id.
pub fn seal_value(
    dek: &DataKey,
    dek_id: Uuid,
    key: WrappedKey,
    context: &KeyContext,
    binding: ValueBinding<'_>,
    plaintext: &[u8],
) -> Result<SealedValue, EnvelopeError> {
    let format = ValueFormat::V2;
    let aad = value_aad(format, dek_id, context, binding);
    let ciphertext = aead::seal(dek.expose_secret(), &aad, plaintext).map_err(|e| match e {
        aead::AeadError::RandomUnavailable => EnvelopeError::RandomUnavailable,
        _ => EnvelopeError::Integrity,
    })?;
    Ok(SealedValue {
        format,
        dek_id,
        key,
        context: context.clone(),
        ciphertext,
    })
}

/// Opens a sealed value that must belong to `expected_context` and `binding`. A format 1 value
/// predates version binding: only its object id is checked.
pub fn open_value(
    dek: &DataKey,
    sealed: &SealedValue,
    expected_context: &KeyContext,
    binding: ValueBinding<'_>,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if &sealed.context != expected_context {
        return Err(EnvelopeError::ContextMismatch);
    }
    let aad = value_aad(sealed.format, sealed.dek_id, expected_context, binding);
    aead::open(dek.expose_secret(), &aad, &sealed.ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Integrity)
}

/// Associated data: domain (which names the format), DEK id, canonical context, object id and,
/// from format 2, version id; each length-delimited so no two bindings produce the same bytes.
fn value_aad(
    format: ValueFormat,
    dek_id: Uuid,
    context: &KeyContext,
    binding: ValueBinding<'_>,
) -> Vec<u8> {
    let canonical = context.canonical_bytes();
    let mut aad = Vec::with_capacity(
        VALUE_AAD_DOMAIN_V2.len()
            + 16
            + 12
            + canonical.len()
            + binding.object_id.len()
            + binding.version_id.len(),
    );
    let delimited = |aad: &mut Vec<u8>, field: &[u8]| {
        aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
        aad.extend_from_slice(field);
    };
    aad.extend_from_slice(match format {
        ValueFormat::V1 => VALUE_AAD_DOMAIN_V1,
        ValueFormat::V2 => VALUE_AAD_DOMAIN_V2,
    });
    aad.extend_from_slice(dek_id.as_bytes());
    delimited(&mut aad, &canonical);
    delimited(&mut aad, binding.object_id.as_bytes());
    if format == ValueFormat::V2 {
        delimited(&mut aad, binding.version_id.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests;
