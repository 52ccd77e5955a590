//! Games evaluated natively, without calling back into Python: the DPO margin games of
//! DESIGN.md §1, evaluated incrementally along permutations and in parallel.

use crate::coalition::Coalition;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::samplers::{exact_weights, Semivalue, Unit, UnitKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// A cooperative game whose value is a function of an additive state: adding a player adds
/// its contribution to the state (O(state) work), so chains of nested coalitions and Gray-code
/// enumeration cost O(state) per coalition.
pub trait Game: Sync {
    fn n_players(&self) -> usize;
    /// Number of objectives the game returns per coalition.
    fn n_outputs(&self) -> usize {
        1
    }
    fn state_len(&self) -> usize;
    /// `state += sign * contribution(player)`.
    fn add(&self, state: &mut [f64], player: usize, sign: f64);
    /// The game's value(s) for a state.
    fn value(&self, state: &[f64], out: &mut [f64]);

    /// Values of one coalition.
    fn eval(&self, c: &Coalition, out: &mut [f64]) {
        let mut state = vec![0.0; self.state_len()];
        for p in c.members() {
            self.add(&mut state, p, 1.0);
        }
        self.value(&state, out);
    }

    /// Values of the prefixes of `order`, `order.len() + 1` rows of `n_outputs` each.
    fn eval_chain(&self, order: &[u32], out: &mut [f64]) {
        let k = self.n_outputs();
        let mut state = vec![0.0; self.state_len()];
        self.value(&state, &mut out[..k]);
        for (j, &p) in order.iter().enumerate() {
            self.add(&mut state, p as usize, 1.0);
            self.value(&state, &mut out[(j + 1) * k..(j + 2) * k]);
        }
    }

    /// Several chains at once; a game may tile them so that its data is read once per group.
    fn eval_chains(&self, orders: &[&[u32]], outs: &mut [Vec<f64>]) {
        for (order, out) in orders.iter().zip(outs.iter_mut()) {
            self.eval_chain(order, out);
        }
    }
}

/// Held-out pairs per tile of the tiled chain evaluation (the sums of a tile stay in L1).
const PAIR_TILE: usize = 512;
/// Chains evaluated together, sharing each tile of margins read from memory.
pub const CHAIN_GROUP: usize = 8;

/// How the summed margins of a coalition become its utility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarginKind {
    /// Preference accuracy: mean of 1[sum > 0], ties count 1/2.
    Accuracy,
    /// Held-out DPO log-likelihood: mean of log sigmoid(sum).
    LogSigmoid,
    /// Mean summed margin (an additive game: its Shapley values are the row means).
    Mean,
}

impl MarginKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "accuracy" => Ok(MarginKind::Accuracy),
            "logsigmoid" => Ok(MarginKind::LogSigmoid),
            "mean" => Ok(MarginKind::Mean),
            other => Err(Error::UnknownMarginKind(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            MarginKind::Accuracy => "accuracy",
            MarginKind::LogSigmoid => "logsigmoid",
            MarginKind::Mean => "mean",
        }
    }

    #[inline]
    pub(crate) fn term(&self, s: f64) -> f64 {
        match self {
            MarginKind::Accuracy => {
                if s > 0.0 {
                    1.0
                } else if s == 0.0 {
                    0.5
                } else {
                    0.0
                }
            }
            // log sigmoid(s) = -softplus(-s), computed without overflow
            MarginKind::LogSigmoid => s.min(0.0) - (-s.abs()).exp().ln_1p(),
            MarginKind::Mean => s,
        }
    }
}

/// `v(S) = mean_j f(sum_{i in S} margins[i, j])` over `m` held-out pairs.
#[derive(Clone, Debug)]
pub struct MarginGame {
    n: usize,
    m: usize,
    margins: Vec<f64>,
    kind: MarginKind,
    /// Pair weights of a reweighted game, row-major `[outputs, m]`, each row summing to one
    /// (None: every pair weighs `1 / m` and the game has one output).
    weights: Option<std::sync::Arc<Vec<f64>>>,
    /// One output per pair (the pair's term), for values per pair.
    per_pair: bool,
}

impl MarginGame {
    /// `margins` is row-major `[n, m]`.
    pub fn new(margins: Vec<f64>, n: usize, m: usize, kind: MarginKind) -> Result<Self> {
        if n < 1 || m < 1 {
            return Err(Error::EmptyMargins { n, m });
        }
        if margins.len() != n * m {
            return Err(Error::MarginCount { len: margins.len(), n, m });
        }
        if let Some(pos) = margins.iter().position(|x| !x.is_finite()) {
            return Err(Error::MarginNotFinite { player: pos / m, pair: pos % m, value: margins[pos] });
        }
        Ok(MarginGame { n, m, margins, kind, weights: None, per_pair: false })
    }

