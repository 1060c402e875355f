//! GGUF (v2/v3) import: parse metadata and tensors, dequantize to f32, undo llama.cpp's
//! conversion quirks, and write an HF-layout directory that [`crate::load_model`] reads.
//!
//! Every count and size in the header is checked against the bytes actually present before
//! anything is allocated, so a lying header is an error, not an out-of-memory abort.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::ModelError;
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::weights::{HostTensor, WeightSource, save_checkpoint};

const MAGIC: &[u8; 4] = b"GGUF";

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    /// Numbers as f64; f32 values are rounded through their shortest decimal form so that
    /// `1e-5` stored as f32 comes back as `1e-5`, not `9.99999974e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => format!("{v}").parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// The ggml tensor types this importer can dequantize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    fn from_id(id: u32) -> Result<Self, String> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => {
                let name = match other {
                    6 => "Q5_0",
                    7 => "Q5_1",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    12 => "Q4_K",
                    13 => "Q5_K",
                    14 => "Q6_K",
                    15 => "Q8_K",
                    _ => "unknown",
                };
                return Err(format!(
                    "tensor type {other} ({name}) is not supported (F32, F16, BF16, Q4_0, Q4_1, Q8_0)"
                ));
            }
        })
    }

    /// (elements per block, bytes per block)
    fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte range within the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// The shape in PyTorch's convention (slowest axis first).
    pub fn torch_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    pub fn num_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
    mmap: Mmap,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("unexpected end of file at byte {} (needed {n} more bytes)", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A count that promises `count * min_item_bytes` more bytes; checked before use.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, String> {
        let n = self.u64()?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_item_bytes.max(1)))
            .is_some_and(|b| b <= self.remaining());
        if !fits {
            return Err(format!("{what} count {n} at byte {} exceeds the file size", self.pos - 8));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.count("string length", 1)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("string at byte {} is not UTF-8", self.pos - n))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("bool value {b} at byte {}", self.pos - 1)),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err("arrays nested too deeply".into());
                }
                let item_ty = self.u32()?;
                let min = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(format!("unknown array item type {t} at byte {}", self.pos - 4)),
                };
                let n = self.count("array", min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            t => return Err(format!("unknown metadata value type {t} at byte {}", self.pos - 4)),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: read-only map of a file we do not modify.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        Self::parse(path, mmap).map_err(|m| ModelError::file(path, format!("invalid GGUF: {m}")))
    }

    fn parse(path: &Path, mmap: Mmap) -> Result<Self, String> {
        let mut r = Reader { bytes: &mmap, pos: 0 };
        if r.take(4).map_err(|_| "file is shorter than the GGUF magic".to_string())? != MAGIC {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        // A tensor entry takes at least 8 (name len) + 4 + 4 + 8 bytes; a kv pair at least 8 + 4 + 1.
        let n_tensors = r.count("tensor", 24)?;
        let n_kv = r.count("metadata", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r.value(ty, 0).map_err(|m| format!("metadata `{key}`: {m}"))?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two() && *a <= 1 << 20)
                .ok_or("general.alignment must be a power of two")? as usize,
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(format!("tensor `{name}` has {n_dims} dimensions (1 to 4 allowed)"));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(usize::try_from(r.u64()?).map_err(|_| format!("tensor `{name}`: dimension too large"))?);
            }
            let ty = GgmlType::from_id(r.u32()?).map_err(|m| format!("tensor `{name}`: {m}"))?;
            let offset = r.u64()?;
            infos.push((name, dims, ty, offset));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, dims, ty, offset) in infos {
            let n = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| format!("tensor `{name}`: element count overflows"))?;
            let (per_block, block_bytes) = ty.block();
            if dims[0] % per_block != 0 {
                return Err(format!(
                    "tensor `{name}`: row length {} is not a multiple of the {ty:?} block size {per_block}",
                    dims[0]
                ));
            }
            let len = (n / per_block)
                .checked_mul(block_bytes)
                .ok_or_else(|| format!("tensor `{name}`: byte size overflows"))?;
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data_start))
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= mmap.len()))
                .ok_or_else(|| {
                    format!(
                        "tensor `{name}`: data at offset {offset} (+{len} bytes) lies outside the file (truncated?)"
                    )
                })?;
            tensors.insert(name.clone(), TensorInfo { name, dims, ggml_type: ty, start, len });
        }
        Ok(GgufFile { path: path.to_path_buf(), version, metadata, tensors, mmap })
    }

    fn meta(&self, key: &str) -> Result<&Value, ModelError> {
        self.metadata.get(key).ok_or_else(|| ModelError::file(&self.path, format!("metadata `{key}` is missing")))
    }

    fn meta_u64(&self, key: &str) -> Result<u64, ModelError> {
        self.meta(key)?
            .as_u64()
            .ok_or_else(|| ModelError::file(&self.path, format!("metadata `{key}` is not an integer")))
    }

    fn meta_str(&self, key: &str) -> Result<&str, ModelError> {
        self.meta(key)?
            .as_str()
            .ok_or_else(|| ModelError::file(&self.path, format!("metadata `{key}` is not a string")))
    }

    fn string_array(&self, key: &str) -> Result<Vec<&str>, ModelError> {
        match self.meta(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| ModelError::file(&self.path, format!("`{key}` holds a non-string"))))
                .collect(),
            _ => Err(ModelError::file(&self.path, format!("metadata `{key}` is not an array"))),
        }
    }

    /// Dequantized data of a tensor, in GGUF row order.
    pub fn dequantize(&self, info: &TensorInfo) -> Vec<f32> {
        dequantize(info.ggml_type, &self.mmap[info.start..info.start + info.len])
    }

    /// The architecture config implied by the metadata.
    pub fn model_config(&self) -> Result<ModelConfig, ModelError> {
        let arch_name = self.meta_str("general.architecture")?;
        let architecture = match arch_name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            other => {
                return Err(ModelError::file(
                    &self.path,
                    format!("general.architecture `{other}` is not supported (llama, qwen2, qwen3)"),
                ));
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let hidden = self.meta_u64(&k("embedding_length"))? as usize;
        let heads = self.meta_u64(&k("attention.head_count"))? as usize;
        let kv_heads = match self.metadata.get(&k("attention.head_count_kv")) {
            Some(v) => {
                v.as_u64().ok_or_else(|| ModelError::file(&self.path, "head_count_kv is not an integer"))? as usize
            }
            None => heads,
        };
        let embd = self
            .tensors
            .get("token_embd.weight")
            .ok_or_else(|| ModelError::file(&self.path, "tensor `token_embd.weight` is missing"))?;
        let vocab = embd.dims.get(1).copied().unwrap_or(0);
        let head_dim = match self.metadata.get(&k("attention.key_length")) {
            Some(v) => v.as_u64().unwrap_or(0) as usize,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let get_f =
            |key: &str, default: f64| -> f64 { self.metadata.get(&k(key)).and_then(Value::as_f64).unwrap_or(default) };
        let bos = self.metadata.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64).map(|v| v as u32);
        let eos = self.metadata.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64).map(|v| v as u32);
        let config = ModelConfig {
            architecture,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.meta_u64(&k("feed_forward_length"))? as usize,
            num_layers: self.meta_u64(&k("block_count"))? as usize,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rms_norm_eps: get_f("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: get_f("rope.freq_base", 10_000.0),
            rope_scaling: RopeScaling::None,
            max_position_embeddings: self.meta_u64(&k("context_length")).unwrap_or(2048) as usize,
            tie_word_embeddings: !self.tensors.contains_key("output.weight"),
            attention_bias: architecture == Architecture::Qwen2,
            qk_norm: architecture == Architecture::Qwen3,
            sliding_window: None,
            bos_token_id: bos,
            eos_token_ids: eos.into_iter().collect(),
        };
        if let Some(v) = self.metadata.get(&k("rope.scaling.type"))
            && v.as_str() != Some("none")
        {
            return Err(ModelError::file(
                &self.path,
                format!("`{arch_name}.rope.scaling.type` = {v:?} is not supported"),
            ));
        }
        // Round-trip through the HF parser so the same validation applies to both paths.
        ModelConfig::from_json_str(&config.to_hf_json().to_string()).map_err(|e| e.in_file(&self.path))
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantizes raw ggml blocks (the length is already validated against the type).
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (per_block, block_bytes) = ty.block();
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * per_block);
    for b in bytes.chunks_exact(block_bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b)),
            GgmlType::BF16 => out.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16(b);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let d = f16(b);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16(b), f16(&b[2..4]));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
    }
    out
}

