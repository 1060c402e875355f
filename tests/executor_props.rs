//! Property tests of the executor on tiny random models (llama, qwen2 with q/k/v bias, qwen3 with
//! q/k norm): chains of any shape against an independent f64 forward, against a model built with
//! the chain as its layer list, cached against uncached decoding, prefix + suffix against the
//! whole chain, and rejection of invalid chains.
//!
//! Tolerances: the executor computes in f32 through burn's kernels, the reference in f64; on
//! these tiny models logits are O(1) and agree to ~1e-5, so 1e-3 absolute leaves headroom while
//! still catching any wrong equation (which shifts logits by O(0.1) or more).

use cola_executor::backend::Cpu;
use cola_executor::{Chain, ChainError, Executor, LengthBounds};
use cola_model::CausalLm;
use cola_tests::{max_abs_diff, reference_logits, tiny_config, tiny_executor};
use proptest::prelude::*;

const NUM_LAYERS: usize = 4;
const TOL: f32 = 1e-3;

fn arch() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("llama"), Just("qwen2"), Just("qwen3")]
}

fn chain() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..NUM_LAYERS, 1..10)
}

fn prompt() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..61, 1..12)
}

fn flat(rows: &[Vec<f64>]) -> Vec<f32> {
    rows.iter().flatten().map(|&x| x as f32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any chain (identity included) equals the independent forward over the same layer list.
    #[test]
    fn chain_matches_independent_forward(arch in arch(), layers in chain(), ids in prompt(), seed in 0u64..1000) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, weights) = tiny_executor(&config, seed);
        let state = exec.run(&Chain::new(layers.clone()), &ids).unwrap();
        let got = exec.all_logits(&state);
        let want = flat(&reference_logits(&config, &weights, &layers, &ids));
        prop_assert!(max_abs_diff(&got, &want) < TOL, "max diff {}", max_abs_diff(&got, &want));
    }

    /// Running chain C on the model equals running the identity chain on a model whose layer
    /// list is [L[c0], L[c1], ...] (built by cloning the layer modules).
    #[test]
    fn chain_equals_model_with_that_layer_list(arch in arch(), layers in chain(), ids in prompt()) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 7);
        let original = exec.model();
        let unrolled = CausalLm::<Cpu> {
            embed_tokens: original.embed_tokens.clone(),
            layers: layers.iter().map(|&l| original.layers[l].clone()).collect(),
            norm: original.norm.clone(),
            lm_head: original.lm_head.clone(),
        };
        let mut unrolled_config = config.clone();
        unrolled_config.num_layers = layers.len();
        let unrolled_exec = Executor::new(unrolled, unrolled_config, Default::default());
        let a = exec.all_logits(&exec.run(&Chain::new(layers.clone()), &ids).unwrap());
        let b = unrolled_exec.all_logits(&unrolled_exec.run(&Chain::identity(layers.len()), &ids).unwrap());
        prop_assert_eq!(a, b);
    }

    /// Greedy decoding with per-step K/V caches equals recomputing the whole sequence each step.
    #[test]
    fn cached_generation_equals_uncached(arch in arch(), layers in chain(), ids in prompt()) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 11);
        let chain = Chain::new(layers);
        let cached = exec.generate(&exec.run(&chain, &ids).unwrap(), 6, &[]).unwrap();
        let mut seq = ids.clone();
        let mut uncached = vec![];
        let mut state = exec.run(&chain, &seq).unwrap();
        for _ in 0..6 {
            let next = cola_executor::argmax(&exec.last_logits(&state));
            uncached.push(next);
            seq.push(next);
            state = exec.run(&chain, &seq).unwrap();
        }
        prop_assert_eq!(&cached, &uncached);
        // Logits, not just argmaxes: one cached step against the recomputed last position.
        let prefix = exec.run(&chain, &ids).unwrap();
        let stepped = exec.append(&prefix, &uncached[..3]).unwrap();
        let full = exec.run(&chain, &seq[..ids.len() + 3]).unwrap();
        let d = max_abs_diff(&exec.last_logits(&stepped), &exec.last_logits(&full));
        prop_assert!(d < 1e-4, "cached vs uncached logits differ by {d}");
    }

    /// The state after the first k steps, continued with the rest, equals the whole chain.
    #[test]
    fn prefix_then_suffix_equals_whole_chain(arch in arch(), layers in chain(), ids in prompt(), split in 0usize..10) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 3);
        let k = split.min(layers.len());
        let prefix = exec.advance(&exec.start(&ids).unwrap(), &layers[..k]).unwrap();
        let whole = exec.run(&Chain::new(layers.clone()), &ids).unwrap();
        let continued = exec.advance(&prefix, &layers[k..]).unwrap();
        prop_assert_eq!(&continued.steps, &layers);
        prop_assert_eq!(exec.all_logits(&continued), exec.all_logits(&whole));
        // And decoding from the continued state uses every step's cache.
        prop_assert_eq!(exec.generate(&continued, 3, &[]).unwrap(), exec.generate(&whole, 3, &[]).unwrap());
    }

    /// Out-of-range layers are rejected with the offending step named, never run.
    #[test]
    fn invalid_chains_are_rejected(layers in chain(), bad_at in 0usize..10, bad_layer in NUM_LAYERS..100) {
        let config = tiny_config("llama", NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 1);
        let mut layers = layers;
        let pos = bad_at.min(layers.len() - 1);
        layers[pos] = bad_layer;
        let err = exec.run(&Chain::new(layers), &[1, 2, 3]).unwrap_err().to_string();
        prop_assert!(err.contains(&format!("step {pos} is layer {bad_layer}")), "{}", err);
    }
}

