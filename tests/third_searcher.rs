//! A searcher defined here, outside the library, runs through search, record, shard merging and
//! report with no code of its own there: its records, report rows, budget curves, layer use and
//! figures come out, and the report's numbers are recounted here from its records.

use std::sync::Arc;

use cola_eval::{EvalError, ItemResult};
use cola_executor::LoadedChainModel;
use cola_executor::backend::Cpu;
use cola_mcts::{Evaluation, SearchRng};
use cola_search::sample::EvaluateChains;
use cola_search::{ChainSearcher, SearchError};
use cola_tests::{TINY_LAYERS as LAYERS, tiny_search_request, write_tiny_fixture};
use serde_json::Value;

/// The original chain, then each chain that skips one layer, in layer order, within the budget.
struct SkipEach;

impl ChainSearcher for SkipEach {
    fn name(&self) -> &str {
        "skip-each"
    }

    fn search(
        &self, evaluate: &mut EvaluateChains<'_>, num_layers: usize, budget: usize, _rng: &mut SearchRng,
    ) -> Result<Vec<(Vec<usize>, Evaluation<ItemResult>)>, EvalError> {
        let original: Vec<usize> = (0..num_layers).collect();
        let mut chains = vec![original.clone()];
        for l in 0..num_layers {
            if chains.len() >= budget {
                break;
            }
            let mut c = original.clone();
            c.remove(l);
            chains.push(c);
        }
        let evaluations = evaluate(&chains)?;
        Ok(chains.into_iter().zip(evaluations).collect())
    }
}

fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_searcher_defined_outside_runs_through_search_record_merge_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, data) = write_tiny_fixture(dir.path(), 8);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let request = |out: &std::path::Path, shard: Option<&str>| {
        let mut req = tiny_search_request(&data, out, LAYERS);
        req.selection.shard = shard.map(|s| s.parse().unwrap());
        req.other_searchers = vec![Arc::new(SkipEach)];
        req
    };
    let whole = dir.path().join("whole");
    cola_search::run_search(&request(&whole, None), &model).unwrap();
    let shards: Vec<_> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("shard-{i}"));
            cola_search::run_search(&request(&out, Some(&format!("{i}/2"))), &model).unwrap();
            out
        })
        .collect();
    let merged = dir.path().join("merged");
    cola_search::report::report_runs(&[shards[1].clone(), shards[0].clone()], &merged).unwrap();
    for f in ["samples.jsonl", "report.json", "best_chain_lengths.svg", "layer_skip_repeat.svg", "budget_curves.svg"] {
        let read = |d: &std::path::Path| std::fs::read_to_string(d.join(f)).unwrap();
        assert!(read(&merged) == read(&whole), "{f}: the merged shards differ from the whole run");
    }

    // The records: its chains in its order, its best the shortest correct one of them.
    let records = read_jsonl(&whole.join("samples.jsonl"));
    assert_eq!(records.len(), 8);
    for r in &records {
        let [mine] = r["other_searchers"].as_array().unwrap().as_slice() else { panic!("one further searcher") };
        assert_eq!(mine["searcher"], "skip-each");
        let chains = mine["chains"].as_array().unwrap();
        let budget = r["evaluations"].as_u64().unwrap() as usize;
        assert_eq!(chains.len(), budget.min(LAYERS + 1));
        assert_eq!(chains[0]["length"], LAYERS as u64, "the original chain first");
        assert!(chains[1..].iter().all(|c| c["length"] == (LAYERS - 1) as u64));
        let best = chains.iter().filter(|c| c["reward"] == 1.0).min_by_key(|c| c["length"].as_u64().unwrap());
        assert_eq!(mine["best_chain"], best.map_or(Value::Null, |c| c["chain"].clone()));
        assert_eq!(mine["best_correct"], best.is_some());
        // The original chain is evaluated alike by every searcher.
        assert_eq!(chains[0]["prediction"], r["chains"][0]["prediction"]);
    }

    // The report: its row recounted from the records.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(whole.join("report.json")).unwrap()).unwrap();
    let task = &report["tasks"][0];
    let [row] = task["other_searchers"].as_array().unwrap().as_slice() else { panic!("one row") };
    assert_eq!(row["searcher"], "skip-each");
    let mine = |r: &Value| r["other_searchers"][0].clone();
    let wrong: Vec<&Value> = records.iter().filter(|r| r["static_correct"] == false).collect();
    let right: Vec<&Value> = records.iter().filter(|r| r["static_correct"] == true).collect();
    let fixed = wrong.iter().filter(|r| mine(r)["best_correct"] == true).count();
    let shortened = right.iter().filter(|r| mine(r)["best_len"].as_u64().is_some_and(|l| l < LAYERS as u64)).count();
    let found = records.iter().filter(|r| mine(r)["best_correct"] == true).count();
    assert_eq!(row["fixed"], fixed as u64);
    assert_eq!(row["shortened"], shortened as u64);
    assert!((row["accuracy"].as_f64().unwrap() - found as f64 / 8.0).abs() < 1e-12);
    if !wrong.is_empty() {
        let diff = wrong
            .iter()
            .map(|r| (r["best_correct"] == true) as i32 - (mine(r)["best_correct"] == true) as i32)
            .sum::<i32>() as f64
            / wrong.len() as f64;
        assert!((row["mcts_minus_fixed"].as_f64().unwrap() - diff).abs() < 1e-12);
    }
    for key in ["budget_curves", "layer_use"] {
        let of_mine = report[key].as_array().unwrap().iter().filter(|c| c["searcher"] == "skip-each").count();
        assert_eq!(of_mine, 2, "{key}: right and fixed of skip-each");
    }
    let md = std::fs::read_to_string(whole.join("report.md")).unwrap();
    assert!(md.contains("## Further searchers") && md.contains("| tiny | skip-each |"), "{md}");
    assert!(md.contains("skip-each, right | skip-each, fixed"), "mean-length columns: {md}");
    let svg = std::fs::read_to_string(whole.join("budget_curves.svg")).unwrap();
    assert!(svg.contains("skip-each (same budget)"), "budget curves legend");

    // The searcher is part of the run's settings: a run without it does not resume this one.
    let config: Value = serde_json::from_str(&std::fs::read_to_string(whole.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["other_searchers"], serde_json::json!(["skip-each"]));
    let plain = tiny_search_request(&data, &whole, LAYERS);
    assert!(cola_search::run_search(&plain, &model).is_err(), "resumed with other settings");
}

