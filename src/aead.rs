//! AES-256-GCM with a random 96-bit nonce: the one symmetric primitive of the broker.
//! Output layout is `nonce(12) ‖ ciphertext ‖ tag(16)`. Keys are borrowed, never copied.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    /// Wrong key, wrong associated data, or tampered bytes: indistinguishable by design.
    #[error("authentication failed: wrong key, wrong associated data or tampered ciphertext")]
    Authentication,
    #[error("ciphertext is shorter than a nonce and a tag")]
    Truncated,
    #[error("the operating system's random number generator is unavailable")]
    RandomUnavailable,
}

pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = Nonce::try_generate().map_err(|_| AeadError::RandomUnavailable)?;
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| AeadError::Authentication)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens `nonce ‖ ciphertext ‖ tag`. The returned plaintext is the caller's to zeroize if secret.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AeadError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(AeadError::Truncated);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| AeadError::Truncated)?;
    Aes256Gcm::new(key.into())
        .decrypt(&nonce, Payload { msg: body, aad })
        .map_err(|_| AeadError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_binding_is_checked() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"aad", b"hello").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(open(&key, b"aad", &sealed).unwrap(), b"hello");
        assert_eq!(
            open(&key, b"other", &sealed),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            open(&[8u8; 32], b"aad", &sealed),
            Err(AeadError::Authentication)
        );
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert_eq!(
            open(&key, b"aad", &tampered),
            Err(AeadError::Authentication)
        );
        assert_eq!(open(&key, b"aad", &sealed[..20]), Err(AeadError::Truncated));
    }

    #[test]
    fn nonces_are_fresh_per_seal() {
        let key = [7u8; 32];
        assert_ne!(
            seal(&key, b"", b"x").unwrap()[..NONCE_LEN],
            seal(&key, b"", b"x").unwrap()[..NONCE_LEN]
        );
    }
}
