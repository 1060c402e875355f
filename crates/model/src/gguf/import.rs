//! From a parsed GGUF to an HF-layout model: metadata to config, GGUF tensor names to HF
//! names, tensors dequantized and un-permuted on request, and the import itself.

use std::path::Path;

use super::{GgufFile, TensorInfo, Value, qk_row_order, unpermute_qk_rows};
use crate::ModelError;
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::tensors::{LayerTensor, ModelTensor};
use crate::weights::{HostTensor, WeightSource, save_checkpoint};
use cola_kernels::stored::StoredMatrix;

impl GgufFile {
    /// The architecture config implied by the metadata.
    pub fn model_config(&self) -> Result<ModelConfig, ModelError> {
        let arch_name = self.meta_str("general.architecture")?;
        let architecture = Architecture::from_gguf_name(arch_name).ok_or_else(|| {
            ModelError::file(
                &self.path,
                format!(
                    "general.architecture `{arch_name}` is not supported ({})",
                    Architecture::supported(Architecture::gguf_name)
                ),
            )
        })?;
        let k = |s: &str| format!("{arch_name}.{s}");
        let hidden = self.meta_u64(&k("embedding_length"))? as usize;
        let heads = self.meta_u64(&k("attention.head_count"))? as usize;
        let kv_heads = match self.metadata.get(&k("attention.head_count_kv")) {
            Some(v) => {
                v.as_u64().ok_or_else(|| ModelError::file(&self.path, "head_count_kv is not an integer"))? as usize
            }
            None => heads,
        };
        let embd = self
            .tensors
            .get("token_embd.weight")
            .ok_or_else(|| ModelError::file(&self.path, "tensor `token_embd.weight` is missing"))?;
        let vocab = embd.dims.get(1).copied().unwrap_or(0);
        let head_dim = match self.metadata.get(&k("attention.key_length")) {
            Some(v) => v.as_u64().unwrap_or(0) as usize,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let get_f =
            |key: &str, default: f64| -> f64 { self.metadata.get(&k(key)).and_then(Value::as_f64).unwrap_or(default) };
        let bos = self.metadata.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64).map(|v| v as u32);
        let eos = self.metadata.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64).map(|v| v as u32);
        let config = ModelConfig {
            architecture,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.meta_u64(&k("feed_forward_length"))? as usize,
            num_layers: self.meta_u64(&k("block_count"))? as usize,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rms_norm_eps: get_f("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: get_f("rope.freq_base", 10_000.0),
            rope_scaling: RopeScaling::None,
            max_position_embeddings: self.meta_u64(&k("context_length")).unwrap_or(2048) as usize,
            tie_word_embeddings: !self.tensors.contains_key("output.weight"),
            attention_bias: architecture == Architecture::Qwen2,
            qk_norm: architecture == Architecture::Qwen3,
            sliding_window: None,
            bos_token_id: bos,
            eos_token_ids: eos.into_iter().collect(),
        };
        if let Some(v) = self.metadata.get(&k("rope.scaling.type"))
            && v.as_str() != Some("none")
        {
            return Err(ModelError::file(
                &self.path,
                format!("`{arch_name}.rope.scaling.type` = {v:?} is not supported"),
            ));
        }
        // Round-trip through the HF parser so the same validation applies to both paths.
        ModelConfig::from_json_str(&config.to_hf_json().to_string()).map_err(|e| e.in_file(&self.path))
    }
}
/// The GGUF's tensors seen under HF names, dequantized and un-permuted on request.
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    config: ModelConfig,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile) -> Result<Self, ModelError> {
        Ok(GgufWeights { config: file.model_config()?, file })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

impl WeightSource for GgufWeights<'_> {
    fn contains(&self, name: &str) -> bool {
        ModelTensor::from_hf_name(name).is_some_and(|t| self.file.tensors.contains_key(&t.gguf_name()))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor, ModelError> {
        let (info, permuted_heads) = self.locate(name)?;
        let mut data = self.file.dequantize(info);
        let shape = info.torch_shape();
        if let Some(heads) = permuted_heads.filter(|_| shape.len() == 2) {
            data = unpermute_qk_rows(&data, shape[0], shape[1], heads);
        }
        Ok(HostTensor::new(shape, data))
    }

    fn stored(&self, name: &str) -> Result<StoredMatrix, ModelError> {
        let (info, permuted_heads) = self.locate(name)?;
        let stored = self.file.stored(info)?;
        Ok(match permuted_heads {
            // Whole stored rows move, so the blocks stay as they are.
            Some(heads) => stored.with_row_order(&qk_row_order(stored.rows(), heads)),
            None => stored,
        })
    }
}

impl GgufWeights<'_> {
    /// The tensor's header entry, and the head count when its rows are in llama.cpp's q/k order.
    fn locate(&self, name: &str) -> Result<(&TensorInfo, Option<usize>), ModelError> {
        let tensor = ModelTensor::from_hf_name(name)
            .ok_or_else(|| ModelError::file(&self.file.path, format!("no GGUF tensor corresponds to `{name}`")))?;
        let g = tensor.gguf_name();
        let info = self
            .file
            .tensors
            .get(&g)
            .ok_or_else(|| ModelError::file(&self.file.path, format!("tensor `{g}` (for `{name}`) is missing")))?;
        // llama.cpp permutes q/k only for the llama architecture (its qwen models use NeoX RoPE).
        let heads = match tensor {
            _ if self.config.architecture != Architecture::Llama => None,
            ModelTensor::Layer(_, LayerTensor::Q) => Some(self.config.num_heads),
            ModelTensor::Layer(_, LayerTensor::K) => Some(self.config.num_kv_heads),
            _ => None,
        };
        if let Some(h) = heads
            && (h == 0 || info.dims.len() != 2 || info.dims[1] % h != 0 || (info.dims[1] / h) % 2 != 0)
        {
            return Err(ModelError::file(
                &self.file.path,
                format!(
                    "tensor `{g}`: {} rows do not split into {h} heads of even size",
                    info.dims.get(1).unwrap_or(&0)
                ),
            ));
        }
        Ok((info, heads))
    }
}

/// Imports a GGUF file into an HF-layout directory: config.json, model.safetensors (f32),
/// tokenizer.json and tokenizer_config.json.
pub fn import_gguf(gguf_path: &Path, out_dir: &Path) -> Result<ModelConfig, ModelError> {
    let file = GgufFile::open(gguf_path)?;
    let weights = GgufWeights::new(&file)?;
    let config = weights.config().clone();
    // Tokenizer first: it is cheap and its errors are the most likely ones.
    let tokenizer = crate::tokenizer::tokenizer_from_gguf(&file)?;
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;
    let tok_path = out_dir.join("tokenizer.json");
    tokenizer
        .tokenizer
        .save(&tok_path, false)
        .map_err(|e| ModelError::file(&tok_path, format!("cannot write: {e}")))?;
    let cfg_path = out_dir.join("tokenizer_config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&tokenizer.config).expect("json"))
        .map_err(|e| ModelError::io(&cfg_path, e))?;
    save_checkpoint(out_dir, &config, &weights)?;
    Ok(config)
}
