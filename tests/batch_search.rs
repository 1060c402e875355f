//! Batched search end to end on the tiny model: with `batch = 1` the records are exactly those of
//! the one-chain-at-a-time search (`golden/k1_records.jsonl`, made by the code before batching,
//! see `golden/make_k1_records.rs`); with `batch > 1` they are deterministic for a seed and every
//! recorded chain re-scores, alone and uncached, to its recorded prediction.

use cola_eval::{ScoringMode, ScoringOptions, load_user_jsonl};
use cola_executor::backend::Cpu;
use cola_executor::{Chain, LoadedChainModel};
use cola_tests::{TINY_LAYERS, tiny_search_request, write_tiny_fixture};
use serde_json::Value;

const MODES: [ScoringMode; 2] = [ScoringMode::Loglik, ScoringMode::Generate];

struct Setup {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    model: LoadedChainModel<Cpu>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, data) = write_tiny_fixture(dir.path(), 3);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    Setup { dir, data, model }
}

/// The records of a search with the golden file's settings and `batch`.
fn records(s: &Setup, mode: ScoringMode, batch: usize, run: &str) -> Vec<Value> {
    let out = s.dir.path().join(format!("{run}-{}-{batch}", mode.name()));
    let mut req = tiny_search_request(&s.data, &out, TINY_LAYERS);
    req.settings.tree.simulations = 40;
    req.settings.scoring = ScoringOptions { max_new_tokens: Some(4), ..ScoringOptions::new(mode) };
    req.settings.batch = batch;
    let (_, run) = cola_search::run_search(&req, &s.model).unwrap();
    std::fs::read_to_string(run.samples_path())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn batch_of_one_gives_the_records_of_the_one_at_a_time_search() {
    let s = setup();
    let golden: Vec<Value> =
        include_str!("golden/k1_records.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for mode in MODES {
        let want: Vec<&Value> = golden.iter().filter(|g| g["scoring"] == mode.name()).map(|g| &g["record"]).collect();
        assert_eq!(want.len(), 3, "golden records for {mode}");
        let mut got = records(&s, mode, 1, "k1");
        // The golden records predate `random_chains` (the random baseline's evaluated chains):
        // everything they hold must match.
        for r in &mut got {
            r.as_object_mut().unwrap().remove("random_chains").expect("random chains recorded");
        }
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "{mode}: batch 1 differs from the one-at-a-time search");
    }
}

#[test]
fn batched_search_is_deterministic_and_its_records_rescore() {
    let s = setup();
    let items = load_user_jsonl(&s.data, "tiny").unwrap().items;
    for mode in MODES {
        let a = records(&s, mode, 4, "a");
        let b = records(&s, mode, 4, "b");
        assert_eq!(a, b, "{mode}: two batched runs with one seed differ");
        let scoring = ScoringOptions { max_new_tokens: Some(4), ..ScoringOptions::new(mode) };
        for (record, item) in a.iter().zip(&items) {
            let chains = record["chains"].as_array().unwrap();
            assert!(chains.len() > 5, "{mode}: only {} chains evaluated", chains.len());
            for c in chains {
                let chain = Chain::parse(c["chain"].as_str().unwrap()).unwrap();
                let again = cola_search::runs::rescore(&s.model, item, &chain, &scoring).unwrap();
                assert_eq!(
                    again.prediction.as_deref(),
                    c["prediction"].as_str(),
                    "{mode}: chain {chain} of {}",
                    item.doc_id
                );
                assert_eq!(again.correct as u8 as f64, c["reward"].as_f64().unwrap());
            }
        }
    }
}
