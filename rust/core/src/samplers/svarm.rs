//! Stratified SVARM (Kolpaczki et al. 2024): the Shapley value written without marginal
//! contributions, `phi_i = 1/n sum_l (E[v(S) | |S| = l + 1, i in S] - E[v(S) | |S| = l, i not in S])`.
//! Every sampled coalition updates one stratum of every player (the "with" stratum of its
//! members, the "without" stratum of the others): O(n) work per coalition. The strata of sizes
//! 0, 1, n-1 and n are enumerated once at the start and are exact.

use super::{Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{Estimate, EstimateBuilder};
use crate::moments::{Dims, MomentTable};
use crate::rng::Rng;
use std::collections::VecDeque;

pub struct SvarmSampler {
    n: usize,
    warmup: VecDeque<Coalition>,
    warmup_planned: bool,
    /// cumulative distribution over the sampled sizes 2..=n-2
    size_cdf: Vec<f64>,
    pool: Vec<u32>,
    /// middle sizes not yet sampled once (each gets one coalition before random sizes start)
    first_pass: std::ops::Range<usize>,
    table: Option<MomentTable>,
}

#[inline]
fn cell(n: usize, player: usize, stratum: usize, without: bool) -> usize {
    (player * n + stratum) * 2 + without as usize
}

fn border_sizes(n: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [0, 1, n.saturating_sub(1), n].into_iter().filter(|&s| s <= n).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

impl SvarmSampler {
    pub fn new(n: usize) -> Self {
        let mut size_cdf = Vec::new();
        let mut acc = 0.0;
        for s in 2..n.saturating_sub(1) {
            acc += 1.0 / s.min(n - s) as f64;
            size_cdf.push(acc);
        }
        SvarmSampler {
            n,
            warmup: VecDeque::new(),
            warmup_planned: false,
            size_cdf,
            pool: (0..n as u32).collect(),
            first_pass: 2..n.saturating_sub(1),
            table: None,
        }
    }

    fn plan_warmup(&mut self) {
        let n = self.n;
        for s in border_sizes(n) {
            if s == 0 {
                self.warmup.push_back(Coalition::empty(n));
            } else if s == n {
                self.warmup.push_back(Coalition::full(n));
            } else if s == 1 {
                for i in 0..n {
                    self.warmup.push_back(Coalition::from_members(n, &[i as u32]));
                }
            } else {
                // s == n - 1
                let full = Coalition::full(n);
                for i in 0..n {
                    let mut c = full.clone();
                    c.remove(i);
                    self.warmup.push_back(c);
                }
            }
        }
    }
}

impl Sampler for SvarmSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        if !self.warmup_planned {
            self.warmup_planned = true;
            self.plan_warmup();
        }
        if let Some(c) = self.warmup.pop_front() {
            return Plan::Unit(Unit { kind: UnitKind::Single, coalitions: vec![c] });
        }
        if self.size_cdf.is_empty() {
            return Plan::Exhausted;
        }
        let size = match self.first_pass.next() {
            Some(s) => s,
            None => 2 + rng.categorical(&self.size_cdf),
        };
        rng.partial_shuffle(&mut self.pool, size);
        let c = Coalition::from_members(self.n, &self.pool[..size]);
        Plan::Unit(Unit { kind: UnitKind::Single, coalitions: vec![c] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let n = self.n;
        let table = self.table.get_or_insert_with(|| {
            let mut t = MomentTable::new(2 * n * n, dims).with_shrinkage(super::stratified::SHRINK);
            let borders = border_sizes(n);
            for i in 0..n {
                for l in 0..n {
                    if borders.contains(&(l + 1)) {
                        t.set_exact(cell(n, i, l, false));
                    }
                    if borders.contains(&l) {
                        t.set_exact(cell(n, i, l, true));
                    }
                }
            }
            t
        });
        let c = &unit.coalitions[0];
        let v = values[0];
        let s = c.len();
        for i in 0..n {
            if c.contains(i) {
                table.push(cell(n, i, s - 1, false), v);
            } else {
                table.push(cell(n, i, s, true), v);
            }
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        let table = self.table.as_ref()?;
        let n = self.n;
        let dims = table.dims;
        let w = dims.width();
        // a stratum nobody's coalition has reached yet borrows the mean of the same stratum of
        // the other players (same size and side), at the pooled variance
        let mut imputed: Vec<Option<Vec<f64>>> = vec![None; 2 * n];
        let mut b = EstimateBuilder::new(n, dims);
        let coef = 1.0 / n as f64;
        for i in 0..n {
            for l in 0..n {
                for without in [false, true] {
                    let c = cell(n, i, l, without);
                    let sign = if without { -coef } else { coef };
                    if table.count(c) > 0 || table.is_exact(c) {
                        b.add_cell(i, sign, table, c);
                        continue;
                    }
                    let slot = &mut imputed[2 * l + without as usize];
                    let mean = slot.get_or_insert_with(|| {
                        let mut acc = vec![0.0; w];
                        let mut total = 0u64;
                        for p in 0..n {
                            let pc = cell(n, p, l, without);
                            let k = table.count(pc);
                            for (j, a) in acc.iter_mut().enumerate() {
                                *a += k as f64 * table.mean(pc, j);
                            }
                            total += k;
                        }
                        acc.iter_mut().for_each(|a| *a /= total.max(1) as f64);
                        acc
                    });
                    let var: Vec<f64> = (0..w).map(|j| table.pooled_var(j)).collect();
                    b.add_guess(i, sign, &mean[..], &var);
                }
            }
        }
        Some(b.finish(control_exact))
    }

    fn min_budget(&self) -> u64 {
        // the border strata, then a few coalitions per sampled size
        let n = self.n as u64;
        let border = border_sizes(self.n).iter().map(|&s| if s == 0 || s == self.n { 1 } else { n }).sum::<u64>();
        border + self.size_cdf.len() as u64 + 2
    }
}
