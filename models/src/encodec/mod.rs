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

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use mlx_rs::{Array, Dtype};

pub use self::config::EncodecConfig;
use self::rvq::Rvq;
use self::seanet::{Exec, Half, Kernels, Layer, Layout};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::lstm::Recurrence;
use crate::weights::{self, Init};
use crate::Variant;

/// Codebook buffers HF keeps in the state dict but never reads at inference.
const UNUSED_BUFFERS: [&str; 3] = ["inited", "cluster_size", "embed_avg"];

pub struct Encodec {
    pub config: EncodecConfig,
    pub(crate) encoder: Vec<Layer>,
    pub(crate) decoder: Vec<Layer>,
    pub(crate) quantizer: Rvq,
}

/// The naive path: PyTorch's layout with transposes inside every convolution, MLX's
/// convolution ops. The optimized path: channels-last from the boundary, and on the CPU the
/// BLAS-product convolutions; on a GPU MLX's own convolution kernels, which measured faster
/// there (H200, 5 s decode at 32 kHz: 68 ms with the product formulation, 41 ms with them).
/// On a GPU the LSTM runs as a compiled wavefront (H200, 2 x 1024 over 250 steps: 51-60 ms as
/// separate ops, 22.7 ms so; `--example lstm_recurrence`); on the CPU, where its second layer's
/// per-step input product costs more than the launches it saves, as separate ops.
pub fn exec(v: Variant) -> Exec {
    match v {
        Variant::Naive => Exec { layout: Layout::ChannelsFirst, kernels: Kernels::Mlx, recurrence: Recurrence::Ops },
        Variant::Optimized => {
            let gpu = crate::runtime::on_gpu();
            Exec {
                layout: Layout::ChannelsLast,
                kernels: if gpu { Kernels::Mlx } else { Kernels::Gemm },
                recurrence: if gpu { Recurrence::Compiled } else { Recurrence::Ops },
            }
        }
    }
}

fn tr(x: &Array) -> Result<Array> {
    Ok(x.transpose_axes(&[0, 2, 1])?)
}

/// Checkpoint names to the ones `state_dict` uses today: older saves (and the hub's EnCodec
/// checkpoints) store weight norm as `weight_g` / `weight_v`.
fn sanitize(tensors: HashMap<String, Array>) -> HashMap<String, Array> {
    tensors
        .into_iter()
        .map(|(k, v)| {
            let k = if let Some(p) = k.strip_suffix(".weight_g") {
                format!("{p}.parametrizations.weight.original0")
            } else if let Some(p) = k.strip_suffix(".weight_v") {
                format!("{p}.parametrizations.weight.original1")
            } else {
                k
            };
            (k, v)
        })
        .collect()
}

impl Encodec {
    /// Every weight name and PyTorch shape the checkpoint must hold.
    pub fn expected_weights(cfg: &EncodecConfig) -> BTreeMap<String, Vec<i32>> {
        let mut e = BTreeMap::new();
        seanet::expected_weights(cfg, Half::Encoder, &mut e);
        seanet::expected_weights(cfg, Half::Decoder, &mut e);
        for q in 0..cfg.num_quantizers() {
            e.insert(format!("quantizer.layers.{q}.codebook.embed"), vec![cfg.codebook_size, cfg.codebook_dim()]);
        }
        e
    }

