use thiserror::Error;

/// Every failure the engine can report. The Python bindings map each variant to a class of
/// `dposhap.errors`.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// An argument is out of its domain (n < 1, tol <= 0, an unknown method, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The evaluation budget cannot pay for the smallest useful run of the method.
    #[error("{0}")]
    BudgetTooSmall(String),
    /// The utilities handed back are unusable (wrong shape, NaN or infinity).
    #[error("{0}")]
    Utility(String),
    /// The ask/tell protocol was broken (telling a coalition that was never asked, ...).
    #[error("{0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;
