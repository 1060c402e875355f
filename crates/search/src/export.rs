//! `cargo xtask export-chains`: the chains a search found, per item and per task, as one JSON
//! document other code can run (`scripts/python/cola_chain.py` runs a Hugging Face model along
//! them). The format is documented in `docs/chains.md`; `format` names its version.
//!
//! Invariants: every chain comes from the records as they are (nothing is re-scored), and the
//! per-task ranking counts a chain only on the items whose search evaluated it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cola_executor::Chain;
use serde::{Deserialize, Serialize};

use crate::run_dir::{HashedFile, RunError};
use crate::sample::SampleRecord;

/// The version of the JSON layout below.
pub const FORMAT: &str = "cola-chains/1";

/// Chains listed per task (the most often right first).
pub const TASK_CHAINS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainExport {
    pub format: String,
    /// The model the chains index into.
    pub model: ExportModel,
    /// How answers were scored (`loglik`, `letter`, `generate`) and whether through the chat
    /// template: a chain found with one scoring need not help another.
    pub scoring: String,
    pub chat: bool,
    /// The run directories read.
    pub runs: Vec<String>,
    pub items: Vec<ItemChains>,
    pub tasks: Vec<TaskChains>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportModel {
    /// As the run recorded it (`--model`).
    pub path: String,
    pub num_layers: usize,
    /// The weight files and their SHA-256, to check that a model is the one searched.
    pub weights: Vec<HashedFile>,
}

/// One chain in both forms: `chain` is the text form (`0-9,9,10-29`), `layers` the indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedChain {
    pub chain: Chain,
    pub layers: Vec<usize>,
}

impl From<&Chain> for ExportedChain {
    fn from(chain: &Chain) -> Self {
        ExportedChain { chain: chain.clone(), layers: chain.layers().to_vec() }
    }
}

/// What the searchers found for one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemChains {
    pub task: String,
    pub doc_id: String,
    pub gold: String,
    /// Whether the original chain (all layers in order) answered right.
    pub static_correct: bool,
    /// MCTS's shortest correct chain, or null when it found none.
    pub mcts: Option<FoundChain>,
    /// The random baseline's, when the run had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random: Option<FoundChain>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundChain {
    #[serde(flatten)]
    pub chain: ExportedChain,
    /// The answer it gave (MCTS records it; the random baseline's is not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
}

/// The chains of one task that were right on the most items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskChains {
    pub task: String,
    pub items: usize,
    /// At most [`TASK_CHAINS`], by items right (descending), then length, then text.
    pub chains: Vec<TaskChain>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskChain {
    #[serde(flatten)]
    pub chain: ExportedChain,
    /// Items on which MCTS evaluated this chain and it answered right.
    pub right: usize,
    /// Items on which MCTS evaluated it at all (each search evaluates different chains).
    pub evaluated: usize,
}

/// The export of finished run directories (shards of one run, or runs of one command on other
/// tasks), merged and checked as `report` merges them ([`crate::report::merge_alike`]).
pub fn export_chains(runs: &[PathBuf]) -> Result<ChainExport, RunError> {
    let merged = crate::report::merge_alike(runs, Path::new("."), "export")?;
    let first = &merged.configs[0];
    Ok(ChainExport {
        format: FORMAT.into(),
        model: ExportModel {
            path: first.provenance.model_dir.clone(),
            num_layers: first.provenance.num_layers,
            weights: first.provenance.weights.clone(),
        },
        scoring: first.settings.scoring.mode.to_string(),
        chat: first.settings.scoring.chat,
        runs: runs.iter().map(|r| r.display().to_string()).collect(),
        items: merged.records.iter().map(item_chains).collect(),
        tasks: task_chains(&merged.records),
    })
}

fn item_chains(r: &SampleRecord) -> ItemChains {
    ItemChains {
        task: r.task.clone(),
        doc_id: r.doc_id.clone(),
        gold: r.gold.clone(),
        static_correct: r.static_correct,
        mcts: r.best_chain.as_ref().map(|c| FoundChain { chain: c.into(), prediction: r.best_prediction.clone() }),
        random: r.random_best_chain.as_ref().map(|c| FoundChain { chain: c.into(), prediction: None }),
    }
}

