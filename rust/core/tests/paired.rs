//! The `regression` method past 24 players (a paired pilot, then the paired odd-surrogate
//! design or unpaired SVARM) against games whose Shapley values are known in closed form.

use dposhap_core::coalition::Coalition;
use dposhap_core::{Engine, EngineConfig, Method, ResultSnapshot, Semivalue};

/// `v(S) = sum_T c_T 1[T subset of S]`: the Shapley value gives each member of `T` `c_T / |T|`.
struct Unanimity {
    terms: Vec<(Vec<usize>, f64)>,
}

impl Unanimity {
    /// Every singleton, `pairs` pairs and `triples` triples with coefficients from a fixed LCG.
    fn new(n: usize, pairs: usize, triples: usize, seed: u64) -> Self {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut terms: Vec<(Vec<usize>, f64)> = (0..n).map(|i| (vec![i], next() - 0.3)).collect();
        for (size, count) in [(2, pairs), (3, triples)] {
            for _ in 0..count {
                let mut members: Vec<usize> = Vec::new();
                while members.len() < size {
                    let p = (next() * n as f64) as usize % n;
                    if !members.contains(&p) {
                        members.push(p);
                    }
                }
                terms.push((members, 4.0 * (next() - 0.5)));
            }
        }
        Unanimity { terms }
    }

    fn value(&self, c: &Coalition) -> f64 {
        self.terms.iter().filter(|(t, _)| t.iter().all(|&i| c.contains(i))).map(|(_, v)| v).sum()
    }

    fn shapley(&self, n: usize) -> Vec<f64> {
        let mut phi = vec![0.0; n];
        for (t, v) in &self.terms {
            for &i in t {
                phi[i] += v / t.len() as f64;
            }
        }
        phi
    }
}

/// The airport game `max_{i in S} c_i` and its closed-form values.
fn airport(costs: &[f64]) -> (impl Fn(&Coalition) -> f64 + '_, Vec<f64>) {
    let n = costs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| costs[a].partial_cmp(&costs[b]).unwrap());
    let mut phi = vec![0.0; n];
    let (mut prev, mut acc) = (0.0, 0.0);
    for (j, &p) in order.iter().enumerate() {
        acc += (costs[p] - prev) / (n - j) as f64;
        prev = costs[p];
        phi[p] = acc;
    }
    (move |c: &Coalition| c.members().map(|i| costs[i]).fold(0.0, f64::max), phi)
}

fn run(n: usize, method: Method, budget: u64, seed: u64, f: &dyn Fn(&Coalition) -> f64) -> ResultSnapshot {
    let cfg = EngineConfig {
        n,
        method: method.into(),
        semivalue: Semivalue::Shapley,
        seed,
        budget: Some(budget),
        tol: None,
        pilot: None,
        control_exact: None,
        max_units: None,
    };
    let mut e = Engine::new(cfg).unwrap();
    let mut evaluated = 0u64;
    while !e.done() {
        let cs = e.ask(256);
        if cs.is_empty() {
            break;
        }
        let vals: Vec<f64> = cs.iter().map(f).collect();
        evaluated += cs.len() as u64;
        e.tell(&cs, &vals, 1).unwrap();
    }
    let r = e.result().unwrap();
    assert_eq!(r.n_evaluations, evaluated);
    assert!(r.n_evaluations <= budget, "{} evaluations for a budget of {budget}", r.n_evaluations);
    r
}

fn mse(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len() as f64
}

#[test]
fn a_second_order_game_is_exact_from_a_small_budget() {
    // the odd part of a game of order <= 2 is additive: the paired surrogate fits it exactly
    let n = 40;
    let game = Unanimity::new(n, 120, 0, 1);
    let truth = game.shapley(n);
    let r = run(n, Method::SvarmRegression, 10 * n as u64, 0, &|c| game.value(c));
    let err = r.estimate.values.iter().zip(&truth).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-9, "max error {err:e}");
    // and the permutation estimator, with the same budget, is far from it
    let p = run(n, Method::Permutation, 10 * n as u64, 0, &|c| game.value(c));
    assert!(mse(&p.estimate.values, &truth) > 1e-4);
}

#[test]
fn a_third_order_game_is_estimated_within_the_standard_errors() {
    let n = 32;
    let game = Unanimity::new(n, 64, 64, 2);
    let truth = game.shapley(n);
    let budget = 30 * n as u64;
    let mut ours = 0.0;
    let mut permutation = 0.0;
    let mut inside = 0;
    for seed in 0..4 {
        let r = run(n, Method::SvarmRegression, budget, seed, &|c| game.value(c));
        let se = r.estimate.stderr();
        assert!(se.iter().all(|s| s.is_finite() && *s > 0.0), "{se:?}");
        inside += (0..n).filter(|&i| (r.estimate.values[i] - truth[i]).abs() < 2.0 * se[i]).count();
        ours += mse(&r.estimate.values, &truth);
        permutation += mse(&run(n, Method::Permutation, budget, seed, &|c| game.value(c)).estimate.values, &truth);
    }
    // nominal 95% intervals: at least 85% of 4 x 32 cover the truth
    assert!(inside as f64 >= 0.85 * (4 * n) as f64, "{inside} of {} inside 2 standard errors", 4 * n);
    assert!(ours * 4.0 < permutation, "regression MSE {ours:e} vs permutation {permutation:e}");
}

#[test]
fn the_airport_game_is_estimated_within_the_standard_errors() {
    // a game where the unpaired design wins: v(S) + v(N \ S) is nearly constant
    let n = 48;
    let costs: Vec<f64> = (0..n).map(|i| ((i * 37 + 11) % 97) as f64 / 97.0).collect();
    let (f, truth) = airport(&costs);
    let budget = 30 * n as u64;
    let (mut inside, mut ours, mut permutation) = (0, 0.0, 0.0);
    for seed in 0..3 {
        let r = run(n, Method::SvarmRegression, budget, seed, &f);
        let se = r.estimate.stderr();
        inside += (0..n).filter(|&i| (r.estimate.values[i] - truth[i]).abs() < 2.0 * se[i]).count();
        ours += mse(&r.estimate.values, &truth);
        permutation += mse(&run(n, Method::Permutation, budget, seed, &f).estimate.values, &truth);
    }
    assert!(inside as f64 >= 0.85 * (3 * n) as f64, "{inside} of {} inside 2 standard errors", 3 * n);
    assert!(ours < permutation, "regression MSE {ours:e} vs permutation {permutation:e}");
}

#[test]
fn the_same_seed_gives_the_same_values() {
    let n = 30;
    let game = Unanimity::new(n, 30, 30, 3);
    let a = run(n, Method::SvarmRegression, 600, 7, &|c| game.value(c));
    let b = run(n, Method::SvarmRegression, 600, 7, &|c| game.value(c));
    assert_eq!(a.estimate.values, b.estimate.values);
}
