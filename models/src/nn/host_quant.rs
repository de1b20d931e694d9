//! MLX's affine group quantization (`w = scale * q + bias` per group of `group_size` weights
//! along a row, codes of 8 or 4 bits packed low bits first into `uint32` words) multiplied on
//! the host for the CPU backend.
//!
//! MLX's CPU `quantized_matmul` unpacks and multiplies one scalar at a time, and a decode step
//! at int8 or int4 ran 10 to 12 times slower than at float32, although it reads a quarter or an
//! eighth of the bytes. Here each group's codes are converted in vector lanes as they are dotted
//! with an input row (with several rows at 8 bits, widened once into a small float buffer
//! first), AVX-512 (written out, [`avx512`]) or AVX2/FMA chosen at run time, and scaled once per
//! group: `y[m, n] = sum_g scale[n, g] * (q[n, g] . x[m, g]) + bias[n, g] * sum(x[m, g])`. With
//! more rows than [`GEMV_ROWS`] (a prompt, an encoder), blocks of output rows are dequantized
//! into a float tile and multiplied by the BLAS instead. The output columns are split across
//! threads: the GEMV shim's waiting pool for the dot products (a decode step makes hundreds of
//! them), scoped threads for the tiles.
//! On this project's 2-core EPYC, Whisper turbo's [1, 1280] x [51866, 1280]^T logits product
//! takes 8 to 9 ms at int8 against 70 to 111 ms in MLX (and 15 to 20 ms for MLX's float32).
use mlx_rs::Array;

use crate::error::{Error, Result};
use crate::nn::host_blas::{self, SendPtr};
use crate::nn::quant::QuantWeight;

/// Up to this many input rows the product is a dot product per group; above it, dequantized
/// tiles go through `sgemm`.
pub const GEMV_ROWS: usize = 8;

/// The largest group (`Precision::int` allows 32, 64 and 128).
const MAX_GROUP: usize = 128;

/// Output rows dequantized at a time on the `sgemm` path.
const TILE: usize = 64;

/// Widen one group's codes (`bytes` holds `group * bits / 8` bytes, the words' little-endian
/// bytes: code `i` is byte `i` at 8 bits, the low then the high nibble of byte `i / 2` at 4)
/// into `out`.
#[inline(always)]
fn unpack(bytes: &[u8], bits: u32, out: &mut [f32]) {
    if bits == 8 {
        for (b, o) in bytes.iter().zip(out.iter_mut()) {
            *o = f32::from(*b);
        }
    } else {
        for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
            o[0] = f32::from(b & 0xf);
            o[1] = f32::from(b >> 4);
        }
    }
}

/// Lanes of the dot products' accumulators (two AVX2 registers).
const L: usize = 16;

/// `a * b + c`, fused where the caller was compiled for FMA (`f32::mul_add` would otherwise
/// call libm's software `fmaf`).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `w[i] * x[i]` over one group summed into `L` lanes, not reduced (the caller scales the lanes
/// by the group's scale and reduces once per output). `w` is the group's 8-bit codes (load,
/// widen, convert, fused multiply-add, vectorized without reassociating) or its codes already
/// widened to floats. Alternate runs of `L` go to two sets of accumulators, so four chains of
/// additions run at once. The group is a multiple of `L` long.
#[inline(always)]
fn lanes<T: Copy + Into<f32>, const FMA: bool>(w: &[T], x: &[f32]) -> [f32; L] {
    let (mut a0, mut a1) = ([0f32; L], [0f32; L]);
    let (mut cw, mut cx) = (w.chunks_exact(2 * L), x.chunks_exact(2 * L));
    for (a, b) in (&mut cw).zip(&mut cx) {
        for i in 0..L {
            a0[i] = madd::<FMA>(a[i].into(), b[i], a0[i]);
            a1[i] = madd::<FMA>(a[L + i].into(), b[L + i], a1[i]);
        }
    }
    for (a, b) in cw.remainder().chunks_exact(L).zip(cx.remainder().chunks_exact(L)) {
        for i in 0..L {
            a0[i] = madd::<FMA>(a[i].into(), b[i], a0[i]);
        }
    }
    std::array::from_fn(|i| a0[i] + a1[i])
}

