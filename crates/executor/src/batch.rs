//! Many chains in one pass: the batched forms of running, extending, decoding and scoring.
//!
//! A batch of chains over one input is advanced one *layer call* at a time. Each call picks a
//! layer `l` and advances, in one call of `l` on their stacked rows ([`Segment`]s), every pending
//! state whose next step is `l`; attention stays per chain, over its own K/V. The layer picked is
//! the smallest next layer among pending states: chains in a search tree are mostly increasing
//! and differ by a few edits, so a chain that skips ahead waits for the others to catch up and
//! a chain that repeats or goes back runs its extra steps alone, and K such chains need about as
//! many layer calls as one. Prefixes shared inside a batch are one state, computed once, and the
//! prefix cache supplies (and receives) the states of known prefixes.
//!
//! The result of every batched call equals that of running each chain alone (the projections
//! are row-wise, so stacking changes nothing but the matmul shape; tests compare the logits).

use std::collections::HashMap;

use burn::tensor::{Int, Tensor, TensorData};
use cola_model::{LayerOps, Segment};

use crate::{
    Branches, Chain, ChainError, ChainState, ExecError, Executor, LengthBounds, PrefixCache, argmax, log_softmax_at,
    to_vec,
};

impl<B: LayerOps> Executor<B> {
    /// One layer call of `layer` on several prefill states at once (each over all its positions).
    fn advance_together(&self, states: &[&ChainState<B>], layer: usize) -> Result<Vec<ChainState<B>>, ExecError> {
        for s in states {
            if s.hidden.dims()[0] != s.ids.len() {
                return Err(ExecError::Input("a state extended by append cannot take more chain steps".into()));
            }
        }
        let rows: Vec<usize> = states.iter().map(|s| s.ids.len()).collect();
        let segments: Vec<Segment<'_, B>> =
            states.iter().map(|s| Segment { rows: s.ids.len(), past: None, tree: s.tree.as_deref() }).collect();
        let x = stack(states.iter().map(|s| s.hidden.clone()).collect());
        let (h, caches) = self.model.layers[layer].forward(x, &self.rope, &segments);
        Ok(split(h, &rows)
            .into_iter()
            .zip(caches)
            .zip(states)
            .map(|((hidden, cache), s)| {
                let mut steps = s.steps.clone();
                steps.push(layer);
                let mut kv = s.kv.clone();
                kv.push(cache);
                ChainState { steps, hidden, kv, ids: s.ids.clone(), tree: s.tree.clone() }
            })
            .collect())
    }

    fn check_layers(&self, done: usize, layers: &[usize]) -> Result<(), ExecError> {
        let n = self.num_layers();
        if let Some((i, &l)) = layers.iter().enumerate().find(|(_, l)| **l >= n) {
            return Err(ChainError::LayerOutOfRange { position: done + i, layer: l, num_layers: n }.into());
        }
        Ok(())
    }

    /// Applies further chain steps to a state (all positions, causal attention or its tree).
    pub fn advance(&self, state: &ChainState<B>, layers: &[usize]) -> Result<ChainState<B>, ExecError> {
        self.check_layers(state.steps.len(), layers)?;
        let mut state = state.clone();
        for &l in layers {
            state = self.advance_together(&[&state], l)?.remove(0);
        }
        Ok(state)
    }

    /// Runs each chain over the cache's input, from the deepest state the cache (or another
    /// chain of the batch) holds for one of its prefixes, with the layer-call schedule of this
    /// module. Every state computed is stored in the cache. Returns one state per chain.
    pub fn run_batch_cached(
        &self, cache: &mut PrefixCache<B>, chains: &[Chain],
    ) -> Result<Vec<ChainState<B>>, ExecError> {
        let _span = tracing::debug_span!("prefill", chains = chains.len()).entered();
        for chain in chains {
            chain.validate(self.num_layers(), LengthBounds { min: 1, max: usize::MAX })?;
        }
        // States of the prefixes this batch has reached, and how deep each chain is.
        let mut known: HashMap<Vec<usize>, ChainState<B>> = HashMap::new();
        let mut depth = Vec::with_capacity(chains.len());
        for chain in chains {
            let (state, from) = cache.longest_prefix(chain.layers());
            known.entry(chain.layers()[..from].to_vec()).or_insert(state);
            depth.push(from);
        }
        loop {
            // Catch up with prefixes another chain of the batch has computed.
            for (chain, d) in chains.iter().zip(depth.iter_mut()) {
                while *d < chain.len() && known.contains_key(&chain.layers()[..=*d]) {
                    *d += 1;
                }
            }
            let Some(layer) =
                chains.iter().zip(&depth).filter(|(c, d)| **d < c.len()).map(|(c, &d)| c.layers()[d]).min()
            else {
                break;
            };
            let mut prefixes: Vec<&[usize]> = chains
                .iter()
                .zip(&depth)
                .filter(|(c, d)| **d < c.len() && c.layers()[**d] == layer)
                .map(|(c, &d)| &c.layers()[..d])
                .collect();
            prefixes.sort();
            prefixes.dedup();
            let inputs: Vec<&ChainState<B>> = prefixes.iter().map(|p| &known[*p]).collect();
            let outputs = self.advance_together(&inputs, layer)?;
            for (prefix, state) in prefixes.iter().zip(outputs) {
                let mut key = prefix.to_vec();
                key.push(layer);
                cache.insert(&key, state.clone());
                known.insert(key, state);
            }
        }
        Ok(chains.iter().map(|c| known[c.layers()].clone()).collect())
    }

