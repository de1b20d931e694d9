//! EnCodec (HF `EncodecModel`) for the 24 kHz and 32 kHz checkpoints: SEANet encoder, residual
//! vector quantizer, SEANet decoder, and a streaming decoder.
//!
//! Naive and optimized paths share the modules and weights and differ where the seed says
//! they should: the naive path keeps PyTorch's `[B, C, T]` layout and transposes inside every
//! convolution, and decodes the RVQ one codebook at a time with an `eval` after each; the
//! optimized path converts to MLX's channels-last layout once at the model boundary, decodes
//! all codebooks with one gather and a sum, and computes convolutions as BLAS products
//! (MLX's CPU `conv_transpose1d` dominated the naive decode; see [`seanet::Kernels`]).
pub mod config;
pub mod rvq;
pub mod seanet;
pub mod stream;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array, Dtype};

pub use self::config::EncodecConfig;
use self::rvq::Rvq;
use self::seanet::{Exec, Half, Layer};
use crate::checkpoint::{Checkpointed, Init, Vars};
use crate::error::{Error, Result};
use crate::nn::lstm::Recurrence;
use crate::Variant;

pub struct Encodec {
    pub config: EncodecConfig,
    pub(crate) encoder: Vec<Layer>,
    pub(crate) decoder: Vec<Layer>,
    pub(crate) quantizer: Rvq,
}

/// [`Exec::for_variant`]'s layouts and kernels (on a GPU MLX's own convolution kernels measured
/// faster: H200, 5 s decode at 32 kHz, 68 ms with the product formulation, 41 ms with them).
/// On a GPU the LSTM runs each layer as one fused CUDA kernel where MLX's CUDA backend is loaded,
/// else (Metal) as a compiled wavefront (H200, 2 x 1024 over 250 steps: 30.8 ms as separate ops,
/// 20.4 ms as the wavefront, 2.8 ms fused; `--example lstm_recurrence` measures all three); on the CPU
/// the optimized path runs each layer's recurrence on the host (`nn::host_lstm`), the naive one
/// as separate ops.
pub fn exec(v: Variant) -> Exec {
    let recurrence = match (v, crate::runtime::on_gpu()) {
        (Variant::Optimized, true) => Recurrence::Fused,
        (Variant::Optimized, false) => Recurrence::Host,
        _ => Recurrence::Ops,
    };
    Exec { recurrence, ..Exec::for_variant(v) }
}

fn tr(x: &Array) -> Result<Array> {
    Ok(x.transpose_axes(&[0, 2, 1])?)
}

impl Encodec {
    /// Refuse audio the model cannot take, naming what is wrong: `[B, C, L]` with the
    /// configured channel count, at least one sample, every sample finite.
    pub fn check_audio(&self, audio: &Array) -> Result<()> {
        let s = audio.shape();
        if s.len() != 3 || s[1] != self.config.audio_channels || s[0] < 1 {
            return Err(Error::InvalidArgument(format!("audio of shape {s:?}: expected [batch, {} channel(s), samples]", self.config.audio_channels)));
        }
        if s[2] < 1 {
            return Err(Error::InvalidArgument("audio is empty (0 samples)".into()));
        }
        if !crate::nn::ops::all_finite(audio)? {
            return Err(Error::InvalidArgument("audio holds NaN or infinite samples".into()));
        }
        Ok(())
    }

    /// Refuse codes that are not `[B, Q, T]` integers with `1 <= Q <= num_quantizers` and every
    /// code inside the codebook.
    pub fn check_codes(&self, codes: &Array) -> Result<Array> {
        let s = codes.shape();
        let nq = self.quantizer.num_quantizers();
        if s.len() != 3 || s[0] < 1 || s[1] < 1 || s[1] > nq || s[2] < 1 {
            return Err(Error::InvalidArgument(format!("codes of shape {s:?}: expected [batch, 1..={nq} codebooks, frames >= 1]")));
        }
        if !matches!(codes.dtype(), Dtype::Int32 | Dtype::Int64 | Dtype::Uint32 | Dtype::Int16 | Dtype::Uint16 | Dtype::Uint8 | Dtype::Int8) {
            return Err(Error::InvalidArgument(format!("codes have dtype {:?}: expected integers", codes.dtype())));
        }
        let c = codes.as_dtype(Dtype::Int32)?;
        let (lo, hi) = (c.min(None)?.item_cast::<i32>(), c.max(None)?.item_cast::<i32>());
        if lo < 0 || hi >= self.quantizer.codebook_size {
            return Err(Error::InvalidArgument(format!("codes range over [{lo}, {hi}], outside the codebook [0, {})", self.quantizer.codebook_size)));
        }
        Ok(c)
    }

