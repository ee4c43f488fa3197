//! The debugging loop for the `loader-net` world: plan files (a seed's
//! [`NetPlan`] with its scenario, replayed by `cache-sim replay --plan
//! FILE`), shrinking (nodes, streams, faults and operations removed while
//! the same typed verdict still fails, [`shrink_net`]), the gauges
//! `cache-sim report` draws ([`sample`], [`report_svg`]) and the decisions
//! `explain` and `diff` read ([`decisions`]).
//!
//! # Plan file layout (format 1)
//!
//! `world = "loader-net"` at the top tells it from the other worlds' plan
//! files. Faults and each stream's operations are one per line, so that an
//! error's line number points at one of them and a person can delete or
//! edit one.
//!
//! ```toml
//! world = "loader-net"
//! format = 1
//! fails = "LINV-5"                 # informational
//! bugs = []                        # zoo switches on (none in this world yet)
//!
//! [scenario]                       # every loader-net scenario field (sim/scenarios/loader-net.toml)
//! name = "loader-net"
//! # …
//!
//! [plan]
//! seed = 7
//! heal_at_ms = 3800
//! swarm = ["partition_remote", "bus_drop"]   # informational
//! faults = [
//!     { at_ms = 80, kind = "partition_remote", node = 1, arg = 0, dur_ms = 300 },
//! ]
//!
//! [[plan.streams]]                 # nodes × streams_per_node tables, node-major
//! node = 0
//! stream = 0
//! ops = [
//!     { gap_ms = 52, kind = { once = 3 } },
//!     { gap_ms = 7, kind = { load_many = [1, 2] } },
//! ]
//! ```
//!
//! Operation kinds are the [`NetOpKind`](super::plan::NetOpKind) variants
//! in snake case, fault kinds the names of [`NetFaultKind`]; both come from
//! serde, so a new variant needs no change here but, for a fault kind, one
//! arm in [`arg_range`].

use std::ops::{Range, RangeInclusive};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::oracle::Verdict;
use super::plan::{NetFault, NetFaultKind, NetOp, NetPlan};
use super::run::{run_net_plan, NetOutcome};
use super::scenario::{NetScenario, MAX_BATCH, MAX_OPS, WORLD};
use crate::plan::MAX_HEAL_MS;
use crate::plan_file::{inline, lines};
use crate::scenario::MAX_MS;
use crate::shrink::{reduce, Cut};

/// The plan file format this version writes (the `format` field).
pub const FORMAT: u32 = 1;
/// Most faults a plan file may hold.
pub const MAX_FAULTS: usize = 80_000;

/// A `loader-net` plan with everything needed to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct NetPlanFile {
    /// The invariant it failed when written (informational).
    pub fails: Option<String>,
    /// Zoo switches on when it was written.
    pub bugs: Vec<String>,
    /// The scenario.
    pub scenario: NetScenario,
    /// The plan.
    pub plan: NetPlan,
}

/// The file as read: faults, streams and operations keep their place in
/// the text for errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    world: String,
    format: u32,
    #[serde(default)]
    fails: Option<String>,
    #[serde(default)]
    bugs: Vec<String>,
    scenario: NetScenario,
    plan: RawPlan,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    seed: u64,
    heal_at_ms: u64,
    #[serde(default)]
    swarm: Vec<NetFaultKind>,
    #[serde(default)]
    faults: Vec<Spanned<NetFault>>,
    #[serde(default)]
    streams: Vec<Spanned<RawStream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    node: usize,
    stream: usize,
    #[serde(default)]
    ops: Vec<Spanned<NetOp>>,
}

/// The head of a file, as written.
#[derive(Serialize)]
struct Head<'a> {
    world: &'a str,
    format: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fails: &'a Option<String>,
    bugs: &'a [String],
    scenario: &'a NetScenario,
}

/// The range a fault kind's `arg` must be in (see [`NetFaultKind`]).
pub fn arg_range(kind: NetFaultKind) -> RangeInclusive<i64> {
    let max = MAX_MS as i64;
    match kind {
        NetFaultKind::Latency => 1..=max,
        NetFaultKind::RemoteError => 0..=2,
        NetFaultKind::BusDrop | NetFaultKind::BusDuplicate => 0..=1000,
        NetFaultKind::ClockJump => -max..=max,
        NetFaultKind::RemoteSlow | NetFaultKind::BusDelay => 0..=max,
        // Not used by the kind.
        NetFaultKind::PartitionRemote
        | NetFaultKind::PartitionBus
        | NetFaultKind::HoldRemote
        | NetFaultKind::NodeRestart => 0..=max,
    }
}

