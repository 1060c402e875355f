//! The whole search on a tiny random model and a tiny generated task: records have the promised
//! fields, recorded chains re-evaluate to the recorded predictions, the same run twice and a run
//! killed with SIGKILL at several moments give byte-identical samples.jsonl, settings changes
//! and a second writer are refused, and shards merged by `report` equal the run done whole.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cola_eval::load_user_jsonl;
use cola_executor::backend::Cpu;
use cola_executor::{Chain, LoadedChainModel};
use cola_search::SearchError;
use cola_search::run_dir::{RunDir, RunError, read_samples};
use cola_tests::{TINY_LAYERS as LAYERS, tiny_search_request, write_tiny_fixture};
use serde_json::Value;

fn setup(items: usize) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, data) = write_tiny_fixture(dir.path(), items);
    (dir, model_dir, data)
}

/// The report's budget curves and MCTS-minus-random differences, recomputed from the JSON of a
/// real run's records (random baseline on): for every budget b and group, the samples with a
/// correct (for right samples: shorter) chain among the first b chains each searcher evaluated.
/// The random chains recorded give the recorded random best.
#[test]
fn budget_curves_and_paired_differences_follow_from_the_records() {
    let (dir, model_dir, data) = setup(6);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let out = dir.path().join("run");
    let req = tiny_search_request(&data, &out, LAYERS);
    cola_search::run_search(&req, &model).unwrap();
    let records: Vec<Value> = std::fs::read_to_string(out.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let counts =
        |c: &Value, right: bool| c["reward"] == 1.0 && (!right || c["length"].as_u64().unwrap() < LAYERS as u64);
    for r in &records {
        let random = r["random_chains"].as_array().expect("random chains recorded");
        let best = random.iter().filter(|c| c["reward"] == 1.0).min_by_key(|c| c["length"].as_u64().unwrap());
        assert_eq!(best.map(|c| &c["chain"]).unwrap_or(&Value::Null), &r["random_best_chain"]);
        assert_eq!(random.len() as u64, r["random_evaluations"].as_u64().unwrap());
    }
    let curves = report["budget_curves"].as_array().unwrap();
    assert_eq!(curves.len(), 4, "MCTS and random, right and fixed");
    for curve in curves {
        let right = curve["group"] == "right";
        let key = if curve["searcher"] == "mcts" { "chains" } else { "random_chains" };
        let members: Vec<&Value> = records.iter().filter(|r| r["static_correct"] == right).collect();
        assert_eq!(curve["n"].as_u64().unwrap() as usize, members.len());
        let found_at: Vec<u64> = curve["found_at"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let longest = members.iter().map(|r| r[key].as_array().unwrap().len()).max().unwrap_or(0);
        assert_eq!(curve["evaluations"].as_u64().unwrap() as usize, longest);
        for b in 1..=longest + 3 {
            let want =
                members.iter().filter(|r| r[key].as_array().unwrap().iter().take(b).any(|c| counts(c, right))).count();
            let got = found_at.iter().filter(|&&at| at <= b as u64).count();
            assert_eq!(got, want, "{} {} at b = {b}", curve["searcher"], curve["group"]);
        }
    }
    let task = &report["tasks"][0];
    let wrong: Vec<&Value> = records.iter().filter(|r| r["static_correct"] == false).collect();
    if !wrong.is_empty() {
        let diff = wrong
            .iter()
            .map(|r| (r["best_correct"] == true) as i32 - (r["random_best_correct"] == true) as i32)
            .sum::<i32>() as f64
            / wrong.len() as f64;
        assert!((task["mcts_minus_random_fixed"].as_f64().unwrap() - diff).abs() < 1e-12);
        let [lo, hi] = [0, 1].map(|i| task["mcts_minus_random_fixed_ci"][i].as_f64().unwrap());
        assert!(lo <= diff && diff <= hi, "{diff} outside [{lo}, {hi}]");
    }
}

#[test]
fn search_records_are_complete_and_honest() {
    let (dir, model_dir, data) = setup(5);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let out = dir.path().join("run");
    let req = tiny_search_request(&data, &out, LAYERS);
    let (report, run) = cola_search::run_search(&req, &model).unwrap();
    assert_eq!(report.tasks[0].n, 5);
    for f in
        ["config.json", "samples.jsonl", "report.md", "report.json", "best_chain_lengths.svg", "layer_skip_repeat.svg"]
    {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let text = std::fs::read_to_string(run.samples_path()).unwrap();
    let items = load_user_jsonl(&data, "tiny").unwrap().items;
    for (line, item) in text.lines().zip(&items) {
        let v: Value = serde_json::from_str(line).unwrap();
        for key in [
            "task",
            "doc_id",
            "static_correct",
            "best_chain",
            "best_len",
            "best_correct",
            "evaluations",
            "random_best_correct",
        ] {
            assert!(v.get(key).is_some(), "field {key} missing in {line}");
        }
        assert_eq!(v["doc_id"], item.doc_id.as_str());
        assert_eq!(v["best_correct"].as_bool().unwrap(), !v["best_chain"].is_null());
        // Re-evaluate the recorded chains from scratch (no cache) and compare predictions.
        for c in v["chains"].as_array().unwrap() {
            let chain = Chain::parse(c["chain"].as_str().unwrap()).unwrap();
            let again = cola_search::runs::rescore(&model, item, &chain, &req.settings.scoring).unwrap();
            assert_eq!(again.prediction.as_deref(), c["prediction"].as_str(), "chain {chain} of {}", item.doc_id);
            assert_eq!(again.correct as u8 as f64, c["reward"].as_f64().unwrap());
        }
        if let Some(best) = v["best_chain"].as_str() {
            let again =
                cola_search::runs::rescore(&model, item, &Chain::parse(best).unwrap(), &req.settings.scoring).unwrap();
            assert!(again.correct, "recorded best chain {best} is not correct on re-evaluation");
            assert_eq!(again.prediction.as_deref(), v["best_prediction"].as_str());
            // It is the shortest correct chain among those evaluated.
            let shortest = v["chains"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["reward"] == 1.0)
                .map(|c| c["length"].as_u64().unwrap())
                .min();
            assert_eq!(v["best_len"].as_u64(), shortest);
        }
        // The static prediction is the identity chain's.
        let identity =
            cola_search::runs::rescore(&model, item, &Chain::identity(LAYERS), &req.settings.scoring).unwrap();
        assert_eq!(identity.correct, v["static_correct"].as_bool().unwrap());
    }
    // Timings are kept apart, one per sample.
    let timings = cola_search::run_dir::read_timings(&out);
    assert_eq!(timings.len(), 5);
    assert!(timings.values().all(|&s| s > 0.0));
    // Same command, same directory: nothing is redone.
    drop(run);
    let again = cola_search::run_search(&req, &model).unwrap().1;
    assert_eq!(std::fs::read_to_string(again.samples_path()).unwrap(), text);
    // The same run in another directory writes the same bytes.
    let other =
        cola_search::run_search(&tiny_search_request(&data, &dir.path().join("other"), LAYERS), &model).unwrap().1;
    assert_eq!(std::fs::read_to_string(other.samples_path()).unwrap(), text);
}

#[test]
fn a_second_writer_is_refused_with_the_holder_named() {
    let (dir, model_dir, data) = setup(1);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let out = dir.path().join("run");
    let req = tiny_search_request(&data, &out, LAYERS);
    let (_, first) = cola_search::run_search(&req, &model).unwrap();
    let e = cola_search::run_search(&req, &model).err().unwrap();
    assert!(matches!(e, SearchError::Run(RunError::InUse { .. })), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("in use by process") && e.contains(&std::process::id().to_string()), "{e}");
    drop(first);
    assert!(cola_search::run_search(&req, &model).is_ok(), "the lock outlived its holder");
}

#[test]
fn different_settings_are_refused_unless_forced() {
    let (dir, model_dir, data) = setup(2);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let out = dir.path().join("run");
    let mut req = tiny_search_request(&data, &out, LAYERS);
    cola_search::run_search(&req, &model).unwrap();
    req.settings.tree.simulations += 1;
    let e = cola_search::run_search(&req, &model).err().unwrap().to_string();
    assert!(e.contains("different settings") && e.contains("simulations"), "{e}");
    req.force = true;
    cola_search::run_search(&req, &model).unwrap();
    let (records, _) = read_samples(&out.join("samples.jsonl")).unwrap();
    assert_eq!(records.len(), 2);
}

/// Runs the tiny search in its own process until `samples` has at least `lines` lines, waits a
/// further `extra` and kills it with SIGKILL (no chance to clean up). Returns whether it was
/// still running when killed.
fn kill_after(bin: &str, args: [&Path; 3], samples: &Path, lines: usize, extra: Duration) -> bool {
    let mut child = Command::new(bin).args(args).spawn().unwrap();
    let started = Instant::now();
    loop {
        let done = std::fs::read(samples).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if done >= lines || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the run never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(extra);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

#[test]
fn runs_killed_at_several_moments_resume_to_the_same_bytes() {
    let (dir, model_dir, data) = setup(24);
    let bin = env!("CARGO_BIN_EXE_tiny_search");
    let straight = dir.path().join("straight");
    let status = Command::new(bin).arg(&model_dir).arg(&data).arg(&straight).status().unwrap();
    assert!(status.success());
    let want = std::fs::read(straight.join("samples.jsonl")).unwrap();

    let killed = dir.path().join("killed");
    let samples = killed.join("samples.jsonl");
    // Kill points: after a few lines, then some milliseconds into a sample (a pseudo-random
    // spread, fixed so that a failure can be rerun), several times over the same run.
    let mut kills = 0;
    for (lines, extra_ms) in [(2, 0), (5, 7), (9, 23), (13, 3), (18, 41)] {
        kills +=
            kill_after(bin, [&model_dir, &data, &killed], &samples, lines, Duration::from_millis(extra_ms)) as usize;
        if lines == 9 {
            // The worst moment too: a half-written last line.
            let mut bytes = std::fs::read(&samples).unwrap();
            bytes.extend_from_slice(br#"{"task":"tiny","doc_id":"q9","gold":"A","static_"#);
            std::fs::write(&samples, bytes).unwrap();
        }
    }
    assert!(kills >= 3, "only {kills} of 5 kills hit a running search; make the run longer");
    let status = Command::new(bin).arg(&model_dir).arg(&data).arg(&killed).status().unwrap();
    assert!(status.success());
    let got = std::fs::read(&samples).unwrap();
    let ids: Vec<String> = read_samples(&samples).unwrap().0.into_iter().map(|r| r.doc_id).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 24, "every sample exactly once: {ids:?}");
    assert!(got == want, "resumed samples.jsonl differs from the uninterrupted run's");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("config.json")).unwrap()).unwrap();
    assert!(RunDir::open(&killed, &serde_json::from_value(config).unwrap(), false).is_ok());
}

/// report.md without the lines that name the run directories or carry timings.
fn report_md_without_runs_and_time(dir: &Path) -> String {
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    md.lines().filter(|l| !l.starts_with("Runs:") && !l.starts_with("Search time:")).collect::<Vec<_>>().join("\n")
}

#[test]
fn three_shards_merged_by_report_equal_the_run_done_whole() {
    let (dir, model_dir, data) = setup(8);
    let model = LoadedChainModel::<Cpu>::load(&model_dir, Default::default()).unwrap();
    let whole = dir.path().join("whole");
    cola_search::run_search(&tiny_search_request(&data, &whole, LAYERS), &model).unwrap();
    let shards: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let out = dir.path().join(format!("shard-{i}"));
            let mut req = tiny_search_request(&data, &out, LAYERS);
            req.selection.shard = Some(format!("{i}/3").parse().unwrap());
            cola_search::run_search(&req, &model).unwrap();
            out
        })
        .collect();
    // Shards finish in any order; list them out of order too.
    let listed = [shards[2].clone(), shards[0].clone(), shards[1].clone()];
    let merged_dir = dir.path().join("merged");
    let (_, merged, _) = cola_search::report::report_runs(&listed, &merged_dir).unwrap();
    assert_eq!(merged.records.len(), 8);
    for f in ["samples.jsonl", "report.json", "best_chain_lengths.svg", "layer_skip_repeat.svg"] {
        let (a, b) =
            (std::fs::read_to_string(merged_dir.join(f)).unwrap(), std::fs::read_to_string(whole.join(f)).unwrap());
        let first = a.lines().zip(b.lines()).find(|(x, y)| x != y);
        assert!(a == b, "{f} differs; first differing lines: {first:?}");
    }
    assert_eq!(report_md_without_runs_and_time(&merged_dir), report_md_without_runs_and_time(&whole));
    assert_eq!(merged.timings.len(), 8);
}
