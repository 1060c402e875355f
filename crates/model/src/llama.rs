//! The Llama-family decoder as burn modules: embedding, decoder layers, final norm, LM head.
//!
//! One layer is `x + o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))))` followed by
//! `x + down(silu(gate(n2(x))) * up(n2(x)))`. Qwen2 adds q/k/v biases, Qwen3 a per-head RMSNorm on
//! q and k. RoPE is the rotate-half form used by HF checkpoints. q/k/v and gate/up projections
//! are fused into one product each (stored weights as parts, dense ones concatenated on load),
//! which the math does not see. Weights are held as the file stores them where the backend
//! computes from them ([`WeightPrecision`], [`ProjWeight`]).
//!
//! Activations are `[tokens, hidden]`; a layer call may stack the rows of several sequences
//! ([`Segment`]), which share the projections and the MLP and attend each over its own K/V.
//! Layers are exposed one by one: running them in any order is the executor's business. The
//! projections, the head split with RoPE, attention and the SwiGLU gate go through
//! [`LayerOps`], which a backend may implement with fused kernels.

use std::sync::Arc;

use crate::tensors::{LayerTensor, ModelTensor};
use crate::weights::{HostTensor, WeightSource, expect_stored, expect_tensor};
use crate::{ModelConfig, ModelError};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use cola_kernels::StoredMatrix;
use cola_kernels::ops::{self, AttnMask, Heads, KvCache, LayerOps, Positions, RmsNorm, Rope};
use cola_kernels::stored::int8::Int8Kernel;
use cola_kernels::stored::kernels::Dot;

/// How weights are held after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightPrecision {
    /// As the file stores them (4/8-bit blocks, 16-bit floats) on backends that compute from
    /// them ([`LayerOps::STORED_WEIGHTS`], the CPU); dequantized to f32 on the others.
    #[default]
    Stored,
    /// As stored, and products of activation rows (prefill, decoding, lockstep) with 4/8-bit
    /// blocks take the activations quantized per 32 values to 8 bits and integer sums
    /// ([`Dot::Int8`]): approximate, faster, opt-in; needs AVX2 or AVX-512 VNNI. Backends that do not
    /// compute from stored weights dequantize to f32 as for `Stored`.
    StoredInt8,
    /// Dequantized to f32 on load, everywhere.
    F32,
}

impl WeightPrecision {
    pub const ALL: [WeightPrecision; 3] = [WeightPrecision::Stored, WeightPrecision::StoredInt8, WeightPrecision::F32];

    /// Whether backend `B` keeps weights as stored under this precision.
    fn keeps_stored<B: LayerOps>(self) -> bool {
        self != WeightPrecision::F32 && B::STORED_WEIGHTS
    }

    /// Whether products on backend `B` are approximate (int8 activations): runs record it.
    pub fn is_approximate<B: LayerOps>(self) -> bool {
        self == WeightPrecision::StoredInt8 && self.keeps_stored::<B>()
    }

    /// How products with kept block weights are computed.
    /// (`from_source` refuses `StoredInt8` where no vector int8 kernel runs.)
    fn dot(self) -> Dot {
        match (self, Int8Kernel::detect()) {
            (WeightPrecision::StoredInt8, Some(kernel)) => Dot::Int8 { kernel },
            _ => Dot::Exact,
        }
    }

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::Stored => "stored",
            WeightPrecision::StoredInt8 => "stored-int8",
            WeightPrecision::F32 => "f32",
        }
    }
}

cola_names::by_name!(WeightPrecision, "weight precision");

/// A stored weight dequantized to a dense f32 host tensor.
fn dense(w: &StoredMatrix) -> HostTensor {
    HostTensor::new(vec![w.rows(), w.cols()], w.to_f32())
}

/// A projection's weight.
#[derive(Debug, Clone)]
pub enum ProjWeight<B: Backend> {
    /// `[in, out]` f32 on the device (burn's `Linear` layout).
    Dense(Tensor<B, 2>),
    /// PyTorch-layout `[out_i, in]` parts as stored, stacked along the outputs (q, k, v or gate,
    /// up side by side; each part keeps its own format).
    Stored(Arc<[StoredMatrix]>),
}

