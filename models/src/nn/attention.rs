//! The one multi-head attention of the zoo (Whisper, MusicGen, CLAP's text side and
//! HTDemucs' transformer all use it), with the seed's decode optimizations as injected
//! strategy: the self-attention [`KvCache`] kind, and cross-attention K/V recomputed every
//! step or computed once and cached ([`CrossKvCache`]).
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
use crate::nn::kv_cache::{KvCache, KvParts};
use crate::nn::linear::{Linear, Weight};

/// How attention weights are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKernel {
    /// MLX's fused `scaled_dot_product_attention`.
    #[default]
    Fused,
    /// Explicit `softmax(Q K^T * scale + mask) V`, as the naive CLAP path.
    Explicit,
}

impl AttentionKernel {
    /// The naive path's explicit softmax, the optimized path's fused kernel.
    pub fn for_variant(v: crate::Variant) -> Self {
        match v {
            crate::Variant::Naive => AttentionKernel::Explicit,
            crate::Variant::Optimized => AttentionKernel::Fused,
        }
    }
}

/// The mask applied to attention scores.
#[derive(Clone, Copy)]
pub enum Mask<'a> {
    None,
    /// Causal over the last `L_q` of `L_k` positions (decoder self-attention).
    Causal,
    /// Additive mask broadcastable to `[B, H, L_q, L_k]`.
    Additive(&'a Array),
}

/// Cross-attention keys and values over a fixed encoder output, filled on first use.
#[derive(Default, Clone)]
pub struct CrossKvCache {
    kv: Option<(Array, Array)>,
}

impl CrossKvCache {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn is_filled(&self) -> bool {
        self.kv.is_some()
    }
    /// The cached keys and values `[B, H, S, D]`, once filled.
    pub fn kv(&self) -> Option<(&Array, &Array)> {
        self.kv.as_ref().map(|(k, v)| (k, v))
    }
    /// Keep the batch rows `rows` of the cached keys and values.
    pub fn keep_rows(&mut self, rows: &Array) -> Result<()> {
        if let Some((k, v)) = self.kv.take() {
            self.kv = Some((k.take_axis(rows, 0)?, v.take_axis(rows, 0)?));
        }
        Ok(())
    }
}

/// Multi-head attention with PyTorch-style `q/k/v/out` projections.
#[derive(Clone)]
pub struct MultiHeadAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    pub n_head: i32,
    /// The query, key and value projections stacked (`[3 C, C]`), so that the optimized
    /// self-attention makes one product where the naive one makes three; `query`, `key` and
    /// `value` are then views of its rows (see [`Self::fuse_qkv`]).
    pub qkv: Option<Linear>,
}

impl MultiHeadAttention {
    /// HF's `q_proj`, `k_proj`, `v_proj`, `out_proj` under `vs`, `d` wide (Whisper and
    /// MusicGen: the key projection never has a bias; the others have one when `bias`).
    pub fn load(vs: &crate::checkpoint::Vars, d: i32, n_head: i32, bias: bool) -> Result<Self> {
        Ok(Self {
            query: vs.pp("q_proj").linear(d, d, bias)?,
            key: vs.pp("k_proj").linear(d, d, false)?,
            value: vs.pp("v_proj").linear(d, d, bias)?,
            out: vs.pp("out_proj").linear(d, d, bias)?,
            n_head,
            qkv: None,
        })
    }

    /// Stack the query, key and value weights into one matrix for the optimized
    /// self-attention (on a GPU a decode step is bound by the host's cost per kernel: this
    /// saves two products a layer a step), and make the three projections views of it, so
    /// the weights are held once. Only float32 weights are stacked; other precisions keep
    /// three products.
    pub fn fuse_qkv(&mut self) -> Result<()> {
        let (Weight::Dense(q), Weight::Dense(k), Weight::Dense(v)) = (&self.query.weight, &self.key.weight, &self.value.weight) else {
            return Ok(());
        };
        let d = q.shape()[0];
        if k.shape() != q.shape() || v.shape() != q.shape() || q.dtype() != mlx_rs::Dtype::Float32 {
            return Ok(());
        }
        let w = ops::concatenate(&[q, k, v], 0)?;
        let bias = match (&self.query.bias, &self.key.bias, &self.value.bias) {
            (None, None, None) => None,
            (qb, kb, vb) => {
                let zeros = ops::zeros::<f32>(&[d])?;
                let pick = |b: &Option<Array>| b.clone().unwrap_or_else(|| zeros.clone());
                Some(ops::concatenate(&[pick(qb), pick(kb), pick(vb)], 0)?)
            }
        };
        mlx_rs::transforms::eval([&w].into_iter().chain(bias.as_ref()))?;
        self.query.weight = Weight::Dense(w.index(..d));
        self.key.weight = Weight::Dense(w.index(d..2 * d));
        self.value.weight = Weight::Dense(w.index(2 * d..));
        self.qkv = Some(Linear::new(w, bias)?);
        Ok(())
    }

