//! Call IDs: immutable descriptions of a call, their digests and their
//! canonical byte encoding (SPEC §2, rules ID-1..ID-7).
//!
//! A [`CallId`] names a field, an optional receiver (another call ID),
//! ordered arguments, a module, a view and `nth`. It has a *recipe digest*
//! (how the result is made, [`CallId::recipe_digest`]) and may carry a
//! *content digest* (what the result contains, [`CallId::content_digest`]).
//! Every `with_*` method returns a new ID and leaves the original untouched.
//!
//! ```
//! use cache_core::id::{CallId, Literal};
//!
//! let base = CallId::new("container").with_arg("platform", Literal::from("linux/amd64"));
//! let id = CallId::new("withExec")
//!     .with_receiver(base)
//!     .with_arg("args", Literal::List(vec![Literal::from("echo"), Literal::from("hi")]));
//!
//! // The call key is the recipe digest as text.
//! let key = id.call_key();
//! assert!(key.starts_with("sha256:"));
//!
//! // The canonical encoding round-trips, digests included.
//! let back = CallId::decode(&id.encode()).unwrap();
//! assert_eq!(back, id);
//! assert_eq!(back.call_key(), key);
//! ```

mod digest;
mod encoding;

use std::fmt;
use std::sync::Arc;

pub use digest::{Digest, DigestText};

/// How deeply list and call-ID literals may nest inside an encoded ID before
/// [`CallId::decode`] gives up. This bounds the decoder's recursion; receiver
/// chains are decoded iteratively and do not count towards it.
pub const MAX_NESTING_DEPTH: usize = 256;

/// An argument value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Literal {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A UTF-8 string.
    String(String),
    /// Another call's result; it contributes that ID's content digest if it
    /// has one, else its recipe digest (ID-2).
    Id(CallId),
    /// An ordered list of values.
    List(Vec<Literal>),
}

impl From<bool> for Literal {
    fn from(value: bool) -> Self {
        Literal::Bool(value)
    }
}

impl From<i64> for Literal {
    fn from(value: i64) -> Self {
        Literal::Int(value)
    }
}

impl From<&str> for Literal {
    fn from(value: &str) -> Self {
        Literal::String(value.to_owned())
    }
}

impl From<String> for Literal {
    fn from(value: String) -> Self {
        Literal::String(value)
    }
}

impl From<CallId> for Literal {
    fn from(value: CallId) -> Self {
        Literal::Id(value)
    }
}

/// A named argument of a call.
#[derive(Clone, PartialEq, Eq)]
pub struct Argument {
    /// The argument's name.
    pub name: String,
    /// The argument's value.
    pub value: Literal,
    /// Sensitive arguments (secrets, tokens) stay on this in-memory ID only:
    /// they never enter the digest nor the encoding (ID-3).
    pub sensitive: bool,
}

// Hand-written so that a sensitive value cannot leak through `{:?}` into logs.
impl fmt::Debug for Argument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Argument");
        s.field("name", &self.name);
        if self.sensitive {
            s.field("value", &format_args!("<redacted>"));
        } else {
            s.field("value", &self.value);
        }
        s.field("sensitive", &self.sensitive).finish()
    }
}

/// Scope data mixed into a recipe digest by [`CallId::with_scope`] (ID-5), so
/// that results are not shared beyond the scope.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Scope {
    /// Per client.
    Client(String),
    /// Per session.
    Session(String),
    /// Per call: the caller supplies a nonce that is unique for every call.
    /// The crate never draws randomness itself, which keeps it deterministic.
    Call(u64),
    /// Per schema.
    Schema(String),
    /// Per client and schema together.
    ClientSchema {
        /// The client.
        client: String,
        /// The schema.
        schema: String,
    },
}