/// Undoes llama.cpp's reordering of q/k rows for its interleaved RoPE: within each head, GGUF row
/// `2 i + j` holds HF row `j * head_dim / 2 + i`.
pub fn unpermute_qk_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// HF tensor name -> GGUF tensor name.
fn gguf_name(hf: &str) -> Option<String> {
    if hf == "model.embed_tokens.weight" {
        return Some("token_embd.weight".into());
    }
    if hf == "model.norm.weight" {
        return Some("output_norm.weight".into());
    }
    if hf == "lm_head.weight" {
        return Some("output.weight".into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let mapped = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}"))
}

/// The GGUF's tensors seen under HF names, dequantized and un-permuted on request.
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    config: ModelConfig,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile) -> Result<Self, ModelError> {
        Ok(GgufWeights { config: file.model_config()?, file })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

impl WeightSource for GgufWeights<'_> {
    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.tensors.contains_key(&g))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor, ModelError> {
        let g = gguf_name(name)
            .ok_or_else(|| ModelError::file(&self.file.path, format!("no GGUF tensor corresponds to `{name}`")))?;
        let info = self
            .file
            .tensors
            .get(&g)
            .ok_or_else(|| ModelError::file(&self.file.path, format!("tensor `{g}` (for `{name}`) is missing")))?;
        let mut data = self.file.dequantize(info);
        let shape = info.torch_shape();
        // llama.cpp permutes q/k only for the llama architecture (its qwen models use NeoX RoPE).
        if self.config.architecture == Architecture::Llama && shape.len() == 2 {
            let heads = if g.ends_with("attn_q.weight") {
                Some(self.config.num_heads)
            } else if g.ends_with("attn_k.weight") {
                Some(self.config.num_kv_heads)
            } else {
                None
            };
            if let Some(heads) = heads {
                data = unpermute_qk_rows(&data, shape[0], shape[1], heads);
            }
        }
        Ok(HostTensor::new(shape, data))
    }
}

