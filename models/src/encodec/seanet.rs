//! SEANet, EnCodec's convolutional encoder and decoder, as HF `EncodecEncoder` /
//! `EncodecDecoder` build it: the same layer list, the same indices (weight names follow them),
//! the same padding rules. Weight norm is folded into plain convolution weights at load time.
//!
//! Two layouts run the same layers. [`Layout::ChannelsLast`] converts `[B, C, T]` audio to
//! MLX's `[B, T, C]` once at the model boundary; [`Layout::ChannelsFirst`] keeps PyTorch's
//! `[B, C, T]` between layers and transposes inside every convolution, as a direct port does.

use mlx_rs::ops::indexing::{IndexOp, IntoStrideBy};
use mlx_rs::{ops, Array};

use super::config::{EncodecConfig, PadMode};
use crate::checkpoint::Vars;
use crate::error::{Error, Result};
use crate::nn::lstm::{self, LstmLayer, Recurrence};
pub use crate::nn::ops::pad_axis;

pub use crate::nn::conv::{AxisConv, AxisConvTr, Exec, Kernels, Layout};

/// `nn.ELU()` (alpha 1): `x` where positive, `exp(x) - 1` elsewhere, as
/// `max(x, 0) + exp(min(x, 0)) - 1`: MLX's CPU `expm1` is scalar libm and made ELU a tenth of
/// the decoder's time; the difference near 0 is below 1e-7 absolute. Large float32 arrays on
/// the CPU backend take the host kernel ([`crate::nn::host::elu`]), MLX's `exp` being scalar.
pub fn elu(x: &Array) -> Result<Array> {
    if x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size()) {
        return crate::nn::host::elu(x);
    }
    let zero = mlx_rs::array!(0.0f32);
    let neg = ops::exp(&ops::minimum(x, &zero)?)?.subtract(mlx_rs::array!(1.0f32))?;
    Ok(ops::maximum(x, &zero)?.add(&neg)?)
}

fn to_cl(x: &Array) -> Result<Array> {
    Ok(x.transpose_axes(&[0, 2, 1])?)
}

/// `nn.GroupNorm(1, C)` after a convolution (`norm_type = "time_group_norm"`, as in
/// encodec_48khz): one mean and variance over all channels and the whole time axis per item,
/// then a per-channel gain and bias. It sees the whole signal, so it cannot stream.
pub struct GroupNorm {
    pub weight: Array,
    pub bias: Array,
}

impl GroupNorm {
    /// `x` channels-last `[B, T, C]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let mean = x.mean_axes(&[1, 2], true)?;
        let centred = x.subtract(&mean)?;
        let var = centred.square()?.mean_axes(&[1, 2], true)?;
        let normed = centred.multiply(ops::rsqrt(&var.add(mlx_rs::array!(1e-5f32))?)?)?;
        Ok(normed.multiply(&self.weight)?.add(&self.bias)?)
    }
}

/// `EncodecConv1d`: a weight-normed `nn.Conv1d` (or a plain one followed by a [`GroupNorm`])
/// with causal or centred padding, plus the extra right padding that makes the length a whole
/// number of strides; the convolution itself is the shared [`AxisConv`] (unpadded).
pub struct Conv {
    pub conv: AxisConv,
    /// The weight as `[in, k * out]`, every tap at once, for the tap-sum product.
    wtaps: Array,
    pub causal: bool,
    pub pad: PadMode,
    pub norm: Option<GroupNorm>,
}

impl Conv {
    fn effective_kernel(&self) -> i32 {
        (self.conv.kernel - 1) * self.conv.dilation + 1
    }

    /// Fixed left and right padding (without the length-dependent extra).
    pub fn fixed_padding(&self) -> (i32, i32) {
        let total = self.effective_kernel() - self.conv.stride;
        if self.causal {
            (total, 0)
        } else {
            (total - total / 2, total / 2)
        }
    }

    /// HF `_get_extra_padding_for_conv1d`: the output covers `ceil(len / stride)` frames.
    fn extra_padding(&self, len: i32) -> i32 {
        let s = self.conv.stride;
        (len + s - 1) / s * s - len
    }

