//! A linear layer holding PyTorch-layout weights (`[out, in]`).
use mlx_rs::Array;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Linear {
    /// `[out, in]`
    pub weight: Array,
    /// `[out]`
    pub bias: Option<Array>,
}

impl Linear {
    pub fn new(weight: Array, bias: Option<Array>) -> Result<Self> {
        let s = weight.shape();
        if s.len() != 2 || bias.as_ref().is_some_and(|b| b.shape() != [s[0]]) {
            return Err(Error::InvalidArgument(format!(
                "linear weight {s:?} / bias {:?}: expected [out, in] and [out]",
                bias.as_ref().map(|b| b.shape().to_vec())
            )));
        }
        Ok(Self { weight, bias })
    }

    pub fn out_features(&self) -> i32 {
        self.weight.shape()[0]
    }

    pub fn in_features(&self) -> i32 {
        self.weight.shape()[1]
    }

    /// `x @ W^T + b` over the last axis.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = x.matmul(self.weight.t())?;
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}
