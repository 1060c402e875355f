//! The steps of a decoder layer that a backend may implement better than burn's composed
//! tensor ops: the weight projections, splitting the fused q/k/v projection into heads with
//! RoPE, attention, the SwiGLU gate and appending to the K/V cache.
//!
//! Two sides: a backend implements [`LayerOps`] (its provided methods are the reference
//! implementation in plain burn ops, which the GPU backends use; the CPU backend overrides them
//! with fused kernels, [`crate::flex`], because burn's CPU elementwise ops on permuted views are
//! slow), and the model calls the free functions of this module. They are the seam: each goes to
//! the backend's kernel, or to [`reference`](mod@reference) while [`with_reference_ops`] is on, so a kernel never
//! checks the switch itself and a parity test of a new kernel cannot end up comparing the kernel
//! with itself.

use std::sync::Arc;

use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use burn::module::{Module, Param};

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

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let inv_rms = (x.clone().square().mean_dim(D - 1) + self.eps).sqrt().recip();
        x * inv_rms * self.weight.val().unsqueeze::<D>()
    }
}

/// The K/V entries one layer application produced, for all positions so far, keys already
/// rotated: runs of consecutive positions in order, each `[kv_heads, len, head_dim]`. The
/// reference keeps one run; a host backend appends a decoding step's run without copying the
/// cache and merges runs now and then ([`LayerOps::extend_cache`]).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Shared, so a cache extended by a run clones pointers, not tensors.
    runs: Vec<Arc<KvRun<B>>>,
}

/// One run of a [`KvCache`]: `k` and `v` `[kv_heads, len, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvRun<B: Backend> {
    pub k: Tensor<B, 3>,
    pub v: Tensor<B, 3>,
}