/// A further searcher may not take the name of MCTS or of the random baseline.
#[test]
fn searcher_names_are_checked() {
    struct Named(&'static str);
    impl ChainSearcher for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn search(
            &self, _: &mut EvaluateChains<'_>, _: usize, _: usize, _: &mut SearchRng,
        ) -> Result<Vec<(Vec<usize>, Evaluation<ItemResult>)>, EvalError> {
            Ok(Vec::new())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, data) = write_tiny_fixture(dir.path(), 2);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    for names in [vec!["random"], vec!["mcts"], vec!["a", "a"], vec![" "]] {
        let mut req = tiny_search_request(&data, &dir.path().join("run"), LAYERS);
        req.other_searchers = names.iter().map(|&n| Arc::new(Named(n)) as Arc<dyn ChainSearcher>).collect();
        let Err(err) = cola_search::run_search(&req, &model) else { panic!("{names:?} accepted") };
        assert!(matches!(err, SearchError::Searcher(_)), "{names:?}: {err}");
    }
}

/// A searcher that evaluates more distinct chains than its budget, or does not start from the
/// original chain, ends the run with an error naming it: its figures would not compare with MCTS's.
#[test]
fn a_searcher_over_its_budget_or_without_the_original_first_is_an_error() {
    /// The original chain (or not, `skip_original`), then longer chains, `extra` more than the
    /// budget allows.
    struct Greedy {
        extra: usize,
        skip_original: bool,
    }
    impl ChainSearcher for Greedy {
        fn name(&self) -> &str {
            "greedy"
        }
        fn search(
            &self, evaluate: &mut EvaluateChains<'_>, num_layers: usize, budget: usize, _: &mut SearchRng,
        ) -> Result<Vec<(Vec<usize>, Evaluation<ItemResult>)>, EvalError> {
            let original: Vec<usize> = (0..num_layers).collect();
            let mut chains = if self.skip_original { vec![] } else { vec![original.clone()] };
            // Distinct chains, as many as asked: layer l repeated k more times.
            let candidates = (1..).flat_map(|k| {
                let original = original.clone();
                (0..num_layers).map(move |l| {
                    let mut c = original.clone();
                    c.splice(l..l, std::iter::repeat_n(l, k));
                    c
                })
            });
            chains.extend(candidates.take((budget + self.extra).saturating_sub(chains.len())));
            // A repeat is not a further evaluation.
            chains.push(chains[chains.len() - 1].clone());
            let evaluations = evaluate(&chains)?;
            Ok(chains.into_iter().zip(evaluations).collect())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, data) = write_tiny_fixture(dir.path(), 1);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let run = |extra, skip_original, out: &str| {
        let mut req = tiny_search_request(&data, &dir.path().join(out), LAYERS);
        req.other_searchers = vec![Arc::new(Greedy { extra, skip_original })];
        // The whole chain of causes, as the CLI prints it.
        cola_search::run_search(&req, &model).map(|_| ()).map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    };
    run(0, false, "within").expect("exactly the budget, with a repeat, is within it");
    let err = run(1, false, "over").unwrap_err();
    assert!(err.contains("`greedy`") && err.contains("over its budget"), "{err}");
    let err = run(0, true, "no-original").unwrap_err();
    assert!(err.contains("`greedy`") && err.contains("original chain"), "{err}");
}
