//! MusicGen Melody's melody features: HF `MusicgenMelodyFeatureExtractor`, on the host in
//! float64. A power spectrogram (torchaudio's `Spectrogram`: periodic Hann window of `n_fft`,
//! centred with reflect padding, normalised by the window's energy) is projected onto pitch
//! classes by librosa's chroma filter bank, and each frame becomes a one-hot vector of its
//! strongest class.
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::error::{Error, Result};

/// The extractor's settings (`preprocessor_config.json`); defaults are the released model's.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct ChromaConfig {
    pub sampling_rate: u32,
    pub n_fft: usize,
    pub hop_length: usize,
    #[serde(alias = "feature_size")]
    pub num_chroma: usize,
    /// Seconds kept (longer audio is cut, as the extractor truncates).
    pub chunk_length: usize,
}

impl Default for ChromaConfig {
    fn default() -> Self {
        Self { sampling_rate: 32_000, n_fft: 16_384, hop_length: 4096, num_chroma: 12, chunk_length: 30 }
    }
}

/// One-hot chroma frames and, per frame, the margin of its choice (the strongest class's
/// normalised energy minus the second's: a tie below float32 precision can go either way).
pub struct Chroma {
    /// `frames x num_chroma`, row-major.
    pub one_hot: Vec<f32>,
    pub margins: Vec<f64>,
    pub frames: usize,
}

pub struct ChromaExtractor {
    pub config: ChromaConfig,
    /// `num_chroma x (n_fft / 2 + 1)`, rounded to float32 as HF keeps it.
    filters: Vec<f64>,
    window: Vec<f64>,
    fft: Arc<dyn Fft<f64>>,
}

/// HF's `chroma_filter_bank` (librosa's `filters.chroma`) with tuning 0, power 2, weighting
/// (5, 2) and the first class at C: `num_chroma x (n_fft / 2 + 1)`.
pub fn chroma_filter_bank(n_fft: usize, num_chroma: usize, sampling_rate: f64) -> Vec<f64> {
    let nc = num_chroma as f64;
    let step = sampling_rate / n_fft as f64;
    // The FFT bins without DC, on the octave scale (A440 / 16 at 0), in chroma units.
    let mut freq_bins: Vec<f64> = (1..n_fft).map(|i| nc * ((i as f64 * step) / (440.0 / 16.0)).log2()).collect();
    freq_bins.insert(0, freq_bins[0] - 1.5 * nc);
    let n = freq_bins.len();
    let widths: Vec<f64> = (0..n).map(|i| if i + 1 < n { (freq_bins[i + 1] - freq_bins[i]).max(1.0) } else { 1.0 }).collect();
    let half = (nc / 2.0).round();
    let mut f = vec![0f64; num_chroma * n];
    for c in 0..num_chroma {
        for j in 0..n {
            let d = (freq_bins[j] - c as f64 + half + 10.0 * nc).rem_euclid(nc) - half;
            f[c * n + j] = (-0.5 * (2.0 * d / widths[j]).powi(2)).exp();
        }
    }
    for j in 0..n {
        let norm = (0..num_chroma).map(|c| f[c * n + j].powi(2)).sum::<f64>().sqrt();
        let weight = (-0.5 * ((freq_bins[j] / nc - 5.0) / 2.0).powi(2)).exp();
        for c in 0..num_chroma {
            f[c * n + j] = f[c * n + j] / norm * weight;
        }
    }
    // Start at C: roll the classes by -3 (per 12).
    let shift = 3 * (num_chroma / 12);
    let keep = n_fft / 2 + 1;
    let mut out = vec![0f64; num_chroma * keep];
    for c in 0..num_chroma {
        let src = (c + shift) % num_chroma;
        out[c * keep..(c + 1) * keep].copy_from_slice(&f[src * n..src * n + keep]);
    }
    out
}

