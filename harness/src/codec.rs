//! `harness codec encode|decode`: EnCodec as a user tool. WAV in, codes (safetensors) out, and
//! back; the codes file records the model, revision, rate and length, so that decoding
//! checks it is using the same codec and trims the padding.
use crate::variant_args::VariantArg;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};
use models::checkpoint::Checkpointed;
use models::encodec::Encodec;
use models::weights;

use crate::audio::{self, Audio};
use crate::hub_args::HubArgs;
use crate::report::json::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// The codec: a folder with config.json and model.safetensors, or a Hugging Face hub id
    /// (facebook/encodec_24khz, facebook/encodec_32khz, facebook/encodec_48khz: chunked and
    /// normalised, its codes file holds each chunk's scale). `decode` defaults to the model named
    /// in the codes file.
    #[arg(long, value_name = "DIR|REPO")]
    model: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    variant: VariantArg,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Encode a WAV file to EnCodec codes.
    Encode {
        /// Input WAV (PCM or float); it must be at the model's rate unless --resample.
        input: PathBuf,
        /// Output codes file (.safetensors).
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
        /// Target bandwidth in kbps; one of the model's (24 kHz: 1.5 3 6 12 24; 32 kHz: 2.2; 48 kHz: 3 6 12 24).
        /// Default: the lowest.
        #[arg(short, long)]
        bandwidth: Option<f64>,
        /// Resample input at another rate to the model's (windowed sinc) instead of refusing it.
        #[arg(long)]
        resample: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode a codes file to WAV.
    Decode {
        /// Codes file written by `harness codec encode`.
        input: PathBuf,
        /// Output WAV.
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
        /// Decode as a stream, N code frames per chunk, carrying state between chunks (the
        /// output equals the full decode); prints the per-chunk latency.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        stream_chunk: Option<u32>,
        /// Write 16-bit PCM instead of 32-bit float.
        #[arg(long)]
        pcm16: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
}

const DEFAULT_MODEL: &str = "facebook/encodec_24khz";

/// A loaded codec and where it came from.
pub struct Loaded {
    pub model: Encodec,
    pub name: String,
    pub revision: String,
}

/// Load from a folder or the hub; the revision recorded is the snapshot's commit when the
/// file came from a hub cache.
pub fn load(spec: &str, revision: &str, hub: &HubArgs) -> Result<Loaded> {
    let dir = Path::new(spec);
    if dir.is_dir() {
        let model = Encodec::load_dir(dir).with_context(|| format!("loading the codec from {}", dir.display()))?;
        // Recorded in the codes file: absolute, so `decode` finds it from any folder.
        let name = dir.canonicalize().map_or_else(|_| spec.to_string(), |p| p.display().to_string());
        return Ok(Loaded { model, name, revision: "local".into() });
    }
    if spec.split('/').count() != 2 {
        bail!("--model {spec}: neither a folder nor a hub id of the form org/name");
    }
    let dir = models::hub::fetch_snapshot(spec, revision, &["config.json", "model.safetensors"], &hub.options())?;
    let resolved = dir.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| n.len() == 40).unwrap_or_else(|| revision.to_string());
    let model = Encodec::load_dir(&dir).with_context(|| format!("loading {spec}@{revision}"))?;
    Ok(Loaded { model, name: spec.to_string(), revision: resolved })
}

/// A safetensors file of the int32 `codes` (and, for a framed model, the float32 `scales` of
/// its frames) plus string metadata, written atomically.
fn write_codes(path: &Path, codes: &Array, scales: Option<&Array>, meta: &BTreeMap<&str, String>) -> Result<()> {
    let codes = codes.as_dtype(Dtype::Int32)?.contiguous()?;
    codes.eval()?;
    let mut data: Vec<u8> = codes.as_slice::<i32>().iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut header = serde_json::json!({
        "codes": {"dtype": "I32", "shape": codes.shape(), "data_offsets": [0, data.len()]},
        "__metadata__": meta,
    });
    if let Some(sc) = scales {
        let sc = sc.as_dtype(Dtype::Float32)?.contiguous()?;
        sc.eval()?;
        let start = data.len();
        data.extend(sc.as_slice::<f32>().iter().flat_map(|v| v.to_le_bytes()));
        header["scales"] = serde_json::json!({"dtype": "F32", "shape": sc.shape(), "data_offsets": [start, data.len()]});
    }
    let mut h = serde_json::to_vec(&header)?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    write_atomic(path, &bytes)
}

