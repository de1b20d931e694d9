//! HTDemucs, demucs 4.1.0's `demucs.htdemucs.HTDemucs`: a frequency branch over the complex
//! spectrogram (complex as channels) and a time branch over the waveform, each an encoder of
//! `depth` layers with DConv residual branches, a cross-domain transformer between them at the
//! bottom, and mirrored decoders; the two outputs are summed.
//!
//! Naive and optimized paths share the modules and weights (the seed's point 4). The naive
//! path keeps PyTorch's `[B, C, F, T]` / `[B, C, L]` between layers, transposes into and out of
//! every convolution and every transformer layer, and uses MLX's convolution kernels. The
//! optimized path converts to channels-last once at the model boundary, so the transformer's
//! tokens are a reshape of the frequency activations, and on the CPU computes convolutions as
//! BLAS products ([`crate::nn::conv::Kernels::Gemm`]).
pub mod config;
pub mod layers;
pub mod pretrained;
pub mod spec;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array, Dtype};

pub use self::config::HtDemucsConfig;
use self::layers::{conv_in, glu_channels, swap, AxisConv, AxisConvTr, DConv, DConvLayer, GridConv};
use self::spec::Stft;
use crate::checkpoint::{fan_in, Checkpointed, Init, Vars};
use crate::chunked::{ChunkedProcessor, DemucsChunking};
use crate::error::{Error, Result};
use crate::nn::attention::{AttentionKernel, Mask, MultiHeadAttention};
use crate::nn::cache::ArrayCache;
use crate::nn::conv::{Exec, Kernels, Layout};
use crate::nn::linear::Linear;
use crate::nn::norm::{group_norm, LayerNorm};
use crate::nn::ops::{gelu, pad_axis, PadMode};
use crate::nn::profile::{mark, Phases};
use crate::Variant;

/// How a variant runs the layers ([`Exec::for_variant`]; no recurrence here).
pub fn exec(v: Variant) -> Exec {
    Exec::for_variant(v)
}

/// Segments per model call in a chunked separation: demucs' one at a time for the naive path
/// and on the CPU (batching buys nothing there and multiplies the memory). On a GPU the
/// optimized path stacks as many as fit in a quarter of MLX's memory limit, at about 2.3 GiB
/// per released-size segment, up to [`MAX_GPU_SEGMENT_BATCH`]: one 7.8 s segment leaves the
/// card partly idle (H200, 60 s: 0.65 s one at a time, 0.34 s by 4, 0.30 s by 8 at 17.8 GiB).
pub fn segment_batch(v: Variant) -> usize {
    match v {
        Variant::Optimized if crate::runtime::on_gpu() => {
            let limit = mlx_rs::memory::memory_limit().unwrap_or(0) as f64;
            ((limit / 4.0 / (2.3 * (1u64 << 30) as f64)) as usize).clamp(1, MAX_GPU_SEGMENT_BATCH)
        }
        _ => 1,
    }
}

/// See [`segment_batch`].
pub const MAX_GPU_SEGMENT_BATCH: usize = 8;

/// `HEncLayer` of either branch (without GroupNorm: the released models start it past their
/// depth).
struct EncLayer {
    conv: AxisConv,
    dconv: Option<DConv>,
    rewrite: Option<Rewrite>,
    freq: bool,
}

/// `HDecLayer` of either branch.
struct DecLayer {
    conv_tr: AxisConvTr,
    dconv: Option<DConv>,
    rewrite: Option<Rewrite>,
    freq: bool,
    last: bool,
    pad: i32,
}

enum Rewrite {
    Freq(GridConv),
    Time(AxisConv),
}

impl Rewrite {
    fn forward(&self, x: &Array, e: Exec) -> Result<Array> {
        let y = match self {
            Rewrite::Freq(c) => conv_in(e.layout, x, |a| c.forward(a, e.kernels))?,
            Rewrite::Time(c) => conv_in(e.layout, x, |a| c.forward(a, 1, e.kernels))?,
        };
        glu_channels(&y, e.layout)
    }

    fn arrays(&self) -> [&Array; 3] {
        match self {
            Rewrite::Freq(c) => c.arrays(),
            Rewrite::Time(c) => c.arrays(),
        }
    }
}

/// The DConv branch of a frequency layer runs along time for every bin: channels-last
/// `[B, T, F, C]` as it is; channels-first folds the bins into the batch, as demucs does.
fn dconv_any(d: &DConv, y: &Array, freq: bool, e: Exec) -> Result<Array> {
    if !freq || e.layout == Layout::ChannelsLast {
        return d.forward(y, e.layout, e.kernels);
    }
    let s = y.shape().to_vec(); // [B, C, F, T]
    let folded = y.transpose_axes(&[0, 2, 1, 3])?.reshape(&[s[0] * s[2], s[1], s[3]])?;
    let out = d.forward(&folded, e.layout, e.kernels)?;
    Ok(out.reshape(&[s[0], s[2], s[1], s[3]])?.transpose_axes(&[0, 2, 1, 3])?)
}

