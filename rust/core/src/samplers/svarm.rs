//! Stratified SVARM (Kolpaczki et al. 2024) and its regression-adjusted variant.
//!
//! SVARM writes the Shapley value without marginal contributions,
//! `phi_i = 1/n sum_l (E[v(S) | |S| = l + 1, i in S] - E[v(S) | |S| = l, i not in S])`:
//! every sampled coalition updates one stratum of every player (the "with" stratum of its
//! members, the "without" stratum of the others), O(n) work per coalition. Coalition sizes
//! whose whole population fits in the budget are enumerated (sizes 0, 1, n-1 and n always)
//! and their strata are exact; the other sizes are drawn uniformly, then a uniform coalition
//! of that size.
//!
//! The regression-adjusted variant (in the spirit of Witter et al. 2025) fits a surrogate game
//! to the same coalitions: `g(S) = v(0) + sum_{i in S} beta_i + sum_{i<j in S} gamma_ij`
//! (pair effects up to 24 players, main effects only up to 128), by least squares with every
//! coalition size weighted equally and the constraint `g(N) = v(N)`, the pair effects' ridge
//! chosen by two-fold cross-validation ([`SurrogateFit`], the fit the paired estimator of
//! [`super::paired`] uses too). The surrogate's Shapley values are known exactly
//! (`beta_i + 1/2 sum_j gamma_ij`), and SVARM runs on the residuals `v - g`:
//! `phi = phi(g) + SVARM(v - g)`. What the surrogate explains costs no variance.

use super::allocation::{neyman_cdf, relative_variances};
use super::surrogate::SurrogateFit;
use super::{Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{Estimate, EstimateBuilder};
use crate::moments::{Dims, MomentTable};
use crate::rng::Rng;
use std::collections::VecDeque;

/// Players up to which the regression-adjusted variant fits a surrogate (a system of n or more
/// unknowns is updated per coalition); above it the variant is plain SVARM.
pub const REGRESSION_MAX_PLAYERS: usize = 128;

#[inline]
fn cell(n: usize, player: usize, stratum: usize, without: bool) -> usize {
    (player * n + stratum) * 2 + without as usize
}

pub(super) fn binom(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, j| acc * (n - j) as f64 / (j + 1) as f64)
}

/// Sampling weight of size `s` among the sampled sizes.
///
/// Uniform: in `bench/shapley` it beat `1 / min(s, n - s)`, the Shapley kernel and
/// `1 / sqrt(s (n - s))` on every game, with and without the surrogate.
fn size_weight(_n: usize, _s: usize) -> f64 {
    1.0
}

/// Sizes enumerated in full: 0, 1, n-1, n, and any size whose population is no larger than
/// the number of samples it would receive from the budget.
pub(super) fn exhaustive_sizes(n: usize, budget: Option<u64>) -> Vec<bool> {
    let mut ex = vec![false; n + 1];
    for s in [0, 1, n.saturating_sub(1), n] {
        ex[s] = true;
    }
    let Some(budget) = budget else { return ex };
    let mut remaining = budget as f64 - (0..=n).filter(|&s| ex[s]).map(|s| binom(n, s)).sum::<f64>();
    loop {
        let sampled: Vec<usize> = (2..n.saturating_sub(1)).filter(|&s| !ex[s]).collect();
        let total: f64 = sampled.iter().map(|&s| size_weight(n, s)).sum();
        let fits: Vec<usize> =
            sampled.into_iter().filter(|&s| binom(n, s) <= remaining * size_weight(n, s) / total).collect();
        if fits.is_empty() {
            return ex;
        }
        for s in fits {
            ex[s] = true;
            remaining -= binom(n, s);
        }
    }
}

/// All coalitions of `size` players out of `n`, in lexicographic order of members.
pub(super) fn combinations(n: usize, size: usize, out: &mut VecDeque<Coalition>) {
    let mut idx: Vec<u32> = (0..size as u32).collect();
    loop {
        out.push_back(Coalition::from_members(n, &idx));
        // advance the rightmost index that can move
        let mut j = size;
        while j > 0 && idx[j - 1] as usize == n - size + j - 1 {
            j -= 1;
        }
        if j == 0 {
            return;
        }
        idx[j - 1] += 1;
        for t in j..size {
            idx[t] = idx[t - 1] + 1;
        }
    }
}

