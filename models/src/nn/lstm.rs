//! A unidirectional LSTM with PyTorch's weight layout and gate order (i, f, g, o), as used by
//! EnCodec's SEANet. The input projection of all time steps is one matmul; the recurrence runs
//! step by step, either as separate MLX ops or as one compiled step function.
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::IndexOp;
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
            return Err(Error::InvalidArgument(format!("LSTM weights do not fit together: w_ih {:?}, w_hh {:?}, b_ih {:?}, b_hh {:?}", w_ih.shape(), w_hh.shape(), b_ih.shape(), b_hh.shape())));
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

    /// Run over `x` of shape `[T, B, I]` from zero state; returns (`[T, B, H]`, h_T, c_T).
    pub fn forward(&self, x: &Array) -> Result<(Array, Array, Array)> {
        let (y, mut state) = forward_stack(std::slice::from_ref(self), x, None, Recurrence::Ops)?;
        let (h, c) = state.remove(0);
        Ok((y, h, c))
    }
}

/// Stacked layers over `x` (`[T, B, I]`) from `state` (one `(h, c)` per layer, zeros when
/// `None`); returns the last layer's outputs `[T, B, H]` and each layer's final state.
/// Streaming carries the state from one chunk to the next.
///
/// With [`Recurrence::Ops`] the layers run one after the other, a step at a time. With
/// [`Recurrence::Compiled`] they run as a wavefront: call `w` steps layer `l` at time `w - l`
/// (its input, layer `l - 1` at that time, came out of call `w - 1`), so `T + L - 1` calls of
/// one compiled function replace `L * T` steps; each layer's arithmetic is the same.
pub fn forward_stack(layers: &[LstmLayer], x: &Array, state: Option<&[(Array, Array)]>, rec: Recurrence) -> Result<(Array, Vec<(Array, Array)>)> {
    let s = x.shape();
    let first = layers.first().ok_or_else(|| Error::InvalidArgument("an LSTM with no layers".into()))?;
    if s.len() != 3 || s[2] != first.input_size() || s[0] < 1 {
        return Err(Error::InvalidArgument(format!("LSTM input {s:?}: expected [T >= 1, B, {}]", first.input_size())));
    }
    for (l, pair) in layers.windows(2).enumerate() {
        if pair[1].input_size() != pair[0].hidden_size() {
            return Err(Error::InvalidArgument(format!("LSTM layer {} takes {} inputs, layer {l} gives {}", l + 1, pair[1].input_size(), pair[0].hidden_size())));
        }
    }
    if let Some(st) = state {
        if st.len() != layers.len() {
            return Err(Error::InvalidArgument(format!("LSTM state for {} layers, the LSTM has {}", st.len(), layers.len())));
        }
    }
    let (t, b, n) = (s[0], s[1], layers.len());
    let (mut hs, mut cs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (l, layer) in layers.iter().enumerate() {
        let (h, c) = match state {
            Some(st) => st[l].clone(),
            None => (ops::zeros::<f32>(&[b, layer.hidden_size()])?, ops::zeros::<f32>(&[b, layer.hidden_size()])?),
        };
        hs.push(h);
        cs.push(c);
    }
    let rec = match rec {
        Recurrence::Fused if !layers.iter().all(|l| super::lstm_cuda::fits(l.hidden_size(), b)) => Recurrence::Compiled,
        Recurrence::Host if !super::host_lstm::available() => Recurrence::Ops,
        other => other,
    };
    let y = match rec {
        Recurrence::Fused => {
            let mut y = x.clone();
            for (l, layer) in layers.iter().enumerate() {
                let xg = y.matmul(&layer.w_ih_t)?.add(&layer.bias)?;
                let (seq, h, c) = super::lstm_cuda::layer(&xg, &layer.w_hh_t, &hs[l], &cs[l])?.ok_or_else(|| Error::Mlx(format!("fused LSTM: layer {l} did not fit one launch")))?;
                (y, hs[l], cs[l]) = (seq, h, c);
            }
            y
        }
        Recurrence::Host => {
            let mut y = x.clone();
            for (l, layer) in layers.iter().enumerate() {
                let xg = y.matmul(&layer.w_ih_t)?.add(&layer.bias)?;
                (y, hs[l], cs[l]) = super::host_lstm::layer(&xg, &layer.w_hh_t, &hs[l], &cs[l])?;
            }
            y
        }
        Recurrence::Ops => {
            let mut y = x.clone();
            for (l, layer) in layers.iter().enumerate() {
                let xg = y.matmul(&layer.w_ih_t)?.add(&layer.bias)?;
                let mut seq = Vec::with_capacity(t as usize);
                for i in 0..t {
                    (hs[l], cs[l]) = step(&xg.index(i), &hs[l], &cs[l], &layer.w_hh_t)?;
                    seq.push(hs[l].clone());
                }
                y = ops::stack(&seq, 0)?;
            }
            y
        }
        Recurrence::Compiled => {
            let mut outs = Vec::with_capacity(t as usize);
            let xg0 = x.matmul(&first.w_ih_t)?.add(&first.bias)?;
            // One compiled function per set of active layers (lo..=hi): the first and last
            // L - 1 calls have fewer; traced once each, then replayed.
            let mut fns: std::collections::HashMap<(usize, usize), WaveFn> = std::collections::HashMap::new();
            for w in 0..(t as usize + n - 1) {
                let (lo, hi) = (w.saturating_sub(t as usize - 1), w.min(n - 1));
                let mut args = Vec::with_capacity(6 * (hi - lo + 1));
                for l in lo..=hi {
                    let layer = &layers[l];
                    if l == 0 {
                        args.extend([xg0.index(w as i32), hs[0].clone(), cs[0].clone(), layer.w_hh_t.clone()]);
                    } else {
                        args.extend([hs[l - 1].clone(), hs[l].clone(), cs[l].clone(), layer.w_ih_t.clone(), layer.bias.clone(), layer.w_hh_t.clone()]);
                    }
                }
                let f = fns.entry((lo, hi)).or_insert_with(|| Box::new(mlx_rs::transforms::compile::compile(move |a: &[Array]| wave(lo, hi, a), false)));
                let new = crate::nn::host::while_tracing(|| f(&args))?;
                if new.len() != 2 * (hi - lo + 1) {
                    return Err(Error::InvalidArgument(format!("compiled LSTM call returned {} arrays for layers {lo}..={hi}", new.len())));
                }
                for (k, l) in (lo..=hi).enumerate() {
                    hs[l] = new[2 * k].clone();
                    cs[l] = new[2 * k + 1].clone();
                }
                if hi == n - 1 {
                    outs.push(hs[n - 1].clone());
                }
            }
            ops::stack(&outs, 0)?
        }
    };
    Ok((y, hs.into_iter().zip(cs).collect()))
}

/// A compiled [`wave`].
type WaveFn = Box<dyn for<'a> FnMut(&'a [Array]) -> std::result::Result<Vec<Array>, Exception>>;

