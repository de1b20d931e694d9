//! `harness whisper convert-ct2 | transcribe`: real Whisper weights as a user tool.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mlx_rs::{Array, Dtype};
use models::whisper::tokenizer::Tokenizer;
use models::whisper::{audio, ct2, DecodeOptions, Suppress, Whisper, WhisperConfig};
use models::Variant;

use crate::report::json::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Convert a CTranslate2 Whisper model folder (model.bin, config.json, tokenizer.json) into
    /// one `--model-dir` loads: HF names in model.safetensors (float16, as stored), config.json,
    /// tokenizer.json.
    ConvertCt2 {
        /// The CTranslate2 folder.
        src: PathBuf,
        /// The folder to write (created if missing).
        out: PathBuf,
    },
    /// Transcribe a 16 kHz mono WAV (first 30 s) with greedy decoding, English, no timestamps.
    Transcribe {
        /// A folder with config.json, model.safetensors and tokenizer.json.
        #[arg(long, value_name = "DIR")]
        model_dir: PathBuf,
        /// The audio.
        audio: PathBuf,
        /// Which implementation runs.
        #[arg(long, value_parser = ["naive", "optimized"], default_value = "optimized")]
        variant: String,
        /// Beam search with this many beams (openai-whisper's, patience 1) instead of greedy.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
        beam: Option<u32>,
        /// Print the tokens and timings as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Convert, returning the config written.
pub fn convert_ct2(src: &Path, out: &Path) -> Result<WhisperConfig> {
    let c = ct2::read(&src.join("model.bin"))?;
    let shape = |k: &str| c.tensors.get(k).map(|t| t.shape().to_vec()).with_context(|| format!("converted weights lack {k}"));
    let embed = shape("model.decoder.embed_tokens.weight")?;
    let conv1 = shape("model.encoder.conv1.weight")?;
    let fc1 = shape("model.encoder.layers.0.fc1.weight")?;
    let (vocab, d) = (embed[0], embed[1]);
    let english_only = vocab == 51864;
    let ct2_cfg: serde_json::Value = std::fs::read_to_string(src.join("config.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let mut cfg = serde_json::json!({
        "model_type": "whisper",
        "vocab_size": vocab,
        "num_mel_bins": conv1[1],
        "d_model": d,
        "encoder_layers": c.encoder_layers,
        "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.heads,
        "decoder_attention_heads": c.heads,
        "encoder_ffn_dim": fc1[0],
        "decoder_ffn_dim": fc1[0],
        "max_source_positions": shape("model.encoder.embed_positions.weight")?[0],
        "max_target_positions": shape("model.decoder.embed_positions.weight")?[0],
        "decoder_start_token_id": if english_only { 50257 } else { 50258 },
        "eos_token_id": if english_only { 50256 } else { 50257 },
        "pad_token_id": if english_only { 50256 } else { 50257 },
        "activation_function": "gelu",
    });
    if let Some(s) = ct2_cfg.get("suppress_ids") {
        cfg["suppress_tokens"] = s.clone();
    }
    if let Some(s) = ct2_cfg.get("suppress_ids_begin") {
        cfg["begin_suppress_tokens"] = s.clone();
    }
    let config = WhisperConfig::from_json(&cfg.to_string(), "converted config")?;
    // Check every name and shape before writing anything.
    let check = Whisper::expected_weights(&config);
    models::weights::check_strict(&src.join("model.bin").display().to_string(), &c.tensors, &check)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let f16: Vec<(String, Array)> = c.tensors.iter().map(|(k, v)| Ok((k.clone(), v.as_dtype(Dtype::Float16)?))).collect::<Result<_>>()?;
    let tmp = out.join(".model.tmp.safetensors");
    Array::save_safetensors(f16.iter().map(|(k, v)| (k.as_str(), v)), None, &tmp).map_err(|e| anyhow::anyhow!("writing {}: {e:?}", tmp.display()))?;
    std::fs::rename(&tmp, out.join("model.safetensors"))?;
    write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    let tok = src.join("tokenizer.json");
    if tok.exists() {
        write_atomic(&out.join("tokenizer.json"), &std::fs::read(&tok)?)?;
    }
    Ok(config)
}

/// openai-whisper's default suppression for this vocabulary, from the config's lists.
pub fn suppress_from_config(dir: &Path) -> Result<Suppress> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let list = |k: &str| -> Vec<i32> { v.get(k).and_then(|x| x.as_array()).map(|a| a.iter().filter_map(|t| t.as_i64()).map(|t| t as i32).collect()).unwrap_or_default() };
    Ok(Suppress { always: list("suppress_tokens"), at_begin: list("begin_suppress_tokens") })
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Command::ConvertCt2 { src, out } => {
            let cfg = convert_ct2(src, out)?;
            eprintln!(
                "{} -> {}: d_model {}, {}+{} layers, vocabulary {}",
                src.display(),
                out.display(),
                cfg.d_model,
                cfg.encoder_layers,
                cfg.decoder_layers,
                cfg.vocab_size
            );
        }
        Command::Transcribe { model_dir, audio: wav, variant, beam, json } => {
            let model = Whisper::load_dir(model_dir)?;
            let tok = Tokenizer::from_file(&model_dir.join("tokenizer.json"))?;
            let suppress = suppress_from_config(model_dir)?;
            let a = crate::audio::read_wav(wav)?;
            if a.sample_rate != audio::SAMPLE_RATE {
                bail!("{} is at {} Hz; Whisper takes {} Hz", wav.display(), a.sample_rate, audio::SAMPLE_RATE);
            }
            if a.channels.len() != 1 {
                bail!("{} has {} channels; Whisper takes mono", wav.display(), a.channels.len());
            }
            let v = if variant == "naive" { Variant::Naive } else { Variant::Optimized };
            let t0 = std::time::Instant::now();
            let mel = audio::LogMel::new(model.config.num_mel_bins)?.compute(&Array::from_slice(&a.channels[0], &[a.channels[0].len() as i32]))?;
            let enc = model.encode(&mel)?;
            let sot = sot_sequence(&model.config, &tok)?;
            let eot = model.config.eos_token_id;
            let opts = DecodeOptions::for_variant(v);
            let tokens = match beam {
                Some(n) => model.beam_search(&enc, &sot, *n as usize, 224, eot, &opts, &suppress)?.tokens,
                None => {
                    let mut t = model.greedy_with(&enc, &sot, 224, Some(eot), &opts, &suppress)?.remove(0);
                    if t.last() == Some(&eot) {
                        t.pop();
                    }
                    t
                }
            };
            let secs = t0.elapsed().as_secs_f64();
            let text = tok.decode(&tokens);
            if *json {
                println!("{}", serde_json::json!({"text": text, "tokens": tokens, "seconds": secs}));
            } else {
                println!("{}", text.trim());
                eprintln!("{} tokens in {secs:.2} s", tokens.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The start of a transcript without timestamps: `<|startoftranscript|>`, then for
/// multilingual vocabularies `<|en|><|transcribe|>`, then `<|notimestamps|>`.
pub fn sot_sequence(cfg: &WhisperConfig, tok: &Tokenizer) -> Result<Vec<i32>> {
    let id = |s: &str| tok.special_id(s).with_context(|| format!("tokenizer.json lacks {s}"));
    let mut seq = vec![cfg.decoder_start_token_id];
    if cfg.vocab_size >= 51865 {
        seq.push(id("<|en|>")?);
        seq.push(id("<|transcribe|>")?);
    }
    seq.push(id("<|notimestamps|>")?);
    Ok(seq)
}
