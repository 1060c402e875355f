//! The Llama-family decoder as burn modules: embedding, decoder layers, final norm, LM head.
//!
//! One layer is `x + o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))))` followed by
//! `x + down(silu(gate(n2(x))) * up(n2(x)))`. Qwen2 adds q/k/v biases, Qwen3 a per-head RMSNorm on
//! q and k. RoPE is the rotate-half form used by HF checkpoints. q/k/v and gate/up projections
//! are fused into one matmul each (weights concatenated on load), which the math does not see.
//!
//! Activations are `[tokens, hidden]`; a layer call may stack the rows of several sequences
//! ([`Segment`]), which share the projections and the MLP and attend each over its own K/V.
//! Layers are exposed one by one: running them in any order is the executor's business. The
//! projections, the head split with RoPE, attention and the SwiGLU gate go through
//! [`LayerOps`], which a backend may implement with fused kernels.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::ops::{AttnMask, Heads, LayerOps, Positions};
use crate::tensors::{LayerTensor, ModelTensor};
use crate::weights::{HostTensor, WeightSource, expect_tensor};
use crate::{ModelConfig, ModelError};

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

/// Self-attention with grouped K/V heads.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// q, k and v projections side by side: `[hidden, (heads + 2 * kv_heads) * head_dim]`.
    pub qkv_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// The K/V entries one layer application produced, for all positions so far:
/// `[kv_heads, positions, head_dim]`, keys already rotated.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub k: Tensor<B, 3>,
    pub v: Tensor<B, 3>,
}

impl<B: Backend> KvCache<B> {
    pub fn len(&self) -> usize {
        self.k.dims()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokens laid out as a tree instead of one sequence: each token has an explicit position and
/// attends to the tokens `mask` allows. Used to score several continuations of one prompt in a
/// single pass: every branch sees the prompt and its own earlier tokens.
#[derive(Debug, Clone)]
pub struct TokenTree<B: Backend> {
    pub positions: Positions<B>,
    pub mask: AttnMask<B>,
}

impl<B: Backend> TokenTree<B> {
    /// `positions[i]` of each token; `hidden[q * n + k]` true where token q may not see token k.
    pub fn new(positions: Vec<usize>, hidden: Vec<bool>, device: &B::Device) -> Self {
        let n = positions.len();
        assert_eq!(hidden.len(), n * n, "mask must be tokens x tokens");
        let pos_dev: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
        TokenTree {
            positions: Positions::Given {
                device: Tensor::<B, 1, Int>::from_data(TensorData::new(pos_dev, [n]), device),
                host: positions.into(),
            },
            mask: AttnMask::Given {
                device: Tensor::<B, 2, Bool>::from_data(TensorData::new(hidden.clone(), [n, n]), device),
                host: Arc::from(hidden),
            },
        }
    }
}

/// One sequence's rows in a batched layer call: several sequences (chains at the same layer,
/// each over its own input and K/V) are stacked row-wise so the projections and the MLP run as
/// one matmul; only RoPE and attention run per segment.
#[derive(Debug)]
pub struct Segment<'a, B: Backend> {
    /// How many consecutive rows of the stacked input belong to this sequence.
    pub rows: usize,
    /// K/V of this sequence's earlier positions at this step.
    pub past: Option<&'a KvCache<B>>,
    /// Explicit positions and mask (then `past` must be None).
    pub tree: Option<&'a TokenTree<B>>,
}

impl<B: LayerOps> Attention<B> {
    fn heads(&self) -> Heads {
        Heads { q: self.num_heads, kv: self.num_kv_heads, dim: self.head_dim }
    }

    /// `x`: `[rows, hidden]` (already normed), the rows of `segments` stacked in order.
    /// Returns the attention output `[rows, hidden]` and, per segment, the K/V including its new
    /// positions.
    pub fn forward(
        &self, x: Tensor<B, 2>, rope: &Rope<B>, segments: &[Segment<'_, B>],
    ) -> (Tensor<B, 2>, Vec<KvCache<B>>) {
        let heads = self.heads();
        let qkv = project(&self.qkv_proj, x);
        let norms = self.q_norm.as_ref().zip(self.k_norm.as_ref());
        let single = segments.len() == 1;
        let starts: Vec<usize> = segments
            .iter()
            .scan(0, |row, seg| {
                *row += seg.rows;
                Some(*row - seg.rows)
            })
            .collect();
        let (outs, caches): (Vec<_>, Vec<_>) = B::for_segments(segments.len(), |i| {
            let seg = &segments[i];
            let part = if single { qkv.clone() } else { qkv.clone().narrow(0, starts[i], seg.rows) };
            let causal_from = Positions::From(seg.past.map_or(0, KvCache::len));
            let positions = match seg.tree {
                Some(t) => {
                    assert!(seg.past.is_none(), "a token tree is always a fresh prefill");
                    &t.positions
                }
                None => &causal_from,
            };
            let (q, k, v) = B::split_heads_rope(part, heads, rope, positions, norms);
            let cache = B::extend_cache(seg.past, k, v);
            let mask = seg.tree.map_or(AttnMask::Causal, |t| t.mask.clone());
            (B::attend(q, cache.k.clone(), cache.v.clone(), heads, &mask), cache)
        })
        .into_iter()
        .unzip();
        let out = if single { outs.into_iter().next().expect("one segment") } else { Tensor::cat(outs, 0) };
        (project(&self.o_proj, out), caches)
    }
}

/// SwiGLU feed-forward block.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// gate and up projections side by side: `[hidden, 2 * intermediate]`.
    pub gate_up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    pub intermediate_size: usize,
}

impl<B: LayerOps> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let gu = project(&self.gate_up_proj, x);
        project(&self.down_proj, B::swiglu(gu, self.intermediate_size))
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: LayerOps> DecoderLayer<B> {
    /// Applies the layer to `x` (`[rows, hidden]`): the rows of `segments` stacked in order, each
    /// segment's positions following its `past` (or given by its `tree`). Returns the new
    /// hidden rows and each segment's K/V.
    pub fn forward(
        &self, x: Tensor<B, 2>, rope: &Rope<B>, segments: &[Segment<'_, B>],
    ) -> (Tensor<B, 2>, Vec<KvCache<B>>) {
        let (attn, caches) = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, segments);
        let x = x + attn;
        let x = x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x));
        (x, caches)
    }
}

