//! ChunkedProcessor: run a model over a long signal in fixed-size, overlapping chunks and
//! join the outputs by overlap-add with a triangular window, as the seed's guide describes
//! (`.whisper`: 30 s chunks with 10% overlap; HTDemucs' segments), with a progress callback.
//!
//! The window is HF EnCodec's `_linear_overlap_add` weight, `0.5 - |t - 0.5|` over the chunk
//! (t in (0, 1), never 0), so every output sample is a weighted mean of the chunks covering it
//! and a signal that every chunk reproduces comes back unchanged.
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
use crate::nn::ops::{pad_axis, PadMode};

/// Chunking geometry, in samples along the last axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkedProcessor {
    pub chunk: i32,
    /// Fraction of a chunk shared with the next one, in `[0, 1)`.
    pub overlap: f64,
}

impl ChunkedProcessor {
    /// Whisper's long-form setting: 30 s chunks at 16 kHz, 10% overlap.
    pub fn whisper() -> Self {
        Self { chunk: 480_000, overlap: 0.1 }
    }

    /// The seed's HTDemucs setting: 6 s chunks at 44.1 kHz, 25% overlap.
    pub fn htdemucs() -> Self {
        Self { chunk: 264_600, overlap: 0.25 }
    }

    /// The seed's setting for memory-limited devices: 3 s chunks at 44.1 kHz (the seed gives no
    /// overlap; 25%, as for HTDemucs).
    pub fn phone_constrained() -> Self {
        Self { chunk: 132_300, overlap: 0.25 }
    }

    pub fn new(chunk: i32, overlap: f64) -> Result<Self> {
        if chunk < 2 {
            return Err(Error::InvalidArgument(format!("chunk length {chunk}: must be at least 2 samples")));
        }
        if !(0.0..1.0).contains(&overlap) {
            return Err(Error::InvalidArgument(format!("overlap {overlap}: must lie in [0, 1)")));
        }
        Ok(Self { chunk, overlap })
    }

    /// Samples between chunk starts.
    pub fn stride(&self) -> i32 {
        (((1.0 - self.overlap) * f64::from(self.chunk)) as i32).max(1)
    }

    /// Chunk start offsets for a signal of `len` samples: the last chunk ends at or after `len`
    /// (it may be shorter when the signal ends inside it).
    pub fn offsets(&self, len: i32) -> Vec<i32> {
        let stride = self.stride();
        let mut out = vec![0];
        while out[out.len() - 1] + self.chunk < len {
            out.push(out[out.len() - 1] + stride);
        }
        out
    }

    /// Chunk starts for a signal whose content should not be cut mid-way (speech): each start
    /// after the first is the quietest `frame`-sample stretch (least energy, the earliest of
    /// equals, tried every `frame / 10` samples) of the last two overlaps' worth of the previous
    /// chunk, so chunks begin in a pause where there is one. Consecutive chunks thus overlap by
    /// between `frame` and twice the nominal overlap (at least one sample), and cover the signal.
    pub fn quiet_offsets(&self, x: &[f32], frame: usize) -> Vec<i32> {
        let len = x.len() as i64;
        let chunk = i64::from(self.chunk);
        let overlap = chunk - i64::from(self.stride());
        let frame = (frame as i64).clamp(1, chunk / 2);
        let hop = (frame / 10).max(1);
        // Prefix sums of energy make every candidate O(1).
        let mut acc = Vec::with_capacity(x.len() + 1);
        acc.push(0f64);
        for &v in x {
            acc.push(acc[acc.len() - 1] + f64::from(v) * f64::from(v));
        }
        let energy = |at: i64| acc[(at + frame).min(len) as usize] - acc[at as usize];
        let mut out = vec![0i64];
        while out[out.len() - 1] + chunk < len {
            let prev = out[out.len() - 1];
            let hi = prev + chunk - frame;
            let lo = (prev + chunk - 2 * overlap).clamp(prev + 1, hi);
            let mut best = (f64::INFINITY, lo);
            let mut at = lo;
            while at <= hi {
                let e = energy(at);
                if e < best.0 {
                    best = (e, at);
                }
                at += hop;
            }
            out.push(best.1);
        }
        out.into_iter().map(|o| o as i32).collect()
    }

