//! Search spaces of chains of layer indices for an N-layer model.
//!
//! A state is a chain (`Vec<usize>`); an [`Edit`] skips or repeats a contiguous block of the
//! current chain. Presets:
//! - `paper`: from any state, skip a block of k steps, or repeat a block of k steps r more
//!   times (inserted right after it), k, r ∈ {1, 2, 3, 4};
//! - `polar`: the authors' released code: at the root, skip or repeat (once) a block of 1–4;
//!   deeper, only single-step skips or single repeats; no layer index more than twice;
//! - `drllm`: skips of 1 or 2 steps, repeats of 1 step once (and early stop, set by the caller);
//! - `skip-only`, `repeat-only`: the paper's ablations (its skip or its repeat actions alone).

use std::fmt;

use crate::engine::{Evaluation, Problem};

/// One edit of a chain: positions refer to the current chain, not to layer indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Edit {
    /// Remove steps `start..start + len`.
    Skip { start: usize, len: usize },
    /// Insert `times` more copies of steps `start..start + len` right after them.
    Repeat { start: usize, len: usize, times: usize },
}

impl Edit {
    pub fn apply(&self, chain: &[usize]) -> Vec<usize> {
        match *self {
            Edit::Skip { start, len } => {
                let mut out = Vec::with_capacity(chain.len().saturating_sub(len));
                out.extend_from_slice(&chain[..start]);
                out.extend_from_slice(&chain[start + len..]);
                out
            }
            Edit::Repeat { start, len, times } => {
                let block = &chain[start..start + len];
                let mut out = Vec::with_capacity(chain.len() + len * times);
                out.extend_from_slice(&chain[..start + len]);
                for _ in 0..times {
                    out.extend_from_slice(block);
                }
                out.extend_from_slice(&chain[start + len..]);
                out
            }
        }
    }
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Edit::Skip { start, len } => write!(f, "skip {len} at {start}"),
            Edit::Repeat { start, len, times } => write!(f, "repeat {len} at {start} x{times}"),
        }
    }
}

/// A named set of edit rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionPreset {
    Paper,
    Polar,
    Drllm,
    SkipOnly,
    RepeatOnly,
}

impl ActionPreset {
    pub const ALL: [ActionPreset; 5] = [
        ActionPreset::Paper,
        ActionPreset::Polar,
        ActionPreset::Drllm,
        ActionPreset::SkipOnly,
        ActionPreset::RepeatOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActionPreset::Paper => "paper",
            ActionPreset::Polar => "polar",
            ActionPreset::Drllm => "drllm",
            ActionPreset::SkipOnly => "skip-only",
            ActionPreset::RepeatOnly => "repeat-only",
        }
    }

    /// Legal edits of `chain`; `at_root` says whether it is the search's starting chain.
    pub fn edits(self, chain: &[usize], at_root: bool, num_layers: usize) -> Vec<Edit> {
        let len = chain.len();
        let mut out = Vec::new();
        let skips = |out: &mut Vec<Edit>, sizes: &[usize]| {
            for &k in sizes {
                for start in 0..(len + 1).saturating_sub(k) {
                    out.push(Edit::Skip { start, len: k });
                }
            }
        };
        let repeats = |out: &mut Vec<Edit>, sizes: &[usize], times: &[usize]| {
            for &k in sizes {
                for &r in times {
                    for start in 0..(len + 1).saturating_sub(k) {
                        out.push(Edit::Repeat { start, len: k, times: r });
                    }
                }
            }
        };
        const ONE_TO_FOUR: [usize; 4] = [1, 2, 3, 4];
        match self {
            ActionPreset::Paper => {
                skips(&mut out, &ONE_TO_FOUR);
                repeats(&mut out, &ONE_TO_FOUR, &ONE_TO_FOUR);
            }
            ActionPreset::SkipOnly => skips(&mut out, &ONE_TO_FOUR),
            ActionPreset::RepeatOnly => repeats(&mut out, &ONE_TO_FOUR, &ONE_TO_FOUR),
            ActionPreset::Drllm => {
                skips(&mut out, &[1, 2]);
                repeats(&mut out, &[1], &[1]);
            }
            ActionPreset::Polar => {
                let sizes: &[usize] = if at_root { &ONE_TO_FOUR } else { &[1] };
                skips(&mut out, sizes);
                let mut counts = vec![0usize; num_layers.max(chain.iter().max().map_or(0, |m| m + 1))];
                for &l in chain {
                    counts[l] += 1;
                }
                for &k in sizes {
                    for start in 0..(len + 1).saturating_sub(k) {
                        // A repeated block adds one more occurrence of each of its layers
                        // (counting layers that appear twice in the block twice).
                        let mut extra = std::collections::HashMap::new();
                        for &l in &chain[start..start + k] {
                            *extra.entry(l).or_insert(0usize) += 1;
                        }
                        if extra.iter().all(|(&l, &e)| counts[l] + e <= 2) {
                            out.push(Edit::Repeat { start, len: k, times: 1 });
                        }
                    }
                }
            }
        }
        out
    }
}

