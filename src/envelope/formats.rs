//! Versioned binary formats: the sealed value stored per object version, and the data-key API's
//! `encrypted_keys` blob. Both start with a 4-byte magic and a version byte and carry the DEK id,
//! the wrapped DEK with its KEK id, and the canonical key context.

use uuid::Uuid;

use super::FormatError;
use super::codec::{Reader, Writer};
use crate::context::KeyContext;

const VALUE_MAGIC: &[u8; 4] = b"BBSV";
const DATA_KEY_MAGIC: &[u8; 4] = b"BBEK";
const VERSION_1: u8 = 1;
/// A blob names at most this many wrapped copies of one DEK (one per KEK it is wrapped under).
pub const MAX_WRAPPED_ENTRIES: usize = 4;

/// A DEK as stored: the KMS ciphertext blob and the id of the KEK that wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kek_id: String,
    pub wrapped: Vec<u8>,
}

/// One sealed object version: everything needed to open it, given the KMS and the object id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub dek_id: Uuid,
    pub key: WrappedKey,
    pub context: KeyContext,
    /// `nonce ‖ ciphertext ‖ tag` of the value.
    pub ciphertext: Vec<u8>,
}

/// The data-key API's `encrypted_keys`: a DEK wrapped under one or more KEKs, bound to a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyBlob {
    pub dek_id: Uuid,
    pub context: KeyContext,
    pub entries: Vec<WrappedKey>,
}

impl SealedValue {
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut w = Writer::default();
        w.put(VALUE_MAGIC)
            .put_u8(VERSION_1)
            .put(self.dek_id.as_bytes());
        put_wrapped(&mut w, &self.key)?;
        w.put_long(&self.context.canonical_bytes())?;
        Ok(w.put(&self.ciphertext).finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        expect_header(&mut r, VALUE_MAGIC)?;
        let dek_id = Uuid::from_bytes(r.take_array()?);
        let key = take_wrapped(&mut r)?;
        let context = take_context(&mut r)?;
        let ciphertext = r.take_rest().to_vec();
        Ok(Self {
            dek_id,
            key,
            context,
            ciphertext,
        })
    }
}

impl DataKeyBlob {
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        if self.entries.is_empty() || self.entries.len() > MAX_WRAPPED_ENTRIES {
            return Err(FormatError::EntryCount);
        }
        let mut w = Writer::default();
        w.put(DATA_KEY_MAGIC)
            .put_u8(VERSION_1)
            .put(self.dek_id.as_bytes());
        w.put_long(&self.context.canonical_bytes())?;
        w.put_u8(self.entries.len() as u8);
        for entry in &self.entries {
            put_wrapped(&mut w, entry)?;
        }
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        expect_header(&mut r, DATA_KEY_MAGIC)?;
        let dek_id = Uuid::from_bytes(r.take_array()?);
        let context = take_context(&mut r)?;
        let count = r.take_u8()? as usize;
        if count == 0 || count > MAX_WRAPPED_ENTRIES {
            return Err(FormatError::EntryCount);
        }
        let entries = (0..count)
            .map(|_| take_wrapped(&mut r))
            .collect::<Result<_, _>>()?;
        r.expect_end()?;
        Ok(Self {
            dek_id,
            context,
            entries,
        })
    }
}

fn expect_header(r: &mut Reader<'_>, magic: &[u8; 4]) -> Result<(), FormatError> {
    if r.take(4)? != magic {
        return Err(FormatError::BadMagic);
    }
    match r.take_u8()? {
        VERSION_1 => Ok(()),
        other => Err(FormatError::UnsupportedVersion(other)),
    }
}

fn put_wrapped(w: &mut Writer, key: &WrappedKey) -> Result<(), FormatError> {
    if key.kek_id.is_empty() || key.wrapped.is_empty() {
        return Err(FormatError::EmptyField);
    }
    w.put_short(key.kek_id.as_bytes())?
        .put_short(&key.wrapped)?;
    Ok(())
}

fn take_wrapped(r: &mut Reader<'_>) -> Result<WrappedKey, FormatError> {
    let kek_id = std::str::from_utf8(r.take_short()?)
        .map_err(|_| FormatError::BadKekId)?
        .to_owned();
    let wrapped = r.take_short()?.to_vec();
    if kek_id.is_empty() || wrapped.is_empty() {
        return Err(FormatError::EmptyField);
    }
    Ok(WrappedKey { kek_id, wrapped })
}

fn take_context(r: &mut Reader<'_>) -> Result<KeyContext, FormatError> {
    KeyContext::from_canonical_bytes(r.take_long()?).ok_or(FormatError::BadContext)
}