/// One wavefront call over layers `lo..=hi`: its arguments are, per layer, `(xg, h, c, w_hh^T)`
/// for layer 0 (input gates precomputed) and `(x, h, c, w_ih^T, bias, w_hh^T)` for the others;
/// it returns `(h, c)` per layer.
fn wave(lo: usize, hi: usize, a: &[Array]) -> std::result::Result<Vec<Array>, Exception> {
    let mut out = Vec::with_capacity(2 * (hi - lo + 1));
    let mut i = 0;
    for l in lo..=hi {
        let (h, c) = if l == 0 {
            i += 4;
            step(&a[i - 4], &a[i - 3], &a[i - 2], &a[i - 1])?
        } else {
            i += 6;
            let xg = a[i - 6].matmul(&a[i - 3])?.add(&a[i - 2])?;
            step(&xg, &a[i - 5], &a[i - 4], &a[i - 1])?
        };
        out.push(h);
        out.push(c);
    }
    Ok(out)
}

/// How an LSTM runs its time steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// Each step records its dozen MLX primitives (matmul, add, four slices, five
    /// activations, products); on a GPU every one is a kernel launch.
    Ops,
    /// All layers advance together as a wavefront, one `mx.compile`d call per time step: the
    /// elementwise gate math fuses into one kernel per layer, the graph is traced once instead
    /// of rebuilt every step, and a 2-layer LSTM takes T + 1 calls instead of 2T steps.
    Compiled,
    /// Each layer's whole recurrence in one CUDA kernel ([`super::lstm_cuda`]): one launch per
    /// layer instead of one call per step. Where it cannot run (CPU, Metal, a layer too wide for
    /// the GPU's resident blocks) the stack runs as [`Recurrence::Compiled`].
    Fused,
    /// Each layer's recurrence on the host ([`super::host_lstm`]), for the CPU backend: one
    /// matrix-vector product and the vectorized gate math per step, no graph. Elsewhere (a GPU,
    /// no BLAS in the process) the stack runs as [`Recurrence::Ops`].
    Host,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(seed: u64, input: i32, hidden: i32) -> LstmLayer {
        let w = |k: u64, shape: &[i32]| mlx_rs::random::normal::<f32>(shape, None, None, &mlx_rs::random::key(seed * 10 + k).unwrap()).unwrap().multiply(mlx_rs::array!(0.4f32)).unwrap();
        LstmLayer::new(w(0, &[4 * hidden, input]), w(1, &[4 * hidden, hidden]), &w(2, &[4 * hidden]), &w(3, &[4 * hidden])).unwrap()
    }

    fn max_diff(a: &Array, b: &Array) -> f32 {
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>()
    }

    #[test]
    fn the_compiled_wavefront_equals_layer_after_layer() {
        for n in [1, 2, 3] {
            let layers: Vec<LstmLayer> = (0..n).map(|l| layer(l as u64 + 1, if l == 0 { 5 } else { 6 }, 6)).collect();
            for t in [1, 2, 7] {
                let x = mlx_rs::random::normal::<f32>(&[t, 2, 5], None, None, &mlx_rs::random::key(99).unwrap()).unwrap();
                let state: Vec<(Array, Array)> = (0..n).map(|l| (mlx_rs::ops::full::<f32>(&[2, 6], mlx_rs::array!(0.1 * l as f32)).unwrap(), mlx_rs::ops::ones::<f32>(&[2, 6]).unwrap())).collect();
                for st in [None, Some(&state[..])] {
                    let (ya, sa) = forward_stack(&layers, &x, st, Recurrence::Ops).unwrap();
                    assert_eq!(ya.shape(), [t, 2, 6]);
                    // The compiled wavefront, and the host recurrence (vectorized sigmoid and
                    // tanh, within a few 1e-7 of MLX's).
                    for (rec, tol) in [(Recurrence::Compiled, 1e-6), (Recurrence::Host, 2e-6)] {
                        let (yb, sb) = forward_stack(&layers, &x, st, rec).unwrap();
                        assert!(max_diff(&ya, &yb) < tol, "{rec:?}: {n} layers, T {t}");
                        for ((ha, ca), (hb, cb)) in sa.iter().zip(&sb) {
                            assert!(max_diff(ha, hb) < tol && max_diff(ca, cb) < tol, "{rec:?}: {n} layers, T {t}: final state");
                        }
                    }
                }
            }
        }
        let two = [layer(1, 5, 6), layer(2, 6, 6)];
        let bad = forward_stack(&two, &mlx_rs::ops::zeros::<f32>(&[3, 1, 4]).unwrap(), None, Recurrence::Compiled).unwrap_err().to_string();
        assert!(bad.contains("expected [T >= 1, B, 5]"), "{bad}");
        let bad = forward_stack(&[layer(1, 5, 6), layer(2, 5, 6)], &mlx_rs::ops::zeros::<f32>(&[3, 1, 5]).unwrap(), None, Recurrence::Ops).unwrap_err().to_string();
        assert!(bad.contains("layer 1 takes 5 inputs, layer 0 gives 6"), "{bad}");
    }
}
