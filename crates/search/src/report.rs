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

use crate::markdown;
use crate::run_dir::{MergedRuns, RunConfig, RunError, jsonl_line, merge_runs, write_atomic};
use crate::sample::{ChainRecord, SampleRecord, SearcherRecord};

/// A 95% interval `[low, high]`.
pub type Interval = [f64; 2];

/// Resamples and seed of the report's bootstrap intervals (fixed: a report is a function of its
/// records).
const RESAMPLES: usize = 2000;
const BOOTSTRAP_SEED: u64 = 0;

/// One task's findings. Every proportion `x` has `x_ci`, its 95% interval: Wilson's for a share of
/// samples, a bootstrap over samples for shares of chains and for paired differences. For the
/// counts `shortened` (of `static_correct`) and `fixed_by_*` (of `static_wrong`), `_ci` is the
/// interval of that share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub n: usize,
    pub static_accuracy: f64,
    pub static_accuracy_ci: Option<Interval>,
    pub oracle_accuracy: f64,
    pub oracle_accuracy_ci: Option<Interval>,
    pub random_accuracy: Option<f64>,
    pub random_accuracy_ci: Option<Interval>,
    pub static_correct: usize,
    /// Static-correct samples with a correct chain shorter than N.
    pub shortened: usize,
    pub shortened_ci: Option<Interval>,
    /// The same found by the random baseline.
    pub shortened_by_random: Option<usize>,
    pub shortened_by_random_ci: Option<Interval>,
    pub mean_shortest_len: Option<f64>,
    pub median_shortest_len: Option<f64>,
    pub static_wrong: usize,
    pub fixed_by_mcts: usize,
    pub fixed_by_mcts_ci: Option<Interval>,
    pub fixed_by_random: Option<usize>,
    pub fixed_by_random_ci: Option<Interval>,
    /// MCTS minus random on the same samples: share of static-wrong samples fixed, with the 95%
    /// paired bootstrap interval.
    pub mcts_minus_random_fixed: Option<f64>,
    pub mcts_minus_random_fixed_ci: Option<Interval>,
    /// The same for the share of static-correct samples shortened.
    pub mcts_minus_random_shortened: Option<f64>,
    pub mcts_minus_random_shortened_ci: Option<Interval>,
    pub mean_evaluations: f64,
    /// Share of the chains MCTS evaluated whose output the grader could read an answer from
    /// (`None` when no chain was recorded; an empty answer, which graders before the empty-box
    /// fix recorded for an echoed `\boxed{}`, counts as none). An unreadable answer earns reward
    /// 0, so where this is near 0 the search has nothing to follow. Its interval resamples
    /// samples (a sample's chains are not independent).
    pub answered_chain_rate: Option<f64>,
    pub answered_chain_rate_ci: Option<Interval>,
    /// The run's further searchers ([`crate::ChainSearcher`]), each in [`SearcherSummary`]'s
    /// shape; left out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_searchers: Vec<SearcherSummary>,
}

/// How the share of a group's samples that a searcher fixes (or shortens) grows with the
/// evaluations it spends: a sample counts from the evaluation that first gave it a correct (for
/// `right`: shorter correct) chain, the original chain being evaluation 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetCurve {
    pub task: String,
    pub searcher: Searcher,
    pub group: Group,
    /// Samples in the group.
    pub n: usize,
    /// The most evaluations any of them spent (where the curve ends).
    pub evaluations: usize,
    /// Per sample found, the evaluation (1-based) that found it, ascending.
    pub found_at: Vec<usize>,
}

impl BudgetCurve {
    /// Samples found within the first `budget` evaluations.
    pub fn found_within(&self, budget: usize) -> usize {
        self.found_at.partition_point(|&at| at <= budget)
    }
}

fn wilson(k: usize, n: usize) -> Option<Interval> {
    cola_eval::wilson_interval(k, n).map(|(a, b)| [a, b])
}

/// The mean of `diffs` and its 95% bootstrap interval (None when empty).
fn paired(diffs: &[f64]) -> (Option<f64>, Option<Interval>) {
    if diffs.is_empty() {
        return (None, None);
    }
    let (lo, hi) = cola_eval::bootstrap_interval(diffs, RESAMPLES, BOOTSTRAP_SEED);
    (Some(diffs.iter().sum::<f64>() / diffs.len() as f64), Some([lo, hi]))
}

/// The 0-based index of the first chain that fixes (any correct chain) or shortens (a correct
/// chain shorter than `num_layers`) the sample, by `group`.
fn first_found(chains: &[ChainRecord], group: Group, num_layers: usize) -> Option<usize> {
    chains.iter().position(|c| c.reward >= 1.0 && (group == Group::Fixed || c.length < num_layers))
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
    /// The same by task (a MATH level is a task), searcher and group: the analyses by
    /// difficulty.
    pub layer_use: Vec<LayerUse>,
    /// Per task, searcher (where its chains are recorded) and group.
    pub budget_curves: Vec<BudgetCurve>,
}

impl Report {
    /// The searchers of the report, in the order they first appear (MCTS first).
    pub fn searchers(&self) -> Vec<Searcher> {
        let mut all = vec![Searcher::Mcts];
        for s in self.layer_use.iter().map(|u| &u.searcher).chain(self.budget_curves.iter().map(|c| &c.searcher)) {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        all
    }
}

/// Who found a chain: MCTS, random search with the same number of evaluations, or a further
/// searcher of the run ([`crate::ChainSearcher`], by its name). Serialized as its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Searcher {
    Mcts,
    Random,
    Other(String),
}

impl Serialize for Searcher {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl Searcher {
    /// As records and report.json name it.
    pub fn name(&self) -> &str {
        match self {
            Searcher::Mcts => "mcts",
            Searcher::Random => "random",
            Searcher::Other(name) => name,
        }
    }

    /// As tables and figures name it.
    pub fn label(&self) -> &str {
        match self {
            Searcher::Mcts => "MCTS",
            Searcher::Random => "random",
            Searcher::Other(name) => name,
        }
    }

    /// Its colour in figures; a further searcher's by its place in `all`.
    fn colour(&self, all: &[Searcher]) -> RGBColor {
        // Tableau's green, purple, brown, pink, olive, cyan for further searchers.
        const PALETTE: [RGBColor; 6] = [
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
            RGBColor(227, 119, 194),
            RGBColor(188, 189, 34),
            RGBColor(23, 190, 207),
        ];
        match self {
            Searcher::Mcts => RGBColor(31, 90, 180),
            Searcher::Random => RGBColor(230, 120, 0),
            Searcher::Other(_) => {
                let others = all.iter().filter(|s| matches!(s, Searcher::Other(_)));
                PALETTE[others.take_while(|s| *s != self).count() % PALETTE.len()]
            }
        }
    }

    /// As figure legends and captions name it, the baseline's budget said.
    fn long_label(&self) -> String {
        match self {
            Searcher::Mcts => "MCTS".into(),
            Searcher::Random => "random (same budget)".into(),
            Searcher::Other(name) => format!("{name} (same budget)"),
        }
    }

