//! Silero VAD (the 16 kHz model the `silero-vad` package ships, v5 and later) on MLX, and
//! `get_speech_timestamps`' segmentation of its probabilities, ported from the package.
//!
//! The model reads 512-sample chunks, each with the 64 samples before it as context: a
//! magnitude STFT as a strided convolution (256-sample frames, hop 128, the frame padded on
//! the right by reflection), four convolutions with ReLU (strides 1, 2, 2, 1), an LSTM cell
//! carried from chunk to chunk, then ReLU, a 1x1 convolution and a sigmoid: one speech
//! probability per chunk.
//!
//! The naive path runs chunk by chunk as the package does (every chunk the whole model, its
//! probability read back before the next). The optimized path sees that only the LSTM cell
//! carries state: the STFT and the convolutions of every chunk run as one batch, the input
//! half of the cell's product too, and only the recurrence (a 128-wide cell) runs step by step,
//! on the host.
use std::path::Path;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use crate::checkpoint::Store;
use crate::error::{Error, Result};
use crate::Variant;

/// The model's sampling rate.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per chunk (one probability each).
pub const CHUNK: usize = 512;
/// Samples of the previous chunk each chunk sees.
const CONTEXT: usize = 64;
const HIDDEN: usize = 128;
const BINS: i32 = 129;

/// Silero VAD's 16 kHz network.
pub struct SileroVad {
    /// STFT basis as a convolution weight, `[258, 256, 1]` (MLX's `[out, k, in]`).
    basis: Array,
    /// Each encoder convolution: weight `[out, 3, in]`, bias `[out]`, stride.
    encoder: Vec<(Array, Array, i32)>,
    w_ih: Array,
    w_hh: Array,
    /// `b_ih + b_hh`, `[512]`.
    bias: Array,
    /// The head's 1x1 convolution, `[128]`, and its bias.
    head_w: Array,
    head_b: Array,
}

impl SileroVad {
    /// The weights as the package's `_model` holds them (`stft.forward_basis_buffer`,
    /// `encoder.{0..3}.reparam_conv`, `decoder.rnn`, `decoder.decoder.2`), from a safetensors
    /// file such as `harness/data/silero_vad_16k.safetensors`. Every tensor is checked for
    /// name and shape.
    pub fn load(path: &Path) -> Result<Self> {
        let store = Store::open(path)?;
        let vs = store.root();
        let basis = vs.tensor("stft.forward_basis_buffer", &[258, 1, 256])?;
        let mut encoder = Vec::new();
        for (i, (cin, cout, stride)) in [(BINS, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)].into_iter().enumerate() {
            let c = vs.pp(format!("encoder.{i}.reparam_conv"));
            let w = c.tensor("weight", &[cout, cin, 3])?;
            encoder.push((w.transpose_axes(&[0, 2, 1])?.contiguous()?, c.tensor("bias", &[cout])?, stride));
        }
        let rnn = vs.pp("decoder.rnn");
        let h = HIDDEN as i32;
        let w_ih = rnn.tensor("weight_ih", &[4 * h, h])?;
        let w_hh = rnn.tensor("weight_hh", &[4 * h, h])?;
        let bias = rnn.tensor("bias_ih", &[4 * h])?.add(rnn.tensor("bias_hh", &[4 * h])?)?;
        let head = vs.pp("decoder.decoder.2");
        let head_w = head.tensor("weight", &[1, h, 1])?.reshape(&[h])?;
        let head_b = head.tensor("bias", &[1])?;
        store.finish()?;
        let basis = basis.transpose_axes(&[0, 2, 1])?.contiguous()?;
        let me = Self { basis, encoder, w_ih, w_hh, bias, head_w, head_b };
        mlx_rs::transforms::eval([&me.basis, &me.w_ih, &me.w_hh, &me.bias, &me.head_w, &me.head_b].into_iter().chain(me.encoder.iter().flat_map(|(w, b, _)| [w, b])))?;
        Ok(me)
    }

