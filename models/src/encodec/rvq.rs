//! EnCodec's residual vector quantizer (HF `EncodecResidualVectorQuantizer`): each codebook
//! quantizes what the previous ones left over, by Euclidean nearest neighbour.
use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

use crate::error::{Error, Result};

pub struct Rvq {
    /// One `[K, D]` codebook per quantizer.
    pub codebooks: Vec<Array>,
    /// `||e||^2` per codebook entry, `[1, K]`, precomputed.
    sq_norms: Vec<Array>,
    /// All codebooks stacked `[Q * K, D]`, for the batched decode.
    stacked: Array,
    pub codebook_size: i32,
}

impl Rvq {
    pub fn new(codebooks: Vec<Array>) -> Result<Self> {
        let k = codebooks.first().ok_or_else(|| Error::InvalidArgument("a quantizer needs at least one codebook".into()))?.shape()[0];
        let sq_norms = codebooks.iter().map(|e| Ok(e.square()?.sum_axes(&[1], false)?.reshape(&[1, -1])?)).collect::<Result<_>>()?;
        let stacked = ops::concatenate(&codebooks, 0)?;
        Ok(Self { codebooks, sq_norms, stacked, codebook_size: k })
    }

    pub fn num_quantizers(&self) -> i32 {
        self.codebooks.len() as i32
    }

    /// Codes `[B, Q, T]` (int32) for channels-last embeddings `[B, T, D]` with the first
    /// `nq` codebooks. `eval_each` forces evaluation after every codebook (the naive path).
    pub fn encode(&self, x: &Array, nq: i32, eval_each: bool) -> Result<Array> {
        self.encode_forced(x, nq, eval_each, None)
    }

    /// [`Self::encode`], each level's residual taken from `forced`'s codes (`[B, >= nq, T]`,
    /// e.g. a reference's) rather than this encoder's own choice: teacher forcing, so that one
    /// near-tie decided the other way does not change every level after it.
    pub fn encode_forced(&self, x: &Array, nq: i32, eval_each: bool, forced: Option<&Array>) -> Result<Array> {
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        if let Some(f) = forced {
            let s = f.shape();
            if s.len() != 3 || s[0] != b || s[1] < nq || s[2] != t {
                return Err(Error::InvalidArgument(format!("forced codes {s:?}: expected [{b}, >= {nq}, {t}]")));
            }
        }
        let mut residual = x.reshape(&[b * t, d])?;
        let mut codes = Vec::with_capacity(nq as usize);
        for q in 0..nq as usize {
            let embed = &self.codebooks[q];
            // HF's expression, term for term: -(|x|^2 - 2 x E^T + |e|^2), then argmax.
            let xs = residual.square()?.sum_axes(&[1], true)?;
            let dist = xs.subtract(residual.matmul(embed.t())?.multiply(mlx_rs::array!(2.0f32))?)?.add(&self.sq_norms[q])?.negative()?;
            let idx = argmax_axis(&dist, -1, false)?.as_dtype(Dtype::Int32)?;
            let taken = match forced {
                Some(f) => f.index((.., q as i32, ..)).reshape(&[b * t])?.as_dtype(Dtype::Int32)?,
                None => idx.clone(),
            };
            residual = residual.subtract(embed.take_axis(&taken, 0)?)?;
            if eval_each {
                mlx_rs::transforms::eval([&idx, &residual])?;
            }
            codes.push(idx.reshape(&[b, t])?);
        }
        Ok(ops::stack(&codes, 1)?)
    }

    /// Quantized embeddings `[B, T, D]` for codes `[B, Q, T]`: one gather over the stacked
    /// codebooks and a sum (the optimized path).
    pub fn decode_batched(&self, codes: &Array) -> Result<Array> {
        let q = codes.shape()[1];
        let offsets = ops::arange::<_, i32>(0, q, 1)?.multiply(mlx_rs::array!(self.codebook_size))?.reshape(&[1, q, 1])?;
        let emb = self.stacked.take_axis(&codes.add(&offsets)?, 0)?; // [B, Q, T, D]
        Ok(emb.sum_axes(&[1], false)?)
    }

    /// The same, one codebook at a time, evaluating after each (the naive path, as HF loops).
    pub fn decode_per_codebook(&self, codes: &Array) -> Result<Array> {
        let mut out: Option<Array> = None;
        for i in 0..codes.shape()[1] {
            let e = self.codebooks[i as usize].take_axis(codes.index((.., i, ..)), 0)?;
            let sum = match out {
                Some(o) => o.add(&e)?,
                None => e,
            };
            sum.eval()?;
            out = Some(sum);
        }
        out.ok_or_else(|| Error::InvalidArgument("codes hold no codebook".into()))
    }
}
