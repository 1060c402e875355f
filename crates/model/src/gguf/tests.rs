//! GGUF reading, dequantisation and import, against files written by [`super::builder`].

use super::*;
use cola_kernels::stored::{WeightFormat, dequantize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::builder::GgufBuilder as Builder;

fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("t.gguf");
    File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn q4_1_block_decodes_by_definition() {
    // d = 0.5, m = -1.0; nibbles 0..15 in low halves, 15..0 in high halves.
    let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    b.extend(half::f16::from_f32(-1.0).to_le_bytes());
    for j in 0..16u8 {
        b.push(j | ((15 - j) << 4));
    }
    let x = dequantize(WeightFormat::Q4_1, &b);
    for j in 0..16 {
        assert_eq!(x[j], j as f32 * 0.5 - 1.0);
        assert_eq!(x[j + 16], (15 - j) as f32 * 0.5 - 1.0);
    }
}

#[test]
fn q4_0_and_q8_0_blocks_decode_by_definition() {
    let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
    for j in 0..16u8 {
        b.push(j | (j << 4));
    }
    let x = dequantize(WeightFormat::Q4_0, &b);
    assert_eq!(x[3], (3 - 8) as f32 * 2.0);
    assert_eq!(x[16 + 15], (15 - 8) as f32 * 2.0);
    let mut b = half::f16::from_f32(0.25).to_le_bytes().to_vec();
    b.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let x = dequantize(WeightFormat::Q8_0, &b);
    assert_eq!(x[0], -4.0);
    assert_eq!(x[31], 15.0 * 0.25);
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
    let (heads, hd, cols) = (3, 8, 2);
    let rows = heads * hd;
    let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
    let mut permuted = vec![0.0; hf.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..hd / 2 {
                let src = h * hd + j * hd / 2 + i; // (h, j, i)
                let dst = h * hd + i * 2 + j; // (h, i, j) after swapaxes
                permuted[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
            }
        }
    }
    assert_eq!(unpermute_qk_rows(&permuted, rows, cols, heads), hf);
}

#[test]
fn reads_metadata_and_f32_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let vals: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes =
        Builder::new().kv_str("general.architecture", "llama").kv_u32("x", 7).tensor("w", &[3, 2], 0, &vals).build();
    let f = GgufFile::open(&write(dir.path(), &bytes)).unwrap();
    assert_eq!(f.metadata["x"], Value::U32(7));
    let t = &f.tensors["w"];
    assert_eq!(t.torch_shape(), vec![2, 3]);
    assert_eq!(f.dequantize(t), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn lying_counts_and_truncation_are_errors_not_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let vals = vec![0u8; 24];
    let good = Builder::new().kv_str("general.architecture", "llama").tensor("w", &[3, 2], 0, &vals).build();
    // tensor count claims 2^60
    let mut lie = good.clone();
    lie[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = GgufFile::open(&write(dir.path(), &lie)).err().unwrap().to_string();
    assert!(e.contains("exceeds the file size") && e.contains("t.gguf"), "{e}");
    // string length claims 2^40
    let mut lie = good.clone();
    lie[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = GgufFile::open(&write(dir.path(), &lie)).err().unwrap().to_string();
    assert!(e.contains("exceeds the file size"), "{e}");
    // data cut short
    let e = GgufFile::open(&write(dir.path(), &good[..good.len() - 20])).err().unwrap().to_string();
    assert!(e.contains("outside the file"), "{e}");
    // bad magic and empty file
    assert!(GgufFile::open(&write(dir.path(), b"GGUX")).err().unwrap().to_string().contains("magic"));
    assert!(GgufFile::open(&write(dir.path(), b"")).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Any corruption of a valid file (overwritten bytes, truncation) is an error or a
    /// parse, never a panic or a huge allocation.
    #[test]
    fn corrupted_files_never_panic(
        edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
        cut in 0usize..400,
    ) {
        let vals: Vec<u8> = (0..24u8).collect();
        let mut bytes = Builder::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .tensor("w", &[3, 2], 0, &vals)
            .tensor("q", &[32], 8, &[7u8; 34])
            .build();
        for (at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(bytes.len() - cut % bytes.len());
        let dir = tempfile::tempdir().unwrap();
        if let Ok(f) = GgufFile::open(&write(dir.path(), &bytes)) {
            for t in f.tensors.values() {
                let _ = f.dequantize(t);
                let _ = f.stored(t);
            }
            let _ = f.model_config();
        }
    }
}

#[test]
fn unsupported_quantization_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = Builder::new().tensor("w", &[256], 12, &[0u8; 144]).build();
    let e = GgufFile::open(&write(dir.path(), &bytes)).err().unwrap().to_string();
    assert!(e.contains("Q4_K") && e.contains("`w`"), "{e}");
}

/// A tiny llama GGUF whose 2-D weights are all stored as `format` (norms F32), from random
/// weights; hidden 64, so every row is whole blocks.
fn tiny_gguf(dir: &Path, format: WeightFormat) -> PathBuf {
    use crate::weights::{RandomWeights, WeightSource};
    use cola_kernels::stored::quantize;
    let config = crate::ModelConfig::from_json_str(
        r#"{"model_type":"llama","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
        "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":40,"rms_norm_eps":1e-5}"#,
    )
    .unwrap();
    let random = RandomWeights::new(&config, 5);
    let mut b = Builder::new();
    b.kv_str("general.architecture", "llama")
        .kv_u32("llama.embedding_length", 64)
        .kv_u32("llama.attention.head_count", 4)
        .kv_u32("llama.attention.head_count_kv", 2)
        .kv_u32("llama.feed_forward_length", 96)
        .kv_u32("llama.block_count", 2)
        .kv_u32("llama.context_length", 256);
    for t in crate::tensors::all(&config) {
        let values = random.tensor(&t.hf_name()).unwrap();
        let dims: Vec<u64> = values.shape.iter().rev().map(|&d| d as u64).collect();
        let f = if dims.len() == 2 { format } else { WeightFormat::F32 };
        b.tensor(&t.gguf_name(), &dims, ggml_type_id(f), &quantize(f, &values.data));
    }
    write(dir, &b.build())
}

/// The f32 tensors of a GGUF as the import writes them (dequantized, q/k rows un-permuted in
/// f32); only `tensor` is given, so `stored` falls back to f32.
struct Imported<'a>(GgufWeights<'a>);

impl crate::WeightSource for Imported<'_> {
    fn tensor(&self, name: &str) -> Result<crate::HostTensor, crate::ModelError> {
        self.0.tensor(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Logits of every position of `ids` through all layers.
fn logits(model: &crate::CausalLm<burn_flex::Flex>, config: &crate::ModelConfig, ids: &[u32]) -> Vec<f32> {
    let device = Default::default();
    let rope = crate::Rope::new(&config.rope_inv_freq(), 64, &device);
    let mut x = model.embed(ids, &device);
    for layer in &model.layers {
        x = layer.forward(x, &rope, &[crate::Segment { rows: ids.len(), past: None, tree: None }]).0;
    }
    model.logits(x).into_data().into_vec::<f32>().unwrap()
}

/// Loaded directly, every format computes from its stored blocks and gives the logits of its
/// f32 import (up to the order of float sums), for few rows (the streaming kernel) and many
/// (the gemm path), q/k rows reordered as whole blocks.
#[test]
fn direct_gguf_equals_its_f32_import_in_every_format() {
    use crate::llama::{ProjWeight, TokenEmbedding};
    let dir = tempfile::tempdir().unwrap();
    for format in WeightFormat::ALL {
        let file = GgufFile::open(&tiny_gguf(dir.path(), format)).unwrap();
        let weights = GgufWeights::new(&file).unwrap();
        let config = weights.config().clone();
        let device = Default::default();
        let direct =
            crate::CausalLm::<burn_flex::Flex>::from_source(&config, &weights, &device, Default::default()).unwrap();
        match (&direct.layers[0].self_attn.qkv_proj.weight, &direct.embed_tokens) {
            (ProjWeight::Stored(parts), TokenEmbedding::Stored(e)) => {
                assert!(parts.iter().all(|p| p.format() == format) && e.format() == format, "{format}");
            }
            _ => panic!("{format}: the CPU did not keep the stored weights"),
        }
        let imported = crate::CausalLm::<burn_flex::Flex>::from_source(
            &config,
            &Imported(GgufWeights::new(&file).unwrap()),
            &device,
            Default::default(),
        )
        .unwrap();
        for n in [3, 40] {
            let ids: Vec<u32> = (0..n).map(|i| (i * 7 % 40) as u32).collect();
            let (a, b) = (logits(&direct, &config, &ids), logits(&imported, &config, &ids));
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max);
            assert!(worst < 1e-4, "{format}, {n} tokens: direct and imported logits differ by {worst}");
        }
    }
}

/// A model written as GGUF reads back tensor for tensor (F32: exactly; q/k rows permuted on
/// write and un-permuted on read), with the same config.
#[test]
fn written_gguf_reads_back() {
    use crate::weights::{RandomWeights, WeightSource};
    let dir = tempfile::tempdir().unwrap();
    let config = crate::ModelConfig::from_json_str(
        r#"{"model_type":"llama","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
        "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":40,"rms_norm_eps":1e-5,
        "rope_theta":50000.0,"max_position_embeddings":256}"#,
    )
    .unwrap();
    let random = RandomWeights::new(&config, 3);
    // Into a directory that does not exist yet (it is created, as for safetensors output).
    let path = dir.path().join("new/m.gguf");
    write_gguf(&path, &config, &random, WeightFormat::F32).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let back = GgufWeights::new(&file).unwrap();
    assert_eq!(back.config().to_hf_json(), config.to_hf_json());
    for t in crate::tensors::all(&config) {
        assert_eq!(back.tensor(&t.hf_name()).unwrap(), random.tensor(&t.hf_name()).unwrap(), "{}", t.hf_name());
    }
    write_gguf(&path, &config, &random, WeightFormat::Q4_0).unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tensors["blk.0.attn_q.weight"].format, WeightFormat::Q4_0);
    assert_eq!(file.tensors["blk.0.attn_norm.weight"].format, WeightFormat::F32);
}

/// `--weights stored-int8` is opt-in and approximate: on a CPU with AVX2 or AVX-512 VNNI, few rows
/// (3 tokens: decoding, lockstep) and many (40: prefill) give logits near the exact ones but
/// not equal (activations rounded to 8 bits); without either, loading says what the mode needs. Float formats stay exact under it, and the model says so
/// (runs record it).
#[test]
fn int8_activations_are_close_to_exact_and_opt_in() {
    use crate::WeightPrecision;
    let dir = tempfile::tempdir().unwrap();
    for format in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0, WeightFormat::F16] {
        let file = GgufFile::open(&tiny_gguf(dir.path(), format)).unwrap();
        let weights = GgufWeights::new(&file).unwrap();
        let config = weights.config().clone();
        let device = Default::default();
        let load = |p| crate::CausalLm::<burn_flex::Flex>::from_source(&config, &weights, &device, p);
        let exact = load(WeightPrecision::Stored).unwrap();
        if cola_kernels::stored::int8::Int8Kernel::detect().is_none() {
            let e = load(WeightPrecision::StoredInt8).unwrap_err().to_string();
            assert!(e.contains("stored-int8") && e.contains("AVX2"), "{e}");
            continue;
        }
        assert!(WeightPrecision::StoredInt8.is_approximate::<burn_flex::Flex>());
        let int8 = load(WeightPrecision::StoredInt8).unwrap();
        assert!(!exact.int8_products(), "{format}");
        if format == WeightFormat::F16 {
            assert!(!int8.int8_products(), "F16 has no int8 products");
            let ids = [1, 2, 3];
            assert_eq!(logits(&exact, &config, &ids), logits(&int8, &config, &ids), "F16 stays exact");
            continue;
        }
        assert!(int8.int8_products(), "{format}");
        for rows in [3, 40] {
            let ids: Vec<u32> = (0..rows).map(|i| (i * 7 % 40) as u32).collect();
            let (a, b) = (logits(&exact, &config, &ids), logits(&int8, &config, &ids));
            let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(worst > 0.0, "{format}, {rows} rows: the int8 products gave the exact logits (not used?)");
            assert!(worst < 0.05 * scale, "{format}, {rows} rows: int8 logits off by {worst} (largest logit {scale})");
        }
    }
}
