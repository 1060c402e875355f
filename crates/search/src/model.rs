//! The executor seen as an evaluation model: [`ChainModel`] answers the evaluation crate's
//! questions along a set of chains of layers at once (one variant per chain, run as one batch),
//! reusing the states of chain prefixes it has already computed for the same input.

use std::collections::HashMap;

use cola_eval::{LanguageModel, StopRule};
use cola_executor::{Chain, ChainState, ExecError, LoadedChainModel, PrefixCache};
use cola_model::LayerOps;

/// Default memory budget of the prefix caches, per model view: with the embedded model held as
/// stored (about 100 MB) the default search stays under 400 MB.
pub const DEFAULT_CACHE_MIB: usize = 64;

/// A loaded model run along a settable set of chains (its variants, answered as one batch).
/// With caching on, every input (a prompt, or a prompt with its answer choices) gets a
/// [`PrefixCache`]; [`ChainModel::clear_cache`] frees them (call it between samples).
pub struct ChainModel<'m, B: LayerOps> {
    model: &'m LoadedChainModel<B>,
    chains: Vec<Chain>,
    caching: bool,
    budget_bytes: usize,
    caches: HashMap<Vec<u32>, PrefixCache<B>>,
    /// Steps computed and reused across all caches since the last clear.
    reused_steps: u64,
    computed_steps: u64,
}

/// Separates parts of a cache key (not a token id any vocabulary uses).
const KEY_SEPARATOR: u32 = u32::MAX;

impl<'m, B: LayerOps> ChainModel<'m, B> {
    pub fn new(model: &'m LoadedChainModel<B>, chain: Chain) -> Self {
        ChainModel {
            model,
            chains: vec![chain],
            caching: true,
            budget_bytes: DEFAULT_CACHE_MIB << 20,
            caches: HashMap::new(),
            reused_steps: 0,
            computed_steps: 0,
        }
    }

    /// Turns prefix caching on or off (off: every chain runs from the embeddings).
    pub fn with_caching(mut self, on: bool) -> Self {
        self.caching = on;
        self
    }

    /// Total cache budget in MiB, shared by the inputs of one sample.
    pub fn with_cache_budget_mib(mut self, mib: usize) -> Self {
        self.budget_bytes = mib.max(1) << 20;
        self
    }

    /// The chains the next requests run along (at least one).
    pub fn set_chains(&mut self, chains: Vec<Chain>) {
        assert!(!chains.is_empty(), "a ChainModel runs at least one chain");
        self.chains = chains;
    }

    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    pub fn loaded(&self) -> &LoadedChainModel<B> {
        self.model
    }

    /// Drops every cached state (between samples).
    pub fn clear_cache(&mut self) {
        for c in self.caches.values() {
            let s = c.stats();
            self.reused_steps += s.reused_steps;
            self.computed_steps += s.computed_steps;
        }
        self.caches.clear();
    }

    /// (reused, computed) chain steps so far, including live caches.
    pub fn step_counts(&self) -> (u64, u64) {
        self.caches.values().fold((self.reused_steps, self.computed_steps), |(r, c), cache| {
            let s = cache.stats();
            (r + s.reused_steps, c + s.computed_steps)
        })
    }

    /// Runs the current chains over the input `key` as one batch, starting from what the
    /// cache holds (without caching: from a cache that lives for this call only, so prefixes
    /// shared inside the batch are still computed once).
    fn run_chains(
        &mut self, key: Vec<u32>, start: impl FnOnce() -> Result<ChainState<B>, ExecError>,
    ) -> Result<Vec<ChainState<B>>, ExecError> {
        let exec = &self.model.executor;
        if !self.caching {
            let mut cache = PrefixCache::new(start()?, 0);
            let states = exec.run_batch_cached(&mut cache, &self.chains)?;
            self.computed_steps += cache.stats().computed_steps;
            return Ok(states);
        }
        // Several inputs per sample (loglik prompts, say) share the budget.
        let per_input = self.budget_bytes / (self.caches.len() + 1).max(1);
        let cache = match self.caches.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(PrefixCache::new(start()?, per_input.max(1 << 20)))
            }
        };
        exec.run_batch_cached(cache, &self.chains)
    }
}

impl<B: LayerOps> LanguageModel for ChainModel<'_, B> {
    type Error = ExecError;

    fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>, ExecError> {
        self.model.prompt_ids(text, chat)
    }

    fn encode_continuation(&self, text: &str) -> Result<Vec<u32>, ExecError> {
        Ok(self.model.tokenizer.encode_continuation(text)?)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, ExecError> {
        Ok(self.model.tokenizer.decode(ids)?)
    }

    fn stop_ids(&self) -> Vec<u32> {
        self.model.stop_ids()
    }

    fn variants(&self) -> usize {
        self.chains.len()
    }

    fn next_token_logits(&mut self, prompt: &[u32]) -> Result<Vec<Vec<f32>>, ExecError> {
        let exec = &self.model.executor;
        let states = self.run_chains(prompt.to_vec(), || exec.start(prompt))?;
        Ok(exec.last_logits_batch(&states.iter().collect::<Vec<_>>()))
    }

    fn choice_logprobs(&mut self, prompt: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>, ExecError> {
        let exec = &self.model.executor;
        let mut key = prompt.to_vec();
        for c in continuations {
            key.push(KEY_SEPARATOR);
            key.extend_from_slice(c);
        }
        let (root, layout) = exec.start_branches(prompt, continuations)?;
        let states = self.run_chains(key, || Ok(root))?;
        exec.branch_logprobs_batch(&states.iter().collect::<Vec<_>>(), &layout)
    }

    fn generate(&mut self, prompt: &[u32], max_new: usize, stop: &StopRule) -> Result<Vec<Vec<u32>>, ExecError> {
        let exec = &self.model.executor;
        let states = self.run_chains(prompt.to_vec(), || exec.start(prompt))?;
        let tokenizer = &self.model.tokenizer;
        // An id the tokenizer cannot decode does not stop the generation here; decoding the
        // result (`LanguageModel::decode`) reports it.
        exec.generate_batch(&states, max_new, |_, new| {
            stop.should_stop(new, |ids| tokenizer.decode(ids).unwrap_or_default())
        })
    }
}