    fn other<'r>(&self, r: &'r SampleRecord) -> Option<&'r SearcherRecord> {
        r.other_searchers.iter().find(|o| o.searcher == self.name())
    }

    /// Whether the sample's search found a correct chain and the length of its shortest one;
    /// None where this searcher did not run on the sample.
    fn outcome(&self, r: &SampleRecord) -> Option<(bool, Option<usize>)> {
        match self {
            Searcher::Mcts => Some((r.best_correct, r.best_len)),
            Searcher::Random => r.random_best_correct.map(|c| (c, r.random_best_len)),
            Searcher::Other(_) => self.other(r).map(|o| (o.best_correct, o.best_len)),
        }
    }

    /// The sample's shortest correct chain by this searcher.
    fn best<'r>(&self, r: &'r SampleRecord) -> Option<&'r Chain> {
        match self {
            Searcher::Mcts => r.best_chain.as_ref(),
            Searcher::Random => r.random_best_chain.as_ref(),
            Searcher::Other(_) => self.other(r).and_then(|o| o.best_chain.as_ref()),
        }
    }

    /// Every chain this searcher evaluated for the sample, in order (None: not recorded).
    fn chains<'r>(&self, r: &'r SampleRecord) -> Option<&'r [ChainRecord]> {
        match self {
            Searcher::Mcts => Some(&r.chains),
            Searcher::Random => r.random_chains.as_deref(),
            Searcher::Other(_) => self.other(r).map(|o| o.chains.as_slice()),
        }
    }

    /// The searchers that ran on every one of `records` (MCTS, random, then the further ones in
    /// the order of the first record); MCTS alone when there are none.
    fn of(records: &[&SampleRecord]) -> Vec<Searcher> {
        let Some(first) = records.first() else { return vec![Searcher::Mcts] };
        [Searcher::Mcts, Searcher::Random]
            .into_iter()
            .chain(first.other_searchers.iter().map(|o| Searcher::Other(o.searcher.clone())))
            .filter(|s| records.iter().all(|r| s.outcome(r).is_some()))
            .collect()
    }
}

/// One searcher beside MCTS on one task, in the shape every such searcher has: its oracle
/// accuracy, shares shortened and fixed, and MCTS minus it on the same samples (paired
/// bootstrap), with 95% intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearcherSummary {
    pub searcher: Searcher,
    pub accuracy: f64,
    pub accuracy_ci: Option<Interval>,
    /// Static-correct samples for which it found a shorter correct chain.
    pub shortened: usize,
    pub shortened_ci: Option<Interval>,
    /// Static-wrong samples for which it found a correct chain.
    pub fixed: usize,
    pub fixed_ci: Option<Interval>,
    pub mcts_minus_fixed: Option<f64>,
    pub mcts_minus_fixed_ci: Option<Interval>,
    pub mcts_minus_shortened: Option<f64>,
    pub mcts_minus_shortened_ci: Option<Interval>,
}

/// `searcher`'s summary over a task's samples `rs` (None unless it ran on every one).
fn summarize(searcher: &Searcher, rs: &[&SampleRecord], num_layers: usize) -> Option<SearcherSummary> {
    let outcomes: Vec<(bool, Option<usize>)> = rs.iter().map(|r| searcher.outcome(r)).collect::<Option<_>>()?;
    if rs.is_empty() {
        return None;
    }
    let short = |len: Option<usize>| len.is_some_and(|l| l < num_layers);
    let bit = |b: bool| b as u8 as f64;
    let (mut fixed_diffs, mut short_diffs) = (Vec::new(), Vec::new());
    let (mut fixed, mut shortened) = (0, 0);
    for (r, &(correct, len)) in rs.iter().zip(&outcomes) {
        if r.static_correct {
            shortened += short(len) as usize;
            short_diffs.push(bit(short(r.best_len)) - bit(short(len)));
        } else {
            fixed += correct as usize;
            fixed_diffs.push(bit(r.best_correct) - bit(correct));
        }
    }
    let found = outcomes.iter().filter(|o| o.0).count();
    let (n, right, wrong) = (rs.len(), short_diffs.len(), fixed_diffs.len());
    let (mcts_minus_fixed, mcts_minus_fixed_ci) = paired(&fixed_diffs);
    let (mcts_minus_shortened, mcts_minus_shortened_ci) = paired(&short_diffs);
    Some(SearcherSummary {
        searcher: searcher.clone(),
        accuracy: ratio(found, n),
        accuracy_ci: wilson(found, n),
        shortened,
        shortened_ci: wilson(shortened, right),
        fixed,
        fixed_ci: wilson(fixed, wrong),
        mcts_minus_fixed,
        mcts_minus_fixed_ci,
        mcts_minus_shortened,
        mcts_minus_shortened_ci,
    })
}

/// Samples by what the original chain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The original chain was right: how far a search shortens it.
    Right,
    /// It was wrong: a correct chain fixes it.
    Fixed,
}

impl Group {
    pub const ALL: [Group; 2] = [Group::Right, Group::Fixed];

    pub fn name(self) -> &'static str {
        match self {
            Group::Right => "right",
            Group::Fixed => "fixed",
        }
    }

    /// What a search does for the group: fixes it or shortens its chains.
    fn outcome(self) -> &'static str {
        match self {
            Group::Right => "shortened",
            Group::Fixed => "fixed",
        }
    }

    fn holds(self, r: &SampleRecord) -> bool {
        r.static_correct == (self == Group::Right)
    }
}

/// The shortest correct chains of one task, one searcher and one group of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerUse {
    pub task: String,
    pub searcher: Searcher,
    pub group: Group,
    /// Their lengths, in sample order.
    pub lengths: Vec<usize>,
    pub skip_rate: Vec<f64>,
    pub repeat_rate: Vec<f64>,
}

/// Skip and repeat rates per layer over `chains`.
fn layer_rates<'a>(chains: impl Iterator<Item = &'a Chain>, num_layers: usize) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let mut skipped = vec![0usize; num_layers];
    let mut repeated = vec![0usize; num_layers];
    let mut lengths = Vec::new();
    for chain in chains {
        lengths.push(chain.len());
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
    let n = lengths.len();
    (lengths, skipped.iter().map(|&k| ratio(k, n)).collect(), repeated.iter().map(|&k| ratio(k, n)).collect())
}