/// The whole causal LM. `lm_head` is `None` when the embedding matrix is tied to it.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    pub lm_head: Option<Linear<B>>,
}

/// A linear layer through [`LayerOps::matmul_weight`] (burn's `Linear::forward` computes the
/// same, always with a general matmul).
fn project<B: LayerOps>(linear: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let y = B::matmul_weight(x, linear.weight.val());
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<2>(),
        None => y,
    }
}

impl<B: Backend> CausalLm<B> {
    /// Token embeddings `[tokens, hidden]` for one sequence of ids.
    pub fn embed(&self, ids: &[u32], device: &B::Device) -> Tensor<B, 2> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let n = ids.len();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), device);
        self.embed_tokens.weight.val().select(0, index)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

impl<B: LayerOps> CausalLm<B> {
    /// Final norm and LM head: `[tokens, hidden]` -> `[tokens, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.norm.forward(hidden);
        match &self.lm_head {
            Some(head) => project(head, h),
            // Tied: the embedding matrix `[vocab, hidden]`, used transposed.
            None => B::matmul_weight_t(h, self.embed_tokens.weight.val()),
        }
    }

    /// Builds the model from named HF tensors, checking every shape against `config`.
    pub fn from_source(
        config: &ModelConfig, source: &dyn WeightSource, device: &B::Device,
    ) -> Result<Self, ModelError> {
        let (nh, nkv, hd) = (config.num_heads, config.num_kv_heads, config.head_dim);
        // Names and shapes come from the one table in `crate::tensors`.
        let get = |t: ModelTensor| expect_tensor(source, &t.hf_name(), &t.shape(config));
        let norm = |t: ModelTensor| -> Result<RmsNorm<B>, ModelError> {
            Ok(RmsNorm { weight: Param::from_tensor(tensor1(get(t)?, device)), eps: config.rms_norm_eps })
        };

        let embed_tokens = Embedding { weight: Param::from_tensor(tensor2(get(ModelTensor::Embed)?, device)) };

        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let t = |lt: LayerTensor| ModelTensor::Layer(i, lt);
            let (q, k, v) = (get(t(LayerTensor::Q))?, get(t(LayerTensor::K))?, get(t(LayerTensor::V))?);
            let qkv_bias = if config.attention_bias {
                let biases = [get(t(LayerTensor::QBias))?, get(t(LayerTensor::KBias))?, get(t(LayerTensor::VBias))?];
                Some(concat_rows(&biases))
            } else {
                None
            };
            let (q_norm, k_norm) = if config.qk_norm {
                (Some(norm(t(LayerTensor::QNorm))?), Some(norm(t(LayerTensor::KNorm))?))
            } else {
                (None, None)
            };
            let (gate, up) = (get(t(LayerTensor::Gate))?, get(t(LayerTensor::Up))?);
            layers.push(DecoderLayer {
                input_layernorm: norm(t(LayerTensor::InputNorm))?,
                self_attn: Attention {
                    qkv_proj: linear(concat_rows(&[q, k, v]), qkv_bias, device),
                    o_proj: linear(get(t(LayerTensor::O))?, None, device),
                    q_norm,
                    k_norm,
                    num_heads: nh,
                    num_kv_heads: nkv,
                    head_dim: hd,
                },
                post_attention_layernorm: norm(t(LayerTensor::PostNorm))?,
                mlp: Mlp {
                    gate_up_proj: linear(concat_rows(&[gate, up]), None, device),
                    down_proj: linear(get(t(LayerTensor::Down))?, None, device),
                    intermediate_size: config.intermediate_size,
                },
            });
        }
        let lm_head =
            if config.tie_word_embeddings { None } else { Some(linear(get(ModelTensor::LmHead)?, None, device)) };
        Ok(CausalLm { embed_tokens, layers, norm: norm(ModelTensor::FinalNorm)?, lm_head })
    }
}

/// Stacks PyTorch `[out_i, in]` matrices (or `[out_i]` vectors) along the first axis.
fn concat_rows(parts: &[HostTensor]) -> HostTensor {
    let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
    let mut shape = parts[0].shape.clone();
    shape[0] = rows;
    HostTensor::new(shape, parts.iter().flat_map(|p| p.data.iter().copied()).collect())
}

/// A burn `Linear` from a PyTorch `[out, in]` weight (stored transposed, as burn expects).
fn linear<B: Backend>(weight: HostTensor, bias: Option<HostTensor>, device: &B::Device) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(tensor2(weight.transposed(), device)),
        bias: bias.map(|b| Param::from_tensor(tensor1(b, device))),
    }
}

fn tensor1<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(t.data, [t.shape[0]]), device)
}

fn tensor2<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(t.data, [t.shape[0], t.shape[1]]), device)
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
    pub fn new(config: &ModelConfig, max_len: usize, device: &B::Device) -> Self {
        let inv_freq: Vec<f32> = config.rope_inv_freq().into_iter().map(|f| f as f32).collect();
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
