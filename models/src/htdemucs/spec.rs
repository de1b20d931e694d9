//! HTDemucs' spectrogram and its inverse, as demucs' `HTDemucs._spec` / `_ispec` compute them:
//! a normalized, centred STFT (periodic Hann window, hop `nfft / 4`) of the signal reflect-padded
//! by 1.5 hops, with the Nyquist bin and the two edge frames on each side dropped, so that a
//! signal of `L` samples gives `ceil(L / hop)` frames of `nfft / 2` bins.
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{complex64, ops, Array};

use crate::error::{Error, Result};
use crate::nn::host_blas::{f32_data, host_operands};
use crate::nn::ops::{pad_axis, PadMode};

pub struct Stft {
    pub nfft: i32,
    pub hop: i32,
    window: Array,
}

/// demucs' `pad1d`: reflect padding that first zero-extends inputs too short to reflect.
pub fn pad1d_reflect(x: &Array, left: i32, right: i32) -> Result<Array> {
    let axis = x.ndim() as i32 - 1;
    let len = x.shape()[axis as usize];
    let (mut l, mut r, mut x) = (left, right, x.clone());
    let max_pad = left.max(right);
    if len <= max_pad {
        let extra = max_pad - len + 1;
        let extra_right = right.min(extra);
        let extra_left = extra - extra_right;
        x = pad_axis(&x, axis, extra_left, extra_right, PadMode::Constant)?;
        l -= extra_left;
        r -= extra_right;
    }
    pad_axis(&x, axis, l, r, PadMode::Reflect)
}

impl Stft {
    pub fn new(nfft: i32) -> Result<Self> {
        if nfft < 8 || nfft % 4 != 0 {
            return Err(Error::InvalidArgument(format!("nfft {nfft}: must be a multiple of 4, at least 8")));
        }
        let w = hann(nfft as usize);
        Ok(Self { nfft, hop: nfft / 4, window: Array::from_slice(&w, &[nfft]) })
    }

    /// `_spec`: real and imaginary parts `[..., nfft / 2, ceil(L / hop)]` of `x` `[..., L]`.
    pub fn spec(&self, x: &Array) -> Result<(Array, Array)> {
        let nd = x.ndim();
        if nd == 0 || x.shape()[nd - 1] == 0 {
            return Err(Error::InvalidArgument(format!("spectrogram of a signal of shape {:?}: no samples", x.shape())));
        }
        let (hl, nfft) = (self.hop, self.nfft);
        let len = x.shape()[nd - 1];
        let le = (len + hl - 1) / hl;
        let pad = hl / 2 * 3;
        let x = pad1d_reflect(x, pad, pad + le * hl - len)?;
        // torch.stft(center=True): another nfft / 2 of reflection on each side.
        let x = pad_axis(&x, nd as i32 - 1, nfft / 2, nfft / 2, PadMode::Reflect)?;
        let padded = x.shape()[nd - 1];
        let frames = 1 + (padded - nfft) / hl;
        let idx: Vec<i32> = (0..frames).flat_map(|f| (0..nfft).map(move |k| f * hl + k)).collect();
        let framed = x.take_axis(Array::from_slice(&idx, &[frames, nfft]), nd as i32 - 1)?.multiply(&self.window)?; // [..., frames, nfft]
        let z = mlx_rs::fft::rfft(&framed, nfft, -1)?; // [..., frames, nfft / 2 + 1]
        let scale = mlx_rs::array!(1.0 / (nfft as f32).sqrt());
        // [N, frames, bins] -> [N, nfft / 2, le]: the Nyquist bin and two edge frames each side go.
        let flat = |a: Array| -> Result<Array> {
            let s = a.shape().to_vec();
            Ok(a.reshape(&[-1, s[nd - 1], s[nd]])?)
        };
        let re = pick_last2(&flat(z.real()?)?, &scale, nfft / 2, le)?;
        let im = pick_last2(&flat(z.imag()?)?, &scale, nfft / 2, le)?;
        let mut shape: Vec<i32> = x.shape()[..nd - 1].to_vec();
        shape.extend([nfft / 2, le]);
        Ok((re.reshape(&shape)?, im.reshape(&shape)?))
    }

