//! CLAP (HF `ClapModel`, unfused): the HTSAT audio encoder (a Swin transformer over the log-mel
//! "image": windowed attention with relative position bias, shifted windows, patch merging),
//! the RoBERTa text encoder with its pooler, the two projections and the logit scales; and
//! [`features::FeatureExtractor`], HF's `ClapFeatureExtractor`.
//!
//! Naive and optimized share the modules and weights: the naive path computes attention as
//! explicit `softmax(Q K^T) V` and embeds clips one at a time; the optimized path uses the fused
//! attention and runs a batch of clips in one pass.
pub mod config;
pub mod features;

use mlx_rs::ops::indexing::{IndexOp, IntoStrideBy};
use mlx_rs::{ops, Array, Dtype};

pub use self::config::{ClapAudioConfig, ClapConfig, ClapTextConfig, FeatureConfig};
use crate::checkpoint::{fan_in, Checkpointed, Init, Vars};
use crate::error::{Error, Result};
use crate::nn::attention::{AttentionKernel, Mask, MultiHeadAttention};
use crate::nn::cache::ArrayCache;
use crate::nn::linear::Linear;
use crate::nn::norm::layer_norm;
use crate::nn::ops::gelu;
use crate::nn::profile::{mark, Phases};
use crate::Variant;

/// A LayerNorm with its own epsilon.
struct Ln {
    w: Array,
    b: Array,
    eps: f32,
}

impl Ln {
    fn forward(&self, x: &Array) -> Result<Array> {
        layer_norm(x, Some(&self.w), Some(&self.b), self.eps)
    }
}

/// Attention with the variant's kernel (the modules are shared; only the kernel differs).
fn attend(attn: &MultiHeadAttention, x: &Array, mask: Mask<'_>, v: Variant) -> Result<Array> {
    attn.self_attention(x, None, mask, AttentionKernel::for_variant(v))
}

/// `linear2(relu(linear1(x)))`, then L2-normalised.
struct Projection {
    l1: Linear,
    l2: Linear,
}

impl Projection {
    fn forward(&self, x: &Array) -> Result<Array> {
        let h = ops::maximum(&self.l1.forward(x)?, mlx_rs::array!(0.0f32))?;
        let y = self.l2.forward(&h)?;
        let norm = ops::sqrt(&y.square()?.sum_axis(-1, true)?)?;
        Ok(y.divide(ops::maximum(&norm, mlx_rs::array!(1e-12f32))?)?)
    }
}

struct SwinBlock {
    ln1: Ln,
    attn: MultiHeadAttention,
    /// Relative position bias `[1, heads, N, N]` (N = window^2).
    bias: Array,
    ln2: Ln,
    fc1: Linear,
    fc2: Linear,
    shift: i32,
    window: i32,
    /// Shifted windows: the bias plus the cross-region mask, `[windows, heads, N, N]`.
    shifted_mask: Option<Array>,
}

/// Rotate `x` by `-s` along `axis` (`torch.roll(x, -s, axis)`).
fn roll_back(x: &Array, s: i32, axis: usize) -> Result<Array> {
    let (a, b) = if axis == 1 { (x.index((.., s..)), x.index((.., ..s))) } else { (x.index((.., .., s..)), x.index((.., .., ..s))) };
    Ok(ops::concatenate(&[a, b], axis as i32)?)
}

/// Rotate `x` by `+s` along `axis`.
fn roll(x: &Array, s: i32, axis: usize) -> Result<Array> {
    let n = x.shape()[axis];
    roll_back(x, n - s, axis)
}

impl SwinBlock {
    /// `x` `[B, H*W, C]` on an `h x w` grid.
    fn forward(&self, x: &Array, h: i32, w: i32, v: Variant) -> Result<Array> {
        let (b, c) = (x.shape()[0], x.shape()[2]);
        let ws = self.window;
        let y = self.ln1.forward(x)?.reshape(&[b, h, w, c])?;
        // HF pads the grid (after the norm, with zeros) to whole windows and crops back after.
        let (hp, wp) = (padded(h, ws), padded(w, ws));
        let y = if (hp, wp) != (h, w) { ops::pad(&y, &[(0, 0), (0, hp - h), (0, wp - w), (0, 0)], None, None)? } else { y };
        let a = match self.host_windows(&y, v)? {
            Some(a) => a,
            None => {
                let y = if self.shift > 0 { roll_back(&roll_back(&y, self.shift, 1)?, self.shift, 2)? } else { y };
                let win = y.reshape(&[b, hp / ws, ws, wp / ws, ws, c])?.transpose_axes(&[0, 1, 3, 2, 4, 5])?.reshape(&[-1, ws * ws, c])?;
                let mask = match &self.shifted_mask {
                    Some(m) => {
                        if b > 1 {
                            ops::tile(m, &[b, 1, 1, 1])?
                        } else {
                            m.clone()
                        }
                    }
                    None => self.bias.clone(),
                };
                let a = attend(&self.attn, &win, Mask::Additive(&mask), v)?;
                let a = a.reshape(&[b, hp / ws, wp / ws, ws, ws, c])?.transpose_axes(&[0, 1, 3, 2, 4, 5])?.reshape(&[b, hp, wp, c])?;
                if self.shift > 0 {
                    roll(&roll(&a, self.shift, 1)?, self.shift, 2)?
                } else {
                    a
                }
            }
        };
        let a = if (hp, wp) != (h, w) { a.index((.., ..h, ..w)) } else { a };
        let x = x.add(a.reshape(&[b, h * w, c])?)?;
        let m = self.fc2.forward(&gelu(&self.fc1.forward(&self.ln2.forward(&x)?)?)?)?;
        Ok(x.add(m)?)
    }
}

