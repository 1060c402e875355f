//! The whole search on a tiny random model and a tiny generated task: records have the promised
//! fields, recorded chains re-evaluate to the recorded predictions, a run killed with SIGKILL
//! resumes to exactly the records of an uninterrupted run, and settings changes are refused.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cola_eval::load_user_jsonl;
use cola_executor::backend::Cpu;
use cola_executor::{Chain, LoadedChainModel};
use cola_search::run::{RunDir, read_samples};
use cola_tests::{tiny_search_request, write_tiny_model_dir, write_tiny_task};
use serde_json::Value;

const LAYERS: usize = 6;

fn setup(items: usize) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    write_tiny_model_dir(&model_dir, LAYERS, 99);
    let data = dir.path().join("tiny.jsonl");
    write_tiny_task(&data, items);
    (dir, model_dir, data)
}

#[test]
fn search_records_are_complete_and_honest() {
    let (dir, model_dir, data) = setup(5);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let out = dir.path().join("run");
    let req = tiny_search_request(&data, &out, LAYERS);
    let (report, run) = cola_search::run_search(&req, &model).unwrap();
    assert_eq!(report.tasks[0].n, 5);
    for f in ["config.json", "samples.jsonl", "report.md", "report.json", "best_chain_lengths.svg", "layer_skip_repeat.svg"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let text = std::fs::read_to_string(run.samples_path()).unwrap();
    let items = load_user_jsonl(&data, "tiny").unwrap().items;
    for (line, item) in text.lines().zip(&items) {
        let v: Value = serde_json::from_str(line).unwrap();
        for key in ["task", "doc_id", "static_correct", "best_chain", "best_len", "best_correct", "evaluations", "random_best_correct", "seconds"] {
            assert!(v.get(key).is_some(), "field {key} missing in {line}");
        }
        assert_eq!(v["doc_id"], item.doc_id.as_str());
        assert_eq!(v["best_correct"].as_bool().unwrap(), !v["best_chain"].is_null());
        // Re-evaluate the recorded chains from scratch (no cache) and compare predictions.
        for c in v["chains"].as_array().unwrap() {
            let chain = Chain::parse(c["chain"].as_str().unwrap()).unwrap();
            let again = cola_search::driver::rescore(&model, item, &chain, &req.settings.scoring).unwrap();
            assert_eq!(again.prediction.as_deref(), c["prediction"].as_str(), "chain {chain} of {}", item.doc_id);
            assert_eq!(again.correct as u8 as f64, c["reward"].as_f64().unwrap());
        }
        if let Some(best) = v["best_chain"].as_str() {
            let again = cola_search::driver::rescore(&model, item, &Chain::parse(best).unwrap(), &req.settings.scoring).unwrap();
            assert!(again.correct, "recorded best chain {best} is not correct on re-evaluation");
            assert_eq!(again.prediction.as_deref(), v["best_prediction"].as_str());
            // It is the shortest correct chain among those evaluated.
            let shortest = v["chains"].as_array().unwrap().iter().filter(|c| c["reward"] == 1.0).map(|c| c["length"].as_u64().unwrap()).min();
            assert_eq!(v["best_len"].as_u64(), shortest);
        }
        // The static prediction is the identity chain's.
        let identity = cola_search::driver::rescore(&model, item, &Chain::identity(LAYERS), &req.settings.scoring).unwrap();
        assert_eq!(identity.correct, v["static_correct"].as_bool().unwrap());
    }
    // Same command, same directory: nothing is redone.
    let again = cola_search::run_search(&req, &model).unwrap().1;
    assert_eq!(std::fs::read_to_string(again.samples_path()).unwrap(), text);
}

#[test]
fn different_settings_are_refused_unless_forced() {
    let (dir, model_dir, data) = setup(2);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let out = dir.path().join("run");
    let mut req = tiny_search_request(&data, &out, LAYERS);
    cola_search::run_search(&req, &model).unwrap();
    req.settings.simulations += 1;
    let e = cola_search::run_search(&req, &model).err().unwrap();
    assert!(e.contains("different settings") && e.contains("simulations"), "{e}");
    req.force = true;
    cola_search::run_search(&req, &model).unwrap();
    let (records, _) = read_samples(&out.join("samples.jsonl")).unwrap();
    assert_eq!(records.len(), 2);
}

fn without_timing(path: &Path) -> Vec<Value> {
    let (records, cut) = read_samples(path).unwrap();
    assert_eq!(cut, None);
    records
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            v["seconds"] = Value::Null;
            v
        })
        .collect()
}

#[test]
fn a_run_killed_mid_task_resumes_to_the_uninterrupted_result() {
    let (dir, model_dir, data) = setup(24);
    let bin = env!("CARGO_BIN_EXE_tiny_search");
    let straight = dir.path().join("straight");
    let status = Command::new(bin).arg(&model_dir).arg(&data).arg(&straight).status().unwrap();
    assert!(status.success());

    let killed = dir.path().join("killed");
    let samples = killed.join("samples.jsonl");
    let mut child = Command::new(bin).arg(&model_dir).arg(&data).arg(&killed).spawn().unwrap();
    let started = Instant::now();
    // Kill once a few samples are on disk (SIGKILL: no chance to clean up).
    loop {
        let lines = std::fs::read(&samples).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if lines >= 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the run never got going");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let partial = read_samples(&samples).unwrap().0.len();
    assert!(!status.success(), "the run finished before it could be killed; make it longer");
    assert!(partial < 24, "killed after {partial} samples");
    // Simulate the worst moment too: a half-written last line.
    let mut bytes = std::fs::read(&samples).unwrap();
    bytes.extend_from_slice(br#"{"task":"tiny","doc_id":"q9","gold":"A","static_"#);
    std::fs::write(&samples, bytes).unwrap();

    let status = Command::new(bin).arg(&model_dir).arg(&data).arg(&killed).status().unwrap();
    assert!(status.success());
    let resumed = without_timing(&samples);
    let ids: Vec<&str> = resumed.iter().map(|v| v["doc_id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 24, "every sample exactly once: {ids:?}");
    assert_eq!(resumed, without_timing(&straight.join("samples.jsonl")));
    assert!(RunDir::open(&killed, &serde_json::from_str(&std::fs::read_to_string(killed.join("config.json")).unwrap()).unwrap(), false).is_ok());
}
