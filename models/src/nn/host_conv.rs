//! Convolution along axis 1 of a channels-last activation on the CPU backend, as one BLAS
//! product per tap accumulated into the output, reading the input in place.
//!
//! The im2col formulation ([`crate::nn::conv::AxisConv`] with `Kernels::Gemm`) pads the input
//! into a copy, then gathers every tap's strided view into one `[rows, k * C]` matrix: two
//! copies through MLX's general strided copy, the larger `k` times the input (for HTDemucs'
//! dilated DConv convolutions, three times a 66 MB activation per layer). Along axis 1 every
//! tap is a plain sub-matrix of the input instead: rows `t * stride + j * dilation - pad` of a
//! `[B, T, C]` activation are evenly spaced (leading dimension `stride * C`), and for a 4-d
//! `[B, T, F, C]` activation at stride 1 the `(t, f)` rows of a tap are contiguous. So each tap
//! is one `sgemm` with `beta = 1` over the output rows whose input is inside the array, the
//! padding being rows not read rather than zeros written. Output rows are split over threads.
use std::ffi::c_int;

use mlx_rs::Array;

use crate::error::{Error, Result};
use crate::nn::host_blas::{blas, f32_data, Sgemm, NO_TRANS, ROW_MAJOR};

/// `n` elements, the bias repeated: the output every tap then accumulates into (written once,
/// not zeroed first).
fn bias_rows(bias: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !bias.is_empty() {
        out.extend_from_slice(bias);
    }
    out
}

/// Whether the host convolution applies: float32 on the CPU backend with a BLAS, a large enough
/// output, and a layout it reads in place (any stride for 3-d input, stride 1 for 4-d).
pub fn pays(x: &Array, stride: i32, out_elements: usize) -> bool {
    let nd = x.ndim();
    x.dtype() == mlx_rs::Dtype::Float32 && (nd == 3 || (nd == 4 && stride == 1)) && crate::nn::host::pays(out_elements) && blas().is_some()
}

/// Output length of a convolution over `len` samples.
fn out_len(len: i32, kernel: i32, stride: i32, dilation: i32, pad: i32) -> i32 {
    let eff = (kernel - 1) * dilation + 1;
    (len + 2 * pad - eff).div_euclid(stride) + 1
}

