//! Made `k1_records.jsonl`: search records of the one-chain-at-a-time search (commit 0739885,
//! before batched evaluation) on the tiny model, with `loglik` and `generate` scoring (the tiny
//! tokenizer has no one-token labels for `letter`). Not compiled here: to
//! remake the file, check out that commit, copy this file to `tests/golden_make.rs`, add it as a
//! `[[test]]` of `tests/Cargo.toml`, and run
//! `GOLDEN_OUT=$PWD/k1_records.jsonl cargo test -p cola-tests --test golden_make`.
//! `tests/batch_search.rs` runs the same searches with `batch = 1` and compares.

use cola_eval::{ScoringMode, ScoringOptions};
use cola_executor::LoadedChainModel;
use cola_executor::backend::Cpu;
use cola_tests::{tiny_search_request, write_tiny_model_dir, write_tiny_task};
use serde_json::Value;

#[test]
fn make() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    write_tiny_model_dir(&model_dir, 6, 99);
    let data = dir.path().join("tiny.jsonl");
    write_tiny_task(&data, 3);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let mut lines = Vec::new();
    for mode in [ScoringMode::Loglik, ScoringMode::Generate] {
        let out = dir.path().join(mode.name());
        let mut req = tiny_search_request(&data, &out, 6);
        req.settings.tree.simulations = 40;
        req.settings.scoring = ScoringOptions { max_new_tokens: Some(4), ..ScoringOptions::new(mode) };
        let (_, run) = cola_search::run_search(&req, &model).unwrap();
        for line in std::fs::read_to_string(run.samples_path()).unwrap().lines() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            record.as_object_mut().unwrap().remove("seconds");
            lines.push(serde_json::json!({"scoring": mode.name(), "record": record}).to_string());
        }
    }
    std::fs::write(std::env::var("GOLDEN_OUT").unwrap(), lines.join("\n") + "\n").unwrap();
}
