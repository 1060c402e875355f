//! The approximate, opt-in product of activation rows with 4/8-bit blocks
//! ([`Dot::Int8`](super::Dot::Int8)): each activation row is quantized per 32-value block to 8
//! bits (llama.cpp's Q8_0 for activations) and multiplied with the weights' integers by integer
//! dot products: AVX-512 VNNI (`vpdpbusd`: 64 multiply-adds an instruction) where the CPU has it,
//! else AVX2 (`vpmaddubsw` + `vpmaddwd`), chosen at run time ([`Int8Kernel`]). Integer sums are
//! exact and the scales are applied in one order, so every kernel gives the same bits.
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
        let (mut q, mut d, mut s) = (vec![0i8; m * k], vec![0.0f32; blocks], vec![0i32; blocks]);
        quantize_blocks(x, &mut q, &mut d, &mut s);
        QuantizedRows { q, d, s, k }
    }

    /// The values as quantized, `[m, k]` (`qx · dx`): what the int8 product multiplies exactly.
    pub fn dequantized(&self) -> Vec<f32> {
        self.q.iter().enumerate().map(|(i, &q)| q as f32 * self.d[i / BLOCK]).collect()
    }
}

simd_dispatch! {
    /// Per block of 32 values: scale `d = max |x| / 127`, `q = round(x / d)`, `s = Σ q` (the
    /// loops vectorize under AVX2; the same operations either way).
    fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
        for (((xs, qs), d), s) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).zip(d).zip(s) {
            // `a.max(|v|)` without `max`'s NaN rule, which keeps the loop scalar; the same
            // result (a NaN never wins either way).
            let amax = xs.iter().fold(0.0f32, |a, v| if v.abs() > a { v.abs() } else { a });
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = round_to_i8(v * inv);
                sum += *q as i32;
            }
            (*d, *s) = (scale, sum);
        }
    }
}

/// `x.round().clamp(-127.0, 127.0) as i8` (halves away from zero; NaN to 0) for |x| < 2^31,
/// without `round`, which is a call to libm's `roundf` on baseline x86-64 (it was 2.4% of a
/// lockstep step): the truncation is an integer conversion and `x - t` is exact.
#[inline(always)]
fn round_to_i8(x: f32) -> i8 {
    let t = x as i32;
    let r = x - t as f32;
    (t + (r >= 0.5) as i32 - (r <= -0.5) as i32).clamp(-127, 127) as i8
}

/// Which int8 tile kernel runs: all three compute the same integer sums and apply the scales
/// in the same order, so they give the same bits (tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX-512 VNNI (`vpdpbusd`, 64 multiply-adds an instruction), VBMI for the byte transpose.
    Vnni,
    /// AVX2 (`vpmaddubsw` then `vpmaddwd`, 32 multiply-adds in two instructions).
    Avx2,
    /// Plain loops: many times slower than the exact kernels, for tests and other CPUs.
    Portable,
}

impl Int8Kernel {
    /// The fastest vector kernel this CPU runs, if any.
    pub fn detect() -> Option<Int8Kernel> {
        if vnni_available() {
            Some(Int8Kernel::Vnni)
        } else if avx2_available() {
            Some(Int8Kernel::Avx2)
        } else {
            None
        }
    }

    /// Every kernel this CPU runs.
    pub fn available() -> Vec<Int8Kernel> {
        let mut all = vec![Int8Kernel::Portable];
        all.extend(avx2_available().then_some(Int8Kernel::Avx2));
        all.extend(vnni_available().then_some(Int8Kernel::Vnni));
        all
    }
}

