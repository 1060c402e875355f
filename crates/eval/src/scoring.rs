//! Scoring one item with a model, in one of three modes:
//! - `letter`: one forward pass; the prediction is the choice whose label token (" A", " B", ..)
//!   has the highest next-token logit after the package's zero-shot query;
//! - `loglik`: the summed log-probability of each choice's text after `Question: ..\nAnswer:`,
//!   raw and per character (length-normalised);
//! - `generate`: greedy generation; multiple choice asks for a single letter and reads it with a
//!   strict regex, math asks for `\boxed{}` (GSM8K also accepts `#### N` and the last number).

use serde::{Deserialize, Serialize};

use crate::data::{AnswerForm, Item, ItemKind, letter};
use crate::grading::{answer_complete, extract_gsm8k, extract_letter, extract_math, math_equal};
use crate::{EvalError, prompts};

/// What the evaluation needs from a model. Its errors reach the caller inside
/// [`EvalError::Backend`].
///
/// A model may stand for several variants answering the same request together (for the
/// executor: several chains of layers over one input, run as one batch). Each request method
/// returns one answer per variant, in the variants' order.
pub trait LanguageModel {
    type Error: std::error::Error + Send + Sync + 'static;
    /// How many variants answer each request.
    fn variants(&self) -> usize {
        1
    }
    /// Prompt ids for `text`, through the chat template when `chat` is set.
    fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>, Self::Error>;
    /// Ids of a continuation, without any special tokens added.
    fn encode_continuation(&self, text: &str) -> Result<Vec<u32>, Self::Error>;
    fn decode(&self, ids: &[u32]) -> Result<String, Self::Error>;
    /// Token ids that end a generation (end of text / end of turn).
    fn stop_ids(&self) -> Vec<u32>;
    /// Per variant: next-token logits (whole vocabulary) after `prompt`.
    fn next_token_logits(&mut self, prompt: &[u32]) -> Result<Vec<Vec<f32>>, Self::Error>;
    /// Per variant, per continuation `c`: `log p(c[i] | prompt, c[..i])` for each i.
    fn choice_logprobs(
        &mut self, prompt: &[u32], continuations: &[Vec<u32>],
    ) -> Result<Vec<Vec<Vec<f32>>>, Self::Error>;
    /// Per variant: greedy generation of at most `max_new` tokens, ending early as `stop` says
    /// (each variant at its own stop). Returns the new ids (including a final stop id, if one
    /// ended it).
    fn generate(&mut self, prompt: &[u32], max_new: usize, stop: &StopRule) -> Result<Vec<Vec<u32>>, Self::Error>;
}

/// When a greedy generation ends before its token limit.
#[derive(Debug, Clone)]
pub struct StopRule {
    /// Any of these ids ends it (and is kept as the last id).
    pub ids: Vec<u32>,
    /// Called with the decoded new text (special tokens left out) after each token.
    pub on_text: fn(&str) -> bool,
}

impl StopRule {
    /// Whether generation should end after `new_ids`, decoding with `decode` only if needed.
    pub fn should_stop(&self, new_ids: &[u32], decode: impl Fn(&[u32]) -> String) -> bool {
        new_ids.last().is_some_and(|t| self.ids.contains(t)) || (self.on_text)(&decode(new_ids))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScoringMode {
    #[default]
    Letter,
    Loglik,
    Generate,
}

impl ScoringMode {
    pub const ALL: [ScoringMode; 3] = [ScoringMode::Letter, ScoringMode::Loglik, ScoringMode::Generate];

    pub fn name(self) -> &'static str {
        match self {
            ScoringMode::Letter => "letter",
            ScoringMode::Loglik => "loglik",
            ScoringMode::Generate => "generate",
        }
    }
}

cola_names::by_name!(ScoringMode, "scoring mode");

/// Which prompt a math problem gets in `generate` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MathPrompt {
    /// The authors' zero-shot instruction: the answer in `\boxed{}`, no explanation.
    #[default]
    ZeroShot,
    /// The data package's few-shot chain of thought (MATH: Minerva's 4 worked problems; GSM8K:
    /// 8 worked questions ending "So the answer is N.").
    FewShot,
}

