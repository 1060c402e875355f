//! Weights as the file stores them: ggml's 4- and 8-bit blocks (Q4_0, Q4_1, Q8_0) and 16/32-bit
//! floats, held in memory (floats memory-mapped where no reordering is needed, blocks regrouped
//! into tiles of 16 rows) and multiplied by f32 activations in [`kernels`], dequantizing in
//! registers.
//!
//! A [`StoredMatrix`] is a PyTorch-layout `[rows, cols]` weight: each row is `cols` values, stored
//! as `cols / block` blocks. A projection computes `y = x · Wᵀ`, i.e. one dot product of an
//! activation row with each stored row.
//!
//! Exactness: every block value dequantizes to `d * q` or `d * q + m` where `d * q` is exact in
//! f32 (an 11-bit mantissa times an integer below 2^8), so the value in a register equals the f32
//! a dequantizing import writes, bit for bit. Products with these weights therefore equal the f32
//! path's up to the order of the float sums.

pub mod int8;
pub mod kernels;

use std::sync::Arc;

use memmap2::Mmap;

/// How a weight's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    /// 32 values: an f16 scale `d`, 16 bytes of 4-bit `q`; value `d * (q - 8)`.
    Q4_0,
    /// 32 values: f16 `d` and `m`, 16 bytes of 4-bit `q`; value `d * q + m`.
    Q4_1,
    /// 32 values: an f16 scale `d`, 32 signed bytes `q`; value `d * q`.
    Q8_0,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 6] = [
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q8_0,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::F32,
    ];

    /// (values per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            WeightFormat::F32 => (1, 4),
            WeightFormat::F16 | WeightFormat::BF16 => (1, 2),
            WeightFormat::Q4_0 => (32, 18),
            WeightFormat::Q4_1 => (32, 20),
            WeightFormat::Q8_0 => (32, 34),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "F32",
            WeightFormat::F16 => "F16",
            WeightFormat::BF16 => "BF16",
            WeightFormat::Q4_0 => "Q4_0",
            WeightFormat::Q4_1 => "Q4_1",
            WeightFormat::Q8_0 => "Q8_0",
        }
    }

    /// Bytes that `n` values take (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (per_block, block_bytes) = self.block();
        n.is_multiple_of(per_block).then(|| n / per_block).and_then(|b| b.checked_mul(block_bytes))
    }
}

// By name, in any case (`q4_1`, `Q4_1`).
cola_names::by_name!(WeightFormat, "weight format");

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The value of quant `q` (a byte for Q8_0, a nibble for the 4-bit formats) in a block with
/// header `d` (and `m` for Q4_1). The one definition of each block format's values.
#[inline(always)]
pub(crate) fn block_value(format: WeightFormat, q: u8, d: f32, m: f32) -> f32 {
    match format {
        WeightFormat::Q8_0 => q as i8 as f32 * d,
        WeightFormat::Q4_0 => (q as i32 - 8) as f32 * d,
        WeightFormat::Q4_1 => q as f32 * d + m,
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => unreachable!("not a block format"),
    }
}

/// Dequantizes whole blocks (`bytes` a whole number of blocks of `format`) into `out`
/// (`out.len()` values).
pub fn dequantize_into(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    let (per_block, block_bytes) = format.block();
    debug_assert_eq!(bytes.len() / block_bytes * per_block, out.len());
    for (b, o) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(per_block)) {
        match format {
            WeightFormat::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            WeightFormat::F16 => o[0] = f16(b),
            WeightFormat::BF16 => o[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            WeightFormat::Q8_0 => {
                let d = f16(b);
                for (o, &q) in o.iter_mut().zip(&b[2..34]) {
                    *o = block_value(format, q, d, 0.0);
                }
            }
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                let head = header_bytes(format);
                let (d, m) = (f16(b), if head == 4 { f16(&b[2..4]) } else { 0.0 });
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[head..head + 16]) {
                    *l = block_value(format, q & 0x0f, d, m);
                    *h = block_value(format, q >> 4, d, m);
                }
            }
        }
    }
}

