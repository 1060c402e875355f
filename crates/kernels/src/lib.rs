//! The compute of a decoder layer: the [`LayerOps`] seam every backend implements, burn-op
//! reference implementations of each step ([`ops::reference`](mod@ops::reference)), the fused CPU kernels of burn's
//! flex backend ([`flex`]), and weights held as files store them ([`stored`]: ggml's 4- and 8-bit
//! blocks and 16-bit floats, multiplied by f32 activations with the dequantization in registers).
//!
//! Invariants: every kernel computes what its reference computes, up to the order of float sums
//! (and `exp`, see [`flex`]); the seam alone decides between them ([`ops::with_reference_ops`]).
//! Stored weights dequantize bit for bit to the f32 a dequantizing import writes. This crate
//! knows nothing of files, tokenizers, chains or search, and depends on no other crate of the
//! project but `cola-names`; it is the only one built at opt-level 3 in test builds.

pub mod flex;
pub mod ops;
pub mod stored;

pub use ops::{AttnMask, Heads, KvCache, KvRun, LayerOps, Positions, RmsNorm, Rope, with_reference_ops};
pub use stored::{StoredMatrix, WeightFormat};