    /// The same game with its pairs reweighted, one output per row of `weights` (row-major
    /// `[outputs, m]`, non-negative, each row with a positive sum):
    /// `v_r(S) = sum_j w_rj f(sum_{i in S} margins[i, j]) / sum_j w_rj`. With the rows of a
    /// bootstrap over pairs (resample counts), the outputs are the game's bootstrap replicates.
    pub fn reweighted(&self, weights: &[f64]) -> Result<Self> {
        let m = self.m;
        if weights.is_empty() || weights.len() % m != 0 {
            return Err(Error::WeightCount { len: weights.len(), m });
        }
        let mut rows = weights.to_vec();
        for (r, row) in rows.chunks_mut(m).enumerate() {
            if let Some(j) = row.iter().position(|w| !w.is_finite() || *w < 0.0) {
                return Err(Error::BadWeight { row: r, pair: j, value: row[j] });
            }
            let total: f64 = row.iter().sum();
            if total <= 0.0 {
                return Err(Error::ZeroWeights { row: r });
            }
            row.iter_mut().for_each(|w| *w /= total);
        }
        Ok(MarginGame { weights: Some(std::sync::Arc::new(rows)), per_pair: false, ..self.clone() })
    }

    /// The same game with one output per held-out pair: `v_j(S) = f(sum_{i in S} margins[i, j])`.
    /// Semivalues are linear in the game, so the values per pair `[n, m]` give the values of any
    /// reweighting of the pairs as one matrix product (how an exact bootstrap stays cheap).
    pub fn per_pair(&self) -> Self {
        MarginGame { weights: None, per_pair: true, ..self.clone() }
    }

    pub fn kind(&self) -> MarginKind {
        self.kind
    }

    pub fn n_pairs(&self) -> usize {
        self.m
    }

    #[inline]
    fn row(&self, i: usize) -> &[f64] {
        &self.margins[i * self.m..(i + 1) * self.m]
    }

    /// Exact Shapley values of the additive `mean` game: the mean margin of each source.
    pub fn additive_values(&self) -> Option<Vec<f64>> {
        (self.kind == MarginKind::Mean)
            .then(|| (0..self.n).map(|i| self.row(i).iter().sum::<f64>() / self.m as f64).collect())
    }

    #[inline]
    fn mean_term(&self, sums: &[f64]) -> f64 {
        let kind = self.kind;
        sums.iter().map(|&s| kind.term(s)).sum::<f64>() / self.m as f64
    }
}

impl Game for MarginGame {
    fn n_players(&self) -> usize {
        self.n
    }

    fn state_len(&self) -> usize {
        self.m
    }

    #[inline]
    fn add(&self, state: &mut [f64], player: usize, sign: f64) {
        for (s, x) in state.iter_mut().zip(self.row(player)) {
            *s += sign * x;
        }
    }

    fn n_outputs(&self) -> usize {
        if self.per_pair {
            return self.m;
        }
        self.weights.as_ref().map_or(1, |w| w.len() / self.m)
    }

    fn value(&self, state: &[f64], out: &mut [f64]) {
        let kind = self.kind;
        if self.per_pair {
            for (o, &s) in out.iter_mut().zip(state) {
                *o = kind.term(s);
            }
            return;
        }
        match &self.weights {
            None => out[0] = self.mean_term(state),
            Some(w) => {
                let terms: Vec<f64> = state.iter().map(|&s| kind.term(s)).collect();
                for (o, row) in out.iter_mut().zip(w.chunks(self.m)) {
                    *o = row.iter().zip(&terms).map(|(a, b)| a * b).sum();
                }
            }
        }
    }

    fn eval_chain(&self, order: &[u32], out: &mut [f64]) {
        if self.weights.is_some() || self.per_pair {
            // the reweighted game: prefix by prefix (the tiled path sums one output per pair)
            let mut state = vec![0.0; self.m];
            let k = self.n_outputs();
            self.value(&state, &mut out[..k]);
            for (j, &p) in order.iter().enumerate() {
                self.add(&mut state, p as usize, 1.0);
                self.value(&state, &mut out[(j + 1) * k..(j + 2) * k]);
            }
            return;
        }
        let mut outs = [out.to_vec()];
        self.eval_chains(&[order], &mut outs);
        out.copy_from_slice(&outs[0]);
    }

