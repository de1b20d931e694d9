//! Whisper workloads at large-v3-turbo size, random weights: the seed's decode optimizations
//! (all together and one at a time), and 30 s transcription with its phases.
//!
//! Decodes run a fixed number of tokens past any end-of-transcript (random weights would stop
//! anywhere), from the four-token start sequence, batch 1.
use anyhow::Result;
use mlx_rs::Array;
use models::checkpoint::Checkpointed;
use models::nn::attention::AttentionKernel;
use models::nn::kv_cache::KvCacheKind;
use models::nn::quant::Precision;
use models::whisper::{audio::LogMel, BeamSearch, DecodeOptions, Whisper, WhisperConfig};

use super::workload::{noise, Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

/// `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>` in the large-v3 vocabulary.
const SOT: [i32; 4] = [50258, 50259, 50360, 50364];

/// Weights a turbo decode step reads at precision `p` (the floor's numerator).
fn step_bytes(p: Precision) -> Option<f64> {
    turbo(None).ok().map(|c| c.decoder_step_weight_bytes(p.bytes_per_weight()))
}

fn turbo(encoder_layers: Option<i32>) -> Result<WhisperConfig> {
    let mut c = WhisperConfig::preset("large-v3-turbo")?;
    if let Some(n) = encoder_layers {
        c.encoder_layers = n;
    }
    Ok(c)
}

/// Which switches the "optimized" side of a decode workload turns on.
#[derive(Clone, Copy)]
enum Switch {
    All,
    KvCache,
    CrossCache,
    EvalInterval,
    FixedStep,
    /// The layer kernel on top of the other optimizations: naive = optimized without it.
    FusedLayer,
    /// The optimized path's eval interval on top of the rest: naive = optimized evaluating
    /// every step (the same on the CPU, where the optimized path evaluates every step).
    EvalIntervalOnTop,
}

impl Switch {
    fn options(self, v: Variant) -> DecodeOptions {
        let naive = DecodeOptions::naive();
        match (v, self) {
            (Variant::Naive, Switch::FusedLayer) => DecodeOptions { fused_layer: false, ..DecodeOptions::optimized() },
            (Variant::Optimized, Switch::FusedLayer) => DecodeOptions { fused_layer: true, ..DecodeOptions::optimized() },
            (Variant::Naive, Switch::EvalIntervalOnTop) => DecodeOptions { eval_every: 1, ..DecodeOptions::optimized() },
            (Variant::Naive, _) => naive,
            (Variant::Optimized, Switch::All | Switch::EvalIntervalOnTop) => DecodeOptions::optimized(),
            (Variant::Optimized, Switch::KvCache) => DecodeOptions { kv_cache: KvCacheKind::Preallocated, ..naive },
            (Variant::Optimized, Switch::CrossCache) => DecodeOptions { cache_cross: true, ..naive },
            (Variant::Optimized, Switch::EvalInterval) => DecodeOptions { eval_every: DecodeOptions::optimized().eval_every, ..naive },
            (Variant::Optimized, Switch::FixedStep) => DecodeOptions { fixed_step: true, ..naive },
        }
    }
}

struct Decode {
    model: Whisper,
    audio_features: Array,
    tokens: usize,
    switch: Switch,
}

impl Workload for Decode {
    fn run(&mut self, v: Variant) -> Result<()> {
        let out = self.model.greedy(&self.audio_features, &SOT, self.tokens, None, &self.switch.options(v))?;
        anyhow::ensure!(out[0].len() == self.tokens, "decoded {} tokens, wanted {}", out[0].len(), self.tokens);
        Ok(())
    }
}

/// Beam search (beam 5) over a fixed budget of tokens, beams batched through the caches.
struct Beam {
    model: Whisper,
    audio_features: Array,
    tokens: usize,
}

impl Workload for Beam {
    fn run(&mut self, v: Variant) -> Result<()> {
        let eot = self.model.config.eos_token_id;
        self.model.beam_search(&self.audio_features, &SOT, &BeamSearch { beam: 5, max_new: self.tokens, eot }, &DecodeOptions::for_variant(v), &Default::default())?;
        Ok(())
    }
}

/// Mel, encoder, or everything (mel + encoder + 224-token decode).
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Mel,
    Encode,
    Transcribe,
}

struct Transcribe {
    model: Option<Whisper>,
    mel: LogMel,
    audio: Array,
    phase: Phase,
}

