//! Multi-head attention on the host for long sequences on the CPU backend, in blocks of queries,
//! with the products done by the process's BLAS (`cblas_sgemm`).
//!
//! On the CPU backend MLX's fused attention is the composed ops: the whole `[B, H, L_q, L_k]`
//! score matrix is written, scaled in another pass, soft-maxed, and the heads are copied out of
//! and back into `[B, L, H * D]` around the products. At HTDemucs' 2688 frequency tokens that is
//! 231 MB of scores per layer, at Whisper's 1500 encoder frames 180 MB, all through memory
//! rather than cache. Here each task is one (batch, head, block of queries): the block's scores
//! (`block x L_k`, sized to stay in cache) come from one product that reads the head's columns
//! of Q and K in place (leading dimension `H * D`), are soft-maxed in place by the host softmax,
//! and multiply V's head columns straight into the head's columns of the output. Nothing but
//! the output is allocated; the tasks are spread over threads, BLAS running one thread each.
use std::ffi::c_int;

use mlx_rs::Array;

use crate::error::{Error, Result};

use crate::nn::host_blas::{blas, f32_data, Sgemm, NO_TRANS, ROW_MAJOR, TRANS};

/// Whether the host kernel is available and worth it for one head's `l_q x l_k` scores: float32
/// on the CPU backend, a BLAS in the process, and scores large enough (at least 128 keys and
/// the host kernels' size threshold over all heads; any size when that threshold is 0).
pub fn pays(batch_heads: usize, l_q: usize, l_k: usize) -> bool {
    (l_k >= 128 || crate::nn::host::min_elements() == 0) && crate::nn::host::pays(batch_heads * l_q * l_k) && blas().is_some()
}

/// Query rows per task: the block's scores stay near 2 MiB (on this project's 2-core EPYC, 48
/// to 512 rows at 2688 keys were within 15% of each other, 192-256 the fastest).
fn block_rows(l_k: usize) -> usize {
    ((524_288 / l_k.max(1)) / 16 * 16).clamp(16, 256)
}

/// `softmax(scale * Q_h K_h^T + mask) V_h` for every head `h` of `q` (`[B, L_q, H * D]`), `k`
/// and `v` (`[B, L_k, H * D]`), the heads being consecutive column blocks of width `D`. With
/// `causal`, query `i` sees keys up to `i + L_k - L_q` (the queries are the last `L_q` of the
/// `L_k` positions). Returns `[B, L_q, H * D]`, float32, evaluated on the host.
pub fn attention(q: &Array, k: &Array, v: &Array, n_head: usize, scale: f32, causal: bool) -> Result<Array> {
    let (qs, ks) = (q.shape().to_vec(), k.shape().to_vec());
    let bad = || Error::InvalidArgument(format!("host attention: q {:?}, k {:?}, v {:?} with {n_head} heads{}", q.shape(), k.shape(), v.shape(), if causal { ", causal" } else { "" }));
    if qs.len() != 3 || ks.len() != 3 || v.shape() != ks.as_slice() || qs[0] != ks[0] || qs[2] != ks[2] || n_head == 0 || !(qs[2] as usize).is_multiple_of(n_head) || (causal && qs[1] > ks[1]) {
        return Err(bad());
    }
    let sgemm: Sgemm = blas().ok_or_else(|| Error::Mlx("host attention: no cblas_sgemm in the process".into()))?.sgemm;
    let (b, lq, lk, c) = (qs[0] as usize, qs[1] as usize, ks[1] as usize, qs[2] as usize);
    let d = c / n_head;
    let [q, k, v] = crate::nn::host_blas::host_operands([q, k, v])?;
    let what = "host attention";
    let (qd, kd, vd) = (f32_data(&q, what)?, f32_data(&k, what)?, f32_data(&v, what)?);
    let mut out = vec![0f32; b * lq * c];
    if out.is_empty() || lk == 0 {
        return crate::nn::host::array_from_vec(out, &qs);
    }
    let rows = block_rows(lk);
    let blocks = lq.div_ceil(rows);
    let tasks = b * n_head * blocks;
    let workers = crate::nn::host::threads().min(tasks).max(1);
    // The output rows of one task are `rows` rows of the head's `d` columns: tasks write
    // disjoint elements of `out`, which the workers share through a raw pointer.
    let out_ptr = crate::nn::host_blas::SendPtr(out.as_mut_ptr());
    let task = |t: usize, scores: &mut [f32]| {
        let (bh, blk) = (t / blocks, t % blocks);
        let (bi, h) = (bh / n_head, bh % n_head);
        let r0 = blk * rows;
        let m = rows.min(lq - r0);
        let s = &mut scores[..m * lk];
        let qp = qd[bi * lq * c + r0 * c + h * d..].as_ptr();
        let kp = kd[bi * lk * c + h * d..].as_ptr();
        let vp = vd[bi * lk * c + h * d..].as_ptr();
        // SAFETY: every pointer addresses `m` (or `lk`) rows of `d` columns at row stride `c`
        // inside its buffer (the offsets above stay within `b * l * c`); `s` holds `m * lk`.
        // The output block is this task's alone.
        unsafe {
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, m as c_int, lk as c_int, d as c_int, scale, qp, c as c_int, kp, c as c_int, 0.0, s.as_mut_ptr(), lk as c_int);
        }
        if causal {
            let off = lk - lq;
            for (i, row) in s.chunks_exact_mut(lk).enumerate() {
                let last = r0 + i + off;
                row.iter_mut().skip(last + 1).for_each(|x| *x = f32::NEG_INFINITY);
            }
        }
        crate::nn::host::softmax_rows_in_place(s, lk);
        // SAFETY: as above; the output block starts at row `r0` of batch `bi`, column `h * d`.
        unsafe {
            let op = out_ptr.get().add(bi * lq * c + r0 * c + h * d);
            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m as c_int, d as c_int, lk as c_int, 1.0, s.as_ptr(), lk as c_int, vp, c as c_int, 0.0, op, c as c_int);
        }
    };
    crate::nn::host_blas::spread_tasks(workers, tasks, rows * lk, task);
    crate::nn::host::array_from_vec(out, &qs)
}

