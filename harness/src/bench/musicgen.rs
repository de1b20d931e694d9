//! MusicGen workloads at real size, random weights: decode-only runs of a fixed number of steps
//! with classifier-free guidance (batch 2: conditioned and null) from random text states, naive
//! against optimized and each switch alone; and the seed's end-to-end 10 s generation (T5,
//! 500 steps, EnCodec decode).
use anyhow::Result;
use mlx_rs::{random, Array};
use models::checkpoint::Checkpointed;
use models::musicgen::{Conditioning, DecodeOptions, MusicGen, MusicgenConfig, Sampler};
use models::nn::kv_cache::KvCacheKind;
use models::nn::quant::Precision;

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

/// A side's decode options, settled when the workload runs: MusicGen's optimized options
/// depend on the device (eval interval, the CUDA layer kernel), which the bench selects only
/// after it has listed the workloads.
#[derive(Clone, Copy)]
enum Opts {
    Fixed(DecodeOptions),
    /// The optimized path, one switch forced by the function (the identity for as it is).
    Optimized(fn(DecodeOptions) -> DecodeOptions),
}

impl Opts {
    const OPTIMIZED: Opts = Opts::Optimized(|o| o);

    fn get(self) -> DecodeOptions {
        match self {
            Opts::Fixed(o) => o,
            Opts::Optimized(tweak) => tweak(MusicGen::decode_options(Variant::Optimized)),
        }
    }
}

struct Decode {
    model: MusicGen,
    cond: Conditioning,
    steps: usize,
    naive: Opts,
    optimized: Opts,
}

impl Workload for Decode {
    fn run(&mut self, v: Variant) -> Result<()> {
        let opts = match v {
            Variant::Naive => self.naive.get(),
            Variant::Optimized => self.optimized.get(),
        };
        let codes = self.model.generate_from(&self.cond, self.steps, 3.0, &Sampler::Greedy, &opts, |_, _| {})?;
        anyhow::ensure!(codes.shape()[2] as usize == self.steps + 1 - 4, "generated {:?}", codes.shape());
        Ok(())
    }
}

/// Text tokens to audio: T5, 500 steps with guidance, EnCodec 32 kHz decode.
struct Generate {
    model: MusicGen,
    ids: Array,
    mask: Array,
    steps: usize,
}

impl Generate {
    fn generate(&self, v: Variant) -> Result<(Array, Array)> {
        let codes = self.model.generate_greedy(&self.ids, &self.mask, self.steps, 3.0, &MusicGen::decode_options(v))?;
        let audio = self.model.codec.decode(&codes, v)?;
        Ok((codes, audio))
    }
}

impl Workload for Generate {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.generate(v)?.1.eval()?;
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, Array)>> {
        let (codes, audio) = self.generate(v)?;
        Ok(vec![("codes".into(), codes), ("audio".into(), audio)])
    }
}

/// Weights a decode step of `size` reads at precision `p` (the floor's numerator).
fn step_bytes(size: &str, p: Precision) -> Option<f64> {
    MusicgenConfig::preset(size).ok().map(|c| c.decoder_step_weight_bytes(p.bytes_per_weight()))
}

