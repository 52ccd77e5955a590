//! Estimators against exact values on games with enumerated values, the engine's contract
//! (budget, cache, reproducibility), and native games against plain evaluation.

use dposhap_core::coalition::Coalition;
use dposhap_core::games::{exact_native, run_native, Game, MarginGame, MarginKind};
use dposhap_core::{Engine, EngineConfig, Error, ErrorKind, Method, Semivalue};
use proptest::prelude::*;
use std::collections::HashSet;

fn config(
    n: usize,
    method: Method,
    semivalue: Semivalue,
    seed: u64,
    budget: Option<u64>,
    tol: Option<f64>,
) -> EngineConfig {
    EngineConfig {
        n,
        method: method.into(),
        semivalue,
        seed,
        budget,
        tol,
        pilot: None,
        control_exact: None,
        max_units: None,
    }
}

/// A weighted voting game with a tail of small players and a threshold (not of low order).
fn voting(weights: &[f64], quota: f64) -> impl Fn(&Coalition) -> f64 + '_ {
    move |c: &Coalition| if c.members().map(|i| weights[i]).sum::<f64>() >= quota { 1.0 } else { 0.0 }
}

fn run(engine: &mut Engine, f: &dyn Fn(&Coalition) -> f64, batch: usize) -> Vec<Coalition> {
    let mut seen = Vec::new();
    while !engine.done() {
        let cs = engine.ask(batch);
        if cs.is_empty() {
            break;
        }
        let vals: Vec<f64> = cs.iter().map(f).collect();
        engine.tell(&cs, &vals, 1).unwrap();
        seen.extend(cs);
    }
    seen
}

fn exact(n: usize, f: &dyn Fn(&Coalition) -> f64, sv: Semivalue) -> Vec<f64> {
    let mut e = Engine::new(config(n, Method::Exact, sv, 0, None, None)).unwrap();
    run(&mut e, f, 1 << 12);
    e.result().unwrap().estimate.values
}

/// Brute force from the definition: sum over S not containing i of w(|S|) [v(S+i) - v(S)].
fn brute_shapley(n: usize, f: &dyn Fn(&Coalition) -> f64) -> Vec<f64> {
    let fact = |k: usize| (1..=k).map(|x| x as f64).product::<f64>();
    let mut phi = vec![0.0; n];
    for mask in 0u64..(1 << n) {
        let s = Coalition::from_mask(n, mask);
        for (i, phi_i) in phi.iter_mut().enumerate() {
            if !s.contains(i) {
                let mut with = s.clone();
                with.insert(i);
                let w = fact(s.len()) * fact(n - s.len() - 1) / fact(n);
                *phi_i += w * (f(&with) - f(&s));
            }
        }
    }
    phi
}

#[test]
fn exact_matches_brute_force() {
    let weights = [5.0, 3.0, 3.0, 2.0, 1.0, 1.0, 1.0];
    let f = voting(&weights, 9.0);
    let a = exact(7, &f, Semivalue::Shapley);
    let b = brute_shapley(7, &f);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
    }
    assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn every_estimator_converges_within_its_stderr() {
    let n = 11;
    let weights = [9.0, 7.0, 5.0, 5.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0];
    let f = voting(&weights, 20.0);
    let truth = exact(n, &f, Semivalue::Shapley);
    for method in [
        Method::Permutation,
        Method::Antithetic,
        Method::Stratified,
        Method::Svarm,
        Method::SvarmRegression,
        Method::Kernel,
    ] {
        let mut e = Engine::new(config(n, method, Semivalue::Shapley, 3, Some(1800), None)).unwrap();
        let seen = run(&mut e, &f, 256);
        let r = e.result().unwrap();
        assert!(r.n_evaluations <= 1800 && seen.len() as u64 == r.n_evaluations, "{method:?}");
        let se = r.estimate.stderr();
        let z: Vec<f64> = (0..n).map(|i| (r.estimate.values[i] - truth[i]) / se[i].max(1e-12)).collect();
        assert!(z.iter().all(|z| z.abs() < 5.0), "{method:?}: z = {z:?}");
        // the errors are real estimates, not all zero
        assert!(se.iter().all(|s| s.is_finite() && *s > 0.0), "{method:?}: {se:?}");
    }
}

