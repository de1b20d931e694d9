//! Weight precision: float32, float16, or MLX's affine group quantization to 8 or 4 bits
//! (one float scale and bias per `group_size` weights along a row).
use std::fmt;
use std::str::FromStr;

use mlx_rs::{ops, Array};

use crate::error::{Error, Result};

/// How weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    /// `bits` (8 or 4) per weight, groups of `group_size` (32, 64 or 128) along each row.
    Int {
        bits: i32,
        group_size: i32,
    },
}

impl Precision {
    pub const DEFAULT_GROUP_SIZE: i32 = 64;

    /// Bytes a matrix stored at this precision takes per weight (quantized: the codes plus a
    /// float32 scale and bias per group).
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            Precision::F32 => 4.0,
            Precision::F16 => 2.0,
            Precision::Int { bits, group_size } => f64::from(bits) / 8.0 + 8.0 / f64::from(group_size.max(1)),
        }
    }

    pub fn int(bits: i32, group_size: i32) -> Result<Self> {
        if bits != 8 && bits != 4 {
            return Err(Error::InvalidArgument(format!("{bits}-bit quantization: only 8 and 4 are supported")));
        }
        if ![32, 64, 128].contains(&group_size) {
            return Err(Error::InvalidArgument(format!("quantization group size {group_size}: must be 32, 64 or 128")));
        }
        Ok(Precision::Int { bits, group_size })
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, Precision::Int { .. })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::F32 => write!(f, "fp32"),
            Precision::F16 => write!(f, "fp16"),
            Precision::Int { bits, group_size } => write!(f, "int{bits}/g{group_size}"),
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// `fp32`, `fp16`, `int8`, `int4`, or with a group size: `int4/g32`. Also `8` and `4`.
    fn from_str(s: &str) -> Result<Self> {
        let (head, group) = match s.split_once("/g") {
            Some((h, g)) => (h, g.parse::<i32>().map_err(|_| Error::InvalidArgument(format!("precision '{s}': the group size after /g must be a number")))?),
            None => (s, Self::DEFAULT_GROUP_SIZE),
        };
        match head {
            "fp32" | "f32" | "float32" => Ok(Precision::F32),
            "fp16" | "f16" | "float16" => Ok(Precision::F16),
            "int8" | "8" => Self::int(8, group),
            "int4" | "4" => Self::int(4, group),
            _ => Err(Error::InvalidArgument(format!("precision '{s}': expected fp32, fp16, int8 or int4 (optionally /g32, /g64, /g128)"))),
        }
    }
}

/// A quantized `[out, in]` matrix: packed `uint32` codes with per-group scales and biases.
#[derive(Clone)]
pub struct QuantWeight {
    pub packed: Array,
    pub scales: Array,
    pub biases: Array,
    pub bits: i32,
    pub group_size: i32,
    /// The logical `[out, in]`.
    pub shape: [i32; 2],
}

impl QuantWeight {
    pub fn quantize(w: &Array, precision: Precision) -> Result<Self> {
        let Precision::Int { bits, group_size } = precision else {
            return Err(Error::InvalidArgument(format!("{precision} is not a quantized precision")));
        };
        let s = w.shape();
        if s.len() != 2 || s[1] % group_size != 0 {
            return Err(Error::InvalidArgument(format!("cannot quantize a {s:?} matrix in groups of {group_size} along its rows")));
        }
        let (packed, scales, biases) = ops::quantize(w.as_dtype(mlx_rs::Dtype::Float32)?, group_size, bits)?;
        mlx_rs::transforms::eval([&packed, &scales, &biases])?;
        Ok(Self { packed, scales, biases, bits, group_size, shape: [s[0], s[1]] })
    }

