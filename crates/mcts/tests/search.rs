//! Engine properties: evaluation discipline, budget, determinism, preset definitions, and that
//! MCTS beats random search on a problem with a known optimum.

use std::collections::HashSet;

use cola_mcts::chains::{ActionPreset, ChainProblem, ChainSpace, Edit};
use cola_mcts::{Evaluation, MctsConfig, RandomConfig, random_search, sample_rng, search};
use proptest::prelude::*;

type Calls = std::rc::Rc<std::cell::RefCell<Vec<Vec<usize>>>>;
type Evaluate = Box<dyn FnMut(&[Vec<usize>]) -> Result<Vec<Evaluation<usize>>, std::convert::Infallible>>;
/// A chain problem whose evaluations go through a recording closure.
type Recorded = ChainProblem<Evaluate>;

/// A chain problem that records every evaluation call.
fn recording(n: usize, preset: ActionPreset, reward: impl Fn(&[usize]) -> f64 + 'static) -> (Recorded, Calls) {
    let calls = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = calls.clone();
    let problem = ChainProblem {
        space: ChainSpace::new(n, preset),
        evaluate: Box::new(move |batch: &[Vec<usize>]| {
            log.borrow_mut().extend(batch.iter().cloned());
            Ok(batch.iter().map(|c| Evaluation { reward: reward(c), payload: c.len() }).collect())
        }) as Evaluate,
    };
    (problem, calls)
}

