//! Held-out, label-free use of chains (`cargo xtask transfer`): do chains found with labels help
//! on items whose labels nothing looks at?
//!
//! 1. Calibration, on validation items (labels allowed): ShortGPT's Block Influence, and a
//!    task-level MCTS over chains whose reward is the chain's accuracy on the calibration items
//!    (the per-sample engine and action rules, the paper's length penalty).
//! 2. The plan: the strategies of [`Strategy`], each a fixed rule built from calibration only.
//! 3. Held-out, on test items: every chain a strategy needs scores every item, one chain at a
//!    time and timed; each strategy then picks its answer from those answers without the label
//!    ([`Rule::choose`] is never given one). Only `oracle` reads labels, and it is marked so.
//! 4. The report: accuracy with a 95% bootstrap interval, the paired difference from static with
//!    its interval, mean layers executed and seconds per item (the chains a strategy runs, summed:
//!    one chain after another), and a Pareto plot.
//!
//! A run directory resumes: `calibration.jsonl` holds each evaluated chain (the search is
//! deterministic for its seed, so it replays from these records), `heldout.jsonl` each finished
//! item. `plan.json` (Block Influence, each strategy's chains), `choices.jsonl` (each strategy's
//! answer per held-out item), `report.md`, `report.json` and `pareto.svg` are written from them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cola_eval::{Item, ItemKind, ScoringMode, ScoringOptions, bootstrap_interval, score_item, score_item_variants};
use cola_executor::{Chain, LoadedChainModel, prune_by_influence};
use cola_mcts::chains::{ChainProblem, ChainSpace};
use cola_mcts::{Evaluation, sample_rng, search};
use cola_model::LayerOps;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::SearchError;
use crate::markdown::{self, percent, points};
use crate::model::ChainModel;
use crate::run_dir::{Provenance, RunDir, RunError, append_line, read_records_repairing, write_atomic};
use crate::runs::{Selection, TaskItems, hashed, progress, select_items};
use crate::sample::TreeSettings;

pub const CALIBRATION_FILE: &str = "calibration.jsonl";
pub const HELDOUT_FILE: &str = "heldout.jsonl";
pub const PLAN_FILE: &str = "plan.json";
pub const CHOICES_FILE: &str = "choices.jsonl";

/// Everything that decides what `transfer` does besides the items (all of it in config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSettings {
    pub scoring: ScoringOptions,
    /// The task-level search, as the per-sample one; each simulation evaluates at most one new
    /// chain on every calibration item.
    #[serde(flatten)]
    pub tree: TreeSettings,
    /// Chains evaluated together (MCTS walks per round, as `search --batch`).
    pub batch: usize,
    /// ShortGPT: one strategy per number of dropped layers.
    pub drop: Vec<usize>,
    /// m: the top-m task chains by calibration accuracy vote, and with the original model they
    /// are the candidates of `confidence` and `oracle`.
    pub top: usize,
    /// Bootstrap resamples for the intervals.
    pub resamples: usize,
}

/// A transfer run's config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    pub task: String,
    pub calibration_split: Option<cola_eval::Split>,
    pub heldout_split: Option<cola_eval::Split>,
    pub calibration_n: usize,
    pub heldout_n: usize,
    pub seed: u64,
    pub settings: TransferSettings,
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// Everything a transfer run needs besides the model.
pub struct TransferRequest {
    /// Calibration items (one source; labels are read) and held-out items (the same source's
    /// other split, or another file; labels are read only to score).
    pub calibration: Selection,
    pub heldout: Selection,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub force: bool,
    pub seed: u64,
    pub settings: TransferSettings,
    pub backend: cola_executor::backend::BackendKind,
}

/// One chain of the task-level search, scored on every calibration item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    pub chain: Chain,
    pub length: usize,
    pub accuracy: f64,
    /// Per calibration item, in order: `1` right, `0` wrong.
    pub correct: String,
}

/// One chain's answer to one held-out item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainAnswer {
    pub chain: Chain,
    pub prediction: Option<String>,
    pub margin: Option<f64>,
    pub seconds: f64,
}

/// One held-out item: every planned chain's answer (one line of heldout.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutRecord {
    pub doc_id: String,
    pub gold: String,
    pub answers: Vec<ChainAnswer>,
}

/// How a strategy turns the answers of its chains into one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", content = "chains", rename_all = "lowercase")]
pub enum Rule {
    /// The answer of one chain.
    Single(Chain),
    /// Majority vote of the chains' answers (unanswered ones do not vote); a tie goes to the
    /// original chain's answer when it is among the tied ones (it then runs too), else to the
    /// tied answer of the earliest chain in the list.
    Vote(Vec<Chain>),
    /// The answer of the chain whose margin (its predicted choice's score minus the runner-up's,
    /// see `ItemResult::margin`) is largest; ties and missing margins go to the earlier chain.
    Confidence(Vec<Chain>),
    /// Reads the label: right when any chain is right. For reference only.
    Oracle(Vec<Chain>),
}

/// A named rule (`static`, `shortgpt-k<K>`, `task-chain-<L>`, `vote`, `confidence`, `oracle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    pub name: String,
    #[serde(flatten)]
    pub rule: Rule,
    /// Calibration accuracy of a single task chain (or the original one).
    pub calibration_accuracy: Option<f64>,
}

/// What a strategy did on one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub prediction: Option<String>,
    /// The chains it ran, in order.
    pub ran: Vec<Chain>,
}

