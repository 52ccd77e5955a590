//! Banzhaf values by maximum sample reuse (Wang & Jia 2023): every uniformly drawn coalition
//! is reused by every player, `beta_i = mean_{S ni i} v(S) - mean_{S not ni i} v(S)`.
//!
//! Coalitions are drawn in antithetic pairs (S and its complement). Each pair then gives every
//! player exactly one "with" and one "without" utility, so the MSR estimate is the mean of the
//! per-pair differences `d_i = v(side with i) - v(side without i)`, and the Welford moments of
//! `d_i` give standard errors that account for the correlation within a pair.

use super::{Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{per_player, Estimate};
use crate::moments::{Dims, MomentTable};
use crate::rng::Rng;

pub struct MsrSampler {
    n: usize,
    table: Option<MomentTable>,
    diff: Vec<f64>,
}

impl MsrSampler {
    pub fn new(n: usize) -> Self {
        MsrSampler { n, table: None, diff: Vec::new() }
    }
}

impl Sampler for MsrSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        let n = self.n;
        let mut c = Coalition::empty(n);
        let mut i = 0;
        while i < n {
            let bits = rng.next_u64();
            for b in 0..64.min(n - i) {
                if (bits >> b) & 1 == 1 {
                    c.insert(i + b);
                }
            }
            i += 64;
        }
        let comp = c.complement(n);
        Plan::Unit(Unit { kind: UnitKind::Paired, coalitions: vec![c, comp] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let n = self.n;
        let w = dims.width();
        let table =
            self.table.get_or_insert_with(|| MomentTable::new(n, dims).with_shrinkage(crate::moments::POOLED_WEIGHT));
        self.diff.resize(w, 0.0);
        let c = &unit.coalitions[0];
        for i in 0..n {
            let (with, without) = if c.contains(i) { (values[0], values[1]) } else { (values[1], values[0]) };
            super::diff_into(with, without, &mut self.diff);
            table.push(i, &self.diff);
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        Some(per_player(self.n, self.table.as_ref()?, control_exact))
    }

    fn min_budget(&self) -> u64 {
        4
    }
}
