//! The CLI's commands, as library functions (the binary only parses
//! arguments and reads the wall clock).

use crate::decisions::RunRecord;
use crate::loader_net::plan::NetPlan;
use crate::loader_net::tools::NetPlanFile;
use crate::loader_net::NetScenario;
use crate::plan::Plan;
use crate::run::{run_plan, run_seed, RunOutcome};
use crate::scenario::Scenario;
pub use crate::sweep::{sweep, Format, SweepArgs, Verdict};
use crate::{report, shrink};

/// Wall-clock time, supplied by the binary (the library never reads it).
pub trait WallClock: Sync {
    /// Seconds since the sweep started.
    fn elapsed_secs(&self) -> f64;
}

/// What picks a simulation's setup on the command line.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Scenario name or TOML file.
    pub scenario: Option<String>,
    /// Client override.
    pub clients: Option<usize>,
    /// Bug-zoo switches to turn on (`--bug NAME`, repeatable).
    pub bugs: Vec<String>,
}

impl Setup {
    /// The scenario this setup names, with its overrides and switches.
    pub fn load(&self) -> Result<Scenario, String> {
        scenario(self.scenario.as_deref(), self.clients)?.with_bugs(&self.bugs)
    }
}

/// Loads a scenario, applying a client override.
pub fn scenario(arg: Option<&str>, clients: Option<usize>) -> Result<Scenario, String> {
    let mut s = Scenario::load(arg)?;
    if let Some(c) = clients {
        if c == 0 || c > 64 {
            return Err("bad --clients: must be in 1..=64".into());
        }
        s.clients = c;
    }
    Ok(s)
}

/// The command that replays `seed` under the scenario `arg` names.
pub fn replay_cmd(seed: u64, s: &Scenario, arg: Option<&str>) -> String {
    let mut cmd = format!("cargo run -p sim --release --bin cache-sim -- replay --seed {seed}");
    if let Some(a) = arg {
        cmd.push_str(&format!(" --scenario {a}"));
    }
    for bug in s.bugs.iter() {
        cmd.push_str(&format!(" --bug {bug}"));
    }
    if let Some(l) = &s.loader {
        for bug in l.bugs.iter() {
            cmd.push_str(&format!(" --bug {bug}"));
        }
    }
    if let Some(l) = &s.loader_net {
        for bug in l.bugs.iter() {
            cmd.push_str(&format!(" --bug {bug}"));
        }
    }
    cmd
}

/// The failure report: seed, swarm, invariant, leak report, last trace
/// lines, and the command that replays it.
pub fn failure_text(o: &RunOutcome, s: &Scenario, replay: &str) -> String {
    let mut t = String::new();
    let v = &o.violations[0];
    t.push_str(&format!(
        "FAIL seed {} (scenario {})\n",
        o.plan.seed, s.name
    ));
    if s.loader.is_some() || s.loader_net.is_some() {
        // The loader worlds' swarm is in their trace header.
        if let Some(swarm) = o.trace.iter().find(|l| l.contains("swarm:")) {
            t.push_str(&format!("  {}\n", swarm.trim_start()));
        }
    } else {
        t.push_str(&format!("  {}\n", o.plan.swarm));
    }
    t.push_str(&format!(
        "  violated {} at {} ms: {}\n",
        v.inv, v.at_ms, v.detail
    ));
    if let Some(leak) = &o.leak {
        let classes: Vec<String> = leak.classes().iter().map(|c| c.to_string()).collect();
        t.push_str(&format!("  leak classes: [{}]\n", classes.join("; ")));
        for l in leak.to_string().lines() {
            t.push_str(&format!("  | {l}\n"));
        }
    }
    t.push_str("  last trace lines:\n");
    for l in o.trace.iter().rev().take(15).rev() {
        t.push_str(&format!("  > {l}\n"));
    }
    t.push_str(&format!("  replay: {replay}\n"));
    t
}

/// What `cache-sim replay` runs: a seed's generated plan, or a plan file.
pub enum ReplayOf<'a> {
    /// The plan of this seed under the setup's scenario.
    Seed(u64),
    /// A plan file (as written by `cache-sim shrink`).
    PlanFile(&'a str),
}