/// Dequantizes one tile (see [`StoredMatrix`]) into `out[l * stride + r]`: value `l` (0..32) of
/// the block of the tile's row `r` (0..16).
pub(crate) fn dequantize_tile(format: WeightFormat, tile: &[u8], out: &mut [f32], stride: usize) {
    let (head, nibbles) = (header_bytes(format), format != WeightFormat::Q8_0);
    // One loop per format (the format a constant inside), so the loops vectorize.
    match format {
        WeightFormat::Q4_0 => {
            fill_tile(tile, out, stride, head, nibbles, |q, d, m| block_value(WeightFormat::Q4_0, q, d, m))
        }
        WeightFormat::Q4_1 => {
            fill_tile(tile, out, stride, head, nibbles, |q, d, m| block_value(WeightFormat::Q4_1, q, d, m))
        }
        WeightFormat::Q8_0 => {
            fill_tile(tile, out, stride, head, nibbles, |q, d, m| block_value(WeightFormat::Q8_0, q, d, m))
        }
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => unreachable!("float formats are not tiled"),
    }
}

/// [`dequantize_tile`] for a format with `head` header bytes, 4-bit quants if `nibbles`.
#[inline(always)]
fn fill_tile(
    tile: &[u8], out: &mut [f32], stride: usize, head: usize, nibbles: bool, value: impl Fn(u8, f32, f32) -> f32,
) {
    let header = |h: usize, r: usize| f16(&tile[h * 2 * TILE_ROWS + 2 * r..]);
    let d: [f32; TILE_ROWS] = std::array::from_fn(|r| header(0, r));
    let m: [f32; TILE_ROWS] = std::array::from_fn(|r| if head == 4 { header(1, r) } else { 0.0 });
    let quants = &tile[TILE_ROWS * head..];
    for (i, q) in quants.chunks_exact(TILE_ROWS).enumerate() {
        let q: &[u8; TILE_ROWS] = q.try_into().expect("whole tile rows");
        if nibbles {
            let lo: &mut [f32; TILE_ROWS] = (&mut out[i * stride..][..TILE_ROWS]).try_into().expect("16 values");
            for r in 0..TILE_ROWS {
                lo[r] = value(q[r] & 0x0f, d[r], m[r]);
            }
            let hi: &mut [f32; TILE_ROWS] = (&mut out[(i + 16) * stride..][..TILE_ROWS]).try_into().expect("16 values");
            for r in 0..TILE_ROWS {
                hi[r] = value(q[r] >> 4, d[r], m[r]);
            }
        } else {
            let o: &mut [f32; TILE_ROWS] = (&mut out[i * stride..][..TILE_ROWS]).try_into().expect("16 values");
            for r in 0..TILE_ROWS {
                o[r] = value(q[r], d[r], m[r]);
            }
        }
    }
}

/// Dequantizes whole blocks into a new vector.
pub fn dequantize(format: WeightFormat, bytes: &[u8]) -> Vec<f32> {
    let (per_block, block_bytes) = format.block();
    let mut out = vec![0.0f32; bytes.len() / block_bytes * per_block];
    dequantize_into(format, bytes, &mut out);
    out
}

/// Quantizes f32 values the way ggml's reference quantizer does (for writing test and random
/// GGUF files; `values.len()` a multiple of the block size).
pub fn quantize(format: WeightFormat, values: &[f32]) -> Vec<u8> {
    let (per_block, _) = format.block();
    assert!(values.len().is_multiple_of(per_block), "{} values do not fill {format} blocks", values.len());
    let h = |x: f32| half::f16::from_f32(x).to_le_bytes();
    let mut out = Vec::new();
    for v in values.chunks_exact(per_block) {
        match format {
            WeightFormat::F32 => out.extend(v[0].to_le_bytes()),
            WeightFormat::F16 => out.extend(h(v[0])),
            WeightFormat::BF16 => out.extend(half::bf16::from_f32(v[0]).to_le_bytes()),
            WeightFormat::Q8_0 => {
                let amax = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(h(d));
                out.extend(v.iter().map(|x| (x * id).round() as i8 as u8));
            }
            WeightFormat::Q4_0 => {
                // The value of largest magnitude maps to -8.
                let max = v.iter().fold(0.0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(h(d));
                let q = |x: f32| ((x * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(v[j]) | (q(v[j + 16]) << 4)));
            }
            WeightFormat::Q4_1 => {
                let min = v.iter().copied().fold(f32::INFINITY, f32::min);
                let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(h(d));
                out.extend(h(min));
                let q = |x: f32| (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(v[j]) | (q(v[j + 16]) << 4)));
            }
        }
    }
    out
}

/// Stored rows per tile of a block format (the lanes of an AVX-512 register).
pub const TILE_ROWS: usize = 16;

