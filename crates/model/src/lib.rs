//! Model loading: a Llama-family checkpoint on disk becomes burn modules.
//!
//! Reads HF `config.json` (llama, mistral, qwen2, qwen3), safetensors weights (single or sharded,
//! f32/f16/bf16), `tokenizer.json` and the chat template, and GGUF files (Q4_0/Q4_1/Q8_0 blocks,
//! 16/32-bit floats) directly or imported into that same layout. Weights stay in the format the
//! file stores them in ([`cola_kernels::stored`]) on the CPU; other backends get them dequantized
//! to f32. It also defines the decoder layer itself (one readable file, [`llama`]), whose steps
//! run through the seam of `cola-kernels`; the kernel types its API uses are re-exported here.
//!
//! This crate knows nothing of chains, search or benchmarks, and depends on no crate of the
//! project but `cola-kernels` (and `cola-names`).

pub mod config;
pub mod gguf;
pub mod llama;
pub mod tensors;
pub mod tokenizer;
pub mod weights;

use std::path::{Path, PathBuf};

pub use cola_kernels::{AttnMask, Heads, KvCache, LayerOps, Positions, Rope, StoredMatrix, WeightFormat};
pub use config::{Architecture, ModelConfig};
pub use llama::{CausalLm, DecoderLayer, Segment, TokenTree, WeightPrecision};
pub use tokenizer::TextTokenizer;
pub use weights::{HostTensor, WeightSource};

/// An error of this crate: always says which file, tensor or field is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("config: {0}")]
    Config(String),
    // The io error is part of the message, not a `source`, so `{:#}` chains print it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ModelError {
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), error }
    }

    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ModelError::File { file: file.to_path_buf(), message: message.into() }
    }

    /// Attaches a file name to an error that was raised without one.
    pub fn in_file(self, file: &Path) -> Self {
        match self {
            ModelError::Config(m) => ModelError::file(file, m),
            ModelError::Invalid(m) => ModelError::file(file, m),
            other => other,
        }
    }
}

/// A checkpoint loaded onto a device.
pub struct LoadedModel<B: LayerOps> {
    pub config: ModelConfig,
    pub model: CausalLm<B>,
    pub tokenizer: TextTokenizer,
}

/// Loads a checkpoint onto `device`: an HF-layout directory (`config.json`, safetensors,
/// tokenizer files) or a `.gguf` file (config, weights and tokenizer from the file; a
/// `tokenizer.json` beside it when the file has no tokenizer). Weights are held as `precision`
/// asks.
pub fn load_model<B: LayerOps>(
    path: &Path, device: &B::Device, precision: WeightPrecision,
) -> Result<LoadedModel<B>, ModelError> {
    load(path, device, precision, true).map(|(config, model, tokenizer)| LoadedModel {
        config,
        model,
        tokenizer: tokenizer.expect("asked for"),
    })
}

/// [`load_model`] without the tokenizer: the config and the weights.
pub fn load_weights<B: LayerOps>(
    path: &Path, device: &B::Device, precision: WeightPrecision,
) -> Result<(ModelConfig, CausalLm<B>), ModelError> {
    load(path, device, precision, false).map(|(config, model, _)| (config, model))
}

/// Config, weights and (when asked) tokenizer, a GGUF file parsed once for all three.
fn load<B: LayerOps>(
    path: &Path, device: &B::Device, precision: WeightPrecision, with_tokenizer: bool,
) -> Result<(ModelConfig, CausalLm<B>, Option<TextTokenizer>), ModelError> {
    let _span = tracing::info_span!("load_model", path = %path.display()).entered();
    if path.is_file() {
        let file = gguf::GgufFile::open(path)?;
        let weights = gguf::GgufWeights::new(&file)?;
        let config = weights.config().clone();
        let model = CausalLm::from_source(&config, &weights, device, precision)?;
        let tokenizer = with_tokenizer.then(|| TextTokenizer::from_gguf(&file)).transpose()?;
        return Ok((config, model, tokenizer));
    }
    if !path.is_dir() {
        return Err(ModelError::file(path, "no such model directory or GGUF file"));
    }
    let config = ModelConfig::from_file(&path.join("config.json"))?;
    let source = weights::SafetensorsDir::open(path)?;
    let model = CausalLm::from_source(&config, &source, device, precision)?;
    let tokenizer = with_tokenizer.then(|| TextTokenizer::from_dir(path)).transpose()?;
    Ok((config, model, tokenizer))
}

/// Where `--model NAME` points: an existing path (directory or file) as it is, else a Hugging
/// Face hub id (`org/name`) looked up offline in the local hub cache (`$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`): the snapshot `refs/main` names, or the
/// only snapshot there is.
pub fn resolve_model_path(name: &str) -> Result<PathBuf, ModelError> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let hub = hf_hub_cache();
    let is_id = name.split('/').count() == 2 && !name.starts_with(['.', '/']) && !name.ends_with(".gguf");
    if !is_id {
        return Err(ModelError::file(path, "no such model directory or GGUF file"));
    }
    let repo = hub.join(format!("models--{}", name.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let from_ref = std::fs::read_to_string(repo.join("refs/main")).ok().map(|c| snapshots.join(c.trim()));
    let only = || {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots).ok()?.flatten().map(|e| e.path()).collect();
        if let [one] = &dirs[..] { Some(one.clone()) } else { None }
    };
    match from_ref.filter(|p| p.is_dir()).or_else(only) {
        Some(dir) => Ok(dir),
        None => Err(ModelError::file(
            path,
            format!(
                "not a model directory or GGUF file, and not in the Hugging Face cache (looked for {}; set \
                 HF_HOME or HF_HUB_CACHE if the cache lives elsewhere)",
                snapshots.display()
            ),
        )),
    }
}

fn hf_hub_cache() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .unwrap_or_else(|| var("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache/huggingface/hub"))
}
