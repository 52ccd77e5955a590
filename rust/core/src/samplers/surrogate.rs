//! The surrogate game of the regression-adjusted estimators ([`super::svarm`] and
//! [`super::paired`]): a game of order one or two fitted to the evaluated coalitions by weighted
//! least squares, whose Shapley values are known exactly.
//!
//! The surrogate is `g(S) = c + sum_i beta_i f_i(S) (+ sum_{i<j} gamma_ij x_i x_j when
//! quadratic)`, with `x_i = 1[i in S]` and the main-effect feature `f_i = x_i`, or `x_i - 1/2`
//! when centered. The constant `c` is not fitted: the sampler takes it off the targets (`v(0)`
//! off a game; nothing off the odd part of one, `v_o(N \ S) = -v_o(S)`, which centered
//! features fit). Either way the Shapley values are `beta_i + 1/2 sum_j gamma_ij`
//! ([`SurrogateFit::shapley`]), and every feature rises by one from the empty to the grand
//! coalition, so efficiency, `g(N) - g(0) = v(N) - v(0)`, is the constraint that the
//! coefficients sum to `v(N) - v(0)`.
//!
//! The fit is accumulated row by row into normal equations kept per block, a group of rows the
//! sampler chooses (enumerated or sampled, a fold, a class of sizes), each row with its own
//! weight; a solve sums the blocks with block weights the sampler gives, since it knows how its
//! rows were drawn. A whisper of ridge steadies the main effects; the pair effects' ridge is
//! chosen per utility column by two-fold cross-validation ([`SurrogateFit::solve_cross_validated`]).

use crate::coalition::Coalition;
use std::sync::Mutex;

/// Ridges tried on the pair effects of a quadratic surrogate, relative to the mean weight of a
/// main effect (the largest all but removes the pairs: a linear surrogate).
const RIDGES: &[f64] = &[1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e3];

/// The ridge on the pair effects when there is no cross-validation to choose it.
const DEFAULT_RIDGE: f64 = RIDGES[RIDGES.len() / 2];

/// A surrogate game fitted coalition by coalition: the normal equations of its blocks, and the
/// ridges of the last cross-validation.
pub(super) struct SurrogateFit {
    n: usize,
    /// number of coefficients: n, plus n (n - 1) / 2 pairs when quadratic
    p: usize,
    /// utility columns of a row's target
    w: usize,
    quadratic: bool,
    /// main-effect features `x_i - 1/2` rather than `x_i`
    centered: bool,
    /// per block, the weighted sums of `f f^T` (`[p, p]`) and of `f y^T` (`[p, w]`) over its
    /// rows, and the number of its rows
    gram: Vec<Vec<f64>>,
    rhs: Vec<Vec<f64>>,
    rows: Vec<u64>,
    /// the ridge per utility column chosen by the last cross-validation (for quick estimates)
    chosen: Mutex<Option<Vec<f64>>>,
}

impl SurrogateFit {
    /// An empty fit of `n` players' games with `w` utility columns, in `blocks` blocks.
    pub(super) fn new(n: usize, w: usize, quadratic: bool, centered: bool, blocks: usize) -> Self {
        let p = if quadratic { n + n * (n - 1) / 2 } else { n };
        SurrogateFit {
            n,
            p,
            w,
            quadratic,
            centered,
            gram: vec![vec![0.0; p * p]; blocks],
            rhs: vec![vec![0.0; p * w]; blocks],
            rows: vec![0; blocks],
            chosen: Mutex::new(None),
        }
    }

    /// Number of coefficients.
    pub(super) fn coefficients(&self) -> usize {
        self.p
    }

    /// Rows added to `block`.
    pub(super) fn rows(&self, block: usize) -> u64 {
        self.rows[block]
    }

    #[inline]
    fn pair_index(&self, i: usize, j: usize) -> usize {
        // i < j; pairs in row-major order of the strict upper triangle
        self.n + i * (2 * self.n - i - 1) / 2 + (j - i - 1)
    }