/// Whether the host window attention is available and worth it for `scores` elements (every
/// window's and head's `N x N`): float32 on the CPU backend with a BLAS in the process, and
/// the host kernels' size threshold.
pub fn window_pays(scores: usize) -> bool {
    crate::nn::host::pays(scores) && blas().is_some()
}

/// The geometry of Swin's shifted-window attention over a `[B, H, W, C]` grid: `ws x ws`
/// windows after rolling the grid by `-shift` along both axes (`torch.roll(x, (-s, -s))`),
/// `n_head` heads of `C / n_head` columns.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub n_head: usize,
    pub ws: usize,
    pub shift: usize,
}

/// Swin's windowed self-attention read straight from the grid and written back to it: `q`,
/// `k`, `v` `[B, H, W, C]` (every grid token's projections), `mask` `[M, n_head, N, N]`
/// (`N = ws^2`; the relative-position bias, plus the cross-region mask when shifted) added to
/// the scaled scores of window `w` (row-major over the `H / ws x W / ws` windows) as
/// `mask[w % M]`. Returns `[B, H, W, C]`: each token's attention output at its own grid
/// position, which is what partitioning, rolling, attending and undoing both gives.
///
/// The composed form partitions the grid (a transposed copy), tiles the mask per batch item,
/// writes every window's scores, scales and masks them in separate passes, and copies the heads
/// out and back. Here one task is one window of one batch item: its tokens' rows gathered
/// (the roll is index arithmetic), per head one product for the scores, the mask added and
/// the rows soft-maxed in cache, one product into the head's columns, the rows scattered back.
pub fn window_attention(q: &Array, k: &Array, v: &Array, mask: &Array, geo: Windows, scale: f32) -> Result<Array> {
    let qs = q.shape().to_vec();
    let Windows { n_head, ws, shift } = geo;
    let n = ws * ws;
    let ms = mask.shape().to_vec();
    let bad = || Error::InvalidArgument(format!("host window attention: q {:?}, k {:?}, v {:?}, mask {:?} with {geo:?}", q.shape(), k.shape(), v.shape(), mask.shape()));
    if qs.len() != 4 || k.shape() != qs.as_slice() || v.shape() != qs.as_slice() || n_head == 0 || ws == 0 || qs.iter().any(|&d| d <= 0) {
        return Err(bad());
    }
    let (b, h, w, c) = (qs[0] as usize, qs[1] as usize, qs[2] as usize, qs[3] as usize);
    if !c.is_multiple_of(n_head) || !h.is_multiple_of(ws) || !w.is_multiple_of(ws) || shift >= ws {
        return Err(bad());
    }
    let (nwy, nwx) = (h / ws, w / ws);
    let windows = nwy * nwx;
    if ms.len() != 4 || ms[0] <= 0 || !windows.is_multiple_of(ms[0] as usize) || ms[1] as usize != n_head || ms[2] as usize != n || ms[3] as usize != n {
        return Err(bad());
    }
    let m_count = ms[0] as usize;
    let sgemm: Sgemm = blas().ok_or_else(|| Error::Mlx("host window attention: no cblas_sgemm in the process".into()))?.sgemm;
    let d = c / n_head;
    let [q, k, v, mask] = crate::nn::host_blas::host_operands([q, k, v, mask])?;
    let what = "host window attention";
    let (qd, kd, vd, md) = (f32_data(&q, what)?, f32_data(&k, what)?, f32_data(&v, what)?, f32_data(&mask, what)?);
    let mut out = vec![0f32; b * h * w * c];
    let tasks = b * windows;
    let workers = crate::nn::host::threads().min(tasks).max(1);
    let out_ptr = crate::nn::host_blas::SendPtr(out.as_mut_ptr());
    // Per worker: the window's gathered q, k, v rows, its output rows, one head's scores.
    let task = |t: usize, buf: &mut [f32]| {
        let (bi, win) = (t / windows, t % windows);
        let (wy, wx) = (win / nwx, win % nwx);
        let (g, rest) = buf.split_at_mut(3 * n * c);
        let (o, scores) = rest.split_at_mut(n * c);
        let token = |r: usize| -> usize {
            let (gy, gx) = ((wy * ws + r / ws + shift) % h, (wx * ws + r % ws + shift) % w);
            (bi * h + gy) * w + gx
        };
        for r in 0..n {
            let src = token(r) * c;
            g[r * 3 * c..r * 3 * c + c].copy_from_slice(&qd[src..src + c]);
            g[r * 3 * c + c..r * 3 * c + 2 * c].copy_from_slice(&kd[src..src + c]);
            g[r * 3 * c + 2 * c..(r + 1) * 3 * c].copy_from_slice(&vd[src..src + c]);
        }
        let ld = (3 * c) as c_int;
        for head in 0..n_head {
            let col = head * d;
            // SAFETY: `g` holds `n` rows of `3 c` columns; the head's q, k and v columns start
            // at `col`, `c + col` and `2 c + col` and run `d` wide; `scores` holds `n * n`, and
            // `o` `n` rows of `c` with the head's columns at `col`.
            unsafe {
                sgemm(ROW_MAJOR, NO_TRANS, TRANS, n as c_int, n as c_int, d as c_int, scale, g[col..].as_ptr(), ld, g[c + col..].as_ptr(), ld, 0.0, scores.as_mut_ptr(), n as c_int);
            }
            let m = &md[((win % m_count) * n_head + head) * n * n..][..n * n];
            scores.iter_mut().zip(m).for_each(|(s, a)| *s += a);
            crate::nn::host::softmax_rows_in_place(scores, n);
            // SAFETY: as above.
            unsafe {
                sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n as c_int, d as c_int, n as c_int, 1.0, scores.as_ptr(), n as c_int, g[2 * c + col..].as_ptr(), ld, 0.0, o[col..].as_mut_ptr(), c as c_int);
            }
        }
        for r in 0..n {
            // SAFETY: the window's tokens are distinct grid positions (the roll is a
            // permutation), and each task covers its own window, so the rows written are this
            // task's alone; `token(r) * c + c` stays within `b * h * w * c`.
            unsafe { std::ptr::copy_nonoverlapping(o[r * c..].as_ptr(), out_ptr.get().add(token(r) * c), c) };
        }
    };
    crate::nn::host_blas::spread_tasks(workers, tasks, 4 * n * c + n * n, task);
    crate::nn::host::array_from_vec(out, &qs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(q: &Array, k: &Array, v: &Array, h: i32, scale: f32, causal: bool) -> Array {
        let split = |a: &Array| {
            let s = a.shape();
            a.reshape(&[s[0], s[1], h, s[2] / h]).unwrap().transpose_axes(&[0, 2, 1, 3]).unwrap()
        };
        let (qh, kh, vh) = (split(q), split(k), split(v));
        let mut s = qh.matmul(kh.transpose_axes(&[0, 1, 3, 2]).unwrap()).unwrap().multiply(mlx_rs::array!(scale)).unwrap();
        if causal {
            let (lq, lk) = (q.shape()[1], k.shape()[1]);
            s = s.add(crate::nn::attention::causal_mask(lq, lk).unwrap()).unwrap();
        }
        let o = mlx_rs::ops::softmax_axis(&s, -1, true).unwrap().matmul(&vh).unwrap();
        let sh = o.shape().to_vec();
        o.transpose_axes(&[0, 2, 1, 3]).unwrap().reshape(&[sh[0], sh[2], sh[1] * sh[3]]).unwrap()
    }

    #[test]
    fn matches_the_explicit_composition() {
        if blas().is_none() {
            eprintln!("no cblas_sgemm in this process: nothing to compare");
            return;
        }
        let key = |i| mlx_rs::random::key(i).unwrap();
        // Several shapes: ragged last block, one head, causal with fewer queries than keys.
        for (i, &(b, lq, lk, c, h, causal)) in [(1, 300, 300, 64, 4, false), (2, 37, 513, 48, 3, false), (1, 200, 200, 32, 1, true), (2, 130, 260, 64, 2, true)].iter().enumerate() {
            let q = mlx_rs::random::normal::<f32>(&[b, lq, c], None, None, &key(3 * i as u64)).unwrap();
            let k = mlx_rs::random::normal::<f32>(&[b, lk, c], None, None, &key(3 * i as u64 + 1)).unwrap();
            let v = mlx_rs::random::normal::<f32>(&[b, lk, c], None, None, &key(3 * i as u64 + 2)).unwrap();
            let scale = ((c / h) as f32).powf(-0.5);
            let got = attention(&q, &k, &v, h as usize, scale, causal).unwrap();
            let want = explicit(&q, &k, &v, h, scale, causal);
            assert_eq!(got.shape(), want.shape());
            let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
            assert!(err < 2e-6, "case {i}: max abs diff {err}");
        }
    }

    /// Swin's composition: roll by `-shift`, partition into windows, attend per window with
    /// `mask[w % M]`, merge, roll back.
    fn windows_explicit(q: &Array, k: &Array, v: &Array, mask: &Array, geo: Windows, scale: f32) -> Array {
        use mlx_rs::ops::indexing::IndexOp;
        let s = q.shape().to_vec();
        let (b, h, w, c) = (s[0], s[1], s[2], s[3]);
        let (ws, sh) = (geo.ws as i32, geo.shift as i32);
        let roll = |a: &Array, by: i32| -> Array {
            let y = mlx_rs::ops::concatenate(&[a.index((.., by.rem_euclid(h).., .., ..)), a.index((.., ..by.rem_euclid(h), .., ..))], 1).unwrap();
            mlx_rs::ops::concatenate(&[y.index((.., .., by.rem_euclid(w).., ..)), y.index((.., .., ..by.rem_euclid(w), ..))], 2).unwrap()
        };
        let part = |a: &Array| roll(a, sh).reshape(&[b, h / ws, ws, w / ws, ws, c]).unwrap().transpose_axes(&[0, 1, 3, 2, 4, 5]).unwrap().reshape(&[-1, ws * ws, c]).unwrap();
        let windows = (h / ws) * (w / ws);
        let reps = windows / mask.shape()[0];
        let m = mlx_rs::ops::tile(mask, &[b * reps, 1, 1, 1]).unwrap();
        let hd = geo.n_head as i32;
        let split = |a: &Array| a.reshape(&[-1, ws * ws, hd, c / hd]).unwrap().transpose_axes(&[0, 2, 1, 3]).unwrap();
        let (qh, kh, vh) = (split(&part(q)), split(&part(k)), split(&part(v)));
        let sc = qh.matmul(kh.transpose_axes(&[0, 1, 3, 2]).unwrap()).unwrap().multiply(mlx_rs::array!(scale)).unwrap().add(&m).unwrap();
        let o = mlx_rs::ops::softmax_axis(&sc, -1, true).unwrap().matmul(&vh).unwrap().transpose_axes(&[0, 2, 1, 3]).unwrap();
        let o = o.reshape(&[b, h / ws, w / ws, ws, ws, c]).unwrap().transpose_axes(&[0, 1, 3, 2, 4, 5]).unwrap().reshape(&[b, h, w, c]).unwrap();
        roll(&o, -sh)
    }

    #[test]
    fn window_attention_matches_swin_composition() {
        if blas().is_none() {
            eprintln!("no cblas_sgemm in this process: nothing to compare");
            return;
        }
        let key = |i| mlx_rs::random::key(i).unwrap();
        // (batch, grid h, grid w, channels, heads, window, shift, mask windows): unshifted with
        // one bias for all windows, shifted with a mask per window, a non-square grid.
        for (i, &(b, h, w, c, hd, ws, shift, mw)) in [(2, 8, 8, 12, 3, 4, 0, 1), (2, 8, 12, 12, 3, 4, 2, 6), (1, 6, 9, 8, 2, 3, 1, 6), (3, 4, 4, 4, 1, 4, 0, 1)].iter().enumerate() {
            let n = ws * ws;
            let r = |j: u64, shape: &[i32]| mlx_rs::random::normal::<f32>(shape, None, None, &key(10 * i as u64 + j)).unwrap();
            let (q, k, v) = (r(0, &[b, h, w, c]), r(1, &[b, h, w, c]), r(2, &[b, h, w, c]));
            let mask = r(3, &[mw, hd, n, n]).multiply(mlx_rs::array!(3.0f32)).unwrap();
            let geo = Windows { n_head: hd as usize, ws: ws as usize, shift: shift as usize };
            let scale = ((c / hd) as f32).powf(-0.5);
            let got = window_attention(&q, &k, &v, &mask, geo, scale).unwrap();
            let want = windows_explicit(&q, &k, &v, &mask, geo, scale);
            assert_eq!(got.shape(), want.shape());
            let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
            assert!(err < 2e-6, "case {i}: max abs diff {err}");
        }
    }

    #[test]
    fn window_attention_rejects_bad_geometry() {
        let g = mlx_rs::Array::zeros::<f32>(&[1, 8, 8, 12]).unwrap();
        let m = mlx_rs::Array::zeros::<f32>(&[1, 3, 16, 16]).unwrap();
        let geo = Windows { n_head: 3, ws: 4, shift: 0 };
        assert!(window_attention(&g, &g, &g, &m, geo, 1.0).is_ok() || blas().is_none());
        // Heads that do not divide the channels, a grid not of whole windows, a shift of a
        // whole window, a mask for another window size or with a window count not dividing
        // the grid's.
        assert!(window_attention(&g, &g, &g, &m, Windows { n_head: 5, ..geo }, 1.0).is_err());
        assert!(window_attention(&g, &g, &g, &m, Windows { ws: 3, ..geo }, 1.0).is_err());
        assert!(window_attention(&g, &g, &g, &m, Windows { shift: 4, ..geo }, 1.0).is_err());
        let m9 = mlx_rs::Array::zeros::<f32>(&[1, 3, 9, 9]).unwrap();
        assert!(window_attention(&g, &g, &g, &m9, geo, 1.0).is_err());
        let m3 = mlx_rs::Array::zeros::<f32>(&[3, 3, 16, 16]).unwrap();
        assert!(window_attention(&g, &g, &g, &m3, geo, 1.0).is_err());
        let small = mlx_rs::Array::zeros::<f32>(&[1, 8, 8, 6]).unwrap();
        assert!(window_attention(&g, &small, &g, &m, geo, 1.0).is_err());
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let a = mlx_rs::Array::zeros::<f32>(&[1, 4, 8]).unwrap();
        let b = mlx_rs::Array::zeros::<f32>(&[1, 4, 6]).unwrap();
        assert!(attention(&a, &b, &b, 2, 1.0, false).is_err());
        assert!(attention(&a, &a, &a, 3, 1.0, false).is_err());
        // Causal needs the queries to be the last of the keys' positions.
        let short = mlx_rs::Array::zeros::<f32>(&[1, 2, 8]).unwrap();
        assert!(attention(&a, &short, &short, 2, 1.0, true).is_err());
    }
}
