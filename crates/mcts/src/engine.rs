//! The tree search itself.
//!
//! One simulation walks down from the root. At each node it either expands a new child (always
//! when the node has no child yet, otherwise with probability ε while untried actions remain) or
//! descends to the child with the highest
//! `UCB(P) = mean_reward(P) − λ·len(P)/N + c·sqrt(ln V / visits(P))`, V the parent's visits.
//! A new child's state is evaluated (or read from the cache when another path already reached
//! it) and its reward is backed up along the path. This follows the authors' released code:
//! the tree deepens along the best branch and widens by ε-random expansion.

use std::collections::HashMap;
use std::hash::Hash;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::seed::SearchRng;

/// What evaluating a state produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<P> {
    /// In [0, 1] (clamped by the engine).
    pub reward: f64,
    pub payload: P,
}

/// A search problem. States are compared and hashed to cache evaluations.
pub trait Problem {
    type State: Clone + Eq + Hash;
    type Action: Clone;
    type Payload: Clone;
    /// Why an evaluation failed; the search stops at the first one and returns it.
    type Error;

    /// The state the search starts from (evaluated first).
    fn root(&self) -> Self::State;
    /// Legal actions at `state`, in a deterministic order.
    fn actions(&self, state: &Self::State) -> Vec<Self::Action>;
    /// The state an action leads to.
    fn apply(&self, state: &Self::State, action: &Self::Action) -> Self::State;
    /// Length used for the bounds and the length penalty (chain length for chains).
    fn length(&self, state: &Self::State) -> usize;
    /// Extra validity constraints beyond the length bounds; invalid states are never evaluated.
    fn is_valid(&self, _state: &Self::State) -> bool {
        true
    }
    /// The expensive part: one evaluation per state, in order. Each distinct state is passed
    /// at most once over a whole search; a batch holds up to [`MctsConfig::batch`] states.
    fn evaluate(&mut self, states: &[Self::State]) -> Result<Vec<Evaluation<Self::Payload>>, Self::Error>;
}

/// Search settings. Defaults are the authors' (λ = 5, c = √2, ε = 0.1, 200 simulations).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MctsConfig {
    pub simulations: usize,
    pub lambda: f64,
    pub c: f64,
    pub epsilon: f64,
    /// N in `len(P)/N` (the model's layer count for chains).
    pub length_norm: f64,
    pub min_len: usize,
    pub max_len: usize,
    /// Stop once a state with reward 1 and length ≤ N − m is found (Some(m)).
    pub early_stop_margin: Option<usize>,
    /// Walks per round whose new states are evaluated together (see the module docs); 1 is the
    /// one-at-a-time search.
    #[serde(default = "one")]
    pub batch: usize,
}

pub(crate) fn one() -> usize {
    1
}

impl MctsConfig {
    pub fn new(length_norm: usize, min_len: usize, max_len: usize) -> Self {
        MctsConfig {
            simulations: 200,
            lambda: 5.0,
            c: std::f64::consts::SQRT_2,
            epsilon: 0.1,
            length_norm: length_norm.max(1) as f64,
            min_len,
            max_len,
            early_stop_margin: None,
            batch: 1,
        }
    }
}

/// One distinct state the search evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedState<S, P> {
    pub state: S,
    pub reward: f64,
    pub payload: P,
    pub length: usize,
    /// Visits summed over every tree node holding this state.
    pub visits: usize,
    /// Simulation during which it was first evaluated (0 = the root, before any simulation).
    pub first_simulation: usize,
}

/// Everything a search did.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult<S, P> {
    /// In order of first evaluation; the root first.
    pub evaluated: Vec<EvaluatedState<S, P>>,
    /// Simulations run (the budget, unless stopped early or the space was exhausted).
    pub simulations: usize,
    pub stopped_early: bool,
}

impl<S, P> SearchResult<S, P> {
    /// Distinct states evaluated (including the root).
    pub fn evaluations(&self) -> usize {
        self.evaluated.len()
    }

    /// Index of the best state: highest reward, then shortest, then first found.
    pub fn best(&self) -> Option<usize> {
        best_index(self.evaluated.iter().map(|e| (e.reward, e.length)))
    }

    /// Indices of the Pareto front of (reward ↑, length ↓), ordered by length.
    pub fn pareto_front(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.evaluated.len()).collect();
        idx.sort_by(|&a, &b| {
            let (ea, eb) = (&self.evaluated[a], &self.evaluated[b]);
            ea.length.cmp(&eb.length).then(eb.reward.total_cmp(&ea.reward)).then(a.cmp(&b))
        });
        let mut front = Vec::new();
        let mut best_reward = f64::NEG_INFINITY;
        for i in idx {
            if self.evaluated[i].reward > best_reward {
                best_reward = self.evaluated[i].reward;
                front.push(i);
            }
        }
        front
    }
}

/// Highest reward, then shortest length, then earliest: the index of the winner.
pub(crate) fn best_index(items: impl Iterator<Item = (f64, usize)>) -> Option<usize> {
    let mut best: Option<(usize, f64, usize)> = None;
    for (i, (r, l)) in items.enumerate() {
        let better = match best {
            None => true,
            Some((_, br, bl)) => r > br || (r == br && l < bl),
        };
        if better {
            best = Some((i, r, l));
        }
    }
    best.map(|(i, _, _)| i)
}

