//! The harness's own speed: simulation seeds of the standard scenario, and
//! the operation-sequence driver on the pure state machine.
//!
//! Criterion measures the wall time of one seed (seed 1, always the same
//! plan) and of a fixed batch of driver inputs. A sweep
//! runs seeds `1..=N` of the standard scenario one after another on one
//! thread (turmoil runs a simulation on one thread) and writes what
//! criterion cannot measure to `criterion/sim_sweep.json`: seeds per second
//! on that one core, and the ratio of simulated time (the sum of every
//! seed's simulated duration) to the wall time of the sweep, the median of
//! five sweeps. It runs before criterion's benches, in a fresh process as
//! `cache-sim sweep` does. N is 200, or
//! 100 with `BENCH_QUICK=1` (about a second a sweep), or
//! `SIM_SWEEP_SEEDS`; `SIM_SWEEP_SEEDS=0` skips it. Seeds differ a lot in
//! simulated length, so a sweep of a few dozen measures its seed mix more
//! than the simulator (20 seeds: 900×; 100: 1190×, same binary); one
//! untimed seed first warms the allocator and caches, as criterion's own
//! warm-up does.

use std::hint::black_box;
use std::time::Instant;

use benches::{criterion, quick, write_summary};
use cache_core::driver::{run_machine, MachineInput, Op, Outcome, Ttl, Who};
use criterion::{criterion_group, Criterion, Throughput};
use sim::{run_seed, Scenario};

fn one_seed(c: &mut Criterion) {
    let scenario = Scenario::named("standard").expect("the standard scenario");
    let first = run_seed(1, &scenario, None);
    assert!(first.passed(), "seed 1 passes: {:?}", first.violations);
    let mut g = c.benchmark_group("sim_standard");
    g.sample_size(10);
    g.bench_function("seed_1", |b| {
        b.iter(|| {
            let outcome = run_seed(1, &scenario, None);
            assert!(outcome.passed());
            black_box(outcome.sim_ms)
        })
    });
    g.finish();
}

/// xorshift64*: the bench's own seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }
}

/// A seeded operation sequence: mostly calls and completions, with
/// releases, leaves, session opens and closes, clock moves and GC, so every
/// rule the driver checks is exercised. (Random bytes decoded through
/// `arbitrary` give one or two operations each: its collections stop at the
/// first even byte.)
fn ops(seed: u64, len: usize) -> MachineInput {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut ops = vec![Op::Open, Op::Open];
    while ops.len() < len {
        let who = match r.next() % 4 {
            0 => Who::Anon,
            1 | 2 => Who::Session(r.next()),
            _ => Who::Inner(r.next()),
        };
        let op = match r.next() % 16 {
            0..=4 => Op::Call {
                who,
                id: r.next(),
                conc: r.next(),
                dnc: r.next() % 10 == 0,
                ttl: [Ttl::None, Ttl::None, Ttl::Short, Ttl::Long][r.next() as usize % 4],
            },
            5 => Op::Arbitrary { who, key: r.next() },
            6..=8 => Op::Complete {
                which: r.next(),
                outcome: match r.next() % 8 {
                    0 => Outcome::Error,
                    1 => Outcome::NoValue,
                    n => Outcome::Value(u16::from(n)),
                },
                returned_id: (r.next() % 8 == 0).then(|| r.next()),
                safe: r.next() % 2 == 0,
                stale_nested: false,
            },
            9 => Op::Leave {
                which: r.next(),
                waiter: r.next(),
            },
            10 | 11 => Op::Release { which: r.next() },
            12 => Op::Open,
            13 => Op::Close { which: r.next() },
            14 => Op::Advance {
                ms: u16::from(r.next()) * 4,
            },
            _ => Op::Gc,
        };
        ops.push(op);
    }
    MachineInput {
        change_cache: seed % 2 == 0,
        ops,
    }
}

fn driver_ops(c: &mut Criterion) {
    let inputs: Vec<MachineInput> = (1..=32).map(|s| ops(s, 256)).collect();
    let steps: usize = inputs
        .iter()
        .map(|i| run_machine(i).expect("every invariant holds").steps)
        .sum();
    assert!(steps > 0);
    let mut g = c.benchmark_group("driver_machine");
    g.throughput(Throughput::Elements(steps as u64));
    g.bench_function(format!("ops_{steps}"), |b| {
        b.iter(|| {
            for input in &inputs {
                black_box(run_machine(input).expect("every invariant holds"));
            }
        })
    });
    g.finish();
}

/// How many times the sweep runs; its wall time is their median.
const SWEEPS: usize = 5;

/// The sweep: seeds per second on one core, simulated/wall time.
fn sweep() {
    let seeds: u64 = match std::env::var("SIM_SWEEP_SEEDS") {
        Ok(n) => n.parse().expect("SIM_SWEEP_SEEDS is a number"),
        Err(_) if quick() => 100,
        Err(_) => 200,
    };
    if seeds == 0 {
        return;
    }
    let scenario = Scenario::named("standard").expect("the standard scenario");
    let mut sim_ms = 0u64;
    let mut failures = 0u64;
    // Warm-up, untimed: seed 0 is not one of the timed seeds.
    failures += u64::from(!run_seed(0, &scenario, None).passed());
    // A sweep takes about a second, short enough for this machine's noise
    // to move it by a fifth: the wall time is the median of five sweeps of
    // the same seeds (each simulates the same time, runs being
    // deterministic).
    let mut walls = Vec::with_capacity(SWEEPS);
    for sweep in 0..SWEEPS {
        let start = Instant::now();
        for seed in 1..=seeds {
            let outcome = run_seed(seed, &scenario, None);
            // Every sweep runs the same seeds: the first one's simulated
            // time and failures stand for all of them.
            if sweep == 0 {
                sim_ms += outcome.sim_ms;
                failures += u64::from(!outcome.passed());
            }
        }
        walls.push(start.elapsed().as_secs_f64());
    }
    walls.sort_by(f64::total_cmp);
    let wall = walls[SWEEPS / 2];
    let sim_s = sim_ms as f64 / 1000.0;
    let path = write_summary(
        "sim_sweep",
        &[
            ("seeds", seeds as f64),
            ("failures", failures as f64),
            ("wall_s", wall),
            ("sim_s", sim_s),
            ("seeds_per_s_per_core", seeds as f64 / wall),
            ("sim_wall_ratio", sim_s / wall),
        ],
    )
    .expect("write the sweep summary");
    println!(
        "sim_sweep: {seeds} seeds ({failures} failed) in {wall:.2} s on one thread (median of {SWEEPS} sweeps): {:.1} seeds/s, simulated {sim_s:.1} s, sim/wall {:.0}x ({})",
        seeds as f64 / wall,
        sim_s / wall,
        path.display()
    );
    assert_eq!(failures, 0, "every seed of the standard scenario passes");
}

criterion_group! {
    name = sim_benches;
    config = criterion();
    targets = one_seed, driver_ops
}

fn main() {
    let listing = std::env::args().any(|a| a == "--list");
    // The sweep runs first, in a fresh process as `cache-sim sweep` does:
    // after criterion's benches in the same process, three sweeps read
    // 824x to 976x simulated/wall where three alone read 1023x to 1152x.
    if !listing {
        sweep();
    }
    sim_benches();
    Criterion::default().configure_from_args().final_summary();
}