/// The bytes of a stored weight: its own copy, or a range of a memory-mapped file.
#[derive(Clone)]
enum Bytes {
    Owned(Arc<[u8]>),
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
}

/// A `[rows, cols]` weight in its stored format (PyTorch layout: one stored row per output).
///
/// Float formats keep the file's layout (row after row; memory-mapped where the file allows).
/// Block formats are held as *tiles*, the same blocks regrouped, so that one vector register
/// holds the same value position of 16 stored rows (the kernels then dequantize once for 16
/// outputs and multiply with a broadcast activation, with no horizontal sums):
///
/// - tile `(g, b)` holds block `b` of rows `16g..16g + 16` (missing rows of the last tile are
///   zero blocks), and a row group's tiles lie back to back: tile `(g, b)` starts at byte
///   `(g * blocks_per_row + b) * 16 * block_bytes`;
/// - in a tile, first each f16 of the block header (`d`, then `m` for Q4_1) for the 16 rows
///   (`2 * 16` bytes each), then the quant bytes: byte `i` of row `r` at `header + 16 * i + r`.
#[derive(Clone)]
pub struct StoredMatrix {
    format: WeightFormat,
    rows: usize,
    cols: usize,
    bytes: Bytes,
    /// How products with block formats are computed ([`kernels::Dot`]; exact unless asked).
    dot: kernels::Dot,
}

impl std::fmt::Debug for StoredMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredMatrix({} [{}, {}])", self.format, self.rows, self.cols)
    }
}

/// Why bytes cannot be a stored matrix (the caller names the tensor and file).
fn check(format: WeightFormat, rows: usize, cols: usize, len: usize) -> Result<(), String> {
    let (per_block, _) = format.block();
    if !cols.is_multiple_of(per_block) {
        return Err(format!("row length {cols} is not a multiple of the {format} block size {per_block}"));
    }
    let want = rows.checked_mul(cols).and_then(|n| format.bytes_for(n));
    match want {
        Some(want) if want == len => Ok(()),
        Some(want) => Err(format!("{len} bytes of {format} data for shape [{rows}, {cols}], which takes {want}")),
        None => Err(format!("shape [{rows}, {cols}] overflows")),
    }
}

/// Whether a format is held as tiles (the block formats).
fn tiled(format: WeightFormat) -> bool {
    format.block().0 > 1
}

/// Header bytes of one block (the f16 scale, and the f16 minimum for Q4_1).
fn header_bytes(format: WeightFormat) -> usize {
    if format == WeightFormat::Q4_1 { 4 } else { 2 }
}

/// Bytes of one tile of a block format.
pub(crate) fn tile_bytes(format: WeightFormat) -> usize {
    TILE_ROWS * format.block().1
}

/// Where a tile's quant bytes start (after the 16 rows' headers).
pub(crate) fn tile_quants(format: WeightFormat) -> usize {
    TILE_ROWS * header_bytes(format)
}

/// Rows in file layout (`rows` rows of `blocks` blocks) as tiles.
fn to_tiles(format: WeightFormat, rows: usize, blocks: usize, src: &[u8]) -> Vec<u8> {
    let bb = format.block().1;
    let (head, tile) = (header_bytes(format), tile_bytes(format));
    let mut out = vec![0u8; rows.div_ceil(TILE_ROWS) * blocks * tile];
    for (row, src_row) in src.chunks_exact(blocks * bb).enumerate() {
        let (g, r) = (row / TILE_ROWS, row % TILE_ROWS);
        for (b, block) in src_row.chunks_exact(bb).enumerate() {
            let t = &mut out[(g * blocks + b) * tile..][..tile];
            for h in 0..head / 2 {
                t[h * 2 * TILE_ROWS + 2 * r..][..2].copy_from_slice(&block[2 * h..2 * h + 2]);
            }
            for (i, &q) in block[head..].iter().enumerate() {
                t[tile_quants(format) + TILE_ROWS * i + r] = q;
            }
        }
    }
    out
}

/// Block `b` of row `row`, in file layout, from tiles.
fn block_from_tiles(format: WeightFormat, blocks: usize, tiles: &[u8], row: usize, b: usize, out: &mut [u8]) {
    let (bb, head, tile) = (format.block().1, header_bytes(format), tile_bytes(format));
    let (g, r) = (row / TILE_ROWS, row % TILE_ROWS);
    let t = &tiles[(g * blocks + b) * tile..][..tile];
    for h in 0..head / 2 {
        out[2 * h..2 * h + 2].copy_from_slice(&t[h * 2 * TILE_ROWS + 2 * r..][..2]);
    }
    for (i, q) in out[head..bb].iter_mut().enumerate() {
        *q = t[tile_quants(format) + TILE_ROWS * i + r];
    }
}

