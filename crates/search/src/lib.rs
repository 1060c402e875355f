//! Per-sample chain-of-layers search, end to end: the executor as an evaluation model
//! ([`model::ChainModel`], with prefix caching), the chain search for one item
//! ([`sample::search_item`]: static prediction, MCTS, random baseline), run directories that
//! resume after a crash ([`run_dir`]), whole runs over selected items with a progress bar
//! ([`runs`]: `run_search`, `run_eval`), the paper's findings as a report ([`report`]), and
//! held-out, label-free use of chains with baselines and error bars ([`transfer`]), and the
//! speed measurements of `bench` ([`bench`]).
//!
//! This is the glue crate: it depends on the executor, MCTS and evaluation crates; nothing but
//! xtask depends on it.

pub mod bench;
pub mod export;
pub mod influence;
pub mod markdown;
pub mod model;
pub mod report;
pub mod run_dir;
pub mod runs;
pub mod sample;
pub mod transfer;

pub use model::ChainModel;
pub use runs::{SearchRequest, Selection, Source, run_eval, run_search, select_items};
pub use sample::{
    Baseline, ChainSearcher, Preset, SampleRecord, SearchSettings, SearcherRecord, SettingsOverrides, default_batch,
    oracle_reward, preset_batch, search_item,
};

/// An error of a search or eval run: which file, item or run directory, and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The run directory (its config, samples, lock or report).
    #[error(transparent)]
    Run(#[from] run_dir::RunError),
    /// Loading benchmark data.
    #[error(transparent)]
    Data(#[from] cola_eval::EvalError),
    /// Scoring one item.
    #[error("{task} item {doc_id}")]
    Item {
        task: String,
        doc_id: String,
        #[source]
        error: cola_eval::EvalError,
    },
    /// Reading or hashing a model or data file.
    #[error("{}: {error}", path.display())]
    File { path: std::path::PathBuf, error: String },
    /// `--offset` at or past the end of a task's items: the selection would be silently empty.
    #[error("--offset {offset}: {task} has only {count} items (offsets 0..{count})")]
    OffsetPastEnd { task: String, offset: usize, count: usize },
    /// A further searcher's name is empty, taken twice, or `mcts` / `random`.
    #[error("searcher name `{0}`: names must be unique, non-empty and not `mcts` or `random`")]
    Searcher(String),
    /// Handing a result to the caller (`run_eval`'s `on_result`).
    #[error("writing a result: {0}")]
    Output(std::io::Error),
}