/// `y[b, t, .., o] = bias[o] + sum_j sum_c x[b, t * stride + j * dilation - pad, .., c] w[j * C + c, o]`
/// with zeros outside `x`: `x` `[B, T, C]` or `[B, T, F, C]` (stride 1), `wmat` `[kernel * C, O]`
/// taps major, `bias` `[O]`. Returns `[B, T_out, (F,) O]`, float32, computed on the host.
pub fn conv_axis1(x: &Array, wmat: &Array, bias: &Array, kernel: i32, stride: i32, dilation: i32, pad: i32) -> Result<Array> {
    let shape = x.shape().to_vec();
    let nd = shape.len();
    let bad = |why: &str| Error::InvalidArgument(format!("host convolution of {shape:?} (kernel {kernel}, stride {stride}, dilation {dilation}, pad {pad}) with weights {:?}: {why}", wmat.shape()));
    if !(nd == 3 || nd == 4) || kernel < 1 || stride < 1 || dilation < 1 || pad < 0 || (nd == 4 && stride != 1) {
        return Err(bad("unsupported shape or parameters"));
    }
    let (nb, t_in, c) = (shape[0] as usize, shape[1] as usize, shape[nd - 1] as usize);
    let r = if nd == 4 { shape[2] as usize } else { 1 };
    let (ws, o) = (wmat.shape().to_vec(), bias.size());
    if ws.len() != 2 || ws[0] as usize != kernel as usize * c || ws[1] as usize != o {
        return Err(bad("weights do not match"));
    }
    let t_out = out_len(shape[1], kernel, stride, dilation, pad);
    if t_out < 1 {
        return Err(bad("no output"));
    }
    let t_out = t_out as usize;
    let sgemm: Sgemm = blas().ok_or_else(|| Error::Mlx("host convolution: no cblas_sgemm in the process".into()))?.sgemm;
    let [x, w, bv] = crate::nn::host_blas::host_operands([x, wmat, bias])?;
    let what = "host convolution";
    let (xd, wd, bd) = (f32_data(&x, what)?, f32_data(&w, what)?, f32_data(&bv, what)?);
    let mut out = bias_rows(bd, nb * t_out * r * o);
    let (k, s, d, p) = (kernel as usize, stride as usize, dilation as usize, pad as usize);
    // Output positions `t` whose tap `j` reads inside the input: `0 <= t*s + j*d - p < t_in`.
    let valid = |j: usize| -> Option<(usize, usize)> {
        let lo = p.saturating_sub(j * d).div_ceil(s);
        let last_in = (t_in - 1 + p).checked_sub(j * d)?;
        let hi = (last_in / s).min(t_out - 1);
        (lo <= hi).then_some((lo, hi + 1))
    };
    let workers = crate::nn::host::threads().min(nb * t_out).max(1);
    let per = (nb * t_out).div_ceil(workers);
    let out_ptr = crate::nn::host_blas::SendPtr(out.as_mut_ptr());
    let _one = crate::nn::host_blas::single_threaded(workers);
    std::thread::scope(|sc| {
        for wi in 0..workers {
            let valid = &valid;
            sc.spawn(move || {
                // This worker's output positions, as (batch, t) flattened.
                let (g0, g1) = (wi * per, ((wi + 1) * per).min(nb * t_out));
                for bi in 0..nb {
                    let (b0, b1) = (g0.max(bi * t_out), g1.min((bi + 1) * t_out));
                    if b0 >= b1 {
                        continue;
                    }
                    let (w0, w1) = (b0 - bi * t_out, b1 - bi * t_out);
                    for j in 0..k {
                        let Some((lo, hi)) = valid(j) else { continue };
                        let (lo, hi) = (lo.max(w0), hi.min(w1));
                        if lo >= hi {
                            continue;
                        }
                        let t_src = lo * s + j * d - p;
                        let (m, lda) = if r == 1 { (hi - lo, s * c) } else { ((hi - lo) * r, c) };
                        // SAFETY: rows `t_src + i * s` (3-d) or `t_src * r + i` (4-d, stride
                        // 1) for `i < m` are inside batch `bi` of `x` by `valid`; the output
                        // rows `lo..hi` of batch `bi` are this worker's alone; the weights are
                        // tap `j`'s `C x O` block.
                        unsafe {
                            let a = xd.as_ptr().add((bi * t_in + t_src) * r * c);
                            let bw = wd.as_ptr().add(j * c * o);
                            let y = out_ptr.get().add((bi * t_out + lo) * r * o);
                            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m as c_int, o as c_int, c as c_int, 1.0, a, lda as c_int, bw, o as c_int, 1.0, y, o as c_int);
                        }
                    }
                }
            });
        }
    });
    let mut out_shape = shape.clone();
    out_shape[1] = t_out as i32;
    out_shape[nd - 1] = o as i32;
    crate::nn::host::array_from_vec(out, &out_shape)
}