/// A run to replay, shrink or explain, in its own world's terms.
enum Loaded {
    /// The call cache.
    Calls(Plan, Scenario),
    /// The modelled loader world.
    Loader(crate::loader::LoaderPlan, crate::loader::LoaderScenario),
    /// The `loader-net` world.
    Net(NetPlan, NetScenario),
}

/// A loaded run: its plan, the setup's scenario as the CLI shows it, and
/// the command that replays it.
struct Run {
    loaded: Loaded,
    scenario: Scenario,
    again: String,
}

/// The run a seed or plan file names; a plan file's world is its
/// `world` field (none: the call cache's).
fn load_run(of: ReplayOf<'_>, setup: &Setup) -> Result<Run, String> {
    match of {
        ReplayOf::Seed(seed) => {
            let s = setup.load()?;
            let again = replay_cmd(seed, &s, setup.scenario.as_deref());
            let loaded = if let Some(l) = &s.loader {
                Loaded::Loader(crate::loader::LoaderPlan::generate(seed, l), (**l).clone())
            } else if let Some(n) = &s.loader_net {
                Loaded::Net(NetPlan::generate(seed, n), (**n).clone())
            } else {
                Loaded::Calls(Plan::generate(seed, &s), s.clone())
            };
            Ok(Run {
                loaded,
                scenario: s,
                again,
            })
        }
        ReplayOf::PlanFile(path) => {
            let again = plan_replay_cmd(path, &setup.bugs);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read plan file {path}: {e}"))?;
            if NetPlanFile::is_one(&text) {
                let f = NetPlanFile::parse(&text).map_err(|e| format!("{path}: {e}"))?;
                let names: Vec<&String> = f.bugs.iter().chain(&setup.bugs).collect();
                let s = Scenario::from_loader_net(f.scenario).with_bugs(&names)?;
                let n = s.loader_net.as_deref().cloned().unwrap_or_default();
                return Ok(Run {
                    loaded: Loaded::Net(f.plan, n),
                    scenario: s,
                    again,
                });
            }
            if let Some(f) = crate::loader::plan_file::LoaderPlanFile::load_if_loader(path)? {
                let l = f.scenario_with_bugs(&setup.bugs)?;
                return Ok(Run {
                    loaded: Loaded::Loader(f.plan, l.clone()),
                    scenario: Scenario::from_loader(l),
                    again,
                });
            }
            let f = crate::plan_file::PlanFile::load(path)?;
            let s = f.scenario_with_bugs(&setup.bugs)?;
            Ok(Run {
                loaded: Loaded::Calls(f.plan, s.clone()),
                scenario: s,
                again,
            })
        }
    }
}

/// `cache-sim replay`: prints the full trace; `Ok(true)` if the plan passes.
/// For a plan file, the setup's `--bug` switches add to the file's.
pub fn replay(
    of: ReplayOf<'_>,
    setup: &Setup,
    trace_file: Option<&str>,
    trace_out: Option<&str>,
) -> Result<bool, String> {
    replay_saving(of, setup, trace_file, trace_out, None)
}

/// [`replay`], first writing the run's plan to the plan file `save_plan`
/// (`replay --save-plan FILE`), which `replay --plan FILE` runs again.
pub fn replay_saving(
    of: ReplayOf<'_>,
    setup: &Setup,
    trace_file: Option<&str>,
    trace_out: Option<&str>,
    save_plan: Option<&str>,
) -> Result<bool, String> {
    let run = load_run(of, setup)?;
    if let Some(path) = save_plan {
        let text = plan_file_text(&run.loaded, &run.scenario, None)?;
        std::fs::write(path, text).map_err(|e| format!("cannot write --save-plan {path}: {e}"))?;
    }
    let o = match trace_out {
        Some(path) => {
            // The decision capture does not change the run: the trace printed
            // below is the same with or without it.
            let (o, rec) = record(run.loaded);
            std::fs::write(path, rec.to_json()?)
                .map_err(|e| format!("cannot write --trace-out {path}: {e}"))?;
            o
        }
        None => match run.loaded {
            Loaded::Calls(plan, s) => run_plan(plan, &s, None),
            Loaded::Loader(plan, l) => {
                crate::loader::as_run_outcome(crate::loader::run_loader_plan(plan, &l))
            }
            Loaded::Net(plan, n) => {
                crate::loader_net::as_run_outcome(crate::loader_net::run_net_plan(plan, &n))
            }
        },
    };
    print_replay(o, &run.scenario, &run.again, trace_file)
}

