//! `y = x · Wᵀ` for f32 activations `x` (`[m, k]`) and a [`StoredMatrix`] `W` (`[n, k]`).
//!
//! - Few rows (`m <= FEW_ROWS`: decoding one chain, or a lockstep batch) are bound by reading
//!   the weights: each stored row is read once, dequantized 32 values at a time into registers,
//!   and multiplied with every activation row ([`dot_rows`]). AVX2+FMA(+F16C) when the CPU has
//!   them, a portable loop otherwise (both tested against an f64 loop).
//! - Many rows (prefill) are bound by arithmetic: chunks of stored rows are dequantized into a
//!   small f32 buffer and multiplied with gemm, so the weights are never expanded whole.
//!
//! Stored rows are split across threads; each writes its own output columns.

use rayon::prelude::*;

use super::{StoredMatrix, WeightFormat, dequantize_into};

/// Up to this many activation rows use the streaming dot-product kernel; more use gemm.
pub const FEW_ROWS: usize = 16;

/// Stored rows per dequantized gemm chunk.
const ROWS_PER_CHUNK: usize = 64;

/// Which instruction set the streaming kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 AVX2, FMA and F16C.
    Avx2,
    /// x86-64 AVX-512 F, BW and VL, with AVX2's.
    Avx512,
}

