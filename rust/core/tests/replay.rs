//! Replaying a run (`max_units`) and reweighted margin games: the two pieces the bootstrap over
//! evaluation items is made of.

use dposhap_core::coalition::Coalition;
use dposhap_core::games::{exact_native, run_native, Game, MarginGame, MarginKind};
use dposhap_core::{Engine, EngineConfig, Error, Method, MethodChoice, Semivalue};
use std::collections::HashSet;

fn margins(n: usize, m: usize, seed: u64) -> Vec<f64> {
    // a deterministic, irregular matrix (no ties in the sums)
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n * m)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) - 0.4 + 0.01 * (i % n) as f64
        })
        .collect()
}

fn config(
    n: usize,
    method: MethodChoice,
    budget: Option<u64>,
    tol: Option<f64>,
    max_units: Option<u64>,
) -> EngineConfig {
    EngineConfig {
        n,
        method,
        semivalue: Semivalue::Shapley,
        seed: 7,
        budget,
        tol,
        pilot: None,
        control_exact: None,
        max_units,
    }
}

/// Drive `engine` on `game` through ask/tell in small batches; the coalitions asked, in order.
fn drive(engine: &mut Engine, game: &MarginGame) -> Vec<Coalition> {
    let mut seen = Vec::new();
    while !engine.done() {
        let cs = engine.ask(37);
        if cs.is_empty() {
            break;
        }
        let k = game.n_outputs();
        let mut vals = vec![0.0; cs.len() * k];
        for (c, out) in cs.iter().zip(vals.chunks_mut(k)) {
            game.eval(c, out);
        }
        engine.tell(&cs, &vals, k).unwrap();
        seen.extend(cs);
    }
    seen
}

#[test]
fn max_units_replays_the_absorbed_coalitions_of_a_run_stopped_by_tol() {
    let (n, m) = (9, 60);
    let game = MarginGame::new(margins(n, m, 3), n, m, MarginKind::Accuracy).unwrap();
    for method in [
        Method::Permutation,
        Method::Antithetic,
        Method::Svarm,
        Method::SvarmRegression,
        Method::Kernel,
        Method::Stratified,
    ] {
        let budget = Some(400);
        let mut first = Engine::new(config(n, method.into(), budget, Some(0.02), None)).unwrap();
        drive(&mut first, &game);
        let done = first.result().unwrap();
        let mut replay = Engine::new(config(n, method.into(), budget, None, Some(done.n_units))).unwrap();
        let asked: HashSet<Coalition> = drive(&mut replay, &game).into_iter().collect();
        let again = replay.result().unwrap();
        assert_eq!(again.n_units, done.n_units, "{method:?}");
        assert!(asked.len() as u64 <= done.n_evaluations, "{method:?}: replay asked new coalitions");
        assert_eq!(again.estimate.values, done.estimate.values, "{method:?}: replay changed the values");
    }
}

#[test]
fn max_units_alone_is_a_stopping_rule() {
    let n = 6;
    let game = MarginGame::new(margins(n, 20, 1), n, 20, MarginKind::LogSigmoid).unwrap();
    let mut e = Engine::new(config(n, Method::Permutation.into(), None, None, Some(5))).unwrap();
    let asked = drive(&mut e, &game);
    assert_eq!(e.result().unwrap().n_units, 5);
    assert!(asked.len() <= 5 * n + 1);
    assert!(matches!(
        Engine::new(config(n, Method::Permutation.into(), None, None, None)),
        Err(Error::NoStoppingRule(_))
    ));
}

#[test]
fn reweighted_game_is_the_game_on_the_weighted_pairs() {
    let (n, m) = (5, 12);
    let data = margins(n, m, 9);
    for kind in [MarginKind::Accuracy, MarginKind::LogSigmoid, MarginKind::Mean] {
        let game = MarginGame::new(data.clone(), n, m, kind).unwrap();
        // row 0: every pair once (the game itself); row 1: pairs 0 and 2 only, pair 2 twice
        let mut w = vec![1.0; m];
        let mut sub = vec![0.0; m];
        sub[0] = 1.0;
        sub[2] = 2.0;
        w.extend(&sub);
        let rw = game.reweighted(&w).unwrap();
        assert_eq!(rw.n_outputs(), 2);
        let picked: Vec<f64> = (0..n).flat_map(|i| [data[i * m], data[i * m + 2], data[i * m + 2]]).collect();
        let small = MarginGame::new(picked, n, 3, kind).unwrap();
        for mask in 0u64..(1 << n) {
            let c = Coalition::from_mask(n, mask);
            let (mut a, mut b, mut out) = ([0.0], [0.0], [0.0, 0.0]);
            game.eval(&c, &mut a);
            small.eval(&c, &mut b);
            rw.eval(&c, &mut out);
            assert!((out[0] - a[0]).abs() < 1e-12 && (out[1] - b[0]).abs() < 1e-12, "{kind:?} {mask}");
        }
        // the native paths agree with coalition-by-coalition evaluation
        let phi = exact_native(&rw, Semivalue::Shapley).unwrap();
        let phi0 = exact_native(&game, Semivalue::Shapley).unwrap();
        for i in 0..n {
            assert!((phi[i * 2] - phi0[i]).abs() < 1e-12);
        }
        let mut e = Engine::new(config(n, Method::Antithetic.into(), Some(200), None, None)).unwrap();
        run_native(&mut e, &rw, None, 64).unwrap();
        let mut e0 = Engine::new(config(n, Method::Antithetic.into(), Some(200), None, None)).unwrap();
        run_native(&mut e0, &game, None, 64).unwrap();
        let (r, r0) = (e.result().unwrap().estimate, e0.result().unwrap().estimate);
        for i in 0..n {
            assert!((r.values[i * 2] - r0.values[i]).abs() < 1e-12);
        }
    }
    let game = MarginGame::new(data, n, m, MarginKind::Accuracy).unwrap();
    assert!(matches!(game.reweighted(&[1.0; 5]), Err(Error::WeightCount { .. })));
    assert!(matches!(game.reweighted(&[0.0; 12]), Err(Error::ZeroWeights { row: 0 })));
    let mut bad = vec![1.0; 12];
    bad[3] = -1.0;
    assert!(matches!(game.reweighted(&bad), Err(Error::BadWeight { row: 0, pair: 3, .. })));
}
