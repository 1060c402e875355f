//! The layout of a token tree: a prompt followed by several alternative continuations, scored
//! in one pass.

/// Where each branch of a token tree sits: its tokens follow the prompt at positions
/// `prompt_len..`, see the prompt and their own earlier tokens only. The last token of a branch
/// is never an input (nothing is predicted from it), so it is left out of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Branches {
    pub(crate) prompt_len: usize,
    /// RoPE position of each flat token.
    pub(crate) positions: Vec<usize>,
    /// Branch of each flat token (None for the prompt).
    pub(crate) branch_of: Vec<Option<usize>>,
    /// Per branch: the flat rows whose logits predict its tokens.
    pub(crate) predictors: Vec<Vec<usize>>,
    /// Per branch: the token ids predicted.
    pub(crate) targets: Vec<Vec<u32>>,
}

impl Branches {
    pub(crate) fn new(prompt_len: usize, branches: &[Vec<u32>]) -> Self {
        let mut positions: Vec<usize> = (0..prompt_len).collect();
        let mut branch_of = vec![None; prompt_len];
        let mut predictors = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            let mut rows = vec![prompt_len - 1];
            for j in 0..b.len() - 1 {
                rows.push(positions.len());
                positions.push(prompt_len + j);
                branch_of.push(Some(i));
            }
            predictors.push(rows);
        }
        Branches { prompt_len, positions, branch_of, predictors, targets: branches.to_vec() }
    }

    /// Whether flat token `q` may attend to flat token `k`.
    pub(crate) fn visible(&self, q: usize, k: usize) -> bool {
        if k > q {
            return false;
        }
        k < self.prompt_len || self.branch_of[k] == self.branch_of[q]
    }
}
