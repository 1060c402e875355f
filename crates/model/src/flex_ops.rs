//! Fused CPU kernels for [`LayerOps`] on burn's flex backend.
//!
//! burn's CPU elementwise ops are fast on contiguous tensors but walk permuted views element by
//! element, and its attention copies its inputs to a head-major layout and runs heads one after
//! another. These kernels read the projection outputs as they are, write head-major q/k/v in one
//! pass (RoPE included), run attention per head in parallel with gemm for the two products, and
//! write the attention output straight into the token-major layout the output projection reads.
//! The arithmetic is the same as the reference implementation in [`crate::ops::reference`]
//! (tests compare the two), except `exp`, computed by a polynomial accurate to about 2 ulp.

use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::llama::{RmsNorm, Rope};
use crate::ops::{AttnMask, Heads, LayerOps, Positions, reference};

thread_local! {
    static USE_REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the flex backend using the reference (burn-op) implementations instead of the
/// fused kernels, on this thread. Tests use it to compare the two.
pub fn with_reference_ops<R>(f: impl FnOnce() -> R) -> R {
    let before = USE_REFERENCE.with(|c| c.replace(true));
    let out = f();
    USE_REFERENCE.with(|c| c.set(before));
    out
}

fn reference_forced() -> bool {
    USE_REFERENCE.with(|c| c.get())
}

/// The f32 data of a flex tensor, contiguous.
fn host<const D: usize>(t: Tensor<Flex, D>) -> (FlexTensor, [usize; D]) {
    let dims = t.dims();
    let flex = t.into_primitive().tensor().to_contiguous();
    (flex, dims)
}

fn data(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(TensorData::new(values, shape))))
}

/// `e^x` for f32: range reduction to `r` in [-ln2/2, ln2/2], degree-7 polynomial, exponent by
/// bit manipulation (rounding with the 1.5 * 2^23 trick, so no float-to-int conversion). Relative
/// error below 3e-7 for x in [-87, 88] (inputs are clamped to it). Branch-free so the loops that
/// call it vectorize.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let i = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    p * f32::from_bits((i.wrapping_add(127) as u32) << 23)
}

/// Largest element (8 lanes, so it vectorizes; float `max` does not reassociate on its own).
#[inline(always)]
fn max_lanes(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    rest.iter().chain(&m).copied().fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// Sum in 8 lanes (vectorizes; the result differs from a sequential sum by rounding only).
#[inline(always)]
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut s = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            s[l] += c[l];
        }
    }
    s.iter().chain(rest).sum()
}

/// Declares `$name` that runs `$body` compiled for AVX2+FMA when the CPU has it, else generic.
macro_rules! simd_dispatch {
    (fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { imp($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the features were just detected on this CPU.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

simd_dispatch! {
    fn swiglu_rows(gu: &[f32], out: &mut [f32], f: usize) {
        for (row, o) in gu.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)) {
            let (g, u) = row.split_at(f);
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + exp_f32(-g)) * u;
            }
        }
    }
}

simd_dispatch! {
    fn softmax_row(row: &mut [f32], visible: usize) {
        // Keys `visible..` are hidden (causal tail); other hidden keys hold -inf.
        let (live, dead) = row.split_at_mut(visible);
        let max = max_lanes(live);
        for x in live.iter_mut() {
            // exp(-inf) through the clamp is ~1e-38, far below anything that matters.
            *x = exp_f32(*x - max);
        }
        let inv = 1.0 / sum_lanes(live);
        for x in live.iter_mut() {
            *x *= inv;
        }
        dead.fill(0.0);
    }
}

simd_dispatch! {
    fn dot_rows(q: &[f32], keys: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
        for (o, k) in out.iter_mut().zip(keys.chunks_exact(hd)) {
            // 8 lanes so the reduction vectorizes (one running sum would not).
            let mut lanes = [0.0f32; 8];
            let (qc, kc) = (q.chunks_exact(8), k.chunks_exact(8));
            let tail: f32 = qc.remainder().iter().zip(kc.remainder()).map(|(a, b)| a * b).sum();
            for (a, b) in qc.zip(kc) {
                for l in 0..8 {
                    lanes[l] += a[l] * b[l];
                }
            }
            *o = (sum_lanes(&lanes) + tail) * scale;
        }
    }
}