impl NetPlanFile {
    /// The file for `plan` under `s`.
    pub fn new(plan: NetPlan, s: &NetScenario, fails: Option<&str>) -> NetPlanFile {
        NetPlanFile {
            fails: fails.map(str::to_string),
            bugs: Vec::new(),
            scenario: s.clone(),
            plan,
        }
    }

    /// The TOML text (see the module's layout).
    pub fn to_toml(&self) -> Result<String, String> {
        let p = &self.plan;
        if p.seed > i64::MAX as u64 {
            return Err(format!(
                "cannot encode the plan: seed {} is above 2^63-1, the largest TOML integer",
                p.seed
            ));
        }
        let head = Head {
            world: WORLD,
            format: FORMAT,
            fails: &self.fails,
            bugs: &self.bugs,
            scenario: &self.scenario,
        };
        let mut out = toml::to_string(&head).map_err(|e| format!("cannot encode the plan: {e}"))?;
        out.push_str(&format!(
            "\n[plan]\nseed = {}\nheal_at_ms = {}\nswarm = {}\n",
            p.seed,
            p.heal_at_ms,
            inline(&p.swarm)?
        ));
        lines(&mut out, "faults", &p.faults)?;
        let per = self.scenario.streams_per_node.max(1);
        for (i, ops) in p.streams.iter().enumerate() {
            out.push_str(&format!(
                "\n[[plan.streams]]\nnode = {}\nstream = {}\n",
                i / per,
                i % per
            ));
            lines(&mut out, "ops", ops)?;
        }
        Ok(out)
    }

