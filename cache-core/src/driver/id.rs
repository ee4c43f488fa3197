//! The call-ID driver: the decoder never panics on any bytes, and IDs built
//! from a recipe survive `decode(encode(id))` with their digests (ID-1 …
//! ID-6).

use arbitrary::{Arbitrary, Unstructured};

use super::{Failure, Stats};
use crate::id::{CallId, Digest, Literal, Scope};

/// At most this many recipe steps are applied, which bounds literal nesting
/// well below the decoder's cap.
const MAX_STEPS: usize = 64;

/// A call ID built step by step from the previous steps' IDs, so recipes
/// need no recursion in their derived [`Arbitrary`] impl.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct IdRecipe {
    /// The steps, applied to `CallId::new("root")` in order.
    pub steps: Vec<IdStep>,
}

/// One recipe step on the current ID.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum IdStep {
    /// Start a new ID with no receiver (the old one stays available to
    /// [`LitPick::Previous`]).
    New(String),
    /// The current ID becomes the receiver of a new call of this field.
    Select(String),
    /// Append an argument.
    Arg {
        /// Its name.
        name: String,
        /// Its value.
        value: LitPick,
        /// Sensitive: kept out of digests and encodings (ID-3).
        sensitive: bool,
    },
    /// Set the module.
    Module(String),
    /// Set the view.
    View(String),
    /// Set `nth`.
    Nth(u64),
    /// Replace the recipe digest with a digest of these bytes.
    Custom(Vec<u8>),
    /// Set the content digest to a digest of these bytes.
    Content(Vec<u8>),
    /// Apply a scope (ID-5).
    Scope(ScopePick),
}

/// An argument value (non-recursive: IDs come from earlier steps).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum LitPick {
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of strings, nested once.
    Nested(Vec<Vec<String>>),
    /// The n-th ID built so far (modulo how many).
    Previous(u8),
}

/// A scope (ID-5).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum ScopePick {
    /// Per client.
    Client(String),
    /// Per session.
    Session(String),
    /// Per call.
    Call(u64),
    /// Per schema.
    Schema(String),
    /// Per client and schema.
    ClientSchema(String, String),
}

fn fail(step: usize, invariant: &'static str, detail: String) -> Failure {
    Failure {
        invariant,
        step,
        detail,
    }
}

/// ID-6 on arbitrary bytes: `decode` returns an ID or an error, never
/// panics; an ID it accepts re-encodes to exactly the same bytes (the
/// encoding is unique) and decodes again to an equal ID.
pub fn run_id_decode(bytes: &[u8]) -> Result<Stats, Failure> {
    let mut stats = Stats {
        steps: 1,
        ..Stats::default()
    };
    if let Ok(id) = CallId::decode(bytes) {
        stats.hits += 1;
        let again = id.encode();
        if again != bytes {
            return Err(fail(
                0,
                "ID-6",
                format!(
                    "decoded {id:?}, which encodes to other bytes ({} vs {})",
                    again.len(),
                    bytes.len()
                ),
            ));
        }
        roundtrip(0, &id)?;
    }
    Ok(stats)
}

/// `decode(encode(id)) == id` with digests, sensitive arguments dropped
/// (ID-3, ID-6).
fn roundtrip(step: usize, id: &CallId) -> Result<(), Failure> {
    let bytes = id.encode();
    let back = CallId::decode(&bytes)
        .map_err(|e| fail(step, "ID-6", format!("{id:?} does not decode: {e}")))?;
    let want = id.redacted();
    if back != want
        || back.recipe_digest() != id.recipe_digest()
        || back.content_digest() != id.content_digest()
        || back.call_key() != id.call_key()
    {
        return Err(fail(
            step,
            "ID-6",
            format!("decode(encode(id)) differs:\n  id   {id:?}\n  back {back:?}"),
        ));
    }
    if back.args().iter().any(|a| a.sensitive) {
        return Err(fail(
            step,
            "ID-3",
            "a sensitive argument was decoded".into(),
        ));
    }
    Ok(())
}

