//! Point estimates with their variances, and the control-variate correction.
//!
//! Every sampling estimator here is a linear combination of cell means,
//! `phi_i = offset_i + sum_c coef_c * mean_c`, with independent cells. [`EstimateBuilder`]
//! accumulates value, variance, the same for the control columns, and their covariance.

use crate::moments::{Dims, MomentTable};

/// Values and variances per player and objective (row-major `[n, k]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub n: usize,
    pub k: usize,
    pub values: Vec<f64>,
    pub variance: Vec<f64>,
    /// Control-variate coefficient per player and objective (all zero without a control).
    pub control_coef: Vec<f64>,
}

impl Estimate {
    pub fn stderr(&self) -> Vec<f64> {
        self.variance.iter().map(|v| v.max(0.0).sqrt()).collect()
    }

    /// Largest standard error (the quantity `tol` is compared with).
    pub fn max_stderr(&self) -> f64 {
        self.variance.iter().fold(0.0f64, |m, &v| if v.is_nan() { f64::INFINITY } else { m.max(v.sqrt()) })
    }
}

/// The estimate of a table with one cell per player (`phi_i = mean_i`).
pub fn per_player(n: usize, table: &MomentTable, control_exact: Option<&[f64]>) -> Estimate {
    let mut b = EstimateBuilder::new(n, table.dims);
    for i in 0..n {
        b.add_cell(i, 1.0, table, i);
    }
    b.finish(control_exact)
}

/// Accumulates `sum_c coef_c * mean_c` per player, for the objectives and their controls.
pub struct EstimateBuilder {
    dims: Dims,
    n: usize,
    value: Vec<f64>,
    var: Vec<f64>,
    g_value: Vec<f64>,
    g_var: Vec<f64>,
    cov: Vec<f64>,
}

impl EstimateBuilder {
    pub fn new(n: usize, dims: Dims) -> Self {
        let z = vec![0.0; n * dims.k];
        EstimateBuilder { dims, n, value: z.clone(), var: z.clone(), g_value: z.clone(), g_var: z.clone(), cov: z }
    }

    /// Add `coef * mean(cell)` to player `i`.
    #[inline]
    pub fn add_cell(&mut self, i: usize, coef: f64, table: &MomentTable, cell: usize) {
        let k = self.dims.k;
        let c2 = coef * coef;
        for j in 0..k {
            let o = i * k + j;
            self.value[o] += coef * table.mean(cell, j);
            self.var[o] += c2 * table.var_of_mean(cell, j);
            if self.dims.kc > 0 {
                let c = self.dims.control_col(j);
                self.g_value[o] += coef * table.mean(cell, c);
                self.g_var[o] += c2 * table.var_of_mean(cell, c);
                self.cov[o] += c2 * table.cov_of_means(cell, j);
            }
        }
    }

    /// Add `coef * guess` with variance `coef^2 * var` (both of length `k + kc`) to player `i`,
    /// for a stratum without samples of its own; it carries no covariance with the control.
    pub fn add_guess(&mut self, i: usize, coef: f64, guess: &[f64], var: &[f64]) {
        let k = self.dims.k;
        for j in 0..k {
            let o = i * k + j;
            self.value[o] += coef * guess[j];
            self.var[o] += coef * coef * if var[j].is_nan() { f64::INFINITY } else { var[j] };
            if self.dims.kc > 0 {
                let c = self.dims.control_col(j);
                self.g_value[o] += coef * guess[c];
                self.g_var[o] += coef * coef * if var[c].is_nan() { f64::INFINITY } else { var[c] };
            }
        }
    }

    /// Add a known constant to player `i`: `objectives` (length k) and `controls` (length kc).
    pub fn add_offset(&mut self, i: usize, objectives: &[f64], controls: &[f64]) {
        let k = self.dims.k;
        for (j, &x) in objectives.iter().take(k).enumerate() {
            self.value[i * k + j] += x;
            if self.dims.kc > 0 {
                let c = if self.dims.kc == 1 { 0 } else { j };
                self.g_value[i * k + j] += controls[c];
            }
        }
    }

    /// Finish; with `control_exact` (the control game's exact values, `[n, kc]`), apply the
    /// variance-optimal control variate per player and objective.
    pub fn finish(self, control_exact: Option<&[f64]>) -> Estimate {
        let k = self.dims.k;
        let mut est =
            Estimate { n: self.n, k, values: self.value, variance: self.var, control_coef: vec![0.0; self.n * k] };
        if let (Some(psi), true) = (control_exact, self.dims.kc > 0) {
            for i in 0..self.n {
                for j in 0..k {
                    let o = i * k + j;
                    let gv = self.g_var[o];
                    let cv = self.cov[o];
                    // a control without spread (e.g. an additive game under permutation sampling,
                    // whose marginals are constant) carries no information: leave it out
                    // (also a control that only carries rounding noise, or whose moments are
                    // inconsistent, is left out)
                    let noise = 1e-14 * self.g_value[o] * self.g_value[o];
                    let vv = est.variance[o];
                    if !gv.is_finite()
                        || noise.is_nan()
                        || gv <= noise
                        || !cv.is_finite()
                        || !vv.is_finite()
                        || cv * cv > vv * gv * (1.0 + 1e-9)
                    {
                        continue;
                    }
                    let coef = cv / gv;
                    let target = psi[i * self.dims.kc + if self.dims.kc == 1 { 0 } else { j }];
                    est.values[o] -= coef * (self.g_value[o] - target);
                    est.variance[o] = (est.variance[o] - cv * cv / gv).max(0.0);
                    est.control_coef[o] = coef;
                }
            }
        }
        est
    }
}
