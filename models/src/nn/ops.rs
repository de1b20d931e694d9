//! Small MLX operations mlx-rs does not expose in the form the models want.
use mlx_rs::{Array, Stream};

use crate::error::{Error, Result};

/// A copy of `src` with `update` written into the box `start..stop` (one bound per axis, unit
/// strides). MLX's `slice_update`: the O(1) append of the preallocated KV cache.
pub fn slice_update(src: &Array, update: &Array, start: &[i32], stop: &[i32]) -> Result<Array> {
    if start.len() != src.ndim() || stop.len() != src.ndim() {
        return Err(Error::InvalidArgument(format!(
            "slice_update: {} start / {} stop bounds for a {}-d array",
            start.len(),
            stop.len(),
            src.ndim()
        )));
    }
    let strides = vec![1i32; start.len()];
    let stream = Stream::thread_local_or_default();
    // SAFETY: all handles are valid for the call; `res` is owned by the returned Array on
    // success and freed here on failure.
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_slice_update(
            &mut res,
            src.as_ptr(),
            update.as_ptr(),
            start.as_ptr(),
            start.len(),
            stop.as_ptr(),
            stop.len(),
            strides.as_ptr(),
            strides.len(),
            stream.as_ptr(),
        );
        if status != 0 {
            mlx_sys::mlx_array_free(res);
            return Err(Error::Mlx(format!(
                "slice_update of {:?} into {:?} at {start:?}..{stop:?} failed",
                update.shape(),
                src.shape()
            )));
        }
        Ok(Array::from_ptr(res))
    }
}

/// Gated linear unit over the last axis: `a * sigmoid(b)` where `[a, b] = split(x, 2, -1)`.
pub fn glu(x: &Array) -> Result<Array> {
    let parts = x.split_equal(2, -1)?;
    Ok(parts[0].multiply(mlx_rs::ops::sigmoid(&parts[1])?)?)
}
