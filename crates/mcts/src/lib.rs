//! Monte Carlo Tree Search over edit sequences, and a random-search baseline with the same budget.
//!
//! The engine ([`search`]) is generic: a [`Problem`] supplies states, legal actions, how an action
//! changes a state, and an (expensive) evaluation returning a reward in [0, 1] plus a payload.
//! Each distinct state is evaluated at most once, only if valid and within the length bounds.
//! [`chains`] provides the action presets for chains of layer indices (`paper`, `polar`,
//! `drllm`, `skip-only`, `repeat-only`).
//!
//! This crate must not depend on any other crate of the project but `cola-names` (parsing its
//! presets by name): it knows nothing of burn, layers or language models.

pub mod chains;
mod engine;
mod random;
mod seed;

pub use engine::{EvaluatedState, Evaluation, MctsConfig, Problem, SearchResult, search};
pub use random::{RandomConfig, random_search};
pub use seed::{SearchRng, sample_rng};
