//! Stratified sampling by (player, coalition size) with Neyman allocation (Maleki et al. 2013,
//! Castro et al. 2017): a pilot in every stratum, then rounds that give each stratum samples
//! in proportion to its estimated standard deviation.

use super::{diff_into, Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{Estimate, EstimateBuilder};
use crate::moments::{Dims, MomentTable, POOLED_WEIGHT};
use crate::rng::Rng;
use std::collections::VecDeque;

pub struct StratifiedSampler {
    n: usize,
    pilot: u32,
    table: Option<MomentTable>,
    /// strata (player * n + size) still to be sampled in the current round, in order
    todo: VecDeque<u32>,
    pilot_planned: bool,
    planned: u64,
    absorbed: u64,
    pool: Vec<u32>,
    scratch: Vec<f64>,
}

/// Strata whose population is one coalition pair: sizes 0 and n - 1.
fn is_singleton_stratum(n: usize, size: usize) -> bool {
    size == 0 || size + 1 == n
}

impl StratifiedSampler {
    pub fn new(n: usize, budget: Option<u64>, pilot: Option<u32>) -> Self {
        let random_strata = (n * n.saturating_sub(2)).max(1) as u64;
        let pilot = pilot.unwrap_or_else(|| match budget {
            // a third of the budget for the pilot, two evaluations per sample, 2..=8 each
            Some(b) => ((b / 3) / (2 * random_strata)).clamp(2, 8) as u32,
            None => 4,
        });
        StratifiedSampler {
            n,
            pilot,
            table: None,
            todo: VecDeque::new(),
            pilot_planned: false,
            planned: 0,
            absorbed: 0,
            pool: (0..n as u32).collect(),
            scratch: Vec::new(),
        }
    }

    fn plan_pilot(&mut self) {
        let n = self.n;
        for rep in 0..self.pilot {
            for size in 0..n {
                if is_singleton_stratum(n, size) && rep > 0 {
                    continue;
                }
                for player in 0..n {
                    self.todo.push_back((player * n + size) as u32);
                }
            }
        }
    }

    /// Plan one Neyman round once every planned sample has been absorbed.
    fn plan_round(&mut self) -> bool {
        let Some(table) = self.table.as_ref() else { return false };
        let n = self.n;
        let k = table.dims.k;
        let cells = n * n;
        let mut sigma = vec![0.0f64; cells];
        let mut sum = 0.0;
        let mut random_cells = 0usize;
        for (c, sig) in sigma.iter_mut().enumerate() {
            if table.is_exact(c) {
                continue;
            }
            random_cells += 1;
            let s: f64 = (0..k).map(|j| table.unit_var(c, j).max(0.0).sqrt()).sum::<f64>() / k as f64;
            *sig = if s.is_finite() { s } else { 0.0 };
            sum += *sig;
        }
        if random_cells == 0 || sum <= 0.0 {
            // every stratum is constant: the estimate is already exact
            return false;
        }
        // floor each stratum's share so that a pilot that saw no spread still gets samples
        let floor = 0.05 * sum / random_cells as f64;
        for (c, sig) in sigma.iter_mut().enumerate() {
            if !table.is_exact(c) {
                *sig = sig.max(floor);
            }
        }
        let sum: f64 = sigma.iter().sum();
        // the round grows with the work done so far: about half of what is planned already
        // (the engine cuts the last round where the budget ends; rounds interleave strata)
        let round = (self.planned / 2).max(cells as u64);
        let total = (self.planned + round) as f64;
        let mut deficit = vec![0.0f64; cells];
        let mut deficit_sum = 0.0;
        for c in 0..cells {
            if sigma[c] > 0.0 {
                deficit[c] = (total * sigma[c] / sum - table.count(c) as f64).max(0.0);
                deficit_sum += deficit[c];
            }
        }
        if deficit_sum <= 0.0 {
            return false;
        }
        // systematic rounding of round * deficit / deficit_sum
        let mut alloc = vec![0u64; cells];
        let mut cum = 0.0;
        let mut prev = 0u64;
        for c in 0..cells {
            cum += round as f64 * deficit[c] / deficit_sum;
            let now = cum.floor() as u64;
            alloc[c] = now - prev;
            prev = now;
        }
        // interleave strata so a budget cut mid-round still spreads the samples
        let most = alloc.iter().copied().max().unwrap_or(0);
        for rep in 0..most {
            for (c, &a) in alloc.iter().enumerate() {
                if a > rep {
                    self.todo.push_back(c as u32);
                }
            }
        }
        !self.todo.is_empty()
    }
}

impl Sampler for StratifiedSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        if !self.pilot_planned {
            self.pilot_planned = true;
            self.plan_pilot();
        }
        if self.todo.is_empty() {
            if self.absorbed < self.planned {
                return Plan::Wait;
            }
            if !self.plan_round() {
                return Plan::Exhausted;
            }
        }
        let cell = self.todo.pop_front().expect("planned") as usize;
        let n = self.n;
        let (player, size) = (cell / n, cell % n);
        // a uniform subset of the other players of the stratum's size
        let last = n - 1;
        let pos = self.pool.iter().position(|&p| p as usize == player).expect("player in pool");
        self.pool.swap(pos, last);
        rng.partial_shuffle(&mut self.pool[..last], size);
        let s = Coalition::from_members(n, &self.pool[..size]);
        let mut with = s.clone();
        with.insert(player);
        self.planned += 1;
        Plan::Unit(Unit { kind: UnitKind::Marginal { player: player as u32 }, coalitions: vec![s, with] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let n = self.n;
        let table = self.table.get_or_insert_with(|| {
            let mut t = MomentTable::new(n * n, dims).with_shrinkage(POOLED_WEIGHT);
            for player in 0..n {
                for size in 0..n {
                    if is_singleton_stratum(n, size) {
                        t.set_exact(player * n + size);
                    }
                }
            }
            t
        });
        let UnitKind::Marginal { player } = unit.kind else { unreachable!("stratified units are marginals") };
        let size = unit.coalitions[0].len();
        self.scratch.resize(dims.width(), 0.0);
        diff_into(values[1], values[0], &mut self.scratch);
        table.push(player as usize * n + size, &self.scratch);
        self.absorbed += 1;
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        let table = self.table.as_ref()?;
        let n = self.n;
        let mut b = EstimateBuilder::new(n, table.dims);
        for player in 0..n {
            for size in 0..n {
                b.add_cell(player, 1.0 / n as f64, table, player * n + size);
            }
        }
        Some(b.finish(control_exact))
    }

    fn min_budget(&self) -> u64 {
        let n = self.n as u64;
        // the pilot: two evaluations per sample, singleton strata once
        2 * n * n.saturating_sub(2) * self.pilot as u64 + 2 * n.min(2) * n
    }
}
