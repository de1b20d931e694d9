//! Transcendental kernels computed on the host for large arrays on the CPU backend: softmax
//! over the last axis, the exact (erf) GELU, the sigmoid, GLU and ELU (and, in
//! [`crate::nn::host_attention`], whole attention).
//!
//! MLX's CPU backend evaluates `exp` and `erf` one element at a time: on this project's 2-core
//! x86 box a `[8, 2688, 2688]` softmax takes about 820 ms against PyTorch's 97 ms, and GELU runs
//! at about 35 ns per element. In HTDemucs' transformer (330 M attention scores per 7.8 s
//! segment) and its 48-channel layers these dominated the forward pass. Here `exp` is a
//! branch-free polynomial (Cephes' `expf` coefficients, within 3 ulp on the range used) and
//! `erf` Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7), both written so the
//! compiler vectorizes them, with AVX2/FMA chosen at run time where present; the work is split
//! across threads and the result handed to MLX without a copy.
use mlx_rs::Array;

use crate::error::{Error, Result};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for `x <= 0` (softmax's range after subtracting the row maximum); below -87 it
/// flushes to 0, as `f32` does.
#[inline(always)]
fn exp_neg(x0: f32) -> f32 {
    let x = x0.max(-87.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n for the integer-valued n in [-126, 0]: adding 1.5 * 2^23 puts n in the low mantissa
    // bits, whence the biased exponent, with integer operations only. (`n as i32` is Rust's
    // saturating conversion, which the compiler does not vectorize: it made the whole loop
    // scalar, about 9 ns an element.)
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let y = p * f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x0 < -87.0 {
        0.0
    } else {
        y
    }
}

/// Softmax of each row of `n` in place. Eight independent lanes for the max and the sum, so
/// the compiler can vectorize the reductions without reassociating float additions.
#[inline(always)]
fn rows_generic(data: &mut [f32], n: usize) {
    const L: usize = 8;
    for row in data.chunks_exact_mut(n) {
        let mut m = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                m[i] = if c[i] > m[i] { c[i] } else { m[i] };
            }
        }
        let max = chunks.remainder().iter().chain(m.iter()).copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // A fully masked row: MLX and PyTorch give NaN; keep that.
            row.iter_mut().for_each(|v| *v = f32::NAN);
            continue;
        }
        let mut acc = [0f32; L];
        let mut chunks = row.chunks_exact_mut(L);
        for c in &mut chunks {
            for i in 0..L {
                c[i] = exp_neg(c[i] - max);
                acc[i] += c[i];
            }
        }
        let mut sum = 0f32;
        for v in chunks.into_remainder() {
            *v = exp_neg(*v - max);
            sum += *v;
        }
        let inv = 1.0 / (sum + acc.iter().sum::<f32>());
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `erf(x)`, Abramowitz and Stegun 7.1.26.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    (1.0 - poly * exp_neg(-a * a)).copysign(x)
}

/// `1 / (1 + e^-x)` through `e^-|x|`, so the exponential never overflows.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_neg(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// [`sigmoid`] for the fused host kernels (inlined where they are compiled for AVX2).
#[inline(always)]
pub(crate) fn sigmoid_scalar(x: f32) -> f32 {
    sigmoid(x)
}

#[inline(always)]
fn sigmoid_generic(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = sigmoid(x);
    }
}

/// ELU with alpha 1: `x` above 0, `e^x - 1` below.
#[inline(always)]
fn elu_generic(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = if x > 0.0 { x } else { exp_neg(x) - 1.0 };
    }
}

/// GLU over rows of `2 n`: the first half times the sigmoid of the second, rows of `n` out.
#[inline(always)]
fn glu_generic(src: &[f32], dst: &mut [f32], n: usize) {
    for (row, out) in src.chunks_exact(2 * n).zip(dst.chunks_exact_mut(n)) {
        let (a, b) = row.split_at(n);
        for ((d, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *d = a * sigmoid(b);
        }
    }
}

/// Softmax of each row of `n` in place, for the attention kernel's score blocks.
pub(crate) fn softmax_rows_in_place(data: &mut [f32], n: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the function was compiled for.
        unsafe { avx2::softmax_rows(data, n) };
        return;
    }
    rows_generic(data, n)
}

