//! Model loading: a Llama-family checkpoint on disk becomes burn modules.
//!
//! Reads HF `config.json` (llama, mistral, qwen2, qwen3), safetensors weights (single or sharded,
//! f32/f16/bf16, computed in f32), `tokenizer.json` and the chat template; imports GGUF files into
//! that same layout. It also defines the decoder layer itself (one readable file, [`llama`]).
//!
//! This crate knows nothing of chains, search or benchmarks, and must not depend on any other
//! crate of the project.

pub mod config;
pub mod flex_ops;
pub mod gguf;
pub mod llama;
pub mod ops;
pub mod tensors;
pub mod tokenizer;
pub mod weights;

use std::path::{Path, PathBuf};

pub use config::{Architecture, ModelConfig};
pub use llama::{CausalLm, DecoderLayer, KvCache, Rope, Segment, TokenTree};
pub use ops::{AttnMask, Heads, LayerOps, Positions};
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

/// A checkpoint directory in HF layout, loaded onto a device.
pub struct LoadedModel<B: LayerOps> {
    pub config: ModelConfig,
    pub model: CausalLm<B>,
    pub dir: PathBuf,
}

/// Loads `config.json` and the safetensors weights of `dir` onto `device`.
pub fn load_model<B: LayerOps>(dir: &Path, device: &B::Device) -> Result<LoadedModel<B>, ModelError> {
    let _span = tracing::info_span!("load_model", dir = %dir.display()).entered();
    if !dir.is_dir() {
        return Err(ModelError::file(dir, "model directory does not exist"));
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let source = weights::SafetensorsDir::open(dir)?;
    let model = CausalLm::from_source(&config, &source, device)?;
    Ok(LoadedModel { config, model, dir: dir.to_path_buf() })
}