    /// The encoder's features of chunks with their context, `[n, 576]` to `[n, 128]`.
    fn features(&self, x: &Array) -> Result<Array> {
        let n = x.shape()[0];
        let len = (CHUNK + CONTEXT) as i32;
        // Reflection padding of 64 on the right: samples len-2 down to len-65.
        let tail: Vec<i32> = (0..CONTEXT as i32).map(|j| len - 2 - j).collect();
        let padded = ops::concatenate(&[x.clone(), x.take_axis(Array::from_slice(&tail, &[CONTEXT as i32]), 1)?], 1)?;
        let spec = ops::conv1d(padded.expand_dims(-1)?, &self.basis, 128, 0, 1, 1)?;
        let (re, im) = (spec.index((.., .., ..BINS)), spec.index((.., .., BINS..)));
        let mut h = ops::sqrt(&re.square()?.add(im.square()?)?)?;
        for (w, b, stride) in &self.encoder {
            h = ops::maximum(&ops::conv1d(&h, w, *stride, 1, 1, 1)?.add(b)?, mlx_rs::array!(0.0f32))?;
        }
        // [n, 1, 128]: the last convolution leaves one frame.
        Ok(h.reshape(&[n, HIDDEN as i32])?)
    }

    /// Chunks `i0..i0 + n` of `audio` with their contexts, `[n, 576]`: chunk `i` is samples
    /// `512 i .. 512 (i + 1)` (zeros past the end) after the 64 before it (zeros before the
    /// start), as the package's stateful model sees them.
    fn chunks(audio: &[f32], i0: usize, n: usize) -> Array {
        let w = CHUNK + CONTEXT;
        let mut buf = vec![0f32; n * w];
        for (k, row) in buf.chunks_mut(w).enumerate() {
            let start = ((i0 + k) * CHUNK) as isize - CONTEXT as isize;
            for (j, v) in row.iter_mut().enumerate() {
                let s = start + j as isize;
                if s >= 0 && (s as usize) < audio.len() {
                    *v = audio[s as usize];
                }
            }
        }
        Array::from_slice(&buf, &[n as i32, w as i32])
    }

    /// The speech probability of every 512-sample chunk of mono 16 kHz `audio` (the last chunk
    /// padded with zeros), from a fresh state: what `get_speech_timestamps` computes first.
    pub fn probabilities(&self, audio: &[f32], variant: Variant) -> Result<Vec<f32>> {
        if audio.is_empty() {
            return Err(Error::InvalidArgument("VAD of empty audio".into()));
        }
        if audio.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("VAD input holds NaN or infinite samples".into()));
        }
        let n = audio.len().div_ceil(CHUNK);
        match variant {
            Variant::Naive => self.probabilities_stepwise(audio, n),
            Variant::Optimized => self.probabilities_batched(audio, n),
        }
    }

    /// The package's loop: each chunk through the whole network, the state carried in MLX
    /// arrays and the probability read back.
    fn probabilities_stepwise(&self, audio: &[f32], n: usize) -> Result<Vec<f32>> {
        let hdim = HIDDEN as i32;
        let mut h = ops::zeros::<f32>(&[1, hdim])?;
        let mut c = ops::zeros::<f32>(&[1, hdim])?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let f = self.features(&Self::chunks(audio, i, 1))?;
            let g = f.matmul(self.w_ih.t())?.add(h.matmul(self.w_hh.t())?)?.add(&self.bias)?;
            let gate = |k: i32| g.index((.., k * hdim..(k + 1) * hdim));
            let (ig, fg, gg, og) = (ops::sigmoid(gate(0))?, ops::sigmoid(gate(1))?, ops::tanh(gate(2))?, ops::sigmoid(gate(3))?);
            c = fg.multiply(&c)?.add(ig.multiply(&gg)?)?;
            h = og.multiply(ops::tanh(&c)?)?;
            let logit = ops::maximum(&h, mlx_rs::array!(0.0f32))?.matmul(self.head_w.reshape(&[hdim, 1])?)?.add(&self.head_b)?;
            let p = ops::sigmoid(&logit)?;
            p.eval()?;
            out.push(p.as_slice::<f32>()[0]);
        }
        Ok(out)
    }

    /// Every chunk's features in one batch (in blocks, to bound memory), the cell's input
    /// product with them, then the recurrence and the head on the host.
    fn probabilities_batched(&self, audio: &[f32], n: usize) -> Result<Vec<f32>> {
        const BLOCK: usize = 4096;
        let hd = HIDDEN;
        // Evaluated at load: read in place.
        let w_hh = self.w_hh.as_slice::<f32>();
        let head_w = self.head_w.as_slice::<f32>();
        let head_b = self.head_b.as_slice::<f32>()[0];
        let (mut h, mut c) = (vec![0f32; hd], vec![0f32; hd]);
        let mut g = vec![0f32; 4 * hd];
        let mut out = Vec::with_capacity(n);
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        for i0 in (0..n).step_by(BLOCK) {
            let m = BLOCK.min(n - i0);
            let gx = self.features(&Self::chunks(audio, i0, m))?.matmul(self.w_ih.t())?.add(&self.bias)?;
            gx.eval()?;
            let gx = gx.as_slice::<f32>();
            for k in 0..m {
                let row = &gx[k * 4 * hd..(k + 1) * 4 * hd];
                for (j, gj) in g.iter_mut().enumerate() {
                    let w = &w_hh[j * hd..(j + 1) * hd];
                    *gj = row[j] + w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>();
                }
                for u in 0..hd {
                    let (ig, fg, gg, og) = (sigmoid(g[u]), sigmoid(g[hd + u]), g[2 * hd + u].tanh(), sigmoid(g[3 * hd + u]));
                    c[u] = fg * c[u] + ig * gg;
                    h[u] = og * c[u].tanh();
                }
                let logit = head_b + h.iter().zip(head_w).map(|(x, w)| x.max(0.0) * w).sum::<f32>();
                out.push(sigmoid(logit));
            }
        }
        Ok(out)
    }
}

