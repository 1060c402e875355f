//! `cargo xtask bench`: prefill and decode speed of the executor (and, with `--vs-torch`, of
//! PyTorch on the same weights, token ids and thread count, run side by side).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use cola_model::LayerOps;
use clap::Args;
use cola_executor::backend::{WithBackend, dispatch};
use cola_executor::{Chain, Executor};
use serde_json::{Value, json};

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Tokens generated in the decode measurement.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Also time PyTorch (transformers, f32, eager) on the same weights and print the ratios.
    /// Creates a Python venv with torch and transformers on first use (a large download).
    #[arg(long)]
    vs_torch: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Deterministic token ids that avoid the special tokens at the start of the vocabulary.
pub fn bench_ids(n: usize, vocab: usize) -> Vec<u32> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (100 + x % (vocab as u64 - 100)) as u32
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: first-touch allocations, thread pool start
    median(
        (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

struct Bench {
    dir: PathBuf,
    reps: usize,
    decode_tokens: usize,
}

impl WithBackend for Bench {
    type Output = Result<Value>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<Value> {
        let exec = Executor::<B>::load(&self.dir, device)?;
        let n = exec.num_layers();
        let ids = bench_ids(512, exec.config().vocab_size);
        let chain = Chain::identity(n);
        let prefill = |len: usize| {
            time_ms(self.reps, || {
                let s = exec.run(&chain, &ids[..len]).expect("prefill");
                std::hint::black_box(exec.last_logits(&s));
            })
        };
        let prefill_128_ms = prefill(128);
        let prefill_512_ms = prefill(512);
        let state = exec.run(&chain, &ids[..128])?;
        let decode_ms = time_ms(self.reps.min(3), || {
            std::hint::black_box(exec.generate(&state, self.decode_tokens + 1, &[]).expect("decode"));
        });
        // generate(k + 1) = k cached steps after the first token, which comes from the prefill.
        let decode_tokens_per_s = self.decode_tokens as f64 / (decode_ms / 1e3);
        Ok(json!({
            "prefill_128_ms": prefill_128_ms,
            "prefill_512_ms": prefill_512_ms,
            "decode_tokens_per_s": decode_tokens_per_s,
            "threads": rayon_threads(),
        }))
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(args: BenchArgs) -> Result<()> {
    let dir = args.model.model_dir()?;
    let ours = dispatch(args.model.backend, Bench { dir: dir.clone(), reps: args.reps, decode_tokens: args.decode_tokens })
        .map_err(|e| anyhow!(e))??;
    let mut result = json!({ "backend": args.model.backend.name(), "model": dir.display().to_string() });
    merge(&mut result, &ours);
    println!("{:<24} {:>12}", "measure", "cola");
    for key in ["prefill_128_ms", "prefill_512_ms", "decode_tokens_per_s"] {
        println!("{key:<24} {:>12.2}", ours[key].as_f64().unwrap_or(f64::NAN));
    }
    if args.vs_torch {
        let torch = torch_bench(&dir, args.reps, args.decode_tokens, ours["threads"].as_u64().unwrap_or(1))?;
        println!("\n{:<24} {:>12} {:>12} {:>10}", "measure", "cola", "pytorch", "speedup");
        for (key, higher_is_better) in [("prefill_128_ms", false), ("prefill_512_ms", false), ("decode_tokens_per_s", true)] {
            let (a, b) = (ours[key].as_f64().unwrap_or(f64::NAN), torch[key].as_f64().unwrap_or(f64::NAN));
            let ratio = if higher_is_better { a / b } else { b / a };
            println!("{key:<24} {a:>12.2} {b:>12.2} {ratio:>9.2}x");
            result[format!("torch_{key}")] = json!(b);
            result[format!("speedup_{key}")] = json!(ratio);
        }
    }
    if args.json {
        println!("{result}");
    }
    Ok(())
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

/// The Python used for PyTorch comparisons: a venv in the cache with torch + transformers.
pub fn torch_python() -> Result<PathBuf> {
    let venv = cola_assets::cache_dir().join("torch-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if ready.exists() {
        return Ok(python);
    }
    eprintln!("creating {} with torch and transformers (one-time, large download)...", venv.display());
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv failed; is the venv module installed (Debian: python3-venv)?");
    }
    let reqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/requirements.txt");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
        .arg(&reqs)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install -r {} failed", reqs.display());
    }
    std::fs::write(&ready, "").with_context(|| format!("writing {}", ready.display()))?;
    Ok(python)
}

fn torch_bench(dir: &Path, reps: usize, decode_tokens: usize, threads: u64) -> Result<Value> {
    let python = torch_python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/torch_bench.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(dir)
        .args(["--reps", &reps.to_string(), "--decode-tokens", &decode_tokens.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().ok_or_else(|| anyhow!("torch bench printed nothing"))?;
    serde_json::from_str(last).with_context(|| format!("torch bench output `{last}`"))
}