/// The most frames a codes file may hold (an hour at EnCodec's 75 Hz is 270,000): a header
/// is data, checked before anything is allocated from it.
const MAX_FRAMES: u64 = 1 << 24;

/// A codes file's contents: `[1, Q, T]` codes, or for a framed model (encodec_48khz) `[F, 1,
/// Q, T]` codes with their `[F, 1]` scales.
pub struct CodesFile {
    pub codes: Array,
    pub scales: Option<Array>,
    pub meta: HashMap<String, String>,
}

/// Read a codes file written by `encode`, whatever its name: the safetensors header is parsed
/// and checked here (an int32 tensor `codes` of shape [1, codebooks, frames], or [chunks, 1,
/// codebooks, frames] with a float32 `scales` [chunks, 1]), and the data read from the offsets
/// it gives.
fn read_codes(path: &Path) -> Result<CodesFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // The strict safetensors check: the length prefix, the header, every tensor's offsets.
    let tensors = weights::parse_header(path, &bytes, bytes.len() as u64)?;
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&bytes[..8]);
    let head_end = 8 + u64::from_le_bytes(prefix) as usize;
    let info = tensors.get("codes").with_context(|| format!("{} holds no 'codes' tensor (was it written by `harness codec encode`?)", path.display()))?;
    let sh = &info.shape;
    let plain = sh.len() == 3 && sh[0] == 1 && (1..=64).contains(&sh[1]) && (1..=MAX_FRAMES).contains(&sh[2]);
    let framed = sh.len() == 4 && sh[0] >= 1 && sh[1] == 1 && (1..=64).contains(&sh[2]) && sh[3] >= 1 && sh[0].saturating_mul(sh[3]) <= MAX_FRAMES;
    if info.dtype != "I32" || !(plain || framed) {
        bail!("{}: codes are {} {:?}; expected int32 [1, 1..64 codebooks, 1..{MAX_FRAMES} frames] (or [chunks, 1, codebooks, frames])", path.display(), info.dtype, info.shape);
    }
    let data = |offsets: (u64, u64)| &bytes[head_end + offsets.0 as usize..head_end + offsets.1 as usize];
    let values: Vec<i32> = data(info.offsets).chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let scales = match (tensors.get("scales"), framed) {
        (None, false) => None,
        (Some(s), true) if s.dtype == "F32" && s.shape == [sh[0], 1] => {
            let v: Vec<f32> = data(s.offsets).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                bail!("{}: scales must be positive and finite", path.display());
            }
            Some(Array::from_slice(&v, &[sh[0] as i32, 1]))
        }
        (None, true) => None,
        (Some(s), _) => bail!("{}: scales are {} {:?}; expected float32 [{}, 1] beside [chunks, 1, codebooks, frames] codes", path.display(), s.dtype, s.shape, sh[0]),
    };
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..head_end]).with_context(|| format!("{}: header is not JSON", path.display()))?;
    let meta: HashMap<String, String> =
        header.get("__metadata__").and_then(|m| m.as_object()).map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()).unwrap_or_default();
    let shape: Vec<i32> = info.shape.iter().map(|&d| d as i32).collect();
    Ok(CodesFile { codes: Array::from_slice(&values, &shape), scales, meta })
}