impl Workload for Transcribe {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.compute(v)?;
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, Array)>> {
        self.prepare(v)?;
        let (mut out, tokens) = self.compute(v)?;
        if let Some(t) = tokens {
            out.push(("tokens".into(), super::workload::tokens_array(&t)?));
        }
        Ok(out)
    }
}

/// Named outputs, and the greedy tokens where the workload decodes.
type Computed = (Vec<(String, Array)>, Option<Vec<Vec<i32>>>);

impl Transcribe {
    /// The timed pipeline, each phase evaluated before the next: the mel alone, or the encoder
    /// output and, for transcription, 224 greedy tokens.
    fn compute(&self, v: Variant) -> Result<Computed> {
        let mel = self.mel.compute(&self.audio)?;
        let Some(model) = &self.model else {
            mel.eval()?;
            return Ok((vec![("mel".into(), mel)], None));
        };
        let enc = model.encode(&mel, AttentionKernel::for_variant(v))?;
        enc.eval()?;
        let tokens = if self.phase == Phase::Transcribe { Some(model.greedy(&enc, &SOT, 224, None, &DecodeOptions::for_variant(v))?) } else { None };
        Ok((vec![("encoder".into(), enc)], tokens))
    }
}

const SWITCHES: &str = "naive = concatenating KV cache, cross-attention K/V recomputed every step, eval every step, explicit attention; optimized = preallocated cache with O(1) slice updates, cross-attention K/V cached, eval every 8 steps on a GPU (every step on the CPU, where deferring measured slower: blocks/eval-interval), fused attention; the compiled fixed-shape step off (on top of the rest it measured 0.79-0.99x)";

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let mut out = Vec::new();
    let size = "large-v3-turbo decoder at real size (d_model 1280, 20 heads, 4 layers, vocabulary 51866), random weights; the encoder output is random (decode only)";
    for tokens in [64usize, 224, 440] {
        out.push(Spec {
            id: format!("whisper/decode-{tokens}"),
            model: "whisper",
            info: WorkloadInfo {
                size: size.into(),
                input: format!("1500 random audio frames, the 4-token start sequence, then {tokens} tokens (fixed length, past any end of transcript), batch 1"),
                timed: format!("greedy decoding of {tokens} tokens; {SWITCHES}"),
                note: None,
            },
            work: Work { tokens: Some(tokens as f64), weight_bytes_per_token: step_bytes(Precision::F32), ..Work::default() },
            heavy: tokens > 64,
            build: Box::new(move |_| {
                Ok(Box::new(Decode {
                    model: Whisper::random(turbo(Some(1))?, 11)?,
                    audio_features: noise(&[1, 1500, 1280], 12, 1.0)?,
                    tokens,
                    switch: Switch::All,
                }) as Box<dyn Workload>)
            }),
        });
    }
    for (name, switch, what) in [
        ("kv-cache", Switch::KvCache, "the preallocated KV cache alone"),
        ("cross-cache", Switch::CrossCache, "cached cross-attention K/V alone"),
        ("eval-interval", Switch::EvalInterval, "eval every 8 steps alone"),
        ("fixed-step", Switch::FixedStep, "the compiled fixed-shape step alone (its own preallocated buffers and fused attention)"),
        ("fused-layer", Switch::FusedLayer, "the CUDA layer kernel on top of the other four (it needs the preallocated cache and cached cross K/V; naive here = the optimized path without it)"),
        ("eval-interval-on-top", Switch::EvalIntervalOnTop, "the optimized path's eval interval on top of the rest (naive here = the optimized path evaluating every step; on the CPU, where the optimized path evaluates every step, both sides are the same)"),
    ] {
        out.push(Spec {
            id: format!("whisper/decode-224-{name}"),
            model: "whisper",
            info: WorkloadInfo {
                size: size.into(),
                input: "1500 random audio frames, the 4-token start sequence, then 224 tokens, batch 1".into(),
                timed: match switch {
                    Switch::FusedLayer | Switch::EvalIntervalOnTop => format!("greedy decoding of 224 tokens; optimized = {what}"),
                    _ => format!("greedy decoding of 224 tokens; naive = all five decode switches off (explicit attention); optimized = {what}, the rest as naive"),
                },
                note: Some("one optimization at a time, so the report attributes the combined gain".into()),
            },
            work: Work { tokens: Some(224.0), weight_bytes_per_token: step_bytes(Precision::F32), ..Work::default() },
            heavy: true,
            build: Box::new(move |_| {
                Ok(Box::new(Decode {
                    model: Whisper::random(turbo(Some(1))?, 11)?,
                    audio_features: noise(&[1, 1500, 1280], 12, 1.0)?,
                    tokens: 224,
                    switch,
                }) as Box<dyn Workload>)
            }),
        });
    }
    // Weight precision: the same 64-token decode with the decoder's linear and embedding weights
    // stored at fp16, int8 or int4 (groups of 64), both variants.
    for (name, p) in [("fp16", Precision::F16), ("int8", Precision::Int { bits: 8, group_size: 64 }), ("int4", Precision::Int { bits: 4, group_size: 64 })] {
        out.push(Spec {
            id: format!("whisper/decode-64-{name}"),
            model: "whisper",
            info: WorkloadInfo {
                size: format!("{size}; linear and embedding weights at {p}"),
                input: "1500 random audio frames, the 4-token start sequence, then 64 tokens, batch 1".into(),
                timed: format!("greedy decoding of 64 tokens; {SWITCHES}"),
                note: Some("against whisper/decode-64 (fp32): the speed and memory of quantized weights".into()),
            },
            work: Work { tokens: Some(64.0), weight_bytes_per_token: step_bytes(p), ..Work::default() },
            heavy: true,
            build: Box::new(move |_| {
                let model = Whisper::random_as(turbo(Some(1))?, 11, Some(p))?;
                Ok(Box::new(Decode { model, audio_features: noise(&[1, 1500, 1280], 12, 1.0)?, tokens: 64, switch: Switch::All }) as Box<dyn Workload>)
            }),
        });
    }
    out.push(Spec {
        id: "whisper/beam5-64".into(),
        model: "whisper",
        info: WorkloadInfo {
            size: size.into(),
            input: "1500 random audio frames, the 4-token start sequence, up to 64 tokens, batch 1".into(),
            timed: "beam search with 5 beams batched through the caches (openai-whisper's algorithm), up to 64 steps; naive = concatenating KV cache, cross-attention K/V recomputed every step, explicit attention; optimized = preallocated cache, cached cross-attention K/V, fused attention (beam selection reads every step's scores, so both evaluate every step)".into(),
            note: Some("against whisper/decode-64 (greedy, same steps): the cost of beam search".into()),
        },
        work: Work { tokens: Some(64.0), ..Work::default() },
        heavy: true,
        build: Box::new(|_| Ok(Box::new(Beam { model: Whisper::random(turbo(Some(1))?, 11)?, audio_features: noise(&[1, 1500, 1280], 12, 1.0)?, tokens: 64 }) as Box<dyn Workload>)),
    });
    for (id, phase, timed, heavy) in [
        ("whisper/mel-30s", Phase::Mel, "the log-mel front end (128 bins), evaluated; the same for both variants", false),
        ("whisper/encode-30s", Phase::Encode, "log-mel plus the 32-layer encoder, evaluated; naive = explicit softmax(QK^T)V attention, optimized = fused scaled_dot_product_attention", true),
        (
            "whisper/transcribe-30s",
            Phase::Transcribe,
            "log-mel, encoder and 224 decoded tokens (fixed length), end to end; naive = explicit attention and all decode optimizations off; optimized = fused attention and all on",
            true,
        ),
    ] {
        out.push(Spec {
            id: id.into(),
            model: "whisper",
            info: WorkloadInfo {
                size: if phase == Phase::Mel {
                    "openai-whisper front end, 128 mel bins".into()
                } else {
                    "large-v3-turbo at real size (32 encoder layers, 4 decoder layers, d_model 1280), random weights".into()
                },
                input: "30 s of noise at 16 kHz".into(),
                timed: timed.into(),
                note: (phase == Phase::Transcribe).then(|| "the decode runs 224 tokens past any end of transcript (random weights)".into()),
            },
            work: Work { audio_seconds: Some(30.0), ..Work::default() },
            heavy,
            build: Box::new(move |_| {
                let model = if phase == Phase::Mel { None } else { Some(Whisper::random(turbo(None)?, 21)?) };
                Ok(Box::new(Transcribe { model, mel: LogMel::new(128)?, audio: noise(&[480_000], 22, 0.1)?, phase }) as Box<dyn Workload>)
            }),
        });
    }
    out
}
