//! Every failure the engine can report, one variant each, carrying the values that explain it.
//!
//! Messages speak of the engine's own terms (players, budget, tolerance, margins); the Python
//! bindings raise one class of `dposhap.errors` per [`ErrorKind`] and may word a message in
//! terms of the Python API.

use crate::samplers::{method_names, Method, Semivalue};
use std::fmt;
use thiserror::Error;

/// The family of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// An argument is out of its domain (no players, a tolerance <= 0, an unknown method, ...).
    InvalidArgument,
    /// The evaluation budget cannot pay for the smallest useful run of the method.
    BudgetTooSmall,
    /// The utilities handed back are unusable (wrong shape, NaN or infinity).
    Utility,
    /// The ask/tell protocol was broken (telling a coalition that was never asked, ...).
    Protocol,
}

/// Where in a utility row a value sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Objective(usize),
    Control(usize),
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Objective(j) => write!(f, "objective {j}"),
            Column::Control(j) => write!(f, "control column {j}"),
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    // ---- arguments of a run
    #[error("the number of players must be at least 1, got {0}")]
    NoPlayers(usize),
    #[error("the tolerance must be a positive finite standard error, got {0}")]
    BadTolerance(f64),
    #[error("unknown semivalue {0:?}: use \"shapley\" or \"banzhaf\"")]
    UnknownSemivalue(String),
    #[error("unknown method {name:?} for the {semivalue} value: choose one of {}", method_names(semivalue.methods()))]
    UnknownMethod { name: String, semivalue: Semivalue },
    #[error(
        "method {:?} estimates the Shapley value only; for the Banzhaf value use one of {}",
        .0.name(),
        method_names(Semivalue::Banzhaf.methods())
    )]
    ShapleyOnlyMethod(Method),
    #[error(
        "method {:?} estimates the Banzhaf value; for the Shapley value use one of {}",
        .0.name(),
        method_names(Semivalue::Shapley.methods())
    )]
    BanzhafOnlyMethod(Method),
    #[error(
        "method {:?} samples coalitions and needs a stopping rule: a budget (utility evaluations), \
         a tolerance (target standard error), or both",
        .0.name()
    )]
    NoStoppingRule(Method),
    #[error(
        "exact enumeration needs 2^{n} utility evaluations; it is limited to n <= {max} players: \
         choose a sampling method"
    )]
    TooManyForExact { n: usize, max: usize },

    // ---- the budget
    #[error("the budget must be a positive number of utility evaluations, got 0")]
    ZeroBudget,
    #[error(
        "budget {budget} is too small: {}; raise budget to at least {need} or choose another method",
        budget_need(*.method, *.n, *.need)
    )]
    BudgetTooSmall { budget: u64, need: u64, method: Method, n: usize },

    // ---- margin games
    #[error("unknown margin game kind {0:?}: use \"accuracy\", \"logsigmoid\" or \"mean\"")]
    UnknownMarginKind(String),
    #[error("a margin game needs at least one source and one held-out pair, got {n} sources and {m} pairs")]
    EmptyMargins { n: usize, m: usize },
    #[error("the margin matrix has {len} entries, expected {n} x {m}")]
    MarginCount { len: usize, n: usize, m: usize },
    #[error(
        "the margin of source {player} on pair {pair} is {value}: margins must be finite \
         (drop or repair that held-out pair)"
    )]
    MarginNotFinite { player: usize, pair: usize, value: f64 },
    #[error("{len} pair weights do not fill whole rows of {m} (one weight per held-out pair)")]
    WeightCount { len: usize, m: usize },
    #[error("pair weight {pair} of row {row} is {value}: weights must be finite and non-negative")]
    BadWeight { row: usize, pair: usize, value: f64 },
    #[error("row {row} of the pair weights sums to zero: every row needs a pair with positive weight")]
    ZeroWeights { row: usize },
    #[error("source weights: {0}")]
    BadWeightProblem(String),
    #[error("the game has {game} players, the estimator {estimator}")]
    GamePlayers { game: usize, estimator: usize },

    // ---- control games
    #[error(
        "the control game's exact values have {len} entries; expected {n} rows, one per player \
         (times the number of control outputs)"
    )]
    ControlValuesShape { len: usize, n: usize },
    #[error("the control game's exact values contain NaN or infinity")]
    ControlValuesNotFinite,
    #[error("the control game has {kc} outputs; it needs 1 (shared by all objectives) or one per objective ({k})")]
    ControlOutputs { kc: usize, k: usize },
    #[error("the control game has {control} players, the game {game}: both must value the same sources")]
    ControlPlayers { control: usize, game: usize },
    #[error("the control game returns {got} values per coalition but {expected} control values per player were given")]
    ControlWidth { got: usize, expected: usize },

    // ---- utilities told
    #[error("the utility returned no objective (0 columns)")]
    NoObjective,
    #[error("got {got} utility numbers for {b} coalitions; expected {b} x {width}")]
    UtilityCount { got: usize, b: usize, width: usize },
    #[error("the utility returned {k} objectives per coalition, but earlier batches had {earlier}")]
    ObjectiveCount { k: usize, earlier: usize },
    #[error(
        "the utility of coalition {coalition:?} (row {row} of the batch) is {value} in {column}; \
         utilities must be finite"
    )]
    NotFinite { coalition: Vec<usize>, row: usize, column: Column, value: f64 },

    // ---- the ask/tell protocol
    #[error(
        "coalition {0:?} was told but not asked (or told twice): tell only the coalitions ask \
         returned, each once"
    )]
    NotAsked(Vec<usize>),
    #[error("the estimator asked for nothing but is not done")]
    Stalled,
}

