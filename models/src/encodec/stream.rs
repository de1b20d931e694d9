//! Streaming decode: codes arrive chunk by chunk and audio leaves chunk by chunk, equal to the
//! full decode (to float rounding) once the stream is finished.
//!
//! The SEANet decoder is a convolution, an LSTM, and a stack of convolutions. The LSTM carries
//! its `(h, c)` state from chunk to chunk. Each convolution stage runs on a window of its input
//! that reaches back far enough (`left` frames of history, kept between chunks) and emits only
//! the outputs whose whole receptive field it has seen, holding back the last `right` frames
//! until more input or the end of the stream arrives. Causal models (24 kHz) need no
//! look-ahead; the non-causal 32 kHz model holds back a few frames. The receptive fields come
//! from the layers themselves, not from constants.
use std::ops::Deref;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use super::seanet::{self, Exec, Layer, Layout};
use super::{exec, Encodec};
use crate::error::{Error, Result};
use crate::Variant;

/// A channels-last `[B, T, C]` buffer of frames `start..start + T` of a stream.
struct Frames {
    buf: Option<Array>,
    start: i64,
    end: i64,
}

impl Frames {
    fn new() -> Self {
        Self { buf: None, start: 0, end: 0 }
    }

    fn push(&mut self, x: Array) -> Result<()> {
        self.end += i64::from(x.shape()[1]);
        self.buf = Some(match self.buf.take() {
            Some(b) => ops::concatenate(&[b, x], 1)?,
            None => x,
        });
        Ok(())
    }

    /// Frames `from..self.end` (`from >= start`).
    fn window(&self, from: i64) -> Result<Array> {
        let b = self.buf.as_ref().ok_or_else(|| Error::InvalidArgument("stream window on an empty buffer".into()))?;
        Ok(b.index((.., (from - self.start) as i32.., ..)))
    }

    /// Forget frames before `keep_from`.
    fn drop_before(&mut self, keep_from: i64) -> Result<()> {
        let keep_from = keep_from.min(self.end);
        if keep_from > self.start {
            if let Some(b) = self.buf.take() {
                let rest = b.index((.., (keep_from - self.start) as i32.., ..));
                rest.eval()?;
                self.buf = Some(rest);
            }
            self.start = keep_from;
        }
        Ok(())
    }
}

/// Output frames that are final when `avail` input frames of a stage with receptive field
/// `(left, right)` have arrived. Reflect padding at the start of the stream mirrors up to
/// `left` frames of what follows, so the first outputs also wait until `left + right + 1`
/// frames are in (even a causal model is not causal in its first frames).
fn final_before(avail: i64, (left, right): (i64, i64)) -> i64 {
    if avail < left + right + 1 {
        0
    } else {
        avail - right
    }
}

/// Holds its model through any pointer: `&Encodec` (from [`Encodec::streaming_decoder`]) or an
/// `Arc<Encodec>` when the stream must own it.
pub struct StreamingDecoder<M: Deref<Target = Encodec>> {
    model: M,
    variant: Variant,
    exec: Exec,
    /// Quantized embeddings not yet fully used by the first convolution.
    emb: Frames,
    /// LSTM outputs not yet fully used by the upsampling stack.
    post: Frames,
    /// LSTM state per layer.
    state: Option<Vec<(Array, Array)>>,
    /// Receptive field of the first convolution, in frames (history, look-ahead).
    pre_ctx: (i64, i64),
    /// Receptive field of the upsampling stack, in frames.
    post_ctx: (i64, i64),
    /// Samples emitted so far.
    emitted: i64,
    batch: Option<i32>,
    finished: bool,
}

impl<M: Deref<Target = Encodec>> StreamingDecoder<M> {
    pub fn new(model: M, variant: Variant) -> Self {
        let hop = i64::from(model.config.hop_length());
        let pre = &model.decoder[..1];
        let post = &model.decoder[2..];
        let (lo, hi) = seanet::needed_input(pre, 0, 0);
        let (plo, phi) = seanet::needed_input(post, 0, hop - 1);
        Self {
            variant,
            exec: exec(variant),
            emb: Frames::new(),
            post: Frames::new(),
            state: None,
            pre_ctx: ((-lo).max(0), hi.max(0)),
            post_ctx: ((-plo).max(0), phi.max(0)),
            emitted: 0,
            batch: None,
            finished: false,
            model,
        }
    }

    /// Frames of look-ahead the stream holds back, once started, before it can emit a
    /// frame's audio.
    pub fn latency_frames(&self) -> i64 {
        self.pre_ctx.1 + self.post_ctx.1
    }

    /// Frames the stream needs before its first audio (reflect padding at the start).
    pub fn startup_frames(&self) -> i64 {
        self.pre_ctx.0 + self.pre_ctx.1 + 1 + self.post_ctx.0 + self.post_ctx.1
    }

