//! ShortGPT's Block Influence (Men et al., 2024): how much a layer changes the hidden states it
//! is given, `BI_l = 1 − mean over positions of cos(x_l, x_{l+1})` along the original model. Layers
//! with the lowest influence are the ones a static pruning baseline drops.

use cola_model::LayerOps;

use crate::{Chain, ExecError, Executor, to_vec};

impl<B: LayerOps> Executor<B> {
    /// The Block Influence of every layer on one prompt, running the original model.
    pub fn block_influence(&self, ids: &[u32]) -> Result<Vec<f64>, ExecError> {
        let width = self.config().hidden_size;
        let mut state = self.start(ids)?;
        let mut before = to_vec(state.hidden.clone());
        let mut influence = Vec::with_capacity(self.num_layers());
        for layer in 0..self.num_layers() {
            state = self.advance(&state, &[layer])?;
            let after = to_vec(state.hidden.clone());
            let rows = before.len() / width;
            let mean_cos =
                before.chunks_exact(width).zip(after.chunks_exact(width)).map(|(x, y)| cosine(x, y)).sum::<f64>()
                    / rows as f64;
            influence.push(1.0 - mean_cos);
            before = after;
        }
        Ok(influence)
    }
}

fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64, b as f64);
        xy += a * b;
        xx += a * a;
        yy += b * b;
    }
    if xx == 0.0 || yy == 0.0 { if xx == yy { 1.0 } else { 0.0 } } else { xy / (xx.sqrt() * yy.sqrt()) }
}

/// Layer indices from the least to the most influential (ties: the later layer first, so it is
/// pruned first).
pub fn least_influential_first(influence: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..influence.len()).collect();
    order.sort_by(|&a, &b| influence[a].total_cmp(&influence[b]).then(b.cmp(&a)));
    order
}

/// The original chain without the `drop` layers of lowest influence
/// ([`least_influential_first`]), layers kept in order.
pub fn prune_by_influence(influence: &[f64], drop: usize) -> Chain {
    let order = least_influential_first(influence);
    let dropped = &order[..drop.min(influence.len().saturating_sub(1))];
    Chain::new((0..influence.len()).filter(|l| !dropped.contains(l)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_drops_the_least_influential_layers_and_keeps_order() {
        let bi = [0.5, 0.1, 0.3, 0.05, 0.1];
        assert_eq!(prune_by_influence(&bi, 0).layers(), &[0, 1, 2, 3, 4]);
        assert_eq!(prune_by_influence(&bi, 1).layers(), &[0, 1, 2, 4]);
        // Tie between layers 1 and 4: the later one goes first.
        assert_eq!(prune_by_influence(&bi, 2).layers(), &[0, 1, 2]);
        // Never the whole model.
        assert_eq!(prune_by_influence(&bi, 9).layers(), &[0]);
    }

    #[test]
    fn cosine_is_one_for_parallel_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
    }
}
