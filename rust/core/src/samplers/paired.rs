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
//! every coalition size weighing the same, under the constraint `g(N) = v_o(N)` (efficiency);
//! its Shapley values are `beta_i`. What it leaves, `r = v_o - g`, is odd too, and its Shapley
//! value is `phi_i(r) = 2/n sum_{s=1}^{n-1} A_i(s)` with `A_i(s)` the mean of `r(S)` over the
//! coalitions of size `s` that contain `i` (SVARM's formula, the "without" strata folded onto
//! the "with" strata by oddness). A pair `(S, N \ S)` gives `r(S)` to the stratum `(i, |S|)` of
//! every member of `S` and `-r(S)` to the stratum `(i, n - |S|)` of every other player: each
//! player one sample per pair. The size classes `{s, n - s}` whose pairs fit in the budget are
//! enumerated and their strata are exact; the other sizes are drawn uniformly,
//! then a uniform coalition of that size. A stratum not reached yet borrows the mean of the
//! same size over the other players, at the pooled variance.
//!
//! The estimate is `beta + phi(r)`. Its variance is the sum of the stratified means' variances
//! (`(2/n)^2 var_s / count_s`, each stratum's variance shrunk towards the pooled one); the
//! surrogate is treated as fixed, so the fit's own noise is not counted (it is second order:
//! the residual correction removes the surrogate's error to first order).

use super::svarm::SvarmSampler;
use super::svarm::{binom, chol_solve, cholesky, combinations};
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
    /// sampled sizes (both members of each class), drawn uniformly
    sampled_sizes: Vec<usize>,
    warmup: VecDeque<Coalition>,
    warmup_planned: bool,
    pool: Vec<u32>,
    dims: Option<Dims>,
    v0: Vec<f64>,
    vn: Vec<f64>,
    pairs: Vec<PairSample>,
    /// normal equations of the enumerated pairs (weighted) and of the sampled ones (unweighted)
    gram_exact: Vec<f64>,
    rhs_exact: Vec<f64>,
    gram_sampled: Vec<f64>,
    rhs_sampled: Vec<f64>,
    n_sampled: u64,
}