impl Isa {
    /// The best this CPU runs (detected at run time).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c");
            let avx512 = std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl");
            if avx2 && avx512 {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run (tests run each).
    pub fn available() -> Vec<Isa> {
        match Isa::detect() {
            Isa::Portable => vec![Isa::Portable],
            Isa::Avx2 => vec![Isa::Portable, Isa::Avx2],
            Isa::Avx512 => vec![Isa::Portable, Isa::Avx2, Isa::Avx512],
        }
    }
}

/// A raw output pointer shared by parallel workers that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each worker writes only the output columns of its own stored rows.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `x · [W_0; W_1; ...]ᵀ`: `out` is `[m, Σ n_p]` row-major, part `p` filling its own columns
/// (`out[i, c_p + j] = Σ_l x[i, l] · W_p[j, l]`), with the best kernels this CPU has. One
/// parallel region for all parts (each wake-up of the thread pool costs, at 7 products a layer).
pub fn matmul(x: &[f32], m: usize, parts: &[StoredMatrix], out: &mut [f32]) {
    matmul_with(Isa::detect(), x, m, parts, out)
}

/// [`matmul`] with the streaming kernel's instruction set chosen by the caller.
pub fn matmul_with(isa: Isa, x: &[f32], m: usize, parts: &[StoredMatrix], out: &mut [f32]) {
    let n: usize = parts.iter().map(StoredMatrix::rows).sum();
    let Some(k) = parts.first().map(StoredMatrix::cols) else { return };
    assert!(parts.iter().all(|p| p.cols() == k), "parts differ in row length");
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    let few = m <= FEW_ROWS;
    // Streaming: about two tasks per thread (so a slow thread can be helped); gemm: fixed chunks
    // of dequantized rows.
    let per_task = if few { n.div_ceil(2 * rayon::current_num_threads()).max(16) } else { ROWS_PER_CHUNK };
    let mut tasks = Vec::new();
    let mut col = 0;
    for (p, w) in parts.iter().enumerate() {
        for j0 in (0..w.rows()).step_by(per_task) {
            tasks.push((p, col, j0, (j0 + per_task).min(w.rows())));
        }
        col += w.rows();
    }
    let shared = SharedOut(out.as_mut_ptr());
    let work = |&(p, col, j0, j1): &(usize, usize, usize, usize)| {
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let w = &parts[p];
        if few {
            let rb = w.row_bytes();
            let bytes = w.bytes();
            let mut sums = [0.0f32; FEW_ROWS];
            for j in j0..j1 {
                dot_rows(isa, w.format(), &bytes[j * rb..(j + 1) * rb], x, m, k, &mut sums[..m]);
                for (i, &s) in sums[..m].iter().enumerate() {
                    // SAFETY: column col + j belongs to this task alone, and lies in row i of out.
                    unsafe { *shared.0.add(i * n + col + j) = s };
                }
            }
            return;
        }
        let mut buf = vec![0.0f32; (j1 - j0) * k];
        w.dequantize_rows(j0, j1, &mut buf);
        // SAFETY: lhs x is [m, k] row-major, rhs is buf read as [k, j1 - j0] (column stride k),
        // dst is columns col + j0..col + j1 of out (row stride n), written by this task alone.
        unsafe {
            gemm::gemm(
                m,
                j1 - j0,
                k,
                shared.0.add(col + j0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                buf.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    if few && m * n * k < 1 << 15 { tasks.iter().for_each(work) } else { tasks.par_iter().for_each(work) }
}

/// `sums[i] = x[i, :] · row` for one stored row and `sums.len()` activation rows.
fn dot_rows(isa: Isa, format: WeightFormat, row: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced after detecting avx2, fma and f16c.
        Isa::Avx2 => unsafe { avx2::dot_rows(format, row, x, m, k, sums) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only produced after detecting its features and Avx2's.
        Isa::Avx512 => unsafe { avx512::dot_rows(format, row, x, m, k, sums) },
        _ => portable_dot_rows(format, row, x, m, k, sums),
    }
}

/// Values per register-sized group the kernels dequantize at once.
const GROUP: usize = 32;

/// The portable kernel: dequantize 32 values, then 8-lane sums per activation row.
fn portable_dot_rows(format: WeightFormat, row: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [f32]) {
    let (per_block, block_bytes) = format.block();
    let group_bytes = GROUP / per_block * block_bytes;
    let mut lanes = [[0.0f32; 8]; FEW_ROWS];
    let mut w = [0.0f32; GROUP];
    let whole = k / GROUP;
    for g in 0..whole {
        dequantize_into(format, &row[g * group_bytes..(g + 1) * group_bytes], &mut w);
        for (i, acc) in lanes[..m].iter_mut().enumerate() {
            let xs = &x[i * k + g * GROUP..i * k + (g + 1) * GROUP];
            for (xc, wc) in xs.chunks_exact(8).zip(w.chunks_exact(8)) {
                for l in 0..8 {
                    acc[l] += xc[l] * wc[l];
                }
            }
        }
    }
    for (s, acc) in sums.iter_mut().zip(&lanes) {
        *s = acc.iter().sum();
    }
    add_tail(format, &row[whole * group_bytes..], x, k, whole * GROUP, sums);
}

/// `$rows!(F)` with `F` the constant format: one loop per format, so the format's branch is
/// decided once per stored row, not once per group.
#[cfg(target_arch = "x86_64")]
macro_rules! for_format {
    ($format:expr, $rows:ident) => {
        match $format {
            WeightFormat::F32 => $rows!(WeightFormat::F32),
            WeightFormat::F16 => $rows!(WeightFormat::F16),
            WeightFormat::BF16 => $rows!(WeightFormat::BF16),
            WeightFormat::Q4_0 => $rows!(WeightFormat::Q4_0),
            WeightFormat::Q4_1 => $rows!(WeightFormat::Q4_1),
            WeightFormat::Q8_0 => $rows!(WeightFormat::Q8_0),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GROUP, WeightFormat};

    // Macros, not functions: a `#[target_feature]` function cannot be `#[inline(always)]`, and
    // one that is not inlined returns its four registers through memory (measured: 3x slower).

    /// An f16 scale at `p`, broadcast.
    macro_rules! f16x8 {
        ($p:expr) => {
            _mm256_cvtph_ps(_mm_set1_epi16($p.cast::<i16>().read_unaligned()))
        };
    }

    /// The f16 pair `d, m` at `p`, each broadcast (one load and one conversion for both).
    macro_rules! f16_pair_x8 {
        ($p:expr) => {{
            let dm = _mm256_cvtph_ps(_mm_set1_epi32($p.cast::<i32>().read_unaligned()));
            (_mm256_moveldup_ps(dm), _mm256_movehdup_ps(dm))
        }};
    }

    /// 16 bytes of nibbles: values 0..8, 8..16 (low nibbles), 16..24, 24..32 (high nibbles).
    macro_rules! nibbles {
        ($qs:expr) => {{
            let qs = $qs;
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(qs, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), mask);
            [
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(lo))),
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(hi))),
            ]
        }};
    }

    macro_rules! bf16x8 {
        ($p:expr) => {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128($p.cast()))))
        };
    }

    macro_rules! i8x8 {
        ($p:expr) => {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64($p.cast())))
        };
    }

    /// 32 values of `$format` at `$p` (one block, or 32 float values) as 4 x 8 lanes.
    macro_rules! load32 {
        ($format:expr, $p:expr) => {{
            let p: *const u8 = $p;
            match $format {
                WeightFormat::F32 => {
                    let f = p.cast::<f32>();
                    [
                        _mm256_loadu_ps(f),
                        _mm256_loadu_ps(f.add(8)),
                        _mm256_loadu_ps(f.add(16)),
                        _mm256_loadu_ps(f.add(24)),
                    ]
                }
                WeightFormat::F16 => [
                    _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(32).cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(48).cast())),
                ],
                WeightFormat::BF16 => [bf16x8!(p), bf16x8!(p.add(16)), bf16x8!(p.add(32)), bf16x8!(p.add(48))],
                WeightFormat::Q8_0 => {
                    let d = f16x8!(p);
                    [
                        _mm256_mul_ps(i8x8!(p.add(2)), d),
                        _mm256_mul_ps(i8x8!(p.add(10)), d),
                        _mm256_mul_ps(i8x8!(p.add(18)), d),
                        _mm256_mul_ps(i8x8!(p.add(26)), d),
                    ]
                }
                WeightFormat::Q4_0 => {
                    let d = f16x8!(p);
                    let eight = _mm256_set1_ps(8.0);
                    let [a, b, c, e] = nibbles!(_mm_loadu_si128(p.add(2).cast()));
                    [
                        _mm256_mul_ps(_mm256_sub_ps(a, eight), d),
                        _mm256_mul_ps(_mm256_sub_ps(b, eight), d),
                        _mm256_mul_ps(_mm256_sub_ps(c, eight), d),
                        _mm256_mul_ps(_mm256_sub_ps(e, eight), d),
                    ]
                }
                WeightFormat::Q4_1 => {
                    let (d, m) = f16_pair_x8!(p);
                    // d * q is exact, so the fused multiply-add rounds as `d * q + m` does.
                    let [a, b, c, e] = nibbles!(_mm_loadu_si128(p.add(4).cast()));
                    [
                        _mm256_fmadd_ps(a, d, m),
                        _mm256_fmadd_ps(b, d, m),
                        _mm256_fmadd_ps(c, d, m),
                        _mm256_fmadd_ps(e, d, m),
                    ]
                }
            }
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// Rows `i0..i0 + R` of x against one stored row: 4 accumulators per activation row.
    macro_rules! rows_group {
        ($R:literal, $format:expr, $row:expr, $group_bytes:expr, $groups:expr, $x:expr, $k:expr) => {{
            const R: usize = $R;
            let (format, row, group_bytes, groups, x, k) = ($format, $row, $group_bytes, $groups, $x, $k);
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            for g in 0..groups {
                let w = load32!(format, row.add(g * group_bytes));
                let mut r = 0;
                while r < R {
                    let xp = x.add(r * k + g * GROUP);
                    acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xp), w[0], acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(8)), w[1], acc[r][1]);
                    acc[r][2] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(16)), w[2], acc[r][2]);
                    acc[r][3] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(24)), w[3], acc[r][3]);
                    r += 1;
                }
            }
            let mut out = [_mm256_setzero_ps(); R];
            let mut r = 0;
            while r < R {
                out[r] = _mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3]));
                r += 1;
            }
            out
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows(format: WeightFormat, row: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [f32]) {
        let (per_block, block_bytes) = format.block();
        let group_bytes = GROUP / per_block * block_bytes;
        let groups = k / GROUP;
        macro_rules! rows {
            ($f:expr) => {{
                let mut i = 0;
                while i + 2 <= m {
                    let s = rows_group!(2, $f, row.as_ptr(), group_bytes, groups, x.as_ptr().add(i * k), k);
                    sums[i] = hsum(s[0]);
                    sums[i + 1] = hsum(s[1]);
                    i += 2;
                }
                if i < m {
                    let s = rows_group!(1, $f, row.as_ptr(), group_bytes, groups, x.as_ptr().add(i * k), k);
                    sums[i] = hsum(s[0]);
                }
            }};
        }
        unsafe { for_format!(format, rows) }
        super::add_tail(format, &row[groups * group_bytes..], x, k, groups * GROUP, sums);
    }
}

