//! A search run on disk: `config.json` (every setting, model and data hashes, seed, versions),
//! `samples.jsonl` (one line per finished sample, flushed and synced as it finishes),
//! `timings.jsonl` (seconds per sample, kept apart so that the records of the same run are
//! byte-identical however often it was interrupted), `run.lock` and the report. Running again on
//! the same directory resumes; a torn last line (a process killed mid-write) is detected and
//! dropped; a different config is refused unless forced; a second process on the directory is
//! refused while the first holds the lock.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sample::{SampleRecord, SearchSettings};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cause is the `source`: `{:#}` (anyhow) prints `path: cause`.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: the run directory is in use by {holder}; wait for that process to finish or stop it (two writers would interleave records)", path.display())]
    InUse { path: PathBuf, holder: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |error| RunError::Io { path: path.to_path_buf(), error }
}

/// `--shard K/N`: every N-th sample starting at K.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("shard `{s}` is not of the form K/N"))?;
        let (index, count) = (k.trim().parse::<usize>(), n.trim().parse::<usize>());
        match (index, count) {
            (Ok(index), Ok(count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!("shard `{s}`: need K/N with 0 <= K < N")),
        }
    }
}

impl Shard {
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

/// A file the run read, with its sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedFile {
    pub path: String,
    pub sha256: String,
}

/// Everything that decides a run's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub tasks: Vec<String>,
    pub limit: Option<usize>,
    pub offset: usize,
    pub shard: Option<Shard>,
    /// Left out when not given, so configs made before splits existed resume unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<cola_eval::Split>,
    /// The item order, recorded where it matters (tasks whose items have subjects: MATH); left
    /// out otherwise, so configs made before it existed resume unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<crate::runs::Sampling>,
    pub seed: u64,
    pub settings: SearchSettings,
    /// The names of the searchers beside MCTS and the baseline, in order; left out when none,
    /// so configs made before they existed resume unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_searchers: Vec<String>,
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// What a run's results came from besides its settings: model, data, backend and versions
/// (the last keys of every run's config.json, search or transfer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The model path, portable ([`cola_assets::portable_path`]).
    pub model_dir: String,
    pub num_layers: usize,
    pub weights: Vec<HashedFile>,
    pub data: Vec<HashedFile>,
    pub backend: cola_executor::backend::BackendKind,
    pub versions: Value,
    /// Products with activations quantized to 8 bits (`--weights stored-int8`); left out when
    /// not, so configs made before it existed resume unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub int8_activations: bool,
}

/// The burn version the workspace pins (Cargo.toml), recorded in every config.
pub const BURN_VERSION: &str = "0.21.0";

impl Provenance {
    /// The provenance of a run of the model at `model_dir` over the data files `data`.
    pub fn new(
        model_dir: &Path, num_layers: usize, data: Vec<HashedFile>, backend: cola_executor::backend::BackendKind,
        int8_activations: bool,
    ) -> Result<Self, crate::SearchError> {
        Ok(Provenance {
            model_dir: cola_assets::portable_path(model_dir),
            num_layers,
            weights: crate::runs::weight_hashes(model_dir)?,
            data,
            backend,
            versions: serde_json::json!({"cola": env!("CARGO_PKG_VERSION"), "burn": BURN_VERSION}),
            int8_activations,
        })
    }
}

/// An open run directory, of a search or a transfer run: its config.json written, its lock held
/// until dropped (the operating system releases it when the process dies, however it dies).
/// The sample methods read and write a search run's records.
pub struct RunDir {
    pub dir: PathBuf,
    _lock: File,
}

pub const CONFIG_FILE: &str = "config.json";
pub const SAMPLES_FILE: &str = "samples.jsonl";
pub const TIMINGS_FILE: &str = "timings.jsonl";
pub const LOCK_FILE: &str = "run.lock";

/// Seconds a sample took, one line of timings.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleTiming {
    pub task: String,
    pub doc_id: String,
    pub seconds: f64,
}

