//! Fused CPU kernels for [`LayerOps`] on burn's flex backend.
//!
//! burn's CPU elementwise ops are fast on contiguous tensors but walk permuted views element by
//! element, and its attention copies its inputs to a head-major layout and runs heads one after
//! another. These kernels read the projection outputs as they are, write head-major q/k/v in one
//! pass (RoPE included), run attention per head in parallel with gemm for the two products, and
//! write the attention output straight into the token-major layout the output projection reads.
//!
//! Weights held as stored (the default) are multiplied by [`crate::stored::kernels`]. Dense f32
//! weights (`--weights f32`, the comparison path): projections of a few rows are bound by reading
//! the weights from memory, so each weight is repacked once into column panels read front to
//! back ([`pack_panels`], kept in a registry beside the weight, so that path holds the weights
//! twice) and multiplied with the row sums in registers ([`panel_matmul`]).
//! The arithmetic is the same as the reference implementation in [`crate::ops::reference`]
//! (tests compare the two), except `exp`, computed by a polynomial accurate to about 2 ulp.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::ops::{AttnMask, Heads, KvCache, KvRun, LayerOps, Positions, RmsNorm, Rope};
use crate::stored::{self, StoredMatrix};

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

/// The sum of 8 lanes, pairwise (halves, then quarters: the order of a vector reduction, which
/// the AVX2 kernels use), so the adds are 3 levels deep rather than a chain of 8.
#[inline(always)]
fn sum8(l: &[f32; 8]) -> f32 {
    let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// `out[j] = scale · (q · keys[j])` for consecutive keys of `hd` values. Each key's sum is 8
/// lanes over the 8-value chunks ([`sum8`]), then the tail past them: the same operations on
/// every instruction set and whatever the number of keys.
fn dot_rows(q: &[f32], keys: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && crate::avx2_fma() {
        assert!(q.len() >= hd, "q holds fewer than {hd} values");
        // SAFETY: AVX2 and FMA were detected; the kernel reads `hd` values of q and of each key.
        return unsafe { attention_avx2::dot_rows(q, keys, hd, scale, out) };
    }
    dot_rows_portable(q, keys, hd, scale, out)
}

fn dot_rows_portable(q: &[f32], keys: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    let whole = hd / 8 * 8;
    for (o, k) in out.iter_mut().zip(keys.chunks_exact(hd)) {
        let mut lanes = [0.0f32; 8];
        for c in (0..whole).step_by(8) {
            for l in 0..8 {
                lanes[l] += q[c + l] * k[c + l];
            }
        }
        let mut sum = sum8(&lanes);
        if whole < hd {
            sum += q[whole..].iter().zip(&k[whole..hd]).map(|(a, b)| a * b).sum::<f32>();
        }
        *o = sum * scale;
    }
}

/// `out += Σ p[j] · values[j]` (rows of `hd` values), position after position, each element's
/// product rounded and then added (no fused multiply-add), on every instruction set.
fn weighted_sum(p: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && crate::avx2_fma() {
        assert!(out.len() >= hd, "out holds fewer than {hd} values");
        // SAFETY: AVX2 and FMA were detected; the kernel reads `hd` values of each position and
        // writes `hd` of out.
        return unsafe { attention_avx2::weighted_sum(p, values, hd, out) };
    }
    weighted_sum_portable(p, values, hd, out)
}

fn weighted_sum_portable(p: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
    for (&w, v) in p.iter().zip(values.chunks_exact(hd)) {
        if w != 0.0 {
            for (o, x) in out.iter_mut().zip(v) {
                *o += w * x;
            }
        }
    }
}

/// Attention's dot products and weighted sums in AVX2 registers, written out because the loop
/// vectorizer left them in scalar and 2-lane code (`perf annotate`). Same operations per value as
/// the portable loops, so the same bits (tested).
#[cfg(target_arch = "x86_64")]
mod attention_avx2 {
    use std::arch::x86_64::*;

    /// [`super::sum8`] of a register's lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sum8(v: __m256) -> f32 {
        let a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let b = _mm_add_ps(a, _mm_movehl_ps(a, a));
        _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)))
    }

    /// # Safety
    /// AVX2 and FMA available; `hd.is_multiple_of(8)`, `q.len() >= hd`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(q: &[f32], keys: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
        debug_assert!(hd.is_multiple_of(8) && q.len() >= hd);
        // SAFETY: loads of `hd` values from q and from key j < keys.len() / hd.
        unsafe {
            let n = out.len().min(keys.len() / hd);
            let (qp, kp) = (q.as_ptr(), keys.as_ptr());
            let mut j = 0;
            // Four keys at a time: four sums in flight, each key's the same operations as alone.
            while j + 4 <= n {
                let k = [kp.add(j * hd), kp.add((j + 1) * hd), kp.add((j + 2) * hd), kp.add((j + 3) * hd)];
                let mut acc = [_mm256_setzero_ps(); 4];
                for c in (0..hd).step_by(8) {
                    let qv = _mm256_loadu_ps(qp.add(c));
                    for (a, k) in acc.iter_mut().zip(k) {
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(qv, _mm256_loadu_ps(k.add(c))));
                    }
                }
                for (o, a) in out[j..j + 4].iter_mut().zip(acc) {
                    *o = sum8(a) * scale;
                }
                j += 4;
            }
            for (o, j) in out[j..n].iter_mut().zip(j..) {
                let k = kp.add(j * hd);
                let mut acc = _mm256_setzero_ps();
                for c in (0..hd).step_by(8) {
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(k.add(c))));
                }
                *o = sum8(acc) * scale;
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA available; `hd.is_multiple_of(8)`, `out.len() >= hd`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sum(p: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
        debug_assert!(hd.is_multiple_of(8) && out.len() >= hd);
        // SAFETY: loads and stores of columns < hd of out and of position j < values.len() / hd.
        unsafe {
            let (vp, op) = (values.as_ptr(), out.as_mut_ptr());
            let positions = p.len().min(values.len() / hd);
            // 64 output columns (8 registers) held over all positions, then 8 at a time.
            let mut c = 0;
            while c + 64 <= hd {
                let mut acc = [_mm256_setzero_ps(); 8];
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(op.add(c + 8 * i));
                }
                for (j, &w) in p[..positions].iter().enumerate() {
                    if w != 0.0 {
                        let (wv, v) = (_mm256_set1_ps(w), vp.add(j * hd + c));
                        for (i, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, _mm256_loadu_ps(v.add(8 * i))));
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(op.add(c + 8 * i), *a);
                }
                c += 64;
            }
            while c < hd {
                let mut acc = _mm256_loadu_ps(op.add(c));
                for (j, &w) in p[..positions].iter().enumerate() {
                    if w != 0.0 {
                        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(w), _mm256_loadu_ps(vp.add(j * hd + c))));
                    }
                }
                _mm256_storeu_ps(op.add(c), acc);
                c += 8;
            }
        }
    }
}

