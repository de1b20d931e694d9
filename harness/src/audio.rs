//! WAV in and out (through `hound`), and a band-limited resampler for input at another rate.
use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::report::json::write_atomic;

/// Planar audio: `channels[c][i]`, samples in [-1, 1] for PCM input.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Audio {
    pub fn len(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The channels averaged into one.
    pub fn mono(&self) -> Vec<f32> {
        let k = self.channels.len().max(1) as f32;
        (0..self.len()).map(|i| self.channels.iter().map(|c| c[i]).sum::<f32>() / k).collect()
    }
}

/// The sample rates a WAV file may declare.
pub const MIN_RATE: u32 = 1_000;
pub const MAX_RATE: u32 = 768_000;

/// Read a WAV file (8/16/24/32-bit PCM or 32-bit float). Refuses, naming the file: an
/// unreadable or non-WAV file, no samples, and NaN or infinite float samples.
pub fn read_wav(path: &Path) -> Result<Audio> {
    let mut r = hound::WavReader::open(path).with_context(|| format!("cannot read {} as WAV", path.display()))?;
    let spec = r.spec();
    let nch = usize::from(spec.channels);
    if nch == 0 {
        bail!("{}: WAV header declares 0 channels", path.display());
    }
    // A rate outside what audio uses would make resampling divide by zero (0 Hz) or take
    // minutes on a few bytes (1 Hz upsampled to 48 kHz).
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        bail!("{}: WAV header declares a sample rate of {} Hz (expected {MIN_RATE} to {MAX_RATE})", path.display(), spec.sample_rate);
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>()
        }
    }
    .with_context(|| format!("{}: WAV data is corrupt or truncated", path.display()))?;
    if interleaved.is_empty() {
        bail!("{}: the WAV file holds no samples", path.display());
    }
    if let Some(i) = interleaved.iter().position(|v| !v.is_finite()) {
        bail!("{}: sample {} of channel {} is {} (NaN or infinite samples cannot be encoded)", path.display(), i / nch, i % nch, interleaved[i]);
    }
    let mut channels = vec![Vec::with_capacity(interleaved.len() / nch); nch];
    for (i, v) in interleaved.into_iter().enumerate() {
        channels[i % nch].push(v);
    }
    Ok(Audio { sample_rate: spec.sample_rate, channels })
}

/// Write 32-bit float WAV, or 16-bit PCM (clipped to [-1, 1]) when `pcm16`; atomically.
/// Refuses NaN or infinite samples (a broken model's output is no audio) and writes nothing.
pub fn write_wav(path: &Path, audio: &Audio, pcm16: bool) -> Result<()> {
    for (c, ch) in audio.channels.iter().enumerate() {
        if let Some(i) = ch.iter().position(|v| !v.is_finite()) {
            bail!("not writing {}: sample {i} of channel {c} is {} (the model produced NaN or infinite audio)", path.display(), ch[i]);
        }
    }
    let spec = hound::WavSpec {
        channels: audio.channels.len() as u16,
        sample_rate: audio.sample_rate,
        bits_per_sample: if pcm16 { 16 } else { 32 },
        sample_format: if pcm16 { hound::SampleFormat::Int } else { hound::SampleFormat::Float },
    };
    let mut buf = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut buf, spec)?;
        for i in 0..audio.len() {
            for ch in &audio.channels {
                if pcm16 {
                    w.write_sample((ch[i].clamp(-1.0, 1.0) * 32767.0).round() as i16)?;
                } else {
                    w.write_sample(ch[i])?;
                }
            }
        }
        w.finalize()?;
    }
    write_atomic(path, &buf.into_inner())
}

fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > 1e-12 * sum {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

/// Resample one channel from `from` Hz to `to` Hz with a Kaiser-windowed sinc (beta 8.6,
/// 32 zero crossings each side), low-passed at the lower Nyquist frequency.
pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    resample_with(x, from, to, true)
}