impl EncLayer {
    fn forward(&self, x: &Array, e: Exec) -> Result<Array> {
        let y = if self.freq {
            // Along the bins: axis 2 of [B, T, F, C].
            conv_in(e.layout, x, |a| self.conv.forward(a, 2, e.kernels))?
        } else {
            // demucs pads the time axis to a whole number of strides first.
            let axis = if e.layout == Layout::ChannelsLast { 1 } else { 2 };
            let le = x.shape()[axis as usize];
            let rem = le % self.conv.stride;
            let x = if rem != 0 { pad_axis(x, axis, 0, self.conv.stride - rem, PadMode::Constant)? } else { x.clone() };
            conv_in(e.layout, &x, |a| self.conv.forward(a, 1, e.kernels))?
        };
        let mut y = gelu(&y)?;
        if let Some(d) = &self.dconv {
            y = dconv_any(d, &y, self.freq, e)?;
        }
        match &self.rewrite {
            Some(r) => r.forward(&y, e),
            None => Ok(y),
        }
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v: Vec<&Array> = self.conv.arrays().to_vec();
        v.extend(self.dconv.iter().flat_map(|d| d.arrays()));
        v.extend(self.rewrite.iter().flat_map(|r| r.arrays()));
        v
    }
}

impl DecLayer {
    /// `length`: the time branch's length before the matching encoder layer.
    fn forward(&self, x: &Array, skip: &Array, length: i32, e: Exec) -> Result<Array> {
        let x = x.add(skip)?;
        let mut y = match &self.rewrite {
            Some(r) => r.forward(&x, e)?,
            None => x,
        };
        if let Some(d) = &self.dconv {
            y = dconv_any(d, &y, self.freq, e)?;
        }
        let cl = e.layout == Layout::ChannelsLast;
        let z = if self.freq {
            let z = conv_in(e.layout, &y, |a| self.conv_tr.forward(a, 2, e.kernels))?;
            let f = z.shape()[2];
            z.index((.., .., self.pad..f - self.pad))
        } else {
            let z = conv_in(e.layout, &y, |a| self.conv_tr.forward(a, 1, e.kernels))?;
            if cl {
                z.index((.., self.pad..self.pad + length))
            } else {
                z.index((.., .., self.pad..self.pad + length))
            }
        };
        if self.last {
            Ok(z)
        } else {
            gelu(&z)
        }
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v: Vec<&Array> = self.conv_tr.arrays().to_vec();
        v.extend(self.dconv.iter().flat_map(|d| d.arrays()));
        v.extend(self.rewrite.iter().flat_map(|r| r.arrays()));
        v
    }
}

/// One layer of the cross-domain transformer (`MyTransformerEncoderLayer` or
/// `CrossTransformerEncoderLayer`), pre-norm, with LayerScale and a final GroupNorm.
struct TLayer {
    attn: MultiHeadAttention,
    cross: bool,
    norm1: LayerNorm,
    norm2: LayerNorm,
    /// The cross layers' norm before the feed-forward.
    norm3: Option<LayerNorm>,
    linear1: Linear,
    linear2: Linear,
    norm_out: Option<(Array, Array)>,
    gamma: Option<(Array, Array)>,
    gelu: bool,
}

impl TLayer {
    /// `x` `[B, N, C]`; `other` `[B, M, C]`, the other branch, for cross layers.
    fn forward(&self, x: &Array, other: Option<&Array>) -> Result<Array> {
        let scaled = |y: Array, i: usize| -> Result<Array> {
            Ok(match &self.gamma {
                Some(g) => y.multiply(if i == 0 { &g.0 } else { &g.1 })?,
                None => y,
            })
        };
        let (a, ff_norm) = if self.cross {
            let k = other.ok_or_else(|| Error::InvalidArgument("cross-attention layer without the other branch".into()))?;
            let a = self.attn.cross_attention(&self.norm1.forward(x)?, &self.norm2.forward(k)?, None, AttentionKernel::Fused)?;
            (a, self.norm3.as_ref().ok_or_else(|| Error::InvalidArgument("cross layer without norm3".into()))?)
        } else {
            (self.attn.self_attention(&self.norm1.forward(x)?, None, Mask::None, AttentionKernel::Fused)?, &self.norm2)
        };
        let x = x.add(scaled(a, 0)?)?;
        let h = self.linear1.forward(&ff_norm.forward(&x)?)?;
        let h = if self.gelu { gelu(&h)? } else { ops::maximum(&h, mlx_rs::array!(0.0f32))? };
        let x = x.add(scaled(self.linear2.forward(&h)?, 1)?)?;
        match &self.norm_out {
            Some((w, b)) => group_norm(&x, 1, Some(w), Some(b), 1e-5),
            None => Ok(x),
        }
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v = vec![&self.norm1.weight, &self.norm1.bias, &self.norm2.weight, &self.norm2.bias];
        v.extend(self.norm3.iter().flat_map(|n| [&n.weight, &n.bias]));
        v.extend(self.norm_out.iter().flat_map(|n| [&n.0, &n.1]));
        v.extend(self.gamma.iter().flat_map(|g| [&g.0, &g.1]));
        for l in [&self.attn.query, &self.attn.key, &self.attn.value, &self.attn.out, &self.linear1, &self.linear2] {
            v.extend(l.weight.arrays());
            v.extend(l.bias.iter());
        }
        v
    }
}

