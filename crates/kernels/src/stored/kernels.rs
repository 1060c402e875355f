//! `y = x · Wᵀ` for f32 activations `x` (`[m, k]`) and a [`StoredMatrix`] `W` (`[n, k]`).
//!
//! - Few rows (`m <= FEW_ROWS`: decoding one chain, or a lockstep batch) are bound by reading
//!   and dequantizing the weights: each stored value is read once per pass of up to 8 activation
//!   rows. Block formats go tile by tile ([`tile_rows`]): one register holds the same value of 16
//!   stored rows, dequantized once and multiplied with each activation row's value broadcast, so
//!   16 outputs accumulate in one register with no horizontal sums (measured 1.8x the per-row
//!   kernel at one row, 2.6x at 16, on Q4_1). Each 32-value block is summed on its own and
//!   then added to the total: a row's sums then take the same operations however many rows
//!   share the pass (a chain gives the same numbers alone and in a lockstep batch), and the
//!   sums are as close to f64 as 32 partial sums (a single running sum per row is several
//!   times further; tested). AVX2, whose 16 registers hold only 2 rows' sums beside a tile
//!   being dequantized, dequantizes each tile once into a buffer when there are more than 2
//!   rows and reads it in passes of 4 (same operations per row; lockstep 8 1.18x faster).
//!   Float formats go row by row ([`dot_rows`]).
//!   AVX-512 or AVX2+FMA+F16C when the CPU has them, a portable loop otherwise (all tested
//!   against an f64 loop).
//! - Many rows (prefill) are bound by arithmetic: chunks of stored rows are dequantized into a
//!   small f32 buffer and multiplied with gemm, so the weights are never expanded whole. Under
//!   [`Dot::Int8`] block formats take the int8 tile kernel over passes of activation rows instead
//!   (4x the multiply-add rate of f32; each row the bits it has alone).
//!
//! Stored rows are split across threads (block formats at tile boundaries); each writes its own
//! output columns.

use super::{StoredMatrix, TILE_ROWS, WeightFormat, dequantize_into, dequantize_tile, tile_bytes};

/// Up to this many activation rows use the streaming dot-product kernel; more use gemm.
pub const FEW_ROWS: usize = 16;

/// Stored rows per dequantized gemm chunk (a whole number of tiles).
const ROWS_PER_CHUNK: usize = 64;

/// Activation rows per pass of the int8 kernel (at least [`FEW_ROWS`], so few rows take one).
const INT8_ROWS_PER_PASS: usize = 64;
const _: () = assert!(INT8_ROWS_PER_PASS >= FEW_ROWS);

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
    let dot = parts.first().map_or(Dot::Exact, StoredMatrix::dot);
    matmul_dot(Isa::detect(), dot, x, m, parts, out)
}

/// [`matmul`] with the streaming kernel's instruction set chosen by the caller.
pub fn matmul_with(isa: Isa, x: &[f32], m: usize, parts: &[StoredMatrix], out: &mut [f32]) {
    matmul_dot(isa, Dot::Exact, x, m, parts, out)
}

/// How activation rows are multiplied with 4/8-bit blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dot {
    /// In f32, the blocks dequantized in registers: the f32 path's results up to the order of
    /// float sums.
    #[default]
    Exact,
    /// Activations quantized per 32 values to 8 bits, integer dot products
    /// ([`super::int8`]) by `kernel`: approximate, opt-in.
    Int8 { kernel: super::int8::Int8Kernel },
}