/// AVX-512 (F, BW, VL): 16 lanes; a 4-bit block's 16 possible values are computed once per block
/// and each weight is a table lookup (`vpermps`), exact as the table entries are the dequantized
/// values.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{GROUP, WeightFormat};

    /// An f16 scale at `p`, broadcast.
    macro_rules! f16x16 {
        ($p:expr) => {
            _mm512_cvtph_ps(_mm256_set1_epi16($p.cast::<i16>().read_unaligned()))
        };
    }

    /// The f16 pair `d, m` at `p`, each broadcast (one load and one conversion for both).
    macro_rules! f16_pair_x16 {
        ($p:expr) => {{
            let dm = _mm512_cvtph_ps(_mm256_set1_epi32($p.cast::<i32>().read_unaligned()));
            (_mm512_moveldup_ps(dm), _mm512_movehdup_ps(dm))
        }};
    }

    /// 16 bytes of nibbles as lookup indices: values 0..16 (low nibbles), 16..32 (high nibbles).
    macro_rules! nibble_idx {
        ($qs:expr) => {{
            let qs = $qs;
            let mask = _mm_set1_epi8(0x0f);
            [
                _mm512_cvtepu8_epi32(_mm_and_si128(qs, mask)),
                _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(qs), mask)),
            ]
        }};
    }

    macro_rules! load32 {
        ($format:expr, $p:expr) => {{
            let p: *const u8 = $p;
            match $format {
                WeightFormat::F32 => [_mm512_loadu_ps(p.cast()), _mm512_loadu_ps(p.add(64).cast())],
                WeightFormat::F16 => [
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast())),
                ],
                WeightFormat::BF16 => [
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())))),
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                        p.add(32).cast(),
                    )))),
                ],
                WeightFormat::Q8_0 => {
                    let d = f16x16!(p);
                    [
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2).cast()))), d),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18).cast()))), d),
                    ]
                }
                WeightFormat::Q4_0 => {
                    // Entry q is (q - 8) * d, as the scalar dequantization computes it.
                    let iota = _mm512_setr_ps(
                        -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
                    );
                    let table = _mm512_mul_ps(iota, f16x16!(p));
                    let [lo, hi] = nibble_idx!(_mm_loadu_si128(p.add(2).cast()));
                    [_mm512_permutexvar_ps(lo, table), _mm512_permutexvar_ps(hi, table)]
                }
                WeightFormat::Q4_1 => {
                    // Entry q is d * q + m; d * q is exact, so the fused form rounds the same.
                    let iota = _mm512_setr_ps(
                        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
                    );
                    let (d, m) = f16_pair_x16!(p);
                    let table = _mm512_fmadd_ps(iota, d, m);
                    let [lo, hi] = nibble_idx!(_mm_loadu_si128(p.add(4).cast()));
                    [_mm512_permutexvar_ps(lo, table), _mm512_permutexvar_ps(hi, table)]
                }
            }
        }};
    }

    /// Rows `i0..i0 + R` of x against one stored row: 2 accumulators per activation row.
    macro_rules! rows_group {
        ($R:literal, $format:expr, $row:expr, $group_bytes:expr, $groups:expr, $x:expr, $k:expr) => {{
            const R: usize = $R;
            let (row, group_bytes, groups, x, k) = ($row, $group_bytes, $groups, $x, $k);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for g in 0..groups {
                let w = load32!($format, row.add(g * group_bytes));
                let mut r = 0;
                while r < R {
                    let xp: *const f32 = x.add(r * k + g * GROUP);
                    acc[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(xp), w[0], acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(16)), w[1], acc[r][1]);
                    r += 1;
                }
            }
            let mut out = [0.0f32; R];
            let mut r = 0;
            while r < R {
                out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
                r += 1;
            }
            out
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows(format: WeightFormat, row: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [f32]) {
        let (per_block, block_bytes) = format.block();
        let group_bytes = GROUP / per_block * block_bytes;
        let groups = k / GROUP;
        macro_rules! rows {
            ($f:expr) => {{
                let mut i = 0;
                while i + 4 <= m {
                    let s = rows_group!(4, $f, row.as_ptr(), group_bytes, groups, x.as_ptr().add(i * k), k);
                    sums[i..i + 4].copy_from_slice(&s);
                    i += 4;
                }
                while i < m {
                    let s = rows_group!(1, $f, row.as_ptr(), group_bytes, groups, x.as_ptr().add(i * k), k);
                    sums[i] = s[0];
                    i += 1;
                }
            }};
        }
        unsafe { for_format!(format, rows) }
        super::add_tail(format, &row[groups * group_bytes..], x, k, groups * GROUP, sums);
    }
}

/// Adds the products of the last `k - from` columns (a tail shorter than a group: float formats
/// only), stored in `tail_bytes`, to each row's sum.
fn add_tail(format: WeightFormat, tail_bytes: &[u8], x: &[f32], k: usize, from: usize, sums: &mut [f32]) {
    let tail = k - from;
    if tail == 0 {
        return;
    }
    let mut t = [0.0f32; GROUP];
    dequantize_into(format, tail_bytes, &mut t[..tail]);
    for (i, s) in sums.iter_mut().enumerate() {
        let xs = &x[i * k + from..(i + 1) * k];
        *s += xs.iter().zip(&t[..tail]).map(|(a, b)| a * b).sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::quantize;

    /// Every format and kernel equals an f64 loop over the dequantized weights, for row counts
    /// on both sides of [`FEW_ROWS`], odd column counts (float formats), a partial last task
    /// or chunk of stored rows, and an output wider than the weight.
    #[test]
    fn every_format_and_kernel_matches_an_f64_loop() {
        for format in WeightFormat::ALL {
            let float = format.block().0 == 1;
            let shapes: &[(usize, usize, usize)] = if float {
                &[(1, 7, 3), (2, 33, 70), (3, 576, 65), (17, 40, 130), (5, 100, 1)]
            } else {
                &[(1, 32, 3), (2, 64, 70), (3, 576, 65), (16, 96, 33), (17, 64, 130), (40, 160, 97)]
            };
            for &(m, k, n) in shapes {
                let wv: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0).collect();
                let w = StoredMatrix::owned(format, n, k, quantize(format, &wv)).unwrap();
                let deq = w.to_f32();
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
                // The same matrix twice as two parts: each fills its own half of the columns.
                let ldo = 2 * n;
                for isa in Isa::available() {
                    let mut out = vec![f32::NAN; m * ldo];
                    matmul_with(isa, &x, m, &[w.clone(), w.clone()], &mut out);
                    for i in 0..m {
                        for j in 0..ldo {
                            let want: f64 = (0..k).map(|l| x[i * k + l] as f64 * deq[(j % n) * k + l] as f64).sum();
                            let got = out[i * ldo + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{format} {isa:?} {m}x{k}x{n} at ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
