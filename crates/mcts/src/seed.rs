//! One RNG stream per search, derived from (global seed, sample id): samples never share a
//! stream, and the stream of a sample does not depend on which other samples ran before it.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The RNG every search uses (portable, stable output across platforms and versions).
pub type SearchRng = ChaCha8Rng;

/// The stream for `sample_id` under `global_seed` (FNV-1a of the id, mixed with the seed by
/// SplitMix64 so that nearby seeds give unrelated streams).
pub fn sample_rng(global_seed: u64, sample_id: &str) -> SearchRng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sample_id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = global_seed ^ h.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ChaCha8Rng::seed_from_u64(z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_inputs_same_stream_different_samples_different_streams() {
        let draws = |seed: u64, id: &str| -> Vec<u64> {
            let mut r = sample_rng(seed, id);
            (0..8).map(|_| r.random()).collect()
        };
        let (a, b, c, d) =
            (draws(1, "arc-easy/17"), draws(1, "arc-easy/17"), draws(1, "arc-easy/18"), draws(2, "arc-easy/17"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