#[test]
fn empty_chain_and_bounds_are_errors() {
    let config = tiny_config("llama", NUM_LAYERS);
    let (exec, _) = tiny_executor(&config, 1);
    assert!(matches!(
        exec.run(&Chain::new(vec![]), &[1]).unwrap_err(),
        cola_executor::ExecError::Chain(ChainError::Empty)
    ));
    let long = Chain::new(vec![0; 5]);
    assert_eq!(long.validate(NUM_LAYERS, LengthBounds { min: 1, max: 4 }), Err(ChainError::TooLong { len: 5, max: 4 }));
}

#[test]
fn bad_token_ids_and_empty_prompts_are_errors() {
    let config = tiny_config("llama", NUM_LAYERS);
    let (exec, _) = tiny_executor(&config, 1);
    let e = exec.run(&Chain::identity(NUM_LAYERS), &[1, 61]).unwrap_err().to_string();
    assert!(e.contains("token id 61"), "{e}");
    assert!(exec.run(&Chain::identity(NUM_LAYERS), &[]).is_err());
}

#[test]
fn continuation_logprobs_match_full_softmax() {
    let config = tiny_config("qwen2", NUM_LAYERS);
    let (exec, weights) = tiny_executor(&config, 5);
    let chain = [0usize, 2, 2, 1];
    let prompt = [4u32, 9, 33];
    let cont = [7u32, 50, 2];
    let state = exec.run(&Chain::new(chain.to_vec()), &prompt).unwrap();
    let got = exec.continuation_logprobs(&state, &cont).unwrap();
    let all: Vec<u32> = prompt.iter().chain(&cont).copied().collect();
    let logits = reference_logits(&config, &weights, &chain, &all);
    for (i, &tok) in cont.iter().enumerate() {
        let row = &logits[prompt.len() - 1 + i];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let want = row[tok as usize] - lse;
        assert!((got[i] as f64 - want).abs() < 1e-3, "token {i}: {} vs {want}", got[i]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Chains run through a prefix cache (with a budget small enough to force evictions) give
    /// exactly the logits of running each from scratch.
    #[test]
    fn prefix_cache_gives_identical_results(
        arch in arch(), family in prop::collection::vec(chain(), 1..12), ids in prompt(), tight in any::<bool>(),
    ) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 21);
        let budget = if tight { 20_000 } else { 1 << 30 };
        let mut cache = cola_executor::PrefixCache::new(exec.start(&ids).unwrap(), budget);
        for layers in &family {
            let chain = Chain::new(layers.clone());
            let cached = exec.run_cached(&mut cache, &chain).unwrap();
            let fresh = exec.run(&chain, &ids).unwrap();
            prop_assert_eq!(&cached.steps, layers);
            let d = max_abs_diff(&exec.all_logits(&cached), &exec.all_logits(&fresh));
            prop_assert!(d <= 1e-5, "cached vs fresh logits differ by {d}");
            prop_assert_eq!(exec.generate(&cached, 3, &[]).unwrap(), exec.generate(&fresh, 3, &[]).unwrap());
        }
        if tight {
            prop_assert!(cache.stats().bytes <= 20_000 || cache.len() == 1);
        }
    }

    /// Scoring continuations as one token tree equals scoring each by appending it to the prompt.
    #[test]
    fn token_tree_scores_equal_one_by_one_scores(
        arch in arch(), layers in chain(), ids in prompt(),
        branches in prop::collection::vec(prop::collection::vec(0u32..61, 1..5), 1..5),
    ) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 8);
        let (tree, layout) = exec.start_branches(&ids, &branches).unwrap();
        let tree = exec.advance(&tree, &layers).unwrap();
        let got = exec.branch_logprobs(&tree, &layout).unwrap();
        let plain = exec.run(&Chain::new(layers.clone()), &ids).unwrap();
        for (b, g) in branches.iter().zip(&got) {
            let want = exec.continuation_logprobs(&plain, b).unwrap();
            prop_assert!(max_abs_diff(g, &want) < 1e-4, "{:?} vs {:?}", g, want);
        }
    }
}

