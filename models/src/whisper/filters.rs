//! openai-whisper's logit filters (`SuppressBlank`, `SuppressTokens`, `ApplyTimestampRules`)
//! and the parsing of timestamped output into segments (as its `transcribe` does per window).
//!
//! The timestamp rules depend on the tokens sampled so far; greedy decoding keeps that state
//! as arrays on the device ([`TimestampState::push`]), so the eval interval still applies.
use mlx_rs::{array, ops, Array};

use crate::error::{Error, Result};

/// Timestamp-token settings (openai-whisper's `without_timestamps=False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamps {
    /// `<|0.00|>`, the first timestamp token (`<|notimestamps|>` + 1).
    pub begin: i32,
    /// `<|notimestamps|>`, never sampled when timestamps are on.
    pub no_timestamps: i32,
    /// End-of-transcript; a timestamp may end a segment right before it.
    pub eot: i32,
    /// The latest first timestamp, in steps of [`Timestamps::PRECISION`] (openai-whisper's
    /// `max_initial_timestamp` of 1.0 s is 50).
    pub max_initial: Option<i32>,
}

impl Timestamps {
    /// Seconds per timestamp step: 30 s over 1500 audio positions.
    pub const PRECISION: f64 = 0.02;

    /// The settings for a vocabulary whose `<|notimestamps|>` is `no_timestamps`, with
    /// openai-whisper's default 1 s initial-timestamp limit.
    pub fn new(no_timestamps: i32, eot: i32) -> Self {
        Self { begin: no_timestamps + 1, no_timestamps, eot, max_initial: Some(50) }
    }
}

/// Tokens decoding may not pick: `always` at every step, `at_begin` at the first one
/// (openai-whisper's `SuppressTokens` and `SuppressBlank`), and the timestamp rules when
/// `timestamps` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogitFilters {
    pub always: Vec<i32>,
    pub at_begin: Vec<i32>,
    pub timestamps: Option<Timestamps>,
}

impl LogitFilters {
    pub(crate) fn compile(&self, vocab: i32) -> Result<Compiled> {
        if let Some(ts) = &self.timestamps {
            if !(0..vocab).contains(&ts.begin) || !(0..vocab).contains(&ts.eot) {
                return Err(Error::InvalidArgument(format!("timestamp tokens from {} (end-of-transcript {}) do not fit a vocabulary of {vocab}", ts.begin, ts.eot)));
            }
        }
        Ok(Compiled {
            always: mask(&self.always, vocab)?,
            at_begin: mask(&self.at_begin, vocab)?,
            timestamps: self.timestamps,
            ids: ops::arange::<_, i32>(0, vocab, 1)?.reshape(&[1, vocab])?,
        })
    }
}

fn mask(tokens: &[i32], vocab: i32) -> Result<Option<Array>> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut m = vec![0f32; vocab as usize];
    for &t in tokens {
        let slot = m.get_mut(t as usize).filter(|_| t >= 0).ok_or_else(|| Error::InvalidArgument(format!("suppressed token {t} is outside the vocabulary of {vocab}")))?;
        *slot = f32::NEG_INFINITY;
    }
    Ok(Some(Array::from_slice(&m, &[vocab])))
}

/// What the timestamp rules need to know of the tokens sampled so far, per row (`[B, 1]`).
pub(crate) struct TimestampState {
    last: Array,
    penultimate: Array,
    /// The last timestamp sampled, or `begin - 1` before any.
    last_timestamp: Array,
    sampled: usize,
}

impl TimestampState {
    pub(crate) fn new(ts: &Timestamps, rows: i32) -> Result<Self> {
        Ok(Self {
            last: ops::zeros::<bool>(&[rows, 1])?,
            penultimate: ops::ones::<bool>(&[rows, 1])?,
            last_timestamp: ops::full::<i32>(&[rows, 1], array!(ts.begin - 1))?,
            sampled: 0,
        })
    }

    /// The state after the sampled tokens of each row (host-side, for beam search).
    pub(crate) fn of(ts: &Timestamps, rows: &[&[i32]]) -> Self {
        let is_ts = |t: i32| t >= ts.begin;
        let n = rows.len() as i32;
        let last: Vec<bool> = rows.iter().map(|s| s.last().is_some_and(|&t| is_ts(t))).collect();
        let pen: Vec<bool> = rows.iter().map(|s| s.len() < 2 || is_ts(s[s.len() - 2])).collect();
        let lt: Vec<i32> = rows.iter().map(|s| s.iter().rev().copied().find(|&t| is_ts(t)).unwrap_or(ts.begin - 1)).collect();
        Self {
            last: Array::from_slice(&last, &[n, 1]),
            penultimate: Array::from_slice(&pen, &[n, 1]),
            last_timestamp: Array::from_slice(&lt, &[n, 1]),
            sampled: rows.iter().map(|s| s.len()).min().unwrap_or(0),
        }
    }