    /// From the PyTorch weight `[out, in, k]` (weight norm folded).
    pub fn new(torch_weight: &Array, bias: Array, stride: i32, dilation: i32, causal: bool, pad: PadMode) -> Result<Self> {
        let conv = AxisConv::new(torch_weight, bias, stride, dilation, 0)?;
        let (cout, kernel, cin) = (conv.weight.shape()[0], conv.kernel, conv.weight.shape()[2]);
        let wtaps = conv.weight.transpose_axes(&[2, 1, 0])?.reshape(&[cin, kernel * cout])?.contiguous()?;
        Ok(Self { conv, wtaps, causal, pad, norm: None })
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = self.conv.arrays().to_vec();
        v.push(&self.wtaps);
        if let Some(n) = &self.norm {
            v.extend([&n.weight, &n.bias]);
        }
        v
    }

    /// `x` channels-last `[B, T, C]`.
    pub fn forward(&self, x: &Array, kernels: Kernels) -> Result<Array> {
        let y = self.conv_only(x, kernels)?;
        match &self.norm {
            Some(n) => n.forward(&y),
            None => Ok(y),
        }
    }

    fn conv_only(&self, x: &Array, kernels: Kernels) -> Result<Array> {
        let len = x.shape()[1];
        let (left, right) = self.fixed_padding();
        let x = pad_axis(x, 1, left, right + self.extra_padding(len), self.pad)?;
        let c = &self.conv;
        let (cin, cout) = (c.weight.shape()[2], c.weight.shape()[0]);
        // (Where the host convolution takes it, which reads the input in place, neither copy.)
        if kernels == Kernels::Gemm && cout < cin && !(c.kernel == 1 && c.stride == 1) && !c.on_host(&x, 1, kernels) {
            // Fewer outputs than inputs: multiply every input by all taps at once ([T, k * out],
            // smaller than im2col's [T, k * in]), then add the taps' shifted products. Tap `i`
            // of output `t` reads input `t * stride + i * dilation`.
            let out_len = (x.shape()[1] - self.effective_kernel()) / c.stride + 1;
            let tap = |a: &Array, i: i32| {
                let start = i * c.dilation;
                a.index((.., (start..start + (out_len - 1) * c.stride + 1).stride_by(c.stride), ..))
            };
            let (b, t) = (x.shape()[0], x.shape()[1]);
            let z = x.matmul(&self.wtaps)?.reshape(&[b, t, c.kernel, cout])?;
            let mut acc = tap(&z.index((.., .., 0, ..)), 0);
            for i in 1..c.kernel {
                acc = acc.add(tap(&z.index((.., .., i, ..)), i))?;
            }
            return Ok(acc.add(&c.bias)?);
        }
        c.forward(&x, 1, kernels)
    }
}

/// `EncodecConvTranspose1d`: a weight-normed `nn.ConvTranspose1d` (the shared
/// [`AxisConvTr`]), then the fixed padding trimmed off (all on the right when causal with
/// `trim_right_ratio` 1).
pub struct ConvTranspose {
    pub conv: AxisConvTr,
    /// Samples trimmed on each side.
    pub trim: (i32, i32),
    /// Applied before the trim, as HF does (its statistics include the trimmed samples).
    pub norm: Option<GroupNorm>,
}

impl ConvTranspose {
    /// From the PyTorch weight `[in, out, k]` (weight norm folded).
    pub fn new(torch_weight: &Array, bias: Array, stride: i32, trim: (i32, i32)) -> Result<Self> {
        Ok(Self { conv: AxisConvTr::new(torch_weight, bias, stride)?, trim, norm: None })
    }

    pub fn forward(&self, x: &Array, kernels: Kernels) -> Result<Array> {
        let y = self.conv.forward(x, 1, kernels)?;
        let y = match &self.norm {
            Some(n) => n.forward(&y)?,
            None => y,
        };
        let n = y.shape()[1];
        Ok(y.index((.., self.trim.0..n - self.trim.1, ..)))
    }
}