/// Per task (in record order), the chains most often right over the items that evaluated them.
fn task_chains(records: &[SampleRecord]) -> Vec<TaskChains> {
    let mut order: Vec<&str> = Vec::new();
    let mut counts: HashMap<&str, BTreeMap<&Chain, (usize, usize)>> = HashMap::new();
    let mut items: HashMap<&str, usize> = HashMap::new();
    for r in records {
        if !order.contains(&r.task.as_str()) {
            order.push(&r.task);
        }
        *items.entry(&r.task).or_default() += 1;
        let task = counts.entry(&r.task).or_default();
        for c in &r.chains {
            let (right, evaluated) = task.entry(&c.chain).or_default();
            *right += (c.reward >= 1.0) as usize;
            *evaluated += 1;
        }
    }
    order
        .into_iter()
        .map(|task| {
            let mut chains: Vec<(&Chain, (usize, usize))> =
                counts.remove(task).unwrap_or_default().into_iter().collect();
            chains.retain(|(_, (right, _))| *right > 0);
            // BTreeMap order (by layer indices) breaks the remaining ties: the export is deterministic.
            chains.sort_by_key(|(c, (right, _))| (std::cmp::Reverse(*right), c.len()));
            TaskChains {
                task: task.to_string(),
                items: items[task],
                chains: chains
                    .into_iter()
                    .take(TASK_CHAINS)
                    .map(|(c, (right, evaluated))| TaskChain { chain: c.into(), right, evaluated })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ChainRecord;

    fn chain(text: &str) -> Chain {
        Chain::parse(text).unwrap()
    }

    fn record(task: &str, doc: &str, evaluated: &[(&str, f64)]) -> SampleRecord {
        let chains: Vec<ChainRecord> = evaluated
            .iter()
            .enumerate()
            .map(|(i, (c, reward))| ChainRecord {
                chain: chain(c),
                length: chain(c).len(),
                reward: *reward,
                prediction: Some(format!("p{i}")),
                visits: 1,
                simulation: i,
            })
            .collect();
        let best = chains.iter().filter(|c| c.reward >= 1.0).min_by_key(|c| c.length);
        SampleRecord {
            task: task.into(),
            doc_id: doc.into(),
            gold: "A".into(),
            static_prediction: chains[0].prediction.clone(),
            static_correct: chains[0].reward >= 1.0,
            best_chain: best.map(|c| c.chain.clone()),
            best_len: best.map(|c| c.length),
            best_correct: best.is_some(),
            best_prediction: best.and_then(|c| c.prediction.clone()),
            evaluations: chains.len(),
            simulations: chains.len() - 1,
            stopped_early: false,
            random_best_correct: None,
            random_best_chain: None,
            random_best_len: None,
            random_evaluations: None,
            chains,
            random_chains: None,
            other_searchers: Vec::new(),
        }
    }

    /// Per task, chains rank by items right among those that evaluated them, then by length;
    /// a chain never right is left out; tasks keep their record order.
    #[test]
    fn task_chains_count_right_answers_over_the_items_that_evaluated_them() {
        let records = vec![
            record("b", "0", &[("0-3", 0.0), ("0-2", 1.0), ("0,0-3", 1.0)]),
            record("b", "1", &[("0-3", 1.0), ("0-2", 1.0), ("1-3", 0.0)]),
            record("b", "2", &[("0-3", 0.0), ("0,0-3", 1.0), ("1-3", 0.0)]),
            record("a", "0", &[("0-3", 1.0)]),
        ];
        let tasks = task_chains(&records);
        assert_eq!(tasks.iter().map(|t| t.task.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let b: Vec<(String, usize, usize)> =
            tasks[0].chains.iter().map(|c| (c.chain.chain.to_string(), c.right, c.evaluated)).collect();
        // 0-2 and 0,0-3 are both right twice: the shorter first; 0-3 once in three; 1-3 never.
        assert_eq!(b, [("0-2".into(), 2, 2), ("0,0-3".into(), 2, 2), ("0-3".into(), 1, 3)]);
        assert_eq!(tasks[0].items, 3);
        assert_eq!(tasks[1].chains.len(), 1);
    }

    /// Items carry MCTS's shortest correct chain with its answer, in both forms; the JSON reads
    /// back to the same export.
    #[test]
    fn items_carry_the_shortest_correct_chain_and_round_trip() {
        let r = record("t", "7", &[("0-3", 0.0), ("0,0-3", 1.0), ("0-2", 1.0)]);
        let item = item_chains(&r);
        let found = item.mcts.as_ref().unwrap();
        assert_eq!(found.chain.layers, [0, 1, 2]);
        assert_eq!(found.prediction.as_deref(), Some("p2"));
        assert!(!item.static_correct);
        let export = ChainExport {
            format: FORMAT.into(),
            model: ExportModel { path: "m".into(), num_layers: 4, weights: vec![] },
            scoring: "loglik".into(),
            chat: false,
            runs: vec!["r".into()],
            items: vec![item],
            tasks: task_chains(&[r]),
        };
        let json = serde_json::to_value(&export).unwrap();
        assert_eq!(json["items"][0]["mcts"]["chain"], "0-2");
        assert_eq!(json["items"][0]["mcts"]["layers"], serde_json::json!([0, 1, 2]));
        assert_eq!(serde_json::from_value::<ChainExport>(json).unwrap(), export);
    }
}
