//! The plaintext data key (DEK): 32 bytes of AES-256 key that live only in memory.
//! It zeroizes on drop, is neither `Clone` nor `Serialize`, and prints as `DataKey(..)`.

use std::fmt;

use zeroize::Zeroizing;

pub const DATA_KEY_LEN: usize = 32;

pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

#[derive(Debug, thiserror::Error)]
#[error("a data key must be {DATA_KEY_LEN} bytes, got {0}")]
pub struct DataKeyLengthError(pub usize);

/// The one failure of key generation: the operating system's random source is unavailable.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator is unavailable")]
pub struct RandomUnavailable;

impl DataKey {
    /// Copies key bytes into a zeroizing buffer. The caller zeroizes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DataKeyLengthError> {
        let array: [u8; DATA_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| DataKeyLengthError(bytes.len()))?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// Takes ownership of key bytes handed over by a KMS client, zeroizing the vector afterwards.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, DataKeyLengthError> {
        let bytes = Zeroizing::new(bytes);
        Self::from_slice(&bytes)
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn random() -> Result<Self, RandomUnavailable> {
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| RandomUnavailable)?;
        Ok(Self(bytes))
    }

    /// The key bytes, for the cipher or for the data-key API response. Never log them.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = DataKey::from_slice(&[0xAB; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "DataKey(..)");
        assert_eq!(format!("{:?}", Some(key)), "Some(DataKey(..))");
    }

    #[test]
    fn wrong_length_is_an_error_not_a_panic() {
        assert_eq!(DataKey::from_slice(&[1; 31]).unwrap_err().0, 31);
        assert!(DataKey::from_vec(vec![1; 33]).is_err());
    }

    #[test]
    fn random_keys_differ() {
        let a = DataKey::random().unwrap();
        let b = DataKey::random().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