impl SwinBlock {
    /// The optimized path's windowed attention on the host where it pays (the CPU backend):
    /// the projections of every grid token (`y` `[B, H, W, C]`, padded to whole windows,
    /// not rolled), attended window by window in place by
    /// [`crate::nn::host_attention::window_attention`], then the output projection. `None`
    /// where the composed form runs instead.
    fn host_windows(&self, y: &Array, v: Variant) -> Result<Option<Array>> {
        let s = y.shape().to_vec();
        let (ws, heads) = (self.window as usize, self.attn.n_head as usize);
        let scores = s.iter().take(3).map(|&d| d as usize).product::<usize>() * ws * ws * heads;
        if v != Variant::Optimized || y.dtype() != mlx_rs::Dtype::Float32 || !crate::nn::host_attention::window_pays(scores) {
            return Ok(None);
        }
        let rows = y.reshape(&[s[0], s[1] * s[2], s[3]])?;
        let grid = |l: &Linear| -> Result<Array> { Ok(l.forward(&rows)?.reshape(&s)?) };
        let (q, k, vv) = (grid(&self.attn.query)?, grid(&self.attn.key)?, grid(&self.attn.value)?);
        let mask = self.shifted_mask.as_ref().unwrap_or(&self.bias);
        let geo = crate::nn::host_attention::Windows { n_head: heads, ws, shift: self.shift as usize };
        let scale = ((s[3] as usize / heads) as f32).powf(-0.5);
        let o = crate::nn::host_attention::window_attention(&q, &k, &vv, mask, geo, scale)?;
        Ok(Some(self.attn.out.forward(&o.reshape(&[s[0], s[1] * s[2], s[3]])?)?.reshape(&s)?))
    }
}

struct Stage {
    blocks: Vec<SwinBlock>,
    /// Patch merging: its norm over 4C and the reduction to 2C.
    merge: Option<(Ln, Linear)>,
}

/// A 1x1 convolution then an eval-mode BatchNorm, folded into one affine map over channels.
struct ConvBn {
    w: Array,
    b: Array,
}

impl ConvBn {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(x.matmul(&self.w)?.add(&self.b)?)
    }
}

/// `ClapAudioAFFBlock` branch: 1x1 conv, BN, ReLU, 1x1 conv, BN.
struct AffBranch {
    a: ConvBn,
    b: ConvBn,
}

impl AffBranch {
    fn forward(&self, x: &Array) -> Result<Array> {
        self.b.forward(&ops::maximum(&self.a.forward(x)?, mlx_rs::array!(0.0f32))?)
    }
}

/// The fused HTSAT's extra patch embedding of the three local chunks (`mel_conv2d`, a
/// `patch x 3*patch` kernel) and the attentional feature fusion that blends it in.
struct Fusion {
    /// `[p0 * 3 p1, D]`.
    mel_w: Array,
    mel_b: Array,
    local: AffBranch,
    global: AffBranch,
}

impl Fusion {
    /// `global` `[B, gh, gw, D]`, `local` the same shape: `2 g w + 2 l (1 - w)`.
    fn fuse(&self, g: &Array, l: &Array) -> Result<Array> {
        let x = g.add(l)?;
        let la = self.local.forward(&x)?;
        let ga = self.global.forward(&x.mean_axes(&[1, 2], true)?)?;
        let w = ops::sigmoid(&la.add(ga)?)?;
        let two = mlx_rs::array!(2.0f32);
        Ok(g.multiply(&w)?.multiply(&two)?.add(l.multiply(mlx_rs::array!(1.0f32).subtract(&w)?)?.multiply(&two)?)?)
    }
}