    /// Parses and checks a plan file; errors name the field, its line and
    /// what was wrong.
    pub fn parse(text: &str) -> Result<NetPlanFile, String> {
        let bad = |e: String| format!("bad loader-net plan file: {e}");
        // The world and format first: another world's or format's file gets
        // that error, not one about a field this reader does not know.
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        match table.get("world").and_then(|w| w.as_str()) {
            Some(WORLD) => {}
            _ => return Err(bad(format!("field `world` must be \"{WORLD}\""))),
        }
        match table.get("format") {
            Some(toml::Value::Integer(n)) if *n == i64::from(FORMAT) => {}
            Some(v) => {
                return Err(bad(format!(
                    "field `format` is {v}, this cache-sim reads {FORMAT}"
                )))
            }
            None => return Err(bad("field `format` is missing".into())),
        }
        let raw: Raw = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        debug_assert_eq!(raw.world, WORLD);
        debug_assert_eq!(raw.format, FORMAT);
        let s = raw.scenario;
        s.validate()
            .map_err(|e| bad(format!("in [scenario]: {e}")))?;
        let line =
            |span: Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
        let p = raw.plan;
        if !(1..=MAX_HEAL_MS).contains(&p.heal_at_ms) {
            return Err(bad(format!(
                "field `plan.heal_at_ms` is {}, must be in 1..={MAX_HEAL_MS}",
                p.heal_at_ms
            )));
        }
        if p.faults.len() > MAX_FAULTS {
            return Err(bad(format!(
                "field `plan.faults` holds {} faults, at most {MAX_FAULTS}",
                p.faults.len()
            )));
        }
        let mut faults = Vec::with_capacity(p.faults.len());
        for (i, f) in p.faults.into_iter().enumerate() {
            let at = line(f.span());
            let f = f.into_inner();
            let field = |name: &str, what: String| {
                bad(format!(
                    "field `plan.faults[{i}].{name}` (line {at}) {what}"
                ))
            };
            if f.at_ms > MAX_HEAL_MS {
                return Err(field(
                    "at_ms",
                    format!("is {}, must be in 0..={MAX_HEAL_MS}", f.at_ms),
                ));
            }
            if faults.last().is_some_and(|l: &NetFault| l.at_ms > f.at_ms) {
                return Err(field(
                    "at_ms",
                    format!(
                        "is {}, before the fault above it: faults are in time order",
                        f.at_ms
                    ),
                ));
            }
            if f.node >= s.nodes {
                return Err(field(
                    "node",
                    format!("is {}, must be below scenario.nodes ({})", f.node, s.nodes),
                ));
            }
            let args = arg_range(f.kind);
            if !args.contains(&f.arg) {
                return Err(field(
                    "arg",
                    format!(
                        "is {}, must be in {}..={} for kind {:?}",
                        f.arg,
                        args.start(),
                        args.end(),
                        f.kind.name()
                    ),
                ));
            }
            if f.dur_ms > MAX_MS {
                return Err(field(
                    "dur_ms",
                    format!("is {}, must be in 0..={MAX_MS}", f.dur_ms),
                ));
            }
            faults.push(f);
        }
        let want = s.nodes * s.streams_per_node;
        if p.streams.len() != want {
            return Err(bad(format!(
                "`plan.streams` has {} tables, must have scenario.nodes × scenario.streams_per_node = {want}",
                p.streams.len()
            )));
        }
        let mut streams = Vec::with_capacity(want);
        for (i, st) in p.streams.into_iter().enumerate() {
            let at = line(st.span());
            let st = st.into_inner();
            let (node, stream) = (i / s.streams_per_node, i % s.streams_per_node);
            if (st.node, st.stream) != (node, stream) {
                return Err(bad(format!(
                    "`plan.streams[{i}]` (line {at}) is node {} stream {}, must be node {node} \
                     stream {stream} (tables in node-major order)",
                    st.node, st.stream
                )));
            }
            if st.ops.len() > MAX_OPS {
                return Err(bad(format!(
                    "field `plan.streams[{i}].ops` (line {at}) holds {} operations, at most {MAX_OPS}",
                    st.ops.len()
                )));
            }
            let mut ops = Vec::with_capacity(st.ops.len());
            for (j, op) in st.ops.into_iter().enumerate() {
                let at = line(op.span());
                let op = op.into_inner();
                let field = |name: &str, what: String| {
                    bad(format!(
                        "field `plan.streams[{i}].ops[{j}].{name}` (line {at}) {what}"
                    ))
                };
                if op.gap_ms > MAX_MS {
                    return Err(field(
                        "gap_ms",
                        format!("is {}, must be in 0..={MAX_MS}", op.gap_ms),
                    ));
                }
                let keys = op.kind.keys();
                if keys.is_empty() || keys.len() > MAX_BATCH {
                    return Err(field(
                        "kind",
                        format!("names {} keys, must name 1..={MAX_BATCH}", keys.len()),
                    ));
                }
                if let Some(k) = keys.iter().find(|k| **k >= s.key_space as u64) {
                    return Err(field(
                        "kind",
                        format!(
                            "names key {k}, must be below scenario.key_space ({})",
                            s.key_space
                        ),
                    ));
                }
                ops.push(op);
            }
            streams.push(ops);
        }
        Ok(NetPlanFile {
            fails: raw.fails,
            bugs: raw.bugs,
            scenario: s,
            plan: NetPlan {
                seed: p.seed,
                streams,
                swarm: p.swarm,
                faults,
                heal_at_ms: p.heal_at_ms,
            },
        })
    }

    /// Reads a plan file.
    pub fn load(path: &str) -> Result<NetPlanFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read plan file {path}: {e}"))?;
        NetPlanFile::parse(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// Whether `text` is a `loader-net` plan file (`world = "loader-net"`
    /// at the top), so that it is read by [`parse`](Self::parse).
    pub fn is_one(text: &str) -> bool {
        toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("world").and_then(|w| w.as_str()).map(|w| w == WORLD))
            .unwrap_or(false)
    }
}

/// How big a plan is, for shrink reports: operations plus faults.
pub fn size(plan: &NetPlan) -> usize {
    plan.streams.iter().map(Vec::len).sum::<usize>() + plan.faults.len()
}

/// What a failing run is compared by while shrinking: the invariant and the
/// verdict's kind (a `LINV-2` wrong value stays a wrong value), typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failing {
    /// The invariant's id.
    pub inv: &'static str,
    /// The verdict's variant.
    pub kind: std::mem::Discriminant<Verdict>,
}

impl Failing {
    /// The first verdict of `o`, if it failed.
    pub fn of(o: &NetOutcome) -> Option<Failing> {
        o.verdicts.first().map(|v| Failing {
            inv: v.inv(),
            kind: std::mem::discriminant(v),
        })
    }
}