/// The plan file of a loaded run, in its world's format.
fn plan_file_text(loaded: &Loaded, s: &Scenario, fails: Option<&str>) -> Result<String, String> {
    match loaded {
        Loaded::Calls(plan, calls) => {
            crate::plan_file::PlanFile::new(plan.clone(), calls, fails).to_toml()
        }
        Loaded::Loader(plan, l) => {
            crate::loader::plan_file::LoaderPlanFile::new(plan.clone(), l, fails).to_toml()
        }
        Loaded::Net(plan, n) => {
            let mut f = NetPlanFile::new(plan.clone(), n, fails);
            f.bugs = s.bugs.iter().map(|b| b.to_string()).collect();
            f.to_toml()
        }
    }
}

/// Runs a loaded run with its decisions recorded (the call cache's O-2
/// capture, or a loader world's decisions).
fn record(loaded: Loaded) -> (RunOutcome, RunRecord) {
    match loaded {
        Loaded::Calls(plan, s) => crate::decisions::record_run(plan, &s),
        Loaded::Loader(plan, l) => {
            let o = crate::loader::run_loader_plan(plan, &l);
            let decisions = o.decisions.clone();
            let o = crate::loader::as_run_outcome(o);
            let rec = crate::decisions::loader_record(&o, decisions);
            (o, rec)
        }
        Loaded::Net(plan, n) => {
            let o = crate::loader_net::as_run_outcome(crate::loader_net::run_net_plan(plan, &n));
            let rec =
                crate::decisions::loader_record(&o, crate::loader_net::tools::decisions(&o.trace));
            (o, rec)
        }
    }
}

/// Prints a replayed run's trace, hash and verdict (and writes the trace
/// to `trace_file`); `Ok(true)` if it passed.
fn print_replay(
    o: RunOutcome,
    s: &Scenario,
    again: &str,
    trace_file: Option<&str>,
) -> Result<bool, String> {
    let text = o.trace.join("\n") + "\n";
    print!("{text}");
    if let Some(f) = trace_file {
        std::fs::write(f, &text).map_err(|e| format!("cannot write {f}: {e}"))?;
    }
    println!("trace hash {:016x}", o.trace_hash());
    if o.passed() {
        println!("seed {} passes", o.plan.seed);
    } else {
        print!("{}", failure_text(&o, s, again));
    }
    Ok(o.passed())
}

/// `cache-sim explain`: runs the seed (or plan file) with the decision
/// capture and explains every call of key `key`. `Ok(true)` when the run
/// passed.
pub fn explain(of: ReplayOf<'_>, setup: &Setup, key: u64) -> Result<bool, String> {
    let run = load_run(of, setup)?;
    let s = run.scenario;
    let key_space = match &run.loaded {
        Loaded::Calls(..) => None,
        Loaded::Loader(_, l) => Some(l.key_space),
        Loaded::Net(_, n) => Some(n.key_space),
    };
    let (o, rec) = record(run.loaded);
    // The loader's switches live in its own scenario.
    let bugs = match &s.loader {
        Some(l) if !l.bugs.is_empty() => format!(" bugs {}", l.bugs),
        _ if !s.bugs.is_empty() => format!(" bugs {}", s.bugs),
        _ => String::new(),
    };
    println!("seed {} scenario {}{bugs}", o.plan.seed, s.name);
    match key_space {
        None => print!("{}", crate::explain::explain(&o.plan, &rec, key)?),
        Some(n) => print!("{}", crate::explain::explain_loader(&rec, key, n)?),
    }
    Ok(o.passed())
}

/// `cache-sim diff A B`: `Ok(true)` when the runs made the same decisions.
pub fn diff(a: &str, b: &str, context: usize) -> Result<bool, String> {
    let (ra, rb) = (
        crate::decisions::RunRecord::load(a)?,
        crate::decisions::RunRecord::load(b)?,
    );
    print!("{}", crate::diff::report(a, &ra, b, &rb, context));
    Ok(crate::diff::first_divergence(&ra, &rb).is_none())
}

