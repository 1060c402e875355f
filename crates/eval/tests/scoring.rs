//! Every scoring mode against a fake model whose answers are known, so the expected verdicts
//! follow from the setup rather than from running the code.

use cola_eval::data::{AnswerForm, Item, ItemKind};
use cola_eval::{LanguageModel, MathPrompt, ScoringMode, ScoringOptions, StopRule, Summary, score_item};

const LABEL_BASE: u32 = 1000;
const EOS: u32 = 3;

/// A toy model over a toy vocabulary: " A".." Z" are single tokens (1000..), every other
/// character is its own token (its code point, below 1000). It answers what `answer_for` says.
struct FakeModel {
    answer_for: fn(&str) -> String,
    /// Prompts it was asked about, decoded (to check prompt construction).
    seen: Vec<String>,
}

impl FakeModel {
    fn text(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter(|&&i| i != EOS)
            .map(|&i| {
                if i >= LABEL_BASE {
                    format!(" {}", (b'A' + (i - LABEL_BASE) as u8) as char)
                } else {
                    char::from_u32(i).unwrap().to_string()
                }
            })
            .collect()
    }
}

/// The fake model's failure (it never fails on its own).
#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl LanguageModel for FakeModel {
    type Error = Never;
    fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>, Never> {
        let text = if chat { format!("<chat>{text}</chat>") } else { text.to_string() };
        Ok(text.chars().map(|c| c as u32 % 1000).collect())
    }
    fn encode_continuation(&self, text: &str) -> Result<Vec<u32>, Never> {
        let b = text.as_bytes();
        if b.len() == 2 && b[0] == b' ' && b[1].is_ascii_uppercase() {
            return Ok(vec![LABEL_BASE + (b[1] - b'A') as u32]);
        }
        self.encode(text, false)
    }
    fn decode(&self, ids: &[u32]) -> Result<String, Never> {
        Ok(self.text(ids))
    }
    fn stop_ids(&self) -> Vec<u32> {
        vec![EOS]
    }
    fn next_token_logits(&mut self, prompt: &[u32]) -> Result<Vec<Vec<f32>>, Never> {
        let p = self.text(prompt);
        let want = (self.answer_for)(&p);
        self.seen.push(p);
        let mut logits = vec![0.0; 1100];
        logits[(LABEL_BASE + (want.as_bytes()[0] - b'A') as u32) as usize] = 5.0;
        Ok(vec![logits])
    }
    fn choice_logprobs(&mut self, prompt: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>, Never> {
        let p = self.text(prompt);
        let want = (self.answer_for)(&p);
        self.seen.push(p);
        // The right answer is likely per token; a long wrong answer gets a higher raw sum only
        // through being short (used below to separate raw from length-normalised accuracy).
        let score = |c: &Vec<u32>| {
            let good = self.text(c) == format!(" {want}");
            c.iter().map(|_| if good { -0.1 } else { -1.0 }).collect()
        };
        Ok(vec![continuations.iter().map(score).collect()])
    }
    fn generate(&mut self, prompt: &[u32], max_new: usize, stop: &StopRule) -> Result<Vec<Vec<u32>>, Never> {
        let p = self.text(prompt);
        let want = (self.answer_for)(&p);
        self.seen.push(p);
        let mut out = Vec::new();
        for id in want.chars().map(|c| c as u32).chain(std::iter::once(EOS)) {
            if out.len() == max_new {
                break;
            }
            out.push(id);
            if stop.should_stop(&out, |ids| self.text(ids)) {
                break;
            }
        }
        Ok(vec![out])
    }
}

fn mc(id: &str, question: &str, choices: &[&str], gold: usize) -> Item {
    let choices: Vec<String> = choices.iter().map(|s| s.to_string()).collect();
    Item {
        task: "toy".into(),
        doc_id: id.into(),
        kind: ItemKind::MultipleChoice {
            query: cola_eval::prompts::letter_query(question, &choices),
            question: question.into(),
            choices,
            gold,
        },
    }
}