#[test]
fn banzhaf_msr_converges() {
    let n = 10;
    let weights = [6.0, 5.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0];
    let f = voting(&weights, 14.0);
    let truth = exact(n, &f, Semivalue::Banzhaf);
    let mut e = Engine::new(config(n, Method::Msr, Semivalue::Banzhaf, 1, Some(900), None)).unwrap();
    run(&mut e, &f, 100);
    let r = e.result().unwrap();
    let se = r.estimate.stderr();
    for i in 0..n {
        assert!((r.estimate.values[i] - truth[i]).abs() < 5.0 * se[i], "player {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The budget is never exceeded, no coalition is handed out twice, and the count is exact.
    #[test]
    fn budget_and_cache(method_ix in 0usize..6, n in 2usize..9, budget in 20u64..400, batch in 1usize..64, seed in 0u64..1000) {
        let method = [Method::Permutation, Method::Antithetic, Method::Svarm, Method::Kernel, Method::Stratified, Method::SvarmRegression][method_ix];
        let weights: Vec<f64> = (0..n).map(|i| (i % 3 + 1) as f64).collect();
        let quota = weights.iter().sum::<f64>() / 2.0;
        let f = voting(&weights, quota);
        let Ok(mut e) = Engine::new(config(n, method, Semivalue::Shapley, seed, Some(budget), None)) else {
            return Ok(()); // budget below the method's minimum: an error, tested elsewhere
        };
        let seen = run(&mut e, &f, batch);
        let distinct: HashSet<_> = seen.iter().cloned().collect();
        prop_assert_eq!(distinct.len(), seen.len());
        prop_assert!(seen.len() as u64 <= budget);
        prop_assert_eq!(e.n_evaluations(), seen.len() as u64);
        prop_assert!(e.done());
    }

    /// Results do not depend on the batch size when the run stops on a budget.
    #[test]
    fn batch_size_does_not_change_results(method_ix in 0usize..6, b1 in 1usize..50, b2 in 50usize..500, seed in 0u64..100) {
        let method = [Method::Permutation, Method::Antithetic, Method::Svarm, Method::Kernel, Method::Stratified, Method::SvarmRegression][method_ix];
        let n = 9;
        let weights = [4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0];
        let f = voting(&weights, 9.0);
        let go = |batch| {
            let mut e = Engine::new(config(n, method, Semivalue::Shapley, seed, Some(450), None)).unwrap();
            run(&mut e, &f, batch);
            e.result().unwrap()
        };
        let (a, b) = (go(b1), go(b2));
        prop_assert_eq!(a.n_evaluations, b.n_evaluations);
        prop_assert_eq!(a.estimate.values, b.estimate.values);
    }
}

#[test]
fn tol_stops_at_the_target() {
    let n = 16;
    let weights = [6.0, 5.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 4.0, 2.0, 2.0, 1.0, 1.0, 1.0];
    let f = voting(&weights, 20.0);
    let mut evals = Vec::new();
    for tol in [0.02, 0.01] {
        let mut e = Engine::new(config(n, Method::Permutation, Semivalue::Shapley, 0, None, Some(tol))).unwrap();
        run(&mut e, &f, 64);
        let r = e.result().unwrap();
        assert!(r.estimate.max_stderr() <= tol);
        assert_eq!(r.stop.name(), "tol");
        evals.push(r.n_evaluations);
    }
    assert!(evals[1] > evals[0], "{evals:?}");
}

#[test]
fn a_fully_cached_game_reports_exact_values() {
    let n = 6;
    let weights = [4.0, 3.0, 2.0, 2.0, 1.0, 1.0];
    let f = voting(&weights, 7.0);
    let truth = exact(n, &f, Semivalue::Shapley);
    let mut e = Engine::new(config(n, Method::Svarm, Semivalue::Shapley, 0, Some(10_000), None)).unwrap();
    let seen = run(&mut e, &f, 16);
    let r = e.result().unwrap();
    assert_eq!(seen.len(), 64);
    assert_eq!(r.stop.name(), "complete");
    assert!(r.estimate.variance.iter().all(|&v| v == 0.0));
    for (a, b) in r.estimate.values.iter().zip(&truth) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn telling_an_unasked_coalition_is_refused_and_changes_nothing() {
    let mut e = Engine::new(config(4, Method::Permutation, Semivalue::Shapley, 0, Some(40), None)).unwrap();
    let cs = e.ask(3);
    let stranger = Coalition::from_members(4, &[0, 1, 2, 3]);
    let bad = e.tell(&[stranger], &[1.0], 1);
    assert!(matches!(bad, Err(Error::NotAsked(_))));
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::Protocol);
    let nan = e.tell(&cs, &vec![f64::NAN; cs.len()], 1);
    assert!(matches!(nan, Err(Error::NotFinite { row: 0, .. })));
    assert_eq!(nan.unwrap_err().kind(), ErrorKind::Utility);
    // the good batch is still accepted after both refusals
    e.tell(&cs, &vec![0.5; cs.len()], 1).unwrap();
}

fn random_margins(n: usize, m: usize, seed: u64, integer: bool) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n * m)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            if integer {
                (u * 5.0).floor() - 2.0
            } else {
                u - 0.45
            }
        })
        .collect()
}