/// The command that replays a plan file.
fn plan_replay_cmd(path: &str, extra_bugs: &[String]) -> String {
    let mut cmd = format!("cargo run -p sim --release --bin cache-sim -- replay --plan {path}");
    for bug in extra_bugs {
        cmd.push_str(&format!(" --bug {bug}"));
    }
    cmd
}

/// Simulations one `cache-sim shrink` may run.
pub const SHRINK_BUDGET: usize = 300;

/// What a shrink found, in any world: the invariant, the size before, the
/// simulations run, and the shrunk run.
struct ShrinkReport {
    inv: &'static str,
    original_size: usize,
    runs: usize,
    shrunk: Loaded,
}

impl Loaded {
    /// How big the plan is, and in what unit (shrink reports).
    fn size(&self) -> (usize, &'static str) {
        match self {
            Loaded::Calls(plan, _) => (plan.size(), "steps"),
            Loaded::Loader(plan, _) => (plan.size(), "operations"),
            Loaded::Net(plan, _) => (
                crate::loader_net::tools::size(plan),
                "operations and faults",
            ),
        }
    }
}

/// `cache-sim shrink`: shrinks a failing seed (or plan file), prints the
/// minimal plan and writes it to a plan file (`out`, default
/// `shrunk-<scenario>-<seed>.toml`) that `cache-sim replay --plan` runs.
pub fn shrink(of: ReplayOf<'_>, setup: &Setup, out: Option<&str>) -> Result<bool, String> {
    // Checked before any work: the plan file could not record this seed.
    if let ReplayOf::Seed(seed) = of {
        if seed > i64::MAX as u64 {
            return Err(format!(
                "bad --seed {seed}: shrink writes a plan file, whose seed is a TOML integer (at most 2^63-1)"
            ));
        }
    }
    let run = load_run(of, setup)?;
    let (seed, name, found) = match run.loaded {
        Loaded::Calls(plan, s) => {
            let (seed, name) = (plan.seed, s.name.clone());
            let found = shrink::shrink(plan, &s, None, SHRINK_BUDGET).map(|r| ShrinkReport {
                inv: r.inv,
                original_size: r.original_size,
                runs: r.runs,
                shrunk: Loaded::Calls(r.plan, s.clone()),
            });
            (seed, name, found)
        }
        Loaded::Loader(plan, l) => {
            let (seed, name) = (plan.seed, l.name.clone());
            let found = crate::loader::shrink::shrink_loader(plan, &l, SHRINK_BUDGET).map(|r| {
                ShrinkReport {
                    inv: r.inv,
                    original_size: r.original_size,
                    runs: r.runs,
                    shrunk: Loaded::Loader(r.plan, l.clone()),
                }
            });
            (seed, name, found)
        }
        Loaded::Net(plan, n) => {
            let (seed, name) = (plan.seed, n.name.clone());
            let found = crate::loader_net::tools::shrink_net(plan, &n, SHRINK_BUDGET).map(|r| {
                ShrinkReport {
                    inv: r.failing.inv,
                    original_size: r.original_size,
                    runs: r.runs,
                    shrunk: Loaded::Net(r.case.plan, r.case.scenario),
                }
            });
            (seed, name, found)
        }
    };
    let Some(r) = found else {
        println!("seed {seed} passes: nothing to shrink");
        return Ok(true);
    };
    let (size, unit) = r.shrunk.size();
    println!(
        "seed {seed} fails {}: shrunk from {} to {size} {unit} in {} runs",
        r.inv, r.original_size, r.runs
    );
    let file = plan_file_text(&r.shrunk, &run.scenario, Some(r.inv))?;
    print!("{file}");
    let default_out = format!("shrunk-{name}-{seed}.toml");
    let out = out.unwrap_or(&default_out);
    std::fs::write(out, &file).map_err(|e| format!("cannot write {out}: {e}"))?;
    println!("wrote the shrunk plan to {out}");
    println!("replay the shrunk plan: {}", plan_replay_cmd(out, &[]));
    println!("replay the unshrunk run: {}", run.again);
    Ok(false)
}

