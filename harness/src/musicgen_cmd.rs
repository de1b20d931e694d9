//! `harness generate`: text to music with MusicGen, as a user tool.
use crate::variant_args::VariantArg;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use models::checkpoint::Checkpointed;
use models::musicgen::chroma::{ChromaConfig, ChromaExtractor};
use models::musicgen::{tokenize_prompt, AudioRequest, MusicGen, Sampler};

use crate::audio::{read_wav, resample, write_wav, Audio};
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
    /// A melody to follow (MusicGen Melody models only, e.g. facebook/musicgen-melody): a WAV
    /// file, any rate and channel count (mixed to mono, resampled to the extractor's rate, the
    /// first 30 s used), turned into chroma as HF's feature extractor does
    /// (preprocessor_config.json in the model folder, else its defaults).
    #[arg(long, value_name = "WAV")]
    melody: Option<PathBuf>,
    /// Length of the music, in seconds (50 decode steps each, plus 3 for the delay pattern).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The WAV file to write (32-bit float at the codec's rate; written atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Seed of the sampler: the same seed, prompt and settings give the same music.
    #[arg(long, default_value_t = 0, conflicts_with = "greedy")]
    seed: u64,
    /// Classifier-free guidance scale (1 turns guidance off).
    #[arg(long, default_value_t = 3.0)]
    guidance: f32,
    /// Sample from the k most likely codes each step.
    #[arg(long, default_value_t = 250, conflicts_with = "greedy")]
    top_k: i32,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0, conflicts_with = "greedy")]
    temperature: f32,
    /// Pick the most likely code every step instead of sampling (deterministic; tests).
    #[arg(long)]
    greedy: bool,
    #[command(flatten)]
    variant: VariantArg,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The chroma `[1, frames, bins]` of the melody in `path`, with the extractor settings of the
/// model folder `dir`.
fn melody_chroma(path: &std::path::Path, dir: &std::path::Path) -> Result<mlx_rs::Array> {
    let pre = dir.join("preprocessor_config.json");
    let config: ChromaConfig = if pre.is_file() {
        serde_json::from_str(&std::fs::read_to_string(&pre).with_context(|| format!("reading {}", pre.display()))?).with_context(|| format!("{}: not a feature extractor config", pre.display()))?
    } else {
        ChromaConfig::default()
    };
    let ex = ChromaExtractor::new(config)?;
    let wav = read_wav(path).with_context(|| format!("--melody {}", path.display()))?;
    let mono = resample(&wav.mono(), wav.sample_rate, ex.config.sampling_rate);
    let c = ex.extract(&mono).with_context(|| format!("--melody {}", path.display()))?;
    Ok(mlx_rs::Array::from_slice(&c.one_hot, &[1, c.frames as i32, ex.config.num_chroma as i32]))
}

/// The longest prompt, in T5 tokens.
const MAX_PROMPT_TOKENS: i32 = 512;

pub fn run(args: &Args) -> Result<ExitCode> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds {}: must be a positive number", args.seconds);
    }
    if !(args.guidance >= 1.0 && args.guidance.is_finite()) {
        bail!("--guidance {}: must be at least 1", args.guidance);
    }
    // Before any work: where the audio goes.
    crate::outputs::check_file("-o", &args.output)?;
    let dir = args.hub.model_folder(args.model_dir.as_ref(), args.model.as_deref())?;
    let model_files: Vec<(&str, PathBuf)> = ["config.json", "model.safetensors", "tokenizer.json"].iter().map(|f| (*f, dir.join(f))).collect();
    let inputs: Vec<(&str, &std::path::Path)> = model_files.iter().map(|(f, p)| (*f, p.as_path())).collect();
    crate::outputs::refuse_overwrite("-o", &args.output, &inputs)?;
    if let Some(m) = &args.melody {
        crate::outputs::refuse_overwrite("-o", &args.output, &[("--melody", m)])?;
    }
    let model = MusicGen::load_dir_as(&dir, args.quant.precision()?)?;
    let chroma = match &args.melody {
        None => None,
        Some(_) if !model.is_melody() => bail!("--melody: {} has no melody conditioning (a MusicGen Melody checkpoint such as facebook/musicgen-melody has)", dir.display()),
        Some(path) => Some(melody_chroma(path, &dir)?),
    };
    let (ids, mask) = tokenize_prompt(&dir.join("tokenizer.json"), &args.prompt)?;
    // T5 was trained on 512 tokens; a longer prompt only costs time (a 20,000-word one took
    // minutes) and says nothing more to the model.
    if ids.shape().get(1).copied().unwrap_or(0) > MAX_PROMPT_TOKENS {
        bail!("--prompt is {} tokens long; at most {MAX_PROMPT_TOKENS} (T5's training length)", ids.shape()[1]);
    }
    let (steps, _) = model.steps_for(args.seconds).context("--seconds")?;
    let sampler = if args.greedy { Sampler::Greedy } else { Sampler::TopK { top_k: args.top_k, temperature: args.temperature, seed: args.seed } };
    let bar = crate::progress::bar(steps as u64, "steps", args.quiet);
    let t0 = std::time::Instant::now();
    let req = AudioRequest { seconds: args.seconds, guidance: args.guidance, sampler, variant: args.variant.variant, chroma };
    let channels = model.generate_audio(&ids, &mask, &req, |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    let rate = model.codec.config.sampling_rate;
    let n = channels.first().map_or(0, Vec::len);
    write_wav(&args.output, &Audio { sample_rate: rate, channels }, false).with_context(|| format!("writing {}", args.output.display()))?;
    if !args.quiet {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("{}: {:.2} s of audio, {steps} steps, {secs:.2} s in all ({:.1} ms per step with the decode)", args.output.display(), n as f64 / f64::from(rate), 1e3 * secs / steps as f64);
    }
    Ok(ExitCode::SUCCESS)
}
