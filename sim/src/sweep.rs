//! `cache-sim run`: sweeps seeds over one scenario, or over every named one.
//!
//! Seeds are handed out lazily from a [`SeedRange`] (an arithmetic
//! progression: the range filtered by shard), so a sweep of any length runs
//! in constant memory and starts at once. `jobs` worker threads each run
//! whole simulations (no thread is reachable from inside a simulation);
//! the calling thread is the only one that prints and the only one that
//! reads the wall clock (through [`WallClock`]): it times each seed from
//! the worker's "started" message to its "finished" one.
//!
//! A sweep stops handing out seeds after `--max-failures` failing seeds
//! (in-flight seeds finish and are reported), or when the caller's
//! interrupt flag goes up (Ctrl-C, SIGTERM): then in-flight seeds are
//! abandoned — a seed can run for minutes — and named in the summary.
//! Either way the failing seeds and the summary line come last.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cli::{failure_text, replay_cmd, Setup, WallClock};
use crate::run::{run_seed, RunOutcome};
use crate::scenario::{Scenario, NAMED};

/// `--scenario all`: every named scenario, interleaved seed by seed.
pub const ALL_SCENARIOS: &str = "all";

/// What `--scenario all` sweeps: the call cache's named scenarios, then
/// the loader worlds' (the modelled network, then turmoil's).
pub fn all_named() -> impl Iterator<Item = &'static str> {
    NAMED
        .iter()
        .chain(crate::loader::LOADER_NAMED)
        .chain(crate::loader_net::NET_NAMED)
        .copied()
}

/// Wall seconds after which the progress line names a seed still running.
const LONG_SEED_SECS: f64 = 10.0;

/// How often the printing thread looks at the interrupt flag and the
/// running seeds when no seed finishes.
const POLL: Duration = Duration::from_millis(100);

/// Longest violation detail on a one-line failure report, characters.
const ONE_LINE_DETAIL: usize = 160;

/// What `cache-sim run` prints on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Failure reports, the failing seeds and the summary line, for people.
    #[default]
    Human,
    /// One JSON object per finished seed, then a summary object; nothing
    /// else on stdout.
    Json,
}

/// `cache-sim run` arguments.
#[derive(Clone, Debug)]
pub struct SweepArgs {
    /// Number of seeds (per scenario), at least 1.
    pub seeds: u64,
    /// First seed.
    pub first_seed: u64,
    /// `K/N`.
    pub shard: Option<String>,
    /// Scenario (or [`ALL_SCENARIOS`]), client override and bug-zoo switches.
    pub setup: Setup,
    /// Parallel simulations; 0 means one per core.
    pub jobs: usize,
    /// Stop handing out seeds after this many failing seeds.
    pub max_failures: Option<u64>,
    /// Failures reported in full (the rest get one line each).
    pub details: u64,
    /// Output format.
    pub format: Format,
}

impl Default for SweepArgs {
    fn default() -> Self {
        SweepArgs {
            seeds: 100,
            first_seed: 0,
            shard: None,
            setup: Setup::default(),
            jobs: 1,
            max_failures: None,
            details: 3,
            format: Format::Human,
        }
    }
}

/// How a sweep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every seed run passed.
    Passed,
    /// At least one seed failed.
    Failed,
    /// Interrupted (Ctrl-C, SIGTERM) before the end.
    Interrupted,
}

impl Verdict {
    /// The process exit code: 0 passed, 1 failed, 130 interrupted.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Interrupted => 130,
        }
    }
}

/// The seeds of a run: `first..=last` with `seed % n == k`, an arithmetic
/// progression so that no seed list is ever built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    start: u64,
    step: u64,
    count: u64,
}

impl SeedRange {
    /// `seeds` seeds from `first` (the last is `first + seeds - 1`, which
    /// must fit in u64), in shard `k` of `n`. A range with no seed is an
    /// error naming the flag: a run that tests nothing must not pass.
    pub fn new(first: u64, seeds: u64, (k, n): (u64, u64)) -> Result<SeedRange, String> {
        if seeds == 0 {
            return Err("bad --seeds 0: a run needs at least one seed".into());
        }
        if n == 0 || k >= n {
            return Err(format!("bad --shard {k}/{n}: need 0 <= K < N"));
        }
        let last = first.checked_add(seeds - 1).ok_or_else(|| {
            format!(
                "bad --seeds {seeds} with --first-seed {first}: the last seed would be past {} (at most {} seeds from {first})",
                u64::MAX,
                u64::MAX - first + 1
            )
        })?;
        // The first seed >= `first` in the shard; u128 because `first + n`
        // may not fit in u64.
        let start = first as u128 + ((k as u128 + n as u128 - (first % n) as u128) % n as u128);
        if start > last as u128 {
            return Err(format!(
                "bad --shard {k}/{n}: no seed of {first}..={last} is in it (seed % {n} == {k}); widen --seeds"
            ));
        }
        let count = (last as u128 - start) / n as u128 + 1;
        Ok(SeedRange {
            start: start as u64,
            step: n,
            count: count as u64,
        })
    }

