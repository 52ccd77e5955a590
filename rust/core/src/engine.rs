//! The ask/tell driver shared by every estimator.

use crate::coalition::Coalition;
use crate::error::Column;
use crate::error::{Error, Result};
use crate::estimate::Estimate;
use crate::moments::Dims;
use crate::rng::Rng;
use crate::samplers::{make_sampler, Method, MethodChoice, Plan, Sampler, SamplerOptions, Semivalue, Unit};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Consecutive units planned without a single new coalition after which a sampler is taken to
/// have exhausted what the game can tell it (small games whose coalitions are all cached).
const FREE_UNIT_LIMIT: u64 = 20_000;
/// Players up to which a run whose cache holds all 2^n coalitions reports exact values.
const MAX_CACHE_EXACT_PLAYERS: usize = 20;
/// Units that must be absorbed before `tol` may stop a run.
const MIN_UNITS_FOR_TOL: u64 = 8;

/// Settings of one estimation run.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub n: usize,
    pub method: MethodChoice,
    pub semivalue: Semivalue,
    pub seed: u64,
    pub budget: Option<u64>,
    pub tol: Option<f64>,
    /// Pilot samples per stratum of the stratified estimator (None: chosen from the budget).
    pub pilot: Option<u32>,
    /// Exact values of the control game, row-major `[n, kc]`.
    pub control_exact: Option<Vec<f64>>,
    /// Stop planning after this many units (a stopping rule of its own). With the seed, method
    /// and budget of an earlier run and its `n_units`, the run replays exactly the coalitions
    /// that run absorbed, for samplers whose plan does not depend on the utilities: how
    /// bootstrap replicates of a valuation are computed without new coalitions.
    pub max_units: Option<u64>,
}

/// Where a coalition stands in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// planned, waiting to be handed out
    Queued,
    /// handed out, utility not yet told
    Sent,
    /// being told (only inside `tell`)
    Telling,
    /// utility known, in row `0` of the store
    Known(u32),
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Running,
    Budget,
    Tolerance,
    Complete,
}

impl StopReason {
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Running => "running",
            StopReason::Budget => "budget",
            StopReason::Tolerance => "tol",
            StopReason::Complete => "complete",
        }
    }
}

/// The estimate and the bookkeeping of a run at one moment.
#[derive(Clone, Debug)]
pub struct ResultSnapshot {
    pub estimate: Estimate,
    pub n_evaluations: u64,
    pub n_units: u64,
    pub method: Method,
    pub stop: StopReason,
}

