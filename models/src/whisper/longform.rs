//! Long-form transcription: audio of any length in ChunkedProcessor's `.whisper` windows
//! (30 s, 10% overlap), each decoded with timestamps, the segments joined on one time line.
//!
//! A window that starts inside a word makes Whisper stumble (small models hallucinate for the
//! whole window), so each window after the first starts at the quietest 200 ms of the last
//! two overlaps' worth (6 s) of the previous one ([`ChunkedProcessor::quiet_offsets`]). Each window then owns
//! the segments that *start* between its own start and the next window's: speech cut off at a
//! window's end is heard whole by the next window when it began after that window's start,
//! and kept from the earlier window otherwise. One window is in memory at a time, so MLX
//! memory stays flat as the audio grows.
use mlx_rs::Array;

use super::audio::{LogMel, SAMPLE_RATE};
use super::filters::{segments, LogitFilters, Timestamps};
use super::{BeamSearch, DecodeOptions, Whisper};
use crate::chunked::ChunkedProcessor;
use crate::error::{Error, Result};

/// Decoding settings for [`transcribe`].
#[derive(Debug, Clone)]
pub struct LongForm {
    pub decode: DecodeOptions,
    /// Beam search with this many beams; greedy when `None`.
    pub beam: Option<usize>,
    /// Suppressed tokens; the timestamp rules are added.
    pub filters: LogitFilters,
    pub timestamps: Timestamps,
    /// The most tokens per window (openai-whisper's sample_len: 224).
    pub max_new: usize,
    pub chunks: ChunkedProcessor,
}

/// A transcribed stretch of audio, in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedSegment {
    pub start: f64,
    pub end: f64,
    /// Text tokens only.
    pub tokens: Vec<i32>,
    /// The window that produced it.
    pub window: usize,
}

/// Transcribe mono 16 kHz `samples`. `prompt(encoded)` gives each window's start-of-transcript
/// sequence, ending in the task token (no `<|notimestamps|>`); it may detect the language from
/// the encoded window. `progress(done, total)` follows each window.
pub fn transcribe(model: &Whisper, samples: &[f32], lf: &LongForm, mut prompt: impl FnMut(&Array) -> Result<Vec<i32>>, mut progress: impl FnMut(usize, usize)) -> Result<Vec<TimedSegment>> {
    if samples.is_empty() {
        return Err(Error::InvalidArgument("audio is empty (0 samples)".into()));
    }
    let mel = LogMel::new(model.config.num_mel_bins)?;
    let sr = f64::from(SAMPLE_RATE);
    let len = i32::try_from(samples.len()).map_err(|_| Error::InvalidArgument(format!("{} samples: too long for one signal", samples.len())))?;
    let offsets = lf.chunks.quiet_offsets(samples, (SAMPLE_RATE / 5) as usize);
    let filters = LogitFilters { timestamps: Some(lf.timestamps), ..lf.filters.clone() };
    let eot = lf.timestamps.eot;
    let mut out = Vec::new();
    for (w, &start) in offsets.iter().enumerate() {
        let end = (start + lf.chunks.chunk).min(len);
        let window = &samples[start as usize..end as usize];
        let enc = model.encode(&mel.compute(&Array::from_slice(window, &[end - start]))?, lf.decode.kernel)?;
        let sot = prompt(&enc)?;
        let mut tokens = match lf.beam {
            Some(beam) => model.beam_search(&enc, &sot, &BeamSearch { beam, max_new: lf.max_new, eot }, &lf.decode, &filters)?.tokens,
            None => model.greedy_with(&enc, &sot, lf.max_new, Some(eot), &lf.decode, &filters)?.remove(0),
        };
        if tokens.last() == Some(&eot) {
            tokens.pop();
        }
        let t0 = f64::from(start) / sr;
        let (segs, _unfinished) = segments(&tokens, lf.timestamps.begin, f64::from(end - start) / sr);
        let owned_to = offsets.get(w + 1).map_or(f64::INFINITY, |&o| f64::from(o) / sr);
        out.extend(segs.into_iter().map(|s| TimedSegment { start: t0 + s.start, end: t0 + s.end, tokens: s.tokens, window: w }).filter(|s| s.start < owned_to));
        progress(w + 1, offsets.len());
    }
    Ok(out)
}