struct Htsat {
    /// Bicubic stretch matrices by (frames in, frames out).
    stretch: ArrayCache<(i32, i32)>,
    fusion: Option<Fusion>,
    /// The eval-mode BatchNorm over mel bins, folded: `x * scale + shift`.
    bn_scale: Array,
    bn_shift: Array,
    /// Patch embedding as a matrix `[p*p, D]` and bias.
    patch_w: Array,
    patch_b: Array,
    patch_ln: Option<Ln>,
    stages: Vec<Stage>,
    norm: Ln,
}

/// PyTorch's bicubic interpolation weights (A = -0.75, align_corners=True) from `n_in` to
/// `n_out` samples, as a `[n_out, n_in]` matrix.
fn bicubic_matrix(n_in: i32, n_out: i32) -> Array {
    let a = -0.75f64;
    let cc1 = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let cc2 = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let scale = if n_out > 1 { f64::from(n_in - 1) / f64::from(n_out - 1) } else { 0.0 };
    let mut m = vec![0f32; (n_out * n_in) as usize];
    for d in 0..n_out {
        let real = scale * f64::from(d);
        let i = real.floor();
        let t = real - i;
        let w = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let src = (i as i32 - 1 + k as i32).clamp(0, n_in - 1);
            m[(d * n_in + src) as usize] += *wk as f32;
        }
    }
    Array::from_slice(&m, &[n_out, n_in])
}

impl Htsat {
    /// `features` `[B, C, T, F]` (C = 1, or 4 for the fused model: the whole clip shrunk and
    /// three chunks) to the pooled audio features `[B, hidden]`. `is_longer[b]`: clip `b` was
    /// longer than the maximum (the fused model blends its chunks in).
    fn forward(&self, cfg: &ClapAudioConfig, features: &Array, is_longer: &[bool], v: Variant, mut prof: Option<&mut Phases>) -> Result<(Array, Array)> {
        let s = features.shape().to_vec();
        let ratio = cfg.spec_size / cfg.num_mel_bins;
        let (spec_w, spec_h) = (cfg.spec_size * ratio, cfg.spec_size / ratio);
        let chans = if self.fusion.is_some() { 4 } else { 1 };
        if s.len() != 4 || s[1] != chans || s[3] != spec_h || s[2] > spec_w || s[2] < 2 || is_longer.len() != s[0] as usize {
            return Err(Error::InvalidArgument(format!(
                "CLAP audio features {s:?} with {} is_longer flags: expected [batch, {chans}, frames <= {spec_w}, {spec_h} mel bins] and one flag per clip",
                is_longer.len()
            )));
        }
        let b = s[0];
        let x = features.multiply(&self.bn_scale)?.add(&self.bn_shift)?;
        // Bicubic stretch of the frames to the image width (the mel axis keeps its size).
        let x = if s[2] < spec_w {
            self.stretch.get_or_make((s[2], spec_w), || Ok(bicubic_matrix(s[2], spec_w)))?.matmul(&x.reshape(&[b * chans, s[2], spec_h])?)?
        } else {
            x.reshape(&[b * chans, spec_w, spec_h])?
        };
        // reshape_mel2img: 4 time chunks stacked along the mel axis: [B C, ratio * F, T / ratio].
        let img = x.reshape(&[b * chans, ratio, spec_w / ratio, spec_h])?.transpose_axes(&[0, 1, 3, 2])?.reshape(&[b, chans, ratio * spec_h, spec_w / ratio])?;
        let (p0, p1) = (cfg.patch_size[0], cfg.patch_size[1]);
        let (gh, gw) = (cfg.spec_size / p0, cfg.spec_size / p1);
        let side = spec_w / ratio;
        let global = img.index((.., 0)).reshape(&[b, gh, p0, gw, p1])?.transpose_axes(&[0, 1, 3, 2, 4])?.reshape(&[b, gh * gw, p0 * p1])?;
        let mut x = global.matmul(&self.patch_w)?.add(&self.patch_b)?;
        if let Some(f) = &self.fusion {
            if is_longer.iter().any(|&l| l) {
                // The three chunks through the wide kernel (stride = kernel), side by side.
                let (kw, d) = (3 * p1, self.patch_b.shape()[0]);
                let nw = (side - kw) / kw + 1;
                let local = img.index((.., 1..)).index((.., .., .., ..nw * kw)).reshape(&[b, 3, gh, p0, nw, kw])?.transpose_axes(&[0, 2, 1, 4, 3, 5])?.reshape(&[b, gh, 3 * nw, p0 * kw])?;
                let local = local.matmul(&f.mel_w)?.add(&f.mel_b)?;
                let local = crate::nn::ops::pad_axis(&local, 2, 0, gw - 3 * nw, crate::nn::ops::PadMode::Constant)?;
                let g = x.reshape(&[b, gh, gw, d])?;
                let fused = f.fuse(&g, &local)?;
                let flags: Vec<bool> = is_longer.to_vec();
                let m = Array::from_slice(&flags, &[b, 1, 1, 1]);
                x = ops::select(&m, &fused, &g)?.reshape(&[b, gh * gw, d])?;
            }
        }
        if let Some(ln) = &self.patch_ln {
            x = ln.forward(&x)?;
        }
        mark(&mut prof, || "audio: stretch, image, patch embedding".into(), &[&x])?;
        let patch_embeds = x.clone();
        let (mut h, mut w) = (gh, gw);
        for (i, st) in self.stages.iter().enumerate() {
            for (j, blk) in st.blocks.iter().enumerate() {
                x = blk.forward(&x, h, w, v)?;
                mark(&mut prof, || format!("audio: stage {i} block {j} ({h}x{w} tokens)"), &[&x])?;
            }
            if let Some((ln, red)) = &st.merge {
                let c = x.shape()[2];
                let g = x.reshape(&[b, h, w, c])?;
                let q = |r: i32, cc: i32| g.index((.., (r..h).stride_by(2), (cc..w).stride_by(2)));
                let cat = ops::concatenate(&[q(0, 0), q(1, 0), q(0, 1), q(1, 1)], 3)?;
                h /= 2;
                w /= 2;
                x = red.forward(&ln.forward(&cat.reshape(&[b, h * w, 4 * c])?)?)?;
                mark(&mut prof, || format!("audio: stage {i} patch merging"), &[&x])?;
            }
        }
        let x = self.norm.forward(&x)?.mean_axis(1, false)?;
        mark(&mut prof, || "audio: norm and pooling".into(), &[&x])?;
        Ok((x, patch_embeds))
    }
}

