//! openai-whisper's `transcribe`: the seek loop over 30 s windows of one log-mel of the whole
//! recording, each window decoded with timestamps and conditioned on the text before it
//! (`<|startofprev|>`), with temperature fallback on the compression-ratio and log-probability
//! thresholds, the no-speech skip, an initial prompt, and word timestamps (which also move
//! the seek to the last word's end).
//!
//! Decoding keeps openai-whisper's arithmetic where it decides something: log-probabilities of
//! the filtered logits summed in float32 (end-of-transcript included), the average over the
//! tokens plus one, the no-speech probability at `<|startoftranscript|>`, zlib's compression
//! ratio of the text, and for sampled candidates the best sum per token. Sampling at a
//! temperature above zero draws from a seeded generator of our own, so those windows match
//! openai-whisper in distribution, not token for token; windows decoded at temperature 0 match
//! it exactly.
use std::io::Write;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use super::audio::LogMel;
use super::filters::{LogitFilters, Timestamps};
use super::timing::{self, Alignment, SegmentWords, Word};
use super::transcribe::{TranscribeOptions, Transcriber};
use super::{BeamSearch, DecodeOptions};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Mel frames in one 30 s window.
pub const N_FRAMES: usize = 3000;
/// Mel frames per second (hop 160 at 16 kHz).
const FRAMES_PER_SECOND: f64 = 100.0;
/// Mel frames per timestamp step (two frames per encoder position).
const INPUT_STRIDE: i64 = 2;

/// openai-whisper's `transcribe` options, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SeekOptions {
    /// Tried in order until a decode passes the thresholds (`0, 0.2, ..., 1.0`).
    pub temperatures: Vec<f32>,
    /// Candidates sampled at a temperature above zero; the best per-token log-probability wins.
    pub best_of: usize,
    /// A window decoded at least this repetitive (zlib's ratio) falls back (2.4).
    pub compression_ratio_threshold: Option<f64>,
    /// A window whose mean log-probability is below this falls back (-1.0).
    pub logprob_threshold: Option<f64>,
    /// A window with `<|nospeech|>` likelier than this and a failing log-probability is
    /// silence: skipped (0.6).
    pub no_speech_threshold: Option<f64>,
    /// Prompt each window with the text before it (`<|startofprev|>`); reset after a window
    /// decoded above temperature 0.5.
    pub condition_on_previous_text: bool,
    /// Text prompting the first window (names, spelling, style).
    pub initial_prompt: Option<String>,
    /// Put `initial_prompt` before every window's prompt, not only the first.
    pub carry_initial_prompt: bool,
    /// Word-level timestamps; the seek then moves to the last word's end.
    pub word_timestamps: bool,
    pub prepend_punctuations: String,
    pub append_punctuations: String,
    /// Seed of the generator that samples above temperature 0.
    pub seed: u64,
}

impl Default for SeekOptions {
    fn default() -> Self {
        Self {
            temperatures: (0..=5).map(|i| i as f32 * 0.2).collect(),
            best_of: 5,
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            carry_initial_prompt: false,
            word_timestamps: false,
            prepend_punctuations: timing::PREPEND_PUNCTUATIONS.into(),
            append_punctuations: timing::APPEND_PUNCTUATIONS.into(),
            seed: 0,
        }
    }
}

impl SeekOptions {
    /// Whether a window decoded with these statistics is decoded again hotter: too
    /// repetitive or too unlikely, unless it is silence (openai-whisper's
    /// `decode_with_fallback`).
    pub fn needs_fallback(&self, compression_ratio: f64, avg_logprob: f64, no_speech_prob: f64) -> bool {
        let failed = self.compression_ratio_threshold.is_some_and(|c| compression_ratio > c) || self.logprob_threshold.is_some_and(|l| avg_logprob < l);
        let silence = matches!((self.no_speech_threshold, self.logprob_threshold), (Some(ns), Some(l)) if no_speech_prob > ns && avg_logprob < l);
        failed && !silence
    }