/// `CrossTransformerEncoder` with the bottleneck convolutions around it.
struct Transformer {
    norm_in: LayerNorm,
    norm_in_t: LayerNorm,
    layers: Vec<TLayer>,
    layers_t: Vec<TLayer>,
    /// `channel_upsampler`, `channel_downsampler` and their `_t` twins (1x1 convolutions).
    bottom: Option<[AxisConv; 4]>,
    weight_pos: f32,
    max_period: f32,
    /// Positional embeddings (already weighted), computed on the host once per shape: every
    /// segment of a track has the same. Keyed (channels, bins, frames) for the 2-D one and
    /// (channels, 0, steps) for the 1-D one (bins are never 0).
    pos_cache: ArrayCache<(i32, i32, i32)>,
}

pub struct HtDemucs {
    pub config: HtDemucsConfig,
    stft: Stft,
    encoder: Vec<EncLayer>,
    tencoder: Vec<EncLayer>,
    decoder: Vec<DecLayer>,
    tdecoder: Vec<DecLayer>,
    /// `freq_emb` table times its `emb_scale`, `[bins after layer 0, channels]`.
    freq_emb: Option<Array>,
    transformer: Transformer,
}

/// Intermediate results for parity, in PyTorch's layout: the cross-domain transformer's
/// inputs (after the bottleneck's upsampling) and outputs (before its downsampling), where a
/// forward hook on demucs' `crosstransformer` sees them.
#[derive(Default)]
pub struct Taps {
    pub x_in: Option<Array>,
    pub xt_in: Option<Array>,
    pub x_out: Option<Array>,
    pub xt_out: Option<Array>,
    /// When `Some`, the forward pass records a per-phase profile (see [`crate::nn::profile`]):
    /// front end, each encoder layer of each branch, the transformer, each decoder layer, the
    /// back end.
    pub phases: Option<Phases>,
}

impl Taps {
    /// Taps that record a per-phase profile.
    pub fn profiling() -> Self {
        Self { phases: Some(Phases::default()), ..Self::default() }
    }
}

/// [`Phases::mark`] when the taps are profiling.
fn phase(taps: &mut Option<&mut Taps>, name: impl FnOnce() -> String, arrays: &[&Array]) -> Result<()> {
    mark(&mut taps.as_deref_mut().and_then(|t| t.phases.as_mut()), name, arrays)
}

/// `demucs.transformer.create_sin_embedding`, `[length, dim]`: cosines then sines.
fn sin_embedding(length: i32, dim: i32, max_period: f32) -> Array {
    let half = dim / 2;
    let mut v = Vec::with_capacity((length * dim) as usize);
    for p in 0..length {
        let phases: Vec<f32> = (0..half).map(|a| p as f32 / max_period.powf(a as f32 / (half - 1).max(1) as f32)).collect();
        v.extend(phases.iter().map(|x| x.cos()));
        v.extend(phases.iter().map(|x| x.sin()));
    }
    Array::from_slice(&v, &[length, dim])
}

/// `create_2d_sin_embedding` laid out as the transformer's tokens, `[T * F, C]` (token
/// `t * F + f`): the first half of the channels encodes the frame, the second the bin.
fn sin_embedding_2d(c: i32, fr: i32, t1: i32, max_period: f32) -> Array {
    let d = c / 2;
    let div: Vec<f32> = (0..d / 2).map(|j| ((2 * j) as f32 * -(max_period.ln() / d as f32)).exp()).collect();
    let mut v = vec![0f32; (t1 * fr * c) as usize];
    for t in 0..t1 {
        for f in 0..fr {
            let row = &mut v[((t * fr + f) * c) as usize..((t * fr + f + 1) * c) as usize];
            for (j, dv) in div.iter().enumerate() {
                let (pw, ph) = (t as f32 * dv, f as f32 * dv);
                row[2 * j] = pw.sin();
                row[2 * j + 1] = pw.cos();
                row[d as usize + 2 * j] = ph.sin();
                row[d as usize + 2 * j + 1] = ph.cos();
            }
        }
    }
    Array::from_slice(&v, &[t1 * fr, c])
}