/// A `k x k` convolution over axes 1 and 2 of a channels-last `[B, T, F, C]` activation at
/// stride 1 with zero padding `k / 2` on both (HTDemucs' rewrite convolution):
/// `y[b, t, f, o] = bias[o] + sum_{i, j, c} x[b, t + i - p, f + j - p, c] w[(i k + j) C + c, o]`.
///
/// Output frames go in blocks of about [`GRID_ROWS`] rows. A worker lays the block's input
/// frames (and `p` either side) out as `[frames, F, k C]`, the `k` neighbouring bins of every
/// bin with zeros past the edges and for frames outside the array: a few megabytes at most,
/// where im2col would copy `k^2` times the whole activation. The block is then one product per
/// kernel row `i` with `K = k C`, over the windows of its frames shifted by `i`, accumulated
/// into the output. Blocks are split over threads.
pub fn conv_grid(x: &Array, wmat: &Array, bias: &Array, kernel: i32) -> Result<Array> {
    let shape = x.shape().to_vec();
    let bad = |why: &str| Error::InvalidArgument(format!("host 2-d convolution of {shape:?} (kernel {kernel}) with weights {:?}: {why}", wmat.shape()));
    if shape.len() != 4 || kernel < 1 || kernel % 2 != 1 || shape.iter().any(|&d| d < 1) {
        return Err(bad("unsupported shape or kernel"));
    }
    let (nb, t_n, f_n, c) = (shape[0] as usize, shape[1] as usize, shape[2] as usize, shape[3] as usize);
    let (k, o) = (kernel as usize, bias.size());
    let p = k / 2;
    let ws = wmat.shape().to_vec();
    if ws.len() != 2 || ws[0] as usize != k * k * c || ws[1] as usize != o || o == 0 {
        return Err(bad("weights do not match"));
    }
    let sgemm: Sgemm = blas().ok_or_else(|| Error::Mlx("host 2-d convolution: no cblas_sgemm in the process".into()))?.sgemm;
    let [x, w, bv] = crate::nn::host_blas::host_operands([x, wmat, bias])?;
    let what = "host 2-d convolution";
    let (xd, wd, bd) = (f32_data(&x, what)?, f32_data(&w, what)?, f32_data(&bv, what)?);
    let mut out = bias_rows(bd, nb * t_n * f_n * o);
    let kc = k * c;
    // Blocks of about GRID_ROWS rows, their count per batch item a multiple of the threads
    // (so every thread stays busy), each of nt frames.
    let threads = crate::nn::host::threads().max(1);
    let wanted = (t_n * f_n).div_ceil(GRID_ROWS).div_ceil(threads).max(1) * threads;
    let nt = t_n.div_ceil(wanted.min(t_n));
    let per_batch = t_n.div_ceil(nt);
    let blocks = nb * per_batch;
    let workers = threads.min(blocks);
    let per = blocks.div_ceil(workers);
    let out_ptr = crate::nn::host_blas::SendPtr(out.as_mut_ptr());
    let _one = crate::nn::host_blas::single_threaded(workers);
    std::thread::scope(|sc| {
        for wi in 0..workers {
            sc.spawn(move || {
                let mut win = vec![0f32; (nt + 2 * p) * f_n * kc];
                for blk in wi * per..((wi + 1) * per).min(blocks) {
                    let (bi, t0) = (blk / per_batch, (blk % per_batch) * nt);
                    let t1 = (t0 + nt).min(t_n);
                    // Window frame r is input frame t0 + r - p.
                    for (r, fw) in win.chunks_exact_mut(f_n * kc).take(t1 - t0 + 2 * p).enumerate() {
                        let Some(ti) = (t0 + r).checked_sub(p).filter(|&ti| ti < t_n) else {
                            fw.fill(0.0);
                            continue;
                        };
                        let frame = &xd[(bi * t_n + ti) * f_n * c..(bi * t_n + ti + 1) * f_n * c];
                        for (f, row) in fw.chunks_exact_mut(kc).enumerate() {
                            for (j, tap) in row.chunks_exact_mut(c).enumerate() {
                                match (f + j).checked_sub(p).filter(|&fi| fi < f_n) {
                                    Some(fi) => tap.copy_from_slice(&frame[fi * c..(fi + 1) * c]),
                                    None => tap.fill(0.0),
                                }
                            }
                        }
                    }
                    let m = (t1 - t0) * f_n;
                    for i in 0..k {
                        // SAFETY: window frames i .. i + (t1 - t0) are laid out above (m rows
                        // of kC); the weights' rows i kC .. (i + 1) kC; the output rows are
                        // frames t0..t1 of batch bi, this worker's block alone.
                        unsafe {
                            let a = win.as_ptr().add(i * f_n * kc);
                            let bw = wd.as_ptr().add(i * kc * o);
                            let y = out_ptr.get().add((bi * t_n + t0) * f_n * o);
                            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m as c_int, o as c_int, kc as c_int, 1.0, a, kc as c_int, bw, o as c_int, 1.0, y, o as c_int);
                        }
                    }
                }
            });
        }
    });
    crate::nn::host::array_from_vec(out, &shape[..3].iter().copied().chain([o as i32]).collect::<Vec<_>>())
}

/// Output rows (frames times bins) per block of [`conv_grid`].
const GRID_ROWS: usize = 1024;

