//! Enums with a fixed set of values that the command line and files spell by name (tasks,
//! backends, presets, ...). Each such enum declares its values once (`ALL`) and their names once
//! (`name()`); [`by_name!`] derives `FromStr` and `Display` from those two, so no enum writes its
//! own parsing, and every parse error lists the names the same way.
//!
//! Invariants: a name parses back to its value (`ALL` lists every value); parsing ignores ASCII
//! case. This crate depends on nothing.

/// The names of `values`, comma-separated, in their order (help texts, errors).
pub fn list<T: Copy, N: AsRef<str>>(values: &[T], name: impl Fn(T) -> N) -> String {
    values.iter().map(|&v| name(v).as_ref().to_string()).collect::<Vec<_>>().join(", ")
}

/// The value of `values` named `s` (in any ASCII case), or an error naming `what` was asked for
/// and listing the names.
pub fn parse<T: Copy, N: AsRef<str>>(s: &str, what: &str, values: &[T], name: impl Fn(T) -> N) -> Result<T, String> {
    values
        .iter()
        .copied()
        .find(|&v| name(v).as_ref().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown {what} `{s}` ({})", list(values, name)))
}

/// `FromStr` (by [`parse`]) and `Display` (the name) for an enum `$ty` with an `ALL` array of its
/// values and a `name(self)` returning `&str` or `String`; `$what` says what a value is in
/// errors ("task", "backend").
#[macro_export]
macro_rules! by_name {
    ($ty:ty, $what:literal) => {
        impl ::std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $crate::parse(s, $what, &<$ty>::ALL, <$ty>::name)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(::std::convert::AsRef::<str>::as_ref(&self.name()))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Colour {
        Red,
        DarkBlue,
    }

    impl Colour {
        const ALL: [Colour; 2] = [Colour::Red, Colour::DarkBlue];
        fn name(self) -> &'static str {
            match self {
                Colour::Red => "red",
                Colour::DarkBlue => "dark-blue",
            }
        }
    }

    crate::by_name!(Colour, "colour");

    #[test]
    fn names_parse_back_in_any_case_and_errors_list_them() {
        for c in Colour::ALL {
            assert_eq!(c.name().parse::<Colour>(), Ok(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!("Dark-Blue".parse::<Colour>(), Ok(Colour::DarkBlue));
        assert_eq!("green".parse::<Colour>(), Err("unknown colour `green` (red, dark-blue)".to_string()));
    }
}