/// Errors from decoding an encoded [`CallId`] or parsing a [`Digest`].
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The input ended in the middle of an item.
    #[error("truncated input at byte {offset}: expected {expected}")]
    Truncated {
        /// Where the incomplete item starts.
        offset: usize,
        /// What was expected there, e.g. "4-byte length".
        expected: &'static str,
    },
    /// A length or count claims more than the rest of the input can hold.
    #[error("length {len} at byte {offset} exceeds the {remaining} bytes remaining")]
    LengthOutOfRange {
        /// Where the length is stored.
        offset: usize,
        /// The claimed length or count.
        len: u64,
        /// Bytes left after the length.
        remaining: usize,
    },
    /// The input does not start with the call ID magic.
    #[error("not an encoded call id: bad magic at byte 0")]
    BadMagic,
    /// The encoding version is not one this build understands.
    #[error("unsupported call id encoding version {found} (expected {expected})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build writes and reads.
        expected: u8,
    },
    /// A tag byte has no meaning in its position.
    #[error("unknown {kind} tag 0x{tag:02x} at byte {offset}")]
    UnknownTag {
        /// Which kind of tag, e.g. "literal" or "scope".
        kind: &'static str,
        /// The tag byte.
        tag: u8,
        /// Where it is.
        offset: usize,
    },
    /// A string is not valid UTF-8.
    #[error("invalid UTF-8 in string at byte {offset}")]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: usize,
    },
    /// A receiver chain with no calls in it.
    #[error("empty receiver chain at byte {offset}")]
    EmptyChain {
        /// Where the chain length is stored.
        offset: usize,
    },
    /// Literals nest deeper than [`MAX_NESTING_DEPTH`].
    #[error("nesting deeper than {max} at byte {offset}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the literal that went too deep starts.
        offset: usize,
    },
    /// Bytes left over after a complete ID.
    #[error("{count} trailing bytes after the encoded call id at byte {offset}")]
    TrailingBytes {
        /// Where the leftovers start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// Digest text is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest text {text:?}: {reason}")]
    InvalidDigest {
        /// The text (cut short if long).
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// An immutable description of a call (ID-1).
///
/// Cloning is cheap (the parts are behind an [`Arc`]) and the recipe digest
/// is computed once, when the ID is built. Equality compares every part,
/// sensitive arguments and content digest included.
#[derive(Clone)]
pub struct CallId {
    inner: Arc<Inner>,
}

// `repr(C)` keeps the recipe digest first, in the cache line of the Arc's
// counts: a lookup that has just cloned the ID reads its call key without
// touching another line.
#[repr(C)]
struct Inner {
    /// Cached: derived from `parts` by [`digest::recipe_digest`].
    recipe: Digest,
    parts: Parts,
}

/// Everything a call ID is made of, apart from its cached recipe digest.
///
/// The text and the arguments are shared, not owned: every `with_*` copies
/// the parts of the ID it starts from, and building a chain link by link
/// (`with_receiver` on each) deep-copied every link's strings and argument
/// lists, which cost several times the link's own hashing. A copy is now a
/// few reference count updates; an edit copies only what it changes.
#[derive(Clone, Default)]
struct Parts {
    field: Arc<str>,
    receiver: Option<CallId>,
    args: Arc<Vec<Argument>>,
    module: Option<Arc<str>>,
    view: Option<Arc<str>>,
    nth: u64,
    custom_digest: Option<Digest>,
    content_digest: Option<Digest>,
    scopes: Vec<Scope>,
}

impl Parts {
    /// Compares everything but the receiver, which callers walk iteratively.
    fn eq_except_receiver(&self, other: &Parts) -> bool {
        // Destructured so that adding a field is a compile error here.
        let Parts {
            field,
            receiver: _,
            args,
            module,
            view,
            nth,
            custom_digest,
            content_digest,
            scopes,
        } = self;
        *field == other.field
            && *args == other.args
            && *module == other.module
            && *view == other.view
            && *nth == other.nth
            && *custom_digest == other.custom_digest
            && *content_digest == other.content_digest
            && *scopes == other.scopes
    }
}

// Receiver chains can be long (and a decoded one as long as the input
// allows); dropping them link by link keeps the stack flat.
impl Drop for Inner {
    fn drop(&mut self) {
        let mut next = self.parts.receiver.take();
        while let Some(id) = next {
            next = Arc::into_inner(id.inner).and_then(|mut inner| inner.parts.receiver.take());
        }
    }
}

// Iterative over the receiver chain for the same reason as `Drop`.
impl PartialEq for CallId {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self, other);
        loop {
            if Arc::ptr_eq(&a.inner, &b.inner) {
                return true;
            }
            let (pa, pb) = (&a.inner.parts, &b.inner.parts);
            // The cached digest first: the cheapest way to tell most IDs apart.
            if a.inner.recipe != b.inner.recipe || !pa.eq_except_receiver(pb) {
                return false;
            }
            match (&pa.receiver, &pb.receiver) {
                (None, None) => return true,
                (Some(ra), Some(rb)) => (a, b) = (ra, rb),
                _ => return false,
            }
        }
    }
}

