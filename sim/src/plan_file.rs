//! Plan files: a plan (usually a shrunk one) together with the scenario and
//! bug-zoo switches it ran under, as TOML, so that one command replays it:
//! `cache-sim replay --plan FILE` (SPEC §10: "the shortest trace that still
//! fails, and the one command that replays it").
//!
//! A plan file is self-contained: it does not refer to a named scenario or
//! a seed's generator, so it replays the same even after the generator
//! changes. It is checked on load — a plan that names a client, key or
//! fault the scenario does not have is an error naming the field, never a
//! panic in the middle of a simulation.

use serde::{Deserialize, Serialize};

use crate::plan::{OpKind, Plan};
use crate::scenario::Scenario;

/// The format written by this version (the `format` field).
pub const FORMAT: u32 = 1;

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

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot encode the plan: {e}"))
    }

    /// Parses and checks a plan file; errors name the field.
    pub fn parse(text: &str) -> Result<PlanFile, String> {
        let f: PlanFile = toml::from_str(text).map_err(|e| format!("bad plan file: {e}"))?;
        if f.format != FORMAT {
            return Err(format!(
                "bad plan file: field `format` is {}, this cache-sim reads {FORMAT}",
                f.format
            ));
        }
        f.scenario
            .validate()
            .map_err(|e| format!("bad plan file: in [scenario]: {e}"))?;
        f.check_plan()?;
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

    /// Every index in the plan points at something the scenario has.
    fn check_plan(&self) -> Result<(), String> {
        let bad = |field: String, why: String| Err(format!("bad plan file: `{field}` {why}"));
        let p = &self.plan;
        let clients = self.scenario.clients;
        if p.clients.len() != clients {
            return bad(
                "plan.clients".into(),
                format!(
                    "has {} clients, scenario.clients is {clients}",
                    p.clients.len()
                ),
            );
        }
        if p.keys.len() as u64 != self.scenario.key_space {
            return bad(
                "plan.keys".into(),
                format!(
                    "has {} keys, scenario.key_space is {}",
                    p.keys.len(),
                    self.scenario.key_space
                ),
            );
        }
        let nkeys = p.keys.len() as u64;
        for (c, ops) in p.clients.iter().enumerate() {
            for (i, op) in ops.iter().enumerate() {
                let keys: Vec<u64> = match &op.kind {
                    OpKind::Call { key, nested, .. } => {
                        std::iter::once(*key).chain(*nested).collect()
                    }
                    OpKind::Arbitrary { key, .. } => vec![*key],
                    OpKind::Close | OpKind::Reconnect => vec![],
                };
                if let Some(k) = keys.into_iter().find(|k| *k >= nkeys) {
                    return bad(
                        format!("plan.clients[{c}][{i}]"),
                        format!("uses key {k}, the plan has keys 0..{nkeys}"),
                    );
                }
            }
        }
        for (i, f) in p.faults.iter().enumerate() {
            if f.client >= clients {
                return bad(
                    format!("plan.faults[{i}].client"),
                    format!("is {}, the scenario has clients 0..{clients}", f.client),
                );
            }
        }
        Ok(())
    }
}
