//! Word-level timestamps as openai-whisper's `timing.py` computes them: the cross-attention of
//! the alignment heads over one window, normalised per frame across tokens, median-filtered
//! along time, averaged over heads, then a dynamic-time-warping path from text tokens to
//! 20 ms audio positions; words are the tokenizer's space-separated pieces, punctuation merged
//! into its neighbours, and the word and segment times adjusted as `add_word_timestamps` does.
//!
//! Everything here is host arithmetic on what [`super::Whisper::alignment`] returns, so it is
//! the same on every backend.

/// openai-whisper's default punctuation merged into the following word.
pub const PREPEND_PUNCTUATIONS: &str = "\"'\u{201c}\u{bf}([{-";
/// openai-whisper's default punctuation merged into the preceding word.
pub const APPEND_PUNCTUATIONS: &str = "\"'.\u{3002},\u{ff0c}!\u{ff01}?\u{ff1f}:\u{ff1a}\u{201d})]}\u{3001}";
/// Python's `string.punctuation`.
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Audio positions per second (30 s over 1500 encoder positions).
pub const TOKENS_PER_SECOND: f64 = 50.0;

/// The alignment heads openai-whisper ships for each released size, as `(layer, head)`,
/// chosen from the model's shape: `(vocab, mel bins, decoder layers, d_model)`. `large-v1` and
/// `large-v2` have the same shape; v2's heads are used (a model folder whose
/// `generation_config.json` names its heads, as the hub's do, takes those instead).
pub fn released_alignment_heads(vocab: i32, n_mels: i32, decoder_layers: i32, d_model: i32) -> Option<Vec<(usize, usize)>> {
    let english = vocab == 51864;
    let (flat, heads): (&[usize], usize) = match (d_model, decoder_layers, n_mels, english) {
        (384, 4, 80, true) => (&[6, 12, 17, 18, 19, 20, 21, 22], 6),
        (384, 4, 80, false) => (&[14, 18, 20, 21, 22, 23], 6),
        (512, 6, 80, true) => (&[27, 39, 41, 45, 47], 8),
        (512, 6, 80, false) => (&[25, 34, 35, 39, 41, 42, 44, 46], 8),
        (768, 12, 80, true) => (&[78, 84, 87, 92, 98, 101, 103, 108, 112, 116, 118, 120, 121, 122, 123, 126, 131, 134, 136], 12),
        (768, 12, 80, false) => (&[63, 69, 96, 100, 103, 104, 108, 115, 117, 125], 12),
        (1024, 24, 80, true) => (&[180, 225, 236, 238, 244, 256, 260, 265, 284, 286, 295, 298, 303, 320, 323, 329, 334, 348], 16),
        (1024, 24, 80, false) => (&[223, 244, 255, 257, 320, 372], 16),
        (1280, 32, 80, false) => (&[212, 277, 331, 332, 333, 355, 356, 364, 371, 379, 391, 422, 423, 443, 449, 452, 465, 467, 473, 505, 521, 532, 555], 20),
        (1280, 32, 128, false) => (&[140, 217, 258, 272, 321, 354, 391, 424, 481, 506], 20),
        (1280, 4, 128, false) => (&[44, 51, 63, 66, 71, 74], 20),
        _ => return None,
    };
    Some(flat.iter().map(|&i| (i / heads, i % heads)).collect())
}

/// openai-whisper's fallback for a model without known heads: every head of the last half of
/// the decoder layers.
pub fn default_alignment_heads(decoder_layers: usize, heads: usize) -> Vec<(usize, usize)> {
    (decoder_layers / 2..decoder_layers).flat_map(|l| (0..heads).map(move |h| (l, h))).collect()
}

/// Median of each window of `width` (odd) along the rows of `x` (`rows` x `cols`, row-major),
/// the rows reflect-padded as `torch.nn.functional.pad(mode="reflect")`; rows no longer than
/// half the width are returned unchanged (openai-whisper's `median_filter`).
pub fn median_filter(x: &[f32], rows: usize, cols: usize, width: usize) -> Vec<f32> {
    let pad = width / 2;
    if cols <= pad || width == 0 {
        return x.to_vec();
    }
    let mut out = vec![0f32; x.len()];
    let mut window = vec![0f32; width];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let at = |i: isize| row[crate::nn::ops::reflect_index(i, cols)];
        for c in 0..cols {
            for (k, w) in window.iter_mut().enumerate() {
                *w = at(c as isize + k as isize - pad as isize);
            }
            window.sort_by(f32::total_cmp);
            out[r * cols + c] = window[pad];
        }
    }
    out
}