/// Runs a K/V cache may hold after the first before they merge ([`LayerOps::extend_cache`]).
const MAX_KV_RUNS: usize = 16;

/// Consecutive runs as one: each head's positions from run after run.
fn merge_runs(runs: &[Arc<KvRun<Flex>>]) -> KvRun<Flex> {
    let merge = |parts: Vec<&Tensor<Flex, 3>>| {
        let [heads, _, hd] = parts[0].dims();
        let hosts: Vec<(FlexTensor, usize)> = parts.iter().map(|p| (host((*p).clone()).0, p.dims()[1])).collect();
        let t: usize = hosts.iter().map(|h| h.1).sum();
        let mut out = Vec::with_capacity(heads * t * hd);
        for h in 0..heads {
            for (x, len) in &hosts {
                out.extend_from_slice(&data(x)[h * len * hd..(h + 1) * len * hd]);
            }
        }
        tensor(out, [heads, t, hd])
    };
    KvRun { k: merge(runs.iter().map(|r| &r.k).collect()), v: merge(runs.iter().map(|r| &r.v).collect()) }
}

/// Columns per panel of a packed weight ([`pack_panels`]).
const PANEL: usize = 16;

/// `w` (`[k, n]`, or `[n, k]` when `transposed`) as panels of [`PANEL`] columns of the
/// `[k, n]` product operand, each panel `[k, PANEL]` contiguous (the last padded with zeros): a
/// streamed product then reads every panel front to back.
fn pack_panels(w: &[f32], k: usize, n: usize, transposed: bool) -> Vec<f32> {
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0.0f32; panels * k * PANEL];
    for (p, panel) in out.chunks_exact_mut(k * PANEL).enumerate() {
        for (l, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            for (j, o) in row.iter_mut().enumerate().take(n.saturating_sub(p * PANEL)) {
                let col = p * PANEL + j;
                *o = if transposed { w[col * k + l] } else { w[l * n + col] };
            }
        }
    }
    out
}

