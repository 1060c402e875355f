//! GGUF (v2/v3) import: parse metadata and tensors, dequantize to f32, undo llama.cpp's
//! conversion quirks, and write an HF-layout directory that [`crate::load_model`] reads.
//!
//! Every count and size in the header is checked against the bytes actually present before
//! anything is allocated, so a lying header is an error, not an out-of-memory abort.
//!
//! - [`reader`]: the container (header, metadata, tensor infos) and the tokenizer metadata;
//! - [`dequant`]: ggml block formats to f32, llama.cpp's q/k row order undone;
//! - [`import`]: metadata to [`crate::ModelConfig`], tensor names, the import itself;
//! - [`builder`]: writes GGUF files byte by byte (for tests and fixtures).

pub mod builder;
mod dequant;
mod import;
mod reader;

pub use dequant::{dequantize, unpermute_qk_rows};
pub use import::{GgufWeights, import_gguf};
pub use reader::{GgmlType, GgufFile, TensorInfo, Value};

#[cfg(test)]
mod tests;