    /// Run decoder layers on a channels-last window in this variant's layout.
    fn run(&self, layers: &[Layer], x: &Array) -> Result<Array> {
        match self.exec.layout {
            Layout::ChannelsLast => seanet::run(layers, x, self.exec),
            Layout::ChannelsFirst => {
                let y = seanet::run(layers, &x.transpose_axes(&[0, 2, 1])?, self.exec)?;
                Ok(y.transpose_axes(&[0, 2, 1])?)
            }
        }
    }

    /// Feed codes `[B, Q, n]`; returns the audio `[B, C, m]` that is now final (possibly
    /// `m = 0` while look-ahead fills).
    pub fn push(&mut self, codes: &Array) -> Result<Array> {
        if self.finished {
            return Err(Error::InvalidArgument("push after finish: start a new streaming decoder".into()));
        }
        if self.model.framed() || self.model.config.norm_type == "time_group_norm" {
            return Err(Error::InvalidArgument("this EnCodec cannot stream: its GroupNorm and per-chunk normalisation see a whole chunk (encodec_48khz); decode it whole".into()));
        }
        let codes = self.model.check_codes(codes)?;
        let b = codes.shape()[0];
        if *self.batch.get_or_insert(b) != b {
            return Err(Error::InvalidArgument(format!("chunk batch {b} differs from the stream's {}", self.batch.unwrap_or(b))));
        }
        self.emb.push(self.model.quantized_cl(&codes, self.variant)?)?;
        self.step(false)
    }

    /// Stream all of `codes` (`[B, Q, T]`) through in chunks of `chunk` frames and finish;
    /// `each(i)` is called after chunk `i` is pushed (for timing). Returns the whole audio,
    /// equal to the full decode.
    pub fn decode_in_chunks(&mut self, codes: &Array, chunk: i32, mut each: impl FnMut(usize)) -> Result<Array> {
        if chunk < 1 {
            return Err(Error::InvalidArgument(format!("stream chunk of {chunk} frames: must be at least 1")));
        }
        let t = *codes.shape().get(2).ok_or_else(|| Error::InvalidArgument(format!("codes of shape {:?}: expected [batch, codebooks, frames]", codes.shape())))?;
        let mut parts = Vec::new();
        for (i, start) in (0..t).step_by(chunk as usize).enumerate() {
            parts.push(self.push(&codes.index((.., .., start..(start + chunk).min(t))))?);
            each(i);
        }
        parts.push(self.finish()?);
        Ok(ops::concatenate(&parts, 2)?)
    }

    /// End the stream: the audio still held back.
    pub fn finish(&mut self) -> Result<Array> {
        if self.finished {
            return Err(Error::InvalidArgument("finish called twice".into()));
        }
        self.finished = true;
        if self.emb.end == 0 {
            return Err(Error::InvalidArgument("the stream received no codes".into()));
        }
        self.step(true)
    }

    fn step(&mut self, last: bool) -> Result<Array> {
        let hop = i64::from(self.model.config.hop_length());
        // First convolution, then the LSTM on exactly the frames that became final.
        let done = self.post.end;
        let limit = if last { self.emb.end } else { final_before(self.emb.end, self.pre_ctx) };
        if limit > done {
            let from = (done - self.pre_ctx.0).max(0);
            let y = self.run(&self.model.decoder[..1], &self.emb.window(from)?)?;
            let fresh = y.index((.., (done - from) as i32..(limit - from) as i32, ..));
            let Layer::Lstm(lstm) = &self.model.decoder[1] else {
                return Err(Error::InvalidArgument("decoder layer 1 is not the LSTM".into()));
            };
            let (z, state) = lstm.forward_tbc(&fresh.transpose_axes(&[1, 0, 2])?, self.state.as_deref(), self.exec.recurrence)?;
            self.state = Some(state);
            self.post.push(z.transpose_axes(&[1, 0, 2])?)?;
            self.emb.drop_before(limit - self.pre_ctx.0)?;
        }
        // Upsampling stack on a window with enough history; emit what is final.
        let avail = self.post.end;
        let final_frames = if last { avail } else { final_before(avail, self.post_ctx) };
        let out = if final_frames * hop > self.emitted {
            let first = self.emitted / hop;
            let from = (first - self.post_ctx.0).max(0);
            let y = self.run(&self.model.decoder[2..], &self.post.window(from)?)?;
            let a = (self.emitted - from * hop) as i32;
            let b = (final_frames * hop - from * hop) as i32;
            let out = y.index((.., a..b, ..));
            self.emitted = final_frames * hop;
            self.post.drop_before(final_frames - self.post_ctx.0)?;
            out
        } else {
            ops::zeros::<f32>(&[self.batch.unwrap_or(1), 0, self.model.config.audio_channels])?
        };
        let out = out.transpose_axes(&[0, 2, 1])?;
        out.eval()?;
        Ok(out)
    }
}