    fn eval_chains(&self, orders: &[&[u32]], outs: &mut [Vec<f64>]) {
        if self.weights.is_some() || self.per_pair {
            for (order, out) in orders.iter().zip(outs.iter_mut()) {
                self.eval_chain(order, out);
            }
            return;
        }
        // tile the pairs: each tile of every source's margins is read from memory once and
        // used by all chains of the group while it sits in cache
        let mut sums = vec![0.0; PAIR_TILE];
        for out in outs.iter_mut() {
            out.iter_mut().for_each(|x| *x = 0.0);
        }
        let mut lo = 0;
        while lo < self.m {
            let hi = (lo + PAIR_TILE).min(self.m);
            for (order, out) in orders.iter().zip(outs.iter_mut()) {
                self.chain_tile(order, lo, hi, &mut sums, out);
            }
            lo = hi;
        }
        let m = self.m as f64;
        for out in outs.iter_mut() {
            out.iter_mut().for_each(|x| *x /= m);
        }
    }
}

impl MarginGame {
    /// Scores of one tile of pairs for every prefix of `order`: `out[step] += sum_j f(sums_j)`.
    #[inline]
    fn chain_tile(&self, order: &[u32], lo: usize, hi: usize, sums: &mut [f64], out: &mut [f64]) {
        let sums = &mut sums[..hi - lo];
        sums.iter_mut().for_each(|x| *x = 0.0);
        out[0] += (hi - lo) as f64 * self.kind.term(0.0);
        for (step, &p) in order.iter().enumerate() {
            let row = &self.row(p as usize)[lo..hi];
            out[step + 1] += match self.kind {
                MarginKind::Accuracy => {
                    // branch-free counts vectorise; ties count one half
                    let (mut wins, mut ties) = (0u64, 0u64);
                    for (s, x) in sums.iter_mut().zip(row) {
                        *s += x;
                        wins += (*s > 0.0) as u64;
                        ties += (*s == 0.0) as u64;
                    }
                    wins as f64 + 0.5 * ties as f64
                }
                kind => {
                    let mut acc = 0.0;
                    for (s, x) in sums.iter_mut().zip(row) {
                        *s += x;
                        acc += kind.term(*s);
                    }
                    acc
                }
            };
        }
    }
}

/// Values of every coalition of every unit (`coalitions x n_outputs` per unit), in parallel:
/// chains in tiled groups, other units coalition by coalition.
fn eval_units(game: &dyn Game, units: &[Unit]) -> Vec<Vec<f64>> {
    let k = game.n_outputs();
    let mut vals: Vec<Vec<f64>> = units.iter().map(|u| vec![0.0; u.coalitions.len() * k]).collect();
    // (unit, row offset of the chain inside the unit, order)
    let mut chains: Vec<(usize, usize, Vec<u32>)> = Vec::new();
    let mut direct: Vec<usize> = Vec::new();
    for (ui, u) in units.iter().enumerate() {
        match &u.kind {
            UnitKind::Chain(order) => chains.push((ui, 0, order.clone())),
            UnitKind::Antithetic(order) => {
                chains.push((ui, 0, order.clone()));
                chains.push((ui, order.len() + 1, order.iter().rev().copied().collect()));
            }
            _ => direct.push(ui),
        }
    }
    let chain_vals: Vec<Vec<Vec<f64>>> = chains
        .par_chunks(CHAIN_GROUP)
        .map(|group| {
            let orders: Vec<&[u32]> = group.iter().map(|(_, _, o)| o.as_slice()).collect();
            let mut outs: Vec<Vec<f64>> = group.iter().map(|(_, _, o)| vec![0.0; (o.len() + 1) * k]).collect();
            game.eval_chains(&orders, &mut outs);
            outs
        })
        .collect();
    for ((ui, offset, _), out) in chains.iter().zip(chain_vals.into_iter().flatten()) {
        vals[*ui][offset * k..offset * k + out.len()].copy_from_slice(&out);
    }
    let direct_vals: Vec<Vec<f64>> = direct
        .par_iter()
        .map(|&ui| {
            let u = &units[ui];
            let mut out = vec![0.0; u.coalitions.len() * k];
            for (c, o) in u.coalitions.iter().zip(out.chunks_mut(k)) {
                game.eval(c, o);
            }
            out
        })
        .collect();
    for (&ui, out) in direct.iter().zip(direct_vals) {
        vals[ui] = out;
    }
    vals
}

/// Estimates after each batch: `(n_evaluations, values [n, k])`.
pub type History = Vec<(u64, Vec<f64>)>;

