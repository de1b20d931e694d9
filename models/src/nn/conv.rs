//! PyTorch to MLX convolution weight layouts. Activations are channels-last in MLX
//! (`[N, L, C]`, `[N, H, W, C]`); these convert checkpoint weights once, at load time.
use mlx_rs::Array;

use crate::error::{Error, Result};

/// `nn.Conv1d` / `nn.Conv2d` weight `[out, in/groups, k...]` to MLX's `[out, k..., in/groups]`.
pub fn conv_weight_from_torch(w: &Array) -> Result<Array> {
    let mut axes: Vec<i32> = (0..w.ndim() as i32).collect();
    let ci = axes.remove(1);
    axes.push(ci);
    Ok(w.transpose_axes(&axes)?)
}

/// `nn.ConvTranspose1d` weight `[in, out/groups, k]` to MLX's `conv_transpose1d` layout
/// `[out, k, in/groups]`, group by group.
pub fn conv_transpose1d_weight_from_torch(w: &Array, groups: i32) -> Result<Array> {
    let s = w.shape();
    if s.len() != 3 || groups < 1 || s[0] % groups != 0 {
        return Err(Error::InvalidArgument(format!(
            "ConvTranspose1d weight of shape {s:?} with groups={groups}: expected [in, out/groups, k] with in divisible by groups"
        )));
    }
    let (cin, cout_g, k) = (s[0], s[1], s[2]);
    let w = w.reshape(&[groups, cin / groups, cout_g, k])?;
    let w = w.transpose_axes(&[0, 2, 3, 1])?;
    Ok(w.reshape(&[groups * cout_g, k, cin / groups])?)
}

/// Where the channel axis lives between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[B, T, C]`, converted once at the model boundary (the optimized path).
    ChannelsLast,
    /// `[B, C, T]`, transposed into and out of every convolution (the naive path).
    ChannelsFirst,
}

/// How convolutions are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// MLX's `conv1d` / `conv_transpose1d`, as a direct port calls them.
    Mlx,
    /// Convolutions as BLAS matrix products: im2col for `conv1d`, and for the transposed
    /// convolution one product with all kernel taps followed by an overlap-add of the
    /// stride-sized blocks. On the CPU backend MLX's `conv_transpose1d` is a direct loop,
    /// tens of times slower than this at EnCodec's and HTDemucs' sizes.
    Gemm,
}

/// Layout and kernels together: how one path runs the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec {
    pub layout: Layout,
    pub kernels: Kernels,
}

