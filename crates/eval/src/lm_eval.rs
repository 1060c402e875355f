//! Results in lm-evaluation-harness's output layout, so that tools reading its results read
//! ours: a `results.json` with `results.<task>."acc,none"` and `"acc_stderr,none"` (and the
//! `acc_norm` pair for `loglik` scoring), `n-samples` and `config`, plus one
//! `samples_<task>.jsonl` per task with each item's `doc_id`, `target`, `resps`,
//! `filtered_resps` and metric values.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{EvalError, ItemResult};

/// The mean of 0/1 values and its standard error as lm-evaluation-harness computes it (the
/// sample standard deviation, n - 1 in the denominator, over sqrt(n)); `None` below 2 values.
pub fn mean_and_stderr(values: &[bool]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().filter(|&&v| v).count() as f64 / n.max(1.0);
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|&v| (v as u8 as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some((var / n).sqrt()))
}

/// Writes `results.json` and `samples_<task>.jsonl` into `dir` (created) for each task's
/// results; `config` goes to `results.json`'s `config` (model, chain, scoring). Returns the
/// files written.
pub fn write(dir: &Path, tasks: &[(String, Vec<ItemResult>)], config: Value) -> Result<Vec<PathBuf>, EvalError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| EvalError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (mut results, mut n_samples, mut files) = (json!({}), json!({}), Vec::new());
    for (task, items) in tasks {
        let mut entry = json!({ "alias": task });
        let mut put = |name: &str, values: &[bool]| {
            let (mean, stderr) = mean_and_stderr(values);
            entry[format!("{name},none")] = json!(mean);
            entry[format!("{name}_stderr,none")] = stderr.map_or(json!("N/A"), |s| json!(s));
        };
        put("acc", &items.iter().map(|r| r.correct).collect::<Vec<_>>());
        if items.iter().all(|r| r.correct_norm.is_some()) && !items.is_empty() {
            put("acc_norm", &items.iter().map(|r| r.correct_norm == Some(true)).collect::<Vec<_>>());
        }
        results[task] = entry;
        n_samples[task] = json!({ "original": items.len(), "effective": items.len() });
        let lines: String = items
            .iter()
            .map(|r| {
                let response = r.generated.clone().or_else(|| r.prediction.clone()).unwrap_or_default();
                let mut v = json!({
                    "doc_id": r.doc_id,
                    "target": r.gold,
                    "resps": [[response]],
                    "filtered_resps": [r.prediction.clone().unwrap_or_default()],
                    "acc": r.correct as u8 as f64,
                });
                if let Some(norm) = r.correct_norm {
                    v["acc_norm"] = json!(norm as u8 as f64);
                }
                format!("{v}\n")
            })
            .collect();
        let path = dir.join(format!("samples_{task}.jsonl"));
        std::fs::write(&path, lines).map_err(io(&path))?;
        files.push(path);
    }
    let doc = json!({ "results": results, "n-samples": n_samples, "config": config });
    let path = dir.join("results.json");
    let text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    std::fs::write(&path, text + "\n").map_err(io(&path))?;
    files.insert(0, path);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, correct: bool, norm: Option<bool>) -> ItemResult {
        ItemResult {
            doc_id: id.into(),
            gold: "B".into(),
            prediction: Some(if correct { "B" } else { "A" }.into()),
            correct,
            correct_norm: norm,
            generated: None,
            margin: None,
        }
    }

    /// 3 of 4 right: mean 0.75, sample variance 0.25 (n - 1 = 3), stderr 0.5 / 2 = 0.25.
    #[test]
    fn stderr_is_the_harness_one() {
        assert_eq!(mean_and_stderr(&[true, true, true, false]), (0.75, Some(0.25)));
        assert_eq!(mean_and_stderr(&[true]), (1.0, None));
    }

    /// The keys lm-evaluation-harness's readers look up are there, with the values computed
    /// above, and each item has its sample line.
    #[test]
    fn the_layout_has_the_harness_keys() {
        let dir = tempfile::tempdir().unwrap();
        let items = vec![
            item("0", true, Some(true)),
            item("1", true, Some(false)),
            item("2", true, Some(true)),
            item("3", false, Some(false)),
        ];
        let files = write(dir.path(), &[("arc_easy".into(), items)], json!({"model": "m"})).unwrap();
        assert_eq!(files, vec![dir.path().join("results.json"), dir.path().join("samples_arc_easy.jsonl")]);
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
        let t = &r["results"]["arc_easy"];
        assert_eq!(t["alias"], "arc_easy");
        assert_eq!(t["acc,none"], 0.75);
        assert_eq!(t["acc_stderr,none"], 0.25);
        assert_eq!(t["acc_norm,none"], 0.5);
        assert!(t["acc_norm_stderr,none"].as_f64().is_some());
        assert_eq!(r["n-samples"]["arc_easy"]["effective"], 4);
        assert_eq!(r["config"]["model"], "m");
        let lines: Vec<Value> =
            std::fs::read_to_string(&files[1]).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3]["doc_id"], "3");
        assert_eq!(lines[3]["target"], "B");
        assert_eq!(lines[3]["filtered_resps"][0], "A");
        assert_eq!(lines[3]["acc"], 0.0);
    }
}