impl Error {
    /// The family of the failure (the Python class it is raised as).
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            NoPlayers(_)
            | BadTolerance(_)
            | UnknownSemivalue(_)
            | UnknownMethod { .. }
            | ShapleyOnlyMethod(_)
            | BanzhafOnlyMethod(_)
            | NoStoppingRule(_)
            | TooManyForExact { .. }
            | UnknownMarginKind(_)
            | EmptyMargins { .. }
            | MarginCount { .. }
            | MarginNotFinite { .. }
            | WeightCount { .. }
            | BadWeight { .. }
            | ZeroWeights { .. }
            | BadWeightProblem(_)
            | GamePlayers { .. }
            | ControlValuesShape { .. }
            | ControlValuesNotFinite
            | ControlOutputs { .. }
            | ControlPlayers { .. }
            | ControlWidth { .. } => ErrorKind::InvalidArgument,
            ZeroBudget | BudgetTooSmall { .. } => ErrorKind::BudgetTooSmall,
            NoObjective | UtilityCount { .. } | ObjectiveCount { .. } | NotFinite { .. } => ErrorKind::Utility,
            NotAsked(_) | Stalled => ErrorKind::Protocol,
        }
    }
}

/// Why a method needs `need` evaluations for `n` players.
fn budget_need(method: Method, n: usize, need: u64) -> String {
    if method == Method::Exact {
        format!("exact enumeration of {n} players needs 2^{n} = {need} evaluations")
    } else {
        format!(
            "method {:?} needs at least {need} evaluations for {n} players to give values with standard errors",
            method.name()
        )
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages use the engine's terms; the bindings add their own API's names.
    #[test]
    fn messages_name_no_binding() {
        let errors = [
            Error::NoPlayers(0),
            Error::BadTolerance(f64::NAN),
            Error::UnknownMethod { name: "x".into(), semivalue: Semivalue::Banzhaf },
            Error::ShapleyOnlyMethod(Method::Kernel),
            Error::BanzhafOnlyMethod(Method::Msr),
            Error::NoStoppingRule(Method::Svarm),
            Error::TooManyForExact { n: 40, max: 30 },
            Error::ZeroBudget,
            Error::BudgetTooSmall { budget: 3, need: 64, method: Method::Exact, n: 6 },
            Error::EmptyMargins { n: 0, m: 3 },
            Error::MarginNotFinite { player: 1, pair: 2, value: f64::INFINITY },
            Error::ControlValuesShape { len: 0, n: 3 },
            Error::NotFinite { coalition: vec![0, 2], row: 1, column: Column::Control(0), value: f64::NAN },
            Error::NotAsked(vec![1]),
        ];
        for e in errors {
            let msg = e.to_string();
            for word in ["dposhap", "n_players", "budget=", "tol=", "method=", "margins["] {
                assert!(!msg.contains(word), "{msg:?} names {word:?}");
            }
        }
    }

    #[test]
    fn messages_carry_their_values() {
        let e = Error::BudgetTooSmall { budget: 63, need: 64, method: Method::Exact, n: 6 };
        assert_eq!(
            e.to_string(),
            "budget 63 is too small: exact enumeration of 6 players needs 2^6 = 64 evaluations; \
             raise budget to at least 64 or choose another method"
        );
        assert_eq!(e.kind(), ErrorKind::BudgetTooSmall);
        let e = Error::UnknownMethod { name: "montecarlo".into(), semivalue: Semivalue::Shapley };
        assert_eq!(
            e.to_string(),
            "unknown method \"montecarlo\" for the Shapley value: choose one of auto, exact, permutation, \
             antithetic, stratified, svarm, regression, kernel"
        );
        let e = Error::NotFinite { coalition: vec![0, 2], row: 1, column: Column::Objective(0), value: f64::NAN };
        assert!(e.to_string().contains("coalition [0, 2] (row 1 of the batch) is NaN in objective 0"));
        assert_eq!(e.kind(), ErrorKind::Utility);
    }
}
