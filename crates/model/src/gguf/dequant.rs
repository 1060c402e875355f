//! llama.cpp's q/k row order back to HF's (block formats are in [`cola_kernels::stored`]).

/// Undoes llama.cpp's reordering of q/k rows for its interleaved RoPE: within each head, GGUF row
/// `2 i + j` holds HF row `j * head_dim / 2 + i`.
pub fn unpermute_qk_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    qk_row_order(rows, heads).iter().flat_map(|&src| &data[src * cols..(src + 1) * cols]).copied().collect()
}

/// For each HF row, the GGUF row that holds it.
pub fn qk_row_order(rows: usize, heads: usize) -> Vec<usize> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    (0..rows)
        .map(|dst| {
            let (h, r) = (dst / head_dim, dst % head_dim);
            let (j, i) = (r / half, r % half);
            h * head_dim + 2 * i + j
        })
        .collect()
}
