//! Python bindings of `dposhap-core`, imported as `dposhap._core`. Thin on purpose: argument
//! conversion, GIL release, and the mapping of core errors onto `dposhap.errors`.

mod error;

use dposhap_core::{
    engine::StopReason, exact_native, run_native, Coalition, Engine, EngineConfig, Game, MarginGame, MarginKind,
    MethodChoice, ResultSnapshot, Semivalue, WeightProblem,
};
use error::{to_py, InvalidArgumentError, ProtocolError, UtilityError};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rayon::prelude::*;

fn rows_to_coalitions(arr: &PyReadonlyArray2<'_, bool>, n: usize) -> PyResult<Vec<Coalition>> {
    let shape = arr.shape();
    if shape[1] != n {
        return Err(ProtocolError::new_err(format!("coalitions have {} columns, expected n_players = {n}", shape[1])));
    }
    let view = arr.as_array();
    Ok(view
        .rows()
        .into_iter()
        .map(|row| match row.as_slice() {
            Some(s) => Coalition::from_bools(s),
            None => Coalition::from_bools(&row.to_vec()),
        })
        .collect())
}

fn coalitions_to_array<'py>(py: Python<'py>, cs: &[Coalition], n: usize) -> Bound<'py, PyArray2<bool>> {
    let arr = PyArray2::<bool>::zeros(py, [cs.len(), n], false);
    {
        let mut rw = arr.readwrite();
        let out = rw.as_slice_mut().expect("fresh arrays are contiguous");
        for (c, row) in cs.iter().zip(out.chunks_mut(n.max(1))) {
            for p in c.members() {
                row[p] = true;
            }
        }
    }
    arr
}

fn matrix<'py>(py: Python<'py>, data: Vec<f64>, rows: usize, cols: usize) -> PyResult<Bound<'py, PyArray2<f64>>> {
    PyArray1::from_vec(py, data).reshape([rows, cols])
}

/// The ask/tell estimation engine (see `dposhap.ShapleyEstimator` for the documented API).
#[pyclass(name = "Engine", module = "dposhap._core")]
struct PyEngine {
    inner: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (n_players, method="auto", semivalue="shapley", seed=0, budget=None, tol=None, pilot=None, control_exact=None, max_units=None))]
    #[allow(clippy::too_many_arguments, reason = "mirrors the Python signature: one keyword per engine setting")]
    fn new(
        n_players: i64,
        method: &str,
        semivalue: &str,
        seed: u64,
        budget: Option<i64>,
        tol: Option<f64>,
        pilot: Option<u32>,
        control_exact: Option<PyReadonlyArray2<'_, f64>>,
        max_units: Option<u64>,
    ) -> PyResult<Self> {
        if n_players < 1 {
            return Err(InvalidArgumentError::new_err(format!("n_players must be at least 1, got {n_players}")));
        }
        let budget = match budget {
            Some(b) if b < 0 => {
                return Err(InvalidArgumentError::new_err(format!(
                    "budget must be a positive number of evaluations, got {b}"
                )))
            }
            Some(b) => Some(b as u64),
            None => None,
        };
        let control_exact = match control_exact {
            Some(a) => {
                if a.shape()[0] != n_players as usize {
                    return Err(InvalidArgumentError::new_err(format!(
                            "the control game values {} players but the estimator has {n_players}: the control must be a game on the same sources",
                            a.shape()[0]
                    )));
                }
                Some(a.as_array().iter().copied().collect())
            }
            None => None,
        };
        let semivalue = Semivalue::parse(semivalue).map_err(to_py)?;
        let method = MethodChoice::parse(method, semivalue).map_err(to_py)?;
        let cfg = EngineConfig {
            n: n_players as usize,
            method,
            semivalue,
            seed,
            budget,
            tol,
            pilot,
            control_exact,
            max_units,
        };
        Ok(PyEngine { inner: Engine::new(cfg).map_err(to_py)? })
    }

    /// Up to `max_batch` distinct coalitions to evaluate, as a bool array `[b, n]`.
    fn ask<'py>(&mut self, py: Python<'py>, max_batch: usize) -> Bound<'py, PyArray2<bool>> {
        let n = self.inner.n_players();
        let cs = py.detach(|| self.inner.ask(max_batch));
        coalitions_to_array(py, &cs, n)
    }

    /// Hand back utilities: `values` is `[b, k + control_width]`, `k` objectives first.
    fn tell(
        &mut self,
        py: Python<'_>,
        coalitions: PyReadonlyArray2<'_, bool>,
        values: PyReadonlyArray2<'_, f64>,
        k: usize,
    ) -> PyResult<()> {
        let n = self.inner.n_players();
        let cs = rows_to_coalitions(&coalitions, n)?;
        let vals: Vec<f64> = match values.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => values.as_array().iter().copied().collect(),
        };
        if values.shape()[0] != cs.len() {
            return Err(UtilityError::new_err(format!(
                "{} utility rows for {} coalitions",
                values.shape()[0],
                cs.len()
            )));
        }
        py.detach(|| self.inner.tell(&cs, &vals, k)).map_err(to_py)
    }

    /// Run to completion on a native game without calling back into Python; returns the
    /// estimate after each batch as `(n_evaluations, values [n, k])`.
    #[pyo3(signature = (game, control=None, batch=None))]
    fn run_native<'py>(
        &mut self,
        py: Python<'py>,
        game: PyRef<'_, PyMarginGame>,
        control: Option<PyRef<'_, PyMarginGame>>,
        batch: Option<usize>,
    ) -> PyResult<Vec<(u64, Bound<'py, PyArray2<f64>>)>> {
        let n = self.inner.n_players();
        let batch = batch.unwrap_or_else(|| (64 * rayon::current_num_threads().max(1) * (n + 1)).max(4096));
        let g = &game.inner;
        let c = control.as_ref().map(|c| &c.inner);
        let engine = &mut self.inner;
        let history = py.detach(|| run_native(engine, g, c.map(|x| x as &dyn Game), batch)).map_err(to_py)?;
        history
            .into_iter()
            .map(|(evals, values)| {
                let k = values.len() / n.max(1);
                Ok((evals, matrix(py, values, n, k)?))
            })
            .collect()
    }

    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }

    #[getter]
    fn n_evaluations(&self) -> u64 {
        self.inner.n_evaluations()
    }

    #[getter]
    fn n_outstanding(&self) -> usize {
        self.inner.n_outstanding()
    }

    #[getter]
    fn n_players(&self) -> usize {
        self.inner.n_players()
    }

    #[getter]
    fn method(&self) -> &'static str {
        self.inner.method().name()
    }

    #[getter]
    fn control_width(&self) -> usize {
        self.inner.control_width()
    }

    /// The current estimate as a dict, or None before any utility was absorbed.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner.result().map(|snap| snapshot_dict(py, &snap)).transpose()
    }

    /// A cheaper estimate for progress reports (may reuse earlier cross-validation).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner.snapshot().map(|snap| snapshot_dict(py, &snap)).transpose()
    }
}

