//! Paired regression-adjusted estimator, the `regression` method past
//! [`QUADRATIC_MAX_PLAYERS`](super::svarm::QUADRATIC_MAX_PLAYERS) players.
//!
//! The Shapley value of a game depends only on its odd part `v_o(S) = (v(S) - v(N \ S)) / 2`
//! (the even part satisfies `v_e(S) = v_e(N \ S)` and is its own dual up to a sign, so its
//! values are zero). Coalitions are therefore evaluated in complementary pairs, which yield
//! `v_o` exactly. The odd part of any game of order <= 2 is additive, so an additive
//! surrogate fitted to `v_o` captures every main and pair effect (what the unpaired surrogate
//! needs n (n - 1) / 2 pair coefficients for), and what is left is of order three or more.
//!
//! The surrogate `g(S) = sum_i beta_i (x_i - 1/2)` is fitted by least squares to the pairs,
//! every coalition size weighing the same, under the constraint `g(N) = v_o(N)` (efficiency):
//! the unpaired variant's [`SurrogateFit`], linear, its features centered, a block of rows per
//! size class. Its Shapley values are `beta_i`. What it leaves, `r = v_o - g`, is odd too, and
//! its Shapley value is `phi_i(r) = 2/n sum_{s=1}^{n-1} A_i(s)` with `A_i(s)` the mean of `r(S)` over the
//! coalitions of size `s` that contain `i` (SVARM's formula, the "without" strata folded onto
//! the "with" strata by oddness). A pair `(S, N \ S)` gives `r(S)` to the stratum `(i, |S|)` of
//! every member of `S` and `-r(S)` to the stratum `(i, n - |S|)` of every other player: each
//! player one sample per pair. The size classes `{s, n - s}` whose pairs fit in the budget are
//! enumerated and their strata are exact; the other classes are drawn uniformly over their
//! sizes at first and, once enough pairs are in and again each time they double, by Neyman
//! allocation on the residual's measured variance per size
//! ([`PairedSampler::reallocate`]), then a uniform coalition of that size. A stratum not
//! reached yet borrows the mean of the same size over the other players, at the pooled
//! variance.
//!
//! The estimate is `beta + phi(r)`. Its variance is the sum of the stratified means' variances
//! (`(2/n)^2 var_s / count_s`, each stratum's variance shrunk towards the pooled one); the
//! surrogate is treated as fixed, so the fit's own noise is not counted (it is second order:
//! the residual correction removes the surrogate's error to first order).