/// `cache-sim report`: writes the SVG timeline.
pub fn report(seed: u64, setup: &Setup, svg: &str) -> Result<bool, String> {
    let s = setup.load()?;
    // (the SVG, samples drawn, simulated ms, passed) in the world's terms.
    let (text, samples, sim_ms, passed) = if let Some(n) = &s.loader_net {
        let o = crate::loader_net::run_net_seed(seed, n);
        let text = crate::loader_net::tools::report_svg(&o, n)?;
        (text, o.samples.len(), o.sim_ms, o.passed())
    } else if let Some(l) = &s.loader {
        let o = crate::loader::run_loader_seed(seed, l);
        let text = crate::loader::report::svg(&o, l)?;
        (text, o.samples.len(), o.sim_ms, o.passed())
    } else {
        let o = run_seed(seed, &s, None);
        (report::svg(&o, &s)?, o.samples.len(), o.sim_ms, o.passed())
    };
    std::fs::write(svg, text).map_err(|e| format!("cannot write {svg}: {e}"))?;
    println!("wrote {svg}: {samples} samples over {sim_ms} ms");
    Ok(passed)
}

/// `cache-sim zoo --list`: every switch, one per line: its world (`calls`
/// for the call cache, `loader` for the read-through loader), name, rule and
/// the invariants it is expected to break, tab-separated.
pub fn zoo_list() -> String {
    use cache_core::bugs::{Bug, LoaderBug};
    let calls = Bug::ALL
        .iter()
        .map(|b| ("calls", b.name(), b.rule(), b.invariants()));
    let loader = LoaderBug::ALL
        .iter()
        .map(|b| ("loader", b.name(), b.rule(), b.invariants()));
    calls
        .chain(loader)
        .map(|(world, name, rule, invariants)| {
            format!("{world}\t{name}\t{rule}\t{}\n", invariants.join(","))
        })
        .collect()
}

/// `cache-sim zoo`: hunts each named switch (all when `names` is empty) over
/// the default sweep order and prints one Markdown table row per switch;
/// `Ok(true)` if every switch was caught by an invariant it is expected to
/// break.
pub fn zoo(names: &[String], seeds: u64, wall: &dyn WallClock) -> Result<bool, String> {
    use cache_core::bugs::{Bug, LoaderBug};
    // Loader switches are hunted through the loader world; only when named
    // (the default hunt is the call cache's zoo).
    let (loader, calls): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| n.parse::<LoaderBug>().is_ok());
    let bugs: Vec<Bug> = if names.is_empty() {
        Bug::ALL.to_vec()
    } else {
        calls
            .iter()
            .map(|n| n.parse::<Bug>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?
    };
    println!("| switch | breaks | invariant | first failing seed | seeds needed | time |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut all = true;
    for bug in loader.iter().filter_map(|n| n.parse::<LoaderBug>().ok()) {
        let start = wall.elapsed_secs();
        let found = crate::loader::zoo::hunt_loader(bug, seeds)
            .map(|f| (f.invariant, f.scenario.to_string(), f.seed, f.runs));
        let secs = wall.elapsed_secs() - start;
        let tried = seeds * crate::loader::LOADER_NAMED.len() as u64;
        all &= zoo_row(bug.name(), bug.rule(), bug.invariants(), found, tried, secs);
    }
    for bug in bugs {
        let start = wall.elapsed_secs();
        let found = crate::zoo::hunt(bug, seeds).map(|f| (f.invariant, f.scenario, f.seed, f.runs));
        let secs = wall.elapsed_secs() - start;
        let tried = seeds * crate::scenario::NAMED.len() as u64;
        all &= zoo_row(bug.name(), bug.rule(), bug.invariants(), found, tried, secs);
    }
    Ok(all)
}

/// Prints one `cache-sim zoo` row: the switch, the rule it breaks, and the
/// hunt's first failure (invariant, scenario, seed, runs) or "not caught"
/// after `tried` runs. `true` if caught by an invariant the switch breaks.
fn zoo_row(
    name: &str,
    rule: &str,
    invariants: &[&str],
    found: Option<(&'static str, String, u64, u64)>,
    tried: u64,
    secs: f64,
) -> bool {
    match found {
        Some((inv, scenario, seed, runs)) => {
            let expected = invariants.contains(&inv);
            println!(
                "| `{name}` | {rule} | {inv}{} | {scenario} seed {seed} | {runs} | {secs:.2} s |",
                if expected { "" } else { " (unexpected)" },
            );
            expected
        }
        None => {
            println!("| `{name}` | {rule} | not caught | - | > {tried} | {secs:.2} s |");
            false
        }
    }
}