/// Imports a GGUF file into an HF-layout directory: config.json, model.safetensors (f32),
/// tokenizer.json and tokenizer_config.json.
pub fn import_gguf(gguf_path: &Path, out_dir: &Path) -> Result<ModelConfig, ModelError> {
    let file = GgufFile::open(gguf_path)?;
    let weights = GgufWeights::new(&file)?;
    let config = weights.config().clone();
    // Tokenizer first: it is cheap and its errors are the most likely ones.
    let tokenizer = crate::tokenizer::tokenizer_from_gguf(&file)?;
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;
    let tok_path = out_dir.join("tokenizer.json");
    tokenizer
        .tokenizer
        .save(&tok_path, false)
        .map_err(|e| ModelError::file(&tok_path, format!("cannot write: {e}")))?;
    let cfg_path = out_dir.join("tokenizer_config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&tokenizer.config).expect("json"))
        .map_err(|e| ModelError::io(&cfg_path, e))?;
    save_checkpoint(out_dir, &config, &weights)?;
    Ok(config)
}

/// Read access to the metadata the tokenizer importer needs.
impl GgufFile {
    pub(crate) fn tokenizer_parts(&self) -> Result<GgufTokenizerParts<'_>, ModelError> {
        let model = self.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::file(
                &self.path,
                format!("tokenizer.ggml.model `{model}` is not supported (only gpt2-style byte-level BPE)"),
            ));
        }
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        let merges = self.string_array("tokenizer.ggml.merges")?;
        let token_types: Vec<i64> = match self.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(items)) => items.iter().map(|v| v.as_u64().map_or(1, |x| x as i64)).collect(),
            _ => vec![1; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(ModelError::file(&self.path, "tokenizer.ggml.token_type and tokens differ in length"));
        }
        let pre = self.metadata.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
        let id = |key: &str| self.metadata.get(key).and_then(Value::as_u64).map(|v| v as u32);
        Ok(GgufTokenizerParts {
            path: &self.path,
            tokens,
            merges,
            token_types,
            pre,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: self.metadata.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false),
            chat_template: self.metadata.get("tokenizer.chat_template").and_then(Value::as_str),
        })
    }
}