    /// Whether a window's final decode is skipped as silence: `<|nospeech|>` likelier than
    /// the threshold and the log-probability not above its threshold.
    pub fn is_silence(&self, avg_logprob: f64, no_speech_prob: f64) -> bool {
        self.no_speech_threshold.is_some_and(|ns| no_speech_prob > ns) && !self.logprob_threshold.is_some_and(|l| avg_logprob > l)
    }

    /// Refuse settings openai-whisper would fail on or that cannot mean anything.
    pub fn validate(&self) -> Result<()> {
        if self.temperatures.is_empty() {
            return Err(Error::InvalidArgument("at least one temperature".into()));
        }
        if let Some(t) = self.temperatures.iter().find(|t| !t.is_finite() || **t < 0.0) {
            return Err(Error::InvalidArgument(format!("temperature {t}: expected a finite value of at least 0")));
        }
        if self.best_of == 0 {
            return Err(Error::InvalidArgument("best-of must be at least 1".into()));
        }
        for (name, v) in [("compression-ratio threshold", self.compression_ratio_threshold), ("log-probability threshold", self.logprob_threshold), ("no-speech threshold", self.no_speech_threshold)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(Error::InvalidArgument(format!("{name}: not a finite number")));
            }
        }
        Ok(())
    }
}

/// One segment, as openai-whisper's `transcribe` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeekSegment {
    /// The window's first mel frame.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    /// Its text, as decoded (with its leading space); empty for an empty segment.
    pub text: String,
    /// Its tokens, timestamps included.
    pub tokens: Vec<i32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
    /// With word timestamps.
    pub words: Vec<Word>,
}

/// A decoded candidate: its tokens (end-of-transcript excluded) and summed log-probability.
type Candidate = (Vec<i32>, f32);

/// One window's decode.
#[derive(Debug, Clone)]
struct WindowResult {
    /// Without end-of-transcript.
    tokens: Vec<i32>,
    avg_logprob: f64,
    no_speech_prob: f64,
    temperature: f32,
    compression_ratio: f64,
}

/// zlib's compression ratio of `text` (bytes over compressed bytes, level 6), the measure of
/// repetition openai-whisper's fallback uses.
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    let packed = z.write_all(bytes).and_then(|()| z.finish()).unwrap_or_default();
    bytes.len() as f64 / packed.len().max(1) as f64
}