/// Players up to which the surrogate includes pair effects (n (n - 1) / 2 more coefficients).
pub const QUADRATIC_MAX_PLAYERS: usize = 24;

/// The block of the surrogate's fit that holds the enumerated coalitions, and those of the two
/// folds the sampled coalitions alternate between (for choosing the ridge by cross-validation).
const ENUMERATED: usize = 0;
const FOLDS: [usize; 2] = [1, 2];

/// The surrogate game of the regression-adjusted variant, fitted coalition by coalition:
/// `g(S) = v(0) + sum_{i in S} beta_i (+ sum_{i<j in S} gamma_ij when quadratic)`, the fit of
/// `v - v(0)` on the indicators of the members (and of their pairs), constrained to
/// `g(N) = v(N)`.
struct Surrogate {
    n: usize,
    fit: SurrogateFit,
    /// the utilities of the empty and the grand coalition: the constant and the constraint
    v0: Vec<f64>,
    vn: Vec<f64>,
    /// every absorbed coalition with its utilities and fold (2 = enumerated), for the
    /// cross-validation and the residual pass
    samples: Vec<(Coalition, Vec<f64>, u8)>,
}

impl Surrogate {
    fn new(n: usize, w: usize, quadratic: bool) -> Self {
        Surrogate {
            n,
            fit: SurrogateFit::new(n, w, quadratic, false, 3),
            v0: vec![0.0; w],
            vn: vec![0.0; w],
            samples: Vec::new(),
        }
    }

    /// Sampled coalitions in the fit.
    fn sampled(&self) -> u64 {
        FOLDS.iter().map(|&f| self.fit.rows(f)).sum()
    }

    /// Add coalition `c` with utilities `v` and its weight in the fit
    /// ([`SvarmSampler::fit_weight`]); the empty and the grand coalition are not rows of the fit.
    fn add(&mut self, c: &Coalition, v: &[f64], weight: f64, sampled: bool) {
        let fold = if sampled { (self.sampled() % 2) as u8 } else { 2 };
        self.samples.push((c.clone(), v.to_vec(), fold));
        let s = c.len();
        if s == 0 {
            self.v0.copy_from_slice(v);
            return;
        }
        if s == self.n {
            self.vn.copy_from_slice(v);
            return;
        }
        let block = if sampled { FOLDS[fold as usize] } else { ENUMERATED };
        self.fit.add(block, c, &self.target(v), weight);
    }

    /// `v - v(0)`, what the coefficients fit.
    fn target(&self, v: &[f64]) -> Vec<f64> {
        v.iter().zip(&self.v0).map(|(x, z)| x - z).collect()
    }

    /// The block weights of the fit on the enumerated coalitions and the folds other than
    /// `without`: each enumerated coalition weighs `1 / C(n, s)`, each sampled one `1 / P(s)`
    /// divided by the number of sampled coalitions in the folds used, so every size weighs the
    /// same.
    fn weights(&self, without: Option<usize>) -> Vec<f64> {
        let used: Vec<usize> = (0..2).filter(|&k| Some(k) != without).map(|k| FOLDS[k]).collect();
        let count: u64 = used.iter().map(|&f| self.fit.rows(f)).sum();
        let scale = if count > 0 { 1.0 / count as f64 } else { 0.0 };
        let mut weights = vec![0.0; 3];
        weights[ENUMERATED] = 1.0;
        for f in used {
            weights[f] = scale;
        }
        weights
    }

    /// The coefficients `[p, w]`, the pair effects' ridge cross-validated on the two folds (the
    /// squared residual the residual pass would see).
    fn solve(&self, quick: bool) -> Option<Vec<f64>> {
        let total: Vec<f64> = self.vn.iter().zip(&self.v0).map(|(x, z)| x - z).collect();
        let held_out = self.samples.iter().filter(|s| s.2 < 2).map(|(c, v, fold)| (*fold as usize, c, self.target(v)));
        self.fit.solve_cross_validated(FOLDS, |without| self.weights(without), held_out, &total, quick)
    }