    /// The encoder's output, channels-last `[B, T, D]`, lazily.
    fn embeddings_cl(&self, audio: &Array, variant: Variant) -> Result<Array> {
        self.check_audio(audio)?;
        let x = audio.as_dtype(Dtype::Float32)?;
        match variant {
            Variant::Optimized => seanet::run(&self.encoder, &tr(&x)?, exec(variant)),
            Variant::Naive => tr(&seanet::run(&self.encoder, &x, exec(variant))?),
        }
    }

    /// The encoder's output before quantization, `[B, D, T]` as HF returns it.
    pub fn embed(&self, audio: &Array, variant: Variant) -> Result<Array> {
        tr(&self.embeddings_cl(audio, variant)?)
    }

    /// Whether the model encodes in frames ([`Self::encode_frames`]): in chunks, or each
    /// normalised by its own scale (encodec_48khz).
    pub fn framed(&self) -> bool {
        self.config.chunk_length_s.is_some() || self.config.normalize
    }

    fn refuse_framed(&self, what: &str) -> Result<()> {
        if self.framed() {
            return Err(Error::InvalidArgument(format!("this EnCodec {what}s in normalised chunks (chunk_length_s / normalize, as encodec_48khz): use {what}_frames")));
        }
        Ok(())
    }

    /// Codes `[B, Q, T]` (int32) for audio `[B, C, L]` at `bandwidth` kbps (one of the
    /// configured `target_bandwidths`; `None` picks the lowest, as HF does). `T = ceil(L / hop)`.
    pub fn encode(&self, audio: &Array, bandwidth: Option<f64>, variant: Variant) -> Result<Array> {
        self.encode_forced(audio, bandwidth, variant, None)
    }

    /// [`Self::encode`] with the residual quantizer teacher-forced by `forced` codes
    /// ([`Rvq::encode_forced`]): each level's choice given the reference's earlier ones.
    pub fn encode_forced(&self, audio: &Array, bandwidth: Option<f64>, variant: Variant, forced: Option<&Array>) -> Result<Array> {
        self.refuse_framed("encode")?;
        self.encode_frame(audio, bandwidth, variant, forced)
    }

    fn encode_frame(&self, audio: &Array, bandwidth: Option<f64>, variant: Variant, forced: Option<&Array>) -> Result<Array> {
        let nq = self.config.quantizers_for_bandwidth(bandwidth)?;
        let emb = self.embeddings_cl(audio, variant)?;
        let codes = self.quantizer.encode_forced(&emb, nq, variant == Variant::Naive, forced)?;
        codes.eval()?;
        Ok(codes)
    }

    /// HF's `encode` for every configuration: the audio cut into `chunk_length` pieces every
    /// `chunk_stride` samples (one piece without chunking), each divided by the RMS of its mono
    /// mix plus 1e-8 when `normalize`, and encoded. `forced`, `[F, B, Q, T]`, teacher-forces
    /// the quantizer frame by frame (see [`Self::encode_forced`]).
    pub fn encode_frames(&self, audio: &Array, bandwidth: Option<f64>, variant: Variant, forced: Option<&Array>) -> Result<Frames> {
        self.check_audio(audio)?;
        let len = audio.shape()[2];
        let (chunk, stride) = match (self.config.chunk_length(), self.config.chunk_stride()) {
            (Some(c), Some(s)) => (c, s),
            _ => (len, len),
        };
        let starts: Vec<i32> = (0..len).step_by(stride.max(1) as usize).collect();
        if let Some(f) = forced {
            if f.ndim() != 4 || f.shape()[0] != starts.len() as i32 {
                return Err(Error::InvalidArgument(format!("forced codes {:?}: expected [{} frames, B, Q, T]", f.shape(), starts.len())));
            }
        }
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for (i, &offset) in starts.iter().enumerate() {
            let frame = audio.index((.., .., offset..(offset + chunk).min(len))).as_dtype(Dtype::Float32)?;
            let frame = if self.config.normalize {
                let mono = frame.mean_axes(&[1], true)?;
                let scale = mono.square()?.mean_axes(&[2], true)?.sqrt()?.add(mlx_rs::array!(1e-8f32))?;
                scales.push(scale.reshape(&[-1])?);
                frame.divide(&scale)?
            } else {
                frame
            };
            // The reference's codes of this frame, without the last frame's padding.
            let hop = self.config.hop_length();
            let frames_here = (frame.shape()[2] + hop - 1) / hop;
            let forced_i = forced.map(|f| f.index((i as i32, .., .., ..frames_here)));
            let c = self.encode_frame(&frame, bandwidth, variant, forced_i.as_ref())?;
            codes.push(c);
        }
        // HF pads the last frame's codes with zeros to the others' length, and says by how much.
        let t = codes[0].shape()[2];
        let mut last_pad = 0;
        if let Some(last) = codes.last_mut() {
            last_pad = t - last.shape()[2];
            if last_pad > 0 {
                *last = ops::pad(&*last, &[(0, 0), (0, 0), (0, last_pad)], None, None)?;
            }
        }
        let codes = ops::stack(&codes, 0)?;
        let scales = if scales.is_empty() { None } else { Some(ops::stack(&scales, 0)?) };
        Ok(Frames { codes, scales, last_pad })
    }