impl Eq for CallId {}

// Shows the receiver by its digest only, so printing never recurses down the
// chain; sensitive values are redacted by `Argument`'s Debug.
impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.inner.parts;
        f.debug_struct("CallId")
            .field("field", &p.field)
            .field("recipe", &self.inner.recipe)
            .field("receiver", &p.receiver.as_ref().map(|r| r.inner.recipe))
            .field("args", &p.args)
            .field("module", &p.module)
            .field("view", &p.view)
            .field("nth", &p.nth)
            .field("custom_digest", &p.custom_digest)
            .field("content_digest", &p.content_digest)
            .field("scopes", &p.scopes)
            .finish()
    }
}

impl CallId {
    /// A call of `field` with no receiver, arguments, module or view.
    pub fn new(field: impl Into<String>) -> CallId {
        CallId::from_parts(Parts {
            field: Arc::from(field.into()),
            ..Parts::default()
        })
    }

    fn from_parts(parts: Parts) -> CallId {
        let recipe = digest::recipe_digest(&parts);
        CallId {
            inner: Arc::new(Inner { recipe, parts }),
        }
    }

    /// A new ID with `edit` applied to a copy of this one's parts (ID-1).
    fn rebuild(&self, edit: impl FnOnce(&mut Parts)) -> CallId {
        let mut parts = self.inner.parts.clone();
        edit(&mut parts);
        CallId::from_parts(parts)
    }

    /// A new ID with `receiver` as its receiver (replacing any previous one).
    pub fn with_receiver(&self, receiver: CallId) -> CallId {
        self.rebuild(|p| p.receiver = Some(receiver))
    }

    /// A new ID with the argument appended (arguments keep declared order).
    pub fn with_arg(&self, name: impl Into<String>, value: Literal) -> CallId {
        self.push_arg(name.into(), value, false)
    }

    /// A new ID with a sensitive argument appended: it never enters the
    /// digest nor the encoding (ID-3).
    pub fn with_sensitive_arg(&self, name: impl Into<String>, value: Literal) -> CallId {
        self.push_arg(name.into(), value, true)
    }

    fn push_arg(&self, name: String, value: Literal, sensitive: bool) -> CallId {
        self.rebuild(|p| {
            Arc::make_mut(&mut p.args).push(Argument {
                name,
                value,
                sensitive,
            })
        })
    }

    /// A new ID with the module set.
    pub fn with_module(&self, module: impl Into<String>) -> CallId {
        self.rebuild(|p| p.module = Some(Arc::from(module.into())))
    }

    /// A new ID with the view set.
    pub fn with_view(&self, view: impl Into<String>) -> CallId {
        self.rebuild(|p| p.view = Some(Arc::from(view.into())))
    }

    /// A new ID with `nth` set.
    pub fn with_nth(&self, nth: u64) -> CallId {
        self.rebuild(|p| p.nth = nth)
    }

