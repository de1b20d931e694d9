//! Normalisations over channels-last activations.
use mlx_rs::Array;

use crate::error::{Error, Result};

/// `torch.nn.GroupNorm` on channels-last `x` of shape `[N, ..., C]`: statistics per sample and
/// per group of `C / groups` channels, over all positions; then the per-channel affine.
pub fn group_norm(x: &Array, groups: i32, weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    let shape = x.shape().to_vec();
    let c = *shape.last().ok_or_else(|| Error::InvalidArgument("group_norm on a 0-d array".into()))?;
    if groups < 1 || c % groups != 0 {
        return Err(Error::InvalidArgument(format!("group_norm: {c} channels do not split into {groups} groups")));
    }
    let n = shape[0];
    if groups == 1 && x.dtype() == mlx_rs::Dtype::Float32 && crate::nn::host::pays(x.size()) {
        // Large single-group norms on the CPU backend: one host pass per statistic.
        let rest = shape[1..shape.len() - 1].iter().map(|&d| d as usize).product::<usize>();
        return crate::nn::host::group_norm_bafc(x, [n as usize, rest, 1, c as usize], weight, bias, eps);
    }
    let xg = x.reshape(&[n, -1, groups, c / groups])?;
    let mut y = crate::nn::ops::standardize(&xg, &[1, 3], eps)?.reshape(&shape)?;
    if let Some(w) = weight {
        y = y.multiply(w)?;
    }
    if let Some(b) = bias {
        y = y.add(b)?;
    }
    Ok(y)
}

/// Layer norm over the last axis (MLX's fused kernel).
pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    Ok(mlx_rs::fast::layer_norm(x, weight, bias, eps)?)
}

/// A `torch.nn.LayerNorm` with its affine weights (PyTorch's eps, 1e-5).
#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Array,
    pub bias: Array,
}

impl LayerNorm {
    /// `weight` and `bias` of `d` channels under `vs`.
    pub fn load(vs: &crate::checkpoint::Vars, d: i32) -> Result<Self> {
        Ok(Self { weight: vs.tensor("weight", &[d])?, bias: vs.tensor("bias", &[d])? })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        layer_norm(x, Some(&self.weight), Some(&self.bias), 1e-5)
    }
}
