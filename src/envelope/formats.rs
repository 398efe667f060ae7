//! Versioned binary formats: the sealed value stored per object version, and the data-key API's
//! `encrypted_keys` blob. Both start with a 4-byte magic and a version byte and carry the DEK id,
//! the wrapped DEK with its KEK id, and the canonical key context. Version 1 of each stays readable;
//! version 2 is written: a value bound to its object version, a blob tagged under its own DEK.

use uuid::Uuid;

use super::codec::{Reader, Writer};
use super::{EnvelopeError, FormatError, blob_tag};
use crate::context::KeyContext;
use crate::data_key::DataKey;

const VALUE_MAGIC: &[u8; 4] = b"BBSV";
const DATA_KEY_MAGIC: &[u8; 4] = b"BBEK";
const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
/// A blob names at most this many wrapped copies of one DEK (one per KEK it is wrapped under).
pub const MAX_WRAPPED_ENTRIES: usize = 4;

/// A DEK as stored: the KMS ciphertext blob and the id of the KEK that wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kek_id: String,
    pub wrapped: Vec<u8>,
}

/// Which associated data a sealed value was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// DEK id, context and object id: values written before versions were bound.
    V1,
    /// Also the object version id, so a row copied over another version does not open.
    V2,
}

/// One sealed object version: everything needed to open it, given the KMS, the object id and
/// (format 2) the version id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub format: ValueFormat,
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

/// A decoded blob whose DEK id and entries are not yet authenticated: open one of its entries,
/// then [`ParsedBlob::verify`] with the DEK before trusting anything but the unwrapped DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBlob {
    pub blob: DataKeyBlob,
    /// Version 2: the bytes the tag covers and the tag. `None` for a legacy (version 1) blob.
    tagged: Option<(Vec<u8>, Vec<u8>)>,
}

impl SealedValue {
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut w = Writer::default();
        let version = match self.format {
            ValueFormat::V1 => VERSION_1,
            ValueFormat::V2 => VERSION_2,
        };
        w.put(VALUE_MAGIC)
            .put_u8(version)
            .put(self.dek_id.as_bytes());
        put_wrapped(&mut w, &self.key)?;
        w.put_long(&self.context.canonical_bytes())?;
        Ok(w.put(&self.ciphertext).finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let format = match expect_header(&mut r, VALUE_MAGIC)? {
            VERSION_1 => ValueFormat::V1,
            _ => ValueFormat::V2,
        };
        let dek_id = Uuid::from_bytes(r.take_array()?);
        let key = take_wrapped(&mut r)?;
        let context = take_context(&mut r)?;
        let ciphertext = r.take_rest().to_vec();
        Ok(Self {
            format,
            dek_id,
            key,
            context,
            ciphertext,
        })
    }
}

impl DataKeyBlob {
    /// Version 2 bytes: the fields, then a tag over all of them keyed from `dek` (the DEK this
    /// blob wraps), so no field can be changed without the DEK.
    pub fn encode(&self, dek: &DataKey) -> Result<Vec<u8>, FormatError> {
        if self.entries.is_empty() || self.entries.len() > MAX_WRAPPED_ENTRIES {
            return Err(FormatError::EntryCount);
        }
        let mut w = Writer::default();
        w.put(DATA_KEY_MAGIC)
            .put_u8(VERSION_2)
            .put(self.dek_id.as_bytes());
        w.put_long(&self.context.canonical_bytes())?;
        w.put_u8(self.entries.len() as u8);
        for entry in &self.entries {
            put_wrapped(&mut w, entry)?;
        }
        let mut bytes = w.finish();
        let tag = blob_tag::compute(dek, &bytes);
        bytes.extend_from_slice(&tag);
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<ParsedBlob, FormatError> {
        let mut r = Reader::new(bytes);
        let version = expect_header(&mut r, DATA_KEY_MAGIC)?;
        let dek_id = Uuid::from_bytes(r.take_array()?);
        let context = take_context(&mut r)?;
        let count = r.take_u8()? as usize;
        if count == 0 || count > MAX_WRAPPED_ENTRIES {
            return Err(FormatError::EntryCount);
        }
        let entries = (0..count)
            .map(|_| take_wrapped(&mut r))
            .collect::<Result<_, _>>()?;
        let tagged = if version == VERSION_2 {
            let signed_len = bytes.len() - r.remaining();
            let tag = r.take(blob_tag::TAG_LEN)?;
            Some((bytes[..signed_len].to_vec(), tag.to_vec()))
        } else {
            None
        };
        r.expect_end()?;
        Ok(ParsedBlob {
            blob: Self {
                dek_id,
                context,
                entries,
            },
            tagged,
        })
    }
}

impl ParsedBlob {
    /// True for a version 1 blob: its DEK id is carried as given, unauthenticated.
    pub fn is_legacy(&self) -> bool {
        self.tagged.is_none()
    }

    /// Checks the tag with the DEK an entry unwrapped to. A legacy blob has no tag: only its
    /// context and entries are authenticated, by KMS, when an entry unwraps.
    pub fn verify(&self, dek: &DataKey) -> Result<(), EnvelopeError> {
        match &self.tagged {
            Some((signed, tag)) if !blob_tag::verify(dek, signed, tag) => {
                Err(EnvelopeError::Integrity)
            }
            _ => Ok(()),
        }
    }
}

/// The format version after the magic: 1 or 2.
fn expect_header(r: &mut Reader<'_>, magic: &[u8; 4]) -> Result<u8, FormatError> {
    if r.take(4)? != magic {
        return Err(FormatError::BadMagic);
    }
    match r.take_u8()? {
        version @ (VERSION_1 | VERSION_2) => Ok(version),
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