/// `out[r][..PANEL] += x[r] · panel` for the `R` rows of a row tile, given column-major
/// (`xt[l][r]`, see [`row_tiles`]), over as many panel rows as `xt` has: the `R x PANEL` sums
/// stay in registers while the panel streams past.
#[inline(always)]
fn panel_tile<const R: usize>(xt: &[f32], panel: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::avx2_fma() {
        // SAFETY: the features were just detected on this CPU.
        return unsafe { panel_tile_avx2::<R>(xt, panel, out) };
    }
    let mut acc = [[0.0f32; PANEL]; R];
    for (acc, o) in acc.iter_mut().zip(out.chunks_exact(PANEL)) {
        acc.copy_from_slice(o);
    }
    for (w, a) in panel.as_chunks::<PANEL>().0.iter().zip(xt.as_chunks::<R>().0) {
        for (acc, &a) in acc.iter_mut().zip(a) {
            for (o, &w) in acc.iter_mut().zip(w) {
                *o = a.mul_add(w, *o);
            }
        }
    }
    for (o, a) in out.chunks_exact_mut(PANEL).zip(&acc) {
        o.copy_from_slice(a);
    }
}

/// [`panel_tile`] in AVX2 intrinsics: the compiler's own vectorization of it kept storing the
/// sums to memory on every step; here they stay in registers, and the weights a few rows ahead
/// are prefetched.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn panel_tile_avx2<const R: usize>(xt: &[f32], panel: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};
    const { assert!(PANEL == 16) };
    assert!(out.len() >= R * PANEL, "one output row per tile row");
    // SAFETY: `out` holds R rows of 16 floats (just checked).
    let mut lo: [_; R] = std::array::from_fn(|r| unsafe { _mm256_loadu_ps(out.as_ptr().add(r * PANEL)) });
    let mut hi: [_; R] = std::array::from_fn(|r| unsafe { _mm256_loadu_ps(out.as_ptr().add(r * PANEL + 8)) });
    for (w, a) in panel.as_chunks::<PANEL>().0.iter().zip(xt.as_chunks::<R>().0) {
        // SAFETY: `w` holds 16 floats; a prefetch of any address is harmless.
        let (w0, w1) = unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                w.as_ptr().wrapping_add(PREFETCH_FLOATS) as *const i8,
            );
            (_mm256_loadu_ps(w.as_ptr()), _mm256_loadu_ps(w.as_ptr().add(8)))
        };
        for r in 0..R {
            let b = _mm256_set1_ps(a[r]);
            lo[r] = _mm256_fmadd_ps(b, w0, lo[r]);
            hi[r] = _mm256_fmadd_ps(b, w1, hi[r]);
        }
    }
    for (r, o) in out.chunks_exact_mut(PANEL).take(R).enumerate() {
        // SAFETY: `o` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), lo[r]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), hi[r]);
        }
    }
}

/// Rows of `x` (`[m, k]`) in tiles of 4, then at most one of 2 and one of 1, each tile
/// column-major (`[k, rows]`).
fn row_tiles(x: &[f32], m: usize, k: usize) -> Vec<(usize, Vec<f32>)> {
    let mut sizes = vec![4; m / 4];
    if m % 4 >= 2 {
        sizes.push(2);
    }
    if m % 2 == 1 {
        sizes.push(1);
    }
    let mut r = 0;
    sizes
        .into_iter()
        .map(|size| {
            let mut t = vec![0.0f32; k * size];
            for (l, col) in t.chunks_exact_mut(size).enumerate() {
                for (i, v) in col.iter_mut().enumerate() {
                    *v = x[(r + i) * k + l];
                }
            }
            r += size;
            (size, t)
        })
        .collect()
}

/// `out = x · panel` (`out` `[m, PANEL]`) for the row tiles of `x`. The panel is taken in
/// blocks of [`PANEL_BLOCK`] rows, every tile using a block while it is in L1: the next block
/// then streams in from memory during the whole product, not only during the first tile's pass.
fn panel_rows(tiles: &[(usize, Vec<f32>)], panel: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (b, block) in panel.chunks(PANEL_BLOCK * PANEL).enumerate() {
        let (l0, l1) = (b * PANEL_BLOCK, b * PANEL_BLOCK + block.len() / PANEL);
        let mut row = 0;
        for (size, xt) in tiles {
            let (xt, o) = (&xt[l0 * size..l1 * size], &mut out[row * PANEL..(row + size) * PANEL]);
            match size {
                4 => panel_tile::<4>(xt, block, o),
                2 => panel_tile::<2>(xt, block, o),
                _ => panel_tile::<1>(xt, block, o),
            }
            row += size;
        }
    }
}

