//! Named weight tensors on the host: read from safetensors files (single or sharded), generated at
//! random for tests, and written back as safetensors. A tensor is handed out either as f32
//! ([`WeightSource::tensor`]) or as stored, in the file's own format ([`WeightSource::stored`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::{ModelConfig, ModelError};
use cola_kernels::stored::{StoredMatrix, WeightFormat};

/// A dense f32 tensor in row-major order, in PyTorch's shape convention.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    /// The transpose of a 2-D tensor (PyTorch `[out, in]` -> burn `[in, out]`).
    pub fn transposed(&self) -> HostTensor {
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut out = vec![0.0f32; self.data.len()];
        // Blocked so both sides stay in cache for large matrices.
        const BLOCK: usize = 64;
        for r0 in (0..rows).step_by(BLOCK) {
            for c0 in (0..cols).step_by(BLOCK) {
                for r in r0..(r0 + BLOCK).min(rows) {
                    for c in c0..(c0 + BLOCK).min(cols) {
                        out[c * rows + r] = self.data[r * cols + c];
                    }
                }
            }
        }
        HostTensor::new(vec![cols, rows], out)
    }
}

/// Anything that can hand out named tensors (a checkpoint on disk, a random generator).
pub trait WeightSource {
    /// The tensor called `name`, converted to f32. Errors name the tensor and the file.
    fn tensor(&self, name: &str) -> Result<HostTensor, ModelError>;
    /// Whether a tensor of that name exists.
    fn contains(&self, name: &str) -> bool;
    /// The 2-D tensor called `name` in the format it is stored in (f32 unless the source says
    /// otherwise). Errors name the tensor and the file.
    fn stored(&self, name: &str) -> Result<StoredMatrix, ModelError> {
        f32_stored(name, self.tensor(name)?)
    }
}

/// A 2-D f32 tensor as a stored matrix.
fn f32_stored(name: &str, t: HostTensor) -> Result<StoredMatrix, ModelError> {
    let [rows, cols] = t.shape[..] else {
        return Err(ModelError::Invalid(format!("tensor `{name}` has shape {:?}, not 2-D", t.shape)));
    };
    Ok(StoredMatrix::from_f32(rows, cols, &t.data))
}

/// The tensors a model of this config has, with their PyTorch shapes, in file order (from the
/// table in [`crate::tensors`]).
pub fn tensor_specs(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    crate::tensors::all(config).into_iter().map(|t| (t.hf_name(), t.shape(config))).collect()
}

/// Fetches a tensor and checks its shape against what the config implies.
pub fn expect_tensor(source: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<HostTensor, ModelError> {
    let t = source.tensor(name)?;
    check_shape(name, &t.shape, shape)?;
    Ok(t)
}

/// Fetches a 2-D tensor as stored and checks its shape against what the config implies.
pub fn expect_stored(source: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<StoredMatrix, ModelError> {
    let t = source.stored(name)?;
    check_shape(name, &[t.rows(), t.cols()], shape)?;
    Ok(t)
}

fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<(), ModelError> {
    if got != want {
        return Err(ModelError::Invalid(format!("tensor `{name}` has shape {got:?}, the config implies {want:?}")));
    }
    Ok(())
}

struct MappedFile {
    path: PathBuf,
    mmap: Arc<Mmap>,
    header_len: usize,
    metadata: Metadata,
}

/// The safetensors files of an HF checkpoint directory: `model.safetensors`, or the shards listed
/// in `model.safetensors.index.json`. Files are memory-mapped; tensors are converted on demand.
pub struct SafetensorsDir {
    files: Vec<MappedFile>,
    /// tensor name -> index into `files`
    index: HashMap<String, usize>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let shard_names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::file(&index_path, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::file(&index_path, "has no `weight_map` object"))?;
            let mut names: Vec<String> = map
                .values()
                .map(|f| {
                    f.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ModelError::file(&index_path, "`weight_map` values must be file names"))
                })
                .collect::<Result<_, _>>()?;
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
            vec!["model.safetensors".to_string()]
        } else {
            return Err(ModelError::file(
                dir,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        };

        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in shard_names {
            if name.contains('/') || name.contains("..") {
                return Err(ModelError::file(&index_path, format!("shard name `{name}` is not a plain file name")));
            }
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: the file is opened read-only and we never hand out references that outlive
            // the map; a concurrent writer could still change it, as with any mmap-based loader.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
                ModelError::file(&path, format!("not a valid safetensors file (truncated or corrupt?): {e:?}"))
            })?;
            for tensor_name in metadata.tensors().keys() {
                index.insert(tensor_name.clone(), files.len());
            }
            files.push(MappedFile { path, mmap: Arc::new(mmap), header_len, metadata });
        }
        Ok(SafetensorsDir { files, index })
    }

    fn locate(&self, name: &str) -> Result<(&MappedFile, &safetensors::tensor::TensorInfo), ModelError> {
        let Some(&fi) = self.index.get(name) else {
            let files: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
            return Err(ModelError::Invalid(format!("tensor `{name}` is missing from {}", files.join(", "))));
        };
        let f = &self.files[fi];
        Ok((f, f.metadata.info(name).expect("indexed name has info")))
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.index.keys().cloned().collect();
        names.sort();
        names
    }
}

