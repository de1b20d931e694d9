//! Small MLX operations mlx-rs does not expose in the form the models want.
use mlx_rs::{ops, Array, Stream};

use crate::error::{Error, Result};

/// A copy of `src` with `update` written into the box `start..stop` (one bound per axis, unit
/// strides). MLX's `slice_update`: the O(1) append of the preallocated KV cache.
pub fn slice_update(src: &Array, update: &Array, start: &[i32], stop: &[i32]) -> Result<Array> {
    if start.len() != src.ndim() || stop.len() != src.ndim() {
        return Err(Error::InvalidArgument(format!("slice_update: {} start / {} stop bounds for a {}-d array", start.len(), stop.len(), src.ndim())));
    }
    let strides = vec![1i32; start.len()];
    let stream = Stream::thread_local_or_default();
    // SAFETY: all handles are valid for the call; `res` is owned by the returned Array on
    // success and freed here on failure.
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_slice_update(&mut res, src.as_ptr(), update.as_ptr(), start.as_ptr(), start.len(), stop.as_ptr(), stop.len(), strides.as_ptr(), strides.len(), stream.as_ptr());
        if status != 0 {
            mlx_sys::mlx_array_free(res);
            return Err(Error::Mlx(format!("slice_update of {:?} into {:?} at {start:?}..{stop:?} failed", update.shape(), src.shape())));
        }
        Ok(Array::from_ptr(res))
    }
}

/// Whether every element of `x` is finite (no NaN, no infinity); evaluates.
pub fn all_finite(x: &Array) -> Result<bool> {
    let bad = ops::logical_or(&ops::is_nan(x)?, &ops::is_inf(x)?)?.any(None)?;
    Ok(!bad.item_cast::<bool>())
}

/// Gated linear unit over the last axis: `a * sigmoid(b)` where `[a, b] = split(x, 2, -1)`.
/// Large float32 arrays on the CPU backend take the host kernel ([`crate::nn::host`]).
pub fn glu(x: &Array) -> Result<Array> {
    if x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size()) {
        return crate::nn::host::glu_last_axis(x);
    }
    let parts = x.split_equal(2, -1)?;
    Ok(parts[0].multiply(mlx_rs::ops::sigmoid(&parts[1])?)?)
}

/// The logistic sigmoid. Large float32 arrays on the CPU backend take the host kernel, MLX's
/// CPU `exp` being scalar there.
pub fn sigmoid(x: &Array) -> Result<Array> {
    if x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size()) {
        return crate::nn::host::sigmoid_f32(x);
    }
    Ok(mlx_rs::ops::sigmoid(x)?)
}

/// `torch.nn.functional.pad` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Reflect,
    Constant,
    Replicate,
}

/// Pad `x` along `axis` by `left`/`right` the way `torch.nn.functional.pad` does, including
/// HF's `_pad1d` trick for reflecting an input shorter than the padding (zeros are appended
/// first, then cut off again).
pub fn pad_axis(x: &Array, axis: i32, left: i32, right: i32, mode: PadMode) -> Result<Array> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let ax = if axis < 0 { axis + x.ndim() as i32 } else { axis } as usize;
    let len = x.shape()[ax];
    let zeros_like = |n: i32| -> Result<Array> {
        let mut s = x.shape().to_vec();
        s[ax] = n;
        Ok(ops::zeros::<f32>(&s)?)
    };
    match mode {
        PadMode::Constant => {
            let mut parts = Vec::with_capacity(3);
            if left > 0 {
                parts.push(zeros_like(left)?);
            }
            parts.push(x.clone());
            if right > 0 {
                parts.push(zeros_like(right)?);
            }
            Ok(ops::concatenate(&parts, ax as i32)?)
        }
        PadMode::Replicate => {
            if len < 1 {
                return Err(Error::InvalidArgument("cannot replicate-pad an empty signal".into()));
            }
            let idx: Vec<i32> = (-left..len + right).map(|i| i.clamp(0, len - 1)).collect();
            Ok(x.take_axis(Array::from_slice(&idx, &[idx.len() as i32]), ax as i32)?)
        }
        PadMode::Reflect => {
            let max_pad = left.max(right);
            let extra = if len <= max_pad { max_pad - len + 1 } else { 0 };
            let src = if extra > 0 { ops::concatenate(&[x.clone(), zeros_like(extra)?], ax as i32)? } else { x.clone() };
            let n = len + extra;
            let mut idx: Vec<i32> = (1..=left).rev().collect();
            idx.extend(0..n);
            idx.extend((0..right).map(|i| n - 2 - i));
            idx.truncate(idx.len() - extra as usize);
            Ok(src.take_axis(Array::from_slice(&idx, &[idx.len() as i32]), ax as i32)?)
        }
    }
}

