//! Data-key responses (`/vault/v1/keys/*`). The base64 DEK lives only in a `Zeroizing<String>`
//! that is serialized straight into the body and wiped on drop: never in a `serde_json::Value`.
//! Fields are in alphabetical order, the order earlier releases sent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::context::KeyContext;
use crate::vault::IssuedDataKey;

/// A DEK in base64, zeroized on drop; serializes as a plain JSON string.
pub struct EncodedDataKey(Zeroizing<String>);

impl EncodedDataKey {
    fn of(issued: &IssuedDataKey) -> Self {
        Self(Zeroizing::new(STANDARD.encode(issued.key.expose_secret())))
    }
}

impl Serialize for EncodedDataKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// `DataKeyPair`: the answer to create-data-key and rekey.
#[derive(Serialize, ToSchema)]
pub struct DataKeyPair<'a> {
    pub context: &'a KeyContext,
    /// The plaintext data key, base64.
    #[schema(value_type = String)]
    pub data_key: EncodedDataKey,
    pub encrypted_keys: String,
    pub id: String,
}

impl<'a> DataKeyPair<'a> {
    pub fn of(issued: &'a IssuedDataKey) -> Self {
        Self {
            context: &issued.context,
            data_key: EncodedDataKey::of(issued),
            encrypted_keys: STANDARD.encode(&issued.encrypted_keys),
            id: issued.dek_id.to_string(),
        }
    }
}

/// `DataKey`: the answer to decrypt.
#[derive(Serialize, ToSchema)]
pub struct DecryptedDataKey {
    /// The plaintext data key, base64.
    #[schema(value_type = String)]
    pub data_key: EncodedDataKey,
    pub id: String,
}

impl DecryptedDataKey {
    pub fn of(issued: &IssuedDataKey) -> Self {
        Self {
            data_key: EncodedDataKey::of(issued),
            id: issued.dek_id.to_string(),
        }
    }
}