use super::allocation::{cumulative, neyman_cdf, relative_variances};
use super::surrogate::SurrogateFit;
use super::svarm::SvarmSampler;
use super::svarm::{binom, combinations};
use super::{Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{Estimate, EstimateBuilder};
use crate::moments::{Dims, MomentTable};
use crate::rng::Rng;
use std::collections::VecDeque;

/// Sizes enumerated in full (as pairs with their complements): 0 and n, and every size whose
/// population is no larger than the coalitions of that size the budget would draw (sizes drawn
/// uniformly); without a budget, sizes 1 and n - 1 too. Sizes 1 and n - 1 are not forced: at
/// 10 n evaluations they would take a fifth of the budget for one stratum in n - 1.
fn paired_exhaustive_sizes(n: usize, budget: Option<u64>) -> Vec<bool> {
    let mut ex = vec![false; n + 1];
    ex[0] = true;
    ex[n] = true;
    let Some(budget) = budget else {
        ex[1] = true;
        ex[n - 1] = true;
        return ex;
    };
    let mut remaining = budget as f64 - 2.0;
    loop {
        let sampled: Vec<usize> = (1..n).filter(|&s| !ex[s]).collect();
        if sampled.is_empty() {
            return ex;
        }
        let share = remaining / sampled.len() as f64;
        let fits: Vec<usize> = sampled.into_iter().filter(|&s| binom(n, s) <= share).collect();
        if fits.is_empty() {
            return ex;
        }
        for s in fits {
            ex[s] = true;
            remaining -= binom(n, s);
        }
    }
}

/// One evaluated pair: the coalition `S` (its complement is implied), `v_o(S)` per utility
/// column, and whether its size class is enumerated.
pub(super) struct PairSample {
    coalition: Coalition,
    odd: Vec<f64>,
    /// `(v(S) + v(N \ S)) / 2`
    even: Vec<f64>,
    exact: bool,
}

pub struct PairedSampler {
    n: usize,
    /// per size: whether the class {s, n - s} is enumerated
    exhaustive: Vec<bool>,
    /// sampled sizes (both members of each class)
    sampled_sizes: Vec<usize>,
    /// the sampled classes `{s, n - s}` by their smaller size, and the cumulative sampling
    /// probabilities of those classes (uniform until the first reallocation)
    sampled_classes: Vec<usize>,
    class_cdf: Vec<f64>,
    /// sampled pairs after which the classes' probabilities are next reallocated (never while
    /// the [`AdaptiveSampler`]'s pilot runs: its pairs must stand for uniform sizes)
    next_realloc: u64,
    /// sampled pairs planned (absorbed or not)
    planned_sampled: u64,
    warmup: VecDeque<Coalition>,
    warmup_planned: bool,
    pool: Vec<u32>,
    dims: Option<Dims>,
    v0: Vec<f64>,
    vn: Vec<f64>,
    pairs: Vec<PairSample>,
    /// the surrogate's fit to `v_o`, each pair a row of weight 1 in the block of its class
    /// `{s, n - s}` (by the smaller size); made with the boundary, when the width is known
    fit: Option<SurrogateFit>,
    n_sampled: u64,
}

impl PairedSampler {
    pub fn new(n: usize, budget: Option<u64>) -> Self {
        assert!(n >= 4, "the paired estimator needs at least 4 players");
        let exhaustive = paired_exhaustive_sizes(n, budget);
        let sampled_sizes = (1..n).filter(|&s| !exhaustive[s]).collect();
        let sampled_classes: Vec<usize> = (1..=n / 2).filter(|&s| !exhaustive[s]).collect();
        // uniform over the sampled sizes: a class of two sizes is drawn twice as often
        let class_cdf = cumulative(sampled_classes.iter().map(|&s| if 2 * s == n { 1.0 } else { 2.0 }));
        let next_realloc = Self::first_realloc(sampled_classes.len());
        PairedSampler {
            n,
            exhaustive,
            sampled_sizes,
            sampled_classes,
            class_cdf,
            next_realloc,
            planned_sampled: 0,
            warmup: VecDeque::new(),
            warmup_planned: false,
            pool: (0..n as u32).collect(),
            dims: None,
            v0: Vec::new(),
            vn: Vec::new(),
            pairs: Vec::new(),
            fit: None,
            n_sampled: 0,
        }
    }

    /// The coalitions `S` of the enumerated classes, one per pair: for `s < n - s` every
    /// coalition of size `s`; for `s = n / 2` those that contain player 0.
    fn plan_warmup(&mut self) {
        let n = self.n;
        for s in 1..=n / 2 {
            if !self.exhaustive[s] {
                continue;
            }
            let mut all = VecDeque::new();
            combinations(n, s, &mut all);
            self.warmup.extend(all.into_iter().filter(|c| 2 * s < n || c.contains(0)));
        }
    }

    /// The stratum of player `i` and coalitions of size `s` that contain it.
    #[inline]
    fn cell(&self, i: usize, s: usize) -> usize {
        i * (self.n + 1) + s
    }

    fn add_pair(&mut self, c: Coalition, odd: Vec<f64>, even: Vec<f64>) {
        let s = c.len();
        let exact = self.exhaustive[s];
        if !exact {
            self.n_sampled += 1;
        }
        let fit = self.fit.as_mut().expect("the boundary comes first");
        fit.add(s.min(self.n - s), &c, &odd, 1.0);
        self.pairs.push(PairSample { coalition: c, odd, even, exact });
    }

    /// Constrained weighted least squares: `beta` `[n, w]` with `sum_i beta_i = v(N) - v(0)`.
    ///
    /// Every size weighs the same: a class's pairs share the weight of its sizes (two, or one
    /// for `n / 2`; a pair stands for `S` and `N \ S`), whatever share of the pairs it drew.
    /// (Sharing the sampled sizes' weight equally over the sampled pairs instead, so that the
    /// fit leans on the classes the allocation draws most, measured 0-10% less error on the
    /// third-order benchmark game at 10 n evaluations and 0-20% more on preference accuracy.)
    fn solve(&self) -> Option<Vec<f64>> {
        let fit = self.fit.as_ref()?;
        let weights = self.class_weights();
        let total: Vec<f64> = self.vn.iter().zip(&self.v0).map(|(x, z)| x - z).collect();
        // a linear surrogate: no pair effects for a ridge to act on
        fit.solve(&weights, 0.0, &total)
    }

    /// The fit's block weights: each class weighs its sizes (two, or one for `n / 2`), shared
    /// over its pairs.
    fn class_weights(&self) -> Vec<f64> {
        let n = self.n;
        let Some(fit) = self.fit.as_ref() else { return vec![0.0; n / 2 + 1] };
        (0..=n / 2)
            .map(|class| match fit.rows(class) {
                0 => 0.0,
                count => (if 2 * class == n { 1.0 } else { 2.0 }) / count as f64,
            })
            .collect()
    }

    fn estimate_with(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        let dims = self.dims?;
        let fit = self.fit.as_ref()?;
        let n = self.n;
        let w = dims.width();
        let coef = if self.pairs.is_empty() { Some(vec![0.0; n * w]) } else { self.solve() };
        let coef = coef.unwrap_or_else(|| vec![0.0; n * w]);
        let mut table = MomentTable::new(n * (n + 1), dims).with_shrinkage(crate::moments::POOLED_WEIGHT);
        for s in 1..n {
            if self.exhaustive[s] {
                for i in 0..n {
                    table.set_exact(self.cell(i, s));
                }
            }
        }
        let mut r = vec![0.0; w];
        let mut neg = vec![0.0; w];
        for pair in &self.pairs {
            let c = &pair.coalition;
            let s = c.len();
            r.copy_from_slice(&pair.odd);
            fit.subtract(c, &coef, &mut r);
            for j in 0..w {
                neg[j] = -r[j];
            }
            // S gives r to its members at size s, N \ S gives -r to the others at size n - s
            for i in 0..n {
                if c.contains(i) {
                    table.push(self.cell(i, s), &r);
                } else {
                    table.push(self.cell(i, n - s), &neg);
                }
            }
        }
        let mut b = EstimateBuilder::new(n, dims);
        let scale = 2.0 / n as f64;
        let pooled: Vec<f64> = (0..w).map(|j| table.pooled_var(j)).collect();
        // a stratum no coalition has reached borrows the mean of the same size over the players
        let mut imputed: Vec<Option<Vec<f64>>> = vec![None; n + 1];
        let phi = fit.shapley(&coef);
        for i in 0..n {
            let row = &phi[i * w..(i + 1) * w];
            b.add_offset(i, &row[..dims.k], &row[dims.k..]);
            for (s, slot) in imputed.iter_mut().enumerate().take(n).skip(1) {
                let cell = self.cell(i, s);
                if table.is_exact(cell) || table.count(cell) > 0 {
                    b.add_cell(i, scale, &table, cell);
                    continue;
                }
                let mean = slot.get_or_insert_with(|| {
                    let mut acc = vec![0.0; w];
                    let mut total = 0u64;
                    for p in 0..n {
                        let pc = self.cell(p, s);
                        let k = table.count(pc);
                        for (j, a) in acc.iter_mut().enumerate() {
                            *a += k as f64 * table.mean(pc, j);
                        }
                        total += k;
                    }
                    acc.iter_mut().for_each(|a| *a /= total.max(1) as f64);
                    acc
                });
                b.add_guess(i, scale, &mean[..], &pooled);
            }
        }
        Some(b.finish(control_exact))
    }
}

impl PairedSampler {
    /// Sampled pairs before the first reallocation: enough for a rough variance per class.
    fn first_realloc(classes: usize) -> u64 {
        (2 * classes as u64).max(16)
    }

    /// Stop reallocating until [`Self::resume_reallocation`] (the pilot of [`AdaptiveSampler`]).
    fn pause_reallocation(&mut self) {
        self.next_realloc = u64::MAX;
    }

    /// Reallocate now, and again each time the sampled pairs double.
    fn resume_reallocation(&mut self) {
        let first = Self::first_realloc(self.sampled_classes.len());
        if self.n_sampled >= first {
            self.reallocate();
        }
        self.next_realloc = first.max(2 * self.n_sampled);
    }
}

impl PairedSampler {
    /// Neyman allocation of the pairs still to draw over the sampled classes.
    ///
    /// The variance of `phi_i(r)` is `(2/n)^2 sum_s var_(i,s) / count_(i,s)`, and a pair of
    /// class `{s, n - s}` gives each player one sample, of size `s` with probability `s / n`.
    /// With `N p_c` pairs of class `c`, the total variance is `sum_c a_c / (N p_c)` with
    /// `a_c = sum_(s in c) (n / s) var_c`, smallest for `p_c ~ sqrt(a_c)`. `var_c` is the
    /// residual's variance within the strata of the class's sizes, pooled over the players and
    /// both sizes (the class's whole spread where no stratum has two samples yet), each
    /// objective relative to its mean over the classes, shrunk towards that mean; the result
    /// is mixed with a share
    /// [`UNIFORM_SHARE`](super::allocation::UNIFORM_SHARE) of the uniform allocation. Reallocating changes which sizes are drawn,
    /// never how a size is drawn, so every stratum's mean stays unbiased, and the fit weighs
    /// each class by its own count ([`Self::solve`]).
    fn reallocate(&mut self) {
        let Some(dims) = self.dims else { return };
        if self.sampled_classes.len() < 2 {
            return;
        }
        let (Some(coef), Some(fit)) = (self.solve(), self.fit.as_ref()) else { return };
        let (n, k) = (self.n, dims.k);
        let cells = n * (n + 1);
        let mut count = vec![0.0f64; cells];
        let mut sum = vec![0.0f64; cells * k];
        let mut squares = vec![0.0f64; cells * k];
        let mut r = vec![0.0f64; k];
        for p in self.pairs.iter().filter(|p| !p.exact) {
            let c = &p.coalition;
            let s = c.len();
            for (j, rj) in r.iter_mut().enumerate() {
                *rj = p.odd[j] - fit.predict(c, &coef, j);
            }
            for i in 0..n {
                let (cell, sign) = if c.contains(i) { (i * (n + 1) + s, 1.0) } else { (i * (n + 1) + n - s, -1.0) };
                count[cell] += 1.0;
                for j in 0..k {
                    let x = sign * r[j];
                    sum[cell * k + j] += x;
                    squares[cell * k + j] += x * x;
                }
            }
        }
        // per class {s, n - s} and objective: the pooled within-stratum variance of both sizes
        // (r(N \ S) = -r(S): one spread, measured on the members of S at size s and on the
        // others at size n - s), and its degrees of freedom
        let mut var = vec![vec![f64::NAN; n / 2 + 1]; k];
        let mut df = vec![0.0f64; n / 2 + 1];
        for &class in &self.sampled_classes {
            let sizes = if 2 * class == n { vec![class] } else { vec![class, n - class] };
            for (j, var_j) in var.iter_mut().enumerate() {
                let (mut ss, mut d, mut tot_n, mut tot_s, mut tot_q) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for &s in &sizes {
                    for i in 0..n {
                        let cell = i * (n + 1) + s;
                        let (m, x, q) = (count[cell], sum[cell * k + j], squares[cell * k + j]);
                        if m >= 2.0 {
                            ss += (q - x * x / m).max(0.0);
                            d += m - 1.0;
                        }
                        tot_n += m;
                        tot_s += x;
                        tot_q += q;
                    }
                }
                if d < 1.0 && tot_n >= 2.0 {
                    // no stratum of this class has two samples: the class's whole spread
                    ss = (tot_q - tot_s * tot_s / tot_n).max(0.0);
                    d = tot_n - 1.0;
                }
                if d >= 1.0 {
                    var_j[class] = ss / d;
                }
                df[class] = d;
            }
        }
        let sampled: Vec<bool> = (0..=n / 2).map(|c| self.sampled_classes.binary_search(&c).is_ok()).collect();
        let sigma2 = relative_variances(&var, &df, |c| sampled[c]);
        let cost: Vec<f64> = self
            .sampled_classes
            .iter()
            .map(
                |&s| if 2 * s == n { sigma2[s] } else { (n as f64 / s as f64 + n as f64 / (n - s) as f64) * sigma2[s] },
            )
            .collect();
        let uniform: Vec<f64> = self.sampled_classes.iter().map(|&s| if 2 * s == n { 1.0 } else { 2.0 }).collect();
        if let Some(cdf) = neyman_cdf(&cost, &uniform) {
            self.class_cdf = cdf;
        }
    }
}

impl PairedSampler {
    /// Sampled pairs absorbed so far.
    fn sampled_pairs(&self) -> u64 {
        self.n_sampled
    }

    /// Evaluations the boundary and the enumerated classes take.
    fn enumerated_cost(&self) -> u64 {
        let n = self.n;
        2 + (1..n).filter(|&s| self.exhaustive[s]).map(|s| binom(n, s)).sum::<f64>() as u64
    }

    /// Estimated variance per evaluation of the two designs, `[paired with surrogate, unpaired
    /// SVARM]`, from the sampled pairs: the variance within the strata each design averages
    /// (player, side, size), the sizes coarsened to 4 bins after removing each size's mean,
    /// times the coalitions a design spends per stratum sample (two per pair, one unpaired).
    /// Summed over the objective columns, each relative to the unpaired variance. The paired
    /// residuals are corrected for the fit's leverage, and the residual degrees of freedom
    /// `sum (1 - h)` come with the scores: how well the paired variance is known.
    fn design_scores(&self) -> Option<([f64; 2], f64)> {
        const BINS: usize = 4;
        let dims = self.dims?;
        let (n, k) = (self.n, dims.k);
        let (coef, fit) = (self.solve()?, self.fit.as_ref()?);
        let sampled: Vec<&PairSample> = self.pairs.iter().filter(|p| !p.exact).collect();
        if sampled.len() < 4 {
            return None;
        }
        let bin = |s: usize| ((s - 1) * BINS / (n - 1)).min(BINS - 1);
        // the residuals are those of the pairs the surrogate was fitted to, smaller than its
        // error on a fresh pair (expected square `(1 - h) sigma^2`, h the pair's leverage in the
        // fit): each divided by sqrt(1 - h). Without this, at 10 n evaluations (a pilot of about
        // 1.25 n pairs for n - 1 free coefficients) the paired variance came out about 5 times
        // too small, and the paired design was chosen on the voting game in a third of the seeds
        let class_weight = self.class_weights();
        let leverage = fit.leverages(
            &class_weight,
            sampled.iter().map(|p| (p.coalition.len().min(n - p.coalition.len()), &p.coalition, 1.0)),
        )?;
        let scale: Vec<f64> = leverage.iter().map(|&h| 1.0 / (1.0 - h).max(1e-3).sqrt()).collect();
        let mut score = [0.0; 2];
        for j in 0..k {
            // per sampled pair: the odd residual r_o(S) and the utilities of S and N \ S
            let rows: Vec<(usize, f64, f64, f64)> = sampled
                .iter()
                .zip(&scale)
                .map(|(p, &scale)| {
                    let c = &p.coalition;
                    let r = scale * (p.odd[j] - fit.predict(c, &coef, j));
                    (c.len(), r, p.even[j] + p.odd[j], p.even[j] - p.odd[j])
                })
                .collect();
            // the mean of each design's value per size, removed first
            let mut size_sum = vec![[0.0f64; 3]; n + 1];
            for &(s, r, vs, vc) in &rows {
                size_sum[s][0] += 1.0;
                size_sum[n - s][0] += 1.0;
                size_sum[s][1] += r;
                size_sum[n - s][1] -= r;
                size_sum[s][2] += vs;
                size_sum[n - s][2] += vc;
            }
            let mean = |s: usize, d: usize| size_sum[s][d] / size_sum[s][0].max(1.0);
            // (count, sum, sum of squares) per stratum: paired (player, bin), unpaired (player, side, bin)
            let mut paired = vec![[0.0f64; 3]; n * BINS];
            let mut unpaired = vec![[0.0f64; 3]; n * 2 * BINS];
            let add = |acc: &mut [f64; 3], x: f64| {
                acc[0] += 1.0;
                acc[1] += x;
                acc[2] += x * x;
            };
            for (p, &(s, r, vs, vc)) in sampled.iter().zip(&rows) {
                for i in 0..n {
                    let member = p.coalition.contains(i);
                    if member {
                        add(&mut paired[i * BINS + bin(s)], r - mean(s, 1));
                    } else {
                        add(&mut paired[i * BINS + bin(n - s)], -r - mean(n - s, 1));
                    }
                    // S and N \ S: each player is "with" in one and "without" in the other
                    let (with_s, with_v, without_s, without_v) =
                        if member { (s, vs, n - s, vc) } else { (n - s, vc, s, vs) };
                    if with_s < n {
                        add(&mut unpaired[(i * 2) * BINS + bin(with_s)], with_v - mean(with_s, 2));
                    }
                    if without_s > 0 {
                        add(&mut unpaired[(i * 2 + 1) * BINS + bin(without_s)], without_v - mean(without_s, 2));
                    }
                }
            }
            let pooled = |cells: &[[f64; 3]]| {
                let (mut ss, mut df) = (0.0, 0.0);
                for a in cells.iter().filter(|a| a[0] >= 2.0) {
                    ss += (a[2] - a[1] * a[1] / a[0]).max(0.0);
                    df += a[0] - 1.0;
                }
                if df > 0.0 {
                    ss / df
                } else {
                    f64::NAN
                }
            };
            let (v0, v1) = (pooled(&paired), pooled(&unpaired));
            if !v0.is_finite() || !v1.is_finite() {
                return None;
            }
            let unit = v1.max(f64::MIN_POSITIVE);
            score[0] += 2.0 * v0 / unit;
            score[1] += v1 / unit;
        }
        Some((score, leverage.iter().map(|h| 1.0 - h).sum::<f64>()))
    }
}

impl Sampler for PairedSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        let n = self.n;
        if !self.warmup_planned {
            self.warmup_planned = true;
            self.plan_warmup();
            return Plan::Unit(Unit {
                kind: UnitKind::Boundary,
                coalitions: vec![Coalition::empty(n), Coalition::full(n)],
            });
        }
        let c = match self.warmup.pop_front() {
            Some(c) => c,
            None => {
                if self.sampled_classes.is_empty() {
                    return Plan::Exhausted;
                }
                if self.planned_sampled >= self.next_realloc && self.n_sampled < self.next_realloc {
                    // the pairs before a reallocation are out: wait for them, then reallocate
                    return Plan::Wait;
                }
                self.planned_sampled += 1;
                let class = self.sampled_classes[rng.categorical(&self.class_cdf)];
                // S of either size of the class (the pair holds both)
                let size = if 2 * class < n && rng.below(2) == 1 { n - class } else { class };
                rng.partial_shuffle(&mut self.pool, size);
                Coalition::from_members(n, &self.pool[..size])
            }
        };
        let comp = c.complement(n);
        Plan::Unit(Unit { kind: UnitKind::Paired, coalitions: vec![c, comp] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let w = dims.width();
        match unit.kind {
            UnitKind::Boundary => {
                self.dims = Some(dims);
                self.v0 = values[0].to_vec();
                self.vn = values[1].to_vec();
                self.fit = Some(SurrogateFit::new(self.n, w, false, true, self.n / 2 + 1));
            }
            UnitKind::Paired => {
                let odd = values[0].iter().zip(values[1]).map(|(a, b)| 0.5 * (a - b)).collect();
                let even = values[0].iter().zip(values[1]).map(|(a, b)| 0.5 * (a + b)).collect();
                self.add_pair(unit.coalitions[0].clone(), odd, even);
                if self.n_sampled >= self.next_realloc {
                    self.reallocate();
                    self.next_realloc = self.next_realloc.saturating_mul(2);
                }
            }
            _ => unreachable!("paired units are boundary or paired"),
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        self.estimate_with(control_exact)
    }

    /// Every sampled class has been reached, and there are at least as many pairs as players.
    fn tol_ready(&self) -> bool {
        if self.dims.is_none() || self.pairs.len() < self.n {
            return false;
        }
        let mut reached = vec![false; self.n / 2 + 1];
        for p in self.pairs.iter().filter(|p| !p.exact) {
            let s = p.coalition.len();
            reached[s.min(self.n - s)] = true;
        }
        self.sampled_sizes.iter().all(|&s| reached[s.min(self.n - s)])
    }

    fn min_budget(&self) -> u64 {
        let n = self.n;
        let enumerated: f64 = (1..n).filter(|&s| self.exhaustive[s]).map(|s| binom(n, s)).sum();
        // the boundary, every enumerated coalition, and two sampled pairs
        2 + enumerated as u64 + 4 * (!self.sampled_sizes.is_empty()) as u64
    }
}

/// Standard errors of the log variance ratio by which the pilot's scores must favour one design
/// before it decides (see [`AdaptiveSampler::ambiguous`]).
const DECISION_Z: f64 = 2.0;

/// The `regression` method past [`QUADRATIC_MAX_PLAYERS`](super::svarm::QUADRATIC_MAX_PLAYERS)
/// players: a pilot of paired samples (a quarter of what the budget leaves after the
/// enumerated sizes, at least `2 n` pairs without a budget) measures which design has the
/// smaller variance per evaluation, then the run continues with it, the pilot's coalitions
/// absorbed by the chosen design. While the pilot's two estimates are too close to tell apart
/// for the few degrees of freedom its fit leaves (small budgets), the pilot grows by `n / 4`
/// pairs at a time, up to `2 n` pairs and at most half the evaluations:
///
/// - paired, additive surrogate of the odd part ([`PairedSampler`]): wins when coalitions and
///   their complements share much of their value (pair effects, margin games);
/// - unpaired stratified SVARM without a surrogate: wins on near constant-sum games (voting),
///   where `v(S) + v(N \ S)` hardly varies, so pairing spends two evaluations on one sample,
///   and where the value is flat in most strata, which a fitted surrogate would perturb;
/// - unpaired SVARM on the residuals of an additive surrogate (the variant of
///   [`SvarmSampler`] past 24 players).
pub struct AdaptiveSampler {
    n: usize,
    budget: Option<u64>,
    paired: PairedSampler,
    /// the unpaired design once chosen (`None` while piloting or when paired was chosen)
    unpaired: Option<SvarmSampler>,
    decided: bool,
    pilot_pairs: u64,
    /// the most pairs the pilot grows to while its scores are too close to choose
    /// ([`Self::ambiguous`])
    max_pilot: u64,
    /// sampled pairs planned while piloting
    planned_pilot: u64,
    /// every unit absorbed during the pilot, with its utilities, to hand to an unpaired design
    log: Vec<(Unit, Vec<Vec<f64>>)>,
    dims: Option<Dims>,
    /// the design chosen: 0 paired, 1 unpaired SVARM
    design: Option<usize>,
}

impl AdaptiveSampler {
    pub fn new(n: usize, budget: Option<u64>) -> Self {
        let mut paired = PairedSampler::new(n, budget);
        paired.pause_reallocation();
        let (pilot_pairs, max_pilot) = match budget {
            Some(b) => {
                let rem = b.saturating_sub(paired.enumerated_cost());
                let pilot = (rem / 8).max(n as u64 / 4).max(8);
                // an undecided pilot grows up to 2 n pairs (the pilot without a budget), at most
                // half of the evaluations
                (pilot, (2 * n as u64).min(rem / 4).max(pilot))
            }
            None => (2 * n as u64, 2 * n as u64),
        };
        AdaptiveSampler {
            n,
            budget,
            paired,
            unpaired: None,
            decided: false,
            pilot_pairs,
            max_pilot,
            planned_pilot: 0,
            log: Vec::new(),
            dims: None,
            design: None,
        }
    }

    /// Whether the pilot's scores are too close to choose: the log of their ratio within
    /// [`DECISION_Z`] standard errors of a log variance estimated on the paired residual's
    /// degrees of freedom, `sqrt(2 / df)`. At 10 n evaluations the first pilot leaves the fit
    /// of n - 1 coefficients about n / 4 degrees of freedom, and the scores of one game spread
    /// over a factor of ten between seeds.
    fn ambiguous(&self) -> bool {
        let Some((scores, df)) = self.paired.design_scores() else { return false };
        let ratio = scores[0] / scores[1];
        ratio.is_finite() && ratio > 0.0 && df > 0.0 && ratio.ln().abs() < DECISION_Z * (2.0 / df).sqrt()
    }

    fn decide(&mut self) {
        self.decided = true;
        // the design of the smaller estimated variance per evaluation
        let scores = self.paired.design_scores().map(|s| s.0).unwrap_or([0.0, 1.0]);
        let best = if scores[0] <= scores[1] { 0 } else { 1 };
        self.design = Some(best);
        if best == 0 {
            self.paired.resume_reallocation();
            return;
        }
        // the pilot's coalitions of sizes SVARM samples are its first samples; those of sizes it
        // enumerates come again with its enumeration, from the engine's cache at no cost
        let mut svarm = SvarmSampler::new(self.n, self.budget, false);
        let dims = self.dims.expect("absorbed before deciding");
        for (unit, values) in std::mem::take(&mut self.log) {
            for (c, v) in unit.coalitions.into_iter().zip(values) {
                if !svarm.is_exhaustive(c.len()) {
                    svarm.absorb(&Unit { kind: UnitKind::Sampled, coalitions: vec![c] }, &[&v[..]], dims);
                }
            }
        }
        svarm.enable_allocation();
        self.unpaired = Some(svarm);
    }

    /// The design chosen (`"paired"` or `"svarm"`), once the pilot is in.
    pub fn design(&self) -> Option<&'static str> {
        self.design.map(|d| ["paired", "svarm"][d])
    }

    fn active(&self) -> &dyn Sampler {
        match &self.unpaired {
            Some(s) => s,
            None => &self.paired,
        }
    }
}

impl Sampler for AdaptiveSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        if let Some(s) = self.unpaired.as_mut() {
            return s.next_unit(rng);
        }
        if !self.decided && self.planned_pilot >= self.pilot_pairs {
            // the pilot is out: wait for its utilities before choosing the design
            return Plan::Wait;
        }
        let plan = self.paired.next_unit(rng);
        if let Plan::Unit(u) = &plan {
            if matches!(u.kind, UnitKind::Paired) && !self.paired.exhaustive[u.coalitions[0].len()] {
                self.planned_pilot += 1;
            }
        }
        plan
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        if let Some(s) = self.unpaired.as_mut() {
            s.absorb(unit, values, dims);
            return;
        }
        self.dims = Some(dims);
        self.paired.absorb(unit, values, dims);
        if !self.decided {
            self.log.push((unit.clone(), values.iter().map(|v| v.to_vec()).collect()));
            if self.paired.sampled_pairs() >= self.pilot_pairs {
                if self.pilot_pairs < self.max_pilot && self.ambiguous() {
                    // n / 4 more pairs, then look again
                    self.pilot_pairs = (self.pilot_pairs + (self.n as u64 / 4).max(1)).min(self.max_pilot);
                } else {
                    self.decide();
                }
            }
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        self.active().estimate(control_exact)
    }

    fn estimate_quick(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        self.active().estimate_quick(control_exact)
    }

    fn tol_ready(&self) -> bool {
        self.decided && self.active().tol_ready()
    }

    fn min_budget(&self) -> u64 {
        self.paired.min_budget()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum_i w_i x_i`, plus a member-dependent term `+-1` on the coalitions of size 2 only:
    /// after the additive fit, the residual varies in the class {2, n - 2} alone.
    fn game(c: &Coalition, n: usize) -> f64 {
        let additive: f64 = (0..n).filter(|&i| c.contains(i)).map(|i| 0.1 * (i + 1) as f64).sum();
        let members: Vec<usize> = (0..n).filter(|&i| c.contains(i)).collect();
        let spike = if members.len() == 2 && (members[0] * 7 + members[1] * 13) % 2 == 0 { 1.0 } else { -1.0 };
        additive + if members.len() == 2 { spike } else { 0.0 }
    }

    fn feed(sampler: &mut PairedSampler, rng: &mut Rng, pairs: usize) {
        let n = sampler.n;
        let dims = Dims { k: 1, kc: 0 };
        let mut sampled = 0;
        while sampled < pairs {
            let Plan::Unit(unit) = sampler.next_unit(rng) else { panic!("the sampler stopped") };
            if matches!(unit.kind, UnitKind::Paired) && !sampler.exhaustive[unit.coalitions[0].len()] {
                sampled += 1;
            }
            let values: Vec<Vec<f64>> = unit.coalitions.iter().map(|c| vec![game(c, n)]).collect();
            let refs: Vec<&[f64]> = values.iter().map(|v| &v[..]).collect();
            sampler.absorb(&unit, &refs, dims);
        }
    }

    fn class_probability(sampler: &PairedSampler, class: usize) -> f64 {
        let pos = sampler.sampled_classes.iter().position(|&s| s == class).expect("a sampled class");
        sampler.class_cdf[pos] - if pos > 0 { sampler.class_cdf[pos - 1] } else { 0.0 }
    }

    #[test]
    fn the_pairs_go_where_the_residual_varies_and_no_class_starves() {
        let n = 32;
        let mut sampler = PairedSampler::new(n, Some(4000));
        let total = *sampler.class_cdf.last().unwrap();
        let uniform = 2.0 / (sampler.sampled_sizes.len() as f64);
        assert!((class_probability(&sampler, 2) / total - uniform).abs() < 1e-12);
        let mut rng = Rng::new(7);
        feed(&mut sampler, &mut rng, 300);
        assert!(sampler.next_realloc > 256, "reallocated at 64, 128 and 256 pairs");
        let total = *sampler.class_cdf.last().unwrap();
        let p2 = class_probability(&sampler, 2) / total;
        assert!(p2 > 4.0 * uniform, "class {{2, 30}} holds the residual variance: p = {p2}, uniform {uniform}");
        for &s in &sampler.sampled_classes {
            let p = class_probability(&sampler, s) / total;
            let floor = super::super::allocation::UNIFORM_SHARE * if 2 * s == n { 1.0 } else { 2.0 }
                / sampler.sampled_sizes.len() as f64;
            assert!(p >= floor * (1.0 - 1e-9), "class {s}: p = {p} below the uniform share {floor}");
        }
    }

    /// Drive `adaptive` with `v` until it has chosen its design.
    fn choose(adaptive: &mut AdaptiveSampler, rng: &mut Rng, v: impl Fn(&Coalition) -> f64) -> &'static str {
        let dims = Dims { k: 1, kc: 0 };
        while adaptive.design().is_none() {
            let Plan::Unit(unit) = adaptive.next_unit(rng) else { panic!("the pilot stopped") };
            let values: Vec<Vec<f64>> = unit.coalitions.iter().map(|c| vec![v(c)]).collect();
            let refs: Vec<&[f64]> = values.iter().map(|v| &v[..]).collect();
            adaptive.absorb(&unit, &refs, dims);
        }
        adaptive.design().expect("chosen")
    }

    #[test]
    fn at_ten_evaluations_per_player_a_voting_game_goes_unpaired_and_a_near_additive_one_paired() {
        let n = 32;
        let weight = |i: usize| (i % 5 + 1) as f64;
        let quota = (0..n).map(weight).sum::<f64>() / 2.0 + 0.5;
        let voting = |c: &Coalition| if c.members().map(weight).sum::<f64>() >= quota { 1.0 } else { 0.0 };
        for seed in 0..8 {
            let mut rng = Rng::new(seed);
            assert_eq!(choose(&mut AdaptiveSampler::new(n, Some(10 * n as u64)), &mut rng, voting), "svarm");
            let mut rng = Rng::new(seed);
            // main and pair effects (an additive odd part) under a mild tanh
            let near_additive = |c: &Coalition| {
                let main: f64 = c.members().map(|i| (i % 7) as f64).sum();
                let pairs = (0..n - 1).filter(|&i| c.contains(i) && c.contains(i + 1)).count() as f64;
                (0.02 * (main + 2.0 * pairs)).tanh()
            };
            assert_eq!(choose(&mut AdaptiveSampler::new(n, Some(10 * n as u64)), &mut rng, near_additive), "paired");
        }
    }

    #[test]
    fn the_pilot_of_the_adaptive_sampler_stays_uniform() {
        let n = 32;
        let mut adaptive = AdaptiveSampler::new(n, Some(4000));
        let before = adaptive.paired.class_cdf.clone();
        let mut rng = Rng::new(3);
        feed(&mut adaptive.paired, &mut rng, 200);
        assert_eq!(adaptive.paired.class_cdf, before, "no reallocation while piloting");
        adaptive.paired.resume_reallocation();
        assert_ne!(adaptive.paired.class_cdf, before);
    }
}
