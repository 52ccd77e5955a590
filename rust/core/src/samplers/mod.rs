//! The estimators: each plans units of coalitions and turns their utilities into estimates.

mod allocation;
mod exact;
mod kernel;
mod msr;
mod paired;
mod permutation;
mod stratified;
mod surrogate;
mod svarm;

pub use exact::{exact_weights, fold_coalition, ExactSampler};
pub use kernel::KernelSampler;
pub use msr::MsrSampler;
pub use paired::{AdaptiveSampler, PairedSampler};
pub use permutation::PermutationSampler;
pub use stratified::StratifiedSampler;
pub use svarm::{SvarmSampler, QUADRATIC_MAX_PLAYERS, REGRESSION_MAX_PLAYERS};

use crate::coalition::Coalition;
use crate::error::{Error, Result};
use crate::estimate::Estimate;
use crate::moments::Dims;
use crate::rng::Rng;

/// Which semivalue is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Semivalue {
    Shapley,
    Banzhaf,
}

impl Semivalue {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "shapley" => Ok(Semivalue::Shapley),
            "banzhaf" => Ok(Semivalue::Banzhaf),
            other => Err(Error::UnknownSemivalue(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Semivalue::Shapley => "shapley",
            Semivalue::Banzhaf => "banzhaf",
        }
    }

    /// The methods that estimate this semivalue, in the order the documentation lists them.
    pub fn methods(&self) -> &'static [MethodChoice] {
        use Method::*;
        use MethodChoice::{Auto, Named};
        match self {
            Semivalue::Shapley => &[
                Auto,
                Named(Exact),
                Named(Permutation),
                Named(Antithetic),
                Named(Stratified),
                Named(Svarm),
                Named(SvarmRegression),
                Named(Kernel),
            ],
            Semivalue::Banzhaf => &[Auto, Named(Exact), Named(Msr)],
        }
    }
}

/// "Shapley" or "Banzhaf", as the value is named in prose.
impl std::fmt::Display for Semivalue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Semivalue::Shapley => "Shapley",
            Semivalue::Banzhaf => "Banzhaf",
        })
    }
}

/// An estimation method (after `auto` has been resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Exact,
    Permutation,
    Antithetic,
    Stratified,
    Svarm,
    SvarmRegression,
    Kernel,
    Msr,
}

impl Method {
    const ALL: [Method; 8] = [
        Method::Exact,
        Method::Permutation,
        Method::Antithetic,
        Method::Stratified,
        Method::Svarm,
        Method::SvarmRegression,
        Method::Kernel,
        Method::Msr,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Permutation => "permutation",
            Method::Antithetic => "antithetic",
            Method::Stratified => "stratified",
            Method::Svarm => "svarm",
            Method::SvarmRegression => "regression",
            Method::Kernel => "kernel",
            Method::Msr => "msr",
        }
    }

    /// Whether the method estimates `semivalue`; the error says which semivalue it does estimate.
    pub fn check_semivalue(&self, semivalue: Semivalue) -> Result<()> {
        match (self, semivalue) {
            (Method::Exact, _) | (Method::Msr, Semivalue::Banzhaf) => Ok(()),
            (Method::Msr, Semivalue::Shapley) => Err(Error::BanzhafOnlyMethod(*self)),
            (_, Semivalue::Banzhaf) => Err(Error::ShapleyOnlyMethod(*self)),
            (_, Semivalue::Shapley) => Ok(()),
        }
    }
}

/// The method asked for: a named one, or `Auto`, chosen from the number of players, the
/// semivalue and the budget by [`MethodChoice::resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodChoice {
    Auto,
    Named(Method),
}

impl MethodChoice {
    /// The choice named `name` (`"auto"`, `"exact"`, `"permutation"`, ...); `semivalue` only
    /// tells the error which names would have been accepted.
    pub fn parse(name: &str, semivalue: Semivalue) -> Result<Self> {
        if name == "auto" {
            return Ok(MethodChoice::Auto);
        }
        Method::ALL
            .iter()
            .find(|m| m.name() == name)
            .map(|&m| MethodChoice::Named(m))
            .ok_or_else(|| Error::UnknownMethod { name: name.to_string(), semivalue })
    }

    pub fn name(&self) -> &'static str {
        match self {
            MethodChoice::Auto => "auto",
            MethodChoice::Named(m) => m.name(),
        }
    }

    /// The method to run for `n` players and the given stopping rule.
    ///
    /// `Auto` is exact enumeration when all `2^n` coalitions fit in the budget (or `n <= 10`
    /// without a budget), otherwise the estimator the benchmark in `bench/shapley` found most
    /// accurate: regression-adjusted stratified SVARM for the Shapley value, MSR for the
    /// Banzhaf value.
    pub fn resolve(self, semivalue: Semivalue, n: usize, budget: Option<u64>) -> Result<Method> {
        match self {
            MethodChoice::Named(m) => m.check_semivalue(semivalue).map(|()| m),
            MethodChoice::Auto => {
                let all = if n < 63 { Some(1u64 << n) } else { None };
                let exact_fits = match (budget, all) {
                    (Some(b), Some(a)) => a <= b && n <= crate::MAX_EXACT_PLAYERS,
                    (None, Some(_)) => n <= 10,
                    _ => false,
                };
                Ok(if exact_fits {
                    Method::Exact
                } else if semivalue == Semivalue::Banzhaf {
                    Method::Msr
                } else {
                    Method::SvarmRegression
                })
            }
        }
    }
}

