//! The approximate, opt-in product of few activation rows with 4/8-bit blocks
//! ([`Dot::Int8`](super::Dot::Int8)): each activation row is quantized per 32-value block to 8
//! bits (llama.cpp's Q8_0 for activations) and multiplied with the weights' integers by integer
//! dot products, AVX-512 VNNI (`vpdpbusd`: 64 multiply-adds an instruction) where the CPU has it.
//!
//! Per block `b` of activation row `a`: `dx = max|x| / 127`, `qx = round(x / dx)` (`|qx| <= 127`),
//! `sx = Σ qx`. With a weight block's integers `qw` (0..15 for 4-bit, -128..127 for Q8_0), scale
//! `dw` and offset `ow` (`m` for Q4_1, `-8 dw` for Q4_0, 0 for Q8_0), the block adds
//! `(Σ qw·qx) · dw·dx + ow · dx·sx`. The integer sums are exact; what differs from the exact
//! product is the rounding of `x` to 8 bits (at most half a step, `dx / 2`, per value).

use super::{TILE_ROWS, WeightFormat, tile_bytes, tile_quants};

/// Values per quantized activation block (and per weight block).
const BLOCK: usize = 32;

/// Activation rows quantized per 32-value block.
pub struct QuantizedRows {
    /// `[m, k]` values in -127..=127.
    q: Vec<i8>,
    /// `[m, k / 32]` block scales `dx`.
    d: Vec<f32>,
    /// `[m, k / 32]` block sums `Σ qx`.
    s: Vec<i32>,
    k: usize,
}

impl QuantizedRows {
    /// Quantizes `x` (`[m, k]`, `k` a multiple of 32).
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(BLOCK) && x.len() == m * k, "x is not [m, k] with k a multiple of 32");
        let blocks = m * k / BLOCK;
        let (mut q, mut d, mut s) = (vec![0i8; m * k], Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        for (xs, qs) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)) {
            let amax = xs.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                sum += *q as i32;
            }
            d.push(scale);
            s.push(sum);
        }
        QuantizedRows { q, d, s, k }
    }

    /// The values as quantized, `[m, k]` (`qx · dx`): what the int8 product multiplies exactly.
    pub fn dequantized(&self) -> Vec<f32> {
        self.q.iter().enumerate().map(|(i, &q)| q as f32 * self.d[i / BLOCK]).collect()
    }
}

/// Whether this CPU runs the VNNI kernel (else the portable one computes the same sums).
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vbmi")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The 16 rows' scales and offsets of one tile.
fn scales(format: WeightFormat, tile: &[u8]) -> ([f32; TILE_ROWS], [f32; TILE_ROWS]) {
    let d: [f32; TILE_ROWS] = std::array::from_fn(|r| f16(&tile[2 * r..]));
    let o: [f32; TILE_ROWS] = std::array::from_fn(|r| match format {
        WeightFormat::Q4_0 => -8.0 * d[r],
        WeightFormat::Q4_1 => f16(&tile[2 * TILE_ROWS + 2 * r..]),
        _ => 0.0,
    });
    (d, o)
}

/// `sums[a][r] += x_a · (row r of the tile group)` by the int8 product, for one group of 16
/// stored rows of a block format (its tiles back to back) and `sums.len()` activation rows;
/// `vnni` picks the vector kernel (only where [`vnni_available`]).
pub fn tile_rows(vnni: bool, format: WeightFormat, group: &[u8], x: &QuantizedRows, sums: &mut [[f32; TILE_ROWS]]) {
    assert!(matches!(format, WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0));
    #[cfg(target_arch = "x86_64")]
    if vnni {
        assert!(vnni_available(), "the VNNI kernel on a CPU without it");
        // SAFETY: the features `vnni::tile_rows` is compiled for were detected just above.
        unsafe { vnni::tile_rows(format, group, x, sums) };
        return;
    }
    let _ = vnni;
    portable_tile_rows(format, group, x, sums)
}

