//! Records the git commit the binary is built from, for `--version`.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// `path` (absolute) as seen from this package's directory.
fn relative_to_package(path: &Path) -> PathBuf {
    let Ok(here) = std::env::var("CARGO_MANIFEST_DIR") else { return path.to_path_buf() };
    let here: Vec<Component> = Path::new(&here).components().collect();
    let there: Vec<Component> = path.components().collect();
    let common = here.iter().zip(&there).take_while(|(a, b)| a == b).count();
    let mut rel: PathBuf = (common..here.len()).map(|_| "..").collect();
    rel.extend(&there[common..]);
    rel
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=COLA_GIT_COMMIT={commit}");
    // Built again when HEAD moves (a checkout, or a commit on the current branch). The paths are
    // relative to this package: cargo shares this script's result between checkouts that share
    // a target dir (CI's clone), and an absolute path would watch the other checkout's git dir.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = relative_to_package(Path::new(&dir));
        for watched in ["HEAD", "refs/heads", "packed-refs"] {
            println!("cargo:rerun-if-changed={}", dir.join(watched).display());
        }
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
