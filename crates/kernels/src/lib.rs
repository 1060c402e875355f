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

/// Whether this CPU runs code compiled for AVX2 and FMA ([`simd_dispatch!`] and the hand-written
/// AVX2 attention loops of [`flex`]).
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Declares `$name` that runs `$body` compiled for AVX2+FMA when the CPU has it ([`avx2_fma`]),
/// else generic: for loops the compiler vectorizes well once it may use those instructions.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { imp($($arg),*) }
                if $crate::avx2_fma() {
                    // SAFETY: the features were just detected on this CPU.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

pub mod flex;
pub mod ops;
pub mod pool;
pub mod stored;

pub use ops::{AttnMask, Heads, KvCache, KvRun, LayerOps, Positions, RmsNorm, Rope, with_reference_ops};
pub use stored::{StoredMatrix, WeightFormat};
