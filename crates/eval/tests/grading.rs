//! Math answer equivalence: a table of tricky pairs (each expected verdict decided by reading
//! the two answers, not by running the code), and properties of normalization.

use cola_eval::grading::{math_equal, normalize_math};
use proptest::prelude::*;

const EQUAL: &[(&str, &str)] = &[
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\tfrac{3}{4}", "0.75"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\frac{3}{4}", "3/4"),
    (r"\boxed{5}", "5"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
    (r"\fbox{7}", "7"),
    ("$5$", "5"),
    ("5.0", "5"),
    ("2.50", "2.5"),
    (".5", "0.5"),
    ("1,000", "1000"),
    ("12,345,678", "12345678"),
    (r"10\%", "10"),
    ("10%", "10"),
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    (r"\text{5 cm}", "5"),
    (r"5\text{ inches}", "5"),
    ("5 meters", "5"),
    ("x = 5", "5"),
    ("y=-3", "-3"),
    (r"\left(1, 2\right)", "(1,2)"),
    (r"\left[ 0, \frac{1}{2} \right)", r"[0, 0.5)"),
    ("(1, 2, 3)", "(1,2,3)"),
    (r"\$18", "18"),
    ("18.", "18"),
    (r"3\sqrt2", r"3\sqrt{2}"),
    (r"\frac{-1}{4}", "-0.25"),
    (r"-\frac{1}{4}", "-0.25"),
    (r"\le(3,\frac{\pi}{2}\right)", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\displaystyle \frac{2}{3}", r"\frac{2}{3}"),
    ("  42  ", "42"),
    (r"\!10", "10"),
    ("-0", "0"),
    ("0.3333333333", r"\frac{1}{3}"),
];

const NOT_EQUAL: &[(&str, &str)] = &[
    ("5", "6"),
    (r"\frac{1}{2}", r"\frac{1}{3}"),
    ("0.5", "0.55"),
    ("(1,2)", "[1,2]"),
    ("(1,2)", "(2,1)"),
    ("(1,2,3)", "(1,2)"),
    ("[0,1)", "[0,1]"),
    ("-5", "5"),
    (r"\sqrt{2}", r"\sqrt{3}"),
    ("x+1", "x-1"),
    ("1000", "100"),
    ("2.5", "25"),
    ("", "0"),
    (r"\boxed{}", "0"),
    ("12", "1,2"),
    (r"\pi", "3.14"),
    ("3.3333", r"\frac{10}{3}"),
];

#[test]
fn equal_pairs_are_equal_both_ways() {
    assert!(EQUAL.len() + NOT_EQUAL.len() >= 40);
    for (a, b) in EQUAL {
        assert!(
            math_equal(a, b),
            "{a:?} should equal {b:?} (normalized {:?} vs {:?})",
            normalize_math(a),
            normalize_math(b)
        );
        assert!(math_equal(b, a), "{b:?} should equal {a:?}");
    }
}

#[test]
fn unequal_pairs_are_unequal_both_ways() {
    for (a, b) in NOT_EQUAL {
        assert!(
            !math_equal(a, b),
            "{a:?} should differ from {b:?} (normalized {:?} vs {:?})",
            normalize_math(a),
            normalize_math(b)
        );
        assert!(!math_equal(b, a), "{b:?} should differ from {a:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn normalization_is_idempotent_and_total(s in ".{0,40}") {
        let once = normalize_math(&s);
        let _ = math_equal(&s, &once);
        prop_assert_eq!(normalize_math(&once), once);
    }

    #[test]
    fn normalization_is_idempotent_on_latex_like_strings(
        s in r"(\\(frac|dfrac|left|right|text|boxed|sqrt|circ|%)|[0-9{}()\[\],.$ =x^-])*"
    ) {
        let once = normalize_math(&s);
        prop_assert_eq!(normalize_math(&once), once);
    }

    #[test]
    fn every_answer_equals_itself_after_normalization(s in r"-?[0-9]{1,6}(\.[0-9]{1,4})?") {
        prop_assert!(math_equal(&s, &normalize_math(&s)));
    }
}