impl From<Method> for MethodChoice {
    fn from(method: Method) -> Self {
        MethodChoice::Named(method)
    }
}

/// The names of `methods`, comma-separated (for messages).
pub fn method_names(methods: &[MethodChoice]) -> String {
    methods.iter().map(MethodChoice::name).collect::<Vec<_>>().join(", ")
}

/// What a unit's coalitions are, so that absorbing and native evaluation know their shape.
#[derive(Clone, Debug)]
pub enum UnitKind {
    /// Prefixes of one ordering: coalitions[j] = first j players of `order` (j = 0..=n).
    Chain(Vec<u32>),
    /// A permutation and its reverse: two chains of n+1 prefixes each.
    Antithetic(Vec<u32>),
    /// `S` and `S + player`, a sample of stratum (`player`, `|S|`).
    Marginal { player: u32 },
    /// One coalition, absorbed on its own.
    Single,
    /// One coalition drawn at random (as opposed to enumerated).
    Sampled,
    /// A coalition and its complement.
    Paired,
    /// The empty and the grand coalition (needed first by the regression estimator).
    Boundary,
}

/// A unit of work: coalitions whose utilities are absorbed together.
#[derive(Clone, Debug)]
pub struct Unit {
    pub kind: UnitKind,
    pub coalitions: Vec<Coalition>,
}

impl Unit {
    /// A chain unit holding the prefixes of `order`.
    pub fn chain(n: usize, order: Vec<u32>) -> Self {
        let coalitions = prefixes(n, &order);
        Unit { kind: UnitKind::Chain(order), coalitions }
    }

    pub fn antithetic(n: usize, order: Vec<u32>) -> Self {
        let mut coalitions = prefixes(n, &order);
        let rev: Vec<u32> = order.iter().rev().copied().collect();
        coalitions.extend(prefixes(n, &rev));
        Unit { kind: UnitKind::Antithetic(order), coalitions }
    }
}

fn prefixes(n: usize, order: &[u32]) -> Vec<Coalition> {
    let mut out = Vec::with_capacity(order.len() + 1);
    let mut c = Coalition::empty(n);
    out.push(c.clone());
    for &p in order {
        c.insert(p as usize);
        out.push(c.clone());
    }
    out
}

/// The next step a sampler proposes.
pub enum Plan {
    Unit(Unit),
    /// Nothing can be planned until the units already out have been absorbed.
    Wait,
    /// The sampler has nothing more to propose.
    Exhausted,
}

/// Options shared by the samplers.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    pub n: usize,
    pub semivalue: Semivalue,
    pub budget: Option<u64>,
    /// Samples per stratum in the pilot of the stratified estimator (None: chosen from the budget).
    pub pilot: Option<u32>,
}

/// A family member of the estimators.
pub trait Sampler: Send + Sync {
    /// Propose the next unit.
    fn next_unit(&mut self, rng: &mut Rng) -> Plan;
    /// Take in the utilities of a unit, in the order of its coalitions.
    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims);
    /// The current estimate (None before anything was absorbed).
    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate>;
    /// An estimate for progress reports and stopping checks, which may reuse earlier work
    /// (e.g. hyper-parameters chosen by cross-validation); `estimate` is the reference.
    fn estimate_quick(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        self.estimate(control_exact)
    }
    /// Whether the standard errors are trustworthy enough for `tol` to stop the run.
    fn tol_ready(&self) -> bool {
        true
    }
    /// Whether the same coalition can be proposed twice (enables the utility cache).
    fn repeats(&self) -> bool {
        true
    }
    /// The smallest budget with which the method gives a value and a standard error.
    fn min_budget(&self) -> u64;
}

/// Build the sampler for a resolved method.
pub fn make_sampler(method: Method, opts: &SamplerOptions) -> Result<Box<dyn Sampler>> {
    let n = opts.n;
    method.check_semivalue(opts.semivalue)?;
    Ok(match method {
        Method::Exact => {
            if n > crate::MAX_EXACT_PLAYERS {
                return Err(Error::TooManyForExact { n, max: crate::MAX_EXACT_PLAYERS });
            }
            Box::new(ExactSampler::new(n, opts.semivalue))
        }
        Method::Permutation => Box::new(PermutationSampler::new(n, false)),
        Method::Antithetic => Box::new(PermutationSampler::new(n, true)),
        Method::Stratified => Box::new(StratifiedSampler::new(n, opts.budget, opts.pilot)),
        Method::Svarm => Box::new(SvarmSampler::new(n, opts.budget, false)),
        // the paired design needs a pilot to choose itself; below 4n evaluations there is not
        // enough for one (nor for standard errors of the paired strata): plain regression-SVARM
        Method::SvarmRegression
            if (QUADRATIC_MAX_PLAYERS + 1..=REGRESSION_MAX_PLAYERS).contains(&n)
                && opts.budget.is_none_or(|b| b >= 4 * n as u64) =>
        {
            Box::new(AdaptiveSampler::new(n, opts.budget))
        }
        Method::SvarmRegression => Box::new(SvarmSampler::new(n, opts.budget, true)),
        Method::Kernel => Box::new(KernelSampler::new(n)),
        Method::Msr => Box::new(MsrSampler::new(n)),
    })
}

/// `a - b` for utility rows.
#[inline]
pub(crate) fn diff_into(a: &[f64], b: &[f64], out: &mut [f64]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x - y;
    }
}