/// `get_speech_timestamps`' options, with the package's defaults.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadOptions {
    /// Probabilities at or above this start speech.
    pub threshold: f64,
    /// Speech ends below this (default: `threshold - 0.15`, at least 0.01).
    pub neg_threshold: Option<f64>,
    pub min_speech_duration_ms: f64,
    pub max_speech_duration_s: f64,
    pub min_silence_duration_ms: f64,
    pub speech_pad_ms: f64,
    pub min_silence_at_max_speech: f64,
    pub use_max_poss_sil_at_max_speech: bool,
    /// Only in the fixtures' option sets.
    #[serde(rename = "name")]
    pub label: Option<String>,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 250.0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 100.0,
            speech_pad_ms: 30.0,
            min_silence_at_max_speech: 98.0,
            use_max_poss_sil_at_max_speech: true,
            label: None,
        }
    }
}

impl VadOptions {
    /// Refuse options the segmentation cannot mean: thresholds outside (0, 1), negative or
    /// non-finite durations (the maximum speech duration may be infinite).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| Err(Error::InvalidArgument(format!("VAD {what} {v} is out of range")));
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return bad("threshold", self.threshold);
        }
        if let Some(t) = self.neg_threshold.filter(|t| !(*t > 0.0 && *t < 1.0)) {
            return bad("negative threshold", t);
        }
        for (what, v) in [
            ("min_speech_duration_ms", self.min_speech_duration_ms),
            ("min_silence_duration_ms", self.min_silence_duration_ms),
            ("speech_pad_ms", self.speech_pad_ms),
            ("min_silence_at_max_speech", self.min_silence_at_max_speech),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(what, v);
            }
        }
        if self.max_speech_duration_s.is_nan() || self.max_speech_duration_s <= 0.0 {
            return bad("max_speech_duration_s", self.max_speech_duration_s);
        }
        Ok(())
    }
}

/// Where a speech that grows too long may be cut (`get_speech_timestamps`' `temp_end`,
/// `prev_end`, `next_start` and `possible_ends`), cleared whenever a segment closes.
#[derive(Default)]
struct Cut {
    /// Where the current silence began (0: none).
    temp_end: i64,
    /// The last silence long enough to cut at (the legacy rule).
    prev_end: i64,
    next_start: i64,
    /// Silences seen inside the speech, with their lengths.
    possible_ends: Vec<(i64, i64)>,
}

impl Cut {
    fn clear(&mut self) {
        *self = Cut::default();
    }
}