/// How far ahead of the panel row in use the AVX2 tile asks for weights (4 KiB, one block of
/// [`panel_rows`]): with it one row streams the weights at about the machine's memory bandwidth,
/// 1.3x the speed without it on the 2-core development machine.
const PREFETCH_FLOATS: usize = 1024;

/// Panel rows per block in [`panel_rows`] (4 KiB of weights).
const PANEL_BLOCK: usize = 64;

/// `x [m, k] · w` for `w` packed by [`pack_panels`] with `n` columns; panels in parallel.
fn panel_matmul(x: &[f32], m: usize, k: usize, packed: &[f32], n: usize) -> Vec<f32> {
    let panels = n.div_ceil(PANEL);
    let threads = rayon::current_num_threads().max(1);
    let per_task = panels.div_ceil(threads * 4).max(1);
    let tiles = row_tiles(x, m, k);
    let mut out = vec![0.0f32; m * n];
    let shared = SharedOut(out.as_mut_ptr());
    (0..panels.div_ceil(per_task)).into_par_iter().for_each(|t| {
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let mut tile = vec![0.0f32; m * PANEL];
        for p in t * per_task..((t + 1) * per_task).min(panels) {
            panel_rows(&tiles, &packed[p * k * PANEL..(p + 1) * k * PANEL], &mut tile);
            let (j0, w) = (p * PANEL, PANEL.min(n - p * PANEL));
            for (i, row) in tile.chunks_exact(PANEL).enumerate() {
                // SAFETY: this task writes only the columns of its own panels.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), shared.0.add(i * n + j0), w) };
            }
        }
    });
    out
}

/// Row counts up to which the projections use packed weights ([`panel_matmul`]) instead of
/// calling gemm: gemm packs the whole weight on every call, which for a few rows (decoding,
/// lockstep batches, token-tree heads) costs more than the product.
const PANEL_MAX_ROWS: usize = 16;

/// A weight packed into panels, made on first use. It holds a clone of the weight it was made
/// from, so the weight's storage can neither be freed (and its address reused by another
/// tensor) nor changed in place (flex copies on write when storage is shared) while the entry
/// exists.
struct PackedWeight {
    pinned: FlexTensor,
    panels: Arc<Vec<f32>>,
}

/// First element's address, `k`, `n`, transposed.
type PackedKey = (usize, usize, usize, bool);

/// Packed weights by weight. Entries whose weight only the registry still holds (its model was
/// dropped) are removed whenever a new weight is packed.
static PACKED: LazyLock<Mutex<HashMap<PackedKey, PackedWeight>>> = LazyLock::new(Mutex::default);

/// The panels of `w` (contiguous f32, `[k, n]`, or `[n, k]` when `transposed`).
fn packed(w: &FlexTensor, k: usize, n: usize, transposed: bool) -> Arc<Vec<f32>> {
    if w.is_unique() {
        // A copy made for this call (the weight was not one whole contiguous buffer).
        return Arc::new(pack_panels(data(w), k, n, transposed));
    }
    let key = (data(w).as_ptr() as usize, k, n, transposed);
    let mut map = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = map.get(&key) {
        return e.panels.clone();
    }
    // Several entries (two readings of one weight) may pin the same storage: an entry goes
    // when its pins are all that hold the storage.
    let storage = |e: &PackedWeight| {
        let arc = e.pinned.data_arc();
        (Arc::as_ptr(&arc) as usize, Arc::strong_count(&arc) - 1)
    };
    let mut pins: HashMap<usize, usize> = HashMap::new();
    for e in map.values() {
        *pins.entry(storage(e).0).or_default() += 1;
    }
    map.retain(|_, e| {
        let (ptr, holders) = storage(e);
        holders > pins[&ptr]
    });
    let panels = Arc::new(pack_panels(data(w), k, n, transposed));
    map.insert(key, PackedWeight { pinned: w.clone(), panels: panels.clone() });
    panels
}