struct TextLayer {
    attn: MultiHeadAttention,
    ln1: Ln,
    fc1: Linear,
    fc2: Linear,
    ln2: Ln,
}

struct TextEncoder {
    word: Array,
    position: Array,
    token_type: Array,
    ln: Ln,
    layers: Vec<TextLayer>,
    pooler: Linear,
    pad: i32,
}

impl TextEncoder {
    /// `ids`, `mask` `[B, L]` to the pooled text features `[B, hidden]`.
    fn forward(&self, ids: &Array, mask: &Array, v: Variant, mut prof: Option<&mut Phases>) -> Result<Array> {
        let sh = ids.shape().to_vec();
        if sh.len() != 2 || mask.shape() != sh.as_slice() || sh[1] < 1 {
            return Err(Error::InvalidArgument(format!("text input ids {sh:?} and mask {:?}: expected equal [batch, length >= 1]", mask.shape())));
        }
        let maxpos = self.position.shape()[0];
        if sh[1] + self.pad + 1 > maxpos {
            return Err(Error::InvalidArgument(format!("text of {} tokens: the model has {} positions", sh[1], maxpos - self.pad - 1)));
        }
        let ids = ids.as_dtype(Dtype::Int32)?;
        let vocab = self.word.shape()[0];
        let bad = ops::logical_or(&ids.lt(mlx_rs::array!(0))?, &ids.ge(mlx_rs::array!(vocab))?)?.any(None)?;
        if bad.item_cast::<bool>() {
            return Err(Error::InvalidArgument(format!("text input ids outside the vocabulary of {vocab}")));
        }
        mark(&mut prof, || "text: id check (a sync)".into(), &[])?;
        // RoBERTa positions: count non-padding tokens, padding_idx + 1 onwards; pads get padding_idx.
        let nonpad = ids.ne(mlx_rs::array!(self.pad))?.as_dtype(Dtype::Int32)?;
        let pos = ops::cumsum(&nonpad, 1, None, None)?.multiply(&nonpad)?.add(mlx_rs::array!(self.pad))?;
        let x = self.word.take_axis(&ids, 0)?.add(self.position.take_axis(&pos, 0)?)?.add(self.token_type.index(0))?;
        let mut x = self.ln.forward(&x)?;
        let keep = mask.as_dtype(Dtype::Float32)?;
        let add = mlx_rs::array!(1.0f32).subtract(&keep)?.multiply(mlx_rs::array!(f32::MIN))?.reshape(&[sh[0], 1, 1, sh[1]])?;
        mark(&mut prof, || "text: embeddings and mask".into(), &[&x, &add])?;
        for (i, l) in self.layers.iter().enumerate() {
            let a = attend(&l.attn, &x, Mask::Additive(&add), v)?;
            let h1 = l.ln1.forward(&x.add(a)?)?;
            mark(&mut prof, || format!("text: layer {i} attention"), &[&h1])?;
            let f = l.fc2.forward(&gelu(&l.fc1.forward(&h1)?)?)?;
            x = l.ln2.forward(&h1.add(f)?)?;
            mark(&mut prof, || format!("text: layer {i} feed-forward"), &[&x])?;
        }
        let pooled = ops::tanh(&self.pooler.forward(&x.index((.., 0, ..)))?)?;
        mark(&mut prof, || "text: pooler".into(), &[&pooled])?;
        Ok(pooled)
    }
}