/// A plan with its scenario, as the shrinking loop cuts it. Lists: 0 the
/// nodes, 1 the streams of each node (a slot), 2 the faults (one by one),
/// 3 whole streams (emptied), then each stream's operations.
#[derive(Clone, Debug, PartialEq)]
pub struct NetCase {
    /// The plan.
    pub plan: NetPlan,
    /// The scenario (its `nodes` and `streams_per_node` shrink too).
    pub scenario: NetScenario,
}

const NODES: usize = 0;
const SLOTS: usize = 1;
const FAULTS: usize = 2;
const STREAMS: usize = 3;
const OPS: usize = 4;

impl Cut for NetCase {
    fn lists(&self) -> usize {
        OPS + self.plan.streams.len()
    }

    fn len(&self, list: usize) -> usize {
        match list {
            NODES => self.scenario.nodes,
            SLOTS => self.scenario.streams_per_node,
            FAULTS => self.plan.faults.len(),
            STREAMS => self.plan.streams.len(),
            i => self.plan.streams.get(i - OPS).map_or(0, Vec::len),
        }
    }

    fn cut(&mut self, list: usize, range: Range<usize>) -> bool {
        if range.start >= range.end || range.end > self.len(list) {
            return false;
        }
        let per = self.scenario.streams_per_node;
        match list {
            NODES => {
                let gone = range.len();
                if gone >= self.scenario.nodes {
                    return false;
                }
                self.plan.streams.drain(range.start * per..range.end * per);
                self.plan.faults.retain(|f| !range.contains(&f.node));
                for f in &mut self.plan.faults {
                    if f.node >= range.end {
                        f.node -= gone;
                    }
                }
                self.scenario.nodes -= gone;
            }
            SLOTS => {
                if range.len() >= per {
                    return false;
                }
                let mut i = 0;
                self.plan.streams.retain(|_| {
                    let keep = !range.contains(&(i % per));
                    i += 1;
                    keep
                });
                self.scenario.streams_per_node -= range.len();
            }
            FAULTS => {
                self.plan.faults.drain(range);
            }
            STREAMS => {
                let streams = &mut self.plan.streams[range];
                if streams.iter().all(Vec::is_empty) {
                    return false;
                }
                streams.iter_mut().for_each(Vec::clear);
            }
            i => {
                self.plan.streams[i - OPS].drain(range);
            }
        }
        true
    }

    fn one_by_one(&self, list: usize) -> bool {
        list == FAULTS
    }
}

/// A shrunk `loader-net` failure.
#[derive(Clone, Debug)]
pub struct NetShrunk {
    /// The failure it keeps showing.
    pub failing: Failing,
    /// The smallest plan and scenario found.
    pub case: NetCase,
    /// Operations and faults before shrinking.
    pub original_size: usize,
    /// Simulations run.
    pub runs: usize,
}

/// Shrinks `plan` under `s`; `None` if it passes. At most `budget`
/// simulations.
pub fn shrink_net(plan: NetPlan, s: &NetScenario, budget: usize) -> Option<NetShrunk> {
    shrink_net_with(plan, s, budget, run_net_plan)
}

/// [`shrink_net`] with the run supplied: tests plant a failure by judging
/// the real run's outcome further.
pub fn shrink_net_with(
    plan: NetPlan,
    s: &NetScenario,
    budget: usize,
    mut run: impl FnMut(NetPlan, &NetScenario) -> NetOutcome,
) -> Option<NetShrunk> {
    let original_size = size(&plan);
    let case = NetCase {
        plan,
        scenario: s.clone(),
    };
    let r = reduce(case, budget, |c: &NetCase| {
        Failing::of(&run(c.plan.clone(), &c.scenario))
    })?;
    Some(NetShrunk {
        failing: r.verdict,
        case: r.plan,
        original_size,
        runs: r.runs,
    })
}

/// The gauges `cache-sim report` draws, summed over the nodes: flights in
/// the air, refresh tasks, background tasks, and nodes serving (a loader
/// up and not closed).
pub type Gauges = [usize; 4];

/// The series of [`Gauges`], in order.
const SERIES: [(&str, plotters::style::RGBColor); 4] = [
    (
        "flights in the air",
        plotters::style::RGBColor(31, 119, 180),
    ),
    ("refresh tasks", plotters::style::RGBColor(44, 160, 44)),
    ("background tasks", plotters::style::RGBColor(148, 103, 189)),
    ("nodes serving", plotters::style::RGBColor(255, 127, 14)),
];

