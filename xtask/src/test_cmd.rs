//! `cargo xtask test`: what CI runs. Checks formatting (`cargo fmt --check`, rustfmt.toml) and
//! lints (`cargo clippy --all-targets -D warnings`), fetches the assets the tests compare against
//! and a venv with torch and transformers (pip, once; for the Python chain script's test),
//! runs the workspace tests, and (in CI, or with `--gpu`) checks that the GPU backends compile and runs
//! the wgpu parity test on a CPU Vulkan driver; in CI, or with `--slurm`, it also runs the Slurm
//! self-test (a one-node Slurm on this machine, about 15 s once installed).

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Also check the `cuda` feature compiles and run the wgpu parity test (default when
    /// CI=true). Installs Mesa's lavapipe with apt-get if no Vulkan driver is present.
    #[arg(long)]
    gpu: bool,
    /// Also run scripts/slurm/selftest.sh (default when CI=true): the sharded search as a Slurm
    /// job array on a one-node Slurm started here. Installs slurm-wlm and munge with apt-get.
    #[arg(long)]
    slurm: bool,
    /// Extra arguments passed to `cargo test` (after `--workspace`), e.g. a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Exit 2 from the script means Slurm could not be set up here (no root, no apt): said, not failed.
fn slurm_selftest() -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm/selftest.sh");
    eprintln!("$ bash scripts/slurm/selftest.sh");
    let status = Command::new("bash").arg(&script).status()?;
    match status.code() {
        Some(0) => Ok(()),
        Some(2) => {
            eprintln!("skipping the Slurm self-test: Slurm could not be set up on this machine (see above)");
            Ok(())
        }
        _ => bail!("the Slurm self-test failed ({status})"),
    }
}

pub fn test(args: TestArgs) -> Result<()> {
    // The style gate first: it is fast and its failures are the cheapest to fix.
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    let assets = cola_assets::ensure()?;
    eprintln!("assets ready in {}", assets.cache.display());
    // For tests/python_chain.rs: the chain script run by PyTorch beside the executor.
    let python = cola_assets::torch_python()?;
    // SAFETY: single-threaded at this point; only child processes read it.
    unsafe { std::env::set_var("COLA_TORCH_PYTHON", &python) };
    let mut test = vec!["test", "--workspace"];
    test.extend(args.cargo_args.iter().map(String::as_str));
    cargo(&test)?;
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if args.slurm || in_ci {
        slurm_selftest()?;
    }
    if !(args.gpu || in_ci) {
        return Ok(());
    }
    // The CUDA backend loads the driver at run time, so compiling it needs no toolkit.
    cargo(&["check", "-p", "xtask", "--features", "cuda"])?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-lavapipe.sh");
    let installed = Command::new("bash").arg(&script).status()?;
    if installed.success() {
        // A private runtime dir silences a harmless warning from the Vulkan loader.
        let runtime = std::env::temp_dir().join("cola-xdg-runtime");
        std::fs::create_dir_all(&runtime)?;
        // SAFETY: single-threaded at this point; only child processes read it.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &runtime) };
        cargo(&["test", "-p", "cola-tests", "--features", "wgpu", "--test", "wgpu_parity", "--", "--nocapture"])?;
    } else {
        eprintln!("skipping the wgpu parity test: no Vulkan driver could be installed (see above)");
        cargo(&["check", "-p", "xtask", "--features", "wgpu"])?;
    }
    Ok(())
}
