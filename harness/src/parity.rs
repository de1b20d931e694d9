//! `harness parity --fixture DIR`: run our implementation on a reference fixture (made by
//! `fixtures/make_fixtures.py` from the PyTorch original) and compare every output with its
//! tolerance, for the naive and the optimized variant.
use crate::variant_args::VariantsArg;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array, Dtype};
use models::checkpoint::{Checkpointed, Store};
use models::encodec::Encodec;
use models::nn::attention::{CrossKvCache, Mask, MultiHeadAttention};
use models::nn::kv_cache::new_cache;
use models::runtime;
use models::weights;
use models::Variant;
use serde::{Deserialize, Serialize};

use crate::report::{Conformance, FixtureConformance};

#[derive(clap::Args)]
#[command(after_help = "\
Exit status:
  0  every output of every fixture within its tolerance
  1  an output out of tolerance, or a fixture that could not be run (named on stderr)
  2  invalid command line

The output states the device and the precision mode (--precision, before the subcommand or
after it) the check ran in: parity holds for that configuration only. `-o` writes the result as
a conformance file that `bench --conformance` and `merge --conformance` embed in a report.")]
pub struct Args {
    /// Fixture folder (manifest.json, config.json, model/inputs/outputs.safetensors);
    /// repeatable.
    #[arg(long, value_name = "DIR", required_unless_present = "fixtures")]
    fixture: Vec<PathBuf>,
    /// Check every fixture in this folder: each subfolder with a manifest.json, in name order
    /// (e.g. --fixtures fixtures for all committed ones).
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    #[command(flatten)]
    variant: VariantsArg,
    /// Device to compute on [default: MLX's default, the GPU when the library has one, as for
    /// bench].
    #[arg(long, value_parser = ["cpu", "gpu"])]
    device: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the results (device, precision, every check) as JSON to this file, for
    /// `bench --conformance` and `merge --conformance`.
    #[arg(short = 'o', long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// When the CPU host kernels (softmax, GELU, sigmoid, GLU, ELU, group norm, attention and
    /// axis-1 convolutions computed outside MLX's graph) take over: `auto` from their size
    /// threshold, as bench runs them (the committed fixtures' tiny models mostly stay below it);
    /// `always` for every array, so the fixtures check the host kernels too; `never` keeps MLX's
    /// own ops. Only the CPU backend has them.
    #[arg(long, value_parser = ["auto", "always", "never"], default_value = "auto")]
    host_kernels: String,
}

/// A tolerance from the manifest: `{atol, rtol}`, `{exact: true}`, `{cosine: min}`, or for
/// discrete decisions with recorded margins `{exact: true, margins: NAME, tie: t}`: an element
/// may differ only where the reference's own margin (output `NAME`, same shape: best minus
/// second-best score of that decision) is below `t`, a tie at float32 precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tolerance {
    Close { atol: f64, rtol: f64 },
    Decisions { exact: bool, margins: String, tie: f64 },
    Exact { exact: bool },
    Cosine { cosine: f64 },
}

/// The loosest tolerances a fixture may state (fixtures/README.md): float32 atol 1e-4 and rtol
/// 1e-3, cosine 0.99999; exact means exact. A looser one would let a wrong result pass.
pub const MAX_ATOL: f64 = 1e-4;
pub const MAX_RTOL: f64 = 1e-3;
pub const MIN_COSINE: f64 = 0.99999;
/// The largest tie threshold a fixture may state for a decision margin.
pub const MAX_TIE: f64 = 1e-4;