    /// Number of seeds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Never true: an empty range is an error.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`-th seed.
    pub fn get(&self, i: u64) -> Option<u64> {
        // i < count, so start + i * step <= last: no overflow.
        (i < self.count).then(|| self.start + i * self.step)
    }
}

/// Parses `K/N`; no shard is `0/1`.
pub fn parse_shard(shard: Option<&str>) -> Result<(u64, u64), String> {
    let Some(sh) = shard else { return Ok((0, 1)) };
    let (k, n) = sh
        .split_once('/')
        .ok_or_else(|| format!("bad --shard {sh:?}: expected K/N"))?;
    let k: u64 = k
        .parse()
        .map_err(|_| format!("bad --shard {sh:?}: K is not a number"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("bad --shard {sh:?}: N is not a number"))?;
    if n == 0 || k >= n {
        return Err(format!("bad --shard {sh:?}: need 0 <= K < N"));
    }
    Ok((k, n))
}

/// `--jobs`: 0 means one per core.
pub fn resolve_jobs(jobs: usize) -> usize {
    if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jobs
    }
}

/// One scenario of a sweep and the `--scenario` argument that replays it.
struct Swept {
    scenario: Scenario,
    arg: Option<String>,
}

fn scenarios(setup: &Setup) -> Result<Vec<Swept>, String> {
    if setup.scenario.as_deref() == Some(ALL_SCENARIOS) {
        all_named()
            .map(|name| {
                let one = Setup {
                    scenario: Some(name.to_string()),
                    ..setup.clone()
                };
                Ok(Swept {
                    scenario: one.load()?,
                    arg: one.scenario,
                })
            })
            .collect()
    } else {
        Ok(vec![Swept {
            scenario: setup.load()?,
            arg: setup.scenario.clone(),
        }])
    }
}

/// Hands out (scenario, seed) pairs: seed 0 of every scenario, then seed 1
/// of each, … (the zoo's order), so that `--max-failures` over
/// `--scenario all` meets every scenario early. A mutex rather than one
/// atomic counter because the position is a pair and the run count of all
/// scenarios may not fit in u64; a seed takes milliseconds at least, so
/// the lock is never contended.
struct Dispenser {
    next: Mutex<(u64, usize)>,
    stop: AtomicBool,
    range: SeedRange,
    scenarios: usize,
    /// Failing seeds so far, and `--max-failures`: counted by the workers
    /// themselves, so that a worker never takes a seed after the last
    /// allowed failure (the printing thread would see it too late).
    failures: AtomicU64,
    max_failures: Option<u64>,
}

impl Dispenser {
    /// Seeds not yet handed out.
    fn any_left(&self) -> bool {
        let (i, _) = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        self.range.get(i).is_some()
    }

    /// A seed failed: stop handing out seeds at `--max-failures`.
    fn failed(&self) {
        let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        if self.max_failures.is_some_and(|m| n >= m) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    fn take(&self) -> Option<(usize, u64)> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let (i, sc) = *next;
        let seed = self.range.get(i)?;
        *next = if sc + 1 == self.scenarios {
            (i + 1, 0)
        } else {
            (i, sc + 1)
        };
        Some((sc, seed))
    }
}

/// What a worker found out about one failing seed (the outcome itself,
/// trace and all, stays in the worker).
struct FailureReport {
    invariant: String,
    at_ms: Option<u64>,
    detail: String,
    text: String,
    replay: String,
}

enum Msg {
    Started {
        worker: usize,
        scenario: usize,
        seed: u64,
    },
    Finished {
        worker: usize,
        scenario: usize,
        seed: u64,
        sim_ms: u64,
        failure: Option<FailureReport>,
        /// What the seed exercised (faults fired, workload cases met).
        counters: BTreeMap<String, u64>,
    },
}

