//! Transcription as a library call: a [`Transcriber`] (model, tokenizer, the vocabulary's
//! suppression lists) turns 16 kHz mono samples into text and timed segments, choosing the
//! language, the start of transcript, short or long form, and greedy or beam decoding.
use std::path::Path;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;

use super::audio::{LogMel, N_SAMPLES, SAMPLE_RATE};
use super::longform::{self, LongForm, TimedSegment};
use super::seek::{SeekOptions, SeekSegment};
use super::tokenizer::Tokenizer;
use super::{BeamSearch, DecodeOptions, LogitFilters, Timestamps, Whisper};
use crate::checkpoint::Checkpointed;
use crate::chunked::ChunkedProcessor;
use crate::error::{Error, Result};
use crate::nn::quant::Precision;
use crate::Variant;

/// The most tokens one 30 s window decodes (openai-whisper's `sample_len`).
pub const MAX_NEW_TOKENS: usize = 224;

/// How to transcribe.
#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    pub variant: Variant,
    /// Beam search with this many beams (openai-whisper's, patience 1); greedy when `None`.
    pub beam: Option<usize>,
    /// A language code such as `en`, or `auto` to detect it per window. `None`: `auto` for a
    /// multilingual model, `en` for an English-only one.
    pub language: Option<String>,
    /// Decode with timestamps even when the audio fits one window (longer audio always is).
    pub timestamps: bool,
    /// How audio over 30 s (or any audio, with timestamps) is transcribed.
    pub long_form: LongFormMode,
}

/// The long-form transcription modes.
#[derive(Debug, Clone, PartialEq)]
pub enum LongFormMode {
    /// openai-whisper's `transcribe`: the seek loop with its options (the default).
    Seek(SeekOptions),
    /// ChunkedProcessor's overlapping windows started at quiet points ([`longform`]).
    Windows,
}

impl Default for LongFormMode {
    fn default() -> Self {
        Self::Seek(SeekOptions::default())
    }
}

impl TranscribeOptions {
    /// The seek options when word timestamps are asked for.
    fn word_timestamps(&self) -> bool {
        matches!(&self.long_form, LongFormMode::Seek(so) if so.word_timestamps)
    }
}

/// A transcript: the text, its segments with their text, and the language.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Each segment with its text (trimmed).
    pub segments: Vec<(TimedSegment, String)>,
    /// The language code (the first window's, when detected).
    pub language: String,
    /// 30 s windows decoded.
    pub windows: usize,
    /// The seek loop's segments as openai-whisper returns them (decode statistics, words);
    /// empty in the other modes.
    pub details: Vec<SeekSegment>,
}

/// The code of language token `id` among `langs` (`en` when none, as for English-only models).
fn language_code(langs: &[(String, i32)], id: Option<i32>) -> String {
    id.and_then(|id| langs.iter().find(|(_, i)| *i == id).map(|(c, _)| c.clone())).unwrap_or_else(|| "en".into())
}

/// A model ready to transcribe.
pub struct Transcriber {
    pub model: Whisper,
    pub tokenizer: Tokenizer,
    /// The vocabulary's always and begin suppression lists (the config's).
    pub filters: LogitFilters,
    /// Word-timestamp alignment heads `(layer, head)` from the folder's
    /// `generation_config.json`, when it names them (see [`Self::alignment_heads`]).
    pub heads: Option<Vec<(usize, usize)>>,
}

