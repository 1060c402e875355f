//! `parity` and `random-model`: what a GPU check needs when no checkpoint can travel.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use cola_executor::backend::{BackendKind, Cpu, WithBackend, dispatch};
use cola_executor::parity::compare_backends;
use cola_model::gguf::write_gguf;
use cola_model::weights::{RandomWeights, save_checkpoint};
use cola_model::{LayerOps, ModelConfig, WeightFormat};

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Backend to compare with the CPU: wgpu or cuda.
    #[arg(long)]
    backend: BackendKind,
    /// Layers of the random test model.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Largest allowed absolute logit difference.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
}

struct Parity {
    layers: usize,
}

impl WithBackend for Parity {
    type Output = Result<Vec<cola_executor::parity::ParityLine>>;
    fn run<B: LayerOps>(self, device: B::Device) -> Self::Output {
        Ok(compare_backends::<Cpu, B>(self.layers, Default::default(), device)?)
    }
}

pub fn parity(args: ParityArgs) -> Result<()> {
    if args.backend == BackendKind::Cpu {
        bail!("--backend cpu compares the CPU with itself; use wgpu or cuda");
    }
    let lines = dispatch(args.backend, Parity { layers: args.layers })??;
    let mut worst = 0.0f32;
    for l in &lines {
        println!("{:<64} max |diff| {:.2e}  (max |value| {:.2})", l.what, l.max_abs_diff, l.max_abs);
        worst = worst.max(l.max_abs_diff);
    }
    if worst > args.tolerance {
        bail!("{} differs from the CPU by {worst:e} (tolerance {:e})", args.backend, args.tolerance);
    }
    println!("{} matches the CPU within {:e} (worst {worst:.2e})", args.backend, args.tolerance);
    Ok(())
}

#[derive(Args, Debug)]
pub struct RandomModelArgs {
    /// Shape: `llama-3.2-1b` (16 layers, hidden 2048, GQA 32:8, vocab 128256, Llama 3 RoPE
    /// scaling), `llama-3.1-8b` (32 layers, hidden 4096, GQA 32:8, untied head) or
    /// `smollm2-135m`.
    #[arg(long, default_value = "llama-3.2-1b")]
    shape: String,
    /// Output: a directory (config.json + model.safetensors, f32), or a `.gguf` file (weights
    /// in `--format`, without RoPE scaling; the embedded model's tokenizer.json is written
    /// beside it).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Format of the 2-D weights of a `.gguf` output: q4_0, q4_1, q8_0, f16, bf16 or f32.
    #[arg(long, default_value = "q4_1")]
    format: WeightFormat,
}

fn shape_config(shape: &str) -> Result<ModelConfig> {
    let json = match shape {
        "llama-3.2-1b" => {
            r#"{"model_type":"llama","hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,
            "num_attention_heads":32,"num_key_value_heads":8,"head_dim":64,"vocab_size":128256,"rms_norm_eps":1e-5,
            "rope_theta":500000.0,"max_position_embeddings":131072,"tie_word_embeddings":true,
            "rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192},"bos_token_id":128000,"eos_token_id":128001}"#
        }
        "smollm2-135m" => {
            r#"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
            "num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,"rms_norm_eps":1e-5,
            "rope_theta":100000.0,"max_position_embeddings":8192,"tie_word_embeddings":true}"#
        }
        "llama-3.1-8b" => {
            r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,
            "num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":128256,"rms_norm_eps":1e-5,
            "rope_theta":500000.0,"max_position_embeddings":131072,"tie_word_embeddings":false,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192},"bos_token_id":128000,"eos_token_id":128001}"#
        }
        other => bail!("unknown shape `{other}` (llama-3.2-1b, llama-3.1-8b, smollm2-135m)"),
    };
    Ok(ModelConfig::from_json_str(json)?)
}

pub fn random_model(args: RandomModelArgs) -> Result<()> {
    let mut config = shape_config(&args.shape)?;
    if args.out.extension().is_some_and(|e| e == "gguf") {
        // GGUF carries no RoPE scaling here (llama.cpp stores it as a tensor this reader skips).
        config.rope_scaling = cola_model::config::RopeScaling::None;
        write_gguf(&args.out, &config, &RandomWeights::new(&config, args.seed), args.format)?;
        let tokenizer = cola_model::TextTokenizer::load(&cola_assets::ensure()?.model)?;
        let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let tok_path = dir.join("tokenizer.json");
        tokenizer.tokenizer.save(&tok_path, false).map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
        std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tokenizer.config)?)?;
        println!("wrote a random {} model ({}) to {}", args.shape, args.format, args.out.display());
        return Ok(());
    }
    save_checkpoint(&args.out, &config, &RandomWeights::new(&config, args.seed))?;
    println!("wrote a random {} model to {}", args.shape, args.out.display());
    Ok(())
}