/// Takes `dir`'s lock (an advisory `flock`, so a crashed holder never leaves it stuck) and
/// writes who holds it into the lock file, for the message the next process gets.
fn lock(dir: &Path) -> Result<File, RunError> {
    let path = dir.join(LOCK_FILE);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder =
                if holder.trim().is_empty() { "another process".to_string() } else { holder.trim().to_string() };
            return Err(RunError::InUse { path: dir.to_path_buf(), holder });
        }
        Err(fs::TryLockError::Error(error)) => return Err(RunError::Io { path, error }),
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this machine".into(), |h| h.trim().to_string());
    let since = unix_seconds();
    file.set_len(0).map_err(io_err(&path))?;
    writeln!(file, "process {} on {host} (since unix time {since})", std::process::id()).map_err(io_err(&path))?;
    Ok(file)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Appends a newline to `path` if its last byte is not one, so the next append starts a line.
fn finish_line(path: &Path) -> Result<(), RunError> {
    if fs::read(path).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n')) {
        let mut f = OpenOptions::new().append(true).open(path).map_err(io_err(path))?;
        f.write_all(b"\n").map_err(io_err(path))?;
    }
    Ok(())
}

/// Opens (creating if needed) the run directory `dir` for the config `wanted`, takes its lock
/// and writes config.json. An existing directory with another config is refused unless `force`,
/// which moves its `records` files aside and starts over. The returned file holds the lock.
fn open_locked(dir: &Path, wanted: &Value, force: bool, records: &[&str]) -> Result<File, RunError> {
    if dir.exists() && !dir.is_dir() {
        return Err(RunError::Invalid { path: dir.to_path_buf(), message: "is a file, not a run directory".into() });
    }
    fs::create_dir_all(dir).map_err(|e| RunError::Invalid {
        path: dir.to_path_buf(),
        message: format!("cannot create the run directory: {e}"),
    })?;
    let lock = lock(dir)?;
    let cfg_path = dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        let text = fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let existing: Value = serde_json::from_str(&text).map_err(|e| RunError::Invalid {
            path: cfg_path.clone(),
            message: format!("not valid JSON ({e}); remove it or use --force"),
        })?;
        if existing != *wanted {
            if !force {
                return Err(RunError::Invalid {
                    path: cfg_path,
                    message: format!(
                        "this run directory was made with different settings ({}); use another --run-dir, or --force to start it over",
                        describe_difference(&existing, wanted)
                    ),
                });
            }
            let stamp = unix_seconds();
            for name in records {
                let old = dir.join(name);
                if old.exists() {
                    let aside = dir.join(format!("{name}.replaced-{stamp}"));
                    fs::rename(&old, &aside).map_err(io_err(&aside))?;
                }
            }
        }
    }
    let tmp = dir.join("config.json.partial");
    fs::write(&tmp, serde_json::to_string_pretty(wanted).expect("json")).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &cfg_path).map_err(io_err(&cfg_path))?;
    Ok(lock)
}

impl RunDir {
    /// Opens (creating if needed) `dir` for a search run of `config` and takes its lock. An
    /// existing directory with another config is refused unless `force`, which moves its samples
    /// aside and starts over.
    pub fn open(dir: &Path, config: &RunConfig, force: bool) -> Result<Self, RunError> {
        Self::open_with(dir, config, force, &[SAMPLES_FILE, TIMINGS_FILE])
    }

    /// [`RunDir::open`] for any kind of run: `records` are the files `force` moves aside.
    pub fn open_with(dir: &Path, config: &impl Serialize, force: bool, records: &[&str]) -> Result<Self, RunError> {
        let wanted = serde_json::to_value(config).expect("config serializes");
        let lock = open_locked(dir, &wanted, force, records)?;
        Ok(RunDir { dir: dir.to_path_buf(), _lock: lock })
    }

    /// A file of the run directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Finished samples, after dropping a torn last line (which is also cut from the file, so
    /// the next append starts on a clean line).
    pub fn finished(&self) -> Result<Vec<SampleRecord>, RunError> {
        let records = read_records_repairing(&self.path(SAMPLES_FILE), "a sample record")?;
        finish_line(&self.path(TIMINGS_FILE))?;
        Ok(records)
    }

    pub fn finished_keys(&self) -> Result<HashSet<(String, String)>, RunError> {
        Ok(self.finished()?.into_iter().map(|r| (r.task, r.doc_id)).collect())
    }