/// Pick a token from one row of filtered logits: the first maximum at temperature 0, a draw
/// from `softmax(logits / t)` otherwise. Also its log-probability under `softmax(logits)`.
fn pick(row: &[f32], temperature: f32, rng: &mut Rng) -> (usize, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    let first_max = row.iter().position(|&x| x == max).unwrap_or(0);
    let tok = if temperature == 0.0 {
        first_max
    } else {
        let w: Vec<f64> = row.iter().map(|&x| (f64::from(x - max) / f64::from(temperature)).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut u = rng.uniform() * total;
        let mut chosen = first_max;
        for (i, &p) in w.iter().enumerate() {
            if p > 0.0 {
                chosen = i;
                if u < p {
                    break;
                }
                u -= p;
            }
        }
        chosen
    };
    (tok, row[tok] - lse)
}

/// The last word's end in `segs`, else the last segment's end (openai-whisper's `get_end`).
fn get_end(segs: &[SeekSegment]) -> Option<f64> {
    segs.iter().rev().flat_map(|s| s.words.iter().rev()).map(|w| w.end).next().or_else(|| segs.last().map(|s| s.end))
}

/// A transcript from the seek loop: the text, the segments, the language code.
#[derive(Debug, Clone, PartialEq)]
pub struct SeekTranscript {
    pub text: String,
    pub segments: Vec<SeekSegment>,
    pub language: String,
    /// Windows decoded (fallbacks not counted).
    pub windows: usize,
}

/// Special tokens the seek loop uses.
struct Specials {
    eot: i32,
    no_timestamps: i32,
    sot_prev: i32,
    no_speech: Option<i32>,
}

impl Transcriber {
    fn specials(&self) -> Result<Specials> {
        let need = |s: &str| self.tokenizer.special_id(s).ok_or_else(|| Error::InvalidArgument(format!("tokenizer.json lacks {s}")));
        Ok(Specials {
            eot: self.model.config.eos_token_id,
            no_timestamps: need("<|notimestamps|>")?,
            sot_prev: need("<|startofprev|>")?,
            no_speech: self.tokenizer.special_id("<|nospeech|>").or_else(|| self.tokenizer.special_id("<|nocaptions|>")),
        })
    }

    /// The most tokens a window decodes after `initial`: openai-whisper's `sample_len`
    /// (224), and no more than leave the last one the text context's final position (its loop
    /// stops once the tokens pass `n_text_ctx`).
    fn max_new(&self, initial: &[i32]) -> usize {
        let n_ctx = self.model.config.max_target_positions as usize;
        crate::whisper::transcribe::MAX_NEW_TOKENS.min((n_ctx + 1).saturating_sub(initial.len()))
    }

    /// Decode one window from `initial` (`<|startofprev|>` and the prompt, then the start of
    /// transcript at `sot_index`) with `n` rows at `temperature`: each row's tokens (through
    /// end-of-transcript, excluded) and summed log-probability, and the no-speech probability.
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        enc: &Array,
        initial: &[i32],
        sot_index: usize,
        n: usize,
        temperature: f32,
        filters: &LogitFilters,
        decode: &DecodeOptions,
        sp: &Specials,
        rng: &mut Rng,
    ) -> Result<(Vec<Candidate>, f64)> {
        let model = &self.model;
        let max_new = self.max_new(initial);
        let vocab = model.config.vocab_size as usize;
        let compiled = filters.compile(model.config.vocab_size)?;
        let mut ts = compiled.timestamp_state(n as i32)?;
        let s = enc.shape();
        let audio = if n > 1 { ops::broadcast_to(enc, &[n as i32, s[1], s[2]])? } else { enc.clone() };
        let mut input = ops::broadcast_to(Array::from_slice(initial, &[1, initial.len() as i32]), &[n as i32, initial.len() as i32])?;
        let mut state = model.new_state(decode);
        let mut rows: Vec<(Vec<i32>, f32)> = vec![(Vec::new(), 0.0); n];
        let mut done = vec![false; n];
        let mut no_speech = f64::NAN;
        for step in 0..max_new {
            let logits = model.decode_step(&input, &audio, &mut state)?;
            if step == 0 {
                if let Some(ns) = sp.no_speech {
                    let p = ops::softmax_axis(logits.index((0, sot_index as i32, ..)), -1, true)?;
                    no_speech = f64::from(p.index(ns).item_cast::<f32>());
                }
            }
            let last = compiled.apply(logits.index((.., -1, ..)), step, ts.as_ref())?.as_dtype(mlx_rs::Dtype::Float32)?;
            last.eval()?;
            let host = last.as_slice::<f32>();
            let mut next = vec![sp.eot; n];
            for r in 0..n {
                if done[r] {
                    continue;
                }
                let (tok, lp) = pick(&host[r * vocab..(r + 1) * vocab], temperature, rng);
                rows[r].1 += lp;
                next[r] = tok as i32;
                if next[r] == sp.eot {
                    done[r] = true;
                } else {
                    rows[r].0.push(next[r]);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let next_arr = Array::from_slice(&next, &[n as i32]);
            if let (Some(st), Some(tsr)) = (&mut ts, &compiled.timestamps) {
                st.push(tsr, &next_arr)?;
            }
            input = next_arr.reshape(&[n as i32, 1])?;
        }
        Ok((rows, no_speech))
    }

    /// One window at one temperature (openai-whisper's `DecodingTask.run`).
    #[allow(clippy::too_many_arguments)]
    fn decode_window(
        &self,
        enc: &Array,
        initial: &[i32],
        sot_index: usize,
        temperature: f32,
        beam: Option<usize>,
        so: &SeekOptions,
        filters: &LogitFilters,
        decode: &DecodeOptions,
        sp: &Specials,
        rng: &mut Rng,
    ) -> Result<WindowResult> {
        let (tokens, sum, no_speech_prob) = match beam.filter(|_| temperature == 0.0) {
            Some(beam) => {
                let r = self.model.beam_search(enc, initial, &BeamSearch { beam, max_new: self.max_new(initial), eot: sp.eot }, decode, filters)?;
                // The no-speech probability from the prompt's own pass.
                let no_speech = match sp.no_speech {
                    Some(ns) => {
                        let mut state = self.model.new_state(decode);
                        let logits = self.model.decode_step(&Array::from_slice(initial, &[1, initial.len() as i32]), enc, &mut state)?;
                        f64::from(ops::softmax_axis(logits.index((0, sot_index as i32, ..)), -1, true)?.index(ns).item_cast::<f32>())
                    }
                    None => f64::NAN,
                };
                (r.tokens, r.sum_logprob, no_speech)
            }
            None => {
                let n = if temperature > 0.0 { so.best_of } else { 1 };
                let (rows, no_speech) = self.sample(enc, initial, sot_index, n, temperature, filters, decode, sp, rng)?;
                // The best sum per token (openai-whisper's MaximumLikelihoodRanker, no length
                // penalty); the first on ties.
                let score = |(t, lp): &(Vec<i32>, f32)| f64::from(*lp) / t.len() as f64;
                let mut best = 0;
                for (i, r) in rows.iter().enumerate() {
                    if score(r) > score(&rows[best]) {
                        best = i;
                    }
                }
                let (t, lp) = rows.into_iter().nth(best).ok_or_else(|| Error::Mlx("no candidate decoded".into()))?;
                (t, f64::from(lp), no_speech)
            }
        };
        let text = self.tokenizer.decode(&tokens);
        Ok(WindowResult {
            avg_logprob: sum / (tokens.len() + 1) as f64,
            compression_ratio: compression_ratio(text.trim()),
            tokens,
            no_speech_prob,
            temperature,
        })
    }

    /// The alignment heads for word timestamps: the model folder's, else openai-whisper's for
    /// the released size of this shape, else every head of the last half of the layers.
    pub fn alignment_heads(&self) -> Vec<(usize, usize)> {
        let c = &self.model.config;
        self.heads
            .clone()
            .or_else(|| timing::released_alignment_heads(c.vocab_size, c.num_mel_bins, c.decoder_layers, c.d_model))
            .unwrap_or_else(|| timing::default_alignment_heads(c.decoder_layers as usize, c.decoder_attention_heads as usize))
    }

    /// Give one window's segments their words (openai-whisper's `add_word_timestamps`).
    #[allow(clippy::too_many_arguments)]
    fn add_words(
        &self,
        segs: &mut [SeekSegment],
        enc: &Array,
        num_frames: usize,
        sot_seq: &[i32],
        language: &str,
        so: &SeekOptions,
        decode: &DecodeOptions,
        sp: &Specials,
        last_speech: f64,
    ) -> Result<()> {
        if segs.is_empty() {
            return Ok(());
        }
        let per_seg: Vec<Vec<i32>> = segs.iter().map(|s| s.tokens.iter().copied().filter(|&t| t < sp.eot).collect()).collect();
        let text: Vec<i32> = per_seg.concat();
        let alignment = if text.is_empty() {
            Vec::new()
        } else {
            let tokens: Vec<i32> = sot_seq.iter().copied().chain([sp.no_timestamps]).chain(text.iter().copied()).chain([sp.eot]).collect();
            let heads = self.alignment_heads();
            let (w, logits) = self.model.alignment(enc, &tokens, &heads, decode.kernel)?;
            let frames = w.shape()[2] as usize;
            let w = w.as_dtype(mlx_rs::Dtype::Float32)?;
            // Each text token's probability among the text tokens, from the position before it.
            let sl = sot_seq.len() as i32;
            let probs = ops::softmax_axis(logits.index((sl..sl + text.len() as i32, ..sp.eot)), -1, true)?;
            let picked = probs.take_along_axis(Array::from_slice(&text, &[text.len() as i32, 1]), 1)?.as_dtype(mlx_rs::Dtype::Float32)?;
            mlx_rs::transforms::eval([&w, &picked])?;
            let text_probs: Vec<f64> = picked.as_slice::<f32>().iter().map(|&p| f64::from(p)).collect();
            let decode_text = |ts: &[i32]| -> String {
                let body: Vec<i32> = ts.iter().copied().filter(|&t| t < sp.eot).collect();
                let mut s = self.tokenizer.decode(&body);
                for &t in ts.iter().filter(|&&t| t >= sp.eot) {
                    s.push_str(&self.tokenizer.special_content(t).unwrap_or_default());
                }
                s
            };
            let all: Vec<i32> = text.iter().copied().chain([sp.eot]).collect();
            let (words, word_tokens) = timing::split_to_word_tokens(&all, sp.eot, language, &decode_text);
            let a = Alignment {
                weights: w.as_slice::<f32>(),
                heads: heads.len(),
                rows: tokens.len(),
                frames,
                sot_len: sot_seq.len(),
                num_frames,
                text_probs: &text_probs,
                medfilt_width: 7,
            };
            a.words(words, word_tokens)
        };
        let mut sw: Vec<SegmentWords> = segs.iter().zip(per_seg).map(|(s, t)| SegmentWords { start: s.start, end: s.end, text_tokens: t, words: Vec::new() }).collect();
        let time_offset = segs[0].seek as f64 / FRAMES_PER_SECOND;
        timing::add_word_timestamps(&mut sw, alignment, time_offset, &so.prepend_punctuations, &so.append_punctuations, last_speech);
        for (s, w) in segs.iter_mut().zip(sw) {
            s.start = w.start;
            s.end = w.end;
            s.words = w.words;
        }
        Ok(())
    }

    /// Transcribe mono 16 kHz `samples` as openai-whisper's `transcribe` does. `progress(done,
    /// total)` follows the mel frames.
    pub fn transcribe_seek(&self, samples: &[f32], opts: &TranscribeOptions, so: &SeekOptions, mut progress: impl FnMut(usize, usize)) -> Result<SeekTranscript> {
        so.validate()?;
        let fixed = self.language(opts)?;
        let model = &self.model;
        let decode = DecodeOptions::for_variant(opts.variant);
        let sp = self.specials()?;
        let mel = LogMel::new(model.config.num_mel_bins)?.compute_padded(samples)?;
        let n_mels = mel.shape()[0];
        let content = mel.shape()[1] as usize - N_FRAMES;
        let window = |seek: usize, size: usize| -> Result<Array> {
            let part = mel.index((.., seek as i32..(seek + size) as i32));
            let part = if size < N_FRAMES { ops::concatenate(&[part, ops::zeros::<f32>(&[n_mels, (N_FRAMES - size) as i32])?], 1)? } else { part };
            Ok(part.reshape(&[1, n_mels, N_FRAMES as i32])?)
        };
        let langs = self.languages();
        // The language of the first 30 s, unless given.
        let lang = match (langs.is_empty(), fixed) {
            (true, _) => None,
            (false, Some(id)) => Some(id),
            (false, None) => {
                let ids: Vec<i32> = langs.iter().map(|(_, id)| *id).collect();
                Some(model.detect_language(&model.encode(&window(0, N_FRAMES.min(content.max(1)))?, decode.kernel)?, &ids)?.0)
            }
        };
        let language = lang.and_then(|id| langs.iter().find(|(_, i)| *i == id).map(|(c, _)| c.clone())).unwrap_or_else(|| "en".into());
        let sot_seq = self.sot_sequence(lang, true)?;
        let ts = Timestamps::new(sp.no_timestamps, sp.eot);
        let filters = LogitFilters { timestamps: Some(ts), ..self.filters.clone() };
        let n_ctx = model.config.max_target_positions as usize;
        let initial_prompt: Vec<i32> = match &so.initial_prompt {
            Some(p) => self.tokenizer.encode(&format!(" {}", p.trim()))?,
            None => Vec::new(),
        };
        let remaining = (n_ctx / 2 - 1).saturating_sub(initial_prompt.len());
        let mut all_tokens = initial_prompt.clone();
        let mut all_segments: Vec<SeekSegment> = Vec::new();
        let mut prompt_reset_since = 0;
        let mut last_speech = 0.0;
        let mut rng = Rng::new(so.seed);
        let mut seek = 0usize;
        let mut windows = 0;
        let mut stalled = 0;
        while seek < content {
            let time_offset = seek as f64 / FRAMES_PER_SECOND;
            let size = N_FRAMES.min(content - seek);
            let segment_duration = size as f64 / FRAMES_PER_SECOND;
            let enc = model.encode(&window(seek, size)?, decode.kernel)?;
            windows += 1;
            let prompt: Vec<i32> = if so.carry_initial_prompt {
                let ignored = initial_prompt.len().max(prompt_reset_since);
                let rest = &all_tokens[ignored.min(all_tokens.len())..];
                initial_prompt.iter().chain(&rest[rest.len().saturating_sub(remaining)..]).copied().collect()
            } else {
                all_tokens[prompt_reset_since..].to_vec()
            };
            let mut initial = Vec::new();
            if !prompt.is_empty() {
                initial.push(sp.sot_prev);
                initial.extend_from_slice(&prompt[prompt.len().saturating_sub(n_ctx / 2 - 1)..]);
            }
            let sot_index = initial.len();
            initial.extend_from_slice(&sot_seq);
            // Temperature fallback.
            let mut result = None;
            for &t in &so.temperatures {
                let r = self.decode_window(&enc, &initial, sot_index, t, opts.beam, so, &filters, &decode, &sp, &mut rng)?;
                let fallback = so.needs_fallback(r.compression_ratio, r.avg_logprob, r.no_speech_prob);
                result = Some(r);
                if !fallback {
                    break;
                }
            }
            let result = result.ok_or_else(|| Error::InvalidArgument("no temperature to decode at".into()))?;
            if so.is_silence(result.avg_logprob, result.no_speech_prob) {
                seek += size;
                progress(seek.min(content), content);
                continue;
            }
            let previous_seek = seek;
            let tokens = &result.tokens;
            let begin = ts.begin;
            let is_ts: Vec<bool> = tokens.iter().map(|&t| t >= begin).collect();
            let n = tokens.len();
            let single_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
            let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
            let new_segment = |start: f64, end: f64, toks: &[i32]| {
                let text_tokens: Vec<i32> = toks.iter().copied().filter(|&t| t < sp.eot).collect();
                SeekSegment {
                    seek: previous_seek,
                    start,
                    end,
                    text: self.tokenizer.decode(&text_tokens),
                    tokens: toks.to_vec(),
                    temperature: result.temperature,
                    avg_logprob: result.avg_logprob,
                    compression_ratio: result.compression_ratio,
                    no_speech_prob: result.no_speech_prob,
                    words: Vec::new(),
                }
            };
            let secs = |t: i32| time_offset + f64::from(t - begin) * Timestamps::PRECISION;
            let mut current = Vec::new();
            if !consecutive.is_empty() {
                let mut slices = consecutive;
                if single_ending {
                    slices.push(n);
                }
                let mut last = 0;
                for &cut in &slices {
                    let s = &tokens[last..cut];
                    current.push(new_segment(secs(s[0]), secs(s[s.len() - 1]), s));
                    last = cut;
                }
                if single_ending {
                    seek += size;
                } else {
                    let pos = i64::from(tokens[last - 1] - begin);
                    seek = (seek as i64 + pos * INPUT_STRIDE).max(0) as usize;
                }
            } else {
                let duration = match tokens.iter().rev().find(|&&t| t >= begin) {
                    Some(&t) if t != begin => f64::from(t - begin) * Timestamps::PRECISION,
                    _ => segment_duration,
                };
                current.push(new_segment(time_offset, time_offset + duration, tokens));
                seek += size;
            }
            if so.word_timestamps {
                self.add_words(&mut current, &enc, size, &sot_seq, &language, so, &decode, &sp, last_speech)?;
                if !single_ending {
                    if let Some(end) = get_end(&current).filter(|&e| e > time_offset) {
                        seek = (end * FRAMES_PER_SECOND).round_ties_even() as usize;
                    }
                }
                if let Some(end) = get_end(&current) {
                    last_speech = end;
                }
            }
            // A window that does not move the seek is decoded again with a longer prompt, as
            // openai-whisper does; after four in a row the seek moves past it instead, so no
            // input can loop forever.
            stalled = if seek <= previous_seek { stalled + 1 } else { 0 };
            if stalled >= 4 {
                seek = previous_seek + size;
                stalled = 0;
            }
            for s in &mut current {
                if s.start == s.end || s.text.trim().is_empty() {
                    s.text.clear();
                    s.tokens.clear();
                    s.words.clear();
                }
            }
            all_tokens.extend(current.iter().flat_map(|s| s.tokens.iter().copied()));
            all_segments.extend(current);
            if !so.condition_on_previous_text || result.temperature > 0.5 {
                prompt_reset_since = all_tokens.len();
            }
            progress(seek.min(content), content);
        }
        let text = self.tokenizer.decode(&all_tokens[initial_prompt.len()..]);
        Ok(SeekTranscript { text, segments: all_segments, language, windows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_grows_with_repetition() {
        let plain = compression_ratio("The quick brown fox jumps over the lazy dog.");
        let looped = compression_ratio(&"the same words again and again ".repeat(12));
        assert!(plain < 1.2, "{plain}");
        assert!(looped > 2.4, "{looped}");
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn greedy_picks_the_first_maximum_and_its_log_probability() {
        let mut rng = Rng::new(1);
        let row = [0.0f32, 2.0, 2.0, f32::NEG_INFINITY];
        let (t, lp) = pick(&row, 0.0, &mut rng);
        assert_eq!(t, 1);
        let lse = (1.0f32 + 2.0 * 2f32.exp()).ln();
        assert!((lp - (2.0 - lse)).abs() < 1e-6, "{lp}");
    }

    #[test]
    fn sampling_follows_the_tempered_distribution_and_never_a_suppressed_token() {
        let mut rng = Rng::new(7);
        let row = [0.0f32, (3f32).ln(), f32::NEG_INFINITY];
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[pick(&row, 1.0, &mut rng).0] += 1;
        }
        assert_eq!(counts[2], 0);
        // Probabilities 1/4 and 3/4: within 2% of 20,000 draws.
        let share = counts[1] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn fallback_and_silence_follow_openai_whispers_rules() {
        let so = SeekOptions::default();
        // Fine text: no fallback.
        assert!(!so.needs_fallback(1.5, -0.4, 0.1));
        // Too repetitive, or too unlikely: fall back.
        assert!(so.needs_fallback(2.5, -0.4, 0.1));
        assert!(so.needs_fallback(1.5, -1.2, 0.1));
        // Unlikely but probably silence: accepted as is, then skipped.
        assert!(!so.needs_fallback(1.5, -1.2, 0.7));
        assert!(so.is_silence(-1.2, 0.7));
        // Likely text is kept even where <|nospeech|> is likely.
        assert!(!so.is_silence(-0.5, 0.7));
        assert!(!so.is_silence(-1.2, 0.5));
        // Thresholds switched off.
        let off = SeekOptions {
            compression_ratio_threshold: None,
            logprob_threshold: None,
            no_speech_threshold: None,
            ..SeekOptions::default()
        };
        assert!(!off.needs_fallback(9.0, -9.0, 0.9));
        assert!(!off.is_silence(-9.0, 0.9));
        // Without a log-probability threshold, no-speech alone skips (openai-whisper's rule).
        let no_lp = SeekOptions { logprob_threshold: None, ..SeekOptions::default() };
        assert!(no_lp.is_silence(-0.1, 0.7));
        // A NaN no-speech probability (no such token) never means silence.
        assert!(!so.is_silence(-2.0, f64::NAN));
    }

    #[test]
    fn options_are_checked() {
        assert!(SeekOptions::default().validate().is_ok());
        let bad = SeekOptions { temperatures: vec![], ..SeekOptions::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("temperature"));
        let bad = SeekOptions { temperatures: vec![f32::NAN], ..SeekOptions::default() };
        assert!(bad.validate().is_err());
        let bad = SeekOptions { best_of: 0, ..SeekOptions::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("best-of"));
    }
}
