//! HTDemucs' building blocks over channels-last activations: convolutions along one axis
//! (BLAS products or MLX's kernels), the 2-D rewrite convolution, and the DConv residual branch.
//!
//! The frequency branch is `[B, T, F, C]` (frames, bins, channels), the time branch `[B, L, C]`.
//! The naive path keeps PyTorch's `[B, C, F, T]` / `[B, C, L]` between layers; [`swap`] converts
//! either way (the permutation is its own inverse) and every convolution pays a pair.
use mlx_rs::ops::indexing::{IndexOp, IntoStrideBy};
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
use crate::nn::conv::{conv_transpose1d_weight_from_torch, conv_weight_from_torch, Kernels, Layout};
use crate::nn::ops::{gelu, glu, pad_axis, PadMode};

/// `[B, C, F, T]` <-> `[B, T, F, C]` and `[B, C, L]` <-> `[B, L, C]`.
pub fn swap(x: &Array) -> Result<Array> {
    Ok(match x.ndim() {
        4 => x.transpose_axes(&[0, 3, 2, 1])?,
        3 => x.transpose_axes(&[0, 2, 1])?,
        n => return Err(Error::InvalidArgument(format!("layout swap of a {n}-d array"))),
    })
}

/// Elements `start, start + step, ...` below `stop` along `axis` (1 or 2).
fn strided(x: &Array, axis: usize, start: i32, stop: i32, step: i32) -> Array {
    let r = (start..stop).stride_by(step);
    if axis == 1 {
        x.index((.., r))
    } else {
        x.index((.., .., r))
    }
}

/// A convolution along one axis of a channels-last array (`Conv1d`, or a `Conv2d` whose
/// kernel spans one axis), zero padding `pad` on both sides.
pub struct AxisConv {
    /// MLX layout `[out, k, in]`.
    pub weight: Array,
    /// `[k * in, out]`, taps major, for the im2col product.
    wmat: Array,
    pub bias: Array,
    pub kernel: i32,
    pub stride: i32,
    pub dilation: i32,
    pub pad: i32,
}

impl AxisConv {
    /// From a PyTorch weight `[out, in, k]` or `[out, in, k, 1]` / `[out, in, 1, k]`.
    pub fn new(torch_weight: &Array, bias: Array, stride: i32, dilation: i32, pad: i32) -> Result<Self> {
        let s = torch_weight.shape().to_vec();
        let w = match s.len() {
            3 => torch_weight.clone(),
            4 if s[3] == 1 => torch_weight.reshape(&[s[0], s[1], s[2]])?,
            4 if s[2] == 1 => torch_weight.reshape(&[s[0], s[1], s[3]])?,
            _ => return Err(Error::InvalidArgument(format!("convolution weight {s:?}: expected a kernel along one axis"))),
        };
        let weight = conv_weight_from_torch(&w)?;
        let (cout, kernel, cin) = (weight.shape()[0], weight.shape()[1], weight.shape()[2]);
        let wmat = weight.reshape(&[cout, kernel * cin])?.t().contiguous()?;
        Ok(Self { weight, wmat, bias, kernel, stride, dilation, pad })
    }

    pub fn arrays(&self) -> [&Array; 3] {
        [&self.weight, &self.wmat, &self.bias]
    }

    /// `x` channels-last, 3-d (`axis` 1) or 4-d (`axis` 1 or 2).
    pub fn forward(&self, x: &Array, axis: usize, kernels: Kernels) -> Result<Array> {
        let nd = x.ndim();
        let y = match kernels {
            Kernels::Mlx if nd == 3 => ops::conv1d(x, &self.weight, self.stride, self.pad, self.dilation, 1)?,
            Kernels::Mlx => {
                let (o, k, i) = (self.weight.shape()[0], self.kernel, self.weight.shape()[2]);
                let (shape, st, pd, dl) = if axis == 1 {
                    ([o, k, 1, i], (self.stride, 1), (self.pad, 0), (self.dilation, 1))
                } else {
                    ([o, 1, k, i], (1, self.stride), (0, self.pad), (1, self.dilation))
                };
                ops::conv2d(x, self.weight.reshape(&shape)?, st, pd, dl, 1)?
            }
            Kernels::Gemm if self.kernel == 1 && self.stride == 1 => x.matmul(&self.wmat)?,
            Kernels::Gemm => {
                let x = pad_axis(x, axis as i32, self.pad, self.pad, PadMode::Constant)?;
                let len = x.shape()[axis];
                let eff = (self.kernel - 1) * self.dilation + 1;
                let out = (len - eff) / self.stride + 1;
                if out < 1 {
                    return Err(Error::InvalidArgument(format!("convolution over {len} samples with kernel {eff}: no output")));
                }
                let taps: Vec<Array> = (0..self.kernel)
                    .map(|i| {
                        let s = i * self.dilation;
                        strided(&x, axis, s, s + (out - 1) * self.stride + 1, self.stride)
                    })
                    .collect();
                ops::concatenate(&taps, nd as i32 - 1)?.matmul(&self.wmat)?
            }
        };
        Ok(y.add(&self.bias)?)
    }
}