/// The portable int8 tile kernel: integer sums per (activation row, stored row, block).
fn portable_tile_rows(format: WeightFormat, group: &[u8], x: &QuantizedRows, sums: &mut [[f32; TILE_ROWS]]) {
    let (k, blocks) = (x.k, x.k / BLOCK);
    for (b, tile) in group.chunks_exact(tile_bytes(format)).enumerate() {
        let (d, o) = scales(format, tile);
        let quants = &tile[tile_quants(format)..];
        // qw[l][r]: value l of row r's block, as the integer the product uses.
        let qw: [[i32; TILE_ROWS]; BLOCK] = std::array::from_fn(|l| {
            std::array::from_fn(|r| match format {
                WeightFormat::Q8_0 => quants[TILE_ROWS * l + r] as i8 as i32,
                _ if l < 16 => (quants[TILE_ROWS * l + r] & 0x0f) as i32,
                _ => (quants[TILE_ROWS * (l - 16) + r] >> 4) as i32,
            })
        });
        for (a, total) in sums.iter_mut().enumerate() {
            let qx = &x.q[a * k + b * BLOCK..][..BLOCK];
            let (dx, sx) = (x.d[a * blocks + b], x.s[a * blocks + b]);
            for r in 0..TILE_ROWS {
                let dot: i32 = (0..BLOCK).map(|l| qw[l][r] * qx[l] as i32).sum();
                total[r] += dot as f32 * (d[r] * dx) + o[r] * (dx * sx as f32);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{BLOCK, QuantizedRows, TILE_ROWS, WeightFormat, tile_bytes, tile_quants};

    /// `vpermb` indices that turn 4 quant bytes × 16 rows (`[byte t][row r]`) into 16 lanes of
    /// 4 bytes (`[row r][byte t]`): destination byte `4r + t` takes source byte `16t + r`.
    fn transpose_indices() -> [u8; 64] {
        std::array::from_fn(|i| (16 * (i % 4) + i / 4) as u8)
    }

    /// See [`super::tile_rows`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VNNI and VBMI and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,f16c")]
    pub unsafe fn tile_rows(format: WeightFormat, group: &[u8], x: &QuantizedRows, sums: &mut [[f32; TILE_ROWS]]) {
        let (k, blocks) = (x.k, x.k / BLOCK);
        let idx = transpose_indices();
        // SAFETY (whole body): every load reads inside `group` (whole tiles: `tile_bytes`
        // each, headers then `16 * quant bytes`) or inside `x.q` (row a, block b: 32 bytes);
        // unaligned loads and stores are used throughout.
        unsafe {
            let perm = _mm512_loadu_si512(idx.as_ptr() as *const _);
            let nib = _mm512_set1_epi8(0x0f);
            let flip = _mm512_set1_epi8(-128);
            for (b, tile) in group.chunks_exact(tile_bytes(format)).enumerate() {
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(tile.as_ptr() as *const _));
                let o = match format {
                    WeightFormat::Q4_0 => _mm512_mul_ps(d, _mm512_set1_ps(-8.0)),
                    WeightFormat::Q4_1 => {
                        _mm512_cvtph_ps(_mm256_loadu_si256(tile.as_ptr().add(2 * TILE_ROWS) as *const _))
                    }
                    _ => _mm512_setzero_ps(),
                };
                let quants = tile.as_ptr().add(tile_quants(format));
                // w[j]: lanes of 4 consecutive values of each row, for value groups j.
                let mut w = [_mm512_setzero_si512(); 8];
                match format {
                    WeightFormat::Q8_0 => {
                        for (j, wj) in w.iter_mut().enumerate() {
                            let v = _mm512_loadu_si512(quants.add(64 * j) as *const _);
                            // Signed to unsigned: qw + 128; the 128 · Σ qx is taken off below.
                            *wj = _mm512_xor_si512(_mm512_permutexvar_epi8(perm, v), flip);
                        }
                    }
                    _ => {
                        for j in 0..4 {
                            let v = _mm512_permutexvar_epi8(perm, _mm512_loadu_si512(quants.add(64 * j) as *const _));
                            w[j] = _mm512_and_si512(v, nib);
                            w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
                        }
                    }
                }
                for (a, total) in sums.iter_mut().enumerate() {
                    let qx = x.q.as_ptr().add(a * k + b * BLOCK) as *const i32;
                    let mut acc = _mm512_setzero_si512();
                    for (j, wj) in w.iter().enumerate() {
                        // Q8_0: values 4j..4j+4; 4-bit: low nibbles 4j.. (j < 4), high 16 + 4(j - 4)..
                        acc = _mm512_dpbusd_epi32(acc, *wj, _mm512_set1_epi32(qx.add(j).read_unaligned()));
                    }
                    let (dx, sx) = (x.d[a * blocks + b], x.s[a * blocks + b]);
                    if format == WeightFormat::Q8_0 {
                        acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(128 * sx));
                    }
                    let t = _mm512_loadu_ps(total.as_ptr());
                    let t = _mm512_add_ps(
                        t,
                        _mm512_add_ps(
                            _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(d, _mm512_set1_ps(dx))),
                            _mm512_mul_ps(o, _mm512_set1_ps(dx * sx as f32)),
                        ),
                    );
                    _mm512_storeu_ps(total.as_mut_ptr(), t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::{StoredMatrix, quantize};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) / 37.0).collect()
    }

    /// The int8 product equals an f64 loop over the quantized activations times the dequantized
    /// weights (the integer sums are exact, so only float rounding differs), on both kernels,
    /// every block format and partial last tiles; and stays within the quantization error of the
    /// exact product.
    #[test]
    #[allow(clippy::needless_range_loop)] // r also names the stored row
    fn int8_products_are_the_quantized_products() {
        let (n, k, m) = (40, 96, 5);
        let x = values(m * k, 3);
        let xq = QuantizedRows::new(&x, m, k);
        let xd = xq.dequantized();
        for format in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0] {
            let w = StoredMatrix::owned(format, n, k, quantize(format, &values(n * k, 5))).unwrap();
            let wf = w.to_f32();
            let kernels: Vec<bool> = if vnni_available() { vec![false, true] } else { vec![false] };
            for vnni in kernels {
                for g in 0..n.div_ceil(TILE_ROWS) {
                    let mut sums = vec![[0.0f32; TILE_ROWS]; m];
                    tile_rows(vnni, format, w.tile_group(g), &xq, &mut sums);
                    for a in 0..m {
                        for r in 0..TILE_ROWS.min(n - g * TILE_ROWS) {
                            let row = g * TILE_ROWS + r;
                            let dot = |xs: &[f32]| -> f64 {
                                (0..k).map(|l| xs[a * k + l] as f64 * wf[row * k + l] as f64).sum()
                            };
                            let (want, exact) = (dot(&xd), dot(&x));
                            let got = sums[a][r] as f64;
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{format} vnni {vnni}: {got} vs {want}"
                            );
                            // Rounding x to 8 bits moves each value by at most dx / 2.
                            let bound: f64 = (0..k)
                                .map(|l| xq.d[(a * k + l) / BLOCK] as f64 / 2.0 * (wf[row * k + l] as f64).abs())
                                .sum();
                            assert!((got - exact).abs() <= bound + 1e-4, "{format}: {got} vs exact {exact}");
                        }
                    }
                }
            }
        }
    }
}
