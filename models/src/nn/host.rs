//! Transcendental kernels computed on the host for large arrays on the CPU backend: softmax
//! over the last axis and the exact (erf) GELU.
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
    let y = p * f32::from_bits(((n as i32 + 127) << 23) as u32);
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
}

fn has_avx2() -> bool {
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
}

fn run_kernel(k: Kernel, src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the functions were compiled for.
        unsafe {
            match k {
                Kernel::Gelu => avx2::gelu(src, dst),
                Kernel::Softmax(n) => avx2::softmax(src, dst, n),
            }
        }
        return;
    }
    match k {
        Kernel::Gelu => gelu_generic(src, dst),
        Kernel::Softmax(n) => softmax_generic(src, dst, n),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Evaluate `x` as float32 and apply `k` on the host, split across threads in whole rows of
/// `unit` elements, into a new MLX array of the same shape (no copy on the way back).
fn apply(x: &Array, k: Kernel, unit: usize) -> Result<Array> {
    let shape = x.shape().to_vec();
    // Row-major data (a transposed view is copied first).
    let x = x.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?;
    x.eval()?;
    let src = x.try_as_slice::<f32>().map_err(|e| Error::Mlx(format!("host kernel input of shape {shape:?}: {e}")))?;
    let mut dst = vec![0f32; src.len()];
    if !src.is_empty() {
        let units = src.len() / unit.max(1);
        let per = units.div_ceil(threads()).max(1) * unit.max(1);
        std::thread::scope(|s| {
            for (a, b) in src.chunks(per).zip(dst.chunks_mut(per)) {
                s.spawn(move || run_kernel(k, a, b));
            }
        });
    }
    array_from_vec(dst, &shape)
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

/// Arrays at least this large (elements) take the host kernels on the CPU backend; smaller
/// ones stay in MLX's graph, where a host round trip costs more than it saves.
pub const MIN_ELEMENTS: usize = 1 << 16;

static MIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MIN_ELEMENTS);

/// Change the size from which the host kernels are used (tests force them on tiny models
/// with 0; `usize::MAX` turns them off). Process-wide.
pub fn set_min_elements(n: usize) {
    MIN.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Whether an array of `elements` should take the host kernels: large, and MLX on the CPU.
pub fn pays(elements: usize) -> bool {
    elements >= MIN.load(std::sync::atomic::Ordering::Relaxed) && crate::runtime::default_device_kind().is_ok_and(|d| d == crate::runtime::DeviceKind::Cpu)
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
}