/// The same over 4-bit codes, two to a byte: the low nibbles meet `even` (the group's inputs
/// 0, 2, 4, ...) and the high nibbles `odd` (1, 3, 5, ...), split once per call so the loop
/// needs no interleaving.
#[inline(always)]
fn lanes_u4<const FMA: bool>(q: &[u8], even: &[f32], odd: &[f32]) -> [f32; L] {
    let (mut lo, mut hi) = ([0f32; L], [0f32; L]);
    for ((a, e), o) in q.chunks_exact(L).zip(even.chunks_exact(L)).zip(odd.chunks_exact(L)) {
        for i in 0..L {
            lo[i] = madd::<FMA>(f32::from(a[i] & 0xf), e[i], lo[i]);
            hi[i] = madd::<FMA>(f32::from(a[i] >> 4), o[i], hi[i]);
        }
    }
    std::array::from_fn(|i| lo[i] + hi[i])
}

/// The operands of one product, row-major.
struct Operands<'a> {
    x: &'a [f32],
    /// For 4 bits, each row of `x` with every group's inputs split into the even ones then the
    /// odd ones ([`lanes_u4`]); empty otherwise.
    x_split: &'a [f32],
    /// The code words' bytes, `bytes_per_row` per output row.
    codes: &'a [u8],
    scales: &'a [f32],
    biases: &'a [f32],
    /// Input rows, output columns, inner size.
    m: usize,
    n: usize,
    k: usize,
    group: usize,
    bits: u32,
}

