//! The engine's own cost per simulation with a free evaluation, for chains of 30 and 80 layers
//! under the `paper` preset (`cargo bench -p cola-mcts`). Target: well under 50 µs at N = 30.

use std::time::Instant;

use cola_mcts::chains::{ActionPreset, ChainProblem, ChainSpace};
use cola_mcts::{Evaluation, MctsConfig, sample_rng, search};

fn main() {
    for n in [30usize, 80] {
        for preset in [ActionPreset::Paper, ActionPreset::Polar] {
            let config = MctsConfig { simulations: 200, ..MctsConfig::new(n, n * 57 / 100, n * 115 / 100) };
            let reps = 20;
            let mut sims = 0;
            let start = Instant::now();
            for rep in 0..reps {
                // Cheap, deterministic reward: short chains that keep the first layer score 1.
                let mut problem = ChainProblem {
                    space: ChainSpace::new(n, preset),
                    evaluate: |batch: &[Vec<usize>]| {
                        let rewards = batch.iter().map(|c| Evaluation {
                            reward: if c[0] == 0 && c.len() < n { 1.0 } else { 0.0 },
                            payload: (),
                        });
                        Ok::<_, std::convert::Infallible>(rewards.collect())
                    },
                };
                let r = search(&mut problem, &config, &mut sample_rng(1, &rep.to_string())).unwrap();
                sims += r.simulations;
            }
            let per_sim = start.elapsed().as_secs_f64() / sims as f64 * 1e6;
            println!("N = {n:>2}, preset {preset:<6}: {per_sim:6.2} µs per simulation ({sims} simulations)");
        }
    }
}