impl Rule {
    /// The answer from `answers` (by chain text); `original` is the original chain's text. No
    /// label is passed: nothing here can read one. `Oracle` picks the first candidate's answer
    /// here; its correctness is [`Rule::oracle_correct`].
    pub fn choose(&self, answers: &HashMap<&Chain, &ChainAnswer>, original: &Chain) -> Choice {
        let prediction_of = |c: &Chain| answers.get(c).and_then(|a| a.prediction.clone());
        match self {
            Rule::Single(c) => Choice { prediction: prediction_of(c), ran: vec![c.clone()] },
            Rule::Vote(chains) => {
                let mut counts: Vec<(String, usize)> = Vec::new();
                for p in chains.iter().filter_map(&prediction_of) {
                    match counts.iter_mut().find(|(q, _)| *q == p) {
                        Some((_, k)) => *k += 1,
                        None => counts.push((p, 1)),
                    }
                }
                let mut ran = chains.clone();
                let top = counts.iter().map(|(_, k)| *k).max().unwrap_or(0);
                let tied: Vec<&String> = counts.iter().filter(|(_, k)| *k == top).map(|(p, _)| p).collect();
                let prediction = match tied.as_slice() {
                    [] => None,
                    [one] => Some((*one).clone()),
                    _ => {
                        ran.push(original.clone());
                        match prediction_of(original) {
                            Some(p) if tied.contains(&&p) => Some(p),
                            // Counts are in first-vote order: the earliest chain's answer.
                            _ => Some(tied[0].clone()),
                        }
                    }
                };
                Choice { prediction, ran }
            }
            Rule::Confidence(chains) => {
                let mut best: Option<(&Chain, f64)> = None;
                for c in chains {
                    let m = answers.get(c).and_then(|a| a.margin).unwrap_or(f64::NEG_INFINITY);
                    if best.is_none_or(|(_, b)| m > b) {
                        best = Some((c, m));
                    }
                }
                Choice { prediction: best.and_then(|(c, _)| prediction_of(c)), ran: chains.clone() }
            }
            Rule::Oracle(chains) => Choice { prediction: chains.first().and_then(prediction_of), ran: chains.clone() },
        }
    }

    /// `Oracle` only: whether any candidate answers `gold`.
    pub fn oracle_correct(&self, answers: &HashMap<&Chain, &ChainAnswer>, gold: &str) -> Option<bool> {
        match self {
            Rule::Oracle(chains) => {
                Some(chains.iter().any(|c| answers.get(c).and_then(|a| a.prediction.as_deref()) == Some(gold)))
            }
            _ => None,
        }
    }

    /// What the rule chose and whether it counts as right against `gold` (the label is read
    /// only here, after [`Rule::choose`], and by the oracle).
    fn outcome(&self, answers: &HashMap<&Chain, &ChainAnswer>, original: &Chain, gold: &str) -> (Choice, bool) {
        let choice = self.choose(answers, original);
        let right = self.oracle_correct(answers, gold).unwrap_or(choice.prediction.as_deref() == Some(gold));
        (choice, right)
    }

    pub fn chains(&self) -> Vec<Chain> {
        match self {
            Rule::Single(c) => vec![c.clone()],
            Rule::Vote(cs) | Rule::Confidence(cs) | Rule::Oracle(cs) => cs.clone(),
        }
    }
}

/// The strategies, from calibration alone: the original chain, ShortGPT pruning per `drop`,
/// each non-original chain on the Pareto front of (calibration accuracy ↑, length ↓), and vote,
/// confidence and oracle over the top-`top` task chains (by accuracy, then shorter, then first
/// found; the original chain left out) plus the original.
pub fn plan_strategies(
    num_layers: usize, influence: &[f64], calibration: &[CalibrationRecord], settings: &TransferSettings,
) -> Vec<Strategy> {
    let original = Chain::identity(num_layers);
    let accuracy_of = |c: &Chain| calibration.iter().find(|r| r.chain == *c).map(|r| r.accuracy);
    let mut out = vec![Strategy {
        name: "static".into(),
        rule: Rule::Single(original.clone()),
        calibration_accuracy: accuracy_of(&original),
    }];
    for &k in &settings.drop {
        let chain = prune_by_influence(influence, k);
        out.push(Strategy {
            name: format!("shortgpt-k{k}"),
            calibration_accuracy: accuracy_of(&chain),
            rule: Rule::Single(chain),
        });
    }
    // Pareto front: by length, each chain more accurate than every shorter one.
    let mut by_length: Vec<&CalibrationRecord> = calibration.iter().collect();
    by_length.sort_by(|a, b| a.length.cmp(&b.length).then(b.accuracy.total_cmp(&a.accuracy)));
    let mut best = f64::NEG_INFINITY;
    let mut names = HashSet::new();
    for r in by_length {
        if r.accuracy > best {
            best = r.accuracy;
            if r.chain != original && names.insert(r.length) {
                out.push(Strategy {
                    name: format!("task-chain-{}", r.length),
                    rule: Rule::Single(r.chain.clone()),
                    calibration_accuracy: Some(r.accuracy),
                });
            }
        }
    }
    let mut ranked: Vec<(usize, &CalibrationRecord)> =
        calibration.iter().enumerate().filter(|(_, r)| r.chain != original).collect();
    ranked.sort_by(|(i, a), (j, b)| b.accuracy.total_cmp(&a.accuracy).then(a.length.cmp(&b.length)).then(i.cmp(j)));
    let top: Vec<Chain> = ranked.iter().take(settings.top).map(|(_, r)| r.chain.clone()).collect();
    if !top.is_empty() {
        let mut with_original = top.clone();
        with_original.push(original);
        out.push(Strategy { name: "vote".into(), rule: Rule::Vote(top), calibration_accuracy: None });
        out.push(Strategy {
            name: "confidence".into(),
            rule: Rule::Confidence(with_original.clone()),
            calibration_accuracy: None,
        });
        out.push(Strategy { name: "oracle".into(), rule: Rule::Oracle(with_original), calibration_accuracy: None });
    }
    out
}