/// A raw output pointer shared by parallel workers that write disjoint parts.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: workers write disjoint index sets (one head's or one panel's columns each), never
// read others'.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `x · w` (`transposed`: `x · wᵀ`): packed panels for up to [`PANEL_MAX_ROWS`] rows, else
/// gemm (its packing pays for many rows).
fn project(x: Tensor<Flex, 2>, w: Tensor<Flex, 2>, transposed: bool) -> Tensor<Flex, 2> {
    let [m, k] = x.dims();
    if m > PANEL_MAX_ROWS {
        return if transposed { x.matmul(w.transpose()) } else { x.matmul(w) };
    }
    let n = w.dims()[if transposed { 0 } else { 1 }];
    let ((x, _), (w, _)) = (host(x), host(w));
    tensor(panel_matmul(data(&x), m, k, &packed(&w, k, n, transposed), n), [m, n])
}

impl LayerOps for Flex {
    const STORED_WEIGHTS: bool = true;

    fn matmul_stored(x: Tensor<Self, 2>, parts: &[StoredMatrix]) -> Tensor<Self, 2> {
        let (x, [m, _]) = host(x);
        let n: usize = parts.iter().map(StoredMatrix::rows).sum();
        let mut out = vec![0.0f32; m * n];
        stored::kernels::matmul(data(&x), m, parts, &mut out);
        tensor(out, [m, n])
    }

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