    /// `v(S) - g(S)` into `out`.
    fn residual(&self, c: &Coalition, v: &[f64], coef: &[f64], out: &mut [f64]) {
        for j in 0..v.len() {
            out[j] = v[j] - self.v0[j];
        }
        self.fit.subtract(c, coef, out);
    }
}

pub struct SvarmSampler {
    n: usize,
    exhaustive: Vec<bool>,
    warmup: VecDeque<Coalition>,
    warmup_planned: bool,
    /// sampled sizes, their cumulative weights and normalised probabilities
    sampled_sizes: Vec<usize>,
    size_cdf: Vec<f64>,
    size_prob: Vec<f64>,
    /// sampled sizes still to receive their first coalition
    first_pass: VecDeque<usize>,
    pool: Vec<u32>,
    table: Option<MomentTable>,
    surrogate: Option<Surrogate>,
    regression: bool,
    /// whether the sampled sizes are reallocated by Neyman allocation
    /// ([`SvarmSampler::enable_allocation`]); sampled coalitions absorbed and planned; the
    /// sampled coalitions after which the sizes are next reallocated
    allocate: bool,
    n_sampled: u64,
    planned_sampled: u64,
    next_realloc: u64,
}

impl SvarmSampler {
    pub fn new(n: usize, budget: Option<u64>, regression: bool) -> Self {
        let exhaustive = exhaustive_sizes(n, budget);
        let sampled_sizes: Vec<usize> = (2..n.saturating_sub(1)).filter(|&s| !exhaustive[s]).collect();
        let total: f64 = sampled_sizes.iter().map(|&s| size_weight(n, s)).sum();
        let mut size_cdf = Vec::new();
        let mut acc = 0.0;
        for &s in &sampled_sizes {
            acc += size_weight(n, s);
            size_cdf.push(acc);
        }
        let size_prob = sampled_sizes.iter().map(|&s| size_weight(n, s) / total).collect();
        let first_pass = sampled_sizes.iter().copied().collect();
        SvarmSampler {
            n,
            exhaustive,
            warmup: VecDeque::new(),
            warmup_planned: false,
            sampled_sizes,
            size_cdf,
            size_prob,
            first_pass,
            pool: (0..n as u32).collect(),
            table: None,
            surrogate: None,
            regression: regression && (2..=REGRESSION_MAX_PLAYERS).contains(&n),
            allocate: false,
            n_sampled: 0,
            planned_sampled: 0,
            next_realloc: u64::MAX,
        }
    }

    /// Sampled coalitions before the first reallocation: enough for a rough variance per size.
    fn first_realloc(&self) -> u64 {
        (4 * self.sampled_sizes.len() as u64).max(32)
    }

    /// Draw the sizes by Neyman allocation from now on: reallocated now (when enough coalitions
    /// are in) and each time the sampled coalitions double. Plain SVARM only: the surrogate's
    /// fit weighs each size by the probability it is drawn with, which must not change.
    pub(super) fn enable_allocation(&mut self) {
        assert!(self.surrogate.is_none() && !self.regression, "allocation is for plain SVARM");
        self.allocate = true;
        self.planned_sampled = self.n_sampled;
        let first = self.first_realloc();
        if self.n_sampled >= first {
            self.reallocate();
        }
        self.next_realloc = first.max(2 * self.n_sampled);
    }