/// One strategy's held-out figures (an entry of report.json's `strategies`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyReport {
    pub name: String,
    pub accuracy: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub diff_vs_static: f64,
    pub diff_ci_low: f64,
    pub diff_ci_high: f64,
    pub mean_layers: f64,
    pub seconds_per_item: f64,
    pub calibration_accuracy: Option<f64>,
    pub chains: Vec<Chain>,
    pub uses_labels: bool,
}

/// report.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferReport {
    pub task: String,
    pub calibration_n: usize,
    pub heldout_n: usize,
    pub num_layers: usize,
    pub scoring: ScoringMode,
    pub calibration_evaluations: usize,
    /// Accuracy of guessing uniformly among each held-out item's choices (None: not multiple
    /// choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance_accuracy: Option<f64>,
    pub strategies: Vec<StrategyReport>,
}

/// What the strategies answered on one held-out item (a line of choices.jsonl): each
/// label-free strategy's answer, and whether the label-reading oracle counts the item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemChoices {
    pub doc_id: String,
    pub gold: String,
    pub answers: BTreeMap<String, Option<String>>,
    pub oracle_correct: Option<bool>,
}

fn answer_map(record: &HeldoutRecord) -> HashMap<&Chain, &ChainAnswer> {
    record.answers.iter().map(|a| (&a.chain, a)).collect()
}

/// Per held-out item, per strategy: what it chose and whether that is right.
fn outcomes(strategies: &[Strategy], records: &[HeldoutRecord], num_layers: usize) -> Vec<Vec<(Choice, bool)>> {
    let original = Chain::identity(num_layers);
    records
        .iter()
        .map(|r| {
            let answers = answer_map(r);
            strategies.iter().map(|s| s.rule.outcome(&answers, &original, &r.gold)).collect()
        })
        .collect()
}

/// Every strategy's answer on every held-out item.
pub fn item_choices(strategies: &[Strategy], records: &[HeldoutRecord], num_layers: usize) -> Vec<ItemChoices> {
    records
        .iter()
        .zip(outcomes(strategies, records, num_layers))
        .map(|(r, per_strategy)| {
            let mut out = ItemChoices {
                doc_id: r.doc_id.clone(),
                gold: r.gold.clone(),
                answers: BTreeMap::new(),
                oracle_correct: None,
            };
            for (s, (choice, right)) in strategies.iter().zip(per_strategy) {
                match s.rule {
                    Rule::Oracle(_) => out.oracle_correct = Some(right),
                    _ => {
                        out.answers.insert(s.name.clone(), choice.prediction);
                    }
                }
            }
            out
        })
        .collect()
}

/// The figures of every strategy over the held-out records (static first in `strategies`).
pub fn evaluate_strategies(
    strategies: &[Strategy], records: &[HeldoutRecord], num_layers: usize, resamples: usize, seed: u64,
) -> Vec<StrategyReport> {
    let mut per_strategy: Vec<(Vec<f64>, f64, f64)> = vec![(Vec::new(), 0.0, 0.0); strategies.len()];
    for (r, per_item) in records.iter().zip(outcomes(strategies, records, num_layers)) {
        let answers = answer_map(r);
        for ((correct, layers, seconds), (choice, right)) in per_strategy.iter_mut().zip(per_item) {
            correct.push(if right { 1.0 } else { 0.0 });
            for c in &choice.ran {
                *layers += c.len() as f64;
                *seconds += answers.get(c).map_or(0.0, |a| a.seconds);
            }
        }
    }
    let n = records.len().max(1) as f64;
    let static_correct = per_strategy.first().map(|p| p.0.clone()).unwrap_or_default();
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    strategies
        .iter()
        .zip(per_strategy)
        .map(|(s, (correct, layers, seconds))| {
            let diffs: Vec<f64> = correct.iter().zip(&static_correct).map(|(a, b)| a - b).collect();
            let (ci_low, ci_high) = bootstrap_interval(&correct, resamples, seed);
            // The same resamples (same seed, same length) for the difference: a paired bootstrap.
            let (diff_ci_low, diff_ci_high) = bootstrap_interval(&diffs, resamples, seed);
            StrategyReport {
                name: s.name.clone(),
                accuracy: mean(&correct),
                ci_low,
                ci_high,
                diff_vs_static: mean(&diffs),
                diff_ci_low,
                diff_ci_high,
                mean_layers: layers / n,
                seconds_per_item: seconds / n,
                calibration_accuracy: s.calibration_accuracy,
                chains: s.rule.chains(),
                uses_labels: matches!(s.rule, Rule::Oracle(_)),
            }
        })
        .collect()
}

fn invalid(message: String) -> SearchError {
    SearchError::Data(cola_eval::EvalError::Invalid(message))
}

fn item_error(task: &str, item: &Item, error: cola_eval::EvalError) -> SearchError {
    SearchError::Item { task: task.to_string(), doc_id: item.doc_id.clone(), error }
}

/// The one source of a selection, checked to be multiple choice and non-empty.
fn one_source(items: Vec<TaskItems>, role: &str) -> Result<TaskItems, SearchError> {
    let [t]: [TaskItems; 1] =
        items.try_into().map_err(|v: Vec<TaskItems>| invalid(format!("{role}: one task, not {}", v.len())))?;
    if t.items.is_empty() {
        return Err(invalid(format!("{role}: no items selected from {}", t.name)));
    }
    if let Some(i) = t.items.iter().find(|i| !matches!(i.kind, ItemKind::MultipleChoice { .. })) {
        return Err(invalid(format!(
            "{role}: item {} of {} is not multiple choice; transfer compares answers by choice (math is not supported yet)",
            i.doc_id, t.name
        )));
    }
    Ok(t)
}