impl MathPrompt {
    pub const ALL: [MathPrompt; 2] = [MathPrompt::ZeroShot, MathPrompt::FewShot];

    pub fn name(self) -> &'static str {
        match self {
            MathPrompt::ZeroShot => "zero-shot",
            MathPrompt::FewShot => "few-shot",
        }
    }

    /// The generation length unless told otherwise: an answer alone, or a worked solution.
    pub fn default_max_new_tokens(self) -> usize {
        match self {
            MathPrompt::ZeroShot => 50,
            MathPrompt::FewShot => 256,
        }
    }

    fn is_default(&self) -> bool {
        *self == MathPrompt::default()
    }
}

cola_names::by_name!(MathPrompt, "prompt style");

/// How to score items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoringOptions {
    pub mode: ScoringMode,
    /// Wrap generation prompts in the model's chat template.
    pub chat: bool,
    /// Generation length; default 10 for multiple choice, for math the prompt's
    /// ([`MathPrompt::default_max_new_tokens`]).
    pub max_new_tokens: Option<usize>,
    /// Math prompt; left out of configs when zero-shot, so runs made before it resume unchanged.
    #[serde(default, skip_serializing_if = "MathPrompt::is_default")]
    pub math_prompt: MathPrompt,
}

impl ScoringOptions {
    pub fn new(mode: ScoringMode) -> Self {
        ScoringOptions { mode, chat: false, max_new_tokens: None, math_prompt: MathPrompt::ZeroShot }
    }
}

/// The outcome for one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub doc_id: String,
    pub gold: String,
    /// The extracted answer (a letter, or math text); None when nothing could be extracted.
    pub prediction: Option<String>,
    pub correct: bool,
    /// `loglik` mode: correctness of the length-normalised choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct_norm: Option<bool>,
    /// `generate` mode: the generated text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
    /// How far the predicted choice's score is ahead of the runner-up's, in the score that made
    /// the prediction (`letter`: label logits; `loglik`: summed log-probabilities); None in
    /// `generate` mode. Comparable across chains on the same item (the confidence strategy of
    /// `transfer` reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

impl ItemResult {
    /// The result before (or without) an answer: nothing predicted, not correct.
    pub fn unanswered(item: &Item) -> Self {
        ItemResult {
            doc_id: item.doc_id.clone(),
            gold: item.gold_text(),
            prediction: None,
            correct: false,
            correct_norm: None,
            generated: None,
            margin: None,
        }
    }
}

fn model_err(e: impl std::error::Error + Send + Sync + 'static) -> EvalError {
    EvalError::Backend(Box::new(e))
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `scores[pick]` minus the best other score (0 with a single score).
fn margin(scores: &[f32], pick: usize) -> f64 {
    let runner_up =
        scores.iter().enumerate().filter(|&(i, _)| i != pick).map(|(_, &s)| s).fold(f32::NEG_INFINITY, f32::max);
    if runner_up.is_finite() { f64::from(scores[pick] - runner_up) } else { 0.0 }
}

/// Whether a partial single-letter answer could still match the strict regex; once it cannot,
/// generating more tokens cannot change the verdict, so generation stops there.
fn letter_answer_viable(text: &str) -> bool {
    let t = text.trim_start();
    if "Answer:".starts_with(t) {
        return true;
    }
    let rest = t.strip_prefix("Answer:").map_or(t, str::trim_start);
    let core = rest.trim_end();
    let mut chars = core.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (None, ..) => true,
        (Some(c), None, _) => c.is_ascii_alphabetic(),
        (Some(c), Some('.'), None) => c.is_ascii_alphabetic(),
        _ => false,
    }
}

