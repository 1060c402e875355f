//! The paper's findings from finished samples: per-task accuracy of the original chain, of the
//! best chain MCTS found (oracle) and of the random baseline at the same budget; how often a
//! shorter correct chain exists for samples the model gets right (finding 1); how often some
//! chain fixes a sample it gets wrong (finding 2); which layers best chains skip or repeat.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cola_executor::Chain;
use plotters::prelude::*;
use serde::Serialize;

use crate::run_dir::{MergedRuns, RunConfig, RunError, jsonl_line, merge_runs, write_atomic};
use crate::sample::SampleRecord;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub n: usize,
    pub static_accuracy: f64,
    pub oracle_accuracy: f64,
    pub random_accuracy: Option<f64>,
    pub static_correct: usize,
    /// Static-correct samples with a correct chain shorter than N.
    pub shortened: usize,
    pub mean_shortest_len: Option<f64>,
    pub median_shortest_len: Option<f64>,
    pub static_wrong: usize,
    pub fixed_by_mcts: usize,
    pub fixed_by_random: Option<usize>,
    pub mean_evaluations: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub num_layers: usize,
    pub tasks: Vec<TaskReport>,
    /// Length of the best chain -> samples, over samples with a correct chain.
    pub best_length_histogram: BTreeMap<usize, usize>,
    /// Per layer: share of best chains that leave it out / run it more than once.
    pub skip_rate: Vec<f64>,
    pub repeat_rate: Vec<f64>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn median(mut v: Vec<usize>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] as f64 } else { (v[m - 1] + v[m]) as f64 / 2.0 })
}

pub fn build_report(records: &[SampleRecord], num_layers: usize) -> Report {
    let mut by_task: BTreeMap<&str, Vec<&SampleRecord>> = BTreeMap::new();
    for r in records {
        by_task.entry(&r.task).or_default().push(r);
    }
    let tasks = by_task
        .into_iter()
        .map(|(task, rs)| {
            let n = rs.len();
            let right: Vec<&&SampleRecord> = rs.iter().filter(|r| r.static_correct).collect();
            let wrong: Vec<&&SampleRecord> = rs.iter().filter(|r| !r.static_correct).collect();
            let lens: Vec<usize> = right.iter().filter_map(|r| r.best_len).collect();
            let has_random = rs.iter().all(|r| r.random_best_correct.is_some()) && n > 0;
            TaskReport {
                task: task.to_string(),
                n,
                static_accuracy: ratio(right.len(), n),
                oracle_accuracy: ratio(rs.iter().filter(|r| r.best_correct).count(), n),
                random_accuracy: has_random
                    .then(|| ratio(rs.iter().filter(|r| r.random_best_correct == Some(true)).count(), n)),
                static_correct: right.len(),
                shortened: lens.iter().filter(|&&l| l < num_layers).count(),
                mean_shortest_len: (!lens.is_empty()).then(|| lens.iter().sum::<usize>() as f64 / lens.len() as f64),
                median_shortest_len: median(lens),
                static_wrong: wrong.len(),
                fixed_by_mcts: wrong.iter().filter(|r| r.best_correct).count(),
                fixed_by_random: has_random
                    .then(|| wrong.iter().filter(|r| r.random_best_correct == Some(true)).count()),
                mean_evaluations: rs.iter().map(|r| r.evaluations as f64).sum::<f64>() / n.max(1) as f64,
            }
        })
        .collect();
    let mut hist = BTreeMap::new();
    let mut skipped = vec![0usize; num_layers];
    let mut repeated = vec![0usize; num_layers];
    let mut chains = 0;
    for r in records {
        let Some(text) = &r.best_chain else { continue };
        let Ok(chain) = Chain::parse(text) else { continue };
        *hist.entry(chain.len()).or_insert(0) += 1;
        chains += 1;
        let mut counts = vec![0usize; num_layers];
        for &l in chain.layers() {
            if l < num_layers {
                counts[l] += 1;
            }
        }
        for l in 0..num_layers {
            skipped[l] += (counts[l] == 0) as usize;
            repeated[l] += (counts[l] > 1) as usize;
        }
    }
    Report {
        num_layers,
        tasks,
        best_length_histogram: hist,
        skip_rate: skipped.iter().map(|&s| ratio(s, chains)).collect(),
        repeat_rate: repeated.iter().map(|&s| ratio(s, chains)).collect(),
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn opt<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map_or("-".into(), |v| v.to_string())
}

/// The table printed at the end of a run and at the top of report.md.
pub fn render_table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| task | n | static acc | CoLa oracle acc | random acc (same budget) | right: shorter chain exists | mean / median shortest len | wrong: fixed by MCTS | wrong: fixed by random | evals/sample |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for t in &report.tasks {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {}/{} ({}) | {} / {} | {}/{} ({}) | {} | {:.1} |",
            t.task,
            t.n,
            pct(t.static_accuracy),
            pct(t.oracle_accuracy),
            t.random_accuracy.map_or("-".into(), pct),
            t.shortened,
            t.static_correct,
            pct(ratio(t.shortened, t.static_correct)),
            opt(t.mean_shortest_len.map(|m| format!("{m:.1}"))),
            opt(t.median_shortest_len),
            t.fixed_by_mcts,
            t.static_wrong,
            pct(ratio(t.fixed_by_mcts, t.static_wrong)),
            t.fixed_by_random.map_or("-".into(), |f| format!(
                "{f}/{} ({})",
                t.static_wrong,
                pct(ratio(f, t.static_wrong))
            )),
            t.mean_evaluations,
        );
    }
    s
}