fn worker(w: usize, disp: &Dispenser, swept: &[Swept], tx: &mpsc::Sender<Msg>) {
    while let Some((sc, seed)) = disp.take() {
        let started = Msg::Started {
            worker: w,
            scenario: sc,
            seed,
        };
        if tx.send(started).is_err() {
            return;
        }
        let sw = &swept[sc];
        let replay = replay_cmd(seed, &sw.scenario, sw.arg.as_deref());
        // A panic of the harness itself (not a planned resolver panic,
        // which the simulation catches) fails this seed, not the sweep.
        let ran = catch_unwind(AssertUnwindSafe(|| run_seed(seed, &sw.scenario, None)));
        let (sim_ms, failure, counters) = match ran {
            Ok(o) => (o.sim_ms, failure_of(&o, sw, replay), o.counters),
            Err(p) => {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                let text = format!(
                    "FAIL seed {seed} (scenario {}): the harness panicked: {why}\n  replay: {replay}\n",
                    sw.scenario.name
                );
                let f = FailureReport {
                    invariant: "panic".into(),
                    at_ms: None,
                    detail: why,
                    text,
                    replay,
                };
                (0, Some(f), BTreeMap::new())
            }
        };
        if failure.is_some() {
            disp.failed();
        }
        let finished = Msg::Finished {
            worker: w,
            scenario: sc,
            seed,
            sim_ms,
            failure,
            counters,
        };
        if tx.send(finished).is_err() {
            return;
        }
    }
}

fn failure_of(o: &RunOutcome, sw: &Swept, replay: String) -> Option<FailureReport> {
    let v = o.violations.first()?;
    Some(FailureReport {
        invariant: v.inv.to_string(),
        at_ms: Some(v.at_ms),
        detail: v.detail.clone(),
        text: failure_text(o, &sw.scenario, &replay),
        replay,
    })
}

/// A failing seed as the final list keeps it: a few words, no trace.
struct Failing {
    scenario: usize,
    seed: u64,
    invariant: String,
    replay: String,
}

/// The printing side of a sweep: counts, the bounded failure list, output.
struct Tally<'a> {
    a: &'a SweepArgs,
    swept: &'a [Swept],
    runs: u64,
    failures: u64,
    sim_ms: u64,
    failing: Vec<Failing>,
    /// Counters summed over the seeds: how often each fault fired and each
    /// interesting case of a rule occurred ("0" is a finding).
    coverage: BTreeMap<String, u64>,
    bar: indicatif::ProgressBar,
}

impl Tally<'_> {
    fn out(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    fn finished(
        &mut self,
        sc: usize,
        seed: u64,
        sim_ms: u64,
        wall_ms: u64,
        f: Option<FailureReport>,
    ) {
        self.runs += 1;
        self.sim_ms = self.sim_ms.saturating_add(sim_ms);
        let name = &self.swept[sc].scenario.name;
        if self.a.format == Format::Json {
            let line = SeedLine {
                kind: "seed",
                scenario: name,
                seed,
                verdict: if f.is_some() { "fail" } else { "pass" },
                invariant: f.as_ref().map(|f| f.invariant.as_str()),
                detail: f.as_ref().map(|f| f.detail.as_str()),
                replay: f.as_ref().map(|f| f.replay.as_str()),
                at_ms: f.as_ref().and_then(|f| f.at_ms),
                sim_ms,
                wall_ms,
            };
            self.out(&json_line(&line));
        }
        if let Some(f) = f {
            self.failures += 1;
            if self.a.format == Format::Human {
                if self.failures <= self.a.details {
                    self.out(f.text.trim_end());
                } else {
                    if self.failures == self.a.details + 1 {
                        self.out(&format!(
                            "(full reports for the first {} failures only; --details N shows more)",
                            self.a.details
                        ));
                    }
                    let mut detail: String = f.detail.chars().take(ONE_LINE_DETAIL).collect();
                    if detail.len() < f.detail.len() {
                        detail.push('…');
                    }
                    let at = f.at_ms.map(|t| format!(" at {t} ms")).unwrap_or_default();
                    self.out(&format!(
                        "FAIL seed {seed} (scenario {name}): {}{at}: {detail}",
                        f.invariant
                    ));
                }
            }
            if (self.failing.len() as u64) < self.a.max_failures.unwrap_or(u64::MAX) {
                self.failing.push(Failing {
                    scenario: sc,
                    seed,
                    invariant: f.invariant,
                    replay: f.replay,
                });
            }
        }
        self.bar.inc(1);
    }
}