/// The `samples` a codes file records: a positive count no longer than the decode.
fn recorded_samples(meta: &HashMap<String, String>, decoded: i32, path: &Path) -> Result<i32> {
    match meta.get("samples") {
        None => Ok(decoded),
        Some(s) => match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(n.min(decoded)),
            _ => bail!("{}: metadata 'samples' is {s:?}; expected a positive number of samples", path.display()),
        },
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Command::Encode { input, output, bandwidth, resample, model } => {
            crate::outputs::check_file("-o", output)?;
            crate::outputs::refuse_overwrite("-o", output, &[("the input", input)])?;
            let spec = model.model.as_deref().unwrap_or(DEFAULT_MODEL);
            let loaded = load(spec, &model.hub.revision, &model.hub)?;
            let cfg = &loaded.model.config;
            let mut wav = audio::read_wav(input)?;
            if wav.channels.len() as i32 != cfg.audio_channels {
                bail!("{} has {} channel(s); {} takes {} (mix it down first, e.g. `sox in.wav -c 1 out.wav`)", input.display(), wav.channels.len(), loaded.name, cfg.audio_channels);
            }
            if wav.sample_rate != cfg.sampling_rate {
                if !resample {
                    bail!("{} is at {} Hz; {} takes {} Hz (pass --resample to convert it)", input.display(), wav.sample_rate, loaded.name, cfg.sampling_rate);
                }
                wav = Audio {
                    sample_rate: cfg.sampling_rate,
                    channels: wav.channels.iter().map(|c| audio::resample(c, wav.sample_rate, cfg.sampling_rate)).collect(),
                };
            }
            let n = wav.len();
            let flat: Vec<f32> = wav.channels.concat();
            let x = Array::from_slice(&flat, &[1, wav.channels.len() as i32, n as i32]);
            let bw = bandwidth.unwrap_or(cfg.target_bandwidths[0]);
            let t0 = std::time::Instant::now();
            let (codes, scales, last_pad) = if loaded.model.framed() {
                let f = loaded.model.encode_frames(&x, Some(bw), model.variant.variant, None)?;
                (f.codes, f.scales, Some(f.last_pad))
            } else {
                (loaded.model.encode(&x, Some(bw), model.variant.variant)?, None, None)
            };
            let secs = t0.elapsed().as_secs_f64();
            let mut meta = BTreeMap::from([
                ("format", "mlx-audio-bench encodec codes v1".to_string()),
                ("model", loaded.name.clone()),
                ("revision", loaded.revision.clone()),
                ("sampling_rate", cfg.sampling_rate.to_string()),
                ("channels", cfg.audio_channels.to_string()),
                ("samples", n.to_string()),
                ("bandwidth", bw.to_string()),
            ]);
            if let Some(p) = last_pad {
                meta.insert("last_pad", p.to_string());
            }
            write_codes(output, &codes, scales.as_ref(), &meta)?;
            let s = codes.shape();
            let s = if s.len() == 4 { vec![s[1], s[2], s[0] * s[3]] } else { s.to_vec() };
            eprintln!(
                "{}: {:.2} s of audio -> {} codebooks x {} frames at {bw} kbps in {:.3} s ({:.1}x real time) -> {}",
                input.display(),
                n as f64 / f64::from(cfg.sampling_rate),
                s[1],
                s[2],
                secs,
                n as f64 / f64::from(cfg.sampling_rate) / secs,
                output.display()
            );
        }
        Command::Decode { input, output, stream_chunk, pcm16, model } => {
            crate::outputs::check_file("-o", output)?;
            crate::outputs::refuse_overwrite("-o", output, &[("the input", input)])?;
            let CodesFile { codes, scales, meta } = read_codes(input)?;
            let spec = model.model.clone().or_else(|| meta.get("model").cloned()).unwrap_or_else(|| DEFAULT_MODEL.into());
            let revision = if model.model.is_none() { meta.get("revision").filter(|r| r.len() == 40).cloned().unwrap_or(model.hub.revision.clone()) } else { model.hub.revision.clone() };
            let loaded = load(&spec, &revision, &model.hub)?;
            let cfg = &loaded.model.config;
            if let Some(rate) = meta.get("sampling_rate") {
                if rate != &cfg.sampling_rate.to_string() {
                    bail!("{} was encoded at {rate} Hz by {}, but {} runs at {} Hz", input.display(), meta.get("model").map_or("?", |s| s.as_str()), loaded.name, cfg.sampling_rate);
                }
            }
            let framed = codes.ndim() == 4;
            if framed != loaded.model.framed() {
                bail!(
                    "{}: {} codes, but {} encodes {}",
                    input.display(),
                    if framed { "chunked" } else { "unchunked" },
                    loaded.name,
                    if loaded.model.framed() { "in chunks (was this file written by another model?)" } else { "in one piece" }
                );
            }
            let (nq, cb) = (codes.shape()[codes.ndim() - 2], cfg.codebook_size);
            if nq > cfg.num_quantizers() {
                bail!("{}: {nq} codebooks, but {} has {}", input.display(), loaded.name, cfg.num_quantizers());
            }
            if let Some(bad) = codes.as_slice::<i32>().iter().find(|&&c| c < 0 || c >= cb) {
                bail!("{}: code {bad} is outside {}'s codebooks of {cb} entries", input.display(), loaded.name);
            }
            let v = model.variant.variant;
            let t0 = std::time::Instant::now();
            let y = match stream_chunk {
                None if framed => {
                    let last_pad = match meta.get("last_pad").map(|p| p.parse::<i32>()) {
                        None => 0,
                        Some(Ok(p)) if (0..codes.shape()[3]).contains(&p) => p,
                        Some(_) => bail!("{}: metadata 'last_pad' is {:?}; expected 0 to {} frames", input.display(), meta.get("last_pad"), codes.shape()[3] - 1),
                    };
                    let scales = scales.map(|s| s.reshape(&[-1, 1])).transpose()?;
                    loaded.model.decode_frames(&models::encodec::Frames { codes: codes.clone(), scales, last_pad }, v)?
                }
                None => loaded.model.decode(&codes, v)?,
                Some(n) => {
                    let n = *n as i32;
                    let mut dec = loaded.model.streaming_decoder(v);
                    let mut lat = Vec::new();
                    let mut since = std::time::Instant::now();
                    let y = dec.decode_in_chunks(&codes, n, |_| {
                        lat.push(since.elapsed().as_secs_f64() * 1e3);
                        since = std::time::Instant::now();
                    })?;
                    lat.sort_by(f64::total_cmp);
                    eprintln!(
                        "streaming: {} chunks of {n} frames ({:.1} ms of audio each): median {:.2} ms, max {:.2} ms per chunk",
                        lat.len(),
                        f64::from(n * cfg.hop_length()) * 1e3 / f64::from(cfg.sampling_rate),
                        lat[lat.len() / 2],
                        lat[lat.len() - 1]
                    );
                    y
                }
            };
            let secs = t0.elapsed().as_secs_f64();
            let keep = recorded_samples(&meta, y.shape()[2], input)?;
            let y = y.index((0, .., ..keep)).as_dtype(Dtype::Float32)?.contiguous()?;
            y.eval()?;
            let flat = y.as_slice::<f32>();
            let channels: Vec<Vec<f32>> = flat.chunks(keep as usize).map(<[f32]>::to_vec).collect();
            audio::write_wav(output, &Audio { sample_rate: cfg.sampling_rate, channels }, *pcm16)?;
            eprintln!(
                "{}: {} codebooks x {} frames -> {:.2} s of audio in {:.3} s -> {}",
                input.display(),
                nq,
                codes.shape()[codes.ndim() - 1] * if framed { codes.shape()[0] } else { 1 },
                f64::from(keep) / f64::from(cfg.sampling_rate),
                secs,
                output.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// For the parser fuzz test (`fuzz_parsers.rs`).
#[cfg(test)]
pub(crate) fn write_codes_for_tests(path: &Path, codes: &Array, meta: &BTreeMap<&str, String>) -> Result<()> {
    write_codes(path, codes, None, meta)
}

/// For the parser fuzz test (`fuzz_parsers.rs`).
#[cfg(test)]
pub(crate) fn read_codes_for_tests(path: &Path) -> Result<(Array, HashMap<String, String>)> {
    read_codes(path).map(|f| (f.codes, f.meta))
}
