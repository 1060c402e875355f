//! `cargo xtask bench`: prefill and decode speed of the executor (and, with `--vs-torch`, of
//! PyTorch on the same weights, token ids and thread count, run side by side).

use anyhow::Result;
use clap::Args;
use cola_executor::backend::{WithBackend, dispatch};
use cola_model::{LayerOps, WeightPrecision};
use cola_search::bench::{BenchResult, BenchSettings, SearchBench, run_bench, torch_speeds};

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed repetitions per measurement (the median is reported; decode and lockstep take at
    /// most 3). With stored weights the same measures run on the f32 copy, repetitions
    /// alternating between the two.
    #[arg(long, default_value_t = 5, value_parser = crate::at_least_one)]
    reps: usize,
    /// Tokens generated in the decode measurement (at least 1).
    #[arg(long, default_value_t = 64, value_parser = crate::at_least_one)]
    decode_tokens: usize,
    /// Also time PyTorch (transformers, f32, eager) on the same weights and print the ratios.
    /// Creates a Python venv with torch and transformers on first use (a large download).
    #[arg(long)]
    vs_torch: bool,
    /// ARC-Easy samples in the search-throughput measurement (0 skips it).
    #[arg(long, default_value_t = 2)]
    search_samples: usize,
    /// MCTS simulations per sample in the search measurement, at least 1 (`paper` preset
    /// otherwise).
    #[arg(long, default_value_t = 60, value_parser = crate::at_least_one)]
    search_sims: usize,
    /// Scoring in the search measurement: generate (the `paper` preset, with the chat template)
    /// or loglik (the quick default of `cargo xtask search`).
    #[arg(long, default_value = "generate")]
    search_scoring: cola_eval::ScoringMode,
    /// Task of the search measurement (arc-easy; gsm8k for long generations).
    #[arg(long, value_parser = crate::search_cmds::task_parser(), default_value = "arc-easy")]
    search_task: cola_eval::Task,
    /// Batch size K of the batched measurements (search with K chains per batch, K chains
    /// decoding in lockstep), timed in the same run as K = 1. Default: the backend's default.
    #[arg(long, alias = "search-batch", value_name = "K", value_parser = crate::at_least_one)]
    batch: Option<usize>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

struct Bench {
    model: crate::ModelPath,
    settings: BenchSettings,
    backend: cola_executor::backend::BackendKind,
}

impl WithBackend for Bench {
    type Output = Result<BenchResult>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<BenchResult> {
        let model = crate::load_model::<B>(&self.model, device.clone())?;
        // The same measures on the weights dequantized to f32 (what the CPU computed from
        // before stored weights), timed interleaved with the stored ones, for the ratios.
        let f32_model = if B::STORED_WEIGHTS && self.model.precision != WeightPrecision::F32 {
            let path = crate::ModelPath { precision: WeightPrecision::F32, ..self.model.clone() };
            Some(crate::load_model::<B>(&path, device)?)
        } else {
            None
        };
        let name = self.model.path.display().to_string();
        Ok(run_bench(&self.settings, &model, f32_model.as_ref(), self.backend, &name)?)
    }
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let model = args.model.model_path()?;
    let dir = model.path.clone();
    let settings = BenchSettings {
        reps: args.reps,
        decode_tokens: args.decode_tokens,
        batch: args.batch.unwrap_or_else(|| cola_search::default_batch(args.model.backend, args.search_scoring)),
        search: (args.search_samples > 0).then_some(SearchBench {
            task: args.search_task,
            samples: args.search_samples,
            sims: args.search_sims,
            scoring: args.search_scoring,
        }),
    };
    let mut result = dispatch(args.model.backend, Bench { model, settings, backend: args.model.backend })??;
    if args.vs_torch {
        // PyTorch reads an HF directory: the default GGUF's f32 import.
        let torch_dir = if args.model.model.is_none() { cola_assets::ensure()?.imported_model_dir()? } else { dir };
        result.torch = Some(torch_speeds(&torch_dir, args.reps, args.decode_tokens, result.threads, &result.speeds)?);
    }
    // The tables go to stdout, or to stderr under --json so stdout is the JSON alone.
    if args.json {
        eprint!("{}", result.render());
        println!("{}", result.to_json());
    } else {
        print!("{}", result.render());
    }
    Ok(())
}
