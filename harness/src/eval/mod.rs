//! `harness eval asr`: accuracy beside speed. Transcribe every clip of a manifest, score the
//! text against the reference (openai-whisper's English normaliser, word error rate with a
//! bootstrap interval), time the decoding (real-time factor, files per second, MLX peak
//! memory) and write it all as one JSON report with an HTML page; `--compare` judges a change
//! in WER against a saved report (paired bootstrap over the same clips) and exits 3 on a
//! regression.
pub mod normalize;
pub mod wer;

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use models::whisper::transcribe::{LongFormMode, TranscribeOptions, Transcriber};
use serde::{Deserialize, Serialize};

use crate::report::html::esc;
use crate::report::json::existing_parent;
use crate::report::Meta;
use crate::stats::Interval;
use wer::Counts;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Word error rate and speed of Whisper over a manifest of (audio, reference text).
    Asr(AsrArgs),
}

/// `harness eval asr`.
#[derive(clap::Args)]
pub struct AsrArgs {
    /// JSON lines, one clip each: {"audio": "clips/0001.wav", "text": "reference words"}; the
    /// audio path relative to the manifest's folder and inside it (e.g. from
    /// `python3 fixtures/make_speech.py evalset DIR`).
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// A Whisper folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR", conflicts_with = "model", required_unless_present = "model")]
    model_dir: Option<PathBuf>,
    /// A Hugging Face hub id, read from the local hub cache first.
    #[arg(long, value_name = "HUB_ID")]
    model: Option<String>,
    #[command(flatten)]
    hub: crate::hub_args::HubArgs,
    #[command(flatten)]
    quant: crate::quant_args::QuantArgs,
    #[command(flatten)]
    variant: crate::variant_args::VariantArg,
    #[command(flatten)]
    decode: crate::whisper_cmd::DecodeArgs,
    /// How texts are normalised before scoring: english (openai-whisper's
    /// EnglishTextNormalizer), basic (its BasicTextNormalizer: lower case, symbols removed),
    /// none (white space only).
    #[arg(long, value_name = "english|basic|none", default_value = "english", value_parser = ["english", "basic", "none"])]
    normalizer: String,
    /// Use only the first N clips of the manifest.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Write the report here (JSON), and its page beside it (same name, .html). An existing
    /// file is not replaced.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// A saved report of the same manifest: print the change in WER with its paired interval
    /// and the real-time factor's ratio, and exit 3 when the WER got worse (the interval of
    /// the difference above zero).
    #[arg(long, value_name = "BASE.json")]
    compare: Option<PathBuf>,
    /// With --compare: also fail (exit 3) when the real-time factor grew by more than this
    /// many percent (one timed pass each: use on a quiet machine).
    #[arg(long, value_name = "PCT")]
    time_threshold: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// One clip of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// As written in the manifest.
    pub audio: String,
    pub path: PathBuf,
    pub text: String,
}

/// Read a manifest: every line an object with string `audio` and `text`; the audio path
/// relative, inside the manifest's folder, and an existing file. Errors name the line.
pub fn read_manifest(path: &Path) -> Result<Vec<Clip>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut clips = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not a JSON object", at()))?;
        let field = |k: &str| -> Result<String> { v.get(k).and_then(|x| x.as_str()).map(String::from).with_context(|| format!("{}: no string \"{k}\"", at())) };
        let (audio, reference) = (field("audio")?, field("text")?);
        let rel = Path::new(&audio);
        if audio.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("{}: audio {audio:?} must be a relative path inside the manifest's folder (no /, .. or .)", at());
        }
        let full = dir.join(rel);
        if !full.is_file() {
            bail!("{}: audio {} does not exist", at(), full.display());
        }
        clips.push(Clip { audio, path: full, text: reference });
    }
    if clips.is_empty() {
        bail!("{}: no clips", path.display());
    }
    Ok(clips)
}

/// One scored clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utterance {
    pub audio: String,
    pub seconds: f64,
    pub reference: String,
    pub hypothesis: String,
    pub counts: Counts,
}

