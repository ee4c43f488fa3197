//! Loader plan files: a (usually shrunk) loader plan with the scenario and
//! loader zoo switches it ran under, as TOML, so that `cache-sim replay
//! --plan FILE` runs it again. `world = "loader"` at the top tells it from
//! a call-cache plan file.
//!
//! ```toml
//! world = "loader"
//! fails = "LINV-3"                 # informational
//! bugs = ["local-ignores-expiry"]
//!
//! [scenario]                       # every loader scenario field (sim/scenarios/loader.toml)
//! name = "loader"
//! # …
//!
//! [plan]
//! seed = 7
//! remote = true                    # this seed has the remote tier
//! swarm = { enabled = [] }
//! ops = [
//!     { at_ms = 12, op = { op = "once", node = 1, key = 0, refresh = false, skip_local = false, loader = { answer = "read", dur_ms = 40, stubborn = false } } },
//!     # …
//! ]
//! ```

use serde::{Deserialize, Serialize};

use super::plan::{LoaderPlan, PlanOp};
use super::scenario::{LoaderScenario, WORLD};

/// A loader plan file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderPlanFile {
    /// Always `"loader"`.
    pub world: String,
    /// The invariant it failed when written (informational).
    #[serde(default)]
    pub fails: Option<String>,
    /// Loader zoo switches on.
    #[serde(default)]
    pub bugs: Vec<String>,
    /// The scenario (its switches are in `bugs`).
    pub scenario: LoaderScenario,
    /// The plan.
    pub plan: LoaderPlan,
}

impl LoaderPlanFile {
    /// The file for `plan` under `s` (its switches included).
    pub fn new(plan: LoaderPlan, s: &LoaderScenario, fails: Option<&str>) -> LoaderPlanFile {
        LoaderPlanFile {
            world: WORLD.into(),
            fails: fails.map(str::to_string),
            bugs: s.bugs.iter().map(|b| b.name().to_string()).collect(),
            scenario: s.clone(),
            plan,
        }
    }

    /// The TOML text, one operation per line.
    pub fn to_toml(&self) -> Result<String, String> {
        let mut head = toml::Table::new();
        head.insert("world".into(), self.world.clone().into());
        if let Some(f) = &self.fails {
            head.insert("fails".into(), f.clone().into());
        }
        head.insert(
            "bugs".into(),
            toml::Value::Array(self.bugs.iter().map(|b| b.clone().into()).collect()),
        );
        let mut text = toml::to_string(&head).map_err(|e| e.to_string())?;
        let mut sc = toml::Table::new();
        sc.insert(
            "scenario".into(),
            toml::Value::try_from(&self.scenario).map_err(|e| e.to_string())?,
        );
        text.push('\n');
        text.push_str(&toml::to_string(&sc).map_err(|e| e.to_string())?);
        text.push_str(&format!(
            "\n[plan]\nseed = {}\nremote = {}\nswarm = {}\nops = [\n",
            self.plan.seed,
            self.plan.remote,
            inline(&self.plan.swarm)?
        ));
        for t in &self.plan.ops {
            text.push_str(&format!("    {},\n", inline(t)?));
        }
        text.push_str("]\n");
        Ok(text)
    }

    /// Parses and checks a loader plan file; errors name the field.
    pub fn parse(text: &str) -> Result<LoaderPlanFile, String> {
        let f: LoaderPlanFile =
            toml::from_str(text).map_err(|e| format!("bad loader plan file: {e}"))?;
        if f.world != WORLD {
            return Err(format!(
                "bad loader plan file: field `world` is {:?}, must be \"loader\"",
                f.world
            ));
        }
        f.scenario
            .validate()
            .map_err(|e| format!("bad loader plan file: [scenario]: {e}"))?;
        if i64::try_from(f.plan.seed).is_err() {
            return Err("bad loader plan file: field `plan.seed` must be at most 2^63-1".into());
        }
        let s = &f.scenario;
        for (i, t) in f.plan.ops.iter().enumerate() {
            let bad = |what: &str| Err(format!("bad loader plan file: `plan.ops[{i}]`: {what}"));
            if t.at_ms > crate::scenario::MAX_MS.saturating_mul(10_000) {
                return bad("at_ms is past 10^13 ms");
            }
            let (node, keys): (Option<usize>, Vec<usize>) = match &t.op {
                PlanOp::Once { node, key, .. }
                | PlanOp::Get { node, key }
                | PlanOp::Exists { node, key }
                | PlanOp::Set { node, key, .. }
                | PlanOp::Delete { node, key } => (Some(*node), vec![*key]),
                PlanOp::LoadMany { node, keys, .. } => (Some(*node), keys.clone()),
                PlanOp::ChangeSource { key } => (None, vec![*key]),
                PlanOp::Cancel { .. } => (None, Vec::new()),
                PlanOp::Fault { node, .. } => (Some(*node), Vec::new()),
            };
            if node.is_some_and(|n| n >= s.nodes) {
                return bad(&format!("node must be below scenario.nodes ({})", s.nodes));
            }
            if keys.iter().any(|k| *k >= s.key_space) {
                return bad(&format!(
                    "key must be below scenario.key_space ({})",
                    s.key_space
                ));
            }
            if let PlanOp::LoadMany { keys, .. } = &t.op {
                if keys.is_empty() || keys.len() > super::scenario::MAX_BATCH {
                    return bad("keys must hold 1..=16 keys");
                }
            }
        }
        if f.plan.ops.windows(2).any(|w| w[0].at_ms > w[1].at_ms) {
            return Err("bad loader plan file: `plan.ops` must be in time order".into());
        }
        Ok(f)
    }

    /// The loader plan file at `path`, or `None` if the file is not one
    /// (no top-level `world`: a call-cache plan file).
    pub fn load_if_loader(path: &str) -> Result<Option<LoaderPlanFile>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read plan file {path}: {e}"))?;
        match toml::from_str::<toml::Table>(&text) {
            Ok(t) if t.contains_key("world") => LoaderPlanFile::parse(&text)
                .map(Some)
                .map_err(|e| format!("{path}: {e}")),
            _ => Ok(None),
        }
    }

    /// The scenario with the file's switches (and `extra` ones) on.
    pub fn scenario_with_bugs(&self, extra: &[String]) -> Result<LoaderScenario, String> {
        let all: Vec<&String> = self.bugs.iter().chain(extra).collect();
        self.scenario.clone().with_bugs(&all)
    }
}

fn inline<T: Serialize>(v: &T) -> Result<String, String> {
    let value = toml::Value::try_from(v).map_err(|e| e.to_string())?;
    Ok(value.to_string())
}