    /// Build from checkpoint tensors; `source` names them in errors. Every expected weight
    /// must be present with its shape and nothing else may be left over (the codebooks'
    /// training buffers are allowed, and checked, but not required).
    pub fn from_tensors(config: EncodecConfig, tensors: HashMap<String, Array>, source: &str) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config { path: source.into(), reason })?;
        let mut tensors = sanitize(tensors);
        let mut expected = Self::expected_weights(&config);
        for q in 0..config.num_quantizers() {
            for (b, shape) in UNUSED_BUFFERS.iter().zip([vec![1], vec![config.codebook_size], vec![config.codebook_size, config.codebook_dim()]]) {
                let key = format!("quantizer.layers.{q}.codebook.{b}");
                if tensors.contains_key(&key) {
                    expected.insert(key, shape);
                }
            }
        }
        weights::check_strict(source, &tensors, &expected)?;
        for k in expected.keys() {
            if UNUSED_BUFFERS.iter().any(|b| k.ends_with(b)) {
                tensors.remove(k);
            }
        }
        let mut w: HashMap<String, Array> = tensors.into_iter().map(|(k, v)| Ok((k, v.as_dtype(Dtype::Float32)?))).collect::<Result<_>>()?;
        let encoder = seanet::build(&config, Half::Encoder, &mut w)?;
        let decoder = seanet::build(&config, Half::Decoder, &mut w)?;
        let codebooks = (0..config.num_quantizers())
            .map(|q| w.remove(&format!("quantizer.layers.{q}.codebook.embed")).ok_or_else(|| Error::InvalidArgument(format!("codebook {q} vanished"))))
            .collect::<Result<Vec<_>>>()?;
        let model = Self { config, encoder, decoder, quantizer: Rvq::new(codebooks)? };
        model.materialize()?;
        Ok(model)
    }

    /// Evaluate the folded weights once, so that no run pays for folding.
    fn materialize(&self) -> Result<()> {
        let mut arrays: Vec<&Array> = self.quantizer.codebooks.iter().collect();
        for l in self.encoder.iter().chain(&self.decoder) {
            match l {
                Layer::Conv(c) => arrays.extend([&c.weight, &c.bias]),
                Layer::ConvTranspose(c) => arrays.extend(c.conv.arrays()),
                Layer::Res(r) => r.convs.iter().chain(&r.shortcut).for_each(|c| arrays.extend([&c.weight, &c.bias])),
                Layer::Lstm(s) => s.layers.iter().for_each(|l| arrays.extend(l.arrays())),
                Layer::Elu => {}
            }
        }
        mlx_rs::transforms::eval(arrays)?;
        Ok(())
    }

    /// A model of `config`'s real size with random weights from `seed`, for benchmarks: unit
    /// gains on the weight-normed convolutions keep activations in range through the stack.
    pub fn random(config: EncodecConfig, seed: u64) -> Result<Self> {
        let tensors = weights::random_tensors(Self::expected_weights(&config), seed, |name| {
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
        })?;
        Self::from_tensors(config, tensors, &format!("random weights (seed {seed})"))
    }

    /// `config.json` and `model.safetensors` from a folder (a fixture or a saved checkpoint).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let config = EncodecConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        let tensors = weights::read_safetensors(&path)?;
        Self::from_tensors(config, tensors, &path.display().to_string())
    }

    /// Refuse audio the model cannot take, naming what is wrong: `[B, C, L]` with the
    /// configured channel count, at least one sample, every sample finite.
    pub fn check_audio(&self, audio: &Array) -> Result<()> {
        let s = audio.shape();
        if s.len() != 3 || s[1] != self.config.audio_channels || s[0] < 1 {
            return Err(Error::InvalidArgument(format!(
                "audio of shape {s:?}: expected [batch, {} channel(s), samples]",
                self.config.audio_channels
            )));
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

    /// Codes `[B, Q, T]` (int32) for audio `[B, C, L]` at `bandwidth` kbps (one of the
    /// configured `target_bandwidths`; `None` picks the lowest, as HF does). `T = ceil(L / hop)`.
    pub fn encode(&self, audio: &Array, bandwidth: Option<f64>, variant: Variant) -> Result<Array> {
        let nq = self.config.quantizers_for_bandwidth(bandwidth)?;
        let emb = self.embeddings_cl(audio, variant)?;
        let codes = self.quantizer.encode(&emb, nq, variant == Variant::Naive)?;
        codes.eval()?;
        Ok(codes)
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