    /// `visit(coefficient, value)` for each feature of `c` that is not zero, in increasing
    /// coefficient order: the main effects, then the pair effects of its members.
    #[inline]
    fn for_each_feature(&self, c: &Coalition, mut visit: impl FnMut(usize, f64)) {
        if self.centered {
            for i in 0..self.n {
                visit(i, if c.contains(i) { 0.5 } else { -0.5 });
            }
        } else {
            c.members().for_each(|i| visit(i, 1.0));
        }
        if self.quadratic {
            let members: Vec<usize> = c.members().collect();
            for (a, &i) in members.iter().enumerate() {
                for &j in &members[a + 1..] {
                    visit(self.pair_index(i, j), 1.0);
                }
            }
        }
    }

    /// Add the row of coalition `c`, target `y` (`[w]`, the game less the constant `c`) and
    /// weight `weight` to `block`.
    pub(super) fn add(&mut self, block: usize, c: &Coalition, y: &[f64], weight: f64) {
        let (p, w) = (self.p, self.w);
        let mut feats: Vec<(usize, f64)> = Vec::with_capacity(if self.centered { self.n } else { c.len() });
        self.for_each_feature(c, |f, x| feats.push((f, x)));
        // all p features present (as centered linear ones always are): in increasing order, the
        // k-th is coefficient k, and a row of the gram is updated whole
        let dense = feats.len() == p;
        let (gram, rhs) = (&mut self.gram[block], &mut self.rhs[block]);
        for &(a, fa) in &feats {
            let wa = weight * fa;
            let row = &mut gram[a * p..(a + 1) * p];
            if dense {
                row.iter_mut().zip(&feats).for_each(|(g, &(_, fb))| *g += wa * fb);
            } else {
                for &(b, fb) in &feats {
                    row[b] += wa * fb;
                }
            }
            for j in 0..w {
                rhs[a * w + j] += wa * y[j];
            }
        }
        self.rows[block] += 1;
    }

    /// Constrained weighted least squares on the blocks, block `b` weighing `weights[b]` (a block
    /// of weight 0 is left out), with ridge `ridge` (relative) on the pair effects: coefficients
    /// `[p, w]` that sum to `total` (`[w]`, `v(N) - v(0)`).
    pub(super) fn solve(&self, weights: &[f64], ridge: f64, total: &[f64]) -> Option<Vec<f64>> {
        let (n, p, w) = (self.n, self.p, self.w);
        let mut a = vec![0.0; p * p];
        let mut b = vec![0.0; p * w];
        for (block, &weight) in weights.iter().enumerate() {
            if weight == 0.0 {
                continue;
            }
            a.iter_mut().zip(&self.gram[block]).for_each(|(x, g)| *x += weight * g);
            b.iter_mut().zip(&self.rhs[block]).for_each(|(x, r)| *x += weight * r);
        }
        let trace: f64 = (0..n).map(|i| a[i * p + i]).sum::<f64>() / n as f64;
        // a trace that is zero, negative or NaN leaves nothing to fit
        if trace.is_nan() || trace <= 0.0 {
            return None;
        }
        for i in 0..p {
            // a whisper of ridge on the main effects; the chosen ridge on the pair effects
            a[i * p + i] += if i < n { 1e-10 * trace } else { ridge * trace };
        }
        let l = cholesky(&a, p)?;
        let ones = vec![1.0; p];
        let ainv1 = chol_solve(&l, p, &ones);
        let denom: f64 = ainv1.iter().sum();
        let mut coef = vec![0.0; p * w];
        let mut col = vec![0.0; p];
        for j in 0..w {
            for i in 0..p {
                col[i] = b[i * w + j];
            }
            let ainvb = chol_solve(&l, p, &col);
            let shift = (ainvb.iter().sum::<f64>() - total[j]) / denom;
            for i in 0..p {
                coef[i * w + j] = ainvb[i] - shift * ainv1[i];
            }
        }
        coef.iter().all(|x| x.is_finite()).then_some(coef)
    }

