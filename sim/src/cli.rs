//! The CLI's commands, as library functions (the binary only parses
//! arguments and reads the wall clock).

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

/// `cache-sim replay`: prints the full trace; `Ok(true)` if the plan passes.
/// For a plan file, the setup's `--bug` switches add to the file's.
pub fn replay(
    of: ReplayOf<'_>,
    setup: &Setup,
    trace_file: Option<&str>,
    trace_out: Option<&str>,
) -> Result<bool, String> {
    if let ReplayOf::PlanFile(path) = of {
        if let Some(f) = crate::loader::plan_file::LoaderPlanFile::load_if_loader(path)? {
            let l = f.scenario_with_bugs(&setup.bugs)?;
            let o = crate::loader::run_loader_plan(f.plan, &l);
            let again = plan_replay_cmd(path, &setup.bugs);
            return print_replay(
                crate::loader::as_run_outcome(o),
                &Scenario::from_loader(l),
                &again,
                trace_file,
            );
        }
    }
    let (plan, s, again) = resolve(of, setup)?;
    if (s.loader.is_some() || s.loader_net.is_some()) && trace_out.is_some() {
        return Err(
            "bad --trace-out: the loader world records no O-2 decisions (its trace is the \
             replay output; use --trace FILE)"
                .into(),
        );
    }
    let o = match trace_out {
        Some(path) => {
            // The decision capture does not change the run: the trace printed
            // below is the same with or without it.
            let (o, rec) = crate::decisions::record_run(plan, &s);
            std::fs::write(path, rec.to_json()?)
                .map_err(|e| format!("cannot write --trace-out {path}: {e}"))?;
            o
        }
        None => run_plan(plan, &s, None),
    };
    print_replay(o, &s, &again, trace_file)
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

/// The plan, scenario and replay command a seed or plan file names.
fn resolve(of: ReplayOf<'_>, setup: &Setup) -> Result<(Plan, Scenario, String), String> {
    Ok(match of {
        ReplayOf::Seed(seed) => {
            let s = setup.load()?;
            let again = replay_cmd(seed, &s, setup.scenario.as_deref());
            (Plan::generate(seed, &s), s, again)
        }
        ReplayOf::PlanFile(path) => {
            let f = crate::plan_file::PlanFile::load(path)?;
            let s = f.scenario_with_bugs(&setup.bugs)?;
            (f.plan, s, plan_replay_cmd(path, &setup.bugs))
        }
    })
}

/// `cache-sim explain`: runs the seed (or plan file) with the decision
/// capture and explains every call of key `key`. `Ok(true)` when the run
/// passed.
pub fn explain(of: ReplayOf<'_>, setup: &Setup, key: u64) -> Result<bool, String> {
    let (plan, s, _) = resolve(of, setup)?;
    not_loader_net(&s, "explain")?;
    let (o, rec) = crate::decisions::record_run(plan, &s);
    println!(
        "seed {} scenario {}{}",
        o.plan.seed,
        s.name,
        if s.bugs.is_empty() {
            String::new()
        } else {
            format!(" bugs {}", s.bugs)
        }
    );
    print!("{}", crate::explain::explain(&o.plan, &rec, key)?);
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

/// `command` has no `loader-net` form yet (run and replay do): a clear
/// error rather than a call-cache run under the loader-net's name.
fn not_loader_net(s: &Scenario, command: &str) -> Result<(), String> {
    match &s.loader_net {
        Some(_) => Err(format!(
            "bad --scenario {}: `cache-sim {command}` does not support the loader-net world \
             (use `cache-sim replay --scenario {} --seed N` for its trace)",
            s.name, s.name
        )),
        None => Ok(()),
    }
}

/// The command that replays a plan file.
fn plan_replay_cmd(path: &str, extra_bugs: &[String]) -> String {
    let mut cmd = format!("cargo run -p sim --release --bin cache-sim -- replay --plan {path}");
    for bug in extra_bugs {
        cmd.push_str(&format!(" --bug {bug}"));
    }
    cmd
}

/// `cache-sim shrink`: shrinks a failing seed, prints the minimal plan and
/// writes it to a plan file (`out`, default `shrunk-<scenario>-<seed>.toml`)
/// that `cache-sim replay --plan` runs.
pub fn shrink(seed: u64, setup: &Setup, out: Option<&str>) -> Result<bool, String> {
    // Checked before any work: the plan file could not record this seed.
    if seed > i64::MAX as u64 {
        return Err(format!(
            "bad --seed {seed}: shrink writes a plan file, whose seed is a TOML integer (at most 2^63-1)"
        ));
    }
    let s = setup.load()?;
    not_loader_net(&s, "shrink")?;
    let arg = setup.scenario.as_deref();
    if let Some(l) = &s.loader {
        return shrink_loader(seed, l, &s, arg, out);
    }
    let plan = Plan::generate(seed, &s);
    let Some(result) = shrink::shrink(plan, &s, None, 300) else {
        println!("seed {seed} passes: nothing to shrink");
        return Ok(true);
    };
    println!(
        "seed {seed} fails {}: shrunk from {} to {} steps in {} runs",
        result.inv,
        result.original_size,
        result.plan.size(),
        result.runs
    );
    print!(
        "{}",
        crate::plan_file::PlanFile::new(result.plan.clone(), &s, Some(result.inv)).to_toml()?
    );
    let default_out = format!("shrunk-{}-{seed}.toml", s.name);
    let out = out.unwrap_or(&default_out);
    let file = crate::plan_file::PlanFile::new(result.plan, &s, Some(result.inv));
    std::fs::write(out, file.to_toml()?).map_err(|e| format!("cannot write {out}: {e}"))?;
    println!("wrote the shrunk plan to {out}");
    println!("replay the shrunk plan: {}", plan_replay_cmd(out, &[]));
    println!("replay the unshrunk seed: {}", replay_cmd(seed, &s, arg));
    Ok(false)
}

/// `cache-sim shrink` on a loader scenario: the loader plan shrunk, printed
/// and written as a loader plan file.
fn shrink_loader(
    seed: u64,
    l: &crate::loader::LoaderScenario,
    s: &Scenario,
    arg: Option<&str>,
    out: Option<&str>,
) -> Result<bool, String> {
    use crate::loader::plan_file::LoaderPlanFile;
    let plan = crate::loader::LoaderPlan::generate(seed, l);
    let Some(r) = crate::loader::shrink::shrink_loader(plan, l, 300) else {
        println!("seed {seed} passes: nothing to shrink");
        return Ok(true);
    };
    println!(
        "seed {seed} fails {}: shrunk from {} to {} operations in {} runs",
        r.inv,
        r.original_size,
        r.plan.size(),
        r.runs
    );
    let text = LoaderPlanFile::new(r.plan, l, Some(r.inv)).to_toml()?;
    print!("{text}");
    let default_out = format!("shrunk-{}-{seed}.toml", l.name);
    let out = out.unwrap_or(&default_out);
    std::fs::write(out, text).map_err(|e| format!("cannot write {out}: {e}"))?;
    println!("wrote the shrunk plan to {out}");
    println!("replay the shrunk plan: {}", plan_replay_cmd(out, &[]));
    println!("replay the unshrunk seed: {}", replay_cmd(seed, s, arg));
    Ok(false)
}

/// `cache-sim report`: writes the SVG timeline.
pub fn report(seed: u64, setup: &Setup, svg: &str) -> Result<bool, String> {
    let s = setup.load()?;
    not_loader_net(&s, "report")?;
    if let Some(l) = &s.loader {
        let o = crate::loader::run_loader_seed(seed, l);
        std::fs::write(svg, crate::loader::report::svg(&o, l)?)
            .map_err(|e| format!("cannot write {svg}: {e}"))?;
        println!(
            "wrote {svg}: {} samples over {} ms",
            o.samples.len(),
            o.sim_ms
        );
        return Ok(o.passed());
    }
    let o = run_seed(seed, &s, None);
    std::fs::write(svg, report::svg(&o, &s)?).map_err(|e| format!("cannot write {svg}: {e}"))?;
    println!(
        "wrote {svg}: {} samples over {} ms",
        o.samples.len(),
        o.sim_ms
    );
    Ok(o.passed())
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