impl StoredMatrix {
    /// A matrix over its own bytes (file layout); the length must match the shape exactly.
    pub fn owned(format: WeightFormat, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, String> {
        check(format, rows, cols, bytes.len())?;
        let bytes = if tiled(format) { to_tiles(format, rows, cols / format.block().0, &bytes) } else { bytes };
        Ok(StoredMatrix { format, rows, cols, bytes: Bytes::Owned(bytes.into()), dot: Default::default() })
    }

    /// A matrix over `map[start..start + len]` (file layout); the range must lie in the map and
    /// match the shape. Float formats stay mapped; block formats are copied into tiles, and the
    /// map's pages of the range are released (so the weight is not resident twice).
    pub fn mapped(
        format: WeightFormat, rows: usize, cols: usize, map: Arc<Mmap>, start: usize, len: usize,
    ) -> Result<Self, String> {
        check(format, rows, cols, len)?;
        if start.checked_add(len).is_none_or(|end| end > map.len()) {
            return Err(format!("data at byte {start} (+{len}) lies outside the file (truncated?)"));
        }
        if !tiled(format) {
            return Ok(StoredMatrix {
                format,
                rows,
                cols,
                bytes: Bytes::Mapped { map, start, len },
                dot: Default::default(),
            });
        }
        let tiles = to_tiles(format, rows, cols / format.block().0, &map[start..start + len]);
        #[cfg(unix)]
        // SAFETY: the map is read-only and file-backed, so released pages are read again from
        // the file if anything touches them later: no value seen through the map changes.
        // Failure only leaves the pages resident.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        Ok(StoredMatrix { format, rows, cols, bytes: Bytes::Owned(tiles.into()), dot: Default::default() })
    }

    /// An f32 matrix from values.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        StoredMatrix::owned(WeightFormat::F32, rows, cols, bytes).expect("sizes match")
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The same matrix, its products computed as `dot` says.
    pub fn with_dot(mut self, dot: kernels::Dot) -> Self {
        self.dot = dot;
        self
    }

    pub fn dot(&self) -> kernels::Dot {
        self.dot
    }

    /// Whether its products take int8 activations: int8 asked and a block format
    /// (float formats are always exact).
    pub fn int8_products(&self) -> bool {
        matches!(self.dot, kernels::Dot::Int8 { .. }) && tiled(self.format)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The held bytes: rows in file layout (float formats) or tiles (block formats).
    fn held(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(b) => b,
            Bytes::Mapped { map, start, len } => &map[*start..start + len],
        }
    }

    /// Rows in file layout, for the float formats; `None` for tiled block formats.
    pub(crate) fn row_layout(&self) -> Option<&[u8]> {
        (!tiled(self.format)).then(|| self.held())
    }

    /// Tiles (see the type's documentation), for the block formats; `None` for float formats.
    pub(crate) fn tiles(&self) -> Option<&[u8]> {
        tiled(self.format).then(|| self.held())
    }

    /// The tiles of stored rows `16g..16g + 16`, block after block (block formats only).
    pub(crate) fn tile_group(&self, g: usize) -> &[u8] {
        let tiles = self.tiles().expect("a block format");
        let group = self.cols / self.format.block().0 * tile_bytes(self.format);
        &tiles[g * group..(g + 1) * group]
    }

    /// Bytes of one stored row in file layout.
    pub fn row_bytes(&self) -> usize {
        self.format.bytes_for(self.cols).expect("checked on construction")
    }

    /// Rows `r0..r1` in file layout (the tiles' blocks regrouped).
    pub fn file_rows(&self, r0: usize, r1: usize) -> Vec<u8> {
        let rb = self.row_bytes();
        let Some(tiles) = self.tiles() else { return self.held()[r0 * rb..r1 * rb].to_vec() };
        let (per_block, bb) = self.format.block();
        let blocks = self.cols / per_block;
        let mut out = vec![0u8; (r1 - r0) * rb];
        for (row, dst) in (r0..r1).zip(out.chunks_exact_mut(rb)) {
            for (b, block) in dst.chunks_exact_mut(bb).enumerate() {
                block_from_tiles(self.format, blocks, tiles, row, b, block);
            }
        }
        out
    }

    /// Rows `r0..r1`, dequantized into `out` (`(r1 - r0) * cols` values).
    pub fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        match self.row_layout() {
            Some(rows) => {
                let rb = self.row_bytes();
                dequantize_into(self.format, &rows[r0 * rb..r1 * rb], out)
            }
            None => dequantize_into(self.format, &self.file_rows(r0, r1), out),
        }
    }