    /// The fit on every row, the pair effects' ridge of each utility column chosen by two-fold
    /// cross-validation: the ridge whose fits without one fold leave the smallest squared
    /// residual on that fold's rows. The folds are the blocks `folds`; `weights(None)` gives the
    /// block weights of the fit on every row, `weights(Some(k))` those of the fit without fold
    /// `k`; `held_out` yields the folds' rows, `(k, coalition, target)`. A linear surrogate, or a
    /// fold of fewer than two rows, takes the middle ridge. With `quick`, the ridges of the last
    /// cross-validation are reused when there are any.
    pub(super) fn solve_cross_validated<'a, I>(
        &self,
        folds: [usize; 2],
        weights: impl Fn(Option<usize>) -> Vec<f64>,
        held_out: I,
        total: &[f64],
        quick: bool,
    ) -> Option<Vec<f64>>
    where
        I: Iterator<Item = (usize, &'a Coalition, Vec<f64>)> + Clone,
    {
        let full = weights(None);
        if !self.quadratic || folds.iter().any(|&f| self.rows[f] < 2) {
            return self.solve(&full, DEFAULT_RIDGE, total);
        }
        let w = self.w;
        let cached = if quick { self.chosen.lock().ok().and_then(|c| c.clone()) } else { None };
        let ridges = match cached {
            Some(r) if r.len() == w => r,
            _ => {
                let r = self.cross_validate([weights(Some(0)), weights(Some(1))], held_out, total);
                if let Ok(mut c) = self.chosen.lock() {
                    *c = Some(r.clone());
                }
                r
            }
        };
        // one solve per distinct ridge; each column takes the coefficients of its own
        let p = self.p;
        let mut coef = vec![0.0; p * w];
        let mut distinct = ridges.clone();
        distinct.sort_by(|a, b| a.partial_cmp(b).expect("finite ridges"));
        distinct.dedup();
        for ridge in distinct {
            let fit = self.solve(&full, ridge, total)?;
            for j in (0..w).filter(|&j| ridges[j] == ridge) {
                for f in 0..p {
                    coef[f * w + j] = fit[f * w + j];
                }
            }
        }
        Some(coef)
    }

    /// The ridge per utility column with the smallest two-fold cross-validated squared residual,
    /// fold `k`'s rows predicted by the fit with block weights `without[k]`.
    fn cross_validate<'a>(
        &self,
        without: [Vec<f64>; 2],
        held_out: impl Iterator<Item = (usize, &'a Coalition, Vec<f64>)> + Clone,
        total: &[f64],
    ) -> Vec<f64> {
        let w = self.w;
        let mut best = vec![(f64::INFINITY, DEFAULT_RIDGE); w];
        for &ridge in RIDGES {
            let fits = [self.solve(&without[0], ridge, total), self.solve(&without[1], ridge, total)];
            if fits.iter().any(|f| f.is_none()) {
                continue;
            }
            let mut err = vec![0.0; w];
            for (k, c, mut r) in held_out.clone() {
                self.subtract(c, fits[k].as_ref().expect("checked"), &mut r);
                for j in 0..w {
                    err[j] += r[j] * r[j];
                }
            }
            for j in 0..w {
                if err[j] < best[j].0 {
                    best[j] = (err[j], ridge);
                }
            }
        }
        best.into_iter().map(|b| b.1).collect()
    }

    /// The leverage of each row `(block, coalition, weight)` (its weight in the gram of its
    /// block) in the constrained fit of [`Self::solve`] with block weights `weights` and no ridge
    /// on the pair effects: the diagonal of the hat matrix, `h = w f^T A^-1 f - w (f^T A^-1 1)^2
    /// / (1^T A^-1 1)`. A row's in-sample residual has `(1 - h)` of the variance of a fresh one.
    pub(super) fn leverages<'a>(
        &self,
        weights: &[f64],
        rows: impl Iterator<Item = (usize, &'a Coalition, f64)>,
    ) -> Option<Vec<f64>> {
        let (n, p) = (self.n, self.p);
        let mut a = vec![0.0; p * p];
        for (block, &weight) in weights.iter().enumerate() {
            if weight != 0.0 {
                a.iter_mut().zip(&self.gram[block]).for_each(|(x, g)| *x += weight * g);
            }
        }
        let trace: f64 = (0..n).map(|i| a[i * p + i]).sum::<f64>() / n as f64;
        if trace.is_nan() || trace <= 0.0 {
            return None;
        }
        for i in 0..p {
            a[i * p + i] += if i < n { 1e-10 * trace } else { DEFAULT_RIDGE * trace };
        }
        let l = cholesky(&a, p)?;
        let ainv1 = chol_solve(&l, p, &vec![1.0; p]);
        let denom: f64 = ainv1.iter().sum();
        let mut f = vec![0.0; p];
        let out = rows
            .map(|(block, c, w)| {
                f.iter_mut().for_each(|x| *x = 0.0);
                self.for_each_feature(c, |k, x| f[k] = x);
                let ainvf = chol_solve(&l, p, &f);
                let quad: f64 = f.iter().zip(&ainvf).map(|(x, y)| x * y).sum();
                let cross: f64 = f.iter().zip(&ainv1).map(|(x, y)| x * y).sum();
                weights[block] * w * (quad - cross * cross / denom)
            })
            .collect();
        Some(out)
    }

    /// Exact Shapley values `[n, w]` of the surrogate with coefficients `coef`.
    pub(super) fn shapley(&self, coef: &[f64]) -> Vec<f64> {
        let (n, w) = (self.n, self.w);
        let mut phi = coef[..n * w].to_vec();
        if self.quadratic {
            for i in 0..n {
                for j in i + 1..n {
                    let q = self.pair_index(i, j);
                    for c in 0..w {
                        let half = 0.5 * coef[q * w + c];
                        phi[i * w + c] += half;
                        phi[j * w + c] += half;
                    }
                }
            }
        }
        phi
    }

    /// The residual of `c`: `out` holds its target on entry and the target less the surrogate's
    /// features times `coef` on return.
    pub(super) fn subtract(&self, c: &Coalition, coef: &[f64], out: &mut [f64]) {
        let w = self.w;
        self.for_each_feature(c, |f, x| {
            for j in 0..w {
                out[j] -= x * coef[f * w + j];
            }
        });
    }

    /// The surrogate's features of `c` times `coef`, in utility column `j`.
    pub(super) fn predict(&self, c: &Coalition, coef: &[f64], j: usize) -> f64 {
        let w = self.w;
        // from -0.0, the empty sum of `Iterator::sum`
        let mut g = -0.0;
        self.for_each_feature(c, |f, x| g += x * coef[f * w + j]);
        g
    }
}

fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum.is_nan() || sum <= 0.0 {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    Some(l)
}

fn chol_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= l[i * n + k] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= l[k * n + i] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 6;

    /// `v(S) = sum_{i in S} a_i + sum_{i<j in S} b_ij + 1`, with its Shapley values
    /// `a_i + 1/2 sum_j b_ij`.
    fn order_two() -> (impl Fn(&Coalition) -> f64, Vec<f64>) {
        let a: Vec<f64> = (0..N).map(|i| 0.3 * i as f64 - 0.5).collect();
        let b = |i: usize, j: usize| ((i * 7 + j * 3) % 5) as f64 * 0.2 - 0.4;
        let mut phi = a.clone();
        for i in 0..N {
            for j in i + 1..N {
                phi[i] += 0.5 * b(i, j);
                phi[j] += 0.5 * b(i, j);
            }
        }
        let v = move |c: &Coalition| {
            let m: Vec<usize> = c.members().collect();
            let pairs: f64 = m.iter().enumerate().flat_map(|(x, &i)| m[x + 1..].iter().map(move |&j| b(i, j))).sum();
            1.0 + m.iter().map(|&i| a[i]).sum::<f64>() + pairs
        };
        (v, phi)
    }

    fn all_coalitions() -> impl Iterator<Item = Coalition> {
        (0..1u64 << N).map(|mask| Coalition::from_mask(N, mask))
    }

    fn binom(n: usize, k: usize) -> f64 {
        (0..k).fold(1.0, |acc, j| acc * (n - j) as f64 / (j + 1) as f64)
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < tol, "player {i}: {g} against {w}");
        }
    }

    #[test]
    fn a_quadratic_fit_on_every_coalition_has_the_shapley_values_of_a_game_of_order_two() {
        let (v, phi) = order_two();
        let (v0, vn) = (v(&Coalition::empty(N)), v(&Coalition::full(N)));
        let mut fit = SurrogateFit::new(N, 1, true, false, 1);
        for c in all_coalitions().filter(|c| !c.is_empty() && c.len() < N) {
            fit.add(0, &c, &[v(&c) - v0], 1.0 / binom(N, c.len()));
        }
        let coef = fit.solve(&[1.0], 0.0, &[vn - v0]).expect("a full-rank fit");
        assert_close(&fit.shapley(&coef), &phi, 1e-6);
        let mut r = [v(&Coalition::from_mask(N, 0b101101)) - v0];
        fit.subtract(&Coalition::from_mask(N, 0b101101), &coef, &mut r);
        assert!(r[0].abs() < 1e-6, "residual {}", r[0]);
    }

    #[test]
    fn a_centered_linear_fit_to_the_odd_part_has_the_shapley_values_of_a_game_of_order_two() {
        // the odd part of a game of order two is additive: v_o(S) = sum_i phi_i (x_i - 1/2)
        let (v, phi) = order_two();
        let (v0, vn) = (v(&Coalition::empty(N)), v(&Coalition::full(N)));
        let mut fit = SurrogateFit::new(N, 1, false, true, N / 2 + 1);
        for c in all_coalitions().filter(|c| !c.is_empty() && c.len() < N && c.contains(0)) {
            let odd = 0.5 * (v(&c) - v(&c.complement(N)));
            fit.add(c.len().min(N - c.len()), &c, &[odd], 1.0);
        }
        let weights: Vec<f64> =
            (0..=N / 2).map(|b| if fit.rows(b) == 0 { 0.0 } else { 1.0 / fit.rows(b) as f64 }).collect();
        let coef = fit.solve(&weights, 0.0, &[vn - v0]).expect("a full-rank fit");
        assert_close(&fit.shapley(&coef), &phi, 1e-6);
        let c = Coalition::from_mask(N, 0b011010);
        let odd = 0.5 * (v(&c) - v(&c.complement(N)));
        assert!((fit.predict(&c, &coef, 0) - odd).abs() < 1e-6);
    }

    #[test]
    fn the_leverages_of_a_constrained_linear_fit_sum_to_its_free_coefficients() {
        // n coefficients, one constraint: the hat matrix has trace n - 1, whatever the weights
        let mut fit = SurrogateFit::new(N, 1, false, true, 2);
        let mut rows = Vec::new();
        for mask in (1..(1u64 << N) - 1).step_by(3) {
            let c = Coalition::from_mask(N, mask);
            let block = (mask % 2) as usize;
            let weight = 1.0 + (mask % 5) as f64;
            fit.add(block, &c, &[0.0], weight);
            rows.push((block, c, weight));
        }
        let h = fit.leverages(&[1.0, 3.0], rows.iter().map(|(b, c, w)| (*b, c, *w))).expect("a full-rank fit");
        assert!(h.iter().all(|&h| (0.0..1.0).contains(&h)), "leverages in [0, 1)");
        let trace: f64 = h.iter().sum();
        assert!((trace - (N - 1) as f64).abs() < 1e-6, "trace {trace}");
    }

    #[test]
    fn cross_validation_keeps_the_pair_effects_of_a_game_that_has_them() {
        // every coalition of sizes 1..n-1 in two folds split by a hash of its members (not by
        // player 0, which one fold would never see), each row weighing 1 / C(n, s)
        let (v, phi) = order_two();
        let (v0, vn) = (v(&Coalition::empty(N)), v(&Coalition::full(N)));
        let mut fit = SurrogateFit::new(N, 1, true, false, 2);
        let mut rows = Vec::new();
        for mask in 1..(1u64 << N) - 1 {
            let (c, fold) = (Coalition::from_mask(N, mask), (mask.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63) as usize);
            let y = v(&c) - v0;
            fit.add(fold, &c, &[y], 1.0 / binom(N, c.len()));
            rows.push((fold, c, vec![y]));
        }
        let weights = |without: Option<usize>| -> Vec<f64> {
            (0..2).map(|k| if Some(k) == without { 0.0 } else { 1.0 }).collect()
        };
        let held_out = rows.iter().map(|(k, c, y)| (*k, c, y.clone()));
        let coef = fit.solve_cross_validated([0, 1], weights, held_out, &[vn - v0], false).expect("a fit");
        assert_eq!(fit.chosen.lock().unwrap().as_deref(), Some(&[RIDGES[0]][..]), "the smallest ridge");
        assert_close(&fit.shapley(&coef), &phi, 1e-3);
    }
}