#[test]
fn margin_game_chain_and_direct_agree() {
    for kind in [MarginKind::Accuracy, MarginKind::LogSigmoid, MarginKind::Mean] {
        for integer in [false, true] {
            let (n, m) = (7, 1300); // m not a multiple of the tile
            let g = MarginGame::new(random_margins(n, m, 5, integer), n, m, kind).unwrap();
            let order: Vec<u32> = vec![3, 1, 6, 0, 2, 5, 4];
            let mut chain = vec![0.0; n + 1];
            g.eval_chain(&order, &mut chain);
            let mut c = Coalition::empty(n);
            for j in 0..=n {
                let mut direct = [0.0];
                g.eval(&c, &mut direct);
                assert!((direct[0] - chain[j]).abs() < 1e-12, "{kind:?} step {j}: {} vs {}", direct[0], chain[j]);
                if j < n {
                    c.insert(order[j] as usize);
                }
            }
        }
    }
}

#[test]
fn gray_code_exact_matches_engine_exact() {
    let (n, m) = (9, 300);
    for kind in [MarginKind::Accuracy, MarginKind::LogSigmoid] {
        let g = MarginGame::new(random_margins(n, m, 11, true), n, m, kind).unwrap();
        for sv in [Semivalue::Shapley, Semivalue::Banzhaf] {
            let gray = exact_native(&g, sv).unwrap();
            let f = |c: &Coalition| {
                let mut v = [0.0];
                g.eval(c, &mut v);
                v[0]
            };
            let plain = exact(n, &f, sv);
            for (a, b) in gray.iter().zip(&plain) {
                assert!((a - b).abs() < 1e-10, "{kind:?} {sv:?}: {gray:?} vs {plain:?}");
            }
        }
    }
}

#[test]
fn native_run_equals_callback_run() {
    let (n, m) = (12, 200);
    let g = MarginGame::new(random_margins(n, m, 2, false), n, m, MarginKind::Accuracy).unwrap();
    for method in [Method::Permutation, Method::Antithetic, Method::Svarm, Method::Kernel] {
        let mut native = Engine::new(config(n, method, Semivalue::Shapley, 9, Some(1500), None)).unwrap();
        run_native(&mut native, &g, None, 500).unwrap();
        let mut plain = Engine::new(config(n, method, Semivalue::Shapley, 9, Some(1500), None)).unwrap();
        let f = |c: &Coalition| {
            let mut v = [0.0];
            g.eval(c, &mut v);
            v[0]
        };
        run(&mut plain, &f, 77);
        let (a, b) = (native.result().unwrap(), plain.result().unwrap());
        assert_eq!(a.n_evaluations, b.n_evaluations, "{method:?}");
        for (x, y) in a.estimate.values.iter().zip(&b.estimate.values) {
            assert!((x - y).abs() < 1e-12, "{method:?}");
        }
    }
}

#[test]
fn control_variate_cuts_error_on_a_correlated_game() {
    // the log-likelihood game with, as control, the same game on margins measured with
    // noise (a cheaper model, say); and svarm with the additive mean game as control
    let (n, m) = (14, 400);
    let margins = random_margins(n, m, 21, false);
    let noisy: Vec<f64> = margins.iter().zip(random_margins(n, m, 99, false)).map(|(a, b)| a + 0.3 * b).collect();
    let main = MarginGame::new(margins.clone(), n, m, MarginKind::LogSigmoid).unwrap();
    let cheap = MarginGame::new(noisy, n, m, MarginKind::LogSigmoid).unwrap();
    let mean = MarginGame::new(margins, n, m, MarginKind::Mean).unwrap();
    let truth = exact_native(&main, Semivalue::Shapley).unwrap();
    let cases: [(Method, &MarginGame, Vec<f64>); 2] = [
        (Method::Permutation, &cheap, exact_native(&cheap, Semivalue::Shapley).unwrap()),
        (Method::Svarm, &mean, mean.additive_values().unwrap()),
    ];
    for (method, control, psi) in cases {
        let (mut plain_mse, mut cv_mse) = (0.0, 0.0);
        for seed in 0..12 {
            for (use_cv, mse) in [(false, &mut plain_mse), (true, &mut cv_mse)] {
                let mut cfg = config(n, method, Semivalue::Shapley, seed, Some(1200), None);
                if use_cv {
                    cfg.control_exact = Some(psi.clone());
                }
                let mut e = Engine::new(cfg).unwrap();
                run_native(&mut e, &main, if use_cv { Some(control as &dyn Game) } else { None }, 300).unwrap();
                let v = e.result().unwrap().estimate.values;
                *mse += v.iter().zip(&truth).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
            }
        }
        eprintln!("{method:?}: control variate MSE ratio {:.3}", cv_mse / plain_mse);
        assert!(cv_mse < 0.5 * plain_mse, "{method:?}: cv {cv_mse} vs plain {plain_mse}");
    }
}