impl Tolerance {
    /// Refuse a tolerance looser than the ceilings, non-finite, or `exact: false`.
    pub fn check(&self, output: &str) -> Result<()> {
        let ok = match *self {
            Tolerance::Close { atol, rtol } => (0.0..=MAX_ATOL).contains(&atol) && (0.0..=MAX_RTOL).contains(&rtol),
            Tolerance::Exact { exact } => exact,
            Tolerance::Decisions { exact, tie, .. } => exact && (0.0..=MAX_TIE).contains(&tie),
            Tolerance::Cosine { cosine } => (MIN_COSINE..=1.0).contains(&cosine),
        };
        if !ok {
            bail!(
                "manifest.json: the tolerance of '{output}' ({}) is looser than the ceilings (atol <= {MAX_ATOL:e}, rtol <= {MAX_RTOL:e}, cosine >= {MIN_COSINE}, exact: true, tie <= {MAX_TIE:e})",
                self.describe()
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        match self {
            Tolerance::Close { atol, rtol } => format!("atol {atol:e}, rtol {rtol:e}"),
            Tolerance::Exact { .. } => "exact".into(),
            Tolerance::Decisions { tie, .. } => format!("exact, ties < {tie:e}"),
            Tolerance::Cosine { cosine } => format!("cosine >= {cosine}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    pub package: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub model: String,
    pub seed: u64,
    pub reference: Reference,
    pub task: String,
    pub tolerances: BTreeMap<String, Tolerance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub variant: String,
    pub output: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub cosine: f64,
    pub tolerance: Tolerance,
    /// The share of the tolerance used: the largest |got - want| / (atol + rtol |want|) for
    /// atol/rtol, (1 - cosine) / (1 - min) for a cosine bound; at most 1 passes. None for exact
    /// checks (see `mismatches`) and for non-finite output.
    #[serde(default)]
    pub used: Option<f64>,
    /// Elements outside the tolerance (for exact checks: elements that differ where the
    /// reference's decision was not a tie).
    #[serde(default)]
    pub mismatches: u64,
    /// Decisions with recorded margins: the elements that differ at a tie (accepted), and the
    /// smallest margin the reference recorded.
    #[serde(default)]
    pub ties: u64,
    #[serde(default)]
    pub min_margin: Option<f64>,
    pub pass: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// A fixture input as values of type `T` with the rank (and, where given, the length) the
/// reader expects: data from a file, checked before it is indexed.
fn input_values<T: mlx_rs::ArrayElement + Copy>(inputs: &HashMap<String, Array>, name: &str, dtype: Dtype, rank: usize, len: Option<usize>) -> Result<Vec<T>> {
    let a = inputs.get(name).with_context(|| format!("inputs.safetensors has no '{name}'"))?;
    if a.dtype() != dtype || a.ndim() != rank || len.is_some_and(|n| a.size() != n) {
        bail!("inputs.safetensors: '{name}' is {:?} {:?}; expected {dtype:?} of rank {rank}{}", a.dtype(), a.shape(), len.map_or(String::new(), |n| format!(" with {n} values")));
    }
    a.eval()?;
    Ok(a.try_as_slice::<T>().map_err(|e| anyhow::anyhow!("inputs.safetensors: reading '{name}': {e}"))?.to_vec())
}

/// A fixture input of the given rank (any dtype), checked before the model indexes it.
fn input_rank<'a>(inputs: &'a HashMap<String, Array>, name: &str, rank: usize) -> Result<&'a Array> {
    let a = inputs.get(name).with_context(|| format!("inputs.safetensors has no '{name}'"))?;
    if a.ndim() != rank || a.shape().contains(&0) {
        bail!("inputs.safetensors: '{name}' has shape {:?}; expected {rank} non-empty dimensions", a.shape());
    }
    Ok(a)
}

fn to_f64(a: &Array) -> Result<Vec<f64>> {
    let a = a.as_dtype(Dtype::Float32)?.reshape(&[-1])?;
    a.eval()?;
    Ok(a.as_slice::<f32>().iter().map(|&v| f64::from(v)).collect())
}

/// Compare one output with its reference under `tol` (`margins`: the reference's decision
/// margins, for [`Tolerance::Decisions`]).
pub fn compare(variant: &str, name: &str, got: &Array, want: &Array, tol: &Tolerance, margins: Option<&Array>) -> Result<Check> {
    if got.shape() != want.shape() {
        bail!("{variant} output '{name}' has shape {:?}, the reference {:?}", got.shape(), want.shape());
    }
    let (g, w) = (to_f64(got)?, to_f64(want)?);
    let margin = match (tol, margins) {
        (Tolerance::Decisions { margins: m, .. }, Some(a)) => {
            if a.shape() != want.shape() {
                bail!("the margins '{m}' of '{name}' have shape {:?}, the output {:?}", a.shape(), want.shape());
            }
            Some(to_f64(a)?)
        }
        (Tolerance::Decisions { margins: m, .. }, None) => bail!("output '{name}': its margins '{m}' are not in outputs.safetensors"),
        _ => None,
    };
    let min_margin = margin.as_ref().map(|m| m.iter().copied().fold(f64::INFINITY, f64::min));
    let (mut max_abs, mut max_rel, mut dot, mut ng, mut nw) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let (mut finite, mut used, mut mismatches, mut ties) = (true, 0f64, 0u64, 0u64);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        finite &= a.is_finite() && b.is_finite();
        let d = (a - b).abs();
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / b.abs().max(1e-12));
        match tol {
            Tolerance::Close { atol, rtol } => {
                let bound = atol + rtol * b.abs();
                used = used.max(d / bound.max(f64::MIN_POSITIVE));
                // Out of bound, or not comparable (NaN).
                mismatches += u64::from(matches!(d.partial_cmp(&bound), None | Some(std::cmp::Ordering::Greater)));
            }
            Tolerance::Exact { .. } => mismatches += u64::from(a != b),
            Tolerance::Decisions { tie, .. } => {
                if a != b {
                    // A margin that is not finite, or at least the threshold, is no tie.
                    let m = margin.as_ref().map_or(f64::NAN, |m| m[i]);
                    if m < *tie {
                        ties += 1;
                    } else {
                        mismatches += 1;
                    }
                }
            }
            Tolerance::Cosine { .. } => {}
        }
        dot += a * b;
        ng += a * a;
        nw += b * b;
    }
    let cosine = if ng == 0.0 && nw == 0.0 { 1.0 } else { dot / (ng.sqrt() * nw.sqrt()).max(1e-300) };
    let used = match tol {
        _ if !finite => None,
        Tolerance::Close { .. } => Some(used),
        Tolerance::Exact { .. } | Tolerance::Decisions { .. } => None,
        Tolerance::Cosine { cosine: min } => Some(if cosine >= 1.0 { 0.0 } else { (1.0 - cosine) / (1.0 - min).max(f64::MIN_POSITIVE) }),
    };
    let pass = finite
        && match tol {
            Tolerance::Close { .. } | Tolerance::Exact { .. } | Tolerance::Decisions { .. } => mismatches == 0,
            Tolerance::Cosine { cosine: min } => cosine >= *min,
        };
    Ok(Check {
        variant: variant.into(),
        output: name.into(),
        max_abs,
        max_rel,
        cosine,
        tolerance: tol.clone(),
        used,
        mismatches,
        ties,
        min_margin,
        pass,
    })
}

/// Our outputs for the fixture's model, by output name.
fn run_model(manifest: &Manifest, dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    match manifest.model.as_str() {
        "attention" => run_attention(dir, variant),
        "encodec24k" | "encodec32k" | "encodec48k" | "encodec-alt" => run_encodec(dir, variant),
        "whisper" => run_whisper(dir, variant),
        "musicgen" => run_musicgen(dir, variant),
        "htdemucs" => run_htdemucs(dir, variant),
        "htdemucs-th" => run_htdemucs_th(dir, variant),
        "clap" => run_clap(dir, variant),
        "clap-fused" => run_clap_fused(dir, variant),
        "silero-vad" => run_silero_vad(dir, variant),
        other => bail!("fixture model '{other}' is not implemented by this harness yet"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VadFixtureConfig {
    sampling_rate: u32,
    option_sets: Vec<models::vad::VadOptions>,
    /// The weights file, relative to the fixture folder (the harness's own copy).
    weights: String,
    /// How close the reference's probabilities come to a threshold (documentation).
    #[allow(dead_code)]
    threshold_margin: f64,
}

/// Silero VAD (the `silero-vad` package): the chunk probabilities of the fixture's 16-bit
/// recording (naive: chunk by chunk; optimized: batched encoder, host recurrence), and
/// `get_speech_timestamps`' segments for each option set, from our probabilities and, to
/// check the segmentation alone, from the reference's.
fn run_silero_vad(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::vad::{speech_timestamps, SileroVad, SAMPLE_RATE};
    let cfg: VadFixtureConfig = read_json(&dir.join("config.json"))?;
    if cfg.sampling_rate != SAMPLE_RATE {
        bail!("config.json: sampling_rate {} (the model is {SAMPLE_RATE} Hz)", cfg.sampling_rate);
    }
    let rel = Path::new(&cfg.weights);
    if rel.is_absolute() || cfg.weights.is_empty() {
        bail!("config.json: weights '{}' must be a path relative to the fixture folder", cfg.weights);
    }
    let model = SileroVad::load(&dir.join(rel)).with_context(|| format!("the VAD weights {}", dir.join(rel).display()))?;
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let pcm = input_rank(&inputs, "audio_pcm16", 1)?;
    if pcm.dtype() != Dtype::Int16 {
        bail!("inputs.safetensors: audio_pcm16 is {:?}, not int16", pcm.dtype());
    }
    let audio: Vec<f32> = pcm.as_dtype(Dtype::Float32)?.divide(mlx_rs::array!(32768.0f32))?.as_slice::<f32>().to_vec();
    let probs = model.probabilities(&audio, variant)?;
    let refs = weights::read_safetensors(&dir.join("outputs.safetensors"))?;
    let ref_probs: Vec<f32> = refs.get("probs").context("outputs.safetensors has no probs")?.as_dtype(Dtype::Float32)?.as_slice::<f32>().to_vec();
    let segments = |s: Vec<(i64, i64)>| -> Array {
        let flat: Vec<i32> = s.iter().flat_map(|&(a, b)| [a as i32, b as i32]).collect();
        Array::from_slice(&flat, &[s.len() as i32, 2])
    };
    let mut out = HashMap::new();
    for o in &cfg.option_sets {
        let name = o.label.as_deref().filter(|n| !n.is_empty()).context("config.json: an option set without a name")?;
        out.insert(format!("segments.{name}"), segments(speech_timestamps(&probs, audio.len(), o)?));
        out.insert(format!("logic.segments.{name}"), segments(speech_timestamps(&ref_probs, audio.len(), o)?));
    }
    out.insert("probs".into(), Array::from_slice(&probs, &[probs.len() as i32]));
    Ok(out)
}

#[derive(Deserialize)]
struct AttentionConfig {
    d_model: i32,
    num_heads: i32,
}

/// One HF `WhisperAttention` layer. Naive: explicit softmax(QK^T)V, self-attention decoded
/// token by token through the concatenating cache, cross-attention K/V recomputed each step.
/// Optimized: fused SDPA, preallocated cache, cross-attention K/V cached.
fn run_attention(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    let cfg: AttentionConfig = read_json(&dir.join("config.json"))?;
    if cfg.num_heads < 1 || cfg.d_model % cfg.num_heads != 0 {
        bail!("config.json: d_model {} is not divisible by num_heads {}", cfg.d_model, cfg.num_heads);
    }
    let d = cfg.d_model;
    let store = Store::open(&dir.join("model.safetensors"))?;
    let attn = MultiHeadAttention::load(&store.root(), d, cfg.num_heads, true)?;
    store.finish()?;
    let opts = models::nn::decoder::DecodeOptions::for_variant(variant);
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let x = input_rank(&inputs, "x", 3)?;
    let xa = input_rank(&inputs, "xa", 3)?;
    let t = x.shape()[1];
    let mut cache = new_cache(opts.kv_cache, t);
    let mut cross = CrossKvCache::new();
    let (mut self_steps, mut cross_steps) = (Vec::new(), Vec::new());
    for i in 0..t {
        let xi = x.index((.., i..i + 1, ..));
        self_steps.push(attn.self_attention(&xi, Some(cache.as_mut()), Mask::Causal, opts.kernel)?);
        cross_steps.push(attn.cross_attention(&xi, xa, opts.cache_cross.then_some(&mut cross), opts.kernel)?);
    }
    let mut out = HashMap::new();
    out.insert("self_attention".to_string(), ops::concatenate(&self_steps, 1)?);
    out.insert("cross_attention".to_string(), ops::concatenate(&cross_steps, 1)?);
    Ok(out)
}

/// HF `ClapModel` and `ClapFeatureExtractor`: every clip's features in `rand_trunc` mode (the
/// recorded crop) and, where the fixture has them, in `fusion` mode (the recorded chunk
/// starts); the model on the reference features of all clips as a batch (naive: clip by clip)
/// and on the texts: pooled features, embeddings, patch embeddings of the first clip, logits.
fn run_clap(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::clap::features::{Crops, FeatureExtractor, Truncation};
    use models::clap::{Clap, FeatureConfig};
    use models::config::ModelConfig;
    let fe = FeatureExtractor::new(FeatureConfig::from_file(&dir.join("preprocessor_config.json"))?)?;
    let model = Clap::load_dir(dir)?;
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let refs = weights::read_safetensors(&dir.join("outputs.safetensors"))?;
    let order: serde_json::Value = read_json(&dir.join("clips.json"))?;
    let clips: Vec<String> = order["order"].as_array().context("clips.json has no 'order'")?.iter().filter_map(|v| v.as_str().map(String::from)).collect();
    let mut out = HashMap::new();
    let mut feats = Vec::new();
    for clip in &clips {
        let wave: Vec<f32> = input_values(&inputs, &format!("{clip}.audio"), Dtype::Float32, 1, None)?;
        let crop = format!("{clip}.crop");
        let offset = if inputs.contains_key(&crop) { usize::try_from(input_values::<i32>(&inputs, &crop, Dtype::Int32, 1, Some(1))?[0]).context("a negative crop offset")? } else { 0 };
        let (f, longer) = fe.extract(&wave, Truncation::RandTrunc, Crops { offset: Some(offset), ..Crops::default() }).with_context(|| format!("features of '{clip}'"))?;
        out.insert(format!("{clip}.features"), f);
        out.insert(format!("{clip}.is_longer"), Array::from_slice(&[i32::from(longer)], &[1]));
        let starts = format!("{clip}.fusion_starts");
        if inputs.contains_key(&starts) {
            let s: Vec<usize> = input_values::<i32>(&inputs, &starts, Dtype::Int32, 1, Some(3))?.into_iter().map(usize::try_from).collect::<Result<_, _>>().context("a negative fusion start")?;
            let crops = Crops { starts: Some([s[0], s[1], s[2]]), ..Crops::default() };
            out.insert(format!("{clip}.fusion_features"), fe.extract(&wave, Truncation::Fusion, crops)?.0);
        }
        feats.push(refs.get(&format!("{clip}.features")).with_context(|| format!("outputs.safetensors has no '{clip}.features'"))?.clone());
    }
    let batch = ops::stack(&feats, 0)?;
    let a = model.embed_audio(&batch, variant)?;
    let ids = inputs.get("text.input_ids").context("inputs.safetensors has no 'text.input_ids'")?;
    let mask = inputs.get("text.attention_mask").context("inputs.safetensors has no 'text.attention_mask'")?;
    let (tp, te) = model.embed_text(ids, mask, variant)?;
    out.insert("logits_per_audio".into(), model.logits_per_audio(&a.embeds, &te)?);
    out.insert("audio.embeds".into(), model.embed_audio_batch(&batch, &vec![false; clips.len()], variant)?);
    out.insert("audio.pooled".into(), a.pooled);
    let tokens = refs.get("audio.patch_embeds").map_or(a.patch_embeds.shape()[1], |r| r.shape()[1]);
    out.insert("audio.patch_embeds".into(), a.patch_embeds.index((0..1, ..tokens)));
    out.insert("text.pooled".into(), tp);
    out.insert("text.embeds".into(), te);
    Ok(out)
}

/// HF `ClapModel` with the fused HTSAT on the fixture's fusion features and `is_longer` flags:
/// pooled features, embeddings (one batch; naive: clip by clip), the first patch embeddings.
fn run_clap_fused(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::clap::Clap;
    let model = Clap::load_dir(dir)?;
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let refs = weights::read_safetensors(&dir.join("outputs.safetensors"))?;
    let feats = inputs.get("features").context("inputs.safetensors has no 'features'")?;
    let longer: Vec<bool> = input_values::<i32>(&inputs, "is_longer", Dtype::Int32, 1, None)?.iter().map(|&v| v != 0).collect();
    let a = model.embed_audio_with(feats, &longer, variant)?;
    let tokens = refs.get("audio.patch_embeds").map_or(a.patch_embeds.shape()[1], |r| r.shape()[1]);
    let mut out = HashMap::new();
    out.insert("audio.embeds".to_string(), model.embed_audio_batch(feats, &longer, variant)?);
    out.insert("audio.pooled".to_string(), a.pooled);
    out.insert("audio.patch_embeds".to_string(), a.patch_embeds.index((0..1, ..tokens)));
    Ok(out)
}

/// demucs `HTDemucs`: the forward pass on every input signal (`NAME.sources`), the
/// cross-domain transformer's inputs and outputs on `audio`, and `apply_model`'s chunked
/// separation of `mix` (split, shifts=0, overlap 0.25).
fn run_htdemucs(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::htdemucs::{exec, Chunking, HtDemucs, Taps};
    let model = HtDemucs::load_dir(dir)?;
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let mut out = HashMap::new();
    for (name, x) in &inputs {
        if name == "mix" {
            let y = model.separate(x, variant, Chunking::Demucs(model.demucs_chunking()), |_, _| {}).context("separating 'mix'")?;
            out.insert("mix.apply_model".to_string(), y);
            continue;
        }
        let mut taps = Taps::default();
        out.insert(format!("{name}.sources"), model.forward_with(x, exec(variant), Some(&mut taps)).with_context(|| format!("separating '{name}'"))?);
        if name == "audio" {
            for (k, v) in [("x_in", taps.x_in), ("xt_in", taps.xt_in), ("x_out", taps.x_out), ("xt_out", taps.xt_out)] {
                out.insert(format!("audio.transformer.{k}"), v.context("transformer taps")?);
            }
        }
    }
    Ok(out)
}

/// demucs' own `.th` checkpoints in a repo folder (`repo/`): each model or bag `models.json`
/// names, loaded as `separate --repo` loads it, separating the `mix` as demucs' `Separator`.
fn run_htdemucs_th(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::htdemucs::{pretrained::LocalRepo, Chunking};
    let names: std::collections::BTreeMap<String, String> = read_json(&dir.join("models.json"))?;
    let repo = LocalRepo::open(&dir.join("repo"))?;
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let mix = input_rank(&inputs, "mix", 2)?;
    let channels: Vec<Vec<f32>> = (0..mix.shape()[0]).map(|c| mix.index(c).as_slice::<f32>().to_vec()).collect();
    let mut out = HashMap::new();
    for (key, name) in names {
        let bag = repo.load(&name)?;
        let y = bag.separate_track(&channels, variant, |m| Chunking::Demucs(m.demucs_chunking()), |_, _| {}).with_context(|| format!("separating with {name}"))?;
        out.insert(format!("{key}.separated"), y);
    }
    Ok(out)
}

/// HF `EncodecModel`: for every input signal, the encoder output, the codes at each bandwidth
/// the fixture holds (teacher-forced by the reference's), and the decode of the reference codes
/// (so a decode error is not masked or caused by an encode error).
fn run_encodec(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    let model = Encodec::load_dir(dir)?;
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let mut out = HashMap::new();
    for (name, x) in &inputs {
        if let Some((signal, bw)) = name.split_once(".codes@") {
            let audio = inputs.get(signal).with_context(|| format!("inputs.safetensors has codes for '{signal}' but not the signal"))?;
            let bandwidth: f64 = bw.parse().with_context(|| format!("input '{name}': bandwidth '{bw}' is not a number"))?;
            if model.framed() {
                // Chunked and normalised (encodec_48khz): frames [F, B, Q, T] with a scale each,
                // teacher-forced frame by frame; decoded from the reference's codes and scales.
                let frames = model.encode_frames(audio, Some(bandwidth), variant, Some(x)).with_context(|| format!("encoding '{signal}'"))?;
                out.insert(name.clone(), frames.codes);
                if let Some(s) = frames.scales {
                    out.insert(format!("{signal}.scales@{bw}"), s);
                }
                let last_pad = input_values::<i32>(&inputs, &format!("{signal}.last_pad@{bw}"), Dtype::Int32, 1, Some(1))?[0];
                let scales = inputs.get(&format!("{signal}.scales@{bw}")).cloned();
                let reference = models::encodec::Frames { codes: x.clone(), scales, last_pad };
                out.insert(format!("{signal}.decoded@{bw}"), model.decode_frames(&reference, variant).with_context(|| format!("decoding '{name}'"))?);
                continue;
            }
            // Teacher-forced by the reference's codes: each level's choice given the
            // reference's earlier ones, so that a tie at one level does not move the rest.
            out.insert(name.clone(), model.encode_forced(audio, Some(bandwidth), variant, Some(x)).with_context(|| format!("encoding '{signal}'"))?);
            out.insert(format!("{signal}.decoded@{bw}"), model.decode(x, variant).with_context(|| format!("decoding '{name}'"))?);
        } else if !name.contains('.') {
            if name.contains('@') {
                continue;
            }
            out.insert(format!("{name}.embeddings"), model.embed(x, variant).with_context(|| format!("encoding '{name}'"))?);
        }
    }
    Ok(out)
}

/// Greedy tokens teacher-forced by the reference's: the decoder fed `start` then the reference
/// tokens one at a time through the variant's caches, our argmax after each, so that a tie
/// decided the other way at one step does not change every step after it.
fn forced_greedy(model: &models::whisper::Whisper, enc: &Array, start: i32, reference: &Array, opts: &models::whisper::DecodeOptions) -> Result<Array> {
    use mlx_rs::ops::indexing::argmax_axis;
    let r = reference.as_dtype(Dtype::Int32)?;
    let (b, n) = (r.shape()[0], r.shape()[1]);
    let mut state = model.new_state(opts);
    let mut step = Array::from_slice(&vec![start; b as usize], &[b, 1]);
    let mut ours = Vec::new();
    for t in 0..n {
        let logits = model.decode_step(&step, enc, &mut state)?;
        ours.push(argmax_axis(logits.index((.., -1, ..)), -1, true)?.as_dtype(Dtype::Int32)?);
        step = r.index((.., t..t + 1));
    }
    Ok(ops::concatenate(&ours, 1)?)
}

/// HF `WhisperForConditionalGeneration` plus openai-whisper's front end: the mel filters, the
/// log-mel of every signal, the encoder, teacher-forced logits (fed one token at a time through
/// the variant's caches) and greedy tokens (teacher-forced by the reference's where the fixture
/// records their margins; free-running otherwise).
fn run_whisper(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::whisper::{audio, DecodeOptions, Whisper};
    let model = Whisper::load_dir(dir)?;
    let opts = DecodeOptions::for_variant(variant);
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    // The model's own bin count: 80 through large-v2, 128 for large-v3 and turbo.
    let log_mel = audio::LogMel::new(model.config.num_mel_bins)?;
    let start = model.config.decoder_start_token_id;
    let mut out = HashMap::new();
    for n in [80usize, 128] {
        out.insert(format!("mel_filters.{n}"), Array::from_slice(&audio::mel_filters(n), &[n as i32, 201]));
    }
    let tokens = |v: Vec<Vec<i32>>| -> Array {
        let n = v.first().map_or(0, Vec::len) as i32;
        Array::from_slice(&v.concat(), &[v.len() as i32, n])
    };
    let refs = weights::read_safetensors(&dir.join("outputs.safetensors"))?;
    let greedy = |key: &str, enc: &Array, steps: usize| -> Result<Array> {
        match refs.get(key) {
            Some(r) if refs.contains_key(&format!("{key}.margin")) => forced_greedy(&model, enc, start, r, &opts),
            _ => Ok(tokens(model.greedy(enc, &[start], steps, None, &opts)?)),
        }
    };
    for (name, x) in &inputs {
        if name == "decoder_input_ids" {
            continue;
        }
        let mel = log_mel.compute(x).with_context(|| format!("log-mel of '{name}'"))?;
        let enc = model.encode(&mel, opts.kernel)?;
        if name == "audio" {
            out.insert("audio.mel128_head".into(), audio::LogMel::new(128)?.compute(x)?.index((.., ..256)));
            out.insert("audio.mel_head".into(), mel.index((.., ..256)));
            let ids = input_rank(&inputs, "decoder_input_ids", 2)?.as_dtype(Dtype::Int32)?;
            let mut state = model.new_state(&opts);
            let steps = (0..ids.shape()[1]).map(|t| model.decode_step(&ids.index((.., t..t + 1)), &enc, &mut state)).collect::<Result<Vec<_>, _>>()?;
            out.insert("logits".into(), ops::concatenate(&steps, 1)?);
            out.insert("audio.greedy".into(), greedy("audio.greedy", &enc, 12)?);
            out.insert("encoder".into(), enc);
        } else {
            out.insert(format!("{name}.mel_head"), mel.index((.., ..64)));
            out.insert(format!("{name}.greedy"), greedy(&format!("{name}.greedy"), &enc, 6)?);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct GenerationSettings {
    guidance_scale: f32,
    max_new_tokens: usize,
    do_sample: bool,
}

/// MusicGen: T5 states, teacher-forced logits decoded step by step through the variant's
/// caches, and greedy generation with guidance (`generation.json`), codes and audio.
fn run_musicgen(dir: &Path, variant: Variant) -> Result<HashMap<String, Array>> {
    use models::musicgen::MusicGen;
    let model = MusicGen::load_dir(dir)?;
    let opts = MusicGen::decode_options(variant);
    let gen: GenerationSettings = read_json(&dir.join("generation.json"))?;
    if gen.do_sample {
        bail!("generation.json: sampled generation cannot be checked exactly; the fixture must use do_sample false");
    }
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
    let get = |k: &str| inputs.get(k).with_context(|| format!("inputs.safetensors has no '{k}'"));
    let ids = get("input_ids")?.as_dtype(Dtype::Int32)?;
    let mask = get("attention_mask")?;
    let dec = input_rank(&inputs, "decoder_input_ids", 2)?.as_dtype(Dtype::Int32)?;
    let k = model.config.decoder.num_codebooks;
    let (rows, t) = (dec.shape()[0], dec.shape()[1]);
    if rows % k != 0 {
        bail!("decoder_input_ids has {rows} rows, not a multiple of {k} codebooks");
    }
    let codes = dec.reshape(&[rows / k, k, t])?;
    let mut out = HashMap::new();
    out.insert("text.states".into(), model.text.forward(&ids, Some(mask))?);
    // MusicGen Melody: our chroma of the melodies, and the reference's conditioning the rest.
    let refs = weights::read_safetensors(&dir.join("outputs.safetensors"))?;
    let chroma = if model.is_melody() {
        let audio = input_rank(&inputs, "melody.audio", 2)?;
        let ex = models::musicgen::chroma::ChromaExtractor::new(read_json(&dir.join("preprocessor_config.json"))?)?;
        let mut ours = Vec::new();
        for b in 0..audio.shape()[0] {
            let c = ex.extract(audio.index(b).as_slice::<f32>())?;
            ours.push(Array::from_slice(&c.one_hot, &[1, c.frames as i32, ex.config.num_chroma as i32]));
        }
        out.insert("melody.chroma".into(), ops::concatenate(&ours, 0)?);
        Some(refs.get("melody.chroma").context("outputs.safetensors has no melody.chroma")?.clone())
    } else {
        None
    };
    let cond = model.condition_with(&ids, mask, chroma.as_ref(), false)?;
    let mut state = model.new_state_for(&cond, &opts, t as usize);
    let steps = (0..t).map(|i| model.decode_step(&codes.index((.., .., i..i + 1)), &cond, &mut state)).collect::<Result<Vec<_>, _>>()?;
    out.insert("logits".into(), ops::concatenate(&steps, 2)?.reshape(&[rows, t, -1])?);
    // Teacher-forced by the reference's codes where the fixture records their margins.
    let generated = match refs.get("generate.codes") {
        Some(r) if refs.contains_key("generate.codes.margin") => model.generate_forced_with(&ids, mask, chroma.as_ref(), gen.max_new_tokens, gen.guidance_scale, &opts, r)?,
        _ => {
            let cond = model.condition_with(&ids, mask, chroma.as_ref(), gen.guidance_scale > 1.0)?;
            model.generate_from(&cond, gen.max_new_tokens, gen.guidance_scale, &models::musicgen::Sampler::Greedy, &opts, |_, _| {})?
        }
    };
    out.insert("generate.audio".into(), model.decode_audio(&generated, variant)?);
    out.insert("generate.codes".into(), generated);
    Ok(out)
}

/// Check every output of a fixture for the requested variants.
pub fn check_fixture(dir: &Path, variants: &[Variant]) -> Result<(Manifest, Vec<Check>)> {
    let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
    if manifest.tolerances.is_empty() {
        bail!("manifest.json names no output to check (tolerances is empty): parity would check nothing");
    }
    for (name, tol) in &manifest.tolerances {
        tol.check(name)?;
    }
    let want = weights::read_safetensors(&dir.join("outputs.safetensors"))?;
    for name in manifest.tolerances.keys() {
        if !want.contains_key(name) {
            bail!("manifest names output '{name}', which outputs.safetensors does not hold");
        }
    }
    let mut checks = Vec::new();
    for &variant in variants {
        let v = variant.as_str();
        let got = run_model(&manifest, dir, variant)?;
        for (name, tol) in &manifest.tolerances {
            let g = got.get(name).with_context(|| format!("our {v} run produced no output '{name}'"))?;
            let margins = match tol {
                Tolerance::Decisions { margins, .. } => want.get(margins),
                _ => None,
            };
            checks.push(compare(v, name, g, &want[name], tol, margins)?);
        }
    }
    Ok((manifest, checks))
}

/// The fixture folders `args` names: each `--fixture`, then every subfolder of `--fixtures`
/// holding a manifest.json, in name order.
fn fixture_dirs(args: &Args) -> Result<Vec<PathBuf>> {
    let mut dirs = args.fixture.clone();
    if let Some(root) = &args.fixtures {
        let mut found = Vec::new();
        for e in std::fs::read_dir(root).with_context(|| format!("--fixtures {}: cannot read the folder", root.display()))? {
            let p = e?.path();
            if p.join("manifest.json").is_file() {
                found.push(p);
            }
        }
        if found.is_empty() {
            bail!("--fixtures {}: no subfolder holds a manifest.json", root.display());
        }
        found.sort();
        dirs.extend(found);
    }
    Ok(dirs)
}

/// One fixture's checks for every variant, summarised per variant.
fn fixture_results(dir: &Path, manifest: &Manifest, variants: &[Variant], checks: Vec<Check>) -> Vec<FixtureConformance> {
    variants
        .iter()
        .map(|v| {
            let v = v.as_str();
            let mine: Vec<Check> = checks.iter().filter(|c| c.variant == v).cloned().collect();
            FixtureConformance::from_checks(dir, manifest, v, mine)
        })
        .collect()
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let variants = args.variant.variant.list();
    let dirs = fixture_dirs(args)?;
    if let Some(out) = &args.output {
        crate::outputs::check_file("-o", out)?;
        let parent = crate::outputs::resolved(out)?.parent().map(Path::to_path_buf);
        for d in &dirs {
            if parent.is_some() && parent == d.canonicalize().ok() {
                bail!("-o {}: inside the fixture folder {}; write the results elsewhere", out.display(), d.display());
            }
        }
    }
    if let Some(d) = &args.device {
        runtime::select_device(d.parse()?)?;
    }
    models::nn::host::set_min_elements(match args.host_kernels.as_str() {
        "always" => 0,
        "never" => usize::MAX,
        _ => models::nn::host::MIN_ELEMENTS,
    });
    let c = crate::meta::computed(runtime::default_device_kind()?);
    let mut conf = Conformance {
        device_kind: c.device_kind.into(),
        device_name: c.device_name,
        backend: c.backend.into(),
        precision: c.precision.into(),
        mlx_version: c.mlx_version,
        fixtures: Vec::new(),
    };
    if !args.json {
        println!("parity on {} (device {}, backend {}), precision {}", conf.device_name, conf.device_kind, conf.backend, conf.precision);
    }
    for dir in &dirs {
        match check_fixture(dir, &variants) {
            Ok((manifest, checks)) => {
                if !args.json {
                    print_checks(dir, &manifest, &checks);
                }
                conf.fixtures.extend(fixture_results(dir, &manifest, &variants, checks));
            }
            Err(e) => {
                eprintln!("error: fixture {}: {e:#}", dir.display());
                conf.fixtures.push(FixtureConformance::failed_to_run(dir, &format!("{e:#}")));
            }
        }
    }
    let ok = conf.pass();
    if let Some(out) = &args.output {
        crate::report::json::write_atomic(out, serde_json::to_string_pretty(&conf)?.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&conf)?);
    } else {
        let passed = conf.fixtures.iter().filter(|f| f.pass).count();
        println!("parity on {} in {}: {} of {} fixture runs pass{}", conf.device_kind, conf.precision, passed, conf.fixtures.len(), if ok { "; all outputs within tolerance" } else { "; FAILED" });
        let launches = models::nn::layer_cuda::launches();
        if launches > 0 {
            println!("decoder steps through the CUDA layer kernel: {launches} layer launches (the rest op by op)");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_checks(dir: &Path, manifest: &Manifest, checks: &[Check]) {
    println!("\n{} ({}, seed {}) against {} {}: {}", dir.display(), manifest.model, manifest.seed, manifest.reference.package, manifest.reference.version, manifest.task);
    println!("{:<10} {:<20} {:>12} {:>12} {:>10} {:>8}  {:<26} result", "variant", "output", "max abs", "max rel", "cosine", "used", "tolerance");
    for c in checks {
        let used = match (c.used, &c.tolerance) {
            (Some(u), _) => format!("{:.0}%", u * 100.0),
            (None, Tolerance::Exact { .. }) => format!("{} diff", c.mismatches),
            (None, Tolerance::Decisions { .. }) => format!("{}+{}t", c.mismatches, c.ties),
            (None, _) => "non-fin.".into(),
        };
        let margin = c.min_margin.map_or(String::new(), |m| format!("  (smallest reference margin {m:.2e})"));
        println!(
            "{:<10} {:<20} {:>12.3e} {:>12.3e} {:>10.7} {:>8}  {:<26} {}{margin}",
            c.variant,
            c.output,
            c.max_abs,
            c.max_rel,
            c.cosine,
            used,
            c.tolerance.describe(),
            if c.pass { "pass" } else { "FAIL" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_on_either_side_fails_every_kind_of_check() {
        let nan = Array::from_slice(&[1.0f32, f32::NAN], &[2]);
        let fine = Array::from_slice(&[1.0f32, 2.0], &[2]);
        for tol in [Tolerance::Exact { exact: true }, Tolerance::Close { atol: 1e-5, rtol: 1e-4 }, Tolerance::Cosine { cosine: 0.99999 }] {
            for (got, want) in [(&nan, &nan), (&fine, &nan), (&nan, &fine)] {
                let c = compare("v", "o", got, want, &tol, None).unwrap();
                assert!(!c.pass && c.used.is_none(), "{tol:?}: {c:?}");
            }
            assert!(compare("v", "o", &fine, &fine, &tol, None).unwrap().pass);
        }
    }

    #[test]
    fn a_decision_may_differ_only_where_the_reference_margin_is_a_tie() {
        let tol = Tolerance::Decisions { exact: true, margins: "m".into(), tie: 1e-6 };
        tol.check("codes").unwrap();
        let want = Array::from_slice(&[3i32, 7, 1, 4], &[4]);
        let margins = Array::from_slice(&[0.5f32, 1.6e-8, 0.2, f32::NAN], &[4]);
        // Element 1 differs at a margin of 1.6e-8: a tie, accepted and counted.
        let got = Array::from_slice(&[3i32, 8, 1, 4], &[4]);
        let c = compare("v", "codes", &got, &want, &tol, Some(&margins)).unwrap();
        assert!(c.pass && c.ties == 1 && c.mismatches == 0, "{c:?}");
        assert!(c.min_margin.unwrap() < 2e-8, "{c:?}");
        // Element 2 differs at a margin of 0.2: a failure, whatever else ties.
        let got = Array::from_slice(&[3i32, 8, 2, 4], &[4]);
        let c = compare("v", "codes", &got, &want, &tol, Some(&margins)).unwrap();
        assert!(!c.pass && c.mismatches == 1 && c.ties == 1, "{c:?}");
        // A margin that is not a number never excuses a difference.
        let got = Array::from_slice(&[3i32, 7, 1, 5], &[4]);
        assert!(!compare("v", "codes", &got, &want, &tol, Some(&margins)).unwrap().pass);
        // No margins recorded, or a loose threshold: refused.
        assert!(compare("v", "codes", &want, &want, &tol, None).is_err());
        assert!(Tolerance::Decisions { exact: true, margins: "m".into(), tie: 0.1 }.check("codes").is_err());
        assert!(Tolerance::Decisions { exact: true, margins: "m".into(), tie: f64::NAN }.check("codes").is_err());
    }
}
