//! `harness vad`: Silero VAD's speech segments of a recording, and the options `transcribe
//! --vad` shares with it.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use models::vad::{speech_timestamps, SileroVad, SpeechMap, VadOptions, SAMPLE_RATE};

use crate::variant_args::VariantArg;

/// The weights the harness ships (silero-vad 6.2.0's 16 kHz model, MIT; the fixtures check
/// them against the package).
pub fn default_weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/silero_vad_16k.safetensors")
}

/// Silero VAD's options (`get_speech_timestamps`' names). Their defaults depend on the use:
/// `harness vad` takes the package's, `transcribe --vad` faster-whisper's (longer silences
/// bridged and wider padding, so the joined speech keeps its pauses between sentences).
#[derive(clap::Args, Debug, Clone)]
pub struct VadArgs {
    /// Silero VAD weights (safetensors with the package's `_model` names) [default: the copy
    /// in harness/data, from silero-vad 6.2.0].
    #[arg(long, value_name = "PATH")]
    vad_weights: Option<PathBuf>,
    /// Speech starts where a chunk's probability reaches this [default: 0.5].
    #[arg(long, value_name = "P")]
    vad_threshold: Option<f64>,
    /// Silence shorter than this inside speech does not end it [default: 100, transcribe: 2000].
    #[arg(long, value_name = "MS")]
    vad_min_silence_ms: Option<f64>,
    /// Speech shorter than this is dropped [default: 250, transcribe: 0].
    #[arg(long, value_name = "MS")]
    vad_min_speech_ms: Option<f64>,
    /// Each segment is widened by this on both sides [default: 30, transcribe: 400].
    #[arg(long, value_name = "MS")]
    vad_speech_pad_ms: Option<f64>,
    /// Segments longer than this are cut at their longest silence [default: no limit].
    #[arg(long, value_name = "S")]
    vad_max_speech_s: Option<f64>,
}

/// Where the options are used: their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `harness vad`: silero-vad's `get_speech_timestamps` defaults.
    Segments,
    /// `transcribe --vad`: faster-whisper's `VadOptions` defaults.
    Transcribe,
}

impl VadArgs {
    pub fn options(&self, usage: Use) -> Result<VadOptions> {
        let base = match usage {
            Use::Segments => VadOptions::default(),
            Use::Transcribe => VadOptions {
                min_silence_duration_ms: 2000.0,
                speech_pad_ms: 400.0,
                min_speech_duration_ms: 0.0,
                ..VadOptions::default()
            },
        };
        let o = VadOptions {
            threshold: self.vad_threshold.unwrap_or(base.threshold),
            min_silence_duration_ms: self.vad_min_silence_ms.unwrap_or(base.min_silence_duration_ms),
            min_speech_duration_ms: self.vad_min_speech_ms.unwrap_or(base.min_speech_duration_ms),
            speech_pad_ms: self.vad_speech_pad_ms.unwrap_or(base.speech_pad_ms),
            max_speech_duration_s: self.vad_max_speech_s.unwrap_or(base.max_speech_duration_s),
            ..base
        };
        o.validate()?;
        Ok(o)
    }

    pub fn load(&self) -> Result<SileroVad> {
        let path = self.vad_weights.clone().unwrap_or_else(default_weights);
        SileroVad::load(&path).with_context(|| format!("loading the VAD weights {}", path.display()))
    }

    /// The speech of mono 16 kHz `samples`: the model's probabilities, then the segments.
    pub fn detect(&self, model: &SileroVad, samples: &[f32], variant: models::Variant, usage: Use) -> Result<SpeechMap> {
        let probs = model.probabilities(samples, variant)?;
        let segs = speech_timestamps(&probs, samples.len(), &self.options(usage)?)?;
        Ok(SpeechMap::new(&segs, samples.len())?)
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The audio: a WAV file, any rate and channel count (mixed down and resampled to 16 kHz).
    audio: PathBuf,
    #[command(flatten)]
    vad: VadArgs,
    #[command(flatten)]
    variant: VariantArg,
    /// Print the segments (seconds and samples), the speech share and the time taken as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    args.vad.options(Use::Segments)?;
    let wav = crate::audio::read_wav(&args.audio)?;
    let model = args.vad.load()?;
    let samples = crate::audio::resample(&wav.mono(), wav.sample_rate, SAMPLE_RATE);
    let t0 = std::time::Instant::now();
    let map = args.vad.detect(&model, &samples, args.variant.variant, Use::Segments)?;
    let secs = t0.elapsed().as_secs_f64();
    let sr = f64::from(SAMPLE_RATE);
    let audio_s = samples.len() as f64 / sr;
    let speech_s = map.speech_samples() as f64 / sr;
    if args.json {
        let segs: Vec<_> = map.segments().iter().map(|&(a, b)| serde_json::json!({"start_s": a as f64 / sr, "end_s": b as f64 / sr, "start_sample": a, "end_sample": b})).collect();
        println!("{}", serde_json::json!({"segments": segs, "audio_seconds": audio_s, "speech_seconds": speech_s, "seconds": secs}));
    } else {
        for &(a, b) in map.segments() {
            println!("{:.3}\t{:.3}", a as f64 / sr, b as f64 / sr);
        }
        eprintln!("{} speech segment(s), {speech_s:.2} s of {audio_s:.2} s, in {secs:.3} s", map.segments().len());
    }
    Ok(ExitCode::SUCCESS)
}