fn answered(chain: &ChainRecord) -> bool {
    chain.prediction.as_deref().is_some_and(|p| !p.trim().is_empty())
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
    let tasks: Vec<TaskReport> = by_task
        .into_iter()
        .map(|(task, rs)| {
            let n = rs.len();
            let right: Vec<&&SampleRecord> = rs.iter().filter(|r| r.static_correct).collect();
            let wrong: Vec<&&SampleRecord> = rs.iter().filter(|r| !r.static_correct).collect();
            let lens: Vec<usize> = right.iter().filter_map(|r| r.best_len).collect();
            let oracle = rs.iter().filter(|r| r.best_correct).count();
            let short = |len: Option<usize>| len.is_some_and(|l| l < num_layers);
            let shortened = right.iter().filter(|r| short(r.best_len)).count();
            let fixed_by_mcts = wrong.iter().filter(|r| r.best_correct).count();
            let random = summarize(&Searcher::Random, &rs, num_layers);
            let others: Vec<SearcherSummary> = Searcher::of(&rs)
                .iter()
                .filter(|s| matches!(s, Searcher::Other(_)))
                .filter_map(|s| summarize(s, &rs, num_layers))
                .collect();
            let answered_counts: Vec<(f64, f64)> = rs
                .iter()
                .map(|r| (r.chains.iter().filter(|c| answered(c)).count() as f64, r.chains.len() as f64))
                .collect();
            let (answered_all, chains_all) = answered_counts.iter().fold((0.0, 0.0), |(a, n), (x, y)| (a + x, n + y));
            let (num, den): (Vec<f64>, Vec<f64>) = answered_counts.into_iter().unzip();
            TaskReport {
                task: task.to_string(),
                n,
                static_accuracy: ratio(right.len(), n),
                static_accuracy_ci: wilson(right.len(), n),
                oracle_accuracy: ratio(oracle, n),
                oracle_accuracy_ci: wilson(oracle, n),
                random_accuracy: random.as_ref().map(|r| r.accuracy),
                random_accuracy_ci: random.as_ref().and_then(|r| r.accuracy_ci),
                static_correct: right.len(),
                shortened,
                shortened_ci: wilson(shortened, right.len()),
                shortened_by_random: random.as_ref().map(|r| r.shortened),
                shortened_by_random_ci: random.as_ref().and_then(|r| r.shortened_ci),
                mean_shortest_len: (!lens.is_empty()).then(|| lens.iter().sum::<usize>() as f64 / lens.len() as f64),
                median_shortest_len: median(lens),
                static_wrong: wrong.len(),
                fixed_by_mcts,
                fixed_by_mcts_ci: wilson(fixed_by_mcts, wrong.len()),
                fixed_by_random: random.as_ref().map(|r| r.fixed),
                fixed_by_random_ci: random.as_ref().and_then(|r| r.fixed_ci),
                mcts_minus_random_fixed: random.as_ref().and_then(|r| r.mcts_minus_fixed),
                mcts_minus_random_fixed_ci: random.as_ref().and_then(|r| r.mcts_minus_fixed_ci),
                mcts_minus_random_shortened: random.as_ref().and_then(|r| r.mcts_minus_shortened),
                mcts_minus_random_shortened_ci: random.as_ref().and_then(|r| r.mcts_minus_shortened_ci),
                mean_evaluations: rs.iter().map(|r| r.evaluations as f64).sum::<f64>() / n.max(1) as f64,
                answered_chain_rate: (chains_all > 0.0).then(|| answered_all / chains_all),
                answered_chain_rate_ci: cola_eval::bootstrap_ratio(&num, &den, RESAMPLES, BOOTSTRAP_SEED)
                    .map(|(a, b)| [a, b]),
                other_searchers: others,
            }
        })
        .collect();
    let (lengths, skip_rate, repeat_rate) =
        layer_rates(records.iter().filter_map(|r| r.best_chain.as_ref()), num_layers);
    let mut hist = BTreeMap::new();
    for len in lengths {
        *hist.entry(len).or_insert(0) += 1;
    }
    let mut layer_use = Vec::new();
    for t in &tasks {
        let rs: Vec<&SampleRecord> = records.iter().filter(|r| r.task == t.task).collect();
        for searcher in Searcher::of(&rs) {
            for group in Group::ALL {
                let chains = rs.iter().filter(|r| group.holds(r)).filter_map(|r| searcher.best(r));
                let (lengths, skip_rate, repeat_rate) = layer_rates(chains, num_layers);
                let searcher = searcher.clone();
                layer_use.push(LayerUse { task: t.task.clone(), searcher, group, lengths, skip_rate, repeat_rate });
            }
        }
    }
    let budget_curves = budget_curves(records, &tasks, num_layers);
    Report { num_layers, tasks, best_length_histogram: hist, skip_rate, repeat_rate, layer_use, budget_curves }
}

/// Per task, searcher and group, the samples found within each budget: MCTS always, random where
/// every sample of the task recorded its chains.
fn budget_curves(records: &[SampleRecord], tasks: &[TaskReport], num_layers: usize) -> Vec<BudgetCurve> {
    let mut curves = Vec::new();
    for t in tasks {
        let rs: Vec<&SampleRecord> = records.iter().filter(|r| r.task == t.task).collect();
        for searcher in Searcher::of(&rs) {
            let chains: Option<Vec<&[ChainRecord]>> = rs.iter().map(|r| searcher.chains(r)).collect();
            let Some(chains) = chains else { continue };
            for group in Group::ALL {
                let group_chains: Vec<&[ChainRecord]> =
                    rs.iter().zip(&chains).filter(|(r, _)| group.holds(r)).map(|(_, c)| *c).collect();
                let evaluations = group_chains.iter().map(|c| c.len()).max().unwrap_or(0);
                let members: Vec<Option<usize>> =
                    group_chains.iter().map(|c| first_found(c, group, num_layers)).collect();
                let mut found_at: Vec<usize> = members.iter().flatten().map(|i| i + 1).collect();
                found_at.sort_unstable();
                curves.push(BudgetCurve {
                    task: t.task.clone(),
                    searcher: searcher.clone(),
                    group,
                    n: members.len(),
                    evaluations,
                    found_at,
                });
            }
        }
    }
    curves
}

fn pct(x: f64) -> String {
    format!("{}%", markdown::percent(x))
}

/// `x% [low, high]` in percent, or `x%` without an interval.
fn pct_ci(x: f64, ci: Option<Interval>) -> String {
    match ci {
        Some([lo, hi]) => format!("{} [{}, {}]", pct(x), markdown::percent(lo), markdown::percent(hi)),
        None => pct(x),
    }
}

/// `a/b (x% [low, high])`, or `0/0 (-)` where there is nothing to count.
fn frac(a: usize, b: usize, ci: Option<Interval>) -> String {
    if b == 0 { format!("{a}/{b} (-)") } else { format!("{a}/{b} ({})", pct_ci(ratio(a, b), ci)) }
}

/// A difference of shares in percentage points with its interval: `+5.0 pp [-2.1, 12.0]`.
fn points(x: Option<f64>, ci: Option<Interval>) -> String {
    match (x, ci) {
        (Some(x), Some([lo, hi])) => {
            format!("{} pp [{}, {}]", markdown::points(x), markdown::points(lo), markdown::points(hi))
        }
        _ => "-".into(),
    }
}

/// Budgets at which the report tabulates the budget curves.
const BUDGETS: [usize; 5] = [10, 25, 50, 100, 200];

fn opt<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map_or("-".into(), |v| v.to_string())
}

/// The table printed at the end of a run and at the top of report.md.
pub fn render_table(report: &Report) -> String {
    let header = [
        "task",
        "n",
        "static acc",
        "CoLa oracle acc",
        "random acc (same budget)",
        "right: shorter chain exists",
        "mean / median shortest len",
        "wrong: fixed by MCTS",
        "wrong: fixed by random",
        "evals/sample",
    ];
    let rows = report.tasks.iter().map(|t| {
        vec![
            t.task.clone(),
            t.n.to_string(),
            pct_ci(t.static_accuracy, t.static_accuracy_ci),
            pct_ci(t.oracle_accuracy, t.oracle_accuracy_ci),
            t.random_accuracy.map_or("-".into(), |a| pct_ci(a, t.random_accuracy_ci)),
            frac(t.shortened, t.static_correct, t.shortened_ci),
            format!("{} / {}", opt(t.mean_shortest_len.map(|m| format!("{m:.1}"))), opt(t.median_shortest_len)),
            frac(t.fixed_by_mcts, t.static_wrong, t.fixed_by_mcts_ci),
            t.fixed_by_random.map_or("-".into(), |f| frac(f, t.static_wrong, t.fixed_by_random_ci)),
            format!("{:.1}", t.mean_evaluations),
        ]
    });
    let mut s = markdown::table(&header, rows);
    let _ = writeln!(s, "\nIntervals: 95%, Wilson's for shares of samples.");
    s
}

