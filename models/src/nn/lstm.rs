//! A unidirectional LSTM with PyTorch's weight layout and gate order (i, f, g, o), as used by
//! EnCodec's SEANet. The input projection of all time steps is one matmul; the recurrence runs
//! step by step, either as separate MLX ops or as one compiled step function.
use mlx_rs::error::Exception;
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};

/// One layer, built from the weights `torch.nn.LSTM` saves (`weight_ih_l{k}`, ...). Only the
/// transposed weights are kept, contiguous: the recurrence multiplies by `w_hh^T` every step,
/// and a transposed view would be copied each time.
pub struct LstmLayer {
    /// `w_ih^T`, `[I, 4H]`
    w_ih_t: Array,
    /// `w_hh^T`, `[H, 4H]`
    w_hh_t: Array,
    /// `b_ih + b_hh`, `[4H]`
    bias: Array,
}

impl LstmLayer {
    pub fn new(w_ih: Array, w_hh: Array, b_ih: &Array, b_hh: &Array) -> Result<Self> {
        let (g4, h) = (w_hh.shape()[0], w_hh.shape()[1]);
        if g4 != 4 * h || w_ih.shape()[0] != g4 || b_ih.shape() != [g4] || b_hh.shape() != [g4] {
            return Err(Error::InvalidArgument(format!(
                "LSTM weights do not fit together: w_ih {:?}, w_hh {:?}, b_ih {:?}, b_hh {:?}",
                w_ih.shape(),
                w_hh.shape(),
                b_ih.shape(),
                b_hh.shape()
            )));
        }
        let w_ih_t = w_ih.t().contiguous()?;
        let w_hh_t = w_hh.t().contiguous()?;
        mlx_rs::transforms::eval([&w_ih_t, &w_hh_t])?;
        Ok(Self { w_ih_t, w_hh_t, bias: b_ih.add(b_hh)? })
    }

    pub fn hidden_size(&self) -> i32 {
        self.w_hh_t.shape()[0]
    }

    pub fn input_size(&self) -> i32 {
        self.w_ih_t.shape()[0]
    }

    /// The arrays the layer computes with (to evaluate them once after loading).
    pub fn arrays(&self) -> [&Array; 3] {
        [&self.w_ih_t, &self.w_hh_t, &self.bias]
    }

    /// One step of the gate math from precomputed input gates `xg = x W_ih^T + b` (`[B, 4H]`).
    pub fn cell(&self, xg: &Array, h: &Array, c: &Array) -> Result<(Array, Array)> {
        Ok(step(xg, h, c, &self.w_hh_t)?)
    }

    /// Run over `x` of shape `[T, B, I]` from zero state; returns (`[T, B, H]`, h_T, c_T).
    pub fn forward(&self, x: &Array) -> Result<(Array, Array, Array)> {
        self.forward_from(x, None, Recurrence::Ops)
    }

    /// Run over `x` of shape `[T, B, I]` from state `(h, c)` (zeros when `None`); returns
    /// (`[T, B, H]`, h_T, c_T). Streaming carries the state from one chunk to the next.
    pub fn forward_from(&self, x: &Array, state: Option<(&Array, &Array)>, rec: Recurrence) -> Result<(Array, Array, Array)> {
        let s = x.shape();
        if s.len() != 3 || s[2] != self.input_size() {
            return Err(Error::InvalidArgument(format!("LSTM input {s:?}: expected [T, B, {}]", self.input_size())));
        }
        let (t, b, hsz) = (s[0], s[1], self.hidden_size());
        let xg = x.matmul(&self.w_ih_t)?.add(&self.bias)?;
        let (mut h, mut c) = match state {
            Some((h, c)) => (h.clone(), c.clone()),
            None => (ops::zeros::<f32>(&[b, hsz])?, ops::zeros::<f32>(&[b, hsz])?),
        };
        let mut outs = Vec::with_capacity(t as usize);
        match rec {
            Recurrence::Ops => {
                for i in 0..t {
                    (h, c) = step(&xg.index(i), &h, &c, &self.w_hh_t)?;
                    outs.push(h.clone());
                }
            }
            Recurrence::Compiled => {
                // Traced once per input shape; each call then replays one matmul and one fused
                // elementwise kernel instead of the dozen primitives `step` records.
                let mut f = mlx_rs::transforms::compile::compile(
                    |a: &[Array]| -> std::result::Result<Vec<Array>, Exception> {
                        let (h, c) = step(&a[0], &a[1], &a[2], &a[3])?;
                        Ok(vec![h, c])
                    },
                    false,
                );
                for i in 0..t {
                    let out = f(&[xg.index(i), h, c, self.w_hh_t.clone()])?;
                    let [hn, cn]: [Array; 2] = out.try_into().map_err(|v: Vec<Array>| {
                        Error::InvalidArgument(format!("compiled LSTM step returned {} arrays, expected 2", v.len()))
                    })?;
                    (h, c) = (hn, cn);
                    outs.push(h.clone());
                }
            }
        }
        Ok((ops::stack(&outs, 0)?, h, c))
    }
}

/// How an LSTM runs its time steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// Each step records its dozen MLX primitives (matmul, add, four slices, five
    /// activations, products); on a GPU every one is a kernel launch.
    Ops,
    /// Each step calls one `mx.compile`d function: the elementwise gate math fuses into one
    /// kernel, and the graph is traced once instead of being rebuilt every step.
    Compiled,
}

/// The gate math of one step, PyTorch's gate order (i, f, g, o).
fn step(xg: &Array, h: &Array, c: &Array, w_hh_t: &Array) -> std::result::Result<(Array, Array), Exception> {
    let gates = xg.add(h.matmul(w_hh_t)?)?;
    let parts = gates.split_equal(4, -1)?;
    let i = ops::sigmoid(&parts[0])?;
    let f = ops::sigmoid(&parts[1])?;
    let g = ops::tanh(&parts[2])?;
    let o = ops::sigmoid(&parts[3])?;
    let c = f.multiply(c)?.add(i.multiply(g)?)?;
    let h = o.multiply(ops::tanh(&c)?)?;
    Ok((h, c))
}

use mlx_rs::ops::indexing::IndexOp;
