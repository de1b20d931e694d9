//! PyTorch to MLX convolution weight layouts (activations are channels-last in MLX, `[N, L, C]`,
//! `[N, H, W, C]`; weights are converted once, at load time), and convolutions along one axis of
//! channels-last arrays as BLAS products or MLX's kernels (HTDemucs' layers, EnCodec's
//! transposed convolutions).
use mlx_rs::ops::indexing::{IndexOp, IntoStrideBy};
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
use crate::nn::lstm::Recurrence;
use crate::nn::ops::{pad_axis, PadMode};

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
        return Err(Error::InvalidArgument(format!("ConvTranspose1d weight of shape {s:?} with groups={groups}: expected [in, out/groups, k] with in divisible by groups")));
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

/// Layout, kernels and recurrence together: how one path runs the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec {
    pub layout: Layout,
    pub kernels: Kernels,
    /// How recurrent layers (EnCodec's LSTM) step; models without one ignore it.
    pub recurrence: Recurrence,
}

impl Exec {
    /// The naive path: PyTorch's layout with transposes inside every convolution, MLX's
    /// convolution ops, recurrences as separate ops. The optimized path: channels-last from the
    /// model boundary; on the CPU the BLAS-product convolutions, on a GPU MLX's own kernels
    /// (not the CPU backend's direct loops there). A model with a recurrence chooses its own.
    pub fn for_variant(v: crate::Variant) -> Self {
        let ops = Recurrence::Ops;
        match v {
            crate::Variant::Naive => Exec { layout: Layout::ChannelsFirst, kernels: Kernels::Mlx, recurrence: ops },
            crate::Variant::Optimized => {
                let kernels = if crate::runtime::on_gpu() { Kernels::Mlx } else { Kernels::Gemm };
                Exec { layout: Layout::ChannelsLast, kernels, recurrence: ops }
            }
        }
    }
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

/// A convolution along axis 2 of a channels-last `[B, T, F, C]` activation (the frequency
/// branch's, along the bins) is one along axis 1 of `[B T, F, C]`, a free reshape, which the
/// host kernels read in place: the folded array where the host kernels run.
fn fold_frames(x: &Array, axis: usize, kernels: Kernels) -> Option<Array> {
    let s = x.shape();
    (kernels == Kernels::Gemm && s.len() == 4 && axis == 2 && x.dtype() == mlx_rs::Dtype::Float32 && !crate::runtime::on_gpu()).then(|| x.reshape(&[s[0] * s[1], s[2], s[3]]).ok()).flatten()
}

/// `y` `[B T, F', O]` back to `[B, T, F', O]` for the activation `x` it was folded from.
fn unfold_frames(y: &Array, x: &Array) -> Result<Array> {
    let (s, ys) = (x.shape(), y.shape());
    Ok(y.reshape(&[s[0], s[1], ys[1], ys[2]])?)
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

    /// The weights as `[k * in, out]`, taps major.
    pub fn wmat(&self) -> &Array {
        &self.wmat
    }

    /// Whether [`Self::forward`] runs this convolution as the host kernel
    /// ([`crate::nn::host_conv::conv_axis1`], which reads `x` in place).
    pub fn on_host(&self, x: &Array, axis: usize, kernels: Kernels) -> bool {
        let nd = x.ndim();
        kernels == Kernels::Gemm
            && !(self.kernel == 1 && self.stride == 1)
            && axis == 1
            && nd > 0
            && crate::nn::host_conv::pays(x, self.stride, x.size() / x.shape()[nd - 1].max(1) as usize * self.bias.size())
    }

    /// `x` channels-last, 3-d (`axis` 1) or 4-d (`axis` 1 or 2).
    pub fn forward(&self, x: &Array, axis: usize, kernels: Kernels) -> Result<Array> {
        if let Some(folded) = fold_frames(x, axis, kernels) {
            let y = self.forward(&folded, 1, kernels)?;
            return unfold_frames(&y, x);
        }
        let nd = x.ndim();
        let y = match kernels {
            Kernels::Mlx if nd == 3 => ops::conv1d(x, &self.weight, self.stride, self.pad, self.dilation, 1)?,
            Kernels::Mlx => {
                let (o, k, i) = (self.weight.shape()[0], self.kernel, self.weight.shape()[2]);
                let (shape, st, pd, dl) =
                    if axis == 1 { ([o, k, 1, i], (self.stride, 1), (self.pad, 0), (self.dilation, 1)) } else { ([o, 1, k, i], (1, self.stride), (0, self.pad), (1, self.dilation)) };
                ops::conv2d(x, self.weight.reshape(&shape)?, st, pd, dl, 1)?
            }
            Kernels::Gemm if self.kernel == 1 && self.stride == 1 => x.matmul(&self.wmat)?,
            Kernels::Gemm if self.on_host(x, axis, kernels) => {
                // The taps read in place on the host, bias included (see the module).
                return crate::nn::host_conv::conv_axis1(x, &self.wmat, &self.bias, self.kernel, self.stride, self.dilation, self.pad);
            }
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
        if let Some(folded) = fold_frames(x, axis, kernels) {
            let y = self.forward(&folded, 1, kernels)?;
            return unfold_frames(&y, x);
        }
        let nd = x.ndim();
        let y = match kernels {
            Kernels::Mlx if nd == 3 => ops::conv_transpose1d(x, &self.weight, self.stride, 0, 1, 0, 1)?,
            Kernels::Mlx => {
                let (o, k, i) = (self.weight.shape()[0], self.kernel, self.weight.shape()[2]);
                let (shape, st) = if axis == 1 { ([o, k, 1, i], (self.stride, 1)) } else { ([o, 1, k, i], (1, self.stride)) };
                ops::conv_transpose2d(x, self.weight.reshape(&shape)?, st, (0, 0), (1, 1), (0, 0), 1)?
            }
            Kernels::Gemm if nd == 3 && axis == 1 && crate::nn::host_conv::pays(x, 1, (x.shape()[0] * x.shape()[1] * self.stride) as usize * self.bias.size()) => {
                // Each tap one product into rows `stride` apart, on the host (see the module).
                return crate::nn::host_conv::conv_transpose_axis1(x, &self.wmat, &self.bias, self.kernel, self.stride);
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
