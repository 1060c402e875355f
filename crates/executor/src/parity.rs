//! Backend parity check: the same random model run on two backends along the same chains must
//! give the same logits (up to f32 summation order). Used by the wgpu test in CI and by
//! `cargo xtask parity` on a GPU machine.

use cola_model::weights::RandomWeights;
use cola_model::{CausalLm, LayerOps, ModelConfig};

use crate::{Chain, ExecError, Executor, PrefixCache};

/// One compared measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityLine {
    pub what: String,
    pub max_abs_diff: f32,
    /// Largest |logit| seen, for scale.
    pub max_abs: f32,
}

/// A small Llama-shaped config with `layers` layers (GQA 4:2, head dim 16).
pub fn parity_config(layers: usize) -> ModelConfig {
    ModelConfig::from_json_str(&format!(
        r#"{{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":{layers},
        "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":97,"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"max_position_embeddings":256}}"#
    ))
    .expect("valid parity config")
}

fn executor<B: LayerOps>(config: &ModelConfig, device: B::Device) -> Result<Executor<B>, ExecError> {
    let model = CausalLm::<B>::from_source(config, &RandomWeights::new(config, 42), &device, Default::default())?;
    Ok(Executor::new(model, config.clone(), device))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Runs prefill logits, cached greedy decode and token-tree scoring along skip, repeat and
/// reorder chains on backends `A` and `B`, each chain alone and all of them as one batch;
/// returns one line per comparison.
pub fn compare_backends<A: LayerOps, B: LayerOps>(
    layers: usize, da: A::Device, db: B::Device,
) -> Result<Vec<ParityLine>, ExecError> {
    let config = parity_config(layers);
    let (ea, eb) = (executor::<A>(&config, da)?, executor::<B>(&config, db)?);
    let n = layers;
    let chains = [
        Chain::identity(n),
        Chain::new((0..n).filter(|&l| l != 1 && l != 2).collect()),
        Chain::new((0..n).flat_map(|l| if l == 1 { vec![l, l, l] } else { vec![l] }).collect()),
        Chain::new((0..n).rev().collect()),
    ];
    let prompt: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 97).collect();
    let mut lines = Vec::new();
    for chain in &chains {
        let (sa, sb) = (ea.run(chain, &prompt)?, eb.run(chain, &prompt)?);
        let (la, lb) = (ea.all_logits(&sa), eb.all_logits(&sb));
        lines.push(ParityLine {
            what: format!("prefill logits, chain {chain}"),
            max_abs_diff: max_abs_diff(&la, &lb),
            max_abs: la.iter().fold(0.0f32, |m, x| m.max(x.abs())),
        });
        // Cached decoding: feed the same tokens to both and compare every step's logits.
        let (mut da_state, mut db_state) = (sa, sb);
        let mut worst = 0.0f32;
        let mut scale = 0.0f32;
        for step in 0..6u32 {
            let tok = [(step * 13 + 5) % 97];
            da_state = ea.append(&da_state, &tok)?;
            db_state = eb.append(&db_state, &tok)?;
            let (x, y) = (ea.last_logits(&da_state), eb.last_logits(&db_state));
            worst = worst.max(max_abs_diff(&x, &y));
            scale = x.iter().fold(scale, |m, v| m.max(v.abs()));
        }
        lines.push(ParityLine {
            what: format!("cached decode logits, chain {chain}"),
            max_abs_diff: worst,
            max_abs: scale,
        });
        let branches = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]];
        let (ta, la) = ea.start_branches(&prompt, &branches)?;
        let (tb, lb) = eb.start_branches(&prompt, &branches)?;
        let (ta, tb) = (ea.advance(&ta, chain.layers())?, eb.advance(&tb, chain.layers())?);
        let (pa, pb) = (ea.branch_logprobs(&ta, &la)?, eb.branch_logprobs(&tb, &lb)?);
        let (pa, pb): (Vec<f32>, Vec<f32>) = (pa.concat(), pb.concat());
        lines.push(ParityLine {
            what: format!("token-tree log-probs, chain {chain}"),
            max_abs_diff: max_abs_diff(&pa, &pb),
            max_abs: pa.iter().fold(0.0f32, |m, x| m.max(x.abs())),
        });
    }
    // All chains as one batch on B against each chain alone on A: prefill through a prefix
    // cache, lockstep decoding (logits of every step), token-tree scores.
    let mut cache = PrefixCache::new(eb.start(&prompt)?, 1 << 30);
    let batch = eb.run_batch_cached(&mut cache, &chains)?;
    let batch_refs: Vec<_> = batch.iter().collect();
    let toks: Vec<[u32; 1]> = (0..chains.len() as u32).map(|i| [(i * 11 + 4) % 97]).collect();
    let tok_refs: Vec<&[u32]> = toks.iter().map(|t| t.as_slice()).collect();
    let appended = eb.append_batch(&batch_refs, &tok_refs)?;
    let decoded = eb.last_logits_batch(&appended.iter().collect::<Vec<_>>());
    let branches = vec![vec![1, 2, 3], vec![4, 5]];
    let (tree, layout) = eb.start_branches(&prompt, &branches)?;
    let mut tree_cache = PrefixCache::new(tree, 1 << 30);
    let trees = eb.run_batch_cached(&mut tree_cache, &chains)?;
    let scores = eb.branch_logprobs_batch(&trees.iter().collect::<Vec<_>>(), &layout)?;
    for (i, chain) in chains.iter().enumerate() {
        let alone = ea.run(chain, &prompt)?;
        let (x, y) = (ea.all_logits(&alone), eb.all_logits(&batch[i]));
        lines.push(ParityLine {
            what: format!("batched prefill logits, chain {chain}"),
            max_abs_diff: max_abs_diff(&x, &y),
            max_abs: x.iter().fold(0.0f32, |m, v| m.max(v.abs())),
        });
        let x = ea.last_logits(&ea.append(&alone, &toks[i])?);
        lines.push(ParityLine {
            what: format!("lockstep decode logits, chain {chain}"),
            max_abs_diff: max_abs_diff(&x, &decoded[i]),
            max_abs: x.iter().fold(0.0f32, |m, v| m.max(v.abs())),
        });
        let (t, l) = ea.start_branches(&prompt, &branches)?;
        let x = ea.branch_logprobs(&ea.advance(&t, chain.layers())?, &l)?.concat();
        let y = scores[i].concat();
        lines.push(ParityLine {
            what: format!("batched token-tree log-probs, chain {chain}"),
            max_abs_diff: max_abs_diff(&x, &y),
            max_abs: x.iter().fold(0.0f32, |m, v| m.max(v.abs())),
        });
    }
    Ok(lines)
}
