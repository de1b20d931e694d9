//! HTDemucs workloads at the released `htdemucs` size (48 channels, depth 4, 512-wide
//! 5-layer cross-domain transformer, 7.8 s segments), random weights: one segment's forward
//! pass, the seed's 3-minute separation, and peak memory with and without chunking.
use anyhow::Result;
use mlx_rs::Array;
use models::checkpoint::Checkpointed;
use models::chunked::DemucsChunking;
use models::htdemucs::{segment_batch, Chunking, HtDemucs, HtDemucsConfig};

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

const LAYOUT: &str = "naive = PyTorch's NCHW between layers, transposes into and out of every convolution and every transformer layer, MLX convolution kernels; optimized = channels-last from the model boundary (the transformer's tokens are a reshape), convolutions as BLAS products on the CPU and MLX's kernels on a GPU";

fn size(cfg: &HtDemucsConfig) -> String {
    format!(
        "released htdemucs size ({} channels, depth {}, nfft {}, transformer {} layers x {} wide, {} heads, {} s segment), random weights",
        cfg.channels, cfg.depth, cfg.nfft, cfg.t_layers, cfg.bottom_channels, cfg.t_heads, cfg.segment
    )
}

fn noise(seconds: f64, seed: u64) -> Result<Array> {
    let n = (seconds * 44_100.0).round() as i32;
    super::workload::noise(&[1, 2, n], seed, 0.2)
}

struct Segment {
    model: HtDemucs,
    mix: Array,
}

impl Workload for Segment {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.model.forward(&self.mix, v)?.eval()?;
        Ok(())
    }
}

struct Separate {
    model: HtDemucs,
    mix: Array,
    chunking: Chunking,
}

impl Separate {
    fn sources(&self, v: Variant) -> Result<Array> {
        let chunking = match self.chunking {
            Chunking::Demucs(c) => Chunking::Demucs(DemucsChunking { batch: segment_batch(v), ..c }),
            other => other,
        };
        Ok(self.model.separate(&self.mix, v, chunking, |_, _| {})?)
    }
}

impl Workload for Separate {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.sources(v)?.eval()?;
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, Array)>> {
        Ok(vec![("sources".into(), self.sources(v)?)])
    }
}

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let cfg = HtDemucsConfig::htdemucs();
    let seg = cfg.segment;
    let mut out = vec![Spec {
        id: "htdemucs/segment".into(),
        model: "htdemucs",
        info: WorkloadInfo {
            size: size(&cfg),
            input: format!("{seg} s of stereo noise at 44.1 kHz (one training segment), batch 1"),
            timed: format!("one forward pass: STFT, both encoders, transformer, both decoders, iSTFT; {LAYOUT}"),
            note: Some("the unit of every separation: a track of L seconds takes about L / (0.75 x 7.8) of these".into()),
        },
        work: Work { audio_seconds: Some(seg), ..Work::default() },
        heavy: false,
        build: Box::new(move |_| {
            let cfg = HtDemucsConfig::htdemucs();
            Ok(Box::new(Segment { mix: noise(cfg.segment, 3)?, model: HtDemucs::random(cfg, 1)? }) as Box<dyn Workload>)
        }),
    }];
    let track = |id: &str, seconds: f64, chunked: bool, note: &str| -> Spec {
        let cfg = HtDemucsConfig::htdemucs();
        let how = if chunked {
            "apply_model's chunking (7.8 s segments, 25% overlap, shifts=0; naive one segment per call as demucs, optimized on a GPU up to 8 per call as memory allows)"
        } else {
            "the whole track in one forward pass (no chunking; the model runs at the track's length)"
        };
        Spec {
            id: id.into(),
            model: "htdemucs",
            info: WorkloadInfo {
                size: size(&cfg),
                input: format!("{seconds} s of stereo noise at 44.1 kHz, batch 1"),
                timed: format!("4-source separation with {how}; {LAYOUT}"),
                note: Some(note.into()),
            },
            work: Work { audio_seconds: Some(seconds), ..Work::default() },
            heavy: true,
            build: Box::new(move |_| {
                let model = HtDemucs::random(HtDemucsConfig::htdemucs(), 1)?;
                let chunking = if chunked { Chunking::Demucs(model.demucs_chunking()) } else { Chunking::Whole };
                Ok(Box::new(Separate { mix: noise(seconds, 4)?, model, chunking }) as Box<dyn Workload>)
            }),
        }
    };
    out.push(track("htdemucs/separate-3min", 180.0, true, "the seed's target: under 5 s"));
    out.push(track("htdemucs/separate-30s-chunked", 30.0, true, "peak memory with chunking: compare htdemucs/separate-30s-whole"));
    out.push(track("htdemucs/separate-30s-whole", 30.0, false, "peak memory without chunking: the transformer's attention grows with the square of the length"));
    out
}