/// Token-tree scores of many states at once (more rows than one LM-head call takes, split
/// inside a state) equal each state scored alone and each continuation appended to the prompt.
#[test]
fn token_tree_scores_of_many_rows_equal_scores_alone() {
    let config = tiny_config("llama", NUM_LAYERS);
    let (exec, _) = tiny_executor(&config, 17);
    let ids: Vec<u32> = vec![3, 14, 15, 9, 26];
    // 3 branches of 20 tokens: 60 rows per state, 180 for three states.
    let branches: Vec<Vec<u32>> = (0..3u32).map(|b| (0..20u32).map(|t| (7 * b + 3 * t + 1) % 61).collect()).collect();
    let chains = [vec![0, 1, 2, 3], vec![0, 0, 2], vec![3, 1, 2, 0, 1]];
    let (root, layout) = exec.start_branches(&ids, &branches).unwrap();
    let trees: Vec<_> = chains.iter().map(|c| exec.advance(&root, c).unwrap()).collect();
    let batched = exec.branch_logprobs_batch(&trees.iter().collect::<Vec<_>>(), &layout).unwrap();
    for (i, c) in chains.iter().enumerate() {
        let alone = exec.branch_logprobs(&trees[i], &layout).unwrap();
        assert!(max_abs_diff(&batched[i].concat(), &alone.concat()) <= 1e-5, "chain {c:?}: batched vs alone");
        let plain = exec.run(&Chain::new(c.clone()), &ids).unwrap();
        for (b, got) in branches.iter().zip(&batched[i]) {
            let want = exec.continuation_logprobs(&plain, b).unwrap();
            assert!(max_abs_diff(got, &want) < 1e-4, "chain {c:?}: {got:?} vs {want:?}");
        }
    }
}

/// The burn-op reference implementations of the layer steps (what the GPU backends run) agree
/// with the fused CPU kernels, checked on the CPU itself.
#[test]
fn reference_ops_match_fused_cpu_kernels() {
    use cola_kernels::with_reference_ops;
    for arch in ["llama", "qwen2", "qwen3"] {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 13);
        let ids: Vec<u32> = (0..20).map(|i| (i * 11 + 2) % 61).collect();
        for layers in [vec![0, 1, 2, 3], vec![0, 2, 2, 3, 1], vec![3, 0]] {
            let chain = Chain::new(layers);
            let fused = exec.all_logits(&exec.run(&chain, &ids).unwrap());
            let reference = with_reference_ops(|| exec.all_logits(&exec.run(&chain, &ids).unwrap()));
            assert!(
                max_abs_diff(&fused, &reference) < 1e-4,
                "{arch} {chain}: prefill differs by {}",
                max_abs_diff(&fused, &reference)
            );
            let state = exec.run(&chain, &ids).unwrap();
            let f = exec.last_logits(&exec.append(&state, &[5, 6]).unwrap());
            let r = with_reference_ops(|| exec.last_logits(&exec.append(&state, &[5, 6]).unwrap()));
            assert!(max_abs_diff(&f, &r) < 1e-4, "{arch} {chain}: decode differs");
            let branches = vec![vec![1u32, 2, 3], vec![4]];
            let tree = |_: ()| {
                let (t, layout) = exec.start_branches(&ids, &branches).unwrap();
                exec.branch_logprobs(&exec.advance(&t, chain.layers()).unwrap(), &layout).unwrap().concat()
            };
            let (f, r) = (tree(()), with_reference_ops(|| tree(())));
            assert!(max_abs_diff(&f, &r) < 1e-4, "{arch} {chain}: token tree differs");
        }
    }
}