fn snapshot_dict<'py>(py: Python<'py>, snap: &ResultSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let est = &snap.estimate;
    let d = PyDict::new(py);
    d.set_item("values", matrix(py, est.values.clone(), est.n, est.k)?)?;
    d.set_item("stderr", matrix(py, est.stderr(), est.n, est.k)?)?;
    d.set_item("control_coef", matrix(py, est.control_coef.clone(), est.n, est.k)?)?;
    d.set_item("n_evaluations", snap.n_evaluations)?;
    d.set_item("n_units", snap.n_units)?;
    d.set_item("method", snap.method.name())?;
    d.set_item("stop", snap.stop.name())?;
    d.set_item("done", snap.stop != StopReason::Running)?;
    Ok(d)
}

/// Native margin game `v(S) = mean_j f(sum_{i in S} margins[i, j])`.
#[pyclass(name = "MarginGame", module = "dposhap._core", frozen, subclass)]
struct PyMarginGame {
    inner: MarginGame,
}

#[pymethods]
impl PyMarginGame {
    #[new]
    fn new(margins: PyReadonlyArray2<'_, f64>, kind: &str) -> PyResult<Self> {
        let shape = margins.shape();
        let (n, m) = (shape[0], shape[1]);
        let data: Vec<f64> = margins.as_array().iter().copied().collect();
        let kind = MarginKind::parse(kind).map_err(to_py)?;
        Ok(PyMarginGame { inner: MarginGame::new(data, n, m, kind).map_err(to_py)? })
    }

    #[getter]
    fn n_players(&self) -> usize {
        self.inner.n_players()
    }

    #[getter]
    fn n_pairs(&self) -> usize {
        self.inner.n_pairs()
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().name()
    }

    /// Outputs per coalition: 1, or the rows of the weights of a reweighted game.
    #[getter]
    fn n_outputs(&self) -> usize {
        self.inner.n_outputs()
    }