/// [`resample`], with the per-phase table (`tabulate`) or the filter evaluated per tap.
fn resample_with(x: &[f32], from: u32, to: u32, tabulate: bool) -> Vec<f32> {
    if from == to || x.is_empty() || from == 0 || to == 0 {
        return x.to_vec();
    }
    let k = Kernel::new(from, to);
    let out_len = ((x.len() as f64) * k.ratio).round() as usize;
    // The output at n sits at input time n * down / up: an integer part and one of `up`
    // fractional phases. With few phases the filter is tabulated once per phase (44.1 to 16 kHz:
    // 160 phases; 192 to 16 kHz: 1), else evaluated per tap.
    let g = gcd(from, to);
    let (up, down) = (u64::from(to / g), u64::from(from / g));
    let taps = 2 * k.half.ceil() as usize + 2;
    if tabulate && (up as usize).saturating_mul(taps) <= 1 << 23 {
        let table: Vec<(i64, Vec<f64>)> = (0..up)
            .map(|p| {
                let frac = p as f64 / up as f64;
                // Input i = base + j sits d = j - frac from the output: j in [frac - half, frac + half].
                let first = (frac - k.half).ceil() as i64;
                let last = (frac + k.half).floor() as i64;
                (first, (first..=last).map(|j| k.weight(j as f64 - frac)).collect())
            })
            .collect();
        return (0..out_len as u64)
            .map(|n| {
                let (base, p) = ((n * down / up) as i64, (n * down % up) as usize);
                let (first, w) = &table[p];
                let mut acc = 0.0;
                for (j, wj) in w.iter().enumerate() {
                    let i = base + first + j as i64;
                    if i >= 0 && (i as usize) < x.len() {
                        acc += f64::from(x[i as usize]) * wj;
                    }
                }
                acc as f32
            })
            .collect();
    }
    (0..out_len)
        .map(|n| {
            let t = n as f64 / k.ratio;
            let lo = (t - k.half).ceil().max(0.0) as usize;
            let hi = ((t + k.half).floor() as usize).min(x.len() - 1);
            x.iter().enumerate().take(hi + 1).skip(lo).map(|(i, &v)| f64::from(v) * k.weight(i as f64 - t)).sum::<f64>() as f32
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The Kaiser-windowed sinc low-pass of the resampler (32 zero crossings, beta 8.6, cutoff at
/// 97% of the lower Nyquist frequency).
struct Kernel {
    ratio: f64,
    cutoff: f64,
    half: f64,
    i0b: f64,
}

impl Kernel {
    const ZEROS: f64 = 32.0;
    const BETA: f64 = 8.6;

    fn new(from: u32, to: u32) -> Self {
        let ratio = f64::from(to) / f64::from(from);
        let cutoff = ratio.min(1.0) * 0.97;
        Kernel { ratio, cutoff, half: Self::ZEROS / cutoff, i0b: bessel_i0(Self::BETA) }
    }

    /// The weight of an input sample `d` input samples from the output's position.
    fn weight(&self, d: f64) -> f64 {
        if d.abs() > self.half {
            return 0.0;
        }
        let arg = std::f64::consts::PI * d * self.cutoff;
        let sinc = if d.abs() < 1e-12 { 1.0 } else { arg.sin() / arg };
        let w = (1.0 - (d / self.half).powi(2)).max(0.0);
        self.cutoff * sinc * bessel_i0(Self::BETA * w.sqrt()) / self.i0b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32 * 0.5).collect()
    }

    #[test]
    fn the_tabulated_resampler_equals_the_filter_evaluated_per_tap() {
        let mut rng = crate::stats::Rng::new(7);
        let x: Vec<f32> = (0..3000).map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0).collect();
        for (from, to) in [(192_000, 16_000), (44_100, 16_000), (16_000, 48_000), (48_000, 44_100), (22_050, 32_000)] {
            let (a, b) = (resample_with(&x, from, to, true), resample_with(&x, from, to, false));
            assert_eq!(a.len(), b.len());
            let err = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            // The table places each output at its exact rational phase, the per-tap path at
            // n / ratio in floating point: the same filter up to rounding.
            assert!(err < 1e-6, "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn resampling_keeps_a_tone_and_removes_what_cannot_be_represented() {
        let x = sine(1000.0, 48_000, 4800);
        let y = resample(&x, 48_000, 24_000);
        assert_eq!(y.len(), 2400);
        let want = sine(1000.0, 24_000, 2400);
        // Away from the edges the tone is reproduced closely.
        let err = y[200..2200].iter().zip(&want[200..2200]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 2e-3, "{err}");
        // A tone above the new Nyquist frequency is filtered out, not aliased.
        let hi = resample(&sine(15_000.0, 48_000, 4800), 48_000, 24_000);
        let rms = (hi[200..2200].iter().map(|v| v * v).sum::<f32>() / 2000.0).sqrt();
        assert!(rms < 5e-3, "{rms}");
        // Upsampling keeps the tone too.
        let up = resample(&sine(440.0, 16_000, 1600), 16_000, 24_000);
        let want = sine(440.0, 24_000, 2400);
        let err = up[200..2200].iter().zip(&want[200..2200]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 2e-3, "{err}");
    }

    #[test]
    fn wav_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audio { sample_rate: 24_000, channels: vec![sine(440.0, 24_000, 1000)] };
        let p = dir.path().join("a.wav");
        write_wav(&p, &a, false).unwrap();
        assert_eq!(read_wav(&p).unwrap(), a);
        write_wav(&p, &a, true).unwrap();
        let b = read_wav(&p).unwrap();
        assert!(b.channels[0].iter().zip(&a.channels[0]).all(|(x, y)| (x - y).abs() < 1e-4));

        let empty = Audio { sample_rate: 24_000, channels: vec![vec![]] };
        write_wav(&p, &empty, false).unwrap();
        assert!(read_wav(&p).unwrap_err().to_string().contains("holds no samples"));
        let nan = Audio { sample_rate: 24_000, channels: vec![vec![0.0, f32::NAN]] };
        let before = std::fs::read(&p).unwrap();
        assert!(write_wav(&p, &nan, false).unwrap_err().to_string().contains("NaN or infinite audio"));
        assert_eq!(std::fs::read(&p).unwrap(), before, "a refused write leaves the file as it was");
        // Written by another tool, it is refused on reading.
        let spec = hound::WavSpec { channels: 1, sample_rate: 24_000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        w.write_sample(0.0f32).unwrap();
        w.write_sample(f32::NAN).unwrap();
        w.finalize().unwrap();
        assert!(read_wav(&p).unwrap_err().to_string().contains("NaN"));
        // Rates no audio uses are refused before anything is sized from them.
        for rate in [0u32, 1, 999_999] {
            let spec = hound::WavSpec { sample_rate: rate.max(1), ..spec };
            let mut w = hound::WavWriter::create(&p, spec).unwrap();
            w.write_sample(0.5f32).unwrap();
            w.finalize().unwrap();
            if rate == 0 {
                // hound refuses to write rate 0: patch the header's rate field (bytes 24..28).
                let mut b = std::fs::read(&p).unwrap();
                b[24..28].copy_from_slice(&0u32.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            }
            let e = format!("{:#}", read_wav(&p).unwrap_err());
            assert!(e.contains("sample rate") || e.contains("cannot read"), "{rate}: {e}");
        }
        std::fs::write(&p, b"RIFF....not a wav").unwrap();
        assert!(format!("{:#}", read_wav(&p).unwrap_err()).contains("cannot read"));
        write_wav(&p, &a, false).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 7]).unwrap();
        assert!(format!("{:#}", read_wav(&p).unwrap_err()).contains("corrupt or truncated"));
    }
}