impl PairedSampler {
    pub fn new(n: usize, budget: Option<u64>) -> Self {
        assert!(n >= 4, "the paired estimator needs at least 4 players");
        let exhaustive = paired_exhaustive_sizes(n, budget);
        let sampled_sizes = (1..n).filter(|&s| !exhaustive[s]).collect();
        PairedSampler {
            n,
            exhaustive,
            sampled_sizes,
            warmup: VecDeque::new(),
            warmup_planned: false,
            pool: (0..n as u32).collect(),
            dims: None,
            v0: Vec::new(),
            vn: Vec::new(),
            pairs: Vec::new(),
            gram_exact: vec![0.0; n * n],
            rhs_exact: Vec::new(),
            gram_sampled: vec![0.0; n * n],
            rhs_sampled: Vec::new(),
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
        let n = self.n;
        let w = odd.len();
        let exact = self.exhaustive[c.len()];
        let feats: Vec<f64> = (0..n).map(|i| if c.contains(i) { 0.5 } else { -0.5 }).collect();
        let s = c.len();
        // every size weighs 1 in the fit: an enumerated pair stands for S and N \ S, each of
        // weight 1 / C(n, s); sampled pairs share the sampled classes' weight at solve time
        let weight = if exact { 2.0 / binom(n, s) } else { 1.0 };
        let (gram, rhs) = if exact {
            (&mut self.gram_exact, &mut self.rhs_exact)
        } else {
            self.n_sampled += 1;
            (&mut self.gram_sampled, &mut self.rhs_sampled)
        };
        for a in 0..n {
            let fa = weight * feats[a];
            for b in 0..n {
                gram[a * n + b] += fa * feats[b];
            }
            for j in 0..w {
                rhs[a * w + j] += fa * odd[j];
            }
        }
        self.pairs.push(PairSample { coalition: c, odd, even, exact });
    }

    /// Constrained weighted least squares: `beta` `[n, w]` with `sum_i beta_i = v(N) - v(0)`.
    fn solve(&self) -> Option<Vec<f64>> {
        let n = self.n;
        let w = self.v0.len();
        let scale = if self.n_sampled > 0 { self.sampled_sizes.len() as f64 / self.n_sampled as f64 } else { 0.0 };
        let mut a: Vec<f64> = self.gram_exact.iter().zip(&self.gram_sampled).map(|(e, s)| e + scale * s).collect();
        let b: Vec<f64> = self.rhs_exact.iter().zip(&self.rhs_sampled).map(|(e, s)| e + scale * s).collect();
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n as f64;
        if trace.is_nan() || trace <= 0.0 {
            return None;
        }
        for i in 0..n {
            a[i * n + i] += 1e-10 * trace;
        }
        let l = cholesky(&a, n)?;
        let ainv1 = chol_solve(&l, n, &vec![1.0; n]);
        let denom: f64 = ainv1.iter().sum();
        let mut coef = vec![0.0; n * w];
        let mut col = vec![0.0; n];
        for j in 0..w {
            for i in 0..n {
                col[i] = b[i * w + j];
            }
            let ainvb = chol_solve(&l, n, &col);
            let shift = (ainvb.iter().sum::<f64>() - (self.vn[j] - self.v0[j])) / denom;
            for i in 0..n {
                coef[i * w + j] = ainvb[i] - shift * ainv1[i];
            }
        }
        coef.iter().all(|x| x.is_finite()).then_some(coef)
    }

    fn estimate_with(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        let dims = self.dims?;
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
            for i in 0..n {
                let f = if c.contains(i) { 0.5 } else { -0.5 };
                for j in 0..w {
                    r[j] -= f * coef[i * w + j];
                }
            }
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
        for i in 0..n {
            let row = &coef[i * w..(i + 1) * w];
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
    /// Summed over the objective columns, each relative to the unpaired variance.
    fn design_scores(&self) -> Option<[f64; 2]> {
        const BINS: usize = 4;
        let dims = self.dims?;
        let (n, w, k) = (self.n, dims.width(), dims.k);
        let coef = self.solve()?;
        let sampled: Vec<&PairSample> = self.pairs.iter().filter(|p| !p.exact).collect();
        if sampled.len() < 4 {
            return None;
        }
        let bin = |s: usize| ((s - 1) * BINS / (n - 1)).min(BINS - 1);
        let mut score = [0.0; 2];
        for j in 0..k {
            // per sampled pair: the odd residual r_o(S) and the utilities of S and N \ S
            let rows: Vec<(usize, f64, f64, f64)> = sampled
                .iter()
                .map(|p| {
                    let c = &p.coalition;
                    let g: f64 = (0..n).map(|i| if c.contains(i) { 0.5 } else { -0.5 } * coef[i * w + j]).sum();
                    (c.len(), p.odd[j] - g, p.even[j] + p.odd[j], p.even[j] - p.odd[j])
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
        Some(score)
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
                if self.sampled_sizes.is_empty() {
                    return Plan::Exhausted;
                }
                let size = self.sampled_sizes[rng.below(self.sampled_sizes.len() as u64) as usize];
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
                self.rhs_exact = vec![0.0; self.n * w];
                self.rhs_sampled = vec![0.0; self.n * w];
            }
            UnitKind::Paired => {
                let odd = values[0].iter().zip(values[1]).map(|(a, b)| 0.5 * (a - b)).collect();
                let even = values[0].iter().zip(values[1]).map(|(a, b)| 0.5 * (a + b)).collect();
                self.add_pair(unit.coalitions[0].clone(), odd, even);
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

/// The paired design is chosen when its estimated variance is below this share of the unpaired
/// one. The estimate leaves out the paired design's other costs (the surrogate's own noise,
/// strata that borrow their mean from other players); in `bench/shapley` the games where plain
/// SVARM was truly better (voting, airport) scored 0.48-3.3, those where pairing was better
/// (margin games, third order) 0.02-0.31.
const PAIRED_MARGIN: f64 = 0.4;

/// The `regression` method past [`QUADRATIC_MAX_PLAYERS`](super::svarm::QUADRATIC_MAX_PLAYERS)
/// players: a pilot of paired samples (a quarter of what the budget leaves after the
/// enumerated sizes, at least `2 n` pairs without a budget) measures which design has the
/// smaller variance per evaluation, then the run continues with it, the pilot's coalitions
/// absorbed by the chosen design:
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
        let paired = PairedSampler::new(n, budget);
        let pilot_pairs = match budget {
            Some(b) => (b.saturating_sub(paired.enumerated_cost()) / 8).max(n as u64 / 4).max(8),
            None => 2 * n as u64,
        };
        AdaptiveSampler {
            n,
            budget,
            paired,
            unpaired: None,
            decided: false,
            pilot_pairs,
            planned_pilot: 0,
            log: Vec::new(),
            dims: None,
            design: None,
        }
    }

    fn decide(&mut self) {
        self.decided = true;
        let scores = self.paired.design_scores().unwrap_or([0.0, 1.0]);
        let best = if scores[0] <= PAIRED_MARGIN * scores[1] { 0 } else { 1 };
        self.design = Some(best);
        if best == 0 {
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
                self.decide();
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
