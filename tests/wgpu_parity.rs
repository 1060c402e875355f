//! The executor on wgpu against the CPU backend: a random model along skip, repeat and reorder
//! chains gives the same prefill logits, cached-decode logits and token-tree log-probs, for each
//! chain alone and for all chains as one batch.
//!
//! Tolerance 1e-4 absolute on logits of magnitude ~1-10: both backends compute in f32 and differ
//! only in summation order (~1e-6 relative on these 64-wide dot products); any wrong operation
//! shifts logits by 1e-2 or more. On this machine the test runs on Mesa's lavapipe (a Vulkan
//! driver on the CPU), which `cargo xtask test` installs in CI.

use cola_executor::backend::{Cpu, Wgpu};
use cola_executor::parity::compare_backends;

#[test]
fn wgpu_matches_cpu_along_chains() {
    let lines = compare_backends::<Cpu, Wgpu>(4, Default::default(), Default::default()).expect("both backends run");
    for l in &lines {
        eprintln!("{:<60} max |diff| {:.2e} (max |value| {:.2})", l.what, l.max_abs_diff, l.max_abs);
    }
    for l in &lines {
        assert!(l.max_abs_diff < 1e-4, "{}: wgpu differs from the CPU by {}", l.what, l.max_abs_diff);
    }
}
