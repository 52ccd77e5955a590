//! `cargo bench -p dposhap-core`: the n = 1000 margin game of bench/shapley, without Python.
use dposhap_core::{run_native, Engine, EngineConfig, MarginGame, MarginKind, Method, Semivalue};
use std::time::Instant;

fn main() {
    let (n, m, perms) = (1000usize, 10_000usize, 100u64);
    let mut state = 12345u64;
    let margins: Vec<f64> = (0..n * m)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.49
        })
        .collect();
    let game = MarginGame::new(margins, n, m, MarginKind::Accuracy).unwrap();
    for _ in 0..3 {
        let cfg = EngineConfig {
            n,
            method: Method::Permutation.into(),
            semivalue: Semivalue::Shapley,
            seed: 0,
            budget: Some(perms * (n as u64 - 1) + 2),
            tol: None,
            pilot: None,
            control_exact: None,
            max_units: None,
        };
        let mut engine = Engine::new(cfg).unwrap();
        let t = Instant::now();
        run_native(&mut engine, &game, None, 64 * 2 * (n + 1)).unwrap();
        println!(
            "n={n} m={m} {perms} permutations: {:.3} s, {} evaluations",
            t.elapsed().as_secs_f64(),
            engine.n_evaluations()
        );
    }
}