#[inline(always)]
fn gelu_generic(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn softmax_generic(src: &[f32], dst: &mut [f32], n: usize) {
    dst.copy_from_slice(src);
    rows_generic(dst, n)
}

/// The kernels, compiled once more with AVX2 and FMA enabled.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu(src: &[f32], dst: &mut [f32]) {
        super::gelu_generic(src, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(src: &[f32], dst: &mut [f32], n: usize) {
        super::softmax_generic(src, dst, n)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_rows(data: &mut [f32], n: usize) {
        super::rows_generic(data, n)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sigmoid(src: &[f32], dst: &mut [f32]) {
        super::sigmoid_generic(src, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn elu(src: &[f32], dst: &mut [f32]) {
        super::elu_generic(src, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn glu(src: &[f32], dst: &mut [f32], n: usize) {
        super::glu_generic(src, dst, n)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row_sums(row: &[f32], mean: f32) -> (f64, f64) {
        super::row_sums(row, mean)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn norm_row(src: &[f32], dst: &mut [f32], mean: f32, rstd: f32, w: Option<&[f32]>, b: Option<&[f32]>) {
        super::norm_row(src, dst, mean, rstd, w, b)
    }
}

pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    Gelu,
    /// Softmax over rows of this length.
    Softmax(usize),
    Sigmoid,
    Elu,
    /// GLU over rows of twice this length.
    Glu(usize),
}

fn run_kernel(k: Kernel, src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the functions were compiled for.
        unsafe {
            match k {
                Kernel::Gelu => avx2::gelu(src, dst),
                Kernel::Softmax(n) => avx2::softmax(src, dst, n),
                Kernel::Sigmoid => avx2::sigmoid(src, dst),
                Kernel::Elu => avx2::elu(src, dst),
                Kernel::Glu(n) => avx2::glu(src, dst, n),
            }
        }
        return;
    }
    match k {
        Kernel::Gelu => gelu_generic(src, dst),
        Kernel::Softmax(n) => softmax_generic(src, dst, n),
        Kernel::Sigmoid => sigmoid_generic(src, dst),
        Kernel::Elu => elu_generic(src, dst),
        Kernel::Glu(n) => glu_generic(src, dst, n),
    }
}

pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Evaluate `x` as float32 and apply `k` on the host, split across threads in whole rows of
/// `unit` elements, into a new MLX array of the same shape (no copy on the way back).
fn apply(x: &Array, k: Kernel, unit: usize) -> Result<Array> {
    apply_rows(x, k, unit, unit, x.shape().to_vec())
}

/// [`apply`] for kernels that map rows of `unit_in` elements to rows of `unit_out`, giving an
/// array of `out_shape`.
fn apply_rows(x: &Array, k: Kernel, unit_in: usize, unit_out: usize, out_shape: Vec<i32>) -> Result<Array> {
    let shape = x.shape().to_vec();
    // Row-major data (a transposed view is copied first).
    let x = x.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?;
    x.eval()?;
    let src = x.try_as_slice::<f32>().map_err(|e| Error::Mlx(format!("host kernel input of shape {shape:?}: {e}")))?;
    let (unit_in, unit_out) = (unit_in.max(1), unit_out.max(1));
    // Elementwise kernels take any length (the last chunk may be a partial row); a kernel that
    // changes the row length needs whole rows.
    if unit_in != unit_out && src.len() % unit_in != 0 {
        return Err(Error::InvalidArgument(format!("host kernel over rows of {unit_in}: {shape:?} is not whole rows")));
    }
    let rows = src.len().div_ceil(unit_in);
    let mut dst = vec![0f32; if unit_in == unit_out { src.len() } else { rows * unit_out }];
    if !src.is_empty() {
        let per = rows.div_ceil(threads()).max(1);
        std::thread::scope(|s| {
            for (a, b) in src.chunks(per * unit_in).zip(dst.chunks_mut(per * unit_out)) {
                s.spawn(move || run_kernel(k, a, b));
            }
        });
    }
    array_from_vec(dst, &out_shape)
}

unsafe extern "C" fn free_vec(payload: *mut std::ffi::c_void) {
    // SAFETY: `payload` is the Box<Vec<f32>> leaked in `array_from_vec`, freed exactly once.
    drop(unsafe { Box::from_raw(payload.cast::<Vec<f32>>()) });
}

/// An MLX array over `data`'s buffer, which MLX frees when the array goes.
pub fn array_from_vec(data: Vec<f32>, shape: &[i32]) -> Result<Array> {
    let n: i64 = shape.iter().map(|&d| i64::from(d)).product();
    if n != data.len() as i64 {
        return Err(Error::InvalidArgument(format!("{} values for shape {shape:?}", data.len())));
    }
    let mut boxed = Box::new(data);
    let ptr = boxed.as_mut_ptr().cast::<std::ffi::c_void>();
    let payload = Box::into_raw(boxed).cast::<std::ffi::c_void>();
    // SAFETY: `ptr` stays valid until MLX calls `free_vec` on `payload` (moving the Box does
    // not move the Vec's heap buffer); shape and dtype describe the buffer.
    unsafe {
        let a = mlx_sys::mlx_array_new_data_managed_payload(ptr, shape.as_ptr(), shape.len() as i32, mlx_sys::mlx_dtype__MLX_FLOAT32, payload, Some(free_vec));
        Ok(Array::from_ptr(a))
    }
}

/// Softmax of `x` over its last axis, as float32, evaluated on the host.
pub fn softmax_last_axis(x: &Array) -> Result<Array> {
    let n = *x.shape().last().ok_or_else(|| Error::InvalidArgument("softmax of a 0-d array".into()))? as usize;
    apply(x, Kernel::Softmax(n), n)
}

/// The exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`, as float32, evaluated on the host.
pub fn gelu(x: &Array) -> Result<Array> {
    apply(x, Kernel::Gelu, 4096)
}

/// Sum of a row and sum of its squared deviations from `mean`, in eight float32 lanes (the
/// rows are at most a few thousand long) returned as float64 for the caller to accumulate.
#[inline(always)]
fn row_sums(row: &[f32], mean: f32) -> (f64, f64) {
    const L: usize = 8;
    let (mut s, mut q) = ([0f32; L], [0f32; L]);
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for i in 0..L {
            let d = c[i] - mean;
            s[i] += c[i];
            q[i] += d * d;
        }
    }
    let (mut s1, mut q1) = (0f64, 0f64);
    for &v in chunks.remainder() {
        s1 += f64::from(v);
        q1 += f64::from((v - mean) * (v - mean));
    }
    (s1 + s.iter().map(|&v| f64::from(v)).sum::<f64>(), q1 + q.iter().map(|&v| f64::from(v)).sum::<f64>())
}

#[inline(always)]
fn norm_row(src: &[f32], dst: &mut [f32], mean: f32, rstd: f32, w: Option<&[f32]>, b: Option<&[f32]>) {
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((d, &x), &w), &b) in dst.iter_mut().zip(src).zip(w).zip(b) {
                *d = (x - mean) * rstd * w + b;
            }
        }
        _ => {
            for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
                *d = (x - mean) * rstd * w.map_or(1.0, |w| w[i]) + b.map_or(0.0, |b| b[i]);
            }
        }
    }
}

fn row_sums_any(row: &[f32], mean: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { avx2::row_sums(row, mean) };
    }
    row_sums(row, mean)
}

fn norm_row_any(src: &[f32], dst: &mut [f32], mean: f32, rstd: f32, w: Option<&[f32]>, b: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::norm_row(src, dst, mean, rstd, w, b) };
    }
    norm_row(src, dst, mean, rstd, w, b)
}