/// `EncodecResnetBlock`: ELU, dilated conv, ELU, 1x1 conv, plus a shortcut (1x1 conv or identity).
pub struct ResBlock {
    pub convs: Vec<Conv>,
    pub shortcut: Option<Conv>,
}

/// `EncodecLSTM`: stacked LSTM over time plus a residual connection.
pub struct Lstm {
    pub layers: Vec<LstmLayer>,
}

impl Lstm {
    /// `x` time-major `[T, B, C]`, from `state` (one `(h, c)` per layer, zeros when `None`);
    /// returns the output and the final state.
    pub fn forward_tbc(&self, x: &Array, state: Option<&[(Array, Array)]>, rec: Recurrence) -> Result<(Array, Vec<(Array, Array)>)> {
        let (h, out_state) = lstm::forward_stack(&self.layers, x, state, rec)?;
        Ok((h.add(x)?, out_state))
    }
}

pub enum Layer {
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    Res(ResBlock),
    Lstm(Lstm),
    Elu,
}

impl Layer {
    /// Run one layer on activations in `exec.layout`.
    pub fn forward(&self, x: &Array, exec: Exec) -> Result<Array> {
        let (layout, k) = (exec.layout, exec.kernels);
        // Convolutions run channels-last in MLX; the naive layout pays a transpose pair here.
        let conv_like = |f: &dyn Fn(&Array) -> Result<Array>| -> Result<Array> {
            match layout {
                Layout::ChannelsLast => f(x),
                Layout::ChannelsFirst => to_cl(&f(&to_cl(x)?)?),
            }
        };
        match self {
            Layer::Elu => elu(x),
            Layer::Conv(c) => conv_like(&|x| c.forward(x, k)),
            Layer::ConvTranspose(c) => conv_like(&|x| c.forward(x, k)),
            Layer::Res(r) => {
                let mut h = x.clone();
                for c in &r.convs {
                    h = elu(&h)?;
                    h = match layout {
                        Layout::ChannelsLast => c.forward(&h, k)?,
                        Layout::ChannelsFirst => to_cl(&c.forward(&to_cl(&h)?, k)?)?,
                    };
                }
                let skip = match (&r.shortcut, layout) {
                    (None, _) => x.clone(),
                    (Some(c), Layout::ChannelsLast) => c.forward(x, k)?,
                    (Some(c), Layout::ChannelsFirst) => to_cl(&c.forward(&to_cl(x)?, k)?)?,
                };
                Ok(skip.add(&h)?)
            }
            Layer::Lstm(l) => {
                // HF permutes [B, C, T] to [T, B, C] and back.
                let perm_in: &[i32] = match layout {
                    Layout::ChannelsLast => &[1, 0, 2],
                    Layout::ChannelsFirst => &[2, 0, 1],
                };
                let perm_out: &[i32] = match layout {
                    Layout::ChannelsLast => &[1, 0, 2],
                    Layout::ChannelsFirst => &[1, 2, 0],
                };
                let (y, _) = l.forward_tbc(&x.transpose_axes(perm_in)?, None, exec.recurrence)?;
                Ok(y.transpose_axes(perm_out)?)
            }
        }
    }
}

/// Run `layers` on `x` already in `exec.layout`.
pub fn run(layers: &[Layer], x: &Array, exec: Exec) -> Result<Array> {
    let mut h = x.clone();
    for l in layers {
        h = l.forward(&h, exec)?;
    }
    Ok(h)
}

/// Which SEANet half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Encoder,
    Decoder,
}

impl Half {
    fn prefix(self) -> &'static str {
        match self {
            Half::Encoder => "encoder",
            Half::Decoder => "decoder",
        }
    }
}

/// One layer as HF lays it out, before weights are attached.
enum Spec {
    Conv { cin: i32, cout: i32, k: i32, stride: i32, dilation: i32 },
    ConvT { cin: i32, cout: i32, k: i32, stride: i32 },
    Res { dim: i32, dilations: [i32; 2] },
    Lstm { dim: i32 },
    Elu,
}