    /// A new ID whose computed recipe is replaced by `digest` (ID-2). Scopes
    /// are still mixed in on top of it (ID-5).
    pub fn with_custom_digest(&self, digest: Digest) -> CallId {
        self.rebuild(|p| p.custom_digest = Some(digest))
    }

    /// A new ID with a content digest; the recipe digest is unchanged (ID-4).
    pub fn with_content_digest(&self, digest: Digest) -> CallId {
        self.rebuild(|p| p.content_digest = Some(digest))
    }

    /// A new ID with `scope` appended to its scopes; the recipe digest mixes
    /// in all scopes in order (ID-5). The content digest is kept.
    pub fn with_scope(&self, scope: Scope) -> CallId {
        self.rebuild(|p| p.scopes.push(scope))
    }

    /// The field this call selects.
    pub fn field(&self) -> &str {
        &self.inner.parts.field
    }

    /// The ID of the value the field is selected on, if any.
    pub fn receiver(&self) -> Option<&CallId> {
        self.inner.parts.receiver.as_ref()
    }

    /// All arguments in declared order, sensitive ones included.
    pub fn args(&self) -> &[Argument] {
        &self.inner.parts.args
    }

    /// The module, if set.
    pub fn module(&self) -> Option<&str> {
        self.inner.parts.module.as_deref()
    }

    /// The view, if set.
    pub fn view(&self) -> Option<&str> {
        self.inner.parts.view.as_deref()
    }

    /// Which element of a list result this call selects (0 if unused).
    pub fn nth(&self) -> u64 {
        self.inner.parts.nth
    }

    /// The scopes applied, in order.
    pub fn scopes(&self) -> &[Scope] {
        &self.inner.parts.scopes
    }

    /// Prefetches the line holding this ID's reference counts, which a
    /// clone or a drop is about to update (a large session close drops 100k
    /// IDs, each a likely cache miss). Only a hint: nothing observable changes.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        let data = Arc::as_ptr(&self.inner).cast::<u8>();
        // std keeps the counts just before the data; if that ever changes,
        // a hint is wasted, nothing more. Mostly the same line as `data`.
        crate::prefetch::line(data.wrapping_sub(2 * std::mem::size_of::<usize>()));
        crate::prefetch::line(data);
    }

    /// The recipe digest (ID-2), computed when the ID was built.
    pub fn recipe_digest(&self) -> Digest {
        self.inner.recipe
    }

    /// The content digest, if set.
    pub fn content_digest(&self) -> Option<Digest> {
        self.inner.parts.content_digest
    }

    /// The custom digest, if set.
    pub fn custom_digest(&self) -> Option<Digest> {
        self.inner.parts.custom_digest
    }

    /// The digest this ID contributes when used as a receiver or argument:
    /// its content digest if it has one, else its recipe digest (ID-2).
    fn input_digest(&self) -> Digest {
        self.inner.parts.content_digest.unwrap_or(self.inner.recipe)
    }

    /// The call key: the recipe digest as text (`sha256:<hex>`).
    pub fn call_key(&self) -> String {
        self.inner.recipe.to_string()
    }

    /// [`CallId::call_key`] on the stack, for lookups.
    pub fn call_key_text(&self) -> DigestText {
        self.inner.recipe.text()
    }

    /// The content key: the content digest as text, if there is one.
    pub fn content_key(&self) -> Option<String> {
        self.inner.parts.content_digest.map(|d| d.to_string())
    }

    /// The canonical byte encoding (ID-6).
    ///
    /// Sensitive arguments are left out entirely, here and in every nested
    /// ID (ID-3), so they cannot be recovered by decoding. Hence
    /// `CallId::decode(&id.encode())` equals `id.redacted()`, which is `id`
    /// itself when it has no sensitive arguments; recipe and content digests
    /// are identical after the round trip either way.
    ///
    /// # Panics
    ///
    /// If a string or list is longer than `u32::MAX`: lengths are 4 bytes.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes [`CallId::encode`]'s output. Any other input gives an
    /// [`IdError`], never a panic: lengths are checked against the remaining
    /// input before allocating, literal nesting is capped at
    /// [`MAX_NESTING_DEPTH`] and trailing bytes are rejected. The recipe
    /// digest is recomputed from the decoded parts.
    pub fn decode(bytes: &[u8]) -> Result<CallId, IdError> {
        encoding::decode(bytes)
    }

    /// The same ID with sensitive arguments removed, also from its receivers
    /// and from IDs inside its arguments. Digests are identical, since
    /// sensitive arguments never entered them.
    pub fn redacted(&self) -> CallId {
        // Root receiver first, so each link is rebuilt on its redacted receiver.
        let mut prev: Option<CallId> = None;
        for link in self.chain() {
            let parts = &link.inner.parts;
            let receiver_kept = match (&prev, &parts.receiver) {
                (Some(new), Some(old)) => Arc::ptr_eq(&new.inner, &old.inner),
                _ => true,
            };
            let args = redact_args(&parts.args);
            prev = Some(if receiver_kept && args.is_none() {
                // Nothing sensitive below: share the original.
                link.clone()
            } else {
                let mut parts = parts.clone();
                parts.receiver = prev.take();
                if let Some(args) = args {
                    parts.args = Arc::new(args);
                }
                CallId::from_parts(parts)
            });
        }
        prev.unwrap_or_else(|| self.clone())
    }

    /// This ID's receiver chain, root receiver first and `self` last.
    fn chain(&self) -> Vec<&CallId> {
        let mut links = Vec::new();
        let mut cur = Some(self);
        while let Some(id) = cur {
            links.push(id);
            cur = id.inner.parts.receiver.as_ref();
        }
        links.reverse();
        links
    }
}

