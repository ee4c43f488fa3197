//! Plan files: a plan (usually a shrunk one) together with the scenario and
//! bug-zoo switches it ran under, as TOML, so that one command replays it:
//! `cache-sim replay --plan FILE` (SPEC §10: "the shortest trace that still
//! fails, and the one command that replays it").
//!
//! A plan file is self-contained: it does not refer to a named scenario or
//! a seed's generator, so it replays the same even after the generator
//! changes. It is checked on load — a plan that names a client, key or
//! fault the scenario does not have, or a value outside its range, is an
//! error naming the field (`plan.clients[2].ops[5].gap_ms`) and the range,
//! never a panic, an overflow or a false violation in a simulation.
//!
//! # Layout (format 2)
//!
//! ```toml
//! format = 2
//! fails = "INV-6"                  # informational
//! bugs = ["errors-cached-in-session"]
//!
//! [scenario]                       # every scenario field, ranges as in sim/scenarios/reference.toml
//! name = "standard"
//! # …
//!
//! [plan]
//! seed = 0
//! heal_at_ms = 3742
//! swarm = { enabled = { latency = 0.42, store-error = 0.9 } }
//! keys = [
//!     { content = 1, ttl_ms = 0 },  # key 0
//!     # …
//! ]
//! faults = [
//!     { at_ms = 80, kind = "store-error", client = 2, arg = 1 },
//!     # …
//! ]
//!
//! [[plan.clients]]
//! client = 0
//! ops = [
//!     { gap_ms = 52, kind = { call = { key = 0, ckey = true, dnc = false, behave = { outcome = "value", dur_ms = 102, safe = true, deaf = false }, retry = true } } },
//!     { gap_ms = 7, kind = "close" },
//! ]
//! ```
//!
//! Format 1 (the same, with `plan.clients` one nested array on one line)
//! is still read.
//!
//! # Ranges
//!
//! Times are simulated ms; `MAX_MS` is 10^9 (about 11.6 days).
//!
//! | field | range |
//! |---|---|
//! | `format` | 1 or 2 |
//! | `bugs` | names of bug-zoo switches |
//! | `[scenario]` | as in `sim/scenarios/reference.toml` |
//! | `plan.seed` | 0..=2^63-1 (a TOML integer) |
//! | `plan.heal_at_ms` | 1..=1.5 × 10^13 ([`MAX_HEAL_MS`](crate::plan::MAX_HEAL_MS)) |
//! | `plan.swarm.enabled.<kind>` | finite, 0..=100 events per simulated second (informational) |
//! | `plan.keys` | exactly `scenario.key_space` entries |
//! | `plan.keys[k].content` | any group number, or left out (keys of one group share a content digest) |
//! | `plan.keys[k].ttl_ms` | 0 (no TTL) or 1..=`MAX_MS` |
//! | `plan.keys[k].result_key` | another key, 0..key_space, not `k`; or left out |
//! | `plan.clients` | exactly `scenario.clients` tables, `client` = 0, 1, … in order |
//! | `plan.clients[c].ops` | at most 10000 operations |
//! | `….gap_ms` | 0..=`MAX_MS` |
//! | `….key`, `….nested` | 0..key_space |
//! | `….behave.dur_ms` | 0..=`MAX_MS` (ignored by `outcome = "hang"`) |
//! | `….cancel_ms` | 0..=`MAX_MS`, or left out |
//! | `plan.faults` | at most 80000 |
//! | `plan.faults[i].at_ms` | 0..=1.5 × 10^13 (a fault after `heal_at_ms` never fires) |
//! | `plan.faults[i].client` | 0..clients (for every kind) |
//! | `arg` of `partition`, `latency`, `client-crash`, `store-slow` | 1..=`MAX_MS` (a duration) |
//! | `arg` of `store-error` | 1..=1000 (failed operations; SQLite: lock held arg × 100 ms) |
//! | `arg` of `clock-jump` | -`MAX_MS`..=`MAX_MS` (negative: backwards) |
//! | `arg` of `drop-connection`, `engine-restart` | 0..=`MAX_MS` (not used) |

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::scenario::Scenario;

/// The format written by this version (the `format` field).
pub const FORMAT: u32 = 2;
/// The formats this version reads.
pub const READS: [u32; 2] = [1, 2];

/// A plan with everything needed to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// File format version ([`FORMAT`]).
    pub format: u32,
    /// The invariant the plan failed when it was written (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fails: Option<String>,
    /// Bug-zoo switches that were on.
    #[serde(default)]
    pub bugs: Vec<String>,
    /// The scenario the plan runs under.
    pub scenario: Scenario,
    /// The plan.
    pub plan: Plan,
}

