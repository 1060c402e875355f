//! `cargo xtask test`: what CI runs. Fetches the assets the tests compare against, then runs the
//! workspace tests.

use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Extra arguments passed to `cargo test` (after `--workspace`), e.g. a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: TestArgs) -> Result<()> {
    let assets = cola_assets::ensure()?;
    eprintln!("assets ready in {}", assets.cache.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).args(["test", "--workspace"]).args(&args.cargo_args).status()?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}