/// The arguments without sensitive ones and with nested IDs redacted, or
/// `None` if that changes nothing.
fn redact_args(args: &[Argument]) -> Option<Vec<Argument>> {
    let redacted: Vec<Option<Literal>> = args.iter().map(|a| redact_literal(&a.value)).collect();
    if !args.iter().any(|a| a.sensitive) && redacted.iter().all(Option::is_none) {
        return None;
    }
    let kept = args
        .iter()
        .zip(redacted)
        .filter(|(a, _)| !a.sensitive)
        .map(|(a, value)| Argument {
            name: a.name.clone(),
            value: value.unwrap_or_else(|| a.value.clone()),
            sensitive: false,
        });
    Some(kept.collect())
}

/// The literal with nested IDs redacted, or `None` if that changes nothing.
fn redact_literal(value: &Literal) -> Option<Literal> {
    match value {
        Literal::Id(id) => {
            let redacted = id.redacted();
            (!Arc::ptr_eq(&redacted.inner, &id.inner)).then_some(Literal::Id(redacted))
        }
        Literal::List(items) => {
            let redacted: Vec<Option<Literal>> = items.iter().map(redact_literal).collect();
            if redacted.iter().all(Option::is_none) {
                return None;
            }
            let items = items
                .iter()
                .zip(redacted)
                .map(|(old, new)| new.unwrap_or_else(|| old.clone()));
            Some(Literal::List(items.collect()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Literal {
        Literal::from(text)
    }

    fn sample() -> CallId {
        CallId::new("container")
            .with_arg("platform", s("linux/amd64"))
            .with_module("core")
    }

    #[test]
    fn id1_with_returns_new_id_and_leaves_original() {
        let original = sample();
        let snapshot = original.clone();
        let digest = original.recipe_digest();
        let d = Digest::of(b"x");

        let derived = [
            original.with_receiver(CallId::new("r")),
            original.with_arg("a", Literal::Int(1)),
            original.with_sensitive_arg("token", s("secret")),
            original.with_module("m2"),
            original.with_view("v"),
            original.with_nth(3),
            original.with_custom_digest(d),
            original.with_content_digest(d),
            original.with_scope(Scope::Call(7)),
        ];
        for new in &derived {
            assert_ne!(*new, original);
            assert!(!Arc::ptr_eq(&new.inner, &original.inner));
        }
        // The original is unchanged in every part and digest.
        assert_eq!(original, snapshot);
        assert_eq!(original.recipe_digest(), digest);
        assert_eq!(original.args().len(), 1);
        assert_eq!(original.module(), Some("core"));
        assert_eq!(original.view(), None);
        assert_eq!(original.nth(), 0);
        assert!(original.receiver().is_none());
        assert!(original.scopes().is_empty());
        assert_eq!(original.content_digest(), None);
        assert_eq!(original.custom_digest(), None);
        // And the new IDs carry what was set.
        assert_eq!(derived[0].receiver().map(CallId::field), Some("r"));
        assert_eq!(derived[1].args()[1].name, "a");
        assert!(derived[2].args()[1].sensitive);
        assert_eq!(derived[3].module(), Some("m2"));
        assert_eq!(derived[4].view(), Some("v"));
        assert_eq!(derived[5].nth(), 3);
        assert_eq!(derived[6].custom_digest(), Some(d));
        assert_eq!(derived[7].content_digest(), Some(d));
        assert_eq!(derived[8].scopes(), &[Scope::Call(7)]);
    }

    #[test]
    fn id2_receiver_content_digest_replaces_recipe() {
        let content = Digest::of(b"same bytes");
        let r1 = CallId::new("fromGit").with_arg("ref", s("v1"));
        let r2 = CallId::new("fromHttp").with_arg("url", s("https://x"));
        assert_ne!(r1.recipe_digest(), r2.recipe_digest());

        // Different receivers without content: different recipes.
        let a = CallId::new("file").with_receiver(r1.clone());
        let b = CallId::new("file").with_receiver(r2.clone());
        assert_ne!(a.recipe_digest(), b.recipe_digest());

        // Same content digest on both receivers: same recipe.
        let a = CallId::new("file").with_receiver(r1.with_content_digest(content));
        let b = CallId::new("file").with_receiver(r2.with_content_digest(content));
        assert_eq!(a.recipe_digest(), b.recipe_digest());
        assert_ne!(a, b); // still distinct IDs

        // And a receiver with content differs from one without.
        let plain = CallId::new("file").with_receiver(r1);
        assert_ne!(plain.recipe_digest(), a.recipe_digest());
        // The receiver matters at all: none vs some.
        assert_ne!(CallId::new("file").recipe_digest(), plain.recipe_digest());
    }

    #[test]
    fn id2_argument_id_contributes_content_digest() {
        let content = Digest::of(b"tarball");
        let x = CallId::new("a").with_arg("n", Literal::Int(1));
        let y = CallId::new("b").with_arg("n", Literal::Int(2));
        let call = |v: Literal| CallId::new("use").with_arg("src", v);

        // Without content digests the argument IDs' recipes differ.
        assert_ne!(
            call(Literal::Id(x.clone())).recipe_digest(),
            call(Literal::Id(y.clone())).recipe_digest()
        );
        // With a shared content digest they contribute the same.
        let xc = x.with_content_digest(content);
        let yc = y.with_content_digest(content);
        assert_eq!(
            call(Literal::Id(xc.clone())).recipe_digest(),
            call(Literal::Id(yc.clone())).recipe_digest()
        );
        // Also inside (nested) lists.
        let list = |id: &CallId| {
            Literal::List(vec![
                Literal::Null,
                Literal::List(vec![Literal::Id(id.clone())]),
            ])
        };
        assert_eq!(
            call(list(&xc)).recipe_digest(),
            call(list(&yc)).recipe_digest()
        );
        assert_ne!(
            call(list(&x)).recipe_digest(),
            call(list(&y)).recipe_digest()
        );
        assert_ne!(
            call(list(&x)).recipe_digest(),
            call(list(&xc)).recipe_digest()
        );
    }

    #[test]
    fn id2_argument_order_matters() {
        let ab = CallId::new("f")
            .with_arg("a", Literal::Int(1))
            .with_arg("b", Literal::Int(2));
        let ba = CallId::new("f")
            .with_arg("b", Literal::Int(2))
            .with_arg("a", Literal::Int(1));
        assert_ne!(ab.recipe_digest(), ba.recipe_digest());
        // Same order built twice: same digest.
        let ab2 = CallId::new("f")
            .with_arg("a", Literal::Int(1))
            .with_arg("b", Literal::Int(2));
        assert_eq!(ab.recipe_digest(), ab2.recipe_digest());
        assert_eq!(ab, ab2);
        // Each other recipe part matters too.
        let base = ab.recipe_digest();
        assert_ne!(ab.with_module("m").recipe_digest(), base);
        assert_ne!(ab.with_view("v").recipe_digest(), base);
        assert_ne!(ab.with_nth(1).recipe_digest(), base);
        assert_ne!(
            CallId::new("g").recipe_digest(),
            CallId::new("f").recipe_digest()
        );
    }

    #[test]
    fn id2_custom_digest_replaces_recipe() {
        let custom = Digest::of(b"custom");
        let a = CallId::new("a")
            .with_arg("x", Literal::Int(1))
            .with_custom_digest(custom);
        let b = CallId::new("b")
            .with_receiver(sample())
            .with_custom_digest(custom);
        assert_eq!(a.recipe_digest(), custom);
        assert_eq!(b.recipe_digest(), custom);
        assert_eq!(a.custom_digest(), Some(custom));
        assert_eq!(a.call_key(), custom.to_string());
        // Parts set after the custom digest don't change it either.
        assert_eq!(a.with_arg("y", Literal::Null).recipe_digest(), custom);
        // A later custom digest replaces an earlier one.
        let other = Digest::of(b"other");
        assert_eq!(a.with_custom_digest(other).recipe_digest(), other);
    }

    #[test]
    fn id3_sensitive_args_not_in_digest_or_encoding() {
        const SECRET: &str = "hunter2-very-secret-token";
        let plain = CallId::new("login").with_arg("user", s("alice"));
        let with_secret = plain.with_sensitive_arg("password", s(SECRET));
        let other_secret = plain.with_sensitive_arg("password", s("something else"));
        assert_eq!(with_secret.recipe_digest(), plain.recipe_digest());
        assert_eq!(other_secret.recipe_digest(), plain.recipe_digest());
        assert_ne!(with_secret, plain); // the in-memory ID still holds it

        // Also when nested: as a receiver and as an argument ID in a list.
        let outer = CallId::new("use")
            .with_receiver(with_secret.clone())
            .with_arg(
                "deps",
                Literal::List(vec![Literal::Id(with_secret.clone())]),
            )
            .with_sensitive_arg("token", Literal::List(vec![s(SECRET)]));
        let outer_plain = CallId::new("use")
            .with_receiver(plain.clone())
            .with_arg("deps", Literal::List(vec![Literal::Id(plain.clone())]));
        assert_eq!(outer.recipe_digest(), outer_plain.recipe_digest());

        for id in [&with_secret, &outer] {
            let bytes = id.encode();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "secret leaked into the encoding"
            );
            assert!(!bytes.windows(8).any(|w| w == b"password"), "name leaked");
            assert!(
                !format!("{id:?}").contains(SECRET),
                "secret leaked into Debug"
            );
            let back = CallId::decode(&bytes).unwrap();
            assert_eq!(back, id.redacted());
            assert_ne!(back, *id);
            assert_eq!(back.recipe_digest(), id.recipe_digest());
        }
        assert_eq!(outer.encode(), outer_plain.encode());
        assert_eq!(outer.redacted(), outer_plain);
        assert_eq!(CallId::decode(&outer.encode()).unwrap(), outer_plain);
        // Redacting an ID with nothing sensitive shares it.
        assert!(Arc::ptr_eq(
            &outer_plain.redacted().inner,
            &outer_plain.inner
        ));
    }

    #[test]
    fn id4_content_digest_keeps_recipe_digest() {
        let id = sample().with_receiver(CallId::new("r"));
        let content = Digest::of(b"content");
        let with_content = id.with_content_digest(content);
        assert_eq!(with_content.recipe_digest(), id.recipe_digest());
        assert_eq!(with_content.call_key(), id.call_key());
        assert_eq!(with_content.content_digest(), Some(content));
        assert_eq!(with_content.content_key(), Some(content.to_string()));
        assert_eq!(id.content_key(), None);
        // Both coexist: the content digest does not become the recipe.
        assert_ne!(with_content.recipe_digest(), content);
        // Also on top of a custom digest.
        let custom = Digest::of(b"custom");
        assert_eq!(
            id.with_custom_digest(custom)
                .with_content_digest(content)
                .recipe_digest(),
            custom
        );
    }

    #[test]
    fn id5_scopes_distinct_and_stable() {
        let scopes = [
            Scope::Client("x".into()),
            Scope::Session("x".into()),
            Scope::Call(1),
            Scope::Schema("x".into()),
            Scope::ClientSchema {
                client: "x".into(),
                schema: "x".into(),
            },
        ];
        for base in [sample(), sample().with_custom_digest(Digest::of(b"custom"))] {
            let unscoped = base.recipe_digest();
            let scoped: Vec<Digest> = scopes
                .iter()
                .map(|sc| base.with_scope(sc.clone()).recipe_digest())
                .collect();
            for (i, d) in scoped.iter().enumerate() {
                assert_ne!(
                    *d, unscoped,
                    "scope {:?} left the digest unchanged",
                    scopes[i]
                );
                for (j, e) in scoped.iter().enumerate().skip(i + 1) {
                    assert_ne!(d, e, "{:?} and {:?} collide", scopes[i], scopes[j]);
                }
                // Same scope, built again: same digest.
                assert_eq!(base.with_scope(scopes[i].clone()).recipe_digest(), *d);
            }
            // Per call: every nonce differs.
            assert_ne!(
                base.with_scope(Scope::Call(1)).recipe_digest(),
                base.with_scope(Scope::Call(2)).recipe_digest()
            );
            // Scope values matter, and are length-prefixed.
            assert_ne!(
                base.with_scope(Scope::Client("a".into())).recipe_digest(),
                base.with_scope(Scope::Client("b".into())).recipe_digest()
            );
            assert_ne!(
                base.with_scope(Scope::ClientSchema {
                    client: "a".into(),
                    schema: "bc".into()
                })
                .recipe_digest(),
                base.with_scope(Scope::ClientSchema {
                    client: "ab".into(),
                    schema: "c".into()
                })
                .recipe_digest()
            );
        }
        // Scoping flows into IDs built on top through the receiver.
        let on = |r: CallId| CallId::new("f").with_receiver(r).recipe_digest();
        assert_ne!(
            on(sample()),
            on(sample().with_scope(Scope::Session("s".into())))
        );
    }

    #[test]
    fn long_receiver_chain_builds_compares_and_drops() {
        // Deep enough to overflow the stack if eq or drop recursed per link.
        let chain = || {
            let mut id = CallId::new("root");
            for i in 0..100_000 {
                id = id.with_nth(i).with_receiver(id.clone());
            }
            id
        };
        let (a, b) = (chain(), chain());
        assert!(!Arc::ptr_eq(&a.inner, &b.inner));
        assert_eq!(a, b); // walks both chains to the root
        assert_ne!(a, b.with_nth(0));
        drop(a);
        drop(b);
    }
}
