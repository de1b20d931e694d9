//! `harness separate`: split a music track into its sources with HTDemucs.
use crate::variant_args::VariantArg;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mlx_rs::ops::indexing::IndexOp;
use models::checkpoint::Checkpointed;
use models::chunked::ChunkedProcessor;
use models::htdemucs::pretrained::{self, Bag, CacheOptions, LocalRepo, Remote};
use models::htdemucs::{Chunking, HtDemucs};

use crate::audio::{read_wav, resample, write_wav, Audio};

#[derive(clap::Args)]
pub struct Args {
    /// The track: a WAV file, any rate (resampled to the model's) and channel count (mono is
    /// duplicated, extra channels are dropped, as demucs does).
    input: PathBuf,
    /// The folder to write one WAV per source into (drums.wav, bass.wav, other.wav,
    /// vocals.wav for the released model): a new folder, or an empty one. The sources are
    /// written beside it and moved in together at the end, so it holds all of them or none.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// The model: a released name (htdemucs, htdemucs_ft: a bag of four fine-tuned models,
    /// htdemucs_6s: six sources with guitar and piano) or signature, downloaded on first use
    /// from demucs' release location into --cache-dir and checked against its checksum; with
    /// --repo, a signature or bag name in that folder; or the path of a demucs `.th` file.
    #[arg(short = 'n', long, value_name = "NAME|FILE.th", default_value = "htdemucs", conflicts_with = "model_dir")]
    model: String,
    /// A demucs repo folder, as demucs' --repo: `SIG-CHECKSUM.th` checkpoints and `NAME.yaml`
    /// bags (models, per-source weights, segment). --model is then looked up there.
    #[arg(long, value_name = "DIR", conflicts_with = "model_dir")]
    repo: Option<PathBuf>,
    /// Where released checkpoints are cached [default: torch hub's, $TORCH_HOME/hub/checkpoints
    /// or ~/.cache/torch/hub/checkpoints, so models demucs already downloaded are reused].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Never download: a released model must already be in the cache.
    #[arg(long)]
    offline: bool,
    /// An HTDemucs folder instead of --model: config.json (demucs' constructor arguments) and
    /// model.safetensors (its state_dict).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// How the track is split: `demucs` is apply_model's (training-length segments, centred
    /// context, triangle weights; matches demucs); `overlap` is the seed's ChunkedProcessor
    /// (--chunk-seconds chunks, triangular overlap-add); `whole` runs the track in one pass
    /// (memory grows with the length; short tracks only).
    #[arg(long, value_parser = ["demucs", "overlap", "whole"], default_value = "demucs")]
    chunking: String,
    /// Fraction of each segment shared with the next.
    #[arg(long, default_value_t = 0.25)]
    overlap: f64,
    /// Chunk length for --chunking overlap, in seconds (at most the model's segment; the seed's
    /// HTDemucs preset is 6 s, its phone preset 3 s).
    #[arg(long, default_value_t = 6.0)]
    chunk_seconds: f64,
    /// Segments per model call with --chunking demucs [default: on a GPU with the optimized
    /// variant as many as fit a quarter of MLX's memory limit, up to 8; else 1 as demucs]. The
    /// result is the same; memory grows with it (about 2.3 GiB per segment at the released size).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    batch: Option<u32>,
    /// Write 16-bit PCM (clipped to [-1, 1]) instead of 32-bit float.
    #[arg(long)]
    pcm16: bool,
    #[command(flatten)]
    variant: VariantArg,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// demucs' `convert_audio_channels`: the same count as is; to mono by averaging; mono to many
/// by repeating; many to fewer by keeping the first.
fn to_channels(audio: &Audio, want: usize) -> Result<Vec<Vec<f32>>> {
    let have = audio.channels.len();
    Ok(if have == want {
        audio.channels.clone()
    } else if want == 1 {
        vec![audio.mono()]
    } else if have == 1 {
        vec![audio.channels[0].clone(); want]
    } else if have > want {
        audio.channels[..want].to_vec()
    } else {
        bail!("the track has {have} channels and the model needs {want}: cannot make more channels from several")
    })
}

/// The model or bag `args` name.
fn load(args: &Args) -> Result<Bag> {
    if let Some(dir) = &args.model_dir {
        return Ok(Bag::single(HtDemucs::load_dir(dir)?));
    }
    let path = std::path::Path::new(&args.model);
    if args.model.ends_with(".th") || path.is_file() {
        if args.repo.is_some() {
            bail!("--model {}: a checkpoint file needs no --repo", args.model);
        }
        return Ok(Bag::single(pretrained::load_th(path)?));
    }
    if let Some(repo) = &args.repo {
        return Ok(LocalRepo::open(repo)?.load(&args.model)?);
    }
    let cache = CacheOptions { dir: args.cache_dir.clone(), offline: args.offline };
    let quiet = args.quiet;
    Ok(Remote::released().load(&args.model, &cache, &mut |url| {
        if !quiet {
            eprintln!("downloading {url} into {}", cache.folder().map(|d| d.display().to_string()).unwrap_or_default());
        }
    })?)
}

pub fn run(args: &Args) -> Result<ExitCode> {
    // Before any work: where the sources go (never over the input or the model).
    let model_path = args.model_dir.clone().unwrap_or_else(|| PathBuf::from(&args.model));
    crate::outputs::refuse_overwrite("-o", &args.output, &[("the input", &args.input), ("the model", &model_path)])?;
    if let Some(repo) = &args.repo {
        crate::outputs::refuse_overwrite("-o", &args.output, &[("--repo", repo)])?;
    }
    let staged = crate::outputs::StagedDir::create("-o", &args.output)?;
    let model = load(args)?;
    let cfg = model.config();
    let wav = read_wav(&args.input)?;
    let rate = cfg.samplerate as u32;
    let chans: Vec<Vec<f32>> = to_channels(&wav, cfg.audio_channels as usize).with_context(|| format!("{}", args.input.display()))?.iter().map(|c| resample(c, wav.sample_rate, rate)).collect();
    let len = chans[0].len();
    if len == 0 {
        bail!("{}: nothing left after resampling {} samples from {} Hz", args.input.display(), wav.len(), wav.sample_rate);
    }
    let variant = args.variant.variant;
    let chunking = match args.chunking.as_str() {
        "demucs" => {
            if !(0.0..1.0).contains(&args.overlap) {
                bail!("--overlap {}: must lie in [0, 1)", args.overlap);
            }
            None
        }
        "overlap" => {
            let chunk = (args.chunk_seconds * f64::from(rate)).round();
            if !(chunk >= 2.0 && chunk <= f64::from(cfg.training_length())) {
                bail!("--chunk-seconds {}: must be positive and at most the model's segment ({} s)", args.chunk_seconds, cfg.segment);
            }
            Some(Chunking::Overlap(ChunkedProcessor::new(chunk as i32, args.overlap)?))
        }
        _ => Some(Chunking::Whole),
    };
    // demucs' chunking follows each model's own segment.
    let batch = args.batch.map_or_else(|| models::htdemucs::segment_batch(variant), |b| b as usize);
    let chunking_of = |m: &HtDemucs| chunking.unwrap_or_else(|| Chunking::Demucs(models::chunked::DemucsChunking { overlap: args.overlap, batch, ..m.demucs_chunking() }));
    mlx_rs::memory::reset_peak_memory()?;
    let bar = crate::progress::bar(1, "chunks", args.quiet);
    let t0 = Instant::now();
    let out = model.separate_track(&chans, variant, chunking_of, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let peak = mlx_rs::memory::peak_memory()? as f64 / (1024.0 * 1024.0);
    // Source names were checked as file names when the config was read.
    let mut names = Vec::new();
    for (s, name) in model.sources().iter().enumerate() {
        let src = out.index(s as i32);
        let channels = (0..src.shape()[0]).map(|c| src.index(c).as_slice::<f32>().to_vec()).collect();
        let file = format!("{name}.wav");
        write_wav(&staged.path(&file)?, &Audio { sample_rate: rate, channels }, args.pcm16)?;
        names.push(file);
    }
    let dir = staged.finish()?;
    for n in names {
        println!("{}", dir.join(n).display());
    }
    let dur = len as f64 / f64::from(rate);
    eprintln!("separated {dur:.2} s into {} sources in {secs:.2} s ({:.1}x real time), MLX peak memory {peak:.0} MiB", model.sources().len(), dur / secs);
    Ok(ExitCode::SUCCESS)
}