    /// Keep the batch rows `rows` (a batch whose finished rows leave it).
    pub(crate) fn keep_rows(&mut self, rows: &Array) -> Result<()> {
        self.last = self.last.take_axis(rows, 0)?;
        self.penultimate = self.penultimate.take_axis(rows, 0)?;
        self.last_timestamp = self.last_timestamp.take_axis(rows, 0)?;
        Ok(())
    }

    /// Record the tokens `next` (`[B]`) just sampled.
    pub(crate) fn push(&mut self, ts: &Timestamps, next: &Array) -> Result<()> {
        let next = next.reshape(&[-1, 1])?;
        let is_ts = next.ge(array!(ts.begin))?;
        self.penultimate = if self.sampled == 0 { ops::ones::<bool>(is_ts.shape())? } else { self.last.clone() };
        self.last_timestamp = ops::select(&is_ts, &next, &self.last_timestamp)?;
        self.last = is_ts;
        self.sampled += 1;
        Ok(())
    }
}

/// [`LogitFilters`] ready to apply: additive masks and the timestamp rules.
pub(crate) struct Compiled {
    always: Option<Array>,
    at_begin: Option<Array>,
    pub(crate) timestamps: Option<Timestamps>,
    ids: Array,
}

impl Compiled {
    pub(crate) fn timestamp_state(&self, rows: i32) -> Result<Option<TimestampState>> {
        self.timestamps.as_ref().map(|ts| TimestampState::new(ts, rows)).transpose()
    }

    /// Filter the last position's logits `[B, vocab]` at decode step `step` (0 = the first
    /// new token), in openai-whisper's order: blank, tokens, timestamps.
    pub(crate) fn apply(&self, mut logits: Array, step: usize, state: Option<&TimestampState>) -> Result<Array> {
        if let (0, Some(m)) = (step, &self.at_begin) {
            logits = logits.add(m)?;
        }
        if let Some(m) = &self.always {
            logits = logits.add(m)?;
        }
        let (Some(ts), Some(st)) = (&self.timestamps, state) else {
            return Ok(logits);
        };
        let ids = &self.ids;
        let is_ts = ids.ge(array!(ts.begin))?;
        let mut forbid = ids.eq(array!(ts.no_timestamps))?;
        // Timestamps come in pairs, except directly before end-of-transcript.
        let pair_closed = st.last.logical_and(&st.penultimate)?;
        let pair_open = st.last.logical_and(&st.penultimate.logical_not()?)?;
        forbid = forbid.logical_or(&pair_closed.logical_and(&is_ts)?)?;
        forbid = forbid.logical_or(&pair_open.logical_and(&ids.lt(array!(ts.eot))?)?)?;
        // Timestamps never decrease, and a segment is never empty.
        let floor = ops::select(&pair_open, &st.last_timestamp, &st.last_timestamp.add(array!(1))?)?;
        forbid = forbid.logical_or(&is_ts.logical_and(&ids.lt(&floor)?)?)?;
        if step == 0 {
            forbid = forbid.logical_or(&ids.lt(array!(ts.begin))?)?;
            if let Some(m) = ts.max_initial {
                forbid = forbid.logical_or(&ids.gt(array!(ts.begin + m))?)?;
            }
        }
        let ninf = array!(f32::NEG_INFINITY);
        let logits = ops::select(&forbid, &ninf, &logits)?;
        // A timestamp when the timestamps together are likelier than any one text token.
        let ts_mass = ops::select(&is_ts, &logits, &ninf)?.logsumexp_axis(-1, true)?;
        let best_text = ops::select(&is_ts, &ninf, &logits)?.max_axis(-1, true)?;
        let text_out = ts_mass.gt(&best_text)?.logical_and(&is_ts.logical_not()?)?;
        Ok(ops::select(&text_out, &ninf, &logits)?)
    }
}

/// A stretch of transcript between two timestamps, in seconds from the window start.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    /// Text tokens only.
    pub tokens: Vec<i32>,
}

