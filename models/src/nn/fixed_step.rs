//! The decoder step as one graph with the same shapes at every step
//! ([`super::decoder::DecodeOptions::fixed_step`]).
//!
//! Every layer's keys and values live in a buffer of the full capacity, `[B, H, capacity, D]`,
//! written at the current position with a dynamic `slice_update` (the position is an array, not
//! a host integer), and attention runs over the whole capacity under a mask that hides the
//! positions not yet written. Nothing in a single-token step's graph then depends on how far
//! the decode has gone, so the layer stack is traced and compiled once (`mx.compile`) and every
//! later step replays it: no per-step graph construction on the host, the elementwise chains
//! fused, and the same kernels launched every step. A prompt of several tokens (Whisper's
//! start-of-transcript sequence, the first step of a decode) runs the same function uncompiled.
use mlx_rs::error::Exception;
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::{ops, Array, Stream};

use crate::error::{Error, Result};
use crate::nn::attention::MultiHeadAttention;
use crate::nn::decoder::DecoderLayer;
use crate::nn::ops::gelu;

/// The compiled single-token step: `[h, position, cross mask?, per layer K, V (, CK, CV)]` to
/// `[h, per layer K, V]`.
type StepFn = Box<dyn for<'a> FnMut(&'a [Array]) -> std::result::Result<Vec<Array>, Exception>>;

/// The per-layer buffers of one fixed-shape decode, and its compiled step.
pub struct FixedStack {
    capacity: i32,
    /// Per layer `(K, V)`, `[B, H, capacity, D]`, allocated by the first call.
    kv: Vec<(Array, Array)>,
    /// Per layer cross-attention `(K, V)` over the encoder states, computed by the first call
    /// (`None` for layers without cross-attention).
    cross: Vec<Option<(Array, Array)>>,
    step: Option<StepFn>,
    /// Whether the compiled step was traced with a cross-attention mask.
    step_masked: bool,
}

impl FixedStack {
    pub fn new(capacity: i32) -> Self {
        Self { capacity, kv: Vec::new(), cross: Vec::new(), step: None, step_masked: false }
    }

    /// Run `layers` on the new positions `h` (`[B, t, C]`) at `offset`: cross-attention over
    /// `xa` under `mask` (the encoder states and mask are read by the first call only; a decode
    /// keeps them fixed, as the cross-attention cache does).
    pub fn forward(&mut self, layers: &[DecoderLayer], h: &Array, xa: &Array, mask: Option<&Array>, offset: i32) -> Result<Array> {
        let s = h.shape();
        if s.len() != 3 || s[1] < 1 {
            return Err(Error::InvalidArgument(format!("decoder input {s:?}: expected [batch, steps >= 1, channels]")));
        }
        let t = s[1];
        if offset + t > self.capacity {
            return Err(Error::InvalidArgument(format!("fixed-shape decode: {offset} + {t} positions past its capacity {}", self.capacity)));
        }
        if self.kv.is_empty() {
            self.allocate(layers, s[0], h.dtype(), xa)?;
        } else if self.kv.len() != layers.len() || self.kv[0].0.shape()[0] != s[0] {
            return Err(Error::InvalidArgument(format!(
                "fixed-shape decode: {} layers of batch {} given to a state of {} layers of batch {}",
                layers.len(),
                s[0],
                self.kv.len(),
                self.kv[0].0.shape()[0]
            )));
        }
        let position = Array::from_slice(&[offset], &[1]);
        let mut args = vec![h.clone(), position];
        if let Some(m) = mask {
            args.push(m.clone());
        }
        for ((k, v), c) in self.kv.iter().zip(&self.cross) {
            args.extend([k.clone(), v.clone()]);
            if let Some((ck, cv)) = c {
                args.extend([ck.clone(), cv.clone()]);
            }
        }
        let masked = mask.is_some();
        let out = if t == 1 {
            if self.step.is_none() || self.step_masked != masked {
                let owned: Vec<DecoderLayer> = layers.to_vec();
                let f = move |a: &[Array]| -> std::result::Result<Vec<Array>, Exception> { stack(&owned, a, masked).map_err(|e| Exception::custom(e.to_string())) };
                self.step = Some(Box::new(mlx_rs::transforms::compile::compile(f, false)));
                self.step_masked = masked;
            }
            let step = self.step.as_mut().ok_or_else(|| Error::Mlx("fixed-shape decode: no compiled step".into()))?;
            // The first call traces the stack: MLX's ops only, no host kernels in the trace.
            crate::nn::host::while_tracing(|| step(&args)).map_err(|e| Error::Mlx(e.to_string()))?
        } else {
            stack(layers, &args, masked)?
        };
        // The old buffers are now referenced by the graph alone (once `self.kv` is replaced
        // below), so MLX may update them in place when it evaluates the step.
        drop(args);
        let mut it = out.into_iter();
        let h = it.next().ok_or_else(|| Error::Mlx("fixed-shape decode: no output".into()))?;
        let rest: Vec<Array> = it.collect();
        if rest.len() != 2 * layers.len() {
            return Err(Error::Mlx(format!("fixed-shape decode: {} cache outputs for {} layers", rest.len(), layers.len())));
        }
        self.kv = rest.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
        Ok(h)
    }

