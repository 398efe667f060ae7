//! Bounds-checked binary reader and writer for the envelope formats. Every read checks lengths
//! first, so decoding any byte string returns an error instead of panicking.

use super::FormatError;

#[derive(Default)]
pub(super) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    pub fn put_u8(&mut self, value: u8) -> &mut Self {
        self.out.push(value);
        self
    }

    /// A field of up to 64 KiB, prefixed by its length as u16 big-endian.
    pub fn put_short(&mut self, field: &[u8]) -> Result<&mut Self, FormatError> {
        let len = u16::try_from(field.len()).map_err(|_| FormatError::FieldTooLong)?;
        self.out.extend_from_slice(&len.to_be_bytes());
        Ok(self.put(field))
    }

    /// A field prefixed by its length as u32 big-endian.
    pub fn put_long(&mut self, field: &[u8]) -> Result<&mut Self, FormatError> {
        let len = u32::try_from(field.len()).map_err(|_| FormatError::FieldTooLong)?;
        self.out.extend_from_slice(&len.to_be_bytes());
        Ok(self.put(field))
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8], FormatError> {
        if len > self.rest.len() {
            return Err(FormatError::Truncated);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| FormatError::Truncated)
    }

    pub fn take_u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take_array::<1>()?[0])
    }

    pub fn take_short(&mut self) -> Result<&'a [u8], FormatError> {
        let len = u16::from_be_bytes(self.take_array()?);
        self.take(len as usize)
    }

    pub fn take_long(&mut self) -> Result<&'a [u8], FormatError> {
        let len = u32::from_be_bytes(self.take_array()?);
        self.take(len as usize)
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub fn expect_end(&self) -> Result<(), FormatError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FormatError::TrailingBytes)
        }
    }
}
