//! `harness whisper convert-ct2 | transcribe`: real Whisper weights as a user tool.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mlx_rs::{Array, Dtype};
use models::checkpoint::Checkpointed;
use models::whisper::tokenizer::Tokenizer;
use models::whisper::longform::{self, LongForm, TimedSegment};
use models::whisper::{audio, ct2, BeamSearch, DecodeOptions, LogitFilters, Timestamps, Whisper, WhisperConfig};
use models::config::ModelConfig;
use models::Variant;

use crate::hub_args::HubArgs;
use crate::report::json::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// `harness transcribe`.
#[derive(clap::Args)]
pub struct TranscribeArgs {
    /// A folder with config.json, model.safetensors and tokenizer.json (e.g. from
    /// `harness whisper convert-ct2` or `fixtures/fetch_tiny_en.sh`).
    #[arg(long, value_name = "DIR", conflicts_with = "model", required_unless_present = "model")]
    model_dir: Option<PathBuf>,
    /// A Hugging Face hub id with safetensors weights (e.g. openai/whisper-tiny.en), read from
    /// the local hub cache first.
    #[arg(long, value_name = "HUB_ID")]
    model: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    quant: crate::quant_args::QuantArgs,
    /// The audio: a WAV file, any rate and channel count (mixed down to mono and resampled to
    /// 16 kHz, as openai-whisper's loader does). Audio over 30 s is transcribed in 30 s windows
    /// overlapping by 10% (ChunkedProcessor's whisper preset), joined by their timestamps.
    audio: PathBuf,
    /// Beam search with this many beams (openai-whisper's, patience 1) instead of greedy.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
    beam: Option<u32>,
    /// Spoken language: a code such as en or de, or auto to detect it (one extra forward pass).
    /// English-only models take only en. Default: auto for multilingual models.
    #[arg(long, value_name = "auto|CODE")]
    language: Option<String>,
    /// Which implementation runs.
    #[arg(long, value_parser = ["naive", "optimized"], default_value = "optimized")]
    variant: String,
    /// Print each segment with its start and end time. Audio over 30 s is always decoded with
    /// timestamps (that is how overlapping windows are joined); this shows them.
    #[arg(long)]
    timestamps: bool,
    /// Print text, segments (times, tokens), language, timings and MLX peak memory as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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
    // Check every name and shape before writing anything: the model builds from them.
    Whisper::from_tensors(config.clone(), c.tensors.clone(), &src.join("model.bin").display().to_string())?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let f16: Vec<(String, Array)> = c.tensors.iter().map(|(k, v)| Ok((k.clone(), v.as_dtype(Dtype::Float16)?))).collect::<Result<_>>()?;
    let tmp = out.join(".model.tmp.safetensors");
    Array::save_safetensors(f16.iter().map(|(k, v)| (k.as_str(), v)), None, &tmp).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out.join("model.safetensors"))?;
    write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    let tok = src.join("tokenizer.json");
    if tok.exists() {
        write_atomic(&out.join("tokenizer.json"), &std::fs::read(&tok)?)?;
    }
    Ok(config)
}

/// openai-whisper's default suppression for this vocabulary, from the config's lists.
pub fn suppress_from_config(dir: &Path) -> Result<LogitFilters> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let list = |k: &str| -> Vec<i32> { v.get(k).and_then(|x| x.as_array()).map(|a| a.iter().filter_map(|t| t.as_i64()).map(|t| t as i32).collect()).unwrap_or_default() };
    Ok(LogitFilters { always: list("suppress_tokens"), at_begin: list("begin_suppress_tokens"), timestamps: None })
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
    }
    Ok(ExitCode::SUCCESS)
}

/// The start of a transcript: `<|startoftranscript|>`, then for multilingual vocabularies the
/// language and `<|transcribe|>`, then `<|notimestamps|>` unless `timestamps`.
pub fn sot_sequence(cfg: &WhisperConfig, tok: &Tokenizer, language: Option<i32>, timestamps: bool) -> Result<Vec<i32>> {
    let id = |s: &str| tok.special_id(s).with_context(|| format!("tokenizer.json lacks {s}"));
    let mut seq = vec![cfg.decoder_start_token_id];
    if let Some(lang) = language {
        seq.push(lang);
        seq.push(id("<|transcribe|>")?);
    }
    if !timestamps {
        seq.push(id("<|notimestamps|>")?);
    }
    Ok(seq)
}

/// Language tokens of a multilingual vocabulary, `(code, id)`: the special tokens between
/// `<|startoftranscript|>` and `<|translate|>`.
pub fn language_tokens(tok: &Tokenizer) -> Vec<(String, i32)> {
    let (Some(sot), Some(translate)) = (tok.special_id("<|startoftranscript|>"), tok.special_id("<|translate|>")) else {
        return Vec::new();
    };
    (sot + 1..translate).filter_map(|id| tok.special_content(id).map(|c| (c.trim_start_matches("<|").trim_end_matches("|>").to_string(), id))).collect()
}

fn load_model(args: &TranscribeArgs) -> Result<(Whisper, PathBuf)> {
    let dir = args.hub.model_folder(args.model_dir.as_ref(), args.model.as_deref())?;
    Ok((Whisper::load_dir_as(&dir, args.quant.precision()?)?, dir))
}

