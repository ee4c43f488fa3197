//! `cache-sim`: run, replay, shrink and report deterministic simulations.
//!
//! The wall-clock reads of the simulation commands live here, in [`wall`],
//! to print seeds per second, the simulated-to-wall time ratio and each
//! seed's wall time; and the only signal handler, which turns Ctrl-C and
//! SIGTERM into a clean stop of `cache-sim run`. The real engine and
//! clients (`serve`, `load`: `sim::serve`, `sim::load`) run on real time
//! by design; no simulation reaches them.
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use sim::cli;

/// The exit codes, in every command's help.
const EXIT_CODES: &str = "\
Exit codes:
  0    every seed passed (replay, shrink, report: the seed passed)
  1    a seed failed
  2    bad input: a flag, a scenario file, or a seed range with no seed
  130  run only: interrupted by Ctrl-C or SIGTERM; seeds in flight are
       abandoned and the failing seeds and summary so far are printed
       (a second Ctrl-C exits at once)";

#[derive(Parser)]
#[command(
    name = "cache-sim",
    version,
    about = "Deterministic turmoil simulations of the shared result cache (rules and invariants: docs/SPEC.md)",
    long_about = "Deterministic turmoil simulations of the shared result cache: seeded \
clients, sessions and faults, checked by oracles for the invariants INV-1 … INV-12. \
The rules (C-*, S-*, T-*, …) and invariants (§9) are specified in docs/SPEC.md.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sweep seeds; exits 0 only if every seed passes.
    ///
    /// Failures are reported in full for the first few (--details), then
    /// one line each; the last lines list every failing seed with its
    /// scenario, invariant and replay command, then the summary line
    /// `seeds N failures F seeds/s X sim/wall Yx (scenario S) …`. On a
    /// terminal, stderr shows a progress line.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Number of seeds (per scenario), at least 1; the last seed,
        /// first-seed + seeds - 1, must fit in u64. Seeds are handed out
        /// one by one: any count runs in constant memory.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        /// Run only shard K of N (K/N, 0-based): seeds with seed % N == K.
        /// A shard with no seed in the range is an error.
        #[arg(long)]
        shard: Option<String>,
        /// A named scenario (standard, ttl-heavy, cancel-storm,
        /// restart-heavy, nested-heavy, loader, loader-faults, loader-net),
        /// a TOML file, or `all`: every named scenario,
        /// interleaved seed by seed (seed 0 of each, then seed 1…).
        #[arg(long)]
        scenario: Option<String>,
        /// Override the scenario's number of clients.
        #[arg(long)]
        clients: Option<usize>,
        /// Turn on a bug-zoo switch (repeatable): the sweep must fail.
        #[arg(long = "bug", value_name = "NAME", value_parser = bug_names())]
        bugs: Vec<String>,
        /// Simulations run in parallel (whole simulations on threads);
        /// 0 means one per core.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Stop after this many failing seeds (at least 1): no new seed is
        /// started, seeds in flight finish and are reported.
        #[arg(long, value_name = "N")]
        max_failures: Option<u64>,
        /// Failures reported in full (seed, swarm, leak report, last trace
        /// lines); later ones get one line each.
        #[arg(long, value_name = "N", default_value_t = 3)]
        details: u64,
        /// `human`, or `json`: one JSON object per finished seed on stdout
        /// ({"type":"seed",…}), then one {"type":"summary",…}; nothing else
        /// on stdout.
        #[arg(long, value_enum, default_value_t = OutFormat::Human)]
        format: OutFormat,
    },
    /// Replay one seed, or a plan file written by `shrink`: the full trace
    /// on stdout (simulated time only).
    Replay {
        #[command(flatten)]
        run: RunOf,
        /// Also write the trace to this file (the text printed).
        #[arg(long)]
        trace: Option<String>,
        /// Write the run's decision trace to this file (JSON: the trace and
        /// every O-2 decision with its request; in the loader worlds every
        /// read and write with its path and answer), for `cache-sim diff`.
        #[arg(long, value_name = "FILE")]
        trace_out: Option<String>,
        /// Also write the run's plan to this plan file (every world), which
        /// `replay --plan FILE` runs again and `shrink --plan FILE` shrinks.
        #[arg(long, value_name = "FILE")]
        save_plan: Option<String>,
    },
    /// Shrink a failing seed's plan (or a plan file): remove nodes,
    /// streams, faults and operations while the same invariant fails; print
    /// the minimal plan and write it to a plan file that `replay --plan`
    /// runs. Works for every world (call cache, loader, loader-net).
    Shrink {
        #[command(flatten)]
        run: RunOf,
        /// The plan file to write (default: shrunk-<scenario>-<seed>.toml).
        #[arg(long)]
        out: Option<String>,
    },
    /// Hunt the bug zoo: with each switch on, sweep until a seed fails and
    /// print a Markdown row (switch, rule, invariant, seed, runs, time).
    Zoo {
        /// Only this switch (repeatable); default: every switch.
        #[arg(long = "bug", value_name = "NAME", value_parser = bug_names())]
        bugs: Vec<String>,
        /// Seeds per named scenario to try before giving up.
        #[arg(long, default_value_t = 40)]
        seeds: u64,
        /// Hunt nothing: print every switch, one per line, as
        /// `calls|loader<TAB>name<TAB>rule<TAB>invariants` (comma-separated
        /// invariants), for scripts such as `ci/fuzz-report`.
        #[arg(long, conflicts_with_all = ["bugs", "seeds"])]
        list: bool,
    },
    /// The real engine: the simulation's engine host on real TCP, the
    /// system clock and a SQLite TTL store, with Prometheus text at
    /// `GET /metrics`. Prints `listening on ADDR` and `metrics on URL`
    /// first; logs (one S-7 line per closed session) go to stderr.
    #[command(
        after_help = "Exit codes:\n  2    bad flags, an address in use, an unreadable or corrupt --ttl-db"
    )]
    Serve {
        /// The protocol's address (port 0: any free port).
        #[arg(long)]
        listen: String,
        /// The address of the HTTP server for `GET /metrics`.
        #[arg(long)]
        metrics: String,
        /// The SQLite TTL store's file (created if missing). Without it the
        /// store is an in-memory SQLite database, lost with the process.
        #[arg(long, value_name = "FILE")]
        ttl_db: Option<String>,
        /// Turn on a bug-zoo switch (repeatable).
        #[arg(long = "bug", value_name = "NAME", value_parser = bug_names())]
        bugs: Vec<String>,
    },
    /// Real clients running a scenario's plans against `serve`, then the
    /// metrics-first leak triage: every entry gauge must reach 0 once no
    /// client is connected.
    #[command(
        after_help = "Exit codes:\n  0    no leak\n  1    a gauge stayed up: the leak class is printed\n  2    bad flags, or nothing to connect to"
    )]
    Load {
        /// The engine's address.
        #[arg(long)]
        connect: String,
        /// The engine's metrics, `http://IP:PORT/metrics`.
        #[arg(long)]
        metrics_url: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// How long clients run plans (`5s`, `800ms`, `2m`); clients still
        /// in a plan at the end are cut off abruptly.
        #[arg(long, default_value = "5s")]
        duration: String,
        /// A named scenario (its plans; its simulated faults do not apply).
        #[arg(long, default_value = "standard")]
        scenario: String,
        /// The first round's seed (round r runs seed + r).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How long the gauges get to reach 0 after the clients stop.
        #[arg(long, default_value = "10s")]
        drain: String,
        /// Chance per check that a client drops its connection abruptly.
        #[arg(long, default_value_t = 0.01)]
        disconnect_rate: f64,
    },
    /// The identity flow of every call of one key in a run: requested ID,
    /// call and storage key (and the TTL rule that chose it), path, entry,
    /// returned ID, session; and for a surprising miss or hit, the first
    /// step of the checklist that explains it. In the loader worlds
    /// (loader, loader-faults, loader-net): every read, write and loaded
    /// flight that touched the key, the path it took with its L-rule, and
    /// the last write of the key before each read.
    Explain {
        #[command(flatten)]
        run: RunOf,
        /// The plan's key index (the `kK` of the trace), below the
        /// scenario's key space.
        #[arg(long)]
        key: u64,
    },
    /// The first decision where two runs diverge (files written by
    /// `replay --trace-out`), both identity flows side by side (in the
    /// loader worlds: both loader decisions). Exits 0 when the runs made
    /// the same decisions, 1 when they diverge.
    Diff {
        /// The first run's decision trace.
        a: String,
        /// The second run's decision trace.
        b: String,
        /// Common decisions shown before the divergence.
        #[arg(long, default_value_t = 5)]
        context: usize,
    },
    /// SVG timeline of cache entries (by bucket) and connected clients; in
    /// the loader worlds, of flights in the air, refresh tasks, local
    /// entries and waiting events (loader-net: background tasks and nodes
    /// serving instead of the last two).
    Report {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Output SVG file.
        #[arg(long)]
        svg: String,
        /// Scenario name or TOML file.
        #[arg(long)]
        scenario: Option<String>,
        /// Turn on a bug-zoo switch (repeatable).
        #[arg(long = "bug", value_name = "NAME", value_parser = bug_names())]
        bugs: Vec<String>,
    },
}

