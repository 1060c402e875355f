//! Writes a model as a GGUF file (llama architecture), one tensor at a time, so a model larger
//! than memory in f32 (random weights of an 8B shape) can be written: the header and tensor
//! offsets come from the shapes alone, then each tensor is fetched, quantized and appended.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{ggml_type_id, qk_row_order};
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::tensors::{LayerTensor, ModelTensor};
use crate::weights::WeightSource;
use crate::{HostTensor, ModelError};
use cola_kernels::stored::{WeightFormat, quantize};

const ALIGNMENT: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_kv_u32(out: &mut Vec<u8>, key: &str, v: u32) {
    put_str(out, key);
    out.extend(4u32.to_le_bytes());
    out.extend(v.to_le_bytes());
}

fn put_kv_f32(out: &mut Vec<u8>, key: &str, v: f32) {
    put_str(out, key);
    out.extend(6u32.to_le_bytes());
    out.extend(v.to_le_bytes());
}

/// Writes `config`'s tensors from `source` to `path` as GGUF: 2-D weights in `format`, norms in
/// F32, q/k rows in llama.cpp's order (what [`super::GgufWeights`] undoes). No tokenizer is
/// written (tokenizer model `none`); a `tokenizer.json` beside the file serves
/// [`crate::TextTokenizer::load`].
pub fn write_gguf(
    path: &Path, config: &ModelConfig, source: &dyn WeightSource, format: WeightFormat,
) -> Result<(), ModelError> {
    if config.architecture != Architecture::Llama {
        return Err(ModelError::Invalid("only llama-architecture models are written as GGUF".into()));
    }
    if config.rope_scaling != RopeScaling::None {
        return Err(ModelError::Invalid("RoPE scaling is not written to GGUF; use a config without it".into()));
    }
    let (per_block, _) = format.block();
    if !config.hidden_size.is_multiple_of(per_block) || !config.intermediate_size.is_multiple_of(per_block) {
        return Err(ModelError::Invalid(format!(
            "hidden {} and intermediate {} sizes must be multiples of the {format} block size {per_block}",
            config.hidden_size, config.intermediate_size
        )));
    }
    let tensors = crate::tensors::all(config);
    let tensor_format = |t: &ModelTensor| if t.shape(config).len() == 2 { format } else { WeightFormat::F32 };
    let mut head = b"GGUF".to_vec();
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    let mut kv = Vec::new();
    put_str(&mut kv, "general.architecture");
    kv.extend(8u32.to_le_bytes());
    put_str(&mut kv, "llama");
    let mut n_kv = 1u64;
    for (key, v) in [
        ("llama.embedding_length", config.hidden_size),
        ("llama.feed_forward_length", config.intermediate_size),
        ("llama.block_count", config.num_layers),
        ("llama.attention.head_count", config.num_heads),
        ("llama.attention.head_count_kv", config.num_kv_heads),
        ("llama.attention.key_length", config.head_dim),
        ("llama.context_length", config.max_position_embeddings),
        // With tokenizer model `none` below, llama.cpp takes the vocabulary size from here (and
        // adds dummy tokens), so its `llama-bench` runs on these files.
        ("llama.vocab_size", config.vocab_size),
    ] {
        put_kv_u32(&mut kv, key, v as u32);
        n_kv += 1;
    }
    put_kv_f32(&mut kv, "llama.rope.freq_base", config.rope_theta as f32);
    put_kv_f32(&mut kv, "llama.attention.layer_norm_rms_epsilon", config.rms_norm_eps as f32);
    put_str(&mut kv, "tokenizer.ggml.model");
    kv.extend(8u32.to_le_bytes());
    put_str(&mut kv, "none");
    n_kv += 3;
    head.extend(n_kv.to_le_bytes());
    head.extend(kv);
    let mut offset = 0usize;
    let mut sizes = Vec::new();
    for t in &tensors {
        let shape = t.shape(config);
        put_str(&mut head, &t.gguf_name());
        head.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            head.extend((*d as u64).to_le_bytes());
        }
        let f = tensor_format(t);
        head.extend(ggml_type_id(f).to_le_bytes());
        head.extend((offset as u64).to_le_bytes());
        let n: usize = shape.iter().product();
        let size = f.bytes_for(n).expect("whole blocks");
        sizes.push(size);
        offset += size.div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    head.resize(head.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    let tmp = path.with_extension("gguf.partial");
    let file = File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let io = |e| ModelError::io(&tmp, e);
    out.write_all(&head).map_err(io)?;
    for (t, size) in tensors.iter().zip(sizes) {
        let HostTensor { shape, data } = source.tensor(&t.hf_name())?;
        // llama.cpp stores q/k rows permuted for its interleaved RoPE: GGUF row order[r] is HF row r.
        let heads = match t {
            ModelTensor::Layer(_, LayerTensor::Q) => Some(config.num_heads),
            ModelTensor::Layer(_, LayerTensor::K) => Some(config.num_kv_heads),
            _ => None,
        };
        let data = match heads {
            Some(h) => {
                let (rows, cols) = (shape[0], shape[1]);
                let mut permuted = vec![0.0f32; data.len()];
                for (dst, src) in qk_row_order(rows, h).into_iter().enumerate() {
                    permuted[src * cols..(src + 1) * cols].copy_from_slice(&data[dst * cols..(dst + 1) * cols]);
                }
                permuted
            }
            None => data,
        };
        let bytes = quantize(tensor_format(t), &data);
        debug_assert_eq!(bytes.len(), size);
        out.write_all(&bytes).map_err(io)?;
        out.write_all(&vec![0u8; size.div_ceil(ALIGNMENT) * ALIGNMENT - size]).map_err(io)?;
    }
    out.into_inner().map_err(|e| ModelError::io(&tmp, e.into_error()))?.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}
