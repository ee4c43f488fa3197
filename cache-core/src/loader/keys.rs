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
    push_len(out, field.len());
    out.push(':');
    out.push_str(field);
}

/// The stored key of `key` in the cache named `cache` (L-5): the cache name
/// and a `:`, then each part length-prefixed, then `#` and the name's byte
/// length. This is the key used in every tier and in the events between
/// nodes.
///
/// The name comes first, verbatim, so a Redis operator finds a cache's keys
/// with `redis-cli --scan --pattern '<name>:*'`. The name may itself hold
/// `:` (so the prefix alone cannot say where the name ends, and simply
/// prepending `<name>:` to a length-prefixed encoding is *not* injective:
/// `("a", ["6:a:1:a8"])` and `("a:1:a8", [])` would meet); the trailing
/// `#<length>` says where it ends. Reading a stored key back from its end
/// (digits, `#`, then the name from the front, then the parts) is
/// deterministic, which is what makes the encoding injective.
///
/// ```
/// use cache_core::loader::keys::{stored_key, Key};
/// let a = stored_key("c", &Key::new(["user", "1:2"]));
/// let b = stored_key("c", &Key::new(["user:1", "2"]));
/// assert_ne!(a, b);
/// assert_eq!(a, "c:4:user3:1:2#1");
/// assert_eq!(stored_key("users", &Key::new(["user", "42"])), "users:4:user2:42#5");
/// ```
pub fn stored_key(cache: &str, key: &Key) -> String {
    let mut out = String::with_capacity(cache.len() + 8);
    out.push_str(cache);
    out.push(':');
    for part in key.parts() {
        push_field(&mut out, part);
    }
    out.push('#');
    push_len(&mut out, cache.len());
    out
}

/// Appends `len` in decimal without a temporary string (stored keys are
/// built on every read).
fn push_len(out: &mut String, len: usize) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{len}");
}

/// Splits a stored key back into (cache name, parts); `None` when `stored`
/// is not a well-formed encoding. The inverse of [`stored_key`], which is
/// what proves the encoding injective.
pub fn parse_stored_key(stored: &str) -> Option<(String, Key)> {
    let hash = stored.rfind('#')?;
    let len_text = &stored[hash + 1..];
    if !canonical_decimal(len_text) {
        return None;
    }
    let name_len: usize = len_text.parse().ok()?;
    let cache = stored.get(..name_len)?;
    let mut rest = stored.get(name_len..hash)?.strip_prefix(':')?;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let colon = rest.find(':')?;
        let len_text = &rest[..colon];
        if !canonical_decimal(len_text) {
            return None;
        }
        let len: usize = len_text.parse().ok()?;
        let body = &rest[colon + 1..];
        let field = body.get(..len)?;
        parts.push(field.to_string());
        rest = &body[len..];
    }
    Some((cache.to_string(), Key(parts)))
}

/// Digits only, no leading zero (but `0` itself): the one spelling
/// [`stored_key`] writes, so parsing accepts nothing it would not write.
fn canonical_decimal(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// The key of the remote lock that lets one node refresh `stored` per
/// refresh window (L-10): the stored key and `:lock`. It starts with the
/// cache's `<name>:` like the value (so a scan of the cache finds it) and
/// never collides with a stored key, which always ends in a digit.
pub fn lock_key(stored: &str) -> String {
    format!("{stored}:lock")
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
        for bad in [
            "3:ab",     // no trailing name length
            "x:ab#1",   // a part without its length
            "c:1:x#01", // a name length with a leading zero
            "c:1:x#2",  // the name length points past the `:`
            "c:2:x#1",  // a part longer than what is left
            "c1:x#1",   // no `:` after the name
        ] {
            assert_eq!(parse_stored_key(bad), None, "{bad:?}");
        }
    }

    /// Prepending `<name>:` to a length-prefixed encoding would collide on
    /// these two; the trailing name length keeps them apart (L-5).
    #[test]
    fn l5_names_holding_colons_stay_apart() {
        let a = stored_key("a", &Key::new(["6:a:1:a8"]));
        let b = stored_key("a:1:a8", &Key::new(Vec::<String>::new()));
        assert_ne!(a, b);
        assert!(a.starts_with("a:") && b.starts_with("a:1:a8:"));
        let lock = lock_key(&a);
        assert!(lock.starts_with("a:"));
        assert_eq!(
            parse_stored_key(&lock),
            None,
            "a lock key is never a stored key"
        );
    }
}
