//! Benchmarks for chain search: loading items (ARC-Easy/Challenge, MATH by level and subject,
//! MATH-500, GSM8K, CSQA, OpenBookQA, or a user's own JSONL), building prompts, scoring a model
//! in one of three modes (`letter`, `loglik`, `generate`), extracting and grading answers, and
//! summarising accuracy.
//!
//! The model is reached only through the small [`LanguageModel`] trait, so everything here can
//! be tested with a fake model. This crate must not depend on any other crate of the project
//! but `cola-names` (parsing by name).

pub mod data;
pub mod grading;
pub mod lm_eval;
pub mod metrics;
pub mod prompts;
pub mod scoring;

pub use data::{AnswerForm, Item, ItemKind, LoadReport, Split, Task, load_task, load_user_jsonl};
pub use metrics::{Summary, bootstrap_interval, bootstrap_ratio, wilson_interval};
pub use scoring::{
    ItemResult, LanguageModel, MathPrompt, ScoringMode, ScoringOptions, StopRule, score_item, score_item_variants,
};

/// A problem with benchmark data or with scoring, naming the file and line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The cause is the `source`: `{:#}` (anyhow) prints `path: cause`.
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    BadLine { path: String, line: usize, message: String },
    #[error("{0}")]
    Invalid(String),
    /// The model answered in a way the scoring cannot use.
    #[error("model: {0}")]
    Model(String),
    /// The model failed (its own error, e.g. the executor's).
    #[error("model")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}