/// Speech segments `[start, end)` in samples of audio `n_samples` long, from its chunk
/// probabilities, as `get_speech_timestamps` (silero-vad 6.2) makes them: hysteresis between
/// the threshold and the negative threshold, short silences bridged, short speech dropped,
/// long speech cut at its longest silence (or its last), then padded.
pub fn speech_timestamps(probs: &[f32], n_samples: usize, o: &VadOptions) -> Result<Vec<(i64, i64)>> {
    o.validate()?;
    let sr = f64::from(SAMPLE_RATE);
    let window = CHUNK as i64;
    let min_speech = sr * o.min_speech_duration_ms / 1000.0;
    let pad = sr * o.speech_pad_ms / 1000.0;
    let max_speech = sr * o.max_speech_duration_s - window as f64 - 2.0 * pad;
    let min_silence = sr * o.min_silence_duration_ms / 1000.0;
    let min_silence_at_max = sr * o.min_silence_at_max_speech / 1000.0;
    let neg = o.neg_threshold.unwrap_or((o.threshold - 0.15).max(0.01));
    let len = n_samples as i64;

    let mut triggered = false;
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    // The speech being built: its start, once there is one.
    let mut current: Option<i64> = None;
    let mut cut = Cut::default();
    for (i, &p) in probs.iter().enumerate() {
        let p = f64::from(p);
        let cur = window * i as i64;
        if p >= o.threshold && cut.temp_end != 0 {
            let sil = cur - cut.temp_end;
            if sil as f64 > min_silence_at_max {
                cut.possible_ends.push((cut.temp_end, sil));
            }
            cut.temp_end = 0;
            if cut.next_start < cut.prev_end {
                cut.next_start = cur;
            }
        }
        if p >= o.threshold && !triggered {
            triggered = true;
            current = Some(cur);
            continue;
        }
        if let (true, Some(start)) = (triggered, current) {
            if (cur - start) as f64 > max_speech {
                if o.use_max_poss_sil_at_max_speech && !cut.possible_ends.is_empty() {
                    // The longest silence; the first of equals, as Python's max.
                    let (end, dur) = cut.possible_ends.iter().copied().fold(cut.possible_ends[0], |best, e| if e.1 > best.1 { e } else { best });
                    speeches.push((start, end));
                    let next = end + dur;
                    if next < end + cur {
                        current = Some(next);
                    } else {
                        current = None;
                        triggered = false;
                    }
                    cut.clear();
                } else if cut.prev_end != 0 {
                    speeches.push((start, cut.prev_end));
                    if cut.next_start < cut.prev_end {
                        current = None;
                        triggered = false;
                    } else {
                        current = Some(cut.next_start);
                    }
                    cut.clear();
                } else {
                    speeches.push((start, cur));
                    current = None;
                    triggered = false;
                    cut.clear();
                    continue;
                }
            }
        }
        if p < neg && triggered {
            if cut.temp_end == 0 {
                cut.temp_end = cur;
            }
            let sil_now = cur - cut.temp_end;
            if !o.use_max_poss_sil_at_max_speech && sil_now as f64 > min_silence_at_max {
                cut.prev_end = cut.temp_end;
            }
            if (sil_now as f64) < min_silence {
                continue;
            }
            if let Some(start) = current {
                if (cut.temp_end - start) as f64 > min_speech {
                    speeches.push((start, cut.temp_end));
                }
            }
            current = None;
            triggered = false;
            cut.clear();
        }
    }
    if let Some(start) = current {
        if (len - start) as f64 > min_speech {
            speeches.push((start, len));
        }
    }
    // Padding, and the silence between two close segments shared between them.
    let k = speeches.len();
    for i in 0..k {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - pad).max(0.0) as i64;
        }
        if i + 1 < k {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if (silence as f64) < 2.0 * pad {
                let half = silence.div_euclid(2);
                speeches[i].1 += half;
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0);
            } else {
                speeches[i].1 = (len as f64).min(speeches[i].1 as f64 + pad) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - pad).max(0.0) as i64;
            }
        } else {
            speeches[i].1 = (len as f64).min(speeches[i].1 as f64 + pad) as i64;
        }
    }
    Ok(speeches)
}

/// The speech of a recording joined end to end, and the way back from a time in it to the
/// recording's (as faster-whisper's `collect_chunks` and its timestamp map): `transcribe
/// --vad` decodes only this.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechMap {
    /// Each segment's `[start, end)` in the recording, in samples, in order, disjoint.
    segments: Vec<(i64, i64)>,
}