impl Operands<'_> {
    fn bytes_per_row(&self) -> usize {
        self.k * self.bits as usize / 8
    }

    /// Output columns `cols` of every row, as dot products per group. `xsum[m * groups + g]`
    /// is the sum of row `m`'s inputs in group `g`.
    #[inline(always)]
    fn gemv<const FMA: bool>(&self, xsum: &[f32], cols: std::ops::Range<usize>, out: SendPtr) {
        // The row count as a constant, so the accumulators stay in registers.
        match self.m {
            1 => self.gemv_rows::<1, FMA>(xsum, cols, out),
            2 => self.gemv_rows::<2, FMA>(xsum, cols, out),
            3 | 4 => self.gemv_rows::<4, FMA>(xsum, cols, out),
            _ => self.gemv_rows::<GEMV_ROWS, FMA>(xsum, cols, out),
        }
    }

    /// [`Self::gemv`] for up to `M` rows (rows past `self.m` are skipped).
    #[inline(always)]
    fn gemv_rows<const M: usize, const FMA: bool>(&self, xsum: &[f32], cols: std::ops::Range<usize>, out: SendPtr) {
        let (groups, g, m) = (self.k / self.group, self.group, self.m.min(M));
        let bpg = g * self.bits as usize / 8;
        let mut widened = [0f32; MAX_GROUP];
        for c in cols {
            let row = &self.codes[c * self.bytes_per_row()..(c + 1) * self.bytes_per_row()];
            let mut acc = [[0f32; L]; M];
            let mut offset = [0f32; M];
            for (j, q) in row.chunks_exact(bpg).enumerate() {
                let (s, b) = (self.scales[c * groups + j], self.biases[c * groups + j]);
                // Several rows at 8 bits: widen the group's codes once, then a float dot per
                // row. At 4 bits the nibble dot per row measured faster (MusicGen medium's guided
                // 50 steps on this project's 2-core EPYC: 26.2 s against 32.3 s widened).
                let widen = M > 1 && self.bits == 8;
                if widen {
                    unpack(q, self.bits, &mut widened[..g]);
                }
                for r in 0..m {
                    let at = r * self.k + j * g;
                    let p = if widen {
                        lanes::<f32, FMA>(&widened[..g], &self.x[at..at + g])
                    } else if self.bits == 8 {
                        lanes::<u8, FMA>(q, &self.x[at..at + g])
                    } else {
                        let x = &self.x_split[at..at + g];
                        lanes_u4::<FMA>(q, &x[..g / 2], &x[g / 2..])
                    };
                    for i in 0..L {
                        acc[r][i] = madd::<FMA>(s, p[i], acc[r][i]);
                    }
                    offset[r] += b * xsum[r * groups + j];
                }
            }
            for r in 0..m {
                // SAFETY: `out` holds m * n floats; column `c` of row `r` belongs to this
                // worker alone.
                unsafe { *out.get().add(r * self.n + c) = acc[r].iter().sum::<f32>() + offset[r] };
            }
        }
    }

    /// Output columns `cols` through dequantized tiles of `TILE` weight rows and `sgemm`.
    #[inline(always)]
    fn tiled(&self, cols: std::ops::Range<usize>, out: SendPtr, sgemm: host_blas::Sgemm) {
        let groups = self.k / self.group;
        let bpg = self.group * self.bits as usize / 8;
        let mut tile = vec![0f32; TILE * self.k];
        let mut c0 = cols.start;
        while c0 < cols.end {
            let rows = TILE.min(cols.end - c0);
            for (i, row) in tile.chunks_exact_mut(self.k).take(rows).enumerate() {
                let c = c0 + i;
                let codes = &self.codes[c * self.bytes_per_row()..(c + 1) * self.bytes_per_row()];
                for (j, (dst, q)) in row.chunks_exact_mut(self.group).zip(codes.chunks_exact(bpg)).enumerate() {
                    unpack(q, self.bits, dst);
                    let (s, b) = (self.scales[c * groups + j], self.biases[c * groups + j]);
                    dst.iter_mut().for_each(|v| *v = s * *v + b);
                }
            }
            let (m, k, n) = (self.m as i32, self.k as i32, self.n as i32);
            // SAFETY: x is [m, k], the tile's first `rows` rows are [rows, k], and the output
            // block starts at column c0 of the [m, n] buffer with stride n: columns c0..c0+rows
            // belong to this worker alone.
            unsafe {
                sgemm(host_blas::ROW_MAJOR, host_blas::NO_TRANS, host_blas::TRANS, m, rows as i32, k, 1.0, self.x.as_ptr(), k, tile.as_ptr(), k, 0.0, out.get().add(c0), n);
            }
            c0 += rows;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemv(o: &Operands, xsum: &[f32], cols: std::ops::Range<usize>, out: SendPtr) {
        o.gemv::<true>(xsum, cols, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tiled(o: &Operands, cols: std::ops::Range<usize>, out: SendPtr, sgemm: host_blas::Sgemm) {
        o.tiled(cols, out, sgemm)
    }
}

/// The dot-product path with 16-lane registers, written out: each run of 16 codes is loaded and
/// converted to floats once, in registers, and multiplied into every input row (the generic
/// loop widens a group into a buffer first, or converts the codes again for every row). At
/// 4 bits, one 16-byte load gives 16 low nibbles (against the even inputs) and 16 high ones
/// (against the odd). The rows are a constant, so their accumulators stay in registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    pub fn supported() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
    }

    /// # Safety
    /// The CPU has AVX-512F and FMA ([`supported`]); `o` passed `matmul_t`'s checks, with at
    /// most [`GEMV_ROWS`] rows and whole runs of 16 codes per group.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gemv(o: &Operands, xsum: &[f32], cols: std::ops::Range<usize>, out: SendPtr) {
        match o.m {
            1 => rows::<1>(o, xsum, cols, out),
            2 => rows::<2>(o, xsum, cols, out),
            3 => rows::<3>(o, xsum, cols, out),
            4 => rows::<4>(o, xsum, cols, out),
            5 => rows::<5>(o, xsum, cols, out),
            6 => rows::<6>(o, xsum, cols, out),
            7 => rows::<7>(o, xsum, cols, out),
            _ => rows::<GEMV_ROWS>(o, xsum, cols, out),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows<const M: usize>(o: &Operands, xsum: &[f32], cols: std::ops::Range<usize>, out: SendPtr) {
        let (groups, g, k) = (o.k / o.group, o.group, o.k);
        let (bpr, bpg) = (o.bytes_per_row(), g * o.bits as usize / 8);
        let x = if o.bits == 8 { o.x.as_ptr() } else { o.x_split.as_ptr() };
        let nibble = _mm_set1_epi8(0x0f);
        for c in cols {
            let row = o.codes.as_ptr().add(c * bpr);
            let mut acc = [_mm512_setzero_ps(); M];
            let mut offset = [0f32; M];
            for j in 0..groups {
                let (q, xg) = (row.add(j * bpg), x.add(j * g));
                let mut p = [_mm512_setzero_ps(); M];
                // SAFETY (the loads): a group is `bpg` bytes of `row` and `g` inputs of each
                // row of `x`, both in bounds by `matmul_t`'s checks.
                if o.bits == 8 {
                    for t in (0..g).step_by(16) {
                        let w = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(q.add(t).cast())));
                        for (r, p) in p.iter_mut().enumerate() {
                            *p = _mm512_fmadd_ps(w, _mm512_loadu_ps(xg.add(r * k + t)), *p);
                        }
                    }
                } else {
                    for t in (0..g / 2).step_by(16) {
                        let v = _mm_loadu_si128(q.add(t).cast());
                        let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(v, nibble)));
                        let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(v), nibble)));
                        for (r, p) in p.iter_mut().enumerate() {
                            let at = xg.add(r * k + t);
                            *p = _mm512_fmadd_ps(hi, _mm512_loadu_ps(at.add(g / 2)), _mm512_fmadd_ps(lo, _mm512_loadu_ps(at), *p));
                        }
                    }
                }
                let (s, b) = (_mm512_set1_ps(o.scales[c * groups + j]), o.biases[c * groups + j]);
                for r in 0..M {
                    acc[r] = _mm512_fmadd_ps(s, p[r], acc[r]);
                    offset[r] += b * xsum[r * groups + j];
                }
            }
            for r in 0..M {
                // SAFETY: as in `gemv_rows`: column `c` of row `r` belongs to this worker.
                *out.get().add(r * o.n + c) = _mm512_reduce_add_ps(acc[r]) + offset[r];
            }
        }
    }
}