pub struct Clap {
    pub config: ClapConfig,
    audio: Htsat,
    text: TextEncoder,
    audio_projection: Projection,
    text_projection: Projection,
    /// `exp(logit_scale_a)`, `exp(logit_scale_t)`.
    pub logit_scale_audio: f32,
    pub logit_scale_text: f32,
}

/// Audio results: the pooled features before the projection, the normalised embeddings and
/// the patch embeddings.
pub struct AudioOut {
    pub pooled: Array,
    pub embeds: Array,
    pub patch_embeds: Array,
}

/// `[N, N]` relative position index of a `ws x ws` window (Swin's).
fn relative_index(ws: i32) -> Vec<i32> {
    let n = ws * ws;
    let mut v = Vec::with_capacity((n * n) as usize);
    for i in 0..n {
        for j in 0..n {
            let (hi, wi, hj, wj) = (i / ws, i % ws, j / ws, j % ws);
            v.push((hi - hj + ws - 1) * (2 * ws - 1) + (wi - wj + ws - 1));
        }
    }
    v
}

/// `n` rounded up to whole windows of `ws`.
fn padded(n: i32, ws: i32) -> i32 {
    (n + ws - 1) / ws * ws
}

/// The shifted-window mask `[windows, 1, N, N]`: 0 within a region, -100 across.
fn shift_mask(h: i32, w: i32, ws: i32, shift: i32) -> Array {
    let region = |i: i32, n: i32| i32::from(i >= n - ws) + i32::from(i >= n - shift);
    let (nh, nw, n) = (h / ws, w / ws, ws * ws);
    let mut m = Vec::with_capacity((nh * nw * n * n) as usize);
    for a in 0..nh {
        for bb in 0..nw {
            let label = |t: i32| region(a * ws + t / ws, h) * 3 + region(bb * ws + t % ws, w);
            for i in 0..n {
                for j in 0..n {
                    m.push(if label(i) == label(j) { 0.0f32 } else { -100.0 });
                }
            }
        }
    }
    Array::from_slice(&m, &[nh * nw, 1, n, n])
}

fn ln(vs: &Vars, d: i32, eps: f64) -> Result<Ln> {
    Ok(Ln { w: vs.tensor("weight", &[d])?, b: vs.tensor("bias", &[d])?, eps: eps as f32 })
}

/// HF's BERT-style attention: `query`, `key`, `value` under `p`, the output projection `out`.
fn mha(p: &Vars, out: &Vars, d: i32, heads: i32, bias: bool) -> Result<MultiHeadAttention> {
    Ok(MultiHeadAttention {
        query: p.pp("query").dense_linear(d, d, bias)?,
        key: p.pp("key").dense_linear(d, d, bias)?,
        value: p.pp("value").dense_linear(d, d, bias)?,
        out: out.dense_linear(d, d, true)?,
        n_head: heads,
        qkv: None,
    })
}

/// A batch norm's inference affine (`scale`, `shift`) under `p`, on `c` channels (HF saves
/// `num_batches_tracked` with it: checked, never read).
fn batch_norm(p: &Vars, c: i32) -> Result<(Array, Array)> {
    let (g, beta) = (p.tensor("weight", &[c])?, p.tensor("bias", &[c])?);
    let (rm, rv) = (p.tensor("running_mean", &[c])?, p.tensor("running_var", &[c])?);
    p.tensor("num_batches_tracked", &[])?;
    let scale = g.multiply(ops::rsqrt(&rv.add(mlx_rs::array!(1e-5f32))?)?)?;
    let shift = beta.subtract(rm.multiply(&scale)?)?;
    Ok((p.derived(scale), p.derived(shift)))
}

impl Clap {
    /// Audio embeddings of `features` `[B, C, T, F]` in one pass, as for clips no longer than
    /// the maximum.
    pub fn embed_audio(&self, features: &Array, v: Variant) -> Result<AudioOut> {
        let n = features.shape().first().copied().unwrap_or(0).max(0) as usize;
        self.embed_audio_with(features, &vec![false; n], v)
    }

    /// Audio embeddings with the extractor's `is_longer` flags (the fused model blends in the
    /// chunks of longer clips).
    pub fn embed_audio_with(&self, features: &Array, is_longer: &[bool], v: Variant) -> Result<AudioOut> {
        let (pooled, patch_embeds) = self.audio.forward(&self.config.audio_config, features, is_longer, v, None)?;
        let embeds = self.audio_projection.forward(&pooled)?;
        Ok(AudioOut { pooled, embeds, patch_embeds })
    }

