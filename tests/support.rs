//! Shared helpers for the cross-crate tests: tiny random models, and an independent plain-Rust
//! forward pass (f64, naive loops, no burn) that the executor is checked against.

use std::path::{Path, PathBuf};

use cola_executor::Executor;
use cola_executor::backend::Cpu;
use cola_model::weights::RandomWeights;
use cola_model::{CausalLm, ModelConfig, WeightSource};

/// Root of the repository (for committed assets).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tiny config of the given HF `model_type` (llama, qwen2, qwen3).
pub fn tiny_config(model_type: &str, num_layers: usize) -> ModelConfig {
    ModelConfig::from_json_str(&format!(
        r#"{{"model_type":"{model_type}","hidden_size":32,"intermediate_size":48,
        "num_hidden_layers":{num_layers},"num_attention_heads":4,"num_key_value_heads":2,
        "vocab_size":61,"rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":128}}"#
    ))
    .expect("valid tiny config")
}

/// An executor over random weights, plus the weights themselves for the reference forward.
pub fn tiny_executor(config: &ModelConfig, seed: u64) -> (Executor<Cpu>, RandomWeights) {
    let weights = RandomWeights::new(config, seed);
    let model = CausalLm::<Cpu>::from_source(config, &weights, &Default::default(), Default::default())
        .expect("random model builds");
    (Executor::new(model, config.clone(), Default::default()), weights)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

fn load(w: &dyn WeightSource, name: &str) -> Mat {
    let t = w.tensor(name).unwrap_or_else(|e| panic!("{e}"));
    let (rows, cols) = match t.shape.as_slice() {
        [r, c] => (*r, *c),
        [n] => (1, *n),
        s => panic!("unexpected shape {s:?}"),
    };
    Mat { rows, cols, data: t.data.iter().map(|&x| x as f64).collect() }
}

/// `x @ W^T (+ b)` for PyTorch-layout `W` `[out, in]`, one row of `x` per position.
fn linear(x: &[Vec<f64>], w: &Mat, b: Option<&Mat>) -> Vec<Vec<f64>> {
    x.iter()
        .map(|row| {
            (0..w.rows)
                .map(|o| {
                    let s: f64 = (0..w.cols).map(|i| row[i] * w.data[o * w.cols + i]).sum();
                    s + b.map_or(0.0, |b| b.data[o])
                })
                .collect()
        })
        .collect()
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

/// Rotate-half RoPE on one head vector at position `pos`.
fn rope(v: &mut [f64], pos: usize, inv_freq: &[f64]) {
    let half = v.len() / 2;
    for i in 0..half {
        let (s, c) = (pos as f64 * inv_freq[i]).sin_cos();
        let (a, b) = (v[i], v[i + half]);
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

/// Logits at every position of `ids` for the model whose layer list is `chain`, computed from
/// scratch with the HF Llama/Qwen2/Qwen3 equations in f64. Independent of burn and of the
/// model crate's modules (it reads only the raw named tensors).
pub fn reference_logits(config: &ModelConfig, w: &dyn WeightSource, chain: &[usize], ids: &[u32]) -> Vec<Vec<f64>> {
    let (h, nh, nkv, hd) = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim);
    let eps = config.rms_norm_eps;
    let inv_freq = config.rope_inv_freq();
    let embed = load(w, "model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = ids.iter().map(|&t| embed.data[t as usize * h..(t as usize + 1) * h].to_vec()).collect();
    let n = ids.len();
    for &l in chain {
        let p = format!("model.layers.{l}");
        let get = |s: &str| load(w, &format!("{p}.{s}"));
        let bias = |s: &str| config.attention_bias.then(|| get(s));
        let ln1 = get("input_layernorm.weight");
        let normed: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, &ln1.data, eps)).collect();
        let mut q = linear(&normed, &get("self_attn.q_proj.weight"), bias("self_attn.q_proj.bias").as_ref());
        let mut k = linear(&normed, &get("self_attn.k_proj.weight"), bias("self_attn.k_proj.bias").as_ref());
        let v = linear(&normed, &get("self_attn.v_proj.weight"), bias("self_attn.v_proj.bias").as_ref());
        for pos in 0..n {
            for head in 0..nh {
                let s = &mut q[pos][head * hd..(head + 1) * hd];
                if config.qk_norm {
                    let normed = rms_norm(s, &get("self_attn.q_norm.weight").data, eps);
                    s.copy_from_slice(&normed);
                }
                rope(s, pos, &inv_freq);
            }
            for head in 0..nkv {
                let s = &mut k[pos][head * hd..(head + 1) * hd];
                if config.qk_norm {
                    let normed = rms_norm(s, &get("self_attn.k_norm.weight").data, eps);
                    s.copy_from_slice(&normed);
                }
                rope(s, pos, &inv_freq);
            }
        }
        let mut attn = vec![vec![0.0; nh * hd]; n];
        let scale = 1.0 / (hd as f64).sqrt();
        for pos in 0..n {
            for head in 0..nh {
                let kvh = head / (nh / nkv);
                let qv = &q[pos][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=pos)
                    .map(|j| qv.iter().zip(&k[j][kvh * hd..(kvh + 1) * hd]).map(|(a, b)| a * b).sum::<f64>() * scale)
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[pos][head * hd + d] += ej / z * v[j][kvh * hd + d];
                    }
                }
            }
        }
        let o = linear(&attn, &get("self_attn.o_proj.weight"), None);
        for pos in 0..n {
            for i in 0..h {
                x[pos][i] += o[pos][i];
            }
        }
        let ln2 = get("post_attention_layernorm.weight");
        let normed: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, &ln2.data, eps)).collect();
        let gate = linear(&normed, &get("mlp.gate_proj.weight"), None);
        let up = linear(&normed, &get("mlp.up_proj.weight"), None);
        let act: Vec<Vec<f64>> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect())
            .collect();
        let down = linear(&act, &get("mlp.down_proj.weight"), None);
        for pos in 0..n {
            for i in 0..h {
                x[pos][i] += down[pos][i];
            }
        }
    }
    let norm = load(w, "model.norm.weight");
    let head = if config.tie_word_embeddings { embed } else { load(w, "lm_head.weight") };
    let normed: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, &norm.data, eps)).collect();
    linear(&normed, &head, None)
}