/// `cache-sim run`: sweeps seeds until the range is done, `--max-failures`
/// failing seeds were seen, or `interrupt` goes up; prints as `a.format`
/// says, the summary line last.
pub fn sweep(
    a: &SweepArgs,
    wall: &dyn WallClock,
    interrupt: &AtomicBool,
) -> Result<Verdict, String> {
    let shard = parse_shard(a.shard.as_deref())?;
    let range = SeedRange::new(a.first_seed, a.seeds, shard)?;
    if a.max_failures == Some(0) {
        return Err("bad --max-failures 0: must be at least 1".into());
    }
    let swept = Arc::new(scenarios(&a.setup)?);
    let label = match a.setup.scenario.as_deref() {
        Some(ALL_SCENARIOS) => ALL_SCENARIOS.to_string(),
        _ => swept[0].scenario.name.clone(),
    };
    let jobs = resolve_jobs(a.jobs);
    let total = (range.len() as u128 * swept.len() as u128).min(u64::MAX as u128) as u64;
    let bar = progress_bar(total);
    let disp = Arc::new(Dispenser {
        next: Mutex::new((0, 0)),
        stop: AtomicBool::new(false),
        range,
        scenarios: swept.len(),
        failures: AtomicU64::new(0),
        max_failures: a.max_failures,
    });
    let (tx, rx) = mpsc::channel();
    for w in 0..jobs {
        let (disp, swept, tx) = (disp.clone(), swept.clone(), tx.clone());
        // Detached rather than scoped: an interrupted sweep returns without
        // waiting for seeds that may run for minutes.
        std::thread::Builder::new()
            .name(format!("sweep-{w}"))
            .spawn(move || worker(w, &disp, &swept, &tx))
            .map_err(|e| format!("cannot start a sweep thread: {e}"))?;
    }
    drop(tx);
    let mut t = Tally {
        a,
        swept: &swept,
        runs: 0,
        failures: 0,
        sim_ms: 0,
        failing: Vec::new(),
        // The call cache's cases are listed, zeros included, when a call
        // cache scenario is swept (a loader run counts its own, every one).
        coverage: crate::oracle::CASES
            .iter()
            .filter(|_| {
                swept
                    .iter()
                    .any(|sw| sw.scenario.loader.is_none() && sw.scenario.loader_net.is_none())
            })
            .map(|(case, _)| (case.to_string(), 0))
            .collect(),
        bar,
    };
    // Seeds in flight: worker -> (scenario, seed, wall secs at start).
    let mut running: BTreeMap<usize, (usize, u64, f64)> = BTreeMap::new();
    let mut interrupted = false;
    loop {
        if interrupt.load(Ordering::SeqCst) {
            interrupted = true;
            disp.stop.store(true, Ordering::SeqCst);
            break;
        }
        match rx.recv_timeout(POLL) {
            Ok(Msg::Started {
                worker,
                scenario,
                seed,
            }) => {
                running.insert(worker, (scenario, seed, wall.elapsed_secs()));
            }
            Ok(Msg::Finished {
                worker,
                scenario,
                seed,
                sim_ms,
                failure,
                counters,
            }) => {
                for (k, v) in counters {
                    let n = t.coverage.entry(k).or_default();
                    *n = n.saturating_add(v);
                }
                let began = running.remove(&worker).map_or(0.0, |r| r.2);
                let wall_ms = ((wall.elapsed_secs() - began).max(0.0) * 1000.0) as u64;
                t.finished(scenario, seed, sim_ms, wall_ms, failure);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        t.bar.set_message(progress_message(&t, &running, wall));
    }
    t.bar.finish_and_clear();
    // Stopped by --max-failures (the worker that saw the last allowed
    // failure stopped the dispenser) with seeds left to run.
    let stopped_early = !interrupted && disp.stop.load(Ordering::SeqCst) && disp.any_left();
    // Completion order depends on the threads; the list does not.
    t.failing.sort_by_key(|f| (f.scenario, f.seed));
    let abandoned: Vec<(usize, u64)> = running.values().map(|&(sc, seed, _)| (sc, seed)).collect();
    let secs = wall.elapsed_secs().max(1e-9);
    let per_sec = t.runs as f64 / secs;
    let ratio = t.sim_ms as f64 / 1000.0 / secs;
    let name = |sc: usize| swept[sc].scenario.name.as_str();
    match a.format {
        Format::Human => {
            if interrupted {
                let list: Vec<String> = abandoned
                    .iter()
                    .map(|&(sc, seed)| format!("{} seed {seed}", name(sc)))
                    .collect();
                println!(
                    "interrupted: stopped handing out seeds; abandoned in flight: {}",
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                );
            }
            if t.failures > 0 {
                let unlisted = t.failures - t.failing.len() as u64;
                println!(
                    "failing seeds: {}{}",
                    t.failures,
                    if unlisted > 0 {
                        format!(" ({unlisted} after --max-failures not listed)")
                    } else {
                        String::new()
                    }
                );
                for f in &t.failing {
                    println!(
                        "  {} seed {} {}: {}",
                        name(f.scenario),
                        f.seed,
                        f.invariant,
                        f.replay
                    );
                }
            }
            let coverage: Vec<String> =
                t.coverage.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("coverage: {}", coverage.join(", "));
            let mut extra = format!(" jobs {jobs}");
            if stopped_early {
                extra.push_str(&format!(
                    " stopped early (--max-failures {})",
                    a.max_failures.unwrap_or_default()
                ));
            }
            if interrupted {
                extra.push_str(" interrupted");
            }
            println!(
                "seeds {} failures {} seeds/s {per_sec:.1} sim/wall {ratio:.1}x (scenario {label}){extra}",
                t.runs, t.failures
            );
        }
        Format::Json => {
            let summary = SummaryLine {
                kind: "summary",
                scenario: &label,
                seeds: t.runs,
                failures: t.failures,
                failing: t
                    .failing
                    .iter()
                    .map(|f| FailingLine {
                        scenario: name(f.scenario),
                        seed: f.seed,
                        invariant: &f.invariant,
                        replay: &f.replay,
                    })
                    .collect(),
                seeds_per_sec: per_sec,
                sim_wall_ratio: ratio,
                stopped_early,
                interrupted,
                abandoned: abandoned
                    .iter()
                    .map(|&(sc, seed)| SeedId {
                        scenario: name(sc),
                        seed,
                    })
                    .collect(),
                jobs,
                coverage: &t.coverage,
            };
            println!("{}", json_line(&summary));
        }
    }
    Ok(if interrupted {
        Verdict::Interrupted
    } else if t.failures > 0 {
        Verdict::Failed
    } else {
        Verdict::Passed
    })
}

/// `--format json`: one finished seed (fields in this order).
#[derive(Serialize)]
struct SeedLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    scenario: &'a str,
    seed: u64,
    verdict: &'static str,
    invariant: Option<&'a str>,
    detail: Option<&'a str>,
    replay: Option<&'a str>,
    /// Simulated ms of the violation.
    at_ms: Option<u64>,
    sim_ms: u64,
    wall_ms: u64,
}

/// `--format json`: the last line.
#[derive(Serialize)]
struct SummaryLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    scenario: &'a str,
    seeds: u64,
    failures: u64,
    failing: Vec<FailingLine<'a>>,
    seeds_per_sec: f64,
    sim_wall_ratio: f64,
    stopped_early: bool,
    interrupted: bool,
    /// Seeds in flight when interrupted.
    abandoned: Vec<SeedId<'a>>,
    jobs: usize,
    /// Counters summed over the seeds (faults fired, workload cases met).
    coverage: &'a BTreeMap<String, u64>,
}

