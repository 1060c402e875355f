//! Writes the tiny random model and task the end-to-end tests use, for scripts that drive the
//! real binary (scripts/slurm/selftest.sh). Usage: tiny_fixture DIR [ITEMS]
//! Writes DIR/model (6 layers, byte-level tokenizer) and DIR/tiny.jsonl (ITEMS items, default 9).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: tiny_fixture DIR [ITEMS]");
        std::process::exit(2);
    };
    let items = match args.next().map(|a| a.to_string_lossy().parse::<usize>()) {
        None => 9,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("tiny_fixture: ITEMS must be a whole number, at least 1");
            std::process::exit(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("tiny_fixture: {}: {e}", dir.display());
        std::process::exit(1);
    }
    cola_tests::write_tiny_fixture(&dir, items);
    println!("wrote {0}/model and {0}/tiny.jsonl ({items} items)", dir.display());
}
