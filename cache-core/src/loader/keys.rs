//! Key encoding (L-5): the stored key for (cache name, key parts) is an
//! unambiguous, length-prefixed encoding, so no two distinct (name, parts)
//! pairs share a stored key, and batch flights have keys of their own kind.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A key as the caller gives it: one or more parts (`("user", "42")`).
///
/// Parts are kept apart, never joined with a separator a part could contain:
/// `["user", "1:2"]` and `["user:1", "2"]` are different keys (L-5).
///
/// The parts are shared: a clone (a batch's keys handed to its loader, a
/// flight's key, a caller's reused key list) is a count increment, not a
/// copy of every part.
///
/// Keys order as their parts do, lexicographically (as a derived order
/// would). Each key also carries its sort tag: the first 8 bytes of its
/// first part, zero-padded and read big-endian, which orders like the
/// full comparison wherever two tags differ (a zero pad sorts a shorter
/// part first, as the full comparison does). A comparison of short keys
/// is then one integer comparison, and only keys with equal tags compare
/// their parts; a batch sorts its keys (L-13) mostly on integers.
#[derive(Clone)]
pub struct Key {
    tag: u64,
    parts: Arc<[String]>,
}

impl Key {
    /// A key from its parts, in order.
    pub fn new<I, S>(parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::of(parts.into_iter().map(Into::into).collect())
    }

    fn of(parts: Arc<[String]>) -> Self {
        let mut tag = [0u8; 8];
        if let Some(first) = parts.first() {
            let n = first.len().min(8);
            tag[..n].copy_from_slice(&first.as_bytes()[..n]);
        }
        Self {
            tag: u64::from_be_bytes(tag),
            parts,
        }
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.parts == other.parts
    }
}

impl Eq for Key {}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tag
            .cmp(&other.tag)
            .then_with(|| self.parts.cmp(&other.parts))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The tag is a function of the parts: equal keys hash equally.
        self.parts.hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.parts).finish()
    }
}

/// `keys` sorted and de-duplicated, in [`Key`]'s order (as a `BTreeSet`
/// would give them), in place: the comparisons are mostly of sort tags.
pub fn sort_dedup(mut keys: Vec<Key>) -> Vec<Key> {
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl From<&str> for Key {
    fn from(part: &str) -> Self {
        Self::of(Arc::from([part.to_string()]))
    }
}

impl From<String> for Key {
    fn from(part: String) -> Self {
        Self::of(Arc::from([part]))
    }
}

impl<const N: usize> From<[&str; N]> for Key {
    fn from(parts: [&str; N]) -> Self {
        Self::new(parts)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.parts)
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
    KeyCoder::new(cache).stored_key(key)
}

/// The stored-key encoder of one cache (L-5): its `<name>:` prefix and
/// `#<name length>` suffix written once, so each key costs only its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCoder {
    prefix: String,
    suffix: String,
}

impl KeyCoder {
    /// The encoder of the cache named `cache`.
    pub fn new(cache: &str) -> Self {
        let mut suffix = String::from("#");
        push_len(&mut suffix, cache.len());
        Self {
            prefix: format!("{cache}:"),
            suffix,
        }
    }

    /// [`stored_key`] of `key` in this cache, in one exactly sized allocation.
    pub fn stored_key(&self, key: &Key) -> String {
        let mut out = String::with_capacity(self.len(key));
        self.push(&mut out, key);
        out
    }

    /// The stored keys of `keys`, in order, in one buffer.
    pub fn stored_keys<'k>(&self, keys: impl Iterator<Item = &'k Key> + Clone) -> StoredKeys {
        let total = keys.clone().map(|k| self.len(k)).sum();
        let mut out = StoredKeys {
            text: String::with_capacity(total),
            spans: Vec::with_capacity(keys.size_hint().0),
        };
        for key in keys {
            let start = out.text.len();
            self.push(&mut out.text, key);
            out.spans.push(start..out.text.len());
        }
        out
    }

    fn len(&self, key: &Key) -> usize {
        let fields: usize = key
            .parts()
            .iter()
            .map(|p| decimal_len(p.len()) + 1 + p.len())
            .sum();
        self.prefix.len() + fields + self.suffix.len()
    }

    fn push(&self, out: &mut String, key: &Key) {
        out.push_str(&self.prefix);
        for part in key.parts() {
            push_field(out, part);
        }
        out.push_str(&self.suffix);
    }
}

