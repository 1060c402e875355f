//! Accuracy over a set of item results, and intervals: Wilson's for a proportion, seeded
//! percentile bootstraps for means, paired differences and ratios of sums.

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
    let means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    percentile_95(means)
}

/// The 2.5th and 97.5th percentiles of the (non-empty) bootstrap statistics `stats`.
fn percentile_95(mut stats: Vec<f64>) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * stats.len() as f64) as usize).min(stats.len() - 1)];
    (at(0.025), at(0.975))
}

/// z of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The 95% Wilson score interval of the proportion `successes / n` (no continuity correction):
/// unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n. None for
/// n = 0.
pub fn wilson_interval(successes: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (k, n) = (successes.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The 95% percentile-bootstrap interval of `sum(num) / sum(den)` over units resampled with
/// replacement (seeded): a proportion whose counts come in clusters (chains of one sample), where
/// a Wilson interval over the pooled counts would be too narrow. None when nothing is counted.
pub fn bootstrap_ratio(num: &[f64], den: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    let n = num.len().min(den.len());
    if n == 0 || resamples == 0 || den.iter().sum::<f64>() == 0.0 {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ratios: Vec<f64> = (0..resamples)
        .map(|_| {
            let (mut a, mut b) = (0.0, 0.0);
            for _ in 0..n {
                let i = rng.random_range(0..n);
                a += num[i];
                b += den[i];
            }
            if b == 0.0 { 0.0 } else { a / b }
        })
        .collect();
    Some(percentile_95(ratios))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
    /// method 3 (Wilson score, no continuity correction), to the 4 decimals printed there.
    #[test]
    fn wilson_intervals_match_newcombes_table() {
        for (k, n, lo, hi) in
            [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]
        {
            let (a, b) = wilson_interval(k, n).unwrap();
            assert!((a - lo).abs() < 6e-5 && (b - hi).abs() < 6e-5, "{k}/{n}: ({a:.5}, {b:.5}) vs ({lo}, {hi})");
        }
        assert_eq!(wilson_interval(0, 0), None);
        let (a, b) = wilson_interval(20, 20).unwrap();
        assert!(b == 1.0 && (a - (1.0 - 0.1611)).abs() < 6e-5);
    }

    /// A ratio of sums over clusters: all clusters at the same ratio give that ratio exactly;
    /// unequal clusters give an interval around the pooled ratio; seeded.
    #[test]
    fn bootstrap_ratio_resamples_clusters() {
        assert_eq!(bootstrap_ratio(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0], 200, 1), Some((0.5, 0.5)));
        assert_eq!(bootstrap_ratio(&[0.0], &[0.0], 200, 1), None);
        let num: Vec<f64> = (0..100).map(|i| (i % 4) as f64).collect();
        let den = vec![4.0; 100];
        let (lo, hi) = bootstrap_ratio(&num, &den, 1000, 3).unwrap();
        assert!(lo < 0.375 && 0.375 < hi && hi - lo < 0.2, "{lo} {hi}");
        assert_eq!(bootstrap_ratio(&num, &den, 1000, 3), Some((lo, hi)));
    }

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