/// Scores one item with a model of one variant.
pub fn score_item<M: LanguageModel>(
    model: &mut M, item: &Item, opts: &ScoringOptions,
) -> Result<ItemResult, EvalError> {
    let mut results = score_item_variants(model, item, opts)?;
    if results.len() != 1 {
        return Err(EvalError::Model(format!(
            "score_item needs a model of one variant, this one has {}",
            results.len()
        )));
    }
    Ok(results.remove(0))
}

/// Scores one item with every variant of `model` (one request, answered by all): one result
/// per variant, in order.
pub fn score_item_variants<M: LanguageModel>(
    model: &mut M, item: &Item, opts: &ScoringOptions,
) -> Result<Vec<ItemResult>, EvalError> {
    let variants = model.variants();
    let check = |n: usize| {
        if n == variants {
            Ok(())
        } else {
            Err(EvalError::Model(format!("the model gave {n} answers for {variants} variants")))
        }
    };
    let mut results = vec![ItemResult::unanswered(item); variants];
    match (&item.kind, opts.mode) {
        (ItemKind::MultipleChoice { query, choices, gold, .. }, ScoringMode::Letter) => {
            let prompt = model.encode(query, false).map_err(model_err)?;
            let mut label_ids = Vec::with_capacity(choices.len());
            for i in 0..choices.len() {
                let label = format!(" {}", letter(i));
                let ids = model.encode_continuation(&label).map_err(model_err)?;
                let [id] = ids.as_slice() else {
                    return Err(EvalError::Model(format!(
                        "label {label:?} is {} tokens, letter scoring needs one",
                        ids.len()
                    )));
                };
                label_ids.push(*id as usize);
            }
            let all_logits = model.next_token_logits(&prompt).map_err(model_err)?;
            check(all_logits.len())?;
            for (result, logits) in results.iter_mut().zip(&all_logits) {
                let scores = label_ids
                    .iter()
                    .map(|&id| {
                        logits
                            .get(id)
                            .copied()
                            .ok_or_else(|| EvalError::Model(format!("token id {id} outside the logits")))
                    })
                    .collect::<Result<Vec<f32>, _>>()?;
                let pick = argmax(&scores);
                result.prediction = Some(letter(pick).to_string());
                result.correct = pick == *gold;
                result.margin = Some(margin(&scores, pick));
            }
        }
        (ItemKind::MultipleChoice { question, choices, gold, .. }, ScoringMode::Loglik) => {
            let prompt = model.encode(&prompts::loglik_context(question), false).map_err(model_err)?;
            let texts: Vec<String> = choices.iter().map(|c| prompts::loglik_continuation(c)).collect();
            let ids =
                texts.iter().map(|t| model.encode_continuation(t)).collect::<Result<Vec<_>, _>>().map_err(model_err)?;
            if let Some(i) = ids.iter().position(Vec::is_empty) {
                return Err(EvalError::Model(format!(
                    "choice {:?} of item {} encodes to no tokens",
                    texts[i], item.doc_id
                )));
            }
            let all_logprobs = model.choice_logprobs(&prompt, &ids).map_err(model_err)?;
            check(all_logprobs.len())?;
            for (result, logprobs) in results.iter_mut().zip(&all_logprobs) {
                let raw: Vec<f32> = logprobs.iter().map(|lp| lp.iter().sum()).collect();
                let norm: Vec<f32> =
                    raw.iter().zip(&texts).map(|(lp, t)| lp / t.chars().count().max(1) as f32).collect();
                let (pick, pick_norm) = (argmax(&raw), argmax(&norm));
                result.prediction = Some(letter(pick).to_string());
                result.correct = pick == *gold;
                result.correct_norm = Some(pick_norm == *gold);
                result.margin = Some(margin(&raw, pick));
            }
        }
        (ItemKind::MultipleChoice { question, choices, gold, .. }, ScoringMode::Generate) => {
            let prompt =
                model.encode(&prompts::choice_generation_prompt(question, choices), opts.chat).map_err(model_err)?;
            let texts = generate_texts(model, &prompt, opts.max_new_tokens.unwrap_or(10), letter_answer_dead)?;
            check(texts.len())?;
            for (result, text) in results.iter_mut().zip(texts) {
                let pick = extract_letter(&text, choices.len());
                result.prediction = pick.map(|p| letter(p).to_string());
                result.correct = pick == Some(*gold);
                result.generated = Some(text);
            }
        }
        (ItemKind::Math { problem, answer, form, few_shot, .. }, ScoringMode::Generate) => {
            let (text, done): (String, fn(&str) -> bool) = match opts.math_prompt {
                MathPrompt::ZeroShot => (prompts::math_generation_prompt(problem), zero_shot_answer_done),
                MathPrompt::FewShot => match few_shot {
                    Some(context) => (context.clone(), few_shot_answer_done),
                    None => {
                        return Err(EvalError::Invalid(format!(
                            "item {} of {} has no few-shot prompt (the data package's MATH and GSM8K problems have one, your own files do not): use the zero-shot prompt",
                            item.doc_id, item.task
                        )));
                    }
                },
            };
            let prompt = model.encode(&text, opts.chat).map_err(model_err)?;
            let max_new = opts.max_new_tokens.unwrap_or(opts.math_prompt.default_max_new_tokens());
            let texts = generate_texts(model, &prompt, max_new, done)?;
            check(texts.len())?;
            for (result, text) in results.iter_mut().zip(texts) {
                let pred = match form {
                    AnswerForm::FinalNumber => extract_gsm8k(&text),
                    AnswerForm::Boxed => extract_math(&text),
                };
                result.correct = pred.as_deref().is_some_and(|p| math_equal(p, answer));
                result.prediction = pred;
                result.generated = Some(text);
            }
        }
        (ItemKind::Math { .. }, mode) => {
            return Err(EvalError::Invalid(format!(
                "item {} of {} is a math problem: `{mode}` scoring applies to multiple choice only (use --scoring generate)",
                item.doc_id, item.task
            )));
        }
    }
    Ok(results)
}