/// A math item; GSM8K's answers are read as its loader sets them (a final number).
fn math(task: &str, id: &str, problem: &str, answer: &str) -> Item {
    Item {
        task: task.into(),
        doc_id: id.into(),
        kind: ItemKind::Math {
            problem: problem.into(),
            answer: answer.into(),
            level: Some(1),
            subject: None,
            form: if task == "gsm8k" { AnswerForm::FinalNumber } else { AnswerForm::Boxed },
            few_shot: None,
        },
    }
}

#[test]
fn letter_mode_picks_the_highest_label_logit() {
    // The fake always "thinks" the answer is B.
    let mut m = FakeModel { answer_for: |_| "B".into(), seen: vec![] };
    let items = [mc("1", "Sky?", &["red", "blue"], 1), mc("2", "Grass?", &["green", "pink", "grey"], 0)];
    let opts = ScoringOptions::new(ScoringMode::Letter);
    let results: Vec<_> = items.iter().map(|i| score_item(&mut m, i, &opts).unwrap()).collect();
    assert!(results[0].correct && !results[1].correct);
    assert_eq!(results[1].prediction.as_deref(), Some("B"));
    assert_eq!(m.seen[0], "Question: Sky?\n A. red\n B. blue\nAnswer:");
    let s = Summary::from_results("toy", &results, 0);
    assert_eq!((s.n, s.correct, s.accuracy), (2, 1, 0.5));
}

#[test]
fn loglik_mode_reports_raw_and_length_normalised_choice() {
    // Right answer "ok" vs a wrong 1-character answer "x": per token -0.1 (3 tokens: " ok")
    // vs -1.0 (2 tokens: " x"), so both raw (-0.3 > -2.0) and normalised pick "ok".
    let mut m = FakeModel { answer_for: |_| "ok".into(), seen: vec![] };
    let opts = ScoringOptions::new(ScoringMode::Loglik);
    let r = score_item(&mut m, &mc("1", "Q", &["x", "ok"], 1), &opts).unwrap();
    assert!(r.correct && r.correct_norm == Some(true));
    assert_eq!(m.seen[0], "Question: Q\nAnswer:");
    // A very long right answer loses on raw sum to a short wrong one but wins per character.
    let mut m = FakeModel { answer_for: |_| "a much longer right answer".into(), seen: vec![] };
    let r = score_item(&mut m, &mc("2", "Q", &["x", "a much longer right answer"], 1), &opts).unwrap();
    assert!(!r.correct, "raw: 27 tokens x -0.1 = -2.7 < -2.0");
    assert_eq!(r.correct_norm, Some(true));
}

#[test]
fn generate_mode_reads_a_strict_single_letter() {
    let opts = ScoringOptions { chat: true, ..ScoringOptions::new(ScoringMode::Generate) };
    for (reply, correct, predicted) in
        [("C", true, Some("C")), ("Answer: c.", true, Some("C")), ("C is right", false, None), ("D", false, None)]
    {
        let mut m = FakeModel {
            answer_for: |p| {
                if p.contains("[1]") {
                    "C".into()
                } else if p.contains("[2]") {
                    "Answer: c.".into()
                } else if p.contains("[3]") {
                    "C is right".into()
                } else {
                    "D".into()
                }
            },
            seen: vec![],
        };
        let tag = match reply {
            "C" => "[1]",
            "Answer: c." => "[2]",
            "C is right" => "[3]",
            _ => "[4]",
        };
        let item = mc("1", &format!("Which {tag}?"), &["a", "b", "c"], 2);
        let r = score_item(&mut m, &item, &opts).unwrap();
        assert_eq!(r.correct, correct, "{reply:?}");
        assert_eq!(r.prediction.as_deref(), predicted, "{reply:?}");
        assert!(m.seen[0].starts_with("<chat>Question: Which"), "{}", m.seen[0]);
        assert!(m.seen[0].ends_with("C. c\nAnswer with a single letter.</chat>"));
    }
}

#[test]
fn generation_stops_as_soon_as_a_letter_answer_is_impossible() {
    let mut m = FakeModel { answer_for: |_| "The answer is B, because...".into(), seen: vec![] };
    let r = score_item(&mut m, &mc("1", "Q", &["a", "b"], 1), &ScoringOptions::new(ScoringMode::Generate)).unwrap();
    // "T" is viable (could be a letter), "Th" is not: generation ends after two tokens.
    assert_eq!(r.generated.as_deref(), Some("Th"));
    assert!(!r.correct);
}