    /// The game with its pairs reweighted: one output per row of `weights` `[r, n_pairs]`
    /// (non-negative, each row with a positive sum; rows are normalised to sum to one).
    fn reweighted(&self, weights: PyReadonlyArray2<'_, f64>) -> PyResult<Self> {
        let w: Vec<f64> = weights.as_array().iter().copied().collect();
        if weights.shape()[1] != self.inner.n_pairs() {
            return Err(InvalidArgumentError::new_err(format!(
                "weights must be an array [r, {}] (one column per held-out pair), got shape {:?}",
                self.inner.n_pairs(),
                weights.shape()
            )));
        }
        Ok(PyMarginGame { inner: self.inner.reweighted(&w).map_err(to_py)? })
    }

    /// The game with one output per held-out pair (the pair's term), for values per pair.
    fn per_pair(&self) -> Self {
        PyMarginGame { inner: self.inner.per_pair() }
    }

    /// Utilities of a batch of coalitions `[b, n]` (evaluated in parallel, GIL released):
    /// `[b]`, or `[b, n_outputs]` for a reweighted game.
    fn __call__<'py>(&self, py: Python<'py>, coalitions: PyReadonlyArray2<'_, bool>) -> PyResult<Bound<'py, PyAny>> {
        let n = self.inner.n_players();
        let k = self.inner.n_outputs();
        let cs = rows_to_coalitions(&coalitions, n)
            .map_err(|_| InvalidArgumentError::new_err(format!("coalitions must be a bool array [b, {n}]")))?;
        let game = &self.inner;
        let out: Vec<f64> = py.detach(|| {
            cs.par_iter()
                .flat_map_iter(|c| {
                    let mut v = vec![0.0; k];
                    game.eval(c, &mut v);
                    v
                })
                .collect()
        });
        if k == 1 {
            Ok(PyArray1::from_vec(py, out).into_any())
        } else {
            Ok(matrix(py, out, cs.len(), k)?.into_any())
        }
    }

    /// Exact semivalues by Gray-code enumeration of all 2^n coalitions (GIL released):
    /// `[n]`, or `[n, n_outputs]` for a reweighted game.
    #[pyo3(signature = (semivalue="shapley"))]
    fn exact<'py>(&self, py: Python<'py>, semivalue: &str) -> PyResult<Bound<'py, PyAny>> {
        let sv = Semivalue::parse(semivalue).map_err(to_py)?;
        let game = &self.inner;
        let k = game.n_outputs();
        let n = game.n_players();
        let phi = py.detach(|| exact_native(game, sv)).map_err(to_py)?;
        if k == 1 {
            Ok(PyArray1::from_vec(py, phi).into_any())
        } else {
            Ok(matrix(py, phi, n, k)?.into_any())
        }
    }

    /// Closed-form Shapley values when the game is additive (kind "mean"), else None.
    fn additive_values<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        self.inner.additive_values().map(|v| PyArray1::from_vec(py, v))
    }
}

/// Per-source weights in `[0, w_max]` maximising a goal over a margin game (GIL released).
#[pyfunction]
#[pyo3(signature = (margins, kind, avg, coef, start, w_max, constrained, levels, max_iter=500))]
#[allow(clippy::too_many_arguments)]
fn optimise_margin_weights<'py>(
    py: Python<'py>,
    margins: PyReadonlyArray2<'_, f64>,
    kind: &str,
    avg: PyReadonlyArray2<'_, f64>,
    coef: PyReadonlyArray1<'_, f64>,
    start: PyReadonlyArray1<'_, f64>,
    w_max: f64,
    constrained: Vec<usize>,
    levels: Vec<f64>,
    max_iter: usize,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let shape = margins.shape();
    let (n, m) = (shape[0], shape[1]);
    if avg.shape()[1] != m {
        return Err(InvalidArgumentError::new_err(format!(
            "avg has {} columns; the margins have {m} pairs",
            avg.shape()[1]
        )));
    }
    let problem = WeightProblem {
        margins: margins.as_array().iter().copied().collect(),
        n,
        m,
        kind: MarginKind::parse(kind).map_err(to_py)?,
        avg: avg.as_array().iter().copied().collect(),
        coef: coef.as_array().to_vec(),
        constrained,
        levels,
        w_max,
    };
    let start = start.as_array().to_vec();
    let w = py.detach(|| problem.solve(&start, max_iter)).map_err(to_py)?;
    Ok(PyArray1::from_vec(py, w))
}

/// Names of the methods accepted for a semivalue.
#[pyfunction]
fn methods(semivalue: &str) -> PyResult<Vec<&'static str>> {
    let semivalue = Semivalue::parse(semivalue).map_err(to_py)?;
    Ok(semivalue.methods().iter().map(MethodChoice::name).collect())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyMarginGame>()?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(optimise_margin_weights, m)?)?;
    m.add("MAX_EXACT_PLAYERS", dposhap_core::MAX_EXACT_PLAYERS)?;
    // the package's one version: the workspace's, which maturin also gives the wheel
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