/// MCTS against random search on the same samples (paired differences with bootstrap intervals)
/// and both by evaluations spent.
pub fn render_searchers(report: &Report) -> String {
    let mut s = String::new();
    if report.tasks.iter().any(|t| t.mcts_minus_random_fixed.is_some() || t.mcts_minus_random_shortened.is_some()) {
        s += "\n## MCTS against random search (same samples, same number of evaluations)\n\n";
        let rows = report.tasks.iter().map(|t| {
            vec![
                t.task.clone(),
                points(t.mcts_minus_random_fixed, t.mcts_minus_random_fixed_ci),
                points(t.mcts_minus_random_shortened, t.mcts_minus_random_shortened_ci),
            ]
        });
        s += &markdown::table(&["task", "wrong: fixed, MCTS − random", "right: shortened, MCTS − random"], rows);
        let _ = writeln!(
            s,
            "\nPercentage points, with 95% paired bootstrap intervals ({RESAMPLES} resamples of the samples, seed {BOOTSTRAP_SEED}); an interval that holds 0 does not tell the two searchers apart."
        );
    }
    if report.tasks.iter().any(|t| !t.other_searchers.is_empty()) {
        s += "\n## Further searchers (same samples, MCTS's number of evaluations)\n\n";
        let header = [
            "task",
            "searcher",
            "oracle acc",
            "right: shorter chain exists",
            "wrong: fixed",
            "wrong: fixed, MCTS − it",
            "right: shortened, MCTS − it",
        ];
        let rows = report.tasks.iter().flat_map(|t| {
            t.other_searchers.iter().map(|o| {
                vec![
                    t.task.clone(),
                    o.searcher.label().to_string(),
                    pct_ci(o.accuracy, o.accuracy_ci),
                    frac(o.shortened, t.static_correct, o.shortened_ci),
                    frac(o.fixed, t.static_wrong, o.fixed_ci),
                    points(o.mcts_minus_fixed, o.mcts_minus_fixed_ci),
                    points(o.mcts_minus_shortened, o.mcts_minus_shortened_ci),
                ]
            })
        });
        s += &markdown::table(&header, rows);
    }
    let budgets: Vec<usize> =
        BUDGETS.into_iter().filter(|&b| report.budget_curves.iter().any(|c| c.evaluations >= b)).collect();
    if budgets.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n## By evaluations spent (budget_curves.svg)\n\nShare of samples with a correct chain among the first b evaluations (fixed: samples the original chain got wrong; shortened: right ones, a shorter correct chain):\n"
    );
    let header: Vec<String> = ["task", "group", "searcher"]
        .into_iter()
        .map(String::from)
        .chain(budgets.iter().map(|b| format!("b = {b}")))
        .collect();
    let rows = report.budget_curves.iter().filter(|c| c.n > 0).map(|c| {
        let mut row =
            vec![c.task.clone(), format!("{} (n = {})", c.group.outcome(), c.n), c.searcher.label().to_string()];
        row.extend(budgets.iter().map(|&b| {
            let k = c.found_within(b);
            pct_ci(ratio(k, c.n), wilson(k, c.n))
        }));
        row
    });
    s += &markdown::table(&header, rows);
    s
}