/// Appends the nodes' gauges at `now` to `samples` when they changed (a
/// step is one tick: most steps change nothing).
///
/// Only accessors that read and change nothing are used, so the run is the
/// same with or without sampling: not the local tier's records, whose read
/// moves the loader's clock high-water mark (a backward clock jump would
/// then be seen differently).
pub fn sample(samples: &mut Vec<(u64, Gauges)>, now: u64, nodes: &[super::world::NodeSlot]) {
    let mut g = [0; 4];
    for n in nodes {
        let Some(l) = n.loader.as_ref() else {
            continue;
        };
        g[0] += l.flights();
        g[1] += l.refresh_tasks();
        g[2] += l.background_tasks();
        g[3] += usize::from(n.closed.is_none());
    }
    if samples.last().is_none_or(|(_, last)| *last != g) {
        samples.push((now, g));
    }
}

/// The SVG timeline of a `loader-net` run (`cache-sim report`).
pub fn report_svg(o: &NetOutcome, s: &NetScenario) -> Result<String, String> {
    let samples: Vec<(u64, &[usize])> = o.samples.iter().map(|(t, g)| (*t, &g[..])).collect();
    crate::loader::report::timeline_svg(&crate::loader::report::Timeline {
        world: format!(
            "scenario {} (loader-net) · seed {} · {} nodes",
            s.name, o.plan.seed, s.nodes
        ),
        series: &SERIES,
        samples: &samples,
        sim_ms: o.sim_ms,
        violation: o.violations.first().map(|v| (v.inv, v.at_ms)),
    })
}

/// The decisions of a `loader-net` run, from its trace: one per answered
/// client call (`nodeN once kK -> vV from Local`, a write, a batch) and per
/// database change behind the cache. The world's answer lines are the
/// record (their format is pinned by the golden trace snapshot); the path
/// is the answer's source (`local`, `remote`, `loader`), `joined` for a
/// caller that joined a flight, `not-found`, `error` (the outcome is its
/// cause), `write` for a set or delete, `source` for a database change,
/// `batch` for a `load_many` (its keys come from several paths).
pub fn decisions(trace: &[String]) -> Vec<crate::decisions::LoaderDecision> {
    use crate::decisions::{split_line, LoaderDecision};
    let key = |w: &str| w.strip_prefix('k').and_then(|k| k.parse::<u64>().ok());
    let mut out = Vec::new();
    for l in trace {
        let Some((ms, who, what)) = split_line(l) else {
            continue;
        };
        let node = match who {
            "db" => None,
            w => match w.strip_prefix("node").and_then(|n| n.parse().ok()) {
                Some(n) => Some(n),
                None => continue,
            },
        };
        let Some((call, answer)) = what.split_once(" -> ").or_else(|| {
            // `db kK changed to vV`
            what.split_once(" changed to ")
        }) else {
            continue;
        };
        let mut words = call.split(' ');
        let (op, keys) = match (node, words.next()) {
            (None, Some(k)) => ("change_source", key(k).into_iter().collect()),
            (Some(_), Some("load_many")) => {
                let list = call.trim_start_matches("load_many").trim();
                let keys: Vec<u64> = list
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .filter_map(|k| k.trim().parse().ok())
                    .collect();
                ("load_many", keys)
            }
            (Some(_), Some(op @ ("once" | "once+refresh" | "set" | "delete"))) => {
                (op, words.next().and_then(key).into_iter().collect())
            }
            _ => continue,
        };
        let (path, outcome) = match op {
            "set" | "delete" => ("write", answer.to_string()),
            "change_source" => ("source", answer.to_string()),
            "once" | "once+refresh" => match answer.split_once(" from ") {
                Some((value, source)) => match source.strip_suffix(" (joined)") {
                    Some(_) => ("joined", value.to_string()),
                    None => (
                        match source {
                            "Local" => "local",
                            "Remote" => "remote",
                            _ => "loader",
                        },
                        value.to_string(),
                    ),
                },
                None if answer == "not_found" => ("not-found", answer.to_string()),
                None => ("error", answer.to_string()),
            },
            _ => ("batch", answer.to_string()),
        };
        out.push(LoaderDecision {
            ms,
            node,
            op: op.into(),
            keys,
            path: path.into(),
            outcome,
        });
    }
    out
}
