//! Bad input through the real `cargo xtask` binary: every case must exit non-zero with a message
//! that names the file or argument and what is wrong, and never panic. The README lists this
//! table (section "Bad input").
//!
//! The cases run on a tiny random model and a tiny task file; `COLA_CACHE` points at an empty
//! directory, so a case that tried to fetch the default assets would fail here rather than pass
//! by downloading.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cola_model::gguf::builder::GgufBuilder;
use cola_tests::{write_tiny_model_dir, write_tiny_task};
use serde_json::{Value, json};

const LAYERS: usize = 6;

struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        write_tiny_model_dir(&root.path().join("model"), LAYERS, 5);
        write_tiny_task(&root.path().join("data.jsonl"), 3);
        std::fs::create_dir(root.path().join("empty-cache")).unwrap();
        Fixture { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A copy of the good model directory, changed by `edit`.
    fn model_variant(&self, name: &str, edit: impl FnOnce(&Path)) -> String {
        let dir = self.path(name);
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(self.path("model")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        edit(&dir);
        dir.display().to_string()
    }

    /// A data file with `text` as its content.
    fn data(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        self.arg(name)
    }

    fn gguf(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.path(name), bytes).unwrap();
        self.arg(name)
    }

    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .env("COLA_CACHE", self.path("empty-cache"))
            .env("HF_HUB_CACHE", self.path("empty-cache"))
            .env("NO_COLOR", "1")
            .env_remove("COLA_LOG");
        c
    }

    fn run(&self, args: &[String]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn eval(&self, model: &str, data: &str, chain: Option<&str>) -> Vec<String> {
        let mut a = strings(&["eval", "--model", model, "--data", data, "--scoring", "loglik", "--limit", "1"]);
        if let Some(c) = chain {
            a.extend(strings(&["--chain", c]));
        }
        a
    }

    fn search(&self, data: &str, out: &str) -> Vec<String> {
        strings(&[
            "search",
            "--model",
            &self.arg("model"),
            "--data",
            data,
            "--sims",
            "3",
            "--batch",
            "1",
            "--run-dir",
            out,
        ])
    }

    fn transfer(&self, calibration: &str, heldout: &str, extra: &[&str]) -> Vec<String> {
        let mut a =
            strings(&["transfer", "--model", &self.arg("model"), "--sims", "2", "--run-dir", &self.arg("transfer")]);
        a.extend(strings(&["--calibration-data", calibration, "--heldout-data", heldout]));
        a.extend(strings(extra));
        a
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Rewrites the JSON header of a safetensors file with `edit`, keeping its data.
fn edit_safetensors_header(path: &Path, edit: impl FnOnce(&mut Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// A small GGUF file that opens, with its section boundaries.
fn gguf() -> GgufBuilder {
    let mut b = GgufBuilder::new();
    b.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 1).tensor(
        "token_embd.weight",
        &[4, 2],
        0,
        &[0u8; 32],
    );
    b
}

struct Case {
    name: String,
    args: Vec<String>,
    /// Substrings the error output must contain (the file or argument, and what is wrong).
    expect: Vec<String>,
}

fn case(name: impl Into<String>, args: Vec<String>, expect: &[&str]) -> Case {
    Case { name: name.into(), args, expect: strings(expect) }
}

fn cases(f: &Fixture) -> Vec<Case> {
    let (model, data) = (f.arg("model"), f.arg("data.jsonl"));
    let held = f.data("held.jsonl", "{\"question\": \"Unseen?\", \"choices\": [\"a\", \"b\"], \"answer\": 1}\n");
    let mut cases = vec![
        // Chains.
        case("empty chain", f.eval(&model, &data, Some("")), &["--chain", "chain is empty"]),
        case("whitespace chain", f.eval(&model, &data, Some("  ")), &["--chain", "chain is empty"]),
        case("layer out of range", f.eval(&model, &data, Some("0-99")), &["--chain", "layer 6", "has 6 layers"]),
        case(
            "backward range",
            f.eval(&model, &data, Some("5-3")),
            &["--chain `5-3`", "range end 3 is before its start 5"],
        ),
        case("letters", f.eval(&model, &data, Some("a,b")), &["--chain `a,b`", "`a`", "expected a layer index"]),
        // Numbers outside the range where they mean something (checked before anything loads).
        case("zero simulations", strings(&["search", "--sims", "0"]), &["--sims <SIMS>", "must be at least 1"]),
        case("zero batch", strings(&["search", "--batch", "0"]), &["--batch <K>", "must be at least 1"]),
        case("negative length penalty", strings(&["search", "--lambda=-1"]), &["--lambda <LAMBDA>", "at least 0"]),
        case("zero new tokens", strings(&["eval", "--max-new-tokens", "0"]), &["--max-new-tokens", "at least 1"]),
        case(
            "empty item",
            f.eval(&model, &data, Some("1,,2")),
            &["--chain `1,,2`", "chain item 2", "expected a layer index"],
        ),
        case(
            "chain over the length bound",
            f.eval(&model, &data, Some(&["0-5"; 5].join(","))),
            &["--chain", "30 steps", "maximum of 24"],
        ),
        case(
            "--offset past the last item",
            [f.eval(&model, &data, None), strings(&["--offset", "3"])].concat(),
            &["--offset 3", "has only 3 items"],
        ),
        // Model directories.
        case(
            "--model that does not exist",
            f.eval(&f.arg("nowhere"), &data, None),
            &["--model", "nowhere", "no such model directory or GGUF file"],
        ),
        case(
            "--model hub id not in the local cache",
            f.eval("cola-test-org/not-there", &data, None),
            &["--model cola-test-org/not-there", "not in the Hugging Face cache", "models--cola-test-org--not-there"],
        ),
        case(
            "missing config.json",
            f.eval(
                &f.model_variant("m-no-config", |d| std::fs::remove_file(d.join("config.json")).unwrap()),
                &data,
                None,
            ),
            &["m-no-config", "config.json"],
        ),
        case(
            "config.json not JSON",
            f.eval(
                &f.model_variant("m-bad-json", |d| std::fs::write(d.join("config.json"), "{\"model_type\": ").unwrap()),
                &data,
                None,
            ),
            &["m-bad-json/config.json", "JSON"],
        ),
        case(
            "missing model_type",
            f.eval(
                &f.model_variant("m-no-type", |d| {
                    edit_config(d, |v| _ = v.as_object_mut().unwrap().remove("model_type"))
                }),
                &data,
                None,
            ),
            &["m-no-type/config.json", "model_type"],
        ),
        case(
            "unknown model_type",
            f.eval(&f.model_variant("m-gpt9", |d| edit_config(d, |v| v["model_type"] = json!("gpt9"))), &data, None),
            &["m-gpt9/config.json", "gpt9"],
        ),
        case(
            "missing tokenizer.json",
            f.eval(
                &f.model_variant("m-no-tok", |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap()),
                &data,
                None,
            ),
            &["m-no-tok", "tokenizer.json"],
        ),
        case(
            "truncated model.safetensors",
            f.eval(
                &f.model_variant("m-cut", |d| {
                    let p = d.join("model.safetensors");
                    let b = std::fs::read(&p).unwrap();
                    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
                }),
                &data,
                None,
            ),
            &["m-cut/model.safetensors"],
        ),
        case(
            "zero-byte model.safetensors",
            f.eval(
                &f.model_variant("m-zero", |d| std::fs::write(d.join("model.safetensors"), b"").unwrap()),
                &data,
                None,
            ),
            &["m-zero/model.safetensors"],
        ),
        case(
            "tensor of the wrong shape",
            f.eval(
                &f.model_variant("m-shape", |d| {
                    edit_safetensors_header(&d.join("model.safetensors"), |h| {
                        h["model.layers.0.self_attn.q_proj.weight"]["shape"] = json!([16, 64]);
                    })
                }),
                &data,
                None,
            ),
            &["m-shape", "model.layers.0.self_attn.q_proj.weight", "[16, 64]", "[32, 32]"],
        ),
        case(
            "tensor of an unsupported dtype",
            f.eval(
                &f.model_variant("m-dtype", |d| {
                    edit_safetensors_header(&d.join("model.safetensors"), |h| {
                        h["model.layers.0.mlp.up_proj.weight"]["dtype"] = json!("I32");
                    })
                }),
                &data,
                None,
            ),
            &["m-dtype", "model.layers.0.mlp.up_proj.weight", "I32"],
        ),
        case(
            "shard index naming a missing file",
            f.eval(
                &f.model_variant("m-shards", |d| {
                    std::fs::rename(d.join("model.safetensors"), d.join("model-00001-of-00002.safetensors")).unwrap();
                    let index = json!({"weight_map": {
                        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                        "model.norm.weight": "model-00002-of-00002.safetensors"}});
                    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
                }),
                &data,
                None,
            ),
            &["model-00002-of-00002.safetensors"],
        ),
        // Data files.
        case("data file missing", f.eval(&model, &f.arg("none.jsonl"), None), &["none.jsonl", "not found"]),
        case("empty data file", f.eval(&model, &f.data("empty.jsonl", ""), None), &["empty.jsonl", "no usable items"]),
        case(
            "data not JSONL",
            f.eval(&model, &f.data("text.jsonl", "question,answer\n2+2,4\n"), None),
            &["text.jsonl", "no usable items", "text.jsonl:1"],
        ),
        case(
            "line without question",
            f.eval(&model, &f.data("noq.jsonl", "{\"choices\": [\"a\", \"b\"], \"answer\": 0}\n"), None),
            &["noq.jsonl:1", "no `question`"],
        ),
        case(
            "answer index out of range",
            f.eval(
                &model,
                &f.data("range.jsonl", "{\"question\": \"q?\", \"choices\": [\"a\", \"b\"], \"answer\": 5}\n"),
                None,
            ),
            &["range.jsonl:1", "`answer`"],
        ),
        case(
            "math answer that does not parse",
            f.eval(
                &model,
                &f.data("math.jsonl", "{\"question\": \"1/2 + 0?\", \"answer\": \"\\\\frac{1}{2\"}\n"),
                None,
            ),
            &["math.jsonl:1", "`answer`", "does not parse"],
        ),
        // transfer.
        case(
            "transfer: held-out items seen in calibration",
            f.transfer(&data, &data, &[]),
            &["held-out item", "of data", "is also a calibration item"],
        ),
        case(
            "transfer: --drop all layers",
            f.transfer(&data, &held, &["--drop", "6"]),
            &["--drop 6", "between 1 and 5 layers"],
        ),
        case(
            "transfer: no bootstrap resamples",
            f.transfer(&data, &held, &["--resamples", "0"]),
            &["--resamples <RESAMPLES>", "must be at least 1"],
        ),
        case("transfer: generate scoring", f.transfer(&data, &held, &["--scoring", "generate"]), &["loglik or letter"]),
        case(
            "transfer: math items",
            f.transfer(&f.data("sum.jsonl", "{\"question\": \"1 + 1?\", \"answer\": \"2\"}\n"), &held, &[]),
            &["calibration items", "is not multiple choice"],
        ),
        case(
            "transfer: calibration file without held-out file",
            strings(&["transfer", "--model", &model, "--calibration-data", &data]),
            &["--heldout-data"],
        ),
        // Run directories.
        case("--run-dir that is a file", f.search(&data, &data), &["data.jsonl", "is a file, not a run directory"]),
        case(
            "--run-dir that cannot be created",
            f.search(&data, "/proc/self/cola-run"),
            &["/proc/self/cola-run", "cannot create the run directory"],
        ),
    ];
    // GGUF files: cut at the end of each section, lying counts and offsets, unsupported types.
    let good = gguf();
    let bytes = good.build();
    for (section, end) in good.section_ends() {
        let cut = end - 3;
        cases.push(case(
            format!("GGUF truncated in the {section}"),
            strings(&[
                "import-gguf",
                &f.gguf(&format!("cut-{}.gguf", section.replace(' ', "-")), &bytes[..cut]),
                "--out-dir",
                &f.arg("imported"),
            ]),
            &[&format!("cut-{}.gguf", section.replace(' ', "-"))],
        ));
    }
    let mut lie = bytes.clone();
    lie[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    cases.push(case(
        "GGUF lying tensor count",
        strings(&["import-gguf", &f.gguf("count.gguf", &lie), "--out-dir", &f.arg("imported")]),
        &["count.gguf", "exceeds the file size"],
    ));
    let mut lie = bytes.clone();
    let offset_at = good.section_ends()[2].1 - 8;
    lie[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    cases.push(case(
        "GGUF lying tensor offset",
        strings(&["import-gguf", &f.gguf("offset.gguf", &lie), "--out-dir", &f.arg("imported")]),
        &["offset.gguf", "token_embd.weight", "outside the file"],
    ));
    let mut q4k = GgufBuilder::new();
    q4k.kv_str("general.architecture", "llama").tensor("w", &[256], 12, &[0u8; 144]);
    cases.push(case(
        "GGUF unsupported tensor type",
        strings(&["import-gguf", &f.gguf("q4k.gguf", &q4k.build()), "--out-dir", &f.arg("imported")]),
        &["q4k.gguf", "Q4_K", "`w`"],
    ));
    // The same files given to --model, which loads a GGUF directly.
    let cut = good.section_ends()[3].1 - 3;
    cases.push(case(
        "--model GGUF truncated in the tensor data",
        f.eval(&f.gguf("cut-model.gguf", &bytes[..cut]), &data, None),
        &["cut-model.gguf", "token_embd.weight", "outside the file"],
    ));
    cases.push(case(
        "--model GGUF with a K-quant tensor",
        f.eval(&f.arg("q4k.gguf"), &data, None),
        &["q4k.gguf", "Q4_K", "`w`"],
    ));
    cases.push(case(
        "GGUF zero bytes",
        strings(&["import-gguf", &f.gguf("zero.gguf", b""), "--out-dir", &f.arg("imported")]),
        &["zero.gguf"],
    ));
    cases
}

fn check(f: &Fixture, c: &Case) -> Result<(), String> {
    let out = f.run(&c.args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture: the table of messages the README quotes.
    eprintln!("{:<36} exit {:?}: {}", c.name, out.status.code(), stderr.lines().last().unwrap_or(""));
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("exited 0".to_string());
    }
    if stderr.contains("panicked") {
        problems.push("panicked".to_string());
    }
    for want in &c.expect {
        if !stderr.contains(want.as_str()) {
            problems.push(format!("message lacks `{want}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {} (args {:?})\n{stderr}", c.name, problems.join(", "), c.args))
    }
}

#[test]
fn every_bad_input_is_a_clear_error() {
    let f = Fixture::new();
    // The good inputs work, so each case fails for its own reason.
    let ok = f.run(&f.eval(&f.arg("model"), &f.arg("data.jsonl"), None));
    assert!(ok.status.success(), "the good model and data fail: {}", String::from_utf8_lossy(&ok.stderr));
    let failures: Vec<String> = cases(&f).iter().filter_map(|c| check(&f, c).err()).collect();
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// A search on `data`, left running, and its output.
fn start_search(f: &Fixture, data: &str, out: &str) -> Child {
    f.command(&f.search(data, out)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn run_directories_that_are_damaged_or_busy_are_refused() {
    let f = Fixture::new();
    let data = f.arg("data.jsonl");
    let run = f.arg("run");
    let ok = f.run(&f.search(&data, &run));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // A corrupt line in the middle of samples.jsonl.
    let samples = f.path("run/samples.jsonl");
    let good = std::fs::read_to_string(&samples).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    assert_eq!(lines.len(), 3);
    std::fs::write(&samples, format!("{}\n{{\"task\": \"da\n{}\n", lines[0], lines[2])).unwrap();
    let c = case("corrupt middle line", f.search(&data, &run), &["run/samples.jsonl", "line 2 is not a sample record"]);
    check(&f, &c).unwrap();
    std::fs::write(&samples, &good).unwrap();

    // config.json edited by hand: different settings, then not JSON at all.
    let config = f.path("run/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"simulations\": 3", "\"simulations\": 4")).unwrap();
    check(
        &f,
        &case(
            "config edited",
            f.search(&data, &run),
            &["run/config.json", "different settings", "simulations: 4 -> 3"],
        ),
    )
    .unwrap();
    std::fs::write(&config, "{ not json").unwrap();
    check(&f, &case("config not JSON", f.search(&data, &run), &["run/config.json", "not valid JSON"])).unwrap();

    // Two processes on one directory: the second is refused and names the first.
    write_tiny_task(&f.path("long.jsonl"), 200);
    let busy = f.arg("busy");
    let mut first = start_search(&f, &f.arg("long.jsonl"), &busy);
    let started = Instant::now();
    while !std::fs::read_to_string(f.path("busy/run.lock")).is_ok_and(|s| s.contains("process")) {
        assert!(started.elapsed() < Duration::from_secs(60), "the first search never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let holder = format!("process {}", first.id());
    let second =
        check(&f, &case("second writer", f.search(&f.arg("long.jsonl"), &busy), &["busy", "in use by", &holder]));
    first.kill().unwrap();
    first.wait().unwrap();
    second.unwrap();
}

/// A disk that fills up mid-run: a 32 KiB tmpfs (needs root; skipped with a note otherwise).
#[test]
fn a_full_disk_is_an_error_naming_the_file() {
    let f = Fixture::new();
    let mnt = f.path("tiny-fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    }
    write_tiny_task(&f.path("long.jsonl"), 400);
    let result = check(
        &f,
        &case(
            "full disk",
            f.search(&f.arg("long.jsonl"), &f.arg("tiny-fs/run")),
            &["tiny-fs/run/", "No space left on device"],
        ),
    );
    Command::new("umount").arg(&mnt).status().unwrap();
    result.unwrap();
}

/// `--version` names the package version and the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let want = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown commit".to_string(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(text.trim(), format!("cargo xtask {} ({want})", env!("CARGO_PKG_VERSION")));
}

/// `eval --out` also writes lm-evaluation-harness's layout beside the JSONL: its results keys,
/// with the accuracy the JSONL's items give, and one sample line per item.
#[test]
fn eval_out_writes_the_harness_layout() {
    let f = Fixture::new();
    let mut args = f.eval(&f.arg("model"), &f.arg("data.jsonl"), None);
    args.retain(|a| a != "--limit" && a != "1");
    args.extend(strings(&["--out", &f.arg("items.jsonl")]));
    let out = f.run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let items: Vec<Value> = std::fs::read_to_string(f.path("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let right = items.iter().filter(|v| v["correct"] == true).count() as f64;
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(f.path("items.lm-eval/results.json")).unwrap()).unwrap();
    let (task, entry) = results["results"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(entry["acc,none"].as_f64().unwrap(), right / items.len() as f64);
    assert!(entry.get("acc_stderr,none").is_some() && entry.get("acc_norm,none").is_some(), "{entry}");
    assert_eq!(results["n-samples"][task]["effective"], items.len());
    let samples = std::fs::read_to_string(f.path(&format!("items.lm-eval/samples_{task}.jsonl"))).unwrap();
    assert_eq!(samples.lines().count(), items.len());
}

/// `export-chains` writes, per item, the shortest correct chain the run recorded (both forms)
/// and, per task, chains ranked by the items they were right on; a directory without records
/// is an error.
#[test]
fn export_chains_writes_what_the_records_hold() {
    let f = Fixture::new();
    let run = f.arg("run");
    let ok = f.run(&f.search(&f.arg("data.jsonl"), &run));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = f.run(&strings(&["export-chains", &run, "--out", &f.arg("chains.json")]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let export: Value = serde_json::from_str(&std::fs::read_to_string(f.path("chains.json")).unwrap()).unwrap();
    assert_eq!(export["format"], "cola-chains/1");
    assert_eq!(export["model"]["num_layers"], LAYERS);
    let records: Vec<Value> = std::fs::read_to_string(f.path("run/samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let items = export["items"].as_array().unwrap();
    assert_eq!(items.len(), records.len());
    for (item, r) in items.iter().zip(&records) {
        assert_eq!(item["doc_id"], r["doc_id"]);
        assert_eq!(item["mcts"]["chain"], r["best_chain"], "item {}", r["doc_id"]);
        if let Some(text) = r["best_chain"].as_str() {
            let layers: Vec<usize> =
                item["mcts"]["layers"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
            assert_eq!(cola_executor::Chain::new(layers).to_string(), text);
        }
    }
    // A task chain's `right` is the number of records in which it was evaluated with reward 1.
    for task in export["tasks"].as_array().unwrap() {
        for c in task["chains"].as_array().unwrap() {
            let right = records
                .iter()
                .filter(|r| r["task"] == task["task"])
                .filter(|r| {
                    r["chains"].as_array().unwrap().iter().any(|e| e["chain"] == c["chain"] && e["reward"] == 1.0)
                })
                .count();
            assert_eq!(c["right"], right, "{c}");
        }
    }
    std::fs::create_dir(f.path("no-records")).unwrap();
    std::fs::copy(f.path("run/config.json"), f.path("no-records/config.json")).unwrap();
    let c = case(
        "export-chains without records",
        strings(&["export-chains", &f.arg("no-records")]),
        &["no-records", "no finished samples"],
    );
    check(&f, &c).unwrap();
}
