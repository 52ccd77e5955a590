//! Per-source weights that maximise a goal over a margin game.
//!
//! A margin game is linear in per-source weights inside: `m_S(w)_j = sum_i w_i margins[i, j]`.
//! Objective `k` is `sum_j avg[k, j] f(m_S(w)_j)` (`avg` rows average over an evaluation set), the
//! goal `sum_k coef_k objective_k`, subject to `objective_c >= level_c`. With `f` = log sigmoid
//! the goal is concave in `w`: projected gradient ascent with backtracking, the constraints as a
//! quadratic penalty (concave too), reaches the maximum over the box `[0, w_max]^n`. With `f` the
//! accuracy indicator the goal is piecewise constant in each weight: coordinate ascent, each
//! weight set to the best point between its breakpoints (feasibility first, then the goal).

use crate::error::{Error, Result};
use crate::games::MarginKind;

/// Penalty on the squared shortfall of a constraint (log-likelihood weights).
const PENALTY: f64 = 1e4;

/// A weight problem over a margin game (all matrices row-major).
#[derive(Clone, Debug)]
pub struct WeightProblem {
    /// `[n, m]` margins.
    pub margins: Vec<f64>,
    pub n: usize,
    pub m: usize,
    /// `Accuracy` or `LogSigmoid`.
    pub kind: MarginKind,
    /// `[k, m]`: objective `k` is `sum_j avg[k, j] f(s_j)`.
    pub avg: Vec<f64>,
    /// `[k]` coefficients of the goal.
    pub coef: Vec<f64>,
    /// Objectives (rows of `avg`) that must reach `levels`.
    pub constrained: Vec<usize>,
    pub levels: Vec<f64>,
    /// The largest weight.
    pub w_max: f64,
}

