//! The tail of a DConv layer (demucs' residual branch) as one pass on the host: a pointwise
//! convolution from `H` hidden channels to `2 C`, `GroupNorm(1, 2 C)`, GLU, LayerScale and the
//! residual sum.
//!
//! Composed, these write and re-read the `2 C`-channel product four times (the product, its
//! bias, the normalisation's two statistics passes and its output, the GLU): at HTDemucs'
//! outer layers a 66 MB array each time, for a product with only `H = C / 8` inputs per
//! output. Here the product is never stored. A group's statistics follow from the first and
//! second moments of the hidden input, which has `H` channels: channel `o`'s mean is
//! `w_o . mu + b_o` and its variance `w_o^T S w_o`, with `mu` and `S` the hidden mean and
//! covariance (accumulated in float64), so the group's mean and biased variance are exact up to
//! the float64 rounding. The output pass then forms each row's `2 C` products in registers,
//! normalises them, applies the GLU and adds the scaled result to the residual.
use mlx_rs::Array;

use crate::error::{Error, Result};
use crate::nn::host::{array_from_vec, threads};
use crate::nn::host_blas::{f32_data, host_operands};

/// The arrays of one DConv tail: `w` `[H, 2C]` (input-major, as `AxisConv` holds a pointwise
/// kernel), `bias`, `gamma`, `beta` `[2C]`, `scale` `[C]`.
pub struct PointwiseNormGlu<'a> {
    pub w: &'a Array,
    pub bias: &'a Array,
    pub gamma: &'a Array,
    pub beta: &'a Array,
    pub scale: &'a Array,
    pub eps: f32,
}

