//! The CoLa executor: runs a frozen model along any chain of layers.
//!
//! Unrolled semantics: chain `[c0, c1, ...]` behaves exactly like a model whose layer list is
//! `[L[c0], L[c1], ...]`; every step (not every layer index) owns its K/V cache, so a repeated
//! layer attends over its own keys at each occurrence. The state after the first k steps
//! ([`ChainState`]) can be kept and continued with different suffixes, which is how the search
//! shares work between chains with a common prefix.
//!
//! Generic over the burn backend (CPU by default; `wgpu` and `cuda` by feature, see
//! [`backend`]). Depends on the model crate only; knows nothing of search or benchmarks.

pub mod backend;
mod batch;
mod branches;
pub mod chain;
mod influence;
mod loaded;
mod logits;
pub mod parity;
mod prefix_cache;

use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use cola_model::{CausalLm, KvCache, LayerOps, ModelConfig, ModelError, Rope, TokenTree};

pub use branches::Branches;
pub use chain::{Chain, ChainError, LengthBounds};
pub use influence::{least_influential_first, prune_by_influence};
pub use loaded::LoadedChainModel;
use logits::to_vec;
pub use logits::{argmax, log_softmax_at};
pub use prefix_cache::{CacheStats, PrefixCache};

/// Errors from running a chain: a bad chain, or input the model cannot take.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Input(String),
}

/// The result of running the first steps of a chain over a prompt: the hidden states of every
/// prompt position after those steps, and each step's K/V for later decoding.
/// Cloning is cheap (tensor handles are reference-counted).
#[derive(Debug, Clone)]
pub struct ChainState<B: Backend> {
    /// Layer index of each step applied so far.
    pub steps: Vec<usize>,
    /// `[positions, hidden]` (only the newest positions after [`Executor::append`]).
    pub hidden: Tensor<B, 2>,
    /// One entry per step, covering all positions so far.
    pub kv: Vec<KvCache<B>>,
    /// Token ids of all positions so far.
    pub ids: Arc<[u32]>,
    /// Set when the positions form a token tree (several continuations of one prompt): such a
    /// state can be scored with [`Executor::branch_logprobs`] but not extended.
    pub tree: Option<Arc<TokenTree<B>>>,
}

impl<B: Backend> ChainState<B> {
    pub fn num_positions(&self) -> usize {
        self.ids.len()
    }

    pub fn chain(&self) -> Chain {
        Chain::new(self.steps.clone())
    }
}

/// A loaded model ready to run chains on one device.
pub struct Executor<B: LayerOps> {
    model: CausalLm<B>,
    config: ModelConfig,
    rope: Rope<B>,
    device: B::Device,
    /// Layer steps [`Executor::append_batch`] computed, and those it took from another state of
    /// the same call instead (see [`Executor::append_steps`]).
    computed_steps: std::sync::atomic::AtomicU64,
    shared_steps: std::sync::atomic::AtomicU64,
}

/// Longest sequence the RoPE tables are built for unless the caller asks otherwise.
pub const DEFAULT_MAX_POSITIONS: usize = 4096;

impl<B: LayerOps> Executor<B> {
    pub fn new(model: CausalLm<B>, config: ModelConfig, device: B::Device) -> Self {
        let max_len = config.max_position_embeddings.clamp(1, DEFAULT_MAX_POSITIONS);
        let rope = Rope::new(&config.rope_inv_freq(), max_len, &device);
        Executor { model, config, rope, device, computed_steps: Default::default(), shared_steps: Default::default() }
    }