impl WeightSource for SafetensorsDir {
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn stored(&self, name: &str) -> Result<StoredMatrix, ModelError> {
        let (f, info) = self.locate(name)?;
        let format = match info.dtype {
            Dtype::F32 => WeightFormat::F32,
            Dtype::F16 => WeightFormat::F16,
            Dtype::BF16 => WeightFormat::BF16,
            // Other float types are computed in f32.
            _ => return f32_stored(name, self.tensor(name)?).map_err(|e| e.in_file(&f.path)),
        };
        let [rows, cols] = info.shape[..] else {
            return Err(ModelError::file(&f.path, format!("tensor `{name}` has shape {:?}, not 2-D", info.shape)));
        };
        let (start, end) = info.data_offsets;
        let base = 8 + f.header_len;
        StoredMatrix::mapped(format, rows, cols, f.mmap.clone(), base + start, end.saturating_sub(start))
            .map_err(|m| ModelError::file(&f.path, format!("tensor `{name}`: {m}")))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor, ModelError> {
        let (f, info) = self.locate(name)?;
        let (start, end) = info.data_offsets;
        let base = 8 + f.header_len;
        let bytes = &f.mmap[base + start..base + end];
        let data =
            decode_floats(info.dtype, bytes).map_err(|m| ModelError::file(&f.path, format!("tensor `{name}`: {m}")))?;
        let expected: usize = info.shape.iter().product();
        if data.len() != expected {
            return Err(ModelError::file(
                &f.path,
                format!("tensor `{name}`: {} values for shape {:?}", data.len(), info.shape),
            ));
        }
        Ok(HostTensor::new(info.shape.clone(), data))
    }
}

fn decode_floats(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let (width, conv): (usize, fn(&[u8]) -> f32) = match dtype {
        Dtype::F32 => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::F16 => (2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::BF16 => (2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::F64 => (8, |b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32),
        other => return Err(format!("dtype {other:?} is not supported (f32, f16, bf16, f64)")),
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(format!("{} bytes is not a whole number of {dtype:?} values", bytes.len()));
    }
    Ok(bytes.chunks_exact(width).map(conv).collect())
}

/// Random weights for a config, reproducible from `seed`: used by tests and by GPU checks where no
/// checkpoint can travel. Scales keep activations in a sane range through many layers.
pub struct RandomWeights {
    specs: BTreeMap<String, Vec<usize>>,
    seed: u64,
}

impl RandomWeights {
    pub fn new(config: &ModelConfig, seed: u64) -> Self {
        RandomWeights { specs: tensor_specs(config).into_iter().collect(), seed }
    }
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        self.specs.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor, ModelError> {
        let shape = self
            .specs
            .get(name)
            .ok_or_else(|| ModelError::Invalid(format!("tensor `{name}` is not part of this model")))?;
        // One stream per tensor, derived from the name, so the order of requests does not matter.
        let name_hash =
            name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ name_hash);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("norm.weight") {
            (0..n).map(|_| 1.0 + rng.random_range(-0.2..0.2)).collect()
        } else if name.ends_with(".bias") {
            (0..n).map(|_| rng.random_range(-0.1..0.1)).collect()
        } else {
            let fan_in = *shape.last().expect("2-D weight") as f32;
            let bound = if name.contains("embed") { 1.0 } else { (3.0 / fan_in).sqrt() };
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        Ok(HostTensor::new(shape.clone(), data))
    }
}

/// Writes named f32 tensors to one safetensors file, atomically (a temp file renamed into place).
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<(), ModelError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: &[u8] = bytemuck_f32(&t.data);
            safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::file(path, format!("tensor `{name}`: {e:?}")))
        })
        .collect::<Result<_, _>>()?;
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, None, &tmp)
        .map_err(|e| ModelError::file(&tmp, format!("cannot write: {e:?}")))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // f32 has no padding and any byte pattern is a valid u8; little-endian hosts only.
    #[cfg(not(target_endian = "little"))]
    compile_error!("safetensors output assumes a little-endian host");
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