/// A transposed convolution along one axis, untrimmed: `L` in, `(L - 1) * stride + k` out.
pub struct AxisConvTr {
    /// MLX layout `[out, k, in]`.
    pub weight: Array,
    /// `[in, m * stride * out]`: every tap, the kernel zero-padded to `m` strides.
    wmat: Array,
    pub bias: Array,
    pub kernel: i32,
    pub stride: i32,
}

impl AxisConvTr {
    /// From a PyTorch `ConvTranspose1d` weight `[in, out, k]` or `ConvTranspose2d` `[in, out, k, 1]`.
    pub fn new(torch_weight: &Array, bias: Array, stride: i32) -> Result<Self> {
        let s = torch_weight.shape().to_vec();
        let w = match s.len() {
            3 => torch_weight.clone(),
            4 if s[3] == 1 => torch_weight.reshape(&[s[0], s[1], s[2]])?,
            _ => return Err(Error::InvalidArgument(format!("transposed convolution weight {s:?}: expected [in, out, k(, 1)]"))),
        };
        let (cin, cout, kernel) = (w.shape()[0], w.shape()[1], w.shape()[2]);
        let m = (kernel + stride - 1) / stride;
        let padded = if m * stride > kernel { ops::concatenate(&[w.clone(), ops::zeros::<f32>(&[cin, cout, m * stride - kernel])?], 2)? } else { w.clone() };
        let wmat = padded.transpose_axes(&[0, 2, 1])?.reshape(&[cin, m * stride * cout])?.contiguous()?;
        Ok(Self { weight: conv_transpose1d_weight_from_torch(&w, 1)?, wmat, bias, kernel, stride })
    }

    pub fn arrays(&self) -> [&Array; 3] {
        [&self.weight, &self.wmat, &self.bias]
    }

    pub fn forward(&self, x: &Array, axis: usize, kernels: Kernels) -> Result<Array> {
        let nd = x.ndim();
        let y = match kernels {
            Kernels::Mlx if nd == 3 => ops::conv_transpose1d(x, &self.weight, self.stride, 0, 1, 0, 1)?,
            Kernels::Mlx => {
                let (o, k, i) = (self.weight.shape()[0], self.kernel, self.weight.shape()[2]);
                let (shape, st) = if axis == 1 { ([o, k, 1, i], (self.stride, 1)) } else { ([o, 1, k, i], (1, self.stride)) };
                ops::conv_transpose2d(x, self.weight.reshape(&shape)?, st, (0, 0), (1, 1), (0, 0), 1)?
            }
            Kernels::Gemm => {
                // y[t*s + j] += x[t] W[j]: all taps of all frames in one product, then the m
                // stride-sized blocks each frame produced are added at frames t..t+m.
                let s = self.stride;
                let cout = self.bias.shape()[0];
                let m = self.wmat.shape()[1] / (s * cout);
                let mut shape = x.shape().to_vec();
                let len = shape[axis];
                shape.pop();
                let mut zshape = shape.clone();
                zshape.extend([m, s * cout]);
                let z = x.matmul(&self.wmat)?.reshape(&zshape)?;
                let mut acc: Option<Array> = None;
                for j in 0..m {
                    let part = z.take_axis(Array::from_int(j), nd as i32 - 1)?;
                    let placed = pad_axis(&part, axis as i32, j, m - 1 - j, PadMode::Constant)?;
                    acc = Some(match acc {
                        Some(a) => a.add(&placed)?,
                        None => placed,
                    });
                }
                let full = acc.ok_or_else(|| Error::InvalidArgument("transposed convolution with no taps".into()))?;
                // [.., L + m - 1 (axis), .., s * cout] -> stride blocks unfolded along the axis.
                let full = if axis == nd - 2 {
                    let mut fs = shape.clone();
                    fs[axis] = (len + m - 1) * s;
                    fs.push(cout);
                    full.reshape(&fs)?
                } else {
                    // axis 1 of a 4-d array: move the block next to the axis first.
                    let fsh = full.shape().to_vec(); // [B, L+m-1, F, s*cout]
                    let f = full.reshape(&[fsh[0], fsh[1], fsh[2], s, cout])?.transpose_axes(&[0, 1, 3, 2, 4])?;
                    f.reshape(&[fsh[0], fsh[1] * s, fsh[2], cout])?
                };
                strided(&full, axis, 0, (len - 1) * s + self.kernel, 1)
            }
        };
        Ok(y.add(&self.bias)?)
    }
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
    let axes: Vec<i32> = match (layout, nd) {
        (Layout::ChannelsLast, 4) => vec![1, 3],
        _ => (1..nd).collect(),
    };
    let y = crate::nn::ops::standardize(x, &axes, 1e-5)?;
    Ok(y.multiply(channel(w, x, layout)?)?.add(channel(b, x, layout)?)?)
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
            Ok(parts[0].multiply(ops::sigmoid(&parts[1])?)?)
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
            let y = conv_in(layout, &y, |a| l.conv2.forward(a, 1, kernels))?;
            let y = glu_channels(&group_norm1(&y, &l.norm2.0, &l.norm2.1, layout)?, layout)?;
            x = x.add(y.multiply(channel(&l.scale, &x, layout)?)?)?;
        }
        Ok(x)
    }
}