    /// Appends one sample as one line, flushed and synced before returning, and then its time
    /// to timings.jsonl.
    pub fn append(&self, record: &SampleRecord, seconds: f64) -> Result<(), RunError> {
        append_line(&self.path(SAMPLES_FILE), record)?;
        append_line(
            &self.path(TIMINGS_FILE),
            &SampleTiming { task: record.task.clone(), doc_id: record.doc_id.clone(), seconds },
        )
    }

    pub fn samples_path(&self) -> PathBuf {
        self.path(SAMPLES_FILE)
    }
}

/// `value` as one JSON line, newline included (the form of samples.jsonl and timings.jsonl).
pub fn jsonl_line(value: &impl Serialize) -> String {
    let mut line = serde_json::to_string(value).expect("record serializes");
    line.push('\n');
    line
}

pub fn append_line(path: &Path, value: &impl Serialize) -> Result<(), RunError> {
    let line = jsonl_line(value);
    let mut f = OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
    f.write_all(line.as_bytes()).map_err(io_err(path))?;
    f.sync_data().map_err(io_err(path))
}

/// Seconds per sample from `dir`'s timings.jsonl, by (task, doc_id). Timings are informational:
/// lines that do not parse (a torn last line) are left out, a missing file is empty.
pub fn read_timings(dir: &Path) -> HashMap<(String, String), f64> {
    let text = fs::read_to_string(dir.join(TIMINGS_FILE)).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<SampleTiming>(l).ok())
        .map(|t| ((t.task, t.doc_id), t.seconds))
        .collect()
}

/// A short description of which top-level settings differ.
fn describe_difference(a: &Value, b: &Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return "not an object".into() };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x.is_object() && y.is_object() => format!("{k}: {}", describe_difference(x, y)),
            (x, y) => format!("{k}: {} -> {}", short(x), short(y)),
        })
        .collect();
    diff.join("; ")
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or("(absent)".to_string(), Value::to_string);
    if s.len() > 60 { format!("{}...", &s[..57]) } else { s }
}

/// Reads samples.jsonl: the records, and `Some(len)` when the file must be cut to `len` bytes
/// because its last line is torn. A bad line anywhere else is an error (the file was edited or
/// corrupted, not interrupted).
pub fn read_samples(path: &Path) -> Result<(Vec<SampleRecord>, Option<u64>), RunError> {
    read_records(path, "a sample record")
}

/// Reads a JSONL file of records of type `T` (`what` names one in errors), as [`read_samples`].
pub fn read_records<T: serde::de::DeserializeOwned>(
    path: &Path, what: &str,
) -> Result<(Vec<T>, Option<u64>), RunError> {
    if !path.exists() {
        return Ok((vec![], None));
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut lines = bytes.split_inclusive(|&b| b == b'\n').peekable();
    let mut line_no = 0;
    while let Some(line) = lines.next() {
        line_no += 1;
        let is_last = lines.peek().is_none();
        let parsed = std::str::from_utf8(line).ok().and_then(|t| serde_json::from_str::<T>(t.trim_end()).ok());
        match parsed {
            // A last line that parses is whole even if its newline never reached the disk.
            Some(r) => records.push(r),
            _ if is_last => return Ok((records, Some(offset as u64))),
            _ if line.iter().all(u8::is_ascii_whitespace) => {}
            _ => {
                return Err(RunError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("line {line_no} is not {what} (edited or corrupted file)"),
                });
            }
        }
        offset += line.len();
    }
    Ok((records, None))
}

/// The records of a JSONL file of `T` after dropping a torn last line, which is also cut from
/// the file (so the next append starts on a clean line).
pub fn read_records_repairing<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<T>, RunError> {
    let (records, good_len) = read_records(path, what)?;
    if let Some(len) = good_len {
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(len).map_err(io_err(path))?;
    } else {
        // A whole last record whose newline never made it to disk: finish the line.
        finish_line(path)?;
    }
    Ok(records)
}

/// Finished run directories read together: shards of one run merge into the run done whole.
pub struct MergedRuns {
    /// Deduplicated by (task, doc_id), in the order the whole run would have written them
    /// (tasks in order, then item position; shard K/N wrote positions K, K+N, ...).
    pub records: Vec<SampleRecord>,
    pub configs: Vec<RunConfig>,
    pub timings: HashMap<(String, String), f64>,
}