    /// HF's `decode` for every configuration: each frame decoded and multiplied by its scale,
    /// then (chunked models) overlap-added with linear fades over `chunk_stride`.
    pub fn decode_frames(&self, frames: &Frames, variant: Variant) -> Result<Array> {
        let s = frames.codes.shape();
        if s.len() != 4 || s[0] < 1 || frames.last_pad < 0 || frames.last_pad >= s[3] {
            return Err(Error::InvalidArgument(format!("frames of codes {s:?} with {} padded: expected [frames, B, Q, T] and less padding than T", frames.last_pad)));
        }
        if let Some(sc) = &frames.scales {
            if sc.shape() != [s[0], s[1]] || !crate::nn::ops::all_finite(sc)? {
                return Err(Error::InvalidArgument(format!("scales of shape {:?}: expected finite [{}, {}]", sc.shape(), s[0], s[1])));
            }
        }
        let stride = match self.config.chunk_stride() {
            Some(st) => st,
            None if s[0] == 1 => 1,
            None => return Err(Error::InvalidArgument(format!("{} frames for a model that encodes in one", s[0]))),
        };
        let mut decoded = Vec::new();
        for i in 0..s[0] {
            let mut c = frames.codes.index(i);
            if i == s[0] - 1 && frames.last_pad > 0 {
                c = c.index((.., .., ..s[3] - frames.last_pad));
            }
            let mut y = self.decode_frame(&c, variant)?;
            if let Some(sc) = &frames.scales {
                y = y.multiply(sc.index(i).reshape(&[-1, 1, 1])?)?;
            }
            decoded.push(y);
        }
        let out = match decoded.as_slice() {
            [one] => one.clone(),
            _ => linear_overlap_add(&decoded, stride)?,
        };
        out.eval()?;
        Ok(out)
    }

    /// Quantized embeddings channels-last `[B, T, D]` for checked codes.
    pub(crate) fn quantized_cl(&self, codes: &Array, variant: Variant) -> Result<Array> {
        match variant {
            Variant::Optimized => self.quantizer.decode_batched(codes),
            Variant::Naive => self.quantizer.decode_per_codebook(codes),
        }
    }

    /// Audio `[B, C, T * hop]` for codes `[B, Q, T]`, as HF's `decode` (no trimming).
    pub fn decode(&self, codes: &Array, variant: Variant) -> Result<Array> {
        self.refuse_framed("decode")?;
        self.decode_frame(codes, variant)
    }

    fn decode_frame(&self, codes: &Array, variant: Variant) -> Result<Array> {
        let codes = self.check_codes(codes)?;
        let q = self.quantized_cl(&codes, variant)?;
        let y = match variant {
            Variant::Optimized => tr(&seanet::run(&self.decoder, &q, exec(variant))?)?,
            Variant::Naive => seanet::run(&self.decoder, &tr(&q)?, exec(variant))?,
        };
        y.eval()?;
        Ok(y)
    }