fn specs(cfg: &EncodecConfig, half: Half) -> Vec<Spec> {
    let nf = cfg.num_filters;
    let conv = |cin, cout, k, stride| Spec::Conv { cin, cout, k, stride, dilation: 1 };
    let res = |dim, j: i32| Spec::Res { dim, dilations: [cfg.dilation_growth_rate.pow(j as u32), 1] };
    let mut v = Vec::new();
    match half {
        Half::Encoder => {
            v.push(conv(cfg.audio_channels, nf, cfg.kernel_size, 1));
            let mut scaling = 1;
            for &ratio in cfg.upsampling_ratios.iter().rev() {
                let cur = scaling * nf;
                for j in 0..cfg.num_residual_layers {
                    v.push(res(cur, j));
                }
                v.push(Spec::Elu);
                v.push(conv(cur, cur * 2, ratio * 2, ratio));
                scaling *= 2;
            }
            v.push(Spec::Lstm { dim: scaling * nf });
            v.push(Spec::Elu);
            v.push(conv(scaling * nf, cfg.hidden_size, cfg.last_kernel_size, 1));
        }
        Half::Decoder => {
            let mut scaling = 1 << cfg.upsampling_ratios.len();
            v.push(conv(cfg.hidden_size, scaling * nf, cfg.kernel_size, 1));
            v.push(Spec::Lstm { dim: scaling * nf });
            for &ratio in &cfg.upsampling_ratios {
                let cur = scaling * nf;
                v.push(Spec::Elu);
                v.push(Spec::ConvT { cin: cur, cout: cur / 2, k: ratio * 2, stride: ratio });
                for j in 0..cfg.num_residual_layers {
                    v.push(res(cur / 2, j));
                }
                scaling /= 2;
            }
            v.push(Spec::Elu);
            v.push(conv(nf, cfg.audio_channels, cfg.last_kernel_size, 1));
        }
    }
    v
}

const G: &str = "parametrizations.weight.original0";
const V: &str = "parametrizations.weight.original1";

/// `g * v / ||v||`, the norm over every axis but the first (`torch` weight norm, `dim=0`).
fn fold_weight_norm(g: &Array, v: &Array) -> Result<Array> {
    let norm = v.square()?.sum_axes(&[1, 2], true)?.sqrt()?;
    Ok(v.multiply(g.divide(&norm)?)?)
}

/// A weight-normed convolution's kernel under `p` (`[cout, cin, k]` in PyTorch's layout; a
/// transposed one's is `[cin, cout, k]`), folded. Older saves (and the hub's EnCodec
/// checkpoints) name the two parts `weight_g` and `weight_v`.
fn weight_normed(p: &Vars, shape: [i32; 3]) -> Result<Array> {
    let g = p.tensor_any(&[G, "weight_g"], &[shape[0], 1, 1])?;
    let v = p.tensor_any(&[V, "weight_v"], &shape)?;
    fold_weight_norm(&g, &v)
}

