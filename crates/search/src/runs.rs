//! Whole runs: choose items, search (or just score) them one by one with a progress bar, record
//! each as it finishes, and report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cola_eval::{
    Item, ItemResult, LoadReport, ScoringOptions, Split, Summary, Task, load_task, load_user_jsonl, score_item,
};
use cola_executor::{Chain, LoadedChainModel};
use cola_model::LayerOps;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;

use crate::SearchError;
use crate::model::ChainModel;
use crate::report::{Report, build_report, render_table, write_report};
use crate::run_dir::{HashedFile, Provenance, RunConfig, RunDir, Shard, read_timings};
use crate::sample::{SearchSettings, search_item};

/// Where items come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Task(Task),
    /// A user JSONL file (see `cola_eval::data`), reported under `name`.
    File {
        path: PathBuf,
        name: String,
    },
}

impl Source {
    /// A user file, reported under its file name without the extension.
    pub fn file(path: &Path) -> Source {
        let name = path.file_stem().map_or("data".into(), |s| s.to_string_lossy().to_string());
        Source::File { path: path.to_path_buf(), name }
    }

    pub fn name(&self) -> String {
        match self {
            Source::Task(t) => t.name(),
            Source::File { name, .. } => name.clone(),
        }
    }
}

/// Which items of which sources.
#[derive(Debug, Clone)]
pub struct Selection {
    pub sources: Vec<Source>,
    pub limit: Option<usize>,
    pub offset: usize,
    pub shard: Option<Shard>,
    pub subject: Option<String>,
    /// Validation or test (None: each task's default, see [`cola_eval::Split`]).
    pub split: Option<Split>,
    /// The order items are taken in, before offset, limit and shard.
    pub sample: Sampling,
}

impl Selection {
    /// Where a search of this selection writes unless told: `runs/<task>+<task>[-<split>]-<preset>
    /// -n<limit>-s<seed>[-shard<k>of<n>]`.
    pub fn default_run_dir(&self, preset: crate::Preset, seed: u64) -> PathBuf {
        let tasks: Vec<String> = self.sources.iter().map(|s| s.name()).collect();
        let shard = self.shard.map_or(String::new(), |s| format!("-shard{}of{}", s.index, s.count));
        let split = self.split.map_or(String::new(), |s| format!("-{}", s.name()));
        let n = self.limit.map_or("all".into(), |l| l.to_string());
        PathBuf::from("runs").join(format!("{}{split}-{}-n{n}-s{seed}{shard}", tasks.join("+"), preset.name()))
    }
}

/// The order a task's items are taken in (`--sample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// As the data lists them (MATH: subject by subject, so the first N of a level are algebra).
    First,
    /// Items with a subject (MATH) interleaved so that the first N of any N hold every subject in
    /// proportion to its items (largest deficit first, ties in subject order), each subject's
    /// items in an order shuffled with the fixed seed [`Sampling::SEED`], the same for every run.
    /// Items without a subject keep their order.
    #[default]
    Stratified,
}

impl Sampling {
    pub const SEED: u64 = 0;
    pub const ALL: [Sampling; 2] = [Sampling::First, Sampling::Stratified];

    pub fn name(self) -> &'static str {
        match self {
            Sampling::First => "first",
            Sampling::Stratified => "stratified",
        }
    }

    /// `items` in this order.
    pub fn order(self, items: &[Item]) -> Vec<Item> {
        if self == Sampling::First || items.iter().all(|it| it.subject().is_none()) {
            return items.to_vec();
        }
        let mut strata: std::collections::BTreeMap<Option<&str>, Vec<&Item>> = Default::default();
        for it in items {
            strata.entry(it.subject()).or_default().push(it);
        }
        let mut strata: Vec<Vec<&Item>> = strata
            .into_iter()
            .map(|(name, mut its)| {
                let id = name.unwrap_or_default();
                its.shuffle(&mut cola_mcts::sample_rng(Self::SEED, &format!("sample/{id}")));
                its.reverse(); // popped from the back: the shuffled order
                its
            })
            .collect();
        let sizes: Vec<f64> = strata.iter().map(|s| s.len() as f64).collect();
        let total = items.len() as f64;
        let mut taken = vec![0.0f64; strata.len()];
        let mut out = Vec::with_capacity(items.len());
        for k in 1..=items.len() {
            let deficit = |i: usize| k as f64 * sizes[i] / total - taken[i];
            let next = (0..strata.len())
                .filter(|&i| !strata[i].is_empty())
                .max_by(|&a, &b| deficit(a).total_cmp(&deficit(b)).then(b.cmp(&a)))
                .expect("an item is left");
            out.push(strata[next].pop().expect("non-empty").clone());
            taken[next] += 1.0;
        }
        out
    }
}