/// The stored keys of a batch (L-5, L-13), written back to back into one
/// buffer: one allocation for the whole batch instead of one per key, and
/// each key lent out as a `&str` (to the remote's `MGET`, to the machine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredKeys {
    text: String,
    spans: Vec<Range<usize>>,
}

impl StoredKeys {
    /// The `i`-th stored key.
    ///
    /// # Panics
    /// If `i` is out of range, as slice indexing does.
    pub fn get(&self, i: usize) -> &str {
        &self.text[self.spans[i].clone()]
    }

    /// Every stored key, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.spans.iter().map(|r| &self.text[r.clone()])
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// How many decimal digits `n` takes.
fn decimal_len(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Appends `len` in decimal, digit by digit (no formatter, no temporary).
fn push_len(out: &mut String, len: usize) {
    if len < 10 {
        // Most parts are short: one digit, no loop.
        out.push(char::from(b'0' + len as u8));
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
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
    Some((cache.to_string(), Key::of(parts.into())))
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

    /// The digit writer and the exact sizing agree with the formatter at
    /// every width, so no stored key changes spelling or reallocates.
    #[test]
    fn l5_lengths_are_written_as_the_formatter_would() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, usize::MAX] {
            let mut out = String::new();
            push_len(&mut out, n);
            assert_eq!(out, n.to_string());
            assert_eq!(decimal_len(n), out.len(), "{n}");
        }
        let long = "x".repeat(1234);
        let key = Key::new(["", "a", long.as_str()]);
        let coder = KeyCoder::new("cache:with:colons");
        let stored = coder.stored_key(&key);
        assert_eq!(stored.len(), coder.len(&key));
        assert_eq!(stored, format!("cache:with:colons:0:1:a1234:{long}#17"),);
    }

    /// The tagged sort orders and de-duplicates exactly as a set does,
    /// across parts that tie on their first 8 bytes, hold zero bytes, or
    /// are prefixes of each other.
    #[test]
    fn sort_dedup_matches_a_set() {
        let parts: Vec<Vec<&str>> = vec![
            vec!["k10"],
            vec!["k9"],
            vec!["k1"],
            vec!["k10"],
            vec![],
            vec![""],
            vec!["", "a"],
            vec!["a\0"],
            vec!["a"],
            vec!["abcdefgh"],
            vec!["abcdefghZ"],
            vec!["abcdefghA"],
            vec!["abcdefgh", "2"],
            vec!["abcdefgh", "1"],
            vec!["ü", "x"],
            vec!["\u{ff}"],
        ];
        let keys: Vec<Key> = parts.iter().cloned().map(Key::new).collect();
        // The order of the parts themselves, not `Key`'s own.
        let set: std::collections::BTreeSet<Vec<&str>> = parts.into_iter().collect();
        let sorted: Vec<Key> = set.into_iter().map(Key::new).collect();
        assert_eq!(sort_dedup(keys.clone()), sorted);
        // Every pair compares as its parts do, tags equal or not.
        for a in &keys {
            for b in &keys {
                assert_eq!(a.cmp(b), a.parts().cmp(b.parts()), "{a} vs {b}");
                assert_eq!(a == b, a.parts() == b.parts(), "{a} vs {b}");
            }
        }
        // Already ascending: returned as given.
        assert_eq!(sort_dedup(sorted.clone()), sorted);
        // Ascending but for one repeat: still de-duplicated.
        let mut repeat = sorted.clone();
        repeat.insert(3, sorted[3].clone());
        assert_eq!(sort_dedup(repeat), sorted);
    }

    /// A batch's buffer holds exactly each key's own stored key (L-5).
    #[test]
    fn l5_stored_keys_of_a_batch_are_each_keys_stored_key() {
        let keys = [
            Key::new(["user", "1:2"]),
            Key::from(""),
            Key::new(Vec::<String>::new()),
            Key::new(["ü", "x".repeat(12).as_str()]),
        ];
        let batch = KeyCoder::new("c:x").stored_keys(keys.iter());
        assert_eq!(batch.len(), keys.len());
        let each: Vec<String> = keys.iter().map(|k| stored_key("c:x", k)).collect();
        assert_eq!(batch.iter().collect::<Vec<_>>(), each);
        assert_eq!(batch.get(3), each[3]);
        assert!(KeyCoder::new("c").stored_keys([].iter()).is_empty());
    }

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
