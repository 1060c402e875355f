//! Chain search for one benchmark item: the static prediction, MCTS over chains (reward: the
//! chain's answer is correct, the paper's oracle setting), and the random baseline at the same
//! number of distinct evaluations.

use cola_eval::{EvalError, Item, ItemResult, MathPrompt, ScoringMode, ScoringOptions, score_item_variants};
use cola_executor::Chain;
use cola_executor::backend::BackendKind;
use cola_mcts::chains::{ActionPreset, ChainProblem, ChainSpace};
use cola_mcts::{Evaluation, MctsConfig, RandomConfig, SearchResult, SearchRng, random_search, sample_rng, search};
use cola_model::LayerOps;
use serde::{Deserialize, Serialize};

use crate::model::ChainModel;

/// Which baseline runs beside MCTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    Random,
    None,
}

impl Baseline {
    pub const ALL: [Baseline; 2] = [Baseline::Random, Baseline::None];

    pub fn name(self) -> &'static str {
        match self {
            Baseline::Random => "random",
            Baseline::None => "none",
        }
    }
}

cola_names::by_name!(Baseline, "baseline");

/// A named bundle of search settings (`search --preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The paper: generate scoring with the chat template, 200 simulations, paper actions.
    Paper,
    /// The authors' released code: their action rules, 100 simulations, generate scoring.
    Polar,
    /// The quick default (no `--preset`, or `--preset default`; run directories name it so): 60
    /// simulations, paper actions, log-likelihood scoring for multiple choice.
    Quick,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Paper, Preset::Polar, Preset::Quick];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Polar => "polar",
            Preset::Quick => "default",
        }
    }
}

cola_names::by_name!(Preset, "preset");

/// The tree search's own settings, shared by the per-sample search ([`SearchSettings`]) and
/// the task-level search of `transfer`: action rules, simulations, the UCB constants and the
/// chain length bounds. Flattened into both configs (config.json keeps its keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeSettings {
    pub actions: ActionPreset,
    pub simulations: usize,
    pub lambda: f64,
    pub c: f64,
    pub epsilon: f64,
    pub min_len: usize,
    pub max_len: usize,
}

impl TreeSettings {
    /// The paper's: paper actions, 200 simulations, the engine's UCB constants (λ = 5, c = √2,
    /// ε = 0.1) and [`Self::paper_bounds`] for a model of `num_layers` layers.
    pub fn paper(num_layers: usize) -> Self {
        let (min_len, max_len) = Self::paper_bounds(num_layers);
        let mcts = MctsConfig::new(num_layers, min_len, max_len);
        TreeSettings {
            actions: ActionPreset::Paper,
            simulations: mcts.simulations,
            lambda: mcts.lambda,
            c: mcts.c,
            epsilon: mcts.epsilon,
            min_len,
            max_len,
        }
    }

    /// Length bounds scaled from the authors' presets (16..32 for 28 layers, 24..44 for 36):
    /// about 0.57 N to 1.15 N.
    pub fn paper_bounds(num_layers: usize) -> (usize, usize) {
        let n = num_layers as f64;
        (((0.57 * n).round() as usize).max(1), ((1.15 * n).round() as usize).max(num_layers))
    }

    /// The engine's config for a model of `num_layers` layers.
    pub fn mcts_config(&self, num_layers: usize, early_stop_margin: Option<usize>, batch: usize) -> MctsConfig {
        MctsConfig {
            simulations: self.simulations,
            lambda: self.lambda,
            c: self.c,
            epsilon: self.epsilon,
            early_stop_margin,
            batch,
            ..MctsConfig::new(num_layers, self.min_len, self.max_len)
        }
    }
}

/// Everything that decides what a search does (all of it goes into the run's config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    #[serde(flatten)]
    pub tree: TreeSettings,
    pub early_stop_margin: Option<usize>,
    pub baseline: Baseline,
    /// The random baseline draws 1..=this many edits per chain.
    pub random_max_edits: usize,
    pub scoring: ScoringOptions,
    /// Chains evaluated together per batch (MCTS walks per round with virtual loss, random
    /// chains per batch). 1 is the one-at-a-time search; left out of config.json when 1, so runs
    /// made before batching resume unchanged.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub batch: usize,
}

fn one() -> usize {
    1
}

fn is_one(k: &usize) -> bool {
    *k == 1
}

