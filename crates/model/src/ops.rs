//! The steps of a decoder layer that a backend may implement better than burn's composed
//! tensor ops: the weight projections, splitting the fused q/k/v projection into heads with
//! RoPE, attention, and the SwiGLU gate. The trait's provided methods are the reference
//! implementation in plain burn ops (used by the GPU backends); the CPU backend overrides them
//! with fused kernels ([`crate::flex_ops`]) because burn's CPU elementwise ops on permuted views
//! are slow.

use std::sync::Arc;

use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::llama::{KvCache, RmsNorm, Rope};
use crate::stored::StoredMatrix;

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

impl Heads {
    pub fn group(&self) -> usize {
        self.q / self.kv
    }
}

/// RoPE positions of the tokens being processed.
#[derive(Debug, Clone)]
pub enum Positions<B: Backend> {
    /// Consecutive positions starting here (a plain sequence after `start` cached tokens).
    From(usize),
    /// Explicit positions (a token tree), on the host and on the device.
    Given { host: Arc<[usize]>, device: Tensor<B, 1, Int> },
}

/// Which keys each query may see.
#[derive(Debug, Clone)]
pub enum AttnMask<B: Backend> {
    /// The queries are the last of the keys, each sees every key up to itself.
    Causal,
    /// Queries and keys are the same tokens (no cache); `true` = hidden. `[s, s]`.
    Given { host: Arc<[bool]>, device: Tensor<B, 2, Bool> },
}

/// Per-layer operations with reference implementations in burn ops.
pub trait LayerOps: Backend {
    /// Whether [`LayerOps::matmul_stored`] computes from stored weights directly; when not, the
    /// loader dequantizes every weight to f32 on the device instead.
    const STORED_WEIGHTS: bool = false;

    /// `x [s, k] · w [k, n]`: a projection by a weight matrix.
    fn matmul_weight(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        x.matmul(w)
    }

    /// `x [s, k] · eᵀ` for `e` `[n, k]` (the LM head tied to the embedding matrix).
    fn matmul_weight_t(x: Tensor<Self, 2>, e: Tensor<Self, 2>) -> Tensor<Self, 2> {
        x.matmul(e.transpose())
    }

    /// `x [s, k]` times the stacked PyTorch-layout parts `[n_i, k]`, transposed: `[s, Σ n_i]`.
    /// The reference dequantizes the parts to f32 on the device.
    fn matmul_stored(x: Tensor<Self, 2>, parts: &[StoredMatrix]) -> Tensor<Self, 2> {
        reference::matmul_stored(x, parts)
    }

    /// `qkv`: `[s, (q + 2 kv) * dim]` (q, k and v projections side by side) ->
    /// (`q [q, s, dim]`, `k [kv, s, dim]`, `v [kv, s, dim]`), with the optional per-head RMSNorm
    /// and rotate-half RoPE applied to q and k.
    fn split_heads_rope(
        qkv: Tensor<Self, 2>, heads: Heads, rope: &Rope<Self>, positions: &Positions<Self>,
        norms: Option<(&RmsNorm<Self>, &RmsNorm<Self>)>,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 3>) {
        reference::split_heads_rope(qkv, heads, rope, positions, norms)
    }

    /// Softmax attention of `q [q, s, dim]` over `k`, `v` `[kv, t, dim]` -> `[s, q * dim]`.
    fn attend(
        q: Tensor<Self, 3>, k: Tensor<Self, 3>, v: Tensor<Self, 3>, heads: Heads, mask: &AttnMask<Self>,
    ) -> Tensor<Self, 2> {
        reference::attend(q, k, v, heads, mask)
    }

    /// `silu(gate) * up` from `[s, 2 f]` (gate then up) -> `[s, f]`.
    fn swiglu(gate_up: Tensor<Self, 2>, f: usize) -> Tensor<Self, 2> {
        reference::swiglu(gate_up, f)
    }

    /// The K/V of a layer application after new positions: `past`'s entries followed by `k`,
    /// `v` (`[kv, s, dim]`).
    fn extend_cache(past: Option<&KvCache<Self>>, k: Tensor<Self, 3>, v: Tensor<Self, 3>) -> KvCache<Self> {
        reference::extend_cache(past, k, v)
    }