/// Whether this CPU runs the VNNI kernel.
fn vnni_available() -> bool {
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

/// Whether this CPU runs the AVX2 kernel (the exact kernels' AVX2 detection).
fn avx2_available() -> bool {
    super::kernels::Isa::detect() != super::kernels::Isa::Portable
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

/// `sums[i][r] += x_{first + i} · (row r of the tile group)` by the int8 product, for one group
/// of 16 stored rows of a block format (its tiles back to back) and the `sums.len()` activation
/// rows from `first`, by `kernel` (one of [`Int8Kernel::available`]). Each row's sums take the
/// same operations whatever rows share the call.
pub fn tile_rows(
    kernel: Int8Kernel, format: WeightFormat, group: &[u8], x: &QuantizedRows, first: usize,
    sums: &mut [[f32; TILE_ROWS]],
) {
    assert!(matches!(format, WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0));
    assert!(group.len() == x.k / BLOCK * tile_bytes(format), "the tile group is not k / 32 tiles");
    assert!((first + sums.len()) * x.k <= x.q.len(), "activation rows past the quantized ones");
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Vnni => {
            assert!(vnni_available(), "the VNNI kernel on a CPU without it");
            // SAFETY: the features `vnni::tile_rows` is compiled for were detected just above.
            unsafe { vnni::tile_rows(format, group, x, first, sums) }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => {
            assert!(avx2_available(), "the AVX2 kernel on a CPU without it");
            // SAFETY: the features `avx2::tile_rows` is compiled for were detected just above.
            unsafe { avx2::tile_rows(format, group, x, first, sums) }
        }
        _ => portable_tile_rows(format, group, x, first, sums),
    }
}

/// The portable int8 tile kernel: integer sums per (activation row, stored row, block).
fn portable_tile_rows(
    format: WeightFormat, group: &[u8], x: &QuantizedRows, first: usize, sums: &mut [[f32; TILE_ROWS]],
) {
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
        for (a, total) in (first..).zip(sums.iter_mut()) {
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
    pub unsafe fn tile_rows(
        format: WeightFormat, group: &[u8], x: &QuantizedRows, first: usize, sums: &mut [[f32; TILE_ROWS]],
    ) {
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
                for (a, total) in (first..).zip(sums.iter_mut()) {
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, QuantizedRows, TILE_ROWS, WeightFormat, tile_bytes, tile_quants};

    /// `[(t0 t1) of rows 0..8 | (t2 t3) of rows 0..8]` (16-bit pairs) -> 8 lanes of 4 bytes,
    /// lane r holding row r's `t0 t1 t2 t3`.
    macro_rules! quads {
        ($x:expr) => {{
            let x: __m256i = $x;
            let swapped = _mm256_permute2x128_si256::<0x01>(x, x);
            let (u, v) = (_mm256_unpacklo_epi16(x, swapped), _mm256_unpackhi_epi16(x, swapped));
            _mm256_permute2x128_si256::<0x20>(u, v)
        }};
    }

    /// 4 values x 16 rows (`[value t][row r]`, 64 bytes at `$p`) as lanes of 4 values per row:
    /// rows 0..8 in the first register, 8..16 in the second.
    macro_rules! transpose_4x16 {
        ($p:expr) => {{
            let p: *const u8 = $p;
            let (a, b) = (_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast()));
            let (t02, t13) = (_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b));
            [quads!(_mm256_unpacklo_epi8(t02, t13)), quads!(_mm256_unpackhi_epi8(t02, t13))]
        }};
    }

    /// See [`super::tile_rows`]: the VNNI kernel's integer sums by `vpmaddubsw` (unsigned
    /// weights times signed activations, pairs summed to 16 bits) and `vpmaddwd` (to 32 bits).
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn tile_rows(
        format: WeightFormat, group: &[u8], x: &QuantizedRows, first: usize, sums: &mut [[f32; TILE_ROWS]],
    ) {
        let (k, blocks) = (x.k, x.k / BLOCK);
        // SAFETY (whole body): every load reads inside `group` (whole tiles: `tile_bytes`
        // each, headers then `16 * quant bytes`) or inside `x.q` (row a, block b: 32 bytes);
        // unaligned loads and stores are used throughout.
        unsafe {
            let nib = _mm256_set1_epi8(0x0f);
            let ones = _mm256_set1_epi16(1);
            for (b, tile) in group.chunks_exact(tile_bytes(format)).enumerate() {
                // Plain code, no closures: a closure would not inherit the target features.
                let head = tile.as_ptr();
                let d = [
                    _mm256_cvtph_ps(_mm_loadu_si128(head.cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(head.add(16).cast())),
                ];
                let o = match format {
                    WeightFormat::Q4_0 => {
                        [_mm256_mul_ps(d[0], _mm256_set1_ps(-8.0)), _mm256_mul_ps(d[1], _mm256_set1_ps(-8.0))]
                    }
                    WeightFormat::Q4_1 => [
                        _mm256_cvtph_ps(_mm_loadu_si128(head.add(32).cast())),
                        _mm256_cvtph_ps(_mm_loadu_si128(head.add(48).cast())),
                    ],
                    _ => [_mm256_setzero_ps(); 2],
                };
                let quants = head.add(tile_quants(format));
                // w[j][h]: lanes of 4 consecutive values of rows 8h..8h + 8, for value groups j
                // (as the VNNI kernel's w[j]).
                let mut w = [[_mm256_setzero_si256(); 2]; 8];
                // Q8_0: the weights' signs (their magnitudes go in w).
                let mut signs = [[_mm256_setzero_si256(); 2]; 8];
                match format {
                    WeightFormat::Q8_0 => {
                        for (j, (wj, sj)) in w.iter_mut().zip(&mut signs).enumerate() {
                            *sj = transpose_4x16!(quants.add(64 * j));
                            *wj = [_mm256_sign_epi8(sj[0], sj[0]), _mm256_sign_epi8(sj[1], sj[1])];
                        }
                    }
                    _ => {
                        for j in 0..4 {
                            let v = transpose_4x16!(quants.add(64 * j));
                            for h in 0..2 {
                                w[j][h] = _mm256_and_si256(v[h], nib);
                                w[j + 4][h] = _mm256_and_si256(_mm256_srli_epi16::<4>(v[h]), nib);
                            }
                        }
                    }
                }
                for (a, total) in (first..).zip(sums.iter_mut()) {
                    let qx = x.q.as_ptr().add(a * k + b * BLOCK) as *const i32;
                    let mut acc = [_mm256_setzero_si256(); 2];
                    if format == WeightFormat::Q8_0 {
                        // Signed weights: |qw| times qx with qw's sign, each pair within 16 bits
                        // (2 · 128 · 127), widened at once.
                        for (j, (wj, sj)) in w.iter().zip(&signs).enumerate() {
                            let xb = _mm256_set1_epi32(qx.add(j).read_unaligned());
                            for h in 0..2 {
                                let p = _mm256_maddubs_epi16(wj[h], _mm256_sign_epi8(xb, sj[h]));
                                acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(p, ones));
                            }
                        }
                    } else {
                        // 4-bit: 16 products of at most 15 · 127 per 16-bit lane stay within it.
                        let mut pairs = [_mm256_setzero_si256(); 2];
                        for (j, wj) in w.iter().enumerate() {
                            let xb = _mm256_set1_epi32(qx.add(j).read_unaligned());
                            for h in 0..2 {
                                pairs[h] = _mm256_add_epi16(pairs[h], _mm256_maddubs_epi16(wj[h], xb));
                            }
                        }
                        acc = [_mm256_madd_epi16(pairs[0], ones), _mm256_madd_epi16(pairs[1], ones)];
                    }
                    let (dx, sx) = (x.d[a * blocks + b], x.s[a * blocks + b]);
                    for h in 0..2 {
                        let t = _mm256_loadu_ps(total.as_ptr().add(8 * h));
                        let t = _mm256_add_ps(
                            t,
                            _mm256_add_ps(
                                _mm256_mul_ps(_mm256_cvtepi32_ps(acc[h]), _mm256_mul_ps(d[h], _mm256_set1_ps(dx))),
                                _mm256_mul_ps(o[h], _mm256_set1_ps(dx * sx as f32)),
                            ),
                        );
                        _mm256_storeu_ps(total.as_mut_ptr().add(8 * h), t);
                    }
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

    /// The rounding of the activations is `round` (halves away from zero) clamped to ±127, at
    /// halves, next to them, past the range and for NaN.
    #[test]
    fn activations_round_like_round() {
        let mut xs = vec![0.0f32, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 126.5, -126.5, 127.4, 131.0, -1e9, f32::NAN];
        for x in [0.5f32, 1.5, 63.5, 126.5] {
            xs.extend([x.next_down(), x.next_up(), -x.next_down(), -x.next_up()]);
        }
        xs.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.1271));
        for x in xs {
            assert_eq!(round_to_i8(x), x.round().clamp(-127.0, 127.0) as i8, "{x}");
        }
        // Whole rows (compiled for this CPU's instructions) against the definition.
        let (m, k) = (3, 96);
        let mut x = values(m * k, 5);
        x[40] = 0.0;
        x[64..96].fill(0.0);
        let rows = QuantizedRows::new(&x, m, k);
        for (b, xs) in x.chunks_exact(BLOCK).enumerate() {
            let scale = xs.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let q: Vec<i8> = xs.iter().map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8).collect();
            assert_eq!(rows.d[b].to_bits(), scale.to_bits(), "block {b}");
            assert_eq!(&rows.q[b * BLOCK..(b + 1) * BLOCK], &q[..], "block {b}");
            assert_eq!(rows.s[b], q.iter().map(|&v| v as i32).sum::<i32>(), "block {b}");
        }
    }

    /// The int8 product equals an f64 loop over the quantized activations times the dequantized
    /// weights (the integer sums are exact, so only float rounding differs), on every kernel
    /// (the same bits on each), every block format and partial last tiles; and stays within the quantization error of the
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
            for kernel in Int8Kernel::available() {
                for g in 0..n.div_ceil(TILE_ROWS) {
                    let mut sums = vec![[0.0f32; TILE_ROWS]; m];
                    tile_rows(kernel, format, w.tile_group(g), &xq, 0, &mut sums);
                    let mut portable = vec![[0.0f32; TILE_ROWS]; m];
                    tile_rows(Int8Kernel::Portable, format, w.tile_group(g), &xq, 0, &mut portable);
                    assert_eq!(sums, portable, "{format} {kernel:?}: not the portable kernel's bits");
                    // Rows 2 and 3 alone (from `first`): the same bits as among all.
                    let mut two = vec![[0.0f32; TILE_ROWS]; 2];
                    tile_rows(kernel, format, w.tile_group(g), &xq, 2, &mut two);
                    assert_eq!(two, sums[2..4], "{format} {kernel:?}: rows from first = 2");
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
                                "{format} {kernel:?}: {got} vs {want}"
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
