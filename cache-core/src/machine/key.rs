//! [`IndexKey`]: how the call indexes hold storage, result call and content
//! keys.
//!
//! Almost every such key is a digest's text (`sha256:` + 64 hex digits):
//! call keys, content keys, and the storage keys the TTL rules derive (T-2).
//! Held as text, each one is a 71-byte heap string per index, per slot and
//! per entry field: a hit formats and hashes 71 bytes, and removing an entry
//! frees half a dozen strings. Held as the digest's 32 raw bytes
//! it is `Copy`-cheap, hashes in four words and is compared inline.
//!
//! The mapping is one to one: [`Digest::parse`] accepts only the canonical
//! text, so a key is stored as a digest exactly when its text parses, and
//! anything else stays text. Two keys are therefore equal exactly when their
//! texts are (C-13's identity checks compare the same thing as before), and
//! they order as their texts do, so every sorted walk (reports, invariant
//! messages) sees the same order as with string keys.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use crate::id::{Digest, DigestText};

/// The length of a digest's text: `sha256:` and 64 hex digits.
const DIGEST_TEXT_LEN: usize = 7 + 64;

/// A key of the call indexes, held as a digest when its text is one.
#[derive(Clone, PartialEq, Eq)]
pub struct IndexKey(Repr);

/// Never `Text` of a canonical digest's text (see the module docs).
#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Digest(Digest),
    Text(Box<str>),
}

impl IndexKey {
    /// The key whose text is `digest`'s (`sha256:<hex>`).
    pub fn digest(digest: Digest) -> Self {
        IndexKey(Repr::Digest(digest))
    }

    /// The key with text `text`.
    pub fn from_text(text: &str) -> Self {
        // Only a digest's length can parse; anything else skips the parser
        // (whose error would be built, then dropped).
        let parsed = (text.len() == DIGEST_TEXT_LEN).then(|| Digest::parse(text));
        match parsed {
            Some(Ok(d)) => Self::digest(d),
            _ => IndexKey(Repr::Text(text.into())),
        }
    }

    /// The key's text on the heap: what `to_string` gives, without the
    /// formatting machinery (a miss makes two of these, so the formatter's
    /// overhead showed on the miss path).
    pub fn to_text(&self) -> String {
        String::from(&*self.text())
    }

    /// The key's text, on the stack for a digest.
    pub fn text(&self) -> KeyText<'_> {
        match &self.0 {
            Repr::Digest(d) => KeyText::Digest(d.text()),
            Repr::Text(t) => KeyText::Text(t),
        }
    }
}

/// How many bytes of a digest a short key keeps: the 12 hex digits that
/// [`short`](super::entry::short) prints.
const SHORT_DIGEST: usize = 6;

/// The part of an [`IndexKey`] that a label prints (see
/// [`short`](super::entry::short)): 16 bytes instead of 40, and no copy of
/// a long text key.
pub enum ShortKey {
    /// A digest's first bytes.
    Digest([u8; SHORT_DIGEST]),
    /// The short form of any other key.
    Text(Box<str>),
}

impl IndexKey {
    /// The part of this key a label prints.
    pub fn short(&self) -> ShortKey {
        match &self.0 {
            Repr::Digest(d) => {
                let mut head = [0u8; SHORT_DIGEST];
                head.copy_from_slice(&d.as_bytes()[..SHORT_DIGEST]);
                ShortKey::Digest(head)
            }
            Repr::Text(t) => ShortKey::Text(super::entry::short(t).into()),
        }
    }
}

impl fmt::Display for ShortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A digest's text is lowercase hex (`Digest::parse` accepts no
            // other), so its first 12 digits are these bytes' hex.
            ShortKey::Digest(head) => f.write_str(&hex::encode(head)),
            ShortKey::Text(t) => f.write_str(t),
        }
    }
}

impl Hash for IndexKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.0 {
            // Four words, no length prefix: the fixed-size case of the hit path.
            Repr::Digest(d) => {
                for word in d.as_bytes().chunks_exact(8) {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(word);
                    state.write_u64(u64::from_le_bytes(w));
                }
            }
            Repr::Text(t) => {
                state.write_u8(0xff);
                t.hash(state);
            }
        }
    }
}

