//! SplitMix64: the one random source of a simulation. Seeded, portable,
//! never the OS (SPEC §10 determinism).

use cache_core::loader::rng::SplitMix64;

/// A seeded SplitMix64 generator (the cache's own, shared with the
/// loader's jitter), split into named streams.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator for `seed`, mixed with a stream name so that sub-streams
    /// (plan, swarm) do not shift when another one draws more numbers.
    pub fn new(seed: u64, stream: &str) -> Self {
        let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in stream.bytes() {
            s = (s ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        Self(SplitMix64::new(s))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Zipf-like index in `0..n` (exponent 1): low indexes are hot.
    pub fn zipf(&mut self, n: u64) -> u64 {
        let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
        let mut x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        for i in 1..=n {
            x -= 1.0 / i as f64;
            if x <= 0.0 {
                return i - 1;
            }
        }
        n - 1
    }

    /// Index drawn from `weights` (all zero: 0).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return 0;
        }
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < u64::from(*w) {
                return i;
            }
            x -= u64::from(*w);
        }
        weights.len() - 1
    }
}

/// FNV-1a 64 of `bytes`: the trace hash of INV-12.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}