simd_dispatch! {
    fn weighted_sum(p: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
        out.fill(0.0);
        for (&w, v) in p.iter().zip(values.chunks_exact(hd)) {
            if w != 0.0 {
                for (o, x) in out.iter_mut().zip(v) {
                    *o += w * x;
                }
            }
        }
    }
}

// `acc[i][..bw] = sum_l x[i][l] * w[l][j0..j0 + bw]` for the rows of `x` (`[m, k]`) and one
// column block of `w` (`[k, n]`): four weight row chunks at a time are read once and used by
// every row of `x` while they are in L1 (the sums of a row chunk stay in L1 too).
simd_dispatch! {
    fn stream_columns(x: &[f32], k: usize, w: &[f32], n: usize, j0: usize, acc: &mut [f32], bw: usize) {
        acc.fill(0.0);
        let row = |l: usize| &w[l * n + j0..l * n + j0 + bw];
        let mut l = 0;
        while l + 4 <= k {
            let (w0, w1, w2, w3) = (row(l), row(l + 1), row(l + 2), row(l + 3));
            for (i, out) in acc.chunks_exact_mut(bw).enumerate() {
                let (a0, a1, a2, a3) = (x[i * k + l], x[i * k + l + 1], x[i * k + l + 2], x[i * k + l + 3]);
                // Zipped iterators, not indices: no bounds checks, so the loop vectorizes.
                for ((((o, &v0), &v1), &v2), &v3) in out.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                    // Fused multiply-adds (this runs compiled for FMA; see `simd_dispatch`).
                    *o = a3.mul_add(v3, a2.mul_add(v2, a1.mul_add(v1, a0.mul_add(v0, *o))));
                }
            }
            l += 4;
        }
        for l in l..k {
            let wl = row(l);
            for (i, out) in acc.chunks_exact_mut(bw).enumerate() {
                let a = x[i * k + l];
                for (o, &wv) in out.iter_mut().zip(wl) {
                    *o = a.mul_add(wv, *o);
                }
            }
        }
    }
}

/// The dots of four rows of `x` with one row `e` (8 lanes each, fused multiply-adds).
#[inline(always)]
fn dots4(x: [&[f32]; 4], e: &[f32]) -> [f32; 4] {
    let mut lanes = [[0.0f32; 8]; 4];
    let chunks = e.len() / 8;
    for c in 0..chunks {
        let ec: &[f32; 8] = e[c * 8..c * 8 + 8].try_into().expect("8 lanes");
        for (lane, xr) in lanes.iter_mut().zip(x) {
            let xc: &[f32; 8] = xr[c * 8..c * 8 + 8].try_into().expect("8 lanes");
            for l in 0..8 {
                lane[l] = xc[l].mul_add(ec[l], lane[l]);
            }
        }
    }
    let mut out = [0.0f32; 4];
    for ((o, lane), xr) in out.iter_mut().zip(&lanes).zip(x) {
        let tail: f32 = xr[chunks * 8..].iter().zip(&e[chunks * 8..]).map(|(a, b)| a * b).sum();
        *o = sum_lanes(lane) + tail;
    }
    out
}

