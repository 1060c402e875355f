//! `forward`, `generate` and `tokenize`: run the model along one chain from the command line.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use cola_executor::backend::WithBackend;
use cola_executor::{Chain, LengthBounds};
use cola_model::LayerOps;
use cola_model::TextTokenizer;
use serde_json::json;

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Chain of layers, e.g. `0-29`, `0-9,9,10-29`, `0-3,8-25,28,29`. Default: all layers in order.
    #[arg(long, value_name = "SPEC")]
    chain: Option<String>,
    /// Prompt text.
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids instead of text.
    #[arg(long, value_name = "1,2,3")]
    ids: Option<String>,
    /// Wrap the prompt in the model's chat template (one user turn, assistant prompt appended).
    #[arg(long)]
    chat: bool,
    /// How many of the highest next-token logits to print (at least 1).
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    top_k: usize,
    /// Print one JSON object: {"ids":[...],"chain":"SPEC","top":[{"id":..,"logit":..,"token":".."}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Chain of layers (default: all layers in order).
    #[arg(long, value_name = "SPEC")]
    chain: Option<String>,
    /// Prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Stop after this many new tokens, at least 1 (or at an end-of-turn token).
    #[arg(long, default_value_t = 32, value_parser = crate::at_least_one)]
    max_new_tokens: usize,
    /// Print one JSON object: {"ids":[...],"new_ids":[...],"text":".."}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model whose tokenizer to use: a directory, a .gguf file or a hub id in the local
    /// Hugging Face cache (default: the embedded SmolLM2).
    #[arg(long, value_name = "DIR|FILE.gguf|ORG/NAME")]
    model: Option<String>,
    /// The text to tokenize.
    #[arg(long)]
    text: String,
}

/// Parses `--chain` (default: identity) and checks it against the model.
pub fn chain_arg(spec: Option<&str>, num_layers: usize) -> Result<Chain> {
    let chain = match spec {
        Some(s) => Chain::parse(s).with_context(|| format!("--chain `{s}`"))?,
        None => Chain::identity(num_layers),
    };
    chain.validate(num_layers, LengthBounds::lenient(num_layers)).with_context(|| format!("--chain `{chain}`"))?;
    Ok(chain)
}

fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',').map(|s| s.trim().parse::<u32>().map_err(|_| anyhow!("--ids: `{s}` is not a token id"))).collect()
}

pub fn forward(args: ForwardArgs) -> Result<()> {
    let model = args.model.clone();
    model.dispatch(|dir| Forward { args, dir })
}

struct Forward {
    args: ForwardArgs,
    dir: crate::ModelPath,
}

impl WithBackend for Forward {
    type Output = Result<()>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<()> {
        let Forward { args, dir } = self;
        let m = crate::load_model::<B>(&dir, device)?;
        let chain = chain_arg(args.chain.as_deref(), m.executor.num_layers())?;
        let ids = match (&args.ids, &args.prompt) {
            (Some(ids), _) => parse_ids(ids)?,
            (None, Some(text)) => m.prompt_ids(text, args.chat)?,
            (None, None) => bail!("give --prompt or --ids"),
        };
        let state = m.executor.run(&chain, &ids)?;
        let logits = m.executor.last_logits(&state);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // Stable sort: ties keep the lower id first, as argmax does.
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<_> = order
            .iter()
            .take(args.top_k)
            .map(|&i| json!({"id": i, "logit": logits[i], "token": m.tokenizer.token_text(i as u32)}))
            .collect();
        if args.json {
            println!("{}", json!({"ids": ids, "chain": chain.to_string(), "top": top}));
        } else {
            println!("chain {chain} ({} steps), {} prompt tokens", chain.len(), ids.len());
            for t in &top {
                println!(
                    "{:>8}  {:>10.4}  {:?}",
                    t["id"],
                    t["logit"].as_f64().unwrap_or(f64::NAN),
                    t["token"].as_str().unwrap_or("")
                );
            }
        }
        Ok(())
    }
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let model = args.model.clone();
    model.dispatch(|dir| Generate { args, dir })
}

struct Generate {
    args: GenerateArgs,
    dir: crate::ModelPath,
}

impl WithBackend for Generate {
    type Output = Result<()>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<()> {
        let Generate { args, dir } = self;
        let m = crate::load_model::<B>(&dir, device)?;
        let chain = chain_arg(args.chain.as_deref(), m.executor.num_layers())?;
        let ids = m.prompt_ids(&args.prompt, args.chat)?;
        let state = m.executor.run(&chain, &ids)?;
        let new_ids = m.executor.generate(&state, args.max_new_tokens, &m.stop_ids())?;
        let text = m.tokenizer.decode(&new_ids)?;
        if args.json {
            println!("{}", json!({"ids": ids, "new_ids": new_ids, "text": text}));
        } else {
            println!("{text}");
        }
        Ok(())
    }
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let path = match args.model {
        Some(name) => cola_model::resolve_model_path(&name).with_context(|| format!("--model {name}"))?,
        None => cola_assets::ensure()?.model,
    };
    let tok = TextTokenizer::load(&path)?;
    println!("{}", serde_json::to_string(&tok.encode(&args.text)?)?);
    Ok(())
}
