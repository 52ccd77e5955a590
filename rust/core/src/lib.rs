//! Shapley and Banzhaf estimation for data valuation, without Python.
//!
//! The crate is organised around an ask/tell [`Engine`]: a [`Sampler`] plans units of work
//! (a permutation, a stratum sample, a paired coalition, ...), the engine turns them into
//! batches of distinct coalitions for the caller to evaluate, caches every utility by
//! coalition bitset, enforces the evaluation budget and the stopping rules, and feeds completed
//! units back to the sampler in the order they were planned (so results do not depend on the
//! batch size). Native games ([`MarginGame`]) are evaluated without leaving Rust.

pub mod coalition;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod games;
pub mod moments;
pub mod rng;
pub mod samplers;
pub mod weights;

pub use coalition::Coalition;
pub use engine::{Engine, EngineConfig, ResultSnapshot};
pub use error::{Column, Error, ErrorKind, Result};
pub use estimate::Estimate;
pub use games::{exact_native, run_native, Game, MarginGame, MarginKind};
pub use samplers::{Method, MethodChoice, Semivalue};
pub use weights::WeightProblem;

/// Largest number of players accepted by exact enumeration through the ask/tell engine.
pub const MAX_EXACT_PLAYERS: usize = 30;