/// Split one window's timestamped tokens (end-of-transcript removed) into segments, as
/// openai-whisper's `transcribe` does: a segment per pair of consecutive timestamps; text
/// after the last complete segment (or with no pairs at all) ends at the last timestamp or,
/// failing that, at `window_s`. Returns the segments and whether the window ended inside
/// unfinished speech (text after the last timestamp pair with no closing timestamp).
pub fn segments(tokens: &[i32], begin: i32, window_s: f64) -> (Vec<Segment>, bool) {
    let is_ts = |t: i32| t >= begin;
    let secs = |t: i32| f64::from(t - begin) * Timestamps::PRECISION;
    let text = |s: &[i32]| s.iter().copied().filter(|&t| !is_ts(t)).collect::<Vec<_>>();
    let n = tokens.len();
    let single_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let mut cuts: Vec<usize> = (1..n).filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i])).collect();
    let mut out = Vec::new();
    if cuts.is_empty() {
        let end = tokens.iter().rev().copied().find(|&t| is_ts(t)).filter(|&t| t != begin).map_or(window_s, secs);
        let start = tokens.first().copied().filter(|&t| is_ts(t)).map_or(0.0, secs);
        let body = text(tokens);
        if !body.is_empty() {
            out.push(Segment { start, end, tokens: body });
        }
        return (out, false);
    }
    if single_ending {
        cuts.push(n);
    }
    let mut from = 0;
    for &to in &cuts {
        let s = &tokens[from..to];
        let body = text(s);
        if !body.is_empty() {
            out.push(Segment { start: secs(s[0]), end: secs(s[s.len() - 1]), tokens: body });
        }
        from = to;
    }
    // Speech after the last closed segment, cut off by the window's end.
    let rest = text(&tokens[from..]);
    let unfinished = !rest.is_empty();
    if unfinished {
        let start = tokens[from..].first().copied().filter(|&t| is_ts(t)).map_or(0.0, secs);
        out.push(Segment { start, end: window_s, tokens: rest });
    }
    (out, unfinished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::ops::indexing::IndexOp;

    const TS: Timestamps = Timestamps { begin: 10, no_timestamps: 9, eot: 7, max_initial: Some(3) };

    fn row(a: &Array, r: i32) -> bool {
        a.index((r, 0)).item_exact::<bool>()
    }

    /// Which of the 20 ids survive the filters after `sampled`.
    fn allowed(sampled: &[i32], logits: &[f32]) -> Vec<i32> {
        let f = LogitFilters { timestamps: Some(TS), ..Default::default() }.compile(20).unwrap();
        let mut st = TimestampState::new(&TS, 1).unwrap();
        for &t in sampled {
            st.push(&TS, &Array::from_slice(&[t], &[1])).unwrap();
        }
        // The host-side state (beam search) agrees with the pushed one.
        let host = TimestampState::of(&TS, &[sampled]);
        assert_eq!((row(&st.last, 0), row(&st.penultimate, 0)), (row(&host.last, 0), row(&host.penultimate, 0)));
        assert_eq!(st.last_timestamp.index((0, 0)).item_exact::<i32>(), host.last_timestamp.index((0, 0)).item_exact::<i32>());
        let out = f.apply(Array::from_slice(logits, &[1, 20]), sampled.len(), Some(&st)).unwrap();
        let v = out.as_slice::<f32>().to_vec();
        (0..20).filter(|&i| v[i as usize].is_finite()).collect()
    }

    #[test]
    fn timestamp_rules_follow_openai_whisper() {
        let flat = [0f32; 20];
        // First step: only timestamps up to the initial limit.
        assert_eq!(allowed(&[], &flat), vec![10, 11, 12, 13]);
        // After an opening timestamp: text or end-of-transcript... and no earlier timestamp.
        let mut text_heavy = [0f32; 20];
        text_heavy[3] = 10.0;
        assert_eq!(allowed(&[12], &text_heavy), vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
        // After text: text, or a timestamp not before the last one + 1 (mass decides).
        assert_eq!(allowed(&[12, 3], &text_heavy), vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18, 19]);
        // When the timestamps together outweigh the best text token, only timestamps.
        assert_eq!(allowed(&[12, 3], &flat), vec![13, 14, 15, 16, 17, 18, 19]);
        // After text then a closing timestamp: another timestamp (not earlier) or end-of-transcript.
        let mut eot_heavy = [0f32; 20];
        eot_heavy[7] = 10.0;
        assert_eq!(allowed(&[12, 3, 15], &eot_heavy), vec![7, 8, 15, 16, 17, 18, 19]);
        assert_eq!(allowed(&[12, 3, 15], &text_heavy), vec![15, 16, 17, 18, 19]);
        // After a closed pair: text only.
        assert_eq!(allowed(&[12, 3, 15, 15], &text_heavy), vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn segments_split_at_consecutive_timestamps() {
        // <0.00> a b <0.40><0.40> c <0.80> (ending on a single timestamp)
        let (s, unfinished) = segments(&[10, 1, 2, 30, 30, 3, 50], 10, 30.0);
        assert!(!unfinished);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end, s[0].tokens.clone()), (0.0, 0.4, vec![1, 2]));
        assert!((s[1].start - 0.4).abs() < 1e-9 && (s[1].end - 0.8).abs() < 1e-9);
        // A window cut inside speech: the last text runs to the window's end.
        let (s, unfinished) = segments(&[10, 1, 30, 30, 3, 4], 10, 30.0);
        assert!(unfinished);
        assert_eq!((s[1].start, s[1].end, s[1].tokens.clone()), (0.4, 30.0, vec![3, 4]));
        // No pair: one segment up to the last timestamp.
        let (s, _) = segments(&[10, 1, 2, 40], 10, 30.0);
        assert_eq!(s.len(), 1);
        assert!((s[0].end - 0.6).abs() < 1e-9);
        assert!(segments(&[], 10, 30.0).0.is_empty());
    }
}