/// A family of chains as a search tree holds them: a base chain and edits of it (skips,
/// repeats, swapped neighbours), so that many share prefixes.
fn chain_family() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (chain(), prop::collection::vec((0usize..3, 0usize..10, 1usize..3), 1..10)).prop_map(|(base, edits)| {
        let mut family = vec![base.clone()];
        for (kind, at, len) in edits {
            let mut c = base.clone();
            let at = at % c.len();
            match kind {
                0 if c.len() > len => {
                    c.drain(at..(at + len).min(c.len()));
                }
                1 => {
                    let block: Vec<usize> = c[at..(at + len).min(c.len())].to_vec();
                    let end = (at + len).min(c.len());
                    c.splice(end..end, block);
                }
                _ if at + 1 < c.len() => c.swap(at, at + 1),
                _ => {}
            }
            if !c.is_empty() {
                family.push(c);
            }
        }
        family
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Chains run in batches of K (smaller or larger than the family) through a prefix cache
    /// (tight enough to evict, or ample) equal each chain run alone: logits within 1e-5, the same
    /// greedy ids when decoding in lockstep, the same token-tree scores.
    #[test]
    fn batched_chains_equal_chains_run_alone(
        arch in arch(), family in chain_family(), ids in prompt(), k in 1usize..8, tight in any::<bool>(),
        branches in prop::collection::vec(prop::collection::vec(0u32..61, 1..4), 1..4),
    ) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 31);
        let budget = if tight { 20_000 } else { 1 << 30 };
        let mut cache = cola_executor::PrefixCache::new(exec.start(&ids).unwrap(), budget);
        let (tree_root, layout) = exec.start_branches(&ids, &branches).unwrap();
        let mut tree_cache = cola_executor::PrefixCache::new(tree_root, budget);
        for batch in family.chunks(k) {
            let chains: Vec<Chain> = batch.iter().cloned().map(Chain::new).collect();
            let states = exec.run_batch_cached(&mut cache, &chains).unwrap();
            let lockstep = exec.generate_batch(&states, 4, |_, _| false).unwrap();
            let trees = exec.run_batch_cached(&mut tree_cache, &chains).unwrap();
            let scores = exec.branch_logprobs_batch(&trees.iter().collect::<Vec<_>>(), &layout).unwrap();
            let last = exec.last_logits_batch(&states.iter().collect::<Vec<_>>());
            for (i, chain) in chains.iter().enumerate() {
                let alone = exec.run(chain, &ids).unwrap();
                prop_assert_eq!(&states[i].steps, &chain.layers().to_vec());
                let d = max_abs_diff(&exec.all_logits(&states[i]), &exec.all_logits(&alone));
                prop_assert!(d <= 1e-5, "{chain}: batched logits differ by {d}");
                prop_assert!(max_abs_diff(&last[i], &exec.last_logits(&alone)) <= 1e-5);
                prop_assert_eq!(&lockstep[i], &exec.generate(&alone, 4, &[]).unwrap(), "{}: greedy ids", chain);
                let (t, _) = exec.start_branches(&ids, &branches).unwrap();
                let want = exec.branch_logprobs(&exec.advance(&t, chain.layers()).unwrap(), &layout).unwrap();
                prop_assert!(max_abs_diff(&scores[i].concat(), &want.concat()) <= 1e-5, "{chain}: token-tree scores");
            }
        }
    }

    /// Decoding in lockstep with per-chain stops: each chain leaves at its own stop and its ids
    /// are those of decoding it alone to that stop.
    #[test]
    fn lockstep_decoding_stops_each_chain_on_its_own(
        arch in arch(), family in chain_family(), ids in prompt(), stops in prop::collection::vec(1usize..6, 10),
    ) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 5);
        let states: Vec<_> = family.iter().map(|c| exec.run(&Chain::new(c.clone()), &ids).unwrap()).collect();
        let got = exec.generate_batch(&states, 6, |i, new| new.len() >= stops[i % stops.len()]).unwrap();
        for (i, s) in states.iter().enumerate() {
            let alone = exec.generate_until(s, 6, |new| new.len() >= stops[i % stops.len()]).unwrap();
            prop_assert_eq!(alone.len(), stops[i % stops.len()].min(6));
            prop_assert_eq!(&got[i], &alone);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Lockstep decoding shares the rows of chains that have taken the same steps and generated
    /// the same tokens (a trie over both), and still gives each chain its ids decoded alone. The
    /// number of rows shared is counted here from the chains and the ids decoded alone.
    #[test]
    fn lockstep_decoding_shares_the_rows_of_identical_prefixes(
        arch in arch(), family in chain_family(), ids in prompt(), seed in 0u64..4,
    ) {
        let config = tiny_config(arch, NUM_LAYERS);
        let (exec, _) = tiny_executor(&config, 11 + seed);
        let chains: Vec<Chain> = family.iter().cloned().map(Chain::new).collect();
        let alone: Vec<Vec<u32>> =
            chains.iter().map(|c| exec.generate(&exec.run(c, &ids).unwrap(), 5, &[]).unwrap()).collect();
        let states: Vec<_> = chains.iter().map(|c| exec.run(c, &ids).unwrap()).collect();
        let before = exec.append_steps().1;
        let got = exec.generate_batch(&states, 5, |_, _| false).unwrap();
        prop_assert_eq!(&got, &alone);
        // Token r is appended (r = 0..4) by every chain; chains with the same first r + 1 tokens
        // share each step whose prefix of layers they share.
        let mut want = 0u64;
        for r in 0..4 {
            let mut lineages: Vec<(&[u32], Vec<&Chain>)> = Vec::new();
            for (c, g) in chains.iter().zip(&alone) {
                match lineages.iter_mut().find(|(t, _)| *t == &g[..=r]) {
                    Some((_, members)) => members.push(c),
                    None => lineages.push((&g[..=r], vec![c])),
                }
            }
            for (_, members) in &lineages {
                let depth = members.iter().map(|c| c.len()).max().unwrap_or(0);
                for d in 0..depth {
                    let reaching: Vec<&[usize]> =
                        members.iter().filter(|c| c.len() > d).map(|c| &c.layers()[..=d]).collect();
                    let mut distinct = reaching.clone();
                    distinct.sort();
                    distinct.dedup();
                    want += (reaching.len() - distinct.len()) as u64;
                }
            }
        }
        prop_assert_eq!(exec.append_steps().1 - before, want);
    }
}