/// Where a transfer run on `task` writes unless told: `runs/transfer-<task>-c<N>-h<N>-s<seed>`.
pub fn default_run_dir(task: &str, calibration: usize, heldout: usize, seed: u64) -> PathBuf {
    PathBuf::from("runs").join(format!("transfer-{task}-c{calibration}-h{heldout}-s{seed}"))
}

/// Runs (or resumes) a transfer run and writes its report. Returns the report and the files
/// written.
pub fn run_transfer<B: LayerOps>(
    req: &TransferRequest, model: &LoadedChainModel<B>,
) -> Result<(TransferReport, Vec<PathBuf>), SearchError> {
    if req.settings.scoring.mode == ScoringMode::Generate {
        return Err(invalid(
            "transfer scores with loglik or letter: the confidence strategy needs each choice's score".into(),
        ));
    }
    let calibration = one_source(select_items(&req.data_dir, &req.calibration)?, "calibration items")?;
    let heldout = one_source(select_items(&req.data_dir, &req.heldout)?, "held-out items")?;
    // By text: doc ids are positions within a split, so they repeat across splits.
    let calibration_texts: HashSet<&str> = calibration.items.iter().map(|i| i.text()).collect();
    if let Some(i) = heldout.items.iter().find(|i| calibration_texts.contains(i.text())) {
        return Err(invalid(format!(
            "held-out item {} of {} is also a calibration item (same question); held-out items must be unseen",
            i.doc_id, heldout.name
        )));
    }
    if req.settings.resamples == 0 {
        return Err(invalid("--resamples 0: the intervals need at least one bootstrap resample".into()));
    }
    let num_layers = model.executor.num_layers();
    if let Some(&k) = req.settings.drop.iter().find(|&&k| k == 0 || k >= num_layers) {
        return Err(invalid(format!("--drop {k}: drop between 1 and {} layers of {num_layers}", num_layers - 1)));
    }
    let mut data = Vec::new();
    for t in [&calibration, &heldout] {
        for f in &t.load.files {
            let h = hashed(f)?;
            if !data.contains(&h) {
                data.push(h);
            }
        }
    }
    let config = TransferConfig {
        task: calibration.name.clone(),
        calibration_split: req.calibration.split,
        heldout_split: req.heldout.split,
        calibration_n: calibration.items.len(),
        heldout_n: heldout.items.len(),
        seed: req.seed,
        settings: req.settings.clone(),
        provenance: Provenance::new(&model.dir, num_layers, data, req.backend, model.int8_activations)?,
    };
    let run = RunDir::open_with(&req.out_dir, &config, req.force, &[CALIBRATION_FILE, HELDOUT_FILE, PLAN_FILE])?;
    let dir = &run.dir;

    eprintln!("calibration: Block Influence on {} {} prompts", calibration.items.len(), calibration.name);
    let influence = crate::influence::mean_block_influence(model, std::slice::from_ref(&calibration))?;
    let records = calibrate(dir, &calibration, model, &req.settings, req.seed)?;
    let strategies = plan_strategies(num_layers, &influence, &records, &req.settings);
    let plan = json!({"influence": influence, "strategies": strategies});
    write_atomic(&dir.join(PLAN_FILE), serde_json::to_string_pretty(&plan).expect("json").as_bytes())?;
    let heldout_records = score_heldout(dir, &heldout, model, &req.settings.scoring, &strategies)?;
    let report = TransferReport {
        task: calibration.name.clone(),
        calibration_n: calibration.items.len(),
        heldout_n: heldout_records.len(),
        num_layers,
        scoring: req.settings.scoring.mode,
        calibration_evaluations: records.len(),
        chance_accuracy: chance_accuracy(&heldout.items),
        strategies: evaluate_strategies(&strategies, &heldout_records, num_layers, req.settings.resamples, req.seed),
    };
    let mut files = write_transfer_report(dir, &report, &config)?;
    let choices: String =
        item_choices(&strategies, &heldout_records, num_layers).iter().map(crate::run_dir::jsonl_line).collect();
    write_atomic(&dir.join(CHOICES_FILE), choices.as_bytes())?;
    files.push(dir.join(CHOICES_FILE));
    Ok((report, files))
}

