//! MusicGen decode workloads at real decoder size, random weights: a fixed number of steps with
//! classifier-free guidance (batch 2: conditioned and null), from random text states, naive
//! against optimized and each switch alone.
use anyhow::Result;
use mlx_rs::random;
use models::musicgen::{Conditioning, DecodeOptions, MusicGen, MusicgenConfig};
use models::nn::kv_cache::KvCacheKind;

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

struct Decode {
    model: MusicGen,
    cond: Conditioning,
    steps: usize,
    optimized: DecodeOptions,
}

impl Workload for Decode {
    fn run(&mut self, v: Variant) -> Result<()> {
        let opts = match v {
            Variant::Naive => DecodeOptions::naive(),
            Variant::Optimized => self.optimized,
        };
        let codes = self.model.generate_from(&self.cond, self.steps, 3.0, &opts)?;
        anyhow::ensure!(codes.shape()[2] as usize == self.steps + 1 - 4, "generated {:?}", codes.shape());
        Ok(())
    }
}

/// Conditioning from 12 random text states (T5 output width), projected, with the null half.
fn conditioning(model: &MusicGen) -> Result<Conditioning> {
    let d = model.config.decoder.hidden_size;
    let states = random::normal::<f32>(&[2, 12, d], None, None, &random::key(31)?)?;
    let mask = mlx_rs::ops::concatenate(&[mlx_rs::ops::zeros::<f32>(&[1, 1, 1, 12])?, mlx_rs::ops::full::<f32>(&[1, 1, 1, 12], mlx_rs::array!(f32::MIN))?], 0)?;
    mlx_rs::transforms::eval([&states, &mask])?;
    Ok(Conditioning { states, mask })
}

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let mut out = Vec::new();
    let all = "naive = concatenating KV cache, cross-attention K/V recomputed every step, eval every step; optimized = preallocated cache, cross-attention K/V cached, eval every 8 steps";
    for (size, steps, heavy) in [("small", 50usize, false), ("small", 500, true), ("medium", 500, true)] {
        let mut variants: Vec<(String, DecodeOptions, String)> = vec![(format!("musicgen/{size}-{steps}"), DecodeOptions::optimized(), all.to_string())];
        if steps == 500 && size == "small" {
            let naive = DecodeOptions::naive();
            for (name, o, what) in [
                ("kv-cache", DecodeOptions { kv_cache: KvCacheKind::Preallocated, ..naive }, "the preallocated KV cache alone"),
                ("cross-cache", DecodeOptions { cache_cross: true, ..naive }, "cached cross-attention K/V alone"),
                ("eval-interval", DecodeOptions { eval_every: 8, ..naive }, "eval every 8 steps alone"),
            ] {
                variants.push((format!("musicgen/{size}-{steps}-{name}"), o, format!("naive = all three off; optimized = {what}")));
            }
        }
        for (id, optimized, timed) in variants {
            out.push(Spec {
                id,
                model: "musicgen",
                info: WorkloadInfo {
                    size: format!("musicgen-{size} decoder at real size, 4 codebooks of 2048, random weights"),
                    input: "12 random text states (projected T5 output), classifier-free guidance scale 3 (batch 2)".into(),
                    timed: format!("{steps} greedy decode steps ({:.1} s of audio at 50 Hz) with the delay pattern; {timed}", steps as f64 / 50.0),
                    note: (steps == 500).then(|| "the seed's target row: 10 s of audio with medium in under 15 s".into()),
                },
                work: Work { tokens: Some(steps as f64), audio_seconds: Some(steps as f64 / 50.0), ..Work::default() },
                heavy,
                build: Box::new(move |_| {
                    let model = MusicGen::random(MusicgenConfig::preset(size)?, 41)?;
                    let cond = conditioning(&model)?;
                    Ok(Box::new(Decode { model, cond, steps, optimized }) as Box<dyn Workload>)
                }),
            });
        }
    }
    out
}
