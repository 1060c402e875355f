//! The Hugging Face `config.json` of a Llama-family checkpoint, parsed into the few numbers the
//! architecture needs. Options that would change the computation but are not implemented are
//! refused here, by field name, rather than ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ModelError;

/// Architectures that share the Llama decoder layer (pre-norm, RoPE, GQA attention, SwiGLU MLP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Architecture {
    pub const ALL: [Architecture; 4] =
        [Architecture::Llama, Architecture::Mistral, Architecture::Qwen2, Architecture::Qwen3];

    /// The `model_type` of its HF `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
        }
    }

    /// The transformers class named in `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// llama.cpp's `general.architecture` (it writes Mistral models as `llama`).
    pub fn gguf_name(self) -> Option<&'static str> {
        match self {
            Architecture::Mistral => None,
            other => Some(other.as_str()),
        }
    }

    pub fn from_model_type(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn from_gguf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.gguf_name() == Some(name))
    }

    /// The names `names` gives, for error messages: `llama, mistral, ...`.
    pub fn supported(names: fn(Architecture) -> Option<&'static str>) -> String {
        Self::ALL.into_iter().filter_map(names).collect::<Vec<_>>().join(", ")
    }
}

/// Llama 3.x frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// How RoPE frequencies are derived from `rope_theta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (`rope_type == "linear"`).
    Linear {
        factor: f64,
    },
    Llama3(Llama3RopeScaling),
}

/// Everything about the architecture that the forward pass depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2; Llama with `attention_bias`).
    pub attention_bias: bool,
    /// Per-head RMSNorm on queries and keys before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Attention window; sequences longer than this are refused (we only implement full attention).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!("field `{field}`: {why}"))
}

/// A token id or a list of them (`eos_token_id` is either).
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

/// `config.json` as Hugging Face writes it: the fields this project reads (others are ignored),
/// each optional here so that [`HfConfig::into_config`] can say which one is missing.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    mlp_bias: Option<bool>,
    attention_bias: Option<bool>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRope>,
    /// transformers >= 5: theta and scaling together.
    rope_parameters: Option<HfRope>,
    max_position_embeddings: Option<usize>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
}

/// Widest attention head accepted (the supported families use 64-256).
const MAX_HEAD_DIM: usize = 4096;

fn positive(value: Option<usize>, field: &str) -> Result<usize, ModelError> {
    match value {
        None => Err(bad(field, "missing")),
        Some(0) => Err(bad(field, "must be positive")),
        Some(n) => Ok(n),
    }
}

