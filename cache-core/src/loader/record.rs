//! The record envelope: what every tier stores for a key (L-6, L-7).
//!
//! A record is a tagged value: either the codec's bytes of a real value, or
//! a placeholder ("the loader said not found"). The tag is a byte of the
//! envelope *outside* the value's bytes, so no real value can ever be read
//! back as a placeholder or the other way round, whatever it encodes to.
//! The envelope also carries the absolute expiry (milliseconds on the
//! injected clock), so a remote hit is copied to the local tier with the
//! remaining lifetime, never a longer one (L-3).
//!
//! Layout: `b'L'` (magic), version `1`, tag (`0` value, `1` placeholder),
//! expiry as 8 bytes big-endian, then the value's bytes (empty for a
//! placeholder).

use thiserror::Error;

const MAGIC: u8 = b'L';
const VERSION: u8 = 1;
const TAG_VALUE: u8 = 0;
const TAG_PLACEHOLDER: u8 = 1;
const HEADER: usize = 11;

/// What a record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A real value, as the codec encoded it.
    Value(Vec<u8>),
    /// The loader said "not found" (L-6).
    Placeholder,
}

/// One cached record: a payload and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Value or placeholder.
    pub payload: Payload,
    /// Expiry, in milliseconds on the injected clock; live while `now < expires_at_ms`.
    pub expires_at_ms: i64,
}

/// Bytes that are not a record envelope (L-14).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Fewer bytes than the header.
    #[error("record envelope too short: {len} bytes, the header alone is {HEADER}")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// The first byte is not the envelope's magic.
    #[error("record envelope magic byte is {0:#04x}, expected {MAGIC:#04x}")]
    BadMagic(u8),
    /// A version this code does not read.
    #[error("record envelope version {0} is not supported (expected {VERSION})")]
    BadVersion(u8),
    /// A tag that is neither value nor placeholder.
    #[error("record envelope tag {0} is neither value (0) nor placeholder (1)")]
    BadTag(u8),
    /// A placeholder with value bytes after it.
    #[error("placeholder record carries {0} stray bytes")]
    PlaceholderWithBytes(usize),
}

impl Record {
    /// A value record.
    pub fn value(bytes: Vec<u8>, expires_at_ms: i64) -> Self {
        Self {
            payload: Payload::Value(bytes),
            expires_at_ms,
        }
    }

    /// A placeholder record (L-6).
    pub fn placeholder(expires_at_ms: i64) -> Self {
        Self {
            payload: Payload::Placeholder,
            expires_at_ms,
        }
    }

    /// Whether this is a placeholder.
    pub fn is_placeholder(&self) -> bool {
        matches!(self.payload, Payload::Placeholder)
    }

    /// Whether the record is live at `now_ms` (L-3, LINV-3).
    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Milliseconds left at `now_ms` (0 once expired).
    pub fn remaining_ms(&self, now_ms: i64) -> i64 {
        self.expires_at_ms.saturating_sub(now_ms).max(0)
    }

    /// The envelope bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body: &[u8] = match &self.payload {
            Payload::Value(bytes) => bytes,
            Payload::Placeholder => &[],
        };
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.push(MAGIC);
        out.push(VERSION);
        out.push(match self.payload {
            Payload::Value(_) => TAG_VALUE,
            Payload::Placeholder => TAG_PLACEHOLDER,
        });
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Reads an envelope; arbitrary bytes give an error, never a panic (L-14).
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (value, expires_at_ms) = Self::header(bytes)?;
        let payload = if value {
            Payload::Value(bytes[HEADER..].to_vec())
        } else {
            Payload::Placeholder
        };
        Ok(Self {
            payload,
            expires_at_ms,
        })
    }

    /// [`Record::decode`] of bytes the caller gives up: the value keeps
    /// their buffer (the header is cut off in place), so a record read from
    /// the remote reaches the local tier without a copy.
    pub fn decode_owned(mut bytes: Vec<u8>) -> Result<Self, EnvelopeError> {
        let (value, expires_at_ms) = Self::header(&bytes)?;
        let payload = if value {
            bytes.drain(..HEADER);
            Payload::Value(bytes)
        } else {
            Payload::Placeholder
        };
        Ok(Self {
            payload,
            expires_at_ms,
        })
    }

    /// The value bytes inside a well-formed value envelope, borrowed; `None`
    /// for a placeholder or bytes that are not an envelope. Lets a caller
    /// decode a value before handing the envelope to the machine.
    pub fn value_bytes(bytes: &[u8]) -> Option<&[u8]> {
        match Self::header(bytes) {
            Ok((true, _)) => Some(&bytes[HEADER..]),
            _ => None,
        }
    }

    /// The expiry in a well-formed envelope (value or placeholder), `None`
    /// for bytes that are not one.
    pub fn expires_at(bytes: &[u8]) -> Option<i64> {
        Self::header(bytes).ok().map(|(_, at)| at)
    }

    /// Checks the header: whether it is a value (else a placeholder) and
    /// its expiry.
    fn header(bytes: &[u8]) -> Result<(bool, i64), EnvelopeError> {
        if bytes.len() < HEADER {
            return Err(EnvelopeError::TooShort { len: bytes.len() });
        }
        if bytes[0] != MAGIC {
            return Err(EnvelopeError::BadMagic(bytes[0]));
        }
        if bytes[1] != VERSION {
            return Err(EnvelopeError::BadVersion(bytes[1]));
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&bytes[3..HEADER]);
        let expires_at_ms = i64::from_be_bytes(expiry);
        let body = bytes.len() - HEADER;
        match bytes[2] {
            TAG_VALUE => Ok((true, expires_at_ms)),
            TAG_PLACEHOLDER if body == 0 => Ok((false, expires_at_ms)),
            TAG_PLACEHOLDER => Err(EnvelopeError::PlaceholderWithBytes(body)),
            tag => Err(EnvelopeError::BadTag(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owned and borrowed readers agree on every input, garbage
    /// included (L-14), and `value_bytes` finds exactly a value's bytes.
    #[test]
    fn l14_owned_decode_and_value_bytes_agree_with_decode() {
        let mut inputs = vec![
            Record::value(b"abc".to_vec(), 7).encode(),
            Record::value(Vec::new(), -1).encode(),
            Record::placeholder(9).encode(),
            b"Lx".to_vec(),
            b"short".to_vec(),
        ];
        let mut bad_tag = Record::value(b"v".to_vec(), 1).encode();
        bad_tag[2] = 7;
        let mut stray = Record::placeholder(1).encode();
        stray.push(0);
        let mut bad_magic = Record::value(b"v".to_vec(), 1).encode();
        bad_magic[0] = b'X';
        inputs.extend([bad_tag, stray, bad_magic]);
        for bytes in inputs {
            let borrowed = Record::decode(&bytes);
            assert_eq!(Record::decode_owned(bytes.clone()), borrowed, "{bytes:?}");
            let body = match &borrowed {
                Ok(Record {
                    payload: Payload::Value(v),
                    ..
                }) => Some(v.as_slice()),
                _ => None,
            };
            assert_eq!(Record::value_bytes(&bytes), body, "{bytes:?}");
        }
    }
}