    /// Neyman allocation of the coalitions still to draw over the sampled sizes.
    ///
    /// SVARM's variance is `(1/n)^2 sum_i sum_s (var_with(i,s) / count_with(i,s) +
    /// var_without(i,s) / count_without(i,s))`, and a coalition of size `s` lands in a "with"
    /// stratum of size `s` of each player with probability `s / n` and in a "without" one with
    /// probability `(n - s) / n`: size `s` costs `a_s = (n / s) var_with(s) + (n / (n - s))
    /// var_without(s)`, its variances pooled over the players (see [`super::allocation`]).
    fn reallocate(&mut self) {
        let Some(table) = self.table.as_ref() else { return };
        let n = self.n;
        let k = table.dims.k;
        // index s: the "with" strata of size s; n + 1 + s: the "without" strata of size s
        let mut var = vec![vec![f64::NAN; 2 * (n + 1)]; k];
        let mut df = vec![0.0f64; 2 * (n + 1)];
        for &s in &self.sampled_sizes {
            for (idx, without) in [(s, false), (n + 1 + s, true)] {
                let l = if without { s } else { s - 1 };
                for (j, var_j) in var.iter_mut().enumerate() {
                    let (mut ss, mut d) = (0.0, 0.0);
                    for i in 0..n {
                        let c = cell(n, i, l, without);
                        let m = table.count(c) as f64;
                        let v = table.sample_var(c, j);
                        if m >= 2.0 && v.is_finite() {
                            ss += (m - 1.0) * v;
                            d += m - 1.0;
                        }
                    }
                    if d >= 1.0 {
                        var_j[idx] = ss / d;
                    }
                    df[idx] = d;
                }
            }
        }
        let sampled: Vec<bool> = (0..2 * (n + 1))
            .map(|idx| {
                let s = if idx > n { idx - n - 1 } else { idx };
                self.sampled_sizes.binary_search(&s).is_ok()
            })
            .collect();
        let sigma2 = relative_variances(&var, &df, |idx| sampled[idx]);
        let cost: Vec<f64> = self
            .sampled_sizes
            .iter()
            .map(|&s| n as f64 / s as f64 * sigma2[s] + n as f64 / (n - s) as f64 * sigma2[n + 1 + s])
            .collect();
        if let Some(cdf) = neyman_cdf(&cost, &vec![1.0; cost.len()]) {
            let total = *cdf.last().expect("sampled sizes");
            self.size_prob = cdf.iter().scan(0.0, |prev, &c| Some((c - std::mem::replace(prev, c)) / total)).collect();
            self.size_cdf = cdf;
        }
    }

    /// Whether coalitions of size `s` are enumerated (and not sampled).
    pub(super) fn is_exhaustive(&self, s: usize) -> bool {
        self.exhaustive[s]
    }

    fn plan_warmup(&mut self) {
        let n = self.n;
        for s in 0..=n {
            if self.exhaustive[s] {
                combinations(n, s, &mut self.warmup);
            }
        }
    }

    fn new_table(&self, dims: Dims) -> MomentTable {
        let n = self.n;
        let mut t = MomentTable::new(2 * n * n, dims).with_shrinkage(crate::moments::POOLED_WEIGHT);
        for i in 0..n {
            for l in 0..n {
                if self.exhaustive[l + 1] {
                    t.set_exact(cell(n, i, l, false));
                }
                if self.exhaustive[l] {
                    t.set_exact(cell(n, i, l, true));
                }
            }
        }
        t
    }

    /// Weight of a coalition of size `s` in the linear fit.
    fn fit_weight(&self, s: usize) -> f64 {
        let n = self.n;
        if s == 0 || s == n {
            return 0.0;
        }
        // every size weighs the same in the fit, as every size does in the Shapley value
        if self.exhaustive[s] {
            1.0 / binom(n, s)
        } else {
            let pos = self.sampled_sizes.binary_search(&s).expect("sampled size");
            1.0 / self.size_prob[pos]
        }
    }

    fn push_coalition(table: &mut MomentTable, n: usize, c: &Coalition, v: &[f64]) {
        let s = c.len();
        for i in 0..n {
            if c.contains(i) {
                table.push(cell(n, i, s - 1, false), v);
            } else {
                table.push(cell(n, i, s, true), v);
            }
        }
    }

