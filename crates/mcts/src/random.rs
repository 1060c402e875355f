//! The random-search baseline: random edit sequences from the same action set, until the same
//! number of distinct states as the MCTS run has been evaluated.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::engine::{Evaluator, Problem, SearchResult};
use crate::seed::SearchRng;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomConfig {
    /// Distinct states to evaluate, the root included (use the MCTS run's count).
    pub evaluations: usize,
    /// Each sample applies a uniformly drawn number of edits in 1..=max_edits to the root.
    pub max_edits: usize,
    pub min_len: usize,
    pub max_len: usize,
    /// New chains evaluated together per [`Problem::evaluate`] call (1: one at a time; the
    /// draws, and so the chains, do not depend on it).
    #[serde(default = "crate::engine::one")]
    pub batch: usize,
}

/// Draws random edit sequences from the root until `config.evaluations` distinct admissible
/// states are evaluated (or 100 draws in a row find nothing new: the reachable space is used up),
/// evaluating them in batches of `config.batch`. A failed evaluation ends the search with its error.
pub fn random_search<P: Problem>(
    problem: &mut P, config: &RandomConfig, rng: &mut SearchRng,
) -> Result<SearchResult<P::State, P::Payload>, P::Error> {
    let root = problem.root();
    let mut ev = Evaluator::new(problem, config.min_len, config.max_len);
    ev.get(&root, 0);
    ev.flush()?;
    let mut draws = 0usize;
    let mut fruitless = 0usize;
    while ev.entries.len() < config.evaluations && fruitless < 100 {
        draws += 1;
        let depth = rng.random_range(1..=config.max_edits.max(1));
        let mut state = root.clone();
        for _ in 0..depth {
            let mut actions = ev.problem.actions(&state);
            actions.shuffle(rng);
            let next = actions.iter().map(|a| ev.problem.apply(&state, a)).find(|s| ev.admissible(s));
            match next {
                Some(s) => state = s,
                None => break,
            }
        }
        if state != root && ev.admissible(&state) && !ev.index.contains_key(&state) {
            ev.get(&state, draws);
            fruitless = 0;
            if ev.pending() >= config.batch.max(1) {
                ev.flush()?;
            }
        } else {
            fruitless += 1;
        }
    }
    Ok(SearchResult { evaluated: ev.finish(|_| 1)?, simulations: draws, stopped_early: false })
}
