//! A chain of layers: the sequence of decoder-layer indices a forward pass goes through.
//!
//! Text form: comma-separated indices and inclusive ranges, e.g. `0-29`, `0-9,9,10-29`,
//! `0-3,8-25,28,29`. Printing compresses ascending runs back into ranges, so the text form is
//! canonical: `parse(display(c)) == c` and equal chains print equally.

use std::fmt;
use std::str::FromStr;

/// Why a chain text or a chain is not acceptable. Messages point at the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("chain is empty")]
    Empty,
    #[error("chain item {position} (`{item}`): {reason}")]
    BadItem { position: usize, item: String, reason: String },
    #[error("chain step {position} is layer {layer}, but the model has {num_layers} layers (valid: 0-{})", num_layers - 1)]
    LayerOutOfRange { position: usize, layer: usize, num_layers: usize },
    #[error("chain has {len} steps, more than the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("chain has {len} steps, fewer than the minimum of {min}")]
    TooShort { len: usize, min: usize },
}

/// Inclusive bounds on the number of steps of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LengthBounds {
    pub min: usize,
    pub max: usize,
}

impl LengthBounds {
    /// Generous default for running arbitrary chains by hand: 1 to 4 N steps.
    pub fn lenient(num_layers: usize) -> Self {
        LengthBounds { min: 1, max: 4 * num_layers.max(1) }
    }
}

/// A sequence of layer indices. Construct with [`Chain::parse`] / [`Chain::new`]; check against a
/// model with [`Chain::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain(Vec<usize>);

impl Chain {
    pub fn new(layers: Vec<usize>) -> Self {
        Chain(layers)
    }

    /// `[0, 1, ..., n-1]`: the original model.
    pub fn identity(num_layers: usize) -> Self {
        Chain((0..num_layers).collect())
    }

    pub fn layers(&self) -> &[usize] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the text form. Whitespace around items is ignored.
    pub fn parse(text: &str) -> Result<Self, ChainError> {
        let mut layers = Vec::new();
        if text.trim().is_empty() {
            return Err(ChainError::Empty);
        }
        for (i, raw) in text.split(',').enumerate() {
            let item = raw.trim();
            let bad = |reason: &str| ChainError::BadItem {
                position: i + 1,
                item: item.to_string(),
                reason: reason.to_string(),
            };
            let num = |s: &str| -> Result<usize, ChainError> {
                let s = s.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("expected a layer index or a range like 3-7"));
                }
                s.parse().map_err(|_| bad("number too large"))
            };
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if b < a {
                        return Err(bad(&format!("range end {b} is before its start {a}")));
                    }
                    if b - a > 1_000_000 {
                        return Err(bad("range is implausibly long"));
                    }
                    layers.extend(a..=b);
                }
                None => layers.push(num(item)?),
            }
        }
        Ok(Chain(layers))
    }

    /// Checks the chain against a model of `num_layers` layers and the length bounds.
    pub fn validate(&self, num_layers: usize, bounds: LengthBounds) -> Result<(), ChainError> {
        if self.0.is_empty() {
            return Err(ChainError::Empty);
        }
        if let Some((position, &layer)) = self.0.iter().enumerate().find(|(_, l)| **l >= num_layers) {
            return Err(ChainError::LayerOutOfRange { position, layer, num_layers });
        }
        if self.0.len() > bounds.max {
            return Err(ChainError::TooLong { len: self.0.len(), max: bounds.max });
        }
        if self.0.len() < bounds.min {
            return Err(ChainError::TooShort { len: self.0.len(), min: bounds.min });
        }
        Ok(())
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut j = i;
            while j + 1 < self.0.len() && self.0[j + 1] == self.0[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j > i {
                write!(f, "{start}-{}", self.0[j])?;
            } else {
                write!(f, "{start}")?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

impl FromStr for Chain {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Chain::parse(s)
    }
}

impl serde::Serialize for Chain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Chain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Chain::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_examples() {
        assert_eq!(Chain::parse("0-29").unwrap(), Chain::identity(30));
        let c = Chain::parse("0-9,9,10-29").unwrap();
        assert_eq!(c.len(), 31);
        assert_eq!(&c.layers()[8..12], &[8, 9, 9, 10]);
        let c = Chain::parse("0-3,8-25,28,29").unwrap();
        assert_eq!(c.len(), 4 + 18 + 2);
        assert_eq!(c.to_string(), "0-3,8-25,28-29");
    }

    #[test]
    fn errors_point_at_the_bad_item() {
        let e = Chain::parse("0-3,x,5").unwrap_err().to_string();
        assert!(e.contains("item 2") && e.contains("`x`"), "{e}");
        let e = Chain::parse("0-3,7-5").unwrap_err().to_string();
        assert!(e.contains("item 2") && e.contains("before its start"), "{e}");
        assert_eq!(Chain::parse(" ").unwrap_err(), ChainError::Empty);
        assert!(Chain::parse("1,,2").is_err());
        assert!(Chain::parse("-3").is_err());
    }

    #[test]
    fn validation_names_index_and_bounds() {
        let b = LengthBounds { min: 2, max: 5 };
        let e = Chain::parse("0,1,30").unwrap().validate(30, b).unwrap_err().to_string();
        assert!(e.contains("step 2 is layer 30") && e.contains("0-29"), "{e}");
        let e = Chain::parse("0-5").unwrap().validate(30, b).unwrap_err().to_string();
        assert!(e.contains("6 steps") && e.contains("maximum of 5"), "{e}");
        let e = Chain::parse("4").unwrap().validate(30, b).unwrap_err().to_string();
        assert!(e.contains("minimum of 2"), "{e}");
        assert!(Chain::parse("0-4").unwrap().validate(30, b).is_ok());
        assert_eq!(Chain::new(vec![]).validate(30, b), Err(ChainError::Empty));
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(layers in prop::collection::vec(0usize..40, 1..60)) {
            let c = Chain::new(layers);
            prop_assert_eq!(Chain::parse(&c.to_string()).unwrap(), c);
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = Chain::parse(&text);
        }
    }
}