/// Mean seconds per sample of each task, over the samples with a timing (timings live apart
/// from the records: see `run_dir::TIMINGS_FILE`). One line, for the end of a run and report.md.
pub fn render_timing(records: &[SampleRecord], timings: &HashMap<(String, String), f64>) -> String {
    let mut by_task: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for r in records {
        if let Some(s) = timings.get(&(r.task.clone(), r.doc_id.clone())) {
            let e = by_task.entry(&r.task).or_default();
            e.0 += s;
            e.1 += 1;
        }
    }
    if by_task.is_empty() {
        return "Search time: not recorded.".into();
    }
    let parts: Vec<String> =
        by_task.iter().map(|(task, (sum, n))| format!("{task} {:.1} s/sample ({n} timed)", sum / *n as f64)).collect();
    format!("Search time: {}.", parts.join(", "))
}

/// `cargo xtask report`: merges finished run directories (shards of one run) and writes the
/// report of the whole into `out_dir`, with the merged `samples.jsonl` when `out_dir` is none of
/// the runs. Returns the report, the merged runs and the files written.
pub fn report_runs(runs: &[PathBuf], out_dir: &Path) -> Result<(Report, MergedRuns, Vec<PathBuf>), RunError> {
    let merged = merge_runs(runs)?;
    let Some(first) = merged.configs.first() else {
        return Err(RunError::Invalid { path: out_dir.to_path_buf(), message: "no run directories given".into() });
    };
    if let Some((dir, other)) = runs.iter().zip(&merged.configs).find(|(_, c)| c.num_layers != first.num_layers) {
        return Err(RunError::Invalid {
            path: dir.clone(),
            message: format!(
                "a run of a {}-layer model, the first is of {} layers; report them separately",
                other.num_layers, first.num_layers
            ),
        });
    }
    let report = build_report(&merged.records, first.num_layers);
    let mut files = write_report(out_dir, &report, &merged.records, &merged.timings, &merged.configs, runs)?;
    // A directory of its own also gets the merged records (never a run's own samples.jsonl).
    let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    if !runs.iter().any(|r| same(r, out_dir)) {
        let lines: String = merged.records.iter().map(jsonl_line).collect();
        let path = out_dir.join(crate::run_dir::SAMPLES_FILE);
        write_atomic(&path, lines.as_bytes())?;
        files.push(path);
    }
    Ok((report, merged, files))
}

