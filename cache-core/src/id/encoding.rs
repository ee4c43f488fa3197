//! The canonical byte encoding of a call ID and its decoder (ID-6).
//!
//! Layout (integers big-endian; `str` = u32 byte length + UTF-8 bytes;
//! `opt<T>` = 0x00, or 0x01 followed by T):
//!
//! ```text
//! id      = "CCID" version:u8(=1) call
//! call    = links:u32(>=1) link*links           root receiver first, the id last
//! link    = field:str argc:u32 (name:str literal)*argc
//!           module:opt<str> view:opt<str> nth:u64
//!           custom:opt<[32]> content:opt<[32]> scopes:u32 scope*scopes
//! literal = 0x00 null | 0x01 bool:u8(0|1) | 0x02 i64 | 0x03 str
//!         | 0x04 call | 0x05 n:u32 literal*n
//! scope   = 0x00 client:str | 0x01 session:str | 0x02 call:u64
//!         | 0x03 schema:str | 0x04 client:str schema:str
//! ```
//!
//! Receiver chains are flattened into `links` so that both directions walk
//! them with a loop: chains may be long, while recursion (and so the
//! nesting cap) is only needed for literals. The decoder accepts exactly the
//! bytes the encoder produces (bool and option bytes must be 0 or 1, strings
//! valid UTF-8, no trailing bytes), so the encoding of an ID is unique.
//!
//! The [`Sink`] primitives are shared with the recipe hashing in
//! `digest.rs`, which is what makes that preimage length-prefixed too.

use std::sync::Arc;

use super::{Argument, CallId, IdError, Literal, Parts, Scope, MAX_NESTING_DEPTH};

const MAGIC: &[u8; 4] = b"CCID";
const VERSION: u8 = 1;

const LIT_NULL: u8 = 0x00;
const LIT_BOOL: u8 = 0x01;
const LIT_INT: u8 = 0x02;
const LIT_STRING: u8 = 0x03;
const LIT_ID: u8 = 0x04;
const LIT_LIST: u8 = 0x05;

const SCOPE_CLIENT: u8 = 0x00;
const SCOPE_SESSION: u8 = 0x01;
const SCOPE_CALL: u8 = 0x02;
const SCOPE_SCHEMA: u8 = 0x03;
const SCOPE_CLIENT_SCHEMA: u8 = 0x04;

/// The smallest possible encoded link (empty field, nothing optional set).
const MIN_LINK_LEN: usize = 4 + 4 + 1 + 1 + 8 + 1 + 1 + 4;
/// The smallest possible encoded argument (empty name, null value).
const MIN_ARG_LEN: usize = 4 + 1;
/// The smallest possible encoded scope (tag and an empty string).
const MIN_SCOPE_LEN: usize = 1 + 4;