    /// Runs `chain` from the deepest state `cache` holds for one of its prefixes, storing the
    /// states of the steps it computes.
    pub fn run_cached(&self, cache: &mut PrefixCache<B>, chain: &Chain) -> Result<ChainState<B>, ExecError> {
        Ok(self.run_batch_cached(cache, std::slice::from_ref(chain))?.remove(0))
    }

    /// Feeds `new_ids[i]` through the chain of `states[i]`, using and extending each step's K/V,
    /// for all states together (each state's steps in order; one layer call per group of states
    /// whose next step is the same layer, the smallest first). Each result covers the old and
    /// new positions; its `hidden` holds only the new positions.
    pub fn append_batch(&self, states: &[&ChainState<B>], new_ids: &[&[u32]]) -> Result<Vec<ChainState<B>>, ExecError> {
        assert_eq!(states.len(), new_ids.len(), "one id list per state");
        for (s, ids) in states.iter().zip(new_ids) {
            if ids.is_empty() {
                return Err(ExecError::Input("nothing to append".into()));
            }
            if s.tree.is_some() {
                return Err(ExecError::Input("a token-tree state cannot be extended".into()));
            }
            self.check_ids(ids)?;
            self.check_positions(s.num_positions() + ids.len())?;
        }
        // States with the same ids before and after this call (`lineage`) that have taken the same
        // steps so far hold the same K/V and hidden rows: greedy decoding of chains that share a
        // prefix of layers and have generated the same tokens. Each such set runs once per layer,
        // led by its first member, and the others take the leader's result (a trie over chain
        // steps and generated tokens).
        let lineage: Vec<usize> = {
            let mut seen: HashMap<(&[u32], &[u32]), usize> = HashMap::new();
            (0..states.len())
                .map(|i| {
                    let next = seen.len();
                    *seen.entry((&states[i].ids[..], new_ids[i])).or_insert(next)
                })
                .collect()
        };
        let mut x: Vec<Tensor<B, 2>> = new_ids.iter().map(|ids| self.model.embed(ids, &self.device)).collect();
        let mut kv: Vec<Vec<_>> = states.iter().map(|s| Vec::with_capacity(s.kv.len())).collect();
        loop {
            let next = |i: usize| states[i].steps.get(kv[i].len()).copied();
            let Some(layer) = (0..states.len()).filter_map(next).min() else { break };
            let group: Vec<usize> = (0..states.len()).filter(|&i| next(i) == Some(layer)).collect();
            let mut first: HashMap<(usize, &[usize]), usize> = HashMap::new();
            let leader: Vec<usize> = group
                .iter()
                .map(|&i| *first.entry((lineage[i], &states[i].steps[..=kv[i].len()])).or_insert(i))
                .collect();
            let leaders: Vec<usize> = group.iter().zip(&leader).filter(|(i, l)| i == l).map(|(&i, _)| i).collect();
            let rows: Vec<usize> = leaders.iter().map(|&i| new_ids[i].len()).collect();
            let segments: Vec<Segment<'_, B>> = leaders
                .iter()
                .map(|&i| Segment { rows: new_ids[i].len(), past: Some(&states[i].kv[kv[i].len()]), tree: None })
                .collect();
            let input = stack(leaders.iter().map(|&i| x[i].clone()).collect());
            let (h, caches) = self.model.layers[layer].forward(input, &self.rope, &segments);
            for ((&i, hidden), cache) in leaders.iter().zip(split(h, &rows)).zip(caches) {
                x[i] = hidden;
                kv[i].push(cache);
            }
            for (&i, &l) in group.iter().zip(&leader).filter(|(i, l)| i != l) {
                x[i] = x[l].clone();
                let shared = kv[l].last().expect("the leader ran this step").clone();
                kv[i].push(shared);
            }
            use std::sync::atomic::Ordering::Relaxed;
            self.computed_steps.fetch_add(leaders.len() as u64, Relaxed);
            self.shared_steps.fetch_add((group.len() - leaders.len()) as u64, Relaxed);
        }
        Ok(states
            .iter()
            .zip(new_ids)
            .zip(x.into_iter().zip(kv))
            .map(|((s, ids), (hidden, kv))| ChainState {
                steps: s.steps.clone(),
                hidden,
                kv,
                ids: s.ids.iter().chain(*ids).copied().collect::<Vec<_>>().into(),
                tree: None,
            })
            .collect())
    }

