//! Paired timing: ours and a baseline measured in alternating rounds.
//!
//! Criterion measures one bench after another, seconds or minutes apart;
//! on a shared machine whose speed drifts (this one's does, by 10–30 %
//! within minutes), a ratio of two such medians moves with the drift. Here
//! each round times one batch of ours and one batch of the baseline back to
//! back (which goes first alternates), so both see the same machine, and
//! the ratio reported is the median of the per-round ratios.
//!
//! ```
//! use std::time::Duration;
//! use benches::paired::paired;
//!
//! // Two loops of known cost: the second is twice the first.
//! let spin = |n: u64| {
//!     let start = std::time::Instant::now();
//!     let mut x = 0u64;
//!     for i in 0..n {
//!         x = std::hint::black_box(x.wrapping_add(i));
//!     }
//!     start.elapsed()
//! };
//! let p = paired(5, Duration::from_micros(200), |n| spin(n), |n| spin(2 * n));
//! assert_eq!(p.rounds, 5);
//! assert!(p.ratio > 0.0 && p.ratio < 1.0, "{p:?}");
//! ```

use std::time::Duration;

/// The result of [`paired`].
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    /// Rounds measured.
    pub rounds: usize,
    /// Iterations of each side per round.
    pub iters: u64,
    /// Median time per iteration of ours, in ns.
    pub ours_ns: f64,
    /// Median time per iteration of the baseline, in ns.
    pub base_ns: f64,
    /// Median of the per-round ratios ours / baseline.
    pub ratio: f64,
}

impl Paired {
    /// Writes this result as `paired_<name>` for `ci/bench-report` and
    /// prints it.
    pub fn report(&self, name: &str) {
        let path = crate::write_summary(
            &format!("paired_{name}"),
            &[
                ("rounds", self.rounds as f64),
                ("iters", self.iters as f64),
                ("ours_ns", self.ours_ns),
                ("base_ns", self.base_ns),
                ("ratio", self.ratio),
            ],
        )
        .expect("write the paired summary");
        println!(
            "paired {name}: {} rounds of {} iterations: ours {:.1} ns, baseline {:.1} ns, median ratio {:.3} ({})",
            self.rounds,
            self.iters,
            self.ours_ns,
            self.base_ns,
            self.ratio,
            path.display()
        );
    }
}

/// Times `rounds` rounds of `ours` and `base` (each a loop of the given
/// number of iterations returning its time), every round sized so that
/// ours takes about `round`. Both are warmed up first, untimed.
pub fn paired(
    rounds: usize,
    round: Duration,
    mut ours: impl FnMut(u64) -> Duration,
    mut base: impl FnMut(u64) -> Duration,
) -> Paired {
    const PROBE: u64 = 1000;
    ours(PROBE);
    base(PROBE);
    let per_iter = ours(PROBE).as_secs_f64() / PROBE as f64;
    let iters = (round.as_secs_f64() / per_iter.max(1e-9)).clamp(100.0, 10_000_000.0) as u64;
    let (mut o, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..rounds.max(1) {
        let (to, tb) = if k % 2 == 0 {
            let to = ours(iters);
            (to, base(iters))
        } else {
            let tb = base(iters);
            (ours(iters), tb)
        };
        let (no, nb) = (ns_per(to, iters), ns_per(tb, iters));
        o.push(no);
        b.push(nb);
        r.push(no / nb);
    }
    Paired {
        rounds: r.len(),
        iters,
        ours_ns: median(&mut o),
        base_ns: median(&mut b),
        ratio: median(&mut r),
    }
}

fn ns_per(t: Duration, iters: u64) -> f64 {
    t.as_nanos() as f64 / iters as f64
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each side gets the same iteration count every round, and the rounds
    /// alternate which side goes first.
    #[test]
    fn rounds_alternate_and_share_one_size() {
        let log = std::cell::RefCell::new(Vec::new());
        let p = paired(
            4,
            Duration::from_micros(50),
            |n| {
                log.borrow_mut().push(('o', n));
                Duration::from_nanos(n)
            },
            |n| {
                log.borrow_mut().push(('b', n));
                Duration::from_nanos(4 * n)
            },
        );
        assert_eq!(
            (p.rounds, p.ours_ns, p.base_ns, p.ratio),
            (4, 1.0, 4.0, 0.25)
        );
        let timed: Vec<char> = log.borrow()[3..].iter().map(|(side, _)| *side).collect();
        assert_eq!(timed, ['o', 'b', 'b', 'o', 'o', 'b', 'b', 'o']);
        assert!(log.borrow()[3..].iter().all(|(_, n)| *n == p.iters));
    }
}