/// Sum over `axes` in two levels (blocks of 256, then the block sums), like PyTorch's cascade
/// summation: MLX's CPU reductions accumulate one float32 at a time, whose error grows with the
/// count (over a 7.8 s segment's 690 k samples, 1e-5 relative in a mean, which HTDemucs'
/// normalisations carried to 1e-4 in the output).
pub fn sum_accurate(x: &Array, axes: &[i32], keep_dims: bool) -> Result<Array> {
    const BLOCK: i32 = 256;
    let nd = x.ndim() as i32;
    let axes: Vec<i32> = axes.iter().map(|&a| if a < 0 { nd + a } else { a }).collect();
    let kept: Vec<i32> = (0..nd).filter(|a| !axes.contains(a)).collect();
    let shape = x.shape().to_vec();
    let n: i32 = axes.iter().map(|&a| shape[a as usize]).product();
    let lead: Vec<i32> = kept.iter().map(|&a| shape[a as usize]).collect();
    let perm: Vec<i32> = kept.iter().chain(axes.iter()).copied().collect();
    let mut flat_shape = lead.clone();
    flat_shape.push(n);
    let flat = x.transpose_axes(&perm)?.reshape(&flat_shape)?;
    let blocks = (n + BLOCK - 1) / BLOCK;
    let flat = pad_axis(&flat, lead.len() as i32, 0, blocks * BLOCK - n, PadMode::Constant)?;
    let mut bshape = lead.clone();
    bshape.extend([blocks, BLOCK]);
    let s = flat.reshape(&bshape)?.sum_axis(-1, false)?.sum_axis(-1, false)?;
    if keep_dims {
        let out: Vec<i32> = (0..nd).map(|a| if axes.contains(&a) { 1 } else { shape[a as usize] }).collect();
        Ok(s.reshape(&out)?)
    } else {
        Ok(s)
    }
}

/// Elements per reduction over `axes`.
fn count(x: &Array, axes: &[i32]) -> i32 {
    let nd = x.ndim() as i32;
    axes.iter().map(|&a| x.shape()[if a < 0 { nd + a } else { a } as usize]).product()
}

/// Mean over `axes` with [`sum_accurate`].
pub fn mean_accurate(x: &Array, axes: &[i32], keep_dims: bool) -> Result<Array> {
    Ok(sum_accurate(x, axes, keep_dims)?.divide(mlx_rs::array!(count(x, axes).max(1) as f32))?)
}

/// Mean and variance over `axes` (kept as size-1 axes): the variance is the mean of squared
/// deviations from that mean (two passes, both with [`sum_accurate`]), with `ddof` degrees of
/// freedom removed. MLX's `var` computes `E[x^2] - E[x]^2`, which in float32 loses digits when
/// the mean is large against the spread.
pub fn mean_var(x: &Array, axes: &[i32], ddof: i32) -> Result<(Array, Array)> {
    let mean = mean_accurate(x, axes, true)?;
    let d = x.subtract(&mean)?;
    let var = sum_accurate(&d.square()?, axes, true)?.divide(mlx_rs::array!((count(x, axes) - ddof).max(1) as f32))?;
    Ok((mean, var))
}

/// `(x - mean) / sqrt(var + eps)` with the statistics of [`mean_var`] over `axes`.
pub fn standardize(x: &Array, axes: &[i32], eps: f32) -> Result<Array> {
    let (mean, var) = mean_var(x, axes, 0)?;
    Ok(x.subtract(&mean)?.multiply(ops::rsqrt(&var.add(mlx_rs::array!(eps))?)?)?)
}

/// Index `i` of a sequence of `n` (> 0) reflected at its ends without repeating the edge, as
/// `torch.nn.functional.pad(mode="reflect")` and numpy's `"reflect"` pad (`-1` -> `1`, `n`
/// -> `n - 2`); one reflection, so `i` must lie within `n - 1` of the ends.
pub(crate) fn reflect_index(i: isize, n: usize) -> usize {
    let n = n as isize;
    let j = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    j as usize
}

/// Exact (erf) GELU, torch's default. Large float32 arrays on the CPU backend take the host
/// kernel ([`crate::nn::host`]), MLX's `erf` there being scalar.
pub fn gelu(x: &Array) -> Result<Array> {
    if x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size()) {
        return crate::nn::host::gelu(x);
    }
    // mlx-rs' compiled GELU (one kernel instead of five) is not used: on the H200 each call
    // of the compiled function cost the host more than the four kernels it saves (Whisper
    // turbo's 224-token decode 180-215 ms without it, 250-342 ms with it; MusicGen medium's
    // 10 s generation 4.92 s against 7.30 s).
    let half = mlx_rs::array!(0.5f32);
    Ok(x.multiply(&half)?.multiply(mlx_rs::ops::erf(&x.multiply(mlx_rs::array!(std::f32::consts::FRAC_1_SQRT_2))?)?.add(mlx_rs::array!(1.0f32))?)?)
}

/// The real signal of length `n` whose half spectrum is `z` (`[..., n / 2 + 1]`, complex), as
/// numpy's `irfft` and torch's `istft` define it: the imaginary parts of the DC bin and, for
/// even `n`, of the Nyquist bin are ignored. A spectrum computed by a network (HTDemucs'
/// decoders) has them non-zero; MLX's CPU backend drops them, but its CUDA backend (cuFFT's
/// C2R) did not, and the separated sources differed by 5e-3. Zeroed here on every backend.
pub fn irfft_real_edges(z: &Array, n: i32) -> Result<Array> {
    let bins = *z.shape().last().ok_or_else(|| Error::InvalidArgument("irfft of a scalar".into()))?;
    if n < 1 || bins != n / 2 + 1 {
        return Err(Error::InvalidArgument(format!("irfft to {n} samples needs {} bins, got {bins}", n / 2 + 1)));
    }
    let mut keep = vec![1f32; bins as usize];
    keep[0] = 0.0;
    if n % 2 == 0 {
        keep[(n / 2) as usize] = 0.0;
    }
    let im = z.imag()?.multiply(Array::from_slice(&keep, &[bins]))?;
    let j = Array::from_complex(mlx_rs::complex64::new(0.0, 1.0));
    let z = z.real()?.add(im.multiply(&j)?)?;
    Ok(mlx_rs::fft::irfft(&z, n, -1)?)
}
