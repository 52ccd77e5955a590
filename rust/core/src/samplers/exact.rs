//! Exact enumeration of all 2^n coalitions, streamed: each utility is folded into the values
//! as soon as it arrives, so nothing of size 2^n is kept.

use super::{Plan, Sampler, Semivalue, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::Estimate;
use crate::moments::Dims;
use crate::rng::Rng;

/// Weights `(with, without)` indexed by coalition size `s`: a coalition S of size s adds
/// `with[s] * v(S)` to each member and subtracts `without[s] * v(S)` from each non-member.
pub fn exact_weights(n: usize, semivalue: Semivalue) -> (Vec<f64>, Vec<f64>) {
    let mut with = vec![0.0; n + 1];
    let mut without = vec![0.0; n + 1];
    match semivalue {
        Semivalue::Shapley => {
            // w(s) = s! (n-s-1)! / n! = 1 / (n * C(n-1, s))
            let mut binom = vec![1.0f64; n.max(1)];
            for s in 1..n {
                binom[s] = binom[s - 1] * (n - s) as f64 / s as f64;
            }
            let w = |s: usize| 1.0 / (n as f64 * binom[s]);
            for s in 0..=n {
                if s >= 1 {
                    with[s] = w(s - 1);
                }
                if s < n {
                    without[s] = w(s);
                }
            }
        }
        Semivalue::Banzhaf => {
            let w = 0.5f64.powi(n as i32 - 1);
            with.iter_mut().for_each(|x| *x = w);
            without.iter_mut().for_each(|x| *x = w);
        }
    }
    (with, without)
}

/// Fold one coalition's utility row `v` (width `w`) into `phi` (`[n, w]`).
#[inline]
pub fn fold_coalition(phi: &mut [f64], c: &Coalition, v: &[f64], with: &[f64], without: &[f64]) {
    let w = v.len();
    let n = phi.len() / w.max(1);
    let s = c.len();
    for i in 0..n {
        let (sign, wt) = if c.contains(i) { (1.0, with[s]) } else { (-1.0, without[s]) };
        let row = &mut phi[i * w..(i + 1) * w];
        for j in 0..w {
            row[j] += sign * wt * v[j];
        }
    }
}

pub struct ExactSampler {
    n: usize,
    next: u64,
    total: u64,
    with: Vec<f64>,
    without: Vec<f64>,
    phi: Vec<f64>,
    dims: Option<Dims>,
    absorbed: u64,
}

impl ExactSampler {
    pub fn new(n: usize, semivalue: Semivalue) -> Self {
        let (with, without) = exact_weights(n, semivalue);
        ExactSampler { n, next: 0, total: 1u64 << n, with, without, phi: Vec::new(), dims: None, absorbed: 0 }
    }
}

impl Sampler for ExactSampler {
    fn next_unit(&mut self, _rng: &mut Rng) -> Plan {
        if self.next >= self.total {
            return Plan::Exhausted;
        }
        let mask = self.next;
        self.next += 1;
        let c = if self.n <= 64 {
            Coalition::from_mask(self.n, mask)
        } else {
            unreachable!("exact enumeration is limited to few players")
        };
        Plan::Unit(Unit { kind: UnitKind::Single, coalitions: vec![c] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let w = dims.width();
        if self.dims.is_none() {
            self.dims = Some(dims);
            self.phi = vec![0.0; self.n * w];
        }
        fold_coalition(&mut self.phi, &unit.coalitions[0], values[0], &self.with, &self.without);
        self.absorbed += 1;
    }

    fn estimate(&self, _control_exact: Option<&[f64]>) -> Option<Estimate> {
        let dims = self.dims?;
        let (k, w) = (dims.k, dims.width());
        let mut values = vec![0.0; self.n * k];
        for i in 0..self.n {
            values[i * k..(i + 1) * k].copy_from_slice(&self.phi[i * w..i * w + k]);
        }
        // until every coalition is in, the partial sums are not estimates: report them as unknown
        let var = if self.absorbed == self.total { 0.0 } else { f64::INFINITY };
        Some(Estimate { n: self.n, k, values, variance: vec![var; self.n * k], control_coef: vec![0.0; self.n * k] })
    }

    fn repeats(&self) -> bool {
        false
    }

    fn min_budget(&self) -> u64 {
        self.total
    }
}