/// The head of a plan file: everything but the plan.
#[derive(Serialize)]
struct Head<'a> {
    format: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fails: &'a Option<String>,
    bugs: &'a [String],
    scenario: &'a Scenario,
}

/// `value` as an inline TOML value (one line).
pub(crate) fn inline<T: Serialize>(value: &T) -> Result<String, String> {
    let mut out = String::new();
    value
        .serialize(toml::ser::ValueSerializer::new(&mut out))
        .map_err(|e| format!("cannot encode the plan: {e}"))?;
    Ok(out)
}

/// `items` as a TOML array, one item per line (so that an error's line
/// number points at one item; every world's plan file writes its lists so).
pub(crate) fn lines<T: Serialize>(out: &mut String, key: &str, items: &[T]) -> Result<(), String> {
    if items.is_empty() {
        out.push_str(&format!("{key} = []\n"));
        return Ok(());
    }
    out.push_str(&format!("{key} = [\n"));
    for item in items {
        out.push_str(&format!("    {},\n", inline(item)?));
    }
    out.push_str("]\n");
    Ok(())
}

impl PlanFile {
    /// The file for `plan` under `scenario` (its switches included).
    pub fn new(plan: Plan, scenario: &Scenario, fails: Option<&str>) -> PlanFile {
        PlanFile {
            format: FORMAT,
            fails: fails.map(str::to_string),
            bugs: scenario.bugs.iter().map(|b| b.to_string()).collect(),
            // The switches are listed in `bugs`, as names.
            scenario: Scenario {
                bugs: cache_core::bugs::Bugs::none(),
                ..scenario.clone()
            },
            plan,
        }
    }

    /// The TOML text: what `shrink` writes and prints. Keys, faults and each
    /// client's operations are one per line, so that an error's line number
    /// points at one of them and a person can delete or edit one.
    pub fn to_toml(&self) -> Result<String, String> {
        let head = Head {
            format: self.format,
            fails: &self.fails,
            bugs: &self.bugs,
            scenario: &self.scenario,
        };
        let mut out = toml::to_string(&head).map_err(|e| format!("cannot encode the plan: {e}"))?;
        let p = &self.plan;
        if p.seed > i64::MAX as u64 {
            return Err(format!(
                "cannot encode the plan: seed {} is above 2^63-1, the largest TOML integer",
                p.seed
            ));
        }
        out.push_str(&format!(
            "\n[plan]\nseed = {}\nheal_at_ms = {}\nswarm = {}\n",
            p.seed,
            p.heal_at_ms,
            inline(&p.swarm)?
        ));
        lines(&mut out, "keys", &p.keys)?;
        lines(&mut out, "faults", &p.faults)?;
        for (c, ops) in p.clients.iter().enumerate() {
            out.push_str(&format!("\n[[plan.clients]]\nclient = {c}\n"));
            lines(&mut out, "ops", ops)?;
        }
        Ok(out)
    }

    /// Parses and checks a plan file; errors name the field and its range.
    pub fn parse(text: &str) -> Result<PlanFile, String> {
        // The format first: a file of another format gets that error, not
        // one about a field this version does not know.
        let table: toml::Table = toml::from_str(text).map_err(|e| format!("bad plan file: {e}"))?;
        match table.get("format") {
            Some(toml::Value::Integer(n)) if READS.iter().any(|r| i64::from(*r) == *n) => {}
            Some(v) => {
                return Err(format!(
                    "bad plan file: field `format` is {v}, this cache-sim reads {}",
                    READS.map(|r| r.to_string()).join(" or ")
                ))
            }
            None => return Err("bad plan file: field `format` is missing".into()),
        }
        let f: PlanFile = toml::from_str(text).map_err(|e| format!("bad plan file: {e}"))?;
        f.scenario
            .validate_in("scenario")
            .map_err(|e| format!("bad plan file: in [scenario]: {e}"))?;
        f.plan
            .check(f.scenario.clients, f.scenario.key_space)
            .map_err(|e| format!("bad plan file: {e}"))?;
        Ok(f)
    }

    /// Reads a plan file.
    pub fn load(path: &str) -> Result<PlanFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read plan file {path}: {e}"))?;
        PlanFile::parse(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// The scenario with the file's switches (and `extra` ones) turned on.
    pub fn scenario_with_bugs(&self, extra: &[String]) -> Result<Scenario, String> {
        let names: Vec<&str> = self.bugs.iter().chain(extra).map(String::as_str).collect();
        self.scenario.clone().with_bugs(&names)
    }
}