/// Run `engine` to completion on a native `game` (and optional native `control` game),
/// evaluating whole units in parallel. Never calls into Python. Returns the estimate after
/// each batch.
pub fn run_native(engine: &mut Engine, game: &dyn Game, control: Option<&dyn Game>, batch: usize) -> Result<History> {
    let n = engine.n_players();
    if game.n_players() != n {
        return Err(Error::GamePlayers { game: game.n_players(), estimator: n });
    }
    if let Some(c) = control {
        if c.n_players() != n {
            return Err(Error::ControlPlayers { control: c.n_players(), game: n });
        }
    }
    let k = game.n_outputs();
    let kc = control.map_or(0, |c| c.n_outputs());
    if kc != engine.control_width() {
        return Err(Error::ControlWidth { got: kc, expected: engine.control_width() });
    }
    let width = k + kc;
    let mut history = History::new();
    while !engine.done() {
        let asked = engine.ask(batch);
        if asked.is_empty() {
            if engine.done() {
                break;
            }
            return Err(Error::Stalled);
        }
        let index: FxHashMap<&Coalition, usize> = asked.iter().enumerate().map(|(r, c)| (c, r)).collect();
        let units: Vec<Unit> =
            engine.pending_units().filter(|u| u.coalitions.iter().any(|c| index.contains_key(c))).cloned().collect();
        let main_vals = eval_units(game, &units);
        let control_vals: Vec<Option<Vec<f64>>> = match control {
            Some(g) => eval_units(g, &units).into_iter().map(Some).collect(),
            None => vec![None; units.len()],
        };
        let mut values = vec![f64::NAN; asked.len() * width];
        for (u, (v, g)) in units.iter().zip(main_vals.iter().zip(&control_vals)) {
            for (idx, c) in u.coalitions.iter().enumerate() {
                if let Some(&r) = index.get(c) {
                    values[r * width..r * width + k].copy_from_slice(&v[idx * k..(idx + 1) * k]);
                    if let Some(g) = g {
                        values[r * width + k..(r + 1) * width].copy_from_slice(&g[idx * kc..(idx + 1) * kc]);
                    }
                }
            }
        }
        engine.tell(&asked, &values, k)?;
        if let Some(r) = engine.snapshot() {
            history.push((r.n_evaluations, r.estimate.values));
        }
    }
    Ok(history)
}

/// Gray-code steps between two rebuilds of the running state from scratch.
const RESYNC_EVERY: u64 = 1024;

/// Exact semivalues of a native game by enumerating all 2^n coalitions in Gray-code order:
/// consecutive coalitions differ by one player, so each costs one `add` and one `value`.
/// Returns row-major `[n, n_outputs]`.
pub fn exact_native(game: &dyn Game, semivalue: Semivalue) -> Result<Vec<f64>> {
    let n = game.n_players();
    if n > crate::MAX_EXACT_PLAYERS {
        return Err(Error::TooManyForExact { n, max: crate::MAX_EXACT_PLAYERS });
    }
    let k = game.n_outputs();
    let (with, without) = exact_weights(n, semivalue);
    let total: u64 = 1 << n;
    // a fixed chunking (not tied to the thread count) keeps the sums reproducible
    let chunks: u64 = total.min(256);
    let per = total / chunks;
    let partials: Vec<Vec<f64>> = (0..chunks)
        .into_par_iter()
        .map(|ci| {
            let mut phi = vec![0.0; n * k];
            let mut common = vec![0.0; k];
            let mut state = vec![0.0; game.state_len()];
            let mut val = vec![0.0; k];
            let start = ci * per;
            let mut mask = start ^ (start >> 1);
            for p in 0..n {
                if (mask >> p) & 1 == 1 {
                    game.add(&mut state, p, 1.0);
                }
            }
            for t in start..start + per {
                if t > start {
                    let flip = t.trailing_zeros() as usize;
                    let adding = (mask >> flip) & 1 == 0;
                    mask ^= 1 << flip;
                    if (t - start) % RESYNC_EVERY == 0 {
                        // rebuild the state now and then so rounding cannot drift
                        state.iter_mut().for_each(|x| *x = 0.0);
                        for p in 0..n {
                            if (mask >> p) & 1 == 1 {
                                game.add(&mut state, p, 1.0);
                            }
                        }
                    } else {
                        game.add(&mut state, flip, if adding { 1.0 } else { -1.0 });
                    }
                }
                game.value(&state, &mut val);
                let s = mask.count_ones() as usize;
                // member i: + with[s] v; non-member: - without[s] v, written as a common term
                let both = with[s] + without[s];
                let mut bits = mask;
                while bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    for j in 0..k {
                        phi[i * k + j] += both * val[j];
                    }
                }
                for j in 0..k {
                    common[j] += without[s] * val[j];
                }
            }
            for i in 0..n {
                for j in 0..k {
                    phi[i * k + j] -= common[j];
                }
            }
            phi
        })
        .collect();
    let mut phi = vec![0.0; n * k];
    for p in partials {
        for (a, b) in phi.iter_mut().zip(p) {
            *a += b;
        }
    }
    Ok(phi)
}