    /// `_ispec`: the signal `[..., length]` of the spectrogram `re + i im` (`[..., nfft / 2, T]`).
    pub fn ispec(&self, re: &Array, im: &Array, length: i32) -> Result<Array> {
        let (hl, nfft) = (self.hop, self.nfft);
        let s = re.shape().to_vec();
        let nd = s.len();
        if nd < 2 || im.shape() != s.as_slice() || s[nd - 2] != nfft / 2 {
            return Err(Error::InvalidArgument(format!("inverse spectrogram of {:?} and {:?}: expected equal [..., {}, frames]", s, im.shape(), nfft / 2)));
        }
        let t = s[nd - 1];
        let lead: Vec<i32> = s[..nd - 2].to_vec();
        let flat = |a: &Array| -> Result<Array> { Ok(a.reshape(&[-1, nfft / 2, t])?) };
        // Back to [N, frames, bins], with the Nyquist bin (zero) and two empty frames each side.
        let prep = |a: Array| -> Result<Array> {
            let a = pad_axis(&a, 1, 0, 1, PadMode::Constant)?;
            let a = pad_axis(&a, 2, 2, 2, PadMode::Constant)?;
            Ok(a.transpose_axes(&[0, 2, 1])?)
        };
        let (zr, zi) = (prep(flat(re)?)?, prep(flat(im)?)?);
        let z = zr.add(zi.multiply(Array::from_complex(complex64::new(0.0, 1.0)))?)?;
        // torch's istft ignores the imaginary parts of the DC and Nyquist bins, which the
        // decoders leave non-zero.
        let frames = crate::nn::ops::irfft_real_edges(&z, nfft)?.multiply(mlx_rs::array!((nfft as f32).sqrt()))?.multiply(&self.window)?; // [N, T', nfft]
        let tt = frames.shape()[1];
        let full = nfft + hl * (tt - 1);
        let y = overlap_add(&frames, hl)?; // [N, full]
        let wsq = self.window.square()?;
        let env = overlap_add(&ops::broadcast_to(&wsq.reshape(&[1, 1, nfft])?, &[1, tt, nfft])?, hl)?.reshape(&[full])?;
        let pad = hl / 2 * 3;
        let le = hl * ((length + hl - 1) / hl) + 2 * pad;
        let start = nfft / 2;
        let end = start + le;
        if end > full {
            return Err(Error::InvalidArgument(format!("inverse spectrogram: {t} frames cannot make {length} samples")));
        }
        let env = env.index(start..end);
        let y = y.index((.., start..end)).divide(&ops::maximum(&env, mlx_rs::array!(1e-11f32))?)?;
        let y = y.index((.., pad..pad + length));
        let mut shape = lead;
        shape.push(length);
        Ok(y.reshape(&shape)?)
    }