impl Transformer {
    /// `x` `[B, T, F, C]` / `[B, C, F, T]` and `xt` `[B, L, C]` / `[B, C, L]` in `e.layout`.
    fn forward(&self, x: &Array, xt: &Array, e: Exec, mut taps: Option<&mut Taps>) -> Result<(Array, Array)> {
        let cl = e.layout == Layout::ChannelsLast;
        let (mut x, mut xt) = (x.clone(), xt.clone());
        if let Some(b) = &self.bottom {
            x = conv_in(e.layout, &x, |a| b[0].forward(a, 1, e.kernels))?;
            xt = conv_in(e.layout, &xt, |a| b[2].forward(a, 1, e.kernels))?;
        }
        if let Some(tp) = taps.as_deref_mut() {
            tp.x_in = Some(torch_layout(&x, cl)?);
            tp.xt_in = Some(torch_layout(&xt, cl)?);
        }
        let s = x.shape().to_vec();
        let (bsz, t1, fr, c) = if cl { (s[0], s[1], s[2], s[3]) } else { (s[0], s[3], s[2], s[1]) };
        let l2 = xt.shape()[if cl { 1 } else { 2 }];
        // Keys: (channels, bins, frames) for the 2-D embedding, (channels, 0, steps) for the 1-D.
        let w = mlx_rs::array!(self.weight_pos);
        let pos2 = self.pos_cache.get_or_make((c, fr, t1), || Ok(sin_embedding_2d(c, fr, t1, self.max_period).multiply(&w)?))?;
        let pos1 = self.pos_cache.get_or_make((c, 0, l2), || Ok(sin_embedding(l2, c, self.max_period).multiply(&w)?))?;
        // Tokens (t1 fr): channels-last is a reshape; channels-first keeps [B, C, N] between
        // layers and every layer transposes in and out.
        let (mut tok, mut tok_t) = if cl { (x.reshape(&[bsz, t1 * fr, c])?, xt) } else { (swap(&x.transpose_axes(&[0, 1, 3, 2])?.reshape(&[bsz, c, t1 * fr])?)?, swap(&xt)?) };
        tok = self.norm_in.forward(&tok)?.add(&pos2)?;
        tok_t = self.norm_in_t.forward(&tok_t)?.add(&pos1)?;
        if !cl {
            tok = swap(&tok)?;
            tok_t = swap(&tok_t)?;
        }
        let run = |l: &TLayer, a: &Array, o: Option<&Array>| -> Result<Array> {
            if cl {
                l.forward(a, o)
            } else {
                let o = o.map(swap).transpose()?;
                swap(&l.forward(&swap(a)?, o.as_ref())?)
            }
        };
        for (l, lt) in self.layers.iter().zip(&self.layers_t) {
            if l.cross {
                let old = tok.clone();
                tok = run(l, &tok, Some(&tok_t))?;
                tok_t = run(lt, &tok_t, Some(&old))?;
            } else {
                tok = run(l, &tok, None)?;
                tok_t = run(lt, &tok_t, None)?;
            }
        }
        let (mut x, mut xt) = if cl { (tok.reshape(&[bsz, t1, fr, c])?, tok_t) } else { (tok.reshape(&[bsz, c, t1, fr])?.transpose_axes(&[0, 1, 3, 2])?, tok_t) };
        if let Some(tp) = taps {
            tp.x_out = Some(torch_layout(&x, cl)?);
            tp.xt_out = Some(torch_layout(&xt, cl)?);
        }
        if let Some(b) = &self.bottom {
            x = conv_in(e.layout, &x, |a| b[1].forward(a, 1, e.kernels))?;
            xt = conv_in(e.layout, &xt, |a| b[3].forward(a, 1, e.kernels))?;
        }
        Ok((x, xt))
    }
}

/// Mean and unbiased standard deviation over every axis but the batch's (`torch.std`).
fn stats(x: &Array) -> Result<(Array, Array)> {
    let axes: Vec<i32> = (1..x.ndim() as i32).collect();
    let (mean, var) = crate::nn::ops::mean_var(x, &axes, 1)?;
    Ok((mean, ops::sqrt(&var)?))
}

/// `a` in PyTorch's layout (`[B, C, F, T]` / `[B, C, L]`) whichever layout the path keeps.
fn torch_layout(a: &Array, cl: bool) -> Result<Array> {
    if cl {
        swap(a)
    } else {
        Ok(a.clone())
    }
}

impl HtDemucs {
    /// Every weight array, for evaluation once built.
    fn arrays(&self) -> Vec<&Array> {
        let mut v: Vec<&Array> = Vec::new();
        for l in self.encoder.iter().chain(&self.tencoder) {
            v.extend(l.arrays());
        }
        for l in self.decoder.iter().chain(&self.tdecoder) {
            v.extend(l.arrays());
        }
        v.extend(self.freq_emb.iter());
        let t = &self.transformer;
        v.extend([&t.norm_in.weight, &t.norm_in.bias, &t.norm_in_t.weight, &t.norm_in_t.bias]);
        v.extend(t.bottom.iter().flat_map(|b| b.iter().flat_map(|c| c.arrays())));
        for l in t.layers.iter().chain(&t.layers_t) {
            v.extend(l.arrays());
        }
        v
    }

    /// `apply_model`'s chunking for this model: its training segment, 25% overlap; every chunk
    /// padded to the training length, or with `use_train_segment=False` run at its own length
    /// (demucs' `valid_length`).
    pub fn demucs_chunking(&self) -> DemucsChunking {
        let tl = self.config.training_length();
        DemucsChunking {
            segment: tl,
            overlap: 0.25,
            transition_power: 1.0,
            valid_length: self.config.use_train_segment.then_some(tl),
            batch: 1,
        }
    }