/// Somewhere bytes go: the wire encoding (`Vec<u8>`) or a hasher.
pub(super) trait Sink {
    /// Appends raw bytes.
    fn put(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    /// A 4-byte length or count.
    fn put_len(&mut self, len: usize) {
        let len = u32::try_from(len).expect("call id strings and lists are limited to u32::MAX");
        self.put(&len.to_be_bytes());
    }

    fn put_u64(&mut self, value: u64) {
        self.put(&value.to_be_bytes());
    }

    fn put_str(&mut self, text: &str) {
        self.put_len(text.len());
        self.put(text.as_bytes());
    }

    fn put_opt_str(&mut self, text: Option<&str>) {
        match text {
            None => self.put_u8(0),
            Some(text) => {
                self.put_u8(1);
                self.put_str(text);
            }
        }
    }

    fn put_digest(&mut self, digest: &super::Digest) {
        self.put(digest.as_bytes());
    }

    fn put_opt_digest(&mut self, digest: Option<&super::Digest>) {
        match digest {
            None => self.put_u8(0),
            Some(digest) => {
                self.put_u8(1);
                self.put_digest(digest);
            }
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes a literal; `write_id` decides what a nested call ID becomes (the
/// whole ID on the wire, only its input digest in a hash).
pub(super) fn write_literal<S: Sink>(sink: &mut S, value: &Literal, write_id: fn(&mut S, &CallId)) {
    match value {
        Literal::Null => sink.put_u8(LIT_NULL),
        Literal::Bool(b) => {
            sink.put_u8(LIT_BOOL);
            sink.put_u8(u8::from(*b));
        }
        Literal::Int(i) => {
            sink.put_u8(LIT_INT);
            sink.put(&i.to_be_bytes());
        }
        Literal::String(text) => {
            sink.put_u8(LIT_STRING);
            sink.put_str(text);
        }
        Literal::Id(id) => {
            sink.put_u8(LIT_ID);
            write_id(sink, id);
        }
        Literal::List(items) => {
            sink.put_u8(LIT_LIST);
            sink.put_len(items.len());
            for item in items {
                write_literal(sink, item, write_id);
            }
        }
    }
}

pub(super) fn write_scope<S: Sink>(sink: &mut S, scope: &Scope) {
    match scope {
        Scope::Client(client) => {
            sink.put_u8(SCOPE_CLIENT);
            sink.put_str(client);
        }
        Scope::Session(session) => {
            sink.put_u8(SCOPE_SESSION);
            sink.put_str(session);
        }
        Scope::Call(nonce) => {
            sink.put_u8(SCOPE_CALL);
            sink.put_u64(*nonce);
        }
        Scope::Schema(schema) => {
            sink.put_u8(SCOPE_SCHEMA);
            sink.put_str(schema);
        }
        Scope::ClientSchema { client, schema } => {
            sink.put_u8(SCOPE_CLIENT_SCHEMA);
            sink.put_str(client);
            sink.put_str(schema);
        }
    }
}

/// See [`CallId::encode`].
pub(super) fn encode(id: &CallId) -> Vec<u8> {
    let mut out = Vec::new();
    out.put(MAGIC);
    out.put_u8(VERSION);
    write_call(&mut out, id);
    out
}

fn write_call(out: &mut Vec<u8>, id: &CallId) {
    let chain = id.chain();
    out.put_len(chain.len());
    for link in chain {
        write_link(out, &link.inner.parts);
    }
}

fn write_link(out: &mut Vec<u8>, parts: &Parts) {
    out.put_str(&parts.field);
    // Sensitive arguments are left out, count included (ID-3).
    out.put_len(parts.args.iter().filter(|a| !a.sensitive).count());
    for arg in parts.args.iter().filter(|a| !a.sensitive) {
        out.put_str(&arg.name);
        write_literal(out, &arg.value, write_call);
    }
    out.put_opt_str(parts.module.as_deref());
    out.put_opt_str(parts.view.as_deref());
    out.put_u64(parts.nth);
    out.put_opt_digest(parts.custom_digest.as_ref());
    out.put_opt_digest(parts.content_digest.as_ref());
    out.put_len(parts.scopes.len());
    for scope in &parts.scopes {
        write_scope(out, scope);
    }
}

/// See [`CallId::decode`].
pub(super) fn decode(bytes: &[u8]) -> Result<CallId, IdError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(MAGIC.len(), "4-byte magic").ok() != Some(&MAGIC[..]) {
        return Err(IdError::BadMagic);
    }
    let version = r.u8("1-byte version")?;
    if version != VERSION {
        return Err(IdError::UnsupportedVersion {
            found: version,
            expected: VERSION,
        });
    }
    let id = read_call(&mut r, 0)?;
    if r.remaining() > 0 {
        return Err(IdError::TrailingBytes {
            offset: r.pos,
            count: r.remaining(),
        });
    }
    Ok(id)
}

/// A cursor over the input. Every read checks the remaining length first,
/// so nothing is sliced out of bounds or allocated beyond the input's size.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, expected: &'static str) -> Result<&'a [u8], IdError> {
        if self.remaining() < n {
            return Err(IdError::Truncated {
                offset: self.pos,
                expected,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N], IdError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, expected)?);
        Ok(out)
    }

    fn u8(&mut self, expected: &'static str) -> Result<u8, IdError> {
        Ok(self.array::<1>(expected)?[0])
    }

    fn u64(&mut self) -> Result<u64, IdError> {
        Ok(u64::from_be_bytes(self.array("8-byte integer")?))
    }

    /// A count of items each at least `min_item_len` bytes long, rejected up
    /// front if the rest of the input can't hold that many.
    fn count(&mut self, min_item_len: usize) -> Result<usize, IdError> {
        let offset = self.pos;
        let raw = u32::from_be_bytes(self.array("4-byte length")?);
        let len = raw as usize;
        if len.saturating_mul(min_item_len) > self.remaining() {
            return Err(IdError::LengthOutOfRange {
                offset,
                len: u64::from(raw),
                remaining: self.remaining(),
            });
        }
        Ok(len)
    }

    fn string(&mut self) -> Result<String, IdError> {
        Ok(self.str()?.to_owned())
    }

    /// A string borrowed from the input: a field, module or view is kept
    /// as an `Arc<str>`, made straight from it (an owned `String` first
    /// would be one more allocation, copy and free per link).
    fn str(&mut self) -> Result<&'a str, IdError> {
        let len = self.count(1)?;
        let offset = self.pos;
        let bytes = self.take(len, "string bytes")?;
        std::str::from_utf8(bytes).map_err(|_| IdError::InvalidUtf8 { offset })
    }

    fn opt_str(&mut self, kind: &'static str) -> Result<Option<&'a str>, IdError> {
        Ok(if self.present(kind)? {
            Some(self.str()?)
        } else {
            None
        })
    }

    /// An option flag: exactly 0 or 1, so the encoding stays canonical.
    fn present(&mut self, kind: &'static str) -> Result<bool, IdError> {
        let offset = self.pos;
        match self.u8("1-byte option tag")? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(IdError::UnknownTag { kind, tag, offset }),
        }
    }

    fn opt_digest(&mut self, kind: &'static str) -> Result<Option<super::Digest>, IdError> {
        if !self.present(kind)? {
            return Ok(None);
        }
        Ok(Some(super::Digest::from_bytes(
            self.array("32-byte digest")?,
        )))
    }
}

/// Reads a receiver chain, building each link on the previous one. The
/// recipe digests are recomputed here, not trusted from the input.
fn read_call(r: &mut Reader<'_>, depth: usize) -> Result<CallId, IdError> {
    let offset = r.pos;
    let links = r.count(MIN_LINK_LEN)?;
    if links == 0 {
        return Err(IdError::EmptyChain { offset });
    }
    let mut id = CallId::from_parts(read_link(r, None, depth)?);
    for _ in 1..links {
        id = CallId::from_parts(read_link(r, Some(id), depth)?);
    }
    Ok(id)
}

fn read_link(r: &mut Reader<'_>, receiver: Option<CallId>, depth: usize) -> Result<Parts, IdError> {
    let field = r.str()?;
    let argc = r.count(MIN_ARG_LEN)?;
    let mut args = Vec::with_capacity(argc);
    for _ in 0..argc {
        let name = r.string()?;
        let value = read_literal(r, depth)?;
        args.push(Argument {
            name,
            value,
            sensitive: false,
        });
    }
    let module = r.opt_str("module option")?;
    let view = r.opt_str("view option")?;
    let nth = r.u64()?;
    let custom_digest = r.opt_digest("custom digest option")?;
    let content_digest = r.opt_digest("content digest option")?;
    let scope_count = r.count(MIN_SCOPE_LEN)?;
    let mut scopes = Vec::with_capacity(scope_count);
    for _ in 0..scope_count {
        scopes.push(read_scope(r)?);
    }
    Ok(Parts {
        field: field.into(),
        receiver,
        args: Arc::new(args),
        module: module.map(Arc::from),
        view: view.map(Arc::from),
        nth,
        custom_digest,
        content_digest,
        scopes,
    })
}

/// Reads a literal found inside `depth` enclosing lists or IDs.
fn read_literal(r: &mut Reader<'_>, depth: usize) -> Result<Literal, IdError> {
    let offset = r.pos;
    let tag = r.u8("1-byte literal tag")?;
    // Lists and IDs recurse; cap how deep before going any further.
    if matches!(tag, LIT_ID | LIT_LIST) && depth >= MAX_NESTING_DEPTH {
        return Err(IdError::TooDeep {
            max: MAX_NESTING_DEPTH,
            offset,
        });
    }
    Ok(match tag {
        LIT_NULL => Literal::Null,
        LIT_BOOL => {
            let at = r.pos;
            match r.u8("1-byte bool")? {
                0 => Literal::Bool(false),
                1 => Literal::Bool(true),
                tag => {
                    return Err(IdError::UnknownTag {
                        kind: "bool",
                        tag,
                        offset: at,
                    })
                }
            }
        }
        LIT_INT => Literal::Int(i64::from_be_bytes(r.array("8-byte integer")?)),
        LIT_STRING => Literal::String(r.string()?),
        LIT_ID => Literal::Id(read_call(r, depth + 1)?),
        LIT_LIST => {
            let n = r.count(1)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_literal(r, depth + 1)?);
            }
            Literal::List(items)
        }
        tag => {
            return Err(IdError::UnknownTag {
                kind: "literal",
                tag,
                offset,
            })
        }
    })
}