    /// From stored parts; checks their shapes against `shape`.
    pub fn from_parts(packed: Array, scales: Array, biases: Array, bits: i32, group_size: i32, shape: [i32; 2], name: &str) -> Result<Self> {
        let [out, inn] = shape;
        let want = [[out, inn * bits / 32], [out, inn / group_size], [out, inn / group_size]];
        for ((part, a), w) in ["weight", "scales", "biases"].iter().zip([&packed, &scales, &biases]).zip(want) {
            if a.shape() != w {
                return Err(Error::Weights {
                    path: name.into(),
                    reason: format!("{name}.{part}: shape {:?}, expected {w:?} for a {bits}-bit [{out}, {inn}] matrix in groups of {group_size}", a.shape()),
                });
            }
        }
        Ok(Self { packed, scales, biases, bits, group_size, shape })
    }

    pub fn precision(&self) -> Precision {
        Precision::Int { bits: self.bits, group_size: self.group_size }
    }

    /// `x @ W^T`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array> {
        if crate::nn::host_quant::pays(self, x) {
            return crate::nn::host_quant::matmul_t(x, self);
        }
        Ok(ops::quantized_matmul(x, &self.packed, &self.scales, &self.biases, true, self.group_size, self.bits)?)
    }

    /// Rows `ids` (any shape), dequantized: `[...ids, in]`.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        let flat = ids.reshape(&[-1])?;
        let take = |a: &Array| a.take_axis(&flat, 0);
        let r = ops::dequantize(take(&self.packed)?, take(&self.scales)?, &take(&self.biases)?, self.group_size, self.bits)?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape[1]);
        Ok(r.reshape(&shape)?)
    }

    /// The float matrix it stands for.
    pub fn dequantize(&self) -> Result<Array> {
        Ok(ops::dequantize(&self.packed, &self.scales, &self.biases, self.group_size, self.bits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_parse_and_print() {
        assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int { bits: 8, group_size: 64 });
        assert_eq!("4".parse::<Precision>().unwrap(), Precision::Int { bits: 4, group_size: 64 });
        assert_eq!("int4/g32".parse::<Precision>().unwrap(), Precision::Int { bits: 4, group_size: 32 });
        assert_eq!(Precision::Int { bits: 4, group_size: 128 }.to_string(), "int4/g128");
        for bad in ["int3", "int4/g48", "int8/gx", "bf16"] {
            assert!(bad.parse::<Precision>().is_err(), "{bad}");
        }
    }

    #[test]
    fn quantized_products_track_the_float_ones() {
        let w = mlx_rs::random::normal::<f32>(&[96, 256], None, None, &mlx_rs::random::key(1).unwrap()).unwrap();
        let x = mlx_rs::random::normal::<f32>(&[3, 256], None, None, &mlx_rs::random::key(2).unwrap()).unwrap();
        let exact = x.matmul(w.t()).unwrap();
        let scale = exact.abs().unwrap().max(None).unwrap().item_cast::<f32>();
        let mut errs = Vec::new();
        for p in ["int8/g64", "int4/g64", "int4/g32"] {
            let q = QuantWeight::quantize(&w, p.parse().unwrap()).unwrap();
            let err = q.matmul_t(&x).unwrap().subtract(&exact).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>() / scale;
            // Rows agree with the product of the dequantized matrix.
            let rows = q.rows(&Array::from_slice(&[5i32, 0], &[2])).unwrap();
            let deq = q.dequantize().unwrap();
            let want = deq.take_axis(Array::from_slice(&[5i32, 0], &[2]), 0).unwrap();
            assert_eq!(rows.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>(), 0.0);
            errs.push(err);
        }
        // 8 bits: well under 1% of the output range; 4 bits coarser; smaller groups finer.
        assert!(errs[0] < 0.01, "{errs:?}");
        assert!(errs[1] < 0.15 && errs[1] > errs[0], "{errs:?}");
        assert!(errs[2] < errs[1], "{errs:?}");
        let odd = mlx_rs::ops::zeros::<f32>(&[4, 96]).unwrap();
        let e = QuantWeight::quantize(&odd, Precision::int(4, 64).unwrap()).err().unwrap().to_string();
        assert!(e.contains("groups of 64"), "{e}");
    }
}