    /// demucs' `separate` on one track: `channels` (the model's channel count, equal lengths,
    /// at its rate) normalised by the mono mix's mean and standard deviation, separated, the
    /// normalisation undone: `[sources, audio_channels, L]`. Output that is not finite (broken
    /// weights) is refused.
    pub fn separate_track(&self, channels: &[Vec<f32>], variant: Variant, chunking: Chunking, progress: impl FnMut(usize, usize)) -> Result<Array> {
        let track = self.normalise_track(channels)?;
        let out = self.separate(&track.mix, variant, chunking, progress)?;
        track.restore(&out.index(0))
    }

    /// `channels` (the model's channel count, equal lengths) as `[1, C, L]`, normalised by the
    /// mono mix's mean and standard deviation as demucs' `Separator` does.
    pub fn normalise_track(&self, channels: &[Vec<f32>]) -> Result<NormalisedTrack> {
        let len = channels.first().map_or(0, Vec::len);
        if channels.len() != self.config.audio_channels as usize || len == 0 || channels.iter().any(|c| c.len() != len) {
            return Err(Error::InvalidArgument(format!(
                "a track of {} channels of lengths {:?}: expected {} channels of one length, at least 1 sample",
                channels.len(),
                channels.iter().map(Vec::len).collect::<Vec<_>>(),
                self.config.audio_channels
            )));
        }
        let n = i32::try_from(len).map_err(|_| Error::InvalidArgument(format!("{len} samples: too long for one signal")))?;
        let mix = Array::from_slice(&channels.concat(), &[1, channels.len() as i32, n]);
        let mono: Vec<f64> = (0..len).map(|i| channels.iter().map(|c| f64::from(c[i])).sum::<f64>() / channels.len() as f64).collect();
        let mean = mono.iter().sum::<f64>() / len as f64;
        let std = if len > 1 { (mono.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (len - 1) as f64).sqrt() } else { 0.0 } + 1e-8;
        let mix = mix.subtract(mlx_rs::array!(mean as f32))?.divide(mlx_rs::array!(std as f32))?;
        Ok(NormalisedTrack { mix, mean: mean as f32, std: std as f32 })
    }

    /// Separate `mix` (`[B, audio_channels, L]`, any length) into `[B, sources,
    /// audio_channels, L]`. `progress(done, total)` follows each chunk.
    pub fn separate(&self, mix: &Array, variant: Variant, chunking: Chunking, mut progress: impl FnMut(usize, usize)) -> Result<Array> {
        let e = exec(variant);
        let sh = mix.shape();
        if sh.len() != 3 || sh[1] != self.config.audio_channels || sh[2] < 1 {
            return Err(Error::InvalidArgument(format!("separation input {sh:?}: expected [batch, {} channels, samples >= 1]", self.config.audio_channels)));
        }
        match chunking {
            Chunking::Demucs(c) => c.process(mix, |x| self.forward_with(x, e, None), progress),
            Chunking::Overlap(c) => {
                let tl = self.config.training_length();
                if self.config.use_train_segment && c.chunk > tl {
                    return Err(Error::InvalidArgument(format!("chunks of {} samples are longer than the model's segment ({tl})", c.chunk)));
                }
                c.process(mix, |x| self.forward_with(x, e, None), progress)
            }
            Chunking::Whole => {
                let out = self.forward_at(mix, e, None, sh[2])?;
                progress(1, 1);
                Ok(out)
            }
        }
    }

    pub fn sources(&self) -> &[String] {
        &self.config.sources
    }

    /// `HTDemucs.forward`: `mix` `[B, audio_channels, L]` (L at most the training length,
    /// which the model pads to) to `[B, sources, audio_channels, L]`.
    pub fn forward(&self, mix: &Array, variant: Variant) -> Result<Array> {
        self.forward_with(mix, exec(variant), None)
    }

    /// [`Self::forward`] with an explicit execution and optional intermediate taps.
    pub fn forward_with(&self, mix: &Array, e: Exec, taps: Option<&mut Taps>) -> Result<Array> {
        let n = mix.shape().last().copied().unwrap_or(0);
        let tl = if self.config.use_train_segment { self.config.training_length() } else { n };
        self.forward_at(mix, e, taps, tl)
    }