pub(crate) struct GgufTokenizerParts<'a> {
    pub path: &'a Path,
    pub tokens: Vec<&'a str>,
    pub merges: Vec<&'a str>,
    pub token_types: Vec<i64>,
    pub pre: &'a str,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::gguf_builder::GgufBuilder as Builder;

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("t.gguf");
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn q4_1_block_decodes_by_definition() {
        // d = 0.5, m = -1.0; nibbles 0..15 in low halves, 15..0 in high halves.
        let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend(half::f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let x = dequantize(GgmlType::Q4_1, &b);
        for j in 0..16 {
            assert_eq!(x[j], j as f32 * 0.5 - 1.0);
            assert_eq!(x[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q4_0_and_q8_0_blocks_decode_by_definition() {
        let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
        for j in 0..16u8 {
            b.push(j | (j << 4));
        }
        let x = dequantize(GgmlType::Q4_0, &b);
        assert_eq!(x[3], (3 - 8) as f32 * 2.0);
        assert_eq!(x[16 + 15], (15 - 8) as f32 * 2.0);
        let mut b = half::f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let x = dequantize(GgmlType::Q8_0, &b);
        assert_eq!(x[0], -4.0);
        assert_eq!(x[31], 15.0 * 0.25);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (heads, hd, cols) = (3, 8, 2);
        let rows = heads * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = h * hd + j * hd / 2 + i; // (h, j, i)
                    let dst = h * hd + i * 2 + j; // (h, i, j) after swapaxes
                    permuted[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_qk_rows(&permuted, rows, cols, heads), hf);
    }

    #[test]
    fn reads_metadata_and_f32_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let vals: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = Builder::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("x", 7)
            .tensor("w", &[3, 2], 0, &vals)
            .build();
        let f = GgufFile::open(&write(dir.path(), &bytes)).unwrap();
        assert_eq!(f.metadata["x"], Value::U32(7));
        let t = &f.tensors["w"];
        assert_eq!(t.torch_shape(), vec![2, 3]);
        assert_eq!(f.dequantize(t), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn lying_counts_and_truncation_are_errors_not_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let vals = vec![0u8; 24];
        let good = Builder::new().kv_str("general.architecture", "llama").tensor("w", &[3, 2], 0, &vals).build();
        // tensor count claims 2^60
        let mut lie = good.clone();
        lie[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = GgufFile::open(&write(dir.path(), &lie)).err().unwrap().to_string();
        assert!(e.contains("exceeds the file size") && e.contains("t.gguf"), "{e}");
        // string length claims 2^40
        let mut lie = good.clone();
        lie[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = GgufFile::open(&write(dir.path(), &lie)).err().unwrap().to_string();
        assert!(e.contains("exceeds the file size"), "{e}");
        // data cut short
        let e = GgufFile::open(&write(dir.path(), &good[..good.len() - 20])).err().unwrap().to_string();
        assert!(e.contains("outside the file"), "{e}");
        // bad magic and empty file
        assert!(GgufFile::open(&write(dir.path(), b"GGUX")).err().unwrap().to_string().contains("magic"));
        assert!(GgufFile::open(&write(dir.path(), b"")).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Any corruption of a valid file (overwritten bytes, truncation) is an error or a
        /// parse, never a panic or a huge allocation.
        #[test]
        fn corrupted_files_never_panic(
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
            cut in 0usize..400,
        ) {
            let vals: Vec<u8> = (0..24u8).collect();
            let mut bytes = Builder::new()
                .kv_str("general.architecture", "llama")
                .kv_u32("llama.block_count", 1)
                .tensor("w", &[3, 2], 0, &vals)
                .tensor("q", &[32], 8, &[7u8; 34])
                .build();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            bytes.truncate(bytes.len() - cut % bytes.len());
            let dir = tempfile::tempdir().unwrap();
            if let Ok(f) = GgufFile::open(&write(dir.path(), &bytes)) {
                for t in f.tensors.values() {
                    let _ = f.dequantize(t);
                }
                let _ = f.model_config();
            }
        }
    }

    #[test]
    fn unsupported_quantization_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Builder::new().tensor("w", &[256], 12, &[0u8; 144]).build();
        let e = GgufFile::open(&write(dir.path(), &bytes)).err().unwrap().to_string();
        assert!(e.contains("Q4_K") && e.contains("`w`"), "{e}");
    }
}