    /// Audio embeddings `[B, projection]` of a batch of clips' features: the optimized path
    /// runs them as one batch, the naive one clip by clip.
    pub fn embed_audio_batch(&self, features: &Array, is_longer: &[bool], v: Variant) -> Result<Array> {
        match v {
            Variant::Optimized => Ok(self.embed_audio_with(features, is_longer, v)?.embeds),
            Variant::Naive => {
                if is_longer.len() != features.shape()[0] as usize {
                    return Err(Error::InvalidArgument(format!("{} is_longer flags for {} clips", is_longer.len(), features.shape()[0])));
                }
                let parts =
                    (0..features.shape()[0]).map(|i| self.embed_audio_with(&features.index(i..i + 1), &is_longer[i as usize..i as usize + 1], v).map(|o| o.embeds)).collect::<Result<Vec<_>>>()?;
                Ok(ops::concatenate(&parts, 0)?)
            }
        }
    }

    /// The audio encoder's per-phase profile over `features` in one batch (see
    /// [`crate::nn::profile`]): patch embedding, each Swin block, each patch merging, pooling.
    pub fn profile_audio(&self, features: &Array, is_longer: &[bool], v: Variant) -> Result<Vec<(String, f64)>> {
        let mut p = Phases::default();
        self.audio.forward(&self.config.audio_config, features, is_longer, v, Some(&mut p))?;
        Ok(p.rows)
    }

    /// The text encoder's per-phase profile (see [`crate::nn::profile`]): the id check,
    /// embeddings, each layer's attention and feed-forward, the pooler.
    pub fn profile_text(&self, ids: &Array, mask: &Array, v: Variant) -> Result<Vec<(String, f64)>> {
        let mut p = Phases::default();
        self.text.forward(ids, mask, v, Some(&mut p))?;
        Ok(p.rows)
    }

    /// Text pooled features and normalised embeddings of `ids`, `mask` `[B, L]`.
    pub fn embed_text(&self, ids: &Array, mask: &Array, v: Variant) -> Result<(Array, Array)> {
        let pooled = self.text.forward(ids, mask, v, None)?;
        let embeds = self.text_projection.forward(&pooled)?;
        Ok((pooled, embeds))
    }

    /// Embeddings of mono `clips` at the extractor's rate, in one batch: each clip's features
    /// as HF's extractor makes them (fused checkpoints: the whole clip shrunk plus three chunks;
    /// unfused: a crop), long clips cropped at positions drawn from `seed + i` for clip `i`.
    /// Embeddings that are not finite (broken weights) are refused.
    pub fn embed_clips(&self, fe: &features::FeatureExtractor, clips: &[Vec<f32>], seed: u64, v: Variant) -> Result<Array> {
        if clips.is_empty() {
            return Err(Error::InvalidArgument("no audio clip to embed".into()));
        }
        let truncation = if self.config.audio_config.enable_fusion { features::Truncation::Fusion } else { features::Truncation::RandTrunc };
        let mut feats = Vec::new();
        let mut longer = Vec::new();
        for (i, clip) in clips.iter().enumerate() {
            if clip.is_empty() {
                return Err(Error::InvalidArgument(format!("audio clip {i} is empty")));
            }
            let crops = features::Crops { seed: seed.wrapping_add(i as u64), ..features::Crops::default() };
            let (f, l) = fe.extract(clip, truncation, crops)?;
            feats.push(f);
            longer.push(l);
        }
        finite(self.embed_audio_batch(&ops::stack(&feats, 0)?, &longer, v)?, "audio")
    }

    /// Embeddings of `texts`, tokenized by `tok` (special tokens added) and padded to the
    /// longest. Embeddings that are not finite are refused.
    pub fn embed_texts(&self, tok: &tokenizers::Tokenizer, texts: &[String], v: Variant) -> Result<Array> {
        if texts.is_empty() {
            return Err(Error::InvalidArgument("no text to embed".into()));
        }
        let enc: Vec<Vec<u32>> =
            texts.iter().map(|t| tok.encode(t.as_str(), true).map(|e| e.get_ids().to_vec()).map_err(|e| Error::InvalidArgument(format!("tokenizing {t:?}: {e}")))).collect::<Result<_>>()?;
        let len = enc.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let pad = self.config.text_config.pad_token_id;
        let mut ids = vec![pad; enc.len() * len];
        let mut mask = vec![0i32; enc.len() * len];
        for (i, e) in enc.iter().enumerate() {
            for (j, &t) in e.iter().enumerate() {
                ids[i * len + j] = i32::try_from(t).map_err(|_| Error::InvalidArgument(format!("token id {t} of {:?} is out of range", texts[i])))?;
                mask[i * len + j] = 1;
            }
        }
        let shape = [enc.len() as i32, len as i32];
        let (_, e) = self.embed_text(&Array::from_slice(&ids, &shape), &Array::from_slice(&mask, &shape), v)?;
        finite(e, "text")
    }