fn round12(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

impl WeightProblem {
    /// Check the shapes and values.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::BadWeightProblem(what));
        if self.n < 1 || self.m < 1 || self.margins.len() != self.n * self.m {
            return bad(format!(
                "the margins have {} entries for {} sources x {} pairs",
                self.margins.len(),
                self.n,
                self.m
            ));
        }
        let k = self.coef.len();
        if k < 1 || self.avg.len() != k * self.m {
            return bad(format!(
                "{} objective coefficients and {} averaging entries for {} pairs",
                k,
                self.avg.len(),
                self.m
            ));
        }
        if self.constrained.len() != self.levels.len() || self.constrained.iter().any(|&c| c >= k) {
            return bad(format!(
                "{} constrained objectives for {} levels, of {k} objectives",
                self.constrained.len(),
                self.levels.len()
            ));
        }
        if !(self.w_max.is_finite() && self.w_max > 0.0) {
            return bad(format!("the largest weight must be finite and positive, got {}", self.w_max));
        }
        if !matches!(self.kind, MarginKind::Accuracy | MarginKind::LogSigmoid) {
            return bad(format!("weights are optimised for accuracy and logsigmoid games, not {}", self.kind.name()));
        }
        let finite = self.margins.iter().chain(&self.avg).chain(&self.coef).chain(&self.levels).all(|x| x.is_finite());
        if !finite {
            return bad("margins, averaging weights, coefficients and levels must be finite".into());
        }
        Ok(())
    }

    fn k(&self) -> usize {
        self.coef.len()
    }

    fn sums(&self, w: &[f64]) -> Vec<f64> {
        let mut s = vec![0.0; self.m];
        for (i, &wi) in w.iter().enumerate() {
            if wi != 0.0 {
                for (sj, mij) in s.iter_mut().zip(&self.margins[i * self.m..(i + 1) * self.m]) {
                    *sj += wi * mij;
                }
            }
        }
        s
    }

    fn objectives_of_terms(&self, terms: &[f64]) -> Vec<f64> {
        (0..self.k())
            .map(|k| self.avg[k * self.m..(k + 1) * self.m].iter().zip(terms).map(|(a, t)| a * t).sum())
            .collect()
    }

    /// The objectives at weights `w`.
    pub fn objectives(&self, w: &[f64]) -> Vec<f64> {
        let terms: Vec<f64> = self.sums(w).iter().map(|&s| self.kind.term(s)).collect();
        self.objectives_of_terms(&terms)
    }

    fn key(&self, obj: &[f64]) -> (f64, f64) {
        let viol: f64 = self.constrained.iter().zip(&self.levels).map(|(&c, &l)| (l - obj[c]).max(0.0)).sum();
        let score: f64 = self.coef.iter().zip(obj).map(|(c, o)| c * o).sum();
        (-round12(viol), score)
    }

    /// The log-likelihood goal (minus the penalty) and its gradient at `w`.
    fn goal_and_grad(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let (n, m, k) = (self.n, self.m, self.k());
        let s = self.sums(w);
        let terms: Vec<f64> = s.iter().map(|&x| self.kind.term(x)).collect();
        let obj = self.objectives_of_terms(&terms);
        let slope: Vec<f64> = s.iter().map(|&x| 1.0 / (1.0 + x.clamp(-500.0, 500.0).exp())).collect();
        // d objective_k / d w_i = sum_j avg[k, j] sigmoid(-s_j) margins[i, j]
        let mut d_obj = vec![0.0; k * n];
        for kk in 0..k {
            let a = &self.avg[kk * m..(kk + 1) * m];
            for i in 0..n {
                let row = &self.margins[i * m..(i + 1) * m];
                d_obj[kk * n + i] = (0..m).map(|j| a[j] * slope[j] * row[j]).sum();
            }
        }
        let mut value: f64 = self.coef.iter().zip(&obj).map(|(c, o)| c * o).sum();
        let mut grad: Vec<f64> = (0..n).map(|i| (0..k).map(|kk| self.coef[kk] * d_obj[kk * n + i]).sum()).collect();
        for (&c, &level) in self.constrained.iter().zip(&self.levels) {
            let short = (level - obj[c]).max(0.0);
            value -= PENALTY * short * short;
            for (i, g) in grad.iter_mut().enumerate() {
                *g += 2.0 * PENALTY * short * d_obj[c * n + i];
            }
        }
        (value, grad)
    }

    /// The weights that maximise the goal, from `start` (clipped to the box), within `max_iter`
    /// gradient steps (log sigmoid) or sweeps (accuracy).
    pub fn solve(&self, start: &[f64], max_iter: usize) -> Result<Vec<f64>> {
        self.check()?;
        if start.len() != self.n || start.iter().any(|x| !x.is_finite()) {
            return Err(Error::BadWeightProblem(format!(
                "the start has {} finite weights; {} needed",
                start.len(),
                self.n
            )));
        }
        let mut w: Vec<f64> = start.iter().map(|x| x.clamp(0.0, self.w_max)).collect();
        match self.kind {
            MarginKind::LogSigmoid => {
                let (mut value, mut grad) = self.goal_and_grad(&w);
                let mut step = 1.0;
                for _ in 0..max_iter {
                    let (trial, got, got_grad) = loop {
                        let trial: Vec<f64> =
                            w.iter().zip(&grad).map(|(wi, g)| (wi + step * g).clamp(0.0, self.w_max)).collect();
                        let (got, got_grad) = self.goal_and_grad(&trial);
                        let ascent: f64 = grad.iter().zip(trial.iter().zip(&w)).map(|(g, (t, wi))| g * (t - wi)).sum();
                        if got >= value + 1e-4 * ascent || step < 1e-12 {
                            break (trial, got, got_grad);
                        }
                        step /= 2.0;
                    };
                    let moved = trial.iter().zip(&w).map(|(t, wi)| (t - wi).abs()).fold(0.0, f64::max);
                    w = trial;
                    value = got;
                    grad = got_grad;
                    step = (step * 2.0).min(1e6);
                    if moved < 1e-9 {
                        break;
                    }
                }
            }
            _ => self.coordinate_ascent(&mut w, max_iter),
        }
        Ok(w)
    }

    fn coordinate_ascent(&self, w: &mut [f64], max_iter: usize) {
        let m = self.m;
        let mut current = self.key(&self.objectives(w));
        for _ in 0..max_iter {
            let mut changed = false;
            for i in 0..self.n {
                let row = &self.margins[i * m..(i + 1) * m];
                let s = self.sums(w);
                let rest: Vec<f64> = s.iter().zip(row).map(|(sj, mij)| sj - w[i] * mij).collect();
                let mut cuts: Vec<f64> = rest
                    .iter()
                    .zip(row)
                    .filter(|(_, &mij)| mij != 0.0)
                    .map(|(r, mij)| -r / mij)
                    .filter(|&c| c > 0.0 && c < self.w_max)
                    .collect();
                cuts.sort_by(f64::total_cmp);
                cuts.dedup();
                let mut points = Vec::with_capacity(cuts.len() + 2);
                points.push(0.0);
                points.extend(cuts);
                points.push(self.w_max);
                let mut candidates: Vec<f64> = points.windows(2).map(|p| (p[0] + p[1]) / 2.0).collect();
                candidates.extend(&points);
                candidates.push(w[i]);
                candidates.sort_by(f64::total_cmp);
                candidates.dedup();
                let mut best: Option<((f64, f64), f64, f64)> = None; // (key, -distance, candidate)
                let mut terms = vec![0.0; m];
                for &c in &candidates {
                    for j in 0..m {
                        terms[j] = self.kind.term(rest[j] + c * row[j]);
                    }
                    let key = self.key(&self.objectives_of_terms(&terms));
                    let rank = (key, -(c - w[i]).abs());
                    if best.as_ref().is_none_or(|b| rank > (b.0, b.1)) {
                        best = Some((key, rank.1, c));
                    }
                }
                let (key, _, c) = best.expect("at least the bounds are candidates");
                if key > current {
                    w[i] = c;
                    current = key;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(margins: Vec<f64>, n: usize, kind: MarginKind, w_max: f64) -> WeightProblem {
        let m = margins.len() / n;
        WeightProblem {
            margins,
            n,
            m,
            kind,
            avg: vec![1.0 / m as f64; m],
            coef: vec![1.0],
            constrained: vec![],
            levels: vec![],
            w_max,
        }
    }

    #[test]
    fn loglik_reaches_the_closed_form_optimum() {
        // source 0 right on 3 of 4 pairs (margins +-1): optimum ln 3; source 1 always wrong: 0
        let mut margins = vec![0.0; 12];
        margins[..4].copy_from_slice(&[1.0, 1.0, 1.0, -1.0]);
        margins[6 + 4..6 + 6].copy_from_slice(&[-1.0, -1.0]);
        let p = problem(margins, 2, MarginKind::LogSigmoid, 3.0);
        let w = p.solve(&[1.0, 1.0], 500).unwrap();
        assert!((w[0] - 3f64.ln()).abs() < 1e-4, "{w:?}");
        assert_eq!(w[1], 0.0);
    }

    #[test]
    fn accuracy_finds_weights_no_subset_has() {
        let p = problem(vec![1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 3.0, 3.0], 2, MarginKind::Accuracy, 2.0);
        let w = p.solve(&[1.0, 1.0], 100).unwrap();
        assert_eq!(p.objectives(&w), vec![1.0]);
        assert!(w[0] / w[1] > 1.0 && w[0] / w[1] < 3.0, "{w:?}");
    }

    #[test]
    fn a_constraint_holds_at_the_optimum() {
        // objective 0 on pairs 0-1 wants source 0, objective 1 on pairs 2-3 is hurt by it
        let margins = vec![1.0, 1.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0];
        let mut p = problem(margins, 2, MarginKind::LogSigmoid, 2.0);
        p.avg = vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5];
        p.coef = vec![1.0, 0.0];
        p.constrained = vec![1];
        p.levels = vec![-0.5];
        let w = p.solve(&[0.0, 0.0], 2000).unwrap();
        assert!(p.objectives(&w)[1] >= -0.5 - 1e-3, "{w:?}");
    }

    #[test]
    fn bad_problems_are_errors() {
        let p = problem(vec![1.0, f64::NAN], 1, MarginKind::LogSigmoid, 1.0);
        assert!(p.solve(&[1.0], 10).is_err());
        let p = problem(vec![1.0, 2.0], 1, MarginKind::Mean, 1.0);
        assert!(p.solve(&[1.0], 10).is_err());
    }
}
