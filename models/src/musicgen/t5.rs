//! The T5 encoder that conditions MusicGen (HF `T5EncoderModel`, t5-base's relu
//! feed-forward): RMS layer norms, unscaled attention with a learned relative-position bias
//! (from the first block, shared by all), and a padding mask.
use mlx_rs::{ops, Array};

use super::config::T5Config;
use crate::checkpoint::Vars;
use crate::error::{Error, Result};
use crate::nn::linear::Linear;

struct Block {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_ln: Array,
    wi: Linear,
    wo: Linear,
    ff_ln: Array,
}

pub struct T5Encoder {
    pub config: T5Config,
    embed: Array,
    /// `[buckets, heads]`.
    relative_bias: Array,
    blocks: Vec<Block>,
    final_ln: Array,
}

/// T5's bidirectional relative-position bucket of `rel = key - query`, in float32 as HF.
fn bucket(rel: i32, buckets: i32, max_distance: i32) -> i32 {
    let half = buckets / 2;
    let mut b = if rel > 0 { half } else { 0 };
    let r = rel.abs();
    let exact = half / 2;
    if r < exact {
        b += r;
    } else {
        let scale = ((f64::from(max_distance) / f64::from(exact)).ln()) as f32;
        let large = exact + ((r as f32 / exact as f32).ln() / scale * (half - exact) as f32) as i32;
        b += large.min(half - 1);
    }
    b
}

impl T5Encoder {
    /// HF `T5EncoderModel` names under `vs`; every matrix stays float32.
    pub(crate) fn build(config: T5Config, vs: &Vars) -> Result<Self> {
        let c = &config;
        let (d, inner) = (c.d_model, c.num_heads * c.d_kv);
        let blocks = (0..c.num_layers)
            .map(|i| {
                let (a, f) = (vs.pp(format!("encoder.block.{i}.layer.0")), vs.pp(format!("encoder.block.{i}.layer.1")));
                let sa = a.pp("SelfAttention");
                let ff = f.pp("DenseReluDense");
                Ok(Block {
                    q: sa.pp("q").dense_linear(inner, d, false)?,
                    k: sa.pp("k").dense_linear(inner, d, false)?,
                    v: sa.pp("v").dense_linear(inner, d, false)?,
                    o: sa.pp("o").dense_linear(d, inner, false)?,
                    attn_ln: a.tensor("layer_norm.weight", &[d])?,
                    wi: ff.pp("wi").dense_linear(c.d_ff, d, false)?,
                    wo: ff.pp("wo").dense_linear(d, c.d_ff, false)?,
                    ff_ln: f.tensor("layer_norm.weight", &[d])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: vs.tensor("shared.weight", &[c.vocab_size, d])?,
            relative_bias: vs.tensor("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", &[c.relative_attention_num_buckets, c.num_heads])?,
            final_ln: vs.tensor("encoder.final_layer_norm.weight", &[d])?,
            blocks,
            config,
        })
    }

    /// `[1, heads, L, L]` position bias for `len` tokens.
    fn position_bias(&self, len: i32) -> Result<Array> {
        let c = &self.config;
        let ids: Vec<i32> = (0..len).flat_map(|q| (0..len).map(move |k| (q, k))).map(|(q, k)| bucket(k - q, c.relative_attention_num_buckets, c.relative_attention_max_distance)).collect();
        let b = self.relative_bias.take_axis(Array::from_slice(&ids, &[len, len]), 0)?; // [L, L, H]
        Ok(b.transpose_axes(&[2, 0, 1])?.reshape(&[1, c.num_heads, len, len])?)
    }

    /// Hidden states `[B, L, d_model]` of token ids `[B, L]`; `mask` (`[B, L]`, 1 = token,
    /// 0 = padding) hides padding from attention.
    pub fn forward(&self, ids: &Array, mask: Option<&Array>) -> Result<Array> {
        let c = &self.config;
        let s = ids.shape();
        if s.len() != 2 || s[1] == 0 {
            return Err(Error::InvalidArgument(format!("text token ids of shape {s:?}: expected [batch, length > 0]")));
        }
        let (b, l) = (s[0], s[1]);
        let mut bias = self.position_bias(l)?;
        if let Some(m) = mask {
            if m.shape() != s {
                return Err(Error::InvalidArgument(format!("attention mask of shape {:?} for token ids {s:?}", m.shape())));
            }
            // HF's extended mask: (1 - mask) * finfo(float32).min over the keys.
            let pad = ops::subtract(mlx_rs::array!(1.0f32), m.as_dtype(mlx_rs::Dtype::Float32)?)?.multiply(mlx_rs::array!(f32::MIN))?;
            bias = bias.add(pad.reshape(&[b, 1, 1, l])?)?;
        }
        let heads = |x: &Array| -> Result<Array> { Ok(x.reshape(&[b, l, c.num_heads, c.d_kv])?.transpose_axes(&[0, 2, 1, 3])?) };
        let mut h = self.embed.take_axis(ids, 0)?;
        let eps = c.layer_norm_epsilon;
        for blk in &self.blocks {
            let x = mlx_rs::fast::rms_norm(&h, Some(&blk.attn_ln), eps)?;
            let (q, k, v) = (heads(&blk.q.forward(&x)?)?, heads(&blk.k.forward(&x)?)?, heads(&blk.v.forward(&x)?)?);
            let o = mlx_rs::fast::scaled_dot_product_attention(&q, &k, &v, 1.0, mlx_rs::fast::ScaledDotProductAttentionMask::Array(&bias), None)?;
            let o = o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, c.num_heads * c.d_kv])?;
            h = h.add(blk.o.forward(&o)?)?;
            let x = mlx_rs::fast::rms_norm(&h, Some(&blk.ff_ln), eps)?;
            h = h.add(blk.wo.forward(&ops::maximum(&blk.wi.forward(&x)?, mlx_rs::array!(0.0f32))?)?)?;
        }
        Ok(mlx_rs::fast::rms_norm(&h, Some(&self.final_ln), eps)?)
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_match_hf_t5() {
        // torch: T5Attention._relative_position_bucket(arange(-140, 141), True, 32, 128).
        let want: Vec<(i32, i32)> = vec![(0, 0), (1, 17), (-1, 1), (7, 23), (-7, 7), (8, 24), (12, 25), (16, 26), (-16, 10), (32, 28), (64, 30), (127, 31), (128, 31), (500, 31), (-500, 15)];
        for (rel, b) in want {
            assert_eq!(bucket(rel, 32, 128), b, "relative position {rel}");
        }
    }
}
