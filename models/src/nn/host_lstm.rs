//! One LSTM layer's recurrence on the host, for the CPU backend: per step a single product of
//! the state with `W_hh^T` accumulated onto the precomputed input gates (a matrix-vector product
//! for one sequence: the process's `cblas_sgemm`, which the GEMV shim hands to `sgemv`), then
//! the gate math over the `4 H` values in vectorized lanes.
//!
//! As MLX ops a step records about a dozen primitives (the product, an add, four slices, five
//! activations, the products of the cell update), each evaluated with the graph's overhead and
//! MLX's one-element-at-a-time `exp`: EnCodec 24 kHz's 2 x 512 LSTM over 375 frames took about
//! 210 ms on this project's 2-core box, a third of the encoder.
use std::ffi::c_int;

use mlx_rs::Array;

use crate::error::{Error, Result};
use crate::nn::host_blas::{blas, f32_data, host_operands, NO_TRANS, ROW_MAJOR};

/// Whether [`layer`] can run: the CPU backend with a BLAS in the process.
pub fn available() -> bool {
    blas().is_some() && crate::nn::host::on_host_backend()
}

/// The recurrence of one layer over precomputed input gates `xg` `[T, B, 4H]` (`x W_ih^T +
/// b_ih + b_hh`, PyTorch's gate order i, f, g, o), from the state `h0`, `c0` `[B, H]`, with
/// `w_hh_t` `[H, 4H]`. Returns the outputs `[T, B, H]` and the final `h`, `c`, as float32.
pub fn layer(xg: &Array, w_hh_t: &Array, h0: &Array, c0: &Array) -> Result<(Array, Array, Array)> {
    let s = xg.shape().to_vec();
    let ws = w_hh_t.shape().to_vec();
    let bad = |why: &str| Error::InvalidArgument(format!("host LSTM over gates {s:?} with W_hh^T {ws:?}, state {:?} / {:?}: {why}", h0.shape(), c0.shape()));
    if s.len() != 3 || ws.len() != 2 || s.iter().any(|&d| d < 1) || ws[1] != s[2] || ws[1] != 4 * ws[0] {
        return Err(bad("shapes do not fit together"));
    }
    let (t, b, hh) = (s[0] as usize, s[1] as usize, ws[0] as usize);
    if h0.shape() != [b as i32, hh as i32] || c0.shape() != [b as i32, hh as i32] {
        return Err(bad("the state is not [B, H]"));
    }
    let sgemm = blas().ok_or_else(|| Error::Mlx("host LSTM: no cblas_sgemm in the process".into()))?.sgemm;
    let arrays = host_operands([xg, w_hh_t, h0, c0])?;
    let what = "host LSTM";
    let (xd, wd) = (f32_data(&arrays[0], what)?, f32_data(&arrays[1], what)?);
    let mut h = f32_data(&arrays[2], what)?.to_vec();
    let mut c = f32_data(&arrays[3], what)?.to_vec();
    let g4 = 4 * hh;
    let mut out = Vec::with_capacity(t * b * hh);
    let mut gates = vec![0f32; b * g4];
    for step in 0..t {
        gates.copy_from_slice(&xd[step * b * g4..(step + 1) * b * g4]);
        // SAFETY: h is B x H, W_hh^T is H x 4H, gates is B x 4H, all row-major.
        unsafe {
            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, b as c_int, g4 as c_int, hh as c_int, 1.0, h.as_ptr(), hh as c_int, wd.as_ptr(), g4 as c_int, 1.0, gates.as_mut_ptr(), g4 as c_int);
        }
        cell(&gates, &mut h, &mut c, hh);
        out.extend_from_slice(&h);
    }
    let (ti, bi, hi) = (t as i32, b as i32, hh as i32);
    Ok((crate::nn::host::array_from_vec(out, &[ti, bi, hi])?, crate::nn::host::array_from_vec(h, &[bi, hi])?, crate::nn::host::array_from_vec(c, &[bi, hi])?))
}

fn cell(gates: &[f32], h: &mut [f32], c: &mut [f32], hh: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::nn::host::has_avx2() {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { cell_avx2(gates, h, c, hh) };
    }
    cell_generic(gates, h, c, hh)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cell_avx2(gates: &[f32], h: &mut [f32], c: &mut [f32], hh: usize) {
    cell_generic(gates, h, c, hh)
}

/// `tanh(x) = 2 sigmoid(2 x) - 1` (absolute error about 1e-7).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 * crate::nn::host::sigmoid_scalar(2.0 * x) - 1.0
}

/// The cell update of every sequence: `c = f c + i g`, `h = o tanh(c)`.
#[inline(always)]
fn cell_generic(gates: &[f32], h: &mut [f32], c: &mut [f32], hh: usize) {
    let sig = crate::nn::host::sigmoid_scalar;
    for ((g, hr), cr) in gates.chunks_exact(4 * hh).zip(h.chunks_exact_mut(hh)).zip(c.chunks_exact_mut(hh)) {
        let (gi, rest) = g.split_at(hh);
        let (gf, rest) = rest.split_at(hh);
        let (gg, go) = rest.split_at(hh);
        for j in 0..hh {
            let cj = sig(gf[j]) * cr[j] + sig(gi[j]) * tanh(gg[j]);
            cr[j] = cj;
            hr[j] = sig(go[j]) * tanh(cj);
        }
    }
}