cola_names::by_name!(ActionPreset, "action preset");

/// The chain search space of an N-layer model under a preset, starting from `root`.
#[derive(Debug, Clone)]
pub struct ChainSpace {
    pub num_layers: usize,
    pub preset: ActionPreset,
    pub root: Vec<usize>,
}

impl ChainSpace {
    /// Starting from the original chain `[0..N-1]`.
    pub fn new(num_layers: usize, preset: ActionPreset) -> Self {
        ChainSpace { num_layers, preset, root: (0..num_layers).collect() }
    }

    pub fn edits(&self, chain: &[usize]) -> Vec<Edit> {
        self.preset.edits(chain, chain == self.root.as_slice(), self.num_layers)
    }
}

/// A chain search: the space plus an evaluation function over a batch of chains (one
/// evaluation per chain, in order, or the error that ends the search).
pub struct ChainProblem<F> {
    pub space: ChainSpace,
    pub evaluate: F,
}

impl<F, P, E> Problem for ChainProblem<F>
where
    F: FnMut(&[Vec<usize>]) -> Result<Vec<Evaluation<P>>, E>,
    P: Clone,
{
    type State = Vec<usize>;
    type Action = Edit;
    type Payload = P;
    type Error = E;

    fn root(&self) -> Vec<usize> {
        self.space.root.clone()
    }
    fn actions(&self, state: &Vec<usize>) -> Vec<Edit> {
        self.space.edits(state)
    }
    fn apply(&self, state: &Vec<usize>, action: &Edit) -> Vec<usize> {
        action.apply(state)
    }
    fn length(&self, state: &Vec<usize>) -> usize {
        state.len()
    }
    fn is_valid(&self, state: &Vec<usize>) -> bool {
        !state.is_empty() && state.iter().all(|&l| l < self.space.num_layers)
    }
    fn evaluate(&mut self, states: &[Vec<usize>]) -> Result<Vec<Evaluation<P>>, E> {
        (self.evaluate)(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_by_definition() {
        let c = vec![0, 1, 2, 3, 4];
        assert_eq!(Edit::Skip { start: 1, len: 2 }.apply(&c), vec![0, 3, 4]);
        assert_eq!(Edit::Repeat { start: 1, len: 2, times: 2 }.apply(&c), vec![0, 1, 2, 1, 2, 1, 2, 3, 4]);
        assert_eq!(Edit::Repeat { start: 4, len: 1, times: 1 }.apply(&c), vec![0, 1, 2, 3, 4, 4]);
        assert_eq!(Edit::Skip { start: 0, len: 5 }.apply(&c), Vec::<usize>::new());
    }

    #[test]
    fn preset_names_round_trip() {
        for p in ActionPreset::ALL {
            assert_eq!(p.name().parse::<ActionPreset>().unwrap(), p);
        }
        assert!("papers".parse::<ActionPreset>().unwrap_err().contains("paper"));
    }
}