/// Writes `report.md`, `report.json` and the figures into `out_dir`; returns the files written.
/// Everything but the `Runs:` and `Search time:` lines of report.md depends only on the records
/// and configs, so shards merged give the report of the run done whole.
pub fn write_report(
    out_dir: &Path, report: &Report, records: &[SampleRecord], timings: &HashMap<(String, String), f64>,
    configs: &[RunConfig], sources: &[PathBuf],
) -> Result<Vec<PathBuf>, RunError> {
    let mut files = Vec::new();
    let figures = write_figures(out_dir, report)?;
    let mut md = String::new();
    let _ = writeln!(md, "# CoLa search report\n");
    let _ =
        writeln!(md, "Runs: {}\n", sources.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", "));
    if let Some(c) = configs.first() {
        let s = &c.settings;
        let _ = writeln!(
            md,
            "Model `{}` ({} layers); actions `{}`, {} simulations, λ = {}, c = {:.3}, ε = {}, chain length {}..={}, scoring `{}`{}, seed {}.\n",
            c.model_dir,
            c.num_layers,
            s.actions,
            s.simulations,
            s.lambda,
            s.c,
            s.epsilon,
            s.min_len,
            s.max_len,
            s.scoring.mode,
            if s.scoring.chat { " (chat template)" } else { "" },
            c.seed
        );
    }
    md.push_str(&render_table(report));
    let _ = writeln!(md, "\n{}", render_timing(records, timings));
    let _ = writeln!(
        md,
        "\nReward is the paper's oracle: a chain counts as correct when its answer matches the gold answer, so the CoLa accuracy shows that a good chain exists, not a deployable prediction."
    );
    let _ = writeln!(
        md,
        "\n- Finding 1 (paper: >75% of right samples have a shorter correct chain): the `right: shorter chain exists` column."
    );
    let _ = writeln!(
        md,
        "- Finding 2 (paper: >60% of wrong samples have a chain that gets them right): the `wrong: fixed by MCTS` column, next to random search with the same number of distinct evaluations.\n"
    );
    for f in &figures {
        let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let _ = writeln!(md, "![{name}]({name})\n");
    }
    let _ = writeln!(md, "## Layers in best chains\n\n| layer | skipped | repeated |\n|---|---|---|");
    for l in 0..report.num_layers {
        let _ = writeln!(md, "| {l} | {} | {} |", pct(report.skip_rate[l]), pct(report.repeat_rate[l]));
    }
    let md_path = out_dir.join("report.md");
    write_atomic(&md_path, md.as_bytes())?;
    files.push(md_path);
    let json_path = out_dir.join("report.json");
    write_atomic(&json_path, serde_json::to_string_pretty(report).expect("report serializes").as_bytes())?;
    files.push(json_path);
    files.extend(figures);
    Ok(files)
}

fn plot_err(path: &Path) -> impl Fn(String) -> RunError + use<> {
    let path = path.to_path_buf();
    move |message| RunError::Invalid { path: path.clone(), message: format!("drawing the figure: {message}") }
}

