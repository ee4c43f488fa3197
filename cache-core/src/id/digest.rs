//! The [`Digest`] type and the canonical recipe hashing (ID-2, ID-5, ID-7).
//!
//! The recipe digest is SHA-256 over a serialisation written with the same
//! self-delimiting primitives as the wire encoding (every component tagged,
//! every string and sequence length-prefixed), so distinct recipes have
//! distinct preimages and cannot collide by concatenation (ID-7).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::encoding::{write_literal, write_scope, Sink};
use super::{CallId, IdError, Parts};

/// A SHA-256 digest. Displays and parses as `sha256:<64 lowercase hex>`,
/// like OCI digests.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

const PREFIX: &str = "sha256:";

/// Domain separators: a recipe preimage can never be mistaken for a scoped
/// one, nor for anything else hashed with SHA-256.
const RECIPE_DOMAIN: &str = "cache-core/id/recipe/v1";
const SCOPED_DOMAIN: &str = "cache-core/id/scoped/v1";

impl Digest {
    /// The SHA-256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// A digest from its raw bytes (e.g. read back from storage).
    pub const fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// Parses `sha256:` followed by exactly 64 lowercase hex digits. Only
    /// this canonical form is accepted, so text and digest map one to one.
    pub fn parse(text: &str) -> Result<Digest, IdError> {
        let invalid = |reason| IdError::InvalidDigest {
            text: text.chars().take(80).collect(),
            reason,
        };
        let hex_part = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| invalid("expected the prefix \"sha256:\""))?;
        if hex_part.len() != 64 {
            return Err(invalid("expected 64 hex digits after \"sha256:\""));
        }
        if !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid("expected only lowercase hex digits 0-9a-f"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid("invalid hex"))?;
        Ok(Digest(bytes))
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// A digest's text (`sha256:<64 hex>`) on the stack: a cache lookup needs
/// its call key as text, but not on the heap.
#[derive(Clone, Copy)]
pub struct DigestText([u8; PREFIX.len() + 64]);

impl DigestText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Always ASCII: the prefix and lowercase hex.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for DigestText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Each byte's two lowercase hex digits: one load per byte instead of two
/// nibble lookups (every miss formats its storage key).
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
        byte += 1;
    }
    pairs
};

