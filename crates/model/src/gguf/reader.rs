//! The GGUF container: header, metadata values, tensor infos, all checked against the bytes
//! present before anything is allocated (a lying count or offset is an error, not an
//! out-of-memory abort); and the metadata the tokenizer importer reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::ModelError;
use cola_kernels::stored::{StoredMatrix, WeightFormat, dequantize};

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

/// The ggml tensor type id of each supported format (read and written).
pub const GGML_TYPE_IDS: [(u32, WeightFormat); 6] = [
    (0, WeightFormat::F32),
    (1, WeightFormat::F16),
    (2, WeightFormat::Q4_0),
    (3, WeightFormat::Q4_1),
    (8, WeightFormat::Q8_0),
    (30, WeightFormat::BF16),
];

/// The ggml type id of a format.
pub fn ggml_type_id(format: WeightFormat) -> u32 {
    GGML_TYPE_IDS.iter().find(|(_, f)| *f == format).expect("every format has an id").0
}

/// The ggml tensor type ids this reader accepts, and the others refused by name.
fn format_from_id(id: u32) -> Result<WeightFormat, String> {
    if let Some(&(_, f)) = GGML_TYPE_IDS.iter().find(|(i, _)| *i == id) {
        return Ok(f);
    }
    let name = match id {
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
    Err(format!("tensor type {id} ({name}) is not supported (F32, F16, BF16, Q4_0, Q4_1, Q8_0)"))
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<usize>,
    pub format: WeightFormat,
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
    mmap: Arc<Mmap>,
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
            let ty = format_from_id(r.u32()?).map_err(|m| format!("tensor `{name}`: {m}"))?;
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
            tensors.insert(name.clone(), TensorInfo { name, dims, format: ty, start, len });
        }
        Ok(GgufFile { path: path.to_path_buf(), version, metadata, tensors, mmap: Arc::new(mmap) })
    }

    pub(super) fn meta(&self, key: &str) -> Result<&Value, ModelError> {
        self.metadata.get(key).ok_or_else(|| ModelError::file(&self.path, format!("metadata `{key}` is missing")))
    }

    pub(super) fn meta_u64(&self, key: &str) -> Result<u64, ModelError> {
        self.meta(key)?
            .as_u64()
            .ok_or_else(|| ModelError::file(&self.path, format!("metadata `{key}` is not an integer")))
    }

    pub(super) fn meta_str(&self, key: &str) -> Result<&str, ModelError> {
        self.meta(key)?
            .as_str()
            .ok_or_else(|| ModelError::file(&self.path, format!("metadata `{key}` is not a string")))
    }

    pub(super) fn string_array(&self, key: &str) -> Result<Vec<&str>, ModelError> {
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
        dequantize(info.format, &self.mmap[info.start..info.start + info.len])
    }

    /// A 2-D tensor as stored, over the memory map (PyTorch shape `[dims[1], dims[0]]`).
    pub fn stored(&self, info: &TensorInfo) -> Result<StoredMatrix, ModelError> {
        let [cols, rows] = info.dims[..] else {
            return Err(ModelError::file(
                &self.path,
                format!("tensor `{}` has dims {:?}, not 2", info.name, info.dims),
            ));
        };
        StoredMatrix::mapped(info.format, rows, cols, self.mmap.clone(), info.start, info.len)
            .map_err(|m| ModelError::file(&self.path, format!("tensor `{}`: {m}", info.name)))
    }
}

/// Read access to the metadata the tokenizer importer needs.
impl GgufFile {
    pub(crate) fn tokenizer_parts(&self) -> Result<GgufTokenizerParts<'_>, ModelError> {
        let model = self.meta_str("tokenizer.ggml.model")?;
        if model == "none" {
            return Err(ModelError::file(
                &self.path,
                "holds no tokenizer (tokenizer.ggml.model `none`) and no tokenizer.json lies beside it",
            ));
        }
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