/// `x + scale * glu(GroupNorm(1)(h W + bias))` with `x` `[B, A, F, C]` and `h` `[B, A, F, H]`
/// (`dims` = `[B, A, F, C]`; 3-d `[B, A, C]` with `F = 1`): one normalisation group per `(b,
/// f)`, over `A` and the `2C` channels, as HTDemucs' frequency layers fold the bins into the
/// batch. Float32, on the host.
pub fn pointwise_norm_glu_residual(x: &Array, h: &Array, p: &PointwiseNormGlu<'_>, dims: [usize; 4]) -> Result<Array> {
    let [nb, na, nf, nc] = dims;
    let (xs, hs) = (x.shape().to_vec(), h.shape().to_vec());
    let ws = p.w.shape().to_vec();
    let bad = |why: &str| Error::InvalidArgument(format!("DConv tail of {xs:?} and hidden {hs:?} (weights {ws:?}) as {dims:?}: {why}"));
    let count = |s: &[i32]| s.iter().map(|&d| d as usize).product::<usize>();
    if ws.len() != 2 || ws[1] as usize != 2 * nc || ws[0] < 1 {
        return Err(bad("the weights are not [H, 2C]"));
    }
    let nh = ws[0] as usize;
    if count(&xs) != nb * na * nf * nc || count(&hs) != nb * na * nf * nh || xs.last() != Some(&(nc as i32)) || hs.last() != Some(&(nh as i32)) {
        return Err(bad("shapes do not match"));
    }
    if [p.bias, p.gamma, p.beta].iter().any(|a| a.size() != 2 * nc) || p.scale.size() != nc {
        return Err(bad("bias, norm or scale of the wrong size"));
    }
    let arrays = host_operands([x, h, p.w, p.bias, p.gamma, p.beta, p.scale])?;
    let what = "DConv tail";
    let [xa, ha, wa, ba, ga, betaa, sa] = &arrays;
    let [xd, hd, wd, bd, gd, betad, sd] = [f32_data(xa, what)?, f32_data(ha, what)?, f32_data(wa, what)?, f32_data(ba, what)?, f32_data(ga, what)?, f32_data(betaa, what)?, f32_data(sa, what)?];
    let mut out = vec![0f32; xd.len()];
    if out.is_empty() {
        return array_from_vec(out, &xs);
    }
    let workers = threads().min(na).max(1);
    let per_a = na.div_ceil(workers);
    let n2 = 2 * nc;
    for bi in 0..nb {
        let hb = &hd[bi * na * nf * nh..(bi + 1) * na * nf * nh];
        // Per bin: sum of h (H) and of h h^T (H x H), float64, summed over this item's rows.
        let parts: Vec<Vec<f64>> = std::thread::scope(|s| {
            let hs: Vec<_> = hb
                .chunks(per_a * nf * nh)
                .map(|part| {
                    s.spawn(move || {
                        let stride = nh + nh * nh;
                        let mut acc = vec![0f64; nf * stride];
                        for (i, row) in part.chunks_exact(nh).enumerate() {
                            let a = &mut acc[(i % nf) * stride..(i % nf + 1) * stride];
                            let (sum, outer) = a.split_at_mut(nh);
                            for (j, &hj) in row.iter().enumerate() {
                                let hj = f64::from(hj);
                                sum[j] += hj;
                                for (o, &hk) in outer[j * nh..(j + 1) * nh].iter_mut().zip(row) {
                                    *o += hj * f64::from(hk);
                                }
                            }
                        }
                        acc
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        let stride = nh + nh * nh;
        let mut acc = vec![0f64; nf * stride];
        for part in parts {
            for (a, v) in acc.iter_mut().zip(part) {
                *a += v;
            }
        }
        // Per bin: the group's mean and reciprocal standard deviation.
        let rows = na as f64;
        let mut stats = Vec::with_capacity(nf);
        let mut m = vec![0f64; n2];
        for a in acc.chunks_exact(stride) {
            let mu: Vec<f64> = a[..nh].iter().map(|&v| v / rows).collect();
            let cov: Vec<f64> = (0..nh * nh).map(|jk| a[nh + jk] / rows - mu[jk / nh] * mu[jk % nh]).collect();
            let mut within = 0f64;
            for (o, mo) in m.iter_mut().enumerate() {
                let col = |j: usize| f64::from(wd[j * n2 + o]);
                *mo = f64::from(bd[o]) + (0..nh).map(|j| col(j) * mu[j]).sum::<f64>();
                within += (0..nh).map(|j| col(j) * (0..nh).map(|k| cov[j * nh + k] * col(k)).sum::<f64>()).sum::<f64>();
            }
            let mean = m.iter().sum::<f64>() / n2 as f64;
            let between = m.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n2 as f64;
            // The covariance's rounding can leave a constant channel slightly negative.
            let var = (within / n2 as f64 + between).max(0.0);
            stats.push((mean as f32, (1.0 / (var + f64::from(p.eps)).sqrt()) as f32));
        }
        let xb = &xd[bi * na * nf * nc..(bi + 1) * na * nf * nc];
        let ob = &mut out[bi * na * nf * nc..(bi + 1) * na * nf * nc];
        let stats = &stats;
        let consts = Consts { w: wd, bias: bd, gamma: gd, beta: betad, scale: sd, nh, nc };
        std::thread::scope(|s| {
            for ((xp, hp), op) in xb.chunks(per_a * nf * nc).zip(hb.chunks(per_a * nf * nh)).zip(ob.chunks_mut(per_a * nf * nc)) {
                let consts = &consts;
                s.spawn(move || tail_rows(xp, hp, op, stats, consts));
            }
        });
    }
    array_from_vec(out, &xs)
}

struct Consts<'a> {
    w: &'a [f32],
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    scale: &'a [f32],
    nh: usize,
    nc: usize,
}

fn tail_rows(x: &[f32], h: &[f32], out: &mut [f32], stats: &[(f32, f32)], k: &Consts<'_>) {
    #[cfg(target_arch = "x86_64")]
    if crate::nn::host::has_avx2() {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { tail_rows_avx2(x, h, out, stats, k) };
    }
    tail_rows_generic(x, h, out, stats, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tail_rows_avx2(x: &[f32], h: &[f32], out: &mut [f32], stats: &[(f32, f32)], k: &Consts<'_>) {
    tail_rows_generic(x, h, out, stats, k)
}

/// Rows `(a, f)` of one part (starting at a whole `a`): the `2C` products, normalised, GLU,
/// scaled and added to the residual.
#[inline(always)]
fn tail_rows_generic(x: &[f32], h: &[f32], out: &mut [f32], stats: &[(f32, f32)], k: &Consts<'_>) {
    let (nh, nc) = (k.nh, k.nc);
    let nf = stats.len();
    let mut y = vec![0f32; 2 * nc];
    for (i, ((xr, hr), or)) in x.chunks_exact(nc).zip(h.chunks_exact(nh)).zip(out.chunks_exact_mut(nc)).enumerate() {
        y.copy_from_slice(k.bias);
        for (j, &hj) in hr.iter().enumerate() {
            for (v, &w) in y.iter_mut().zip(&k.w[j * 2 * nc..(j + 1) * 2 * nc]) {
                *v += hj * w;
            }
        }
        let (mean, rstd) = stats[i % nf];
        for ((v, &g), &b) in y.iter_mut().zip(k.gamma).zip(k.beta) {
            *v = (*v - mean) * rstd * g + b;
        }
        let (a, gate) = y.split_at(nc);
        for ((((o, &xv), &av), &gv), &s) in or.iter_mut().zip(xr).zip(a).zip(gate).zip(k.scale) {
            *o = xv + s * (av * crate::nn::host::sigmoid_scalar(gv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_composed_layers() {
        let key = |i| mlx_rs::random::key(i).unwrap();
        let n = |s: &[i32], i| mlx_rs::random::normal::<f32>(s, None, None, &key(i)).unwrap();
        // [B, A, F, C] with H hidden: 4-d with several bins, 3-d (F = 1), a batch of two, a
        // hidden input with a large mean (the moments must be centred).
        for (case, &(shape, nh, offset)) in [(&[1, 40, 5, 8][..], 2, 0.0f32), (&[2, 33, 1, 6][..], 3, 0.0), (&[1, 17, 3, 4][..], 4, 30.0)].iter().enumerate() {
            let c = shape[3];
            let s = case as u64 * 10;
            let x = n(shape, s);
            let mut hshape = shape.to_vec();
            hshape[3] = nh;
            let h = n(&hshape, s + 1).add(mlx_rs::array!(offset)).unwrap();
            let (w, b, g, beta, scale) = (n(&[nh, 2 * c], s + 2), n(&[2 * c], s + 3), n(&[2 * c], s + 4), n(&[2 * c], s + 5), n(&[c], s + 6));
            let dims = [shape[0] as usize, shape[1] as usize, shape[2] as usize, c as usize];
            let p = PointwiseNormGlu { w: &w, bias: &b, gamma: &g, beta: &beta, scale: &scale, eps: 1e-5 };
            let got = pointwise_norm_glu_residual(&x, &h, &p, dims).unwrap();
            // Composed: product, group statistics per (b, f) over A and channels, GLU.
            let y = h.matmul(&w).unwrap().add(&b).unwrap();
            let yn = crate::nn::ops::standardize(&y, &[1, 3], 1e-5).unwrap().multiply(&g).unwrap().add(&beta).unwrap();
            let parts = yn.split_equal(2, -1).unwrap();
            let glu = parts[0].multiply(mlx_rs::ops::sigmoid(&parts[1]).unwrap()).unwrap();
            let want = x.add(glu.multiply(&scale).unwrap()).unwrap();
            let err = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
            assert!(err < 2e-5, "case {case}: max abs diff {err}");
        }
    }

    #[test]
    fn refuses_mismatched_arrays() {
        let z = |s: &[i32]| mlx_rs::Array::zeros::<f32>(s).unwrap();
        let (x, h) = (z(&[1, 4, 2, 3]), z(&[1, 4, 2, 2]));
        let (w, v, s) = (z(&[2, 6]), z(&[6]), z(&[3]));
        let ok = PointwiseNormGlu { w: &w, bias: &v, gamma: &v, beta: &v, scale: &s, eps: 1e-5 };
        assert!(pointwise_norm_glu_residual(&x, &h, &ok, [1, 4, 2, 3]).is_ok());
        // The wrong view, hidden channels not matching the weights, a short scale.
        assert!(pointwise_norm_glu_residual(&x, &h, &ok, [1, 4, 3, 3]).is_err());
        assert!(pointwise_norm_glu_residual(&x, &z(&[1, 4, 2, 3]), &ok, [1, 4, 2, 3]).is_err());
        let short = z(&[2]);
        assert!(pointwise_norm_glu_residual(&x, &h, &PointwiseNormGlu { scale: &short, ..ok }, [1, 4, 2, 3]).is_err());
    }
}
