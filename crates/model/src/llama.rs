//! The Llama-family decoder as burn modules: embedding, decoder layers, final norm, LM head.
//!
//! One layer is `x + o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x)))) ` followed by
//! `x + down(silu(gate(n2(x))) * up(n2(x)))`. Qwen2 adds q/k/v biases, Qwen3 a per-head RMSNorm on
//! q and k. RoPE is the rotate-half form used by HF checkpoints. q/k/v and gate/up projections
//! are fused into one matmul each (weights concatenated on load), which the math does not see.
//!
//! Layers are exposed one by one: running them in any order is the executor's business.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData};

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
/// `[batch, kv_heads, positions, head_dim]`, keys already rotated.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    pub fn len(&self) -> usize {
        self.k.dims()[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokens laid out as a tree instead of one sequence: each token has an explicit position and
/// attends to the tokens `mask` allows (true = hidden). Used to score several continuations of
/// one prompt in a single pass: every branch sees the prompt and its own earlier tokens.
#[derive(Debug, Clone)]
pub struct TokenTree<B: Backend> {
    /// `[tokens]` RoPE position of each token.
    pub positions: Tensor<B, 1, Int>,
    /// `[1, 1, tokens, tokens]`, true where attention is not allowed.
    pub mask: Tensor<B, 4, Bool>,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[batch, seq, hidden]` (already normed). `past`: K/V of earlier positions of this
    /// same layer application. `tree`: explicit positions and mask (then `past` must be None).
    /// Returns the attention output and the K/V including `x`'s positions.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        past: Option<&KvCache<B>>,
        tree: Option<&TokenTree<B>>,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let [b, s, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = self.qkv_proj.forward(x);
        let q = qkv.clone().narrow(2, 0, nh * hd).reshape([b, s, nh, hd]);
        let k = qkv.clone().narrow(2, nh * hd, nkv * hd).reshape([b, s, nkv, hd]);
        let v = qkv.narrow(2, (nh + nkv) * hd, nkv * hd).reshape([b, s, nkv, hd]);
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(q), kn.forward(k)),
            _ => (q, k),
        };
        let (q, k) = match tree {
            Some(t) => {
                assert!(past.is_none(), "a token tree is always a fresh prefill");
                (rope.apply_at(q.swap_dims(1, 2), &t.positions), rope.apply_at(k.swap_dims(1, 2), &t.positions))
            }
            None => {
                let start = past.map_or(0, KvCache::len);
                (rope.apply(q.swap_dims(1, 2), start), rope.apply(k.swap_dims(1, 2), start))
            }
        };
        let v = v.swap_dims(1, 2);
        let cache = match past {
            Some(p) => KvCache { k: Tensor::cat(vec![p.k.clone(), k], 2), v: Tensor::cat(vec![p.v.clone(), v], 2) },
            None => KvCache { k, v },
        };
        let groups = nh / nkv;
        let t = cache.len();
        let out = if s == 1 && tree.is_none() {
            // One query per head: fold the query heads of a group onto the sequence axis so the
            // shared K/V need not be copied. No causal mask is needed for the newest position.
            let q = q.reshape([b, nkv, groups, hd]);
            let o = attention(q, cache.k.clone(), cache.v.clone(), None, None, AttentionModuleOptions::default());
            o.reshape([b, nh, 1, hd])
        } else {
            let expand = |x: Tensor<B, 4>| {
                if groups == 1 {
                    x
                } else {
                    x.unsqueeze_dim::<5>(2).expand([b, nkv, groups, t, hd]).reshape([b, nh, t, hd])
                }
            };
            let (mask, options) = match tree {
                Some(t) => (Some(t.mask.clone()), AttentionModuleOptions::default()),
                None => (None, AttentionModuleOptions { is_causal: true, ..Default::default() }),
            };
            attention(q, expand(cache.k.clone()), expand(cache.v.clone()), mask, None, options)
        };
        let out = out.swap_dims(1, 2).reshape([b, s, nh * hd]);
        (self.o_proj.forward(out), cache)
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

impl<B: Backend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gu = self.gate_up_proj.forward(x);
        let f = self.intermediate_size;
        let gate = gu.clone().narrow(2, 0, f);
        let up = gu.narrow(2, f, f);
        self.down_proj.forward(silu(gate) * up)
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

impl<B: Backend> DecoderLayer<B> {
    /// Applies the layer to `x` (`[batch, seq, hidden]`) whose positions follow those in `past`
    /// (or are given by `tree`).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        past: Option<&KvCache<B>>,
        tree: Option<&TokenTree<B>>,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let (attn, cache) = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, past, tree);
        let x = x + attn;
        let x = x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x));
        (x, cache)
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

impl<B: Backend> CausalLm<B> {
    /// Token embeddings `[1, seq, hidden]` for one sequence of ids.
    pub fn embed(&self, ids: &[u32], device: &B::Device) -> Tensor<B, 3> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let n = ids.len();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), device);
        self.embed_tokens.forward(ids)
    }

    /// Final norm and LM head: `[batch, seq, hidden]` -> `[batch, seq, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.norm.forward(hidden);
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => {
                let [b, s, d] = h.dims();
                let w = self.embed_tokens.weight.val(); // [vocab, hidden]
                let vocab = w.dims()[0];
                h.reshape([b * s, d]).matmul(w.transpose()).reshape([b, s, vocab])
            }
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Builds the model from named HF tensors, checking every shape against `config`.
    pub fn from_source(
        config: &ModelConfig,
        source: &dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let h = config.hidden_size;
        let (nh, nkv, hd) = (config.num_heads, config.num_kv_heads, config.head_dim);
        let ffn = config.intermediate_size;
        let get = |name: &str, shape: &[usize]| expect_tensor(source, name, shape);
        let norm = |name: &str, dim: usize| -> Result<RmsNorm<B>, ModelError> {
            Ok(RmsNorm { weight: Param::from_tensor(tensor1(get(name, &[dim])?, device)), eps: config.rms_norm_eps })
        };

        let embed = get("model.embed_tokens.weight", &[config.vocab_size, h])?;
        let embed_tokens = Embedding { weight: Param::from_tensor(tensor2(embed, device)) };

        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            let q = get(&format!("{p}.self_attn.q_proj.weight"), &[nh * hd, h])?;
            let k = get(&format!("{p}.self_attn.k_proj.weight"), &[nkv * hd, h])?;
            let v = get(&format!("{p}.self_attn.v_proj.weight"), &[nkv * hd, h])?;
            let qkv_bias = if config.attention_bias {
                let qb = get(&format!("{p}.self_attn.q_proj.bias"), &[nh * hd])?;
                let kb = get(&format!("{p}.self_attn.k_proj.bias"), &[nkv * hd])?;
                let vb = get(&format!("{p}.self_attn.v_proj.bias"), &[nkv * hd])?;
                Some(concat_rows(&[qb, kb, vb]))
            } else {
                None
            };
            let (q_norm, k_norm) = if config.qk_norm {
                (
                    Some(norm(&format!("{p}.self_attn.q_norm.weight"), hd)?),
                    Some(norm(&format!("{p}.self_attn.k_norm.weight"), hd)?),
                )
            } else {
                (None, None)
            };
            let o = get(&format!("{p}.self_attn.o_proj.weight"), &[h, nh * hd])?;
            let gate = get(&format!("{p}.mlp.gate_proj.weight"), &[ffn, h])?;
            let up = get(&format!("{p}.mlp.up_proj.weight"), &[ffn, h])?;
            let down = get(&format!("{p}.mlp.down_proj.weight"), &[h, ffn])?;
            layers.push(DecoderLayer {
                input_layernorm: norm(&format!("{p}.input_layernorm.weight"), h)?,
                self_attn: Attention {
                    qkv_proj: linear(concat_rows(&[q, k, v]), qkv_bias, device),
                    o_proj: linear(o, None, device),
                    q_norm,
                    k_norm,
                    num_heads: nh,
                    num_kv_heads: nkv,
                    head_dim: hd,
                },
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm.weight"), h)?,
                mlp: Mlp {
                    gate_up_proj: linear(concat_rows(&[gate, up]), None, device),
                    down_proj: linear(down, None, device),
                    intermediate_size: ffn,
                },
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear(get("lm_head.weight", &[config.vocab_size, h])?, None, device))
        };
        Ok(CausalLm { embed_tokens, layers, norm: norm("model.norm.weight", h)?, lm_head })
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

/// Rotate-half RoPE tables, `[max_len, head_dim]`, with each frequency repeated for both halves.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
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
            cos: Tensor::from_data(TensorData::new(cos, [max_len, hd]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_len, hd]), device),
            max_len,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) whose first position is `start`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let s = x.dims()[2];
        assert!(start + s <= self.max_len, "RoPE table holds {} positions, asked for {}", self.max_len, start + s);
        let cos = self.cos.clone().narrow(0, start, s);
        let sin = self.sin.clone().narrow(0, start, s);
        Self::rotate(x, cos, sin)
    }

    /// Rotates `x` whose token i sits at `positions[i]`.
    pub fn apply_at(&self, x: Tensor<B, 4>, positions: &Tensor<B, 1, Int>) -> Tensor<B, 4> {
        let cos = self.cos.clone().select(0, positions.clone());
        let sin = self.sin.clone().select(0, positions.clone());
        Self::rotate(x, cos, sin)
    }

    fn rotate(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
        let hd = x.dims()[3];
        let (cos, sin) = (cos.unsqueeze::<4>(), sin.unsqueeze::<4>());
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}
