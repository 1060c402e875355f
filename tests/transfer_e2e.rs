//! `transfer` end to end on a tiny random model: every file and strategy is there, static's
//! figure is the original chain scored independently, recorded calibration accuracies re-score
//! to themselves, a rerun or a torn record resumes without rescoring, and permuting the held-out
//! labels leaves every label-free strategy's answers unchanged.

use std::path::{Path, PathBuf};

use cola_eval::{ScoringMode, ScoringOptions, load_user_jsonl, score_item};
use cola_executor::backend::Cpu;
use cola_executor::{Chain, LoadedChainModel};
use cola_search::transfer::{
    CHOICES_FILE, CalibrationRecord, HELDOUT_FILE, ItemChoices, TransferRequest, TransferSettings, run_transfer,
};
use cola_search::{ChainModel, Selection, Source};
use cola_tests::{TINY_LAYERS as LAYERS, write_tiny_fixture};
use serde_json::Value;

/// Held-out items: questions unlike the calibration ones, answer index `(i + shift) % 3`.
fn write_heldout(path: &Path, n: usize, shift: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("h{i}"), "question": format!("Which colour is held-out thing {i}?"),
                "choices": ["red", "green", "blue"], "answer": (i + shift) % 3})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn request(calibration: &Path, heldout: &Path, out: &Path) -> TransferRequest {
    let select = |path: &Path, name: &str| Selection {
        sources: vec![Source::File { path: path.to_path_buf(), name: name.into() }],
        limit: None,
        offset: 0,
        shard: None,
        subject: None,
        split: None,
        sample: Default::default(),
    };
    TransferRequest {
        calibration: select(calibration, "tiny"),
        heldout: select(heldout, "tiny-heldout"),
        data_dir: out.to_path_buf(),
        out_dir: out.to_path_buf(),
        force: false,
        seed: 3,
        settings: TransferSettings {
            scoring: ScoringOptions::new(ScoringMode::Loglik),
            tree: cola_search::sample::TreeSettings {
                actions: cola_mcts::chains::ActionPreset::Paper,
                simulations: 24,
                lambda: 1.0,
                c: std::f64::consts::SQRT_2,
                epsilon: 0.1,
                min_len: LAYERS / 2,
                max_len: LAYERS + LAYERS / 2,
            },
            batch: 4,
            drop: vec![1, 2],
            top: 3,
            resamples: 200,
        },
        backend: cola_executor::backend::BackendKind::Cpu,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: LoadedChainModel<Cpu>,
    calibration: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (model_dir, calibration) = write_tiny_fixture(&root, 8);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    Fixture { _dir: dir, root, model, calibration }
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn transfer_runs_end_to_end_and_resumes() {
    let f = fixture();
    let heldout = f.root.join("heldout.jsonl");
    write_heldout(&heldout, 12, 0);
    let out = f.root.join("run");
    let req = request(&f.calibration, &heldout, &out);
    let (report, files) = run_transfer(&req, &f.model).unwrap();
    for name in ["config.json", "calibration.jsonl", "heldout.jsonl", "plan.json", "report.md", "report.json"] {
        assert!(out.join(name).exists(), "{name} missing");
    }
    assert!(files.iter().any(|p| p.ends_with("pareto.svg")) && files.iter().any(|p| p.ends_with(CHOICES_FILE)));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        (json["task"].as_str(), json["calibration_n"].as_u64(), json["heldout_n"].as_u64()),
        (Some("tiny"), Some(8), Some(12))
    );
    let names: Vec<&str> = json["strategies"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(&names[..3], ["static", "shortgpt-k1", "shortgpt-k2"]);
    assert!(names.iter().any(|n| n.starts_with("task-chain-")), "{names:?}");
    assert_eq!(&names[names.len() - 3..], ["vote", "confidence", "oracle"]);
    for s in json["strategies"].as_array().unwrap() {
        for key in ["accuracy", "ci_low", "ci_high", "diff_vs_static", "mean_layers", "seconds_per_item"] {
            assert!(s[key].is_number(), "{key} of {s}");
        }
        assert!(s["ci_low"].as_f64() <= s["accuracy"].as_f64() && s["accuracy"].as_f64() <= s["ci_high"].as_f64());
    }

    // Static is the original chain, scored here on its own.
    let items = load_user_jsonl(&heldout, "tiny-heldout").unwrap().items;
    let mut original = ChainModel::new(&f.model, Chain::identity(LAYERS)).with_caching(false);
    let right = items.iter().filter(|i| score_item(&mut original, i, &req.settings.scoring).unwrap().correct).count();
    assert_eq!(report.strategies[0].accuracy, right as f64 / 12.0);
    assert_eq!(report.strategies[0].mean_layers, LAYERS as f64);
    // Single-chain strategies run their chain: mean layers is its length.
    for s in report.strategies.iter().filter(|s| s.name.starts_with("task-chain-")) {
        assert_eq!(format!("task-chain-{}", s.mean_layers), s.name);
    }
    // The oracle counts an item when any candidate is right: at least static's and confidence's
    // accuracy (both answer with a candidate's answer).
    let oracle = report.strategies.last().unwrap();
    for s in report.strategies.iter().filter(|s| s.name == "static" || s.name == "confidence") {
        assert!(s.accuracy <= oracle.accuracy, "{} above the oracle", s.name);
    }

    // Recorded calibration accuracies re-score to themselves.
    let cal_items = load_user_jsonl(&f.calibration, "tiny").unwrap().items;
    let records: Vec<CalibrationRecord> = read_jsonl(&out.join("calibration.jsonl"));
    assert_eq!(records.len(), report.calibration_evaluations);
    for r in records.iter().step_by(3) {
        let mut m = ChainModel::new(&f.model, r.chain.clone()).with_caching(false);
        let bits: String = cal_items
            .iter()
            .map(|i| if score_item(&mut m, i, &req.settings.scoring).unwrap().correct { '1' } else { '0' })
            .collect();
        assert_eq!(bits, r.correct, "chain {}", r.chain);
    }

    // A rerun reads everything back: no record is scored again (the held-out seconds would differ).
    let before =
        [std::fs::read(out.join("calibration.jsonl")).unwrap(), std::fs::read(out.join(HELDOUT_FILE)).unwrap()];
    let (again, _) = run_transfer(&req, &f.model).unwrap();
    assert_eq!(again, report);
    assert_eq!(before[0], std::fs::read(out.join("calibration.jsonl")).unwrap());
    assert_eq!(before[1], std::fs::read(out.join(HELDOUT_FILE)).unwrap());
    // A torn last held-out line (a process killed mid-write) is dropped and that item scored again.
    let text = String::from_utf8(before[1].clone()).unwrap();
    let keep = text.trim_end().rfind('\n').unwrap() + 1;
    std::fs::write(out.join(HELDOUT_FILE), format!("{}{}", &text[..keep], &text[keep..keep + 30])).unwrap();
    let (resumed, _) = run_transfer(&req, &f.model).unwrap();
    let strip = |r: &cola_search::transfer::TransferReport| {
        r.strategies.iter().map(|s| (s.name.clone(), s.accuracy, s.mean_layers)).collect::<Vec<_>>()
    };
    assert_eq!(strip(&resumed), strip(&report));
    assert_eq!(std::fs::read_to_string(out.join(HELDOUT_FILE)).unwrap().lines().count(), 12);
}

#[test]
fn permuted_heldout_labels_change_no_choice() {
    let f = fixture();
    let (plain, permuted) = (f.root.join("heldout.jsonl"), f.root.join("heldout-permuted.jsonl"));
    write_heldout(&plain, 9, 0);
    write_heldout(&permuted, 9, 1);
    let (a, b) = (f.root.join("a"), f.root.join("b"));
    let (report_a, _) = run_transfer(&request(&f.calibration, &plain, &a), &f.model).unwrap();
    let (report_b, _) = run_transfer(&request(&f.calibration, &permuted, &b), &f.model).unwrap();
    let (ca, cb): (Vec<ItemChoices>, Vec<ItemChoices>) =
        (read_jsonl(&a.join(CHOICES_FILE)), read_jsonl(&b.join(CHOICES_FILE)));
    assert_eq!(ca.len(), 9);
    for (x, y) in ca.iter().zip(&cb) {
        assert_ne!(x.gold, y.gold, "the labels were permuted");
        assert_eq!(x.answers, y.answers, "item {}: a strategy's answer depends on the label", x.doc_id);
        assert!(
            x.answers.contains_key("static") && x.answers.contains_key("vote") && x.answers.contains_key("confidence")
        );
    }
    assert_eq!(
        std::fs::read_to_string(a.join("plan.json")).unwrap(),
        std::fs::read_to_string(b.join("plan.json")).unwrap()
    );
    // Accuracy does read the labels: rotated by one, no prediction can be right in both runs.
    for (x, y) in report_a.strategies.iter().zip(&report_b.strategies).filter(|(x, _)| x.name != "oracle") {
        assert!(x.accuracy + y.accuracy <= 1.0 + 1e-12, "{}", x.name);
    }
}
