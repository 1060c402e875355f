//! States of chain prefixes, kept so that chains sharing a prefix compute it once.
//!
//! One cache serves one input (a prompt or a token tree). Entries are keyed by the prefix of
//! layer indices; each holds the whole [`ChainState`] after that prefix (tensor handles, so the
//! K/V of earlier steps are shared, not copied). Memory is bounded by a byte budget: when it is
//! exceeded the least recently used prefixes go first (the chains the search touched last, and
//! their ancestors, are the ones it extends next). The empty prefix is never evicted.

use std::collections::HashMap;

use cola_model::{KvCache, LayerOps};

use crate::ChainState;

/// Counters for reporting how much work the cache saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Chain steps taken from the cache instead of computed.
    pub reused_steps: u64,
    /// Chain steps computed.
    pub computed_steps: u64,
    pub evictions: u64,
    /// Bytes held now (estimated from tensor shapes).
    pub bytes: usize,
}

struct Entry<B: LayerOps> {
    state: ChainState<B>,
    bytes: usize,
    last_used: u64,
}

pub struct PrefixCache<B: LayerOps> {
    entries: HashMap<Vec<usize>, Entry<B>>,
    budget_bytes: usize,
    clock: u64,
    stats: CacheStats,
}

/// Bytes a state adds over its parent: its hidden states and its own step's K/V.
fn state_bytes<B: LayerOps>(state: &ChainState<B>) -> usize {
    let h: usize = state.hidden.dims().iter().product();
    let kv: usize = state.kv.last().map_or(0, KvCache::elements);
    (h + kv) * std::mem::size_of::<f32>()
}

impl<B: LayerOps> PrefixCache<B> {
    /// A cache for one input, starting from its 0-step state (see [`crate::Executor::start`]).
    pub fn new(root: ChainState<B>, budget_bytes: usize) -> Self {
        assert!(root.steps.is_empty(), "the cache starts from the state before any layer");
        let bytes = state_bytes(&root);
        let mut entries = HashMap::new();
        entries.insert(Vec::new(), Entry { state: root, bytes, last_used: 0 });
        PrefixCache { entries, budget_bytes, clock: 0, stats: CacheStats { bytes, ..Default::default() } }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The deepest cached state for a prefix of `layers`, and its length.
    pub fn longest_prefix(&mut self, layers: &[usize]) -> (ChainState<B>, usize) {
        self.clock += 1;
        for k in (0..=layers.len()).rev() {
            if let Some(e) = self.entries.get_mut(&layers[..k]) {
                e.last_used = self.clock;
                self.stats.reused_steps += k as u64;
                return (e.state.clone(), k);
            }
        }
        unreachable!("the empty prefix is always present")
    }

    /// Stores the state after `prefix`, evicting old entries if over budget.
    pub fn insert(&mut self, prefix: &[usize], state: ChainState<B>) {
        self.clock += 1;
        self.stats.computed_steps += 1;
        let bytes = state_bytes(&state);
        if let Some(old) = self.entries.insert(prefix.to_vec(), Entry { state, bytes, last_used: self.clock }) {
            self.stats.bytes -= old.bytes;
        }
        self.stats.bytes += bytes;
        if self.stats.bytes > self.budget_bytes {
            self.evict();
        }
    }

    fn evict(&mut self) {
        let mut order: Vec<(u64, Vec<usize>)> =
            self.entries.iter().filter(|(k, _)| !k.is_empty()).map(|(k, e)| (e.last_used, k.clone())).collect();
        order.sort();
        // Free down to 3/4 of the budget so eviction does not run on every insert.
        let target = self.budget_bytes / 4 * 3;
        for (_, key) in order {
            if self.stats.bytes <= target {
                break;
            }
            if let Some(e) = self.entries.remove(&key) {
                self.stats.bytes -= e.bytes;
                self.stats.evictions += 1;
            }
        }
    }
}