/// The dynamic-time-warping path through cost matrix `x` (`n` x `m`, row-major), as
/// openai-whisper's `dtw_cpu` (float32 accumulated costs, its tie-breaking) and `backtrace`:
/// returns `(row indices, column indices)` from `(0, 0)` to `(n-1, m-1)`.
pub fn dtw(x: &[f64], n: usize, m: usize) -> (Vec<usize>, Vec<usize>) {
    let w = m + 1;
    let mut cost = vec![f32::INFINITY; (n + 1) * w];
    let mut trace = vec![-1i8; (n + 1) * w];
    cost[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * w + j] = (x[(i - 1) * m + j - 1] + f64::from(c)) as f32;
            trace[i * w + j] = t;
        }
    }
    trace[..w].fill(2);
    for i in 0..=n {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        path.push((i.wrapping_sub(1), j.wrapping_sub(1)));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    // A path that reached the first row or column before (0, 0) would record a cell outside
    // the matrix; finite costs never lead there, but such a cell is dropped, not indexed.
    path.into_iter().filter(|&(a, b)| a != usize::MAX && b != usize::MAX).unzip()
}

/// A word with its tokens, times in seconds from the window start, and mean token probability.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<i32>,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// Split `tokens` into pieces that each decode to whole characters (openai-whisper's
/// `split_tokens_on_unicode`); `decode` turns tokens into text, a partial UTF-8 sequence into
/// U+FFFD.
pub fn split_on_unicode(tokens: &[i32], decode: &dyn Fn(&[i32]) -> String) -> (Vec<String>, Vec<Vec<i32>>) {
    let full: Vec<char> = decode(tokens).chars().collect();
    let (mut words, mut word_tokens, mut current) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0usize;
    for &t in tokens {
        current.push(t);
        let decoded = decode(&current);
        let chars: Vec<char> = decoded.chars().collect();
        let whole = match chars.iter().position(|&c| c == '\u{fffd}') {
            None => true,
            Some(p) => full.get(offset + p) == Some(&'\u{fffd}'),
        };
        if whole {
            offset += chars.len();
            words.push(decoded);
            word_tokens.push(std::mem::take(&mut current));
        }
    }
    (words, word_tokens)
}

/// Split `tokens` into words (openai-whisper's `split_to_word_tokens`): at spaces and
/// punctuation for most languages, at every whole character for `zh`, `ja`, `th`, `lo`, `my`
/// and `yue`. Tokens at or past `eot` are words of their own.
pub fn split_to_word_tokens(tokens: &[i32], eot: i32, language: &str, decode: &dyn Fn(&[i32]) -> String) -> (Vec<String>, Vec<Vec<i32>>) {
    let (subwords, subword_tokens) = split_on_unicode(tokens, decode);
    if matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue") {
        return (subwords, subword_tokens);
    }
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<i32>> = Vec::new();
    for (sub, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks[0] >= eot;
        let with_space = sub.starts_with(' ');
        let punctuation = ASCII_PUNCTUATION.contains(sub.trim());
        match (words.last_mut(), word_tokens.last_mut()) {
            // A piece without a space continues the word before it.
            (Some(w), Some(t)) if !(special || with_space || punctuation) => {
                w.push_str(&sub);
                t.extend(toks);
            }
            _ => {
                words.push(sub);
                word_tokens.push(toks);
            }
        }
    }
    (words, word_tokens)
}

/// Words and their times from one window's alignment (openai-whisper's `find_alignment` after
/// the forward pass). `weights`: the alignment heads' cross-attention logits, `heads` x `rows`
/// x `frames` (the rows are the decoder positions of `sot_sequence`, `<|notimestamps|>`, the
/// text tokens and end-of-transcript; the frames at least `num_frames / 2`); `text_probs`:
/// each text token's probability. `words`/`word_tokens`: [`split_to_word_tokens`] of the text
/// tokens and end-of-transcript.
pub struct Alignment<'a> {
    pub weights: &'a [f32],
    pub heads: usize,
    pub rows: usize,
    pub frames: usize,
    pub sot_len: usize,
    pub num_frames: usize,
    pub text_probs: &'a [f64],
    pub medfilt_width: usize,
}