impl SpeechMap {
    /// `segments` clipped to the audio's `len` samples; empty ones dropped; they must be in
    /// order and disjoint (as [`speech_timestamps`] gives them).
    pub fn new(segments: &[(i64, i64)], len: usize) -> Result<Self> {
        let len = len as i64;
        let mut out: Vec<(i64, i64)> = Vec::new();
        for &(a, b) in segments {
            let (a, b) = (a.clamp(0, len), b.clamp(0, len));
            if b <= a {
                continue;
            }
            if out.last().is_some_and(|&(_, e)| a < e) {
                return Err(Error::InvalidArgument(format!("speech segments overlap or are out of order at sample {a}")));
            }
            out.push((a, b));
        }
        Ok(Self { segments: out })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments in samples.
    pub fn segments(&self) -> &[(i64, i64)] {
        &self.segments
    }

    /// Samples of speech.
    pub fn speech_samples(&self) -> i64 {
        self.segments.iter().map(|(a, b)| b - a).sum()
    }

    /// The speech of `audio`, joined.
    pub fn collect(&self, audio: &[f32]) -> Vec<f32> {
        self.segments.iter().flat_map(|&(a, b)| audio[a as usize..b as usize].iter().copied()).collect()
    }

    /// A time in the joined speech (seconds) as a time in the recording: within the segment
    /// that holds it (a time at a seam belongs to the segment it ends, so an end stays before
    /// the silence that follows).
    pub fn original_time(&self, t: f64) -> f64 {
        let sr = f64::from(SAMPLE_RATE);
        let mut at = 0.0;
        for &(a, b) in &self.segments {
            let len = (b - a) as f64 / sr;
            if t <= at + len {
                return a as f64 / sr + (t - at).max(0.0);
            }
            at += len;
        }
        self.segments.last().map_or(t, |&(_, b)| b as f64 / sr + (t - at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(pattern: &[(f32, usize)]) -> Vec<f32> {
        pattern.iter().flat_map(|&(p, n)| std::iter::repeat_n(p, n)).collect()
    }

    #[test]
    fn hysteresis_bridges_short_silences_and_pads() {
        // 20 chunks of speech, 2 of silence (64 ms: under the 100 ms bridge), 20 of speech,
        // 10 of silence, 20 of speech.
        let p = probs(&[(0.1, 5), (0.9, 20), (0.1, 2), (0.9, 20), (0.1, 10), (0.9, 20), (0.1, 5)]);
        let n = p.len() * CHUNK;
        let s = speech_timestamps(&p, n, &VadOptions::default()).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        // The first starts 480 samples (30 ms) before chunk 5.
        assert_eq!(s[0].0, 5 * 512 - 480);
        // Between the two: 10 chunks of silence (5120 samples) > 2 pads, so each gets 480.
        assert_eq!(s[0].1, 47 * 512 + 480);
        assert_eq!(s[1].0, 57 * 512 - 480);
    }

    #[test]
    fn probabilities_between_the_thresholds_keep_the_state() {
        // 0.4 is under 0.5 (no start) and above 0.35 (no end).
        let p = probs(&[(0.4, 10), (0.9, 10), (0.4, 30), (0.1, 10)]);
        let s = speech_timestamps(&p, p.len() * CHUNK, &VadOptions::default()).unwrap();
        assert_eq!(s, vec![(10 * 512 - 480, 50 * 512 + 480)]);
    }

    #[test]
    fn joined_speech_maps_back_to_the_recording() {
        let audio: Vec<f32> = (0..48_000).map(|i| i as f32).collect();
        // 1 s to 1.5 s, 2 s to 2.25 s, and one past the end.
        let m = SpeechMap::new(&[(16_000, 24_000), (32_000, 36_000), (47_000, 60_000)], audio.len()).unwrap();
        let joined = m.collect(&audio);
        assert_eq!(joined.len(), 8_000 + 4_000 + 1_000);
        assert_eq!((joined[0], joined[8_000], joined[12_000]), (16_000.0, 32_000.0, 47_000.0));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(m.original_time(0.0), 1.0));
        assert!(close(m.original_time(0.25), 1.25));
        // The seam belongs to the segment it ends; just past it, the next one.
        assert!(close(m.original_time(0.5), 1.5));
        assert!(close(m.original_time(0.5 + 1e-6), 2.0 + 1e-6));
        // The last segment is clipped to the audio: 47000 to 48000 samples.
        assert!(close(m.original_time(0.8), 47_000.0 / 16_000.0 + 0.05));
        assert!(SpeechMap::new(&[(10, 20), (15, 30)], 100).is_err());
        assert!(SpeechMap::new(&[], 100).unwrap().is_empty());
    }

    #[test]
    fn short_speech_is_dropped_and_options_are_checked() {
        let p = probs(&[(0.1, 5), (0.9, 3), (0.1, 20)]);
        assert!(speech_timestamps(&p, p.len() * CHUNK, &VadOptions::default()).unwrap().is_empty());
        for bad in [VadOptions { threshold: 1.5, ..Default::default() }, VadOptions { speech_pad_ms: -1.0, ..Default::default() }, VadOptions { max_speech_duration_s: f64::NAN, ..Default::default() }]
        {
            assert!(speech_timestamps(&p, 100, &bad).is_err());
        }
    }
}