    /// (computed, shared) layer steps of appending (decoding) since this executor was made:
    /// a step is shared when an identical state of the same batch (same steps so far, same
    /// tokens) computed it.
    pub fn append_steps(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.computed_steps.load(Relaxed), self.shared_steps.load(Relaxed))
    }

    /// Loads the weights of a model directory or `.gguf` file onto `device` (no tokenizer needed).
    pub fn load(path: &std::path::Path, device: B::Device) -> Result<Self, ExecError> {
        let (config, model) = cola_model::load_weights::<B>(path, &device, Default::default())?;
        Ok(Self::new(model, config, device))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn model(&self) -> &CausalLm<B> {
        &self.model
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    pub fn num_layers(&self) -> usize {
        self.config.num_layers
    }

    fn check_positions(&self, n: usize) -> Result<(), ExecError> {
        let limit = self.rope.max_len().min(self.config.sliding_window.unwrap_or(usize::MAX));
        if n > limit {
            return Err(ExecError::Input(format!(
                "sequence of {n} tokens is longer than the {limit} positions supported"
            )));
        }
        Ok(())
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), ExecError> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(ExecError::Input(format!(
                "token id {bad} is out of range (vocabulary of {})",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The state before any layer: token embeddings of the prompt.
    pub fn start(&self, ids: &[u32]) -> Result<ChainState<B>, ExecError> {
        if ids.is_empty() {
            return Err(ExecError::Input("the prompt has no tokens".into()));
        }
        self.check_ids(ids)?;
        self.check_positions(ids.len())?;
        Ok(ChainState {
            steps: vec![],
            hidden: self.model.embed(ids, &self.device),
            kv: vec![],
            ids: ids.into(),
            tree: None,
        })
    }

    /// The state before any layer for a prompt followed by several alternative continuations,
    /// laid out as one token tree so a single pass scores them all (see [`Branches`]).
    pub fn start_branches(
        &self, prompt: &[u32], branches: &[Vec<u32>],
    ) -> Result<(ChainState<B>, Branches), ExecError> {
        if prompt.is_empty() {
            return Err(ExecError::Input("the prompt has no tokens".into()));
        }
        if branches.iter().any(Vec::is_empty) {
            return Err(ExecError::Input("a continuation has no tokens".into()));
        }
        let layout = Branches::new(prompt.len(), branches);
        let mut ids = prompt.to_vec();
        for b in branches {
            ids.extend_from_slice(&b[..b.len() - 1]);
        }
        self.check_ids(&ids)?;
        self.check_ids(&branches.iter().flatten().copied().collect::<Vec<_>>())?;
        let longest = branches.iter().map(Vec::len).max().unwrap_or(0);
        self.check_positions(prompt.len() + longest)?;
        let n = ids.len();
        let hidden: Vec<bool> =
            (0..n).flat_map(|q| (0..n).map(move |k| (q, k))).map(|(q, k)| !layout.visible(q, k)).collect();
        let tree = TokenTree::new(layout.positions.clone(), hidden, &self.device);
        let state = ChainState {
            steps: vec![],
            hidden: self.model.embed(&ids, &self.device),
            kv: vec![],
            ids: ids.into(),
            tree: Some(Arc::new(tree)),
        };
        Ok((state, layout))
    }

    /// Runs a whole chain over a prompt.
    pub fn run(&self, chain: &Chain, ids: &[u32]) -> Result<ChainState<B>, ExecError> {
        chain.validate(self.num_layers(), LengthBounds { min: 1, max: usize::MAX })?;
        self.advance(&self.start(ids)?, chain.layers())
    }

    /// Next-token logits at the last position of a state (final norm and LM head applied to that
    /// position only).
    pub fn last_logits(&self, state: &ChainState<B>) -> Vec<f32> {
        self.last_logits_batch(&[state]).remove(0)
    }

    /// Logits at every position, `[positions, vocab]` flattened row-major.
    pub fn all_logits(&self, state: &ChainState<B>) -> Vec<f32> {
        to_vec(self.model.logits(state.hidden.clone()))
    }

    /// Feeds `new_ids` (one or more tokens) through the state's chain, using and extending each
    /// step's K/V cache. Returns the state covering the old and new positions; its `hidden`
    /// holds only the new positions.
    pub fn append(&self, state: &ChainState<B>, new_ids: &[u32]) -> Result<ChainState<B>, ExecError> {
        if new_ids.is_empty() {
            return Ok(state.clone());
        }
        Ok(self.append_batch(&[state], &[new_ids])?.remove(0))
    }

    /// Greedy decoding from a state that has run its whole chain. Stops after `max_new` tokens or
    /// at the first id in `stop` (which is included in the result).
    pub fn generate(&self, state: &ChainState<B>, max_new: usize, stop: &[u32]) -> Result<Vec<u32>, ExecError> {
        self.generate_until(state, max_new, |new| new.last().is_some_and(|t| stop.contains(t)))
    }

    /// Greedy decoding that ends after `max_new` tokens or when `done(new_ids)` says so.
    pub fn generate_until(
        &self, state: &ChainState<B>, max_new: usize, mut done: impl FnMut(&[u32]) -> bool,
    ) -> Result<Vec<u32>, ExecError> {
        Ok(self.generate_batch(std::slice::from_ref(state), max_new, |_, new| done(new))?.remove(0))
    }

    /// Log-probabilities of every token of every branch of a token-tree state that has run its
    /// whole chain: `result[i][j] = log p(branch_i[j] | prompt, branch_i[..j])`.
    pub fn branch_logprobs(&self, state: &ChainState<B>, layout: &Branches) -> Result<Vec<Vec<f32>>, ExecError> {
        Ok(self.branch_logprobs_batch(&[state], layout)?.remove(0))
    }

    /// Log-probabilities of `continuation` following the state's positions: one value per token.
    pub fn continuation_logprobs(&self, state: &ChainState<B>, continuation: &[u32]) -> Result<Vec<f32>, ExecError> {
        if continuation.is_empty() {
            return Ok(vec![]);
        }
        let vocab = self.config.vocab_size;
        // Position t predicts token t+1: the last prompt position predicts continuation[0].
        let mut rows = vec![self.last_logits(state)];
        if continuation.len() > 1 {
            let extended = self.append(state, &continuation[..continuation.len() - 1])?;
            let all = self.all_logits(&extended);
            rows.extend(all.chunks_exact(vocab).map(<[f32]>::to_vec));
        }
        Ok(rows.iter().zip(continuation).map(|(row, &tok)| log_softmax_at(row, tok as usize)).collect())
    }
}
