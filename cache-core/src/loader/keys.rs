//! Key encoding (L-5): the stored key for (cache name, key parts) is an
//! unambiguous, length-prefixed encoding, so no two distinct (name, parts)
//! pairs share a stored key, and batch flights have keys of their own kind.

use std::fmt;

/// A key as the caller gives it: one or more parts (`("user", "42")`).
///
/// Parts are kept apart, never joined with a separator a part could contain:
/// `["user", "1:2"]` and `["user:1", "2"]` are different keys (L-5).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<String>);

impl Key {
    /// A key from its parts, in order.
    pub fn new<I, S>(parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(parts.into_iter().map(Into::into).collect())
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[String] {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(part: &str) -> Self {
        Self(vec![part.to_string()])
    }
}

impl From<String> for Key {
    fn from(part: String) -> Self {
        Self(vec![part])
    }
}

impl<const N: usize> From<[&str; N]> for Key {
    fn from(parts: [&str; N]) -> Self {
        Self::new(parts)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Appends one length-prefixed field: `<byte length>:<bytes>`. The length
/// says where the field ends, whatever bytes it holds, which is what makes
/// the whole encoding injective.
fn push_field(out: &mut String, field: &str) {
    out.push_str(&field.len().to_string());
    out.push(':');
    out.push_str(field);
}

/// The stored key of `key` in the cache named `cache`: the cache name, then
/// each part, each length-prefixed (L-5). This is the key used in every tier
/// and in the events between nodes.
///
/// ```
/// use cache_core::loader::keys::{stored_key, Key};
/// let a = stored_key("c", &Key::new(["user", "1:2"]));
/// let b = stored_key("c", &Key::new(["user:1", "2"]));
/// assert_ne!(a, b);
/// assert_eq!(a, "1:c4:user3:1:2");
/// ```
pub fn stored_key(cache: &str, key: &Key) -> String {
    let mut out = String::new();
    push_field(&mut out, cache);
    for part in key.parts() {
        push_field(&mut out, part);
    }
    out
}

/// Splits a stored key back into (cache name, parts); `None` when `stored`
/// is not a well-formed encoding. The inverse of [`stored_key`], which is
/// what proves the encoding injective.
pub fn parse_stored_key(stored: &str) -> Option<(String, Key)> {
    let mut fields = Vec::new();
    let mut rest = stored;
    while !rest.is_empty() {
        let colon = rest.find(':')?;
        let len_text = &rest[..colon];
        if len_text.is_empty() || !len_text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: usize = len_text.parse().ok()?;
        let body = &rest[colon + 1..];
        let field = body.get(..len)?;
        fields.push(field.to_string());
        rest = &body[len..];
    }
    let mut fields = fields.into_iter();
    let cache = fields.next()?;
    Some((cache, Key(fields.collect())))
}

/// The key of the remote lock that lets one node refresh `stored` per
/// refresh window (L-10). A stored key always starts with a digit (its
/// cache name's length) and a lock key with `lock|`, so the two never
/// collide.
pub fn lock_key(stored: &str) -> String {
    format!("lock|{stored}")
}

/// What a flight is keyed by (L-1, L-5): one stored key, or the sorted,
/// de-duplicated set of stored keys a batch is loading. The two kinds are
/// distinct variants, so a batch flight never collides with a single-key
/// flight even for a one-key batch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlightKey {
    /// A single-key flight (`once`, refresh).
    Single(String),
    /// A batch flight (`load_many`) over these stored keys, sorted.
    Batch(Vec<String>),
}

impl FlightKey {
    /// A batch flight key: sorts and de-duplicates `keys`.
    pub fn batch(mut keys: Vec<String>) -> Self {
        keys.sort();
        keys.dedup();
        Self::Batch(keys)
    }

    /// The stored keys this flight covers.
    pub fn keys(&self) -> Vec<String> {
        match self {
            Self::Single(k) => vec![k.clone()],
            Self::Batch(ks) => ks.clone(),
        }
    }
}

impl fmt::Display for FlightKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(k) => write!(f, "single({k})"),
            Self::Batch(ks) => write!(f, "batch({})", ks.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l5_parse_inverts_stored_key() {
        for (cache, parts) in [
            ("c", vec!["user", "1:2"]),
            ("c:x", vec!["", "9", "a:b:c"]),
            ("", vec![]),
            ("ü", vec!["ß", "12:"]),
        ] {
            let key = Key::new(parts);
            let stored = stored_key(cache, &key);
            assert_eq!(parse_stored_key(&stored), Some((cache.to_string(), key)));
        }
        assert_eq!(parse_stored_key("3:ab"), None);
        assert_eq!(parse_stored_key("x:ab"), None);
    }
}