    /// The forward pass with the input padded to `tl` samples.
    fn forward_at(&self, mix: &Array, e: Exec, mut taps: Option<&mut Taps>, tl: i32) -> Result<Array> {
        if let Some(p) = taps.as_deref_mut().and_then(|t| t.phases.as_mut()) {
            p.start();
        }
        let cfg = &self.config;
        let sh = mix.shape().to_vec();
        if sh.len() != 3 || sh[1] != cfg.audio_channels || sh[2] < 1 {
            return Err(Error::InvalidArgument(format!("HTDemucs input {sh:?}: expected [batch, {} channels, samples >= 1]", cfg.audio_channels)));
        }
        let (b, length) = (sh[0], sh[2]);
        if length > tl {
            return Err(Error::InvalidArgument(format!("HTDemucs input of {length} samples is longer than the model's segment ({tl} samples, {} s); split it into chunks", cfg.segment)));
        }
        let mix = if length < tl { pad_axis(&mix.as_dtype(Dtype::Float32)?, 2, 0, tl - length, PadMode::Constant)? } else { mix.as_dtype(Dtype::Float32)? };
        let ca = cfg.audio_channels;
        // Complex as channels: [B, Ca, F, T] real and imaginary -> [B, 2 Ca, F, T].
        let (re, im) = self.stft.spec(&mix)?;
        let fs = re.shape().to_vec();
        let (fq, t) = (fs[2], fs[3]);
        let mag = ops::stack(&[re, im], 2)?.reshape(&[b, 2 * ca, fq, t])?;
        let (mean, std) = stats(&mag)?;
        let mut x = mag.subtract(&mean)?.divide(std.add(mlx_rs::array!(1e-5f32))?)?;
        let (meant, stdt) = stats(&mix)?;
        let mut xt = mix.subtract(&meant)?.divide(stdt.add(mlx_rs::array!(1e-5f32))?)?;
        let cl = e.layout == Layout::ChannelsLast;
        if cl {
            x = swap(&x)?;
            xt = swap(&xt)?;
        }
        phase(&mut taps, || "stft + normalisation".into(), &[&x, &xt])?;
        let (mut saved, mut saved_t, mut lengths_t) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (enc, tenc)) in self.encoder.iter().zip(&self.tencoder).enumerate() {
            lengths_t.push(xt.shape()[if cl { 1 } else { 2 }]);
            xt = tenc.forward(&xt, e)?;
            phase(&mut taps, || format!("time encoder {i}"), &[&xt])?;
            saved_t.push(xt.clone());
            x = enc.forward(&x, e)?;
            if i == 0 {
                if let Some(emb) = &self.freq_emb {
                    // [F, C]: broadcast over batch and frames.
                    let add = if cl { emb.clone() } else { emb.t().reshape(&[1, emb.shape()[1], emb.shape()[0], 1])? };
                    x = x.add(add)?;
                }
            }
            phase(&mut taps, || format!("freq encoder {i}"), &[&x])?;
            saved.push(x.clone());
        }
        let (xo, xto) = self.transformer.forward(&x, &xt, e, taps.as_deref_mut())?;
        x = xo;
        xt = xto;
        phase(&mut taps, || "transformer".into(), &[&x, &xt])?;
        for (i, (dec, tdec)) in self.decoder.iter().zip(&self.tdecoder).enumerate() {
            let skip = saved.pop().ok_or_else(|| Error::InvalidArgument("decoder without a skip".into()))?;
            x = dec.forward(&x, &skip, 0, e)?;
            phase(&mut taps, || format!("freq decoder {i}"), &[&x])?;
            let skip_t = saved_t.pop().ok_or_else(|| Error::InvalidArgument("time decoder without a skip".into()))?;
            let len_t = lengths_t.pop().ok_or_else(|| Error::InvalidArgument("time decoder without a length".into()))?;
            xt = tdec.forward(&xt, &skip_t, len_t, e)?;
            phase(&mut taps, || format!("time decoder {i}"), &[&xt])?;
        }
        let s = cfg.sources.len() as i32;
        let wave = if cl && e.kernels == Kernels::Gemm && crate::nn::host::pays(x.size()) {
            // The channels-last spectrogram [B, T, F, S * Ca * 2] straight into the host's
            // inverse (see Stft::ispec_interleaved).
            self.stft.ispec_interleaved(&x, &std, &mean, tl)?.reshape(&[b, s, ca, tl])?
        } else {
            let x = torch_layout(&x, cl)?; // [B, S * 2 Ca, F, T]
            let x = x.reshape(&[b, s, 2 * ca, fq, t])?.multiply(std.reshape(&[b, 1, 1, 1, 1])?)?.add(mean.reshape(&[b, 1, 1, 1, 1])?)?;
            let z = x.reshape(&[b, s, ca, 2, fq, t])?;
            self.stft.ispec(&z.index((.., .., .., 0)), &z.index((.., .., .., 1)), tl)?
        };
        let xt = torch_layout(&xt, cl)?; // [B, S * Ca, tl]
        let xt = xt.reshape(&[b, s, ca, tl])?.multiply(stdt.reshape(&[b, 1, 1, 1])?)?.add(meant.reshape(&[b, 1, 1, 1])?)?;
        let out = xt.add(&wave)?;
        let out = if length < tl { out.index((.., .., .., ..length)) } else { out };
        phase(&mut taps, || "istft + sum".into(), &[&out])?;
        Ok(out)
    }
}

/// A track normalised for separation, and how to undo it.
pub struct NormalisedTrack {
    /// `[1, audio_channels, L]`.
    pub mix: Array,
    pub mean: f32,
    pub std: f32,
}