    /// `f(0), .., f(n - 1)`: the per-sequence attention of a batched layer call, one after
    /// another here; a host backend runs them in parallel.
    fn for_segments<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        (0..n).map(f).collect()
    }
}

/// The reference implementations, also callable directly (tests compare the fused kernels with
/// them on the CPU).
pub mod reference {
    use super::*;

    pub fn split_heads_rope<B: Backend>(
        qkv: Tensor<B, 2>, heads: Heads, rope: &Rope<B>, positions: &Positions<B>,
        norms: Option<(&RmsNorm<B>, &RmsNorm<B>)>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let [s, _] = qkv.dims();
        let Heads { q: nh, kv: nkv, dim: hd } = heads;
        let q = qkv.clone().narrow(1, 0, nh * hd).reshape([s, nh, hd]);
        let k = qkv.clone().narrow(1, nh * hd, nkv * hd).reshape([s, nkv, hd]);
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd).reshape([s, nkv, hd]);
        let (q, k) = match norms {
            Some((qn, kn)) => (qn.forward(q), kn.forward(k)),
            None => (q, k),
        };
        let (cos, sin) = rope.tables(positions, s);
        let rotate = |x: Tensor<B, 3>| {
            let x = x.swap_dims(0, 1); // [heads, s, hd]
            let half = hd / 2;
            let x1 = x.clone().narrow(2, 0, half);
            let x2 = x.clone().narrow(2, half, half);
            let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
            x * cos.clone().unsqueeze::<3>() + rotated * sin.clone().unsqueeze::<3>()
        };
        (rotate(q), rotate(k), v.swap_dims(0, 1))
    }

    pub fn attend<B: Backend>(
        q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: Heads, mask: &AttnMask<B>,
    ) -> Tensor<B, 2> {
        let [nh, s, hd] = q.dims();
        let [nkv, t, _] = k.dims();
        let g = heads.group();
        let expand = |x: Tensor<B, 3>| {
            if g == 1 { x } else { x.unsqueeze_dim::<4>(1).expand([nkv, g, t, hd]).reshape([nh, t, hd]) }
        };
        let (mask, options) = match mask {
            AttnMask::Causal => (None, AttentionModuleOptions { is_causal: true, ..Default::default() }),
            AttnMask::Given { device, .. } => {
                (Some(device.clone().reshape([1, 1, s, t])), AttentionModuleOptions::default())
            }
        };
        let out =
            attention(q.unsqueeze::<4>(), expand(k).unsqueeze::<4>(), expand(v).unsqueeze::<4>(), mask, None, options);
        out.reshape([nh, s, hd]).swap_dims(0, 1).reshape([s, nh * hd])
    }

    pub fn matmul_stored<B: Backend>(x: Tensor<B, 2>, parts: &[StoredMatrix]) -> Tensor<B, 2> {
        let device = x.device();
        let k = x.dims()[1];
        let n: usize = parts.iter().map(StoredMatrix::rows).sum();
        let values: Vec<f32> = parts.iter().flat_map(StoredMatrix::to_f32).collect();
        let w = Tensor::<B, 2>::from_data(TensorData::new(values, [n, k]), &device);
        x.matmul(w.transpose())
    }

    pub fn swiglu<B: Backend>(gate_up: Tensor<B, 2>, f: usize) -> Tensor<B, 2> {
        silu(gate_up.clone().narrow(1, 0, f)) * gate_up.narrow(1, f, f)
    }

    pub fn extend_cache<B: Backend>(past: Option<&KvCache<B>>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> KvCache<B> {
        match past {
            Some(p) => KvCache { k: Tensor::cat(vec![p.k.clone(), k], 1), v: Tensor::cat(vec![p.v.clone(), v], 1) },
            None => KvCache { k, v },
        }
    }
}

#[cfg(feature = "wgpu")]
impl LayerOps for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl LayerOps for burn::backend::Cuda {}