/// A failing seed in the summary.
#[derive(Serialize)]
struct FailingLine<'a> {
    scenario: &'a str,
    seed: u64,
    invariant: &'a str,
    replay: &'a str,
}

/// A seed and its scenario.
#[derive(Serialize)]
struct SeedId<'a> {
    scenario: &'a str,
    seed: u64,
}

/// One JSON line; the structs above always serialise (no maps with
/// non-string keys), and a NaN rate would print as `null`.
fn json_line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"error\":{:?}}}", e.to_string()))
}

/// The progress line on a terminal (stderr); hidden otherwise. The steady
/// tick keeps the spinner, rate and eta moving while a long seed runs.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} seeds, {msg}, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message("0 failed");
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// `F failed`, plus the oldest seed in flight once it has run for more
/// than [`LONG_SEED_SECS`].
fn progress_message(
    t: &Tally<'_>,
    running: &BTreeMap<usize, (usize, u64, f64)>,
    wall: &dyn WallClock,
) -> String {
    let mut msg = format!("{} failed", t.failures);
    if t.bar.is_hidden() {
        return msg;
    }
    let now = wall.elapsed_secs();
    if let Some(&(sc, seed, began)) = running.values().min_by(|x, y| x.2.total_cmp(&y.2)) {
        let age = now - began;
        if age > LONG_SEED_SECS {
            msg.push_str(&format!(
                ", {} seed {seed} running for {age:.0} s",
                t.swept[sc].scenario.name
            ));
        }
    }
    msg
}