pub fn merge_runs(dirs: &[PathBuf]) -> Result<MergedRuns, RunError> {
    let mut seen = HashSet::new();
    let mut keyed = Vec::new();
    let mut configs = Vec::new();
    let mut timings = HashMap::new();
    let mut task_order: Vec<String> = Vec::new();
    for (d, dir) in dirs.iter().enumerate() {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let cfg: RunConfig = serde_json::from_str(&text)
            .map_err(|e| RunError::Invalid { path: cfg_path.clone(), message: format!("not a run config: {e}") })?;
        for t in &cfg.tasks {
            if !task_order.contains(t) {
                task_order.push(t.clone());
            }
        }
        let shard = cfg.shard.unwrap_or(Shard { index: 0, count: 1 });
        configs.push(cfg);
        let (recs, _) = read_samples(&dir.join(SAMPLES_FILE))?;
        let mut per_task: HashMap<String, usize> = HashMap::new();
        for r in recs {
            let j = per_task.entry(r.task.clone()).or_default();
            let position = shard.index + *j * shard.count;
            *j += 1;
            if seen.insert((r.task.clone(), r.doc_id.clone())) {
                let task = task_order.iter().position(|t| *t == r.task).unwrap_or(usize::MAX);
                keyed.push(((task, position, d), r));
            }
        }
        timings.extend(read_timings(dir));
    }
    keyed.sort_by_key(|(k, _)| *k);
    Ok(MergedRuns { records: keyed.into_iter().map(|(_, r)| r).collect(), configs, timings })
}

/// Creates `path`'s parent and writes `text` atomically.
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<(), RunError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = path.with_extension("partial");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text).map_err(io_err(&tmp))?;
    f.sync_data().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SampleRecord {
        SampleRecord {
            task: "t".into(),
            doc_id: id.into(),
            gold: "A".into(),
            static_prediction: Some("A".into()),
            static_correct: true,
            best_chain: Some(cola_executor::Chain::parse("0-3").unwrap()),
            best_len: Some(4),
            best_correct: true,
            best_prediction: Some("A".into()),
            evaluations: 1,
            simulations: 0,
            stopped_early: false,
            random_best_correct: None,
            random_best_chain: None,
            random_best_len: None,
            random_evaluations: None,
            chains: vec![],
            random_chains: None,
            other_searchers: Vec::new(),
        }
    }

    #[test]
    fn torn_last_line_is_dropped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SAMPLES_FILE);
        let mut text = String::new();
        for id in ["1", "2"] {
            text.push_str(&serde_json::to_string(&record(id)).unwrap());
            text.push('\n');
        }
        let good = text.len();
        let third = serde_json::to_string(&record("3")).unwrap();
        text.push_str(&third[..third.len() / 2]);
        fs::write(&p, &text).unwrap();
        let (recs, cut) = read_samples(&p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(cut, Some(good as u64));
        // A complete last line without its newline is a whole record, kept.
        fs::write(&p, format!("{}{}", &text[..good], third)).unwrap();
        let (recs, cut) = read_samples(&p).unwrap();
        assert_eq!((recs.len(), cut), (3, None));
        // Garbage in the middle is an error naming the line.
        fs::write(&p, format!("{}garbage\n{}", &text[..good], third)).unwrap();
        let e = read_samples(&p).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    /// Committed runs resume: their config.json reads into today's config type and writes back
    /// to the same JSON (a directory whose config compares different would be refused).
    #[test]
    fn committed_run_configs_read_back_unchanged() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/results");
        let mut checked = 0;
        for entry in fs::read_dir(&results).unwrap() {
            let path = entry.unwrap().path().join(CONFIG_FILE);
            let Ok(text) = fs::read_to_string(&path) else { continue };
            let original: Value = serde_json::from_str(&text).unwrap();
            let again = if original.get("calibration_n").is_some() {
                let c: crate::transfer::TransferConfig = serde_json::from_value(original.clone()).unwrap();
                serde_json::to_value(c).unwrap()
            } else {
                let c: RunConfig = serde_json::from_value(original.clone()).unwrap();
                serde_json::to_value(c).unwrap()
            };
            assert_eq!(again, original, "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 1, "no committed run under {}", results.display());
    }

    #[test]
    fn shard_parsing_and_selection() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!((0..9).filter(|&i| s.takes(i)).collect::<Vec<_>>(), vec![1, 4, 7]);
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1-3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
    }
}