/// Build one SEANet half under `vs` (HF `EncodecEncoder` / `EncodecDecoder` names).
pub fn build(cfg: &EncodecConfig, half: Half, vs: &Vars) -> Result<Vec<Layer>> {
    let pad = cfg.pad().map_err(Error::InvalidArgument)?;
    let causal = cfg.use_causal_conv;
    let group_norm = cfg.norm_type == "time_group_norm";
    // Weight norm folded, or (time_group_norm) a plain weight and a norm after the convolution.
    let kernel = |c: &Vars, shape: [i32; 3]| if group_norm { c.tensor("weight", &shape) } else { weight_normed(c, shape) };
    let norm = |p: &Vars, cout: i32| -> Result<Option<GroupNorm>> {
        if !group_norm {
            return Ok(None);
        }
        let n = p.pp("norm");
        Ok(Some(GroupNorm { weight: n.tensor("weight", &[cout])?, bias: n.tensor("bias", &[cout])? }))
    };
    let conv = |p: &Vars, cin: i32, cout: i32, k: i32, stride: i32, dilation: i32| -> Result<Conv> {
        let c = p.pp("conv");
        let mut conv = Conv::new(&kernel(&c, [cout, cin, k])?, c.tensor("bias", &[cout])?, stride, dilation, causal, pad)?;
        conv.norm = norm(p, cout)?;
        c.materialize(conv.arrays());
        Ok(conv)
    };
    let half_vs = vs.pp(half.prefix());
    let mut layers = Vec::new();
    for (i, s) in specs(cfg, half).into_iter().enumerate() {
        let p = half_vs.pp(format!("layers.{i}"));
        layers.push(match s {
            Spec::Elu => Layer::Elu,
            Spec::Conv { cin, cout, k, stride, dilation } => Layer::Conv(conv(&p, cin, cout, k, stride, dilation)?),
            Spec::Res { dim, dilations } => {
                let hidden = dim / cfg.compress;
                Layer::Res(ResBlock {
                    convs: vec![conv(&p.pp("block.1"), dim, hidden, cfg.residual_kernel_size, 1, dilations[0])?, conv(&p.pp("block.3"), hidden, dim, 1, 1, dilations[1])?],
                    shortcut: if cfg.use_conv_shortcut { Some(conv(&p.pp("shortcut"), dim, dim, 1, 1, 1)?) } else { None },
                })
            }
            Spec::ConvT { cin, cout, k, stride } => {
                let c = p.pp("conv");
                let weight = kernel(&c, [cin, cout, k])?;
                let total = k - stride;
                let right = if causal { (f64::from(total) * cfg.trim_right_ratio).ceil() as i32 } else { total / 2 };
                let mut layer = ConvTranspose::new(&weight, c.tensor("bias", &[cout])?, stride, (total - right, right))?;
                layer.norm = norm(&p, cout)?;
                c.materialize(layer.conv.arrays());
                if let Some(n) = &layer.norm {
                    c.materialize([&n.weight, &n.bias]);
                }
                Layer::ConvTranspose(layer)
            }
            Spec::Lstm { dim } => {
                let ls = (0..cfg.num_lstm_layers)
                    .map(|l| {
                        let t = |n: &str, shape: &[i32]| p.pp("lstm").tensor(&format!("{n}_l{l}"), shape);
                        let (wih, whh) = (t("weight_ih", &[4 * dim, dim])?, t("weight_hh", &[4 * dim, dim])?);
                        let layer = LstmLayer::new(wih, whh, &t("bias_ih", &[4 * dim])?, &t("bias_hh", &[4 * dim])?)?;
                        p.materialize(layer.arrays());
                        Ok(layer)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Layer::Lstm(Lstm { layers: ls })
            }
        });
    }
    Ok(layers)
}

/// The input frames a run of stride-1 convolutions, residual blocks and transposed
/// convolutions needs for the output range `lo..=hi` (global indices; edges ignored).
pub fn needed_input(layers: &[Layer], mut lo: i64, mut hi: i64) -> (i64, i64) {
    let conv_back = |c: &Conv, lo: i64, hi: i64| {
        let (l, r) = c.fixed_padding();
        (lo - i64::from(l), hi + i64::from(r))
    };
    for layer in layers.iter().rev() {
        (lo, hi) = match layer {
            Layer::Elu | Layer::Lstm(_) => (lo, hi),
            Layer::Conv(c) => conv_back(c, lo, hi),
            Layer::Res(r) => {
                let (mut a, mut b) = (lo, hi);
                for c in r.convs.iter().rev() {
                    (a, b) = conv_back(c, a, b);
                }
                (a.min(lo), b.max(hi))
            }
            Layer::ConvTranspose(c) => {
                let (k, s, left) = (i64::from(c.conv.kernel), i64::from(c.conv.stride), i64::from(c.trim.0));
                ((lo + left - k + 1).div_euclid(s) + i64::from((lo + left - k + 1).rem_euclid(s) != 0), (hi + left).div_euclid(s))
            }
        };
    }
    (lo, hi)
}