    /// The triangular weight of a chunk of `n` samples (the first `n` of a full chunk's).
    fn weight(&self, n: i32) -> Vec<f32> {
        let full = self.chunk as f64;
        (0..n).map(|i| (0.5 - ((f64::from(i) + 1.0) / (full + 1.0) - 0.5).abs()) as f32).collect()
    }

    /// Run `f` over chunks of `x` (`[..., L]`) and overlap-add its outputs (`[..., L_chunk]`:
    /// the same length as their input, any leading shape, the same for every chunk) into
    /// `[..., L]`. `progress(done, total)` is called after each chunk.
    pub fn process(&self, x: &Array, mut f: impl FnMut(&Array) -> Result<Array>, mut progress: impl FnMut(usize, usize)) -> Result<Array> {
        let nd = x.ndim();
        if nd == 0 {
            return Err(Error::InvalidArgument("chunked processing of a 0-d array".into()));
        }
        let len = x.shape()[nd - 1];
        if len == 0 {
            return Err(Error::InvalidArgument("chunked processing of an empty signal".into()));
        }
        let offsets = self.offsets(len);
        let lead: Vec<i32> = x.shape()[..nd - 1].to_vec();
        let mut acc: Option<Array> = None;
        let mut wsum = vec![0f32; len as usize];
        let flat = x.reshape(&[-1, len])?;
        for (i, &start) in offsets.iter().enumerate() {
            let end = (start + self.chunk).min(len);
            let piece = flat.index((.., start..end)).reshape(&[&lead[..], &[end - start]].concat())?;
            let y = f(&piece)?;
            let yd = y.ndim();
            let same_lead = acc.as_ref().is_none_or(|a| a.shape()[..a.ndim() - 1] == y.shape()[..yd.saturating_sub(1)]);
            if yd == 0 || y.shape()[yd - 1] != end - start || !same_lead {
                return Err(Error::InvalidArgument(format!("chunk {i}: the function returned shape {:?} for input {:?}", y.shape(), piece.shape())));
            }
            let w = self.weight(end - start);
            for (j, wj) in w.iter().enumerate() {
                wsum[start as usize + j] += wj;
            }
            let weighted = y.multiply(Array::from_slice(&w, &[end - start]))?;
            let placed = pad_axis(&weighted, (yd - 1) as i32, start, len - end, PadMode::Constant)?;
            let sum = match acc.take() {
                Some(a) => a.add(&placed)?,
                None => placed,
            };
            sum.eval()?;
            acc = Some(sum);
            progress(i + 1, offsets.len());
        }
        let acc = acc.ok_or_else(|| Error::InvalidArgument("no chunks".into()))?;
        Ok(acc.divide(Array::from_slice(&wsum, &[len]))?)
    }
}

/// Samples `a..b` of the last axis.
fn last_axis(x: &Array, a: i32, b: i32) -> Result<Array> {
    Ok(x.take_axis(ops::arange::<_, i32>(a, b, None)?, -1)?)
}

/// demucs' own chunking (`demucs.apply.apply_model` with `split=True, shifts=0`), so that a
/// separation can be checked against it: chunks start every `(1 - overlap) * segment` samples;
/// each is cut from the signal centred in a window of `valid_length` samples (real neighbouring
/// samples where there are any, zeros past the ends), run, centre-trimmed back, and blended with
/// a triangle weight (normalised to peak 1, raised to `transition_power`). Without a
/// `valid_length` every chunk runs at its own length, the last one shorter (demucs for a model
/// whose `valid_length(length)` is `length`: HTDemucs with `use_train_segment=False`).
///
/// `batch` chunks of one length go through the model together, stacked along axis 0 (demucs
/// runs one at a time, `batch: 1`); the result is the same, and a GPU is better used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemucsChunking {
    pub segment: i32,
    pub overlap: f64,
    pub transition_power: f64,
    /// The input length the model takes (HTDemucs: its training segment); `None`: each
    /// chunk's own length.
    pub valid_length: Option<i32>,
    /// Chunks per model call.
    pub batch: usize,
}

impl DemucsChunking {
    /// `apply_model`'s defaults for the released htdemucs: 7.8 s segments at 44.1 kHz, 25% overlap.
    pub fn htdemucs() -> Self {
        let segment = (7.8f64 * 44_100.0) as i32;
        Self { segment, overlap: 0.25, transition_power: 1.0, valid_length: Some(segment), batch: 1 }
    }

