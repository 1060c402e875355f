//! A checkpoint loaded for running chains: tokenizer and executor together.

use std::path::Path;

use cola_model::{LayerOps, TextTokenizer, WeightPrecision};

use crate::{ExecError, Executor};

/// A checkpoint's tokenizer and executor, loaded together.
pub struct LoadedChainModel<B: LayerOps> {
    pub executor: Executor<B>,
    pub tokenizer: TextTokenizer,
    /// The directory or GGUF file it was loaded from.
    pub dir: std::path::PathBuf,
    /// Whether its products are approximate (`--weights stored-int8` on a backend that keeps
    /// weights as stored): runs record it, as it changes results.
    pub int8_activations: bool,
}

impl<B: LayerOps> LoadedChainModel<B> {
    /// Loads an HF-layout directory or a `.gguf` file, weights as stored.
    pub fn load(path: &Path, device: B::Device) -> Result<Self, ExecError> {
        Self::load_with(path, device, WeightPrecision::Stored)
    }

    /// [`Self::load`] with the weights held as `precision` asks.
    pub fn load_with(path: &Path, device: B::Device, precision: WeightPrecision) -> Result<Self, ExecError> {
        let loaded = cola_model::load_model::<B>(path, &device, precision)?;
        let int8_activations = loaded.model.int8_products();
        let executor = Executor::new(loaded.model, loaded.config, device);
        Ok(LoadedChainModel { executor, tokenizer: loaded.tokenizer, dir: path.to_path_buf(), int8_activations })
    }

    /// Prompt ids for `text`, through the chat template when `chat` is set.
    pub fn prompt_ids(&self, text: &str, chat: bool) -> Result<Vec<u32>, ExecError> {
        Ok(if chat { self.tokenizer.encode_chat(text)? } else { self.tokenizer.encode(text)? })
    }

    /// Ids that end a greedy generation for this model.
    pub fn stop_ids(&self) -> Vec<u32> {
        self.tokenizer.stop_ids(&self.executor.config().eos_token_ids)
    }
}
