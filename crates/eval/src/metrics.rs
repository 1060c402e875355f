//! Accuracy over a set of item results, and bootstrap intervals for it.

use rand::{Rng, SeedableRng};
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

/// The 95% percentile-bootstrap interval of the mean of `values`: the 2.5th and 97.5th
/// percentiles of the means of `resamples` resamples drawn with replacement (seeded, so the same
/// inputs give the same interval). For a paired comparison pass the per-item differences.
/// An empty input gives (0, 0).
pub fn bootstrap_interval(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = values.len();
    if n == 0 || resamples == 0 {
        return (0.0, 0.0);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * resamples as f64) as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_is_seeded_and_as_wide_as_the_normal_approximation() {
        assert_eq!(bootstrap_interval(&[1.0; 50], 500, 1), (1.0, 1.0));
        assert_eq!(bootstrap_interval(&[], 500, 1), (0.0, 0.0));
        // 400 coin flips, half right: the normal approximation gives 0.5 ± 1.96·0.025 = ±0.049.
        let v: Vec<f64> = (0..400).map(|i| (i % 2) as f64).collect();
        let (lo, hi) = bootstrap_interval(&v, 2000, 7);
        assert_eq!((lo, hi), bootstrap_interval(&v, 2000, 7));
        assert!((0.5 - lo - 0.049).abs() < 0.01 && (hi - 0.5 - 0.049).abs() < 0.01, "{lo} {hi}");
        // Four times the items: half the width.
        let v4: Vec<f64> = (0..1600).map(|i| (i % 2) as f64).collect();
        let (lo4, hi4) = bootstrap_interval(&v4, 2000, 7);
        assert!(((hi4 - lo4) / (hi - lo) - 0.5).abs() < 0.1, "{lo4} {hi4}");
    }
}