// `acc[i][r] = dot(x[i], e[r0 + r])` for the rows of `x` (`[m, k]`) and `rows` rows of `e`
// (`[_, k]`): four rows of `x` per pass over a row of `e`, so each `e` element loaded serves four
// products.
simd_dispatch! {
    fn stream_dots(x: &[f32], k: usize, e: &[f32], r0: usize, acc: &mut [f32], rows: usize) {
        let m = x.len() / k;
        let row = |i: usize| &x[i.min(m - 1) * k..(i.min(m - 1) + 1) * k];
        for r in 0..rows {
            let erow = &e[(r0 + r) * k..(r0 + r + 1) * k];
            for i in (0..m).step_by(4) {
                // Past the last row, repeat it and drop the extra results.
                let d = dots4([row(i), row(i + 1), row(i + 2), row(i + 3)], erow);
                for (j, v) in d.into_iter().enumerate().take(m - i) {
                    acc[(i + j) * rows + r] = v;
                }
            }
        }
    }
}

/// Row counts up to which the projections stream their weights ([`stream_columns`],
/// [`stream_dots`]) instead of calling gemm: gemm packs the whole weight on every call, which
/// for a few rows (decoding, lockstep batches, token-tree heads) costs more than the product.
const STREAM_MAX_ROWS: usize = 16;

/// `x [m, k] · w` with `w` `[k, n]` (`transposed`: `w` is `[n, k]` and the product is with its
/// transpose), for `m <= STREAM_MAX_ROWS`; column (or row) blocks of `w` in parallel.
fn stream_matmul(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, transposed: bool) -> Vec<f32> {
    // Blocks of at most ~256 columns, as many as a multiple of the threads so that every thread
    // streams the same share of the weight (576 columns in 3 blocks would leave one of two
    // threads idle a third of the time).
    let threads = rayon::current_num_threads().max(1);
    let blocks = n.div_ceil(256).div_ceil(threads) * threads;
    let width = n.div_ceil(blocks).next_multiple_of(8);
    let mut out = vec![0.0f32; m * n];
    let shared = SharedOut(out.as_mut_ptr());
    (0..n.div_ceil(width)).into_par_iter().for_each(|b| {
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let j0 = b * width;
        let bw = width.min(n - j0);
        // At most 8 rows per pass keeps the column kernel's sums in L1.
        for (chunk, xs) in x.chunks(8 * k).enumerate() {
            let rows = xs.len() / k;
            let mut acc = vec![0.0f32; rows * bw];
            if transposed {
                stream_dots(xs, k, w, j0, &mut acc, bw);
            } else {
                stream_columns(xs, k, w, n, j0, &mut acc, bw);
            }
            for (i, row) in acc.chunks_exact(bw).enumerate() {
                // SAFETY: this block writes only columns j0..j0 + bw of each output row.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), shared.0.add((chunk * 8 + i) * n + j0), bw) };
            }
        }
    });
    out
}

/// A raw output pointer shared by parallel workers that write disjoint parts.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: workers write disjoint index sets (one head's columns each), never read others'.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `x · w` (`transposed`: `x · wᵀ`), streamed for 2..=`STREAM_MAX_ROWS` rows, else gemm (one
/// row: gemm's matrix-vector path is as fast; more rows: gemm's packing pays).
fn project(x: Tensor<Flex, 2>, w: Tensor<Flex, 2>, transposed: bool) -> Tensor<Flex, 2> {
    let [m, k] = x.dims();
    if reference_forced() || m == 1 || m > STREAM_MAX_ROWS {
        return if transposed { x.matmul(w.transpose()) } else { x.matmul(w) };
    }
    let n = w.dims()[if transposed { 0 } else { 1 }];
    let ((x, _), (w, _)) = (host(x), host(w));
    tensor(stream_matmul(data(&x), m, k, data(&w), n, transposed), [m, n])
}

impl LayerOps for Flex {
    fn matmul_weight(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        project(x, w, false)
    }

    fn matmul_weight_t(x: Tensor<Self, 2>, e: Tensor<Self, 2>) -> Tensor<Self, 2> {
        project(x, e, true)
    }