    /// Queries, keys and values of `x` (`[B, T, C]`), split into heads: one product when the
    /// projections are stacked and `fused` (the optimized path), three otherwise.
    fn project_qkv(&self, x: &Array, fused: bool) -> Result<(Array, Array, Array)> {
        match &self.qkv {
            Some(f) if fused => {
                let s = x.shape();
                if s.len() != 3 {
                    return Err(Error::InvalidArgument(format!("attention input {s:?}: expected [B, T, C]")));
                }
                let y = f.forward(x)?.reshape(&[s[0], s[1], 3, self.n_head, self.head_dim()])?;
                let part = |i: i32| -> Result<Array> { Ok(y.index((.., .., i, .., ..)).transpose_axes(&[0, 2, 1, 3])?) };
                Ok((part(0)?, part(1)?, part(2)?))
            }
            _ => {
                let q = self.split_heads(&self.query.forward(x)?)?;
                let (k, v) = self.project_kv(x)?;
                Ok((q, k, v))
            }
        }
    }

    fn head_dim(&self) -> i32 {
        self.query.out_features() / self.n_head
    }

    /// `[B, T, n_head * d]` -> `[B, n_head, T, d]`.
    pub(crate) fn split_heads(&self, x: &Array) -> Result<Array> {
        let s = x.shape();
        if s.len() != 3 {
            return Err(Error::InvalidArgument(format!("attention input {s:?}: expected [B, T, C]")));
        }
        Ok(x.reshape(&[s[0], s[1], self.n_head, self.head_dim()])?.transpose_axes(&[0, 2, 1, 3])?)
    }

    /// Keys and values of `xa` (`[B, T, C]`), split into heads.
    pub fn project_kv(&self, xa: &Array) -> Result<(Array, Array)> {
        Ok((self.split_heads(&self.key.forward(xa)?)?, self.split_heads(&self.value.forward(xa)?)?))
    }