/// Normalisation with one group per `(b, f)` of `x` viewed as `[B, A, F, C]` (`dims`): the
/// mean and the biased variance over `A x C` (two passes, rows summed in float32 lanes and
/// accumulated in float64, as [`crate::nn::ops::mean_var`] is accurate), then
/// `(x - mean) / sqrt(var + eps) * weight[c] + bias[c]` in one more pass. This is
/// `GroupNorm(1, C)` of a `[B, L, C]` activation (`F = 1`) and of HTDemucs' channels-last
/// frequency activations, whose bins are separate samples. MLX's composition of the same
/// transposes the whole array into a copy for each of its two reductions.
pub fn group_norm_bafc(x: &Array, dims: [usize; 4], weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    let [nb, na, nf, nc] = dims;
    let shape = x.shape().to_vec();
    if shape.iter().map(|&d| d as usize).product::<usize>() != nb * na * nf * nc {
        return Err(Error::InvalidArgument(format!("group norm: {shape:?} viewed as {dims:?}")));
    }
    let x = x.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?;
    let vec_of = |v: Option<&Array>| -> Result<Option<Vec<f32>>> {
        v.map(|v| {
            if v.size() != nc {
                return Err(Error::InvalidArgument(format!("group norm affine of {} values for {nc} channels", v.size())));
            }
            let v = v.as_dtype(mlx_rs::Dtype::Float32)?.flatten(None, None)?;
            v.eval()?;
            Ok(v.as_slice::<f32>().to_vec())
        })
        .transpose()
    };
    let (w, b) = (vec_of(weight)?, vec_of(bias)?);
    x.eval()?;
    let src = x.try_as_slice::<f32>().map_err(|e| Error::Mlx(format!("group norm input of shape {shape:?}: {e}")))?;
    let mut dst = vec![0f32; src.len()];
    if src.is_empty() {
        return array_from_vec(dst, &shape);
    }
    let plane = na * nf * nc;
    let per_a = na.div_ceil(threads()).max(1);
    let count = (na * nc) as f64;
    for (xs, ys) in src.chunks(plane).zip(dst.chunks_mut(plane)) {
        // Statistics: each thread sums its rows of A for every f.
        let sums = |means: Option<&[f32]>| -> Vec<(f64, f64)> {
            let parts: Vec<Vec<(f64, f64)>> = std::thread::scope(|s| {
                let hs: Vec<_> = xs
                    .chunks(per_a * nf * nc)
                    .map(|part| {
                        s.spawn(move || {
                            let mut acc = vec![(0f64, 0f64); nf];
                            for rows in part.chunks_exact(nf * nc) {
                                for (f, row) in rows.chunks_exact(nc).enumerate() {
                                    let (a, q) = row_sums_any(row, means.map_or(0.0, |m| m[f]));
                                    acc[f].0 += a;
                                    acc[f].1 += q;
                                }
                            }
                            acc
                        })
                    })
                    .collect();
                // A worker's panic goes on up: an empty part would read as zero statistics.
                hs.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
            });
            let mut acc = vec![(0f64, 0f64); nf];
            for p in parts {
                for (a, v) in acc.iter_mut().zip(p) {
                    a.0 += v.0;
                    a.1 += v.1;
                }
            }
            acc
        };
        let mean: Vec<f32> = sums(None).iter().map(|&(s, _)| (s / count) as f32).collect();
        let rstd: Vec<f32> = sums(Some(&mean)).iter().map(|&(_, q)| (1.0 / (q / count + f64::from(eps)).sqrt()) as f32).collect();
        let (mean, rstd, w, b) = (&mean, &rstd, w.as_deref(), b.as_deref());
        std::thread::scope(|s| {
            for (xp, yp) in xs.chunks(per_a * nf * nc).zip(ys.chunks_mut(per_a * nf * nc)) {
                s.spawn(move || {
                    // Each part starts at a whole row of A: its rows run over (a, f).
                    for (i, (xr, yr)) in xp.chunks_exact(nc).zip(yp.chunks_exact_mut(nc)).enumerate() {
                        let f = i % nf;
                        norm_row_any(xr, yr, mean[f], rstd[f], w, b);
                    }
                });
            }
        });
    }
    array_from_vec(dst, &shape)
}