impl Digest {
    /// The digest's text, formatted on the stack in one pass: every cache
    /// lookup formats its call key, so this is on the hit path.
    pub fn text(&self) -> DigestText {
        let mut text = [0u8; PREFIX.len() + 64];
        text[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        for (pair, byte) in text[PREFIX.len()..].chunks_exact_mut(2).zip(self.0) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
        DigestText(text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Digest, IdError> {
        Digest::parse(text)
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

fn finish(hasher: Sha256) -> Digest {
    Digest(hasher.finalize().into())
}

/// The recipe digest of `parts` (ID-2, ID-5): the custom digest if set, else
/// the hash of the recipe; then, if there are scopes, a hash of that base
/// digest with the scopes mixed in.
pub(super) fn recipe_digest(parts: &Parts) -> Digest {
    let base = parts.custom_digest.unwrap_or_else(|| base_digest(parts));
    if parts.scopes.is_empty() {
        return base;
    }
    // Mixed in on top of the base (computed or custom) so that a custom
    // digest can't erase the scope.
    let mut h = Sha256::new();
    h.put_str(SCOPED_DOMAIN);
    h.put_digest(&base);
    h.put_len(parts.scopes.len());
    for scope in &parts.scopes {
        write_scope(&mut h, scope);
    }
    finish(h)
}

/// The hash of the recipe proper: receiver, field, non-sensitive arguments,
/// module, view and nth. IDs (receiver, argument values) contribute only
/// their input digest, which is what lets equal content share a recipe.
fn base_digest(parts: &Parts) -> Digest {
    let mut h = Sha256::new();
    h.put_str(RECIPE_DOMAIN);
    match &parts.receiver {
        None => h.put_u8(0),
        Some(receiver) => {
            h.put_u8(1);
            h.put_digest(&receiver.input_digest());
        }
    }
    h.put_str(&parts.field);
    // Sensitive arguments are skipped entirely, count included (ID-3).
    h.put_len(parts.args.iter().filter(|a| !a.sensitive).count());
    for arg in parts.args.iter().filter(|a| !a.sensitive) {
        h.put_str(&arg.name);
        write_literal(&mut h, &arg.value, hash_id);
    }
    h.put_opt_str(parts.module.as_deref());
    h.put_opt_str(parts.view.as_deref());
    h.put_u64(parts.nth);
    finish(h)
}

fn hash_id(h: &mut Sha256, id: &CallId) {
    h.put_digest(&id.input_digest());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Literal;

    #[test]
    fn digest_of_is_sha256() {
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn id7_no_concatenation_collision() {
        let d = |id: CallId| id.recipe_digest();
        let s = |t: &str| Literal::from(t);
        // Field + argument name boundary.
        assert_ne!(
            d(CallId::new("a").with_arg("bc", Literal::Null)),
            d(CallId::new("ab").with_arg("c", Literal::Null))
        );
        // Argument name + value boundary.
        assert_ne!(
            d(CallId::new("f").with_arg("a", s("bc"))),
            d(CallId::new("f").with_arg("ab", s("c")))
        );
        // One argument vs two.
        assert_ne!(
            d(CallId::new("f").with_arg("a", s("b"))),
            d(CallId::new("f")
                .with_arg("a", s(""))
                .with_arg("b", Literal::Null))
        );
        // List element boundaries and list nesting.
        assert_ne!(
            d(CallId::new("f").with_arg("l", Literal::List(vec![s("a"), s("bc")]))),
            d(CallId::new("f").with_arg("l", Literal::List(vec![s("ab"), s("c")])))
        );
        assert_ne!(
            d(CallId::new("f").with_arg(
                "l",
                Literal::List(vec![Literal::List(vec![]), Literal::Null])
            )),
            d(CallId::new("f")
                .with_arg("l", Literal::List(vec![Literal::List(vec![Literal::Null])])))
        );
        // Module vs view, and field vs module.
        assert_ne!(
            d(CallId::new("f").with_module("x")),
            d(CallId::new("f").with_view("x"))
        );
        assert_ne!(d(CallId::new("fx")), d(CallId::new("f").with_module("x")));
        // Literal kinds are tagged: "1" vs 1, null vs empty list, false vs 0.
        let one = |v: Literal| d(CallId::new("f").with_arg("a", v));
        assert_ne!(one(s("1")), one(Literal::Int(1)));
        assert_ne!(one(Literal::Null), one(Literal::List(vec![])));
        assert_ne!(one(Literal::Bool(false)), one(Literal::Int(0)));
        assert_ne!(one(Literal::Null), one(s("")));
        // An ID argument vs its digest's text.
        let id = CallId::new("x");
        assert_ne!(one(Literal::Id(id.clone())), one(s(&id.call_key())));
    }

    #[test]
    fn digest_display_and_parse_round_trip() {
        for input in [&b""[..], b"abc", b"\x00\xff"] {
            let d = Digest::of(input);
            let text = d.to_string();
            assert!(text.starts_with("sha256:"));
            assert_eq!(text.len(), 7 + 64);
            assert_eq!(Digest::parse(&text), Ok(d));
            assert_eq!(text.parse::<Digest>(), Ok(d));
            assert_eq!(Digest::from_bytes(*d.as_bytes()), d);
        }
        let zero = Digest::from_bytes([0; 32]);
        assert_eq!(zero.to_string(), format!("sha256:{}", "0".repeat(64)));
        assert_eq!(
            format!("{zero:?}"),
            format!("Digest(sha256:{})", "0".repeat(64))
        );
    }

    #[test]
    fn digest_parse_rejects_bad_text() {
        let good = Digest::of(b"x").to_string();
        let hex_part = &good[7..];
        let bad = [
            String::new(),
            "sha256:".to_string(),
            hex_part.to_string(),                          // no prefix
            format!("sha512:{hex_part}"),                  // wrong algorithm
            format!("SHA256:{hex_part}"),                  // prefix case
            format!("sha256:{}", hex_part.to_uppercase()), // uppercase hex
            format!("sha256:{}", &hex_part[1..]),          // 63 digits
            format!("{good}0"),                            // 65 digits
            format!("sha256:{}g", &hex_part[1..]),         // non-hex
            format!(" {good}"),                            // whitespace
            format!("{good}\n"),
            format!("sha256:{}é", &hex_part[2..]), // 64 bytes, not hex
        ];
        for text in &bad {
            match Digest::parse(text) {
                Err(err @ IdError::InvalidDigest { .. }) => {
                    assert!(err.to_string().starts_with("invalid digest text"), "{err}");
                }
                other => panic!("{text:?} parsed as {other:?}"),
            }
        }
        // Long garbage is cut short in the error.
        let err = Digest::parse(&"z".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }
}