impl ChromaExtractor {
    pub fn new(config: ChromaConfig) -> Result<Self> {
        if config.n_fft < 16 || config.n_fft > 1 << 20 || config.hop_length < 1 || config.num_chroma < 1 || config.num_chroma > 128 || config.sampling_rate < 1 || config.chunk_length < 1 {
            return Err(Error::InvalidArgument(format!("chroma settings out of range: {config:?}")));
        }
        let filters = chroma_filter_bank(config.n_fft, config.num_chroma, f64::from(config.sampling_rate)).into_iter().map(|v| f64::from(v as f32)).collect();
        let n = config.n_fft;
        let window = (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()).collect();
        let fft = FftPlanner::new().plan_fft_forward(n);
        Ok(Self { config, filters, window, fft })
    }

    /// The chroma of mono `audio` at the configured rate (cut to `chunk_length` seconds).
    pub fn extract(&self, audio: &[f32]) -> Result<Chroma> {
        let c = &self.config;
        if audio.is_empty() {
            return Err(Error::InvalidArgument("melody audio is empty".into()));
        }
        if audio.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument("melody audio holds NaN or infinite samples".into()));
        }
        let mut x: Vec<f64> = audio.iter().take(c.chunk_length * c.sampling_rate as usize).map(|&v| f64::from(v)).collect();
        // Shorter than the window: zero-padded on both sides to it (the extra sample right).
        if x.len() < c.n_fft {
            let pad = c.n_fft - x.len();
            let mut p = vec![0f64; pad / 2];
            p.extend(&x);
            p.extend(std::iter::repeat_n(0.0, pad / 2 + pad % 2));
            x = p;
        }
        // Centred frames: reflect padding of n_fft / 2 on each side.
        let half = c.n_fft / 2;
        let len = x.len();
        let reflect = |i: isize| -> f64 { x[crate::nn::ops::reflect_index(i, len)] };
        let frames = 1 + len / c.hop_length;
        let bins = c.n_fft / 2 + 1;
        let energy: f64 = self.window.iter().map(|w| w * w).sum();
        let (nc, mut one_hot, mut margins) = (c.num_chroma, Vec::with_capacity(frames * c.num_chroma), Vec::with_capacity(frames));
        let mut buf = vec![Complex::new(0f64, 0f64); c.n_fft];
        for t in 0..frames {
            let start = (t * c.hop_length) as isize - half as isize;
            for (k, b) in buf.iter_mut().enumerate() {
                *b = Complex::new(reflect(start + k as isize) * self.window[k], 0.0);
            }
            self.fft.process(&mut buf);
            let power: Vec<f64> = buf[..bins].iter().map(|z| z.norm_sqr() / energy).collect();
            let raw: Vec<f64> = (0..nc).map(|ch| self.filters[ch * bins..(ch + 1) * bins].iter().zip(&power).map(|(f, p)| f * p).sum()).collect();
            let norm = raw.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
            let normed: Vec<f64> = raw.iter().map(|v| v / norm).collect();
            // The first of equal maxima, as torch's argmax.
            let best = (0..nc).fold(0, |b, i| if normed[i] > normed[b] { i } else { b });
            let second = (0..nc).filter(|&i| i != best).map(|i| normed[i]).fold(f64::NEG_INFINITY, f64::max);
            margins.push(if nc > 1 { normed[best] - second } else { f64::INFINITY });
            one_hot.extend((0..nc).map(|i| if i == best { 1.0f32 } else { 0.0 }));
        }
        Ok(Chroma { one_hot, margins, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pure_tone_lands_in_its_pitch_class() {
        let ex = ChromaExtractor::new(ChromaConfig::default()).unwrap();
        // A4 (440 Hz) is class 9 counted from C; E5 (659.26 Hz) class 4.
        for (freq, class) in [(440.0f32, 9usize), (659.255, 4)] {
            let x: Vec<f32> = (0..64_000).map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / 32_000.0).sin()).collect();
            let c = ex.extract(&x).unwrap();
            assert_eq!(c.frames, 1 + 64_000 / 4096);
            for t in 2..c.frames - 2 {
                assert_eq!(c.one_hot[t * 12 + class], 1.0, "{freq} Hz, frame {t}");
            }
        }
        assert!(ex.extract(&[]).is_err() && ex.extract(&[f32::NAN; 10]).is_err());
    }
}