    /// Attention of heads `q` over `k`, `v` by `kernel`, then the output projection. Returns
    /// `[B, L_q, C]`.
    pub fn attend(&self, q: &Array, k: &Array, v: &Array, mask: Mask<'_>, kernel: AttentionKernel) -> Result<Array> {
        let scale = (self.head_dim() as f32).powf(-0.5);
        let (lq, lk) = (q.shape()[2], k.shape()[2]);
        let causal_needed = matches!(mask, Mask::Causal) && lq > 1;
        let (qs, ks) = (q.shape(), k.shape());
        if kernel == AttentionKernel::Fused && matches!(mask, Mask::None | Mask::Causal) && q.dtype() == mlx_rs::Dtype::Float32 && qs.len() == 4 && ks.len() == 4 {
            let heads = (qs[0] * qs[1]) as usize;
            if crate::nn::host_attention::pays(heads, lq as usize, lk as usize) && (!causal_needed || lq <= lk) {
                // The heads back in `[B, L, H * D]` (for the usual split, a view of the
                // projection), attended on the host, straight into the output projection.
                let merged = |a: &Array| -> Result<Array> {
                    let s = a.shape();
                    Ok(a.transpose_axes(&[0, 2, 1, 3])?.reshape(&[s[0], s[2], s[1] * s[3]])?)
                };
                let o = crate::nn::host_attention::attention(&merged(q)?, &merged(k)?, &merged(v)?, qs[1] as usize, scale, causal_needed)?;
                return self.out.forward(&o);
            }
        }
        let o = match kernel {
            AttentionKernel::Fused if host_softmax_pays(q, k) => {
                // On the CPU backend MLX's fused attention is the composed ops, and its softmax
                // is scalar: for large score matrices the host softmax is several times faster.
                let mut s = q.matmul(k.transpose_axes(&[0, 1, 3, 2])?)?.multiply(mlx_rs::array!(scale))?;
                match mask {
                    Mask::Additive(a) => s = s.add(a)?,
                    Mask::Causal if causal_needed => s = s.add(causal_mask(lq, lk)?)?,
                    _ => {}
                }
                crate::nn::host::softmax_last_axis(&s)?.matmul(v)?
            }
            AttentionKernel::Fused => {
                let m = match mask {
                    Mask::Additive(a) => Some(ScaledDotProductAttentionMask::Array(a)),
                    Mask::Causal if causal_needed && lq == lk => Some(ScaledDotProductAttentionMask::Causal),
                    _ => None,
                };
                if causal_needed && lq != lk {
                    let cm = causal_mask(lq, lk)?;
                    mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, ScaledDotProductAttentionMask::Array(&cm), None)?
                } else {
                    mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, m, None)?
                }
            }
            AttentionKernel::Explicit => {
                let mut s = q.matmul(k.transpose_axes(&[0, 1, 3, 2])?)?.multiply(mlx_rs::array!(scale))?;
                match mask {
                    Mask::Additive(a) => s = s.add(a)?,
                    Mask::Causal if causal_needed => s = s.add(causal_mask(lq, lk)?)?,
                    _ => {}
                }
                ops::softmax_axis(&s, -1, true)?.matmul(v)?
            }
        };
        self.merge_heads(&o)
    }

    /// `[B, H, L, D]` heads to `[B, L, C]`, then the output projection.
    pub(crate) fn merge_heads(&self, o: &Array) -> Result<Array> {
        let sh = o.shape();
        let o = o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[sh[0], sh[2], sh[1] * sh[3]])?;
        self.out.forward(&o)
    }

    /// Attention over keys in two parts (a staged cache's committed history `ck`, `cv` and its
    /// recent positions `rk`, `rv`, the queries' own last): one softmax over both parts'
    /// scores, so no concatenation of the history is needed. A causal mask applies to the
    /// recent part, whose last `L_q` positions are the queries'.
    pub fn attend_parts(&self, q: &Array, (ck, cv): (&Array, &Array), (rk, rv): (&Array, &Array), mask: Mask<'_>) -> Result<Array> {
        let scale = mlx_rs::array!((self.head_dim() as f32).powf(-0.5));
        let (lq, lr, lc) = (q.shape()[2], rk.shape()[2], ck.shape()[2]);
        let sc = q.matmul(ck.transpose_axes(&[0, 1, 3, 2])?)?.multiply(&scale)?;
        let mut sr = q.matmul(rk.transpose_axes(&[0, 1, 3, 2])?)?.multiply(&scale)?;
        if matches!(mask, Mask::Causal) && lq > 1 {
            sr = sr.add(causal_mask(lq, lr)?)?;
        }
        let mut s = ops::concatenate(&[sc, sr], 3)?;
        if let Mask::Additive(a) = mask {
            s = s.add(a)?;
        }
        let p = ops::softmax_axis(&s, -1, true)?;
        let o = p.index((.., .., .., ..lc)).matmul(cv)?.add(p.index((.., .., .., lc..)).matmul(rv)?)?;
        self.merge_heads(&o)
    }

    /// Self-attention over `x` (`[B, T, C]`). With a cache, `x` holds only the new positions
    /// and the keys/values of earlier ones come from the cache.
    pub fn self_attention(&self, x: &Array, cache: Option<&mut dyn KvCache>, mask: Mask<'_>, kernel: AttentionKernel) -> Result<Array> {
        let (q, k, v) = self.project_qkv(x, kernel == AttentionKernel::Fused)?;
        let parts = match cache {
            Some(c) => c.update_and_fetch_parts(&k, &v)?,
            None => KvParts { committed: None, recent: (k, v) },
        };
        match &parts.committed {
            None => self.attend(&q, &parts.recent.0, &parts.recent.1, mask, kernel),
            Some((ck, cv)) => self.attend_parts(&q, (ck, cv), (&parts.recent.0, &parts.recent.1), mask),
        }
    }

    /// Cross-attention of `x` over the encoder output `xa`. With a cache, K/V are computed on
    /// the first call and reused afterwards (optimized); without, recomputed every call (naive).
    pub fn cross_attention(&self, x: &Array, xa: &Array, cache: Option<&mut CrossKvCache>, kernel: AttentionKernel) -> Result<Array> {
        self.cross_attention_masked(x, xa, cache, Mask::None, kernel)
    }

    /// [`Self::cross_attention`] with a mask over the encoder positions (padding).
    pub fn cross_attention_masked(&self, x: &Array, xa: &Array, cache: Option<&mut CrossKvCache>, mask: Mask<'_>, kernel: AttentionKernel) -> Result<Array> {
        let q = self.split_heads(&self.query.forward(x)?)?;
        let (k, v) = match cache {
            Some(c) => match &c.kv {
                Some(kv) => kv.clone(),
                None => {
                    // Stored row-contiguous: the head split is a transposed view, and every
                    // later step would otherwise copy K and V again to attend over them.
                    let (k, v) = self.project_kv(xa)?;
                    let kv = (k.contiguous()?, v.contiguous()?);
                    c.kv = Some(kv.clone());
                    kv
                }
            },
            None => self.project_kv(xa)?,
        };
        self.attend(&q, &k, &v, mask, kernel)
    }
}

/// Whether the score matrix of `q` against `k` is large enough for the host softmax.
fn host_softmax_pays(q: &Array, k: &Array) -> bool {
    let (qs, ks) = (q.shape(), k.shape());
    let n = qs[..qs.len() - 1].iter().map(|&d| d as usize).product::<usize>() * ks[ks.len() - 2] as usize;
    crate::nn::host::pays(n)
}

/// Additive causal mask `[L_q, L_k]` for queries that are the last `L_q` of `L_k` positions.
pub fn causal_mask(lq: i32, lk: i32) -> Result<Array> {
    let qpos = ops::arange::<_, i32>(lk - lq, lk, None)?.reshape(&[lq, 1])?;
    let kpos = ops::arange::<_, i32>(0, lk, None)?.reshape(&[1, lk])?;
    let allowed = kpos.le(&qpos)?;
    Ok(ops::select(&allowed, mlx_rs::array!(0.0f32), mlx_rs::array!(f32::NEG_INFINITY))?)
}