/// The mean over `items` of 1 / (number of choices); None unless every item is multiple choice.
fn chance_accuracy(items: &[cola_eval::Item]) -> Option<f64> {
    let inverse: Option<Vec<f64>> = items
        .iter()
        .map(|it| match &it.kind {
            cola_eval::ItemKind::MultipleChoice { choices, .. } if !choices.is_empty() => {
                Some(1.0 / choices.len() as f64)
            }
            _ => None,
        })
        .collect();
    inverse.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// The task-level search; every chain it evaluates is appended to calibration.jsonl, and chains
/// found there (an earlier, interrupted run) are not scored again.
fn calibrate<B: LayerOps>(
    dir: &Path, calibration: &TaskItems, model: &LoadedChainModel<B>, settings: &TransferSettings, seed: u64,
) -> Result<Vec<CalibrationRecord>, SearchError> {
    let path = dir.join(CALIBRATION_FILE);
    let done: Vec<CalibrationRecord> = read_records_repairing(&path, "a calibration record")?;
    let mut known: HashMap<Chain, CalibrationRecord> = done.into_iter().map(|r| (r.chain.clone(), r)).collect();
    let num_layers = model.executor.num_layers();
    let items = &calibration.items;
    let pb = progress((settings.tree.simulations + 1) * items.len(), 0, format!("{} chains", calibration.name));
    let mut chain_model = ChainModel::new(model, Chain::identity(num_layers));
    let mut order: Vec<Chain> = Vec::new();
    let mut best = (f64::NEG_INFINITY, 0usize);
    let mut evaluate = |chains: &[Vec<usize>]| -> Result<Vec<Evaluation<()>>, SearchError> {
        let texts: Vec<Chain> = chains.iter().map(|c| Chain::new(c.clone())).collect();
        let todo: Vec<usize> = (0..chains.len()).filter(|&i| !known.contains_key(&texts[i])).collect();
        pb.inc(((chains.len() - todo.len()) * items.len()) as u64);
        if !todo.is_empty() {
            let mut correct = vec![String::with_capacity(items.len()); todo.len()];
            chain_model.set_chains(todo.iter().map(|&i| Chain::new(chains[i].clone())).collect());
            for item in items {
                let results = score_item_variants(&mut chain_model, item, &settings.scoring)
                    .map_err(|e| item_error(&calibration.name, item, e))?;
                for (c, r) in correct.iter_mut().zip(results) {
                    c.push(if r.correct { '1' } else { '0' });
                }
                // The prefix caches hold one item's states: free them before the next item.
                chain_model.clear_cache();
                pb.inc(todo.len() as u64);
            }
            for (&i, correct) in todo.iter().zip(correct) {
                let right = correct.bytes().filter(|&b| b == b'1').count();
                let record = CalibrationRecord {
                    chain: texts[i].clone(),
                    length: chains[i].len(),
                    accuracy: right as f64 / items.len() as f64,
                    correct,
                };
                append_line(&path, &record)?;
                known.insert(texts[i].clone(), record);
            }
        }
        let rewards = texts
            .iter()
            .map(|t| {
                let r = &known[t];
                order.push(t.clone());
                if r.accuracy > best.0 || (r.accuracy == best.0 && r.length < best.1) {
                    best = (r.accuracy, r.length);
                }
                Evaluation { reward: r.accuracy, payload: () }
            })
            .collect();
        pb.set_message(format!("best calibration accuracy {:.1}% at {} layers", 100.0 * best.0, best.1));
        Ok(rewards)
    };
    let mut problem = ChainProblem {
        space: ChainSpace::new(num_layers, settings.tree.actions),
        evaluate: |c: &[Vec<usize>]| evaluate(c),
    };
    search(
        &mut problem,
        &settings.tree.mcts_config(num_layers, None, settings.batch),
        &mut sample_rng(seed, &format!("transfer/{}", calibration.name)),
    )?;
    drop(problem);
    pb.finish();
    Ok(order.iter().filter_map(|c| known.get(c).cloned()).collect())
}

/// Every chain the strategies run, on every held-out item (one chain at a time, no cache shared
/// between chains, each timed); items found in heldout.jsonl are kept.
fn score_heldout<B: LayerOps>(
    dir: &Path, heldout: &TaskItems, model: &LoadedChainModel<B>, scoring: &ScoringOptions, strategies: &[Strategy],
) -> Result<Vec<HeldoutRecord>, SearchError> {
    let path = dir.join(HELDOUT_FILE);
    let mut chains: Vec<Chain> = Vec::new();
    for s in strategies {
        for c in s.rule.chains() {
            if !chains.contains(&c) {
                chains.push(c);
            }
        }
    }
    let done: Vec<HeldoutRecord> = read_records_repairing(&path, "a held-out record")?;
    let mut by_id: HashMap<String, HeldoutRecord> = done.into_iter().map(|r| (r.doc_id.clone(), r)).collect();
    let pb = progress(heldout.items.len(), 0, format!("{} held out", heldout.name));
    let mut chain_model = ChainModel::new(model, chains[0].clone()).with_caching(false);
    for item in &heldout.items {
        let complete =
            by_id.get(&item.doc_id).is_some_and(|r| chains.iter().all(|c| r.answers.iter().any(|a| a.chain == *c)));
        if !complete {
            let mut answers = Vec::with_capacity(chains.len());
            for chain in &chains {
                chain_model.set_chains(vec![chain.clone()]);
                let started = Instant::now();
                let r = score_item(&mut chain_model, item, scoring).map_err(|e| item_error(&heldout.name, item, e))?;
                answers.push(ChainAnswer {
                    chain: chain.clone(),
                    prediction: r.prediction,
                    margin: r.margin,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            let record = HeldoutRecord { doc_id: item.doc_id.clone(), gold: item.gold_text(), answers };
            append_line(&path, &record)?;
            by_id.insert(item.doc_id.clone(), record);
        }
        pb.inc(1);
    }
    pb.finish();
    Ok(heldout.items.iter().filter_map(|i| by_id.remove(&i.doc_id)).collect())
}

/// report.md, report.json and pareto.svg.
pub fn write_transfer_report(
    dir: &Path, report: &TransferReport, config: &TransferConfig,
) -> Result<Vec<PathBuf>, RunError> {
    let s = &config.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# Held-out transfer: {}\n", report.task);
    let split = |x: Option<cola_eval::Split>| x.map_or("given file".to_string(), |s| format!("{} split", s.name()));
    let _ = writeln!(
        md,
        "Model `{}` ({} layers), scoring `{}`. Calibration: {} items ({}); held out: {} items ({}), whose labels no strategy but `oracle` reads.\n",
        config.provenance.model_dir,
        report.num_layers,
        report.scoring,
        report.calibration_n,
        split(config.calibration_split),
        report.heldout_n,
        split(config.heldout_split),
    );
    let _ = writeln!(
        md,
        "Task-level search: actions `{}`, {} simulations ({} distinct chains scored on every calibration item), λ = {}, c = {:.3}, ε = {}, chain length {}..={}, seed {}. ShortGPT drops {:?} layers; vote, confidence and oracle use the top {} task chains.\n",
        s.tree.actions,
        s.tree.simulations,
        report.calibration_evaluations,
        s.tree.lambda,
        s.tree.c,
        s.tree.epsilon,
        s.tree.min_len,
        s.tree.max_len,
        config.seed,
        s.drop,
        s.top
    );
    md.push_str(&render_table(report));
    let label_free: Vec<&StrategyReport> =
        report.strategies.iter().filter(|r| !r.uses_labels && r.name != "static").collect();
    let names = |f: &dyn Fn(&StrategyReport) -> bool| {
        let v: Vec<String> = label_free.iter().filter(|r| f(r)).map(|r| format!("`{}`", r.name)).collect();
        if v.is_empty() { "none".to_string() } else { v.join(", ") }
    };
    let _ = writeln!(md, "\n## Findings (label-free strategies, paired 95% bootstrap intervals)\n");
    let _ = writeln!(md, "- Better than static (interval above 0): {}.", names(&|r| r.diff_ci_low > 0.0));
    let _ = writeln!(md, "- Worse than static (interval below 0): {}.", names(&|r| r.diff_ci_high < 0.0));
    let _ = writeln!(
        md,
        "- No difference the data can show (interval contains 0): {}.",
        names(&|r| r.diff_ci_low <= 0.0 && r.diff_ci_high >= 0.0)
    );
    let _ = writeln!(
        md,
        "\nSeconds per item are the chains a strategy runs, one after another, measured in this run beside static (vote and confidence run all their chains). The chains of each strategy are in report.json.\n\n![pareto.svg](pareto.svg)\n\n![differences.svg](differences.svg)"
    );
    let mut files = markdown::write_report_files(dir, &md, report)?;
    let svg = dir.join("pareto.svg");
    draw_pareto(&svg, report)?;
    files.push(svg);
    let svg = dir.join("differences.svg");
    draw_differences(&svg, report)?;
    files.push(svg);
    Ok(files)
}

/// Each strategy's paired difference from static in held-out accuracy, with its 95% bootstrap
/// interval (the quantity the findings rest on), a row per strategy, a line at 0; the
/// label-reading oracle hollow.
fn draw_differences(path: &Path, report: &TransferReport) -> Result<(), RunError> {
    let e = |m: String| RunError::Invalid { path: path.to_path_buf(), message: format!("drawing the figure: {m}") };
    let rows: Vec<&StrategyReport> = report.strategies.iter().filter(|r| r.name != "static").collect();
    let root = SVGBackend::new(path, (760, 80 + 26 * rows.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let lo = rows.iter().map(|r| r.diff_ci_low).fold(0.0, f64::min);
    let hi = rows.iter().map(|r| r.diff_ci_high).fold(0.0, f64::max);
    let (x_lo, x_hi) = (((100.0 * lo - 2.0) / 5.0).floor() * 5.0, ((100.0 * hi + 2.0) / 5.0).ceil() * 5.0);
    let n = rows.len().max(1) as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: held-out accuracy minus static's (paired, 95% CI), n = {}", report.task, report.heldout_n),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(110)
        .build_cartesian_2d(x_lo..x_hi, (0..n - 1).into_segmented())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("percentage points (right of 0: better than the original chain)")
        .x_label_formatter(&|x| format!("{x:+.0}"))
        .y_labels(rows.len().max(1))
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(k) => {
                let label = |r: &&StrategyReport| {
                    if r.uses_labels { format!("{} (reads labels)", r.name) } else { r.name.clone() }
                };
                rows.get(rows.len().wrapping_sub(1 + *k as usize)).map_or(String::new(), label)
            }
            _ => String::new(),
        })
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series([PathElement::new(
            vec![(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(1),
        )])
        .map_err(|x| e(x.to_string()))?;
    for (k, r) in rows.iter().enumerate() {
        let y = SegmentValue::CenterOf((rows.len() - 1 - k) as i32);
        let colour = if r.diff_ci_low > 0.0 {
            RGBColor(0, 130, 60)
        } else if r.diff_ci_high < 0.0 {
            RGBColor(200, 30, 30)
        } else {
            RGBColor(90, 90, 90)
        };
        chart
            .draw_series([PathElement::new(
                vec![(100.0 * r.diff_ci_low, y.clone()), (100.0 * r.diff_ci_high, y.clone())],
                colour.stroke_width(2),
            )])
            .map_err(|x| e(x.to_string()))?;
        let style = if r.uses_labels { colour.stroke_width(2) } else { colour.filled() };
        chart.draw_series([Circle::new((100.0 * r.diff_vs_static, y), 4, style)]).map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

/// Held-out accuracy (with its interval) against mean layers executed (log scale, drawn as
/// log10 on a linear axis for readable ticks: vote and confidence run several chains), one point per strategy: static red, ShortGPT green and task
/// chains blue (each family joined by a line; a point's layers say which k or L it is), vote
/// and confidence labelled, the label-reading oracle hollow.
fn draw_pareto(path: &Path, report: &TransferReport) -> Result<(), RunError> {
    let e = |m: String| RunError::Invalid { path: path.to_path_buf(), message: format!("drawing the figure: {m}") };
    let root = SVGBackend::new(path, (860, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let layers = report.strategies.iter().map(|r| r.mean_layers.max(1.0));
    let x_max = layers.clone().fold(report.num_layers as f64, f64::max) * 1.3;
    let x_min = layers.fold(report.num_layers as f64, f64::min) * 0.8;
    let lo = report.strategies.iter().map(|r| r.ci_low).chain(report.chance_accuracy).fold(1.0, f64::min);
    let hi = report.strategies.iter().map(|r| r.ci_high).fold(0.0, f64::max);
    // Fitted to the intervals and the chance line, on whole multiples of 5 points.
    let (y_lo, y_hi) = (((100.0 * lo - 3.0) / 5.0).floor() * 5.0, ((100.0 * hi + 3.0) / 5.0).ceil() * 5.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: held-out accuracy vs layers executed", report.task), ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(54)
        .build_cartesian_2d(x_min.log10()..x_max.log10(), y_lo.max(0.0)..y_hi.min(100.0))
        .map_err(|x| e(x.to_string()))?;
    // Ticks at round layer counts, drawn by hand on the log10 axis.
    let ticks: Vec<f64> = [10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0]
        .into_iter()
        .filter(|&t| t >= x_min && t <= x_max)
        .collect();
    chart
        .configure_mesh()
        .x_desc(format!("mean layers executed per item, log scale (original chain: {})", report.num_layers))
        .y_desc(format!("held-out accuracy % (95% CI), n = {}", report.heldout_n))
        .x_labels(0)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .disable_x_mesh()
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for &t in &ticks {
        chart
            .draw_series([PathElement::new(
                vec![(t.log10(), y_lo.max(0.0)), (t.log10(), y_hi.min(100.0))],
                BLACK.mix(0.12),
            )])
            .map_err(|x| e(x.to_string()))?;
        let (px, py) = chart.backend_coord(&(t.log10(), y_lo.max(0.0)));
        root.draw(&Text::new(format!("{t:.0}"), (px - 8, py + 6), ("sans-serif", 12).into_font()))
            .map_err(|x| e(x.to_string()))?;
    }
    if let Some(chance) = report.chance_accuracy {
        let y = 100.0 * chance;
        chart
            .draw_series(DashedLineSeries::new(
                [(x_min.log10(), y), (x_max.log10(), y)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(|x| e(x.to_string()))?
            .label(format!("chance ({y:.1}%: a uniform guess among the choices)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.6)));
    }
    let grey = RGBColor(120, 120, 120);
    let orange = RGBColor(230, 120, 0);
    let family = |name: &str| -> (&'static str, RGBColor) {
        match name {
            "static" => ("static (original chain)", RED),
            n if n.starts_with("shortgpt-") => ("ShortGPT pruning (k dropped)", GREEN),
            n if n.starts_with("task-chain-") => ("task chains (calibration Pareto set)", BLUE),
            "vote" => ("vote of the top task chains", MAGENTA),
            "confidence" => ("confidence (largest margin)", orange),
            _ => ("oracle (reads labels; reference)", grey),
        }
    };
    let mut seen: Vec<&str> = Vec::new();
    for r in &report.strategies {
        let (label, colour) = family(&r.name);
        let mut points: Vec<&StrategyReport> =
            report.strategies.iter().filter(|q| family(&q.name).0 == label).collect();
        if seen.contains(&label) {
            continue;
        }
        seen.push(label);
        points.sort_by(|a, b| a.mean_layers.total_cmp(&b.mean_layers));
        let at = |q: &StrategyReport| (q.mean_layers.max(1.0).log10(), 100.0 * q.accuracy);
        chart
            .draw_series(LineSeries::new(points.iter().map(|q| at(q)), colour.mix(0.5).stroke_width(1)))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(points.iter().map(|q| {
                ErrorBar::new_vertical(
                    q.mean_layers.max(1.0).log10(),
                    100.0 * q.ci_low,
                    100.0 * q.accuracy,
                    100.0 * q.ci_high,
                    colour.mix(0.6).stroke_width(1),
                    6,
                )
            }))
            .map_err(|x| e(x.to_string()))?;
        let size = if r.name == "static" { 6 } else { 4 };
        let style = if r.uses_labels { colour.stroke_width(2) } else { colour.filled() };
        chart
            .draw_series(points.iter().map(|q| Circle::new(at(q), size, style)))
            .map_err(|x| e(x.to_string()))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 8, y), size, style));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|q| Text::new(format!(" {}", q.name), at(q), ("sans-serif", 12).into_font().color(&colour))),
            )
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

/// The strategies as a markdown table (report.md, and printed at the end of a run).
pub fn render_table(report: &TransferReport) -> String {
    let header = [
        "strategy",
        "held-out accuracy % [95% CI]",
        "vs static, points [95% CI]",
        "mean layers",
        "s/item",
        "calibration accuracy %",
    ];
    let rows = report.strategies.iter().map(|r| {
        vec![
            format!("{}{}", r.name, if r.uses_labels { " (reads labels)" } else { "" }),
            format!("{} [{}, {}]", percent(r.accuracy), percent(r.ci_low), percent(r.ci_high)),
            format!("{} [{}, {}]", points(r.diff_vs_static), points(r.diff_ci_low), points(r.diff_ci_high)),
            format!("{:.1}", r.mean_layers),
            format!("{:.3}", r.seconds_per_item),
            r.calibration_accuracy.map_or("–".into(), percent),
        ]
    });
    markdown::table(&header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cola_mcts::chains::ActionPreset;

    fn ch(text: &str) -> Chain {
        Chain::parse(text).unwrap()
    }

    fn answer(chain: &str, prediction: Option<&str>, margin: Option<f64>) -> ChainAnswer {
        ChainAnswer { chain: ch(chain), prediction: prediction.map(Into::into), margin, seconds: 0.5 }
    }

    #[test]
    fn vote_ties_go_to_the_original_then_to_the_earliest_chain() {
        let a = [
            answer("0-3", Some("B"), Some(0.1)),
            answer("0,1", Some("A"), Some(2.0)),
            answer("0,2", Some("B"), Some(1.0)),
            answer("1,2", Some("A"), None),
            answer("2,3", None, None),
        ];
        let map: HashMap<&Chain, &ChainAnswer> = a.iter().map(|x| (&x.chain, x)).collect();
        let v = |cs: &[&str]| Rule::Vote(cs.iter().map(|c| ch(c)).collect()).choose(&map, &ch("0-3"));
        // Clear majority: the original does not run.
        let c = v(&["0,1", "1,2", "0,2"]);
        assert_eq!((c.prediction.as_deref(), c.ran.len()), (Some("A"), 3));
        // 1–1 tie: the original (B) decides and runs.
        let c = v(&["0,1", "0,2"]);
        assert_eq!((c.prediction.as_deref(), c.ran.last()), (Some("B"), Some(&ch("0-3"))));
        // Unanswered chains do not vote.
        assert_eq!(v(&["2,3", "1,2"]).prediction.as_deref(), Some("A"));
        assert_eq!(v(&["2,3"]).prediction, None);
        // Confidence: the largest margin wins; a missing margin never does.
        let conf = |cs: &[&str]| Rule::Confidence(cs.iter().map(|c| ch(c)).collect()).choose(&map, &ch("0-3"));
        assert_eq!(conf(&["0-3", "0,2", "0,1"]).prediction.as_deref(), Some("A"));
        assert_eq!(conf(&["1,2", "0,2"]).prediction.as_deref(), Some("B"));
        // Oracle: right when any candidate is.
        let o = Rule::Oracle(vec![ch("0-3"), ch("0,1")]);
        assert_eq!(o.oracle_correct(&map, "A"), Some(true));
        assert_eq!(o.oracle_correct(&map, "C"), Some(false));
    }

    #[test]
    fn the_plan_takes_the_pareto_front_and_the_top_chains() {
        let rec = |chain: &str, accuracy: f64| CalibrationRecord {
            chain: ch(chain),
            length: Chain::parse(chain).unwrap().len(),
            accuracy,
            correct: String::new(),
        };
        // 4 layers; the original (0-3) at 0.5.
        let cal =
            [rec("0-3", 0.5), rec("0-1,3", 0.6), rec("0,3", 0.4), rec("0,2", 0.3), rec("0-3,3", 0.7), rec("1-3", 0.6)];
        let settings = TransferSettings {
            scoring: ScoringOptions::new(ScoringMode::Loglik),
            tree: TreeSettings {
                actions: ActionPreset::Paper,
                simulations: 1,
                lambda: 5.0,
                c: 1.0,
                epsilon: 0.1,
                min_len: 1,
                max_len: 6,
            },
            batch: 1,
            drop: vec![1],
            top: 2,
            resamples: 10,
        };
        let plan = plan_strategies(4, &[0.9, 0.1, 0.5, 0.8], &cal, &settings);
        let names: Vec<&str> = plan.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["static", "shortgpt-k1", "task-chain-2", "task-chain-3", "task-chain-5", "vote", "confidence", "oracle"]
        );
        assert_eq!(plan[1].rule, Rule::Single(ch("0,2-3")));
        assert_eq!(plan[2].rule, Rule::Single(ch("0,3")));
        // Top 2 by accuracy: 0-3,3 (0.7), then the first-found of the two at 0.6 and length 3.
        assert_eq!(plan[5].rule, Rule::Vote(vec![ch("0-3,3"), ch("0-1,3")]));
        assert_eq!(plan[6].rule, Rule::Confidence(vec![ch("0-3,3"), ch("0-1,3"), ch("0-3")]));
        assert_eq!(plan[1].calibration_accuracy, None);
        assert_eq!(plan[0].calibration_accuracy, Some(0.5));
    }

    #[test]
    fn figures_count_layers_and_seconds_of_the_chains_run() {
        let strategies = vec![
            Strategy { name: "static".into(), rule: Rule::Single(ch("0-3")), calibration_accuracy: None },
            Strategy { name: "short".into(), rule: Rule::Single(ch("0,1")), calibration_accuracy: None },
            Strategy { name: "vote".into(), rule: Rule::Vote(vec![ch("0,1"), ch("0,2")]), calibration_accuracy: None },
        ];
        let rec = |gold: &str, a: [Option<&str>; 3]| HeldoutRecord {
            doc_id: gold.into(),
            gold: gold.into(),
            answers: vec![answer("0-3", a[0], None), answer("0,1", a[1], None), answer("0,2", a[2], None)],
        };
        // Item 1: static right, short wrong, vote tie -> original (right). Item 2: all agree, wrong.
        let records = [rec("A", [Some("A"), Some("B"), Some("A")]), rec("C", [Some("B"), Some("B"), Some("B")])];
        let r = evaluate_strategies(&strategies, &records, 4, 200, 1);
        assert_eq!(r[0].accuracy, 0.5);
        assert_eq!(r[1].accuracy, 0.0);
        assert_eq!(r[1].diff_vs_static, -0.5);
        assert_eq!(r[2].accuracy, 0.5);
        // Vote ran 2 + 2 layers on both items and the original (4) on the tied one.
        assert_eq!(r[2].mean_layers, (8.0 + 4.0) / 2.0);
        assert_eq!(r[2].seconds_per_item, (1.5 + 1.0) / 2.0);
        assert_eq!(r[0].mean_layers, 4.0);
    }
}
