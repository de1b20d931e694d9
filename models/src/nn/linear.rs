//! A linear layer holding PyTorch-layout weights (`[out, in]`), stored in float32, float16,
//! or quantized to 8 or 4 bits ([`Precision`]).
use mlx_rs::{Array, Dtype};

use crate::error::{Error, Result};
use crate::nn::quant::{Precision, QuantWeight};

/// How a weight matrix is stored.
#[derive(Clone)]
pub enum Weight {
    /// `[out, in]` float32.
    Dense(Array),
    /// `[out, in]` float16; inputs are cast to float16 for the product.
    Half(Array),
    Quantized(QuantWeight),
}

impl Weight {
    pub fn shape(&self) -> [i32; 2] {
        match self {
            Weight::Dense(w) | Weight::Half(w) => [w.shape()[0], w.shape()[1]],
            Weight::Quantized(q) => q.shape,
        }
    }

    /// Store a float `[out, in]` matrix at `precision`.
    pub fn new(w: Array, precision: Precision) -> Result<Self> {
        Ok(match precision {
            Precision::F32 => Weight::Dense(w.as_dtype(Dtype::Float32)?),
            Precision::F16 => Weight::Half(w.as_dtype(Dtype::Float16)?),
            Precision::Int { .. } => Weight::Quantized(QuantWeight::quantize(&w, precision)?),
        })
    }

    /// `x @ W^T` over the last axis, in float32 out.
    pub fn matmul_t(&self, x: &Array) -> Result<Array> {
        match self {
            Weight::Dense(w) => Ok(x.matmul(w.t())?),
            Weight::Half(w) => Ok(x.as_dtype(Dtype::Float16)?.matmul(w.t())?.as_dtype(Dtype::Float32)?),
            Weight::Quantized(q) => q.matmul_t(x),
        }
    }

    /// Rows `ids` of the matrix, as float32 (an embedding lookup).
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        match self {
            Weight::Dense(w) => Ok(w.take_axis(ids, 0)?),
            Weight::Half(w) => Ok(w.take_axis(ids, 0)?.as_dtype(Dtype::Float32)?),
            Weight::Quantized(q) => q.rows(ids),
        }
    }

    /// The arrays that hold it (for evaluation and memory accounting).
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            Weight::Dense(w) | Weight::Half(w) => vec![w],
            Weight::Quantized(q) => vec![&q.packed, &q.scales, &q.biases],
        }
    }

    pub fn precision(&self) -> Precision {
        match self {
            Weight::Dense(_) => Precision::F32,
            Weight::Half(_) => Precision::F16,
            Weight::Quantized(q) => q.precision(),
        }
    }

    /// Store at `precision` (from float32 or float16; a quantized weight stays as it is
    /// unless asked for the same precision).
    pub fn convert(&mut self, precision: Precision) -> Result<()> {
        if self.precision() == precision {
            return Ok(());
        }
        let dense = match self {
            Weight::Dense(w) | Weight::Half(w) => w.clone(),
            Weight::Quantized(q) => return Err(Error::InvalidArgument(format!("a {} weight cannot be converted to {precision}; load the float checkpoint", q.precision()))),
        };
        *self = Weight::new(dense, precision)?;
        Ok(())
    }
}

#[derive(Clone)]
pub struct Linear {
    pub weight: Weight,
    /// `[out]`, float32.
    pub bias: Option<Array>,
}

impl Linear {
    pub fn new(weight: Array, bias: Option<Array>) -> Result<Self> {
        let s = weight.shape();
        if s.len() != 2 || bias.as_ref().is_some_and(|b| b.shape() != [s[0]]) {
            return Err(Error::InvalidArgument(format!("linear weight {s:?} / bias {:?}: expected [out, in] and [out]", bias.as_ref().map(|b| b.shape().to_vec()))));
        }
        Ok(Self { weight: Weight::Dense(weight), bias })
    }

    /// A layer whose weight is already stored (e.g. loaded quantized).
    pub fn from_weight(weight: Weight, bias: Option<Array>) -> Result<Self> {
        let [out, _] = weight.shape();
        if bias.as_ref().is_some_and(|b| b.shape() != [out]) {
            return Err(Error::InvalidArgument(format!("linear bias {:?} for {out} outputs", bias.as_ref().map(|b| b.shape().to_vec()))));
        }
        Ok(Self { weight, bias })
    }

    pub fn out_features(&self) -> i32 {
        self.weight.shape()[0]
    }

    pub fn in_features(&self) -> i32 {
        self.weight.shape()[1]
    }

    /// `x @ W^T + b` over the last axis. On a GPU a float32 layer with a bias over more than
    /// one row is one `addmm`, which MLX's CUDA backend runs as one cuBLASLt product with the
    /// bias added in its epilogue, where a product and an add are two kernels. A single row
    /// (a greedy decode step) keeps MLX's matrix-vector kernel and the add, since the epilogue
    /// would force cuBLASLt there (that variant was only timed together with a compiled GELU
    /// that was itself slower, so it is left out untested alone). `MLX_AUDIO_UNFUSED=addmm`
    /// (or `1`) keeps the two kernels.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        if let (Weight::Dense(w), Some(b)) = (&self.weight, &self.bias) {
            let rows = x.size() / x.shape().last().map_or(1, |&d| d.max(1) as usize);
            if rows > 1 && w.dtype() == Dtype::Float32 && x.dtype() == Dtype::Float32 && !crate::runtime::unfused(crate::runtime::Fusion::Addmm) && crate::runtime::on_gpu() {
                return Ok(mlx_rs::ops::addmm(b, x, w.t(), 1.0, 1.0)?);
            }
        }
        let y = self.weight.matmul_t(x)?;
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}
