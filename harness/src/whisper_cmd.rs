//! `harness whisper convert-ct2 | transcribe`: real Whisper weights as a user tool.
use crate::variant_args::VariantArg;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use mlx_rs::{Array, Dtype};
use models::checkpoint::Checkpointed;
use models::config::ModelConfig;
use models::whisper::seek::SeekOptions;
use models::whisper::transcribe::{LongFormMode, TranscribeOptions, Transcriber};
use models::whisper::{audio, ct2, Whisper, WhisperConfig};

use crate::hub_args::HubArgs;
use crate::report::json::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// How clips are decoded: shared by `transcribe` and `eval asr`.
#[derive(clap::Args)]
pub struct DecodeArgs {
    /// Clips of up to 30 s (after --vad, their speech) go through the encoder and the decoder
    /// this many at a time (with --beam, batch x beam rows). Longer clips, --timestamps and
    /// --word-timestamps decode one clip at a time.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
    /// Beam search with this many beams (openai-whisper's, patience 1) instead of greedy.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub beam: Option<u32>,
    /// Spoken language: a code such as en or de, or auto to detect it (one extra forward pass).
    /// English-only models take only en. Default: auto for multilingual models.
    #[arg(long, value_name = "auto|CODE")]
    pub language: Option<String>,
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
    /// The audio: WAV files, or folders of them (their *.wav, in name order), any rate and
    /// channel count (mixed down to mono and resampled to 16 kHz, as openai-whisper's loader
    /// does). Audio over 30 s is transcribed in 30 s windows overlapping by 10%
    /// (ChunkedProcessor's whisper preset), joined by their timestamps. Every file is read
    /// before any decoding.
    #[arg(required = true, num_args = 1..)]
    audio: Vec<PathBuf>,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    variant: VariantArg,
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
    /// Decode only the speech Silero VAD finds (the segments joined, their timestamps mapped
    /// back to the recording, as faster-whisper does, with its VAD defaults): no text is made
    /// up in silence, and silence costs no decoding. The --vad-* options tune it.
    #[arg(long)]
    vad: bool,
    #[command(flatten)]
    vad_args: crate::vad_cmd::VadArgs,
    #[command(flatten)]
    seek: SeekArgs,
}

/// A threshold, or none (`none` on the command line) when it is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit(Option<f64>);

fn threshold(s: &str) -> std::result::Result<Limit, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is neither a number nor none"))?;
    if v.is_finite() {
        Ok(Limit(Some(v)))
    } else {
        Err(format!("{s}: not a finite number"))
    }
}

/// The long-form options of openai-whisper's `transcribe`, with its defaults.
#[derive(clap::Args)]
pub struct SeekArgs {
    /// How audio over 30 s (or any audio with --timestamps or --word-timestamps) is
    /// transcribed. seek: openai-whisper's transcribe (30 s windows moved by the last
    /// timestamp, conditioned on the text before, with temperature fallback; the options
    /// below). windows: ChunkedProcessor's overlapping windows started at quiet points, greedy
    /// or --beam, no fallback.
    #[arg(long, value_name = "seek|windows", default_value = "seek", value_parser = ["seek", "windows"])]
    long_form: String,
    /// The first temperature (0: greedy, or --beam).
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    temperature: f32,
    /// On a failed window (see the thresholds), decode again this much hotter, up to 1.0;
    /// none: no fallback.
    #[arg(long, value_name = "X|none", default_value = "0.2", value_parser = threshold)]
    temperature_increment_on_fallback: Limit,
    /// Candidates sampled above temperature 0; the likeliest per token wins.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    best_of: u32,
    /// A window whose text compresses (zlib) by more than this is too repetitive: fall back.
    #[arg(long, value_name = "X|none", default_value = "2.4", value_parser = threshold)]
    compression_ratio_threshold: Limit,
    /// A window whose mean token log-probability is below this fails: fall back.
    #[arg(long, value_name = "X|none", default_value = "-1.0", value_parser = threshold, allow_hyphen_values = true)]
    logprob_threshold: Limit,
    /// A window where <|nospeech|> is likelier than this, and whose log-probability fails,
    /// is silence: skipped.
    #[arg(long, value_name = "X|none", default_value = "0.6", value_parser = threshold)]
    no_speech_threshold: Limit,
    /// Prompt each window with the text before it (<|startofprev|>); false makes windows
    /// independent, less prone to repeating a failure.
    #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
    condition_on_previous_text: bool,
    /// Text that prompts the first window: names, spellings, a style.
    #[arg(long, value_name = "TEXT")]
    initial_prompt: Option<String>,
    /// Put --initial-prompt before every window's prompt, not only the first.
    #[arg(long)]
    carry_initial_prompt: bool,
    /// Word-level timestamps (openai-whisper's alignment heads and DTW); printed under each
    /// segment, and in --json. Implies --timestamps.
    #[arg(long)]
    word_timestamps: bool,
    /// With --word-timestamps: punctuation merged into the next word.
    #[arg(long, value_name = "CHARS", default_value = models::whisper::timing::PREPEND_PUNCTUATIONS)]
    prepend_punctuations: String,
    /// With --word-timestamps: punctuation merged into the previous word.
    #[arg(long, value_name = "CHARS", default_value = models::whisper::timing::APPEND_PUNCTUATIONS)]
    append_punctuations: String,
    /// Seed of the sampling above temperature 0 (the same seed gives the same text).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
}