impl NormalisedTrack {
    /// Sources separated from the normalised mix (`[sources, audio_channels, L]`) back at the
    /// track's scale, evaluated. Output that is not finite (broken weights) is refused.
    pub fn restore(&self, sources: &Array) -> Result<Array> {
        let out = sources.multiply(mlx_rs::array!(self.std))?.add(mlx_rs::array!(self.mean))?;
        out.eval()?;
        if !crate::nn::ops::all_finite(&out)? {
            return Err(Error::InvalidArgument("the separation produced NaN or infinite samples (broken weights?)".into()));
        }
        Ok(out)
    }
}

/// How a track longer than one segment is split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunking {
    /// demucs' `apply_model(split=True, shifts=0)`: segments of the training length, centred in
    /// their context, blended with its triangle weights. Matches demucs.
    Demucs(DemucsChunking),
    /// The seed's ChunkedProcessor: chunks of at most the training length, triangular
    /// overlap-add.
    Overlap(ChunkedProcessor),
    /// The whole track in one forward pass, the model running at the track's length (no
    /// padding to the training segment): the memory baseline chunking is measured against.
    Whole,
}

fn is_cross(cfg: &HtDemucsConfig, l: i32) -> bool {
    let classic_parity = i32::from(cfg.t_cross_first);
    l % 2 != classic_parity
}

