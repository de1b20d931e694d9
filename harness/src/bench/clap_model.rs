//! CLAP workloads at the released `laion/clap-htsat-unfused` size (HTSAT Swin-T on a 256x256
//! mel image, RoBERTa-base, 512-wide projections), random weights: the seed's 10 s audio
//! embedding (features included), batch throughput, and a text embedding.
use anyhow::Result;
use mlx_rs::{ops, random, Array};
use models::checkpoint::Checkpointed;
use models::clap::features::{Crops, FeatureExtractor, Truncation};
use models::clap::{Clap, ClapConfig, FeatureConfig};

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

const KERNELS: &str = "naive = explicit softmax(QK^T)V in every Swin window and RoBERTa layer (and batches one clip at a time); optimized = MLX's fused attention (and one batched pass)";

fn size() -> String {
    "laion/clap-htsat-unfused size (HTSAT: 96 channels, depths 2-2-6-2, windows of 8, 256x256 input of 64 mel bins; RoBERTa-base 12 layers x 768; projections 512), random weights".into()
}

fn noise(samples: usize, seed: u64) -> Result<Vec<f32>> {
    Ok(super::workload::noise(&[samples as i32], seed, 0.1)?.as_slice::<f32>().to_vec())
}

struct EmbedClip {
    model: Clap,
    fe: FeatureExtractor,
    wave: Vec<f32>,
}

impl EmbedClip {
    fn embedding(&self, v: Variant) -> Result<Array> {
        let (f, _) = self.fe.extract(&self.wave, Truncation::RandTrunc, Crops::default())?;
        Ok(self.model.embed_audio(&f.expand_dims(0)?, v)?.embeds)
    }
}

impl Workload for EmbedClip {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.embedding(v)?.eval()?;
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, Array)>> {
        Ok(vec![("embedding".into(), self.embedding(v)?)])
    }
}

struct EmbedBatch {
    model: Clap,
    features: Array,
}

impl Workload for EmbedBatch {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.model.embed_audio_batch(&self.features, &vec![false; self.features.shape()[0] as usize], v)?.eval()?;
        Ok(())
    }
}

struct EmbedText {
    model: Clap,
    ids: Array,
    mask: Array,
}

impl Workload for EmbedText {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.model.embed_text(&self.ids, &self.mask, v)?.1.eval()?;
        Ok(())
    }
}

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let mut out = vec![Spec {
        id: "clap/embed-audio-10s".into(),
        model: "clap",
        info: WorkloadInfo {
            size: size(),
            input: "10 s of noise at 48 kHz, one clip".into(),
            timed: format!("feature extraction (STFT, mel, dB) plus the audio encoder and projection, evaluated; {KERNELS}"),
            note: Some("the seed's target: under 100 ms".into()),
        },
        work: Work { audio_seconds: Some(10.0), items: Some(1.0), ..Work::default() },
        heavy: false,
        build: Box::new(|_| {
            let fe = FeatureExtractor::new(FeatureConfig::htsat_unfused())?;
            let wave = noise(fe.config.max_samples(), 5)?;
            Ok(Box::new(EmbedClip { model: Clap::random(ClapConfig::htsat_unfused(), 1)?, fe, wave }) as Box<dyn Workload>)
        }),
    }];
    for batch in [1, 8, 32] {
        out.push(Spec {
            id: format!("clap/embed-audio-batch-{batch}"),
            model: "clap",
            info: WorkloadInfo {
                size: size(),
                input: format!("{batch} clip(s) of 10 s, features computed beforehand (untimed)"),
                timed: format!("the audio encoder and projection over the batch, evaluated; {KERNELS}"),
                note: Some("throughput in clips/s".into()),
            },
            work: Work { audio_seconds: Some(10.0 * f64::from(batch)), items: Some(f64::from(batch)), ..Work::default() },
            heavy: batch == 32,
            build: Box::new(move |_| {
                let fe = FeatureExtractor::new(FeatureConfig::htsat_unfused())?;
                let wave = noise(fe.config.max_samples(), 6)?;
                let (f, _) = fe.extract(&wave, Truncation::RandTrunc, Crops::default())?;
                let features = ops::broadcast_to(f.expand_dims(0)?, &[batch, 1, f.shape()[1], f.shape()[2]])?.contiguous()?;
                features.eval()?;
                Ok(Box::new(EmbedBatch { model: Clap::random(ClapConfig::htsat_unfused(), 1)?, features }) as Box<dyn Workload>)
            }),
        });
    }
    out.push(Spec {
        id: "clap/embed-text".into(),
        model: "clap",
        info: WorkloadInfo {
            size: size(),
            input: "8 texts of 16 tokens (random ids), batch 8".into(),
            timed: format!("RoBERTa, pooler and projection, evaluated; {KERNELS}"),
            note: None,
        },
        work: Work { items: Some(8.0), ..Work::default() },
        heavy: false,
        build: Box::new(|_| {
            let cfg = ClapConfig::htsat_unfused();
            let ids = random::randint::<_, i32>(3, cfg.text_config.vocab_size, &[8, 16], &random::key(7)?)?;
            let mask = ops::ones::<i32>(&[8, 16])?;
            ids.eval()?;
            Ok(Box::new(EmbedText { model: Clap::random(cfg, 1)?, ids, mask }) as Box<dyn Workload>)
        }),
    });
    out
}
