//! EnCodec workloads at the real 32 kHz (MusicGen's codec; the seed's "5 s decode" target) and
//! 24 kHz sizes, random weights: decode from codes, encode, and streaming decode per chunk.
use std::rc::Rc;

use anyhow::Result;
use mlx_rs::{random, Array};
use models::checkpoint::Checkpointed;
use models::encodec::stream::StreamingDecoder;
use models::encodec::{Encodec, EncodecConfig};

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

const SECONDS: f64 = 5.0;

fn codes(cfg: &EncodecConfig, nq: i32, frames: i32, seed: u64) -> Result<Array> {
    let c = random::randint::<_, i32>(0, cfg.codebook_size, &[1, nq, frames], &random::key(seed)?)?;
    c.eval()?;
    Ok(c)
}

fn frames(cfg: &EncodecConfig, seconds: f64) -> i32 {
    (seconds * f64::from(cfg.frame_rate())).round() as i32
}

struct Decode {
    model: Encodec,
    codes: Array,
}

impl Workload for Decode {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.model.decode(&self.codes, v)?.eval()?;
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, Array)>> {
        Ok(vec![("audio".into(), self.model.decode(&self.codes, v)?)])
    }
}

struct Encode {
    model: Encodec,
    audio: Array,
    bandwidth: f64,
}

impl Workload for Encode {
    fn run(&mut self, v: Variant) -> Result<()> {
        self.model.encode(&self.audio, Some(self.bandwidth), v)?.eval()?;
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, Array)>> {
        Ok(vec![("codes".into(), self.model.encode(&self.audio, Some(self.bandwidth), v)?)])
    }
}

/// One chunk pushed into a stream that is already running (state warmed up, untimed).
struct StreamChunk {
    model: Rc<Encodec>,
    codes: Array,
    warm: i32,
    chunk: i32,
    decoder: Option<StreamingDecoder<Rc<Encodec>>>,
}

impl Workload for StreamChunk {
    fn prepare(&mut self, v: Variant) -> Result<()> {
        use mlx_rs::ops::indexing::IndexOp;
        let mut d = StreamingDecoder::new(Rc::clone(&self.model), v);
        d.push(&self.codes.index((.., .., ..self.warm)))?;
        self.decoder = Some(d);
        Ok(())
    }
    fn run(&mut self, _: Variant) -> Result<()> {
        use mlx_rs::ops::indexing::IndexOp;
        let d = self.decoder.as_mut().ok_or_else(|| anyhow::anyhow!("prepare did not run"))?;
        d.push(&self.codes.index((.., .., self.warm..self.warm + self.chunk)))?.eval()?;
        Ok(())
    }
}

fn size(name: &str, cfg: &EncodecConfig) -> String {
    format!(
        "{name}: real size (num_filters {}, hidden {}, ratios {:?}, {} codebooks of {}), random weights",
        cfg.num_filters,
        cfg.hidden_size,
        cfg.upsampling_ratios,
        cfg.num_quantizers(),
        cfg.codebook_size
    )
}

const LAYOUT: &str = "naive = PyTorch [B, C, T] layout with transposes inside every convolution and the RVQ one codebook at a time, evaluated after each; optimized = channels-last from the model boundary and one batched gather-and-sum over the codebooks";

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let mut out = Vec::new();
    for (suffix, name, cfg, bw) in [("", "encodec_32khz (MusicGen's codec)", EncodecConfig::encodec_32khz(), 2.2), ("-24k", "encodec_24khz at 24 kbps", EncodecConfig::encodec_24khz(), 24.0)] {
        let nq = cfg.quantizers_for_bandwidth(Some(bw)).unwrap_or(1);
        let t = frames(&cfg, SECONDS);
        let (c1, c2) = (cfg.clone(), cfg.clone());
        out.push(Spec {
            id: format!("encodec/decode-5s{suffix}"),
            model: "encodec",
            info: WorkloadInfo {
                size: size(name, &cfg),
                input: format!("random codes for 5 s: {nq} codebooks x {t} frames, batch 1"),
                timed: format!("RVQ decode plus the SEANet decoder to {} samples, evaluated; {LAYOUT}", t * cfg.hop_length()),
                note: None,
            },
            work: Work { audio_seconds: Some(SECONDS), ..Work::default() },
            heavy: false,
            build: Box::new(move |_| {
                let model = Encodec::random(c1.clone(), 7)?;
                Ok(Box::new(Decode { codes: codes(&c1, nq, t, 8)?, model }) as Box<dyn Workload>)
            }),
        });
        let n = (SECONDS * f64::from(cfg.sampling_rate)) as i32;
        out.push(Spec {
            id: format!("encodec/encode-5s{suffix}"),
            model: "encodec",
            info: WorkloadInfo {
                size: size(name, &cfg),
                input: format!("5 s of noise at {} Hz ({n} samples), batch 1, {bw} kbps ({nq} codebooks)", cfg.sampling_rate),
                timed: "SEANet encoder plus RVQ encode, evaluated; naive = transposes inside every convolution and an eval after each codebook; optimized = channels-last from the boundary".into(),
                note: None,
            },
            work: Work { audio_seconds: Some(SECONDS), ..Work::default() },
            heavy: false,
            build: Box::new(move |_| {
                let model = Encodec::random(c2.clone(), 7)?;
                let audio = random::normal::<f32>(&[1, 1, n], None, None, &random::key(9)?)?.multiply(mlx_rs::array!(0.1f32))?;
                audio.eval()?;
                Ok(Box::new(Encode { model, audio, bandwidth: bw }) as Box<dyn Workload>)
            }),
        });
    }
    let cfg = EncodecConfig::encodec_32khz();
    let chunk = 10;
    let warm = 50;
    let ms = f64::from(chunk * cfg.hop_length()) * 1e3 / f64::from(cfg.sampling_rate);
    out.push(Spec {
        id: "encodec/stream-chunk".into(),
        model: "encodec",
        info: WorkloadInfo {
            size: size("encodec_32khz", &cfg),
            input: format!("a running stream ({warm} frames in, untimed), then one chunk of {chunk} frames ({ms:.0} ms of audio)"),
            timed: format!("one streaming-decode push: RVQ decode, first conv and LSTM on the new frames (state carried), upsampling stack on a window with history; {LAYOUT}"),
            note: Some("latency per chunk; the stream's output equals the full decode".into()),
        },
        work: Work { audio_seconds: Some(ms / 1e3), ..Work::default() },
        heavy: false,
        build: Box::new(move |_| {
            let model = Rc::new(Encodec::random(cfg.clone(), 7)?);
            Ok(Box::new(StreamChunk { model, codes: codes(&cfg, 4, warm + chunk, 8)?, warm, chunk, decoder: None }) as Box<dyn Workload>)
        }),
    });
    out
}
