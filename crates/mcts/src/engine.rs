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
    /// The expensive part. Called at most once per distinct state.
    fn evaluate(&mut self, state: &Self::State) -> Evaluation<Self::Payload>;
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

/// Cache of evaluations plus the bookkeeping shared with the random baseline.
pub(crate) struct Evaluator<'p, P: Problem> {
    pub problem: &'p mut P,
    pub index: HashMap<P::State, usize>,
    pub evaluated: Vec<EvaluatedState<P::State, P::Payload>>,
    pub min_len: usize,
    pub max_len: usize,
}

impl<'p, P: Problem> Evaluator<'p, P> {
    pub fn new(problem: &'p mut P, min_len: usize, max_len: usize) -> Self {
        Evaluator { problem, index: HashMap::new(), evaluated: Vec::new(), min_len, max_len }
    }

    pub fn admissible(&self, state: &P::State) -> bool {
        let len = self.problem.length(state);
        len >= self.min_len && len <= self.max_len && self.problem.is_valid(state)
    }

    /// The evaluation index of `state`, evaluating it if new. `state` must be admissible.
    pub fn get(&mut self, state: &P::State, simulation: usize) -> (usize, bool) {
        if let Some(&i) = self.index.get(state) {
            return (i, false);
        }
        let e = self.problem.evaluate(state);
        let i = self.evaluated.len();
        self.evaluated.push(EvaluatedState {
            state: state.clone(),
            reward: e.reward.clamp(0.0, 1.0),
            payload: e.payload,
            length: self.problem.length(state),
            visits: 0,
            first_simulation: simulation,
        });
        self.index.insert(state.clone(), i);
        (i, true)
    }
}

/// Runs MCTS from `problem.root()`. The root is evaluated even if it lies outside the length
/// bounds (it is the reference the search improves on); no other out-of-bounds state is.
pub fn search<P: Problem>(problem: &mut P, config: &MctsConfig, rng: &mut SearchRng) -> SearchResult<P::State, P::Payload> {
    let root_state = problem.root();
    let mut ev = Evaluator::new(problem, config.min_len, config.max_len);
    let (root_eval, _) = ev.get(&root_state, 0);
    let root_reward = ev.evaluated[root_eval].reward;
    let mut nodes: Vec<Node<P::Action>> =
        vec![Node { eval: root_eval, visits: 1, total_reward: root_reward, children: vec![], untried: None, exhausted: false }];
    let early_stop_len = config.early_stop_margin.map(|m| (config.length_norm as usize).saturating_sub(m));
    let stop_now = |e: &EvaluatedState<P::State, P::Payload>| early_stop_len.is_some_and(|l| e.reward >= 1.0 && e.length <= l);
    let mut stopped_early = stop_now(&ev.evaluated[root_eval]);
    let mut simulations = 0;

    'sims: while simulations < config.simulations && !stopped_early {
        // Walk down until a child is expanded. A walk that ends in a node with nothing left marks
        // it exhausted and starts over; it does not count as a simulation.
        let (path, leaf) = 'walk: loop {
            if nodes[0].exhausted {
                break 'sims;
            }
            let mut path = vec![0usize];
            let mut node = 0usize;
            loop {
                if nodes[node].untried.is_none() {
                    let mut actions = ev.problem.actions(&ev.evaluated[nodes[node].eval].state);
                    actions.shuffle(rng);
                    nodes[node].untried = Some(actions);
                }
                let open_children = nodes[node].children.iter().any(|&c| !nodes[c].exhausted);
                let can_expand = nodes[node].untried.as_ref().is_some_and(|u| !u.is_empty());
                if can_expand
                    && (!open_children || rng.random::<f64>() < config.epsilon)
                    && let Some(child) = expand_one(&mut nodes, node, &mut ev, simulations + 1)
                {
                    path.push(child);
                    break 'walk (path, child);
                }
                if !open_children {
                    if nodes[node].untried.as_ref().is_some_and(Vec::is_empty) {
                        nodes[node].exhausted = true;
                    }
                    continue 'walk;
                }
                node = select_child(&nodes, node, &ev.evaluated, config);
                path.push(node);
            }
        };
        simulations += 1;
        let reward = ev.evaluated[nodes[leaf].eval].reward;
        for &p in &path {
            nodes[p].visits += 1;
            nodes[p].total_reward += reward;
        }
        stopped_early = stop_now(&ev.evaluated[nodes[leaf].eval]);
    }
    for n in &nodes {
        ev.evaluated[n.eval].visits += n.visits;
    }
    SearchResult { evaluated: ev.evaluated, simulations, stopped_early }
}

/// The open child of `node` with the highest UCB score (first one on ties).
fn select_child<A, S, P>(nodes: &[Node<A>], node: usize, evaluated: &[EvaluatedState<S, P>], config: &MctsConfig) -> usize {
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
        let len = evaluated[c.eval].length as f64;
        let score = mean - config.lambda * len / config.length_norm + config.c * (ln_v / c.visits as f64).sqrt();
        if best == usize::MAX || score > best_score {
            best_score = score;
            best = ch;
        }
    }
    best
}

/// Pops untried actions of `node` until one yields an admissible state that is not already a
/// child; creates that child (evaluating its state if new). None if the actions run out.
fn expand_one<P: Problem>(
    nodes: &mut Vec<Node<P::Action>>,
    node: usize,
    ev: &mut Evaluator<'_, P>,
    simulation: usize,
) -> Option<usize> {
    loop {
        let action = nodes[node].untried.as_mut().expect("actions computed").pop()?;
        let parent_state = &ev.evaluated[nodes[node].eval].state;
        let state = ev.problem.apply(parent_state, &action);
        if !ev.admissible(&state) {
            continue;
        }
        if let Some(&existing) = ev.index.get(&state)
            && nodes[node].children.iter().any(|&c| nodes[c].eval == existing)
        {
            continue;
        }
        let (eval, _) = ev.get(&state, simulation);
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
        let mk = |reward, length| EvaluatedState { state: (), reward, payload: (), length, visits: 1, first_simulation: 0 };
        let r = SearchResult { evaluated: vec![mk(0.0, 10), mk(0.5, 12), mk(1.0, 20), mk(0.2, 30), mk(0.5, 11)], simulations: 0, stopped_early: false };
        assert_eq!(r.pareto_front(), vec![0, 4, 2]);
    }
}