/// `--format`.
#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    /// Reports for people.
    Human,
    /// JSON lines for tools.
    Json,
}

/// `--bug`'s values: every bug-zoo switch by name (listed in `--help`).
fn bug_names() -> PossibleValuesParser {
    // The call cache's switches, then the loader's (for loader scenarios).
    let loader = cache_core::bugs::LoaderBug::ALL.map(|b| b.name());
    PossibleValuesParser::new(
        cache_core::bugs::Bug::ALL
            .map(|b| b.name())
            .into_iter()
            .chain(loader),
    )
}

/// Raised by the Ctrl-C / SIGTERM handler; `cache-sim run` polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// First signal: ask the sweep to stop and print what it has. Second: the
/// sweep did not get there (or the user is in a hurry): exit at once.
fn catch_interrupts() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        eprintln!("cache-sim: warning: cannot catch Ctrl-C/SIGTERM ({e}); an interrupted run prints no summary");
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let args = Cli::parse();
    let result = match args.cmd {
        Cmd::Run {
            seeds,
            first_seed,
            shard,
            scenario,
            clients,
            bugs,
            jobs,
            max_failures,
            details,
            format,
        } => {
            catch_interrupts();
            cli::sweep(
                &cli::SweepArgs {
                    seeds,
                    first_seed,
                    shard,
                    setup: cli::Setup {
                        scenario,
                        clients,
                        bugs,
                    },
                    jobs,
                    max_failures,
                    details,
                    format: match format {
                        OutFormat::Human => cli::Format::Human,
                        OutFormat::Json => cli::Format::Json,
                    },
                },
                &wall::Timer::start(),
                &INTERRUPTED,
            )
            .map(|v| v.exit_code())
        }
        Cmd::Replay {
            run,
            trace,
            trace_out,
            save_plan,
        } => cli::replay_saving(
            run.replay_of(),
            &run.setup(),
            trace.as_deref(),
            trace_out.as_deref(),
            save_plan.as_deref(),
        )
        .map(code),
        Cmd::Shrink { run, out } => {
            cli::shrink(run.replay_of(), &run.setup(), out.as_deref()).map(code)
        }
        Cmd::Zoo { list: true, .. } => {
            print!("{}", cli::zoo_list());
            Ok(0)
        }
        Cmd::Zoo { bugs, seeds, .. } => cli::zoo(&bugs, seeds, &wall::Timer::start()).map(code),
        Cmd::Report {
            seed,
            svg,
            scenario,
            bugs,
        } => cli::report(
            seed,
            &cli::Setup {
                scenario,
                clients: None,
                bugs,
            },
            &svg,
        )
        .map(code),
        Cmd::Explain { run, key } => cli::explain(run.replay_of(), &run.setup(), key).map(|_| 0),
        Cmd::Diff { a, b, context } => cli::diff(&a, &b, context).map(code),
        Cmd::Serve {
            listen,
            metrics,
            ttl_db,
            bugs,
        } => sim::serve::serve(&sim::serve::ServeArgs {
            listen,
            metrics,
            ttl_db,
            bugs,
        })
        .map(|()| 0)
        .map_err(|e| e.to_string()),
        Cmd::Load {
            connect,
            metrics_url,
            clients,
            duration,
            scenario,
            seed,
            drain,
            disconnect_rate,
        } => sim::load::load(&sim::load::LoadArgs {
            connect,
            metrics_url,
            clients,
            duration,
            scenario,
            seed,
            drain,
            disconnect_rate,
        })
        .map(|v| code(v == sim::load::LoadVerdict::Clean)),
    };
    match result {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("cache-sim: {e}");
            ExitCode::from(2)
        }
    }
}