fn literal(pick: &LitPick, built: &[CallId]) -> Literal {
    match pick {
        LitPick::Null => Literal::Null,
        LitPick::Bool(b) => Literal::Bool(*b),
        LitPick::Int(i) => Literal::Int(*i),
        LitPick::Str(s) => Literal::String(s.clone()),
        LitPick::Ints(v) => Literal::List(v.iter().map(|i| Literal::Int(*i)).collect()),
        LitPick::Nested(v) => Literal::List(
            v.iter()
                .map(|l| Literal::List(l.iter().map(|s| Literal::String(s.clone())).collect()))
                .collect(),
        ),
        LitPick::Previous(n) => match built.len() {
            0 => Literal::Null,
            len => Literal::Id(built[usize::from(*n) % len].clone()),
        },
    }
}

fn scope(pick: &ScopePick) -> Scope {
    match pick {
        ScopePick::Client(c) => Scope::Client(c.clone()),
        ScopePick::Session(s) => Scope::Session(s.clone()),
        ScopePick::Call(n) => Scope::Call(*n),
        ScopePick::Schema(s) => Scope::Schema(s.clone()),
        ScopePick::ClientSchema(c, s) => Scope::ClientSchema {
            client: c.clone(),
            schema: s.clone(),
        },
    }
}

/// Builds the recipe's IDs, checking at each step: the old ID is unchanged
/// (ID-1), sensitive arguments change neither digest nor encoding (ID-3), a
/// content digest leaves the recipe digest alone (ID-4), a scope changes the
/// digest and the same scope gives the same digest (ID-5), and every ID
/// round-trips (ID-6).
pub fn run_id_recipe(recipe: &IdRecipe) -> Result<Stats, Failure> {
    let mut current = CallId::new("root");
    let mut built: Vec<CallId> = Vec::new();
    for (step, s) in recipe.steps.iter().take(MAX_STEPS).enumerate() {
        let before = current.recipe_digest();
        let before_bytes = current.encode();
        let next = match s {
            IdStep::New(field) => {
                built.push(current.clone());
                CallId::new(field.clone())
            }
            IdStep::Select(field) => CallId::new(field.clone()).with_receiver(current.clone()),
            IdStep::Arg {
                name,
                value,
                sensitive,
            } => {
                let value = literal(value, &built);
                if *sensitive {
                    let next = current.with_sensitive_arg(name.clone(), value);
                    if next.recipe_digest() != before || next.encode() != before_bytes {
                        return Err(fail(
                            step,
                            "ID-3",
                            "a sensitive argument changed the digest or the encoding".into(),
                        ));
                    }
                    next
                } else {
                    current.with_arg(name.clone(), value)
                }
            }
            IdStep::Module(m) => current.with_module(m.clone()),
            IdStep::View(v) => current.with_view(v.clone()),
            IdStep::Nth(n) => current.with_nth(*n),
            IdStep::Custom(bytes) => current.with_custom_digest(Digest::of(bytes)),
            IdStep::Content(bytes) => {
                let next = current.with_content_digest(Digest::of(bytes));
                if next.recipe_digest() != before {
                    return Err(fail(
                        step,
                        "ID-4",
                        "setting a content digest changed the recipe digest".into(),
                    ));
                }
                next
            }
            IdStep::Scope(pick) => {
                let next = current.with_scope(scope(pick));
                let twin = current.with_scope(scope(pick));
                if next.recipe_digest() == before || next.recipe_digest() != twin.recipe_digest() {
                    return Err(fail(
                        step,
                        "ID-5",
                        format!("scope {pick:?}: digest unchanged or not deterministic"),
                    ));
                }
                next
            }
        };
        if current.recipe_digest() != before || current.encode() != before_bytes {
            return Err(fail(
                step,
                "ID-1",
                "building a new ID changed the old one".into(),
            ));
        }
        roundtrip(step, &next)?;
        current = next;
    }
    Ok(Stats {
        steps: recipe.steps.len().min(MAX_STEPS),
        ..Stats::default()
    })
}

/// The `id_decode` fuzz target's body: the bytes go to the decoder as they
/// are, and are also read as an [`IdRecipe`] whose IDs must round-trip.
pub fn run_id(bytes: &[u8]) -> Result<Stats, Failure> {
    let mut stats = run_id_decode(bytes)?;
    if let Ok(recipe) = IdRecipe::arbitrary_take_rest(Unstructured::new(bytes)) {
        stats.add(&run_id_recipe(&recipe)?);
    }
    Ok(stats)
}