cola_names::by_name!(Sampling, "sampling");

/// Items of one source after offset, limit and shard, plus what loading skipped.
pub struct TaskItems {
    pub name: String,
    pub items: Vec<Item>,
    pub load: LoadReport,
}

impl TaskItems {
    /// Lists (the first ten of) the items loading skipped, with why, on stderr.
    pub(crate) fn print_skipped(&self) {
        if !self.load.skipped.is_empty() {
            eprintln!("{}: {} items skipped while loading:", self.name, self.load.skipped.len());
            for s in self.load.skipped.iter().take(10) {
                eprintln!("  {s}");
            }
        }
    }
}

/// Loads and selects items. `data_dir` holds `oe_eval_tasks/`.
pub fn select_items(data_dir: &Path, sel: &Selection) -> Result<Vec<TaskItems>, SearchError> {
    let mut out = Vec::new();
    for source in &sel.sources {
        let load = match source {
            Source::Task(t) => load_task(data_dir, *t, sel.subject.as_deref(), sel.split),
            Source::File { path, name } => load_user_jsonl(path, name),
        }?;
        if sel.offset > 0 && sel.offset >= load.items.len() {
            return Err(SearchError::OffsetPastEnd {
                task: source.name(),
                offset: sel.offset,
                count: load.items.len(),
            });
        }
        let items: Vec<Item> = sel
            .sample
            .order(&load.items)
            .into_iter()
            .skip(sel.offset)
            .take(sel.limit.unwrap_or(usize::MAX))
            .enumerate()
            .filter(|(i, _)| sel.shard.is_none_or(|s| s.takes(*i)))
            .map(|(_, it)| it)
            .collect();
        out.push(TaskItems { name: source.name(), items, load });
    }
    Ok(out)
}

/// Progress as plain lines, at most one per [`LogLines::EVERY`] plus the last state, for when
/// stderr is not a terminal (a batch job's log): a bar redrawn in place would show nothing there.
#[derive(Debug, Default)]
struct LogLines {
    /// (when the last line was printed, the latest line not yet printed)
    state: std::sync::Mutex<(Option<std::time::Instant>, Option<String>)>,
}

impl LogLines {
    const EVERY: Duration = Duration::from_secs(30);

    fn line(&self, text: &str) -> std::io::Result<()> {
        let text = text.trim_end();
        if text.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            eprintln!("{text}");
            *state = (Some(std::time::Instant::now()), None);
        } else {
            state.1 = Some(text.to_string());
        }
        Ok(())
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        if let Some(last) = self.state.get_mut().ok().and_then(|s| s.1.take()) {
            eprintln!("{last}");
        }
    }
}

