//! `--quantize` and `--group-size`, shared by the commands that load Whisper or MusicGen, and
//! `harness quantize`, which saves a quantized copy so quantization is not repeated.
use models::checkpoint::Checkpointed;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use models::nn::quant::Precision;

use crate::report::json::write_atomic;

#[derive(clap::Args, Clone, Debug)]
pub struct QuantArgs {
    /// Store the decoder's (and for Whisper the encoder's) linear and embedding weights at 16
    /// (float16), 8 or 4 bits at load time. A checkpoint saved quantized loads as it was saved.
    #[arg(long, value_name = "16|8|4", value_parser = ["16", "8", "4"])]
    pub quantize: Option<String>,
    /// Weights per quantization group (one scale and bias each) along a row.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(i32).range(32..=128))]
    pub group_size: i32,
}

impl QuantArgs {
    /// The precision asked for, if any.
    pub fn precision(&self) -> Result<Option<Precision>> {
        Ok(match self.quantize.as_deref() {
            None => None,
            Some("16") => Some(Precision::F16),
            Some(bits) => Some(Precision::int(bits.parse()?, self.group_size)?),
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Which network the folder holds.
    #[arg(long, value_parser = ["whisper", "musicgen"])]
    model: String,
    /// The float checkpoint folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// The folder to write: the quantized model.safetensors (precision in its metadata) next to
    /// copies of config.json and tokenizer.json. A new folder, or an empty one (never the
    /// model's own, however spelled); it appears whole when done, or not at all.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    #[command(flatten)]
    quant: QuantArgs,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let precision = args.quant.precision()?.context("give --quantize 16, 8 or 4")?;
    if crate::outputs::same_path(&args.output, &args.model_dir) {
        bail!("--output {} is the folder of --model-dir {} (the float checkpoint is read while writing)", args.output.display(), args.model_dir.display());
    }
    let staged = crate::outputs::StagedDir::create("--output", &args.output)?;
    let src = args.model_dir.join("model.safetensors");
    let dst = staged.path("model.safetensors")?;
    match args.model.as_str() {
        "whisper" => {
            models::whisper::Whisper::convert_checkpoint(&args.model_dir, precision, &dst)?;
        }
        _ => {
            models::musicgen::MusicGen::convert_checkpoint(&args.model_dir, precision, &dst)?;
        }
    }
    for f in ["config.json", "tokenizer.json", "generation_config.json"] {
        let p = args.model_dir.join(f);
        if p.exists() {
            write_atomic(&staged.path(f)?, &std::fs::read(&p)?)?;
        }
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    let quantized = size(&dst);
    let dir = staged.finish()?;
    eprintln!("{} ({:.1} MB) -> {} at {precision} ({quantized:.1} MB)", src.display(), size(&src), dir.join("model.safetensors").display());
    Ok(ExitCode::SUCCESS)
}