    /// `logits_per_audio` `[A, T]`: scaled cosine similarities.
    pub fn logits_per_audio(&self, audio_embeds: &Array, text_embeds: &Array) -> Result<Array> {
        Ok(audio_embeds.matmul(text_embeds.t())?.multiply(mlx_rs::array!(self.logit_scale_audio))?)
    }
}

impl Checkpointed for Clap {
    type Config = ClapConfig;

    /// HF `ClapModel` `save_pretrained` names, buffers included (the index buffers are
    /// checked for shape and recomputed); every tensor stays float32.
    fn build(config: ClapConfig, vs: &Vars) -> Result<Self> {
        let a = config.audio_config.clone();
        let enc = vs.pp("audio_model.audio_encoder");
        let (bn_scale, bn_shift) = batch_norm(&enc.pp("batch_norm"), a.num_mel_bins)?;
        let d0 = a.patch_embeds_hidden_size;
        let pe = enc.pp("patch_embed");
        let [p0, p1] = [a.patch_size[0], a.patch_size[1]];
        let patch_w = pe.derived(pe.tensor("proj.weight", &[d0, 1, p0, p1])?.reshape(&[d0, -1])?.t().contiguous()?);
        let patch_b = pe.tensor("proj.bias", &[d0])?;
        let patch_ln = if a.enable_patch_layer_norm { Some(ln(&pe.pp("norm"), d0, 1e-5)?) } else { None };
        let fusion = if a.enable_fusion {
            let mel_w = pe.derived(pe.tensor("mel_conv2d.weight", &[d0, 1, p0, 3 * p1])?.reshape(&[d0, -1])?.t().contiguous()?);
            let mel_b = pe.tensor("mel_conv2d.bias", &[d0])?;
            let inter = d0 / a.aff_block_r;
            let conv_bn = |q: &Vars, c: i32, bn: i32, cin: i32, cout: i32| -> Result<ConvBn> {
                let cw = q.tensor(&format!("{c}.weight"), &[cout, cin, 1, 1])?.reshape(&[cout, cin])?;
                let cb = q.tensor(&format!("{c}.bias"), &[cout])?;
                let bnv = q.pp(bn);
                let (g, beta) = (bnv.tensor("weight", &[cout])?, bnv.tensor("bias", &[cout])?);
                let (rm, rv) = (bnv.tensor("running_mean", &[cout])?, bnv.tensor("running_var", &[cout])?);
                bnv.tensor("num_batches_tracked", &[])?;
                let scale = g.multiply(ops::rsqrt(&rv.add(mlx_rs::array!(1e-5f32))?)?)?;
                // BN(x W^T + cb) = x (W^T scale) + (cb - rm) scale + beta
                Ok(ConvBn {
                    w: q.derived(cw.t().multiply(&scale)?.contiguous()?),
                    b: q.derived(cb.subtract(&rm)?.multiply(&scale)?.add(&beta)?),
                })
            };
            let branch = |name: &str, c1: i32, b1: i32, c2: i32, b2: i32| -> Result<AffBranch> {
                let q = pe.pp(format!("fusion_model.{name}"));
                Ok(AffBranch { a: conv_bn(&q, c1, b1, d0, inter)?, b: conv_bn(&q, c2, b2, inter, d0)? })
            };
            let local = branch("local_att", 0, 1, 3, 4)?;
            let global = branch("global_att", 1, 2, 4, 5)?;
            Some(Fusion { mel_w, mel_b, local, global })
        } else {
            None
        };
        let ws = a.window_size;
        let n = ws * ws;
        let index = Array::from_slice(&relative_index(ws), &[n * n]);
        let mut stages = Vec::new();
        for (i, ((&depth, &heads), (h, wd))) in a.depths.iter().zip(&a.num_attention_heads).zip(config.resolutions()).enumerate() {
            let c = d0 << i;
            let hidden = (a.mlp_ratio * f64::from(c)) as i32;
            let layer = enc.pp(format!("layers.{i}"));
            let mut blocks = Vec::new();
            for j in 0..depth {
                let p = layer.pp(format!("blocks.{j}"));
                let sa = p.pp("attention.self");
                let table = sa.tensor("relative_position_bias_table", &[(2 * ws - 1) * (2 * ws - 1), heads])?;
                sa.tensor("relative_position_index", &[n, n])?;
                let bias = p.derived(table.take_axis(&index, 0)?.reshape(&[n, n, heads])?.transpose_axes(&[2, 0, 1])?.expand_dims(0)?);
                // HF: no shift once the grid is no larger than a window.
                let shift = if j % 2 == 1 && h.min(wd) > ws { ws / 2 } else { 0 };
                let shifted_mask = if shift > 0 { Some(p.derived(bias.add(shift_mask(padded(h, ws), padded(wd, ws), ws, shift))?)) } else { None };
                blocks.push(SwinBlock {
                    ln1: ln(&p.pp("layernorm_before"), c, a.layer_norm_eps)?,
                    attn: mha(&sa, &p.pp("attention.output.dense"), c, heads, a.qkv_bias)?,
                    bias,
                    ln2: ln(&p.pp("layernorm_after"), c, a.layer_norm_eps)?,
                    fc1: p.pp("intermediate.dense").dense_linear(hidden, c, true)?,
                    fc2: p.pp("output.dense").dense_linear(c, hidden, true)?,
                    shift,
                    window: ws,
                    shifted_mask,
                });
            }
            let merge = if i + 1 < a.depths.len() {
                let p = layer.pp("downsample");
                Some((ln(&p.pp("norm"), 4 * c, 1e-5)?, p.pp("reduction").dense_linear(2 * c, 4 * c, false)?))
            } else {
                None
            };
            stages.push(Stage { blocks, merge });
        }
        let norm = ln(&enc.pp("norm"), a.hidden_size, 1e-5)?;
        let audio = Htsat { stretch: ArrayCache::default(), fusion, bn_scale, bn_shift, patch_w, patch_b, patch_ln, stages, norm };
        let t = config.text_config.clone();
        let hs = t.hidden_size;
        let tm = vs.pp("text_model");
        let layers = (0..t.num_hidden_layers)
            .map(|l| {
                let p = tm.pp(format!("encoder.layer.{l}"));
                Ok(TextLayer {
                    attn: mha(&p.pp("attention.self"), &p.pp("attention.output.dense"), hs, t.num_attention_heads, true)?,
                    ln1: ln(&p.pp("attention.output.LayerNorm"), hs, t.layer_norm_eps)?,
                    fc1: p.pp("intermediate.dense").dense_linear(t.intermediate_size, hs, true)?,
                    fc2: p.pp("output.dense").dense_linear(hs, t.intermediate_size, true)?,
                    ln2: ln(&p.pp("output.LayerNorm"), hs, t.layer_norm_eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let emb = tm.pp("embeddings");
        emb.tensor("position_ids", &[1, t.max_position_embeddings])?;
        emb.tensor("token_type_ids", &[1, t.max_position_embeddings])?;
        let text = TextEncoder {
            word: emb.tensor("word_embeddings.weight", &[t.vocab_size, hs])?,
            position: emb.tensor("position_embeddings.weight", &[t.max_position_embeddings, hs])?,
            token_type: emb.tensor("token_type_embeddings.weight", &[t.type_vocab_size, hs])?,
            ln: ln(&emb.pp("LayerNorm"), hs, t.layer_norm_eps)?,
            layers,
            pooler: tm.pp("pooler.dense").dense_linear(hs, hs, true)?,
            pad: t.pad_token_id,
        };
        let pd = config.projection_dim;
        let proj = |p: &str, inp: i32| -> Result<Projection> {
            Ok(Projection {
                l1: vs.pp(p).pp("linear1").dense_linear(pd, inp, true)?,
                l2: vs.pp(p).pp("linear2").dense_linear(pd, pd, true)?,
            })
        };
        let audio_projection = proj("audio_projection", a.hidden_size)?;
        let text_projection = proj("text_projection", hs)?;
        let la = vs.tensor("logit_scale_a", &[])?.item_cast::<f32>().exp();
        let lt = vs.tensor("logit_scale_t", &[])?.item_cast::<f32>().exp();
        Ok(Self { config, audio, text, audio_projection, text_projection, logit_scale_audio: la, logit_scale_text: lt })
    }

    fn init(name: &str, shape: &[i32]) -> Init {
        if ["relative_position_index", "position_ids", "token_type_ids", "num_batches_tracked"].iter().any(|b| name.ends_with(b)) {
            Init::Zeros
        } else if name.contains("norm") && name.ends_with("weight") || name.ends_with("running_var") {
            Init::Ones
        } else if name.ends_with("bias") || name.ends_with("running_mean") || name.contains("embeddings") || name.contains("logit_scale") || name.ends_with("bias_table") {
            Init::Normal(0.02)
        } else {
            Init::Normal(fan_in(shape).powf(-0.5))
        }
    }
}

/// `e`, evaluated, unless it holds NaN or infinite values (a broken checkpoint's answer).
fn finite(e: Array, what: &str) -> Result<Array> {
    e.eval()?;
    if !crate::nn::ops::all_finite(&e)? {
        return Err(Error::InvalidArgument(format!("the {what} embeddings hold NaN or infinite values (broken weights?)")));
    }
    Ok(e)
}