/// The paper's Table 1 form (methods × tasks; a MATH level is a task) and the shortest correct
/// chain's mean length by task, searcher and group.
pub fn render_by_task(report: &Report) -> String {
    let mut s = String::new();
    s += "\n## By task (Table 1 form)\n\n";
    type Share = Option<(f64, Option<Interval>)>;
    let row = |label: &str, f: &dyn Fn(&TaskReport) -> Share| {
        let cells = report.tasks.iter().map(|t| f(t).map_or("-".into(), |(x, ci)| pct_ci(x, ci)));
        std::iter::once(label.to_string()).chain(cells).collect::<Vec<_>>()
    };
    let rows = vec![
        row("static (original chain)", &|t| Some((t.static_accuracy, t.static_accuracy_ci))),
        row("CoLa, MCTS (oracle)", &|t| Some((t.oracle_accuracy, t.oracle_accuracy_ci))),
        row("random chains, same budget (oracle)", &|t| t.random_accuracy.map(|a| (a, t.random_accuracy_ci))),
        row("chains MCTS evaluated with a readable answer", &|t| {
            t.answered_chain_rate.map(|a| (a, t.answered_chain_rate_ci))
        }),
    ];
    let header: Vec<&str> = std::iter::once("accuracy").chain(report.tasks.iter().map(|t| t.task.as_str())).collect();
    s += &markdown::table(&header, rows);
    let _ = writeln!(
        s,
        "\nA chain whose output holds no answer the grader can read earns reward 0; where few do, the search has little to follow."
    );
    let _ = writeln!(s, "\nMean length of the shortest correct chain (samples), of {} layers:\n", report.num_layers);
    // MCTS and random always (a `-` where random did not run), then the further searchers.
    let columns: Vec<Searcher> = [Searcher::Mcts, Searcher::Random]
        .into_iter()
        .chain(report.searchers().into_iter().filter(|s| matches!(s, Searcher::Other(_))))
        .collect();
    let rows = report.tasks.iter().map(|t| {
        let cell = |searcher: &Searcher, group: Group| {
            report
                .layer_use
                .iter()
                .find(|u| u.task == t.task && u.searcher == *searcher && u.group == group)
                .filter(|u| !u.lengths.is_empty())
                .map_or("-".into(), |u| {
                    format!(
                        "{:.1} ({})",
                        u.lengths.iter().sum::<usize>() as f64 / u.lengths.len() as f64,
                        u.lengths.len()
                    )
                })
        };
        std::iter::once(t.task.clone())
            .chain(columns.iter().flat_map(|s| Group::ALL.map(|g| cell(s, g))))
            .collect::<Vec<_>>()
    });
    let header: Vec<String> = std::iter::once("task".to_string())
        .chain(columns.iter().flat_map(|s| Group::ALL.map(|g| format!("{}, {}", s.label(), g.name()))))
        .collect();
    s += &markdown::table(&header, rows);
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
    // An empty report would overwrite whatever report is there: no records is an error.
    let merged = merge_alike(runs, out_dir, "report")?;
    let first = &merged.configs[0];
    check_not_fewer(out_dir, merged.records.len())?;
    let report = build_report(&merged.records, first.provenance.num_layers);
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

/// Finished run directories merged for reading (`report`, `export-chains`): at least one, with
/// records (else an error: nothing to `what`), of one layer count and the same settings.
/// `out_dir` names the error when no run is given.
pub(crate) fn merge_alike(runs: &[PathBuf], out_dir: &Path, what: &str) -> Result<MergedRuns, RunError> {
    let merged = merge_runs(runs)?;
    let Some(first) = merged.configs.first() else {
        return Err(RunError::Invalid { path: out_dir.to_path_buf(), message: "no run directories given".into() });
    };
    if merged.records.is_empty() {
        return Err(RunError::Invalid {
            path: runs[0].clone(),
            message: format!(
                "no finished samples in {} ({} missing or empty); nothing to {what}",
                if runs.len() == 1 { "this run" } else { "any of these runs" },
                crate::run_dir::SAMPLES_FILE
            ),
        });
    }
    if let Some((dir, other)) =
        runs.iter().zip(&merged.configs).find(|(_, c)| c.provenance.num_layers != first.provenance.num_layers)
    {
        return Err(RunError::Invalid {
            path: dir.clone(),
            message: format!(
                "a run of a {}-layer model, the first is of {} layers; {what} them separately",
                other.provenance.num_layers, first.provenance.num_layers
            ),
        });
    }
    check_same_settings(runs, &merged.configs)?;
    Ok(merged)
}

/// Runs reported together must have searched alike: same search settings, further searchers,
/// seed, model weights and products (shards of one run, or runs of other tasks with the same
/// command). The error names the first setting that differs.
fn check_same_settings(runs: &[PathBuf], configs: &[RunConfig]) -> Result<(), RunError> {
    let key = |c: &RunConfig| {
        serde_json::json!({
            "settings": c.settings,
            "other_searchers": c.other_searchers,
            "seed": c.seed,
            "weights": c.provenance.weights.iter().map(|w| &w.sha256).collect::<Vec<_>>(),
            "int8_activations": c.provenance.int8_activations,
        })
    };
    let first = key(&configs[0]);
    for (dir, config) in runs.iter().zip(configs).skip(1) {
        if let Some((at, theirs, ours)) = first_difference(&key(config), &first, String::new()) {
            return Err(RunError::Invalid {
                path: dir.join(crate::run_dir::CONFIG_FILE),
                message: format!(
                    "this run has {at} = {theirs}, the first run ({}) {ours}; runs with different settings are not merged, report them separately",
                    runs[0].display()
                ),
            });
        }
    }
    Ok(())
}

/// A report in `out_dir` made from more samples than `records` is kept: replacing it would lose
/// results (a shard, or a run cut short, reported into the directory of the whole run).
fn check_not_fewer(out_dir: &Path, records: usize) -> Result<(), RunError> {
    let path = out_dir.join("report.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let Ok(old) = serde_json::from_str::<serde_json::Value>(&text) else { return Ok(()) };
    let before: u64 = old["tasks"].as_array().map_or(0, |t| t.iter().filter_map(|t| t["n"].as_u64()).sum());
    if before > records as u64 {
        return Err(RunError::Invalid {
            path,
            message: format!(
                "holds a report of {before} samples and these runs have {records}; write this one elsewhere (--out-dir) or remove it first"
            ),
        });
    }
    Ok(())
}

/// The dotted path and both values of the first place where `a` and `b` differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<(String, String, String)> {
    use serde_json::Value;
    let child = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let (u, v) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(u, v, child(k))
            })
        }
        _ if a == b => None,
        _ => Some((at, a.to_string(), b.to_string())),
    }
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
            "Model `{}` ({} layers); actions `{}`, {} simulations, λ = {}, c = {:.3}, ε = {}, chain length {}..={}, scoring `{}`{}, seed {}; {}.\n",
            c.provenance.model_dir,
            c.provenance.num_layers,
            s.tree.actions,
            s.tree.simulations,
            s.tree.lambda,
            s.tree.c,
            s.tree.epsilon,
            s.tree.min_len,
            s.tree.max_len,
            s.scoring.mode,
            if s.scoring.chat { " (chat template)" } else { "" },
            c.seed,
            if s.batch == 1 {
                "one walk at a time (the paper's search)".to_string()
            } else {
                format!("batched: {} walks per round with virtual loss (not the paper's sequential search)", s.batch)
            }
        );
    }
    md.push_str(&render_table(report));
    let _ = writeln!(md, "\n{}", render_timing(records, timings));
    md.push_str(&render_by_task(report));
    md.push_str(&render_searchers(report));
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
    md += "## Layers in best chains\n\n";
    let rows =
        (0..report.num_layers).map(|l| vec![l.to_string(), pct(report.skip_rate[l]), pct(report.repeat_rate[l])]);
    md += &markdown::table(&["layer", "skipped", "repeated"], rows);
    files.extend(markdown::write_report_files(out_dir, &md, report)?);
    files.extend(figures);
    Ok(files)
}

fn plot_err(path: &Path) -> impl Fn(String) -> RunError + use<> {
    let path = path.to_path_buf();
    move |message| RunError::Invalid { path: path.clone(), message: format!("drawing the figure: {message}") }
}

fn write_figures(out_dir: &Path, report: &Report) -> Result<Vec<PathBuf>, RunError> {
    std::fs::create_dir_all(out_dir).map_err(|error| RunError::Io { path: out_dir.to_path_buf(), error })?;
    let lengths_path = out_dir.join("best_chain_lengths.svg");
    let layers_path = out_dir.join("layer_skip_repeat.svg");
    draw_lengths(&lengths_path, report).map_err(plot_err(&lengths_path))?;
    draw_layer_use(&layers_path, report).map_err(plot_err(&layers_path))?;
    let mut files = vec![lengths_path, layers_path];
    if !report.budget_curves.is_empty() {
        let path = out_dir.join("budget_curves.svg");
        draw_budget_curves(&path, report).map_err(plot_err(&path))?;
        files.push(path);
    }
    Ok(files)
}