/// Collects every tensor of a model from `source` in file order (for writing a checkpoint).
pub fn collect_tensors(
    config: &ModelConfig, source: &dyn WeightSource,
) -> Result<Vec<(String, HostTensor)>, ModelError> {
    tensor_specs(config)
        .into_iter()
        .map(|(name, shape)| expect_tensor(source, &name, &shape).map(|t| (name, t)))
        .collect()
}

/// Writes an HF-layout checkpoint directory (config.json + model.safetensors) for `source`.
pub fn save_checkpoint(dir: &Path, config: &ModelConfig, source: &dyn WeightSource) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = collect_tensors(config, source)?;
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config.to_hf_json()).expect("json value");
    std::fs::write(&cfg_path, text).map_err(|e| ModelError::io(&cfg_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        ModelConfig::from_json_str(
            r#"{"model_type":"qwen2","hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":50}"#,
        )
        .unwrap()
    }

    #[test]
    fn save_then_open_round_trips_every_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny();
        let random = RandomWeights::new(&config, 7);
        save_checkpoint(dir.path(), &config, &random).unwrap();
        let loaded = SafetensorsDir::open(dir.path()).unwrap();
        for (name, _) in tensor_specs(&config) {
            assert_eq!(loaded.tensor(&name).unwrap(), random.tensor(&name).unwrap(), "{name}");
        }
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny();
        save_checkpoint(dir.path(), &config, &RandomWeights::new(&config, 1)).unwrap();
        let path = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = SafetensorsDir::open(dir.path()).err().expect("truncated file must fail");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }

    #[test]
    fn missing_tensor_and_wrong_shape_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny();
        let random = RandomWeights::new(&config, 1);
        let mut tensors = collect_tensors(&config, &random).unwrap();
        tensors.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
        tensors[0].1 = HostTensor::new(vec![5, 16], vec![0.0; 80]);
        write_safetensors(&dir.path().join("model.safetensors"), &tensors).unwrap();
        let src = SafetensorsDir::open(dir.path()).unwrap();
        let e = expect_tensor(&src, "model.layers.1.mlp.up_proj.weight", &[24, 16]).unwrap_err();
        assert!(e.to_string().contains("model.layers.1.mlp.up_proj.weight"), "{e}");
        assert!(e.to_string().contains("model.safetensors"), "{e}");
        let e = expect_tensor(&src, "model.embed_tokens.weight", &[50, 16]).unwrap_err();
        assert!(e.to_string().contains("[5, 16]"), "{e}");
    }

    #[test]
    fn half_precision_files_decode_to_f32() {
        let vals = [1.5f32, -2.25, 0.0, 65504.0];
        let f16: Vec<u8> = vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let bf16: Vec<u8> = vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(decode_floats(Dtype::F16, &f16).unwrap(), vals);
        assert_eq!(decode_floats(Dtype::BF16, &bf16).unwrap(), [1.5, -2.25, 0.0, 65536.0]);
        assert!(decode_floats(Dtype::I32, &[0; 4]).is_err());
    }

    #[test]
    fn transpose_matches_index_definition() {
        let t = HostTensor::new(vec![3, 70], (0..210).map(|x| x as f32).collect());
        let tt = t.transposed();
        assert_eq!(tt.shape, vec![70, 3]);
        for r in 0..3 {
            for c in 0..70 {
                assert_eq!(tt.data[c * 3 + r], t.data[r * 70 + c]);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// Any corruption of a checkpoint's header (overwritten bytes, a lying header length,
        /// truncation) is an error naming the file, or a file whose every tensor reads or fails
        /// cleanly: never a panic or a read outside the file.
        #[test]
        fn corrupted_safetensors_headers_never_panic(
            edits in proptest::collection::vec((0usize..2048, proptest::prelude::any::<u8>()), 1..6),
            cut in proptest::option::of(0usize..4096),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let config = tiny();
            save_checkpoint(dir.path(), &config, &RandomWeights::new(&config, 3)).unwrap();
            let path = dir.path().join("model.safetensors");
            let mut bytes = std::fs::read(&path).unwrap();
            let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            for (at, b) in edits {
                let i = at % header_end;
                bytes[i] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(bytes.len() - cut % bytes.len());
            }
            std::fs::write(&path, &bytes).unwrap();
            match SafetensorsDir::open(dir.path()) {
                Err(e) => proptest::prop_assert!(e.to_string().contains("model.safetensors"), "{}", e),
                Ok(src) => {
                    for name in src.names() {
                        let _ = src.tensor(&name);
                    }
                }
            }
        }
    }
}