    /// Next-token logits at the last position of each state, with one LM-head call for all.
    pub fn last_logits_batch(&self, states: &[&ChainState<B>]) -> Vec<Vec<f32>> {
        let last = stack(
            states
                .iter()
                .map(|s| {
                    let t = s.hidden.dims()[0];
                    s.hidden.clone().narrow(0, t - 1, 1)
                })
                .collect(),
        );
        let vocab = self.config.vocab_size;
        to_vec(self.model.logits(last)).chunks_exact(vocab).map(<[f32]>::to_vec).collect()
    }

    /// Greedy decoding of several states in lockstep: each round appends one token to every live
    /// state in one batched pass ([`Self::append_batch`]) and reads all their next-token logits
    /// with one LM-head call. State `i` leaves after `max_new` tokens or when `done(i, new_ids)`
    /// says so. Returns the new ids of each state.
    pub fn generate_batch(
        &self, states: &[ChainState<B>], max_new: usize, mut done: impl FnMut(usize, &[u32]) -> bool,
    ) -> Result<Vec<Vec<u32>>, ExecError> {
        let _span = tracing::debug_span!("decode", chains = states.len(), max_new).entered();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); states.len()];
        let mut live: Vec<(usize, ChainState<B>)> = states.iter().cloned().enumerate().collect();
        if max_new == 0 {
            return Ok(out);
        }
        loop {
            let logits = self.last_logits_batch(&live.iter().map(|(_, s)| s).collect::<Vec<_>>());
            let mut next = Vec::with_capacity(live.len());
            for ((i, state), row) in live.drain(..).zip(logits) {
                let token = argmax(&row);
                out[i].push(token);
                if out[i].len() < max_new && !done(i, &out[i]) {
                    next.push((i, state, token));
                }
            }
            if next.is_empty() {
                return Ok(out);
            }
            let tokens: Vec<[u32; 1]> = next.iter().map(|(_, _, t)| [*t]).collect();
            let ids: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
            let extended = self.append_batch(&next.iter().map(|(_, s, _)| s).collect::<Vec<_>>(), &ids)?;
            live = next.into_iter().zip(extended).map(|((i, _, _), s)| (i, s)).collect();
        }
    }

    /// [`Self::branch_logprobs`] for several states of the same token tree, with one LM-head
    /// call for all.
    pub fn branch_logprobs_batch(
        &self, states: &[&ChainState<B>], layout: &Branches,
    ) -> Result<Vec<Vec<Vec<f32>>>, ExecError> {
        if states.iter().any(|s| s.tree.is_none() || s.ids.len() != layout.positions.len()) {
            return Err(ExecError::Input("branch_logprobs needs a state made by start_branches".into()));
        }
        let rows: Vec<i64> = layout.predictors.iter().flatten().map(|&r| r as i64).collect();
        let n = rows.len();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &self.device);
        let picked = stack(states.iter().map(|s| s.hidden.clone().select(0, index.clone())).collect());
        // Rows are state-major, each state's in the layout's target order.
        let targets: Vec<u32> = layout.targets.iter().flatten().copied().collect();
        let vocab = self.config.vocab_size;
        let total = states.len() * n;
        let mut logprobs = Vec::with_capacity(total);
        // The LM head in chunks of rows: all options of 16 chains at once are ~800 rows, whose
        // whole-vocabulary logits would take ~160 MB for a 49k vocabulary.
        for start in (0..total).step_by(LOGIT_ROWS) {
            let len = LOGIT_ROWS.min(total - start);
            let logits = to_vec(self.model.logits(picked.clone().narrow(0, start, len)));
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                logprobs.push(log_softmax_at(row, targets[(start + i) % n] as usize));
            }
        }
        let mut logprobs = logprobs.into_iter();
        Ok(states
            .iter()
            .map(|_| layout.targets.iter().map(|t| logprobs.by_ref().take(t.len()).collect()).collect())
            .collect())
    }
}

/// Rows per LM-head call when scoring token trees (bounds the logits held at once).
const LOGIT_ROWS: usize = 128;

/// Rows of several tensors stacked in order (no copy for one).
fn stack<B: LayerOps>(mut parts: Vec<Tensor<B, 2>>) -> Tensor<B, 2> {
    if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(parts, 0) }
}

/// The inverse of [`stack`]: consecutive row blocks of the given sizes.
fn split<B: LayerOps>(t: Tensor<B, 2>, rows: &[usize]) -> Vec<Tensor<B, 2>> {
    if rows.len() == 1 {
        return vec![t];
    }
    let mut start = 0;
    rows.iter()
        .map(|&r| {
            let part = t.clone().narrow(0, start, r);
            start += r;
            part
        })
        .collect()
}