impl Alignment<'_> {
    /// The words with times, or none when the text is empty.
    pub fn words(&self, words: Vec<String>, word_tokens: Vec<Vec<i32>>) -> Vec<WordTiming> {
        if word_tokens.len() <= 1 || self.rows < self.sot_len + 2 {
            return Vec::new();
        }
        let cols = (self.num_frames / 2).min(self.frames).max(1);
        let rows = self.rows;
        let mut mean = vec![0f32; rows * cols];
        for h in 0..self.heads {
            let mut w = vec![0f32; rows * cols];
            for r in 0..rows {
                let src = &self.weights[(h * rows + r) * self.frames..][..cols];
                let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = src.iter().map(|&v| (v - max).exp()).collect();
                let s: f32 = e.iter().sum();
                for (c, v) in e.into_iter().enumerate() {
                    w[r * cols + c] = v / s;
                }
            }
            // Standardise each frame across the token positions (population std).
            for c in 0..cols {
                let m = (0..rows).map(|r| w[r * cols + c]).sum::<f32>() / rows as f32;
                let var = (0..rows).map(|r| (w[r * cols + c] - m).powi(2)).sum::<f32>() / rows as f32;
                let sd = var.sqrt();
                for r in 0..rows {
                    w[r * cols + c] = (w[r * cols + c] - m) / sd;
                }
            }
            let f = median_filter(&w, rows, cols, self.medfilt_width);
            for (a, b) in mean.iter_mut().zip(f) {
                *a += b;
            }
        }
        // The rows from `<|notimestamps|>` to the last text token.
        let (r0, r1) = (self.sot_len, rows - 1);
        let n = r1 - r0;
        let cost: Vec<f64> = mean[r0 * cols..r1 * cols].iter().map(|&v| -f64::from(v / self.heads as f32)).collect();
        let (text_idx, time_idx) = dtw(&cost, n, cols);
        let mut jump_times = Vec::with_capacity(n);
        for k in 0..text_idx.len() {
            if k == 0 || text_idx[k] != text_idx[k - 1] {
                jump_times.push(time_idx[k] as f64 / TOKENS_PER_SECOND);
            }
        }
        let mut bounds = vec![0usize];
        for t in &word_tokens[..word_tokens.len() - 1] {
            bounds.push(bounds.last().copied().unwrap_or(0) + t.len());
        }
        let at = |i: usize| jump_times.get(i).copied().unwrap_or_else(|| jump_times.last().copied().unwrap_or(0.0));
        let probs = self.text_probs;
        words
            .into_iter()
            .zip(word_tokens)
            .zip(bounds.windows(2))
            .map(|((word, tokens), b)| {
                let p = &probs[b[0].min(probs.len())..b[1].min(probs.len())];
                let probability = if p.is_empty() { f64::NAN } else { p.iter().sum::<f64>() / p.len() as f64 };
                WordTiming { word, tokens, start: at(b[0]), end: at(b[1]), probability }
            })
            .collect()
    }
}

/// Merge punctuation into neighbouring words in place, as openai-whisper's
/// `merge_punctuations` (a merged word keeps an empty entry).
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    if alignment.len() >= 2 {
        let mut j = alignment.len() - 1;
        for i in (0..alignment.len() - 1).rev() {
            if alignment[i].word.starts_with(' ') && prepended.contains(alignment[i].word.trim()) {
                let prev = std::mem::take(&mut alignment[i].word);
                let toks = std::mem::take(&mut alignment[i].tokens);
                let f = &mut alignment[j];
                f.word = prev + &f.word;
                f.tokens = toks.into_iter().chain(f.tokens.drain(..)).collect();
            } else {
                j = i;
            }
        }
    }
    let mut i = 0;
    for j in 1..alignment.len() {
        if !alignment[i].word.ends_with(' ') && appended.contains(alignment[j].word.as_str()) {
            let w = std::mem::take(&mut alignment[j].word);
            let toks = std::mem::take(&mut alignment[j].tokens);
            alignment[i].word.push_str(&w);
            alignment[i].tokens.extend(toks);
        } else {
            i = j;
        }
    }
}

