//! Core errors raised as the classes of `dposhap.errors`, worded for the Python API.

use dposhap_core::{Error, ErrorKind, Semivalue};
use pyo3::PyErr;

// Each class is imported from `dposhap.errors` the first time it is raised, then cached.
pyo3::import_exception!(dposhap.errors, InvalidArgumentError);
pyo3::import_exception!(dposhap.errors, BudgetTooSmallError);
pyo3::import_exception!(dposhap.errors, UtilityError);
pyo3::import_exception!(dposhap.errors, ProtocolError);

/// The Python exception for a core error.
pub fn to_py(err: Error) -> PyErr {
    let msg = python_message(&err);
    match err.kind() {
        ErrorKind::InvalidArgument => InvalidArgumentError::new_err(msg),
        ErrorKind::BudgetTooSmall => BudgetTooSmallError::new_err(msg),
        ErrorKind::Utility => UtilityError::new_err(msg),
        ErrorKind::Protocol => ProtocolError::new_err(msg),
    }
}

/// The core's message, with the names of the Python API where the user has to act on them.
fn python_message(err: &Error) -> String {
    match err {
        Error::NoPlayers(n) => format!("n_players must be at least 1, got {n}"),
        Error::BadTolerance(tol) => format!("tol must be a positive finite standard error, got {tol}"),
        Error::NoStoppingRule(method) => format!(
            "method {:?} samples coalitions and needs a stopping rule: pass budget= (utility evaluations), \
             tol= (target standard error), or both",
            method.name()
        ),
        Error::BanzhafOnlyMethod(method) => format!(
            "method {:?} estimates the Banzhaf value: call dposhap.banzhaf, or use one of {} for the Shapley value",
            method.name(),
            dposhap_core::samplers::method_names(Semivalue::Shapley.methods())
        ),
        Error::TooManyForExact { .. } => format!("{err} (e.g. method=\"auto\" with a budget)"),
        Error::EmptyMargins { n, m } => {
            format!("margins must be a 2-d array [n_sources, n_pairs] with both sizes >= 1, got [{n}, {m}]")
        }
        Error::MarginNotFinite { player, pair, value } => {
            format!("margins[{player}, {pair}] is {value}: margins must be finite (drop or repair that held-out pair)")
        }
        other => other.to_string(),
    }
}