impl HfConfig {
    /// Validates the fields and derives the runtime config.
    fn into_config(self) -> Result<ModelConfig, ModelError> {
        let model_type = self.model_type.as_deref().ok_or_else(|| bad("model_type", "missing"))?;
        let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
            bad(
                "model_type",
                format!(
                    "`{model_type}` is not supported (supported: {})",
                    Architecture::supported(|a| Some(a.as_str()))
                ),
            )
        })?;
        let hidden_size = positive(self.hidden_size, "hidden_size")?;
        let num_heads = positive(self.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = self.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
            ));
        }
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if !hidden_size.is_multiple_of(num_heads) => {
                return Err(bad(
                    "hidden_size",
                    format!("{hidden_size} is not divisible by num_attention_heads = {num_heads}"),
                ));
            }
            None => hidden_size / num_heads,
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", format!("{head_dim} must be even and positive")));
        }
        // The RoPE tables are sized by head_dim before any tensor is read, so a lying config
        // must not get as far as allocating them.
        if head_dim > MAX_HEAD_DIM {
            return Err(bad(
                "head_dim",
                format!("{head_dim} is larger than {MAX_HEAD_DIM}; no supported model has heads this wide"),
            ));
        }
        if let Some(act) = self.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(bad("hidden_act", format!("`{act}` is not supported (only silu)")));
        }
        if self.mlp_bias == Some(true) {
            return Err(bad("mlp_bias", "true is not supported"));
        }
        let attention_bias = match architecture {
            Architecture::Qwen2 => true,
            Architecture::Qwen3 if self.attention_bias == Some(true) => {
                return Err(bad("attention_bias", "true is not supported for qwen3"));
            }
            _ => self.attention_bias.unwrap_or(false),
        };
        // transformers >= 5 writes `rope_parameters` (theta and scaling together); older
        // checkpoints have top-level `rope_theta` and `rope_scaling`.
        let (rope_theta, rope_scaling) = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) => (p.rope_theta, p.scaling("rope_parameters")?),
            (None, Some(r)) => (self.rope_theta, r.scaling("rope_scaling")?),
            (None, None) => (self.rope_theta, RopeScaling::None),
        };
        let rope_theta = rope_theta.unwrap_or(10_000.0);
        if !(rope_theta > 0.0 && rope_theta.is_finite()) {
            return Err(bad("rope_theta", "must be positive"));
        }
        let sliding_window = match architecture {
            Architecture::Qwen2 | Architecture::Qwen3 if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        };
        let eps = self.rms_norm_eps.unwrap_or(1e-6);
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(bad("rms_norm_eps", "must be positive"));
        }
        Ok(ModelConfig {
            architecture,
            vocab_size: positive(self.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: positive(self.intermediate_size, "intermediate_size")?,
            num_layers: positive(self.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            attention_bias,
            qk_norm: architecture == Architecture::Qwen3,
            sliding_window,
            bos_token_id: self.bos_token_id.map(TokenIds::into_vec).unwrap_or_default().first().copied(),
            eos_token_ids: self.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
        })
    }
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| e.in_file(path))
    }

    /// Parses the text of an HF `config.json`: serde reads the fields (a wrong type is an
    /// error naming the field), [`HfConfig::into_config`] validates them.
    pub fn from_json_str(text: &str) -> Result<Self, ModelError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ModelError::Config(format!("not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(ModelError::Config("expected a JSON object".into()));
        }
        let hf: HfConfig = serde_path_to_error::deserialize(v).map_err(|e| bad(&e.path().to_string(), e.inner()))?;
        hf.into_config()
    }

    /// The HF `config.json` text for this configuration (used by GGUF import and random models).
    pub fn to_hf_json(&self) -> Value {
        let mut v = serde_json::json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias && self.architecture != Architecture::Qwen2,
            "torch_dtype": "float32",
        });
        let obj = v.as_object_mut().expect("object literal");
        match self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                obj.insert("rope_scaling".into(), serde_json::json!({"rope_type": "linear", "factor": factor}));
            }
            RopeScaling::Llama3(s) => {
                obj.insert(
                    "rope_scaling".into(),
                    serde_json::json!({
                        "rope_type": "llama3",
                        "factor": s.factor,
                        "low_freq_factor": s.low_freq_factor,
                        "high_freq_factor": s.high_freq_factor,
                        "original_max_position_embeddings": s.original_max_position_embeddings,
                    }),
                );
            }
        }
        if let Some(w) = self.sliding_window {
            obj.insert("sliding_window".into(), w.into());
            obj.insert("use_sliding_window".into(), true.into());
        }
        if let Some(b) = self.bos_token_id {
            obj.insert("bos_token_id".into(), b.into());
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                obj.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                obj.insert("eos_token_id".into(), many.to_vec().into());
            }
        }
        v
    }

    /// Inverse RoPE frequencies, one per pair of head dimensions, with any scaling applied
    /// (matches transformers' `_compute_default_rope_parameters` / `_compute_llama3_parameters`).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let half = self.head_dim / 2;
        let base: Vec<f64> =
            (0..half).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / self.head_dim as f64)).collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3(s) => {
                let old_len = s.original_max_position_embeddings as f64;
                let low_freq_wavelen = old_len / s.low_freq_factor;
                let high_freq_wavelen = old_len / s.high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / s.factor
                        } else {
                            let smooth =
                                (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// `rope_scaling` (or transformers 5's `rope_parameters`, which also holds `rope_theta`).
#[derive(Deserialize)]
struct HfRope {
    rope_type: Option<String>,
    /// The older spelling of `rope_type`.
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

impl HfRope {
    /// The scaling it asks for; `field` names it in errors.
    fn scaling(&self, field: &str) -> Result<RopeScaling, ModelError> {
        let Some(kind) = self.rope_type.as_deref().or(self.kind.as_deref()) else {
            // `rope_parameters` may hold only the theta.
            return if self.factor.is_none() { Ok(RopeScaling::None) } else { Err(bad(field, "has no `rope_type`")) };
        };
        let need = |value: Option<f64>, name: &str| {
            value
                .filter(|f| *f > 0.0 && f.is_finite())
                .ok_or_else(|| bad(&format!("{field}.{name}"), "missing or not positive"))
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear { factor: need(self.factor, "factor")? }),
            "llama3" => {
                let s = Llama3RopeScaling {
                    factor: need(self.factor, "factor")?,
                    low_freq_factor: need(self.low_freq_factor, "low_freq_factor")?,
                    high_freq_factor: need(self.high_freq_factor, "high_freq_factor")?,
                    original_max_position_embeddings: self
                        .original_max_position_embeddings
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(&format!("{field}.original_max_position_embeddings"), "missing"))?,
                };
                if s.high_freq_factor <= s.low_freq_factor {
                    return Err(bad(&format!("{field}.high_freq_factor"), "must be greater than low_freq_factor"));
                }
                Ok(RopeScaling::Llama3(s))
            }
            other => Err(bad(
                &format!("{field}.rope_type"),
                format!("`{other}` is not supported (supported: default, linear, llama3)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = r#"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,
        "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
        "rms_norm_eps":1e-5,"rope_theta":100000.0,"tie_word_embeddings":true,"hidden_act":"silu"}"#;

    #[test]
    fn parses_smollm_shape() {
        let c = ModelConfig::from_json_str(SMOL).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.num_kv_heads, 3);
        assert!(c.tie_word_embeddings);
        assert!(!c.attention_bias);
    }

    #[test]
    fn round_trips_through_hf_json() {
        let c = ModelConfig::from_json_str(SMOL).unwrap();
        let again = ModelConfig::from_json_str(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn unknown_model_type_names_the_field() {
        let e = ModelConfig::from_json_str(&SMOL.replace("llama", "gpt_neox")).unwrap_err();
        assert!(e.to_string().contains("model_type"), "{e}");
    }

    /// Found by `edited_configs_are_consistent_or_errors`: a huge hidden_size divisible by the
    /// head count made head_dim huge, and the RoPE table's allocation aborted the process.
    #[test]
    fn absurd_head_widths_are_errors_not_allocations() {
        let huge = 9 * (1u64 << 58);
        let e = ModelConfig::from_json_str(&SMOL.replace(r#""hidden_size":576"#, &format!(r#""hidden_size":{huge}"#)))
            .unwrap_err();
        assert!(e.to_string().contains("head_dim"), "{e}");
        let e = ModelConfig::from_json_str(&SMOL.replace(r#""hidden_act""#, r#""head_dim":8192,"hidden_act""#))
            .unwrap_err();
        assert!(e.to_string().contains("8192"), "{e}");
        let wide = ModelConfig::from_json_str(&SMOL.replace(r#""hidden_act""#, r#""head_dim":256,"hidden_act""#));
        assert_eq!(wide.unwrap().head_dim, 256);
    }

    #[test]
    fn unsupported_rope_scaling_names_the_field() {
        let text = SMOL.replace(
            r#""hidden_act":"silu""#,
            r#""hidden_act":"silu","rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
        );
        let e = ModelConfig::from_json_str(&text).unwrap_err();
        assert!(e.to_string().contains("rope_scaling.rope_type"), "{e}");
    }

    #[test]
    fn llama3_scaling_matches_hand_computation() {
        let text = SMOL.replace(
            r#""hidden_act":"silu""#,
            r#""hidden_act":"silu","rope_scaling":{"rope_type":"llama3","factor":8.0,
               "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#,
        );
        let c = ModelConfig::from_json_str(&text).unwrap();
        let inv = c.rope_inv_freq();
        let plain = ModelConfig::from_json_str(SMOL).unwrap().rope_inv_freq();
        // Highest frequency (wavelength 2*pi < 8192/4) is untouched; the lowest is divided by 8.
        assert_eq!(inv[0], plain[0]);
        let last = inv.len() - 1;
        let wavelen = 2.0 * std::f64::consts::PI / plain[last];
        assert!(wavelen > 8192.0);
        assert!((inv[last] - plain[last] / 8.0).abs() < 1e-18);
    }

    #[test]
    fn reads_transformers5_rope_parameters() {
        let text = SMOL.replace(
            r#""rope_theta":100000.0,"#,
            r#""rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,
               "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64},"#,
        );
        let c = ModelConfig::from_json_str(&text).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3(s) if s.original_max_position_embeddings == 64));
    }

    #[test]
    fn qwen2_has_qkv_bias_and_qwen3_has_qk_norm() {
        let q2 = ModelConfig::from_json_str(&SMOL.replace("llama", "qwen2")).unwrap();
        assert!(q2.attention_bias && !q2.qk_norm);
        let q3 = ModelConfig::from_json_str(&SMOL.replace("llama", "qwen3")).unwrap();
        assert!(!q3.attention_bias && q3.qk_norm);
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-4i64..5000).prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[a-z_]{0,8}".prop_map(serde_json::Value::from),
            Just(serde_json::json!([1, 2])),
            Just(serde_json::json!({"rope_type": "llama3"})),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// A config.json with fields replaced by arbitrary values, removed, or its text cut or
        /// overwritten, parses to a consistent config or is an error naming the field: never a
        /// panic.
        #[test]
        fn edited_configs_are_consistent_or_errors(
            replace in proptest::collection::vec((0usize..16, any_json()), 0..4),
            remove in proptest::option::of(0usize..16),
            bytes in proptest::collection::vec((0usize..400, 32u8..127), 0..3),
            cut in proptest::option::of(0usize..400),
        ) {
            let mut v: serde_json::Value = serde_json::from_str(SMOL).unwrap();
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            for (k, value) in replace {
                v[&keys[k % keys.len()]] = value;
            }
            if let Some(k) = remove {
                v.as_object_mut().unwrap().remove(&keys[k % keys.len()]);
            }
            let mut text = v.to_string().into_bytes();
            for (at, b) in bytes {
                let i = at % text.len();
                text[i] = b;
            }
            if let Some(cut) = cut {
                text.truncate(text.len() - cut % text.len());
            }
            let text = String::from_utf8_lossy(&text).to_string();
            if let Ok(c) = ModelConfig::from_json_str(&text) {
                proptest::prop_assert!(c.hidden_size > 0 && c.num_layers > 0);
                proptest::prop_assert!(c.vocab_size > 0 && c.intermediate_size > 0);
                proptest::prop_assert!(c.num_heads > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0);
                proptest::prop_assert!(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim {}", c.head_dim);
                proptest::prop_assert!(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0);
                proptest::prop_assert!(c.rope_theta.is_finite() && c.rope_theta > 0.0);
                proptest::prop_assert!(c.rope_inv_freq().iter().all(|f| f.is_finite()));
            }
        }
    }
}
