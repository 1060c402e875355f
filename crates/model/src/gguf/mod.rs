//! GGUF (v2/v3) import: parse metadata and tensors, dequantize to f32, undo llama.cpp's
//! conversion quirks, and write an HF-layout directory that [`crate::load_model`] reads.
//!
//! Every count and size in the header is checked against the bytes actually present before
//! anything is allocated, so a lying header is an error, not an out-of-memory abort.
//!
//! - [`reader`]: the container (header, metadata, tensor infos) and the tokenizer metadata;
//! - [`dequant`]: llama.cpp's q/k row order undone (block formats: [`cola_kernels::stored`]);
//! - [`import`]: metadata to [`crate::ModelConfig`], tensor names, the import itself;
//! - [`builder`]: writes GGUF files byte by byte (for tests and fixtures);
//! - [`writer`]: writes a whole model as GGUF, one tensor at a time (random models of large shapes).

pub mod builder;
mod dequant;
mod import;
mod reader;
mod writer;

pub use dequant::{qk_row_order, unpermute_qk_rows};
pub use import::{GgufWeights, import_gguf};
pub use reader::{GGML_TYPE_IDS, GgufFile, TensorInfo, Value, ggml_type_id};
pub use writer::write_gguf;

#[cfg(test)]
mod tests;
