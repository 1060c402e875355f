//! Accuracy over a set of item results.

use serde::{Deserialize, Serialize};

use crate::scoring::ItemResult;

/// Totals for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub task: String,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// `loglik` mode: accuracy of the length-normalised choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_norm: Option<f64>,
    /// Items that could not be loaded (reported with file and line when loading).
    pub skipped: usize,
    /// Items scored whose answer could not be extracted at all.
    pub unanswered: usize,
}

impl Summary {
    pub fn from_results(task: &str, results: &[ItemResult], skipped: usize) -> Self {
        let n = results.len();
        let correct = results.iter().filter(|r| r.correct).count();
        let ratio = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let norm: Vec<bool> = results.iter().filter_map(|r| r.correct_norm).collect();
        Summary {
            task: task.to_string(),
            n,
            correct,
            accuracy: ratio(correct),
            accuracy_norm: (!norm.is_empty() && norm.len() == n).then(|| ratio(norm.iter().filter(|c| **c).count())),
            skipped,
            unanswered: results.iter().filter(|r| r.prediction.is_none()).count(),
        }
    }
}
