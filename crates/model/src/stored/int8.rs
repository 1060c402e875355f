//! The approximate, opt-in product ([`Dot::Int8`](super::Dot::Int8)): activations quantized per
//! 32-value block to 8 bits, integer dot products with the weights' 4- or 8-bit blocks (what
//! llama.cpp and candle do on the CPU).
//!
//! Per block `b` of an activation row: `dx = max|x| / 127`, `qx = round(x / dx)` (so
//! `|qx| <= 127`), and `sx = Σ qx`. With a weight block's integers `qw` and scale `dw`, the
//! block's product is `dw · dx · Σ qw·qx`, plus `dx · sx` times the block's offset (`m` for Q4_1,
//! `-8 dw` for Q4_0, whose stored integers are `q + 8`). The integer sums are exact; what differs
//! from the exact product is the rounding of `x` to 8 bits (about 0.4% of a block's largest value).

use super::WeightFormat;
use super::kernels::{GROUP, Isa};

/// Activation rows quantized per 32-value block.
pub struct QuantizedRows {
    /// `[m, k]` values in -127..=127.
    pub q: Vec<i8>,
    /// `[m, k / 32]` block scales.
    pub d: Vec<f32>,
    /// `[m, k / 32]` each block's scale times the sum of its integers.
    pub dsum: Vec<f32>,
}

impl QuantizedRows {
    /// Quantizes `x` (`[m, k]`, `k` a multiple of 32).
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(GROUP) && x.len() == m * k, "x is not [m, k] with k a multiple of 32");
        let blocks = m * k / GROUP;
        let (mut q, mut d, mut dsum) = (vec![0i8; m * k], Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        for (xs, qs) in x.chunks_exact(GROUP).zip(q.chunks_exact_mut(GROUP)) {
            let amax = xs.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut s = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                s += *q as i32;
            }
            d.push(scale);
            dsum.push(scale * s as f32);
        }
        QuantizedRows { q, d, dsum }
    }
}

/// A quantized block's scale and offset (`value = scale · q + offset`, `q` the integer the
/// kernels multiply: 0..16 for 4-bit, -128..128 for Q8_0).
#[inline(always)]
fn scale_offset(format: WeightFormat, block: &[u8]) -> (f32, f32) {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    match format {
        WeightFormat::Q4_0 => {
            let d = f16(block);
            (d, -8.0 * d)
        }
        WeightFormat::Q4_1 => (f16(block), f16(&block[2..4])),
        WeightFormat::Q8_0 => (f16(block), 0.0),
        _ => unreachable!("int8 products are for block formats only"),
    }
}

/// Whether a format has integer blocks the int8 product can use.
pub fn applies_to(format: WeightFormat) -> bool {
    matches!(format, WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q8_0)
}