    fn attend(q: Tensor<Self, 3>, kv: &KvCache<Self>, heads: Heads, mask: &AttnMask<Self>) -> Tensor<Self, 2> {
        let (q, [nh, s, hd]) = host(q);
        let q = data(&q);
        // Many query rows go through gemm, which wants the keys in one run.
        let whole;
        let runs = if s >= 8 && kv.runs().len() > 1 {
            whole = [Arc::new(merge_runs(kv.runs()))];
            &whole[..]
        } else {
            kv.runs()
        };
        let runs: Vec<(FlexTensor, FlexTensor, usize)> =
            runs.iter().map(|r| (host(r.k.clone()).0, host(r.v.clone()).0, r.len())).collect();
        let t: usize = runs.iter().map(|r| r.2).sum();
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
        // Head `kvh` of each run: (its keys, its values, its first position).
        let head_runs = |kvh: usize| {
            let mut start = 0;
            runs.iter()
                .map(move |(k, v, len)| {
                    let span = kvh * len * hd..(kvh + 1) * len * hd;
                    start += len;
                    (&data(k)[span.clone()], &data(v)[span], start - len)
                })
                .collect::<Vec<_>>()
        };
        let work = |h: usize| {
            // Capture the whole wrapper (closures would otherwise capture the raw pointer field).
            #[allow(clippy::redundant_locals)]
            let shared = shared;
            let qh = &q[h * s * hd..(h + 1) * s * hd];
            let head = head_runs(h / g);
            let mut scores = vec![0.0f32; s * t];
            if s >= 8 {
                let [(kh, _, _)] = head[..] else { unreachable!("gemm takes one run") };
                // SAFETY: slices are in bounds; gemm reads q/k and writes the scores buffer.
                unsafe {
                    stored::kernels::gemm_f32(
                        (s, t, hd),
                        (scores.as_mut_ptr(), t),
                        (qh.as_ptr(), hd),
                        (kh.as_ptr(), hd, 1),
                        scale,
                    )
                };
            } else {
                for i in 0..s {
                    for &(kh, _, start) in &head {
                        let len = kh.len() / hd;
                        dot_rows(&qh[i * hd..(i + 1) * hd], kh, hd, scale, &mut scores[i * t + start..][..len]);
                    }
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
                let [(_, vh, _)] = head[..] else { unreachable!("gemm takes one run") };
                // SAFETY: this head writes only columns h*hd..(h+1)*hd of `out`.
                unsafe {
                    stored::kernels::gemm_f32(
                        (s, hd, t),
                        (shared.0.add(h * hd), width),
                        (scores.as_ptr(), t),
                        (vh.as_ptr(), 1, hd),
                        1.0,
                    )
                };
            } else {
                let mut row_out = vec![0.0f32; hd];
                for i in 0..s {
                    // Position after position across the runs: the sums of one run.
                    row_out.fill(0.0);
                    for &(_, vh, start) in &head {
                        let len = vh.len() / hd;
                        weighted_sum(&scores[i * t + start..][..len], vh, hd, &mut row_out);
                    }
                    // SAFETY: as above, only this head's columns.
                    unsafe { std::ptr::copy_nonoverlapping(row_out.as_ptr(), shared.0.add(i * width + h * hd), hd) };
                }
            }
        };
        if s * t * nh >= 4096 {
            crate::pool::for_each_task(nh, work);
        } else {
            (0..nh).for_each(work);
        }
        tensor(out, [s, width])
    }

    fn swiglu(gate_up: Tensor<Self, 2>, f: usize) -> Tensor<Self, 2> {
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

    fn extend_cache(past: Option<&KvCache<Self>>, k: Tensor<Self, 3>, v: Tensor<Self, 3>) -> KvCache<Self> {
        let Some(past) = past else { return KvCache::new(k, v) };
        // A new run, not a copy of the cache (copying it every decoding step was a sixth of a
        // lockstep step); past MAX_KV_RUNS runs, those after the first (the prompt's) merge
        // into one, so a step copies 1/MAX_KV_RUNS of the generated positions on average.
        let cache = past.with_run(KvRun { k, v });
        match cache.runs() {
            [first, rest @ ..] if rest.len() >= MAX_KV_RUNS => {
                KvCache::new(first.k.clone(), first.v.clone()).with_run(merge_runs(rest))
            }
            _ => cache,
        }
    }

    fn for_segments<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let slots: Vec<std::sync::Mutex<Option<T>>> = (0..n).map(|_| Default::default()).collect();
        crate::pool::for_each_task(n, |i| *slots[i].lock().expect("each slot written once") = Some(f(i)));
        slots.into_iter().map(|s| s.into_inner().expect("no task panicked").expect("every task ran")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed products equal a plain f64 triple loop, for row counts up to the limit (tiles
    /// of 4, 2 and 1), column counts that leave a partial panel, and both weight layouts.
    #[test]
    fn packed_products_match_a_plain_product() {
        for (m, k, n) in [(1, 576, 49), (2, 7, 5), (3, 64, 300), (8, 129, 257), (11, 33, 513), (16, 576, 40)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let got = panel_matmul(&x, m, k, &pack_panels(&w, k, n, false), n);
            // The same numbers read as `e` `[n, k]` (the transposed layout).
            let e: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let got_t = panel_matmul(&x, m, k, &pack_panels(&e, k, n, true), n);
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

    /// Scores of keys taken four at a time are the same bits as each key's alone and as the
    /// portable loop's, for head sizes with and without a tail past the 8-lane chunks.
    #[test]
    fn scores_of_four_keys_at_once_are_each_keys_alone() {
        for hd in [64, 16, 12, 7] {
            let q: Vec<f32> = (0..hd).map(|i| ((i * 29 % 53) as f32 - 26.0) / 13.0).collect();
            for t in [1, 4, 7, 11] {
                let keys: Vec<f32> = (0..t * hd).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                let mut together = vec![0.0f32; t];
                dot_rows(&q, &keys, hd, 0.125, &mut together);
                let mut portable = vec![0.0f32; t];
                dot_rows_portable(&q, &keys, hd, 0.125, &mut portable);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&together), bits(&portable), "hd {hd}, t {t}: kernel and portable loop");
                for (j, got) in together.iter().enumerate() {
                    let mut alone = [0.0f32];
                    dot_rows(&q, &keys[j * hd..(j + 1) * hd], hd, 0.125, &mut alone);
                    assert_eq!(got.to_bits(), alone[0].to_bits(), "hd {hd}, t {t}, key {j}");
                    let want: f64 = (0..hd).map(|l| q[l] as f64 * keys[j * hd + l] as f64).sum::<f64>() * 0.125;
                    assert!((*got as f64 - want).abs() < 1e-4, "hd {hd}, key {j}: {got} vs {want}");
                }
            }
        }
    }

    /// Weighted sums with columns held in registers are the same bits as the plain loop
    /// (`out += w * v` position after position), for head sizes below, at and past 64 columns.
    #[test]
    fn weighted_sums_are_the_plain_loops_bits() {
        for hd in [7, 64, 80, 128] {
            for t in [1, 5, 33] {
                let p: Vec<f32> =
                    (0..t).map(|j| if j % 4 == 3 { 0.0 } else { ((j * 13 % 17) as f32 + 1.0) / 40.0 }).collect();
                let values: Vec<f32> = (0..t * hd).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                let start: Vec<f32> = (0..hd).map(|i| (i % 5) as f32 / 8.0).collect();
                let mut got = start.clone();
                weighted_sum(&p, &values, hd, &mut got);
                let mut want = start;
                for (j, &w) in p.iter().enumerate() {
                    for (o, x) in want.iter_mut().zip(&values[j * hd..(j + 1) * hd]) {
                        *o += w * x;
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "hd {hd}, t {t}");
            }
        }
    }

    /// A cache grown one position at a time holds several runs (never more than the prompt's
    /// and `MAX_KV_RUNS`) whose entries are the positions in order, and attention over it gives
    /// the same bits as over one run of the same positions, for decoding (one query row), a
    /// few rows and many (gemm).
    #[test]
    fn a_cache_of_runs_attends_like_one_run() {
        let heads = Heads { q: 6, kv: 2, dim: 16 };
        let value = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| (((i * 37 + seed * 101) % 197) as f32 - 98.0) / 60.0).collect()
        };
        let mut cache =
            KvCache::new(tensor(value(2 * 5 * 16, 0), [2, 5, 16]), tensor(value(2 * 5 * 16, 1), [2, 5, 16]));
        let (mut all_k, mut all_v) = (value(2 * 5 * 16, 0), value(2 * 5 * 16, 1));
        let mut most_runs = 0;
        for step in 0..40 {
            let (k, v) = (value(2 * 16, 2 * step + 2), value(2 * 16, 2 * step + 3));
            cache = Flex::extend_cache(Some(&cache), tensor(k.clone(), [2, 1, 16]), tensor(v.clone(), [2, 1, 16]));
            most_runs = most_runs.max(cache.runs().len());
            assert!(cache.runs().len() <= 1 + MAX_KV_RUNS, "{} runs", cache.runs().len());
            // Head-major `[2, t, 16]`: the new position goes at the end of each head.
            let t = cache.len();
            for (all, new) in [(&mut all_k, &k), (&mut all_v, &v)] {
                let mut next = Vec::with_capacity(2 * t * 16);
                for h in 0..2 {
                    next.extend_from_slice(&all[h * (t - 1) * 16..(h + 1) * (t - 1) * 16]);
                    next.extend_from_slice(&new[h * 16..(h + 1) * 16]);
                }
                *all = next;
            }
        }
        assert!(most_runs > 2, "the cache never held several runs");
        let t = cache.len();
        assert_eq!(t, 45);
        let KvRun { k, v } = cache.whole();
        assert_eq!(k.into_data().to_vec::<f32>().unwrap(), all_k);
        assert_eq!(v.into_data().to_vec::<f32>().unwrap(), all_v);
        let one = KvCache::new(tensor(all_k, [2, t, 16]), tensor(all_v, [2, t, 16]));
        for s in [1, 3, 9] {
            let q = || tensor(value(6 * s * 16, s), [6, s, 16]);
            let (runs, whole) = (
                Flex::attend(q(), &cache, heads, &AttnMask::Causal),
                Flex::attend(q(), &one, heads, &AttnMask::Causal),
            );
            assert_eq!(
                runs.into_data().to_vec::<f32>().unwrap(),
                whole.into_data().to_vec::<f32>().unwrap(),
                "{s} rows"
            );
        }
    }

    /// A weight is packed once while it lives: a second product reuses its panels, a copy
    /// made for one call is not kept, and a dropped weight's entry goes when another is packed.
    #[test]
    fn the_registry_packs_each_live_weight_once() {
        let (k, n) = (24, 40);
        let w = tensor((0..k * n).map(|i| i as f32).collect(), [k, n]).into_primitive().tensor();
        let held = w.clone(); // the model's own reference
        let first = packed(&w, k, n, false);
        assert!(Arc::ptr_eq(&first, &packed(&w, k, n, false)), "second use repacked");
        assert!(!Arc::ptr_eq(&first, &packed(&w, k, n, true)), "the transposed reading is another entry");
        let alone = tensor(vec![1.0; k * n], [k, n]).into_primitive().tensor();
        let temp = packed(&alone, k, n, false);
        assert_eq!(Arc::strong_count(&temp), 1, "a one-call copy was kept");
        drop((w, held));
        let other = tensor(vec![2.0; 8 * 8], [8, 8]).into_primitive().tensor();
        let _keep = other.clone();
        packed(&other, 8, 8, false);
        assert_eq!(Arc::strong_count(&first), 1, "the dropped weight's panels are still registered");
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