fn write_figures(out_dir: &Path, report: &Report) -> Result<Vec<PathBuf>, RunError> {
    std::fs::create_dir_all(out_dir).map_err(|error| RunError::Io { path: out_dir.to_path_buf(), error })?;
    let hist_path = out_dir.join("best_chain_lengths.svg");
    let layers_path = out_dir.join("layer_skip_repeat.svg");
    let e = plot_err(&hist_path);
    {
        let root = SVGBackend::new(&hist_path, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let max_count = report.best_length_histogram.values().copied().max().unwrap_or(1);
        let (lo, hi) = (
            report.best_length_histogram.keys().next().copied().unwrap_or(0).min(report.num_layers),
            report.best_length_histogram.keys().last().copied().unwrap_or(0).max(report.num_layers),
        );
        let mut chart = ChartBuilder::on(&root)
            .caption("Length of the shortest correct chain", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(
                (lo.saturating_sub(1) as u32..hi as u32 + 1).into_segmented(),
                0u32..max_count as u32 + 1,
            )
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(format!("chain length (original: {})", report.num_layers))
            .y_desc("samples")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        // Bars drawn one by one in length order: plotters' `Histogram` sums through a HashMap,
        // so its SVG comes out in a different order on every run.
        chart
            .draw_series(report.best_length_histogram.iter().map(|(&l, &c)| {
                let (l, c) = (l as u32, c as u32);
                let mut bar =
                    Rectangle::new([(SegmentValue::Exact(l), c), (SegmentValue::Exact(l + 1), 0)], BLUE.filled());
                bar.set_margin(0, 0, 5, 5);
                bar
            }))
            .map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    let e = plot_err(&layers_path);
    {
        let root = SVGBackend::new(&layers_path, (820, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let n = report.num_layers as i32;
        let mut chart = ChartBuilder::on(&root)
            .caption("Share of best chains that skip (top) or repeat (bottom) each layer", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0..n, 0..2)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("layer")
            .y_labels(2)
            .y_label_formatter(&|y| if *y == 1 { "skip".into() } else { "repeat".into() })
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let cell = |rate: f64| RGBColor(255, (255.0 * (1.0 - rate)) as u8, (255.0 * (1.0 - rate)) as u8).filled();
        chart
            .draw_series((0..n).flat_map(|l| {
                [
                    Rectangle::new([(l, 1), (l + 1, 2)], cell(report.skip_rate[l as usize])),
                    Rectangle::new([(l, 0), (l + 1, 1)], cell(report.repeat_rate[l as usize])),
                ]
            }))
            .map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(vec![hist_path.clone(), layers_path.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(task: &str, static_correct: bool, best: Option<&str>, random: bool) -> SampleRecord {
        SampleRecord {
            task: task.into(),
            doc_id: "0".into(),
            gold: "A".into(),
            static_prediction: None,
            static_correct,
            best_len: best.map(|b| Chain::parse(b).unwrap().len()),
            best_correct: best.is_some(),
            best_chain: best.map(str::to_string),
            best_prediction: None,
            evaluations: 10,
            simulations: 9,
            stopped_early: false,
            random_best_correct: Some(random),
            random_best_chain: None,
            random_best_len: None,
            random_evaluations: Some(10),
            chains: vec![],
        }
    }

    #[test]
    fn findings_count_what_they_say() {
        // 4 layers. Right samples: one shortened (len 3), one only the original (len 4).
        // Wrong samples: one fixed by MCTS and random, one fixed by MCTS only, one not fixed.
        let rs = vec![
            rec("t", true, Some("0,1,3"), true),
            rec("t", true, Some("0-3"), true),
            rec("t", false, Some("0,1,1,2,3"), true),
            rec("t", false, Some("0,2,3"), false),
            rec("t", false, None, false),
        ];
        let r = build_report(&rs, 4);
        let t = &r.tasks[0];
        assert_eq!(
            (t.n, t.static_correct, t.shortened, t.static_wrong, t.fixed_by_mcts, t.fixed_by_random),
            (5, 2, 1, 3, 2, Some(1))
        );
        assert_eq!(t.static_accuracy, 0.4);
        assert_eq!(t.oracle_accuracy, 0.8);
        assert_eq!(t.random_accuracy, Some(0.6));
        assert_eq!(t.mean_shortest_len, Some(3.5));
        assert_eq!(r.best_length_histogram, BTreeMap::from([(3, 2), (4, 1), (5, 1)]));
        // Layer 2 is skipped by 1 of 4 best chains ("0,1,3"), layer 1 by "0,2,3"; repeated by one.
        assert_eq!(r.skip_rate[2], 0.25);
        assert_eq!(r.skip_rate[1], 0.25);
        assert_eq!(r.repeat_rate[1], 0.25);
        assert_eq!(r.skip_rate[0], 0.0);
    }

    #[test]
    fn report_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let records = [rec("t", true, Some("0,1,3"), true)];
        let r = build_report(&records, 4);
        let timings = HashMap::from([(("t".to_string(), "0".to_string()), 2.5)]);
        let files = write_report(dir.path(), &r, &records, &timings, &[], &[]).unwrap();
        assert_eq!(files.len(), 4);
        let svg = std::fs::read_to_string(dir.path().join("best_chain_lengths.svg")).unwrap();
        assert!(svg.contains("<svg"));
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| t | 1 |"));
        assert!(md.contains("Search time: t 2.5 s/sample (1 timed)."), "{md}");
    }
}
