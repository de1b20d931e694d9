//! Silero VAD workloads: the speech probabilities of a minute of audio with the real weights
//! the harness ships (the silero-vad package's 16 kHz model), as `transcribe --vad` computes
//! them before decoding.
use anyhow::{Context, Result};
use models::vad::{SileroVad, CHUNK, SAMPLE_RATE};

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

struct Probabilities {
    model: SileroVad,
    audio: Vec<f32>,
}

impl Workload for Probabilities {
    fn run(&mut self, v: Variant) -> Result<()> {
        let p = self.model.probabilities(&self.audio, v)?;
        anyhow::ensure!(p.len() == self.audio.len().div_ceil(CHUNK), "{} probabilities for {} samples", p.len(), self.audio.len());
        Ok(())
    }
    fn outputs(&mut self, v: Variant) -> Result<Vec<(String, mlx_rs::Array)>> {
        let p = self.model.probabilities(&self.audio, v)?;
        Ok(vec![("probs".into(), mlx_rs::Array::from_slice(&p, &[p.len() as i32]))])
    }
}

pub fn specs(_scale: Scale) -> Vec<Spec> {
    let seconds = 60;
    vec![Spec {
        id: "vad/probs-60s".into(),
        model: "vad",
        info: WorkloadInfo {
            size: "Silero VAD 16 kHz, the silero-vad 6.2.0 weights (harness/data)".into(),
            input: format!("{seconds} s of noise at 16 kHz ({} chunks of 512 samples)", (seconds * SAMPLE_RATE as usize).div_ceil(CHUNK)),
            timed: "every chunk's speech probability from a fresh state; naive = the package's loop, each chunk through the whole network and read back; optimized = the STFT and convolutions of all chunks in one batch, the LSTM cell's recurrence on the host".into(),
            note: None,
        },
        work: Work { audio_seconds: Some(seconds as f64), ..Work::default() },
        heavy: false,
        build: Box::new(move |_| {
            let path = crate::vad_cmd::default_weights();
            let model = SileroVad::load(&path).with_context(|| format!("the VAD weights {}", path.display()))?;
            let n = (seconds * SAMPLE_RATE as usize) as i32;
            let audio = super::workload::noise(&[n], 31, 0.05)?.as_slice::<f32>().to_vec();
            Ok(Box::new(Probabilities { model, audio }) as Box<dyn Workload>)
        }),
    }]
}