/// GPT-2's byte -> printable character table (the byte-level BPE alphabet).
fn byte_level_chars() -> Vec<char> {
    let mut bs: Vec<u32> =
        ('!' as u32..='~' as u32).chain('¡' as u32..='¬' as u32).chain('®' as u32..='ÿ' as u32).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).expect("valid char");
    }
    table
}

/// Vocabulary size of [`write_tiny_model_dir`] models: 256 bytes plus `<|endoftext|>`.
pub const TINY_VOCAB: usize = 257;

/// Writes a complete tiny model directory (config.json, model.safetensors with random weights,
/// a byte-level tokenizer.json without merges, tokenizer_config.json with a chat template).
pub fn write_tiny_model_dir(dir: &Path, num_layers: usize, seed: u64) -> ModelConfig {
    let config = ModelConfig::from_json_str(&format!(
        r#"{{"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":{num_layers},
        "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":{TINY_VOCAB},"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"max_position_embeddings":512,"tie_word_embeddings":true,"eos_token_id":256}}"#
    ))
    .expect("valid tiny config");
    cola_model::weights::save_checkpoint(dir, &config, &RandomWeights::new(&config, seed)).expect("save tiny model");
    let vocab: serde_json::Map<String, serde_json::Value> =
        byte_level_chars().iter().enumerate().map(|(i, c)| (c.to_string(), serde_json::json!(i))).collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("write tokenizer");
    let tok_config = serde_json::json!({
        "eos_token": "<|endoftext|>",
        "chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), tok_config.to_string()).expect("write tokenizer config");
    config
}

/// A small multiple-choice task in the user JSONL format: `n` items, three choices each.
pub fn write_tiny_task(path: &Path, n: usize) {
    let colors = ["red", "green", "blue"];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("q{i}"), "question": format!("Which color is item {i}?"),
                "choices": colors, "answer": i % 3})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write task");
}

/// Layers of the tiny model [`write_tiny_fixture`] writes.
pub const TINY_LAYERS: usize = 6;

/// The end-to-end tests' fixture in `dir`: `model/` ([`TINY_LAYERS`] layers, seed 99) and
/// `tiny.jsonl` with `items` items. Returns (model dir, data file).
pub fn write_tiny_fixture(dir: &Path, items: usize) -> (PathBuf, PathBuf) {
    let (model_dir, data) = (dir.join("model"), dir.join("tiny.jsonl"));
    write_tiny_model_dir(&model_dir, TINY_LAYERS, 99);
    write_tiny_task(&data, items);
    (model_dir, data)
}

/// The search settings the end-to-end tests use on tiny models.
pub fn tiny_search_request(data: &Path, out: &Path, num_layers: usize) -> cola_search::SearchRequest {
    use cola_eval::{ScoringMode, ScoringOptions};
    use cola_search::{Baseline, SearchSettings, Selection, Source};
    cola_search::SearchRequest {
        selection: Selection {
            sources: vec![Source::File { path: data.to_path_buf(), name: "tiny".into() }],
            limit: None,
            offset: 0,
            shard: None,
            subject: None,
            split: None,
            sample: Default::default(),
        },
        data_dir: out.to_path_buf(),
        out_dir: out.to_path_buf(),
        force: false,
        seed: 7,
        settings: SearchSettings {
            tree: cola_search::sample::TreeSettings {
                actions: cola_mcts::chains::ActionPreset::Paper,
                simulations: 25,
                lambda: 5.0,
                c: std::f64::consts::SQRT_2,
                epsilon: 0.1,
                min_len: num_layers / 2,
                max_len: num_layers + num_layers / 2,
            },
            early_stop_margin: None,
            baseline: Baseline::Random,
            random_max_edits: 4,
            scoring: ScoringOptions::new(ScoringMode::Loglik),
            batch: 1,
        },
        cache_mib: 64,
        backend: cola_executor::backend::BackendKind::Cpu,
        other_searchers: Vec::new(),
    }
}
