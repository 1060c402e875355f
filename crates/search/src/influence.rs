//! The static pruning baseline's calibration: ShortGPT's Block Influence of each layer, averaged
//! over the prompts of selected items (see `cola_executor::Executor::block_influence`).

use cola_executor::LoadedChainModel;
use cola_model::LayerOps;

use crate::SearchError;
use crate::runs::{TaskItems, progress};

/// Mean Block Influence of each layer over the items of `tasks` (each item's question or
/// problem, tokenized without a template), with a progress bar.
pub fn mean_block_influence<B: LayerOps>(
    model: &LoadedChainModel<B>, tasks: &[TaskItems],
) -> Result<Vec<f64>, SearchError> {
    let mut sum = vec![0.0f64; model.executor.num_layers()];
    let mut n = 0usize;
    for t in tasks {
        t.print_skipped();
        let pb = progress(t.items.len(), 0, t.name.clone());
        for item in &t.items {
            let fail = |e: cola_executor::ExecError| SearchError::Item {
                task: t.name.clone(),
                doc_id: item.doc_id.clone(),
                error: cola_eval::EvalError::Backend(Box::new(e)),
            };
            let ids = model.prompt_ids(item.text(), false).map_err(fail)?;
            let bi = model.executor.block_influence(&ids).map_err(fail)?;
            for (s, b) in sum.iter_mut().zip(bi) {
                *s += b;
            }
            n += 1;
            pb.inc(1);
        }
        pb.finish();
    }
    if n == 0 {
        return Err(SearchError::Data(cola_eval::EvalError::Invalid("no items to calibrate on".into())));
    }
    Ok(sum.into_iter().map(|s| s / n as f64).collect())
}