/// `y = x · W (+ b)`: a linear layer whose weight may be held as stored.
#[derive(Debug, Clone)]
pub struct Projection<B: Backend> {
    pub weight: ProjWeight<B>,
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Projection<B> {
    /// Whether a product with it takes int8 activations.
    fn int8_products(&self) -> bool {
        matches!(&self.weight, ProjWeight::Stored(parts) if parts.iter().any(StoredMatrix::int8_products))
    }
}

impl<B: LayerOps> Projection<B> {
    /// # Shapes
    /// `x`: `[rows, in]` -> `[rows, out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = match &self.weight {
            ProjWeight::Dense(w) => ops::matmul_weight(x, w.clone()),
            ProjWeight::Stored(parts) => ops::matmul_stored(x, parts),
        };
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }

    /// PyTorch `[out_i, in]` weights stacked along the outputs, held as `precision` asks on `B`.
    fn load(
        parts: Vec<StoredMatrix>, bias: Option<HostTensor>, precision: WeightPrecision, device: &B::Device,
    ) -> Self {
        let weight = if precision.keeps_stored::<B>() {
            ProjWeight::Stored(parts.into_iter().map(|p| p.with_dot(precision.dot())).collect())
        } else {
            let dense: Vec<HostTensor> = parts.iter().map(dense).collect();
            ProjWeight::Dense(tensor2(concat_rows(&dense).transposed(), device))
        };
        Projection { weight, bias: bias.map(|b| tensor1(b, device)) }
    }
}

/// The token embedding matrix `[vocab, hidden]` (also the LM head when tied).
#[derive(Debug, Clone)]
pub enum TokenEmbedding<B: Backend> {
    Dense(Tensor<B, 2>),
    Stored(Arc<StoredMatrix>),
}

/// Self-attention with grouped K/V heads.
#[derive(Debug, Clone)]
pub struct Attention<B: Backend> {
    /// q, k and v projections side by side: `[hidden, (heads + 2 * kv_heads) * head_dim]`.
    pub qkv_proj: Projection<B>,
    pub o_proj: Projection<B>,
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
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
        let qkv = self.qkv_proj.forward(x);
        let norms = self.q_norm.as_ref().zip(self.k_norm.as_ref());
        let single = segments.len() == 1;
        let starts: Vec<usize> = segments
            .iter()
            .scan(0, |row, seg| {
                *row += seg.rows;
                Some(*row - seg.rows)
            })
            .collect();
        let (outs, caches): (Vec<_>, Vec<_>) = ops::for_segments::<B, _>(segments.len(), |i| {
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
            let (q, k, v) = ops::split_heads_rope(part, heads, rope, positions, norms);
            let cache = ops::extend_cache(seg.past, k, v);
            let mask = seg.tree.map_or(AttnMask::Causal, |t| t.mask.clone());
            (ops::attend(q, &cache, heads, &mask), cache)
        })
        .into_iter()
        .unzip();
        let out = if single { outs.into_iter().next().expect("one segment") } else { Tensor::cat(outs, 0) };
        (self.o_proj.forward(out), caches)
    }
}

/// SwiGLU feed-forward block.
#[derive(Debug, Clone)]
pub struct Mlp<B: Backend> {
    /// gate and up projections side by side: `[hidden, 2 * intermediate]`.
    pub gate_up_proj: Projection<B>,
    pub down_proj: Projection<B>,
    pub intermediate_size: usize,
}

impl<B: LayerOps> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let gu = self.gate_up_proj.forward(x);
        self.down_proj.forward(ops::swiglu(gu, self.intermediate_size))
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
pub struct CausalLm<B: Backend> {
    pub embed_tokens: TokenEmbedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    pub lm_head: Option<Projection<B>>,
}

impl<B: Backend> CausalLm<B> {
    /// Token embeddings `[tokens, hidden]` for one sequence of ids.
    pub fn embed(&self, ids: &[u32], device: &B::Device) -> Tensor<B, 2> {
        match &self.embed_tokens {
            TokenEmbedding::Dense(w) => {
                let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let n = ids.len();
                let index = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), device);
                w.clone().select(0, index)
            }
            TokenEmbedding::Stored(w) => {
                let h = w.cols();
                let mut out = vec![0.0f32; ids.len() * h];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(h)) {
                    w.dequantize_rows(id as usize, id as usize + 1, row);
                }
                Tensor::from_data(TensorData::new(out, [ids.len(), h]), device)
            }
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Whether any of its products takes int8 activations (`stored-int8` kept a block-format
    /// weight): approximate results, which runs record.
    pub fn int8_products(&self) -> bool {
        let tied = match (&self.lm_head, &self.embed_tokens) {
            (None, TokenEmbedding::Stored(e)) => e.int8_products(),
            _ => false,
        };
        let projections = self
            .layers
            .iter()
            .flat_map(|l| [&l.self_attn.qkv_proj, &l.self_attn.o_proj, &l.mlp.gate_up_proj, &l.mlp.down_proj]);
        tied || projections.chain(&self.lm_head).any(Projection::int8_products)
    }
}

