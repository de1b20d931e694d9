//! `harness embed`: CLAP audio and text embeddings, and their similarities.
use crate::variant_args::VariantArg;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mlx_rs::Array;
use models::checkpoint::Checkpointed;
use models::clap::features::FeatureExtractor;
use models::clap::{Clap, FeatureConfig};
use models::config::ModelConfig;

use crate::audio::{read_wav, resample};

#[derive(clap::Args)]
pub struct Args {
    /// A CLAP folder in HF's layout: config.json, model.safetensors, preprocessor_config.json
    /// and (for --text) tokenizer.json.
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// Audio clips to embed: WAV files, any rate (resampled to the extractor's) and channel
    /// count (averaged to mono). Clips longer than the extractor's maximum are cropped at a
    /// position drawn from --seed (fused models: shrunk, plus three chunks drawn from --seed);
    /// shorter ones are padded as the extractor's config says.
    #[arg(long, value_name = "WAV", num_args = 1..)]
    audio: Vec<PathBuf>,
    /// Texts to embed (each argument one text).
    #[arg(long, value_name = "TEXT", num_args = 1..)]
    text: Vec<String>,
    /// Seed of the crop position of long clips.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON: the embeddings, and the audio-text cosine similarities and logits.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    variant: VariantArg,
}

fn rows(a: &Array) -> Result<Vec<Vec<f32>>> {
    let (n, d) = (a.shape()[0] as usize, a.shape()[1] as usize);
    let a = a.contiguous()?;
    let v = a.as_slice::<f32>();
    Ok((0..n).map(|i| v[i * d..(i + 1) * d].to_vec()).collect())
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if args.audio.is_empty() && args.text.is_empty() {
        bail!("nothing to embed: give --audio and/or --text");
    }
    let model = Clap::load_dir(&args.model_dir)?;
    let variant = args.variant.variant;
    let audio_embeds = if args.audio.is_empty() {
        None
    } else {
        let fe = FeatureExtractor::new(FeatureConfig::from_file(&args.model_dir.join("preprocessor_config.json"))?)?;
        let rate = fe.config.sampling_rate as u32;
        let clips = args
            .audio
            .iter()
            .map(|path| {
                let wav = read_wav(path)?;
                let x = resample(&wav.mono(), wav.sample_rate, rate);
                if x.is_empty() {
                    bail!("{}: nothing left after resampling to {rate} Hz", path.display());
                }
                Ok(x)
            })
            .collect::<Result<Vec<_>>>()?;
        Some(model.embed_clips(&fe, &clips, args.seed, variant).context("nothing printed")?)
    };
    let text_embeds = if args.text.is_empty() {
        None
    } else {
        let tok = models::text::read_tokenizer(&args.model_dir.join("tokenizer.json"))?;
        Some(model.embed_texts(&tok, &args.text, variant).context("nothing printed")?)
    };
    let sims = match (&audio_embeds, &text_embeds) {
        (Some(a), Some(t)) => {
            let cos = a.matmul(t.t())?;
            let logits = model.logits_per_audio(a, t)?;
            Some((rows(&cos)?, rows(&logits)?))
        }
        _ => None,
    };
    if args.json {
        let mut v = serde_json::json!({});
        if let Some(a) = &audio_embeds {
            v["audio"] = serde_json::json!(args.audio.iter().zip(rows(a)?).map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "embedding": e})).collect::<Vec<_>>());
        }
        if let Some(t) = &text_embeds {
            v["text"] = serde_json::json!(args.text.iter().zip(rows(t)?).map(|(s, e)| serde_json::json!({"text": s, "embedding": e})).collect::<Vec<_>>());
        }
        if let Some((cos, logits)) = &sims {
            v["cosine"] = serde_json::json!(cos);
            v["logits_per_audio"] = serde_json::json!(logits);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let show = |e: &[f32]| e.iter().take(6).map(|x| format!("{x:+.4}")).collect::<Vec<_>>().join(" ");
    if let Some(a) = &audio_embeds {
        for (p, e) in args.audio.iter().zip(rows(a)?) {
            println!("audio {}: [{} ...] ({} dims)", p.display(), show(&e), e.len());
        }
    }
    if let Some(t) = &text_embeds {
        for (s, e) in args.text.iter().zip(rows(t)?) {
            println!("text {s:?}: [{} ...] ({} dims)", show(&e), e.len());
        }
    }
    if let Some((cos, _)) = &sims {
        println!("\ncosine similarity (rows: audio, columns: text)");
        for (p, r) in args.audio.iter().zip(cos) {
            let best = r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |b| b.0);
            println!("  {:40} {}   best: {:?}", p.display().to_string(), r.iter().map(|x| format!("{x:+.3}")).collect::<Vec<_>>().join(" "), args.text[best]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