fn preset() -> impl Strategy<Value = ActionPreset> {
    prop::sample::select(ActionPreset::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn evaluates_each_state_once_within_bounds_and_budget(
        n in 4usize..14, preset in preset(), seed in 0u64..1000, budget in 1usize..80,
        lo in 0usize..4, hi in 0usize..6,
    ) {
        let (min_len, max_len) = (n.saturating_sub(lo).max(1), n + hi);
        let config = MctsConfig { simulations: budget, ..MctsConfig::new(n, min_len, max_len) };
        let (mut problem, calls) = recording(n, preset, |c| if c.len() % 3 == 0 { 1.0 } else { 0.0 });
        let result = search(&mut problem, &config, &mut sample_rng(seed, "s")).unwrap();
        let calls = calls.borrow();
        let distinct: HashSet<_> = calls.iter().collect();
        prop_assert_eq!(distinct.len(), calls.len(), "a state was evaluated twice");
        prop_assert_eq!(calls.len(), result.evaluations());
        for (i, c) in calls.iter().enumerate().skip(1) {
            prop_assert!(c.len() >= min_len && c.len() <= max_len, "out of bounds: {:?}", c);
            prop_assert!(c.iter().all(|&l| l < n));
            prop_assert_eq!(&result.evaluated[i].state, c);
        }
        prop_assert!(result.simulations <= budget);
        // Each simulation evaluates at most one new state (plus the root before any simulation).
        prop_assert!(result.evaluations() <= budget + 1);
        // The budget is spent exactly unless the reachable space ran out.
        if result.simulations < budget {
            let reachable = reachable_states(n, preset, min_len, max_len, budget + 2);
            prop_assert!(
                reachable <= budget + 1,
                "stopped at {} of {budget} with {reachable} states reachable",
                result.simulations
            );
        }
    }

    #[test]
    fn same_seed_same_result_other_sample_other_result(n in 8usize..14, preset in preset(), seed in 0u64..1000) {
        let config = MctsConfig { simulations: 40, ..MctsConfig::new(n, n / 2, n + 4) };
        let run = |id: &str| {
            let (mut p, _) = recording(n, preset, |c| (c.iter().sum::<usize>() % 5) as f64 / 4.0);
            search(&mut p, &config, &mut sample_rng(seed, id)).unwrap()
        };
        let (a, b, c) = (run("q1"), run("q1"), run("q2"));
        prop_assert_eq!(&a, &b);
        let states = |r: &cola_mcts::SearchResult<Vec<usize>, usize>| {
            r.evaluated.iter().map(|e| e.state.clone()).collect::<Vec<_>>()
        };
        prop_assert_ne!(states(&a), states(&c));
    }

    #[test]
    fn best_is_the_shortest_state_with_the_highest_reward(n in 6usize..12, seed in 0u64..500) {
        let config = MctsConfig { simulations: 60, ..MctsConfig::new(n, 2, n + 6) };
        let (mut p, _) = recording(n, ActionPreset::Paper, |c| if c.contains(&1) { 1.0 } else { 0.0 });
        let r = search(&mut p, &config, &mut sample_rng(seed, "b")).unwrap();
        let best = &r.evaluated[r.best().unwrap()];
        let top = r.evaluated.iter().map(|e| e.reward).fold(0.0, f64::max);
        prop_assert_eq!(best.reward, top);
        let shortest = r.evaluated.iter().filter(|e| e.reward == top).map(|e| e.length).min().unwrap();
        prop_assert_eq!(best.length, shortest);
        // The Pareto front ends at the best reward and gets shorter as reward drops.
        let front = r.pareto_front();
        prop_assert_eq!(r.evaluated[*front.last().unwrap()].reward, top);
    }

    #[test]
    fn random_baseline_spends_exactly_the_evaluation_budget(
        n in 8usize..14, preset in preset(), seed in 0u64..500, budget in 2usize..60,
    ) {
        let (mut p, calls) = recording(n, preset, |_| 0.0);
        let cfg = RandomConfig { evaluations: budget, max_edits: 6, min_len: n / 2, max_len: n + 4, batch: 1 };
        let r = random_search(&mut p, &cfg, &mut sample_rng(seed, "r")).unwrap();
        let calls = calls.borrow();
        prop_assert_eq!(calls.iter().collect::<HashSet<_>>().len(), calls.len());
        prop_assert!(calls.iter().skip(1).all(|c| c.len() >= n / 2 && c.len() <= n + 4));
        prop_assert!(r.evaluations() <= budget);
        if reachable_states(n, preset, n / 2, n + 4, budget + 1) > budget {
            prop_assert_eq!(r.evaluations(), budget);
        }
    }
}

/// Counts states reachable from the root within the bounds, up to `cap` (breadth-first).
fn reachable_states(n: usize, preset: ActionPreset, min_len: usize, max_len: usize, cap: usize) -> usize {
    let space = ChainSpace::new(n, preset);
    let mut seen: HashSet<Vec<usize>> = HashSet::from([space.root.clone()]);
    let mut frontier = vec![space.root.clone()];
    while let Some(s) = frontier.pop() {
        for e in space.edits(&s) {
            let t = e.apply(&s);
            if t.len() >= min_len && t.len() <= max_len && !t.is_empty() && seen.insert(t.clone()) {
                if seen.len() >= cap {
                    return seen.len();
                }
                frontier.push(t);
            }
        }
    }
    seen.len()
}

/// Independent enumeration of each preset's edits on a chain (written from the definitions).
fn expected_edits(preset: ActionPreset, chain: &[usize], at_root: bool) -> HashSet<Edit> {
    let l = chain.len();
    let mut out = HashSet::new();
    let blocks = |k: usize| (0..l).filter(move |&s| s + k <= l);
    let (skip_sizes, repeat_sizes, repeat_times): (Vec<usize>, Vec<usize>, Vec<usize>) = match preset {
        ActionPreset::Paper => (vec![1, 2, 3, 4], vec![1, 2, 3, 4], vec![1, 2, 3, 4]),
        ActionPreset::SkipOnly => (vec![1, 2, 3, 4], vec![], vec![]),
        ActionPreset::RepeatOnly => (vec![], vec![1, 2, 3, 4], vec![1, 2, 3, 4]),
        ActionPreset::Drllm => (vec![1, 2], vec![1], vec![1]),
        ActionPreset::Polar if at_root => (vec![1, 2, 3, 4], vec![1, 2, 3, 4], vec![1]),
        ActionPreset::Polar => (vec![1], vec![1], vec![1]),
    };
    for &k in &skip_sizes {
        for s in blocks(k) {
            out.insert(Edit::Skip { start: s, len: k });
        }
    }
    for &k in &repeat_sizes {
        for &r in &repeat_times {
            for s in blocks(k) {
                let after = Edit::Repeat { start: s, len: k, times: r }.apply(chain);
                let at_most_twice = (0..10).all(|layer| after.iter().filter(|&&x| x == layer).count() <= 2);
                if preset != ActionPreset::Polar || at_most_twice {
                    out.insert(Edit::Repeat { start: s, len: k, times: r });
                }
            }
        }
    }
    out
}

#[test]
fn presets_generate_exactly_their_definitions() {
    let chains: Vec<Vec<usize>> =
        vec![(0..6).collect(), vec![0, 1, 1, 2, 4, 5], vec![0, 2, 3], vec![3, 3, 1, 0, 5, 5, 2], vec![4]];
    for preset in ActionPreset::ALL {
        for chain in &chains {
            for at_root in [true, false] {
                let got: Vec<Edit> = preset.edits(chain, at_root, 6);
                let set: HashSet<Edit> = got.iter().copied().collect();
                assert_eq!(set.len(), got.len(), "{preset}: duplicate edits for {chain:?}");
                assert_eq!(set, expected_edits(preset, chain, at_root), "{preset} on {chain:?} (root: {at_root})");
            }
        }
    }
    // Counts for the paper preset on a 30-layer identity chain: 4 block sizes of skips, and
    // 4 sizes x 4 repeat counts of repeats, each at every position where the block fits.
    let paper = ActionPreset::Paper.edits(&(0..30).collect::<Vec<_>>(), true, 30);
    assert_eq!(paper.len(), (30 + 29 + 28 + 27) * (1 + 4));
}

#[test]
fn early_stop_ends_the_search_at_a_short_correct_state() {
    let n = 10;
    let config = MctsConfig { simulations: 500, early_stop_margin: Some(1), ..MctsConfig::new(n, 3, 14) };
    let (mut p, _) = recording(n, ActionPreset::Drllm, |c| if c.len() <= 9 && !c.contains(&4) { 1.0 } else { 0.0 });
    let r = search(&mut p, &config, &mut sample_rng(3, "e")).unwrap();
    assert!(r.stopped_early);
    let last = r.evaluated.last().unwrap();
    assert_eq!(last.reward, 1.0);
    assert!(last.length < n);
    assert!(r.simulations < 500);
}

/// A failed evaluation ends MCTS and the random search at once with that error: no evaluation
/// call after it, in batches of one and of four.
#[test]
fn a_failed_evaluation_ends_the_search_with_its_error() {
    let n = 10;
    for batch in [1, 4] {
        let calls = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let seen = calls.clone();
        let mut p = ChainProblem {
            space: ChainSpace::new(n, ActionPreset::Paper),
            evaluate: move |states: &[Vec<usize>]| {
                seen.set(seen.get() + 1);
                // The third call fails; each call before it succeeds.
                if seen.get() == 3 {
                    return Err(format!("call 3 of {} states", states.len()));
                }
                Ok(states.iter().map(|_| Evaluation { reward: 0.0, payload: () }).collect())
            },
        };
        let config = MctsConfig { simulations: 50, batch, ..MctsConfig::new(n, 3, 14) };
        let err = search(&mut p, &config, &mut sample_rng(1, "f")).unwrap_err();
        assert!(err.starts_with("call 3 of"), "{err}");
        assert_eq!(calls.get(), 3, "batch {batch}: evaluations after the failure");
        calls.set(0);
        let cfg = RandomConfig { evaluations: 50, max_edits: 3, min_len: 3, max_len: 14, batch };
        assert!(random_search(&mut p, &cfg, &mut sample_rng(1, "f")).is_err());
        assert_eq!(calls.get(), 3, "random, batch {batch}: evaluations after the failure");
    }
}

/// Hidden optimum: a 10-layer model, chains of at least 6 steps; the reward is the share of the
/// four hidden layers 1, 3, 5 and 8 that the chain leaves out. Reward 1 therefore needs exactly
/// those four layers dropped and nothing else lost; each one dropped is a step up that a search
/// can follow, while random edit sequences rarely drop exactly those four.
fn hidden_target(c: &[usize]) -> f64 {
    const HIDDEN: [usize; 4] = [1, 3, 5, 8];
    HIDDEN.iter().filter(|l| !c.contains(l)).count() as f64 / 4.0
}

#[test]
fn mcts_finds_the_hidden_optimum_more_often_than_random_search() {
    let n = 10;
    let seeds = 40u64;
    let (mut mcts_hits, mut random_hits) = (0, 0);
    for seed in 0..seeds {
        let config = MctsConfig { simulations: 200, ..MctsConfig::new(n, 6, 12) };
        let (mut p, _) = recording(n, ActionPreset::Drllm, hidden_target);
        let r = search(&mut p, &config, &mut sample_rng(seed, "hidden")).unwrap();
        let best = &r.evaluated[r.best().unwrap()];
        mcts_hits += (best.reward == 1.0) as usize;
        let (mut p, _) = recording(n, ActionPreset::Drllm, hidden_target);
        let cfg = RandomConfig { evaluations: r.evaluations(), max_edits: 4, min_len: 6, max_len: 12, batch: 1 };
        let rr = random_search(&mut p, &cfg, &mut sample_rng(seed, "hidden")).unwrap();
        assert_eq!(rr.evaluations(), r.evaluations(), "equal budgets");
        random_hits += (rr.evaluated[rr.best().unwrap()].reward == 1.0) as usize;
    }
    eprintln!("hidden optimum found: MCTS {mcts_hits}/{seeds}, random {random_hits}/{seeds}");
    assert!(mcts_hits >= random_hits + seeds as usize / 4, "MCTS {mcts_hits} vs random {random_hits} of {seeds}");
}

/// A chain problem that records the size of every evaluation batch and every state evaluated.
fn batch_recording(
    n: usize, preset: ActionPreset, reward: fn(&[usize]) -> f64,
) -> (Recorded, Calls, std::rc::Rc<std::cell::RefCell<Vec<usize>>>) {
    let sizes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let calls: Calls = Default::default();
    let (log_sizes, log_calls) = (sizes.clone(), calls.clone());
    let problem = ChainProblem {
        space: ChainSpace::new(n, preset),
        evaluate: Box::new(move |batch: &[Vec<usize>]| {
            log_sizes.borrow_mut().push(batch.len());
            log_calls.borrow_mut().extend(batch.iter().cloned());
            Ok(batch.iter().map(|c| Evaluation { reward: reward(c), payload: c.len() }).collect())
        }) as Evaluate,
    };
    (problem, calls, sizes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Batched MCTS and random search: batches of at most K states, each state evaluated once,
    /// within the bounds and the budget, and the same result for the same seed.
    #[test]
    fn batched_search_keeps_the_evaluation_discipline(
        n in 6usize..12, preset in preset(), seed in 0u64..500, k in 2usize..9, budget in 1usize..60,
    ) {
        let reward = |c: &[usize]| if c.len().is_multiple_of(3) { 1.0 } else { 0.0 };
        let config = MctsConfig { simulations: budget, batch: k, ..MctsConfig::new(n, n / 2, n + 3) };
        let (mut p, calls, sizes) = batch_recording(n, preset, reward);
        let r = search(&mut p, &config, &mut sample_rng(seed, "k")).unwrap();
        let calls = calls.borrow();
        prop_assert_eq!(calls.iter().collect::<HashSet<_>>().len(), calls.len(), "a state was evaluated twice");
        prop_assert_eq!(calls.len(), r.evaluations());
        prop_assert!(sizes.borrow().iter().all(|&s| s >= 1 && s <= k), "batch sizes {:?}", sizes.borrow());
        prop_assert!(calls.iter().skip(1).all(|c| c.len() >= n / 2 && c.len() <= n + 3));
        prop_assert!(r.simulations <= budget && r.evaluations() <= budget + 1);
        let (mut p2, _, _) = batch_recording(n, preset, reward);
        prop_assert_eq!(&search(&mut p2, &config, &mut sample_rng(seed, "k")).unwrap(), &r);

        let cfg = RandomConfig { evaluations: budget, max_edits: 5, min_len: n / 2, max_len: n + 3, batch: k };
        let (mut p, calls, sizes) = batch_recording(n, preset, reward);
        let rr = random_search(&mut p, &cfg, &mut sample_rng(seed, "r")).unwrap();
        prop_assert!(sizes.borrow().iter().all(|&s| s >= 1 && s <= k));
        prop_assert_eq!(calls.borrow().iter().collect::<HashSet<_>>().len(), rr.evaluations());
        // The random baseline's draws do not depend on the batch size.
        let (mut p1, _, _) = batch_recording(n, preset, reward);
        let one = random_search(&mut p1, &RandomConfig { batch: 1, ..cfg.clone() }, &mut sample_rng(seed, "r")).unwrap();
        prop_assert_eq!(one, rr);
    }
}

#[test]
fn batched_mcts_finds_the_hidden_optimum_about_as_often_as_one_at_a_time() {
    let n = 10;
    // 120 seeds: over 300 seeds K = 1, 2, 4, 8, 16 found it 116, 130, 121, 115, 119 times.
    let seeds = 120u64;
    let mut hits = [0usize; 2];
    let mut evaluations = [0usize; 2];
    for seed in 0..seeds {
        for (i, k) in [1usize, 8].into_iter().enumerate() {
            let config = MctsConfig { simulations: 200, batch: k, ..MctsConfig::new(n, 6, 12) };
            let (mut p, _) = recording(n, ActionPreset::Drllm, hidden_target);
            let r = search(&mut p, &config, &mut sample_rng(seed, "hidden")).unwrap();
            hits[i] += (r.evaluated[r.best().unwrap()].reward == 1.0) as usize;
            evaluations[i] += r.evaluations();
        }
    }
    eprintln!(
        "hidden optimum found: K = 1 {}/{seeds} ({} evaluations), K = 8 {}/{seeds} ({} evaluations)",
        hits[0], evaluations[0], hits[1], evaluations[1]
    );
    assert!(hits[1] + seeds as usize / 10 >= hits[0], "K = 8 found it {} times, K = 1 {} times", hits[1], hits[0]);
    // Same budget: within 10% of the evaluations.
    assert!(evaluations[1] * 10 >= evaluations[0] * 9 && evaluations[1] * 10 <= evaluations[0] * 11);
}
