//! The one table of a Llama-family checkpoint's tensors: for each, its Hugging Face name, its
//! GGUF (llama.cpp) name and its PyTorch shape under a config. The loader
//! ([`crate::CausalLm::from_source`]), the checkpoint writer and random weights
//! ([`crate::weights`]) and the GGUF import ([`crate::gguf`]) all read names and shapes here.

use crate::config::ModelConfig;

/// A tensor of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerTensor {
    InputNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    O,
    PostNorm,
    Gate,
    Up,
    Down,
}

/// A tensor of the model, by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelTensor {
    Embed,
    Layer(usize, LayerTensor),
    FinalNorm,
    LmHead,
}

impl LayerTensor {
    /// In file order (the order HF writes them).
    pub const ALL: [LayerTensor; 14] = [
        LayerTensor::InputNorm,
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::QBias,
        LayerTensor::KBias,
        LayerTensor::VBias,
        LayerTensor::QNorm,
        LayerTensor::KNorm,
        LayerTensor::O,
        LayerTensor::PostNorm,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];

    /// (name after `model.layers.{i}.`, name after `blk.{i}.`)
    fn names(self) -> (&'static str, &'static str) {
        match self {
            LayerTensor::InputNorm => ("input_layernorm.weight", "attn_norm.weight"),
            LayerTensor::Q => ("self_attn.q_proj.weight", "attn_q.weight"),
            LayerTensor::K => ("self_attn.k_proj.weight", "attn_k.weight"),
            LayerTensor::V => ("self_attn.v_proj.weight", "attn_v.weight"),
            LayerTensor::QBias => ("self_attn.q_proj.bias", "attn_q.bias"),
            LayerTensor::KBias => ("self_attn.k_proj.bias", "attn_k.bias"),
            LayerTensor::VBias => ("self_attn.v_proj.bias", "attn_v.bias"),
            LayerTensor::QNorm => ("self_attn.q_norm.weight", "attn_q_norm.weight"),
            LayerTensor::KNorm => ("self_attn.k_norm.weight", "attn_k_norm.weight"),
            LayerTensor::O => ("self_attn.o_proj.weight", "attn_output.weight"),
            LayerTensor::PostNorm => ("post_attention_layernorm.weight", "ffn_norm.weight"),
            LayerTensor::Gate => ("mlp.gate_proj.weight", "ffn_gate.weight"),
            LayerTensor::Up => ("mlp.up_proj.weight", "ffn_up.weight"),
            LayerTensor::Down => ("mlp.down_proj.weight", "ffn_down.weight"),
        }
    }

    /// Whether a model of `config` has this tensor (biases: Qwen2; q/k norms: Qwen3).
    fn present(self, config: &ModelConfig) -> bool {
        match self {
            LayerTensor::QBias | LayerTensor::KBias | LayerTensor::VBias => config.attention_bias,
            LayerTensor::QNorm | LayerTensor::KNorm => config.qk_norm,
            _ => true,
        }
    }

    fn shape(self, config: &ModelConfig) -> Vec<usize> {
        let h = config.hidden_size;
        let q = config.num_heads * config.head_dim;
        let kv = config.num_kv_heads * config.head_dim;
        let ffn = config.intermediate_size;
        match self {
            LayerTensor::InputNorm | LayerTensor::PostNorm => vec![h],
            LayerTensor::Q => vec![q, h],
            LayerTensor::K | LayerTensor::V => vec![kv, h],
            LayerTensor::QBias => vec![q],
            LayerTensor::KBias | LayerTensor::VBias => vec![kv],
            LayerTensor::QNorm | LayerTensor::KNorm => vec![config.head_dim],
            LayerTensor::O => vec![h, q],
            LayerTensor::Gate | LayerTensor::Up => vec![ffn, h],
            LayerTensor::Down => vec![h, ffn],
        }
    }
}

impl ModelTensor {
    /// The Hugging Face (safetensors) name.
    pub fn hf_name(self) -> String {
        match self {
            ModelTensor::Embed => "model.embed_tokens.weight".into(),
            ModelTensor::Layer(i, t) => format!("model.layers.{i}.{}", t.names().0),
            ModelTensor::FinalNorm => "model.norm.weight".into(),
            ModelTensor::LmHead => "lm_head.weight".into(),
        }
    }