/// A batch of chains that share long prefixes needs about as many layer calls as one chain:
/// counted through the cache (each computed step is stored once).
#[test]
fn shared_prefixes_in_a_batch_are_computed_once() {
    let config = tiny_config("llama", NUM_LAYERS);
    let (exec, _) = tiny_executor(&config, 2);
    let ids = [5u32, 9, 13, 2];
    let mut cache = cola_executor::PrefixCache::new(exec.start(&ids).unwrap(), 1 << 30);
    let chains: Vec<Chain> = [vec![0, 1, 2, 3], vec![0, 1, 2, 2, 3], vec![0, 1, 3], vec![0, 1, 2, 3, 3]]
        .into_iter()
        .map(Chain::new)
        .collect();
    exec.run_batch_cached(&mut cache, &chains).unwrap();
    // Distinct non-empty prefixes: [0], [0,1], [0,1,2], [0,1,2,3], [0,1,2,2], [0,1,2,2,3], [0,1,3], [0,1,2,3,3].
    assert_eq!(cache.stats().computed_steps, 8);
}

/// Random weights with some tensors replaced by zeros.
struct Zeroed<'a> {
    inner: &'a cola_model::weights::RandomWeights,
    zero: Vec<String>,
}

impl cola_model::WeightSource for Zeroed<'_> {
    fn tensor(&self, name: &str) -> Result<cola_model::HostTensor, cola_model::ModelError> {
        let t = self.inner.tensor(name)?;
        Ok(if self.zero.iter().any(|z| z == name) {
            cola_model::HostTensor::new(t.shape.clone(), vec![0.0; t.data.len()])
        } else {
            t
        })
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
}

/// A layer whose attention output and MLP down projection are zero adds nothing to the residual
/// stream: its input and output are equal, its Block Influence is 0, and pruning drops it first.
#[test]
fn a_layer_that_changes_nothing_has_no_influence_and_is_pruned_first() {
    use cola_model::WeightSource;
    let config = tiny_config("llama", 6);
    let weights = cola_model::weights::RandomWeights::new(&config, 11);
    let zero =
        vec!["model.layers.2.self_attn.o_proj.weight".to_string(), "model.layers.2.mlp.down_proj.weight".to_string()];
    assert!(zero.iter().all(|z| weights.contains(z)));
    let source = Zeroed { inner: &weights, zero };
    let model = CausalLm::<Cpu>::from_source(&config, &source, &Default::default(), Default::default()).unwrap();
    let exec = Executor::new(model, config.clone(), Default::default());
    let bi = exec.block_influence(&[3, 17, 29, 5, 8]).unwrap();
    assert_eq!(bi.len(), 6);
    assert!(bi[2].abs() < 1e-6, "layer 2 influence {}", bi[2]);
    assert!(bi.iter().enumerate().all(|(l, &b)| l == 2 || b > 1e-4), "{bi:?}");
    assert_eq!(cola_executor::prune_by_influence(&bi, 1).layers(), &[0, 1, 3, 4, 5]);
}