/// Greedy generation by every variant until a stop id, `on_text` on the decoded text, or
/// `max_new` tokens. The returned texts leave the stop ids out.
fn generate_texts<M: LanguageModel>(
    model: &mut M, prompt: &[u32], max_new: usize, on_text: fn(&str) -> bool,
) -> Result<Vec<String>, EvalError> {
    let stop = StopRule { ids: model.stop_ids(), on_text };
    let generated = model.generate(prompt, max_new, &stop).map_err(model_err)?;
    generated
        .into_iter()
        .map(|ids| {
            let kept: Vec<u32> = ids.into_iter().filter(|i| !stop.ids.contains(i)).collect();
            Ok(model.decode(&kept).map_err(model_err)?.trim().to_string())
        })
        .collect()
}

fn letter_answer_dead(text: &str) -> bool {
    !letter_answer_viable(text)
}

/// Zero-shot math ends once the answer is complete ([`answer_complete`]) or the model starts
/// another question.
fn zero_shot_answer_done(text: &str) -> bool {
    answer_complete(text) || text.contains("\nQuestion:")
}

/// Few-shot math also ends where the package's stop sequences end it: a blank line, or the next
/// `Problem:` / `Question:`.
fn few_shot_answer_done(text: &str) -> bool {
    answer_complete(text) || ["\n\n", "Problem:", "Question:"].iter().any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viability_matches_the_strict_regex_on_prefixes() {
        for full in ["B", "b.", "Answer: C", "Answer:D.", "  A  "] {
            for end in 0..=full.len() {
                assert!(letter_answer_viable(&full[..end]), "{full:?}[..{end}]");
            }
            assert!(extract_letter(full, 4).is_some());
        }
        for dead in ["B because", "The", "AB", "Answer: BB", "1"] {
            assert!(!letter_answer_viable(dead), "{dead:?}");
            assert!(extract_letter(dead, 4).is_none());
        }
    }
}