/// The report `eval asr` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsrReport {
    /// Always "asr-eval".
    pub kind: String,
    pub meta: Meta,
    pub model: String,
    pub variant: String,
    pub weights: String,
    pub batch: usize,
    pub beam: Option<usize>,
    pub normalizer: String,
    pub manifest: String,
    pub clips: usize,
    pub audio_seconds: f64,
    /// Wall time of transcribing every clip (model loaded, audio read and resampled before).
    pub seconds: f64,
    pub real_time_factor: f64,
    pub files_per_second: f64,
    pub mlx_peak_mib: f64,
    /// Pooled over the clips: all errors over all reference words.
    pub wer: f64,
    /// 95% bootstrap interval over clips (2000 resamples).
    pub wer_ci: Interval,
    pub counts: Counts,
    /// How the run was made, for the reader.
    pub method: String,
    pub utterances: Vec<Utterance>,
}

fn normalizer(kind: &str) -> fn(&str) -> String {
    match kind {
        "english" => normalize::normalize_english,
        "basic" => normalize::normalize_basic,
        _ => |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Command::Asr(a) => asr(a),
    }
}

/// The report's page: the summary and every clip with its errors.
pub fn html(r: &AsrReport) -> String {
    let mut rows = String::new();
    for u in &r.utterances {
        let bad = if u.counts.errors() > 0 { " class=\"bad\"" } else { "" };
        rows.push_str(&format!("<tr{bad}><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n", esc(&u.audio), u.seconds, esc(&u.reference), esc(&u.hypothesis), u.counts.errors()));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ASR evaluation: {model}</title>\
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}tr.bad td{{background:#fff4f4}}</style></head><body>\
<h1>ASR evaluation</h1><p>{model} ({variant}, {weights}) on {device}, {precision}; {clips} clips, {audio:.1} s of audio from {manifest}.</p>\
<table><tr><th>WER</th><td>{wer:.2}% [{lo:.2}%, {hi:.2}%] ({errors} errors: {s} substitutions, {d} deletions, {i} insertions, over {words} words; normaliser {norm})</td></tr>\
<tr><th>Real-time factor</th><td>{rtf:.4} ({secs:.2} s for {audio:.1} s; {fps:.2} files/s, batch {batch})</td></tr>\
<tr><th>MLX peak memory</th><td>{peak:.1} MiB</td></tr><tr><th>Method</th><td>{method}</td></tr></table>\
<h2>Clips</h2><table><tr><th>audio</th><th>s</th><th>reference (normalised)</th><th>hypothesis (normalised)</th><th>errors</th></tr>\n{rows}</table></body></html>\n",
        model = esc(&r.model),
        variant = r.variant,
        weights = r.weights,
        device = esc(&r.meta.device_name),
        precision = r.meta.precision.as_deref().unwrap_or("fp32"),
        clips = r.clips,
        audio = r.audio_seconds,
        manifest = esc(&r.manifest),
        wer = 100.0 * r.wer,
        lo = 100.0 * r.wer_ci.low,
        hi = 100.0 * r.wer_ci.high,
        errors = r.counts.errors(),
        s = r.counts.substitutions,
        d = r.counts.deletions,
        i = r.counts.insertions,
        words = r.counts.reference_words,
        norm = r.normalizer,
        rtf = r.real_time_factor,
        secs = r.seconds,
        fps = r.files_per_second,
        batch = r.batch,
        peak = r.mlx_peak_mib,
        method = esc(&r.method),
    )
}

/// Refuse `--out` when its folder is missing or the report or its page exists (reports are
/// never replaced): before any work, and again when writing.
fn refuse_existing(json_path: &Path) -> Result<()> {
    existing_parent(json_path)?;
    for p in [json_path.to_path_buf(), json_path.with_extension("html")] {
        if p.exists() {
            bail!("{} exists: choose another --out (reports are never replaced)", p.display());
        }
    }
    Ok(())
}

/// Write the report and its page so both appear or neither does; an existing file is kept.
fn write_pair(json_path: &Path, report: &AsrReport) -> Result<PathBuf> {
    refuse_existing(json_path)?;
    let html_path = json_path.with_extension("html");
    let dir = existing_parent(json_path)?;
    let tmp = |p: &Path| dir.join(format!(".{}.tmp-{}", p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), std::process::id()));
    let (tj, th) = (tmp(json_path), tmp(&html_path));
    let result = (|| -> std::io::Result<()> {
        std::fs::write(&tj, serde_json::to_string_pretty(report).map_err(std::io::Error::other)?)?;
        std::fs::write(&th, html(report))?;
        std::fs::rename(&th, &html_path)?;
        if let Err(e) = std::fs::rename(&tj, json_path) {
            let _ = std::fs::remove_file(&html_path);
            return Err(e);
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tj);
        let _ = std::fs::remove_file(&th);
        return Err(e).with_context(|| format!("cannot write {}", json_path.display()));
    }
    Ok(html_path)
}

/// The verdict of a report against a base one: the WER change with its paired interval, the
/// real-time factor's ratio, and whether either regressed.
pub fn judge(base: &AsrReport, cur: &AsrReport, time_threshold: Option<f64>) -> Result<(String, bool)> {
    let key = |r: &AsrReport| r.utterances.iter().map(|u| (u.audio.clone(), u.reference.clone())).collect::<Vec<_>>();
    if key(base) != key(cur) {
        bail!("the base report scored other clips or references (a different manifest, --limit or normaliser): WERs are not comparable");
    }
    let (b, c): (Vec<Counts>, Vec<Counts>) = base.utterances.iter().zip(&cur.utterances).map(|(x, y)| (x.counts, y.counts)).unzip();
    let d = wer::paired_difference_ci(&b, &c, 2000, 7);
    let wer_worse = d.low > 0.0;
    let ratio = cur.real_time_factor / base.real_time_factor;
    let time_worse = time_threshold.is_some_and(|t| ratio > 1.0 + t / 100.0);
    let verdict = |bad: bool| if bad { "REGRESSION" } else { "ok" };
    let text = format!(
        "WER {:.2}% -> {:.2}% ({:+.2} points, 95% paired interval [{:+.2}, {:+.2}]): {}\nreal-time factor {:.4} -> {:.4} ({:.3}x){}",
        100.0 * base.wer,
        100.0 * cur.wer,
        100.0 * (cur.wer - base.wer),
        100.0 * d.low,
        100.0 * d.high,
        verdict(wer_worse),
        base.real_time_factor,
        cur.real_time_factor,
        ratio,
        time_threshold.map_or_else(|| " (not judged: no --time-threshold)".to_string(), |t| format!(" against {t}%: {}", verdict(time_worse)))
    );
    Ok((text, wer_worse || time_worse))
}

fn asr(a: &AsrArgs) -> Result<ExitCode> {
    // Everything that can be refused is refused before any model loads.
    if let Some(t) = a.time_threshold {
        if !(t.is_finite() && t >= 0.0) {
            bail!("--time-threshold {t}: expected a percentage of at least 0");
        }
    }
    if let Some(o) = &a.out {
        refuse_existing(o)?;
    }
    let base: Option<AsrReport> = a
        .compare
        .as_ref()
        .map(|p| -> Result<AsrReport> {
            let r: AsrReport =
                serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?).with_context(|| format!("{}: not an eval asr report", p.display()))?;
            if r.kind != "asr-eval" {
                bail!("{}: kind {:?}, not an eval asr report", p.display(), r.kind);
            }
            Ok(r)
        })
        .transpose()?;
    let mut clips = read_manifest(&a.manifest)?;
    if let Some(n) = a.limit {
        if n == 0 {
            bail!("--limit 0: no clips to score");
        }
        clips.truncate(n);
    }
    let norm = normalizer(&a.normalizer);
    if let Some(b) = &base {
        let same = b.utterances.len() == clips.len() && b.utterances.iter().zip(&clips).all(|(u, c)| u.audio == c.audio && u.reference == norm(&c.text).trim());
        if !same {
            bail!("the base report scored other clips or references (a different manifest, --limit or --normalizer): WERs are not comparable");
        }
    }
    let audio: Vec<Vec<f32>> = clips
        .iter()
        .map(|c| {
            let w = crate::audio::read_wav(&c.path).with_context(|| format!("reading {}", c.path.display()))?;
            let s = crate::audio::resample(&w.mono(), w.sample_rate, models::whisper::audio::SAMPLE_RATE);
            if s.is_empty() || s.iter().any(|x| !x.is_finite()) {
                bail!("{}: empty or non-finite audio", c.path.display());
            }
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let dir = a.hub.model_folder(a.model_dir.as_ref(), a.model.as_deref())?;
    let t = Transcriber::load(&dir, a.quant.precision()?)?;
    let opts = TranscribeOptions {
        variant: a.variant.variant,
        beam: a.decode.beam.map(|b| b as usize),
        language: a.decode.language.clone(),
        timestamps: false,
        long_form: LongFormMode::default(),
    };
    t.language(&opts)?;
    let refs: Vec<&[f32]> = audio.iter().map(Vec::as_slice).collect();
    mlx_rs::memory::reset_peak_memory()?;
    let bar = crate::progress::bar(clips.len() as u64, "clips", a.quiet);
    let t0 = std::time::Instant::now();
    let outs = t.transcribe_batch(&refs, &opts, a.decode.batch as usize, |done, _| bar.set_position(done as u64))?;
    let seconds = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let peak = mlx_rs::memory::peak_memory()? as f64 / (1024.0 * 1024.0);
    let sr = f64::from(models::whisper::audio::SAMPLE_RATE);
    let utterances: Vec<Utterance> = clips
        .iter()
        .zip(&outs)
        .zip(&audio)
        .map(|((c, o), s)| {
            let (reference, hypothesis) = (norm(&c.text).trim().to_string(), norm(&o.text).trim().to_string());
            let counts = wer::count(&reference, &hypothesis);
            Utterance { audio: c.audio.clone(), seconds: s.len() as f64 / sr, reference, hypothesis, counts }
        })
        .collect();
    let mut counts = Counts::default();
    for u in &utterances {
        counts.add(&u.counts);
    }
    let wer = counts.wer().context("the references hold no words after normalisation: no WER to report")?;
    let each: Vec<Counts> = utterances.iter().map(|u| u.counts).collect();
    let audio_seconds: f64 = utterances.iter().map(|u| u.seconds).sum();
    let kind = models::runtime::default_device_kind()?;
    let report = AsrReport {
        kind: "asr-eval".into(),
        meta: crate::meta::collect(kind),
        model: a.model.clone().unwrap_or_else(|| dir.display().to_string()),
        variant: format!("{:?}", a.variant.variant).to_lowercase(),
        weights: t.model.precision().to_string(),
        batch: a.decode.batch as usize,
        beam: opts.beam,
        normalizer: a.normalizer.clone(),
        manifest: a.manifest.display().to_string(),
        clips: clips.len(),
        audio_seconds,
        seconds,
        real_time_factor: seconds / audio_seconds,
        files_per_second: clips.len() as f64 / seconds,
        mlx_peak_mib: peak,
        wer,
        wer_ci: wer::bootstrap_ci(&each, 2000, 1),
        counts,
        method: format!(
            "every clip read and resampled first, then one timed pass: clips of up to 30 s batched {} at a time through the encoder and greedy decoder (no timestamps), longer ones or --beam one by one; texts normalised by {} before a word-level edit distance",
            a.decode.batch, a.normalizer
        ),
        utterances,
    };
    eprintln!(
        "WER {:.2}% [{:.2}%, {:.2}%] over {} words ({} sub, {} del, {} ins); {} clips, {:.1} s of audio in {:.2} s: real-time factor {:.4}, {:.2} files/s; MLX peak {:.1} MiB",
        100.0 * wer,
        100.0 * report.wer_ci.low,
        100.0 * report.wer_ci.high,
        counts.reference_words,
        counts.substitutions,
        counts.deletions,
        counts.insertions,
        report.clips,
        audio_seconds,
        seconds,
        report.real_time_factor,
        report.files_per_second,
        peak
    );
    if let Some(o) = &a.out {
        let page = write_pair(o, &report)?;
        eprintln!("report: {} and {}", o.display(), page.display());
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if let Some(b) = &base {
        let (text, regressed) = judge(b, &report, a.time_threshold)?;
        eprintln!("{text}");
        if regressed {
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}
