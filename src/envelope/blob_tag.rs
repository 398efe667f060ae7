//! The tag of a v2 `encrypted_keys` blob: HMAC-SHA256 over every byte before it, keyed by a subkey
//! derived from the blob's own DEK. Only someone holding the DEK (the broker, after unwrapping) can
//! make or check it, so the DEK id and the entries cannot be relabelled or spliced between blobs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::data_key::DataKey;

pub const TAG_LEN: usize = 32;

/// Separates the tag key from every other use of the DEK (the client encrypts with the DEK itself).
const TAG_KEY_LABEL: &[u8] = b"byok-broker/encrypted-keys-tag/v2";

type HmacSha256 = Hmac<Sha256>;
/// SHA-256's block size: HMAC pads shorter keys with zeros to it, so padding here changes nothing
/// and lets the key go through the infallible constructor.
const BLOCK_LEN: usize = 64;

fn hmac_with(key: &[u8; 32]) -> HmacSha256 {
    let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
    block[..key.len()].copy_from_slice(key);
    <HmacSha256 as KeyInit>::new(&(*block).into())
}

fn keyed(dek: &DataKey) -> HmacSha256 {
    // HKDF-Expand with one output block: HMAC(DEK, label ‖ 0x01) is the tag key.
    let mut derive = hmac_with(dek.expose_secret());
    derive.update(TAG_KEY_LABEL);
    derive.update(&[1]);
    let subkey: Zeroizing<[u8; 32]> = Zeroizing::new(derive.finalize().into_bytes().into());
    hmac_with(&subkey)
}

pub fn compute(dek: &DataKey, signed: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = keyed(dek);
    mac.update(signed);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of `tag` over `signed`.
pub fn verify(dek: &DataKey, signed: &[u8], tag: &[u8]) -> bool {
    let mut mac = keyed(dek);
    mac.update(signed);
    mac.verify_slice(tag).is_ok()
}