impl<B: Backend> KvRun<B> {
    pub fn len(&self) -> usize {
        self.k.dims()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> KvCache<B> {
    /// One run.
    pub fn new(k: Tensor<B, 3>, v: Tensor<B, 3>) -> Self {
        KvCache { runs: vec![Arc::new(KvRun { k, v })] }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn runs(&self) -> &[Arc<KvRun<B>>] {
        &self.runs
    }

    /// Floats held (keys and values).
    pub fn elements(&self) -> usize {
        self.runs.iter().map(|r| 2 * r.k.dims().iter().product::<usize>()).sum()
    }

    /// These runs and then `run` (no copy of the entries).
    pub fn with_run(&self, run: KvRun<B>) -> Self {
        let mut runs = Vec::with_capacity(self.runs.len() + 1);
        runs.extend(self.runs.iter().cloned());
        runs.push(Arc::new(run));
        KvCache { runs }
    }

    /// All positions as one run (a copy when there are several).
    pub fn whole(&self) -> KvRun<B> {
        match &self.runs[..] {
            [one] => KvRun::clone(one),
            runs => KvRun {
                k: Tensor::cat(runs.iter().map(|r| r.k.clone()).collect(), 1),
                v: Tensor::cat(runs.iter().map(|r| r.v.clone()).collect(), 1),
            },
        }
    }
}

/// Rotate-half RoPE tables, `[max_len, head_dim]`, with each frequency repeated for both halves,
/// on the device and on the host (for CPU kernels).
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    pub(crate) cos_host: Arc<[f32]>,
    pub(crate) sin_host: Arc<[f32]>,
    max_len: usize,
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..max_len`. Angles are formed in f32 like transformers does, so
    /// positions in the hundreds agree with PyTorch to the last bit of the angle.
    /// `inv_freq`: one inverse frequency per pair of dimensions (the config's, scaling included).
    pub fn new(inv_freq: &[f64], max_len: usize, device: &B::Device) -> Self {
        let inv_freq: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let half = inv_freq.len();
        let hd = 2 * half;
        let mut cos = Vec::with_capacity(max_len * hd);
        let mut sin = Vec::with_capacity(max_len * hd);
        for pos in 0..max_len {
            let row: Vec<f32> = inv_freq.iter().map(|&f| pos as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|&a| (a as f64).cos() as f32));
                sin.extend(row.iter().map(|&a| (a as f64).sin() as f32));
            }
        }
        Rope {
            cos: Tensor::from_data(TensorData::new(cos.clone(), [max_len, hd]), device),
            sin: Tensor::from_data(TensorData::new(sin.clone(), [max_len, hd]), device),
            cos_host: cos.into(),
            sin_host: sin.into(),
            max_len,
        }
    }

    /// The `[s, head_dim]` cos and sin rows for `s` tokens at `positions`.
    pub fn tables(&self, positions: &Positions<B>, s: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match positions {
            Positions::From(start) => {
                assert!(
                    start + s <= self.max_len,
                    "RoPE table holds {} positions, asked for {}",
                    self.max_len,
                    start + s
                );
                (self.cos.clone().narrow(0, *start, s), self.sin.clone().narrow(0, *start, s))
            }
            Positions::Given { device, .. } => {
                (self.cos.clone().select(0, device.clone()), self.sin.clone().select(0, device.clone()))
            }
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// Per-layer operations a backend implements, with reference implementations in burn ops.
/// Callers go through this module's free functions (the seam), not these methods.
pub trait LayerOps: Backend {
    /// Whether [`LayerOps::matmul_stored`] computes from stored weights directly; when not, the
    /// loader dequantizes every weight to f32 on the device instead.
    const STORED_WEIGHTS: bool = false;

    /// `x [s, k] · w [k, n]`: a projection by a weight matrix.
    fn matmul_weight(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::matmul_weight(x, w)
    }

    /// `x [s, k] · eᵀ` for `e` `[n, k]` (the LM head tied to the embedding matrix).
    fn matmul_weight_t(x: Tensor<Self, 2>, e: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::matmul_weight_t(x, e)
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

    /// Softmax attention of `q [q, s, dim]` over the `t` positions of `kv` -> `[s, q * dim]`.
    fn attend(q: Tensor<Self, 3>, kv: &KvCache<Self>, heads: Heads, mask: &AttnMask<Self>) -> Tensor<Self, 2> {
        reference::attend(q, kv, heads, mask)
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

    /// `f(0), .., f(n - 1)` with `n > 1`: the per-sequence attention of a batched layer call, one
    /// after another here; a host backend runs them in parallel.
    fn for_segments<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        (0..n).map(f).collect()
    }
}

thread_local! {
    static USE_REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every step computed by [`reference`] instead of the backend's kernels, on this
/// thread. Tests use it to compare the two.
pub fn with_reference_ops<R>(f: impl FnOnce() -> R) -> R {
    let before = USE_REFERENCE.with(|c| c.replace(true));
    let out = f();
    USE_REFERENCE.with(|c| c.set(before));
    out
}

fn reference_forced() -> bool {
    USE_REFERENCE.with(|c| c.get())
}

/// The backend's kernel, or the reference one while [`with_reference_ops`] is on.
macro_rules! seam {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$doc])*
        pub fn $name<B: LayerOps>($($arg: $ty),*) -> $out {
            if reference_forced() { reference::$name($($arg),*) } else { B::$name($($arg),*) }
        }
    };
}

seam!(
    /// [`LayerOps::matmul_weight`].
    fn matmul_weight(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2>
);
seam!(
    /// [`LayerOps::matmul_weight_t`].
    fn matmul_weight_t(x: Tensor<B, 2>, e: Tensor<B, 2>) -> Tensor<B, 2>
);
seam!(
    /// [`LayerOps::matmul_stored`].
    fn matmul_stored(x: Tensor<B, 2>, parts: &[StoredMatrix]) -> Tensor<B, 2>
);
seam!(
    /// [`LayerOps::split_heads_rope`].
    fn split_heads_rope(
        qkv: Tensor<B, 2>, heads: Heads, rope: &Rope<B>, positions: &Positions<B>,
        norms: Option<(&RmsNorm<B>, &RmsNorm<B>)>
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>)
);
seam!(
    /// [`LayerOps::attend`].
    fn attend(q: Tensor<B, 3>, kv: &KvCache<B>, heads: Heads, mask: &AttnMask<B>) -> Tensor<B, 2>
);
seam!(
    /// [`LayerOps::swiglu`].
    fn swiglu(gate_up: Tensor<B, 2>, f: usize) -> Tensor<B, 2>
);
seam!(
    /// [`LayerOps::extend_cache`].
    fn extend_cache(past: Option<&KvCache<B>>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> KvCache<B>
);

/// [`LayerOps::for_segments`]; one after another on this thread for a single sequence or while
/// the reference switch (which is per thread) is on.
pub fn for_segments<B: LayerOps, T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if n == 1 || reference_forced() { (0..n).map(f).collect() } else { B::for_segments(n, f) }
}

/// The reference implementations, also callable directly (tests compare the fused kernels with
/// them on the CPU).
pub mod reference {
    use super::*;

    pub fn matmul_weight<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(w)
    }

    pub fn matmul_weight_t<B: Backend>(x: Tensor<B, 2>, e: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(e.transpose())
    }

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

    pub fn attend<B: Backend>(q: Tensor<B, 3>, kv: &KvCache<B>, heads: Heads, mask: &AttnMask<B>) -> Tensor<B, 2> {
        let KvRun { k, v } = kv.whole();
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
            Some(p) => {
                let KvRun { k, v } = p.with_run(KvRun { k, v }).whole();
                KvCache::new(k, v)
            }
            None => KvCache::new(k, v),
        }
    }
}

#[cfg(feature = "wgpu")]
impl LayerOps for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl LayerOps for burn::backend::Cuda {}

#[cfg(test)]
mod tests {
    use burn_flex::Flex;

    use super::*;

    /// Outside `with_reference_ops` the seam runs the backend's kernel, inside it the reference,
    /// on the same inputs (the flex SwiGLU's `exp` differs from burn's in the last bits, so the
    /// two are told apart).
    #[test]
    fn the_seam_picks_the_kernel_or_the_reference() {
        let f = 64;
        let values: Vec<f32> = (0..4 * 2 * f).map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0).collect();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(values, [4, 2 * f]), &Default::default());
        let bits = |t: Tensor<Flex, 2>| -> Vec<u32> {
            t.into_data().into_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
        };
        let kernel = bits(<Flex as LayerOps>::swiglu(x.clone(), f));
        let reference = bits(reference::swiglu(x.clone(), f));
        assert_ne!(kernel, reference, "the test needs inputs on which the two differ");
        assert_eq!(bits(swiglu::<Flex>(x.clone(), f)), kernel);
        assert_eq!(bits(with_reference_ops(|| swiglu::<Flex>(x.clone(), f))), reference);
        assert_eq!(bits(swiglu::<Flex>(x, f)), kernel, "the switch stays on after the closure");
    }
}
