//! Whisper's log-mel front end, as openai-whisper's `log_mel_spectrogram(pad_or_trim(audio))`:
//! 16 kHz audio padded or trimmed to 30 s, a 400-point STFT (periodic Hann window, hop 160,
//! centred with reflect padding) without its last frame, power spectrum, librosa's Slaney mel
//! filters (80 or 128 bins), `log10` clamped at 1e-10, floored at the maximum minus 8, then
//! `(x + 4) / 4`.
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
use crate::nn::ops::{all_finite, pad_axis, PadMode};

pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: i32 = 400;
pub const HOP_LENGTH: i32 = 160;
/// Samples in one 30 s window.
pub const N_SAMPLES: i32 = 480_000;

fn hz_to_mel(f: f64) -> f64 {
    // librosa's Slaney scale: linear below 1 kHz, logarithmic above.
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel(sr=16000, n_fft=400, n_mels)` (Slaney scale and area normalisation),
/// row-major `[n_mels, 201]`; openai-whisper ships these as `mel_filters.npz`.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let n_freqs = (N_FFT / 2 + 1) as usize;
    let sr = f64::from(SAMPLE_RATE);
    let fft_freqs: Vec<f64> = (0..n_freqs).map(|i| i as f64 * sr / f64::from(N_FFT)).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let fdiff: Vec<f64> = mel_f.windows(2).map(|w| w[1] - w[0]).collect();
    let mut out = vec![0f32; n_mels * n_freqs];
    for i in 0..n_mels {
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (j, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[i]) / fdiff[i];
            let upper = (mel_f[i + 2] - f) / fdiff[i + 1];
            out[i * n_freqs + j] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

/// The front end for one mel size; filters and window are built once.
pub struct LogMel {
    n_mels: i32,
    /// `[201, n_mels]`
    filters_t: Array,
    /// `[400]`, periodic Hann.
    window: Array,
    /// Frame start offsets into the padded signal, `[3001, 400]`.
    frame_index: Array,
}

impl LogMel {
    pub fn new(n_mels: i32) -> Result<Self> {
        if n_mels != 80 && n_mels != 128 {
            return Err(Error::InvalidArgument(format!("Whisper uses 80 or 128 mel bins, not {n_mels}")));
        }
        let f = mel_filters(n_mels as usize);
        let filters_t = Array::from_slice(&f, &[n_mels, N_FFT / 2 + 1]).t().contiguous()?;
        let w: Vec<f32> = (0..N_FFT).map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * f64::from(n) / f64::from(N_FFT)).cos()) as f32).collect();
        let n_frames = 1 + N_SAMPLES / HOP_LENGTH;
        let idx: Vec<i32> = (0..n_frames).flat_map(|t| (0..N_FFT).map(move |i| t * HOP_LENGTH + i)).collect();
        let frame_index = Array::from_slice(&idx, &[n_frames, N_FFT]);
        let me = Self { n_mels, filters_t, window: Array::from_slice(&w, &[N_FFT]), frame_index };
        mlx_rs::transforms::eval([&me.filters_t, &me.window, &me.frame_index])?;
        Ok(me)
    }

    pub fn n_mels(&self) -> i32 {
        self.n_mels
    }

    /// Log-mel `[n_mels, 3000]` of mono 16 kHz `audio` (`[L]`), padded with zeros or trimmed to
    /// 30 s first. Refuses empty or non-finite audio.
    pub fn compute(&self, audio: &Array) -> Result<Array> {
        if audio.ndim() != 1 {
            return Err(Error::InvalidArgument(format!("audio of shape {:?}: expected mono samples [L]", audio.shape())));
        }
        let len = audio.shape()[0];
        if len == 0 {
            return Err(Error::InvalidArgument("audio is empty (0 samples)".into()));
        }
        if !all_finite(audio)? {
            return Err(Error::InvalidArgument("audio holds NaN or infinite samples".into()));
        }
        let x = audio.as_dtype(mlx_rs::Dtype::Float32)?;
        let x = if len >= N_SAMPLES { x.index(..N_SAMPLES) } else { ops::concatenate(&[x, ops::zeros::<f32>(&[N_SAMPLES - len])?], 0)? };
        let padded = pad_axis(&x.reshape(&[1, N_SAMPLES])?, 1, N_FFT / 2, N_FFT / 2, PadMode::Reflect)?.reshape(&[-1])?;
        let frames = padded.take(&self.frame_index)?.multiply(&self.window)?;
        let spec = mlx_rs::fft::rfft(&frames, N_FFT, -1)?;
        let power = spec.abs()?.square()?;
        let n = power.shape()[0];
        let power = power.index(..n - 1);
        let mel = power.matmul(&self.filters_t)?;
        let log = ops::log10(&ops::maximum(&mel, mlx_rs::array!(1e-10f32))?)?;
        let floor = log.max(None)?.subtract(mlx_rs::array!(8.0f32))?;
        let log = ops::maximum(&log, &floor)?;
        Ok(log.add(mlx_rs::array!(4.0f32))?.divide(mlx_rs::array!(4.0f32))?.t())
    }

    /// Log-mel `[n_mels, frames]` of all of `audio` followed by 30 s of zeros, normalised over
    /// the whole of it, as openai-whisper's `log_mel_spectrogram(audio, padding=N_SAMPLES)`
    /// that its `transcribe` slices windows from: `frames = (len + N_SAMPLES) / 160`. The STFT
    /// runs 3000 frames at a time, so memory grows only with the mel, not the frames.
    pub fn compute_padded(&self, audio: &[f32]) -> Result<Array> {
        if audio.is_empty() {
            return Err(Error::InvalidArgument("audio is empty (0 samples)".into()));
        }
        if audio.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("audio holds NaN or infinite samples".into()));
        }
        let total = i32::try_from(audio.len() + N_SAMPLES as usize).map_err(|_| Error::InvalidArgument(format!("{} samples: too long for one signal", audio.len())))?;
        let x = ops::concatenate(&[Array::from_slice(audio, &[audio.len() as i32]), ops::zeros::<f32>(&[N_SAMPLES])?], 0)?;
        let padded = pad_axis(&x.reshape(&[1, total])?, 1, N_FFT / 2, N_FFT / 2, PadMode::Reflect)?.reshape(&[-1])?;
        // The STFT has 1 + total / hop frames; the last is dropped.
        let frames = total / HOP_LENGTH;
        let chunk = N_SAMPLES / HOP_LENGTH;
        let mut logs = Vec::new();
        let mut f0 = 0;
        while f0 < frames {
            let n = chunk.min(frames - f0);
            let idx = self.frame_index.index(..n).add(mlx_rs::array!(f0 * HOP_LENGTH))?;
            let spec = mlx_rs::fft::rfft(&padded.take(&idx)?.multiply(&self.window)?, N_FFT, -1)?;
            let mel = spec.abs()?.square()?.matmul(&self.filters_t)?;
            let log = ops::log10(&ops::maximum(&mel, mlx_rs::array!(1e-10f32))?)?;
            log.eval()?;
            logs.push(log);
            f0 += n;
        }
        let log = ops::concatenate(&logs, 0)?;
        let floor = log.max(None)?.subtract(mlx_rs::array!(8.0f32))?;
        let log = ops::maximum(&log, &floor)?;
        Ok(log.add(mlx_rs::array!(4.0f32))?.divide(mlx_rs::array!(4.0f32))?.t())
    }
}