struct Node<A> {
    /// Index into the evaluated list (the node's state and reward).
    eval: usize,
    visits: usize,
    total_reward: f64,
    children: Vec<usize>,
    /// Untried actions, shuffled once when first needed; popped from the end.
    untried: Option<Vec<A>>,
    /// Nothing left to expand here or below.
    exhausted: bool,
}

/// A state known to the search: queued for evaluation, or evaluated (`outcome` set).
pub(crate) struct Entry<S, P> {
    pub state: S,
    pub length: usize,
    pub first_simulation: usize,
    pub outcome: Option<(f64, P)>,
}

/// An evaluated state of problem `P`.
type Evaluated<P> = EvaluatedState<<P as Problem>::State, <P as Problem>::Payload>;

/// Cache of evaluations plus the bookkeeping shared with the random baseline. New states are
/// queued and evaluated together by [`Evaluator::flush`].
pub(crate) struct Evaluator<'p, P: Problem> {
    pub problem: &'p mut P,
    pub index: HashMap<P::State, usize>,
    pub entries: Vec<Entry<P::State, P::Payload>>,
    /// Entries waiting for evaluation, in the order they were queued.
    pending: Vec<usize>,
    pub min_len: usize,
    pub max_len: usize,
}

impl<'p, P: Problem> Evaluator<'p, P> {
    pub fn new(problem: &'p mut P, min_len: usize, max_len: usize) -> Self {
        Evaluator { problem, index: HashMap::new(), entries: Vec::new(), pending: Vec::new(), min_len, max_len }
    }

    pub fn admissible(&self, state: &P::State) -> bool {
        let len = self.problem.length(state);
        len >= self.min_len && len <= self.max_len && self.problem.is_valid(state)
    }

    /// The entry index of `state`, queuing it for evaluation if new. `state` must be admissible.
    pub fn get(&mut self, state: &P::State, simulation: usize) -> usize {
        if let Some(&i) = self.index.get(state) {
            return i;
        }
        let i = self.entries.len();
        let length = self.problem.length(state);
        self.entries.push(Entry { state: state.clone(), length, first_simulation: simulation, outcome: None });
        self.index.insert(state.clone(), i);
        self.pending.push(i);
        i
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Evaluates every queued state in one call.
    pub fn flush(&mut self) -> Result<(), P::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let states: Vec<P::State> = self.pending.iter().map(|&i| self.entries[i].state.clone()).collect();
        let results = self.problem.evaluate(&states)?;
        assert_eq!(results.len(), states.len(), "Problem::evaluate must return one evaluation per state");
        for (i, e) in self.pending.drain(..).zip(results) {
            self.entries[i].outcome = Some((e.reward.clamp(0.0, 1.0), e.payload));
        }
        Ok(())
    }

    /// The reward of an evaluated entry.
    pub fn reward(&self, i: usize) -> f64 {
        self.entries[i].outcome.as_ref().expect("evaluated before use").0
    }

    /// The evaluated states in order of first evaluation, with `visits[i]` visits each.
    pub fn finish(mut self, visits: impl Fn(usize) -> usize) -> Result<Vec<Evaluated<P>>, P::Error> {
        self.flush()?;
        Ok(self
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let (reward, payload) = e.outcome.expect("flushed");
                EvaluatedState {
                    state: e.state,
                    reward,
                    payload,
                    length: e.length,
                    visits: visits(i),
                    first_simulation: e.first_simulation,
                }
            })
            .collect())
    }
}

/// Runs MCTS from `problem.root()`. The root is evaluated even if it lies outside the length
/// bounds (it is the reference the search improves on); no other out-of-bounds state is. A failed
/// evaluation ends the search with its error.
pub fn search<P: Problem>(
    problem: &mut P, config: &MctsConfig, rng: &mut SearchRng,
) -> Result<SearchResult<P::State, P::Payload>, P::Error> {
    let root_state = problem.root();
    let mut ev = Evaluator::new(problem, config.min_len, config.max_len);
    let root_eval = ev.get(&root_state, 0);
    ev.flush()?;
    let root_reward = ev.reward(root_eval);
    let mut nodes: Vec<Node<P::Action>> = vec![Node {
        eval: root_eval,
        visits: 1,
        total_reward: root_reward,
        children: vec![],
        untried: None,
        exhausted: false,
    }];
    let early_stop_len = config.early_stop_margin.map(|m| (config.length_norm as usize).saturating_sub(m));
    let stop_now = |ev: &Evaluator<'_, P>, i: usize| {
        early_stop_len.is_some_and(|l| ev.reward(i) >= 1.0 && ev.entries[i].length <= l)
    };
    let mut stopped_early = stop_now(&ev, root_eval);
    let mut simulations = 0;
    let mut exhausted = false;

    while simulations < config.simulations && !stopped_early && !exhausted {
        // A round: up to `batch` walks, each ending in a newly expanded child, with virtual loss.
        let mut round: Vec<(Vec<usize>, usize)> = Vec::new();
        while round.len() < config.batch.max(1) && simulations < config.simulations {
            let Some((path, leaf)) = walk(&mut nodes, &mut ev, rng, config, simulations + 1) else {
                exhausted = true;
                break;
            };
            simulations += 1;
            for &p in &path {
                nodes[p].visits += 1; // the virtual loss: a visit whose reward comes after the batch
            }
            round.push((path, leaf));
        }
        ev.flush()?;
        for (path, leaf) in round {
            let eval = nodes[leaf].eval;
            let reward = ev.reward(eval);
            for &p in &path {
                nodes[p].total_reward += reward;
            }
            stopped_early |= stop_now(&ev, eval);
        }
    }
    let mut visits = vec![0; ev.entries.len()];
    for n in &nodes {
        visits[n.eval] += n.visits;
    }
    Ok(SearchResult { evaluated: ev.finish(|i| visits[i])?, simulations, stopped_early })
}