/// [`matmul_with`], with products with block formats computed as `dot` says (float formats are
/// always exact).
pub fn matmul_dot(isa: Isa, dot: Dot, x: &[f32], m: usize, parts: &[StoredMatrix], out: &mut [f32]) {
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
    // of dequantized rows. Whole tiles either way.
    let per_task = if few { n.div_ceil(2 * rayon::current_num_threads()).max(16) } else { ROWS_PER_CHUNK };
    let per_task = per_task.next_multiple_of(TILE_ROWS);
    let mut tasks = Vec::new();
    let mut col = 0;
    for (p, w) in parts.iter().enumerate() {
        for j0 in (0..w.rows()).step_by(per_task) {
            tasks.push((p, col, j0, (j0 + per_task).min(w.rows())));
        }
        col += w.rows();
    }
    let shared = SharedOut(out.as_mut_ptr());
    // Quantized once for all parts, and only where a block format will take it.
    let quantized = match dot {
        Dot::Int8 { kernel } if parts.iter().any(|p| p.row_layout().is_none()) => {
            Some((kernel, super::int8::QuantizedRows::new(x, m, k)))
        }
        _ => None,
    };
    let work = |&(p, col, j0, j1): &(usize, usize, usize, usize)| {
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let w = &parts[p];
        match (few, w.row_layout(), &quantized) {
            (true, Some(bytes), _) => {
                let rb = w.row_bytes();
                let mut sums = [0.0f32; FEW_ROWS];
                for j in j0..j1 {
                    dot_rows(isa, w.format(), &bytes[j * rb..(j + 1) * rb], x, m, k, &mut sums[..m]);
                    for (i, &s) in sums[..m].iter().enumerate() {
                        // SAFETY: column col + j belongs to this task alone, and lies in row i of out.
                        unsafe { *shared.0.add(i * n + col + j) = s };
                    }
                }
            }
            (true, None, None) => {
                for j in (j0..j1).step_by(TILE_ROWS) {
                    let mut sums = [[0.0f32; TILE_ROWS]; FEW_ROWS];
                    tile_rows(isa, w.format(), w.tile_group(j / TILE_ROWS), x, m, k, &mut sums[..m]);
                    let width = (j1 - j).min(TILE_ROWS);
                    for (i, s) in sums[..m].iter().enumerate() {
                        // SAFETY: columns col + j.. col + j + width belong to this task alone and
                        // lie in row i of out.
                        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), shared.0.add(i * n + col + j), width) };
                    }
                }
            }
            (_, None, Some((kernel, xq))) => {
                // In passes of activation rows (one for a few rows; each row's sums the same
                // bits in any pass): a pass's quantized rows and sums stay in cache while the
                // group's tiles are read once per pass.
                let mut sums = [[0.0f32; TILE_ROWS]; INT8_ROWS_PER_PASS];
                for j in (j0..j1).step_by(TILE_ROWS) {
                    let group = w.tile_group(j / TILE_ROWS);
                    let width = (j1 - j).min(TILE_ROWS);
                    for a0 in (0..m).step_by(INT8_ROWS_PER_PASS) {
                        let rows = &mut sums[..(m - a0).min(INT8_ROWS_PER_PASS)];
                        rows.fill([0.0; TILE_ROWS]);
                        super::int8::tile_rows(*kernel, w.format(), group, xq, a0, rows);
                        for (i, s) in (a0..).zip(rows.iter()) {
                            // SAFETY: columns col + j.. col + j + width belong to this task alone
                            // and lie in row i of out.
                            unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), shared.0.add(i * n + col + j), width) };
                        }
                    }
                }
            }
            (false, rows, _) => {
                // The chunk dequantized as the gemm's right-hand side [k, j1 - j0]: from rows,
                // row after row (column stride k); from tiles, value after value (row stride
                // `width`, whole tiles).
                let (buf, col_stride, row_stride) = match rows {
                    Some(_) => {
                        let mut buf = vec![0.0f32; (j1 - j0) * k];
                        w.dequantize_rows(j0, j1, &mut buf);
                        (buf, k, 1)
                    }
                    None => {
                        let width = (j1 - j0).next_multiple_of(TILE_ROWS);
                        let mut buf = vec![0.0f32; k * width];
                        for (t, g) in (j0 / TILE_ROWS..j0 / TILE_ROWS + width / TILE_ROWS).enumerate() {
                            let tiles = w.tile_group(g).chunks_exact(tile_bytes(w.format()));
                            for (b, tile) in tiles.enumerate() {
                                dequantize_tile(w.format(), tile, &mut buf[b * GROUP * width + t * TILE_ROWS..], width);
                            }
                        }
                        (buf, 1, width)
                    }
                };
                // SAFETY: lhs x is [m, k] row-major, rhs is buf read as [k, j1 - j0] with the
                // strides above (in bounds by construction), dst is columns col + j0..col + j1
                // of out (row stride n), written by this task alone.
                unsafe {
                    gemm_f32(
                        (m, j1 - j0, k),
                        (shared.0.add(col + j0), n),
                        (x.as_ptr(), k),
                        (buf.as_ptr(), col_stride, row_stride),
                        1.0,
                    )
                };
            }
        }
    };
    if few && m * n * k < 1 << 15 {
        tasks.iter().for_each(work)
    } else {
        crate::pool::for_each_task(tasks.len(), |t| work(&tasks[t]))
    }
}