impl Ord for IndexKey {
    /// The order of the texts. Two digests compare by their bytes, which is
    /// the same: equal prefixes, and lowercase hex sorts as its values do.
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Digest(a), Repr::Digest(b)) => a.as_bytes().cmp(b.as_bytes()),
            _ => (*self.text()).cmp(&*other.text()),
        }
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for IndexKey {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            Repr::Digest(d) => *d.text() == *other,
            Repr::Text(t) => **t == *other,
        }
    }
}

impl fmt::Display for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text(), f)
    }
}

/// An [`IndexKey`]'s text: formatted on the stack for a digest, borrowed
/// otherwise.
pub enum KeyText<'a> {
    /// A digest's text.
    Digest(DigestText),
    /// Any other key.
    Text(&'a str),
}

impl Deref for KeyText<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            KeyText::Digest(d) => d.as_str(),
            KeyText::Text(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_orders_as_text() {
        let a = Digest::of(b"a").to_string();
        let b = Digest::of(b"b").to_string();
        let texts = [
            a.clone(),
            b.clone(),
            "planted-foreign-key".to_string(),
            "sha256:not-hex".to_string(),
            "zzz".to_string(),
            a.to_uppercase(),
            String::new(),
        ];
        let keys: Vec<IndexKey> = texts.iter().map(|t| IndexKey::from_text(t)).collect();
        assert!(matches!(keys[0].0, Repr::Digest(_)));
        assert!(matches!(keys[3].0, Repr::Text(_)));
        for (t, k) in texts.iter().zip(&keys) {
            assert_eq!(k.to_string(), *t);
            assert_eq!(format!("{k:?}"), format!("{t:?}"));
            assert!(*k == **t);
        }
        for (ti, ki) in texts.iter().zip(&keys) {
            for (tj, kj) in texts.iter().zip(&keys) {
                assert_eq!(ki.cmp(kj), ti.cmp(tj), "{ti} vs {tj}");
                assert_eq!(ki.partial_cmp(kj), ti.partial_cmp(tj), "{ti} vs {tj}");
                assert_eq!(ki < kj, ti < tj, "{ti} vs {tj}");
                assert_eq!(ki == kj, ti == tj);
            }
        }
    }

    /// A short key prints what `short` prints of the whole key's text, for
    /// digests and other texts alike, and stays small (one is queued per
    /// released handle, 100k of them for a large session close).
    #[test]
    fn a_short_key_prints_as_the_short_text() {
        let texts = [
            Digest::of(b"a").to_string(),
            "planted-foreign-key".to_string(),
            "short".to_string(),
            "sha256:not-hex".to_string(),
            "ünïcödé-keys-are-cut-at-chars".to_string(),
            String::new(),
        ];
        for t in &texts {
            let key = IndexKey::from_text(t);
            assert_eq!(
                key.short().to_string(),
                super::super::entry::short(t),
                "{t}"
            );
        }
        assert!(matches!(
            IndexKey::from_text(&texts[0]).short(),
            ShortKey::Digest(_)
        ));
        assert_eq!(std::mem::size_of::<ShortKey>(), 16);
        assert!(std::mem::size_of::<crate::machine::PendingRelease>() <= 48);
    }

    /// The index maps hash keys by their content: distinct keys (digests
    /// and texts alike) spread over the table instead of sharing a bucket.
    #[test]
    fn distinct_keys_hash_apart() {
        use std::hash::BuildHasher;
        let hasher = std::hash::BuildHasherDefault::<rustc_hash::FxHasher>::default();
        let keys: Vec<IndexKey> = (0..64)
            .map(|i| IndexKey::digest(Digest::of(format!("k{i}").as_bytes())))
            .chain((0..64).map(|i| IndexKey::from_text(&format!("text-{i}"))))
            .collect();
        let hashes: std::collections::BTreeSet<u64> =
            keys.iter().map(|k| hasher.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len());
        let same = IndexKey::from_text(&Digest::of(b"k0").to_string());
        assert_eq!(
            hasher.hash_one(&same),
            hasher.hash_one(&keys[0]),
            "a digest's text is the digest"
        );
    }
}