impl SearchSettings {
    /// The paper's setting for a model of `num_layers` layers: [`TreeSettings::paper`], no early
    /// stop, random baseline.
    pub fn paper(num_layers: usize, scoring: ScoringOptions) -> Self {
        SearchSettings {
            tree: TreeSettings::paper(num_layers),
            early_stop_margin: None,
            baseline: Baseline::Random,
            random_max_edits: 8,
            scoring,
            batch: 1,
        }
    }

    /// The settings of `preset` for a model of `num_layers` layers; `multiple_choice` (every item
    /// is) and `has_chat` (the model has a chat template) decide the scoring where the preset
    /// leaves it open.
    pub fn preset(preset: Preset, num_layers: usize, multiple_choice: bool, has_chat: bool) -> Self {
        let generate = ScoringOptions { chat: has_chat, ..ScoringOptions::new(ScoringMode::Generate) };
        let mut settings = match preset {
            Preset::Quick => {
                let mode = if multiple_choice { ScoringMode::Loglik } else { ScoringMode::Generate };
                Self::paper(num_layers, ScoringOptions::new(mode))
            }
            _ => Self::paper(num_layers, generate),
        };
        match preset {
            Preset::Paper => {}
            Preset::Polar => {
                settings.tree.actions = ActionPreset::Polar;
                settings.tree.simulations = 100;
            }
            Preset::Quick => settings.tree.simulations = 60,
        }
        settings
    }

    /// The early stop that comes with an action rule: drllm's includes one (once a correct
    /// chain 2 layers shorter than the original is found: the authors' `best_length + 2 <= N`).
    pub fn early_stop_of(actions: ActionPreset) -> Option<usize> {
        (actions == ActionPreset::Drllm).then_some(2)
    }

    pub fn mcts_config(&self, num_layers: usize) -> MctsConfig {
        self.tree.mcts_config(num_layers, self.early_stop_margin, self.batch)
    }
}

/// One evaluated chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRecord {
    pub chain: Chain,
    pub length: usize,
    pub reward: f64,
    pub prediction: Option<String>,
    pub visits: usize,
    /// Simulation that first evaluated it (0: the original chain).
    pub simulation: usize,
}

/// What a finished sample records (one line of samples.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub task: String,
    pub doc_id: String,
    pub gold: String,
    pub static_prediction: Option<String>,
    pub static_correct: bool,
    /// Shortest correct chain found, or null.
    pub best_chain: Option<Chain>,
    pub best_len: Option<usize>,
    pub best_correct: bool,
    pub best_prediction: Option<String>,
    /// Distinct chains evaluated by MCTS (the original chain included).
    pub evaluations: usize,
    pub simulations: usize,
    pub stopped_early: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_best_correct: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_best_chain: Option<Chain>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_best_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_evaluations: Option<usize>,
    /// Every chain MCTS evaluated, in order.
    pub chains: Vec<ChainRecord>,
    /// Every chain the random baseline evaluated, in order (its `simulation` is the draw that
    /// found it); absent without the baseline and in runs made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_chains: Option<Vec<ChainRecord>>,
    /// What the run's further searchers ([`ChainSearcher`]) found, in the run's order; absent
    /// when it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_searchers: Vec<SearcherRecord>,
}

/// What one searcher beside MCTS and the random baseline found for a sample, at MCTS's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearcherRecord {
    /// [`ChainSearcher::name`].
    pub searcher: String,
    pub best_correct: bool,
    /// Its shortest correct chain, or null.
    pub best_chain: Option<Chain>,
    pub best_len: Option<usize>,
    /// Distinct chains it evaluated (the original included).
    pub evaluations: usize,
    /// Every chain it evaluated, in order (`simulation`: its index in that order).
    pub chains: Vec<ChainRecord>,
}

/// The chains a sample's search evaluates next, scored: `(chains) -> one evaluation each`.
pub type EvaluateChains<'a> = dyn FnMut(&[Vec<usize>]) -> Result<Vec<Evaluation<ItemResult>>, EvalError> + 'a;

/// A way of choosing chains for one sample besides MCTS (a beam search, a learned predictor, a
/// task-level plan, ...). It runs after MCTS with MCTS's budget, and its record, report rows,
/// budget curves and layer-use figures come from [`SearcherRecord`] without code of its own.
pub trait ChainSearcher: Send + Sync {
    /// How records and reports name it (unique in a run; not `mcts` or `random`).
    fn name(&self) -> &str;

