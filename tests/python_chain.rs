//! `scripts/python/cola_chain.py` (plain torch + transformers) runs a checkpoint along a chain
//! as the executor does: the same logits at every prompt position and the same cached greedy
//! ids, on the tiny checkpoints of every supported architecture and chains with repeats (where
//! one K/V slot per step matters: sharing a slot between the occurrences of a layer changes the
//! greedy ids of these chains). It also picks the chain an export names.
//!
//! The Python comes from `COLA_TORCH_PYTHON`, which `cargo xtask test` sets after installing
//! torch and transformers with pip (`cola_assets::torch_python`). Without it the test says so
//! and passes, except in CI (CI=true), where it fails.

use std::process::Command;

use cola_executor::backend::Cpu;
use cola_executor::{Chain, Executor};
use cola_tests::{max_abs_diff, repo_root};
use serde_json::Value;

fn python() -> Option<String> {
    let python = std::env::var("COLA_TORCH_PYTHON").ok().filter(|p| !p.is_empty());
    if python.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "COLA_TORCH_PYTHON is not set; `cargo xtask test` sets it (CI runs that)");
        eprintln!("skipping: COLA_TORCH_PYTHON is not set (`cargo xtask test` installs torch and sets it)");
    }
    python
}

/// The script's `--json` output for `args`.
fn run_script(python: &str, args: &[&str]) -> Value {
    let script = repo_root().join("scripts/python/cola_chain.py");
    let out = Command::new(python).arg(&script).args(args).output().expect("running python");
    assert!(out.status.success(), "cola_chain.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// What the script's functions compute for each (model dir, chain) in one Python process
/// (importing torch takes seconds): every prompt position's logits and 8 cached greedy ids.
const DRIVER: &str = r#"
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from cola_chain import along_chain, greedy, load, parse_chain
job = json.loads(sys.argv[2])
out = []
for case in job["cases"]:
    model, _ = load(case["model"])
    with along_chain(model, parse_chain(case["chain"])), torch.no_grad():
        logits = model(torch.tensor([job["ids"]]), use_cache=False).logits[0].float()
        out.append({"logits": logits.flatten().tolist(), "greedy": greedy(model, job["ids"], 8)})
print(json.dumps(out))
"#;

#[test]
fn the_python_chain_script_matches_the_executor() {
    let Some(python) = python() else { return };
    let ids: Vec<u32> = vec![5, 17, 99, 3, 64, 127, 0, 42, 8];
    let mut cases = Vec::new();
    for name in ["tiny-llama3", "tiny-qwen2", "tiny-qwen3"] {
        for spec in ["0,0,1,2", "2,1,1,0", "1,1,1,1", "0,2"] {
            cases.push((repo_root().join("assets/reference").join(name), spec));
        }
    }
    let job = serde_json::json!({
        "ids": ids,
        "cases": cases.iter().map(|(dir, spec)| serde_json::json!({"model": dir, "chain": spec})).collect::<Vec<_>>(),
    });
    let scripts = repo_root().join("scripts/python");
    let out = Command::new(&python).args(["-c", DRIVER]).arg(&scripts).arg(job.to_string()).output().unwrap();
    assert!(out.status.success(), "the driver failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<Value> =
        serde_json::from_slice(out.stdout.trim_ascii_end().rsplit(|&b| b == b'\n').next().unwrap())
            .expect("one JSON line");
    for ((dir, spec), theirs) in cases.iter().zip(&theirs) {
        let exec = Executor::<Cpu>::load(dir, Default::default()).unwrap();
        let state = exec.run(&Chain::parse(spec).unwrap(), &ids).unwrap();
        let logits: Vec<f32> =
            theirs["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let d = max_abs_diff(&exec.all_logits(&state), &logits);
        assert!(d < 1e-4, "{} chain {spec}: logits differ by {d}", dir.display());
        let greedy = exec.generate(&state, 8, &[]).unwrap();
        assert_eq!(u32s(&theirs["greedy"]), greedy, "{} chain {spec}: greedy ids", dir.display());
    }
}

/// `--chains` takes an item's chain, or a task's first, from an export.
#[test]
fn the_python_chain_script_reads_an_export() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let export = serde_json::json!({
        "format": "cola-chains/1",
        "items": [
            {"task": "t", "doc_id": "a", "mcts": {"chain": "0,0,1", "layers": [0, 0, 1]}},
            {"task": "t", "doc_id": "b", "mcts": null},
        ],
        "tasks": [{"task": "t", "items": 2, "chains": [{"chain": "2,1", "layers": [2, 1], "right": 1, "evaluated": 2}]}],
    });
    let path = tmp.path().join("chains.json");
    std::fs::write(&path, export.to_string()).unwrap();
    let model = repo_root().join("assets/reference/tiny-qwen3").display().to_string();
    let path = path.display().to_string();
    let common = ["--model", &model, "--chains", &path, "--ids", "1,2,3", "--max-new-tokens", "1", "--json"];
    let chain_of = |extra: &[&str]| run_script(&python, &[&common[..], extra].concat())["chain"].clone();
    assert_eq!(chain_of(&["--doc-id", "a"]), serde_json::json!([0, 0, 1]));
    assert_eq!(chain_of(&["--task", "t"]), serde_json::json!([2, 1]));
    // An item without a correct chain is an error naming it, not the original model.
    let script = repo_root().join("scripts/python/cola_chain.py");
    let out = Command::new(&python).arg(&script).args(&common[..]).args(["--doc-id", "b"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("item b: the search found no correct chain"));
}