/// Hands out batches of distinct, not yet evaluated coalitions and takes their utilities back.
pub struct Engine {
    n: usize,
    method: Method,
    semivalue: Semivalue,
    sampler: Box<dyn Sampler>,
    rng: Rng,
    budget: Option<u64>,
    tol: Option<f64>,
    control_exact: Option<Vec<f64>>,
    max_units: Option<u64>,
    /// units planned so far (those that fit in the budget)
    n_planned: u64,
    dims: Option<Dims>,
    /// every coalition planned, handed out or evaluated in this run (the utility cache)
    slots: FxHashMap<Coalition, Slot>,
    n_known: usize,
    /// coalitions planned or handed out whose utility is not known yet
    n_pending: usize,
    store: Vec<f64>,
    free_rows: Vec<u32>,
    to_send: VecDeque<Coalition>,
    queue: VecDeque<Unit>,
    n_sent: u64,
    n_units: u64,
    free_streak: u64,
    exhausted: bool,
    budget_hit: bool,
    converged: bool,
    /// every coalition's utility is in the cache: the values are known exactly
    all_known: bool,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Result<Self> {
        if cfg.n < 1 {
            return Err(Error::NoPlayers(cfg.n));
        }
        if let Some(t) = cfg.tol {
            if !t.is_finite() || t <= 0.0 {
                return Err(Error::BadTolerance(t));
            }
        }
        if cfg.budget == Some(0) {
            return Err(Error::ZeroBudget);
        }
        let method = cfg.method.resolve(cfg.semivalue, cfg.n, cfg.budget)?;
        let sampler = make_sampler(
            method,
            &SamplerOptions { n: cfg.n, semivalue: cfg.semivalue, budget: cfg.budget, pilot: cfg.pilot },
        )?;
        if method != Method::Exact && cfg.budget.is_none() && cfg.tol.is_none() && cfg.max_units.is_none() {
            return Err(Error::NoStoppingRule(method));
        }
        if let Some(b) = cfg.budget {
            let need = sampler.min_budget();
            if b < need {
                return Err(Error::BudgetTooSmall { budget: b, need, method, n: cfg.n });
            }
        }
        if let Some(c) = &cfg.control_exact {
            if c.is_empty() || c.len() % cfg.n != 0 {
                return Err(Error::ControlValuesShape { len: c.len(), n: cfg.n });
            }
            if c.iter().any(|x| !x.is_finite()) {
                return Err(Error::ControlValuesNotFinite);
            }
        }
        Ok(Engine {
            n: cfg.n,
            method,
            semivalue: cfg.semivalue,
            sampler,
            rng: Rng::new(cfg.seed),
            budget: cfg.budget,
            tol: cfg.tol,
            control_exact: cfg.control_exact,
            max_units: cfg.max_units,
            n_planned: 0,
            dims: None,
            slots: FxHashMap::default(),
            n_known: 0,
            n_pending: 0,
            store: Vec::new(),
            free_rows: Vec::new(),
            to_send: VecDeque::new(),
            queue: VecDeque::new(),
            n_sent: 0,
            n_units: 0,
            free_streak: 0,
            exhausted: false,
            budget_hit: false,
            converged: false,
            all_known: false,
        })
    }