impl indicatif::TermLike for LogLines {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A progress bar over `len` steps of which `done` are already done (a resumed run). Its ETA is
/// the time per step since it started times the steps left: indicatif's own estimate decays
/// toward zero speed while a step takes minutes (a search sample), which showed ETAs of
/// billions of years.
pub(crate) fn progress(len: usize, done: usize, prefix: String) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::with_draw_target(
            Some(len as u64),
            indicatif::ProgressDrawTarget::term_like(Box::new(LogLines::default())),
        )
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:28}] {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]")
            .expect("valid template")
            .with_key("eta", move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(
                    w,
                    "{}",
                    eta(state.elapsed(), state.pos().saturating_sub(done as u64), state.len(), state.pos())
                );
            })
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb.set_position(done as u64);
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// `elapsed` for `steps` steps, `pos` of `len` done: the time left at that pace, `?` before the
/// first step.
fn eta(elapsed: Duration, steps: u64, len: Option<u64>, pos: u64) -> String {
    let left = len.unwrap_or(pos).saturating_sub(pos);
    if left == 0 {
        return "0s".into();
    }
    if steps == 0 {
        return "?".into();
    }
    let secs = (elapsed.as_secs_f64() / steps as f64 * left as f64).round() as u64;
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Everything a search run needs besides the model.
pub struct SearchRequest {
    pub selection: Selection,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub force: bool,
    pub seed: u64,
    pub settings: SearchSettings,
    pub cache_mib: usize,
    pub backend: cola_executor::backend::BackendKind,
    /// Searchers run on every sample after MCTS and the baseline, at MCTS's budget
    /// ([`crate::sample::ChainSearcher`]); their names go into config.json.
    pub other_searchers: Vec<std::sync::Arc<dyn crate::sample::ChainSearcher>>,
}

/// The names of a run's further searchers, checked: each once, none `mcts` or `random`.
fn searcher_names(searchers: &[std::sync::Arc<dyn crate::sample::ChainSearcher>]) -> Result<Vec<String>, SearchError> {
    let mut names: Vec<String> = Vec::new();
    for s in searchers {
        let name = s.name().to_string();
        if name == "mcts" || name == "random" || names.contains(&name) || name.trim().is_empty() {
            return Err(SearchError::Searcher(name));
        }
        names.push(name);
    }
    Ok(names)
}

/// sha256 of the weight files of a model directory, named relative to it (or of a GGUF file).
pub fn weight_hashes(model_dir: &Path) -> Result<Vec<HashedFile>, SearchError> {
    if model_dir.is_file() {
        let name = model_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().to_string());
        return Ok(vec![HashedFile { path: name, sha256: sha256(model_dir)? }]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(model_dir)
        .map_err(|e| SearchError::File { path: model_dir.to_path_buf(), error: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "safetensors") || p.file_name().is_some_and(|n| n == "config.json")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_name().map_or_else(String::new, |n| n.to_string_lossy().to_string());
            Ok(HashedFile { path: name, sha256: sha256(p)? })
        })
        .collect()
}

fn sha256(p: &Path) -> Result<String, SearchError> {
    cola_assets::sha256_file_cached(p).map_err(|e| SearchError::File { path: p.to_path_buf(), error: e.to_string() })
}

/// A data file as the config records it (see [`cola_assets::portable_path`]).
pub(crate) fn hashed(p: &Path) -> Result<HashedFile, SearchError> {
    Ok(HashedFile { path: cola_assets::portable_path(p), sha256: sha256(p)? })
}

/// Runs (or resumes) a search and writes the report. Returns the report and the run directory.
pub fn run_search<B: LayerOps>(
    req: &SearchRequest, model: &LoadedChainModel<B>,
) -> Result<(Report, RunDir), SearchError> {
    let tasks = select_items(&req.data_dir, &req.selection)?;
    let num_layers = model.executor.num_layers();
    let mut data = Vec::new();
    for t in &tasks {
        for f in &t.load.files {
            data.push(hashed(f)?);
        }
    }
    let model_dir = &model.dir;
    let config = RunConfig {
        tasks: tasks.iter().map(|t| t.name.clone()).collect(),
        limit: req.selection.limit,
        offset: req.selection.offset,
        shard: req.selection.shard,
        split: req.selection.split,
        sample: tasks
            .iter()
            .any(|t| t.load.items.iter().any(|it| it.subject().is_some()))
            .then_some(req.selection.sample),
        seed: req.seed,
        settings: req.settings.clone(),
        other_searchers: searcher_names(&req.other_searchers)?,
        provenance: Provenance::new(model_dir, num_layers, data, req.backend, model.int8_activations)?,
    };
    let run = RunDir::open(&req.out_dir, &config, req.force)?;
    let done = run.finished_keys()?;
    let mut chain_model = ChainModel::new(model, Chain::identity(num_layers))
        .with_cache_budget_mib(req.cache_mib)
        .with_caching(req.cache_mib > 0);
    for t in &tasks {
        t.print_skipped();
    }
    // Item j of every task before item j + 1 of any: a run stopped early (or still going over
    // several sittings) covers every task about evenly. Within a task the order is the item
    // order, which is what shard merging relies on.
    let lists: Vec<&[Item]> = tasks.iter().map(|t| t.items.as_slice()).collect();
    let todo: Vec<&Item> =
        round_robin(&lists).filter(|i| !done.contains(&(i.task.clone(), i.doc_id.clone()))).collect();
    let total: usize = tasks.iter().map(|t| t.items.len()).sum();
    let pb = progress(total, total - todo.len(), "search".into());
    let (mut right, mut fixed, mut shortened, mut finished) = (0, 0, 0, 0);
    for item in todo {
        let _span = tracing::info_span!("sample", task = %item.task, doc_id = %item.doc_id).entered();
        let started = std::time::Instant::now();
        let rec = search_item(&mut chain_model, item, &req.settings, req.seed, &req.other_searchers)
            .map_err(|error| SearchError::Item { task: item.task.clone(), doc_id: item.doc_id.clone(), error })?;
        run.append(&rec, started.elapsed().as_secs_f64())?;
        finished += 1;
        right += rec.static_correct as usize;
        fixed += (!rec.static_correct && rec.best_correct) as usize;
        shortened += (rec.static_correct && rec.best_len.is_some_and(|l| l < num_layers)) as usize;
        pb.set_message(format!(
            "last {}; this session static right {right}/{finished}, fixed {fixed}, shortened {shortened}",
            item.task
        ));
        pb.inc(1);
    }
    pb.finish();
    let records = run.finished()?;
    let report = build_report(&records, num_layers);
    let timings = read_timings(&run.dir);
    write_report(&run.dir, &report, &records, &timings, &[config], std::slice::from_ref(&run.dir))?;
    Ok((report, run))
}

/// Element 0 of every list in turn, then element 1, ... (lists that run out drop out).
fn round_robin<'a, T>(lists: &'a [&'a [T]]) -> impl Iterator<Item = &'a T> {
    let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0);
    (0..longest).flat_map(move |j| lists.iter().filter_map(move |l| l.get(j)))
}

/// Re-scores recorded chains: the prediction each chain gives now (used to check records).
pub fn rescore<B: LayerOps>(
    model: &LoadedChainModel<B>, item: &Item, chain: &Chain, scoring: &ScoringOptions,
) -> Result<ItemResult, SearchError> {
    let mut m = ChainModel::new(model, chain.clone()).with_caching(false);
    score_item(&mut m, item, scoring).map_err(|error| SearchError::Item {
        task: item.task.clone(),
        doc_id: item.doc_id.clone(),
        error,
    })
}

/// Scores items along one chain (`cargo xtask eval`); each result goes to `on_result` as it is
/// ready. Returns one summary per source.
pub fn run_eval<B: LayerOps>(
    model: &LoadedChainModel<B>, tasks: &[TaskItems], chain: &Chain, scoring: &ScoringOptions,
    mut on_result: impl FnMut(&str, &ItemResult) -> std::io::Result<()>,
) -> Result<Vec<Summary>, SearchError> {
    let mut m = ChainModel::new(model, chain.clone()).with_caching(false);
    let mut summaries = Vec::new();
    for t in tasks {
        t.print_skipped();
        let pb = progress(t.items.len(), 0, t.name.clone());
        let mut results = Vec::with_capacity(t.items.len());
        for item in &t.items {
            let r = score_item(&mut m, item, scoring).map_err(|error| SearchError::Item {
                task: t.name.clone(),
                doc_id: item.doc_id.clone(),
                error,
            })?;
            on_result(&t.name, &r).map_err(SearchError::Output)?;
            results.push(r);
            let correct = results.iter().filter(|r| r.correct).count();
            pb.set_message(format!("acc {:.1}%", 100.0 * correct as f64 / results.len() as f64));
            pb.inc(1);
        }
        pb.finish();
        summaries.push(Summary::from_results(&t.name, &results, t.load.skipped.len()));
    }
    Ok(summaries)
}

/// The table for a finished run, for printing.
pub fn table(report: &Report) -> String {
    render_table(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run directories are named by tasks, split, preset, limit, seed and shard, so two runs of
    /// different selections never share one by default.
    #[test]
    fn default_run_dirs_name_the_selection() {
        use cola_eval::{Split, Task};
        let mut sel = super::Selection {
            sources: vec![super::Source::Task(Task::ArcEasy), super::Source::Task(Task::ArcChallenge)],
            limit: Some(100),
            offset: 0,
            shard: None,
            subject: None,
            split: None,
            sample: Default::default(),
        };
        let dir = |s: &super::Selection, p| s.default_run_dir(p, 3).display().to_string();
        assert_eq!(dir(&sel, crate::Preset::Paper), "runs/arc-easy+arc-challenge-paper-n100-s3");
        sel.split = Some(Split::Validation);
        sel.shard = Some(crate::run_dir::Shard { index: 1, count: 4 });
        sel.limit = None;
        assert_eq!(dir(&sel, crate::Preset::Quick), "runs/arc-easy+arc-challenge-validation-default-nall-s3-shard1of4");
    }

    fn math_item(subject: Option<&str>, id: usize) -> Item {
        Item {
            task: "math".into(),
            doc_id: format!("{}/{id}", subject.unwrap_or("-")),
            kind: cola_eval::ItemKind::Math {
                problem: String::new(),
                answer: "1".into(),
                level: Some(1),
                subject: subject.map(str::to_string),
                form: cola_eval::AnswerForm::Boxed,
                few_shot: None,
            },
        }
    }

    /// Stratified order: a permutation in which every prefix holds each subject within one item
    /// of its proportional share, the same on every call; `first` and items without subjects
    /// keep the data's order.
    #[test]
    fn stratified_sampling_takes_every_subject_in_proportion() {
        let mut items: Vec<Item> = Vec::new();
        for (subject, count) in [("algebra", 12), ("geometry", 6), ("number_theory", 3), ("precalculus", 1)] {
            items.extend((0..count).map(|i| math_item(Some(subject), i)));
        }
        let ordered = Sampling::Stratified.order(&items);
        let mut ids: Vec<&str> = ordered.iter().map(|it| it.doc_id.as_str()).collect();
        assert_eq!(ids[..4].iter().filter(|id| id.starts_with("algebra")).count(), 2, "{ids:?}");
        for k in 1..=ordered.len() {
            for (subject, count) in [("algebra", 12.0), ("geometry", 6.0), ("number_theory", 3.0), ("precalculus", 1.0)]
            {
                let taken = ordered[..k].iter().filter(|it| it.doc_id.starts_with(subject)).count() as f64;
                let share = k as f64 * count / 22.0;
                assert!((taken - share).abs() < 1.0, "{subject}: {taken} of the first {k}, share {share:.2}");
            }
        }
        assert_eq!(Sampling::Stratified.order(&items), ordered);
        // Within a subject, not the data's order (shuffled with the fixed seed).
        let algebra: Vec<&str> = ids.iter().copied().filter(|id| id.starts_with("algebra")).collect();
        assert_ne!(algebra, (0..12).map(|i| format!("algebra/{i}")).collect::<Vec<_>>());
        ids.sort_unstable();
        let mut all: Vec<&str> = items.iter().map(|it| it.doc_id.as_str()).collect();
        all.sort_unstable();
        assert_eq!(ids, all);
        assert_eq!(Sampling::First.order(&items), items);
        let plain: Vec<Item> = (0..5).map(|i| math_item(None, i)).collect();
        assert_eq!(Sampling::Stratified.order(&plain), plain);
    }

    #[test]
    fn eta_is_the_pace_so_far_times_the_steps_left() {
        let min = Duration::from_secs(60);
        assert_eq!(eta(3 * 12 * min, 3, Some(60), 3), "11h24m"); // 57 left at 12 min each
        assert_eq!(eta(min, 0, Some(60), 3), "?");
        assert_eq!(eta(min, 4, Some(10), 10), "0s");
        assert_eq!(eta(Duration::from_secs(10), 5, Some(35), 5), "1m00s");
        assert_eq!(eta(Duration::from_secs(10), 10, Some(12), 10), "2s");
    }

    #[test]
    fn round_robin_takes_one_of_each_list_in_turn() {
        let lists: [&[&str]; 4] = [&["a0", "a1", "a2"], &[], &["c0"], &["d0", "d1"]];
        let order: Vec<&str> = round_robin(&lists).copied().collect();
        assert_eq!(order, ["a0", "c0", "d0", "a1", "d1", "a2"]);
    }
}