/// Share of samples fixed and shortened within b evaluations: a panel per task and group (with
/// samples), MCTS beside random in it, each line in a band of its 95% Wilson interval.
fn draw_budget_curves(path: &Path, report: &Report) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let searchers = report.searchers();
    let mut panels: Vec<(&str, Group)> = Vec::new();
    for t in &report.tasks {
        for g in Group::ALL {
            if report.budget_curves.iter().any(|c| c.task == t.task && c.group == g && c.n > 0) {
                panels.push((&t.task, g));
            }
        }
    }
    // Panels in rows of at most three.
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let root = SVGBackend::new(path, (440 * cols as u32, 34 + 320 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (title, body) = root.split_vertically(34);
    title
        .draw(&Text::new(
            "Samples with a correct chain within b evaluations (fixed: originally wrong; shortened: originally right, a shorter chain)",
            (12, 9),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(|x| e(&x))?;
    for (area, (task, group)) in body.split_evenly((rows, cols)).iter().zip(&panels) {
        let curves: Vec<&BudgetCurve> =
            report.budget_curves.iter().filter(|c| c.task == *task && c.group == *group && c.n > 0).collect();
        let max_b = curves.iter().map(|c| c.evaluations).max().unwrap_or(1).max(2);
        let n = curves.first().map_or(0, |c| c.n);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{task} · {} (n = {n})", group.outcome()), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(1..max_b, 0.0..1.0)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .x_desc("evaluations spent (b)")
            .y_desc("share of the group")
            .y_labels(5)
            .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y))
            .light_line_style(WHITE)
            .draw()
            .map_err(|x| e(&x))?;
        for c in curves {
            let colour = c.searcher.colour(&searchers);
            let at = |b: usize| {
                (c.found_within(b) as f64 / c.n as f64, wilson(c.found_within(b), c.n).unwrap_or([0.0, 0.0]))
            };
            let upper = (1..=max_b).map(|b| (b, at(b).1[1]));
            let lower: Vec<(usize, f64)> = (1..=max_b).map(|b| (b, at(b).1[0])).collect();
            let band: Vec<(usize, f64)> = upper.chain(lower.into_iter().rev()).collect();
            chart.draw_series([Polygon::new(band, colour.mix(0.12).filled())]).map_err(|x| e(&x))?;
            let line: Vec<(usize, f64)> = (1..=max_b).map(|b| (b, at(b).0)).collect();
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(line, style))
                .map_err(|x| e(&x))?
                .label(c.searcher.long_label())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

/// Lengths of the shortest correct chains, one dot per sample: per task, MCTS then random,
/// each for samples the original chain got right (filled) and fixed (hollow); identical lengths
/// spread sideways, so a row's width is its count; a black bar marks each mean.
fn draw_lengths(path: &Path, report: &Report) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let searchers = report.searchers();
    let slots: Vec<&LayerUse> = report.layer_use.iter().collect();
    let tasks: Vec<&str> = report.tasks.iter().map(|t| t.task.as_str()).collect();
    let per_task = tasks.iter().map(|t| slots.iter().filter(|u| u.task == *t).count()).max().unwrap_or(0).max(1);
    let width = (tasks.len() * per_task) as f64 + tasks.len() as f64;
    let all: Vec<usize> = slots.iter().flat_map(|u| u.lengths.iter().copied()).collect();
    let lo = all.iter().copied().min().unwrap_or(0).min(report.num_layers) as f64;
    let hi = all.iter().copied().max().unwrap_or(0).max(report.num_layers) as f64;
    let root = SVGBackend::new(path, ((140 * tasks.len()).max(640) as u32, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Length of the shortest correct chain per sample", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(44)
        // Room above the dots for the legend.
        .build_cartesian_2d(-0.5..width - 0.5, lo - 1.0..hi + 1.0 + 0.35 * (hi - lo + 2.0))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        // Lengths are whole numbers: a tick per layer count, labelled without decimals.
        .y_labels((hi - lo + 3.0 + 0.35 * (hi - lo + 2.0)) as usize)
        .y_label_formatter(&|y| if y.fract() == 0.0 { format!("{y:.0}") } else { String::new() })
        .y_desc("chain length")
        .x_desc(format!(
            "task: {}; filled: originally right, hollow: fixed",
            searchers.iter().map(Searcher::label).collect::<Vec<_>>().join(", then ")
        ))
        .draw()
        .map_err(|x| e(&x))?;
    let n = report.num_layers as f64;
    chart
        .draw_series(DashedLineSeries::new([(-0.5, n), (width - 0.5, n)], 6, 4, BLACK.mix(0.6).stroke_width(1)))
        .map_err(|x| e(&x))?
        .label(format!("original chain ({} layers)", report.num_layers))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.6)));
    let mut legend_done: Vec<(&Searcher, Group)> = Vec::new();
    let mut mean_in_legend = false;
    for (ti, task) in tasks.iter().enumerate() {
        let mine: Vec<&&LayerUse> = slots.iter().filter(|u| u.task == *task).collect();
        for (si, u) in mine.iter().enumerate() {
            let centre = (ti * (per_task + 1) + si) as f64;
            let colour = u.searcher.colour(&searchers);
            let style = if u.group == Group::Right { colour.filled() } else { colour.stroke_width(1) };
            let mut by_len: BTreeMap<usize, usize> = BTreeMap::new();
            for &l in &u.lengths {
                *by_len.entry(l).or_default() += 1;
            }
            let dots: Vec<(f64, f64)> = by_len
                .iter()
                .flat_map(|(&l, &m)| {
                    let step = (0.8 / m as f64).min(0.12);
                    (0..m).map(move |k| (centre + (k as f64 - (m as f64 - 1.0) / 2.0) * step, l as f64))
                })
                .collect();
            let series = chart.draw_series(dots.into_iter().map(|p| Circle::new(p, 3, style))).map_err(|x| e(&x))?;
            if !legend_done.contains(&(&u.searcher, u.group)) {
                legend_done.push((&u.searcher, u.group));
                series
                    .label(format!("{} · {}", u.searcher.label(), u.group.name()))
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, style));
            }
            if !u.lengths.is_empty() {
                let mean = u.lengths.iter().sum::<usize>() as f64 / u.lengths.len() as f64;
                let bar = chart
                    .draw_series([PathElement::new(
                        vec![(centre - 0.4, mean), (centre + 0.4, mean)],
                        BLACK.stroke_width(2),
                    )])
                    .map_err(|x| e(&x))?;
                if !mean_in_legend {
                    mean_in_legend = true;
                    bar.label("mean of a group")
                        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
                }
            }
        }
        if mine.iter().all(|u| u.lengths.is_empty()) {
            let centre = (ti * (per_task + 1)) as f64 + (per_task as f64 - 1.0) / 2.0;
            let (px, py) = chart.backend_coord(&(centre, n));
            let font = ("sans-serif", 12).into_font().color(&BLACK.mix(0.7));
            root.draw(&Text::new("no correct chain", (px - 44, py - 18), font)).map_err(|x| e(&x))?;
        }
        let (px, py) = chart.backend_coord(&((ti * (per_task + 1)) as f64 + (per_task as f64 - 1.0) / 2.0, lo - 1.0));
        root.draw(&Text::new(task.to_string(), (px - 4 * task.len() as i32, py + 8), ("sans-serif", 14).into_font()))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

/// `text` in lines of at most `width` characters, broken between words (plotters draws one
/// line per text element).
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.len() + word.len() + 1 > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// White (0%) to dark red (100%).
fn heat(rate: f64) -> RGBColor {
    let r = rate.clamp(0.0, 1.0);
    RGBColor((255.0 - 95.0 * r) as u8, (255.0 * (1.0 - r)) as u8, (255.0 * (1.0 - r)) as u8)
}

/// Heat maps of how often the shortest correct chains skip (top) and repeat (bottom) each layer:
/// one row per task and group (originally right / fixed), MCTS left, random right (where run),
/// one colour scale for all.
fn draw_layer_use(path: &Path, report: &Report) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let searchers = report.searchers();
    // Rows with no shortest correct chain for any searcher are left out, and listed below.
    let has_chains = |task: &str, group: Group| {
        report.layer_use.iter().any(|u| u.task == task && u.group == group && !u.lengths.is_empty())
    };
    type Rows = Vec<(String, Group)>;
    let (rows, empty): (Rows, Rows) =
        report.tasks.iter().flat_map(|t| Group::ALL.map(|g| (t.task.clone(), g))).partition(|(t, g)| has_chains(t, *g));
    let n = report.num_layers as i32;
    let panel_h = 110 + 20 * rows.len().max(1) as u32;
    let width = 460 * searchers.len() as u32 + 120;
    let note_lines = wrap_words(
        &format!(
            "No correct chain (rows left out): {}",
            empty.iter().map(|(t, g)| format!("{t} · {}", g.name())).collect::<Vec<_>>().join(", ")
        ),
        width as usize / 7,
    );
    let note_h = if empty.is_empty() { 0 } else { 8 + 16 * note_lines.len() as u32 };
    let root = SVGBackend::new(path, (width, 2 * panel_h + 40 + note_h)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (root, note) = root.split_vertically(2 * panel_h + 40);
    if !empty.is_empty() {
        for (i, line) in note_lines.iter().enumerate() {
            note.draw(&Text::new(line.clone(), (12, 2 + 16 * i as i32), ("sans-serif", 13).into_font()))
                .map_err(|x| e(&x))?;
        }
    }
    let (title, body) = root.split_vertically(36);
    title
        .draw(&Text::new(
            "Share of shortest correct chains that skip / repeat each layer",
            (12, 10),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(|x| e(&x))?;
    let (maps, scale) = body.split_horizontally(460 * searchers.len() as u32);
    let panels = maps.split_evenly((2, searchers.len()));
    for (i, area) in panels.iter().enumerate() {
        let (kind, searcher) = (i / searchers.len(), searchers[i % searchers.len()].clone());
        let what = if kind == 0 { "skip" } else { "repeat" };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} · {what}", searcher.long_label()), ("sans-serif", 15))
            .margin(6)
            .x_label_area_size(38)
            .y_label_area_size(120)
            .build_cartesian_2d(0..n, (0..(rows.len() as i32 - 1).max(1)).into_segmented())
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_mesh()
            // Fixed sizes: plotters' defaults shrink with a short panel (one row).
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .x_desc("layer")
            .y_labels(rows.len().max(1))
            .y_label_formatter(&|y| match y {
                SegmentValue::CenterOf(y) => {
                    let k = rows.len().wrapping_sub(1 + *y as usize);
                    rows.get(k).map_or(String::new(), |(t, g)| format!("{t} · {}", g.name()))
                }
                _ => String::new(),
            })
            .draw()
            .map_err(|x| e(&x))?;
        for (k, (task, group)) in rows.iter().enumerate() {
            let y = (rows.len() - 1 - k) as i32;
            let rates = report
                .layer_use
                .iter()
                .find(|u| u.searcher == searcher && u.task == *task && u.group == *group)
                .filter(|u| !u.lengths.is_empty())
                .map(|u| if kind == 0 { &u.skip_rate } else { &u.repeat_rate });
            chart
                .draw_series((0..n).map(|l| {
                    let fill = match rates {
                        Some(r) => heat(r[l as usize]).filled(),
                        // No chains in this row: plain grey (the legend's "none"), not 0%.
                        None => RGBColor(225, 225, 225).filled(),
                    };
                    Rectangle::new([(l, SegmentValue::Exact(y)), (l + 1, SegmentValue::Exact(y + 1))], fill)
                }))
                .map_err(|x| e(&x))?;
        }
    }
    // The colour scale.
    let (_, h) = scale.dim_in_pixel();
    let top = 40i32;
    let bottom = h as i32 - 40;
    let steps = 50;
    for k in 0..steps {
        let y0 = bottom - (bottom - top) * k / steps;
        let y1 = bottom - (bottom - top) * (k + 1) / steps;
        scale
            .draw(&Rectangle::new([(30, y1), (50, y0)], heat(k as f64 / (steps - 1) as f64).filled()))
            .map_err(|x| e(&x))?;
    }
    scale.draw(&Rectangle::new([(30, top), (50, bottom)], BLACK.stroke_width(1))).map_err(|x| e(&x))?;
    for (frac, label) in [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")] {
        let y = bottom - ((bottom - top) as f64 * frac) as i32;
        scale.draw(&Text::new(label, (54, y - 6), ("sans-serif", 12).into_font())).map_err(|x| e(&x))?;
    }
    scale.draw(&Text::new("of chains", (18, bottom + 12), ("sans-serif", 12).into_font())).map_err(|x| e(&x))?;
    scale
        .draw(&Rectangle::new([(30, bottom + 26), (50, bottom + 36)], RGBColor(225, 225, 225).filled()))
        .map_err(|x| e(&x))?;
    scale.draw(&Text::new("none", (54, bottom + 25), ("sans-serif", 12).into_font())).map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
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
            best_chain: best.map(|b| Chain::parse(b).unwrap()),
            best_prediction: None,
            evaluations: 10,
            simulations: 9,
            stopped_early: false,
            random_best_correct: Some(random),
            random_best_chain: None,
            random_best_len: None,
            random_evaluations: Some(10),
            chains: vec![],
            random_chains: None,
            other_searchers: Vec::new(),
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
    fn readable_answers_are_counted_over_evaluated_chains() {
        let chain = |prediction: Option<&str>| ChainRecord {
            chain: Chain::parse("0-3").unwrap(),
            length: 4,
            reward: 0.0,
            prediction: prediction.map(str::to_string),
            visits: 1,
            simulation: 0,
        };
        // Task "a": 3 chains of 5 carry an answer (an empty one is none), over two samples;
        // task "b" records none.
        let mut a1 = rec("a", false, None, false);
        a1.chains = vec![chain(Some("7")), chain(None), chain(Some(""))];
        let mut a2 = rec("a", false, None, false);
        a2.chains = vec![chain(Some("8")), chain(Some("\\frac{1}{2}"))];
        let r = build_report(&[a1, a2, rec("b", false, None, false)], 4);
        assert_eq!(r.tasks[0].answered_chain_rate, Some(0.6));
        assert_eq!(r.tasks[1].answered_chain_rate, None);
        let md = render_by_task(&r);
        // Bootstrapped over the two samples: 1/3 or 2/2 resampled twice, or one of each (3/5).
        assert!(md.contains("| chains MCTS evaluated with a readable answer | 60.0% [33.3, 100.0] | - |"), "{md}");
        // No sample was right: the finding-1 cell has nothing to count, and says so.
        let table = render_table(&r);
        assert!(
            table.contains(
                "| a | 2 | 0.0% [0.0, 65.8] | 0.0% [0.0, 65.8] | 0.0% [0.0, 65.8] | 0/0 (-) | - / - | 0/2 (0.0% [0.0, 65.8]) | 0/2 (0.0% [0.0, 65.8]) |"
            ),
            "{table}"
        );
    }

    #[test]
    fn layer_use_splits_by_task_searcher_and_group() {
        // 4 layers, two tasks. MCTS: "a" right shortened to 0,1,3 (skips 2), "a" fixed by
        // 0,1,1,2,3 (repeats 1); "b" right, no chain. Random: "a" right by 0,2,3 (skips 1).
        let mut a_right = rec("a", true, Some("0-1,3"), true);
        a_right.random_best_chain = Some(Chain::parse("0,2-3").unwrap());
        let a_fixed = rec("a", false, Some("0,1,1,2,3"), false);
        let b_right = rec("b", true, None, false);
        let r = build_report(&[a_right, a_fixed, b_right], 4);
        let find = |t: &str, s: Searcher, g: Group| {
            r.layer_use.iter().find(|u| u.task == t && u.searcher == s && u.group == g).unwrap().clone()
        };
        let u = find("a", Searcher::Mcts, Group::Right);
        assert_eq!((u.lengths, u.skip_rate, u.repeat_rate), (vec![3], vec![0.0, 0.0, 1.0, 0.0], vec![0.0; 4]));
        let u = find("a", Searcher::Mcts, Group::Fixed);
        assert_eq!((u.lengths, u.repeat_rate), (vec![5], vec![0.0, 1.0, 0.0, 0.0]));
        let u = find("a", Searcher::Random, Group::Right);
        assert_eq!((u.lengths, u.skip_rate), (vec![3], vec![0.0, 1.0, 0.0, 0.0]));
        assert!(find("a", Searcher::Random, Group::Fixed).lengths.is_empty());
        assert!(find("b", Searcher::Mcts, Group::Right).lengths.is_empty());
        assert_eq!(r.layer_use.len(), 8);
        let md = render_by_task(&r);
        assert!(md.contains("| static (original chain) | 50.0% [9.5, 90.5] | 100.0% [20.7, 100.0] |"), "{md}");
        assert!(md.contains("| a | 3.0 (1) | 5.0 (1) | 3.0 (1) | - |"), "{md}");
    }

    #[test]
    fn report_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let records = [rec("t", true, Some("0,1,3"), true)];
        let r = build_report(&records, 4);
        let timings = HashMap::from([(("t".to_string(), "0".to_string()), 2.5)]);
        let files = write_report(dir.path(), &r, &records, &timings, &[], &[]).unwrap();
        // Two figures, the budget curves, report.md and report.json.
        assert_eq!(files.len(), 5);
        let svg = std::fs::read_to_string(dir.path().join("best_chain_lengths.svg")).unwrap();
        assert!(svg.contains("<svg"));
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| t | 1 |"));
        assert!(md.contains("Search time: t 2.5 s/sample (1 timed)."), "{md}");
    }

    /// Runs made with different settings are not merged: the error names the setting; a shard
    /// of the same settings merges.
    #[test]
    fn runs_with_different_settings_are_refused() {
        let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/results");
        let run = std::fs::read_dir(&results)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.join(crate::run_dir::SAMPLES_FILE).exists()
                    && std::fs::read_to_string(p.join(crate::run_dir::CONFIG_FILE))
                        .is_ok_and(|t| serde_json::from_str::<crate::run_dir::RunConfig>(&t).is_ok())
            })
            .expect("a committed search run with records");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(crate::run_dir::CONFIG_FILE)).unwrap()).unwrap();
        let sims = config["settings"]["simulations"].as_u64().unwrap();
        let copy = |config: &serde_json::Value| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(crate::run_dir::CONFIG_FILE), config.to_string()).unwrap();
            std::fs::copy(run.join(crate::run_dir::SAMPLES_FILE), dir.path().join(crate::run_dir::SAMPLES_FILE))
                .unwrap();
            dir
        };
        let (a, same) = (copy(&config), copy(&config));
        let mut changed = config.clone();
        changed["settings"]["simulations"] = (sims + 1).into();
        let b = copy(&changed);
        let out = tempfile::tempdir().unwrap();
        let Err(e) = report_runs(&[a.path().to_path_buf(), b.path().to_path_buf()], out.path()) else {
            panic!("merged runs of different settings")
        };
        let e = e.to_string();
        assert!(e.contains(&format!("settings.simulations = {}", sims + 1)) && e.contains(&sims.to_string()), "{e}");
        assert!(!out.path().join("report.md").exists());
        // Approximate products are another model: an int8 run does not merge with an exact one.
        let mut int8 = config.clone();
        int8["int8_activations"] = true.into();
        let c = copy(&int8);
        let Err(e) = report_runs(&[a.path().to_path_buf(), c.path().to_path_buf()], out.path()) else {
            panic!("merged an int8 run with an exact one")
        };
        assert!(e.to_string().contains("int8_activations = true"), "{e}");
        report_runs(&[a.path().to_path_buf(), same.path().to_path_buf()], out.path()).unwrap();
    }

    /// A report made from more samples is not replaced by one from fewer.
    #[test]
    fn a_report_of_more_samples_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        check_not_fewer(dir.path(), 0).unwrap();
        let older = r#"{"tasks":[{"task":"arc_easy","n":2},{"task":"arc_challenge","n":1}]}"#;
        std::fs::write(dir.path().join("report.json"), older).unwrap();
        let e = check_not_fewer(dir.path(), 2).unwrap_err().to_string();
        assert!(e.contains("report of 3 samples") && e.contains("have 2"), "{e}");
        assert_eq!(std::fs::read_to_string(dir.path().join("report.json")).unwrap(), older);
        check_not_fewer(dir.path(), 3).unwrap();
    }

    /// Every committed search run with its records reports again to the committed report.json
    /// and figures, byte for byte: the committed results are what this code computes from them.
    #[test]
    fn committed_runs_report_again_byte_for_byte() {
        let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/results");
        let mut checked = 0;
        for run in std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()) {
            let config = std::fs::read_to_string(run.join(crate::run_dir::CONFIG_FILE)).unwrap_or_default();
            if !run.join(crate::run_dir::SAMPLES_FILE).exists()
                || serde_json::from_str::<crate::run_dir::RunConfig>(&config).is_err()
            {
                continue;
            }
            let out = tempfile::tempdir().unwrap();
            report_runs(std::slice::from_ref(&run), out.path()).unwrap();
            for file in ["report.json", "best_chain_lengths.svg", "layer_skip_repeat.svg", "budget_curves.svg"] {
                let (committed, now) = (run.join(file), out.path().join(file));
                assert!(
                    std::fs::read(&committed).unwrap() == std::fs::read(&now).unwrap(),
                    "{} differs from what its records give now",
                    committed.display()
                );
            }
            checked += 1;
        }
        assert!(checked > 0, "no committed search run with records in {}", results.display());
    }

    /// The paired MCTS-minus-random difference on a synthetic pair with a known difference:
    /// 40 wrong samples, MCTS fixes 20, random 10 of those 20 and none else, so the difference is
    /// +25 points; its interval holds it and excludes 0 (every resampled difference is >= 0).
    #[test]
    fn the_paired_difference_is_the_known_one() {
        let records: Vec<SampleRecord> = (0..40)
            .map(|i| {
                let mut r = rec("t", false, (i < 20).then_some("0-2"), true);
                r.random_best_correct = Some(i < 10);
                r
            })
            .collect();
        let t = &build_report(&records, 4).tasks[0];
        assert_eq!(t.mcts_minus_random_fixed, Some(0.25));
        let [lo, hi] = t.mcts_minus_random_fixed_ci.unwrap();
        assert!(lo > 0.0 && lo < 0.25 && hi > 0.25 && hi < 0.5, "[{lo}, {hi}]");
        assert_eq!(t.fixed_by_mcts_ci, Some(wilson(20, 40).unwrap()));
    }

    /// A run directory without records is an error, and the report already there stays.
    #[test]
    fn a_run_without_records_is_refused_and_its_report_kept() {
        let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/results");
        let cfg = std::fs::read_dir(&results)
            .unwrap()
            .map(|e| e.unwrap().path().join(crate::run_dir::CONFIG_FILE))
            .find(|p| {
                std::fs::read_to_string(p).is_ok_and(|t| serde_json::from_str::<crate::run_dir::RunConfig>(&t).is_ok())
            })
            .expect("a committed search run");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&cfg, dir.path().join(crate::run_dir::CONFIG_FILE)).unwrap();
        std::fs::write(dir.path().join("report.md"), "kept").unwrap();
        let Err(e) = report_runs(&[dir.path().to_path_buf()], dir.path()) else { panic!("reported an empty run") };
        let e = e.to_string();
        assert!(e.contains("no finished samples") && e.contains("samples.jsonl"), "{e}");
        assert_eq!(std::fs::read_to_string(dir.path().join("report.md")).unwrap(), "kept");
    }
}