/// The DConv branch under `p` (`p.dconv.layers.j`), on `c` channels.
fn load_dconv(cfg: &HtDemucsConfig, p: &Vars, c: i32) -> Result<DConv> {
    let h = cfg.dconv_hidden(c);
    let layers = (0..cfg.dconv_depth)
        .map(|j| {
            let q = p.pp(format!("dconv.layers.{j}"));
            let dil = 1 << j;
            let t = |n: &str, shape: &[i32]| q.tensor(n, shape);
            Ok(DConvLayer {
                conv1: AxisConv::new(&t("0.weight", &[h, c, 3])?, t("0.bias", &[h])?, 1, dil, dil)?,
                norm1: (t("1.weight", &[h])?, t("1.bias", &[h])?),
                conv2: AxisConv::new(&t("3.weight", &[2 * c, h, 1])?, t("3.bias", &[2 * c])?, 1, 1, 0)?,
                norm2: (t("4.weight", &[2 * c])?, t("4.bias", &[2 * c])?),
                scale: t("6.scale", &[c])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DConv { layers })
}

/// A `rewrite` 1x1-context convolution under `p`: a grid convolution in the frequency branch,
/// along time in the time branch; `cout` channels to `2 * cout`, `context` frames each side.
fn load_rewrite(p: &Vars, freq: bool, cout: i32, context: i32) -> Result<Rewrite> {
    let ce = 1 + 2 * context;
    let shape: &[i32] = if freq { &[2 * cout, cout, ce, ce] } else { &[2 * cout, cout, ce] };
    let (rw, rb) = (p.tensor("weight", shape)?, p.tensor("bias", &[2 * cout])?);
    Ok(if freq { Rewrite::Freq(GridConv::new(&rw, rb)?) } else { Rewrite::Time(AxisConv::new(&rw, rb, 1, 1, context)?) })
}

impl Checkpointed for HtDemucs {
    type Config = HtDemucsConfig;

    /// demucs' `state_dict()` names; every tensor stays float32.
    fn build(config: HtDemucsConfig, vs: &Vars) -> Result<Self> {
        let cfg = &config;
        let (k, st, depth) = (cfg.kernel_size, cfg.stride, cfg.depth);
        let s = cfg.sources.len() as i32;
        let ca = cfg.audio_channels;
        let (mut encoder, mut tencoder, mut decoder, mut tdecoder) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..depth {
            let cout = cfg.layer_channels(i);
            for freq in [true, false] {
                let p = vs.pp(format!("{}.{i}", if freq { "encoder" } else { "tencoder" }));
                let cin = match (i, freq) {
                    (0, true) => 2 * ca,
                    (0, false) => ca,
                    _ => cfg.layer_channels(i - 1),
                };
                let shape: &[i32] = if freq { &[cout, cin, k, 1] } else { &[cout, cin, k] };
                let conv = AxisConv::new(&p.tensor("conv.weight", shape)?, p.tensor("conv.bias", &[cout])?, st, 1, k / 4)?;
                let rewrite = if cfg.rewrite { Some(load_rewrite(&p.pp("rewrite"), freq, cout, cfg.context_enc)?) } else { None };
                let dconv = if cfg.dconv_mode & 1 != 0 { Some(load_dconv(cfg, &p, cout)?) } else { None };
                let layer = EncLayer { conv, dconv, rewrite, freq };
                if freq {
                    encoder.push(layer)
                } else {
                    tencoder.push(layer)
                }
            }
        }
        for d in 0..depth {
            // Decoder layer d mirrors encoder layer depth - 1 - d.
            let i = depth - 1 - d;
            let cout = cfg.layer_channels(i);
            for freq in [true, false] {
                let p = vs.pp(format!("{}.{d}", if freq { "decoder" } else { "tdecoder" }));
                let out = match (i, freq) {
                    (0, true) => 2 * ca * s,
                    (0, false) => ca * s,
                    _ => cfg.layer_channels(i - 1),
                };
                let shape: &[i32] = if freq { &[cout, out, k, 1] } else { &[cout, out, k] };
                let conv_tr = AxisConvTr::new(&p.tensor("conv_tr.weight", shape)?, p.tensor("conv_tr.bias", &[out])?, st)?;
                let rewrite = if cfg.rewrite { Some(load_rewrite(&p.pp("rewrite"), freq, cout, cfg.context)?) } else { None };
                let dconv = if cfg.dconv_mode & 2 != 0 { Some(load_dconv(cfg, &p, cout)?) } else { None };
                let layer = DecLayer { conv_tr, dconv, rewrite, freq, last: d == depth - 1, pad: k / 4 };
                if freq {
                    decoder.push(layer)
                } else {
                    tdecoder.push(layer)
                }
            }
        }
        let freq_emb =
            if cfg.freq_emb > 0.0 { Some(vs.tensor("freq_emb.embedding.weight", &[cfg.freqs_at(1), cfg.channels])?.multiply(mlx_rs::array!((cfg.emb_scale * cfg.freq_emb) as f32))?) } else { None };
        let inner = cfg.layer_channels(depth - 1);
        let c = cfg.transformer_channels();
        let bottom = if cfg.bottom_channels > 0 {
            let one = |n: &str, o: i32, i: i32| -> Result<AxisConv> {
                let p = vs.pp(n);
                AxisConv::new(&p.tensor("weight", &[o, i, 1])?, p.tensor("bias", &[o])?, 1, 1, 0)
            };
            Some([one("channel_upsampler", c, inner)?, one("channel_downsampler", inner, c)?, one("channel_upsampler_t", c, inner)?, one("channel_downsampler_t", inner, c)?])
        } else {
            None
        };
        let ct = vs.pp("crosstransformer");
        let hidden = (f64::from(c) * cfg.t_hidden_scale) as i32;
        let (mut layers, mut layers_t) = (Vec::new(), Vec::new());
        for l in 0..cfg.t_layers {
            let cross = is_cross(cfg, l);
            for side in ["layers", "layers_t"] {
                let p = ct.pp(format!("{side}.{l}"));
                let a = p.pp(if cross { "cross_attn" } else { "self_attn" });
                let ws = a.tensor("in_proj_weight", &[3 * c, c])?.split_equal(3, 0)?;
                let bs = a.tensor("in_proj_bias", &[3 * c])?.split_equal(3, 0)?;
                let proj = |i: usize| Linear::new(ws[i].clone(), Some(bs[i].clone()));
                let attn = MultiHeadAttention {
                    query: proj(0)?,
                    key: proj(1)?,
                    value: proj(2)?,
                    out: a.pp("out_proj").dense_linear(c, c, true)?,
                    n_head: cfg.t_heads,
                    qkv: None,
                };
                let norm = |n: &str| LayerNorm::load(&p.pp(n), c);
                let layer = TLayer {
                    attn,
                    cross,
                    norm1: norm("norm1")?,
                    norm2: norm("norm2")?,
                    norm3: if cross { Some(norm("norm3")?) } else { None },
                    linear1: p.pp("linear1").dense_linear(hidden, c, true)?,
                    linear2: p.pp("linear2").dense_linear(c, hidden, true)?,
                    norm_out: if cfg.t_norm_out { Some((p.tensor("norm_out.weight", &[c])?, p.tensor("norm_out.bias", &[c])?)) } else { None },
                    gamma: if cfg.t_layer_scale { Some((p.tensor("gamma_1.scale", &[c])?, p.tensor("gamma_2.scale", &[c])?)) } else { None },
                    gelu: cfg.t_gelu,
                };
                if side == "layers" {
                    layers.push(layer)
                } else {
                    layers_t.push(layer)
                }
            }
        }
        let transformer = Transformer {
            norm_in: LayerNorm::load(&ct.pp("norm_in"), c)?,
            norm_in_t: LayerNorm::load(&ct.pp("norm_in_t"), c)?,
            layers,
            layers_t,
            bottom,
            weight_pos: cfg.t_weight_pos_embed as f32,
            max_period: cfg.t_max_period as f32,
            pos_cache: Default::default(),
        };
        let model = Self { stft: Stft::new(config.nfft)?, config, encoder, tencoder, decoder, tdecoder, freq_emb, transformer };
        vs.materialize(model.arrays());
        Ok(model)
    }

    fn init(name: &str, shape: &[i32]) -> Init {
        if name.ends_with(".scale") {
            Init::Normal(0.1)
        } else if name.contains("norm") && name.ends_with("weight") {
            Init::Ones
        } else if name.ends_with("bias") {
            Init::Normal(0.02)
        } else {
            Init::Normal(fan_in(shape).powf(-0.5))
        }
    }
}