    fn split_heads_rope(
        qkv: Tensor<Self, 2>, heads: Heads, rope: &Rope<Self>, positions: &Positions<Self>,
        norms: Option<(&RmsNorm<Self>, &RmsNorm<Self>)>,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 3>) {
        if reference_forced() {
            return reference::split_heads_rope(qkv, heads, rope, positions, norms);
        }
        let Heads { q: nh, kv: nkv, dim: hd } = heads;
        let (qkv, [s, width]) = host(qkv);
        let src = data(&qkv);
        let half = hd / 2;
        let norm_weights = norms.map(|(qn, kn)| {
            let w =
                |n: &RmsNorm<Flex>| (n.weight.val().into_data().into_vec::<f32>().expect("f32 weights"), n.eps as f32);
            (w(qn), w(kn))
        });
        let pos = |i: usize| match positions {
            Positions::From(start) => start + i,
            Positions::Given { host, .. } => host[i],
        };
        assert!(
            s == 0 || pos(s - 1) < rope.max_len() || matches!(positions, Positions::Given { .. }),
            "RoPE table too short"
        );
        let mut q = vec![0.0f32; nh * s * hd];
        let mut k = vec![0.0f32; nkv * s * hd];
        let mut v = vec![0.0f32; nkv * s * hd];
        let mut buf = vec![0.0f32; hd];
        for i in 0..s {
            let row = &src[i * width..(i + 1) * width];
            let p = pos(i);
            let cos = &rope.cos_host[p * hd..(p + 1) * hd];
            let sin = &rope.sin_host[p * hd..(p + 1) * hd];
            let mut rotate_into = |x: &[f32], norm: Option<&(Vec<f32>, f32)>, dst: &mut [f32]| {
                buf.copy_from_slice(x);
                if let Some((w, eps)) = norm {
                    let ms = buf.iter().map(|a| a * a).sum::<f32>() / hd as f32;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for (a, g) in buf.iter_mut().zip(w) {
                        *a = *a * inv * g;
                    }
                }
                for d in 0..half {
                    dst[d] = buf[d] * cos[d] - buf[d + half] * sin[d];
                    dst[d + half] = buf[d + half] * cos[d + half] + buf[d] * sin[d + half];
                }
            };
            for h in 0..nh {
                let dst = &mut q[(h * s + i) * hd..(h * s + i + 1) * hd];
                rotate_into(&row[h * hd..(h + 1) * hd], norm_weights.as_ref().map(|n| &n.0), dst);
            }
            for h in 0..nkv {
                let off = (nh + h) * hd;
                let dst = &mut k[(h * s + i) * hd..(h * s + i + 1) * hd];
                rotate_into(&row[off..off + hd], norm_weights.as_ref().map(|n| &n.1), dst);
                let off = (nh + nkv + h) * hd;
                v[(h * s + i) * hd..(h * s + i + 1) * hd].copy_from_slice(&row[off..off + hd]);
            }
        }
        (tensor(q, [nh, s, hd]), tensor(k, [nkv, s, hd]), tensor(v, [nkv, s, hd]))
    }