    /// SVARM's estimate from a table of strata, `offset` (`[n, w]`) added to every player.
    fn estimate_from(&self, table: &MomentTable, offset: Option<&[f64]>, control_exact: Option<&[f64]>) -> Estimate {
        let n = self.n;
        let dims = table.dims;
        let w = dims.width();
        // a stratum nobody's coalition has reached yet borrows the mean of the same stratum of
        // the other players (same size and side), at the pooled variance
        let mut imputed: Vec<Option<Vec<f64>>> = vec![None; 2 * n];
        let mut b = EstimateBuilder::new(n, dims);
        let coef = 1.0 / n as f64;
        for i in 0..n {
            if let Some(off) = offset {
                let row = &off[i * w..(i + 1) * w];
                b.add_offset(i, &row[..dims.k], &row[dims.k..]);
            }
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
        b.finish(control_exact)
    }

    fn estimate_with(&self, control_exact: Option<&[f64]>, quick: bool) -> Option<Estimate> {
        let table = self.table.as_ref()?;
        let coef = self.surrogate.as_ref().and_then(|g| if g.sampled() > 0 { g.solve(quick) } else { None });
        let (Some(coef), Some(surrogate)) = (coef, self.surrogate.as_ref()) else {
            return Some(self.estimate_from(table, None, control_exact));
        };
        // SVARM on the residuals of the surrogate, plus the surrogate's exact values
        let n = self.n;
        let dims = table.dims;
        let mut residual = self.new_table(dims);
        let mut r = vec![0.0; dims.width()];
        for (c, v, _) in &surrogate.samples {
            surrogate.residual(c, v, &coef, &mut r);
            Self::push_coalition(&mut residual, n, c, &r);
        }
        let mut est = self.estimate_from(&residual, Some(&surrogate.fit.shapley(&coef)), control_exact);
        // the residuals come from the coalitions the surrogate was fitted to, so they look
        // smaller than the surrogate's error on a fresh coalition: inflate the variance by the
        // degrees of freedom the fit used, c / (c - p) (bench/shapley/coverage.py: the smallest
        // budgets covered 62-90% of nominal 95% intervals without it, 88-99% with it)
        let (c, p) = (surrogate.sampled() as f64, surrogate.fit.coefficients() as f64);
        let inflate = c / (c - p).max(1.0);
        est.variance.iter_mut().for_each(|v| *v *= inflate.max(1.0));
        Some(est)
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
        if self.planned_sampled >= self.next_realloc && self.n_sampled < self.next_realloc {
            // the coalitions before a reallocation are out: wait for them, then reallocate
            return Plan::Wait;
        }
        self.planned_sampled += 1;
        let size = match self.first_pass.pop_front() {
            Some(s) => s,
            None => self.sampled_sizes[rng.categorical(&self.size_cdf)],
        };
        rng.partial_shuffle(&mut self.pool, size);
        let c = Coalition::from_members(self.n, &self.pool[..size]);
        // unpaired: a coalition and its complement land in strata whose utilities are negatively
        // correlated for monotone games, which added variance in every benchmark game
        Plan::Unit(Unit { kind: UnitKind::Sampled, coalitions: vec![c] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let n = self.n;
        if self.table.is_none() {
            self.table = Some(self.new_table(dims));
            if self.regression {
                let quadratic = n <= QUADRATIC_MAX_PLAYERS;
                self.surrogate = Some(Surrogate::new(n, dims.width(), quadratic));
            }
        }
        let sampled = matches!(unit.kind, UnitKind::Sampled);
        let mut surrogate = self.surrogate.take();
        for (c, v) in unit.coalitions.iter().zip(values) {
            Self::push_coalition(self.table.as_mut().expect("table"), n, c, v);
            if let Some(g) = surrogate.as_mut() {
                g.add(c, v, self.fit_weight(c.len()), sampled);
            }
        }
        self.surrogate = surrogate;
        if sampled {
            self.n_sampled += unit.coalitions.len() as u64;
            if self.allocate && self.n_sampled >= self.next_realloc {
                self.reallocate();
                self.next_realloc = self.next_realloc.saturating_mul(2);
            }
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        self.estimate_with(control_exact, false)
    }

    fn estimate_quick(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        self.estimate_with(control_exact, true)
    }

    /// Every stratum has been reached (none borrows its mean from the others), and a surrogate
    /// has at least as many sampled coalitions as coefficients.
    fn tol_ready(&self) -> bool {
        let Some(table) = self.table.as_ref() else { return false };
        let reached = (0..table.cells()).all(|c| table.is_exact(c) || table.count(c) > 0);
        let fitted = self.surrogate.as_ref().is_none_or(|g| g.sampled() as usize >= g.fit.coefficients());
        reached && fitted
    }

    fn min_budget(&self) -> u64 {
        let n = self.n;
        let enumerated: f64 = (0..=n).filter(|&s| self.exhaustive[s]).map(|s| binom(n, s)).sum();
        enumerated as u64 + self.first_pass.len() as u64
    }
}
