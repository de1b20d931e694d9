//! HTDemucs' building blocks over channels-last activations: the 2-D rewrite convolution and the
//! DConv residual branch, over the shared axis convolutions of [`crate::nn::conv`].
//!
//! The frequency branch is `[B, T, F, C]` (frames, bins, channels), the time branch `[B, L, C]`.
//! The naive path keeps PyTorch's `[B, C, F, T]` / `[B, C, L]` between layers; [`swap`] converts
//! either way (the permutation is its own inverse) and every convolution pays a pair.
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
pub use crate::nn::conv::{AxisConv, AxisConvTr};
use crate::nn::conv::{Kernels, Layout};
use crate::nn::host_fused::{pointwise_norm_glu_residual, PointwiseNormGlu};
use crate::nn::ops::{gelu, glu, pad_axis, PadMode};

/// `[B, C, F, T]` <-> `[B, T, F, C]` and `[B, C, L]` <-> `[B, L, C]`.
pub fn swap(x: &Array) -> Result<Array> {
    Ok(match x.ndim() {
        4 => x.transpose_axes(&[0, 3, 2, 1])?,
        3 => x.transpose_axes(&[0, 2, 1])?,
        n => return Err(Error::InvalidArgument(format!("layout swap of a {n}-d array"))),
    })
}

/// The frequency branch's 2-D rewrite convolution (`Conv2d` with a `k x k` kernel over bins
/// and frames, padding `k / 2`), on `[B, T, F, C]`.
pub struct GridConv {
    /// MLX layout `[out, kT, kF, in]`.
    pub weight: Array,
    /// `[kT * kF * in, out]`.
    wmat: Array,
    pub bias: Array,
    pub kernel: i32,
}

impl GridConv {
    /// From a PyTorch `Conv2d` weight `[out, in, kF, kT]` (bins are PyTorch's height).
    pub fn new(torch_weight: &Array, bias: Array) -> Result<Self> {
        let s = torch_weight.shape().to_vec();
        if s.len() != 4 || s[2] != s[3] || s[2] % 2 != 1 {
            return Err(Error::InvalidArgument(format!("rewrite convolution weight {s:?}: expected [out, in, k, k] with k odd")));
        }
        let weight = torch_weight.transpose_axes(&[0, 3, 2, 1])?;
        let wmat = weight.reshape(&[s[0], -1])?.t().contiguous()?;
        Ok(Self { weight, wmat, bias, kernel: s[2] })
    }

    pub fn arrays(&self) -> [&Array; 3] {
        [&self.weight, &self.wmat, &self.bias]
    }

    pub fn forward(&self, x: &Array, kernels: Kernels) -> Result<Array> {
        let (k, p) = (self.kernel, self.kernel / 2);
        let y = match kernels {
            _ if k == 1 => x.matmul(&self.wmat)?,
            Kernels::Mlx => ops::conv2d(x, &self.weight, (1, 1), (p, p), (1, 1), 1)?,
            Kernels::Gemm if x.ndim() == 4 && crate::nn::host_conv::pays(x, 1, x.size() / x.shape()[3] as usize * self.bias.size()) => {
                // Bias included; reads the activation in place (no padding, no im2col).
                return crate::nn::host_conv::conv_grid(x, &self.wmat, &self.bias, k);
            }
            Kernels::Gemm => {
                let (t, f) = (x.shape()[1], x.shape()[2]);
                let xp = pad_axis(&pad_axis(x, 1, p, p, PadMode::Constant)?, 2, p, p, PadMode::Constant)?;
                let mut taps = Vec::with_capacity((k * k) as usize);
                for dt in 0..k {
                    for df in 0..k {
                        taps.push(xp.index((.., dt..dt + t, df..df + f)));
                    }
                }
                ops::concatenate(&taps, 3)?.matmul(&self.wmat)?
            }
        };
        Ok(y.add(&self.bias)?)
    }
}

/// `GroupNorm(1, C)` with its affine: statistics per sample over every axis but the batch's
/// and, for the 4-d frequency activations, the bins' (each `(b, f)` row is one sample, as
/// demucs folds bins into the batch before the DConv).
fn group_norm1(x: &Array, w: &Array, b: &Array, layout: Layout) -> Result<Array> {
    let nd = x.ndim() as i32;
    if layout == Layout::ChannelsLast && (nd == 3 || nd == 4) && x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size()) {
        let s: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
        let dims = if nd == 4 { [s[0], s[1], s[2], s[3]] } else { [s[0], s[1], 1, s[2]] };
        return crate::nn::host::group_norm_bafc(x, dims, Some(w), Some(b), 1e-5);
    }
    let axes: Vec<i32> = match (layout, nd) {
        (Layout::ChannelsLast, 4) => vec![1, 3],
        _ => (1..nd).collect(),
    };
    let y = crate::nn::ops::standardize(x, &axes, 1e-5)?;
    Ok(y.multiply(channel(w, x, layout)?)?.add(channel(b, x, layout)?)?)
}