fn read_scope(r: &mut Reader<'_>) -> Result<Scope, IdError> {
    let offset = r.pos;
    Ok(match r.u8("1-byte scope tag")? {
        SCOPE_CLIENT => Scope::Client(r.string()?),
        SCOPE_SESSION => Scope::Session(r.string()?),
        SCOPE_CALL => Scope::Call(r.u64()?),
        SCOPE_SCHEMA => Scope::Schema(r.string()?),
        SCOPE_CLIENT_SCHEMA => Scope::ClientSchema {
            client: r.string()?,
            schema: r.string()?,
        },
        tag => {
            return Err(IdError::UnknownTag {
                kind: "scope",
                tag,
                offset,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Digest;

    fn s(text: &str) -> Literal {
        Literal::from(text)
    }

    /// An ID that sets every part somewhere: receivers, lists, nested IDs,
    /// module, view, nth, custom and content digests, every scope kind.
    fn everything() -> CallId {
        let dep = CallId::new("git")
            .with_arg("url", s("https://example.com/repo"))
            .with_content_digest(Digest::of(b"tree"));
        let mut id = CallId::new("container").with_module("core").with_view("v1");
        for i in 0..5u64 {
            id = CallId::new(format!("step{i}"))
                .with_receiver(id)
                .with_arg("i", Literal::Int(i as i64 - 2))
                .with_nth(i * 1000);
        }
        id.with_arg("null", Literal::Null)
            .with_arg(
                "flags",
                Literal::List(vec![Literal::Bool(true), Literal::Bool(false)]),
            )
            .with_arg("min", Literal::Int(i64::MIN))
            .with_arg("text", s("héllo\0world"))
            .with_arg("dep", Literal::Id(dep.clone()))
            .with_arg(
                "nested",
                Literal::List(vec![
                    Literal::List(vec![]),
                    Literal::List(vec![Literal::Id(dep.with_scope(Scope::Call(9))), s("")]),
                ]),
            )
            .with_arg("", s("empty name"))
            .with_module("mod")
            .with_view("view")
            .with_nth(u64::MAX)
            .with_custom_digest(Digest::of(b"custom"))
            .with_content_digest(Digest::of(b"content"))
            .with_scope(Scope::Client("c".into()))
            .with_scope(Scope::Session("s".into()))
            .with_scope(Scope::Call(u64::MAX))
            .with_scope(Scope::Schema("sch".into()))
            .with_scope(Scope::ClientSchema {
                client: "c".into(),
                schema: "sch".into(),
            })
    }

    fn assert_round_trip(id: &CallId) {
        let bytes = id.encode();
        let back = CallId::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, *id);
        assert_eq!(back.recipe_digest(), id.recipe_digest());
        assert_eq!(back.content_digest(), id.content_digest());
        assert_eq!(back.custom_digest(), id.custom_digest());
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn id6_round_trip() {
        let id = everything();
        assert_round_trip(&id);
        assert_round_trip(&CallId::new(""));
        assert_round_trip(&CallId::new("f").with_content_digest(Digest::of(b"c")));

        // Walk the decoded receiver chain and check the parts came back.
        let back = CallId::decode(&id.encode()).unwrap();
        assert_eq!(back.args().len(), id.args().len());
        assert_eq!(back.scopes().len(), 5);
        assert_eq!(back.nth(), u64::MAX);
        assert_eq!((back.module(), back.view()), (Some("mod"), Some("view")));
        let mut depth = 0;
        let (mut a, mut b) = (Some(&back), Some(&id));
        while let (Some(x), Some(y)) = (a, b) {
            assert_eq!(x.field(), y.field());
            assert_eq!(x.recipe_digest(), y.recipe_digest());
            (a, b, depth) = (x.receiver(), y.receiver(), depth + 1);
        }
        assert!(a.is_none() && b.is_none());
        assert_eq!(depth, 6);

        // A receiver chain longer than the nesting cap is fine: it is a loop.
        let mut long = CallId::new("root");
        for i in 0..(3 * MAX_NESTING_DEPTH as u64) {
            long = CallId::new("next").with_receiver(long).with_nth(i);
        }
        assert_round_trip(&long);
        // Literal nesting exactly at the cap is fine too.
        let mut lit = Literal::Null;
        for _ in 0..MAX_NESTING_DEPTH {
            lit = Literal::List(vec![lit]);
        }
        assert_round_trip(&CallId::new("f").with_arg("deep", lit));
    }

    /// A tiny deterministic generator, so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// Decoding must not panic; and whatever it accepts must be canonical.
    fn decode_checked(bytes: &[u8]) -> Result<CallId, IdError> {
        let result = CallId::decode(bytes);
        if let Ok(id) = &result {
            assert_eq!(id.encode(), bytes, "accepted a non-canonical encoding");
        }
        result
    }

    #[test]
    fn id6_decode_rejects_garbage_without_panic() {
        let valid = everything().encode();

        for len in 0..valid.len() {
            let err = decode_checked(&valid[..len]).expect_err("a truncation decoded");
            assert!(!err.to_string().is_empty());
        }

        let mut accepted = 0;
        for i in 0..valid.len() {
            for flip in [0x01u8, 0x02, 0x10, 0x80, 0xff] {
                let mut mutated = valid.clone();
                mutated[i] ^= flip;
                accepted += usize::from(decode_checked(&mutated).is_ok());
            }
        }
        // Flips inside strings and digests stay valid; most others don't.
        assert!(accepted > 0 && accepted < valid.len() * 5);

        let mut extra = valid.clone();
        extra.push(0);
        assert!(matches!(
            decode_checked(&extra),
            Err(IdError::TrailingBytes { count: 1, .. })
        ));

        let mut rng = Lcg(0x5eed);
        for round in 0..2000 {
            let len = (rng.next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Half the time get past the header, to exercise the body.
            if round % 2 == 0 {
                bytes.splice(0..0, MAGIC.iter().copied().chain([VERSION]));
            }
            let _ = decode_checked(&bytes);
        }
    }

    #[test]
    fn decode_errors_are_clear() {
        assert_eq!(CallId::decode(b""), Err(IdError::BadMagic));
        assert_eq!(CallId::decode(b"JUNK\x01"), Err(IdError::BadMagic));
        assert_eq!(
            CallId::decode(b"CCID\x07").unwrap_err().to_string(),
            "unsupported call id encoding version 7 (expected 1)"
        );
        assert_eq!(
            CallId::decode(b"CCID\x01\x00\x00").unwrap_err().to_string(),
            "truncated input at byte 5: expected 4-byte length"
        );
        assert_eq!(
            CallId::decode(b"CCID\x01\x00\x00\x00\x00").unwrap_err(),
            IdError::EmptyChain { offset: 5 }
        );
        // One link, field "", one argument "" with literal tag 0x09.
        let mut bytes = b"CCID\x01".to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x09]);
        bytes.resize(bytes.len() + MIN_LINK_LEN, 0);
        assert_eq!(
            CallId::decode(&bytes).unwrap_err().to_string(),
            "unknown literal tag 0x09 at byte 21"
        );
        // A huge length is refused before anything is allocated for it.
        let mut bytes = b"CCID\x01".to_vec();
        bytes.extend_from_slice(&[0xff; 4]);
        assert!(matches!(
            CallId::decode(&bytes),
            Err(IdError::LengthOutOfRange {
                offset: 5,
                len: 0xffff_ffff,
                remaining: 0
            })
        ));
    }

    /// The up-front count checks assume these smallest encodings; they must
    /// be exactly the smallest items, or corrupt counts slip through to a
    /// large allocation (or valid input is refused).
    #[test]
    fn the_minimum_lengths_are_those_of_the_smallest_items() {
        let bare = CallId::new("").encode();
        assert_eq!(
            bare.len(),
            5 + 4 + MIN_LINK_LEN,
            "header, count, one empty link"
        );
        let arg = CallId::new("").with_arg("", Literal::Null).encode();
        assert_eq!(
            arg.len() - bare.len(),
            MIN_ARG_LEN,
            "an empty name and null"
        );
        let scope = CallId::new("")
            .with_scope(Scope::Client(String::new()))
            .encode();
        assert_eq!(
            scope.len() - bare.len(),
            MIN_SCOPE_LEN,
            "a tag and an empty string"
        );
    }

    #[test]
    fn id6_deep_nesting_rejected() {
        // Built by hand: one link, field "", one argument "" holding 300
        // nested one-element lists.
        let mut bytes = b"CCID\x01".to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        for _ in 0..300 {
            bytes.extend_from_slice(&[LIT_LIST, 0, 0, 0, 1]);
        }
        bytes.push(LIT_NULL);
        bytes.resize(bytes.len() + MIN_LINK_LEN, 0);
        let err = CallId::decode(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                IdError::TooDeep {
                    max: MAX_NESTING_DEPTH,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("nesting deeper than 256"),
            "{err}"
        );

        // Built through the API: one level over the cap, with lists...
        let mut lit = Literal::Null;
        for _ in 0..=MAX_NESTING_DEPTH {
            lit = Literal::List(vec![lit]);
        }
        let id = CallId::new("f").with_arg("deep", lit);
        assert!(matches!(
            CallId::decode(&id.encode()),
            Err(IdError::TooDeep { .. })
        ));

        // ...and with IDs as arguments of IDs.
        let mut id = CallId::new("leaf");
        for _ in 0..=MAX_NESTING_DEPTH {
            id = CallId::new("wrap").with_arg("inner", Literal::Id(id));
        }
        assert!(matches!(
            CallId::decode(&id.encode()),
            Err(IdError::TooDeep { .. })
        ));
    }
}