/// `dst = scale * lhs · rhs` on the calling thread (the gemm crate), for `(m, n, k)`: `dst`
/// is `[m, n]` and `lhs` `[m, k]`, each with unit column stride and the given row stride;
/// `rhs` is `[k, n]` with the given (column, row) strides. All strides in elements.
///
/// # Safety
/// Every element the shapes and strides address lies in its allocation, and no one else
/// touches `dst`'s elements meanwhile.
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize), (dst, dst_rs): (*mut f32, usize), (lhs, lhs_rs): (*const f32, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize), scale: f32,
) {
    // SAFETY: forwarded to the caller; dst is not read (its old values are ignored).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `sums[i][r] = x[i, :] · (row r of the tile group)` for one group of 16 stored rows (its
/// tiles back to back) and `sums.len()` activation rows.
fn tile_rows(
    isa: Isa, format: WeightFormat, group: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [[f32; TILE_ROWS]],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced after detecting avx2, fma and f16c.
        Isa::Avx2 => unsafe { avx2::tile_rows(format, group, x, m, k, sums) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only produced after detecting its features and Avx2's.
        Isa::Avx512 => unsafe { avx512::tile_rows(format, group, x, m, k, sums) },
        _ => portable_tile_rows(format, group, x, m, k, sums),
    }
}

/// The portable tile kernel: dequantize a tile as `[32][16]`, then 16-lane sums per activation row.
fn portable_tile_rows(
    format: WeightFormat, group: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [[f32; TILE_ROWS]],
) {
    let mut w = [0.0f32; GROUP * TILE_ROWS];
    for (b, tile) in group.chunks_exact(tile_bytes(format)).enumerate() {
        dequantize_tile(format, tile, &mut w, TILE_ROWS);
        for (i, total) in sums[..m].iter_mut().enumerate() {
            // The block summed on its own, then added (as the vector kernels do).
            let mut acc = [0.0f32; TILE_ROWS];
            for (l, wl) in w.chunks_exact(TILE_ROWS).enumerate() {
                let xv = x[i * k + b * GROUP + l];
                for r in 0..TILE_ROWS {
                    acc[r] += xv * wl[r];
                }
            }
            for r in 0..TILE_ROWS {
                total[r] += acc[r];
            }
        }
    }
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

/// `$rows!(F)` with `F` the constant float format (block formats go by tiles): one loop per
/// format, so the format's branch is decided once per stored row, not once per group.
#[cfg(target_arch = "x86_64")]
macro_rules! for_float_format {
    ($format:expr, $rows:ident) => {
        match $format {
            WeightFormat::F32 => $rows!(WeightFormat::F32),
            WeightFormat::F16 => $rows!(WeightFormat::F16),
            WeightFormat::BF16 => $rows!(WeightFormat::BF16),
            WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0 => unreachable!("block formats go by tiles"),
        }
    };
}

/// `$rows!(F)` with `F` the constant block format.
#[cfg(target_arch = "x86_64")]
macro_rules! for_block_format {
    ($format:expr, $rows:ident) => {
        match $format {
            WeightFormat::Q4_0 => $rows!(WeightFormat::Q4_0),
            WeightFormat::Q4_1 => $rows!(WeightFormat::Q4_1),
            WeightFormat::Q8_0 => $rows!(WeightFormat::Q8_0),
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => unreachable!("float formats go by rows"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GROUP, TILE_ROWS, WeightFormat};

    // Macros, not functions: a `#[target_feature]` function cannot be `#[inline(always)]`, and
    // one that is not inlined returns its four registers through memory (measured: 3x slower).

    macro_rules! bf16x8 {
        ($p:expr) => {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128($p.cast()))))
        };
    }

    /// 32 float values of `$format` at `$p` as 4 x 8 lanes.
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
                _ => unreachable!("block formats go by tiles"),
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
        unsafe { for_float_format!(format, rows) }
        super::add_tail(format, &row[groups * group_bytes..], x, k, groups * GROUP, sums);
    }

    /// Half `$h` (rows `8h..8h + 8`) of a tile's header at `$p`: `(d, m)` with which a quant
    /// `q` is `q * d + m` (`m = -8d` for Q4_0: `(q - 8) * d` rounded once, as `8d` is exact).
    macro_rules! tile_header {
        ($format:expr, $p:expr, $h:expr) => {{
            let p: *const u8 = $p;
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * $h).cast()));
            let m = match $format {
                WeightFormat::Q4_1 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(32 + 16 * $h).cast())),
                WeightFormat::Q4_0 => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
                _ => _mm256_setzero_ps(),
            };
            (d, m)
        }};
    }

    /// Values `i` and `i + 16` of half `$h` of a tile's rows, dequantized.
    macro_rules! tile_pair {
        ($format:expr, $p:expr, $i:expr, $h:expr, $d:expr, $m:expr) => {{
            let p: *const u8 = $p;
            let head = super::super::tile_quants($format);
            match $format {
                WeightFormat::Q8_0 => {
                    let lo = _mm_loadl_epi64(p.add(head + 16 * $i + 8 * $h).cast());
                    let hi = _mm_loadl_epi64(p.add(head + 16 * ($i + 16) + 8 * $h).cast());
                    [
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), $d),
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), $d),
                    ]
                }
                _ => {
                    let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(head + 16 * $i + 8 * $h).cast()));
                    let lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, _mm256_set1_epi32(0x0f)));
                    let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(q));
                    [_mm256_fmadd_ps(lo, $d, $m), _mm256_fmadd_ps(hi, $d, $m)]
                }
            }
        }};
    }

    /// Values `i` and `i + 16` of a tile's rows 0..8 and 8..16 (`[lo0, hi0, lo1, hi1]`) times
    /// activation rows `r0..r0 + R` (row r's value i at `$x + r * k`, value i + 16 beside it),
    /// added to `$acc[0..R]`: the operations every AVX2 tile pass takes, so a row's sums are the
    /// same bits in any pass.
    macro_rules! fma_rows {
        ($R:expr, $w:expr, $x:expr, $k:expr, $r0:expr, $acc:expr) => {{
            let [lo0, hi0, lo1, hi1]: [__m256; 4] = $w;
            let (x, k, r0): (*const f32, usize, usize) = ($x, $k, $r0);
            let mut r = 0;
            while r < $R {
                let xp = x.add((r0 + r) * k);
                let (xl, xh) = (_mm256_set1_ps(*xp), _mm256_set1_ps(*xp.add(16)));
                $acc[r][0] = _mm256_fmadd_ps(hi0, xh, _mm256_fmadd_ps(lo0, xl, $acc[r][0]));
                $acc[r][1] = _mm256_fmadd_ps(hi1, xh, _mm256_fmadd_ps(lo1, xl, $acc[r][1]));
                r += 1;
            }
        }};
    }

    /// Activation rows `0..R` at `$x` against a group of tiles: 16 sums per row. Each row's
    /// block (32 values) is summed on its own, then added to the row's total: the same order
    /// of operations for every R, and short float chains (see the module header).
    macro_rules! tile_pass {
        ($R:literal, $format:expr, $group:expr, $blocks:expr, $x:expr, $k:expr, $sums:expr) => {{
            const R: usize = $R;
            let (group, blocks, x, k): (*const u8, usize, *const f32, usize) = ($group, $blocks, $x, $k);
            let tile_bytes = super::super::tile_bytes($format);
            let mut total = [[_mm256_setzero_ps(); 2]; R];
            for b in 0..blocks {
                let p = group.add(b * tile_bytes);
                let (d0, m0) = tile_header!($format, p, 0);
                let (d1, m1) = tile_header!($format, p, 1);
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for i in 0..16 {
                    let [lo0, hi0] = tile_pair!($format, p, i, 0, d0, m0);
                    let [lo1, hi1] = tile_pair!($format, p, i, 1, d1, m1);
                    fma_rows!(R, [lo0, hi0, lo1, hi1], x.add(b * GROUP + i), k, 0, acc);
                }
                let mut r = 0;
                while r < R {
                    total[r][0] = _mm256_add_ps(total[r][0], acc[r][0]);
                    total[r][1] = _mm256_add_ps(total[r][1], acc[r][1]);
                    r += 1;
                }
            }
            let sums: &mut [[f32; TILE_ROWS]] = $sums;
            let mut r = 0;
            while r < R {
                _mm256_storeu_ps(sums[r].as_mut_ptr(), total[r][0]);
                _mm256_storeu_ps(sums[r].as_mut_ptr().add(8), total[r][1]);
                r += 1;
            }
        }};
    }

    /// Activation rows `r0..r0 + R` at `$x` against one block whose tile `$w` is already
    /// dequantized: the block's sums of [`tile_pass`], in the same order, added to `$total`.
    macro_rules! block_pass {
        ($R:literal, $w:expr, $x:expr, $k:expr, $b:expr, $r0:expr, $total:expr) => {{
            const R: usize = $R;
            let (w, x, k, b, r0): (&[[__m256; 4]; 16], *const f32, usize, usize, usize) = ($w, $x, $k, $b, $r0);
            let total: &mut [[__m256; 2]] = $total;
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for (i, &wi) in w.iter().enumerate() {
                fma_rows!(R, wi, x.add(b * GROUP + i), k, r0, acc);
            }
            let mut r = 0;
            while r < R {
                total[r0 + r][0] = _mm256_add_ps(total[r0 + r][0], acc[r][0]);
                total[r0 + r][1] = _mm256_add_ps(total[r0 + r][1], acc[r][1]);
                r += 1;
            }
        }};
    }

    /// All `$rows` activation rows against a group of tiles, each tile dequantized once into a
    /// buffer and read by passes of up to 4 rows: [`tile_pass`]'s operations per row (so its
    /// bits), without dequantizing the tile again for every pair of rows (AVX2's 16 registers
    /// hold 2 rows' accumulators beside a tile being dequantized, 4 beside a dequantized one).
    macro_rules! tile_rows_buffered {
        ($format:expr, $group:expr, $blocks:expr, $x:expr, $rows:expr, $k:expr, $sums:expr) => {{
            let (group, blocks, x, rows, k): (*const u8, usize, *const f32, usize, usize) =
                ($group, $blocks, $x, $rows, $k);
            let tile_bytes = super::super::tile_bytes($format);
            let mut total = [[_mm256_setzero_ps(); 2]; super::FEW_ROWS];
            let mut w = [[_mm256_setzero_ps(); 4]; 16];
            for b in 0..blocks {
                let p = group.add(b * tile_bytes);
                let (d0, m0) = tile_header!($format, p, 0);
                let (d1, m1) = tile_header!($format, p, 1);
                for (i, wi) in w.iter_mut().enumerate() {
                    let [lo0, hi0] = tile_pair!($format, p, i, 0, d0, m0);
                    let [lo1, hi1] = tile_pair!($format, p, i, 1, d1, m1);
                    *wi = [lo0, hi0, lo1, hi1];
                }
                let mut r0 = 0;
                while r0 < rows {
                    match rows - r0 {
                        1 => block_pass!(1, &w, x, k, b, r0, &mut total),
                        2 => block_pass!(2, &w, x, k, b, r0, &mut total),
                        3 => block_pass!(3, &w, x, k, b, r0, &mut total),
                        _ => block_pass!(4, &w, x, k, b, r0, &mut total),
                    }
                    r0 += (rows - r0).min(4);
                }
            }
            let sums: &mut [[f32; TILE_ROWS]] = $sums;
            for (s, t) in sums[..rows].iter_mut().zip(&total) {
                _mm256_storeu_ps(s.as_mut_ptr(), t[0]);
                _mm256_storeu_ps(s.as_mut_ptr().add(8), t[1]);
            }
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile_rows(
        format: WeightFormat, group: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [[f32; TILE_ROWS]],
    ) {
        let blocks = k / GROUP;
        assert!(m <= super::FEW_ROWS, "{m} rows: more than a pass takes");
        macro_rules! rows {
            ($f:expr) => {{
                if m > 2 {
                    tile_rows_buffered!($f, group.as_ptr(), blocks, x.as_ptr(), m, k, sums);
                    return;
                }
                let mut i = 0;
                while i < m {
                    let (xp, s) = (x.as_ptr().add(i * k), &mut sums[i..]);
                    if m - i >= 2 {
                        tile_pass!(2, $f, group.as_ptr(), blocks, xp, k, s);
                        i += 2;
                    } else {
                        tile_pass!(1, $f, group.as_ptr(), blocks, xp, k, s);
                        i += 1;
                    }
                }
            }};
        }
        unsafe { for_block_format!(format, rows) }
    }
}

/// AVX-512 (F, BW, VL): 16 lanes, one tile's 16 rows per register.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{GROUP, TILE_ROWS, WeightFormat};

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
                _ => unreachable!("block formats go by tiles"),
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
        unsafe { for_float_format!(format, rows) }
        super::add_tail(format, &row[groups * group_bytes..], x, k, groups * GROUP, sums);
    }

    /// A tile's header at `$p`: `(d, m)` with which a quant `q` is `q * d + m` (`m = -8d` for
    /// Q4_0: `(q - 8) * d` rounded once, as `8d` is exact).
    macro_rules! tile_header {
        ($format:expr, $p:expr) => {{
            let p: *const u8 = $p;
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
            let m = match $format {
                WeightFormat::Q4_1 => _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast())),
                WeightFormat::Q4_0 => _mm512_mul_ps(d, _mm512_set1_ps(-8.0)),
                _ => _mm512_setzero_ps(),
            };
            (d, m)
        }};
    }

    /// Values `i` and `i + 16` of a tile's 16 rows, dequantized.
    macro_rules! tile_pair {
        ($format:expr, $p:expr, $i:expr, $d:expr, $m:expr) => {{
            let p: *const u8 = $p;
            let head = super::super::tile_quants($format);
            match $format {
                WeightFormat::Q8_0 => {
                    let lo = _mm_loadu_si128(p.add(head + 16 * $i).cast());
                    let hi = _mm_loadu_si128(p.add(head + 16 * ($i + 16)).cast());
                    [
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), $d),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), $d),
                    ]
                }
                _ => {
                    let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(head + 16 * $i).cast()));
                    let lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(0x0f)));
                    let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(q));
                    [_mm512_fmadd_ps(lo, $d, $m), _mm512_fmadd_ps(hi, $d, $m)]
                }
            }
        }};
    }

    /// Activation rows `0..R` at `$x` against a group of tiles: 16 sums per row. Each row's
    /// block (32 values) is summed on its own, values `i` and `i + 16` in two chains, then added
    /// to the row's total: the same order of operations for every R, and short float chains
    /// (see the module header).
    macro_rules! tile_pass {
        ($R:literal, $format:expr, $group:expr, $blocks:expr, $x:expr, $k:expr, $sums:expr) => {{
            const R: usize = $R;
            let (group, blocks, x, k): (*const u8, usize, *const f32, usize) = ($group, $blocks, $x, $k);
            let tile_bytes = super::super::tile_bytes($format);
            let mut total = [_mm512_setzero_ps(); R];
            for b in 0..blocks {
                let p = group.add(b * tile_bytes);
                let (d, m) = tile_header!($format, p);
                let mut lo_acc = [_mm512_setzero_ps(); R];
                let mut hi_acc = [_mm512_setzero_ps(); R];
                for i in 0..16 {
                    let [lo, hi] = tile_pair!($format, p, i, d, m);
                    let mut r = 0;
                    while r < R {
                        let xp = x.add(r * k + b * GROUP + i);
                        lo_acc[r] = _mm512_fmadd_ps(lo, _mm512_set1_ps(*xp), lo_acc[r]);
                        hi_acc[r] = _mm512_fmadd_ps(hi, _mm512_set1_ps(*xp.add(16)), hi_acc[r]);
                        r += 1;
                    }
                }
                let mut r = 0;
                while r < R {
                    total[r] = _mm512_add_ps(total[r], _mm512_add_ps(lo_acc[r], hi_acc[r]));
                    r += 1;
                }
            }
            let sums: &mut [[f32; TILE_ROWS]] = $sums;
            let mut r = 0;
            while r < R {
                _mm512_storeu_ps(sums[r].as_mut_ptr(), total[r]);
                r += 1;
            }
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn tile_rows(
        format: WeightFormat, group: &[u8], x: &[f32], m: usize, k: usize, sums: &mut [[f32; TILE_ROWS]],
    ) {
        let blocks = k / GROUP;
        macro_rules! rows {
            ($f:expr) => {{
                let mut i = 0;
                while i < m {
                    let (xp, s) = (x.as_ptr().add(i * k), &mut sums[i..]);
                    let left = m - i;
                    if left >= 8 {
                        tile_pass!(8, $f, group.as_ptr(), blocks, xp, k, s);
                        i += 8;
                    } else if left >= 4 {
                        tile_pass!(4, $f, group.as_ptr(), blocks, xp, k, s);
                        i += 4;
                    } else if left >= 2 {
                        tile_pass!(2, $f, group.as_ptr(), blocks, xp, k, s);
                        i += 2;
                    } else {
                        tile_pass!(1, $f, group.as_ptr(), blocks, xp, k, s);
                        i += 1;
                    }
                }
            }};
        }
        unsafe { for_block_format!(format, rows) }
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
    /// on both sides of [`FEW_ROWS`] and every pass size of the tile kernels, odd column counts
    /// (float formats), a partial last tile, task or chunk of stored rows, and an output wider
    /// than the weight.
    #[test]
    fn every_format_and_kernel_matches_an_f64_loop() {
        for format in WeightFormat::ALL {
            let float = format.block().0 == 1;
            let shapes: &[(usize, usize, usize)] = if float {
                &[(1, 7, 3), (2, 33, 70), (3, 576, 65), (17, 40, 130), (5, 100, 1)]
            } else {
                &[
                    (1, 32, 3),
                    (2, 64, 70),
                    (3, 576, 65),
                    (7, 64, 16),
                    (13, 96, 50),
                    (16, 96, 33),
                    (17, 64, 130),
                    (40, 160, 97),
                ]
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

    /// A row's products are the same bits alone and in a pass of any size up to [`FEW_ROWS`]
    /// (a chain decodes to the same tokens alone and in a lockstep batch), for every kernel.
    #[test]
    fn a_row_gives_the_same_bits_alone_and_among_others() {
        let (n, k) = (40, 96);
        for format in WeightFormat::ALL {
            let wv: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0).collect();
            let w = StoredMatrix::owned(format, n, k, quantize(format, &wv)).unwrap();
            let x: Vec<f32> = (0..FEW_ROWS * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            for isa in Isa::available() {
                let alone: Vec<Vec<f32>> = (0..FEW_ROWS)
                    .map(|i| {
                        let mut out = vec![0.0; n];
                        matmul_with(isa, &x[i * k..(i + 1) * k], 1, std::slice::from_ref(&w), &mut out);
                        out
                    })
                    .collect();
                for m in 2..=FEW_ROWS {
                    let mut out = vec![0.0; m * n];
                    matmul_with(isa, &x[..m * k], m, std::slice::from_ref(&w), &mut out);
                    for (i, row) in out.chunks_exact(n).enumerate() {
                        assert_eq!(row, &alone[i][..], "{format} {isa:?}: row {i} of {m}");
                    }
                }
            }
        }
    }

    /// The int8 product of many rows (prefill) gives each row the bits it has alone (the
    /// few-row path, tested against an f64 loop in `int8`), over several parts, passes of
    /// activation rows and a partial last tile.
    #[test]
    fn int8_rows_give_the_same_bits_alone_and_in_a_prefill() {
        use super::super::int8::Int8Kernel;
        let (k, n, m) = (96, 40, 2 * INT8_ROWS_PER_PASS + 3);
        for format in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0] {
            let wv: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0).collect();
            let w = StoredMatrix::owned(format, n, k, quantize(format, &wv)).unwrap();
            let parts = [w.clone(), w];
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            for kernel in Int8Kernel::available() {
                let dot = Dot::Int8 { kernel };
                let mut out = vec![f32::NAN; m * 2 * n];
                matmul_dot(Isa::detect(), dot, &x, m, &parts, &mut out);
                for (i, row) in out.chunks_exact(2 * n).enumerate() {
                    let mut alone = vec![0.0; 2 * n];
                    matmul_dot(Isa::detect(), dot, &x[i * k..(i + 1) * k], 1, &parts, &mut alone);
                    assert_eq!(row, &alone[..], "{format} {kernel:?}: row {i} of {m}");
                }
            }
        }
    }

    /// Long rows are summed accurately as 32 interleaved partial sums would (the error a
    /// single running sum over the row has is several times larger), for every kernel and for
    /// one activation row as for a batch.
    #[test]
    fn long_rows_are_summed_accurately() {
        let (n, k) = (64, 1536);
        let mut s: u64 = 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s % 20001) as f32 - 10000.0) / 10000.0
        };
        let wv: Vec<f32> = (0..n * k).map(|_| next() * 0.05).collect();
        let w = StoredMatrix::owned(WeightFormat::Q4_1, n, k, quantize(WeightFormat::Q4_1, &wv)).unwrap();
        let deq = w.to_f32();
        for m in [1, 13] {
            let x: Vec<f32> = (0..m * k).map(|_| next() * 3.0).collect();
            let (mut lanes_err, mut sums) = (0.0f64, Vec::new());
            for i in 0..m {
                for j in 0..n {
                    let (xs, ws) = (&x[i * k..(i + 1) * k], &deq[j * k..(j + 1) * k]);
                    let want: f64 = xs.iter().zip(ws).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let mut lanes = [0.0f32; 32];
                    for (l, (a, b)) in xs.iter().zip(ws).enumerate() {
                        lanes[l % 32] = a.mul_add(*b, lanes[l % 32]);
                    }
                    lanes_err = lanes_err.max((lanes.iter().sum::<f32>() as f64 - want).abs());
                    sums.push(want);
                }
            }
            for isa in Isa::available() {
                let mut out = vec![0.0; m * n];
                matmul_with(isa, &x, m, std::slice::from_ref(&w), &mut out);
                let err = out.iter().zip(&sums).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(err <= 2.0 * lanes_err, "{isa:?}, {m} rows: error {err:e}, 32 partial sums {lanes_err:e}");
            }
        }
    }
}