#[test]
fn math_generation_grades_boxed_answers_and_gsm8k_fallbacks() {
    let opts = ScoringOptions::new(ScoringMode::Generate);
    let mut m = FakeModel { answer_for: |_| "so \\boxed{\\dfrac{1}{2}}".into(), seen: vec![] };
    let r = score_item(&mut m, &math("math-l1", "a/1", "Half?", "0.5"), &opts).unwrap();
    assert!(r.correct);
    assert_eq!(r.prediction.as_deref(), Some("\\dfrac{1}{2}"));
    assert!(m.seen[0].ends_with("The final answer MUST BE put in \\boxed{} and no explanation."));
    // MATH needs \boxed; GSM8K also takes #### and then the last number.
    let mut m = FakeModel { answer_for: |_| "It is 1,018 eggs".into(), seen: vec![] };
    assert!(!score_item(&mut m, &math("math-l1", "a/2", "?", "1018"), &opts).unwrap().correct);
    let mut m = FakeModel { answer_for: |_| "It is 1,018 eggs".into(), seen: vec![] };
    assert!(score_item(&mut m, &math("gsm8k", "3", "?", "1018"), &opts).unwrap().correct);
    // The token limit applies: 50 by default, here 4.
    let mut m = FakeModel { answer_for: |_| "\\boxed{7}".into(), seen: vec![] };
    let short = ScoringOptions { max_new_tokens: Some(4), ..opts.clone() };
    let r = score_item(&mut m, &math("math-l1", "a/4", "?", "7"), &short).unwrap();
    assert_eq!(r.generated.as_deref(), Some("\\box"));
    assert!(!r.correct);
}

#[test]
fn math_generation_stops_once_the_answer_is_complete_and_few_shot_uses_the_package_prompt() {
    // Zero-shot: the generation ends right after the closing brace, not at the token limit.
    let mut m = FakeModel { answer_for: |_| "so \\boxed{12} and then more text".into(), seen: vec![] };
    let r =
        score_item(&mut m, &math("math-l1", "a/1", "?", "12"), &ScoringOptions::new(ScoringMode::Generate)).unwrap();
    assert_eq!(r.generated.as_deref(), Some("so \\boxed{12}"));
    assert!(r.correct);
    // Few-shot: the item's own context is the prompt; "So the answer is N." ends it.
    let few = ScoringOptions { math_prompt: MathPrompt::FewShot, ..ScoringOptions::new(ScoringMode::Generate) };
    let mut item = math("gsm8k", "4", "Eggs?", "18");
    if let ItemKind::Math { few_shot, .. } = &mut item.kind {
        *few_shot = Some("Question: 1+1?\nAnswer: So the answer is 2.\n\nQuestion: Eggs?\nAnswer:".into());
    }
    let mut m =
        FakeModel { answer_for: |_| " 9 + 9 = 18. So the answer is 18.\n\nQuestion: more".into(), seen: vec![] };
    let r = score_item(&mut m, &item, &few).unwrap();
    assert_eq!(m.seen[0], "Question: 1+1?\nAnswer: So the answer is 2.\n\nQuestion: Eggs?\nAnswer:");
    assert_eq!(r.generated.as_deref(), Some("9 + 9 = 18. So the answer is 18."));
    assert_eq!(r.prediction.as_deref(), Some("18"));
    assert!(r.correct);
    // A problem without a few-shot prompt (a user file) is an error saying what to do.
    let e = score_item(&mut m, &math("mine", "1", "?", "1"), &few).unwrap_err().to_string();
    assert!(e.contains("no few-shot prompt") && e.contains("zero-shot"), "{e}");
}

#[test]
fn letter_scoring_of_a_math_item_is_an_error() {
    let mut m = FakeModel { answer_for: |_| "A".into(), seen: vec![] };
    let e = score_item(&mut m, &math("gsm8k", "1", "?", "1"), &ScoringOptions::new(ScoringMode::Letter)).unwrap_err();
    assert!(e.to_string().contains("--scoring generate"), "{e}");
}