/// The transposed convolution along axis 1 of a `[B, T, C]` activation, untrimmed:
/// `y[b, t * stride + j, o] = bias[o] + sum_c x[b, t, c] w[c, j * O + o]`, `T_out = (T - 1) *
/// stride + kernel`. `wmat` is `[C, m * stride * O]` (taps major within a row, the kernel
/// zero-padded to `m` strides; taps past `kernel` are skipped). Tap `j` is one `sgemm` whose
/// output rows are `stride` apart (leading dimension `stride * O`), accumulated with `beta = 1`
/// into rows other taps also reach; threads split the output channels, so no two write the
/// same element.
pub fn conv_transpose_axis1(x: &Array, wmat: &Array, bias: &Array, kernel: i32, stride: i32) -> Result<Array> {
    let shape = x.shape().to_vec();
    let (ws, o) = (wmat.shape().to_vec(), bias.size());
    let bad = |why: &str| Error::InvalidArgument(format!("host transposed convolution of {shape:?} (kernel {kernel}, stride {stride}) with weights {ws:?}: {why}"));
    if shape.len() != 3 || kernel < 1 || stride < 1 || shape[1] < 1 {
        return Err(bad("unsupported shape or parameters"));
    }
    let (nb, t_in, c) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
    let (k, s) = (kernel as usize, stride as usize);
    let m = k.div_ceil(s);
    if ws.len() != 2 || ws[0] as usize != c || ws[1] as usize != m * s * o || o == 0 {
        return Err(bad("weights do not match"));
    }
    let t_out = (t_in - 1) * s + k;
    let sgemm: Sgemm = blas().ok_or_else(|| Error::Mlx("host transposed convolution: no cblas_sgemm in the process".into()))?.sgemm;
    let [x, w, bv] = crate::nn::host_blas::host_operands([x, wmat, bias])?;
    let what = "host transposed convolution";
    let (xd, wd, bd) = (f32_data(&x, what)?, f32_data(&w, what)?, f32_data(&bv, what)?);
    let mut out = bias_rows(bd, nb * t_out * o);
    let threads = crate::nn::host::threads().max(1);
    let out_ptr = crate::nn::host_blas::SendPtr(out.as_mut_ptr());
    if nb >= 2 * threads {
        // Many short sequences (HTDemucs' bins of every frame): threads split the batch, and
        // each item is one product with every tap's columns (N = m s O) into a scratch buffer,
        // whose blocks are then added at rows t s + j: no product with a handful of columns.
        let per = nb.div_ceil(threads);
        let _one = crate::nn::host_blas::single_threaded(threads);
        let n = m * s * o;
        std::thread::scope(|sc| {
            for wi in 0..threads {
                sc.spawn(move || {
                    let mut z = vec![0f32; t_in * n];
                    for bi in wi * per..((wi + 1) * per).min(nb) {
                        // SAFETY: batch bi's input rows; the whole weight matrix; `z` is
                        // t_in x n.
                        unsafe {
                            sgemm(
                                ROW_MAJOR,
                                NO_TRANS,
                                NO_TRANS,
                                t_in as c_int,
                                n as c_int,
                                c as c_int,
                                1.0,
                                xd.as_ptr().add(bi * t_in * c),
                                c as c_int,
                                wd.as_ptr(),
                                n as c_int,
                                0.0,
                                z.as_mut_ptr(),
                                n as c_int,
                            );
                        }
                        // SAFETY: batch bi's output rows, this worker's alone.
                        let y = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(bi * t_out * o), t_out * o) };
                        for (t, zr) in z.chunks_exact(n).enumerate() {
                            let dst = &mut y[t * s * o..(t * s + k) * o];
                            for (d, v) in dst.iter_mut().zip(&zr[..k * o]) {
                                *d += v;
                            }
                        }
                    }
                });
            }
        });
        return crate::nn::host::array_from_vec(out, &[nb as i32, t_out as i32, o as i32]);
    }
    let workers = threads.min(o);
    let per = o.div_ceil(workers);
    let _one = crate::nn::host_blas::single_threaded(workers);
    std::thread::scope(|sc| {
        for wi in 0..workers {
            let (o0, o1) = (wi * per, ((wi + 1) * per).min(o));
            if o0 >= o1 {
                continue;
            }
            sc.spawn(move || {
                for bi in 0..nb {
                    for j in 0..k {
                        // SAFETY: input rows `0..t_in` of batch `bi`; the weights' columns
                        // `j * O + o0 .. j * O + o1` of every row; output rows `t * s + j` for
                        // `t < t_in` (below `t_out`), columns `o0..o1`, this worker's alone.
                        unsafe {
                            let a = xd.as_ptr().add(bi * t_in * c);
                            let bw = wd.as_ptr().add(j * o + o0);
                            let y = out_ptr.get().add((bi * t_out + j) * o + o0);
                            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, t_in as c_int, (o1 - o0) as c_int, c as c_int, 1.0, a, c as c_int, bw, (m * s * o) as c_int, 1.0, y, (s * o) as c_int);
                        }
                    }
                }
            });
        }
    });
    crate::nn::host::array_from_vec(out, &[nb as i32, t_out as i32, o as i32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mlx_convolution() {
        if blas().is_none() {
            eprintln!("no cblas_sgemm in this process: nothing to compare");
            return;
        }
        let key = |i| mlx_rs::random::key(i).unwrap();
        // (shape, out channels, kernel, stride, dilation, pad): padded and unpadded, strided,
        // dilated, 4-d at stride 1, a batch of two, a kernel longer than the padding.
        type Case<'a> = (&'a [i32], i32, i32, i32, i32, i32);
        let cases: &[Case] =
            &[(&[1, 50, 6], 5, 3, 1, 1, 1), (&[2, 37, 4], 7, 8, 4, 1, 2), (&[1, 40, 3], 2, 3, 1, 4, 4), (&[1, 23, 5], 3, 7, 1, 1, 0), (&[2, 9, 4, 6], 5, 3, 1, 2, 2), (&[1, 64, 8], 16, 4, 2, 1, 0)];
        for (i, &(shape, o, kernel, stride, dil, pad)) in cases.iter().enumerate() {
            let c = *shape.last().unwrap();
            let x = mlx_rs::random::normal::<f32>(shape, None, None, &key(2 * i as u64)).unwrap();
            // MLX layout [O, K, C]; the taps-major matrix [K * C, O].
            let w = mlx_rs::random::normal::<f32>(&[o, kernel, c], None, None, &key(2 * i as u64 + 1)).unwrap();
            let wmat = w.reshape(&[o, kernel * c]).unwrap().t();
            let bias = mlx_rs::random::normal::<f32>(&[o], None, None, &key(100 + i as u64)).unwrap();
            let got = conv_axis1(&x, &wmat, &bias, kernel, stride, dil, pad).unwrap();
            let want = if shape.len() == 3 {
                mlx_rs::ops::conv1d(&x, &w, stride, pad, dil, 1).unwrap()
            } else {
                mlx_rs::ops::conv2d(&x, w.reshape(&[o, kernel, 1, c]).unwrap(), (stride, 1), (pad, 0), (dil, 1), 1).unwrap()
            }
            .add(&bias)
            .unwrap();
            assert_eq!(got.shape(), want.shape(), "case {i}");
            let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
            assert!(err < 1e-5, "case {i}: max abs diff {err}");
        }
    }

    #[test]
    fn grid_matches_mlx_conv2d() {
        if blas().is_none() {
            eprintln!("no cblas_sgemm in this process: nothing to compare");
            return;
        }
        let key = |i| mlx_rs::random::key(i).unwrap();
        // (shape [B, T, F, C], out channels, kernel): fewer bins than the kernel, one bin, a
        // batch of two, kernels 1, 3 and 5, HTDemucs' last rewrite in small.
        for (i, &(shape, o, k)) in
            [(&[1, 7, 9, 4][..], 6, 3), (&[2, 5, 2, 3][..], 4, 3), (&[1, 4, 1, 5][..], 3, 3), (&[1, 6, 8, 3][..], 2, 5), (&[1, 3, 4, 2][..], 3, 1), (&[1, 12, 64, 48][..], 96, 3)].iter().enumerate()
        {
            let c = shape[3];
            let x = mlx_rs::random::normal::<f32>(shape, None, None, &key(70 + i as u64)).unwrap();
            // MLX layout [O, kT, kF, C]; taps-major [kT * kF * C, O] as GridConv holds it.
            let w = mlx_rs::random::normal::<f32>(&[o, k, k, c], None, None, &key(80 + i as u64)).unwrap();
            let wmat = w.reshape(&[o, -1]).unwrap().t();
            let bias = mlx_rs::random::normal::<f32>(&[o], None, None, &key(90 + i as u64)).unwrap();
            let got = conv_grid(&x, &wmat, &bias, k).unwrap();
            let want = mlx_rs::ops::conv2d(&x, &w, (1, 1), (k / 2, k / 2), (1, 1), 1).unwrap().add(&bias).unwrap();
            assert_eq!(got.shape(), want.shape(), "case {i}");
            let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
            assert!(err < 1e-4, "case {i}: max abs diff {err}");
        }
        let x = mlx_rs::Array::zeros::<f32>(&[1, 4, 4, 3]).unwrap();
        let b = mlx_rs::Array::zeros::<f32>(&[2]).unwrap();
        // An even kernel, weights of another size, a 3-d input.
        assert!(conv_grid(&x, &mlx_rs::Array::zeros::<f32>(&[12, 2]).unwrap(), &b, 2).is_err());
        assert!(conv_grid(&x, &mlx_rs::Array::zeros::<f32>(&[26, 2]).unwrap(), &b, 3).is_err());
        assert!(conv_grid(&x.reshape(&[1, 16, 3]).unwrap(), &mlx_rs::Array::zeros::<f32>(&[27, 2]).unwrap(), &b, 3).is_err());
    }

    #[test]
    fn transposed_matches_mlx() {
        if blas().is_none() {
            eprintln!("no cblas_sgemm in this process: nothing to compare");
            return;
        }
        let key = |i| mlx_rs::random::key(i).unwrap();
        // (batch, length, in, out, kernel, stride): kernel a multiple of the stride or not,
        // stride 1, a single frame; batches of more items than threads (split by item).
        for (i, &(b, t, c, o, kernel, stride)) in [(1, 20, 6, 5, 8, 4), (2, 13, 4, 7, 10, 4), (1, 9, 3, 2, 3, 1), (1, 1, 5, 3, 16, 8), (9, 12, 6, 4, 8, 4), (7, 1, 3, 2, 10, 4)].iter().enumerate() {
            let x = mlx_rs::random::normal::<f32>(&[b, t, c], None, None, &key(40 + i as u64)).unwrap();
            // PyTorch's ConvTranspose1d weight [in, out, k], padded to m strides as AxisConvTr does.
            let wt = mlx_rs::random::normal::<f32>(&[c, o, kernel], None, None, &key(50 + i as u64)).unwrap();
            let m = (kernel + stride - 1) / stride;
            let padded = if m * stride > kernel { mlx_rs::ops::concatenate(&[wt.clone(), mlx_rs::ops::zeros::<f32>(&[c, o, m * stride - kernel]).unwrap()], 2).unwrap() } else { wt.clone() };
            let wmat = padded.transpose_axes(&[0, 2, 1]).unwrap().reshape(&[c, m * stride * o]).unwrap();
            let bias = mlx_rs::random::normal::<f32>(&[o], None, None, &key(60 + i as u64)).unwrap();
            let got = conv_transpose_axis1(&x, &wmat, &bias, kernel, stride).unwrap();
            // MLX's own: weight [out, k, in].
            let w_mlx = wt.transpose_axes(&[1, 2, 0]).unwrap();
            let want = mlx_rs::ops::conv_transpose1d(&x, &w_mlx, stride, 0, 1, 0, 1).unwrap().add(&bias).unwrap();
            assert_eq!(got.shape(), want.shape(), "case {i}");
            let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
            assert!(err < 1e-5, "case {i}: max abs diff {err}");
        }
        let x = mlx_rs::Array::zeros::<f32>(&[1, 4, 3]).unwrap();
        assert!(conv_transpose_axis1(&x, &mlx_rs::Array::zeros::<f32>(&[3, 7]).unwrap(), &mlx_rs::Array::zeros::<f32>(&[2]).unwrap(), 4, 2).is_err());
    }

    #[test]
    fn rejects_what_it_cannot_read_in_place() {
        let x = mlx_rs::Array::zeros::<f32>(&[1, 8, 4, 3]).unwrap();
        let w = mlx_rs::Array::zeros::<f32>(&[9, 2]).unwrap();
        let b = mlx_rs::Array::zeros::<f32>(&[2]).unwrap();
        // 4-d at stride 2, mismatched weights, a kernel longer than the input.
        assert!(conv_axis1(&x, &w, &b, 3, 2, 1, 0).is_err());
        assert!(conv_axis1(&x, &w, &b, 2, 1, 1, 0).is_err());
        let long = mlx_rs::Array::zeros::<f32>(&[30, 2]).unwrap();
        assert!(conv_axis1(&x, &long, &b, 10, 1, 1, 0).is_err());
    }
}
