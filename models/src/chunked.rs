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

    /// The triangular weight of a chunk of `n` samples (the first `n` of a full chunk's).
    fn weight(&self, n: i32) -> Vec<f32> {
        let full = self.chunk as f64;
        (0..n).map(|i| (0.5 - ((f64::from(i) + 1.0) / (full + 1.0) - 0.5).abs()) as f32).collect()
    }

    /// Run `f` over chunks of `x` (`[..., L]`) and overlap-add its outputs (`[..., L_chunk]`,
    /// the same length as their input) into `[..., L]`. `progress(done, total)` is called
    /// after each chunk.
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
        let mut out_shape = lead.clone();
        out_shape.push(len);
        let mut acc = ops::zeros::<f32>(&out_shape)?;
        let mut wsum = vec![0f32; len as usize];
        let flat = x.reshape(&[-1, len])?;
        for (i, &start) in offsets.iter().enumerate() {
            let end = (start + self.chunk).min(len);
            let piece = flat.index((.., start..end)).reshape(&[&lead[..], &[end - start]].concat())?;
            let y = f(&piece)?;
            if y.shape() != piece.shape() {
                return Err(Error::InvalidArgument(format!("chunk {i}: the function returned shape {:?} for input {:?}", y.shape(), piece.shape())));
            }
            let w = self.weight(end - start);
            for (j, wj) in w.iter().enumerate() {
                wsum[start as usize + j] += wj;
            }
            let weighted = y.multiply(Array::from_slice(&w, &[end - start]))?;
            acc = acc.add(&pad_axis(&weighted, (nd - 1) as i32, start, len - end, PadMode::Constant)?)?;
            acc.eval()?;
            progress(i + 1, offsets.len());
        }
        Ok(acc.divide(Array::from_slice(&wsum, &[len]))?)
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
    fn a_pointwise_model_equals_running_it_on_the_whole_signal() {
        let p = ChunkedProcessor::new(64, 0.25).unwrap();
        let x = ramp(&[2, 3, 500]);
        let f = |c: &Array| -> Result<Array> { Ok(c.multiply(mlx_rs::array!(2.0f32))?.add(mlx_rs::array!(0.5f32))?) };
        let y = p.process(&x, f, |_, _| {}).unwrap();
        assert!(max_diff(&y, &f(&x).unwrap()) < 1e-5);
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
}
