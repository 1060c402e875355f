//! A search run on a tiny model, as its own process, so the resume test can kill it.
//! Usage: tiny_search MODEL_DIR DATA.jsonl RUN_DIR

use std::path::PathBuf;

use cola_executor::LoadedChainModel;
use cola_executor::backend::Cpu;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model_dir, data, out] = args.as_slice() else {
        eprintln!("usage: tiny_search MODEL_DIR DATA.jsonl RUN_DIR");
        std::process::exit(2);
    };
    let model = LoadedChainModel::<Cpu>::load(model_dir, Default::default()).expect("tiny model loads");
    let req = cola_tests::tiny_search_request(data, out, model.executor.num_layers());
    if let Err(e) = cola_search::run_search(&req, &model) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
