//! `cargo bench -p dposhap-core --bench overhead`: engine cost per evaluation, free utility.
use dposhap_core::{Engine, EngineConfig, Method, Semivalue};
use std::time::Instant;

fn main() {
    for n in [16usize, 128] {
        for method in [Method::Permutation, Method::Antithetic, Method::Svarm, Method::Kernel, Method::SvarmRegression]
        {
            let budget = 60_000u64;
            let cfg = EngineConfig {
                n,
                method: method.into(),
                semivalue: Semivalue::Shapley,
                seed: 0,
                budget: Some(budget),
                tol: None,
                pilot: None,
                control_exact: None,
                max_units: None,
            };
            let mut e = Engine::new(cfg).unwrap();
            let t = Instant::now();
            let mut total = 0usize;
            while !e.done() {
                let cs = e.ask(4096);
                if cs.is_empty() {
                    break;
                }
                total += cs.len();
                let vals = vec![0.0; cs.len()];
                e.tell(&cs, &vals, 1).unwrap();
            }
            let _ = e.result();
            let dt = t.elapsed().as_secs_f64();
            println!("n={n:4} {:12} {:.3} us/eval ({total} evaluations)", method.name(), dt / total as f64 * 1e6);
        }
    }
}