/// `sums[i] = Σ_b dw_b · dx_ib · (qw_b · qx_ib) + off_b · dx_ib · sx_ib` for one stored row and
/// activation rows `rows` of `x`.
pub fn dot_rows(
    isa: Isa, format: WeightFormat, row: &[u8], x: &QuantizedRows, rows: std::ops::Range<usize>, k: usize,
    sums: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` and `Isa::Avx512` are only produced after detecting avx2, fma, f16c.
        Isa::Avx2 => unsafe { avx2::dot_rows(format, row, x, rows, k, sums) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only produced after detecting avx512f/bw/vl and Avx2's.
        Isa::Avx512 => unsafe { avx512::dot_rows(format, row, x, rows, k, sums) },
        _ => portable_dot_rows(format, row, x, rows, k, sums),
    }
}

fn portable_dot_rows(
    format: WeightFormat, row: &[u8], x: &QuantizedRows, rows: std::ops::Range<usize>, k: usize, sums: &mut [f32],
) {
    let block_bytes = format.block().1;
    let blocks = k / GROUP;
    let mut qw = [0i32; GROUP];
    sums.fill(0.0);
    for b in 0..blocks {
        let block = &row[b * block_bytes..(b + 1) * block_bytes];
        let (scale, offset) = scale_offset(format, block);
        match format {
            WeightFormat::Q8_0 => qw.iter_mut().zip(&block[2..]).for_each(|(w, &q)| *w = q as i8 as i32),
            _ => {
                let qs = &block[block_bytes - 16..];
                for j in 0..16 {
                    qw[j] = (qs[j] & 0x0f) as i32;
                    qw[j + 16] = (qs[j] >> 4) as i32;
                }
            }
        }
        for (s, i) in sums.iter_mut().zip(rows.clone()) {
            let xb = i * blocks + b;
            let qx = &x.q[xb * GROUP..(xb + 1) * GROUP];
            let dot: i32 = qw.iter().zip(qx).map(|(&w, &q)| w * q as i32).sum();
            *s += scale * x.d[xb] * dot as f32 + offset * x.dsum[xb];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GROUP, QuantizedRows, WeightFormat};

    /// Activation rows sharing one expansion of each weight block.
    const TILE: usize = 4;

    /// One weight block's 32 integers as bytes, in the activations' order: unsigned 0..16 for
    /// 4-bit blocks; for Q8_0 `|q|`, with `sign` set so `sign(qx)` carries `q`'s sign.
    macro_rules! weight_bytes {
        ($format:expr, $block:expr) => {{
            let p: *const u8 = $block;
            match $format {
                WeightFormat::Q8_0 => {
                    let q = _mm256_loadu_si256(p.add(2).cast());
                    (_mm256_sign_epi8(q, q), q)
                }
                WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                    let off = if matches!($format, WeightFormat::Q4_0) { 2 } else { 4 };
                    let qs = _mm_loadu_si128(p.add(off).cast());
                    let mask = _mm_set1_epi8(0x0f);
                    let lo = _mm_and_si128(qs, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), mask);
                    (_mm256_set_m128i(hi, lo), _mm256_setzero_si256())
                }
                _ => unreachable!(),
            }
        }};
    }

    /// The f16 at `p` (F16C).
    macro_rules! f16 {
        ($p:expr) => {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*$p, *$p.add(1)]) as i32)))
        };
    }

    /// [`super::scale_offset`] with F16C conversions.
    macro_rules! scale_offset {
        ($format:expr, $p:expr) => {{
            let p: *const u8 = $p;
            match $format {
                WeightFormat::Q4_0 => {
                    let d = f16!(p);
                    (d, -8.0 * d)
                }
                WeightFormat::Q4_1 => (f16!(p), f16!(p.add(2))),
                _ => (f16!(p), 0.0),
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

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows(
        format: WeightFormat, row: &[u8], x: &QuantizedRows, rows: std::ops::Range<usize>, k: usize, sums: &mut [f32],
    ) {
        let block_bytes = format.block().1;
        let blocks = k / GROUP;
        let ones = _mm256_set1_epi16(1);
        macro_rules! tile {
            ($R:literal, $f:expr, $i0:expr) => {{
                const R: usize = $R;
                let i0 = $i0;
                let mut acc = [_mm256_setzero_ps(); R];
                let mut off = [0.0f32; R];
                for b in 0..blocks {
                    let block = row.as_ptr().add(b * block_bytes);
                    let (scale, offset) = scale_offset!($f, block);
                    let (w, sign) = weight_bytes!($f, block);
                    let mut r = 0;
                    while r < R {
                        let xb = (i0 + r) * blocks + b;
                        let mut qx = _mm256_loadu_si256(x.q.as_ptr().add(xb * GROUP).cast());
                        if matches!($f, WeightFormat::Q8_0) {
                            qx = _mm256_sign_epi8(qx, sign);
                        }
                        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w, qx), ones);
                        let dx = *x.d.get_unchecked(xb);
                        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale * dx), _mm256_cvtepi32_ps(dot), acc[r]);
                        off[r] += offset * *x.dsum.get_unchecked(xb);
                        r += 1;
                    }
                }
                let mut r = 0;
                while r < R {
                    sums[i0 - rows.start + r] = hsum(acc[r]) + off[r];
                    r += 1;
                }
            }};
        }
        macro_rules! all_rows {
            ($f:expr) => {{
                let mut i = rows.start;
                while i + TILE <= rows.end {
                    tile!(4, $f, i);
                    i += TILE;
                }
                while i < rows.end {
                    tile!(1, $f, i);
                    i += 1;
                }
            }};
        }
        // SAFETY (for the loads): each block read lies in `row` (whole blocks, checked by the
        // caller), each activation block in `x` (rows < m, blocks < k / 32).
        unsafe {
            match format {
                WeightFormat::Q4_0 => all_rows!(WeightFormat::Q4_0),
                WeightFormat::Q4_1 => all_rows!(WeightFormat::Q4_1),
                WeightFormat::Q8_0 => all_rows!(WeightFormat::Q8_0),
                _ => unreachable!("int8 products are for block formats only"),
            }
        }
    }
}

/// AVX-512 (BW): two blocks per 512-bit product.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{GROUP, QuantizedRows, WeightFormat};

    /// Activation rows sharing one expansion of each pair of weight blocks.
    const TILE: usize = 4;

    /// The f16 at `p` (F16C).
    macro_rules! f16 {
        ($p:expr) => {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128($p.cast::<u16>().read_unaligned() as i32)))
        };
    }

    macro_rules! scale_offset {
        ($format:expr, $p:expr) => {{
            let p: *const u8 = $p;
            match $format {
                WeightFormat::Q4_0 => {
                    let d = f16!(p);
                    (d, -8.0 * d)
                }
                WeightFormat::Q4_1 => (f16!(p), f16!(p.add(2))),
                _ => (f16!(p), 0.0),
            }
        }};
    }

    /// Two weight blocks' 64 integers as bytes in the activations' order (block a's 32, then
    /// b's): unsigned 0..16 for 4-bit blocks; for Q8_0 `|q|` and the signed bytes for the sign.
    macro_rules! weight_bytes {
        ($format:expr, $a:expr, $b:expr) => {{
            let (a, b): (*const u8, *const u8) = ($a, $b);
            match $format {
                WeightFormat::Q8_0 => {
                    let q = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_loadu_si256(a.add(2).cast())),
                        _mm256_loadu_si256(b.add(2).cast()),
                    );
                    (_mm512_abs_epi8(q), q)
                }
                _ => {
                    let off = if matches!($format, WeightFormat::Q4_0) { 2 } else { 4 };
                    // [a's 16 bytes | b's 16 bytes]: low nibbles are values 0..16 of each block,
                    // high nibbles 16..32.
                    let qs = _mm256_inserti128_si256::<1>(
                        _mm256_castsi128_si256(_mm_loadu_si128(a.add(off).cast())),
                        _mm_loadu_si128(b.add(off).cast()),
                    );
                    let mask = _mm256_set1_epi8(0x0f);
                    let lo = _mm256_and_si256(qs, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qs), mask);
                    // [a_lo, b_lo, a_hi, b_hi] in 128-bit lanes -> [a_lo, a_hi, b_lo, b_hi].
                    let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    (_mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), w), _mm512_setzero_si512())
                }
            }
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows(
        format: WeightFormat, row: &[u8], x: &QuantizedRows, rows: std::ops::Range<usize>, k: usize, sums: &mut [f32],
    ) {
        let block_bytes = format.block().1;
        let blocks = k / GROUP;
        let pairs = blocks / 2;
        let ones = _mm512_set1_epi16(1);
        macro_rules! tile {
            ($R:literal, $f:expr, $i0:expr) => {{
                const R: usize = $R;
                let i0 = $i0;
                let mut acc = [_mm512_setzero_ps(); R];
                let mut off = [0.0f32; R];
                for pb in 0..pairs {
                    let a = row.as_ptr().add(2 * pb * block_bytes);
                    let b = a.add(block_bytes);
                    let (sa, oa) = scale_offset!($f, a);
                    let (sb, ob) = scale_offset!($f, b);
                    let (w, sign) = weight_bytes!($f, a, b);
                    let mut r = 0;
                    while r < R {
                        let xb = (i0 + r) * blocks + 2 * pb;
                        let mut qx = _mm512_loadu_si512(x.q.as_ptr().add(xb * GROUP).cast());
                        if matches!($f, WeightFormat::Q8_0) {
                            // qx * sign(w): negate where w < 0, zero where w == 0 (|w| is 0 there).
                            qx = _mm512_mask_sub_epi8(qx, _mm512_movepi8_mask(sign), _mm512_setzero_si512(), qx);
                        }
                        let dot = _mm512_madd_epi16(_mm512_maddubs_epi16(w, qx), ones);
                        let (dxa, dxb) = (*x.d.get_unchecked(xb), *x.d.get_unchecked(xb + 1));
                        let scale = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(sa * dxa), _mm512_set1_ps(sb * dxb));
                        acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc[r]);
                        off[r] += oa * *x.dsum.get_unchecked(xb) + ob * *x.dsum.get_unchecked(xb + 1);
                        r += 1;
                    }
                }
                let mut r = 0;
                while r < R {
                    let mut s = _mm512_reduce_add_ps(acc[r]) + off[r];
                    if blocks % 2 == 1 {
                        // The odd last block, scalar.
                        let b = blocks - 1;
                        let p = row.as_ptr().add(b * block_bytes);
                        let (sc, o) = scale_offset!($f, p);
                        let xb = (i0 + r) * blocks + b;
                        let qx = &x.q[xb * GROUP..(xb + 1) * GROUP];
                        let mut dot = 0i32;
                        for j in 0..GROUP {
                            let qw = match $f {
                                WeightFormat::Q8_0 => *p.add(2 + j) as i8 as i32,
                                _ => {
                                    let byte = *p.add(block_bytes - 16 + j % 16);
                                    (if j < 16 { byte & 0x0f } else { byte >> 4 }) as i32
                                }
                            };
                            dot += qw * qx[j] as i32;
                        }
                        s += sc * x.d[xb] * dot as f32 + o * x.dsum[xb];
                    }
                    sums[i0 - rows.start + r] = s;
                    r += 1;
                }
            }};
        }
        macro_rules! all_rows {
            ($f:expr) => {{
                let mut i = rows.start;
                while i + TILE <= rows.end {
                    tile!(4, $f, i);
                    i += TILE;
                }
                while i < rows.end {
                    tile!(1, $f, i);
                    i += 1;
                }
            }};
        }
        // SAFETY (for the loads): each block read lies in `row` (whole blocks, checked by the
        // caller), each activation block in `x` (rows < m, blocks < k / 32).
        unsafe {
            match format {
                WeightFormat::Q4_0 => all_rows!(WeightFormat::Q4_0),
                WeightFormat::Q4_1 => all_rows!(WeightFormat::Q4_1),
                WeightFormat::Q8_0 => all_rows!(WeightFormat::Q8_0),
                _ => unreachable!("int8 products are for block formats only"),
            }
        }
    }
}