    fn allocate(&mut self, layers: &[DecoderLayer], batch: i32, dtype: mlx_rs::Dtype, xa: &Array) -> Result<()> {
        self.kv = layers
            .iter()
            .map(|l| {
                let (heads, d) = (l.attn.n_head, l.attn.query.out_features());
                let shape = [batch, heads, self.capacity, d / heads];
                Ok((ops::zeros_dtype(&shape, dtype)?, ops::zeros_dtype(&shape, dtype)?))
            })
            .collect::<Result<_>>()?;
        self.cross = layers
            .iter()
            .map(|l| match &l.cross {
                Some((attn, _)) => {
                    let (k, v) = attn.project_kv(xa)?;
                    Ok(Some((k.contiguous()?, v.contiguous()?)))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Keep the batch rows `rows` of every buffer (beam search).
    pub fn reorder(&mut self, rows: &Array) -> Result<()> {
        for (k, v) in &mut self.kv {
            *k = k.take_axis(rows, 0)?;
            *v = v.take_axis(rows, 0)?;
        }
        Ok(())
    }

    /// Keep the batch rows `rows` of the cross-attention keys and values ([`Self::reorder`]
    /// does the self-attention buffers; a batch whose finished rows leave it needs both).
    pub fn keep_cross_rows(&mut self, rows: &Array) -> Result<()> {
        for (k, v) in self.cross.iter_mut().flatten() {
            *k = k.take_axis(rows, 0)?;
            *v = v.take_axis(rows, 0)?;
        }
        Ok(())
    }
}

/// The layer stack over the capacity: `a` as [`StepFn`] takes it.
fn stack(layers: &[DecoderLayer], a: &[Array], masked: bool) -> Result<Vec<Array>> {
    let (mut h, position) = (a[0].clone(), &a[1]);
    let cross_mask = masked.then(|| &a[2]);
    let mut i = if masked { 3 } else { 2 };
    let t = h.shape()[1];
    let capacity = a[i].shape()[2];
    // Query j sits at position + j and sees keys 0..=position + j.
    let qpos = ops::arange::<_, i32>(0, t, None)?.add(position)?.reshape(&[1, 1, t, 1])?;
    let kpos = ops::arange::<_, i32>(0, capacity, None)?.reshape(&[1, 1, 1, capacity])?;
    let self_mask = ops::select(&kpos.le(&qpos)?, mlx_rs::array!(0.0f32), mlx_rs::array!(f32::NEG_INFINITY))?;
    let mut out = Vec::with_capacity(1 + 2 * layers.len());
    out.push(Array::from_int(0));
    for l in layers {
        let (k, v) = (&a[i], &a[i + 1]);
        i += 2;
        let x = l.attn_ln.forward(&h)?;
        let q = l.attn.split_heads(&l.attn.query.forward(&x)?)?;
        let (kn, vn) = l.attn.project_kv(&x)?;
        let k = write_at(k, &kn, position)?;
        let v = write_at(v, &vn, position)?;
        h = h.add(attend(&l.attn, &q, &k, &v, Some(&self_mask))?)?;
        if let Some((cross, ln)) = &l.cross {
            let (ck, cv) = (&a[i], &a[i + 1]);
            i += 2;
            let q = cross.split_heads(&cross.query.forward(&ln.forward(&h)?)?)?;
            h = h.add(attend(cross, &q, ck, cv, cross_mask)?)?;
        }
        h = h.add(l.fc2.forward(&gelu(&l.fc1.forward(&l.ff_ln.forward(&h)?)?)?)?)?;
        out.extend([k, v]);
    }
    out[0] = h;
    Ok(out)
}

/// `buffer` with `update` (`[B, H, t, D]`) written at `position` along the time axis.
fn write_at(buffer: &Array, update: &Array, position: &Array) -> Result<Array> {
    let axes = [2i32];
    let stream = Stream::thread_local_or_default();
    // SAFETY: all handles are valid for the call; `res` is owned by the returned Array on
    // success and freed here on failure.
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_slice_update_dynamic(&mut res, buffer.as_ptr(), update.as_ptr(), position.as_ptr(), axes.as_ptr(), axes.len(), stream.as_ptr());
        if status != 0 {
            mlx_sys::mlx_array_free(res);
            return Err(Error::Mlx(format!("slice_update_dynamic of {:?} into {:?} failed", update.shape(), buffer.shape())));
        }
        Ok(Array::from_ptr(res))
    }
}

/// MLX's fused attention of `q` over `k`, `v` under an additive `mask`, then `attn`'s output
/// projection.
fn attend(attn: &MultiHeadAttention, q: &Array, k: &Array, v: &Array, mask: Option<&Array>) -> Result<Array> {
    let scale = (attn.query.out_features() as f32 / attn.n_head as f32).powf(-0.5);
    let o = match mask {
        Some(m) => mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, ScaledDotProductAttentionMask::Array(m), None)?,
        None => mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, None, None)?,
    };
    attn.merge_heads(&o)
}