/// A word of a segment, in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// A segment as [`add_word_timestamps`] sees it: its times (updated in place), text tokens,
/// and the words it receives.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentWords {
    pub start: f64,
    pub end: f64,
    pub text_tokens: Vec<i32>,
    pub words: Vec<Word>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round_ties_even() / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Give `segments` (one window's, starting at `time_offset` s) their words from `alignment`
/// and adjust word and segment times as openai-whisper's `add_word_timestamps`; returns the
/// last speech time after them (`last_speech` when no segment has words).
pub fn add_word_timestamps(segments: &mut [SegmentWords], mut alignment: Vec<WordTiming>, time_offset: f64, prepended: &str, appended: &str, mut last_speech: f64) -> f64 {
    let mut durations: Vec<f64> = alignment.iter().map(|t| t.end - t.start).filter(|&d| d != 0.0).collect();
    let median_duration = if durations.is_empty() { 0.0 } else { median(&mut durations) }.min(0.7);
    let max_duration = median_duration * 2.0;
    if !durations.is_empty() {
        let marks = ".\u{3002}!\u{ff01}?\u{ff1f}";
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if marks.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if marks.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut alignment, prepended, appended);
    let mut wi = 0;
    for seg in segments.iter_mut() {
        let mut saved = 0;
        let mut words: Vec<Word> = Vec::new();
        while wi < alignment.len() && saved < seg.text_tokens.len() {
            let t = &alignment[wi];
            if !t.word.is_empty() {
                words.push(Word {
                    word: t.word.clone(),
                    start: round2(time_offset + t.start),
                    end: round2(time_offset + t.end),
                    probability: t.probability,
                });
            }
            saved += t.tokens.len();
            wi += 1;
        }
        if !words.is_empty() {
            if words[0].end - last_speech > median_duration * 4.0 && (words[0].end - words[0].start > max_duration || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0)) {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            if seg.start < words[0].end && seg.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median_duration).min(seg.start).max(0.0);
            } else {
                seg.start = words[0].start;
            }
            let last = words.len() - 1;
            if seg.end > words[last].start && seg.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median_duration).max(seg.end);
            } else {
                seg.end = words[last].end;
            }
            last_speech = seg.end;
        }
        seg.words = words;
    }
    last_speech
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_heads_match_the_shapes_they_were_published_for() {
        // tiny.en: 4 layers of 6 heads, flat indices 6, 12, ... of openai-whisper's mask.
        assert_eq!(released_alignment_heads(51864, 80, 4, 384).unwrap(), vec![(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]);
        // large-v3-turbo: 4 decoder layers of 20 heads.
        assert_eq!(released_alignment_heads(51866, 128, 4, 1280).unwrap(), vec![(2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)]);
        assert_eq!(released_alignment_heads(51865, 80, 3, 384), None);
        assert_eq!(default_alignment_heads(4, 2), vec![(2, 0), (2, 1), (3, 0), (3, 1)]);
    }

    #[test]
    fn median_filter_reflects_at_the_edges() {
        let x = [5.0, 1.0, 4.0, 2.0, 3.0];
        // Width 3, reflected: [1,5,1,4,2,3,2] -> medians of each window of three.
        assert_eq!(median_filter(&x, 1, 5, 3), vec![1.0, 4.0, 2.0, 3.0, 2.0]);
        // Rows no longer than half the width are left alone.
        assert_eq!(median_filter(&x[..3], 1, 3, 7), x[..3].to_vec());
    }

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // A 3 x 4 cost with a cheap path (0,0) (1,1) (1,2) (2,3).
        let big = 9.0;
        let x = [0.0, big, big, big, big, 0.0, 0.0, big, big, big, big, 0.0];
        let (i, j) = dtw(&x, 3, 4);
        assert_eq!(i, vec![0, 1, 1, 2]);
        assert_eq!(j, vec![0, 1, 2, 3]);
    }

    #[test]
    fn words_split_at_spaces_and_punctuation_and_merge_back() {
        // Tokens decode to these pieces; 99 stands for end-of-transcript.
        let pieces = |t: i32| match t {
            1 => " Hello",
            2 => ",",
            3 => " wor",
            4 => "ld",
            5 => " (",
            6 => " aside",
            7 => ")",
            _ => "<|endoftext|>",
        };
        let decode = |ts: &[i32]| ts.iter().map(|&t| pieces(t)).collect::<String>();
        let (words, toks) = split_to_word_tokens(&[1, 2, 3, 4, 5, 6, 7, 99], 99, "en", &decode);
        assert_eq!(words, vec![" Hello", ",", " world", " (", " aside", ")", "<|endoftext|>"]);
        assert_eq!(toks[2], vec![3, 4]);
        // A piece without a space joins the word before it.
        let (joined, _) = split_to_word_tokens(&[1, 4, 99], 99, "en", &decode);
        assert_eq!(joined, vec![" Hellold", "<|endoftext|>"]);
        let mut a: Vec<WordTiming> = words.iter().zip(&toks).map(|(w, t)| WordTiming { word: w.clone(), tokens: t.clone(), start: 0.0, end: 0.0, probability: 1.0 }).collect();
        a.pop();
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let merged: Vec<&str> = a.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(merged, vec![" Hello,", "", " world", "", " ( aside)", ""]);
        assert_eq!(a[4].tokens, vec![5, 6, 7]);
    }

    #[test]
    fn a_partial_character_waits_for_its_next_token() {
        // Token 1 is the first byte of a two-byte character, token 2 the second.
        let decode = |ts: &[i32]| match ts {
            [1] => "\u{fffd}".to_string(),
            [1, 2] | [2] => "é".to_string(),
            [1, 2, 3] => "é a".to_string(),
            [3] => " a".to_string(),
            _ => String::new(),
        };
        let (words, toks) = split_on_unicode(&[1, 2, 3], &decode);
        assert_eq!(words, vec!["é", " a"]);
        assert_eq!(toks, vec![vec![1, 2], vec![3]]);
    }
}