/// Conditioning from 12 random text states (T5 output width), projected, with the null half
/// as HF's generate builds it: zero states, masked whole.
fn conditioning(model: &MusicGen) -> Result<Conditioning> {
    let d = model.config.decoder.hidden_size;
    let text = random::normal::<f32>(&[1, 12, d], None, None, &random::key(31)?)?;
    let states = mlx_rs::ops::concatenate(&[text, mlx_rs::ops::zeros::<f32>(&[1, 12, d])?], 0)?;
    let mask = mlx_rs::ops::concatenate(&[mlx_rs::ops::zeros::<f32>(&[1, 1, 1, 12])?, mlx_rs::ops::full::<f32>(&[1, 1, 1, 12], mlx_rs::array!(f32::MIN))?], 0)?;
    mlx_rs::transforms::eval([&states, &mask])?;
    Ok(Conditioning::new(states, mask, false)?)
}

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let mut out = Vec::new();
    let all =
        "naive = concatenating KV cache, cross-attention K/V recomputed every step, eval every step, explicit attention; optimized = preallocated cache sized to the steps, cross-attention K/V cached, on a GPU each step's evaluation started as soon as it is built, the host building the next while the device runs (overlapped; every 8 steps measured slower there: decode-medium-500-eval-interval-on-top), on the CPU every step evaluated in turn (deferring measured slower: blocks/eval-interval), fused attention, on a CUDA GPU each layer of a one-position step as one kernel; the compiled fixed-shape step off (on top of the rest it measured 0.79-0.99x)";
    let decode = |size: &'static str, steps: usize, name: Option<&str>, (naive, optimized): (Opts, Opts), timed: String, heavy: bool| Spec {
        id: match name {
            Some(n) => format!("musicgen/decode-{size}-{steps}-{n}"),
            None => format!("musicgen/decode-{size}-{steps}"),
        },
        model: "musicgen",
        info: WorkloadInfo {
            size: format!("musicgen-{size} decoder at real size, 4 codebooks of 2048, random weights"),
            input: "12 random text states (projected T5 output), classifier-free guidance scale 3 (batch 2)".into(),
            timed: format!("{steps} greedy decode steps ({:.1} s of audio at 50 Hz) with the delay pattern; {timed}", steps as f64 / 50.0),
            note: name.map(|_| "one optimization at a time, so the report attributes the combined gain".to_string()),
        },
        work: Work {
            tokens: Some(steps as f64),
            weight_bytes_per_token: step_bytes(size, Precision::F32),
            ..Work::default()
        },
        heavy,
        build: Box::new(move |_| {
            let model = MusicGen::random(MusicgenConfig::preset(size)?, 41)?;
            let cond = conditioning(&model)?;
            Ok(Box::new(Decode { model, cond, steps, naive, optimized }) as Box<dyn Workload>)
        }),
    };
    let naive = DecodeOptions::naive();
    let both = (Opts::Fixed(naive), Opts::OPTIMIZED);
    out.push(decode("small", 50, None, both, all.into(), false));
    out.push(decode("small", 500, None, both, all.into(), true));
    out.push(decode("medium", 500, None, both, all.into(), true));
    for (name, o, what) in [
        ("kv-cache", DecodeOptions { kv_cache: KvCacheKind::Preallocated, ..naive }, "the preallocated KV cache alone"),
        ("cross-cache", DecodeOptions { cache_cross: true, ..naive }, "cached cross-attention K/V alone"),
        ("eval-interval", DecodeOptions { eval_every: 8, ..naive }, "eval every 8 steps alone"),
        ("fixed-step", DecodeOptions { fixed_step: true, ..naive }, "the compiled fixed-shape step alone (its own preallocated buffers and fused attention)"),
    ] {
        out.push(decode("small", 500, Some(name), (Opts::Fixed(naive), Opts::Fixed(o)), format!("naive = all five off (explicit attention); optimized = {what}, the rest as naive"), true));
    }
    // The layer kernel needs the preallocated cache and the cached cross K/V, so it is measured
    // on top of the others: naive = the optimized path without it.
    for size in ["small", "medium"] {
        let what = "naive = the optimized path with the CUDA layer kernel off; optimized = with it on (a GPU without CUDA runs both op by op)";
        let pair = (Opts::Optimized(|o| DecodeOptions { fused_layer: false, ..o }), Opts::Optimized(|o| DecodeOptions { fused_layer: true, ..o }));
        out.push(decode(size, 500, Some("fused-layer"), pair, what.into(), true));
    }
    // Overlapping the host's graph building with the device's evaluation only means something
    // with deferred evaluation, so it too is measured on top of the others.
    let what = "naive = the optimized path without overlap (evaluating synchronously every 8 steps on a GPU, as DecodeOptions::optimized() does); optimized = with it (each step's evaluation started as soon as it is built, waiting only for the one before, so the host builds the next step while the device runs)";
    let pair = (Opts::Optimized(|_| DecodeOptions { overlap: false, ..DecodeOptions::optimized() }), Opts::OPTIMIZED);
    out.push(decode("medium", 500, Some("overlap"), pair, what.into(), true));
    // The eval interval on top of the rest (alone, over a concatenating cache, it is the
    // `decode-small-500-eval-interval` row): with overlap, every step against every 8 steps.
    let what =
        "naive = the optimized path evaluating every 8 steps (overlapped on a GPU, synchronously on the CPU); optimized = as it runs, every step (overlapped on a GPU, synchronously on the CPU)";
    let pair = (Opts::Optimized(|o| DecodeOptions { eval_every: 8, ..o }), Opts::OPTIMIZED);
    out.push(decode("medium", 500, Some("eval-interval-on-top"), pair, what.into(), true));
    // Weight precision: medium's decoder (linears, codebook embeddings, heads) at fp32, fp16,
    // int8 or int4 (groups of 64), 50 steps, both variants.
    for (name, p) in [("fp32", Precision::F32), ("fp16", Precision::F16), ("int8", Precision::Int { bits: 8, group_size: 64 }), ("int4", Precision::Int { bits: 4, group_size: 64 })] {
        out.push(Spec {
            id: format!("musicgen/decode-medium-50-{name}"),
            model: "musicgen",
            info: WorkloadInfo {
                size: format!("musicgen-medium decoder at real size, weights at {p}, random"),
                input: "12 random text states (projected T5 output), classifier-free guidance scale 3 (batch 2)".into(),
                timed: format!("50 greedy decode steps with the delay pattern; {all}"),
                note: Some("ms per step and peak memory by weight precision".into()),
            },
            work: Work { tokens: Some(50.0), weight_bytes_per_token: step_bytes("medium", p), ..Work::default() },
            heavy: true,
            build: Box::new(move |_| {
                let model = MusicGen::random_as(MusicgenConfig::preset("medium")?, 41, Some(p))?;
                let cond = conditioning(&model)?;
                Ok(Box::new(Decode { model, cond, steps: 50, naive: Opts::Fixed(DecodeOptions::naive()), optimized: Opts::OPTIMIZED }) as Box<dyn Workload>)
            }),
        });
    }
    for size in ["small", "medium"] {
        out.push(Spec {
            id: format!("musicgen/generate-10s-{size}"),
            model: "musicgen",
            info: WorkloadInfo {
                size: format!("musicgen-{size} at real size (t5-base, decoder, EnCodec 32 kHz), random weights"),
                input: "12 random text tokens, classifier-free guidance scale 3".into(),
                timed: format!("T5 encoding, 500 greedy decode steps with the delay pattern (10 s of audio), EnCodec decode to audio, end to end; {all}; EnCodec naive or optimized with them"),
                note: (size == "medium").then(|| "the seed's target row: 10 s of audio in under 15 s".into()),
            },
            work: Work { tokens: Some(500.0), audio_seconds: Some(10.0), ..Work::default() },
            heavy: true,
            build: Box::new(move |_| {
                let model = MusicGen::random(MusicgenConfig::preset(size)?, 41)?;
                let ids = random::randint::<_, i32>(1, 32000, &[1, 12], &random::key(32)?)?;
                let mask = mlx_rs::ops::ones::<i32>(&[1, 12])?;
                Ok(Box::new(Generate { model, ids, mask, steps: 500 }) as Box<dyn Workload>)
            }),
        });
    }
    out
}