fn run(o: &Operands, xsum: &[f32], cols: std::ops::Range<usize>, out: SendPtr, sgemm: Option<host_blas::Sgemm>) {
    #[cfg(target_arch = "x86_64")]
    if sgemm.is_none() && avx512::supported() {
        // SAFETY: the CPU has the features; `o` is checked and at most GEMV_ROWS rows.
        unsafe { avx512::gemv(o, xsum, cols, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::nn::host::has_avx2() {
        // SAFETY: the CPU supports the features the functions were compiled for.
        unsafe {
            match sgemm {
                Some(f) => avx2::tiled(o, cols, out, f),
                None => avx2::gemv(o, xsum, cols, out),
            }
        }
        return;
    }
    match sgemm {
        Some(f) => o.tiled(cols, out, f),
        None => o.gemv::<false>(xsum, cols, out),
    }
}

/// Whether `x @ W^T` for this weight should run here: MLX on the CPU, a large enough matrix
/// ([`crate::nn::host::pays`]), and for more than [`GEMV_ROWS`] rows a BLAS to call.
pub fn pays(w: &QuantWeight, x: &Array) -> bool {
    let rows = x.size() / x.shape().last().map_or(1, |&k| k.max(1) as usize);
    cfg!(target_endian = "little") && crate::nn::host::pays(w.shape[0] as usize * w.shape[1] as usize) && (rows <= GEMV_ROWS || host_blas::blas().is_some())
}

/// `x @ W^T` over `x`'s last axis for a quantized `W` of logical shape `[n, k]`, on the host,
/// as float32 (cast back to `x`'s dtype).
pub fn matmul_t(x: &Array, w: &QuantWeight) -> Result<Array> {
    let [n, k] = w.shape;
    let shape = x.shape().to_vec();
    if shape.last() != Some(&k) {
        return Err(Error::InvalidArgument(format!("quantized product: input {shape:?} against a [{n}, {k}] matrix")));
    }
    let (bits, group) = (w.bits as u32, w.group_size as usize);
    // Whole words per group, and (for the lanes of the dot products) whole runs of 16 bytes.
    if !(bits == 8 || bits == 4) || group == 0 || group > MAX_GROUP || !(k as usize).is_multiple_of(group) || !(group * bits as usize / 8).is_multiple_of(L) {
        return Err(Error::InvalidArgument(format!("quantized product: {bits} bits in groups of {group} over rows of {k}")));
    }
    let dtype = x.dtype();
    let mut out_shape = shape.clone();
    *out_shape.last_mut().expect("checked above") = n;
    if x.size() == 0 {
        return Ok(mlx_rs::ops::zeros_dtype(&out_shape, dtype)?);
    }
    let xf = x.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?;
    let (packed, scales, biases) = (w.packed.contiguous()?, w.scales.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?, w.biases.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?);
    mlx_rs::transforms::eval([&xf, &packed, &scales, &biases])?;
    let (n, k) = (n as usize, k as usize);
    let words = packed.try_as_slice::<u32>().map_err(|e| Error::Mlx(format!("quantized product codes: {e}")))?;
    // SAFETY: the same memory as `words`, read as bytes (alignment 1); `pays` only sends
    // little-endian targets here, where byte i of the words is code i's byte.
    let codes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) };
    let x = host_blas::f32_data(&xf, "quantized product")?;
    let m = x.len() / k.max(1);
    let gemv = m <= GEMV_ROWS;
    let x_split: Vec<f32> = if gemv && bits == 4 { x.chunks_exact(group).flat_map(|g| g.iter().step_by(2).chain(g.iter().skip(1).step_by(2))).copied().collect() } else { Vec::new() };
    let o = Operands {
        x,
        x_split: &x_split,
        codes,
        scales: host_blas::f32_data(&scales, "quantized product scales")?,
        biases: host_blas::f32_data(&biases, "quantized product biases")?,
        m,
        n,
        k,
        group,
        bits,
    };
    let groups = k / group;
    if o.codes.len() != n * o.bytes_per_row() || o.scales.len() != n * groups || o.biases.len() != n * groups {
        return Err(Error::InvalidArgument(format!(
            "quantized product: {} code bytes, {} scales and {} biases for a {bits}-bit [{n}, {k}] matrix in groups of {group}",
            o.codes.len(),
            o.scales.len(),
            o.biases.len()
        )));
    }
    let sgemm = if !gemv { Some(host_blas::blas().ok_or_else(|| Error::Mlx("quantized product: no BLAS (cblas_sgemm) in the process".into()))?.sgemm) } else { None };
    let xsum: Vec<f32> = if gemv { o.x.chunks_exact(group).map(|g| g.iter().sum()).collect() } else { Vec::new() };
    let mut out = vec![0f32; m * n];
    if m > 0 && n > 0 {
        let ptr = SendPtr(out.as_mut_ptr());
        if sgemm.is_some() {
            // Whole tiles per worker, each calling a single-threaded sgemm.
            host_blas::spread_columns(n, TILE, |cols| run(&o, &xsum, cols, ptr, sgemm));
        } else {
            // Runs of 8 columns, about 16 runs in all, so a late worker still finds some.
            host_blas::parallel_columns(n, n.div_ceil(16).next_multiple_of(8), |cols| run(&o, &xsum, cols, ptr, None));
        }
    }
    let y = crate::nn::host::array_from_vec(out, &out_shape)?;
    Ok(if dtype == mlx_rs::Dtype::Float32 { y } else { y.as_dtype(dtype)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::quant::Precision;

    fn random(shape: &[i32], seed: u64) -> Array {
        let key = mlx_rs::random::key(seed).unwrap();
        mlx_rs::random::normal::<f32>(shape, None, None, &key).unwrap()
    }

    /// Against MLX's own product (called directly: `QuantWeight::matmul_t` may come here) and against the dequantized matrix times `x`, for every
    /// precision, both paths (rows up to and above GEMV_ROWS), a batch axis and ragged
    /// column counts (not a multiple of the 8-column unit or the tile).
    #[test]
    fn equals_mlx_quantized_matmul() {
        for (bits, group) in [(8, 64), (4, 64), (8, 32), (4, 32), (8, 128), (4, 128)] {
            let p = Precision::int(bits, group).unwrap();
            for (n, k) in [(75, 256), (130, 128)] {
                let w = QuantWeight::quantize(&random(&[n, k], 1), p).unwrap();
                for rows in [[1, 1], [1, 2], [2, 2], [1, 5], [2, 3], [1, 7], [2, 4], [1, 9], [3, 40]] {
                    let x = random(&[rows[0], rows[1], k], 2 + rows[1] as u64);
                    let got = matmul_t(&x, &w).unwrap();
                    let want = mlx_rs::ops::quantized_matmul(&x, &w.packed, &w.scales, &w.biases, true, w.group_size, w.bits).unwrap();
                    let dense = x.matmul(w.dequantize().unwrap().t()).unwrap();
                    assert_eq!(got.shape(), want.shape());
                    let diff = |a: &Array| got.subtract(a).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
                    let scale = want.abs().unwrap().max(None).unwrap().item_cast::<f32>();
                    assert!(scale > 1.0, "int{bits}/g{group} [{n}, {k}] rows {rows:?}: output scale {scale}");
                    for (what, d) in [("MLX quantized_matmul", diff(&want)), ("dequantized product", diff(&dense))] {
                        assert!(d <= 2e-5 * scale, "int{bits}/g{group} [{n}, {k}] rows {rows:?}: {d} from {what} (output scale {scale})");
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_a_mismatched_input() {
        let w = QuantWeight::quantize(&random(&[16, 64], 3), Precision::int(8, 64).unwrap()).unwrap();
        let e = matmul_t(&random(&[2, 32], 4), &w).map(|_| ()).expect_err("a [2, 32] input against a [16, 64] matrix");
        assert!(e.to_string().contains("[2, 32]"), "{e}");
    }

    #[test]
    fn keeps_the_input_dtype_and_empty_inputs() {
        let w = QuantWeight::quantize(&random(&[16, 64], 5), Precision::int(4, 64).unwrap()).unwrap();
        let x = random(&[3, 64], 6).as_dtype(mlx_rs::Dtype::Float16).unwrap();
        assert_eq!(matmul_t(&x, &w).unwrap().dtype(), mlx_rs::Dtype::Float16);
        let empty = mlx_rs::Array::zeros::<f32>(&[0, 64]).unwrap();
        assert_eq!(matmul_t(&empty, &w).unwrap().shape(), &[0, 16]);
    }
}