/// One walk down from the root until a child is expanded (for `simulation`): the path and the
/// new child. A walk that ends in a node with nothing left marks it exhausted and starts over;
/// None once the root itself is exhausted.
fn walk<P: Problem>(
    nodes: &mut Vec<Node<P::Action>>, ev: &mut Evaluator<'_, P>, rng: &mut SearchRng, config: &MctsConfig,
    simulation: usize,
) -> Option<(Vec<usize>, usize)> {
    'walk: loop {
        if nodes[0].exhausted {
            return None;
        }
        let mut path = vec![0usize];
        let mut node = 0usize;
        loop {
            if nodes[node].untried.is_none() {
                let mut actions = ev.problem.actions(&ev.entries[nodes[node].eval].state);
                actions.shuffle(rng);
                nodes[node].untried = Some(actions);
            }
            let open_children = nodes[node].children.iter().any(|&c| !nodes[c].exhausted);
            let can_expand = nodes[node].untried.as_ref().is_some_and(|u| !u.is_empty());
            if can_expand
                && (!open_children || rng.random::<f64>() < config.epsilon)
                && let Some(child) = expand_one(nodes, node, ev, simulation)
            {
                path.push(child);
                return Some((path, child));
            }
            if !open_children {
                if nodes[node].untried.as_ref().is_some_and(Vec::is_empty) {
                    nodes[node].exhausted = true;
                }
                continue 'walk;
            }
            node = select_child(nodes, node, &ev.entries, config);
            path.push(node);
        }
    }
}

/// The open child of `node` with the highest UCB score (first one on ties).
fn select_child<A, S, P>(nodes: &[Node<A>], node: usize, entries: &[Entry<S, P>], config: &MctsConfig) -> usize {
    let n = &nodes[node];
    let ln_v = (n.visits.max(1) as f64).ln();
    let mut best = usize::MAX;
    let mut best_score = f64::NEG_INFINITY;
    for &ch in &n.children {
        let c = &nodes[ch];
        if c.exhausted {
            continue;
        }
        let mean = c.total_reward / c.visits as f64;
        let len = entries[c.eval].length as f64;
        let score = mean - config.lambda * len / config.length_norm + config.c * (ln_v / c.visits as f64).sqrt();
        if best == usize::MAX || score > best_score {
            best_score = score;
            best = ch;
        }
    }
    best
}

/// Pops untried actions of `node` until one yields an admissible state that is not already a
/// child; creates that child (queuing its state for evaluation if new). None if the actions run
/// out.
fn expand_one<P: Problem>(
    nodes: &mut Vec<Node<P::Action>>, node: usize, ev: &mut Evaluator<'_, P>, simulation: usize,
) -> Option<usize> {
    loop {
        let action = nodes[node].untried.as_mut().expect("actions computed").pop()?;
        let parent_state = &ev.entries[nodes[node].eval].state;
        let state = ev.problem.apply(parent_state, &action);
        if !ev.admissible(&state) {
            continue;
        }
        if let Some(&existing) = ev.index.get(&state)
            && nodes[node].children.iter().any(|&c| nodes[c].eval == existing)
        {
            continue;
        }
        let eval = ev.get(&state, simulation);
        let child = nodes.len();
        nodes.push(Node { eval, visits: 0, total_reward: 0.0, children: vec![], untried: None, exhausted: false });
        nodes[node].children.push(child);
        return Some(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_prefers_reward_then_length_then_order() {
        assert_eq!(best_index([(0.0, 3), (1.0, 9), (1.0, 5), (1.0, 5)].into_iter()), Some(2));
        assert_eq!(best_index(std::iter::empty()), None);
    }

    #[test]
    fn pareto_front_is_monotone() {
        let mk =
            |reward, length| EvaluatedState { state: (), reward, payload: (), length, visits: 1, first_simulation: 0 };
        let r = SearchResult {
            evaluated: vec![mk(0.0, 10), mk(0.5, 12), mk(1.0, 20), mk(0.2, 30), mk(0.5, 11)],
            simulations: 0,
            stopped_early: false,
        };
        assert_eq!(r.pareto_front(), vec![0, 4, 2]);
    }
}