    /// The SEANet encoder's layers, in HF order (for profiling).
    pub fn encoder_layers(&self) -> &[Layer] {
        &self.encoder
    }

    /// The SEANet decoder's layers, in HF order (for profiling).
    pub fn decoder_layers(&self) -> &[Layer] {
        &self.decoder
    }

    /// A decoder that takes codes chunk by chunk and carries its state between chunks.
    pub fn streaming_decoder(&self, variant: Variant) -> stream::StreamingDecoder<&Self> {
        stream::StreamingDecoder::new(self, variant)
    }
}

/// What [`Encodec::encode_frames`] gives, as HF's `EncodecEncoderOutput`.
pub struct Frames {
    /// `[F, B, Q, T]` int32; the last frame padded with `last_pad` zero codes.
    pub codes: Array,
    /// Each frame's normalisation scale `[F, B]`, when the model normalises.
    pub scales: Option<Array>,
    pub last_pad: i32,
}

/// HF's `_linear_overlap_add`: frames `[B, C, L_i]` placed every `stride` samples, each
/// weighted by a triangle over the first frame's length, divided by the summed weights.
fn linear_overlap_add(frames: &[Array], stride: i32) -> Result<Array> {
    let n = frames[0].shape()[2];
    let last = frames[frames.len() - 1].shape()[2];
    let total = stride * (frames.len() as i32 - 1) + last;
    // linspace(0, 1, n + 2)[1:-1], then 0.5 - |t - 0.5|.
    let weight: Vec<f32> = (1..=n).map(|i| f64::from(i) / f64::from(n + 1)).map(|t| (0.5 - (t - 0.5).abs()) as f32).collect();
    let mut sum_weight = vec![0f32; total as usize];
    let mut out: Option<Array> = None;
    for (i, f) in frames.iter().enumerate() {
        let (offset, len) = (i as i32 * stride, f.shape()[2]);
        if offset + len > total || len > n {
            return Err(Error::InvalidArgument(format!("frame {i} of {len} samples at {offset} does not fit the overlap-add of {total}")));
        }
        let w = &weight[..len as usize];
        for (k, v) in w.iter().enumerate() {
            sum_weight[offset as usize + k] += v;
        }
        let placed = ops::pad(&f.multiply(Array::from_slice(w, &[1, 1, len]))?, &[(0, 0), (0, 0), (offset, total - offset - len)], None, None)?;
        out = Some(match out {
            None => placed,
            Some(o) => o.add(&placed)?,
        });
    }
    if sum_weight.iter().any(|&v| v <= 0.0) {
        return Err(Error::InvalidArgument("overlap-add: a sample no frame covers (stride longer than the frames)".into()));
    }
    let out = out.ok_or_else(|| Error::InvalidArgument("overlap-add of no frames".into()))?;
    Ok(out.divide(Array::from_slice(&sum_weight, &[1, 1, total]))?)
}

impl Checkpointed for Encodec {
    type Config = EncodecConfig;

    /// HF `EncodecModel` names; every tensor stays float32. The codebooks' training buffers
    /// (`inited`, `cluster_size`, `embed_avg`) are accepted and checked when present, never
    /// read.
    fn build(config: EncodecConfig, vs: &Vars) -> Result<Self> {
        let encoder = seanet::build(&config, Half::Encoder, vs)?;
        let decoder = seanet::build(&config, Half::Decoder, vs)?;
        let (n, d) = (config.codebook_size, config.codebook_dim());
        let codebooks = (0..config.num_quantizers())
            .map(|q| {
                let cb = vs.pp(format!("quantizer.layers.{q}.codebook"));
                cb.optional("inited", &[1])?;
                cb.optional("cluster_size", &[n])?;
                cb.optional("embed_avg", &[n, d])?;
                cb.tensor("embed", &[n, d])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config, encoder, decoder, quantizer: Rvq::new(codebooks)? })
    }

    /// Unit gains on the weight-normed convolutions keep activations in range through the
    /// stack.
    fn init(name: &str, _shape: &[i32]) -> Init {
        if name.ends_with("original0") {
            Init::Ones
        } else if name.ends_with("original1") {
            Init::Normal(1.0)
        } else if name.contains(".lstm.") {
            Init::Normal(0.1)
        } else if name.ends_with("codebook.embed") {
            Init::Normal(0.3)
        } else {
            Init::Normal(0.02)
        }
    }
}