    /// Evaluates chains of a `num_layers`-layer model through `evaluate`, at most `budget`
    /// distinct ones, the original chain first; returns every chain evaluated with its
    /// evaluation, in order (more chains, or another first, end the run with an error).
    /// `rng` is the sample's own stream for this searcher.
    #[allow(clippy::type_complexity)]
    fn search(
        &self, evaluate: &mut EvaluateChains<'_>, num_layers: usize, budget: usize, rng: &mut SearchRng,
    ) -> Result<Vec<(Vec<usize>, Evaluation<ItemResult>)>, EvalError>;
}

impl SearcherRecord {
    /// The record of `searcher`'s `evaluated` chains; an error if they break
    /// [`ChainSearcher::search`]'s contract (the original chain first, at most `budget` distinct
    /// chains), since its figures would then not compare with MCTS's.
    fn new(
        searcher: &str, evaluated: Vec<(Vec<usize>, Evaluation<ItemResult>)>, num_layers: usize, budget: usize,
    ) -> Result<Self, EvalError> {
        let original = Chain::identity(num_layers);
        if evaluated.first().map(|(c, _)| c.as_slice()) != Some(original.layers()) {
            return Err(EvalError::Invalid(format!(
                "searcher `{searcher}` must evaluate the original chain {original} first"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let chains: Vec<ChainRecord> = evaluated
            .into_iter()
            .filter(|(c, _)| seen.insert(c.clone()))
            .enumerate()
            .map(|(i, (c, e))| ChainRecord {
                length: c.len(),
                chain: Chain::new(c),
                reward: e.reward,
                prediction: e.payload.prediction,
                visits: 1,
                simulation: i,
            })
            .collect();
        if chains.len() > budget {
            return Err(EvalError::Invalid(format!(
                "searcher `{searcher}` evaluated {} distinct chains, over its budget of {budget}",
                chains.len()
            )));
        }
        let best = shortest_correct(&chains);
        Ok(SearcherRecord {
            searcher: searcher.to_string(),
            best_correct: best.is_some(),
            best_chain: best.map(|c| c.chain.clone()),
            best_len: best.map(|c| c.length),
            evaluations: chains.len(),
            chains,
        })
    }
}

/// Every evaluated chain of a search, in the order of evaluation.
fn chain_records(result: &SearchResult<Vec<usize>, ItemResult>) -> Vec<ChainRecord> {
    result
        .evaluated
        .iter()
        .map(|e| ChainRecord {
            chain: Chain::new(e.state.clone()),
            length: e.length,
            reward: e.reward,
            prediction: e.payload.prediction.clone(),
            visits: e.visits,
            simulation: e.first_simulation,
        })
        .collect()
}

/// The shortest rewarded chain of a searcher's evaluated chains (the first evaluated on ties).
fn shortest_correct(chains: &[ChainRecord]) -> Option<&ChainRecord> {
    chains.iter().filter(|c| c.reward >= 1.0).min_by_key(|c| c.length)
}

/// The batch size of a search with `preset` unless told otherwise: 1 for `paper`, whose name
/// promises the paper's sequential search (each walk sees the rewards of all before it), else
/// [`default_batch`].
pub fn preset_batch(preset: Preset, backend: BackendKind, mode: ScoringMode) -> usize {
    if preset == Preset::Paper { 1 } else { default_batch(backend, mode) }
}

/// What a user may set over a preset (`cargo xtask search` flags); `None` keeps the preset's.
#[derive(Debug, Clone)]
pub struct SettingsOverrides {
    pub scoring: Option<ScoringMode>,
    /// Wrap prompts in the chat template (also when the preset does not).
    pub chat: bool,
    pub max_new_tokens: Option<usize>,
    pub math_prompt: MathPrompt,
    pub actions: Option<ActionPreset>,
    pub simulations: Option<usize>,
    pub lambda: Option<f64>,
    /// Early-stop margin (default: the one of the actions, [`SearchSettings::early_stop_of`]).
    pub early_stop: Option<usize>,
    pub baseline: Baseline,
    /// Chains per batch (default: [`preset_batch`]).
    pub batch: Option<usize>,
}

impl SearchSettings {
    /// The settings of `preset` ([`SearchSettings::preset`]) with `o` laid over them, for a
    /// search on `backend`.
    pub fn with_overrides(
        preset: Preset, num_layers: usize, multiple_choice: bool, has_chat: bool, backend: BackendKind,
        o: &SettingsOverrides,
    ) -> Self {
        let base = Self::preset(preset, num_layers, multiple_choice, has_chat);
        let scoring = ScoringOptions {
            mode: o.scoring.unwrap_or(base.scoring.mode),
            chat: o.chat || base.scoring.chat,
            max_new_tokens: o.max_new_tokens,
            math_prompt: o.math_prompt,
        };
        let actions = o.actions.unwrap_or(base.tree.actions);
        SearchSettings {
            tree: TreeSettings {
                actions,
                simulations: o.simulations.unwrap_or(base.tree.simulations),
                lambda: o.lambda.unwrap_or(base.tree.lambda),
                ..base.tree.clone()
            },
            early_stop_margin: o.early_stop.or(Self::early_stop_of(actions)),
            baseline: o.baseline,
            batch: o.batch.unwrap_or_else(|| preset_batch(preset, backend, scoring.mode)),
            scoring,
            ..base
        }
    }
}

/// The batch size `search` and `bench` use unless told otherwise, chosen by measurement
/// (`cargo xtask bench --batch K`, K = 1 beside it in the same run; README, Performance).
pub fn default_batch(backend: BackendKind, mode: ScoringMode) -> usize {
    match (backend, mode) {
        // 2-core CPU, SmolLM2-135M: K = 16 gave 1.49x (ARC-Easy loglik) and 3.12x (GSM8K
        // generate) the evaluations/s of K = 1; K = 8 1.38x and 2.09x.
        (BackendKind::Cpu, _) => 16,
        // H200 (CUDA, f32): K = 16 gave 1.28x in GSM8K generate but 0.66x in ARC-Easy loglik,
        // where the per-chain attention launches outweigh the shared matmuls.
        (_, ScoringMode::Generate) => 16,
        _ => 1,
    }
}

/// The search reward, the paper's oracle: 1 when the chain's answer is the gold answer.
pub fn oracle_reward(result: &ItemResult) -> f64 {
    if result.correct { 1.0 } else { 0.0 }
}

/// Searches chains for one item: MCTS, the baseline of `settings`, then each of `others` at
/// MCTS's budget. The model's prefix caches are cleared before and after.
pub fn search_item<B: LayerOps>(
    model: &mut ChainModel<'_, B>, item: &Item, settings: &SearchSettings, seed: u64,
    others: &[std::sync::Arc<dyn ChainSearcher>],
) -> Result<SampleRecord, EvalError> {
    let n = model.loaded().executor.num_layers();
    let sample_id = format!("{}/{}", item.task, item.doc_id);
    model.clear_cache();
    let evaluate = |model: &mut ChainModel<'_, B>, chains: &[Vec<usize>]| {
        let _span = tracing::debug_span!("evaluate", chains = chains.len()).entered();
        model.set_chains(chains.iter().map(|c| Chain::new(c.clone())).collect());
        let results = score_item_variants(model, item, &settings.scoring)?;
        Ok::<_, EvalError>(results.into_iter().map(|r| Evaluation { reward: oracle_reward(&r), payload: r }).collect())
    };
    // In a closure so the caches are cleared below whether the search ends or fails.
    let searched = (|| {
        let mcts = {
            let mut problem = ChainProblem {
                space: ChainSpace::new(n, settings.tree.actions),
                evaluate: |c: &[Vec<usize>]| evaluate(model, c),
            };
            search(&mut problem, &settings.mcts_config(n), &mut sample_rng(seed, &sample_id))?
        };
        let random = match settings.baseline {
            Baseline::None => None,
            Baseline::Random => {
                let cfg = RandomConfig {
                    evaluations: mcts.evaluations(),
                    max_edits: settings.random_max_edits,
                    min_len: settings.tree.min_len,
                    max_len: settings.tree.max_len,
                    batch: settings.batch,
                };
                let mut problem = ChainProblem {
                    space: ChainSpace::new(n, settings.tree.actions),
                    evaluate: |c: &[Vec<usize>]| evaluate(model, c),
                };
                Some(random_search(&mut problem, &cfg, &mut sample_rng(seed, &format!("random/{sample_id}")))?)
            }
        };
        let budget = mcts.evaluations();
        let others = others
            .iter()
            .map(|searcher| {
                let mut rng = sample_rng(seed, &format!("{}/{sample_id}", searcher.name()));
                let evaluated = searcher.search(&mut |c: &[Vec<usize>]| evaluate(model, c), n, budget, &mut rng)?;
                SearcherRecord::new(searcher.name(), evaluated, n, budget)
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        Ok::<_, EvalError>((mcts, random, others))
    })();
    model.clear_cache();
    let (mcts, random, others) = searched?;
    let root = &mcts.evaluated[0];
    let (chains, random_chains) = (chain_records(&mcts), random.as_ref().map(chain_records));
    let best = shortest_correct(&chains).cloned();
    let random_best = random_chains.as_deref().map(|c| shortest_correct(c).cloned());
    Ok(SampleRecord {
        task: item.task.clone(),
        doc_id: item.doc_id.clone(),
        gold: item.gold_text(),
        static_prediction: root.payload.prediction.clone(),
        static_correct: root.reward >= 1.0,
        best_correct: best.is_some(),
        best_len: best.as_ref().map(|b| b.length),
        best_prediction: best.as_ref().and_then(|b| b.prediction.clone()),
        best_chain: best.map(|b| b.chain),
        evaluations: mcts.evaluations(),
        simulations: mcts.simulations,
        stopped_early: mcts.stopped_early,
        random_best_correct: random_best.as_ref().map(Option::is_some),
        random_best_len: random_best.as_ref().and_then(|b| b.as_ref().map(|b| b.length)),
        random_best_chain: random_best.and_then(|b| b.map(|b| b.chain)),
        random_evaluations: random.as_ref().map(|r| r.evaluations()),
        chains,
        random_chains,
        other_searchers: others,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> SettingsOverrides {
        SettingsOverrides {
            scoring: None,
            chat: false,
            max_new_tokens: None,
            math_prompt: MathPrompt::ZeroShot,
            actions: None,
            simulations: None,
            lambda: None,
            early_stop: None,
            baseline: Baseline::Random,
            batch: None,
        }
    }

    /// No override leaves the preset as it is (the paper: generate with chat, 200 simulations,
    /// one walk at a time); each override replaces its value alone; drllm actions bring their
    /// early stop unless one is given.
    #[test]
    fn overrides_lay_over_the_preset() {
        let paper = SearchSettings::with_overrides(Preset::Paper, 30, true, true, BackendKind::Cpu, &none());
        assert_eq!(paper, SearchSettings::preset(Preset::Paper, 30, true, true));
        assert_eq!((paper.tree.simulations, paper.batch, paper.scoring.mode), (200, 1, ScoringMode::Generate));
        assert!(paper.scoring.chat);
        let o = SettingsOverrides {
            scoring: Some(ScoringMode::Loglik),
            simulations: Some(7),
            actions: Some(ActionPreset::Drllm),
            batch: Some(4),
            ..none()
        };
        let s = SearchSettings::with_overrides(Preset::Paper, 30, true, true, BackendKind::Cpu, &o);
        assert_eq!((s.tree.simulations, s.batch, s.scoring.mode), (7, 4, ScoringMode::Loglik));
        assert_eq!((s.tree.actions, s.early_stop_margin), (ActionPreset::Drllm, Some(2)));
        assert_eq!(s.tree.lambda, paper.tree.lambda);
        let quick = SearchSettings::with_overrides(Preset::Quick, 30, true, false, BackendKind::Cpu, &none());
        assert_eq!((quick.tree.simulations, quick.batch, quick.scoring.mode), (60, 16, ScoringMode::Loglik));
        let stop = SettingsOverrides { actions: Some(ActionPreset::Drllm), early_stop: Some(5), ..none() };
        let s = SearchSettings::with_overrides(Preset::Quick, 30, true, false, BackendKind::Cpu, &stop);
        assert_eq!(s.early_stop_margin, Some(5));
    }

    /// Each preset's name (what run directories and reports print) is what `--preset` accepts.
    #[test]
    fn preset_names_parse_back() {
        for p in [Preset::Paper, Preset::Polar, Preset::Quick] {
            assert_eq!(p.name().parse::<Preset>(), Ok(p));
        }
        assert!("quick".parse::<Preset>().unwrap_err().contains("paper, polar, default"));
    }
}
