//! Welford running moments for many cells at once, in f64, with the co-moment between each
//! objective and its control column.

/// Pseudo-observations of the pooled variance mixed into each cell's variance by the samplers
/// (see [`MomentTable::with_shrinkage`]).
pub const POOLED_WEIGHT: f64 = 1.0;

/// Dimensions of one utility row: `k` objectives followed by `kc` control columns
/// (`kc` is 0, 1 — one control shared by every objective — or `k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub k: usize,
    pub kc: usize,
}

impl Dims {
    #[inline]
    pub fn width(&self) -> usize {
        self.k + self.kc
    }

    /// Column of the control paired with objective `j`.
    #[inline]
    pub fn control_col(&self, j: usize) -> usize {
        self.k + if self.kc == 1 { 0 } else { j }
    }
}

/// Running moments of `cells` independent streams of utility rows.
#[derive(Clone, Debug)]
pub struct MomentTable {
    pub dims: Dims,
    count: Vec<u64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    cross: Vec<f64>,
    exact: Vec<bool>,
    /// weight (in pseudo-observations) of the pooled variance mixed into each cell's variance
    shrink: f64,
    pooled_m2: Vec<f64>,
    pooled_cross: Vec<f64>,
    pooled_df: u64,
}

impl MomentTable {
    pub fn new(cells: usize, dims: Dims) -> Self {
        let w = dims.width();
        MomentTable {
            dims,
            count: vec![0; cells],
            mean: vec![0.0; cells * w],
            m2: vec![0.0; cells * w],
            cross: vec![0.0; if dims.kc > 0 { cells * dims.k } else { 0 }],
            exact: vec![false; cells],
            shrink: 0.0,
            pooled_m2: vec![0.0; w],
            pooled_cross: vec![0.0; dims.k],
            pooled_df: 0,
        }
    }

    /// Mix `kappa` pseudo-observations of the variance pooled over all cells into each cell's
    /// variance. Cells that saw few (or only equal) samples then neither claim a zero
    /// standard error nor starve in an allocation; with many samples the cell's own variance wins.
    pub fn with_shrinkage(mut self, kappa: f64) -> Self {
        self.shrink = kappa;
        self
    }

    pub fn cells(&self) -> usize {
        self.count.len()
    }

    /// Add one observation `x` (length `dims.width()`) to `cell`.
    #[inline]
    pub fn push(&mut self, cell: usize, x: &[f64]) {
        let w = self.dims.width();
        let k = self.dims.k;
        self.count[cell] += 1;
        let n = self.count[cell] as f64;
        let base = cell * w;
        let mean = &mut self.mean[base..base + w];
        let m2 = &mut self.m2[base..base + w];
        if n >= 2.0 {
            self.pooled_df += 1;
        }
        // co-moments first (with a control), from the objectives' old means and the controls'
        // new means
        for j in 0..if self.dims.kc > 0 { k } else { 0 } {
            let c = self.dims.control_col(j);
            let new_mean_c = mean[c] + (x[c] - mean[c]) / n;
            let inc = (x[j] - mean[j]) * (x[c] - new_mean_c);
            self.cross[cell * k + j] += inc;
            self.pooled_cross[j] += inc;
        }
        for j in 0..w {
            let d = x[j] - mean[j];
            mean[j] += d / n;
            let inc = d * (x[j] - mean[j]);
            m2[j] += inc;
            self.pooled_m2[j] += inc;
        }
    }

    /// Mark `cell` as covering its whole population: its mean is exact, its variance zero.
    pub fn set_exact(&mut self, cell: usize) {
        self.exact[cell] = true;
    }

    #[inline]
    pub fn is_exact(&self, cell: usize) -> bool {
        self.exact[cell]
    }

    #[inline]
    pub fn count(&self, cell: usize) -> u64 {
        self.count[cell]
    }

    #[inline]
    pub fn mean(&self, cell: usize, col: usize) -> f64 {
        self.mean[cell * self.dims.width() + col]
    }

    /// Unbiased sample variance of column `col` (NaN with fewer than two observations).
    #[inline]
    pub fn sample_var(&self, cell: usize, col: usize) -> f64 {
        let n = self.count[cell];
        if n < 2 {
            return f64::NAN;
        }
        (self.m2[cell * self.dims.width() + col] / (n - 1) as f64).max(0.0)
    }

    /// Variance pooled over all cells (NaN before any cell has two observations).
    pub fn pooled_var(&self, col: usize) -> f64 {
        if self.pooled_df == 0 {
            return f64::NAN;
        }
        (self.pooled_m2[col] / self.pooled_df as f64).max(0.0)
    }

    /// The variance used for allocation and standard errors: the sample variance, shrunk
    /// towards the pooled variance when shrinkage is on; NaN when unknown.
    #[inline]
    pub fn unit_var(&self, cell: usize, col: usize) -> f64 {
        let n = self.count[cell];
        if self.shrink > 0.0 && n >= 1 {
            let pooled = self.pooled_var(col);
            if pooled.is_finite() {
                let m2 = self.m2[cell * self.dims.width() + col].max(0.0);
                return (m2 + self.shrink * pooled) / ((n - 1) as f64 + self.shrink);
            }
        }
        self.sample_var(cell, col)
    }

    /// Variance of the cell's mean of column `col`: 0 when exact, infinite when unknown.
    #[inline]
    pub fn var_of_mean(&self, cell: usize, col: usize) -> f64 {
        if self.exact[cell] {
            return 0.0;
        }
        let n = self.count[cell];
        let v = self.unit_var(cell, col);
        if n == 0 || v.is_nan() {
            return f64::INFINITY;
        }
        v / n as f64
    }

    /// Covariance of the means of objective `j` and its control column, shrunk like the
    /// variances so that the 2 x 2 covariance matrix stays positive semi-definite.
    #[inline]
    pub fn cov_of_means(&self, cell: usize, j: usize) -> f64 {
        if self.exact[cell] || self.dims.kc == 0 {
            return 0.0;
        }
        let n = self.count[cell];
        let cross = self.cross[cell * self.dims.k + j];
        if self.shrink > 0.0 && n >= 1 && self.pooled_df > 0 {
            let pooled = self.pooled_cross[j] / self.pooled_df as f64;
            return (cross + self.shrink * pooled) / ((n - 1) as f64 + self.shrink) / n as f64;
        }
        if n < 2 {
            return 0.0;
        }
        cross / ((n - 1) as f64 * n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn welford_matches_two_pass(xs in proptest::collection::vec((-1e3f64..1e3, -1e3f64..1e3), 2..60)) {
            let dims = Dims { k: 1, kc: 1 };
            let mut t = MomentTable::new(1, dims);
            for &(a, b) in &xs {
                t.push(0, &[a, b]);
            }
            let n = xs.len() as f64;
            let ma = xs.iter().map(|p| p.0).sum::<f64>() / n;
            let mb = xs.iter().map(|p| p.1).sum::<f64>() / n;
            let va = xs.iter().map(|p| (p.0 - ma).powi(2)).sum::<f64>() / (n - 1.0);
            let cab = xs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum::<f64>() / (n - 1.0);
            prop_assert!((t.mean(0, 0) - ma).abs() <= 1e-9 * (1.0 + ma.abs()));
            prop_assert!((t.sample_var(0, 0) - va).abs() <= 1e-7 * (1.0 + va));
            prop_assert!((t.cov_of_means(0, 0) * n - cab).abs() <= 1e-7 * (1.0 + cab.abs()));
        }
    }
}
