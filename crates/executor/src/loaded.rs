//! A model directory loaded for running chains: tokenizer and executor together.

use std::path::Path;

use cola_model::{LayerOps, TextTokenizer};

use crate::{ExecError, Executor};

/// A model directory's tokenizer and executor, loaded together.
pub struct LoadedChainModel<B: LayerOps> {
    pub executor: Executor<B>,
    pub tokenizer: TextTokenizer,
    /// The directory it was loaded from.
    pub dir: std::path::PathBuf,
}

impl<B: LayerOps> LoadedChainModel<B> {
    pub fn load(dir: &Path, device: B::Device) -> Result<Self, ExecError> {
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let executor = Executor::load(dir, device)?;
        Ok(LoadedChainModel { executor, tokenizer, dir: dir.to_path_buf() })
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