/// `[B, A, F, C]` for the fused DConv tail ([`pointwise_norm_glu_residual`]): a float32
/// channels-last activation large enough for the host kernels, on the CPU's product path, with
/// a pointwise second convolution.
fn fused_tail_dims(x: &Array, conv2: &AxisConv, layout: Layout, kernels: Kernels) -> Option<[usize; 4]> {
    let s: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
    let usable = layout == Layout::ChannelsLast && kernels == Kernels::Gemm && conv2.kernel == 1 && conv2.stride == 1 && x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size() * 2);
    match (usable, s.len()) {
        (true, 4) => Some([s[0], s[1], s[2], s[3]]),
        (true, 3) => Some([s[0], s[1], 1, s[2]]),
        _ => None,
    }
}

/// A per-channel vector shaped to broadcast along `x`'s channel axis.
pub fn channel(v: &Array, x: &Array, layout: Layout) -> Result<Array> {
    Ok(match layout {
        Layout::ChannelsLast => v.clone(),
        Layout::ChannelsFirst => {
            let mut shape = vec![v.shape()[0]];
            shape.extend(std::iter::repeat_n(1, x.ndim() - 2));
            v.reshape(&shape)?
        }
    })
}

/// `F.glu` over the channel axis.
pub fn glu_channels(x: &Array, layout: Layout) -> Result<Array> {
    match layout {
        Layout::ChannelsLast => glu(x),
        Layout::ChannelsFirst => {
            let parts = x.split_equal(2, 1)?;
            Ok(parts[0].multiply(crate::nn::ops::sigmoid(&parts[1])?)?)
        }
    }
}

/// A convolution run in either layout: the naive one swaps into channels-last and back.
pub fn conv_in(layout: Layout, x: &Array, f: impl Fn(&Array) -> Result<Array>) -> Result<Array> {
    match layout {
        Layout::ChannelsLast => f(x),
        Layout::ChannelsFirst => swap(&f(&swap(x)?)?),
    }
}

/// One DConv layer: dilated conv to `hidden`, GroupNorm, GELU, 1x1 conv to `2 C`, GroupNorm,
/// GLU, LayerScale.
pub struct DConvLayer {
    pub conv1: AxisConv,
    pub norm1: (Array, Array),
    pub conv2: AxisConv,
    pub norm2: (Array, Array),
    pub scale: Array,
}

/// demucs' `DConv` residual branch, along time.
pub struct DConv {
    pub layers: Vec<DConvLayer>,
}

impl DConv {
    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = Vec::new();
        for l in &self.layers {
            v.extend(l.conv1.arrays());
            v.extend(l.conv2.arrays());
            v.extend([&l.norm1.0, &l.norm1.1, &l.norm2.0, &l.norm2.1, &l.scale]);
        }
        v
    }

    /// `x` channels-last `[B, T, C]` / `[B, T, F, C]` (time on axis 1), or channels-first
    /// `[N, C, T]`.
    pub fn forward(&self, x: &Array, layout: Layout, kernels: Kernels) -> Result<Array> {
        let mut x = x.clone();
        for l in &self.layers {
            let y = conv_in(layout, &x, |a| l.conv1.forward(a, 1, kernels))?;
            let y = gelu(&group_norm1(&y, &l.norm1.0, &l.norm1.1, layout)?)?;
            if let Some(dims) = fused_tail_dims(&x, &l.conv2, layout, kernels) {
                // Pointwise product, GroupNorm, GLU, LayerScale and residual in one pass on
                // the host, the 2C-channel product never stored (see the module).
                let p = PointwiseNormGlu {
                    w: l.conv2.wmat(),
                    bias: &l.conv2.bias,
                    gamma: &l.norm2.0,
                    beta: &l.norm2.1,
                    scale: &l.scale,
                    eps: 1e-5,
                };
                x = pointwise_norm_glu_residual(&x, &y, &p, dims)?;
                continue;
            }
            let y = conv_in(layout, &y, |a| l.conv2.forward(a, 1, kernels))?;
            let y = glu_channels(&group_norm1(&y, &l.norm2.0, &l.norm2.1, layout)?, layout)?;
            x = x.add(y.multiply(channel(&l.scale, &x, layout)?)?)?;
        }
        Ok(x)
    }
}
