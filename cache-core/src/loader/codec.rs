//! Codecs (L-14): how a serde value becomes the bytes inside a record.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The codec a cache uses for its values. Both round-trip every value
/// (`decode(encode(v)) == v`) and report garbage as an error, never a panic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// Compact binary (postcard): the default.
    #[default]
    Binary,
    /// JSON (serde_json): readable in `redis-cli`, larger.
    Json,
}

/// A value could not be encoded, or bytes could not be decoded (L-14, L-16).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{codec:?} codec could not {op}: {detail}")]
pub struct CodecError {
    /// Which codec.
    pub codec: Codec,
    /// `"encode"` or `"decode"`.
    pub op: &'static str,
    /// The codec's own message.
    pub detail: String,
}

impl Codec {
    /// The bytes of `value`.
    pub fn encode<V: Serialize>(self, value: &V) -> Result<Vec<u8>, CodecError> {
        let out = match self {
            Codec::Binary => postcard::to_stdvec(value).map_err(|e| e.to_string()),
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        };
        out.map_err(|detail| CodecError {
            codec: self,
            op: "encode",
            detail,
        })
    }

    /// The value in `bytes`. Trailing bytes after a binary value are an
    /// error too: a record is exactly one value.
    pub fn decode<V: DeserializeOwned>(self, bytes: &[u8]) -> Result<V, CodecError> {
        let out = match self {
            Codec::Binary => match postcard::take_from_bytes::<V>(bytes) {
                Ok((v, [])) => Ok(v),
                Ok((_, rest)) => Err(format!("{} trailing bytes after the value", rest.len())),
                Err(e) => Err(e.to_string()),
            },
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        };
        out.map_err(|detail| CodecError {
            codec: self,
            op: "decode",
            detail,
        })
    }
}