impl SeekArgs {
    /// The mode these flags ask for; options out of range are refused here.
    pub fn mode(&self) -> Result<LongFormMode> {
        if self.long_form == "windows" {
            if self.word_timestamps {
                anyhow::bail!("--word-timestamps needs --long-form seek");
            }
            return Ok(LongFormMode::Windows);
        }
        if !(0.0..=1.0).contains(&self.temperature) {
            anyhow::bail!("--temperature {}: expected 0 to 1", self.temperature);
        }
        // openai-whisper's np.arange(temperature, 1.0 + 1e-6, increment).
        let temperatures = match self.temperature_increment_on_fallback.0 {
            None => vec![self.temperature],
            Some(inc) if inc <= 0.0 => anyhow::bail!("--temperature-increment-on-fallback {inc}: expected a positive step or none"),
            Some(inc) => {
                let n = ((1.0 + 1e-6 - f64::from(self.temperature)) / inc).ceil().max(1.0) as usize;
                (0..n).map(|i| (f64::from(self.temperature) + i as f64 * inc) as f32).collect()
            }
        };
        let so = SeekOptions {
            temperatures,
            best_of: self.best_of as usize,
            compression_ratio_threshold: self.compression_ratio_threshold.0,
            logprob_threshold: self.logprob_threshold.0,
            no_speech_threshold: self.no_speech_threshold.0,
            condition_on_previous_text: self.condition_on_previous_text,
            initial_prompt: self.initial_prompt.clone(),
            carry_initial_prompt: self.carry_initial_prompt,
            word_timestamps: self.word_timestamps,
            prepend_punctuations: self.prepend_punctuations.clone(),
            append_punctuations: self.append_punctuations.clone(),
            seed: self.seed,
        };
        so.validate()?;
        Ok(LongFormMode::Seek(so))
    }
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

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Command::ConvertCt2 { src, out } => {
            let cfg = convert_ct2(src, out)?;
            eprintln!("{} -> {}: d_model {}, {}+{} layers, vocabulary {}", src.display(), out.display(), cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The WAV files named, a folder standing for its *.wav files in name order. Refuses a name
/// that is neither, and a folder without WAV files.
fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut wavs: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read the folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
                .collect();
            if wavs.is_empty() {
                anyhow::bail!("{}: a folder without .wav files", p.display());
            }
            wavs.sort();
            out.extend(wavs);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            anyhow::bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(out)
}

/// One file's transcript, its audio length and, with --vad, its speech.
struct FileResult {
    path: PathBuf,
    transcript: models::whisper::transcribe::Transcript,
    audio_s: f64,
    speech: Option<models::vad::SpeechMap>,
}

impl FileResult {
    fn json(&self) -> serde_json::Value {
        let out = &self.transcript;
        let segs: Vec<_> = if out.details.is_empty() {
            out.segments.iter().map(|(s, text)| serde_json::json!({"start_s": s.start, "end_s": s.end, "text": text, "tokens": s.tokens, "window": s.window})).collect()
        } else {
            // The seek loop's segments, empty ones included, as openai-whisper returns them.
            out.details
                .iter()
                .map(|s| {
                    let words: Vec<_> = s.words.iter().map(|w| serde_json::json!({"word": w.word, "start_s": w.start, "end_s": w.end, "probability": w.probability})).collect();
                    serde_json::json!({"start_s": s.start, "end_s": s.end, "text": s.text.trim(), "tokens": s.tokens, "seek": s.seek, "temperature": s.temperature,
                        "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob, "words": words})
                })
                .collect()
        };
        let mut j = serde_json::json!({"text": out.text, "language": out.language, "segments": segs, "audio_seconds": self.audio_s, "windows": out.windows});
        if let Some(map) = &self.speech {
            let sr = f64::from(audio::SAMPLE_RATE);
            j["vad"] =
                serde_json::json!({"speech_segments_s": map.segments().iter().map(|&(a, b)| [a as f64 / sr, b as f64 / sr]).collect::<Vec<_>>(), "speech_seconds": map.speech_samples() as f64 / sr});
        }
        j
    }
}

/// `harness transcribe`: parse, read every input, load, transcribe (one file with its windows'
/// progress; several in batches), print.
pub fn transcribe(args: &TranscribeArgs) -> Result<ExitCode> {
    let files = expand_inputs(&args.audio)?;
    let wavs = files.iter().map(|f| crate::audio::read_wav(f).with_context(|| format!("reading {}", f.display()))).collect::<Result<Vec<_>>>()?;
    let dir = args.hub.model_folder(args.model_dir.as_ref(), args.model.as_deref())?;
    let t = Transcriber::load(&dir, args.quant.precision()?)?;
    let opts = TranscribeOptions {
        variant: args.variant.variant,
        beam: args.decode.beam.map(|b| b as usize),
        language: args.decode.language.clone(),
        timestamps: args.timestamps || args.seek.word_timestamps,
        long_form: args.seek.mode()?,
    };
    // A language the model lacks, or VAD options out of range, are refused before the audio
    // is resampled or decoded.
    t.language(&opts)?;
    let vad = if args.vad {
        args.vad_args.options(crate::vad_cmd::Use::Transcribe)?;
        Some(args.vad_args.load()?)
    } else {
        None
    };
    let samples: Vec<Vec<f32>> = wavs.iter().map(|w| crate::audio::resample(&w.mono(), w.sample_rate, audio::SAMPLE_RATE)).collect();
    drop(wavs);
    for (f, s) in files.iter().zip(&samples) {
        if s.is_empty() {
            anyhow::bail!("{}: audio is empty (0 samples)", f.display());
        }
        if s.iter().any(|x| !x.is_finite()) {
            anyhow::bail!("{}: audio holds a non-finite sample", f.display());
        }
    }
    mlx_rs::memory::reset_peak_memory()?;
    let t0 = std::time::Instant::now();
    let speech: Vec<Option<models::vad::SpeechMap>> =
        samples.iter().map(|s| vad.as_ref().map(|m| args.vad_args.detect(m, s, args.variant.variant, crate::vad_cmd::Use::Transcribe)).transpose()).collect::<Result<_>>()?;
    let decoded: Vec<std::borrow::Cow<'_, [f32]>> = samples.iter().zip(&speech).map(|(s, m)| m.as_ref().map_or(std::borrow::Cow::Borrowed(s.as_slice()), |m| m.collect(s).into())).collect();
    // No speech: nothing to decode, and nothing is made up.
    let silent = || models::whisper::transcribe::Transcript {
        text: String::new(),
        segments: vec![],
        details: vec![],
        language: opts.language.clone().filter(|l| l != "auto").unwrap_or_else(|| if t.languages().is_empty() { "en".into() } else { String::new() }),
        windows: 0,
    };
    let voiced: Vec<usize> = (0..decoded.len()).filter(|&i| !decoded[i].is_empty()).collect();
    let mut transcripts: Vec<Option<models::whisper::transcribe::Transcript>> = vec![None; decoded.len()];
    if let [only] = voiced.as_slice() {
        let windows = t.windows(decoded[*only].len());
        let bar = crate::progress::bar(windows as u64, "windows", args.quiet || windows == 1);
        transcripts[*only] = Some(t.transcribe(&decoded[*only], &opts, |done, _| bar.set_position(done as u64))?);
        bar.finish_and_clear();
    } else if !voiced.is_empty() {
        let clips: Vec<&[f32]> = voiced.iter().map(|&i| &*decoded[i]).collect();
        let bar = crate::progress::bar(clips.len() as u64, "files", args.quiet);
        let outs = t.transcribe_batch(&clips, &opts, args.decode.batch as usize, |done, _| bar.set_position(done as u64))?;
        bar.finish_and_clear();
        for (&i, o) in voiced.iter().zip(outs) {
            transcripts[i] = Some(o);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = mlx_rs::memory::peak_memory()? as f64 / (1024.0 * 1024.0);
    let results: Vec<FileResult> = files
        .into_iter()
        .zip(transcripts)
        .zip(speech)
        .zip(&samples)
        .map(|(((path, tr), speech), s)| {
            let mut transcript = tr.unwrap_or_else(silent);
            if let Some(map) = &speech {
                for (seg, _) in &mut transcript.segments {
                    seg.start = map.original_time(seg.start);
                    seg.end = map.original_time(seg.end);
                }
                for seg in &mut transcript.details {
                    seg.start = map.original_time(seg.start);
                    seg.end = map.original_time(seg.end);
                    for w in &mut seg.words {
                        w.start = map.original_time(w.start);
                        w.end = map.original_time(w.end);
                    }
                }
            }
            FileResult { path, transcript, audio_s: s.len() as f64 / f64::from(audio::SAMPLE_RATE), speech }
        })
        .collect();
    let audio_s: f64 = results.iter().map(|r| r.audio_s).sum();
    if args.json {
        if let [one] = results.as_slice() {
            let mut j = one.json();
            j["seconds"] = secs.into();
            j["mlx_peak_mib"] = peak.into();
            println!("{j}");
        } else {
            let each: Vec<_> = results
                .iter()
                .map(|r| {
                    let mut j = r.json();
                    j["path"] = r.path.display().to_string().into();
                    j
                })
                .collect();
            println!("{}", serde_json::json!({"files": each, "audio_seconds": audio_s, "seconds": secs, "batch": args.decode.batch, "mlx_peak_mib": peak}));
        }
    } else {
        let many = results.len() > 1;
        for r in &results {
            let out = &r.transcript;
            if many {
                println!("== {} ==", r.path.display());
            }
            if args.seek.word_timestamps {
                for s in out.details.iter().filter(|s| !s.text.is_empty()) {
                    println!("[{} --> {}] {}", clock(s.start), clock(s.end), s.text.trim());
                    for w in &s.words {
                        println!("    [{} --> {}] {}", clock(w.start), clock(w.end), w.word.trim());
                    }
                }
            } else if args.timestamps {
                for (s, text) in &out.segments {
                    println!("[{} --> {}] {text}", clock(s.start), clock(s.end));
                }
            } else {
                println!("{}", out.text);
            }
        }
        let ntok: usize = results.iter().flat_map(|r| r.transcript.segments.iter()).map(|(s, _)| s.tokens.len()).sum();
        let nseg: usize = results.iter().map(|r| r.transcript.segments.len()).sum();
        let windows: usize = results.iter().map(|r| r.transcript.windows).sum();
        let lang = results.first().map_or(String::new(), |r| r.transcript.language.clone());
        let files = if many { format!("{} files, ", results.len()) } else { String::new() };
        eprintln!("{ntok} tokens in {nseg} segment(s), {files}{windows} window(s), {audio_s:.1} s of audio, language {lang}, {secs:.2} s, MLX peak {peak:.1} MiB");
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
