//! `harness generate`: text to music with MusicGen, as a user tool.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use models::musicgen::{tokenize_prompt, DecodeOptions, MusicGen, Sampler};
use models::Variant;

use crate::audio::{write_wav, Audio};
use crate::hub_args::HubArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A folder with config.json, model.safetensors and the T5 tokenizer.json (a MusicGen
    /// checkpoint in HF's layout).
    #[arg(long, value_name = "DIR", conflicts_with = "model", required_unless_present = "model")]
    model_dir: Option<PathBuf>,
    /// A Hugging Face hub id (e.g. facebook/musicgen-small), read from the local hub cache first.
    #[arg(long, value_name = "HUB_ID")]
    model: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    quant: crate::quant_args::QuantArgs,
    /// What to play, in words.
    #[arg(long)]
    prompt: String,
    /// Length of the music, in seconds (50 decode steps each, plus 3 for the delay pattern).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The WAV file to write (32-bit float at the codec's rate; written atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Seed of the sampler: the same seed, prompt and settings give the same music.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classifier-free guidance scale (1 turns guidance off).
    #[arg(long, default_value_t = 3.0)]
    guidance: f32,
    /// Sample from the k most likely codes each step.
    #[arg(long, default_value_t = 250)]
    top_k: i32,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Pick the most likely code every step instead of sampling (deterministic; tests).
    #[arg(long)]
    greedy: bool,
    /// Which implementation runs.
    #[arg(long, value_parser = ["naive", "optimized"], default_value = "optimized")]
    variant: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds {}: must be a positive number", args.seconds);
    }
    if !(args.guidance >= 1.0 && args.guidance.is_finite()) {
        bail!("--guidance {}: must be at least 1", args.guidance);
    }
    let dir = args.hub.model_folder(args.model_dir.as_ref(), args.model.as_deref())?;
    let mut model = MusicGen::load_dir(&dir)?;
    if let Some(p) = args.quant.precision()? {
        model.set_precision(p)?;
    }
    let (ids, mask) = tokenize_prompt(&dir.join("tokenizer.json"), &args.prompt)?;
    let rate = model.codec.config.frame_rate();
    let kb = model.config.decoder.num_codebooks as usize;
    let frames = (args.seconds * f64::from(rate)).round().max(1.0) as usize;
    let steps = frames + kb - 1;
    let limit = model.config.decoder.max_position_embeddings as usize;
    if steps > limit {
        bail!("--seconds {}: {steps} decode steps exceed the decoder's {limit} positions (at most {:.1} s)", args.seconds, (limit + 1 - kb) as f64 / f64::from(rate));
    }
    let sampler = if args.greedy { Sampler::Greedy } else { Sampler::TopK { top_k: args.top_k, temperature: args.temperature, seed: args.seed } };
    let v = if args.variant == "naive" { Variant::Naive } else { Variant::Optimized };
    let bar = crate::progress::bar(steps as u64, "steps", args.quiet);
    let t0 = std::time::Instant::now();
    let codes = model.generate(&ids, &mask, steps, args.guidance, &sampler, &DecodeOptions::for_variant(v), |d, _| bar.set_position(d as u64))?;
    let decode_s = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let audio = model.codec.decode(&codes, v)?;
    audio.eval()?;
    let samples: Vec<f32> = audio.as_slice::<f32>().to_vec();
    let n = (frames as f64 * f64::from(model.codec.config.sampling_rate) / f64::from(rate)) as usize;
    let samples = samples[..n.min(samples.len())].to_vec();
    write_wav(&args.output, &Audio { sample_rate: model.codec.config.sampling_rate, channels: vec![samples] }, false).with_context(|| format!("writing {}", args.output.display()))?;
    if !args.quiet {
        eprintln!(
            "{}: {:.2} s of audio, {steps} steps in {decode_s:.2} s ({:.1} ms/step), {:.2} s in all",
            args.output.display(),
            n as f64 / f64::from(model.codec.config.sampling_rate),
            1e3 * decode_s / steps as f64,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