/// The logistic sigmoid, as float32, evaluated on the host.
pub fn sigmoid_f32(x: &Array) -> Result<Array> {
    apply(x, Kernel::Sigmoid, 4096)
}

/// ELU (alpha 1), as float32, evaluated on the host.
pub fn elu(x: &Array) -> Result<Array> {
    apply(x, Kernel::Elu, 4096)
}

/// `F.glu` over the last axis (`a * sigmoid(b)` of its two halves), as float32, on the host.
pub fn glu_last_axis(x: &Array) -> Result<Array> {
    let mut shape = x.shape().to_vec();
    let last = shape.last_mut().ok_or_else(|| Error::InvalidArgument("GLU of a 0-d array".into()))?;
    if *last % 2 != 0 {
        return Err(Error::InvalidArgument(format!("GLU over an odd last axis: {:?}", x.shape())));
    }
    *last /= 2;
    let n = *last as usize;
    apply_rows(x, Kernel::Glu(n), 2 * n, n, shape)
}

/// Arrays at least this large (elements) take the host kernels on the CPU backend; smaller
/// ones stay in MLX's graph, where a host round trip costs more than it saves.
pub const MIN_ELEMENTS: usize = 1 << 16;

static MIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MIN_ELEMENTS);

/// Change the size from which the host kernels are used (tests force them on tiny models
/// with 0; `usize::MAX` turns them off). Process-wide.
pub fn set_min_elements(n: usize) {
    MIN.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// The size from which the host kernels are used now ([`set_min_elements`]).
pub fn min_elements() -> usize {
    MIN.load(std::sync::atomic::Ordering::Relaxed)
}

thread_local! {
    /// Set while a function is traced for `mx.compile`: its arrays are placeholders that cannot
    /// be evaluated, so a host kernel cannot run there.
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` (a call that may trace a function for `mx.compile`) with the host kernels off on
/// this thread, so the traced graph holds MLX's own ops.
pub fn while_tracing<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TRACING.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TRACING.with(|t| t.replace(true)));
    f()
}

/// Whether host kernels may run at all: MLX on the CPU, and no function being traced on this
/// thread ([`while_tracing`]).
pub(crate) fn on_host_backend() -> bool {
    !TRACING.with(|t| t.get()) && crate::runtime::default_device_kind().is_ok_and(|d| d == crate::runtime::DeviceKind::Cpu)
}

/// Whether an array of `elements` should take the host kernels: large, and
/// [`on_host_backend`].
pub fn pays(elements: usize) -> bool {
    elements >= MIN.load(std::sync::atomic::Ordering::Relaxed) && on_host_backend()
}

#[cfg(test)]
mod tests {
    use mlx_rs::ops::indexing::IndexOp;

    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_and_softmax_matches_mlx() {
        for i in 0..=86_900 {
            let x = -(i as f32) * 1e-3;
            let (got, want) = (exp_neg(x), x.exp());
            assert!((got - want).abs() <= 3.0 * f32::EPSILON * want, "{x}: {got} vs {want}");
        }
        assert_eq!(exp_neg(-200.0), 0.0);
        let x = mlx_rs::random::normal::<f32>(&[3, 5, 257], None, None, &mlx_rs::random::key(1).unwrap()).unwrap().multiply(mlx_rs::array!(6.0f32)).unwrap();
        let want = mlx_rs::ops::softmax_axis(&x, -1, true).unwrap();
        let got = softmax_last_axis(&x).unwrap();
        let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
        assert!(err < 1e-6, "{err}");
        let rows = got.sum_axis(-1, false).unwrap().subtract(mlx_rs::array!(1.0f32)).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
        assert!(rows < 1e-6, "{rows}");
    }

    #[test]
    fn gelu_matches_mlx_exact_gelu() {
        let x = mlx_rs::random::normal::<f32>(&[70_001], None, None, &mlx_rs::random::key(2).unwrap()).unwrap().multiply(mlx_rs::array!(4.0f32)).unwrap();
        let got = gelu(&x).unwrap();
        let erf = mlx_rs::ops::erf(x.multiply(mlx_rs::array!(std::f32::consts::FRAC_1_SQRT_2)).unwrap()).unwrap();
        let want = x.multiply(erf.add(mlx_rs::array!(1.0f32)).unwrap()).unwrap().multiply(mlx_rs::array!(0.5f32)).unwrap();
        let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
        assert!(err < 1e-6, "{err}");
        // A transposed (non-contiguous) view gives the same as its copy.
        let m = x.index(..70_000).reshape(&[700, 100]).unwrap();
        let t = gelu(&m.t()).unwrap();
        let c = gelu(&m.t().contiguous().unwrap()).unwrap();
        assert_eq!(t.subtract(&c).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>(), 0.0);
    }

    fn max_diff(a: &Array, b: &Array) -> f32 {
        assert_eq!(a.shape(), b.shape());
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>()
    }

    #[test]
    fn sigmoid_elu_and_glu_match_mlx() {
        // Wide range, both signs, past exp's overflow on either side; a length that is not a
        // multiple of the chunk.
        let x = mlx_rs::random::normal::<f32>(&[3, 10_003], None, None, &mlx_rs::random::key(4).unwrap()).unwrap().multiply(mlx_rs::array!(30.0f32)).unwrap();
        assert!(max_diff(&sigmoid_f32(&x).unwrap(), &mlx_rs::ops::sigmoid(&x).unwrap()) < 1e-6);
        let zero = mlx_rs::array!(0.0f32);
        let elu_want = mlx_rs::ops::maximum(&x, &zero).unwrap().add(mlx_rs::ops::expm1(mlx_rs::ops::minimum(&x, &zero).unwrap()).unwrap()).unwrap();
        assert!(max_diff(&elu(&x).unwrap(), &elu_want) < 1e-6);
        let y = x.reshape(&[3, 7, 1_429]).unwrap().index((.., .., ..1_428));
        let parts = y.split_equal(2, -1).unwrap();
        let want = parts[0].multiply(mlx_rs::ops::sigmoid(&parts[1]).unwrap()).unwrap();
        let got = glu_last_axis(&y).unwrap();
        assert_eq!(got.shape(), &[3, 7, 714]);
        // The halves' products reach about 100: compare relative to the value.
        let rel = got.subtract(&want).unwrap().abs().unwrap().divide(want.abs().unwrap().add(mlx_rs::array!(1.0f32)).unwrap()).unwrap().max(None).unwrap().item_cast::<f32>();
        assert!(rel < 1e-6, "{rel}");
        assert!(glu_last_axis(&x.reshape(&[30_009, 1]).unwrap()).is_err(), "an odd last axis has no halves");
    }

    #[test]
    fn group_norm_matches_the_composed_statistics() {
        let key = |i| mlx_rs::random::key(i).unwrap();
        // A large offset against the spread, where E[x^2] - E[x]^2 would lose digits.
        let x = mlx_rs::random::normal::<f32>(&[2, 37, 5, 24], None, None, &key(5)).unwrap().add(mlx_rs::array!(40.0f32)).unwrap();
        let w = mlx_rs::random::normal::<f32>(&[24], None, None, &key(6)).unwrap();
        let b = mlx_rs::random::normal::<f32>(&[24], None, None, &key(7)).unwrap();
        // Per (b, f) over (t, c): HTDemucs' channels-last bins.
        let want = crate::nn::ops::standardize(&x, &[1, 3], 1e-5).unwrap().multiply(&w).unwrap().add(&b).unwrap();
        let got = group_norm_bafc(&x, [2, 37, 5, 24], Some(&w), Some(&b), 1e-5).unwrap();
        assert!(max_diff(&got, &want) < 2e-5, "{}", max_diff(&got, &want));
        // One group over everything but the batch, no affine.
        let flat = x.reshape(&[2, 185, 24]).unwrap();
        let want = crate::nn::ops::standardize(&flat, &[1, 2], 1e-5).unwrap();
        let got = group_norm_bafc(&flat, [2, 185, 1, 24], None, None, 1e-5).unwrap();
        assert!(max_diff(&got, &want) < 2e-5, "{}", max_diff(&got, &want));
        assert!(group_norm_bafc(&flat, [2, 185, 2, 24], None, None, 1e-5).is_err(), "a view of another size");
        assert!(group_norm_bafc(&flat, [2, 185, 1, 24], Some(&b.index(..5)), None, 1e-5).is_err(), "an affine of another length");
    }
}