impl<B: LayerOps> CausalLm<B> {
    /// Final norm and LM head: `[tokens, hidden]` -> `[tokens, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.norm.forward(hidden);
        match (&self.lm_head, &self.embed_tokens) {
            (Some(head), _) => head.forward(h),
            // Tied: the embedding matrix `[vocab, hidden]`, used transposed.
            (None, TokenEmbedding::Dense(e)) => ops::matmul_weight_t(h, e.clone()),
            (None, TokenEmbedding::Stored(e)) => ops::matmul_stored(h, std::slice::from_ref(e)),
        }
    }

    /// Builds the model from named HF tensors, checking every shape against `config`; weights
    /// are held as `precision` asks.
    pub fn from_source(
        config: &ModelConfig, source: &dyn WeightSource, device: &B::Device, precision: WeightPrecision,
    ) -> Result<Self, ModelError> {
        let (nh, nkv, hd) = (config.num_heads, config.num_kv_heads, config.head_dim);
        // Names and shapes come from the one table in `crate::tensors`.
        let get = |t: ModelTensor| expect_tensor(source, &t.hf_name(), &t.shape(config));
        let stored = |t: ModelTensor| expect_stored(source, &t.hf_name(), &t.shape(config));
        let norm = |t: ModelTensor| -> Result<RmsNorm<B>, ModelError> {
            Ok(RmsNorm { weight: Param::from_tensor(tensor1(get(t)?, device)), eps: config.rms_norm_eps })
        };
        let proj =
            |parts: Vec<StoredMatrix>, bias: Option<HostTensor>| Projection::load(parts, bias, precision, device);

        let embed = stored(ModelTensor::Embed)?;
        if precision.is_approximate::<B>() && Int8Kernel::detect().is_none() {
            return Err(ModelError::Invalid(
                "--weights stored-int8 needs a CPU with AVX2 (or AVX-512 VNNI), which this one lacks (its portable \
                 int8 kernel is many times slower than the exact one); use --weights stored"
                    .into(),
            ));
        }
        let embed_tokens = if precision.keeps_stored::<B>() {
            // Tied to the LM head: its products go as the projections' do.
            TokenEmbedding::Stored(Arc::new(embed.with_dot(precision.dot())))
        } else {
            TokenEmbedding::Dense(tensor2(dense(&embed), device))
        };

        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let t = |lt: LayerTensor| ModelTensor::Layer(i, lt);
            let (q, k, v) = (stored(t(LayerTensor::Q))?, stored(t(LayerTensor::K))?, stored(t(LayerTensor::V))?);
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
            let (gate, up) = (stored(t(LayerTensor::Gate))?, stored(t(LayerTensor::Up))?);
            layers.push(DecoderLayer {
                input_layernorm: norm(t(LayerTensor::InputNorm))?,
                self_attn: Attention {
                    qkv_proj: proj(vec![q, k, v], qkv_bias),
                    o_proj: proj(vec![stored(t(LayerTensor::O))?], None),
                    q_norm,
                    k_norm,
                    num_heads: nh,
                    num_kv_heads: nkv,
                    head_dim: hd,
                },
                post_attention_layernorm: norm(t(LayerTensor::PostNorm))?,
                mlp: Mlp {
                    gate_up_proj: proj(vec![gate, up], None),
                    down_proj: proj(vec![stored(t(LayerTensor::Down))?], None),
                    intermediate_size: config.intermediate_size,
                },
            });
        }
        let lm_head =
            if config.tie_word_embeddings { None } else { Some(proj(vec![stored(ModelTensor::LmHead)?], None)) };
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

fn tensor1<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(t.data, [t.shape[0]]), device)
}

fn tensor2<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(t.data, [t.shape[0], t.shape[1]]), device)
}
