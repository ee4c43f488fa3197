//! `cache-sim`: run, replay, shrink and report deterministic simulations.
//!
//! The only wall-clock reads of the sim crate live here, in [`wall`], to
//! print seeds per second and the simulated-to-wall time ratio.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sim::cli;

#[derive(Parser)]
#[command(
    name = "cache-sim",
    version,
    about = "Deterministic turmoil simulations of the shared result cache (SPEC §9–§10)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sweep seeds; exits 0 only if every seed passes.
    Run {
        /// Number of seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        /// Run only shard K of N (K/N, 0-based): seeds with seed % N == K.
        #[arg(long)]
        shard: Option<String>,
        /// A named scenario (standard, ttl-heavy, cancel-storm, restart-heavy, nested-heavy) or a TOML file.
        #[arg(long)]
        scenario: Option<String>,
        /// Override the scenario's number of clients.
        #[arg(long)]
        clients: Option<usize>,
        /// Turn on a bug-zoo switch (repeatable): the sweep must fail.
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<String>,
        /// Simulations run in parallel (whole simulations on threads).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Replay one seed, or a plan file written by `shrink`: the full trace
    /// on stdout (simulated time only).
    Replay {
        /// The seed.
        #[arg(long, required_unless_present = "plan")]
        seed: Option<u64>,
        /// A plan file written by `cache-sim shrink` (carries its scenario
        /// and switches; `--bug` adds more).
        #[arg(long, conflicts_with_all = ["seed", "scenario", "clients"])]
        plan: Option<String>,
        /// Scenario name or TOML file.
        #[arg(long)]
        scenario: Option<String>,
        /// Also write the trace to this file.
        #[arg(long)]
        trace: Option<String>,
        /// Override the scenario's number of clients.
        #[arg(long)]
        clients: Option<usize>,
        /// Turn on a bug-zoo switch (repeatable).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<String>,
    },
    /// Shrink a failing seed's plan, print the minimal plan and write it to
    /// a plan file that `replay --plan` runs.
    Shrink {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// The plan file to write (default: shrunk-<scenario>-<seed>.toml).
        #[arg(long)]
        out: Option<String>,
        /// Scenario name or TOML file.
        #[arg(long)]
        scenario: Option<String>,
        /// Override the scenario's number of clients.
        #[arg(long)]
        clients: Option<usize>,
        /// Turn on a bug-zoo switch (repeatable).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<String>,
    },
    /// Hunt the bug zoo: with each switch on, sweep until a seed fails and
    /// print a Markdown row (switch, rule, invariant, seed, runs, time).
    Zoo {
        /// Only this switch (repeatable); default: every switch.
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<String>,
        /// Seeds per named scenario to try before giving up.
        #[arg(long, default_value_t = 40)]
        seeds: u64,
    },
    /// SVG timeline of cache entries (by bucket) and connected clients.
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
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<String>,
    },
}

fn main() -> ExitCode {
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
        } => cli::sweep(
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
            },
            &wall::Timer::start(),
        ),
        Cmd::Replay {
            seed,
            plan,
            scenario,
            trace,
            clients,
            bugs,
        } => cli::replay(
            match (&plan, seed) {
                (Some(path), _) => cli::ReplayOf::PlanFile(path),
                // clap requires --seed when --plan is absent.
                (None, seed) => cli::ReplayOf::Seed(seed.unwrap_or_default()),
            },
            &cli::Setup {
                scenario,
                clients,
                bugs,
            },
            trace.as_deref(),
        ),
        Cmd::Shrink {
            seed,
            out,
            scenario,
            clients,
            bugs,
        } => cli::shrink(
            seed,
            &cli::Setup {
                scenario,
                clients,
                bugs,
            },
            out.as_deref(),
        ),
        Cmd::Zoo { bugs, seeds } => cli::zoo(&bugs, seeds, &wall::Timer::start()),
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
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cache-sim: {e}");
            ExitCode::from(2)
        }
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