/// The `alignment_heads` of a `generation_config.json` (`[[layer, head], ...]`), if the file
/// exists and names them.
pub fn heads_from_generation_config(path: &Path) -> Result<Option<Vec<(usize, usize)>>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let bad = |reason: String| Error::Config { path: path.display().to_string(), reason };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Some(list) = v.get("alignment_heads").filter(|l| !l.is_null()) else {
        return Ok(None);
    };
    let pair = |p: &serde_json::Value| -> Option<(usize, usize)> {
        let a = p.as_array().filter(|a| a.len() == 2)?;
        Some((usize::try_from(a[0].as_u64()?).ok()?, usize::try_from(a[1].as_u64()?).ok()?))
    };
    let heads = list
        .as_array()
        .ok_or_else(|| bad("alignment_heads: expected a list of [layer, head] pairs".into()))?
        .iter()
        .map(|p| pair(p).ok_or_else(|| bad(format!("alignment_heads: {p} is not a [layer, head] pair"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(heads))
}

/// The suppression lists of a Whisper `config.json` (`suppress_tokens`,
/// `begin_suppress_tokens`), as openai-whisper suppresses by default.
pub fn filters_from_config(path: &Path) -> Result<LogitFilters> {
    let bad = |reason: String| Error::Config { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let list = |k: &str| -> Result<Vec<i32>> {
        match v.get(k) {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a.iter().map(|t| t.as_i64().and_then(|t| i32::try_from(t).ok()).ok_or_else(|| bad(format!("{k}: {t} is not a token id")))).collect(),
            Some(other) => Err(bad(format!("{k}: expected a list of token ids, found {other}"))),
        }
    };
    Ok(LogitFilters { always: list("suppress_tokens")?, at_begin: list("begin_suppress_tokens")?, timestamps: None })
}

impl Transcriber {
    /// `config.json`, `model.safetensors` and `tokenizer.json` from `dir`, the matrices stored at
    /// `precision` when given.
    pub fn load(dir: &Path, precision: Option<Precision>) -> Result<Self> {
        let model = Whisper::load_dir_as(dir, precision)?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let filters = filters_from_config(&dir.join("config.json"))?;
        let heads = heads_from_generation_config(&dir.join("generation_config.json"))?;
        Ok(Self { model, tokenizer, filters, heads })
    }

    /// Language tokens of a multilingual vocabulary, `(code, id)`: the special tokens between
    /// `<|startoftranscript|>` and `<|translate|>`; empty for an English-only one.
    pub fn languages(&self) -> Vec<(String, i32)> {
        let tok = &self.tokenizer;
        let (Some(sot), Some(translate)) = (tok.special_id("<|startoftranscript|>"), tok.special_id("<|translate|>")) else {
            return Vec::new();
        };
        if self.model.config.vocab_size < 51865 {
            return Vec::new();
        }
        (sot + 1..translate).filter_map(|id| tok.special_content(id).map(|c| (c.trim_start_matches("<|").trim_end_matches("|>").to_string(), id))).collect()
    }

    fn special(&self, s: &str) -> Result<i32> {
        self.tokenizer.special_id(s).ok_or_else(|| Error::InvalidArgument(format!("tokenizer.json lacks {s}")))
    }

    /// The start of a transcript: `<|startoftranscript|>`, then for multilingual vocabularies
    /// the language and `<|transcribe|>`, then `<|notimestamps|>` unless `timestamps`.
    pub fn sot_sequence(&self, language: Option<i32>, timestamps: bool) -> Result<Vec<i32>> {
        let mut seq = vec![self.model.config.decoder_start_token_id];
        if let Some(lang) = language {
            seq.push(lang);
            seq.push(self.special("<|transcribe|>")?);
        }
        if !timestamps {
            seq.push(self.special("<|notimestamps|>")?);
        }
        Ok(seq)
    }

    /// The language `opts` asks for: `Ok(None)` to detect it per window (or for an
    /// English-only model), the token id when fixed. A code the model lacks is refused.
    pub fn language(&self, opts: &TranscribeOptions) -> Result<Option<i32>> {
        let langs = self.languages();
        let multilingual = !langs.is_empty();
        let want = opts.language.clone().unwrap_or_else(|| if multilingual { "auto".into() } else { "en".into() });
        if !multilingual {
            return if want == "en" { Ok(None) } else { Err(Error::InvalidArgument(format!("language {want}: this model is English-only"))) };
        }
        if want == "auto" {
            return Ok(None);
        }
        langs.iter().find(|(c, _)| *c == want).map(|(_, id)| Some(*id)).ok_or_else(|| Error::InvalidArgument(format!("language {want}: not one of this model's {} languages", langs.len())))
    }

    /// The 30 s windows `samples` samples take.
    pub fn windows(&self, samples: usize) -> usize {
        ChunkedProcessor::whisper().offsets(samples.max(1) as i32).len()
    }

    /// Transcribe mono 16 kHz `samples`. `progress(done, total)` follows each window.
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions, mut progress: impl FnMut(usize, usize)) -> Result<Transcript> {
        if samples.is_empty() {
            return Err(Error::InvalidArgument("audio is empty (0 samples)".into()));
        }
        if samples.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("audio holds a non-finite sample".into()));
        }
        let long = samples.len() > N_SAMPLES as usize;
        if let LongFormMode::Seek(so) = &opts.long_form {
            if long || opts.timestamps || so.word_timestamps {
                let windows = self.windows(samples.len());
                let out = self.transcribe_seek(samples, opts, so, |done, total| progress((done * windows).div_ceil(total.max(1)), windows))?;
                // Each segment's window: the ordinal of its window's first frame.
                let mut seeks: Vec<usize> = out.segments.iter().map(|s| s.seek).collect();
                seeks.dedup();
                let segments = out
                    .segments
                    .iter()
                    .filter(|s| !s.text.is_empty())
                    .map(|s| {
                        let tokens = s.tokens.iter().copied().filter(|&t| t < self.model.config.eos_token_id).collect();
                        (TimedSegment { start: s.start, end: s.end, tokens, window: seeks.partition_point(|&k| k < s.seek) }, s.text.trim().to_string())
                    })
                    .collect();
                return Ok(Transcript {
                    text: out.text.trim().to_string(),
                    segments,
                    language: out.language,
                    windows: out.windows,
                    details: out.segments,
                });
            }
        }
        let fixed = self.language(opts)?;
        let langs = self.languages();
        let lang_ids: Vec<i32> = langs.iter().map(|(_, id)| *id).collect();
        let model = &self.model;
        let decode = DecodeOptions::for_variant(opts.variant);
        let eot = model.config.eos_token_id;
        let mut language = None;
        // The start of each window's transcript; the language is detected per window unless
        // fixed.
        let mut prompt = |enc: &Array, timestamps: bool| -> Result<Vec<i32>> {
            let lang = match (langs.is_empty(), fixed) {
                (true, _) => None,
                (false, Some(id)) => Some(id),
                (false, None) => Some(model.detect_language(enc, &lang_ids)?.0),
            };
            language = language.or(lang);
            self.sot_sequence(lang, timestamps)
        };
        let windows = self.windows(samples.len());
        let segments: Vec<TimedSegment> = if long || opts.timestamps {
            let timestamps = Timestamps::new(self.special("<|notimestamps|>")?, eot);
            let lf = LongForm {
                decode,
                beam: opts.beam,
                filters: self.filters.clone(),
                timestamps,
                max_new: MAX_NEW_TOKENS,
                chunks: ChunkedProcessor::whisper(),
            };
            longform::transcribe(model, samples, &lf, |enc| prompt(enc, true), &mut progress)?
        } else {
            let len = i32::try_from(samples.len()).map_err(|_| Error::InvalidArgument(format!("{} samples: too long for one signal", samples.len())))?;
            let mel = LogMel::new(model.config.num_mel_bins)?.compute(&Array::from_slice(samples, &[len]))?;
            let enc = model.encode(&mel, decode.kernel)?;
            let sot = prompt(&enc, false)?;
            let tokens = match opts.beam {
                Some(beam) => model.beam_search(&enc, &sot, &BeamSearch { beam, max_new: MAX_NEW_TOKENS, eot }, &decode, &self.filters)?.tokens,
                None => model.greedy_with(&enc, &sot, MAX_NEW_TOKENS, Some(eot), &decode, &self.filters)?.remove(0).into_iter().take_while(|&t| t != eot).collect(),
            };
            progress(1, 1);
            vec![TimedSegment { start: 0.0, end: samples.len() as f64 / f64::from(SAMPLE_RATE), tokens, window: 0 }]
        };
        let code = language_code(&langs, language);
        let texts: Vec<String> = segments.iter().map(|s| self.tokenizer.decode(&s.tokens)).collect();
        let text = texts.concat().trim().to_string();
        let segments = segments.into_iter().zip(texts).map(|(s, t)| (s, t.trim().to_string())).collect();
        Ok(Transcript { text, segments, language: code, windows, details: Vec::new() })
    }

    /// Transcribe several clips. Clips of up to 30 s go through the encoder and the decoder
    /// (greedy, or beam search with `batch x beam` rows) together, `batch` at a time (rows
    /// grouped by their start of transcript when the language is detected per clip), each row
    /// stopping at its own end of transcript; the tokens equal clip-by-clip decoding up to
    /// float ties. Longer clips and timestamps take [`Self::transcribe`] one clip at a time. `progress(done, total)`
    /// counts clips.
    pub fn transcribe_batch(&self, clips: &[&[f32]], opts: &TranscribeOptions, batch: usize, mut progress: impl FnMut(usize, usize)) -> Result<Vec<Transcript>> {
        if batch == 0 {
            return Err(Error::InvalidArgument("a batch of at least one clip".into()));
        }
        for (i, c) in clips.iter().enumerate() {
            if c.is_empty() {
                return Err(Error::InvalidArgument(format!("clip {i} is empty (0 samples)")));
            }
            if c.iter().any(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument(format!("clip {i} holds a non-finite sample")));
            }
        }
        let fixed = self.language(opts)?;
        let langs = self.languages();
        let lang_ids: Vec<i32> = langs.iter().map(|(_, id)| *id).collect();
        let batched = |c: &&[f32]| c.len() <= N_SAMPLES as usize && !opts.timestamps && !opts.word_timestamps();
        let mut out: Vec<Option<Transcript>> = vec![None; clips.len()];
        let total = clips.len();
        let mut done = 0;
        for (i, c) in clips.iter().enumerate().filter(|(_, c)| !batched(c)) {
            out[i] = Some(self.transcribe(c, opts, |_, _| {})?);
            done += 1;
            progress(done, total);
        }
        let short: Vec<usize> = (0..clips.len()).filter(|&i| batched(&clips[i])).collect();
        let log_mel = LogMel::new(self.model.config.num_mel_bins)?;
        let decode = DecodeOptions::for_variant(opts.variant);
        let eot = self.model.config.eos_token_id;
        for group in short.chunks(batch) {
            let mels = group
                .iter()
                .map(|&i| {
                    let c = clips[i];
                    Ok(log_mel.compute(&Array::from_slice(c, &[c.len() as i32]))?.expand_dims(0)?)
                })
                .collect::<Result<Vec<_>>>()?;
            let enc = self.model.encode(&mlx_rs::ops::concatenate(&mels, 0)?, decode.kernel)?;
            // Each row's language, then one decode per distinct start of transcript.
            let row_lang: Vec<Option<i32>> = (0..group.len())
                .map(|r| match (langs.is_empty(), fixed) {
                    (true, _) => Ok(None),
                    (false, Some(id)) => Ok(Some(id)),
                    (false, None) => Ok(Some(self.model.detect_language(&enc.index((r as i32..r as i32 + 1, .., ..)), &lang_ids)?.0)),
                })
                .collect::<Result<_>>()?;
            let mut kinds = row_lang.clone();
            kinds.sort();
            kinds.dedup();
            for lang in kinds {
                let rows: Vec<i32> = (0..group.len()).filter(|&r| row_lang[r] == lang).map(|r| r as i32).collect();
                let sub = if rows.len() == group.len() { enc.clone() } else { enc.take_axis(Array::from_slice(&rows, &[rows.len() as i32]), 0)? };
                let sot = self.sot_sequence(lang, false)?;
                let tokens = match opts.beam {
                    Some(beam) => self.model.beam_search_batch(&sub, &sot, &BeamSearch { beam, max_new: MAX_NEW_TOKENS, eot }, &decode, &self.filters)?.into_iter().map(|r| r.tokens).collect(),
                    None => self.model.greedy_with(&sub, &sot, MAX_NEW_TOKENS, Some(eot), &decode, &self.filters)?,
                };
                for (&r, toks) in rows.iter().zip(tokens) {
                    let i = group[r as usize];
                    let toks: Vec<i32> = toks.into_iter().take_while(|&t| t != eot).collect();
                    let text = self.tokenizer.decode(&toks).trim().to_string();
                    let seg = TimedSegment { start: 0.0, end: clips[i].len() as f64 / f64::from(SAMPLE_RATE), tokens: toks, window: 0 };
                    out[i] = Some(Transcript {
                        text: text.clone(),
                        segments: vec![(seg, text)],
                        language: language_code(&langs, lang),
                        windows: 1,
                        details: Vec::new(),
                    });
                }
            }
            done += group.len();
            progress(done, total);
        }
        out.into_iter().enumerate().map(|(i, t)| t.ok_or_else(|| Error::Mlx(format!("clip {i} was not transcribed")))).collect()
    }
}
