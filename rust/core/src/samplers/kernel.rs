//! Unbiased KernelSHAP with paired sampling (Covert & Lee 2021).
//!
//! Coalitions are drawn from the Shapley kernel (size s with probability proportional to
//! 1 / (s (n - s)), uniform within the size) together with their complements. The constrained
//! least-squares solution is affine in `b = E[z (v(z) - v(0))]`; with `A = E[z z^T]` known in
//! closed form, each paired sample maps to a per-player contribution `u = L b_j` in O(n), and
//! the estimate is the mean of `u` plus `(v(N) - v(0)) / n`. Welford moments of `u` give the
//! standard errors.

use super::{Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{Estimate, EstimateBuilder};
use crate::moments::{Dims, MomentTable};
use crate::rng::Rng;

pub struct KernelSampler {
    n: usize,
    boundary_planned: bool,
    size_cdf: Vec<f64>,
    /// coefficients of `u = b / (a - c) - gamma * sum(b)`
    inv_diag: f64,
    gamma: f64,
    pool: Vec<u32>,
    v0: Vec<f64>,
    delta: Vec<f64>,
    table: Option<MomentTable>,
    b: Vec<f64>,
    sums: Vec<f64>,
    u: Vec<f64>,
}

impl KernelSampler {
    pub fn new(n: usize) -> Self {
        let mut size_cdf = Vec::new();
        let mut acc = 0.0;
        let mut q = Vec::new();
        for s in 1..n {
            let w = 1.0 / (s as f64 * (n - s) as f64);
            q.push(w);
            acc += w;
            size_cdf.push(acc);
        }
        let total = acc;
        let (mut inv_diag, mut gamma) = (0.0, 0.0);
        if n >= 2 {
            let nf = n as f64;
            let a = 0.5;
            let c: f64 = (1..n).map(|s| q[s - 1] / total * (s as f64) * (s as f64 - 1.0) / (nf * (nf - 1.0))).sum();
            let alpha = 1.0 / (a - c + nf * c);
            inv_diag = 1.0 / (a - c);
            gamma = c / ((a - c) * (a - c + nf * c)) + alpha / nf;
        }
        KernelSampler {
            n,
            boundary_planned: false,
            size_cdf,
            inv_diag,
            gamma,
            pool: (0..n as u32).collect(),
            v0: Vec::new(),
            delta: Vec::new(),
            table: None,
            b: Vec::new(),
            sums: Vec::new(),
            u: Vec::new(),
        }
    }
}

impl Sampler for KernelSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        let n = self.n;
        if !self.boundary_planned {
            self.boundary_planned = true;
            return Plan::Unit(Unit {
                kind: UnitKind::Boundary,
                coalitions: vec![Coalition::empty(n), Coalition::full(n)],
            });
        }
        if self.size_cdf.is_empty() {
            return Plan::Exhausted;
        }
        let size = 1 + rng.categorical(&self.size_cdf);
        rng.partial_shuffle(&mut self.pool, size);
        let s = Coalition::from_members(n, &self.pool[..size]);
        let comp = s.complement(n);
        Plan::Unit(Unit { kind: UnitKind::Paired, coalitions: vec![s, comp] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let n = self.n;
        let w = dims.width();
        match unit.kind {
            UnitKind::Boundary => {
                self.v0 = values[0].to_vec();
                self.delta = values[1].iter().zip(values[0]).map(|(a, b)| a - b).collect();
                self.table = Some(MomentTable::new(n, dims).with_shrinkage(crate::moments::POOLED_WEIGHT));
                if n == 1 {
                    self.table.as_mut().unwrap().set_exact(0);
                }
            }
            UnitKind::Paired => {
                let table = self.table.as_mut().expect("boundary absorbed first");
                self.b.resize(n * w, 0.0);
                self.sums.resize(w, 0.0);
                self.u.resize(w, 0.0);
                self.sums.iter_mut().for_each(|x| *x = 0.0);
                let s = &unit.coalitions[0];
                for i in 0..n {
                    // each player is in exactly one of the pair
                    let v = if s.contains(i) { values[0] } else { values[1] };
                    for (j, (&vj, &v0j)) in v.iter().zip(&self.v0).take(w).enumerate() {
                        let x = 0.5 * (vj - v0j);
                        self.b[i * w + j] = x;
                        self.sums[j] += x;
                    }
                }
                for i in 0..n {
                    for j in 0..w {
                        self.u[j] = self.b[i * w + j] * self.inv_diag - self.gamma * self.sums[j];
                    }
                    table.push(i, &self.u);
                }
            }
            _ => unreachable!("kernel units are boundary or paired"),
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        let table = self.table.as_ref()?;
        let dims = table.dims;
        let n = self.n;
        let mut b = EstimateBuilder::new(n, dims);
        let per: Vec<f64> = self.delta.iter().map(|d| d / n as f64).collect();
        for i in 0..n {
            if n > 1 {
                b.add_cell(i, 1.0, table, i);
            }
            b.add_offset(i, &per[..dims.k], &per[dims.k..]);
        }
        Some(b.finish(control_exact))
    }

    fn min_budget(&self) -> u64 {
        if self.n == 1 {
            2
        } else {
            6
        }
    }
}