/// 0 if the seed (or every switch) passed, 1 otherwise.
fn code(passed: bool) -> u8 {
    if passed {
        0
    } else {
        1
    }
}

/// Wall-clock timing, for the sweep summary only (never inside a simulation).
mod wall {
    use std::time::Instant;

    /// Started at the beginning of a sweep.
    pub struct Timer(Instant);

    impl Timer {
        pub fn start() -> Self {
            Timer(Instant::now())
        }
    }

    impl sim::cli::WallClock for Timer {
        fn elapsed_secs(&self) -> f64 {
            self.0.elapsed().as_secs_f64()
        }
    }
}

/// The run `replay` and `explain` look at: a seed of a scenario, or a plan
/// file written by `shrink`.
#[derive(clap::Args)]
struct RunOf {
    /// The seed.
    #[arg(long, required_unless_present = "plan")]
    seed: Option<u64>,
    /// A plan file written by `cache-sim shrink` or `replay --save-plan`,
    /// of any world (carries its scenario and switches; `--bug` adds more).
    #[arg(long, conflicts_with_all = ["seed", "scenario", "clients"])]
    plan: Option<String>,
    /// Scenario name or TOML file.
    #[arg(long)]
    scenario: Option<String>,
    /// Override the scenario's number of clients.
    #[arg(long)]
    clients: Option<usize>,
    /// Turn on a bug-zoo switch (repeatable).
    #[arg(long = "bug", value_name = "NAME", value_parser = bug_names())]
    bugs: Vec<String>,
}

impl RunOf {
    /// What `--plan FILE` or `--seed N` names (clap requires `--seed` when
    /// `--plan` is absent).
    fn replay_of(&self) -> cli::ReplayOf<'_> {
        match &self.plan {
            Some(path) => cli::ReplayOf::PlanFile(path),
            None => cli::ReplayOf::Seed(self.seed.unwrap_or_default()),
        }
    }

    /// The scenario, client count and switches it asks for.
    fn setup(&self) -> cli::Setup {
        cli::Setup {
            scenario: self.scenario.clone(),
            clients: self.clients,
            bugs: self.bugs.clone(),
        }
    }
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`cache-sim run ... |
/// head`) would panic; the default action ends the process quietly, as
/// every Unix filter does.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; it
    // only resets one signal's disposition to the system default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