    /// [`Self::ispec`] on the host, of a channels-last spectrogram as HTDemucs' frequency
    /// decoder leaves it: `x` `[B, T, nfft / 2, 2 N]`, signal `n`'s real part in channel `2 n`
    /// and its imaginary part in `2 n + 1`, each item's values first mapped to `x * scale[b] +
    /// offset[b]` (`scale`, `offset` of `B` elements). Returns `[B, N, length]`.
    ///
    /// Composed in MLX the inverse moves the 90 MB spectrogram of a 7.8 s segment through a
    /// transpose, two paddings, a complex product, the inverse FFT and an overlap-add of four
    /// padded copies, each a single-threaded pass (about 350 ms on this project's 2-core box).
    /// Here each signal's frames are read where they lie, two frames share one complex inverse
    /// FFT (the real and imaginary parts of the result, as both spectra are Hermitian), and
    /// the windowed frames are added into the output directly; signals are split over
    /// threads.
    pub fn ispec_interleaved(&self, x: &Array, scale: &Array, offset: &Array, length: i32) -> Result<Array> {
        use rustfft::num_complex::Complex32;
        let s = x.shape().to_vec();
        let (nfft, hl) = (self.nfft as usize, self.hop as usize);
        let half = nfft / 2;
        if s.len() != 4 || s[2] as usize != half || s[3] < 2 || s[3] % 2 != 0 || s[0] < 1 || s[1] < 1 || length < 1 {
            return Err(Error::InvalidArgument(format!("inverse spectrogram of {s:?}: expected [B, frames, {half}, 2 N] and a positive length")));
        }
        let (nb, t, nch) = (s[0] as usize, s[1] as usize, s[3] as usize);
        if scale.size() != nb || offset.size() != nb {
            return Err(Error::InvalidArgument(format!("inverse spectrogram of {s:?}: {} scales and {} offsets for {nb} items", scale.size(), offset.size())));
        }
        let ns = nch / 2;
        // As `ispec`: two empty frames either side; the output starts half a window in, then
        // 1.5 hops of padding.
        let tt = t + 4;
        let full = nfft + hl * (tt - 1);
        let pad = hl / 2 * 3;
        let len = length as usize;
        let (start, le) = (half + pad, hl * len.div_ceil(hl) + 2 * pad);
        if half + le > full {
            return Err(Error::InvalidArgument(format!("inverse spectrogram: {t} frames cannot make {length} samples")));
        }
        let [xa, sa, oa] = host_operands([x, scale, offset])?;
        let what = "inverse spectrogram";
        let (xd, sv, ov) = (f32_data(&xa, what)?, f32_data(&sa, what)?, f32_data(&oa, what)?);
        let w = hann(nfft);
        // The squared window's overlap-add, the same for every signal.
        let mut env = vec![0f32; full];
        for f in 0..tt {
            for (e, &wk) in env[f * hl..f * hl + nfft].iter_mut().zip(&w) {
                *e += wk * wk;
            }
        }
        // irfft's 1 / nfft, times ispec's sqrt(nfft), times the window.
        let gain: Vec<f32> = w.iter().map(|&wk| wk / (nfft as f32).sqrt()).collect();
        let fft = rustfft::FftPlanner::<f32>::new().plan_fft_inverse(nfft);
        let signals = nb * ns;
        let mut out = vec![0f32; signals * len];
        let workers = crate::nn::host::threads().min(signals).max(1);
        let per = signals.div_ceil(workers);
        std::thread::scope(|sc| {
            for (wi, chunk) in out.chunks_mut(per * len).enumerate() {
                let (fft, gain, env) = (&fft, &gain, &env);
                sc.spawn(move || {
                    let mut buf = vec![Complex32::new(0.0, 0.0); nfft];
                    let mut scratch = vec![Complex32::new(0.0, 0.0); fft.get_inplace_scratch_len()];
                    let mut y = vec![0f32; full];
                    for (k, o) in chunk.chunks_mut(len).enumerate() {
                        let sig = wi * per + k;
                        let (bi, n) = (sig / ns, sig % ns);
                        let (a, b) = (sv[bi], ov[bi]);
                        y.iter_mut().for_each(|v| *v = 0.0);
                        // Bin j of frame f: (re, im).
                        let at = |f: usize, j: usize| -> (f32, f32) {
                            let i = ((bi * t + f) * half + j) * nch + 2 * n;
                            (xd[i] * a + b, xd[i + 1] * a + b)
                        };
                        for f0 in (0..t).step_by(2) {
                            let f1 = (f0 + 1 < t).then_some(f0 + 1);
                            // Frame f0's spectrum Z1 and f1's Z2 as Z1 + i Z2, Hermitian-extended;
                            // the DC bin's imaginary part is dropped and the Nyquist bin is zero.
                            let (r1, _) = at(f0, 0);
                            let r2 = f1.map_or(0.0, |f| at(f, 0).0);
                            buf[0] = Complex32::new(r1, r2);
                            buf[half] = Complex32::new(0.0, 0.0);
                            for j in 1..half {
                                let z1 = at(f0, j);
                                let z2 = f1.map_or((0.0, 0.0), |f| at(f, j));
                                // Z1 + i Z2 at j, conj(Z1) + i conj(Z2) at nfft - j.
                                buf[j] = Complex32::new(z1.0 - z2.1, z1.1 + z2.0);
                                buf[nfft - j] = Complex32::new(z1.0 + z2.1, z2.0 - z1.1);
                            }
                            fft.process_with_scratch(&mut buf, &mut scratch);
                            // Frame f lands at (f + 2) hops.
                            for (f, part) in [(f0, 0), (f0 + 1, 1)] {
                                if part == 1 && f1.is_none() {
                                    continue;
                                }
                                let dst = &mut y[(f + 2) * hl..(f + 2) * hl + nfft];
                                for ((d, c), &g) in dst.iter_mut().zip(&buf).zip(gain) {
                                    *d += g * if part == 0 { c.re } else { c.im };
                                }
                            }
                        }
                        for ((o, &v), &e) in o.iter_mut().zip(&y[start..start + len]).zip(&env[start..start + len]) {
                            *o = v / e.max(1e-11);
                        }
                    }
                });
            }
        });
        crate::nn::host::array_from_vec(out, &[nb as i32, ns as i32, length])
    }
}

/// The periodic Hann window of `n` samples (computed in float64).
fn hann(n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32).collect()
}

/// Pick `[N, bins, frames]` from `[N, frames', bins']`: scale, transpose, the first `bins`
/// bins and frames `2..2 + frames`.
fn pick_last2(a: &Array, scale: &Array, bins: i32, frames: i32) -> Result<Array> {
    let a = a.multiply(scale)?.transpose_axes(&[0, 2, 1])?;
    Ok(a.index((.., ..bins, 2..2 + frames)))
}

/// Overlap-add of frames `[N, T, nfft]` at hop `hop` (`nfft` a multiple of it): `[N, nfft + hop (T - 1)]`.
fn overlap_add(frames: &Array, hop: i32) -> Result<Array> {
    let s = frames.shape();
    let (n, t, nfft) = (s[0], s[1], s[2]);
    let parts = nfft / hop;
    let chunks = frames.reshape(&[n, t, parts, hop])?;
    let total = hop * (t + parts - 1);
    let mut acc: Option<Array> = None;
    for j in 0..parts {
        let c = chunks.index((.., .., j, ..)).reshape(&[n, t * hop])?;
        let placed = pad_axis(&c, 1, j * hop, total - t * hop - j * hop, PadMode::Constant)?;
        acc = Some(match acc {
            None => placed,
            Some(a) => a.add(&placed)?,
        });
    }
    acc.ok_or_else(|| Error::InvalidArgument("overlap-add of empty frames".into()))
}