    /// All values as f32, row-major `[rows, cols]`.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// The same rows in another order: row `i` of the result is row `order[i]` of this one.
    pub fn with_row_order(&self, order: &[usize]) -> Self {
        let bytes: Vec<u8> = order.iter().flat_map(|&r| self.file_rows(r, r + 1)).collect();
        StoredMatrix::owned(self.format, order.len(), self.cols, bytes).expect("whole rows")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_then_dequantize_is_close_and_exact_where_representable() {
        let values: Vec<f32> = (0..64).map(|i| ((i * 37 % 61) as f32 - 30.0) / 17.0).collect();
        for (format, tol) in [
            (WeightFormat::Q4_0, 0.3),
            (WeightFormat::Q4_1, 0.15),
            (WeightFormat::Q8_0, 0.02),
            (WeightFormat::F16, 2e-3),
            (WeightFormat::BF16, 2e-2),
            (WeightFormat::F32, 0.0),
        ] {
            let bytes = quantize(format, &values);
            assert_eq!(Some(bytes.len()), format.bytes_for(values.len()), "{format}");
            let back = dequantize(format, &bytes);
            for (a, b) in values.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{format}: {a} vs {b}");
            }
            // Dequantized values are fixed points of quantize-then-dequantize for 8-bit and floats.
            if !matches!(format, WeightFormat::Q4_0 | WeightFormat::Q4_1) {
                assert_eq!(dequantize(format, &quantize(format, &back)), back, "{format}");
            }
        }
    }

    #[test]
    fn formats_parse_by_name_in_any_case() {
        for f in WeightFormat::ALL {
            assert_eq!(f.name().parse::<WeightFormat>(), Ok(f));
            assert_eq!(f.name().to_ascii_lowercase().parse::<WeightFormat>(), Ok(f));
        }
        let e = "q4_k".parse::<WeightFormat>().unwrap_err();
        assert!(e.contains("`q4_k`") && e.contains("Q4_0, Q4_1, Q8_0, F16, BF16, F32"), "{e}");
    }

    /// Tiles hold the file's blocks: rows read back (one, a range, all, reordered) are the
    /// file's bytes, for row counts on both sides of a tile and a partial last tile.
    #[test]
    fn tiles_give_back_the_file_rows() {
        for format in WeightFormat::ALL {
            for rows in [1, 15, 16, 17, 40] {
                let cols = 64;
                let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 29 % 83) as f32 - 41.0) / 9.0).collect();
                let file = quantize(format, &values);
                let w = StoredMatrix::owned(format, rows, cols, file.clone()).unwrap();
                let rb = w.row_bytes();
                assert_eq!(w.file_rows(0, rows), file, "{format} {rows}");
                assert_eq!(w.file_rows(rows - 1, rows), file[(rows - 1) * rb..], "{format} {rows}");
                assert_eq!(w.to_f32(), dequantize(format, &file), "{format} {rows}");
                let order: Vec<usize> = (0..rows).rev().collect();
                let reversed: Vec<u8> = order.iter().flat_map(|&r| file[r * rb..(r + 1) * rb].to_vec()).collect();
                assert_eq!(w.with_row_order(&order).file_rows(0, rows), reversed, "{format} {rows}");
            }
        }
    }

    #[test]
    fn sizes_that_lie_are_errors() {
        assert!(StoredMatrix::owned(WeightFormat::Q4_1, 2, 32, vec![0; 40]).is_ok());
        let e = StoredMatrix::owned(WeightFormat::Q4_1, 2, 32, vec![0; 39]).unwrap_err();
        assert!(e.contains("39 bytes") && e.contains("takes 40"), "{e}");
        let e = StoredMatrix::owned(WeightFormat::Q8_0, 2, 33, vec![0; 68]).unwrap_err();
        assert!(e.contains("not a multiple"), "{e}");
        assert!(StoredMatrix::owned(WeightFormat::F16, usize::MAX, 2, vec![]).is_err());
    }
}