    fn attend(
        q: Tensor<Self, 3>, k: Tensor<Self, 3>, v: Tensor<Self, 3>, heads: Heads, mask: &AttnMask<Self>,
    ) -> Tensor<Self, 2> {
        if reference_forced() {
            return reference::attend(q, k, v, heads, mask);
        }
        let (q, [nh, s, hd]) = host(q);
        let (k, [_, t, _]) = host(k);
        let (v, _) = host(v);
        let (q, k, v) = (data(&q), data(&k), data(&v));
        let g = heads.group();
        let scale = 1.0 / (hd as f32).sqrt();
        let width = nh * hd;
        let mut out = vec![0.0f32; s * width];
        let shared = SharedOut(out.as_mut_ptr());
        let hidden = match mask {
            AttnMask::Causal => None,
            AttnMask::Given { host, .. } => {
                assert_eq!(t, s, "an explicit mask needs as many keys as queries");
                Some(host.as_ref())
            }
        };
        let work = |h: usize| {
            // Capture the whole wrapper (closures would otherwise capture the raw pointer field).
            #[allow(clippy::redundant_locals)]
            let shared = shared;
            let kvh = h / g;
            let qh = &q[h * s * hd..(h + 1) * s * hd];
            let kh = &k[kvh * t * hd..(kvh + 1) * t * hd];
            let vh = &v[kvh * t * hd..(kvh + 1) * t * hd];
            let mut scores = vec![0.0f32; s * t];
            if s >= 8 {
                // SAFETY: slices are in bounds; gemm reads q/k and writes the scores buffer.
                unsafe {
                    gemm::gemm(
                        s,
                        t,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        t as isize,
                        false,
                        qh.as_ptr(),
                        1,
                        hd as isize,
                        kh.as_ptr(),
                        hd as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            } else {
                for i in 0..s {
                    dot_rows(&qh[i * hd..(i + 1) * hd], kh, hd, scale, &mut scores[i * t..(i + 1) * t]);
                }
            }
            for i in 0..s {
                let row = &mut scores[i * t..(i + 1) * t];
                let visible = match hidden {
                    None => i + 1 + (t - s),
                    Some(m) => {
                        for (j, x) in row.iter_mut().enumerate() {
                            if m[i * s + j] {
                                *x = f32::NEG_INFINITY;
                            }
                        }
                        t
                    }
                };
                softmax_row(row, visible);
            }
            if s >= 8 {
                // SAFETY: this head writes only columns h*hd..(h+1)*hd of `out`.
                unsafe {
                    gemm::gemm(
                        s,
                        hd,
                        t,
                        shared.0.add(h * hd),
                        1,
                        width as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        t as isize,
                        vh.as_ptr(),
                        1,
                        hd as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            } else {
                let mut row_out = vec![0.0f32; hd];
                for i in 0..s {
                    weighted_sum(&scores[i * t..(i + 1) * t], vh, hd, &mut row_out);
                    // SAFETY: as above, only this head's columns.
                    unsafe { std::ptr::copy_nonoverlapping(row_out.as_ptr(), shared.0.add(i * width + h * hd), hd) };
                }
            }
        };
        if s * t * nh >= 4096 {
            (0..nh).into_par_iter().for_each(work);
        } else {
            (0..nh).for_each(work);
        }
        tensor(out, [s, width])
    }

    fn swiglu(gate_up: Tensor<Self, 2>, f: usize) -> Tensor<Self, 2> {
        if reference_forced() {
            return reference::swiglu(gate_up, f);
        }
        let (gu, [s, _]) = host(gate_up);
        let gu = data(&gu);
        let mut out = vec![0.0f32; s * f];
        // Rows in parallel chunks big enough to amortize the dispatch.
        let rows_per_chunk = (16384 / f).max(1);
        out.par_chunks_mut(rows_per_chunk * f)
            .zip(gu.par_chunks(rows_per_chunk * 2 * f))
            .for_each(|(o, g)| swiglu_rows(g, o, f));
        tensor(out, [s, f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weight-streaming products equal a plain f64 triple loop, for row counts up to the
    /// limit (several passes of 8), column counts that leave partial blocks, and inner sizes
    /// that leave a tail after the unrolled steps.
    #[test]
    fn streamed_products_match_a_plain_product() {
        for (m, k, n) in [(2, 7, 5), (3, 64, 300), (8, 129, 257), (11, 33, 513), (16, 576, 40)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let got = stream_matmul(&x, m, k, &w, n, false);
            // The same numbers read as `e` `[n, k]` (the transposed layout).
            let e: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let got_t = stream_matmul(&x, m, k, &e, n, true);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|l| x[i * k + l] as f64 * w[l * n + j] as f64).sum();
                    assert!(
                        (got[i * n + j] as f64 - want).abs() < 1e-4,
                        "{m}x{k}x{n} at ({i}, {j}): {} vs {want}",
                        got[i * n + j]
                    );
                    assert!((got_t[i * n + j] as f64 - want).abs() < 1e-4, "transposed {m}x{k}x{n} at ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn exp_is_accurate_over_the_range() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
    }
}