    fn weight(&self) -> Vec<f32> {
        let seg = self.segment;
        let tri: Vec<f64> = (1..=seg / 2).chain((1..=seg - seg / 2).rev()).map(f64::from).collect();
        let max = tri.iter().copied().fold(0.0, f64::max);
        tri.iter().map(|w| (w / max).powf(self.transition_power) as f32).collect()
    }

    /// Run `f` (input `[B, ..., V]`, output `[B, ..., V]` with any shape
    /// between, each of the B rows computed from its own input row) over `x` (`[B, ..., L]`);
    /// returns `f`'s shape with `L` samples. With `batch` above 1, `f` gets up to `batch`
    /// chunks concatenated along axis 0. `progress(done, total)` counts chunks.
    pub fn process(&self, x: &Array, mut f: impl FnMut(&Array) -> Result<Array>, mut progress: impl FnMut(usize, usize)) -> Result<Array> {
        if self.segment < 2 || self.valid_length.is_some_and(|v| v < self.segment) || !(0.0..1.0).contains(&self.overlap) || self.transition_power < 1.0 || self.batch < 1 {
            return Err(Error::InvalidArgument(format!("demucs chunking {self:?}: needs segment >= 2, valid_length >= segment, overlap in [0, 1), transition_power >= 1, batch >= 1")));
        }
        let nd = x.ndim();
        let len = if nd == 0 { 0 } else { x.shape()[nd - 1] };
        if len == 0 {
            return Err(Error::InvalidArgument("chunked processing of an empty signal".into()));
        }
        if nd < 2 {
            return Err(Error::InvalidArgument(format!("demucs chunking of a {nd}-d signal: expected [batch, ..., samples]")));
        }
        let rows = x.shape()[0];
        let axis = nd as i32 - 1;
        let stride = (((1.0 - self.overlap) * f64::from(self.segment)) as i32).max(1);
        let offsets: Vec<i32> = (0..len).step_by(stride as usize).collect();
        let weight = self.weight();
        let mut out: Option<Array> = None;
        let mut wsum = vec![0f32; len as usize];
        let mut done = 0;
        // A chunk's length, the model's input window around it, and where the chunk sits
        // (centred) in that window.
        let window = |offset: i32| {
            let chunk = self.segment.min(len - offset);
            let valid = self.valid_length.unwrap_or(chunk);
            (chunk, valid, (valid - chunk) / 2)
        };
        // Up to `batch` consecutive chunks of one window length per call.
        let mut groups: Vec<Vec<i32>> = Vec::new();
        for &o in &offsets {
            match groups.last_mut() {
                Some(g) if g.len() < self.batch && window(g[0]).1 == window(o).1 => g.push(o),
                _ => groups.push(vec![o]),
            }
        }
        for group in &groups {
            let valid = window(group[0]).1;
            let pieces = group
                .iter()
                .map(|&offset| {
                    let start = offset - window(offset).2;
                    let end = start + valid;
                    let (a, b) = (start.max(0), end.min(len));
                    pad_axis(&last_axis(x, a, b)?, axis, a - start, end - b, PadMode::Constant)
                })
                .collect::<Result<Vec<_>>>()?;
            let input = if pieces.len() == 1 { pieces[0].clone() } else { ops::concatenate(&pieces, 0)? };
            let y = f(&input)?;
            let ys = y.shape();
            let yl = ys[ys.len() - 1];
            if yl != valid || ys[0] != rows * group.len() as i32 {
                return Err(Error::InvalidArgument(format!("chunks {}..{}: the model returned {ys:?} for {} chunk(s) of {rows} row(s) and {} samples", done, done + group.len(), group.len(), valid)));
            }
            let ax = y.ndim() as i32 - 1;
            let mut acc = out.take();
            for (k, &offset) in group.iter().enumerate() {
                let (chunk, _, t0) = window(offset);
                let yk = if group.len() == 1 { y.clone() } else { y.index(rows * k as i32..rows * (k as i32 + 1)) };
                let yk = last_axis(&yk, t0, t0 + chunk)?;
                let w = &weight[..chunk as usize];
                for (j, wj) in w.iter().enumerate() {
                    wsum[(offset as usize) + j] += wj;
                }
                let placed = pad_axis(&yk.multiply(Array::from_slice(w, &[chunk]))?, ax, offset, len - offset - chunk, PadMode::Constant)?;
                acc = Some(match acc {
                    None => placed,
                    Some(o) => o.add(&placed)?,
                });
            }
            if let Some(a) = &acc {
                a.eval()?;
            }
            out = acc;
            done += group.len();
            progress(done, offsets.len());
        }
        let out = out.ok_or_else(|| Error::InvalidArgument("no chunks".into()))?;
        Ok(out.divide(Array::from_slice(&wsum, &[len]))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[i32]) -> Array {
        let n: i32 = shape.iter().product();
        Array::from_iter((0..n).map(|i| (i as f32 * 0.37).sin()), shape)
    }

    fn max_diff(a: &Array, b: &Array) -> f32 {
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>()
    }

    #[test]
    fn identity_comes_back_unchanged_at_any_length() {
        let p = ChunkedProcessor::new(100, 0.1).unwrap();
        for len in [1, 37, 100, 101, 190, 191, 1000, 1234] {
            let x = ramp(&[2, len]);
            let mut calls = Vec::new();
            let y = p.process(&x, |c| Ok(c.clone()), |d, t| calls.push((d, t))).unwrap();
            assert_eq!(y.shape(), x.shape());
            assert!(max_diff(&x, &y) < 1e-6, "len {len}");
            let n = p.offsets(len).len();
            assert_eq!(calls, (1..=n).map(|d| (d, n)).collect::<Vec<_>>(), "len {len}");
        }
    }

    #[test]
    fn chunks_cover_the_signal_with_the_requested_overlap() {
        let p = ChunkedProcessor::whisper();
        assert_eq!(p.stride(), 432_000);
        assert_eq!(p.offsets(480_000), vec![0]);
        assert_eq!(p.offsets(480_001), vec![0, 432_000]);
        let offs = p.offsets(16_000 * 95);
        assert_eq!(offs.len(), 4);
        assert!(offs.last().unwrap() + p.chunk >= 16_000 * 95);
    }

    #[test]
    fn quiet_offsets_start_chunks_in_pauses() {
        let p = ChunkedProcessor::new(100, 0.2).unwrap();
        // Loud everywhere except a pause at 70..80 (in the first chunk's last 40 samples) and
        // one at 115..125 (too early for the second chunk, whose candidates start at 130).
        let x: Vec<f32> = (0..260).map(|i| if (70..80).contains(&i) || (115..125).contains(&i) { 0.0 } else { 1.0 }).collect();
        let offs = p.quiet_offsets(&x, 10);
        assert_eq!(offs[..2], [0, 70]);
        // Each start lies in the last two overlaps of the previous chunk; together they cover
        // the signal.
        for w in offs.windows(2) {
            assert!(w[1] >= w[0] + p.chunk - 40 && w[1] <= w[0] + p.chunk - 10, "{offs:?}");
        }
        assert!(offs.last().unwrap() + p.chunk >= 260);
        // A uniform signal: the earliest candidate.
        assert_eq!(p.quiet_offsets(&[0.5; 260], 10), vec![0, 60, 120, 180]);
        assert_eq!(p.quiet_offsets(&[0.5; 7], 10), vec![0]);
    }

    #[test]
    fn a_pointwise_model_equals_running_it_on_the_whole_signal() {
        let p = ChunkedProcessor::new(64, 0.25).unwrap();
        let x = ramp(&[2, 3, 500]);
        let f = |c: &Array| -> Result<Array> { Ok(c.multiply(mlx_rs::array!(2.0f32))?.add(mlx_rs::array!(0.5f32))?) };
        let y = p.process(&x, f, |_, _| {}).unwrap();
        assert!(max_diff(&y, &f(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn demucs_chunking_matches_apply_model() {
        // fixtures/htdemucs/make_chunking_fixture.py: apply_model around a toy model whose output
        // depends on each sample's place in the chunk.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/htdemucs/chunking.safetensors");
        let t = crate::weights::read_safetensors(&path).unwrap();
        let toy = |x: &Array| -> Result<Array> {
            let n = x.shape()[x.ndim() - 1];
            let ramp: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / (n - 1) as f32).collect();
            let a = x.multiply(Array::from_slice(&ramp, &[n]))?;
            let b = x.multiply(x)?.add(ops::arange::<_, f32>(0.0, n as f32, None)?.multiply(mlx_rs::array!(0.01f32))?)?;
            // The fixture stacks on axis 0; here the rows (axis 0) stay first, as chunks batch on it.
            Ok(ops::stack(&[a, b], 1)?)
        };
        for n in [300, 78, 50, 79] {
            for p in [1, 2] {
                // 300 samples are 6 chunks: batches of 4 leave a partial group.
                for batch in [1, 2, 4] {
                    let c = DemucsChunking { segment: 78, overlap: 0.25, transition_power: f64::from(p), valid_length: Some(78), batch };
                    let mut calls = Vec::new();
                    let got = c.process(&t[&format!("x{n}")], toy, |d, total| calls.push((d, total))).unwrap().swap_axes(0, 1).unwrap();
                    let chunks = (n as usize).div_ceil(58);
                    let want: Vec<_> = (1..=chunks.div_ceil(batch)).map(|g| ((g * batch).min(chunks), chunks)).collect();
                    assert_eq!(calls, want, "{n} batch {batch}");
                    let err = max_diff(&got, &t[&format!("out{n}.p{p}")]);
                    assert!(err < 1e-5, "{n} p{p} batch {batch}: {err}");
                }
            }
        }
        let e = DemucsChunking { batch: 0, ..DemucsChunking::htdemucs() }.process(&ramp(&[2, 100]), |x| Ok(x.clone()), |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("batch >= 1"), "{e}");
        let e = DemucsChunking { valid_length: Some(10), ..DemucsChunking::htdemucs() }.process(&ramp(&[2, 100]), |x| Ok(x.clone()), |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("valid_length"), "{e}");
        assert_eq!(ChunkedProcessor::htdemucs().stride(), 198_450);
        assert_eq!(ChunkedProcessor::phone_constrained().chunk, 132_300);
    }

    #[test]
    fn bad_settings_and_outputs_are_refused() {
        assert!(ChunkedProcessor::new(1, 0.1).unwrap_err().to_string().contains("at least 2"));
        assert!(ChunkedProcessor::new(10, 1.0).unwrap_err().to_string().contains("[0, 1)"));
        let p = ChunkedProcessor::new(10, 0.0).unwrap();
        let e = p.process(&ramp(&[1, 30]), |c| Ok(c.index((.., ..5))), |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("returned shape"), "{e}");
        assert!(p.process(&ramp(&[1, 0]), |c| Ok(c.clone()), |_, _| {}).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn without_a_valid_length_each_chunk_runs_at_its_own_length() {
        // A model whose output says how long its input was: the last, shorter chunk must see
        // only itself (demucs for a model with use_train_segment=False), not a padded window.
        let c = DemucsChunking { segment: 40, overlap: 0.25, transition_power: 1.0, valid_length: None, batch: 3 };
        let x = ramp(&[1, 95]);
        let mut lengths = Vec::new();
        let y = c
            .process(
                &x,
                |chunk| {
                    let n = chunk.shape()[1];
                    lengths.push((chunk.shape()[0], n));
                    Ok(ops::full::<f32>(chunk.shape(), mlx_rs::array!(n as f32))?)
                },
                |_, _| {},
            )
            .unwrap();
        // Chunks at 0, 30, 60, 90: two of 40 samples in one call, then 35 and 5 alone.
        assert_eq!(lengths, [(2, 40), (1, 35), (1, 5)]);
        let v = y.as_slice::<f32>();
        assert_eq!(v[0], 40.0);
        // The end blends the 35- and 5-sample chunks; padded to 40, both would say 40.
        assert!(v[94] > 5.0 && v[94] < 35.0, "{}", v[94]);
        // With a valid length, every chunk is run padded to it.
        let c = DemucsChunking { valid_length: Some(40), ..c };
        let mut lengths = Vec::new();
        c.process(
            &x,
            |chunk| {
                lengths.push(chunk.shape()[1]);
                Ok(chunk.clone())
            },
            |_, _| {},
        )
        .unwrap();
        assert!(lengths.iter().all(|&n| n == 40), "{lengths:?}");
    }
}