    pub fn n_players(&self) -> usize {
        self.n
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// Number of distinct coalitions handed out for evaluation so far.
    pub fn n_evaluations(&self) -> u64 {
        self.n_sent
    }

    /// Coalitions handed out and not yet told.
    pub fn n_outstanding(&self) -> usize {
        self.n_pending - self.to_send.len()
    }

    pub fn done(&self) -> bool {
        self.converged || self.all_known || (self.exhausted && self.n_pending == 0)
    }

    /// True when every coalition's utility is known and the values are exact.
    pub fn all_known(&self) -> bool {
        self.all_known
    }

    /// Control columns expected in each utility row (0 without a control game).
    pub fn control_width(&self) -> usize {
        self.control_exact.as_ref().map_or(0, |c| c.len() / self.n)
    }

    /// Plan units until `want` new coalitions wait to be sent, or planning must stop.
    fn plan(&mut self, want: usize) {
        while self.to_send.len() < want && !self.exhausted && !self.converged {
            if self.max_units.is_some_and(|m| self.n_planned >= m) {
                self.exhausted = true;
                break;
            }
            let unit = match self.sampler.next_unit(&mut self.rng) {
                Plan::Wait => break,
                Plan::Exhausted => {
                    self.exhausted = true;
                    break;
                }
                Plan::Unit(u) => u,
            };
            // mark the unit's new coalitions as queued (the map also catches repeats inside the
            // unit); undo it if the unit does not fit in the budget
            let mut new: Vec<&Coalition> = Vec::new();
            for c in &unit.coalitions {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.slots.entry(c.clone()) {
                    slot.insert(Slot::Queued);
                    new.push(c);
                }
            }
            if let Some(b) = self.budget {
                if self.n_sent + self.to_send.len() as u64 + new.len() as u64 > b {
                    for c in new {
                        self.slots.remove(c);
                    }
                    self.exhausted = true;
                    self.budget_hit = true;
                    break;
                }
            }
            self.n_planned += 1;
            let free = new.is_empty();
            if free {
                self.free_streak += 1;
                if self.free_streak >= FREE_UNIT_LIMIT {
                    self.exhausted = true;
                }
            } else {
                self.free_streak = 0;
            }
            self.n_pending += new.len();
            self.to_send.extend(new.into_iter().cloned());
            self.queue.push_back(unit);
            if free && self.queue.len() == 1 {
                self.absorb_ready();
            }
        }
    }

    /// Up to `max_batch` distinct coalitions to evaluate next (fewer near a barrier or the end).
    pub fn ask(&mut self, max_batch: usize) -> Vec<Coalition> {
        if self.done() || max_batch == 0 {
            return Vec::new();
        }
        self.plan(max_batch);
        let take = max_batch.min(self.to_send.len());
        let out: Vec<Coalition> = self.to_send.drain(..take).collect();
        for c in &out {
            if let Some(slot) = self.slots.get_mut(c) {
                *slot = Slot::Sent;
            }
        }
        self.n_sent += out.len() as u64;
        out
    }

    /// Hand back the utilities of asked coalitions: `values` is row-major `[b, k + kc]`,
    /// `k` objectives followed by `kc` control columns.
    pub fn tell(&mut self, coalitions: &[Coalition], values: &[f64], k: usize) -> Result<()> {
        let b = coalitions.len();
        let kc = self.control_width();
        let width = k + kc;
        if k == 0 {
            return Err(Error::NoObjective);
        }
        if values.len() != b * width {
            return Err(Error::UtilityCount { got: values.len(), b, width });
        }
        let dims = Dims { k, kc };
        match self.dims {
            Some(d) if d.k != k => return Err(Error::ObjectiveCount { k, earlier: d.k }),
            None if kc > 1 && kc != k => return Err(Error::ControlOutputs { kc, k }),
            _ => {}
        }
        // validate everything before changing any state
        for (r, row) in values.chunks(width.max(1)).enumerate() {
            if let Some(j) = row.iter().position(|x| !x.is_finite()) {
                return Err(Error::NotFinite {
                    coalition: coalitions[r].members().collect(),
                    row: r,
                    column: if j < k { Column::Objective(j) } else { Column::Control(j - k) },
                    value: row[j],
                });
            }
        }
        // every coalition must be out and not told yet; repeats inside the batch are caught by
        // marking each one as it is checked (and unmarked if the batch is refused)
        let mut refused = None;
        for (r, c) in coalitions.iter().enumerate() {
            match self.slots.get_mut(c) {
                Some(slot @ Slot::Sent) => *slot = Slot::Telling,
                _ => {
                    refused = Some(r);
                    break;
                }
            }
        }
        if let Some(r) = refused {
            for c in &coalitions[..r] {
                if let Some(slot) = self.slots.get_mut(c) {
                    *slot = Slot::Sent;
                }
            }
            return Err(Error::NotAsked(coalitions[r].members().collect()));
        }
        self.dims = Some(dims);
        for (c, row) in coalitions.iter().zip(values.chunks(width)) {
            let slot = match self.free_rows.pop() {
                Some(s) => {
                    let s_us = s as usize;
                    self.store[s_us * width..(s_us + 1) * width].copy_from_slice(row);
                    s
                }
                None => {
                    self.store.extend_from_slice(row);
                    (self.store.len() / width - 1) as u32
                }
            };
            *self.slots.get_mut(c).expect("checked above") = Slot::Known(slot);
            self.n_known += 1;
            self.n_pending -= 1;
        }
        self.absorb_ready();
        if self.sampler.repeats() && self.n <= MAX_CACHE_EXACT_PLAYERS && self.n_known == 1usize << self.n {
            // nothing is left to sample: stop and report the exact values from the cache
            self.all_known = true;
            self.exhausted = true;
            self.drop_unsent();
        }
        if let (Some(tol), false) = (self.tol, self.method == Method::Exact || self.all_known) {
            if !self.converged && self.n_units >= MIN_UNITS_FOR_TOL && self.sampler.tol_ready() {
                if let Some(est) = self.sampler.estimate_quick(self.control_exact.as_deref()) {
                    if est.max_stderr() <= tol {
                        self.converged = true;
                        self.drop_unsent();
                    }
                }
            }
        }
        Ok(())
    }

    /// Forget the planned coalitions that were not handed out.
    fn drop_unsent(&mut self) {
        for c in self.to_send.drain(..) {
            self.slots.remove(&c);
            self.n_pending -= 1;
        }
    }

    /// Feed the sampler every leading unit whose utilities are all known, in planning order.
    fn absorb_ready(&mut self) {
        let Some(dims) = self.dims else { return };
        let width = dims.width();
        let repeats = self.sampler.repeats();
        while let Some(front) = self.queue.front() {
            let mut rows = Vec::with_capacity(front.coalitions.len());
            for c in &front.coalitions {
                match self.slots.get(c) {
                    Some(&Slot::Known(r)) => rows.push(r as usize),
                    _ => return,
                }
            }
            let unit = self.queue.pop_front().expect("front exists");
            let values: Vec<&[f64]> = rows.iter().map(|&r| &self.store[r * width..(r + 1) * width]).collect();
            self.sampler.absorb(&unit, &values, dims);
            self.n_units += 1;
            if !repeats {
                for c in &unit.coalitions {
                    if let Some(Slot::Known(r)) = self.slots.remove(c) {
                        self.free_rows.push(r);
                        self.n_known -= 1;
                    }
                }
            }
        }
    }

    /// Exact values from a cache that holds every coalition.
    fn exact_from_cache(&self) -> Option<Estimate> {
        let dims = self.dims?;
        let (k, w) = (dims.k, dims.width());
        let (with, without) = crate::samplers::exact_weights(self.n, self.semivalue);
        let mut phi = vec![0.0; self.n * w];
        // a fixed order keeps the floating-point sum reproducible
        let mut entries: Vec<(&Coalition, usize)> = self
            .slots
            .iter()
            .filter_map(|(c, s)| if let Slot::Known(r) = s { Some((c, *r as usize)) } else { None })
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (c, r) in entries {
            crate::samplers::fold_coalition(&mut phi, c, &self.store[r * w..(r + 1) * w], &with, &without);
        }
        let mut values = vec![0.0; self.n * k];
        for i in 0..self.n {
            values[i * k..(i + 1) * k].copy_from_slice(&phi[i * w..i * w + k]);
        }
        Some(Estimate { n: self.n, k, values, variance: vec![0.0; self.n * k], control_coef: vec![0.0; self.n * k] })
    }

    /// The current estimate (None before any unit has been absorbed).
    pub fn result(&self) -> Option<ResultSnapshot> {
        self.result_with(false)
    }

    /// A cheaper estimate for progress reports, which may reuse earlier work of the sampler.
    pub fn snapshot(&self) -> Option<ResultSnapshot> {
        self.result_with(true)
    }

    fn result_with(&self, quick: bool) -> Option<ResultSnapshot> {
        let control = self.control_exact.as_deref();
        let estimate = if self.all_known {
            self.exact_from_cache()?
        } else if quick {
            self.sampler.estimate_quick(control)?
        } else {
            self.sampler.estimate(control)?
        };
        let stop = if self.converged {
            StopReason::Tolerance
        } else if self.done() {
            if self.budget_hit {
                StopReason::Budget
            } else {
                StopReason::Complete
            }
        } else {
            StopReason::Running
        };
        Some(ResultSnapshot { estimate, n_evaluations: self.n_sent, n_units: self.n_units, method: self.method, stop })
    }

    /// Whether the cache holds the utility of `c` (for tests and diagnostics).
    pub fn is_cached(&self, c: &Coalition) -> bool {
        matches!(self.slots.get(c), Some(Slot::Known(_)))
    }

    /// The units planned and not yet absorbed, in order (native evaluation reads their shapes).
    pub fn pending_units(&self) -> impl Iterator<Item = &Unit> {
        self.queue.iter()
    }
}