/// `harness transcribe`.
pub fn transcribe(args: &TranscribeArgs) -> Result<ExitCode> {
    let (model, dir) = load_model(args)?;
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let filters = suppress_from_config(&dir)?;
    let wav = crate::audio::read_wav(&args.audio)?;
    let samples = crate::audio::resample(&wav.mono(), wav.sample_rate, audio::SAMPLE_RATE);
    let langs = language_tokens(&tok);
    let multilingual = model.config.vocab_size >= 51865 && !langs.is_empty();
    let want = args.language.clone().unwrap_or_else(|| if multilingual { "auto".into() } else { "en".into() });
    if !multilingual && want != "en" {
        bail!("--language {want}: this model is English-only");
    }
    let fixed_lang = if multilingual && want != "auto" {
        Some(langs.iter().find(|(c, _)| *c == want).map(|(_, id)| *id).with_context(|| format!("--language {want}: not one of this model's {} languages", langs.len()))?)
    } else {
        None
    };
    let v = if args.variant == "naive" { Variant::Naive } else { Variant::Optimized };
    let opts = DecodeOptions::for_variant(v);
    let eot = model.config.eos_token_id;
    let long = samples.len() > audio::N_SAMPLES as usize;
    let timestamped = long || args.timestamps;
    let chunks = models::chunked::ChunkedProcessor::whisper();
    let windows = chunks.offsets(samples.len().max(1) as i32).len();
    let bar = crate::progress::bar(windows as u64, "windows", args.quiet || windows == 1);
    mlx_rs::memory::reset_peak_memory()?;
    let t0 = std::time::Instant::now();
    let mut language = None;
    let lang_ids: Vec<i32> = langs.iter().map(|(_, id)| *id).collect();
    // The start of each window's transcript; the language is detected per window unless fixed.
    let mut prompt = |enc: &Array, timestamps: bool| -> models::Result<Vec<i32>> {
        let lang = match (multilingual, fixed_lang) {
            (false, _) => None,
            (true, Some(id)) => Some(id),
            (true, None) => Some(model.detect_language(enc, &lang_ids)?.0),
        };
        language = language.or(lang);
        sot_sequence(&model.config, &tok, lang, timestamps).map_err(|e| models::Error::InvalidArgument(e.to_string()))
    };
    let segments: Vec<TimedSegment> = if timestamped {
        let no_ts = tok.special_id("<|notimestamps|>").context("tokenizer.json lacks <|notimestamps|>")?;
        let lf = LongForm { decode: opts, beam: args.beam.map(|b| b as usize), filters, timestamps: Timestamps::new(no_ts, eot), max_new: 224, chunks };
        longform::transcribe(&model, &samples, &lf, |enc| prompt(enc, true), |_, _| bar.inc(1))?
    } else {
        let m = audio::LogMel::new(model.config.num_mel_bins)?.compute(&Array::from_slice(&samples, &[samples.len() as i32]))?;
        let enc = model.encode(&m, opts.kernel)?;
        let sot = prompt(&enc, false)?;
        let tokens = match args.beam {
            Some(b) => model.beam_search(&enc, &sot, &BeamSearch { beam: b as usize, max_new: 224, eot }, &opts, &filters)?.tokens,
            None => model.greedy_with(&enc, &sot, 224, Some(eot), &opts, &filters)?.remove(0).into_iter().take_while(|&t| t != eot).collect(),
        };
        vec![TimedSegment { start: 0.0, end: samples.len() as f64 / f64::from(audio::SAMPLE_RATE), tokens, window: 0 }]
    };
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let peak = mlx_rs::memory::peak_memory()? as f64 / (1024.0 * 1024.0);
    let lang_code = language.and_then(|id| langs.iter().find(|(_, i)| *i == id).map(|(c, _)| c.clone())).unwrap_or_else(|| "en".into());
    let texts: Vec<String> = segments.iter().map(|s| tok.decode(&s.tokens)).collect();
    let text = texts.concat();
    let audio_s = samples.len() as f64 / f64::from(audio::SAMPLE_RATE);
    if args.json {
        let segs: Vec<_> = segments
            .iter()
            .zip(&texts)
            .map(|(s, t)| serde_json::json!({"start_s": s.start, "end_s": s.end, "text": t.trim(), "tokens": s.tokens, "window": s.window}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"text": text.trim(), "language": lang_code, "segments": segs, "audio_seconds": audio_s, "windows": windows, "seconds": secs, "mlx_peak_mib": peak})
        );
    } else {
        if args.timestamps {
            for (s, t) in segments.iter().zip(&texts) {
                println!("[{} --> {}] {}", clock(s.start), clock(s.end), t.trim());
            }
        } else {
            println!("{}", text.trim());
        }
        let ntok: usize = segments.iter().map(|s| s.tokens.len()).sum();
        eprintln!("{ntok} tokens in {} segment(s), {windows} window(s), {audio_s:.1} s of audio, language {lang_code}, {secs:.2} s, MLX peak {peak:.1} MiB", segments.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `m:ss.ss` (or `h:mm:ss.ss`).
fn clock(s: f64) -> String {
    let (h, m, sec) = ((s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64, s % 60.0);
    if h > 0 {
        format!("{h}:{m:02}:{sec:05.2}")
    } else {
        format!("{m}:{sec:05.2}")
    }
}
