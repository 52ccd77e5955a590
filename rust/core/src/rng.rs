//! The seeded generator and the few draws the samplers need, written here so that the same
//! seed gives the same coalitions on every machine and every version of the `rand` family.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};

/// A ChaCha8 stream seeded from a `u64`.
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A sub-stream derived from this seed and a stream id (independent of draw order).
    pub fn substream(seed: u64, stream: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&stream.to_le_bytes());
        key[16..24].copy_from_slice(&0x6470_6f73_6861_7021u64.to_le_bytes());
        Rng(ChaCha8Rng::from_seed(key))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform integer in `0..bound` (Lemire's multiply-and-reject method). `bound > 0`.
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (bound as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform float in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }

    /// Move a uniform random `k`-subset of `pool` to its front (partial Fisher-Yates).
    pub fn partial_shuffle<T>(&mut self, pool: &mut [T], k: usize) {
        let n = pool.len();
        for i in 0..k.min(n) {
            let j = i + self.below((n - i) as u64) as usize;
            pool.swap(i, j);
        }
    }

    /// Index drawn from the cumulative distribution `cdf` (last entry = total mass).
    pub fn categorical(&mut self, cdf: &[f64]) -> usize {
        let total = *cdf.last().expect("non-empty distribution");
        let u = self.unit() * total;
        cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn below_is_uniform() {
        let mut r = Rng::new(1);
        let mut counts = [0usize; 6];
        let draws = 60_000;
        for _ in 0..draws {
            counts[r.below(6) as usize] += 1;
        }
        // chi-square with 5 degrees of freedom; 20.5 is the 0.999 quantile
        let e = draws as f64 / 6.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 20.5, "chi2 = {chi2}");
    }

    #[test]
    fn categorical_follows_weights() {
        let mut r = Rng::new(3);
        let cdf = [1.0, 1.0, 4.0]; // masses 1, 0, 3
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[r.categorical(&cdf)] += 1;
        }
        assert_eq!(counts[1], 0);
        let frac = counts[2] as f64 / 40_000.0;
        assert!((frac - 0.75).abs() < 0.01, "{frac}");
    }
}