    /// The GGUF (llama.cpp) name.
    pub fn gguf_name(self) -> String {
        match self {
            ModelTensor::Embed => "token_embd.weight".into(),
            ModelTensor::Layer(i, t) => format!("blk.{i}.{}", t.names().1),
            ModelTensor::FinalNorm => "output_norm.weight".into(),
            ModelTensor::LmHead => "output.weight".into(),
        }
    }

    /// The PyTorch shape under `config`.
    pub fn shape(self, config: &ModelConfig) -> Vec<usize> {
        match self {
            ModelTensor::Embed | ModelTensor::LmHead => vec![config.vocab_size, config.hidden_size],
            ModelTensor::Layer(_, t) => t.shape(config),
            ModelTensor::FinalNorm => vec![config.hidden_size],
        }
    }

    /// The tensor whose HF name is `name`, if any.
    pub fn from_hf_name(name: &str) -> Option<ModelTensor> {
        match name {
            "model.embed_tokens.weight" => return Some(ModelTensor::Embed),
            "model.norm.weight" => return Some(ModelTensor::FinalNorm),
            "lm_head.weight" => return Some(ModelTensor::LmHead),
            _ => {}
        }
        let (layer, rest) = name.strip_prefix("model.layers.")?.split_once('.')?;
        let layer = layer.parse().ok()?;
        LayerTensor::ALL.into_iter().find(|t| t.names().0 == rest).map(|t| ModelTensor::Layer(layer, t))
    }
}

/// Every tensor a model of `config` has, in file order.
pub fn all(config: &ModelConfig) -> Vec<ModelTensor> {
    let mut out = vec![ModelTensor::Embed];
    for i in 0..config.num_layers {
        out.extend(LayerTensor::ALL.into_iter().filter(|t| t.present(config)).map(|t| ModelTensor::Layer(i, t)));
    }
    out.push(ModelTensor::FinalNorm);
    if !config.tie_word_embeddings {
        out.push(ModelTensor::LmHead);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model_type: &str, tied: bool) -> ModelConfig {
        ModelConfig::from_json_str(&format!(
            r#"{{"model_type":"{model_type}","hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":50,"tie_word_embeddings":{tied}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for c in [config("llama", true), config("qwen2", false), config("qwen3", true)] {
            let tensors = all(&c);
            let mut hf: Vec<String> = tensors.iter().map(|t| t.hf_name()).collect();
            let mut gguf: Vec<String> = tensors.iter().map(|t| t.gguf_name()).collect();
            for (t, name) in tensors.iter().zip(&hf) {
                assert_eq!(ModelTensor::from_hf_name(name), Some(*t));
            }
            hf.sort();
            hf.dedup();
            gguf.sort();
            gguf.dedup();
            assert_eq!((hf.len(), gguf.len()), (tensors.len(), tensors.len()));
        }
        assert_eq!(ModelTensor::from_hf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(ModelTensor::from_hf_name("model.layers.1.mlp.sideways.weight"), None);
    }

    #[test]
    fn architectures_have_their_extra_tensors() {
        // Per layer: 9 weights; qwen2 adds 3 biases, qwen3 2 norms; untied adds lm_head.
        assert_eq!(all(&config("llama", true)).len(), 2 + 2 * 9);
        assert_eq!(all(&config("qwen2", false)).len(), 3 + 2 * 12);
        assert_eq!(all(&config("qwen3", true)).len(), 2 + 2 * 11);
        let q = ModelTensor::Layer(0, LayerTensor::Q);
        assert_eq!(
            (q.hf_name(), q.gguf_name()),
            ("model.layers.0.self_attn.q_proj.weight".into(), "blk.0.attn_q.weight".into())
        );
        assert_eq!(q.shape(&config("llama", true)), vec![16, 16]);
        assert_eq!(ModelTensor::Layer(1, LayerTensor::K).shape(&config("llama", true)), vec![8, 16]);
    }
}
